//! `tuneforge-fuzzing`: one fuzz target per parser of outside input, as plain functions.
//!
//! Every function takes arbitrary bytes, feeds them to one parser of the workspace and
//! returns a [`Verdict`]: [`Verdict::Accepted`] when the parser took the input,
//! [`Verdict::Rejected`] when it refused it with a typed error. A function panics only when
//! an invariant it checks is broken — a parser that panicked itself, or an accepted input
//! whose round trip (parse → serialise → parse) or whose arithmetic does not hold. That panic
//! is what libFuzzer reports as a crash.
//!
//! | function | parser | checks beyond "no panic" |
//! |---|---|---|
//! | [`idx`] | `tuneforge_loader::idx::parse_header`, `IdxArray`, `IdxDataset` | header re-encodes to the same bytes; dims × 1 + offset = length; rows read back as the bytes |
//! | [`idx_gz`] | `IdxArray::open` on a `.gz` file | the data is the input inflated; recompressed, it reads back the same |
//! | [`csv`](fn@csv) | `tuneforge_loader::read_csv_from` | columns as long as the table, missing counts, codes in range; a canonical rewrite reads back to the same rewrite |
//! | [`text`] | `tuneforge_loader::read_text_from` (JSON lines, CSV; labels required or optional) | optional labels read labelled data the same; labels in range and distinct; JSON lines round trip |
//! | [`event_log`] | `tuneforge_monitor::parse_log` | each event re-serialises to JSON that parses to the same JSON; a torn tail is the last line |
//! | [`model_spec`] | `ModelSpec` (serde JSON) | round trip; shape arithmetic; small specs build and give `[batch, classes]` |
//! | [`model_checkpoint`] | `Model::from_safetensors` | saved again, loads to the same spec and tensors |
//! | [`optim_checkpoint`] | `tuneforge_optim::Checkpoint::from_bytes` | byte round trip; restores into an optimiser that steps; schedule rates finite |
//! | [`prep_pipeline`] | `FittedPipeline::from_json` | round trip; `transform` gives the recorded columns; the row form agrees bit for bit |
//! | [`policy`] | `StudyPolicy` (`ActorCritic`, serde JSON) + `validate` | round trip; a valid policy gives probabilities that sum to 1 and stays valid after learning |
//! | [`predictions`] | `tuneforge_agent::run::parse_predictions` | written again, parses to the same rows |
//! | [`study_config`] | `tuneforge_agent::tune::parse_study_config` | stored again, reads back to the same JSON |
//! | [`budget`] | `tuneforge_agent::tune::parse_budget` (`--budget`) | positive; written as seconds, parses back |
//! | [`predict_csv`] | `Predictor::read` + `predict` on a CSV file (a fixed table model) | one prediction per kept row; labels in range; probabilities sum to 1; class = most probable |
//!
//! The cargo-fuzz crate in `fuzz/` (nightly, libFuzzer) has one target per function; the
//! seed corpora (`fuzz/corpus/<target>/`) and the minimised inputs of every crash found
//! (`fuzz/regressions/<target>/`) are run through the same functions by this crate's
//! `corpus` test on stable Rust, so `cargo test` keeps them passing. How to run the fuzzer
//! and what it found: `docs/reliability.md`.
//!
//! ```
//! use tuneforge_fuzzing::{Verdict, budget, model_spec};
//!
//! assert_eq!(budget(b"90s"), Verdict::Accepted);
//! assert_eq!(budget(b"90x"), Verdict::Rejected);
//! let spec = br#"{"input":[4],"layers":[{"type":"linear","width":3}]}"#;
//! assert_eq!(model_spec(spec), Verdict::Accepted);
//! ```

mod agent;
mod loader;
mod model;
mod monitor;
mod optim;
mod prep;
mod scratch;

pub use crate::agent::{budget, policy, predict_csv, predictions, study_config};
pub use crate::loader::{csv, idx, idx_gz, text};
pub use crate::model::{model_checkpoint, model_spec};
pub use crate::monitor::event_log;
pub use crate::optim::optim_checkpoint;
pub use crate::prep::prep_pipeline;

/// What a target made of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The parser accepted the input and every invariant checked held.
    Accepted,
    /// The parser refused the input with a typed error.
    Rejected,
}

/// A fuzz target: its name (as in `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`)
/// and its function.
pub type Target = (&'static str, fn(&[u8]) -> Verdict);

/// Every target, by name.
pub const TARGETS: [Target; 14] = [
    ("idx", idx),
    ("idx_gz", idx_gz),
    ("csv", csv),
    ("text", text),
    ("event_log", event_log),
    ("model_spec", model_spec),
    ("model_checkpoint", model_checkpoint),
    ("optim_checkpoint", optim_checkpoint),
    ("prep_pipeline", prep_pipeline),
    ("policy", policy),
    ("predictions", predictions),
    ("study_config", study_config),
    ("budget", budget),
    ("predict_csv", predict_csv),
];

/// Panics, naming the invariant, when `a != b`: the fuzzer's crash signal.
#[track_caller]
fn same<T: PartialEq + std::fmt::Debug>(what: &str, a: &T, b: &T) {
    assert!(a == b, "invariant broken: {what}\n  first:  {a:?}\n  second: {b:?}");
}

#[cfg(test)]
mod tests;
