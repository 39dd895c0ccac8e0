//! The report's errors: what could not be read or drawn, and where.

use std::path::PathBuf;

/// Everything that can go wrong while reading a study folder or writing its report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The folder holds neither a study (`study.sqlite`) nor bench-tune studies.
    #[error("{}: not a tuneforge study folder ({why})", path.display())]
    NotAStudy {
        /// The folder given.
        path: PathBuf,
        /// What was looked for.
        why: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of the study is not what tuneforge writes (the line or field is named).
    #[error("{}: {why}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where in the file.
        why: String,
    },
    /// The study store or the predictions could not be read.
    #[error(transparent)]
    Agent(#[from] tuneforge_agent::Error),
    /// The event log could not be read (a bad line other than a torn last one).
    #[error(transparent)]
    Monitor(#[from] tuneforge_monitor::Error),
    /// A chart could not be drawn.
    #[error("drawing the {chart} chart: {why}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// plotters' message.
        why: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
