//! The crate's one integration-test binary (`cargo test -p tuneforge-prep`): error paths,
//! step behaviour and reports, serialisation and leak-freedom, scikit-learn parity on the
//! committed fixtures, real-data runs on `datasets/biopsy.csv` and `datasets/digits.csv`, and
//! text pipelines (crafted e-mails and HTML, the SpamAssassin corpus from `TUNEFORGE_DATA`).

// Test helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

#[path = "prep/common.rs"]
mod common;
#[path = "prep/errors.rs"]
mod errors;
#[path = "prep/parity.rs"]
mod parity;
#[path = "prep/pipeline.rs"]
mod pipeline;
#[path = "prep/real_data.rs"]
mod real_data;
#[path = "prep/text.rs"]
mod text;
