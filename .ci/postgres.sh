# Sourced by .ci/run (and usable by hand: `source .ci/postgres.sh`): a throw-away PostgreSQL
# server for the shared-study tests, in a temp dir, run as the `postgres` user, on 127.0.0.1
# only, fsync off. Password (scram-sha-256) on TCP, so that a wrong password is refused;
# trust on the Unix socket, used only to set that password. Installs Debian's postgresql if
# missing. Exports TUNEFORGE_PG_URL (the tests' server), TUNEFORGE_PG_DATA and TUNEFORGE_PG_BIN
# (the restart test stops and starts the server), and defines tuneforge_pg_stop.
PG_BIN="${TUNEFORGE_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PG_BIN/initdb" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
PG_PORT="${TUNEFORGE_PG_PORT:-55432}"
# A port in use (another server) is skipped.
while (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; do PG_PORT=$((PG_PORT + 1)); done
PG_DATA="$(mktemp -d /tmp/tuneforge-pg.XXXXXX)"
chown postgres:postgres "$PG_DATA"
su postgres -c "$PG_BIN/initdb -D $PG_DATA -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null"
cat >>"$PG_DATA/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DATA'
fsync = off
max_connections = 200
CONF
# The server must not inherit our open files (a build lock held through `flock .ci/run` would
# stay locked while it runs): a subshell closes every descriptor above 2 before pg_ctl.
(
    for fd in /proc/$BASHPID/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done
    exec su postgres -c "$PG_BIN/pg_ctl -D $PG_DATA -l $PG_DATA/server.log -w start >/dev/null"
)
su postgres -c "$PG_BIN/psql -q -h $PG_DATA -p $PG_PORT -v ON_ERROR_STOP=1 -c \"ALTER USER postgres PASSWORD 'tuneforge'\""
su postgres -c "$PG_BIN/createdb -h $PG_DATA -p $PG_PORT tuneforge"
export TUNEFORGE_PG_URL="postgres://postgres:tuneforge@127.0.0.1:$PG_PORT/tuneforge"
export TUNEFORGE_PG_DATA="$PG_DATA"
export TUNEFORGE_PG_BIN="$PG_BIN"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (data $PG_DATA)"
tuneforge_pg_stop() {
    su postgres -c "$PG_BIN/pg_ctl -D $PG_DATA -m fast stop >/dev/null" || true
    rm -rf "$PG_DATA"
}
