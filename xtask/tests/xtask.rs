//! The one integration-test binary of the xtask crate.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

mod cli;
mod resume;
mod tidy;
