//! The model crate's error type.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong building, running, restructuring, saving or loading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec is inconsistent (shape arithmetic fails, a layer cannot follow another).
    #[error("invalid model spec at layer {layer}: {why}")]
    Spec {
        /// Index into `ModelSpec::layers` (the layer count for whole-spec problems).
        layer: usize,
        /// What is wrong.
        why: String,
    },
    /// A preset name or its arguments could not be parsed.
    #[error("cannot build model {name:?}: {why}")]
    Preset {
        /// The text given.
        name: String,
        /// What was expected.
        why: String,
    },
    /// A width change was asked of a layer that cannot take it.
    #[error("cannot resize layer {layer}: {why}")]
    Resize {
        /// Index into `ModelSpec::layers`.
        layer: usize,
        /// Why not.
        why: String,
    },
    /// An input batch has the wrong shape.
    #[error("input of shape {found:?} does not match the model's input {expected:?} (plus a batch dimension)")]
    InputShape {
        /// The model's input shape.
        expected: Vec<usize>,
        /// The batch's shape.
        found: Vec<usize>,
    },
    /// A token id outside the embedding's vocabulary (or not a whole number ≥ 0).
    #[error("token id {found} is outside the embedding's vocabulary of {vocab} ids")]
    TokenId {
        /// The offending value.
        found: f32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A saved model does not match its spec (missing tensor, wrong shape).
    #[error("{path}: tensor {name:?}: {why}")]
    Checkpoint {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The spec file is not valid JSON for a `ModelSpec`.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
