//! `cargo xtask`: tuneforge's command line.
//!
//! One module per subcommand: `datasets` (list what can be found and check it), `train`
//! (one run without tuning), `tune` (a tuning study; with `--storage postgres://...`, one
//! of many workers sharing it), `study` (list, show, export studies), `bench-step` (training/inference
//! throughput), `bench-tune` (the nightly comparison of tuning strategies over seeds).

// Doc comments on the clap types are also the `--help` text, written for a terminal
// (`cpu|cuda[:N]`, `DIR/<strategy>-seed<k>`); rustdoc would read them as links and HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `println!` to a standard output that may close early (`| head`): once a write fails,
/// later lines are dropped and the command goes on to its end (its files are still
/// written); a failure other than a closed pipe is said once on stderr.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out_line(format_args!($($arg)*))
    };
}

/// `eprintln!` to a standard error that may close early (`2>&1 | head`, a terminal gone):
/// once a write fails, later lines are dropped (there is nowhere left to say so) and the
/// command goes on to its end — a study still tests its best model and writes its files,
/// where `eprintln!` would panic. `errln!()` alone writes an empty line; without a final
/// newline: [`err_text`].
macro_rules! errln {
    () => {
        $crate::err_text(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::err_text(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Set once standard output could not be written ([`outln!`]).
static STDOUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set once standard error could not be written ([`errln!`]).
static STDERR_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn out_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    use std::sync::atomic::Ordering;
    if STDOUT_FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        STDOUT_FAILED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            errln!("cannot write to standard output ({e}); its lines are dropped from here on");
        }
    }
}

/// Writes `text` to standard error unless an earlier write failed ([`errln!`]).
fn err_text(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    use std::sync::atomic::Ordering;
    if STDERR_FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut err = std::io::stderr().lock();
    if err.write_fmt(text).and_then(|()| err.flush()).is_err() {
        STDERR_FAILED.store(true, Ordering::Relaxed);
    }
}

mod bench;
mod bench_tune;
mod datasets;
mod gpu;
mod predict;
mod report;
mod study;
mod train;
mod tune;

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
    /// Train one model once, without tuning, and write summary.json, predictions.csv,
    /// the model and the optimiser state to --out.
    Train(train::TrainArgs),
    /// Tune a network while it trains (strategies rl, rl-no-width, fixed, random, asha, pbt,
    /// pb2, tpe, tpe-multivariate) within a wall-clock budget; writes summary.json, the best model and its test predictions.
    Tune(Box<tune::TuneArgs>),
    /// Apply a model that train or tune wrote (its folder) to new rows — a CSV file, texts,
    /// images or a known dataset — and write each row's predicted class (and probabilities).
    Predict(predict::PredictArgs),
    /// Training and inference samples/s of one model at one batch size on Fashion-MNIST
    /// (one JSON line, comparable with ../shared/bench/torch_throughput.py).
    BenchStep(bench::BenchStepArgs),
    /// GPU correctness checks: the fused optimiser kernels against candle-nn and the CPU,
    /// widen/narrow and checkpoints on the device (one JSON line per check).
    GpuCheck(gpu::GpuCheckArgs),
    /// Build the `cuda` binary and pack what a GPU run needs (binary, data, PyTorch
    /// reference, run script) into one folder for the device tool's `carry`.
    GpuBundle(gpu::GpuBundleArgs),
    /// Compare tuning strategies: one `tune` study per strategy and seed, mean ± sd per
    /// strategy written to --json and a section of --doc; --compare flags regressions.
    BenchTune(bench_tune::BenchTuneArgs),
    /// Write DIR/report.html: one offline HTML file with the charts and tables of a `tune` or
    /// `bench-tune` output folder (also of a study still running or killed).
    Report(report::ReportArgs),
    /// List, show or export (JSON) the studies of a store — a SQLite study folder or a
    /// PostgreSQL database — without running a worker.
    Study(study::StudyArgs),
}

/// Where datasets are looked for.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Directory holding the datasets (default: $TUNEFORGE_DATA, else ./datasets).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where inflated copies of .gz files are kept (default: $TUNEFORGE_CACHE, else
    /// $XDG_CACHE_HOME/tuneforge, else ~/.cache/tuneforge).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The data directories (`--data-dir`, else `$TUNEFORGE_DATA`, else `./datasets`), with
    /// the built-in datasets written into the cache's `builtin/` when none has them.
    pub fn dirs(&self) -> tuneforge_loader::DataDirs {
        tuneforge_loader::DataDirs::resolve(self.data_dir.as_deref()).builtin_in(self.cache().dir().join("builtin"))
    }

    /// The cache of inflated `.gz` files (`--cache-dir`, else the default location).
    pub fn cache(&self) -> tuneforge_loader::GzCache {
        self.cache_dir
            .clone()
            .map(tuneforge_loader::GzCache::new)
            .unwrap_or_else(tuneforge_loader::GzCache::default_location)
    }
}

/// Options of text datasets (`jsonl:PATH`, or `csv:PATH` with `--text COLUMN`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TextArgs {
    /// The JSON field or CSV column holding the text (jsonl: default "text"); with
    /// csv:PATH it makes the file a text dataset.
    #[arg(long = "text-field", visible_alias = "text", value_name = "FIELD")]
    pub text_field: Option<String>,
    /// Keep e-mail headers (the whole message) instead of stripping them to the body.
    #[arg(long)]
    pub keep_headers: bool,
}

impl TextArgs {
    /// `data` with these options applied ([`DataSource::with_text`](tuneforge_agent::data::DataSource::with_text)).
    pub fn apply(&self, data: tuneforge_agent::data::DataSource) -> anyhow::Result<tuneforge_agent::data::DataSource> {
        Ok(data.with_text(self.text_field.as_deref(), self.keep_headers)?)
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            errln!("{}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `Error: ` and the error, then its causes as anyhow writes them, less those the message
/// before already ends with (our library errors say their cause in their own message,
/// `PATH: No such file or directory`, and give it as their source too).
fn error_text(e: &anyhow::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut last = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !last.ends_with(&text) {
            causes.push(text.clone());
        }
        last = text;
    }
    let mut out = format!("Error: {e}");
    match causes.len() {
        0 => {}
        1 => out.push_str(&format!("\n\nCaused by:\n    {}", causes[0])),
        _ => {
            out.push_str("\n\nCaused by:");
            for (i, c) in causes.iter().enumerate() {
                out.push_str(&format!("\n    {i}: {c}"));
            }
        }
    }
    out
}

fn run() -> anyhow::Result<()> {
    // The monitor's anomaly and rollback warnings are already printed by its progress view
    // (`train`), so by default only its errors go through tracing. No colour codes in logs.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tuneforge_monitor=error")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Keep freed tensors in the heap (see tuneforge::tune_allocator; measured in docs/benchmarks.md).
    tuneforge::tune_allocator();
    // candle looks its thread count up on every matmul, and without RAYON_NUM_THREADS that
    // lookup reads the CPU list from /proc each time: fixed here, once, at the count candle
    // would find (physical cores), which rayon's pool then has too.
    let threads = match &cli.command {
        Command::BenchStep(args) => args.threads,
        _ => None,
    };
    if let Some(n) =
        threads.or_else(|| std::env::var_os("RAYON_NUM_THREADS").is_none().then(candle_core::utils::get_num_threads))
    {
        // SAFETY: no other thread exists yet (nothing has started candle's or rayon's pools).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    // candle's element-wise ops run on a pool of its own whose threads spin 25,000 rounds
    // after each op before they sleep, on the cores our kernels' rayon threads need next:
    // 100 rounds (A/B in docs/benchmarks.md: mlp:256 at batch 512 trains 1.04x as fast).
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: as above, still no other thread.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100") };
    }
    match cli.command {
        Command::Datasets(args) => datasets::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Tune(args) => tune::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::BenchStep(args) => bench::run(&args),
        Command::GpuCheck(args) => gpu::check(&args),
        Command::GpuBundle(args) => gpu::bundle(&args),
        Command::BenchTune(args) => bench_tune::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Study(args) => study::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use anyhow::Context;

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)")
    }

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let io = tuneforge_loader::Error::Io { path: "/x.idx".into(), source: not_found() };
        assert_eq!(error_text(&io.into()), "Error: /x.idx: No such file or directory (os error 2)");
        // A context over it keeps it as the cause.
        let e = Err::<(), _>(tuneforge_loader::Error::Io { path: "/x.idx".into(), source: not_found() })
            .context("cannot read the model")
            .unwrap_err();
        assert_eq!(
            error_text(&e),
            "Error: cannot read the model\n\nCaused by:\n    /x.idx: No such file or directory (os error 2)"
        );
        // Causes not said before are kept, numbered as anyhow does.
        let e = Err::<(), _>(not_found()).context("reading /y").context("cannot predict").unwrap_err();
        assert_eq!(
            error_text(&e),
            "Error: cannot predict\n\nCaused by:\n    0: reading /y\n    1: No such file or directory (os error 2)"
        );
        let e = Err::<(), _>(not_found()).context("reading /y").unwrap_err();
        assert_eq!(error_text(&e), "Error: reading /y\n\nCaused by:\n    No such file or directory (os error 2)");
    }
}
