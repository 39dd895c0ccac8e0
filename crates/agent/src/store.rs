//! The study store: where a tuning study is kept while it runs, so that it can be watched from
//! outside, resumed after a crash and reported on afterwards.
//!
//! A study records its configuration and wall-clock budget ([`StudyRow`]); every trial's
//! configuration, status and latest record ([`TrialRow`]); every decision the agent took in a
//! trial with the observation it saw, the action it chose, what was actually applied and the
//! reward it earned ([`DecisionRow`]); every evaluation ([`EvaluationRow`]); the latest
//! checkpoint of each unfinished trial — model and optimiser bytes plus the driver's state
//! ([`CheckpointRow`]); and the policy's learnt state after the latest finished trial.
//!
//! [`StudyStore`] is the interface the tuning driver writes through; [`SqliteStore`] implements
//! it on one SQLite file. It is a trait because SQLite suits one machine (one writer at a time,
//! several processes at most); [`PostgresStore`] (module [`postgres`]) implements the same trait
//! on a PostgreSQL database, for many workers on many machines sharing one study (same tables,
//! keyed by study name, plus trial ownership and heartbeats).
//!
//! # Schema (version 1, kept in `PRAGMA user_version`)
//!
//! All tables are `STRICT`. Unsigned integers are stored as SQLite's signed 64-bit INTEGER
//! (values above `i64::MAX` are refused, except [`StudyRow::seed`], kept as the `i64` with the
//! same bits). JSON lives in TEXT columns checked with `json_valid`, so malformed JSON is
//! refused when written rather than found when a study is resumed. SQLite cannot store a NaN
//! (it becomes NULL), so a NULL in a non-optional REAL column reads back as NaN, and
//! `Some(NaN)` in an optional one reads back as `None`.
//!
//! | table | column | meaning |
//! |---|---|---|
//! | `study` | `id` | always 1: one study per file |
//! | | `config` | the study's configuration (JSON) |
//! | | `strategy` | search strategy (`fixed`, `random`, `rl`, ...) |
//! | | `dataset` | dataset name |
//! | | `seed` | study seed |
//! | | `budget_s` | wall-clock budget, seconds |
//! | | `elapsed_s` | wall-clock time used so far, seconds (updated with every trial write) |
//! | | `created_unix` | creation time, Unix seconds |
//! | `trials` | `id` | trial id (primary key, chosen by the driver) |
//! | | `status` | `running`, `paused`, `completed`, `stopped` or `failed: <reason>` |
//! | | `config` | the trial's starting configuration (JSON) |
//! | | `record` | the trial's current record (JSON, the driver's `TrialRecord`) |
//! | | `val_macro_f1` | latest validation macro F1 (NULL before the first evaluation) |
//! | | `samples_per_s` | latest training throughput (NULL before the first measurement) |
//! | | `reward` | cumulative reward |
//! | | `decisions` | number of decisions taken |
//! | | `resumed` | 1 if the trial was resumed from a checkpoint |
//! | | `started_unix`, `updated_unix` | start and last update, Unix seconds |
//! | | `ended_unix` | end, Unix seconds (NULL while unfinished) |
//! | | `pid` | process that last wrote the trial |
//! | `decisions` | `trial`, `idx` | trial (→ `trials.id`) and decision index: primary key |
//! | | `step` | training step the decision was taken at |
//! | | `observation`, `action`, `applied` | what the agent saw, chose, and what was applied (JSON) |
//! | | `reward` | the decision's reward |
//! | | `val_macro_f1`, `samples_per_s` | the metrics the reward came from |
//! | | `at_unix` | when, Unix seconds |
//! | `evaluations` | `trial` | trial (→ `trials.id`) |
//! | | `idx` | decisions taken before it: 0 after the first interval (indexed with `trial`) |
//! | | `step` | training step |
//! | | `split` | data split (`validation`, `test`) |
//! | | `macro_f1`, `accuracy`, `loss` | the metrics |
//! | | `at_unix` | when, Unix seconds |
//! | `checkpoints` | `trial` | trial (→ `trials.id`), primary key: one checkpoint per trial |
//! | | `step` | training step it was taken at |
//! | | `decisions` | number of decision rows it includes (resume rewinds to it) |
//! | | `state` | the driver's state (JSON) |
//! | | `model`, `optimizer` | model and optimiser bytes (BLOB; at most 1 GB each, SQLite's limit) |
//! | | `created_unix` | when, Unix seconds |
//! | `policy` | `id` | always 1: only the latest policy state is kept |
//! | | `trial` | the trial whose end stored it (→ `trials.id`) |
//! | | `state` | the policy's state (JSON) |
//!
//! Decisions, evaluations, checkpoints and the policy row refer to their trial by foreign key
//! (enforced: `PRAGMA foreign_keys = ON`), so a trial row must be saved before anything that
//! belongs to it. Trial rows are updated in place (`INSERT ... ON CONFLICT DO UPDATE`), never
//! deleted and re-inserted, so saving a trial keeps its decisions.
//!
//! # Journal, durability and crashes
//!
//! The file uses SQLite's write-ahead log (`journal_mode = WAL`, persistent in the file):
//! readers — `sqlite3` or a report opened while a study runs — never block the writer and
//! see only committed transactions. Every [`StudyStore`] method is one transaction (writes
//! take the write lock up front, `BEGIN IMMEDIATE`, and wait up to 5 s for another writer,
//! `busy_timeout`). A commit appends to the `-wal` file before the method returns, so a
//! process killed at any point (`kill -9`, a panic that aborts, an OOM kill) leaves every
//! transaction that returned `Ok` and none of the one in flight: the next open replays the
//! log. `synchronous = NORMAL`: a commit is not fsynced, which costs nothing against a
//! process crash (the log is in the OS's page cache, replayed on the next open) but means
//! that a power cut or kernel crash can lose the last commits — never corrupt the file; the
//! log is fsynced at each WAL checkpoint. A resumed study then rewinds to an older trial
//! checkpoint, which it handles like any other. `FULL` would fsync every commit: measured
//! on the development VM (virtual disk, 2 cores), a `save_trial` commit takes 0.18 ms with
//! `FULL` against 0.02 ms with `NORMAL`, a `save_checkpoint` of 1 MB 5.8 ms against 3.1 ms,
//! one of 16 MB about 0.2 s with either (the bytes are written twice, to the log and then into
//! the database). With `FULL`, the default digits study (hundreds of sub-second trials, two
//! commits per decision) spent 7% of its wall time in the store; with `NORMAL` under 1% (see
//! docs/benchmarks.md).
//! decisions. `journal_size_limit` (64 MiB) makes the log shrink again after a large
//! checkpoint was written through it.
//!
//! ```no_run
//! use tuneforge_agent::store::{SqliteStore, StudyRow, StudyStore};
//!
//! let mut store = SqliteStore::open(std::path::Path::new("runs/study.sqlite"))?;
//! if store.study()?.is_none() {
//!     store.create_study(&StudyRow {
//!         config: "{}".into(),
//!         strategy: "rl".into(),
//!         dataset: "digits".into(),
//!         seed: 0,
//!         budget_s: 600.0,
//!         elapsed_s: 0.0,
//!         created_unix: 0.0,
//!     })?;
//! }
//! for trial in store.trials()? {
//!     println!("trial {} {} reward {}", trial.id, trial.status, trial.reward);
//! }
//! # Ok::<(), tuneforge_agent::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use crate::{Error, Result};

pub mod postgres;
pub use self::postgres::PostgresStore;

/// The schema version this build reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// How long a write waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The log is truncated back to this size after a checkpoint (bytes).
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// Schema version 1. Foreign keys have no `ON DELETE` action: nothing deletes a trial.
const SCHEMA: &str = "
CREATE TABLE study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    config TEXT NOT NULL CHECK (json_valid(config)),
    strategy TEXT NOT NULL,
    dataset TEXT NOT NULL,
    seed INTEGER NOT NULL,
    budget_s REAL,
    elapsed_s REAL,
    created_unix REAL
) STRICT;

CREATE TABLE trials (
    id INTEGER PRIMARY KEY CHECK (id >= 0),
    status TEXT NOT NULL,
    config TEXT NOT NULL CHECK (json_valid(config)),
    record TEXT NOT NULL CHECK (json_valid(record)),
    val_macro_f1 REAL,
    samples_per_s REAL,
    reward REAL,
    decisions INTEGER NOT NULL CHECK (decisions >= 0),
    resumed INTEGER NOT NULL CHECK (resumed IN (0, 1)),
    started_unix REAL,
    updated_unix REAL,
    ended_unix REAL,
    pid INTEGER NOT NULL CHECK (pid >= 0)
) STRICT;

CREATE TABLE decisions (
    trial INTEGER NOT NULL REFERENCES trials (id),
    idx INTEGER NOT NULL CHECK (idx >= 0),
    step INTEGER NOT NULL CHECK (step >= 0),
    observation TEXT NOT NULL CHECK (json_valid(observation)),
    action TEXT NOT NULL CHECK (json_valid(action)),
    applied TEXT NOT NULL CHECK (json_valid(applied)),
    reward REAL,
    val_macro_f1 REAL,
    samples_per_s REAL,
    at_unix REAL,
    PRIMARY KEY (trial, idx)
) STRICT;

CREATE TABLE evaluations (
    trial INTEGER NOT NULL REFERENCES trials (id),
    idx INTEGER NOT NULL CHECK (idx >= 0),
    step INTEGER NOT NULL CHECK (step >= 0),
    split TEXT NOT NULL,
    macro_f1 REAL,
    accuracy REAL,
    loss REAL,
    at_unix REAL
) STRICT;
CREATE INDEX evaluations_trial_idx ON evaluations (trial, idx);

CREATE TABLE checkpoints (
    trial INTEGER PRIMARY KEY REFERENCES trials (id),
    step INTEGER NOT NULL CHECK (step >= 0),
    decisions INTEGER NOT NULL CHECK (decisions >= 0),
    state TEXT NOT NULL CHECK (json_valid(state)),
    model BLOB NOT NULL,
    optimizer BLOB NOT NULL,
    created_unix REAL
) STRICT;

CREATE TABLE policy (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    trial INTEGER NOT NULL REFERENCES trials (id),
    state TEXT NOT NULL CHECK (json_valid(state))
) STRICT;
";

const TRIAL_COLUMNS: &str = "id, status, config, record, val_macro_f1, samples_per_s, reward, decisions, resumed, \
     started_unix, updated_unix, ended_unix, pid";

/// The study row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StudyRow {
    /// The study's configuration (JSON).
    pub config: String,
    /// The search strategy (`fixed`, `random`, `rl`, ...).
    pub strategy: String,
    /// The dataset's name.
    pub dataset: String,
    /// The study's seed.
    pub seed: u64,
    /// Wall-clock budget, seconds.
    pub budget_s: f64,
    /// Wall-clock time used so far, seconds.
    pub elapsed_s: f64,
    /// Creation time, Unix seconds.
    pub created_unix: f64,
}

/// One trial: its configuration, status and latest record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrialRow {
    /// Trial id (chosen by the driver; the primary key).
    pub id: u64,
    /// `running`, `paused`, `completed`, `stopped` or `failed: <reason>`.
    pub status: String,
    /// The trial's starting configuration (JSON).
    pub config: String,
    /// The trial's current record (JSON of the driver's `TrialRecord`).
    pub record: String,
    /// Latest validation macro F1, if evaluated yet.
    pub val_macro_f1: Option<f64>,
    /// Latest training throughput, if measured yet.
    pub samples_per_s: Option<f64>,
    /// Cumulative reward.
    pub reward: f64,
    /// Decisions taken so far.
    pub decisions: u64,
    /// Whether the trial was resumed from a checkpoint.
    pub resumed: bool,
    /// Start time, Unix seconds.
    pub started_unix: f64,
    /// Last update, Unix seconds.
    pub updated_unix: f64,
    /// End time, Unix seconds, once finished.
    pub ended_unix: Option<f64>,
    /// The process that last wrote the trial.
    pub pid: u32,
}

/// One decision of the agent in a trial.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecisionRow {
    /// The trial's id.
    pub trial: u64,
    /// Decision index within the trial (0, 1, ...).
    pub idx: u64,
    /// Training step it was taken at.
    pub step: u64,
    /// What the agent observed (JSON).
    pub observation: String,
    /// The action it chose (JSON).
    pub action: String,
    /// What was actually applied (JSON).
    pub applied: String,
    /// The reward it earned.
    pub reward: f64,
    /// Validation macro F1 the reward came from.
    pub val_macro_f1: f64,
    /// Training throughput the reward came from.
    pub samples_per_s: f64,
    /// When, Unix seconds.
    pub at_unix: f64,
}

/// One evaluation of a trial's model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvaluationRow {
    /// The trial's id.
    pub trial: u64,
    /// Decisions taken in the trial before it (0: the evaluation after the trial's first
    /// interval, n: the one after decision n − 1).
    pub idx: u64,
    /// Training step.
    pub step: u64,
    /// The data split (`val`, `test`, ...).
    pub split: String,
    /// Macro-averaged F1.
    pub macro_f1: f64,
    /// Accuracy.
    pub accuracy: f64,
    /// Mean loss.
    pub loss: f64,
    /// When, Unix seconds.
    pub at_unix: f64,
}

/// A trial's checkpoint (one per trial is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    /// The trial's id.
    pub trial: u64,
    /// Training step it was taken at.
    pub step: u64,
    /// Number of decision rows it includes: resuming rewinds the trial to this index.
    pub decisions: u64,
    /// The driver's state (JSON).
    pub state: String,
    /// Model bytes.
    pub model: Vec<u8>,
    /// Optimiser bytes.
    pub optimizer: Vec<u8>,
    /// When, Unix seconds.
    pub created_unix: f64,
}

/// Where a study is kept. Every method is one transaction: after it returns Ok the change
/// survives a kill -9 of the process.
///
/// Methods that set `elapsed_s` fail (and change nothing) when the study row does not exist;
/// rows belonging to a trial (decisions, evaluations, checkpoint, policy) need the trial row
/// saved first.
pub trait StudyStore: Send {
    /// The study row, if the study exists.
    fn study(&self) -> Result<Option<StudyRow>>;
    /// The study's trial budget (see `TuneConfig::max_trials`), if it has one; by default
    /// the `max_trials` of its stored config.
    fn max_trials(&self) -> Result<Option<u64>> {
        Ok(self
            .study()?
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s.config).ok()?.get("max_trials")?.as_u64()))
    }
    /// Creates the study row. Error (Error::Store) if one exists already.
    fn create_study(&mut self, study: &StudyRow) -> Result<()>;
    /// Records wall time used so far.
    fn set_elapsed(&mut self, elapsed_s: f64) -> Result<()>;
    /// Inserts or replaces the trial row (by id) and sets elapsed_s, in one transaction.
    fn save_trial(&mut self, trial: &TrialRow, elapsed_s: f64) -> Result<()>;
    /// All trials by id.
    fn trials(&self) -> Result<Vec<TrialRow>>;
    /// Appends a decision row (primary key (trial, idx); a duplicate is an error).
    fn add_decision(&mut self, decision: &DecisionRow) -> Result<()>;
    /// A trial's decisions in idx order.
    fn decisions(&self, trial: u64) -> Result<Vec<DecisionRow>>;
    /// Appends an evaluation row.
    fn add_evaluation(&mut self, evaluation: &EvaluationRow) -> Result<()>;
    /// Appends a decision row and the evaluation made with it (of the same trial), in one
    /// transaction where the store has them (both stores here: one commit per decision
    /// instead of two). The default writes one, then the other.
    fn add_decision_evaluated(&mut self, decision: &DecisionRow, evaluation: Option<&EvaluationRow>) -> Result<()> {
        self.add_decision(decision)?;
        evaluation.map_or(Ok(()), |e| self.add_evaluation(e))
    }
    /// A trial's evaluations in (idx, rowid) order.
    fn evaluations(&self, trial: u64) -> Result<Vec<EvaluationRow>>;
    /// In one transaction: replaces the trial's checkpoint (one per trial is kept), upserts the
    /// trial row, sets elapsed_s. `checkpoint.trial` must equal `trial.id`.
    fn save_checkpoint(&mut self, trial: &TrialRow, checkpoint: &CheckpointRow, elapsed_s: f64) -> Result<()>;
    /// The trial's checkpoint.
    fn checkpoint(&self, trial: u64) -> Result<Option<CheckpointRow>>;
    /// Deletes the trial's checkpoint (no error if none).
    fn delete_checkpoint(&mut self, trial: u64) -> Result<()>;
    /// Rewinds a trial to its checkpoint taken after `from_idx` decisions, before resuming
    /// it: deletes its decision rows with idx >= `from_idx` and its evaluation rows with
    /// idx > `from_idx` (those written after the checkpoint).
    fn rewind(&mut self, trial: u64, from_idx: u64) -> Result<()>;
    /// In one transaction: upserts the trial row, stores the policy state (if Some), sets
    /// elapsed_s.
    fn finish_trial(&mut self, trial: &TrialRow, policy: Option<&str>, elapsed_s: f64) -> Result<()>;
    /// The latest policy state (JSON).
    fn policy(&self) -> Result<Option<String>>;
    /// Like [`finish_trial`](Self::finish_trial), with the policy state computed from the
    /// latest stored one (`None` before the first) by `merge`: where several workers share a
    /// study ([`PostgresStore`]) the read, the merge and the write are one transaction under
    /// a lock, so that concurrent updates are applied one after the other and none is lost.
    /// The default (one process per study, as with [`SqliteStore`]) reads, then finishes.
    fn finish_trial_merging(
        &mut self,
        trial: &TrialRow,
        merge: &mut dyn FnMut(Option<&str>) -> std::result::Result<String, String>,
        elapsed_s: f64,
    ) -> Result<()> {
        let latest = self.policy()?;
        let state = merge(latest.as_deref()).map_err(|why| Error::Config { what: "policy state", why })?;
        self.finish_trial(trial, Some(&state), elapsed_s)
    }
}

/// The cause inside an [`Error::Store`].
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// SQLite implementation of [`StudyStore`] (bundled SQLite): WAL journal, `synchronous =
/// NORMAL`, foreign keys on, 5 s busy timeout, schema version 1 in `PRAGMA user_version` (a file
/// with another version is refused). See the [module documentation](self) for the schema and
/// the durability guarantees.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens or creates `path` (creating the schema if new). The parent directory must exist.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let fail = |what: &str| {
            let path = path.to_path_buf();
            let what = what.to_string();
            move |source: Cause| Error::Store { path, what, source }
        };
        let mut conn = Connection::open(path).map_err(|e| fail("opening")(e.into()))?;
        configure(&conn).map_err(fail("configuring the connection"))?;
        init_schema(&mut conn).map_err(fail("checking the schema"))?;
        Ok(SqliteStore { conn, path: path.to_path_buf() })
    }

    /// Opens an existing store (to read a study, say): like [`open`](Self::open), but a
    /// missing file is an error instead of a new, empty study.
    pub fn open_existing(path: &Path) -> Result<SqliteStore> {
        if !path.is_file() {
            return Err(Error::Store {
                path: path.to_path_buf(),
                what: "opening".into(),
                source: "no such file (not a study folder?)".into(),
            });
        }
        Self::open(path)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the study's stored configuration and budget (a study given a new budget,
    /// [`tune::extend`](crate::tune::extend)), in one transaction.
    pub fn set_config(&mut self, config: &str, budget_s: f64) -> Result<()> {
        self.write("changing the study's budget", |tx| {
            let changed =
                tx.execute("UPDATE study SET config = ?1, budget_s = ?2 WHERE id = 1", params![config, budget_s])?;
            if changed == 0 {
                return Err("no study row: create_study first".into());
            }
            Ok(())
        })
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction and commits; on error nothing is changed.
    fn write<T>(&mut self, what: impl Into<String>, f: impl FnOnce(&Transaction<'_>) -> Result<T, Cause>) -> Result<T> {
        let run = |conn: &mut Connection| -> Result<T, Cause> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run(&mut self.conn).map_err(|source| Error::Store { path: self.path.clone(), what: what.into(), source })
    }

    /// Runs one read (a single statement is its own transaction).
    fn read<T>(&self, what: impl Into<String>, f: impl FnOnce(&Connection) -> Result<T, Cause>) -> Result<T> {
        f(&self.conn).map_err(|source| Error::Store { path: self.path.clone(), what: what.into(), source })
    }
}

/// The evaluation [`StudyStore::add_decision_evaluated`] writes with decision `d`: one of
/// another trial is refused (both stores).
pub(crate) fn evaluation_of<'a>(
    d: &DecisionRow,
    e: Option<&'a EvaluationRow>,
) -> std::result::Result<Option<&'a EvaluationRow>, String> {
    match e {
        Some(e) if e.trial != d.trial => {
            Err(format!("an evaluation of trial {} with a decision of trial {}", e.trial, d.trial))
        }
        e => Ok(e),
    }
}

fn insert_decision(tx: &Transaction<'_>, d: &DecisionRow) -> Result<(), Cause> {
    tx.prepare_cached(
        "INSERT INTO decisions (trial, idx, step, observation, action, applied, reward, val_macro_f1, \
                 samples_per_s, at_unix) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        d.trial,
        d.idx,
        d.step,
        d.observation,
        d.action,
        d.applied,
        d.reward,
        d.val_macro_f1,
        d.samples_per_s,
        d.at_unix,
    ])?;
    Ok(())
}

fn insert_evaluation(tx: &Transaction<'_>, e: &EvaluationRow) -> Result<(), Cause> {
    tx.prepare_cached(
        "INSERT INTO evaluations (trial, idx, step, split, macro_f1, accuracy, loss, at_unix) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![e.trial, e.idx, e.step, e.split, e.macro_f1, e.accuracy, e.loss, e.at_unix])?;
    Ok(())
}

/// Per-connection settings, then the file's journal mode (which must be set outside a
/// transaction).
fn configure(conn: &Connection) -> Result<(), Cause> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("journal_mode is {mode:?}, not \"wal\"").into());
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    Ok(())
}

/// Creates the schema in a new file, or checks the version of an existing one. The check runs
/// under the write lock, so two processes creating the same file at once create it once.
fn init_schema(conn: &mut Connection) -> Result<(), Cause> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    match version {
        SCHEMA_VERSION => return Ok(()),
        0 => {}
        v => {
            return Err(format!(
                "schema version {v}, but this build of tuneforge reads study stores of version {SCHEMA_VERSION} only"
            )
            .into());
        }
    }
    let objects: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
    if objects > 0 {
        return Err(
            format!("not a tuneforge study store: schema version 0 and {objects} existing tables or indexes").into()
        );
    }
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// `seed` is kept as the `i64` with the same bits (seeds use all 64).
fn seed_to_sql(seed: u64) -> i64 {
    i64::from_ne_bytes(seed.to_ne_bytes())
}

fn seed_from_sql(seed: i64) -> u64 {
    u64::from_ne_bytes(seed.to_ne_bytes())
}

/// A non-optional REAL column: NULL is how SQLite stored a NaN.
fn real(row: &Row<'_>, idx: usize) -> rusqlite::Result<f64> {
    Ok(row.get::<_, Option<f64>>(idx)?.unwrap_or(f64::NAN))
}

fn set_elapsed_in(tx: &Connection, elapsed_s: f64) -> Result<(), Cause> {
    let changed = tx.execute("UPDATE study SET elapsed_s = ?1 WHERE id = 1", [elapsed_s])?;
    if changed == 0 {
        return Err("no study row: create_study first".into());
    }
    Ok(())
}

fn upsert_trial(tx: &Connection, t: &TrialRow) -> Result<(), Cause> {
    tx.prepare_cached(
        "INSERT INTO trials (id, status, config, record, val_macro_f1, samples_per_s, reward, decisions, resumed, \
         started_unix, updated_unix, ended_unix, pid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, config = excluded.config, record = excluded.record, \
         val_macro_f1 = excluded.val_macro_f1, samples_per_s = excluded.samples_per_s, reward = excluded.reward, \
         decisions = excluded.decisions, resumed = excluded.resumed, started_unix = excluded.started_unix, \
         updated_unix = excluded.updated_unix, ended_unix = excluded.ended_unix, pid = excluded.pid",
    )?
    .execute(params![
        t.id,
        t.status,
        t.config,
        t.record,
        t.val_macro_f1,
        t.samples_per_s,
        t.reward,
        t.decisions,
        t.resumed,
        t.started_unix,
        t.updated_unix,
        t.ended_unix,
        t.pid,
    ])?;
    Ok(())
}

fn trial_from_row(row: &Row<'_>) -> rusqlite::Result<TrialRow> {
    Ok(TrialRow {
        id: row.get(0)?,
        status: row.get(1)?,
        config: row.get(2)?,
        record: row.get(3)?,
        val_macro_f1: row.get(4)?,
        samples_per_s: row.get(5)?,
        reward: real(row, 6)?,
        decisions: row.get(7)?,
        resumed: row.get(8)?,
        started_unix: real(row, 9)?,
        updated_unix: real(row, 10)?,
        ended_unix: row.get(11)?,
        pid: row.get(12)?,
    })
}

impl StudyStore for SqliteStore {
    fn study(&self) -> Result<Option<StudyRow>> {
        self.read("reading the study", |conn| {
            let row = conn
                .query_row(
                    "SELECT config, strategy, dataset, seed, budget_s, elapsed_s, created_unix FROM study WHERE id = 1",
                    [],
                    |row| {
                        Ok(StudyRow {
                            config: row.get(0)?,
                            strategy: row.get(1)?,
                            dataset: row.get(2)?,
                            seed: seed_from_sql(row.get(3)?),
                            budget_s: real(row, 4)?,
                            elapsed_s: real(row, 5)?,
                            created_unix: real(row, 6)?,
                        })
                    },
                )
                .optional()?;
            Ok(row)
        })
    }

    fn create_study(&mut self, s: &StudyRow) -> Result<()> {
        self.write("creating the study", |tx| {
            let exists: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM study)", [], |row| row.get(0))?;
            if exists {
                return Err("a study exists already in this file".into());
            }
            tx.execute(
                "INSERT INTO study (id, config, strategy, dataset, seed, budget_s, elapsed_s, created_unix) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![s.config, s.strategy, s.dataset, seed_to_sql(s.seed), s.budget_s, s.elapsed_s, s.created_unix],
            )?;
            Ok(())
        })
    }

    fn set_elapsed(&mut self, elapsed_s: f64) -> Result<()> {
        self.write("recording elapsed time", |tx| set_elapsed_in(tx, elapsed_s))
    }

    fn save_trial(&mut self, trial: &TrialRow, elapsed_s: f64) -> Result<()> {
        self.write(format!("saving trial {}", trial.id), |tx| {
            upsert_trial(tx, trial)?;
            set_elapsed_in(tx, elapsed_s)
        })
    }

    fn trials(&self) -> Result<Vec<TrialRow>> {
        self.read("reading trials", |conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {TRIAL_COLUMNS} FROM trials ORDER BY id"))?;
            let rows = stmt.query_map([], trial_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn add_decision(&mut self, d: &DecisionRow) -> Result<()> {
        self.write(format!("adding decision {} of trial {}", d.idx, d.trial), |tx| insert_decision(tx, d))
    }

    fn add_decision_evaluated(&mut self, d: &DecisionRow, e: Option<&EvaluationRow>) -> Result<()> {
        self.write(format!("adding decision {} of trial {} and its evaluation", d.idx, d.trial), |tx| {
            insert_decision(tx, d)?;
            match evaluation_of(d, e)? {
                Some(e) => insert_evaluation(tx, e),
                None => Ok(()),
            }
        })
    }

    fn decisions(&self, trial: u64) -> Result<Vec<DecisionRow>> {
        self.read(format!("reading decisions of trial {trial}"), |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT trial, idx, step, observation, action, applied, reward, val_macro_f1, samples_per_s, at_unix \
                 FROM decisions WHERE trial = ?1 ORDER BY idx",
            )?;
            let rows = stmt
                .query_map([trial], |row| {
                    Ok(DecisionRow {
                        trial: row.get(0)?,
                        idx: row.get(1)?,
                        step: row.get(2)?,
                        observation: row.get(3)?,
                        action: row.get(4)?,
                        applied: row.get(5)?,
                        reward: real(row, 6)?,
                        val_macro_f1: real(row, 7)?,
                        samples_per_s: real(row, 8)?,
                        at_unix: real(row, 9)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn add_evaluation(&mut self, e: &EvaluationRow) -> Result<()> {
        self.write(format!("adding an evaluation of trial {} after decision {}", e.trial, e.idx), |tx| {
            insert_evaluation(tx, e)
        })
    }

    fn evaluations(&self, trial: u64) -> Result<Vec<EvaluationRow>> {
        self.read(format!("reading evaluations of trial {trial}"), |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT trial, idx, step, split, macro_f1, accuracy, loss, at_unix FROM evaluations \
                 WHERE trial = ?1 ORDER BY idx, rowid",
            )?;
            let rows = stmt
                .query_map([trial], |row| {
                    Ok(EvaluationRow {
                        trial: row.get(0)?,
                        idx: row.get(1)?,
                        step: row.get(2)?,
                        split: row.get(3)?,
                        macro_f1: real(row, 4)?,
                        accuracy: real(row, 5)?,
                        loss: real(row, 6)?,
                        at_unix: real(row, 7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn save_checkpoint(&mut self, trial: &TrialRow, c: &CheckpointRow, elapsed_s: f64) -> Result<()> {
        self.write(format!("saving the checkpoint of trial {}", trial.id), |tx| {
            if c.trial != trial.id {
                return Err(format!("the checkpoint names trial {}, the trial row is {}", c.trial, trial.id).into());
            }
            upsert_trial(tx, trial)?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO checkpoints (trial, step, decisions, state, model, optimizer, created_unix) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                c.trial,
                c.step,
                c.decisions,
                c.state,
                c.model,
                c.optimizer,
                c.created_unix
            ])?;
            set_elapsed_in(tx, elapsed_s)
        })
    }

    fn checkpoint(&self, trial: u64) -> Result<Option<CheckpointRow>> {
        self.read(format!("reading the checkpoint of trial {trial}"), |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT trial, step, decisions, state, model, optimizer, created_unix FROM checkpoints \
                     WHERE trial = ?1",
                )?
                .query_row([trial], |row| {
                    Ok(CheckpointRow {
                        trial: row.get(0)?,
                        step: row.get(1)?,
                        decisions: row.get(2)?,
                        state: row.get(3)?,
                        model: row.get(4)?,
                        optimizer: row.get(5)?,
                        created_unix: real(row, 6)?,
                    })
                })
                .optional()?;
            Ok(row)
        })
    }

    fn delete_checkpoint(&mut self, trial: u64) -> Result<()> {
        self.write(format!("deleting the checkpoint of trial {trial}"), |tx| {
            tx.execute("DELETE FROM checkpoints WHERE trial = ?1", [trial])?;
            Ok(())
        })
    }

    fn rewind(&mut self, trial: u64, from_idx: u64) -> Result<()> {
        self.write(format!("rewinding trial {trial} to decision {from_idx}"), |tx| {
            tx.execute("DELETE FROM decisions WHERE trial = ?1 AND idx >= ?2", [trial, from_idx])?;
            tx.execute("DELETE FROM evaluations WHERE trial = ?1 AND idx > ?2", [trial, from_idx])?;
            Ok(())
        })
    }

    fn finish_trial(&mut self, trial: &TrialRow, policy: Option<&str>, elapsed_s: f64) -> Result<()> {
        self.write(format!("finishing trial {}", trial.id), |tx| {
            upsert_trial(tx, trial)?;
            if let Some(state) = policy {
                tx.execute(
                    "INSERT INTO policy (id, trial, state) VALUES (1, ?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET trial = excluded.trial, state = excluded.state",
                    params![trial.id, state],
                )?;
            }
            set_elapsed_in(tx, elapsed_s)
        })
    }

    fn policy(&self) -> Result<Option<String>> {
        self.read("reading the policy state", |conn| {
            Ok(conn.query_row("SELECT state FROM policy WHERE id = 1", [], |row| row.get(0)).optional()?)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rusqlite::types::Value;

    use super::*;

    fn study() -> StudyRow {
        StudyRow {
            config: r#"{"budget":60,"strategy":"rl"}"#.into(),
            strategy: "rl".into(),
            dataset: "digits".into(),
            seed: u64::MAX - 6, // above i64::MAX: kept by its bits
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

    /// A store with the study row, in a fresh directory (kept alive by the returned guard).
    fn fresh() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("study.sqlite")).unwrap();
        store.create_study(&study()).unwrap();
        (dir, store)
    }

    fn store_error_text(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(e @ Error::Store { .. }) => e.to_string(),
            other => panic!("expected Error::Store, got {other:?}"),
        }
    }

    #[test]
    fn study_round_trips_and_exists_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("study.sqlite");
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert_eq!(store.study().unwrap(), None);
        store.create_study(&study()).unwrap();
        assert_eq!(store.study().unwrap(), Some(study()));

        let again = StudyRow { strategy: "random".into(), ..study() };
        let text = store_error_text(store.create_study(&again));
        assert!(text.contains("exists already"), "{text}");
        assert_eq!(store.study().unwrap(), Some(study()));

        store.set_elapsed(12.25).unwrap();
        assert_eq!(store.study().unwrap().unwrap().elapsed_s, 12.25);
    }

    #[test]
    fn trial_round_trips_and_upsert_replaces_in_place() {
        let (_dir, mut store) = fresh();
        store.save_trial(&trial(3), 1.0).unwrap();
        store.save_trial(&trial(1), 2.0).unwrap();
        assert_eq!(store.trials().unwrap(), vec![trial(1), trial(3)]);
        assert_eq!(store.study().unwrap().unwrap().elapsed_s, 2.0);

        store.add_decision(&decision(3, 0)).unwrap();
        let done = TrialRow {
            status: "completed".into(),
            record: r#"{"decisions":[1]}"#.into(),
            val_macro_f1: Some(0.875),
            samples_per_s: None,
            reward: f64::NEG_INFINITY,
            decisions: 1,
            resumed: true,
            ended_unix: Some(1_790_000_099.0),
            pid: u32::MAX,
            ..trial(3)
        };
        store.save_trial(&done, 3.5).unwrap();
        assert_eq!(store.trials().unwrap(), vec![trial(1), done]);
        assert_eq!(store.study().unwrap().unwrap().elapsed_s, 3.5);
        // Updated in place: the trial's decisions are still there.
        assert_eq!(store.decisions(3).unwrap(), vec![decision(3, 0)]);
    }

    #[test]
    fn nan_round_trips_in_non_optional_columns() {
        let (_dir, mut store) = fresh();
        let t = TrialRow { reward: f64::NAN, ..trial(0) };
        store.save_trial(&t, 0.0).unwrap();
        let back = store.trials().unwrap().remove(0);
        assert!(back.reward.is_nan(), "{back:?}");
        assert_eq!(TrialRow { reward: 0.0, ..back }, TrialRow { reward: 0.0, ..t });
        let d = DecisionRow { samples_per_s: f64::NAN, ..decision(0, 0) };
        store.add_decision(&d).unwrap();
        assert!(store.decisions(0).unwrap()[0].samples_per_s.is_nan());
    }

    #[test]
    fn decisions_and_evaluations_round_trip_in_order() {
        let (_dir, mut store) = fresh();
        store.save_trial(&trial(0), 0.0).unwrap();
        store.save_trial(&trial(1), 0.0).unwrap();
        for idx in [2, 0, 1] {
            store.add_decision(&decision(0, idx)).unwrap();
        }
        store.add_decision(&decision(1, 0)).unwrap();
        assert_eq!(store.decisions(0).unwrap(), vec![decision(0, 0), decision(0, 1), decision(0, 2)]);
        assert_eq!(store.decisions(1).unwrap(), vec![decision(1, 0)]);
        assert_eq!(store.decisions(7).unwrap(), vec![]);

        // (idx, insertion) order: two evaluations after decision 1 keep the order they came in.
        let evals = [evaluation(0, 1, "val"), evaluation(0, 0, "val"), evaluation(0, 1, "test")];
        for e in &evals {
            store.add_evaluation(e).unwrap();
        }
        store.add_evaluation(&evaluation(1, 0, "val")).unwrap();
        assert_eq!(store.evaluations(0).unwrap(), vec![evals[1].clone(), evals[0].clone(), evals[2].clone()]);
        assert_eq!(store.evaluations(1).unwrap(), vec![evaluation(1, 0, "val")]);
    }

    #[test]
    fn a_decision_and_its_evaluation_are_written_together_or_not_at_all() {
        let (_dir, mut store) = fresh();
        store.save_trial(&trial(0), 0.0).unwrap();
        store.add_decision_evaluated(&decision(0, 0), Some(&evaluation(0, 1, "validation"))).unwrap();
        store.add_decision_evaluated(&decision(0, 1), None).unwrap();
        assert_eq!(store.decisions(0).unwrap(), vec![decision(0, 0), decision(0, 1)]);
        assert_eq!(store.evaluations(0).unwrap(), vec![evaluation(0, 1, "validation")]);
        // An evaluation that cannot be stored fails the pair: its decision is not kept either.
        let unstorable = EvaluationRow { step: u64::MAX, ..evaluation(0, 3, "validation") };
        let text = store_error_text(store.add_decision_evaluated(&decision(0, 2), Some(&unstorable)));
        assert!(text.contains("decision 2 of trial 0 and its evaluation"), "{text}");
        let text =
            store_error_text(store.add_decision_evaluated(&decision(0, 2), Some(&evaluation(1, 3, "validation"))));
        assert!(text.contains("an evaluation of trial 1 with a decision of trial 0"), "{text}");
        assert_eq!(store.decisions(0).unwrap().len(), 2);
        assert_eq!(store.evaluations(0).unwrap().len(), 1);
    }

    #[test]
    fn duplicate_decision_is_an_error_and_keeps_the_first() {
        let (_dir, mut store) = fresh();
        store.save_trial(&trial(0), 0.0).unwrap();
        store.add_decision(&decision(0, 4)).unwrap();
        let other = DecisionRow { reward: 99.0, ..decision(0, 4) };
        let text = store_error_text(store.add_decision(&other));
        assert!(text.contains("decision 4 of trial 0") && text.contains("UNIQUE"), "{text}");
        assert_eq!(store.decisions(0).unwrap(), vec![decision(0, 4)]);
    }

    #[test]
    fn rows_of_an_unknown_trial_are_refused() {
        let (_dir, mut store) = fresh();
        store_error_text(store.add_decision(&decision(5, 0)));
        store_error_text(store.add_evaluation(&evaluation(5, 0, "val")));
        assert_eq!(store.decisions(5).unwrap(), vec![]);
        assert_eq!(store.evaluations(5).unwrap(), vec![]);
    }

    #[test]
    fn invalid_json_is_refused() {
        let (_dir, mut store) = fresh();
        let bad = TrialRow { record: "{not json".into(), ..trial(0) };
        let text = store_error_text(store.save_trial(&bad, 0.0));
        assert!(text.contains("saving trial 0"), "{text}");
        assert_eq!(store.trials().unwrap(), vec![]);
    }

    #[test]
    fn a_write_without_a_study_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("s.sqlite")).unwrap();
        let text = store_error_text(store.save_trial(&trial(0), 1.0));
        assert!(text.contains("create_study first"), "{text}");
        // One transaction: the trial row written before the failing UPDATE was rolled back.
        assert_eq!(store.trials().unwrap(), vec![]);
        store_error_text(store.set_elapsed(1.0));
    }

    #[test]
    fn save_checkpoint_replaces_the_previous_one() {
        let (_dir, mut store) = fresh();
        assert_eq!(store.checkpoint(0).unwrap(), None);
        store.save_checkpoint(&trial(0), &checkpoint(0, 200, 1), 5.0).unwrap();
        store.save_checkpoint(&trial(1), &checkpoint(1, 100, 9), 6.0).unwrap();
        assert_eq!(store.checkpoint(0).unwrap(), Some(checkpoint(0, 200, 1)));
        assert_eq!(store.trials().unwrap(), vec![trial(0), trial(1)]);
        assert_eq!(store.study().unwrap().unwrap().elapsed_s, 6.0);

        let later = TrialRow { decisions: 4, status: "paused".into(), ..trial(0) };
        store.save_checkpoint(&later, &checkpoint(0, 400, 2), 7.0).unwrap();
        assert_eq!(store.checkpoint(0).unwrap(), Some(checkpoint(0, 400, 2)));
        assert_eq!(store.checkpoint(1).unwrap(), Some(checkpoint(1, 100, 9)));
        assert_eq!(store.trials().unwrap(), vec![later, trial(1)]);
        assert_eq!(store.study().unwrap().unwrap().elapsed_s, 7.0);
        let count: i64 = store.conn.query_row("SELECT count(*) FROM checkpoints", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 2);

        store.delete_checkpoint(0).unwrap();
        assert_eq!(store.checkpoint(0).unwrap(), None);
        store.delete_checkpoint(0).unwrap();
        assert_eq!(store.checkpoint(1).unwrap(), Some(checkpoint(1, 100, 9)));
    }

    #[test]
    fn checkpoint_of_another_trial_is_refused() {
        let (_dir, mut store) = fresh();
        let text = store_error_text(store.save_checkpoint(&trial(0), &checkpoint(1, 100, 0), 1.0));
        assert!(text.contains("names trial 1"), "{text}");
        assert_eq!(store.trials().unwrap(), vec![]);
        assert_eq!(store.checkpoint(1).unwrap(), None);
    }

    #[test]
    fn rewind_deletes_exactly_from_idx() {
        let (_dir, mut store) = fresh();
        for t in 0..2 {
            store.save_trial(&trial(t), 0.0).unwrap();
            for idx in 0..6 {
                store.add_decision(&decision(t, idx)).unwrap();
                store.add_evaluation(&evaluation(t, idx, "val")).unwrap();
                store.add_evaluation(&evaluation(t, idx, "test")).unwrap();
            }
        }
        store.rewind(0, 3).unwrap();
        assert_eq!(store.decisions(0).unwrap(), (0..3).map(|i| decision(0, i)).collect::<Vec<_>>());
        // Evaluation 3 followed decision 2: it is kept.
        let kept: Vec<_> = (0..=3).flat_map(|i| [evaluation(0, i, "val"), evaluation(0, i, "test")]).collect();
        assert_eq!(store.evaluations(0).unwrap(), kept);
        // The other trial is untouched.
        assert_eq!(store.decisions(1).unwrap().len(), 6);
        assert_eq!(store.evaluations(1).unwrap().len(), 12);
        // Rewinding past the end deletes nothing; to 0 deletes every decision and keeps the
        // evaluation after the first interval.
        store.rewind(0, 3).unwrap();
        assert_eq!(store.decisions(0).unwrap().len(), 3);
        store.rewind(1, 0).unwrap();
        assert_eq!(store.decisions(1).unwrap(), vec![]);
        assert_eq!(store.evaluations(1).unwrap(), vec![evaluation(1, 0, "val"), evaluation(1, 0, "test")]);
        // Decision 3 of trial 0 can be taken again after the rewind.
        store.add_decision(&decision(0, 3)).unwrap();
    }

    #[test]
    fn finish_trial_stores_the_policy() {
        let (_dir, mut store) = fresh();
        assert_eq!(store.policy().unwrap(), None);
        let done = TrialRow { status: "completed".into(), ended_unix: Some(1_790_000_050.0), ..trial(0) };
        store.finish_trial(&done, Some(r#"{"theta":[0.5,-1.0]}"#), 8.0).unwrap();
        assert_eq!(store.policy().unwrap().as_deref(), Some(r#"{"theta":[0.5,-1.0]}"#));
        assert_eq!(store.trials().unwrap(), vec![done.clone()]);
        assert_eq!(store.study().unwrap().unwrap().elapsed_s, 8.0);

        let failed = TrialRow { status: "failed: diverged".into(), ..trial(1) };
        store.finish_trial(&failed, None, 9.0).unwrap();
        assert_eq!(store.policy().unwrap().as_deref(), Some(r#"{"theta":[0.5,-1.0]}"#));
        store.finish_trial(&trial(2), Some(r#"{"theta":[1.5]}"#), 10.0).unwrap();
        assert_eq!(store.policy().unwrap().as_deref(), Some(r#"{"theta":[1.5]}"#));
        assert_eq!(store.trials().unwrap(), vec![done, failed, trial(2)]);
        assert_eq!(store.study().unwrap().unwrap().elapsed_s, 10.0);
    }

    #[test]
    fn reopening_keeps_everything() {
        let (dir, mut store) = fresh();
        let path = store.path().to_path_buf();
        store.save_trial(&trial(0), 1.0).unwrap();
        store.add_decision(&decision(0, 0)).unwrap();
        store.add_decision(&decision(0, 1)).unwrap();
        store.add_evaluation(&evaluation(0, 1, "val")).unwrap();
        store.save_checkpoint(&trial(0), &checkpoint(0, 200, 3), 2.0).unwrap();
        store.finish_trial(&trial(1), Some("[1,2,3]"), 3.0).unwrap();
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.study().unwrap(), Some(StudyRow { elapsed_s: 3.0, ..study() }));
        assert_eq!(store.trials().unwrap(), vec![trial(0), trial(1)]);
        assert_eq!(store.decisions(0).unwrap(), vec![decision(0, 0), decision(0, 1)]);
        assert_eq!(store.evaluations(0).unwrap(), vec![evaluation(0, 1, "val")]);
        assert_eq!(store.checkpoint(0).unwrap(), Some(checkpoint(0, 200, 3)));
        assert_eq!(store.policy().unwrap().as_deref(), Some("[1,2,3]"));
        drop(dir);
    }

    #[test]
    fn pragmas_are_set() {
        let (_dir, store) = fresh();
        let pragma = |name: &str| -> Value { store.conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        assert_eq!(pragma("journal_mode"), Value::Text("wal".into()));
        assert_eq!(pragma("synchronous"), Value::Integer(1)); // NORMAL
        assert_eq!(pragma("foreign_keys"), Value::Integer(1));
        assert_eq!(pragma("busy_timeout"), Value::Integer(5000));
        assert_eq!(pragma("journal_size_limit"), Value::Integer(64 << 20));
        assert_eq!(pragma("user_version"), Value::Integer(1));
        // WAL is a property of the file: a plain connection sees it too.
        let other = Connection::open(store.path()).unwrap();
        let mode: String = other.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn another_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("study.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 2).unwrap();
        let text = store_error_text(SqliteStore::open(&path));
        assert!(text.contains("schema version 2") && text.contains("version 1 only"), "{text}");
        assert!(text.contains("study.sqlite"), "{text}");
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other_db = dir.path().join("other.sqlite");
        Connection::open(&other_db).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let text = store_error_text(SqliteStore::open(&other_db));
        assert!(text.contains("not a tuneforge study store"), "{text}");

        let not_db = dir.path().join("notes.txt");
        std::fs::write(&not_db, vec![b'x'; 4096]).unwrap();
        store_error_text(SqliteStore::open(&not_db));
    }
}
