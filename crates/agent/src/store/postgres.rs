//! The PostgreSQL study store: one database holds many studies (keyed by name), and many
//! worker processes, on many machines, share one study. See docs/scaling-out.md for how to
//! run them.
//!
//! # Client
//!
//! The synchronous `postgres` crate (0.19, NoTls). It drives `tokio-postgres` on a
//! current-thread tokio runtime that lives inside each [`postgres::Client`]: this crate never
//! creates or enters a runtime itself, and nothing async leaks into the driver, which stays
//! the plain blocking loop it is with SQLite.
//!
//! # Schema (versioned migrations)
//!
//! The same tables and columns as [`SqliteStore`](super::SqliteStore)'s (see the [parent
//! module](super)), with a `study` column (the study's name) in front of each key, plus what
//! sharing needs:
//!
//! | table | extra columns | meaning |
//! |---|---|---|
//! | `tuneforge_schema` | `version` | the schema version (one row) |
//! | `studies` | `name` | primary key (replaces SQLite's `id = 1`) |
//! | | `max_trials` | the study's trial budget (NULL: wall clock only) |
//! | | `next_trial` | the next new trial's id, taken atomically by [`PostgresStore::claim`] |
//! | `trials` | `worker` | the worker that owns the trial (the only one allowed to write it) |
//! | | `heartbeat` | server clock (Unix seconds) of the owner's latest write for the trial |
//! | | `attempts` | 1 + times the trial was taken over from a dead worker |
//! | | `claim` | the claim token that gave the trial its owner (makes a replayed claim idempotent) |
//! | `decisions` | `worker` | the worker that wrote the decision |
//! | `evaluations` | `seq` | insertion order (SQLite's `rowid`); key (study, trial, idx, split) |
//! | `checkpoints` | `worker` | the worker that wrote it; `model`, `optimizer` are `bytea` |
//! | `policy` | `updates` | number of trial updates merged into the stored state |
//! | `rungs` | (its own table) | `asha` studies' rung results, one row per trial and rung, kept equal to the records' `rungs` by a trigger; `txid`: the transaction that last changed the row (what a worker reads since its last claim) |
//!
//! The program creates the schema and migrates it: at every connection, under a
//! transaction-scoped advisory lock (so that workers starting together migrate once), the
//! migrations after the stored version are applied in order in one transaction. A database
//! whose version is newer than this build's ([`SCHEMA_VERSION`]) is refused with a message
//! saying so: an older worker never writes a newer schema.
//!
//! Floats are `double precision` (NaN is stored as NaN, not NULL); unsigned integers are
//! `bigint` (values above `i64::MAX` refused, except the seed, kept by its bits); JSON lives
//! in `text` columns checked by a cast to `jsonb`, so that it reads back byte for byte.
//!
//! # Sharing a study
//!
//! - **Claims.** [`PostgresStore::claim`] gives a worker, in one transaction, either a
//!   running trial whose owner's heartbeat is older than the heartbeat timeout (`SELECT ...
//!   FOR NO KEY UPDATE SKIP LOCKED`: two workers never take the same one), or a new trial id from
//!   `studies.next_trial` (a row-locked increment, refused once `max_trials` is reached).
//! - **Ownership.** Every write for a trial (its row, decisions, validation evaluations,
//!   checkpoint, rewind, end) first locks the trial row and checks that this worker owns it,
//!   and refreshes its heartbeat: a worker whose trial was taken over (it was presumed dead)
//!   gets [`Error::TakenOver`] and drops the trial, so no trial is ever recorded by two
//!   workers.
//! - **Heartbeats** use the server's clock, so the machines' clocks need not agree.
//! - **Locks.** A transaction that updates the study row (elapsed time, a claim's new id, a
//!   policy merge) does so before it locks any trial row, and row locks are `FOR NO KEY
//!   UPDATE` (which foreign-key checks do not wait for): one lock order, so workers do not
//!   deadlock (a concurrent-merge test found the deadlock the other order gave).
//! - **Elapsed time** is the largest any worker reported (`GREATEST`).
//! - **The policy** is merged by [`StudyStore::finish_trial_merging`]: the study row is
//!   locked, the latest stored state read, the finished trial's update applied to it, and the
//!   result stored with the trial row, in one transaction: updates are serialised in commit
//!   order and none is lost.
//!
//! # Connection loss
//!
//! Every method is one transaction, retried from the start with exponential backoff (0.1 s
//! doubling to 5 s) on a lost connection, a server shutting down or starting, a serialisation
//! failure or a deadlock, until [`PgOptions::retry_for`] has passed. Writes are idempotent:
//! rows are upserted by their key (trial: (study, id); decision: (study, trial, idx);
//! evaluation: (study, trial, idx, split); checkpoint: (study, trial)), so replaying a
//! transaction whose commit succeeded but whose answer was lost writes nothing twice. The
//! first connection is not retried: a wrong URL, host or password is reported at once,
//! naming the host, port and database (never the password).

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use postgres::config::Host;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use super::{CheckpointRow, DecisionRow, EvaluationRow, StudyRow, StudyStore, TrialRow};
use crate::{Error, Result};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = 3;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3];

/// Serialises migrations of one database (`pg_advisory_xact_lock` key).
const MIGRATION_LOCK: i64 = 0x7475_6e65_666f_7267; // "tuneforg"

const MIGRATION_1: &str = "
CREATE TABLE studies (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL CHECK (config::jsonb IS NOT NULL),
    strategy TEXT NOT NULL,
    dataset TEXT NOT NULL,
    seed BIGINT NOT NULL,
    budget_s DOUBLE PRECISION NOT NULL,
    elapsed_s DOUBLE PRECISION NOT NULL,
    created_unix DOUBLE PRECISION NOT NULL,
    max_trials BIGINT CHECK (max_trials >= 0),
    next_trial BIGINT NOT NULL DEFAULT 0 CHECK (next_trial >= 0)
);

CREATE TABLE trials (
    study TEXT NOT NULL REFERENCES studies (name),
    id BIGINT NOT NULL CHECK (id >= 0),
    status TEXT NOT NULL,
    config TEXT NOT NULL CHECK (config::jsonb IS NOT NULL),
    record TEXT NOT NULL CHECK (record::jsonb IS NOT NULL),
    val_macro_f1 DOUBLE PRECISION,
    samples_per_s DOUBLE PRECISION,
    reward DOUBLE PRECISION NOT NULL,
    decisions BIGINT NOT NULL CHECK (decisions >= 0),
    resumed BOOLEAN NOT NULL,
    started_unix DOUBLE PRECISION NOT NULL,
    updated_unix DOUBLE PRECISION NOT NULL,
    ended_unix DOUBLE PRECISION,
    pid BIGINT NOT NULL CHECK (pid >= 0),
    worker TEXT NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    claim TEXT,
    PRIMARY KEY (study, id)
);
CREATE INDEX trials_status ON trials (study, status);
CREATE INDEX trials_claim ON trials (study, claim);

CREATE TABLE decisions (
    study TEXT NOT NULL,
    trial BIGINT NOT NULL,
    idx BIGINT NOT NULL CHECK (idx >= 0),
    step BIGINT NOT NULL CHECK (step >= 0),
    observation TEXT NOT NULL CHECK (observation::jsonb IS NOT NULL),
    action TEXT NOT NULL CHECK (action::jsonb IS NOT NULL),
    applied TEXT NOT NULL CHECK (applied::jsonb IS NOT NULL),
    reward DOUBLE PRECISION NOT NULL,
    val_macro_f1 DOUBLE PRECISION NOT NULL,
    samples_per_s DOUBLE PRECISION NOT NULL,
    at_unix DOUBLE PRECISION NOT NULL,
    worker TEXT NOT NULL,
    PRIMARY KEY (study, trial, idx),
    FOREIGN KEY (study, trial) REFERENCES trials (study, id)
);

CREATE TABLE evaluations (
    study TEXT NOT NULL,
    trial BIGINT NOT NULL,
    idx BIGINT NOT NULL CHECK (idx >= 0),
    step BIGINT NOT NULL CHECK (step >= 0),
    split TEXT NOT NULL,
    macro_f1 DOUBLE PRECISION NOT NULL,
    accuracy DOUBLE PRECISION NOT NULL,
    loss DOUBLE PRECISION NOT NULL,
    at_unix DOUBLE PRECISION NOT NULL,
    seq BIGSERIAL NOT NULL,
    PRIMARY KEY (study, trial, idx, split),
    FOREIGN KEY (study, trial) REFERENCES trials (study, id)
);

CREATE TABLE checkpoints (
    study TEXT NOT NULL,
    trial BIGINT NOT NULL,
    step BIGINT NOT NULL CHECK (step >= 0),
    decisions BIGINT NOT NULL CHECK (decisions >= 0),
    state TEXT NOT NULL CHECK (state::jsonb IS NOT NULL),
    model BYTEA NOT NULL,
    optimizer BYTEA NOT NULL,
    created_unix DOUBLE PRECISION NOT NULL,
    worker TEXT NOT NULL,
    PRIMARY KEY (study, trial),
    FOREIGN KEY (study, trial) REFERENCES trials (study, id)
);

CREATE TABLE policy (
    study TEXT PRIMARY KEY REFERENCES studies (name),
    trial BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state::jsonb IS NOT NULL),
    updates BIGINT NOT NULL DEFAULT 1,
    FOREIGN KEY (study, trial) REFERENCES trials (study, id)
);
";

/// The best trial ([`BEST_TRIAL`], asked after every trial) from an index instead of a
/// scan of the study's finished trials: 7.7 ms at 5,399 trials before, 0.08 ms after.
const MIGRATION_2: &str = "
CREATE INDEX trials_best ON trials (study, val_macro_f1 DESC, ended_unix, id)
    WHERE status IN ('completed', 'stopped') AND val_macro_f1 IS NOT NULL AND val_macro_f1 <> 'NaN';
";

/// ASHA's rung results as rows (`rungs`: one per trial and rung reached, the validation
/// macro-F1 there; `asha` studies only), kept equal to each trial record's `rungs` by a
/// trigger on `trials` — so also for the writes of a worker built before this migration.
/// (For every study, the trigger cost an `rl` worker's trial writes 0.35 ms each.) A rung no longer reached (a
/// rewound trial) or of a failed trial is set to NULL rather than deleted, and every change
/// stamps the row with its transaction's id (`txid`): a worker reads only the rows changed
/// since its last read ([`RungCache`]) instead of every trial's record at every claim (at
/// 2,400 trials of an `asha` study that read took most of a worker's store time, and a
/// ranking in SQL still 3.5 ms per claim). Filled from the stored records.
const MIGRATION_3: &str = "
CREATE TABLE rungs (
    study TEXT NOT NULL,
    trial BIGINT NOT NULL,
    rung INTEGER NOT NULL CHECK (rung >= 0),
    val_macro_f1 DOUBLE PRECISION,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (study, trial, rung),
    FOREIGN KEY (study, trial) REFERENCES trials (study, id)
);
CREATE INDEX rungs_changed ON rungs (study, txid);

-- A record's rung results (none for a failed trial or a record without the field; a
-- non-number, which serde_json writes for NaN, as NaN).
CREATE FUNCTION tuneforge_record_rungs(status TEXT, record TEXT) RETURNS DOUBLE PRECISION[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN status LIKE 'failed%' OR jsonb_typeof(r) IS DISTINCT FROM 'array'
        THEN '{}'::float8[]
        ELSE ARRAY(SELECT CASE WHEN jsonb_typeof(v) = 'number' THEN (v #>> '{}')::float8 ELSE 'NaN'::float8 END
                   FROM jsonb_array_elements(r) WITH ORDINALITY AS e(v, k) ORDER BY k)
    END
    FROM (SELECT record::jsonb -> 'rungs' AS r) AS parsed
$$;

-- Only `asha` studies promote from rungs: the others' writes return at once.
CREATE FUNCTION tuneforge_trial_rungs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    f DOUBLE PRECISION[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM studies WHERE name = NEW.study AND strategy = 'asha') THEN
        RETURN NULL;
    END IF;
    f := tuneforge_record_rungs(NEW.status, NEW.record);
    UPDATE rungs SET val_macro_f1 = NULL, txid = pg_current_xact_id()
        WHERE study = NEW.study AND trial = NEW.id AND rung >= cardinality(f) AND val_macro_f1 IS NOT NULL;
    INSERT INTO rungs (study, trial, rung, val_macro_f1)
        SELECT NEW.study, NEW.id, (k - 1)::int, x FROM unnest(f) WITH ORDINALITY AS u(x, k)
        ON CONFLICT (study, trial, rung) DO UPDATE SET val_macro_f1 = excluded.val_macro_f1, txid = excluded.txid
        WHERE rungs.val_macro_f1 IS DISTINCT FROM excluded.val_macro_f1;
    RETURN NULL;
END
$$;
CREATE TRIGGER trials_rungs_insert AFTER INSERT ON trials
    FOR EACH ROW EXECUTE FUNCTION tuneforge_trial_rungs();
CREATE TRIGGER trials_rungs_update AFTER UPDATE OF record, status ON trials
    FOR EACH ROW WHEN (OLD.record IS DISTINCT FROM NEW.record OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION tuneforge_trial_rungs();

INSERT INTO rungs (study, trial, rung, val_macro_f1)
    SELECT t.study, t.id, (u.k - 1)::int, u.x
    FROM trials t JOIN studies s ON s.name = t.study AND s.strategy = 'asha',
        unnest(tuneforge_record_rungs(t.status, t.record)) WITH ORDINALITY AS u(x, k);
";

const TRIAL_COLUMNS: &str = "id, status, config, record, val_macro_f1, samples_per_s, reward, decisions, resumed, \
     started_unix, updated_unix, ended_unix, pid";

/// The server's clock, Unix seconds.
const SERVER_NOW: &str = "extract(epoch from clock_timestamp())::float8";

/// How a worker connects and shares a study.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// This worker's name: unique among the study's live workers (default:
    /// [`default_worker_name`]). A worker started again under the same name takes its
    /// running trial over at once; two live workers under one name would take each other's.
    pub worker: String,
    /// A running trial whose owner has not written for this long is taken over by the next
    /// worker that claims a trial. Must exceed the longest time between two writes of a
    /// trial (a decision interval plus a checkpoint).
    pub heartbeat_timeout: Duration,
    /// Timeout of each connection attempt.
    pub connect_timeout: Duration,
    /// How long a transaction is retried (with backoff) after the connection is lost or the
    /// server restarts, before the error is returned.
    pub retry_for: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            worker: default_worker_name(),
            heartbeat_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(300),
        }
    }
}

/// `HOST:PID:XXXX`, the host name from `/etc/hostname` or `$HOSTNAME` (`localhost` if
/// neither) and four random hex digits (containers on different machines may share a host
/// name and a process id).
pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{:04x}", std::process::id(), rand::random::<u16>())
}

/// ASHA's promotion rule for [`PostgresStore::claim`]: a paused trial is promoted when it is
/// in the top 1/`eta` of the trials that reached its last rung, a rung below `rungs - 1` (the
/// last rung is the end of a trial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    /// The number of rungs, the trial's end included.
    pub rungs: usize,
    /// The reduction factor η (3 in `asha`).
    pub eta: usize,
}

impl Promotion {
    fn eta(&self) -> usize {
        self.eta.max(1)
    }
}

/// A worker's copy of its study's rung results (the `rungs` rows), brought up to date by
/// reading only the rows changed since the last read: those stamped with a transaction id at
/// or above the oldest transaction still running at that read (`pg_snapshot_xmin`). A
/// transaction below it had ended before the read began, so its changes were read then; one
/// at or above it may commit later, whatever the order of the ids, and is read again next time.
#[derive(Debug, Default)]
struct RungCache {
    /// The oldest transaction id running at the last read (`xid8`).
    from: u64,
    /// Each trial's validation macro-F1 by rung; `None` where no longer reached.
    trials: HashMap<u64, Vec<Option<f64>>>,
}

impl RungCache {
    fn refresh(&mut self, tx: &mut Tx<'_, '_>, study: &str) -> std::result::Result<(), Fail> {
        let xmin: String = tx.query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])?.get(0);
        let rows = tx.query(
            "SELECT trial, rung, val_macro_f1 FROM rungs WHERE study = $1 AND txid >= $2::text::xid8",
            &[&study, &self.from.to_string()],
        )?;
        for row in rows {
            let (trial, rung, f1): (i64, i32, Option<f64>) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let rungs = self.trials.entry(trial as u64).or_default();
            let rung = rung as usize;
            if rungs.len() <= rung {
                rungs.resize(rung + 1, None);
            }
            rungs[rung] = f1;
        }
        self.from = xmin.parse().map_err(|e| Fail::Other(format!("snapshot xmin {xmin:?}: {e}").into()))?;
        Ok(())
    }

    /// ASHA's candidates under `rule`, best first: the trials in the top 1/η at a rung below
    /// the last whose last rung is that one, the highest rung first, then by validation
    /// macro-F1 (descending), then id — as the single-process `asha` ranks them. Those still
    /// paused are its picks.
    fn candidates(&self, rule: Promotion) -> Vec<u64> {
        let reached = |f: &Vec<Option<f64>>| f.iter().take_while(|v| v.is_some()).count();
        let mut out = Vec::new();
        for k in (0..rule.rungs.saturating_sub(1)).rev() {
            let mut at: Vec<(f64, u64, bool)> = self
                .trials
                .iter()
                .filter_map(|(id, f)| {
                    let n = reached(f);
                    (n > k).then(|| (f[k].unwrap_or(f64::NAN), *id, n == k + 1))
                })
                .collect();
            let top = at.len() / rule.eta();
            if top == 0 {
                continue;
            }
            at.select_nth_unstable_by(top - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut best: Vec<(f64, u64, bool)> = at[..top].iter().copied().filter(|c| c.2).collect();
            best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            out.extend(best.into_iter().map(|c| c.1));
        }
        out
    }
}

/// The most paused trials one claim gives a worker to close ([`Claim::Close`]): one claim, one
/// write and one checkpoint prune per batch, where one per trial made the end of a digits
/// `asha` study take 7 s past its budget.
pub const CLOSE_BATCH: i64 = 64;

/// The new trial ids at which the worker given them runs `ANALYZE` on the study tables.
/// A connection's statements are planned once, and a plan made while the tables were empty
/// (a fresh database) can pick, for a trial's row by id, an index on `study` alone — a scan
/// of the study's every trial at each write (3,755 rows a write 25 s into a fresh study) —
/// until autovacuum's first `ANALYZE`, which may be a minute away. `ANALYZE` invalidates
/// every connection's plans of those tables; on a large table it samples 30,000 rows.
const ANALYZE_AT: [u64; 2] = [100, 2000];

/// What [`PostgresStore::claim`] gave the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// A new trial with this id; its row (from the caller's `new_row`) is saved, owned by
    /// this worker.
    New(u64),
    /// A running trial whose worker stopped beating (or this worker's own, from before a
    /// restart under the same name), now owned by this worker: continue it from its
    /// checkpoint.
    TakeOver(TrialRow),
    /// A paused trial (ASHA) promoted to its next rung, now owned by this worker and
    /// running: continue it from its checkpoint.
    Promote(TrialRow),
    /// Paused trials left when nothing runs and no trial may start or be promoted, by id, at
    /// most [`CLOSE_BATCH`], now owned by this worker (still paused; other workers' claims
    /// skip them until their heartbeat is stale): end them as `stopped`
    /// ([`finish_trials`](PostgresStore::finish_trials)), as the single-process ASHA ends its
    /// paused trials when the budget is spent.
    Close(Vec<TrialRow>),
    /// Nothing to claim now, but other workers' trials are still running: ask again later
    /// (one of them may die, or give a rung result that promotes a paused trial).
    Wait,
    /// Nothing to claim and nothing running: the study is done.
    Done,
}

/// One study of a database, as `cargo xtask study list` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StudyListing {
    /// The study's name.
    pub name: String,
    /// The study row.
    pub study: StudyRow,
    /// Trial budget (None: wall clock only).
    pub max_trials: Option<u64>,
    /// Trials recorded.
    pub trials: u64,
    /// Trials running or paused.
    pub open: u64,
    /// The best finished trial: (id, validation macro-F1).
    pub best: Option<(u64, f64)>,
}

/// The cause inside an error.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a transaction failed.
enum Fail {
    /// From the server or the connection: retried when it is transient.
    Pg(postgres::Error),
    /// Refused by the store's own checks.
    Other(Cause),
    /// Another worker owns the trial.
    Lost { trial: u64, owner: String },
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<String> for Fail {
    fn from(e: String) -> Self {
        Fail::Other(e.into())
    }
}

impl From<&str> for Fail {
    fn from(e: &str) -> Self {
        Fail::Other(e.into())
    }
}

/// A `postgres::Error` with its causes (its own `Display` says only "db error").
fn describe(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether the error is the connection's or the server's state, not the statement's: the
/// transaction may succeed when tried again on a new connection.
/// Whether `e` is the server refusing a prepared statement whose result type changed under it
/// (a migration by a newer worker altered a column): prepared again, it runs.
fn stale_statement(e: &postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| d.code().code() == "0A000" && d.message().contains("cached plan"))
}

fn transient(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") // connection exception
            || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
            || code == "40001" // serialization failure
            || code == "40P01" // deadlock detected
            || code == "53300"; // too many connections
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    e.to_string().contains("timeout")
}

/// `postgres://USER@HOST:PORT/DB` without the password, for messages.
fn target_of(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config.get_ports().get(i).or(config.get_ports().first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_string() } else { hosts.join(",") };
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    format!("postgres://{user}{hosts}/{}", config.get_dbname().unwrap_or(""))
}

/// The URL with any password replaced by `***` (for a URL that does not parse).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else { return url.to_string() };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

/// A connection that is opened again after it is lost.
struct Conn {
    config: Config,
    client: Option<Client>,
    /// The statements prepared on `client`, by their SQL: a store operation runs a dozen
    /// statements or fewer, the same ones each time, so each is parsed and planned once per
    /// connection and then costs one round trip instead of two (prepared again if a schema
    /// change by a newer worker alters a result type under them).
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn client(&mut self) -> std::result::Result<(&mut Client, &mut HashMap<String, Statement>), postgres::Error> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.disconnect();
            let mut client = self.config.connect(NoTls)?;
            migrate(&mut client)?;
            self.client = Some(client);
        }
        Ok((self.client.as_mut().expect("just connected"), &mut self.statements))
    }

    /// Drops the connection and what was prepared on it.
    fn disconnect(&mut self) {
        self.statements.clear();
        self.client = None;
    }
}

/// Where a store operation's statements run: in one transaction, or on the connection itself,
/// each statement its own transaction (an operation of one statement: no `BEGIN` and
/// `COMMIT`, two round trips fewer).
enum On<'t, 'c> {
    Tx(&'t mut Transaction<'c>),
    Client(&'t mut Client),
}

/// A store operation's statements, prepared once per connection ([`Conn::statements`]).
struct Tx<'t, 'c> {
    on: On<'t, 'c>,
    statements: &'t mut HashMap<String, Statement>,
}

impl Tx<'_, '_> {
    fn statement(&mut self, sql: &str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = match &mut self.on {
            On::Tx(tx) => tx.prepare(sql)?,
            On::Client(client) => client.prepare(sql)?,
        };
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> std::result::Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        match &mut self.on {
            On::Tx(tx) => tx.execute(&statement, params),
            On::Client(client) => client.execute(&statement, params),
        }
    }

    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> std::result::Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        match &mut self.on {
            On::Tx(tx) => tx.query(&statement, params),
            On::Client(client) => client.query(&statement, params),
        }
    }

    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        match &mut self.on {
            On::Tx(tx) => tx.query_opt(&statement, params),
            On::Client(client) => client.query_opt(&statement, params),
        }
    }

    fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> std::result::Result<Row, postgres::Error> {
        let statement = self.statement(sql)?;
        match &mut self.on {
            On::Tx(tx) => tx.query_one(&statement, params),
            On::Client(client) => client.query_one(&statement, params),
        }
    }
}

/// The study store of one study in a PostgreSQL database (see the [module docs](self)).
pub struct PostgresStore {
    conn: RefCell<Conn>,
    target: String,
    study: String,
    options: PgOptions,
    claims: u64,
    /// Random, per store: with the worker's name and the claim count, a claim's token.
    /// (The count alone started again at 0 with the process, so a worker started again under
    /// its name found its previous process's first claim as a "replay" and was given that
    /// trial — finished or not — as new.)
    nonce: u64,
    rungs: RefCell<RungCache>,
    /// The policy's update count after this store's last merge ([`StudyStore::finish_trial_merging`];
    /// `None` when it merged nothing, e.g. a retry whose update was in already).
    merged_updates: Option<i64>,
    /// The policy's update count as the last claim of a new trial saw it (`None`: no policy
    /// row, or the last claim was of another kind).
    claimed_updates: Option<i64>,
    /// Tests: the next this many commits' answers are "lost" (the transaction, committed,
    /// runs again as after a dropped connection).
    #[cfg(test)]
    lost_answers: std::cell::Cell<u32>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("study", &self.study)
            .field("worker", &self.options.worker)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`), creates or migrates
    /// the schema, and works on the study named `study` (which need not exist yet). The
    /// first connection is tried once, within `options.connect_timeout`.
    pub fn open(url: &str, study: &str, options: PgOptions) -> Result<PostgresStore> {
        let mut config = Config::from_str(url).map_err(|e| Error::Database {
            target: redact_url(url),
            what: "reading the URL".into(),
            source: describe(&e).into(),
        })?;
        config.connect_timeout(options.connect_timeout);
        config.tcp_user_timeout(options.connect_timeout.max(Duration::from_secs(30)));
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name(&format!("tuneforge {}", options.worker));
        let target = target_of(&config);
        if study.is_empty() {
            return Err(Error::Config { what: "study name", why: "must not be empty".into() });
        }
        let mut conn = Conn { config, client: None, statements: HashMap::new() };
        conn.client().map_err(|e| Error::Database {
            target: target.clone(),
            what: "connecting".into(),
            source: describe(&e).into(),
        })?;
        Ok(PostgresStore {
            conn: RefCell::new(conn),
            target,
            study: study.to_string(),
            options,
            claims: 0,
            nonce: rand::random(),
            rungs: RefCell::default(),
            merged_updates: None,
            claimed_updates: None,
            #[cfg(test)]
            lost_answers: std::cell::Cell::new(0),
        })
    }

    /// `postgres://USER@HOST:PORT/DB` (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The study's name.
    pub fn study_name(&self) -> &str {
        &self.study
    }

    /// This worker's name.
    pub fn worker(&self) -> &str {
        &self.options.worker
    }

    fn error(&self, what: String, fail: Fail) -> Error {
        match fail {
            Fail::Lost { trial, owner } => Error::TakenOver { target: self.target.clone(), trial, owner },
            Fail::Pg(e) => Error::Database {
                target: format!("{} (study {})", self.target, self.study),
                what,
                source: describe(&e).into(),
            },
            Fail::Other(source) => {
                Error::Database { target: format!("{} (study {})", self.target, self.study), what, source }
            }
        }
    }

    /// Runs `f` in one transaction and commits; retried from the start, on a new connection,
    /// while the failure is transient and `retry_for` has not passed.
    fn tx<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnMut(&mut Tx<'_, '_>, &str, &str) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        self.run(what, true, f)
    }

    /// As [`tx`](Self::tx) for an operation of one statement (or of reads that need not
    /// see one snapshot): run on the connection, the statement its own transaction, without
    /// the round trips of `BEGIN` and `COMMIT` (at about 50 statements per `rl` trial, half
    /// of them those two, this is most of what a worker waits for).
    fn once<T>(
        &self,
        what: impl Fn() -> String,
        f: impl FnMut(&mut Tx<'_, '_>, &str, &str) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        self.run(what, false, f)
    }

    fn run<T>(
        &self,
        what: impl Fn() -> String,
        atomic: bool,
        mut f: impl FnMut(&mut Tx<'_, '_>, &str, &str) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.options.retry_for;
        let mut delay = Duration::from_millis(100);
        let mut conn = self.conn.borrow_mut();
        let mut prepared_again = false;
        loop {
            let attempt = (|| {
                let (client, statements) = conn.client()?;
                if !atomic {
                    return f(&mut Tx { on: On::Client(client), statements }, &self.study, &self.options.worker);
                }
                let mut tx = client.transaction()?;
                let value = f(&mut Tx { on: On::Tx(&mut tx), statements }, &self.study, &self.options.worker)?;
                tx.commit()?;
                Ok(value)
            })();
            #[cfg(test)]
            if attempt.is_ok() && self.lost_answers.get() > 0 {
                self.lost_answers.set(self.lost_answers.get() - 1);
                continue;
            }
            match attempt {
                Ok(value) => return Ok(value),
                Err(Fail::Pg(e)) if stale_statement(&e) && !prepared_again => {
                    tracing::info!(store = %self.target, what = %what(), "statements prepared again after a schema change");
                    conn.statements.clear();
                    prepared_again = true;
                }
                Err(Fail::Pg(e)) if transient(&e) && Instant::now() + delay < deadline => {
                    tracing::warn!(
                        store = %self.target,
                        what = %what(),
                        error = %describe(&e),
                        retry_in_s = delay.as_secs_f64(),
                        "study store unavailable; retrying"
                    );
                    conn.disconnect();
                    // Jitter, so that workers that lost the server together do not return together.
                    let jitter = 0.75 + 0.5 * f64::from(std::process::id() % 97) / 97.0;
                    std::thread::sleep(delay.mul_f64(jitter));
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(fail) => return Err(self.error(what(), fail)),
            }
        }
    }

    /// Creates the study if no study of this name exists, else leaves the stored one as it
    /// is; returns the stored study row (whichever worker created it) and its trial budget.
    pub fn create_or_join(&mut self, s: &StudyRow, max_trials: Option<u64>) -> Result<(StudyRow, Option<u64>)> {
        let max = max_trials.map(to_i64).transpose().map_err(|e| self.error("creating the study".into(), e))?;
        self.tx(
            || "creating or joining the study".into(),
            |tx, study, _| {
                tx.execute(
                    "INSERT INTO studies (name, config, strategy, dataset, seed, budget_s, elapsed_s, created_unix, \
                     max_trials) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING",
                    &[
                        &study,
                        &s.config,
                        &s.strategy,
                        &s.dataset,
                        &seed_to_sql(s.seed),
                        &s.budget_s,
                        &s.elapsed_s,
                        &s.created_unix,
                        &max,
                    ],
                )?;
                let row = tx.query_one(
                    "SELECT config, strategy, dataset, seed, budget_s, elapsed_s, created_unix, max_trials \
                     FROM studies WHERE name = $1",
                    &[&study],
                )?;
                let max: Option<i64> = row.get(7);
                Ok((study_from_row(&row)?, max.map(|m| m as u64)))
            },
        )
    }

    /// Claims work for this worker (see [`Claim`]), in one transaction, in this order: a
    /// running trial whose heartbeat is older than the timeout; with `promote`, the first
    /// paused trial of [`promotable`](Self::promotable)'s list not locked by another claim;
    /// if `allow_new` and the trial budget allows, a new trial, saved at once as `new_row(id)`
    /// (status `running`, owned by this worker); with nothing running, up to [`CLOSE_BATCH`]
    /// paused trials to close. A claim replayed after its commit's answer was lost (a retry)
    /// returns the same trials.
    pub fn claim(
        &mut self,
        allow_new: bool,
        new_row: &mut dyn FnMut(u64) -> TrialRow,
        promote: Option<Promotion>,
    ) -> Result<Claim> {
        self.claims += 1;
        let token = format!("{}#{:016x}#{}:", self.options.worker, self.nonce, self.claims);
        let mut attempts = 0;
        let timeout = self.options.heartbeat_timeout.as_secs_f64();
        let mut policy_updates = None;
        let claim = self.tx(
            || "claiming a trial".into(),
            |tx, study, worker| {
                policy_updates = None;
                let id_of = |trial: &TrialRow| to_i64(trial.id);
                let mark = |tx: &mut Tx<'_, '_>, id: i64, kind: &str, status: &str, attempt: i32| {
                    tx.execute(
                        &format!(
                            "UPDATE trials SET worker = $3, claim = $4, status = $5, attempts = attempts + $6, \
                             heartbeat = {SERVER_NOW} WHERE study = $1 AND id = $2"
                        ),
                        &[&study, &id, &worker, &format!("{token}{kind}"), &status, &attempt],
                    )
                };
                // A retry may replay this claim after its commit went through: then the same
                // answer (looked up by its whole token, one per kind, through the `trials_claim`
                // index). The token is this store's own, so a first attempt cannot be one.
                attempts += 1;
                if attempts > 1 {
                    let tokens: Vec<String> =
                        ["new", "promote", "close", "takeover"].iter().map(|kind| format!("{token}{kind}")).collect();
                    let replayed = tx.query(
                        &format!(
                            "SELECT {TRIAL_COLUMNS}, claim FROM trials WHERE study = $1 AND claim = ANY($2) ORDER BY id"
                        ),
                        &[&study, &tokens],
                    )?;
                    if let Some(row) = replayed.first() {
                        let kind: String = row.get(13);
                        let trial = trial_from_row(row)?;
                        return Ok(match kind.strip_prefix(token.as_str()).unwrap_or_default() {
                            "new" => Claim::New(trial.id),
                            "promote" => Claim::Promote(trial),
                            "close" => Claim::Close(
                                replayed.iter().map(trial_from_row).collect::<std::result::Result<_, _>>()?,
                            ),
                            _ => Claim::TakeOver(trial),
                        });
                    }
                }
                let stale = tx.query_opt(
                    &format!(
                        "SELECT {TRIAL_COLUMNS} FROM trials WHERE study = $1 AND status = 'running' \
                         AND (heartbeat < {SERVER_NOW} - $2 OR worker = $3) \
                         ORDER BY id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED"
                    ),
                    &[&study, &timeout, &worker],
                )?;
                if let Some(row) = stale {
                    let trial = trial_from_row(&row)?;
                    mark(tx, id_of(&trial)?, "takeover", "running", 1)?;
                    return Ok(Claim::TakeOver(trial));
                }
                if let Some(rule) = promote {
                    let candidates = self.promotion_candidates(tx, study, rule)?;
                    let locked = tx.query_opt(
                        &format!(
                            "SELECT {TRIAL_COLUMNS} FROM trials WHERE study = $1 AND id = ANY($2) AND status = 'paused' \
                             ORDER BY array_position($2, id) LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED"
                        ),
                        &[&study, &candidates],
                    )?;
                    if let Some(row) = locked {
                        let trial = trial_from_row(&row)?;
                        mark(tx, id_of(&trial)?, "promote", "running", 0)?;
                        return Ok(Claim::Promote(trial));
                    }
                }
                if allow_new
                    && let Some(row) = tx.query_opt(
                        "UPDATE studies SET next_trial = next_trial + 1 WHERE name = $1 \
                         AND (max_trials IS NULL OR next_trial < max_trials) RETURNING next_trial - 1, \
                         (SELECT updates FROM policy WHERE study = $1)",
                        &[&study],
                    )?
                {
                    let id: i64 = row.get(0);
                    policy_updates = row.try_get(1)?;
                    let trial = new_row(id as u64);
                    upsert_trial(tx, study, worker, &trial, Some(&format!("{token}new")), None, false)?;
                    return Ok(Claim::New(id as u64));
                }
                let running: i64 = tx
                    .query_one("SELECT count(*) FROM trials WHERE study = $1 AND status = 'running'", &[&study])?
                    .get(0);
                if running > 0 {
                    return Ok(Claim::Wait);
                }
                // Paused trials, but not those a live worker is closing.
                let paused = tx.query(
                    &format!(
                        "SELECT {TRIAL_COLUMNS} FROM trials WHERE study = $1 AND status = 'paused' \
                         AND (claim IS NULL OR claim NOT LIKE '%:close' OR heartbeat < {SERVER_NOW} - $2) \
                         ORDER BY id LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED"
                    ),
                    &[&study, &timeout, &CLOSE_BATCH],
                )?;
                if !paused.is_empty() {
                    let trials = paused.iter().map(trial_from_row).collect::<std::result::Result<Vec<_>, _>>()?;
                    let ids = trials.iter().map(id_of).collect::<std::result::Result<Vec<_>, _>>()?;
                    tx.execute(
                        &format!(
                            "UPDATE trials SET worker = $3, claim = $4, heartbeat = {SERVER_NOW} \
                             WHERE study = $1 AND id = ANY($2)"
                        ),
                        &[&study, &ids, &worker, &format!("{token}close")],
                    )?;
                    return Ok(Claim::Close(trials));
                }
                let paused: i64 = tx
                    .query_one("SELECT count(*) FROM trials WHERE study = $1 AND status = 'paused'", &[&study])?
                    .get(0);
                Ok(if paused > 0 { Claim::Wait } else { Claim::Done })
            },
        )?;
        self.claimed_updates = policy_updates;
        if let Claim::New(id) = claim
            && ANALYZE_AT.contains(&id)
        {
            // After the claim's commit (not holding the study's trial counter), and not fatal.
            let analyzed = self.once(
                || "analyzing the study tables".into(),
                |tx, _, _| Ok(tx.execute("ANALYZE trials, decisions, evaluations, rungs", &[])?),
            );
            if let Err(e) = analyzed {
                tracing::warn!(error = %e, "could not ANALYZE the study tables; plans may stay slow until autovacuum does");
            }
        }
        Ok(claim)
    }

    /// Whether the policy this store merged last is still the latest as of the last claim:
    /// that claim was of a new trial, and the policy's update count it saw is the one this
    /// store's own last merge left. A worker then need not read the policy again. (The claim's
    /// count can lag a merge that commits while the claim waits for the study row; the
    /// policy is then one update behind, as it is for any trial another worker's merge
    /// overtakes.)
    pub fn merged_policy_is_latest(&self) -> bool {
        self.merged_updates.is_some() && self.claimed_updates == self.merged_updates
    }

    /// The trials whose id is `from` or more, by id: with [`StudyStore::trials`]' rows, but
    /// only the newest, for a reader that keeps the older ones (a trial that has ended never
    /// changes again, and ids are given out in commit order, so a reader that saw every trial
    /// below the lowest one still running or paused misses none from there).
    pub fn trials_from(&self, from: u64) -> Result<Vec<TrialRow>> {
        self.once(
            || format!("reading trials from id {from}"),
            |tx, study, _| {
                let rows = tx.query(
                    &format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE study = $1 AND id >= $2 ORDER BY id"),
                    &[&study, &to_i64(from)?],
                )?;
                rows.iter().map(trial_from_row).collect()
            },
        )
    }

    /// The paused trials ASHA may promote under `rule`, best first (see [`Promotion`]):
    /// [`claim`](Self::claim) takes the first of them that no other claim has locked.
    pub fn promotable(&self, rule: Promotion) -> Result<Vec<u64>> {
        self.tx(
            || "listing the paused trials to promote".into(),
            |tx, study, _| {
                let candidates = self.promotion_candidates(tx, study, rule)?;
                let rows = tx.query(
                    "SELECT id FROM trials WHERE study = $1 AND id = ANY($2) AND status = 'paused' \
                     ORDER BY array_position($2, id)",
                    &[&study, &candidates],
                )?;
                Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
            },
        )
    }

    /// [`RungCache::candidates`], after reading the rung results changed since the last call.
    fn promotion_candidates(
        &self,
        tx: &mut Tx<'_, '_>,
        study: &str,
        rule: Promotion,
    ) -> std::result::Result<Vec<i64>, Fail> {
        let mut cache = self.rungs.borrow_mut();
        cache.refresh(tx, study)?;
        cache.candidates(rule).into_iter().map(to_i64).collect()
    }

    /// The best finished trial: highest validation macro-F1 among `completed` and `stopped`
    /// trials (NaN never), ties to the one that ended first — the one whose checkpoint the
    /// workers keep.
    pub fn best_trial(&self) -> Result<Option<(u64, f64)>> {
        self.once(
            || "finding the best trial".into(),
            |tx, study, _| {
                let row = tx.query_opt(BEST_TRIAL, &[&study])?;
                Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, f64>(1))))
            },
        )
    }

    /// The best finished trial (as [`best_trial`](Self::best_trial)) and how many trials
    /// with a greater id have ended (failed ones included): what a worker checks the study's
    /// early-stopping rule ([`StopWhen`](crate::tune::StopWhen)) against. One transaction.
    pub fn best_and_ended_after(&self) -> Result<(Option<(u64, f64)>, u64)> {
        self.once(
            || "checking the study's early-stopping rule".into(),
            |tx, study, _| {
                let Some(best) = tx.query_opt(BEST_TRIAL, &[&study])? else {
                    return Ok((None, 0));
                };
                let id: i64 = best.get(0);
                let after: i64 = tx.query_one(ENDED_AFTER, &[&study, &id])?.get(0);
                Ok((Some((id as u64, best.get::<_, f64>(1))), after as u64))
            },
        )
    }

    /// Records trials that ended (each as [`StudyStore::finish_trial`] without a policy) in
    /// one transaction: all of them, or, when another worker owns one, none
    /// ([`Error::TakenOver`]).
    pub fn finish_trials(&mut self, trials: &[TrialRow], elapsed_s: f64) -> Result<()> {
        self.tx(
            || format!("finishing {} trials", trials.len()),
            |tx, study, worker| {
                set_elapsed_in(tx, study, elapsed_s)?;
                for trial in trials {
                    upsert_trial(tx, study, worker, trial, None, None, false)?;
                }
                Ok(())
            },
        )
    }

    /// Deletes the checkpoints of finished trials other than the best (see
    /// [`best_trial`](Self::best_trial)); returns how many.
    pub fn prune_checkpoints(&mut self) -> Result<u64> {
        self.once(
            || "deleting the checkpoints of finished trials".into(),
            |tx, study, _| {
                Ok(tx.execute(
                    &format!(
                        "DELETE FROM checkpoints c USING trials t WHERE c.study = $1 AND t.study = c.study \
                         AND t.id = c.trial AND t.status NOT IN ('running', 'paused') \
                         AND c.trial <> COALESCE((SELECT id FROM ({BEST_TRIAL}) AS best), -1)"
                    ),
                    &[&study],
                )?)
            },
        )
    }

    /// Every study in the database, by name.
    pub fn list_studies(&self) -> Result<Vec<StudyListing>> {
        self.once(
            || "listing studies".into(),
            |tx, _, _| {
                let rows = tx.query(
                    "SELECT config, strategy, dataset, seed, budget_s, elapsed_s, created_unix, max_trials, name, \
                     (SELECT count(*) FROM trials t WHERE t.study = s.name), \
                     (SELECT count(*) FROM trials t WHERE t.study = s.name AND t.status IN ('running', 'paused')) \
                     FROM studies s ORDER BY name",
                    &[],
                )?;
                let mut out = Vec::new();
                for row in rows {
                    let name: String = row.get(8);
                    let best = tx.query_opt(BEST_TRIAL, &[&name])?.map(|r| (r.get::<_, i64>(0) as u64, r.get(1)));
                    let max: Option<i64> = row.get(7);
                    out.push(StudyListing {
                        study: study_from_row(&row)?,
                        max_trials: max.map(|m| m as u64),
                        trials: row.get::<_, i64>(9) as u64,
                        open: row.get::<_, i64>(10) as u64,
                        best,
                        name,
                    });
                }
                Ok(out)
            },
        )
    }

    /// The workers that wrote a trial's decisions, in decision order (one entry per
    /// decision).
    pub fn decision_workers(&self, trial: u64) -> Result<Vec<String>> {
        self.once(
            || format!("reading who decided in trial {trial}"),
            |tx, study, _| {
                let rows = tx.query(
                    "SELECT worker FROM decisions WHERE study = $1 AND trial = $2 ORDER BY idx",
                    &[&study, &to_i64(trial)?],
                )?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            },
        )
    }
}

const BEST_TRIAL: &str = "SELECT id, val_macro_f1 FROM trials WHERE study = $1 AND status IN ('completed', 'stopped') \
     AND val_macro_f1 IS NOT NULL AND val_macro_f1 <> 'NaN' ORDER BY val_macro_f1 DESC, ended_unix ASC, id ASC LIMIT 1";

const ENDED_AFTER: &str =
    "SELECT count(*) FROM trials WHERE study = $1 AND id > $2 AND status NOT IN ('running', 'paused')";

/// Creates or migrates the schema (see the module docs); refuses a newer one.
fn migrate(client: &mut Client) -> std::result::Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tuneforge_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
    )?;
    let version: i64 = tx.query_opt("SELECT version FROM tuneforge_schema WHERE id = 1", &[])?.map_or(0, |r| r.get(0));
    if version > SCHEMA_VERSION {
        // Raised by the server so that it travels as a postgres::Error, with a clear text.
        tx.batch_execute(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'the database holds tuneforge study schema version {version}, newer than \
             this build of tuneforge (version {SCHEMA_VERSION}): upgrade tuneforge on this machine' \
             USING ERRCODE = 'TF001'; END $$"
        ))?;
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(migration)?;
        tracing::info!(version = i + 1, "migrated the study schema");
    }
    if version < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO tuneforge_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = $1",
            &[&SCHEMA_VERSION],
        )?;
    }
    tx.commit()
}

fn to_i64(v: u64) -> std::result::Result<i64, Fail> {
    i64::try_from(v).map_err(|_| Fail::Other(format!("{v} is above the largest storable integer").into()))
}

fn seed_to_sql(seed: u64) -> i64 {
    i64::from_ne_bytes(seed.to_ne_bytes())
}

fn seed_from_sql(seed: i64) -> u64 {
    u64::from_ne_bytes(seed.to_ne_bytes())
}

fn study_from_row(row: &Row) -> std::result::Result<StudyRow, Fail> {
    Ok(StudyRow {
        config: row.try_get(0)?,
        strategy: row.try_get(1)?,
        dataset: row.try_get(2)?,
        seed: seed_from_sql(row.try_get(3)?),
        budget_s: row.try_get(4)?,
        elapsed_s: row.try_get(5)?,
        created_unix: row.try_get(6)?,
    })
}

fn trial_from_row(row: &Row) -> std::result::Result<TrialRow, Fail> {
    Ok(TrialRow {
        id: row.try_get::<_, i64>(0)? as u64,
        status: row.try_get(1)?,
        config: row.try_get(2)?,
        record: row.try_get(3)?,
        val_macro_f1: row.try_get(4)?,
        samples_per_s: row.try_get(5)?,
        reward: row.try_get(6)?,
        decisions: row.try_get::<_, i64>(7)? as u64,
        resumed: row.try_get(8)?,
        started_unix: row.try_get(9)?,
        updated_unix: row.try_get(10)?,
        ended_unix: row.try_get(11)?,
        pid: row.try_get::<_, i64>(12)? as u32,
    })
}

/// Runs `writes` (CTEs, comma-separated, each selecting `FROM allowed` or testing `EXISTS
/// (SELECT 1 FROM allowed)`) under the owner check of trial `trial`, in one statement: CTE
/// `fence` locks the trial's row and refreshes its heartbeat if this worker owns it (an
/// `UPDATE` locks as `SELECT ... FOR NO KEY UPDATE` does), and `allowed` has a row only if
/// the writes may be made — the trial has no row yet (its first save creates it), this
/// worker owns it, or `open_only` and it has ended. Otherwise nothing is written and the
/// result is [`Fail::Lost`]. Parameters: $1 study, $2 trial, $3 worker, then `extra`.
fn fenced_write(
    tx: &mut Tx<'_, '_>,
    study: &str,
    worker: &str,
    trial: u64,
    open_only: bool,
    writes: &str,
    extra: &[&(dyn ToSql + Sync)],
) -> std::result::Result<(), Fail> {
    let id = to_i64(trial)?;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&study, &id, &worker];
    params.extend_from_slice(extra);
    let open = if open_only { " AND status IN ('running', 'paused')" } else { "" };
    let row = tx.query_opt(
        &format!(
            "WITH fence AS (UPDATE trials SET heartbeat = CASE WHEN worker = $3 THEN {SERVER_NOW} ELSE heartbeat END \
             WHERE study = $1 AND id = $2 RETURNING worker, status), \
             allowed AS (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM fence WHERE worker <> $3{open})), \
             {writes} SELECT worker, status FROM fence"
        ),
        &params,
    )?;
    let Some(row) = row else {
        return Ok(());
    };
    let owner: String = row.try_get(0)?;
    let status: String = row.try_get(1)?;
    if owner != worker && (!open_only || status == "running" || status == "paused") {
        return Err(Fail::Lost { trial, owner });
    }
    Ok(())
}

/// Raises the study's elapsed time to `elapsed_s` (the study row's lock, held to the commit).
fn set_elapsed_in(tx: &mut Tx<'_, '_>, study: &str, elapsed_s: f64) -> std::result::Result<(), Fail> {
    let changed =
        tx.execute("UPDATE studies SET elapsed_s = GREATEST(elapsed_s, $2) WHERE name = $1", &[&study, &elapsed_s])?;
    if changed == 0 {
        return Err("no study row: create_study first".into());
    }
    Ok(())
}

/// What [`upsert_trial`]'s statement read besides writing, for a policy merge.
struct MergeRead {
    /// The study's policy state as the statement saw it.
    policy: Option<String>,
    /// The row held this status and end time (not null: the trial had ended) already: the
    /// statement is a retry of a transaction whose commit went through (its answer lost), so
    /// the trial's policy update is in the stored state already.
    recorded: bool,
}

/// Inserts or updates trial `t`'s row in one statement, unless another worker owns it
/// ([`Fail::Lost`], nothing written): with `claim` as its claim token (`None` keeps the
/// row's) and, given `elapsed_s`, the study's elapsed time raised to it, as [`set_elapsed_in`]
/// does. With `merge`, the same statement also reads what a policy merge needs
/// ([`MergeRead`]; run it after the study row's lock is taken, so that it sees the latest
/// policy).
fn upsert_trial(
    tx: &mut Tx<'_, '_>,
    study: &str,
    worker: &str,
    t: &TrialRow,
    claim: Option<&str>,
    elapsed_s: Option<f64>,
    merge: bool,
) -> std::result::Result<MergeRead, Fail> {
    // Only a row written raises the study's elapsed time (the study row must exist: the
    // trial's foreign key).
    let elapsed = match elapsed_s {
        Some(_) => {
            ", elapsed AS (UPDATE studies SET elapsed_s = GREATEST(elapsed_s, $17) WHERE name = $1 \
             AND EXISTS (SELECT 1 FROM written))"
        }
        None => "",
    };
    let (id, decisions, pid) = (to_i64(t.id)?, to_i64(t.decisions)?, i64::from(t.pid));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &study,
        &id,
        &t.status,
        &t.config,
        &t.record,
        &t.val_macro_f1,
        &t.samples_per_s,
        &t.reward,
        &decisions,
        &t.resumed,
        &t.started_unix,
        &t.updated_unix,
        &t.ended_unix,
        &pid,
        &worker,
        &claim,
    ];
    if let Some(elapsed_s) = &elapsed_s {
        params.push(elapsed_s);
    }
    // Every part of the statement sees the rows as they were before it: `prior` is the row
    // before this write.
    let (prior, read) = match merge {
        true => (
            "prior AS (SELECT status = $3 AND ended_unix = $13 AS same FROM trials WHERE study = $1 AND id = $2), ",
            ", (SELECT state FROM policy WHERE study = $1), coalesce((SELECT same FROM prior), false)",
        ),
        false => ("", ""),
    };
    // The update's WHERE refuses another worker's row (locked, so its owner is the latest).
    let row = tx.query_one(
        &format!(
            "WITH {prior}written AS (INSERT INTO trials (study, id, status, config, record, val_macro_f1, \
             samples_per_s, reward, decisions, resumed, started_unix, updated_unix, ended_unix, pid, worker, \
             heartbeat, claim) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             {SERVER_NOW}, $16) \
             ON CONFLICT (study, id) DO UPDATE SET status = excluded.status, config = excluded.config, \
             record = excluded.record, val_macro_f1 = excluded.val_macro_f1, samples_per_s = excluded.samples_per_s, \
             reward = excluded.reward, decisions = excluded.decisions, resumed = excluded.resumed, \
             started_unix = excluded.started_unix, updated_unix = excluded.updated_unix, \
             ended_unix = excluded.ended_unix, pid = excluded.pid, heartbeat = excluded.heartbeat, \
             claim = COALESCE(excluded.claim, trials.claim) WHERE trials.worker = excluded.worker RETURNING 1)\
             {elapsed} SELECT count(*){read} FROM written"
        ),
        &params,
    )?;
    if row.try_get::<_, i64>(0)? == 0 {
        let owner = tx
            .query_opt("SELECT worker FROM trials WHERE study = $1 AND id = $2", &[&study, &id])?
            .map_or_else(|| "(none)".to_owned(), |r| r.get(0));
        return Err(Fail::Lost { trial: t.id, owner });
    }
    Ok(match merge {
        true => MergeRead { policy: row.try_get(1)?, recorded: row.try_get(2)? },
        false => MergeRead { policy: None, recorded: false },
    })
}

/// `INSERT INTO evaluations` of the evaluation in parameters `$p` to `$p+6`, selecting
/// from [`fenced_write`]'s `allowed`.
fn evaluation_insert(p: usize) -> String {
    let [idx, step, split, f1, accuracy, loss, at] = std::array::from_fn(|k| p + k);
    format!(
        "INSERT INTO evaluations (study, trial, idx, step, split, macro_f1, accuracy, loss, at_unix) \
         SELECT $1, $2, ${idx}::bigint, ${step}::bigint, ${split}::text, ${f1}::float8, ${accuracy}::float8, \
         ${loss}::float8, ${at}::float8 FROM allowed ON CONFLICT (study, trial, idx, split) DO UPDATE \
         SET step = excluded.step, macro_f1 = excluded.macro_f1, accuracy = excluded.accuracy, \
         loss = excluded.loss, at_unix = excluded.at_unix"
    )
}

/// Writes decision `d` and the evaluation made with it (if any) in one fenced statement.
fn write_decision(
    tx: &mut Tx<'_, '_>,
    study: &str,
    worker: &str,
    d: &DecisionRow,
    e: Option<&EvaluationRow>,
) -> std::result::Result<(), Fail> {
    let (idx, step) = (to_i64(d.idx)?, to_i64(d.step)?);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &idx,
        &step,
        &d.observation,
        &d.action,
        &d.applied,
        &d.reward,
        &d.val_macro_f1,
        &d.samples_per_s,
        &d.at_unix,
    ];
    let mut writes = "decision AS (INSERT INTO decisions (study, trial, idx, step, observation, action, applied, \
         reward, val_macro_f1, samples_per_s, at_unix, worker) SELECT $1, $2, $4::bigint, $5::bigint, $6::text, \
         $7::text, $8::text, $9::float8, $10::float8, $11::float8, $12::float8, $3 FROM allowed \
         ON CONFLICT (study, trial, idx) DO UPDATE SET step = excluded.step, \
         observation = excluded.observation, action = excluded.action, applied = excluded.applied, \
         reward = excluded.reward, val_macro_f1 = excluded.val_macro_f1, \
         samples_per_s = excluded.samples_per_s, at_unix = excluded.at_unix, worker = excluded.worker)"
        .to_owned();
    let (e_idx, e_step);
    if let Some(e) = e {
        (e_idx, e_step) = (to_i64(e.idx)?, to_i64(e.step)?);
        params.extend([
            &e_idx as &(dyn ToSql + Sync),
            &e_step,
            &e.split,
            &e.macro_f1,
            &e.accuracy,
            &e.loss,
            &e.at_unix,
        ]);
        writes += &format!(", evaluation AS ({})", evaluation_insert(13));
    }
    fenced_write(tx, study, worker, d.trial, false, &writes, &params)
}

/// Writes evaluation `e` in one fenced statement (`open_only`: as in [`fenced_write`]).
fn write_evaluation(
    tx: &mut Tx<'_, '_>,
    study: &str,
    worker: &str,
    e: &EvaluationRow,
    open_only: bool,
) -> std::result::Result<(), Fail> {
    let (idx, step) = (to_i64(e.idx)?, to_i64(e.step)?);
    fenced_write(
        tx,
        study,
        worker,
        e.trial,
        open_only,
        &format!("evaluation AS ({})", evaluation_insert(4)),
        &[&idx, &step, &e.split, &e.macro_f1, &e.accuracy, &e.loss, &e.at_unix],
    )
}

/// Stores `state` as the study's policy; returns its update count (`policy.updates`).
fn store_policy(tx: &mut Tx<'_, '_>, study: &str, trial: u64, state: &str) -> std::result::Result<i64, Fail> {
    let row = tx.query_one(
        "INSERT INTO policy (study, trial, state) VALUES ($1, $2, $3) ON CONFLICT (study) DO UPDATE \
         SET trial = excluded.trial, state = excluded.state, updates = policy.updates + 1 RETURNING updates",
        &[&study, &to_i64(trial)?, &state],
    )?;
    Ok(row.try_get(0)?)
}

impl StudyStore for PostgresStore {
    fn study(&self) -> Result<Option<StudyRow>> {
        self.once(
            || "reading the study".into(),
            |tx, study, _| {
                let row = tx.query_opt(
                    "SELECT config, strategy, dataset, seed, budget_s, elapsed_s, created_unix FROM studies \
                     WHERE name = $1",
                    &[&study],
                )?;
                row.map(|r| study_from_row(&r)).transpose()
            },
        )
    }

    /// The `max_trials` column: the stored config of a PostgreSQL study has no trial budget
    /// (its workers may each be given one).
    fn max_trials(&self) -> Result<Option<u64>> {
        self.once(
            || "reading the trial budget".into(),
            |tx, study, _| {
                let row = tx.query_opt("SELECT max_trials FROM studies WHERE name = $1", &[&study])?;
                Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(|m| m as u64))
            },
        )
    }

    fn create_study(&mut self, s: &StudyRow) -> Result<()> {
        self.tx(
            || "creating the study".into(),
            |tx, study, _| {
                let n = tx.execute(
                    "INSERT INTO studies (name, config, strategy, dataset, seed, budget_s, elapsed_s, created_unix) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING",
                    &[
                        &study,
                        &s.config,
                        &s.strategy,
                        &s.dataset,
                        &seed_to_sql(s.seed),
                        &s.budget_s,
                        &s.elapsed_s,
                        &s.created_unix,
                    ],
                )?;
                if n == 0 {
                    return Err(format!("a study named {study:?} exists already in this database").into());
                }
                Ok(())
            },
        )
    }

    fn set_elapsed(&mut self, elapsed_s: f64) -> Result<()> {
        self.tx(|| "recording elapsed time".into(), |tx, study, _| set_elapsed_in(tx, study, elapsed_s))
    }

    fn save_trial(&mut self, trial: &TrialRow, elapsed_s: f64) -> Result<()> {
        self.once(
            || format!("saving trial {}", trial.id),
            |tx, study, worker| upsert_trial(tx, study, worker, trial, None, Some(elapsed_s), false).map(drop),
        )
    }

    fn trials(&self) -> Result<Vec<TrialRow>> {
        self.once(
            || "reading trials".into(),
            |tx, study, _| {
                let rows =
                    tx.query(&format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE study = $1 ORDER BY id"), &[&study])?;
                rows.iter().map(trial_from_row).collect()
            },
        )
    }

    fn add_decision(&mut self, d: &DecisionRow) -> Result<()> {
        self.once(
            || format!("adding decision {} of trial {}", d.idx, d.trial),
            |tx, study, worker| write_decision(tx, study, worker, d, None),
        )
    }

    fn add_decision_evaluated(&mut self, d: &DecisionRow, e: Option<&EvaluationRow>) -> Result<()> {
        self.once(
            || format!("adding decision {} of trial {} and its evaluation", d.idx, d.trial),
            |tx, study, worker| write_decision(tx, study, worker, d, super::evaluation_of(d, e)?),
        )
    }

    fn decisions(&self, trial: u64) -> Result<Vec<DecisionRow>> {
        self.once(
            || format!("reading decisions of trial {trial}"),
            |tx, study, _| {
                let rows = tx.query(
                    "SELECT trial, idx, step, observation, action, applied, reward, val_macro_f1, samples_per_s, \
                     at_unix FROM decisions WHERE study = $1 AND trial = $2 ORDER BY idx",
                    &[&study, &to_i64(trial)?],
                )?;
                rows.iter()
                    .map(|r| {
                        Ok(DecisionRow {
                            trial: r.try_get::<_, i64>(0)? as u64,
                            idx: r.try_get::<_, i64>(1)? as u64,
                            step: r.try_get::<_, i64>(2)? as u64,
                            observation: r.try_get(3)?,
                            action: r.try_get(4)?,
                            applied: r.try_get(5)?,
                            reward: r.try_get(6)?,
                            val_macro_f1: r.try_get(7)?,
                            samples_per_s: r.try_get(8)?,
                            at_unix: r.try_get(9)?,
                        })
                    })
                    .collect()
            },
        )
    }

    fn add_evaluation(&mut self, e: &EvaluationRow) -> Result<()> {
        self.tx(
            || format!("adding an evaluation of trial {} after decision {}", e.trial, e.idx),
            // The test evaluation of the best (finished) trial is written by whichever worker
            // reports the study; the rest only by the trial's owner.
            |tx, study, worker| write_evaluation(tx, study, worker, e, e.split == "test"),
        )
    }

    fn evaluations(&self, trial: u64) -> Result<Vec<EvaluationRow>> {
        self.once(
            || format!("reading evaluations of trial {trial}"),
            |tx, study, _| {
                let rows = tx.query(
                    "SELECT trial, idx, step, split, macro_f1, accuracy, loss, at_unix FROM evaluations \
                     WHERE study = $1 AND trial = $2 ORDER BY idx, seq",
                    &[&study, &to_i64(trial)?],
                )?;
                rows.iter()
                    .map(|r| {
                        Ok(EvaluationRow {
                            trial: r.try_get::<_, i64>(0)? as u64,
                            idx: r.try_get::<_, i64>(1)? as u64,
                            step: r.try_get::<_, i64>(2)? as u64,
                            split: r.try_get(3)?,
                            macro_f1: r.try_get(4)?,
                            accuracy: r.try_get(5)?,
                            loss: r.try_get(6)?,
                            at_unix: r.try_get(7)?,
                        })
                    })
                    .collect()
            },
        )
    }

    fn save_checkpoint(&mut self, trial: &TrialRow, c: &CheckpointRow, elapsed_s: f64) -> Result<()> {
        self.tx(
            || format!("saving the checkpoint of trial {}", trial.id),
            |tx, study, worker| {
                if c.trial != trial.id {
                    return Err(format!("the checkpoint names trial {}, the trial row is {}", c.trial, trial.id).into());
                }
                upsert_trial(tx, study, worker, trial, None, Some(elapsed_s), false)?;
                tx.execute(
                    "INSERT INTO checkpoints (study, trial, step, decisions, state, model, optimizer, created_unix, \
                     worker) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (study, trial) DO UPDATE SET \
                     step = excluded.step, decisions = excluded.decisions, state = excluded.state, \
                     model = excluded.model, optimizer = excluded.optimizer, created_unix = excluded.created_unix, \
                     worker = excluded.worker",
                    &[
                        &study,
                        &to_i64(c.trial)?,
                        &to_i64(c.step)?,
                        &to_i64(c.decisions)?,
                        &c.state,
                        &c.model,
                        &c.optimizer,
                        &c.created_unix,
                        &worker,
                    ],
                )?;
                Ok(())
            },
        )
    }

    fn checkpoint(&self, trial: u64) -> Result<Option<CheckpointRow>> {
        self.once(
            || format!("reading the checkpoint of trial {trial}"),
            |tx, study, _| {
                let row = tx.query_opt(
                    "SELECT trial, step, decisions, state, model, optimizer, created_unix FROM checkpoints \
                     WHERE study = $1 AND trial = $2",
                    &[&study, &to_i64(trial)?],
                )?;
                row.map(|r| {
                    Ok(CheckpointRow {
                        trial: r.try_get::<_, i64>(0)? as u64,
                        step: r.try_get::<_, i64>(1)? as u64,
                        decisions: r.try_get::<_, i64>(2)? as u64,
                        state: r.try_get(3)?,
                        model: r.try_get(4)?,
                        optimizer: r.try_get(5)?,
                        created_unix: r.try_get(6)?,
                    })
                })
                .transpose()
            },
        )
    }

    fn delete_checkpoint(&mut self, trial: u64) -> Result<()> {
        self.once(
            || format!("deleting the checkpoint of trial {trial}"),
            |tx, study, worker| {
                let writes = "deleted AS (DELETE FROM checkpoints WHERE study = $1 AND trial = $2 \
                              AND EXISTS (SELECT 1 FROM allowed))";
                fenced_write(tx, study, worker, trial, true, writes, &[])
            },
        )
    }

    fn rewind(&mut self, trial: u64, from_idx: u64) -> Result<()> {
        self.once(
            || format!("rewinding trial {trial} to decision {from_idx}"),
            |tx, study, worker| {
                let writes = "decisions_after AS (DELETE FROM decisions WHERE study = $1 AND trial = $2 \
                              AND idx >= $4 AND EXISTS (SELECT 1 FROM allowed)), \
                              evaluations_after AS (DELETE FROM evaluations WHERE study = $1 AND trial = $2 \
                              AND idx > $4 AND EXISTS (SELECT 1 FROM allowed))";
                fenced_write(tx, study, worker, trial, false, writes, &[&to_i64(from_idx)?])
            },
        )
    }

    fn finish_trial(&mut self, trial: &TrialRow, policy: Option<&str>, elapsed_s: f64) -> Result<()> {
        let what = || format!("finishing trial {}", trial.id);
        let Some(state) = policy else {
            return self.once(what, |tx, study, worker| {
                upsert_trial(tx, study, worker, trial, None, Some(elapsed_s), false).map(drop)
            });
        };
        self.tx(what, |tx, study, worker| {
            upsert_trial(tx, study, worker, trial, None, Some(elapsed_s), false)?;
            store_policy(tx, study, trial.id, state).map(drop)
        })
    }

    fn finish_trial_merging(
        &mut self,
        trial: &TrialRow,
        merge: &mut dyn FnMut(Option<&str>) -> std::result::Result<String, String>,
        elapsed_s: f64,
    ) -> Result<()> {
        self.merged_updates = self.tx(
            || format!("finishing trial {} (merging its policy update)", trial.id),
            |tx, study, worker| {
                // The study row's lock, taken first (by the update of elapsed_s) and held to the
                // commit, serialises merges, also while no policy row exists; the upsert's
                // statement, run after it, reads the latest policy.
                set_elapsed_in(tx, study, elapsed_s)?;
                let read = upsert_trial(tx, study, worker, trial, None, None, true)?;
                if read.recorded {
                    // A retry after a lost commit answer: the update is in; not twice.
                    return Ok(None);
                }
                let state =
                    merge(read.policy.as_deref()).map_err(|why| Fail::Other(format!("policy: {why}").into()))?;
                Ok(Some(store_policy(tx, study, trial.id, &state)?))
            },
        )?;
        Ok(())
    }

    fn policy(&self) -> Result<Option<String>> {
        self.once(
            || "reading the policy state".into(),
            |tx, study, _| Ok(tx.query_opt("SELECT state FROM policy WHERE study = $1", &[&study])?.map(|r| r.get(0))),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Against a real server: `TUNEFORGE_PG_URL` (set by .ci/run, which starts a throw-away
    //! one). Without it the tests print why and pass, except under CI, where they fail.

    use super::*;

    fn url() -> Option<String> {
        match std::env::var("TUNEFORGE_PG_URL") {
            Ok(url) => Some(url),
            Err(_) if std::env::var_os("CI").is_some() => {
                panic!("TUNEFORGE_PG_URL is not set under CI: .ci/run starts a PostgreSQL server and sets it")
            }
            Err(_) => {
                eprintln!("skipped: TUNEFORGE_PG_URL is not set (source .ci/postgres.sh to start a server)");
                None
            }
        }
    }

    /// A study name no other test (or earlier run) uses.
    fn unique(name: &str) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("{name}-{}-{nanos}", std::process::id())
    }

    fn options(worker: &str) -> PgOptions {
        PgOptions { worker: worker.into(), retry_for: Duration::from_secs(30), ..PgOptions::default() }
    }

    fn study() -> StudyRow {
        StudyRow {
            config: r#"{"budget":60,"strategy":"rl"}"#.into(),
            strategy: "rl".into(),
            dataset: "digits".into(),
            seed: u64::MAX - 6,
            budget_s: 60.5,
            elapsed_s: 0.0,
            created_unix: 1_790_000_000.25,
        }
    }

    fn trial(id: u64) -> TrialRow {
        TrialRow {
            id,
            status: "running".into(),
            config: format!(r#"{{"lr":0.001,"trial":{id}}}"#),
            record: r#"{"decisions":[]}"#.into(),
            val_macro_f1: None,
            samples_per_s: Some(1234.5),
            reward: -0.125,
            decisions: 0,
            resumed: false,
            started_unix: 1_790_000_001.5,
            updated_unix: 1_790_000_002.75,
            ended_unix: None,
            pid: 4242,
        }
    }

    fn decision(trial: u64, idx: u64) -> DecisionRow {
        DecisionRow {
            trial,
            idx,
            step: 100 * idx + 7,
            observation: format!("[{idx}, 0.5]"),
            action: r#"{"lr_scale":2.0}"#.into(),
            applied: r#"{"lr":0.002}"#.into(),
            reward: 0.01 * idx as f64,
            val_macro_f1: 0.5 + 0.01 * idx as f64,
            samples_per_s: 900.0 + idx as f64,
            at_unix: 1_790_000_010.0 + idx as f64,
        }
    }

    fn evaluation(trial: u64, idx: u64, split: &str) -> EvaluationRow {
        EvaluationRow {
            trial,
            idx,
            step: 100 * idx + 7,
            split: split.into(),
            macro_f1: 0.6 + 0.01 * idx as f64,
            accuracy: 0.7,
            loss: 0.33,
            at_unix: 1_790_000_020.0 + idx as f64,
        }
    }

    fn checkpoint(trial: u64, step: u64, fill: u8) -> CheckpointRow {
        CheckpointRow {
            trial,
            step,
            decisions: step / 100,
            state: format!(r#"{{"step":{step}}}"#),
            model: vec![fill; 3000],
            optimizer: (0..=255u8).cycle().take(5000).collect(),
            created_unix: 1_790_000_030.0 + step as f64,
        }
    }

    fn fresh(url: &str, worker: &str) -> PostgresStore {
        let mut store = PostgresStore::open(url, &unique("unit"), options(worker)).unwrap();
        store.create_study(&study()).unwrap();
        store
    }

    /// A fresh `asha` study (the only strategy whose rung results become rows).
    fn fresh_asha(url: &str, worker: &str) -> PostgresStore {
        let mut store = PostgresStore::open(url, &unique("asha"), options(worker)).unwrap();
        store.create_study(&StudyRow { strategy: "asha".into(), ..study() }).unwrap();
        store
    }

    #[test]
    fn rows_round_trip_as_in_sqlite() {
        let Some(url) = url() else { return };
        let mut store = fresh(&url, "w1");
        assert_eq!(store.study().unwrap(), Some(study()));
        let text = store.create_study(&study()).unwrap_err().to_string();
        assert!(text.contains("exists already"), "{text}");
        store.save_trial(&trial(3), 1.0).unwrap();
        store.save_trial(&trial(1), 2.0).unwrap();
        assert_eq!(store.trials().unwrap(), vec![trial(1), trial(3)]);
        // Elapsed time is the largest reported.
        store.set_elapsed(1.5).unwrap();
        assert_eq!(store.study().unwrap().unwrap().elapsed_s, 2.0);
        let nan = TrialRow { reward: f64::NAN, ..trial(5) };
        store.save_trial(&nan, 2.0).unwrap();
        assert!(store.trials().unwrap()[2].reward.is_nan());

        for idx in [2, 0, 1] {
            store.add_decision(&decision(3, idx)).unwrap();
        }
        // A replayed write is idempotent.
        store.add_decision(&decision(3, 1)).unwrap();
        assert_eq!(store.decisions(3).unwrap(), vec![decision(3, 0), decision(3, 1), decision(3, 2)]);
        let evals = [evaluation(3, 1, "validation"), evaluation(3, 0, "validation"), evaluation(3, 1, "test")];
        for e in &evals {
            store.add_evaluation(e).unwrap();
        }
        assert_eq!(store.evaluations(3).unwrap(), vec![evals[1].clone(), evals[0].clone(), evals[2].clone()]);
        assert!(store.add_decision(&decision(9, 0)).is_err(), "a decision of an unknown trial");
        // A decision and its evaluation: together, or neither (the evaluation of another trial).
        store.add_decision_evaluated(&decision(1, 0), Some(&evaluation(1, 1, "validation"))).unwrap();
        assert!(store.add_decision_evaluated(&decision(1, 1), Some(&evaluation(3, 2, "validation"))).is_err());
        assert_eq!(store.decisions(1).unwrap(), vec![decision(1, 0)]);
        assert_eq!(store.evaluations(1).unwrap(), vec![evaluation(1, 1, "validation")]);

        store.save_checkpoint(&trial(3), &checkpoint(3, 200, 1), 3.0).unwrap();
        store.save_checkpoint(&trial(3), &checkpoint(3, 300, 2), 3.0).unwrap();
        assert_eq!(store.checkpoint(3).unwrap(), Some(checkpoint(3, 300, 2)));
        assert!(store.save_checkpoint(&trial(3), &checkpoint(1, 100, 0), 3.0).is_err());
        store.rewind(3, 1).unwrap();
        assert_eq!(store.decisions(3).unwrap(), vec![decision(3, 0)]);
        assert_eq!(store.evaluations(3).unwrap(), vec![evals[1].clone(), evals[0].clone(), evals[2].clone()]);
        store.rewind(3, 0).unwrap();
        assert_eq!(store.evaluations(3).unwrap(), vec![evals[1].clone()]);
        store.delete_checkpoint(3).unwrap();
        assert_eq!(store.checkpoint(3).unwrap(), None);

        assert_eq!(store.policy().unwrap(), None);
        let done = TrialRow { status: "completed".into(), ended_unix: Some(1_790_000_050.0), ..trial(3) };
        store.finish_trial(&done, Some(r#"{"theta":[0.5]}"#), 4.0).unwrap();
        assert_eq!(store.policy().unwrap().as_deref(), Some(r#"{"theta":[0.5]}"#));
        let bad = TrialRow { record: "{not json".into(), ..trial(7) };
        assert!(store.save_trial(&bad, 4.0).is_err());
        assert_eq!(store.trials().unwrap().len(), 3);
    }

    #[test]
    fn only_the_owner_writes_a_trial_and_a_stale_one_is_taken_over() {
        let Some(url) = url() else { return };
        let name = unique("fence");
        let mut a = PostgresStore::open(&url, &name, options("a")).unwrap();
        a.create_study(&study()).unwrap();
        let mut b = PostgresStore::open(
            &url,
            &name,
            PgOptions { heartbeat_timeout: Duration::from_millis(300), ..options("b") },
        )
        .unwrap();
        assert_eq!(a.claim(true, &mut trial, None).unwrap(), Claim::New(0));
        assert_eq!(b.claim(true, &mut trial, None).unwrap(), Claim::New(1));
        a.add_decision(&decision(0, 0)).unwrap();
        let err = b.add_decision(&decision(0, 1)).unwrap_err();
        assert!(matches!(&err, Error::TakenOver { trial: 0, owner, .. } if owner == "a"), "{err}");
        // a stops beating; b finishes its own trial and takes a's over.
        std::thread::sleep(Duration::from_millis(600));
        b.finish_trial(&TrialRow { status: "completed".into(), ended_unix: Some(1.0), ..trial(1) }, None, 1.0).unwrap();
        match b.claim(false, &mut trial, None).unwrap() {
            Claim::TakeOver(row) => assert_eq!(row.id, 0),
            other => panic!("expected a takeover, got {other:?}"),
        }
        b.add_decision(&decision(0, 1)).unwrap();
        // a, back from the dead, may not write it any more.
        let err = a.save_trial(&trial(0), 1.0).unwrap_err();
        assert!(matches!(&err, Error::TakenOver { trial: 0, owner, .. } if owner == "b"), "{err}");
        assert_eq!(a.claim(false, &mut trial, None).unwrap(), Claim::Wait);
        b.finish_trial(&TrialRow { status: "completed".into(), ended_unix: Some(2.0), ..trial(0) }, None, 1.0).unwrap();
        assert_eq!(a.claim(false, &mut trial, None).unwrap(), Claim::Done);
        assert_eq!(b.decision_workers(0).unwrap(), vec!["a".to_string(), "b".to_string()]);
    }

    /// Each write another worker's trial refuses is one statement (no transaction to roll
    /// back): the refusal must leave every row as it was, and the owner's heartbeat unbeaten.
    #[test]
    fn a_refused_write_leaves_the_owners_rows_as_they_were() {
        let Some(url) = url() else { return };
        let name = unique("refused");
        let mut a = PostgresStore::open(&url, &name, options("a")).unwrap();
        a.create_study(&study()).unwrap();
        let mut b = PostgresStore::open(&url, &name, options("b")).unwrap();
        assert_eq!(a.claim(true, &mut trial, None).unwrap(), Claim::New(0));
        a.add_decision_evaluated(&decision(0, 0), Some(&evaluation(0, 0, "val"))).unwrap();
        a.save_checkpoint(&trial(0), &checkpoint(0, 100, 1), 1.0).unwrap();
        let mut direct = Client::connect(&url, NoTls).unwrap();
        let snapshot = |direct: &mut Client| -> Vec<String> {
            let row = direct
                .query_one(
                    "SELECT (SELECT row_to_json(t)::text FROM trials t WHERE study = $1 AND id = 0), \
                     (SELECT json_agg(d ORDER BY idx)::text FROM decisions d WHERE study = $1), \
                     (SELECT json_agg(e ORDER BY idx, split)::text FROM evaluations e WHERE study = $1), \
                     (SELECT json_agg(json_build_array(trial, step, md5(model), md5(optimizer), worker))::text \
                      FROM checkpoints WHERE study = $1), \
                     (SELECT elapsed_s::text FROM studies WHERE name = $1)",
                    &[&name],
                )
                .unwrap();
            (0..5).map(|k| row.get::<_, Option<String>>(k).unwrap_or_default()).collect()
        };
        let before = snapshot(&mut direct);
        let ended = TrialRow { status: "completed".into(), ended_unix: Some(5.0), ..trial(0) };
        type Write<'a> = Box<dyn Fn(&mut PostgresStore) -> Result<()> + 'a>;
        let refused: Vec<(&str, Write<'_>)> = vec![
            ("add_decision", Box::new(|b| b.add_decision(&decision(0, 1)))),
            (
                "add_decision_evaluated",
                Box::new(|b| b.add_decision_evaluated(&decision(0, 1), Some(&evaluation(0, 1, "val")))),
            ),
            ("add_evaluation", Box::new(|b| b.add_evaluation(&evaluation(0, 1, "val")))),
            ("add_evaluation (test, trial running)", Box::new(|b| b.add_evaluation(&evaluation(0, 1, "test")))),
            ("delete_checkpoint (trial running)", Box::new(|b| b.delete_checkpoint(0))),
            ("rewind", Box::new(|b| b.rewind(0, 0))),
            ("save_trial", Box::new(|b| b.save_trial(&ended, 9.0))),
            ("save_checkpoint", Box::new(|b| b.save_checkpoint(&trial(0), &checkpoint(0, 200, 2), 9.0))),
            ("finish_trial", Box::new(|b| b.finish_trial(&ended, None, 9.0))),
            ("finish_trial with a policy", Box::new(|b| b.finish_trial(&ended, Some("{}"), 9.0))),
            ("finish_trials", Box::new(|b| b.finish_trials(std::slice::from_ref(&ended), 9.0))),
        ];
        for (what, write) in &refused {
            let err = write(&mut b).expect_err(what);
            assert!(matches!(&err, Error::TakenOver { trial: 0, owner, .. } if owner == "a"), "{what}: {err}");
            assert_eq!(snapshot(&mut direct), before, "{what} wrote");
        }
        // Once the trial has ended, any worker may add its test evaluation and drop its
        // checkpoint (the best trial's report), but still not write the rest.
        a.finish_trial(&ended, None, 2.0).unwrap();
        b.add_evaluation(&evaluation(0, 1, "test")).unwrap();
        assert_eq!(a.evaluations(0).unwrap(), vec![evaluation(0, 0, "val"), evaluation(0, 1, "test")]);
        b.delete_checkpoint(0).unwrap();
        assert_eq!(a.checkpoint(0).unwrap(), None);
        assert!(matches!(b.add_decision(&decision(0, 1)).unwrap_err(), Error::TakenOver { trial: 0, .. }));
        assert!(matches!(b.rewind(0, 0).unwrap_err(), Error::TakenOver { trial: 0, .. }));
        assert_eq!(a.decisions(0).unwrap(), vec![decision(0, 0)]);
    }

    #[test]
    fn trials_from_reads_the_rows_from_an_id_on_as_trials_does() {
        let Some(url) = url() else { return };
        let name = unique("from");
        let mut store = PostgresStore::open(&url, &name, options("f0")).unwrap();
        store.create_or_join(&study(), None).unwrap();
        // Four workers, four running trials (a worker's own running trial is its to take over).
        let mut workers: Vec<PostgresStore> = (0..4)
            .map(|w| {
                let mut worker = PostgresStore::open(&url, &name, options(&format!("f{w}"))).unwrap();
                assert!(matches!(worker.claim(true, &mut trial, None).unwrap(), Claim::New(id) if id == w));
                worker
            })
            .collect();
        let done = TrialRow { status: "stopped".into(), ended_unix: Some(2.0), ..trial(1) };
        workers[1].finish_trial(&done, None, 0.0).unwrap();
        let all = store.trials().unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(store.trials_from(0).unwrap(), all);
        assert_eq!(store.trials_from(1).unwrap(), all[1..]);
        assert_eq!(store.trials_from(1).unwrap()[0], done);
        assert_eq!(store.trials_from(4).unwrap(), vec![]);
        assert!(store.trials_from(u64::MAX).is_err(), "an id above i64::MAX is refused, not wrapped");
    }

    #[test]
    fn claims_respect_the_trial_budget_and_never_give_an_id_twice() {
        let Some(url) = url() else { return };
        let name = unique("claims");
        let mut first = PostgresStore::open(&url, &name, options("w0")).unwrap();
        let (row, max) = first.create_or_join(&study(), Some(30)).unwrap();
        assert_eq!((row, max), (study(), Some(30)));
        let (_, max) = first.create_or_join(&StudyRow { strategy: "random".into(), ..study() }, Some(5)).unwrap();
        assert_eq!(max, Some(30), "a joined study keeps its budget");
        drop(first);
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let (url, name) = (url.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut store = PostgresStore::open(&url, &name, options(&format!("w{w}"))).unwrap();
                    let mut mine = Vec::new();
                    while let Claim::New(id) = store.claim(true, &mut trial, None).unwrap() {
                        mine.push(id);
                        let done = TrialRow { status: "completed".into(), ended_unix: Some(1.0), ..trial(id) };
                        store.finish_trial(&done, None, 0.0).unwrap();
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
    }

    #[test]
    fn concurrent_policy_merges_lose_no_update() {
        let Some(url) = url() else { return };
        let name = unique("merge");
        PostgresStore::open(&url, &name, options("m")).unwrap().create_study(&study()).unwrap();
        let handles: Vec<_> = (0..3u64)
            .map(|w| {
                let (url, name) = (url.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut store = PostgresStore::open(&url, &name, options(&format!("m{w}"))).unwrap();
                    for i in 0..10 {
                        let id = w * 100 + i;
                        store.save_trial(&trial(id), 0.0).unwrap();
                        store
                            .finish_trial_merging(
                                &trial(id),
                                &mut |latest| {
                                    let mut v: Vec<u64> = latest.map_or(Ok(Vec::new()), serde_json::from_str).unwrap();
                                    v.push(id);
                                    Ok(serde_json::to_string(&v).unwrap())
                                },
                                0.0,
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let store = PostgresStore::open(&url, &name, options("m")).unwrap();
        let mut merged: Vec<u64> = serde_json::from_str(&store.policy().unwrap().unwrap()).unwrap();
        merged.sort_unstable();
        let mut expected: Vec<u64> = (0..3).flat_map(|w| (0..10).map(move |i| w * 100 + i)).collect();
        expected.sort_unstable();
        assert_eq!(merged, expected);
    }

    #[test]
    fn a_merge_run_again_after_its_commit_applies_its_update_once() {
        let Some(url) = url() else { return };
        let mut a = fresh(&url, "a");
        let append = |id: u64| {
            move |latest: Option<&str>| {
                let mut v: Vec<u64> = latest.map_or(Ok(Vec::new()), serde_json::from_str).unwrap();
                v.push(id);
                Ok(serde_json::to_string(&v).unwrap())
            }
        };
        let ended = |id| TrialRow { status: "completed".into(), ended_unix: Some(1_790_000_009.25), ..trial(id) };
        for id in 10..13 {
            a.save_trial(&trial(id), 0.0).unwrap();
        }
        a.finish_trial_merging(&ended(10), &mut append(10), 0.0).unwrap();
        assert_eq!(a.merged_updates, Some(1));
        // The commit of trial 11's merge goes through, its answer is lost, it runs again: the
        // replay finds the trial recorded and merges nothing more.
        a.lost_answers.set(1);
        a.finish_trial_merging(&ended(11), &mut append(11), 0.0).unwrap();
        assert_eq!(a.policy().unwrap().as_deref(), Some("[10,11]"));
        assert_eq!(a.merged_updates, None, "the replay merged nothing");
        a.finish_trial_merging(&ended(12), &mut append(12), 0.0).unwrap();
        assert_eq!(a.policy().unwrap().as_deref(), Some("[10,11,12]"));
        assert_eq!(a.merged_updates, Some(3));
        // A claim of a new trial sees the count this store's merge left: its policy is the latest.
        let mut new_row = |id| trial(id);
        assert_eq!(a.claim(true, &mut new_row, None).unwrap(), Claim::New(0));
        assert!(a.merged_policy_is_latest());
        a.save_trial(&ended(0), 0.0).unwrap();
        // Another worker's merge moves the count: no longer the latest at the next claim.
        let mut b = PostgresStore::open(&url, a.study_name(), options("b")).unwrap();
        b.save_trial(&trial(17), 0.0).unwrap();
        b.finish_trial_merging(&ended(17), &mut append(17), 0.0).unwrap();
        assert_eq!(a.claim(true, &mut new_row, None).unwrap(), Claim::New(1));
        assert!(!a.merged_policy_is_latest());
    }

    /// A new, empty database `{prefix}_{pid}` on the tests' server (dropped first if a
    /// crashed run left it): an admin connection to drop it with, its name, its URL and a
    /// direct connection's configuration.
    fn fresh_database(url: &str, prefix: &str) -> (Client, String, String, Config) {
        let db = format!("{prefix}_{}", std::process::id());
        let mut admin = Config::from_str(url).unwrap().connect(NoTls).unwrap();
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        let mut config = Config::from_str(url).unwrap();
        config.dbname(&db);
        let other = format!("{}/{db}", &url[..url.rfind('/').unwrap()]);
        (admin, db, other, config)
    }

    /// A fresh database's tables are analyzed by the worker that claims trial 100 (see
    /// [`ANALYZE_AT`]), not only when autovacuum comes round (turned off here, so that only
    /// the store can have done it).
    #[test]
    fn the_study_tables_are_analyzed_at_the_hundredth_trial() {
        let Some(url) = url() else { return };
        let (_admin, _db, other, config) = fresh_database(&url, "tf_analyze");
        let mut store = PostgresStore::open(&other, "s", options("w")).unwrap();
        store.create_study(&study()).unwrap();
        let mut direct = config.connect(NoTls).unwrap();
        direct.batch_execute("ALTER TABLE trials SET (autovacuum_enabled = false)").unwrap();
        let reltuples = |direct: &mut Client| -> f32 {
            direct.query_one("SELECT reltuples FROM pg_class WHERE relname = 'trials'", &[]).unwrap().get(0)
        };
        for id in 0..100 {
            assert_eq!(store.claim(true, &mut trial, None).unwrap(), Claim::New(id));
            let ended = TrialRow { status: "completed".into(), ended_unix: Some(1.0), ..trial(id) };
            store.finish_trial(&ended, None, 1.0).unwrap();
        }
        assert_eq!(reltuples(&mut direct), -1.0, "analyzed before trial 100");
        assert_eq!(store.claim(true, &mut trial, None).unwrap(), Claim::New(100));
        assert_eq!(reltuples(&mut direct), 101.0);
    }

    #[test]
    fn a_version_1_database_is_migrated_to_find_the_best_trial_by_index() {
        let Some(url) = url() else { return };
        let (mut admin, db, other, config) = fresh_database(&url, "tf_v1");
        // A database as the first release left it (schema 1).
        let mut direct = config.connect(NoTls).unwrap();
        direct
            .batch_execute(&format!(
                "CREATE TABLE tuneforge_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL); \
                 {MIGRATION_1} INSERT INTO tuneforge_schema VALUES (1, 1);"
            ))
            .unwrap();
        let mut store = PostgresStore::open(&other, "old", options("v1")).unwrap();
        let version: i64 = direct.query_one("SELECT version FROM tuneforge_schema", &[]).unwrap().get(0);
        assert_eq!(version, SCHEMA_VERSION);
        let index: i64 =
            direct.query_one("SELECT count(*) FROM pg_indexes WHERE indexname = 'trials_best'", &[]).unwrap().get(0);
        assert_eq!(index, 1);
        store.create_study(&study()).unwrap();
        let done = TrialRow { status: "completed".into(), val_macro_f1: Some(0.75), ended_unix: Some(3.0), ..trial(0) };
        store.save_trial(&trial(0), 0.0).unwrap();
        store.finish_trial(&done, None, 0.0).unwrap();
        assert_eq!(store.best_trial().unwrap(), Some((0, 0.75)));
        drop((store, direct));
        admin.batch_execute(&format!("DROP DATABASE {db}")).unwrap();
    }

    /// ASHA's promotions (η = 3) from every trial's row, as the single-process `asha` picks
    /// them: the paused trials in the top ⅓ of the highest rung that has one whose last rung
    /// is that one, best first (what a claim computed in Rust before migration 3: the
    /// reference for [`RungCache::candidates`]).
    fn promotable_reference(rows: &[TrialRow], rungs_len: usize) -> Vec<u64> {
        let reached: std::collections::BTreeMap<u64, Vec<f64>> =
            rows.iter().filter(|r| !r.status.starts_with("failed")).map(|r| (r.id, record_rungs(&r.record))).collect();
        let mut out = Vec::new();
        for k in (0..rungs_len.saturating_sub(1)).rev() {
            let mut at: Vec<(u64, f64)> = reached.iter().filter_map(|(id, r)| r.get(k).map(|f| (*id, *f))).collect();
            at.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let top = at.len() / 3;
            let paused = |id: &u64| rows.iter().any(|r| r.id == *id && r.status == "paused");
            out.extend(at[..top].iter().filter(|(id, _)| paused(id) && reached[id].len() == k + 1).map(|(id, _)| *id));
        }
        out
    }

    fn record_rungs(record: &str) -> Vec<f64> {
        #[derive(serde::Deserialize)]
        struct Rungs {
            #[serde(default)]
            rungs: Vec<f64>,
        }
        serde_json::from_str::<Rungs>(record).unwrap().rungs
    }

    /// The `rungs` rows of a study, by trial and rung.
    fn rung_rows(direct: &mut Client, study: &str) -> Vec<(u64, Vec<f64>)> {
        let mut out: Vec<(u64, Vec<f64>)> = Vec::new();
        let rows = direct
            .query(
                "SELECT trial, rung, val_macro_f1 FROM rungs WHERE study = $1 AND val_macro_f1 IS NOT NULL \
                 ORDER BY trial, rung",
                &[&study],
            )
            .unwrap();
        for r in rows {
            let (trial, rung, f1) = (r.get::<_, i64>(0) as u64, r.get::<_, i32>(1) as usize, r.get::<_, f64>(2));
            match out.last_mut() {
                Some((t, fs)) if *t == trial => {
                    assert_eq!(fs.len(), rung, "trial {trial}: rungs not contiguous");
                    fs.push(f1);
                }
                _ => {
                    assert_eq!(rung, 0, "trial {trial}: first rung");
                    out.push((trial, vec![f1]));
                }
            }
        }
        out
    }

    /// What the `rungs` rows must be: each non-failed trial's record's rung results.
    fn expected_rung_rows(rows: &[TrialRow]) -> Vec<(u64, Vec<f64>)> {
        rows.iter()
            .filter(|r| !r.status.starts_with("failed"))
            .map(|r| (r.id, record_rungs(&r.record)))
            .filter(|(_, f)| !f.is_empty())
            .collect()
    }

    #[test]
    fn rung_rows_follow_the_records_and_claims_promote_what_asha_picks() {
        use rand::{Rng, SeedableRng};
        let Some(url) = url() else { return };
        let mut direct = Config::from_str(&url).unwrap().connect(NoTls).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut store = fresh_asha(&url, "w1");
        let name = store.study_name().to_string();
        let rule = Promotion { rungs: 4, eta: 3 };
        let statuses = ["running", "paused", "paused", "completed", "stopped", "failed: diverged"];
        let mut compared = 0;
        for round in 0..8 {
            // New trials and rewrites of old ones: rungs grown, rewound (shorter), failed.
            for _ in 0..25 {
                let id = rng.random_range(0..60u64);
                let n = rng.random_range(0..=4usize);
                // Few distinct values: ties are ranked by id.
                let rungs: Vec<f64> = (0..n).map(|_| f64::from(rng.random_range(5..9u8)) / 10.0).collect();
                let status = statuses[rng.random_range(0..statuses.len())];
                let row = TrialRow {
                    status: status.into(),
                    record: serde_json::json!({ "rungs": rungs, "status": status }).to_string(),
                    ..trial(id)
                };
                store.save_trial(&row, 0.0).unwrap();
            }
            let rows = store.trials().unwrap();
            assert_eq!(rung_rows(&mut direct, &name), expected_rung_rows(&rows), "round {round}");
            let want = promotable_reference(&rows, rule.rungs);
            assert_eq!(store.promotable(rule).unwrap(), want, "round {round}");
            compared += want.len();
        }
        assert!(compared > 20, "the random study promoted too little to compare ({compared})");

        // A claim takes the first promotable trial no other transaction has locked.
        let want = store.promotable(rule).unwrap();
        assert!(want.len() >= 3, "{want:?}");
        let mut other = PostgresStore::open(&url, &name, options("w2")).unwrap();
        let mut no_new = |_: u64| -> TrialRow { unreachable!("no new trial asked for") };
        let mut locker = direct.transaction().unwrap();
        locker
            .execute("SELECT 1 FROM trials WHERE study = $1 AND id = $2 FOR UPDATE", &[&name, &(want[0] as i64)])
            .unwrap();
        match other.claim(false, &mut no_new, Some(rule)).unwrap() {
            Claim::Promote(row) => assert_eq!(row.id, want[1], "the locked first pick is skipped"),
            c => panic!("{c:?}"),
        }
        locker.rollback().unwrap();
        // (Another worker: `w2` would take its own running trial back first.)
        let mut third = PostgresStore::open(&url, &name, options("w3")).unwrap();
        match third.claim(false, &mut no_new, Some(rule)).unwrap() {
            Claim::Promote(row) => assert_eq!((row.id, row.status.as_str()), (want[0], "paused")),
            c => panic!("{c:?}"),
        }
        let promoted = store.trials().unwrap().into_iter().filter(|r| r.id == want[0] || r.id == want[1]);
        assert!(promoted.into_iter().all(|r| r.status == "running"));
        assert_eq!(store.promotable(rule).unwrap(), want[2..].to_vec());

        // Another strategy's trials have no rung rows.
        let mut rl = fresh(&url, "w1");
        rl.save_trial(&TrialRow { record: r#"{"rungs":[0.5]}"#.into(), ..trial(0) }, 0.0).unwrap();
        assert_eq!(rung_rows(&mut direct, rl.study_name()), vec![]);
    }

    #[test]
    fn paused_trials_are_closed_in_batches_that_live_workers_do_not_share() {
        let Some(url) = url() else { return };
        let mut a = fresh(&url, "a");
        let name = a.study_name().to_string();
        let n = CLOSE_BATCH as u64 + 6;
        for id in 0..n {
            a.save_trial(&TrialRow { status: "paused".into(), ..trial(id) }, 0.0).unwrap();
        }
        let mut no_new = |_: u64| -> TrialRow { unreachable!("no new trial asked for") };
        let ids = |c: &Claim| match c {
            Claim::Close(rows) => rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            c => panic!("{c:?}"),
        };
        let stopped = |c: &Claim| match c {
            Claim::Close(rows) => rows
                .iter()
                .map(|r| TrialRow { status: "stopped".into(), ended_unix: Some(9.0), ..r.clone() })
                .collect::<Vec<_>>(),
            c => panic!("{c:?}"),
        };
        let mut b = PostgresStore::open(&url, &name, options("b")).unwrap();
        let mut c = PostgresStore::open(&url, &name, options("c")).unwrap();
        let first = b.claim(false, &mut no_new, None).unwrap();
        assert_eq!(ids(&first), (0..CLOSE_BATCH as u64).collect::<Vec<_>>());
        let second = c.claim(false, &mut no_new, None).unwrap();
        assert_eq!(ids(&second), (CLOSE_BATCH as u64..n).collect::<Vec<_>>());
        // Every paused trial is being closed by a live worker.
        assert_eq!(c.claim(false, &mut no_new, None).unwrap(), Claim::Wait);
        c.finish_trials(&stopped(&second), 1.0).unwrap();
        assert_eq!(c.claim(false, &mut no_new, None).unwrap(), Claim::Wait);
        // `b` stops beating: a worker with a shorter timeout takes its batch over, whole.
        let quick = PgOptions { heartbeat_timeout: Duration::ZERO, ..options("d") };
        let mut d = PostgresStore::open(&url, &name, quick).unwrap();
        let taken = d.claim(false, &mut no_new, None).unwrap();
        assert_eq!(ids(&taken), ids(&first));
        let late = b.finish_trials(&stopped(&first), 2.0).unwrap_err();
        assert!(matches!(late, Error::TakenOver { .. }), "{late}");
        assert!(a.trials().unwrap()[..CLOSE_BATCH as usize].iter().all(|r| r.status == "paused"), "none written");
        d.finish_trials(&stopped(&taken), 2.0).unwrap();
        assert_eq!(d.claim(false, &mut no_new, None).unwrap(), Claim::Done);
        assert!(a.trials().unwrap().iter().all(|r| r.status == "stopped"));
    }

    #[test]
    fn a_claim_run_again_after_its_commit_gives_the_same_answer() {
        let Some(url) = url() else { return };
        let mut a = fresh(&url, "a");
        let name = a.study_name().to_string();
        let mut new_row = |id| trial(id);
        // The commit of the claim of trial 0 goes through, its answer is lost, it runs again.
        a.lost_answers.set(1);
        assert_eq!(a.claim(true, &mut new_row, None).unwrap(), Claim::New(0));
        assert_eq!(a.trials().unwrap().len(), 1, "the replay took no second trial");
        // (Paused, or `a`'s next claim would take its own running trial back.)
        a.save_trial(&TrialRow { status: "paused".into(), ..trial(0) }, 0.0).unwrap();
        assert_eq!(a.claim(true, &mut new_row, None).unwrap(), Claim::New(1));
        a.save_trial(&TrialRow { status: "paused".into(), ..trial(1) }, 0.0).unwrap();
        // A batch to close, replayed: the same batch (not "wait": it is being closed).
        let mut b = PostgresStore::open(&url, &name, options("b")).unwrap();
        b.lost_answers.set(1);
        match b.claim(false, &mut new_row, None).unwrap() {
            Claim::Close(rows) => assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1]),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn a_worker_started_again_under_its_name_gets_new_trials() {
        let Some(url) = url() else { return };
        let mut first = fresh(&url, "same");
        let name = first.study_name().to_string();
        let mut new_row = |id| trial(id);
        assert_eq!(first.claim(true, &mut new_row, None).unwrap(), Claim::New(0));
        let done = TrialRow { status: "completed".into(), ended_unix: Some(2.0), ..trial(0) };
        first.finish_trial(&done, None, 1.0).unwrap();
        drop(first);
        // The same name, a new process: its first claim is not a replay of the old one's.
        let mut again = PostgresStore::open(&url, &name, options("same")).unwrap();
        assert_eq!(again.claim(true, &mut new_row, None).unwrap(), Claim::New(1));
        assert_eq!(again.trials().unwrap()[0].status, "completed");
    }

    #[test]
    fn a_rung_result_committed_after_later_ones_is_still_read() {
        let Some(url) = url() else { return };
        let mut store = fresh_asha(&url, "w1");
        let name = store.study_name().to_string();
        let rule = Promotion { rungs: 3, eta: 3 };
        let paused = |id: u64, f1: f64| TrialRow {
            status: "paused".into(),
            record: serde_json::json!({ "rungs": [f1] }).to_string(),
            ..trial(id)
        };
        // Another worker's transaction writes trial 9's rung result first and commits last.
        let mut direct = Config::from_str(&url).unwrap().connect(NoTls).unwrap();
        let mut late = direct.transaction().unwrap();
        let t9 = paused(9, 0.9);
        late.execute(
            "INSERT INTO trials (study, id, status, config, record, reward, decisions, resumed, started_unix, \
             updated_unix, pid, worker, heartbeat) VALUES ($1, 9, 'paused', '{}', $2, 0, 0, false, 0, 0, 1, 'w9', 0)",
            &[&name, &t9.record],
        )
        .unwrap();
        for (id, f1) in [(0, 0.1), (1, 0.2), (2, 0.4)] {
            store.save_trial(&paused(id, f1), 0.0).unwrap();
        }
        // Three trials at rung 0: the top third is trial 2.
        assert_eq!(store.promotable(rule).unwrap(), vec![2]);
        late.commit().unwrap();
        // Four: still one, now trial 9 (a reader that went on from the newest id it had
        // read would never see it).
        assert_eq!(store.promotable(rule).unwrap(), vec![9]);
        for (id, f1) in [(3, 0.3), (4, 0.35)] {
            store.save_trial(&paused(id, f1), 0.0).unwrap();
        }
        assert_eq!(store.promotable(rule).unwrap(), vec![9, 2]);
    }

    #[test]
    fn a_version_2_database_gets_its_rung_results_as_rows() {
        let Some(url) = url() else { return };
        let (mut admin, db, other, config) = fresh_database(&url, "tf_v2");
        let mut direct = config.connect(NoTls).unwrap();
        direct
            .batch_execute(&format!(
                "CREATE TABLE tuneforge_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL); \
                 {MIGRATION_1} {MIGRATION_2} INSERT INTO tuneforge_schema VALUES (1, 2);"
            ))
            .unwrap();
        // Trials as a version-2 worker wrote them (no rungs rows).
        let rows = [
            TrialRow { status: "paused".into(), record: r#"{"rungs":[0.5,0.75]}"#.into(), ..trial(0) },
            TrialRow { status: "failed: diverged".into(), record: r#"{"rungs":[0.25]}"#.into(), ..trial(1) },
            TrialRow { status: "completed".into(), record: r#"{"rungs":[0.5,0.625,0.875]}"#.into(), ..trial(2) },
            TrialRow { status: "running".into(), record: r#"{"rungs":[]}"#.into(), ..trial(3) },
            TrialRow { status: "running".into(), record: r#"{"decisions":[]}"#.into(), ..trial(4) },
        ];
        direct
            .execute(
                "INSERT INTO studies (name, config, strategy, dataset, seed, budget_s, elapsed_s, created_unix) \
                 VALUES ('old', '{}', 'asha', 'digits', 0, 60, 0, 0)",
                &[],
            )
            .unwrap();
        // And an `rl` study, whose rung results stay in its records only.
        direct
            .execute(
                "INSERT INTO studies (name, config, strategy, dataset, seed, budget_s, elapsed_s, created_unix) \
                 VALUES ('other', '{}', 'rl', 'digits', 0, 60, 0, 0)",
                &[],
            )
            .unwrap();
        for (study, r) in rows.iter().map(|r| ("old", r)).chain([("other", &rows[0])]) {
            direct
                .execute(
                    "INSERT INTO trials (study, id, status, config, record, reward, decisions, resumed, started_unix, \
                     updated_unix, pid, worker, heartbeat) VALUES ($1, $2, $3, '{}', $4, 0, 0, false, 0, 0, 1, \
                     'v2', 0)",
                    &[&study, &(r.id as i64), &r.status, &r.record],
                )
                .unwrap();
        }
        // The same worker name: the trials are its own.
        let mut store = PostgresStore::open(&other, "old", options("v2")).unwrap();
        let version: i64 = direct.query_one("SELECT version FROM tuneforge_schema", &[]).unwrap().get(0);
        assert_eq!(version, SCHEMA_VERSION);
        let want = vec![(0, vec![0.5, 0.75]), (2, vec![0.5, 0.625, 0.875])];
        assert_eq!(rung_rows(&mut direct, "old"), want);
        assert_eq!(rung_rows(&mut direct, "other"), vec![]);
        // From here the trigger keeps them: trial 0 rewound to its first rung, then failed.
        let mut t0 = TrialRow { status: "paused".into(), record: r#"{"rungs":[0.5]}"#.into(), ..trial(0) };
        store.save_trial(&t0, 0.0).unwrap();
        assert_eq!(rung_rows(&mut direct, "old")[0], (0, vec![0.5]));
        t0.status = "failed: restore".into();
        store.save_trial(&t0, 0.0).unwrap();
        assert_eq!(rung_rows(&mut direct, "old"), vec![(2, vec![0.5, 0.625, 0.875])]);
        drop((store, direct));
        admin.batch_execute(&format!("DROP DATABASE {db}")).unwrap();
    }

    #[test]
    fn a_column_type_changed_under_prepared_statements_is_prepared_again() {
        let Some(url) = url() else { return };
        let (mut admin, db, other, config) = fresh_database(&url, "tf_retype");
        let mut store = PostgresStore::open(&other, "s", options("r")).unwrap();
        store.create_study(&study()).unwrap();
        store.save_trial(&trial(0), 0.0).unwrap();
        assert_eq!(store.trials().unwrap().len(), 1);
        // What a later migration might do while this worker runs.
        let mut direct = config.connect(NoTls).unwrap();
        direct.batch_execute("ALTER TABLE trials ALTER COLUMN config TYPE varchar").unwrap();
        let read = store.trials().map_err(|e| e.to_string());
        drop((store, direct));
        admin.batch_execute(&format!("DROP DATABASE {db}")).unwrap();
        assert_eq!(read, Ok(vec![trial(0)]));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let Some(url) = url() else { return };
        let (mut admin, db, other, config) = fresh_database(&url, "tf_newer");
        drop(PostgresStore::open(&other, "s", options("n")).unwrap());
        let mut direct = config.connect(NoTls).unwrap();
        direct.batch_execute("UPDATE tuneforge_schema SET version = 99").unwrap();
        drop(direct);
        let text = PostgresStore::open(&other, "s", options("n")).unwrap_err().to_string();
        assert!(text.contains("version 99") && text.contains("newer than this build"), "{text}");
        assert!(text.contains(&db) && !text.contains("tuneforge@"), "names the database, not the password: {text}");
        admin.batch_execute(&format!("DROP DATABASE {db}")).unwrap();
    }

    #[test]
    fn bad_urls_fail_fast_naming_the_host_and_not_the_password() {
        let Some(url) = url() else { return };
        let config = Config::from_str(&url).unwrap();
        let Host::Tcp(host) = &config.get_hosts()[0] else { panic!("a TCP host") };
        let port = config.get_ports()[0];
        // Wrong password.
        let wrong = format!("postgres://postgres:not-the-password@{host}:{port}/{}", config.get_dbname().unwrap());
        let t = Instant::now();
        let text = PostgresStore::open(&wrong, "s", options("x")).unwrap_err().to_string();
        assert!(text.contains(&format!("{host}:{port}")) && text.contains("password"), "{text}");
        assert!(!text.contains("not-the-password"), "{text}");
        // Nothing listens on port 1: refused at once.
        let text =
            PostgresStore::open("postgres://u:secret@127.0.0.1:1/db", "s", options("x")).unwrap_err().to_string();
        assert!(text.contains("127.0.0.1:1") && !text.contains("secret"), "{text}");
        // An address that never answers: the connect timeout, not a hang.
        let quick = PgOptions { connect_timeout: Duration::from_secs(2), ..options("x") };
        let text = PostgresStore::open("postgres://u@10.255.255.1:5432/db", "s", quick).unwrap_err().to_string();
        assert!(text.contains("10.255.255.1:5432"), "{text}");
        assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
        // Not a URL: redacted.
        let text = PostgresStore::open("postgres://u:secret@[bad/db", "s", options("x")).unwrap_err().to_string();
        assert!(!text.contains("secret"), "{text}");
    }
}
