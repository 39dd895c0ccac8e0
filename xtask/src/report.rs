//! `cargo xtask report DIR`: the HTML report of a study or bench-tune folder.

use std::path::PathBuf;

use anyhow::Context as _;

/// `cargo xtask report` arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A `cargo xtask tune --out` or `bench-tune --out` folder; report.html is written into it.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let written = tuneforge_report::write_report(&args.dir)
        .with_context(|| format!("cannot write the report of {}", args.dir.display()))?;
    let incomplete = match written.incomplete {
        0 => String::new(),
        n => format!(", {n} of them incomplete (running or killed)"),
    };
    println!(
        "wrote {} ({:.1} KiB, {} charts, {} {}{incomplete})",
        written.path.display(),
        written.bytes as f64 / 1024.0,
        written.charts,
        written.studies,
        if written.studies == 1 { "study" } else { "studies" },
    );
    Ok(())
}
