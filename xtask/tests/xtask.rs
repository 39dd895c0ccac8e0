//! The one integration-test binary of the xtask crate.

mod cli;
mod tidy;
