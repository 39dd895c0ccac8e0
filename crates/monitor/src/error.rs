//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `tuneforge-monitor`.
///
/// Context is data, not text: variants carry the path and line they are about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing an event log (or `/proc/self/statm`) failed.
    #[error("i/o on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of an event log that is not the last one is not a valid event: the file was
    /// edited or damaged (a crash can only tear the last line, which the reader tolerates).
    #[error("{path}:{line}: corrupt event log line: {source}")]
    CorruptLine {
        /// The log file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Why the line did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// An event could not be serialised (does not happen for the events of this crate, kept so
    /// that writing never panics).
    #[error("serialising an event: {source}")]
    Serialize {
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration value is out of its documented range.
    #[error("invalid configuration: {field} = {value} ({reason})")]
    InvalidConfig {
        /// The field, e.g. `detectors.loss_spike.z_threshold`.
        field: &'static str,
        /// The offending value, as text.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },
    /// A CUDA driver call of the GPU probe failed (only with `cuda`): `what` says which.
    #[error("GPU {ordinal}: {what}: {message}")]
    Gpu {
        /// The device's ordinal.
        ordinal: usize,
        /// The query, e.g. `"memory info"`.
        what: &'static str,
        /// The driver's error.
        message: String,
    },
    /// Setting up or shutting down the OpenTelemetry exporter failed (only with `otlp`).
    #[error("OpenTelemetry {stage}: {message}")]
    Telemetry {
        /// What was being done: "exporter", "flush" or "shutdown".
        stage: &'static str,
        /// The exporter's message.
        message: String,
    },
}

/// `std::result::Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
