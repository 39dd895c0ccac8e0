//! `cargo xtask datasets`: what can be found, and is it intact.

use anyhow::Context;
use tuneforge_loader::{Error, Known};

use crate::DataArgs;

pub fn run(args: &DataArgs) -> anyhow::Result<()> {
    let dirs = args.dirs();
    let cache = args.cache();
    outln!("data directories: {}", dirs.dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "));
    outln!("gz cache: {}\n", cache.dir().display());
    outln!("{:<20} {:>6} {:>8} {:>7}  per-class counts / location", "dataset", "rows", "shape", "classes");
    let mut missing = Vec::new();
    for known in Known::ALL {
        let files = match dirs.locate(known) {
            Ok(files) => files,
            Err(e @ Error::NotFound { .. }) => {
                outln!("{:<20} {:>6}", known.name(), "-");
                missing.push(e);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ds = dirs.open(known, &cache).with_context(|| format!("dataset {known} is unreadable"))?;
        let shape = ds.feature_shape().iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let counts = ds.class_counts();
        outln!("{:<20} {:>6} {:>8} {:>7}  {:?}", known.name(), ds.len(), shape, ds.num_classes(), counts);
        let place = if dirs.is_builtin(&files[0]) {
            format!("built in (in no data directory; read from its copy {})", files[0].display())
        } else {
            files[0].display().to_string()
        };
        outln!("{:<20} {:>6} {:>8} {:>7}  {place}", "", "", "", "");
    }
    if !missing.is_empty() {
        outln!("\nnot found:");
        for e in &missing {
            outln!("  {e}");
        }
    }
    Ok(())
}
