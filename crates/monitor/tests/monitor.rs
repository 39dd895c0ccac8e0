//! Integration tests of `tuneforge-monitor`, one binary:
//!
//! - `log`: event-log round trip, torn last line, corrupt middle line, repair on reopen.
//! - `quality`: detector quality on seeded synthetic streams with known injections and on the
//!   clean Fashion-MNIST trace `tests/fixtures/fmnist_trace.jsonl` (print the figures with
//!   `cargo test -p tuneforge-monitor --test monitor quality -- --nocapture`).
//! - `flow`: a real candle-nn MLP trained under a `Monitor`, with an injected NaN rolled back.
//! - `otlp`: a real training run exported over OTLP to a real receiver (rotel), asserted from
//!   the receiver's debug output. Runs when `TUNEFORGE_ROTEL` names the `rotel-agent` binary
//!   (.ci/run installs it); skipped, with a message, otherwise.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test.

#[path = "support/mlp.rs"]
mod mlp;
#[path = "support/trace.rs"]
mod trace;

#[path = "monitor/flow.rs"]
mod flow;
#[path = "monitor/log.rs"]
mod log;
#[path = "monitor/otlp.rs"]
mod otlp;
#[path = "monitor/quality.rs"]
mod quality;
