//! `cargo xtask`: tuneforge's command line.
//!
//! One module per subcommand. Today: `datasets` (list what can be found and check it).
//! `tune`, `train` and the benchmarks arrive with the crates they need.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod datasets;

/// tuneforge: train candle networks and tune them while they train.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the datasets that can be found, with rows, feature shape, classes and per-class
    /// counts; exits non-zero if one of them is corrupt.
    Datasets(DataArgs),
}

/// Where datasets are looked for.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Directory holding the datasets (default: $TUNEFORGE_DATA, else ./datasets).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where inflated copies of .gz files are kept (default: $TUNEFORGE_CACHE, else
    /// $XDG_CACHE_HOME/tuneforge, else ~/.cache/tuneforge).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Datasets(args) => datasets::run(&args),
    }
}
