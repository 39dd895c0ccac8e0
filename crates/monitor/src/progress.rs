//! A live progress view for a terminal, plain lines elsewhere.

use std::io::{IsTerminal as _, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::event::{EpochEnd, Evaluation, StepRecord};

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    /// A bar when stderr is a terminal and `CI` is not set, else plain lines. The default.
    #[default]
    Auto,
    /// Always the bar (indicatif hides it when stderr is not a terminal).
    Bar,
    /// Plain lines on stderr: one every 10 s and one per epoch and evaluation.
    Plain,
    /// Nothing.
    Off,
}

impl ProgressMode {
    /// [`ProgressMode::Auto`] resolved against the environment.
    pub fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto => {
                if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
                    ProgressMode::Bar
                } else {
                    ProgressMode::Plain
                }
            }
            other => other,
        }
    }
}

enum View {
    Bar(ProgressBar),
    Plain(Box<dyn Write + Send>),
    Off,
}

/// The view: epoch and step, loss, validation F1, samples/s, learning rate, batch size and
/// widths. Redraws at most every 100 ms (bar) or every `plain_every` (lines), so a step costs
/// a clock read when nothing is drawn.
pub struct Progress {
    view: View,
    total_steps: Option<u64>,
    every: Duration,
    last_draw: Option<Instant>,
    val_f1: Option<f64>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = match self.view {
            View::Bar(_) => "bar",
            View::Plain(_) => "plain",
            View::Off => "off",
        };
        f.debug_struct("Progress").field("view", &view).field("total_steps", &self.total_steps).finish()
    }
}

impl Progress {
    /// A view in `mode` for a run of `total_steps` steps (unknown: `None`).
    pub fn new(mode: ProgressMode, total_steps: Option<u64>) -> Self {
        match mode.resolve() {
            ProgressMode::Bar => {
                let bar = match total_steps {
                    Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                };
                let template = if total_steps.is_some() {
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"
                } else {
                    "{elapsed_precise} {spinner} step {pos} {msg}"
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                Progress::with_view(View::Bar(bar), total_steps, Duration::from_millis(100))
            }
            ProgressMode::Plain | ProgressMode::Auto => {
                Self::plain(Box::new(std::io::stderr()), total_steps, Duration::from_secs(10))
            }
            ProgressMode::Off => Progress::with_view(View::Off, total_steps, Duration::MAX),
        }
    }

    /// Plain lines to `out`, one at most every `every` plus one per epoch and evaluation.
    pub fn plain(out: Box<dyn Write + Send>, total_steps: Option<u64>, every: Duration) -> Self {
        Progress::with_view(View::Plain(out), total_steps, every)
    }

    fn with_view(view: View, total_steps: Option<u64>, every: Duration) -> Self {
        Progress { view, total_steps, every, last_draw: None, val_f1: None }
    }

    /// Changes the run's expected length (a trainer that changed its batch size mid-run has
    /// another number of steps left).
    pub fn set_total_steps(&mut self, total_steps: u64) {
        self.total_steps = Some(total_steps);
        if let View::Bar(bar) = &self.view {
            bar.set_length(total_steps);
        }
    }

    /// The run's expected length in steps, if known.
    pub fn total_steps(&self) -> Option<u64> {
        self.total_steps
    }

    /// Shows a step (rate-limited).
    pub fn step(&mut self, r: &StepRecord) {
        if matches!(self.view, View::Off) {
            return;
        }
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now.duration_since(t) < self.every) {
            if let View::Bar(bar) = &self.view {
                bar.set_position(r.step + 1);
            }
            return;
        }
        self.last_draw = Some(now);
        let line = self.describe(r);
        let position = self.position(r.step);
        match &mut self.view {
            View::Bar(bar) => {
                bar.set_position(r.step + 1);
                bar.set_message(line);
            }
            View::Plain(out) => {
                let _ = writeln!(out, "{position}{line}");
            }
            View::Off => {}
        }
    }

    /// Shows an evaluation result (kept in the line from now on).
    pub fn evaluation(&mut self, e: &Evaluation) {
        self.val_f1 = Some(e.macro_f1);
        let line = format!(
            "evaluation at step {}: accuracy {:.4} macro-F1 {:.4} ({:.2} s)",
            e.step, e.accuracy, e.macro_f1, e.seconds
        );
        self.println(&line);
    }

    /// Shows the end of an epoch.
    pub fn epoch_end(&mut self, e: &EpochEnd) {
        let sps = if e.seconds > 0.0 { e.samples as f64 / e.seconds } else { f64::NAN };
        self.println(&format!(
            "epoch {} done at step {}: {} samples in {:.1} s ({sps:.0} samples/s)",
            e.epoch, e.step, e.samples, e.seconds
        ));
    }

    /// Prints a line above the bar (or as a plain line).
    pub fn println(&mut self, line: &str) {
        match &mut self.view {
            View::Bar(bar) => bar.println(line),
            View::Plain(out) => {
                let _ = writeln!(out, "{line}");
            }
            View::Off => {}
        }
    }

    /// Leaves the bar drawn as it is.
    pub fn finish(&mut self) {
        if let View::Bar(bar) = &self.view {
            bar.abandon();
        }
        if let View::Plain(out) = &mut self.view {
            let _ = out.flush();
        }
    }

    fn position(&self, step: u64) -> String {
        match self.total_steps {
            Some(n) => format!("step {}/{n} ", step + 1),
            None => format!("step {} ", step + 1),
        }
    }

    fn describe(&self, r: &StepRecord) -> String {
        let f1 = self.val_f1.map_or_else(|| "-".to_string(), |f| format!("{f:.4}"));
        format!(
            "epoch {} loss {:.4} (ewma {:.4}) val F1 {f1} {:.0} samples/s lr {:.2e} batch {} width {:?}",
            r.epoch, r.loss, r.loss_ewma, r.samples_per_s_ewma, r.lr, r.batch_size, r.widths
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines_carry_the_figures_and_are_rate_limited() {
        let out = Shared::default();
        let mut p = Progress::plain(Box::new(out.clone()), Some(1000), Duration::from_secs(3600));
        let mut r = StepRecord {
            step: 0,
            epoch: 0,
            loss: 0.5,
            samples: 128,
            seconds: 0.01,
            grad_norm: None,
            lr: 1e-3,
            batch_size: 128,
            widths: vec![256],
            device_seconds: None,
            samples_per_s: 12800.0,
            samples_per_s_ewma: 12800.0,
            loss_ewma: 0.5,
        };
        p.step(&r);
        r.step = 1;
        p.step(&r); // within the interval: not printed
        p.evaluation(&Evaluation { step: 1, epoch: 0, accuracy: 0.8, macro_f1: 0.79, loss: None, seconds: 0.5 });
        p.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0],
            "step 1/1000 epoch 0 loss 0.5000 (ewma 0.5000) val F1 - 12800 samples/s lr 1.00e-3 batch 128 width [256]"
        );
        assert!(lines[1].contains("macro-F1 0.7900"), "{text}");
    }

    #[test]
    fn explicit_modes_resolve_to_themselves() {
        assert_eq!(ProgressMode::Plain.resolve(), ProgressMode::Plain);
        assert_eq!(ProgressMode::Off.resolve(), ProgressMode::Off);
        // Under `cargo test` stderr is captured or CI is set: never a bar.
        if std::env::var_os("CI").is_some() {
            assert_eq!(ProgressMode::Auto.resolve(), ProgressMode::Plain);
        }
    }
}
