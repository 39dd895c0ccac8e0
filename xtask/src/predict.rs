//! `cargo xtask predict`: a trained or tuned model applied to new rows.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use tuneforge_agent::predict::{BATCH, Input, PredictionWriter, Predictor, RowChunks};
use tuneforge_eval::ConfusionMatrix;

use crate::DataArgs;
use crate::train::parse_device;

/// Predict the class of every row of an input with a model that `train` or `tune` wrote.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// The folder `train` or `tune` wrote (--out): model.safetensors, predictor.json and, for
    /// CSV and text data, prep.json.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The rows: csv:PATH (table rows, or texts in the training's text column), jsonl:PATH
    /// (texts), idx:PATH (an IDX image file), or a dataset by name (digits, biopsy,
    /// fashion-mnist-test). With the training's label column or field the rows are labelled,
    /// and accuracy and macro-F1 are printed.
    #[arg(long)]
    pub dataset: String,
    /// Where to write the predictions CSV (index[,label],predicted[,p_CLASS...]), through a
    /// temporary file renamed over FILE once whole (a failed run leaves FILE as it was);
    /// default: standard output, as each chunk of rows is predicted.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Add one column per class with its probability (softmax of the model's outputs).
    #[arg(long)]
    pub probabilities: bool,
    /// With labelled rows, also print the per-class precision, recall, F1 and support
    /// (scikit-learn's classification_report layout) and the confusion matrix.
    #[arg(long)]
    pub report: bool,
    /// cpu, or cuda[:N] (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub data: DataArgs,
}

/// The most rows read, predicted and written at a time: an input larger than memory (a CSV
/// table, texts, images) is predicted in constant memory.
pub const CHUNK_ROWS: usize = 64 * BATCH;

/// The most model inputs (f32) held per chunk, 16 MiB: wide rows (images: 784 pixels) come
/// fewer at a time than narrow ones.
pub const CHUNK_VALUES: usize = 1 << 22;

/// Rows per chunk for a model reading `width` values a row: about [`CHUNK_VALUES`] of them,
/// at most [`CHUNK_ROWS`], and a multiple of the forward pass's [`BATCH`], so that the
/// probabilities written are those of one read, bit for bit.
pub fn chunk_rows(width: usize) -> usize {
    (CHUNK_VALUES / width.max(1)).clamp(BATCH, CHUNK_ROWS) / BATCH * BATCH
}

/// What a prediction run saw.
struct Tally {
    rows: usize,
    /// Labelled rows' confusion matrix.
    confusion: Option<ConfusionMatrix>,
}

pub fn run(args: &PredictArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let dirs = args.data.dirs();
    let cache = args.data.cache();
    let predictor = Predictor::load(&args.model, &device)?;
    let input = Input::parse(&args.dataset)?;
    let width = predictor.model().spec().input.iter().product();
    let chunks = predictor.read_chunks(&input, &dirs, &cache, chunk_rows(width))?;
    let tally = match &args.out {
        Some(path) => {
            // Written beside FILE and renamed over it once whole: a failed run leaves FILE as it was.
            let tmp = tuneforge_loader::atomic::temp_beside(path)
                .with_context(|| format!("--out {}: cannot create a file beside it", path.display()))?;
            let (tally, out) = predict_into(&predictor, chunks, BufWriter::new(tmp), args.probabilities)?;
            let tmp =
                out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", path.display()))?;
            tmp.as_file().sync_all().with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
            tally
        }
        None => match predict_into(&predictor, chunks, std::io::stdout().lock(), args.probabilities) {
            Ok((tally, _)) => tally,
            // A reader that stops early (`| head`) is not an error.
            Err(e)
                if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        },
    };
    let mut line = format!(
        "{} rows of {input} predicted with {} (trained on {})",
        tally.rows,
        args.model.display(),
        predictor.manifest().trained_on
    );
    let mut details = String::new();
    if let Some(cm) = &tally.confusion {
        let report = cm.report();
        line += &format!(": accuracy {:.4}, macro-F1 {:.4}", report.accuracy, report.macro_avg.f1);
        if args.report {
            details = format!(
                "\n{}\n{}",
                report.to_text_with_names(predictor.classes(), 4)?,
                confusion_text(cm, predictor.classes())
            );
        }
    } else if args.report {
        details = match predictor.manifest().label.as_deref() {
            Some(label) => format!("no report: the rows have no labels (no {label:?} column or field)\n"),
            None => "no report: the rows have no labels\n".into(),
        };
    }
    if let Some(path) = &args.out {
        line += &format!("; wrote {}", path.display());
    }
    errln!("{line}");
    crate::err_text(format_args!("{details}"));
    Ok(())
}

/// Predicts each chunk and writes it to `out` before reading the next; returns what it saw
/// and `out` (flushed).
fn predict_into<W: Write>(
    predictor: &Predictor,
    chunks: RowChunks<'_>,
    out: W,
    probabilities: bool,
) -> anyhow::Result<(Tally, W)> {
    let mut writer = PredictionWriter::new(out, predictor.classes(), probabilities);
    let mut tally = Tally { rows: 0, confusion: None };
    for rows in chunks {
        let rows = rows?;
        let predictions = predictor.predict(&rows)?;
        writer.write(&rows, &predictions)?;
        tally.rows += rows.len();
        if let Some(labels) = &rows.labels {
            let cm = match &mut tally.confusion {
                Some(cm) => cm,
                None => tally.confusion.insert(ConfusionMatrix::new(predictor.classes().len())?),
            };
            cm.update(labels, &predictions.predicted)?;
        }
    }
    let mut out = writer.finish()?;
    out.flush()?;
    Ok((tally, out))
}

/// The confusion matrix as text: one row per true class (named), one column per predicted
/// class (numbered as the rows are).
fn confusion_text(cm: &ConfusionMatrix, classes: &[String]) -> String {
    use std::fmt::Write as _;
    let k = classes.len();
    let name_w = classes.iter().map(|c| c.chars().count() + 4).max().unwrap_or(0).max("true \\ predicted".len());
    let col_w =
        (0..k).flat_map(|t| cm.row(t as u32).unwrap_or(&[]).iter().map(|n| n.to_string().len())).max().unwrap_or(1);
    let col_w = col_w.max(k.to_string().len() + 1).max(3);
    let mut out = format!("{:<name_w$}", "true \\ predicted");
    for c in 0..k {
        let _ = write!(out, " {:>col_w$}", format!("{c}"));
    }
    out.push('\n');
    for (t, name) in classes.iter().enumerate() {
        // Classes named by their number are not named twice.
        let label = if *name == t.to_string() { format!("{t:>2}") } else { format!("{t:>2} {name}") };
        let _ = write!(out, "{label:<name_w$}");
        for n in cm.row(t as u32).unwrap_or(&[]) {
            let _ = write!(out, " {n:>col_w$}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_batches_within_the_bounds() {
        for width in [0, 1, 64, 784, 4_097, 1 << 20, usize::MAX] {
            let rows = chunk_rows(width);
            assert!(rows.is_multiple_of(BATCH) && (BATCH..=CHUNK_ROWS).contains(&rows), "{width}: {rows}");
            assert!(rows == BATCH || rows * width.max(1) <= CHUNK_VALUES, "{width}: {rows}");
            assert!(rows == CHUNK_ROWS || (rows + BATCH).saturating_mul(width) > CHUNK_VALUES, "{width}: {rows}");
        }
    }
}
