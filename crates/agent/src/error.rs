//! The agent crate's error type: the pipeline crates' errors, with context.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong preparing data, training, evaluating or writing outputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or splitting the dataset.
    #[error(transparent)]
    Loader(#[from] tuneforge_loader::Error),
    /// Fitting or applying the preprocessing pipeline.
    #[error("preprocessing: {0}")]
    Prep(#[from] tuneforge_prep::Error),
    /// Building, running or restructuring the model.
    #[error(transparent)]
    Model(#[from] tuneforge_model::Error),
    /// The optimiser or its schedule.
    #[error("optimiser: {0}")]
    Optim(#[from] tuneforge_optim::Error),
    /// Computing metrics.
    #[error("evaluation: {0}")]
    Eval(#[from] tuneforge_eval::Error),
    /// The run's monitor: its event log, configuration or telemetry.
    #[error("monitor: {0}")]
    Monitor(#[from] tuneforge_monitor::Error),
    /// A tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A configuration value that cannot work (named, with the reason).
    #[error("invalid {what}: {why}")]
    Config {
        /// The setting.
        what: &'static str,
        /// Why it is refused.
        why: String,
    },
    /// Training produced a non-finite loss or gradient and could not recover: the run has no
    /// monitor, its recovery policy is off, or it gave up (`Recovery::Abort`: no snapshot, or
    /// too many rollbacks in a row). The diverged step was not applied to the weights.
    #[error("training diverged at epoch {epoch}, step {step}: loss {loss}")]
    Diverged {
        /// Epoch (0-based).
        epoch: usize,
        /// Global step.
        step: u64,
        /// The loss value.
        loss: f32,
    },
    /// Data or a saved model that does not fit (what, and where in the file).
    #[error("{}: {why}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        why: String,
    },
    /// Writing an output file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The study store (SQLite): what failed, on which file.
    #[error("study store {path}: {what}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The PostgreSQL study store: what failed, on which server (`postgres://USER@HOST:PORT/DB`,
    /// never the password) and study.
    #[error("study store {target}: {what}: {source}")]
    Database {
        /// The server, database and study.
        target: String,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another worker took over this worker's trial (it saw no heartbeat for longer than the
    /// timeout and presumed this worker dead): the trial is no longer this worker's to write.
    #[error("study store {target}: trial {trial} was taken over by worker {owner}")]
    TakenOver {
        /// The server and database.
        target: String,
        /// The trial.
        trial: u64,
        /// The worker that owns it now.
        owner: String,
    },
}

impl Error {
    /// Whether this error ends only the trial it happened in — training went wrong (it
    /// diverged, a tensor operation failed) — rather than the whole study, which stops when
    /// its own files cannot be written (a full or read-only disk, a broken study store): then
    /// every trial after it would fail the same way, so the study stops with what it recorded
    /// kept, to be continued with `--resume` once the disk is usable.
    pub fn ends_only_the_trial(&self) -> bool {
        !matches!(
            self,
            Error::Store { .. }
                | Error::Database { .. }
                | Error::TakenOver { .. }
                | Error::Io { .. }
                | Error::Monitor(tuneforge_monitor::Error::Io { .. })
                | Error::Model(tuneforge_model::Error::Io { .. })
                | Error::Optim(tuneforge_optim::Error::Io { .. })
        )
    }
}
