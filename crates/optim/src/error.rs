//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `tuneforge-optim`.
///
/// Each variant carries the data needed to say what was wrong where (the parameter's
/// name, the offending index, the file), never a pre-formatted string. A call that
/// returns an error leaves the optimiser, schedule or file it was given unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle (device, dtype or shape trouble that
    /// candle itself detected).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// A hyper-parameter is outside its valid range.
    #[error("invalid {field} = {value}: expected {expected}")]
    InvalidHyperParameter {
        /// The config field, e.g. `"beta1"`.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The valid range in words, e.g. `"0 <= beta1 < 1"`.
        expected: &'static str,
    },

    /// A batch size of zero was given to the learning-rate scaling rule.
    #[error("batch sizes must be positive (old {old}, new {new})")]
    ZeroBatchSize {
        /// The batch size the learning rate was tuned for.
        old: usize,
        /// The new batch size.
        new: usize,
    },

    /// The optimiser holds no parameter of this name.
    #[error("unknown parameter {name:?}")]
    UnknownParam {
        /// The name looked up.
        name: String,
    },

    /// A parameter of this name is already held.
    #[error("parameter {name:?} is already registered")]
    DuplicateParam {
        /// The name given twice.
        name: String,
    },

    /// The parameter's variable is not a floating-point tensor.
    #[error("parameter {name:?} has dtype {dtype:?}; optimisers need a float dtype")]
    NotFloat {
        /// The parameter.
        name: String,
        /// Its dtype.
        dtype: candle_core::DType,
    },

    /// A gradient (or a state buffer being loaded) does not have its parameter's shape.
    #[error("parameter {name:?}: {what} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The parameter.
        name: String,
        /// What had the wrong shape: `"gradient"`, `"new variable"` or a state buffer name.
        what: &'static str,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        actual: Vec<usize>,
    },

    /// A remap named an axis the parameter does not have.
    #[error("parameter {name:?}: remap axis {axis} out of range for rank {rank}")]
    AxisOutOfRange {
        /// The parameter.
        name: String,
        /// The axis given.
        axis: usize,
        /// The parameter's rank.
        rank: usize,
    },

    /// A remap's `sources` or `scale` does not have one entry per new index on the axis.
    #[error("parameter {name:?}: remap {what} has {actual} entries, the new variable has {expected} on the axis")]
    RemapLength {
        /// The parameter.
        name: String,
        /// `"sources"` or `"scale"`.
        what: &'static str,
        /// The new variable's size along the axis.
        expected: usize,
        /// The length given.
        actual: usize,
    },

    /// A remap source index is not an index of the old parameter along the axis.
    #[error("parameter {name:?}: remap sources[{position}] = {source_index} but the old size on the axis is {old_len}")]
    SourceOutOfRange {
        /// The parameter.
        name: String,
        /// The position in `sources`.
        position: usize,
        /// The value at that position.
        source_index: usize,
        /// The old parameter's size along the axis.
        old_len: usize,
    },

    /// A remap scale factor is NaN or infinite.
    #[error("parameter {name:?}: remap scale[{position}] = {value} is not finite")]
    NonFiniteScale {
        /// The parameter.
        name: String,
        /// The position in `scale`.
        position: usize,
        /// The value at that position.
        value: f32,
    },

    /// A replacement variable differs from the old one in dtype or device.
    #[error("parameter {name:?}: new variable is {actual}, the old one was {expected}")]
    VarMismatch {
        /// The parameter.
        name: String,
        /// The old variable's dtype and device, in words.
        expected: String,
        /// The new variable's dtype and device, in words.
        actual: String,
    },

    /// An optimiser state does not fit the optimiser it is loaded into.
    #[error("optimiser state does not fit: {reason}")]
    StateMismatch {
        /// What differs.
        reason: StateMismatch,
    },

    /// Reading or writing a checkpoint file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A checkpoint's JSON could not be read or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error, with line and column.
        source: serde_json::Error,
    },

    /// A checkpoint's tensor file could not be decoded.
    #[error("{path}: {source}")]
    Tensors {
        /// The file.
        path: PathBuf,
        /// candle's safetensors error.
        source: candle_core::Error,
    },

    /// A checkpoint's files do not belong together or are incomplete.
    #[error("{path}: corrupt checkpoint: {reason}")]
    CorruptCheckpoint {
        /// The file found wrong.
        path: PathBuf,
        /// What is wrong.
        reason: CorruptCheckpoint,
    },
}

/// How an [`OptimizerState`](crate::OptimizerState) fails to fit an optimiser.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StateMismatch {
    /// The state is of another optimiser kind.
    Kind {
        /// The optimiser's kind, e.g. `"adamw"`.
        expected: &'static str,
        /// The state's kind.
        actual: &'static str,
    },
    /// The optimiser has a parameter the state lacks.
    MissingParam {
        /// The parameter.
        name: String,
    },
    /// The state has a parameter the optimiser lacks.
    ExtraParam {
        /// The parameter.
        name: String,
    },
    /// A parameter's state lacks a buffer the optimiser needs.
    MissingBuffer {
        /// The parameter.
        name: String,
        /// The buffer, e.g. `"exp_avg"`.
        buffer: &'static str,
    },
    /// A parameter's state has a buffer the optimiser does not use.
    ExtraBuffer {
        /// The parameter.
        name: String,
        /// The buffer.
        buffer: String,
    },
}

impl std::fmt::Display for StateMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kind { expected, actual } => {
                write!(f, "state of a {actual} optimiser, this is {expected}")
            }
            Self::MissingParam { name } => write!(f, "no state for parameter {name:?}"),
            Self::ExtraParam { name } => write!(f, "state for unknown parameter {name:?}"),
            Self::MissingBuffer { name, buffer } => {
                write!(f, "parameter {name:?} has no {buffer:?} buffer")
            }
            Self::ExtraBuffer { name, buffer } => {
                write!(f, "parameter {name:?} has an unexpected {buffer:?} buffer")
            }
        }
    }
}

/// How a checkpoint on disk is inconsistent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CorruptCheckpoint {
    /// The tensor file is not the one the JSON file was written with (a crash between
    /// the two renames, or files mixed from two checkpoints).
    TensorFileChanged {
        /// Length and xxh3 hash recorded in the JSON file.
        expected: (u64, u64),
        /// Length and xxh3 hash of the file found.
        actual: (u64, u64),
    },
    /// The JSON file lists a buffer the tensor file lacks.
    MissingTensor {
        /// The safetensors key.
        key: String,
    },
    /// The tensor file has a tensor the JSON file does not list.
    ExtraTensor {
        /// The safetensors key.
        key: String,
    },
    /// Bytes from [`crate::Checkpoint::to_bytes`] too short for the manifest they announce.
    Truncated {
        /// Bytes found.
        len: u64,
    },
    /// The JSON file has a format version this crate does not read.
    Format {
        /// The version found.
        version: u32,
    },
}

impl std::fmt::Display for CorruptCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TensorFileChanged { expected, actual } => write!(
                f,
                "tensor file has {} bytes (xxh3 {:016x}), the JSON file expects {} bytes (xxh3 {:016x})",
                actual.0, actual.1, expected.0, expected.1
            ),
            Self::MissingTensor { key } => write!(f, "tensor {key:?} is missing"),
            Self::ExtraTensor { key } => write!(f, "unexpected tensor {key:?}"),
            Self::Format { version } => write!(f, "unknown format version {version}"),
            Self::Truncated { len } => write!(f, "{len} bytes: shorter than the manifest they announce"),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
