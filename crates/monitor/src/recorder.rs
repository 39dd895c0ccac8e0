//! Per-step facts in, rolling figures out.

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Figures, StepFacts, StepRecord};

/// How the [`Recorder`] smooths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// EWMA weight of the newest samples/s value, in `(0, 1]`. Default 0.1 (about the last
    /// 10 steps).
    pub throughput_alpha: f64,
    /// EWMA weight of the newest loss, in `(0, 1]`. Default 0.05 (about the last 20 steps).
    pub loss_alpha: f64,
    /// Number of recent finite losses the loss slope is fitted on, ≥ 2. Default 100.
    pub slope_window: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig { throughput_alpha: 0.1, loss_alpha: 0.05, slope_window: 100 }
    }
}

impl RecorderConfig {
    /// Checks the documented ranges.
    pub fn validate(&self) -> Result<()> {
        check_alpha("recorder.throughput_alpha", self.throughput_alpha)?;
        check_alpha("recorder.loss_alpha", self.loss_alpha)?;
        if self.slope_window < 2 {
            return Err(Error::InvalidConfig {
                field: "recorder.slope_window",
                value: self.slope_window.to_string(),
                reason: "must be at least 2",
            });
        }
        Ok(())
    }
}

pub(crate) fn check_alpha(field: &'static str, alpha: f64) -> Result<()> {
    if alpha > 0.0 && alpha <= 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidConfig { field, value: alpha.to_string(), reason: "must be in (0, 1]" })
    }
}

/// An exponentially weighted moving average; `None` until the first value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ewma {
    alpha: f64,
    value: Option<f64>,
}

impl Ewma {
    /// A new average giving weight `alpha` to each newest value.
    pub fn new(alpha: f64) -> Self {
        Ewma { alpha, value: None }
    }

    /// Folds `x` in and returns the new average.
    pub fn update(&mut self, x: f64) -> f64 {
        let v = match self.value {
            None => x,
            Some(m) => m + self.alpha * (x - m),
        };
        self.value = Some(v);
        v
    }

    /// The current average.
    pub fn get(&self) -> Option<f64> {
        self.value
    }

    /// Forgets every value.
    pub fn reset(&mut self) {
        self.value = None;
    }
}

/// Step latencies are kept in microseconds from 1 µs to 1 hour, 2 significant digits (1%).
const LATENCY_MAX_US: u64 = 3_600_000_000;

fn latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds (1 ≤ low, high ≥ 2·low, 2 significant figures): cannot fail.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid constant histogram bounds")
}

/// Keeps the rolling figures of a run: samples/s (instant and EWMA), step latency quantiles
/// (HDR histograms, run-wide and per window), loss EWMA and slope, memory.
///
/// Recording a step costs a few hundred nanoseconds and allocates nothing; quantiles, slope and
/// RSS are computed only when [`Recorder::figures`] is asked.
#[derive(Debug)]
pub struct Recorder {
    config: RecorderConfig,
    steps: u64,
    samples: u64,
    last_step: u64,
    samples_per_s: f64,
    throughput: Ewma,
    loss: Ewma,
    recent_losses: VecDeque<(u64, f64)>,
    latency_run: Histogram<u64>,
    latency_window: Histogram<u64>,
    /// GPU time per step (µs), for steps that report one.
    device_latency: Histogram<u64>,
    gpu_mem_bytes: Option<u64>,
    gpu_mem_total_bytes: Option<u64>,
}

impl Recorder {
    /// A recorder with `config` (see [`RecorderConfig::validate`]).
    pub fn new(config: RecorderConfig) -> Result<Self> {
        config.validate()?;
        Ok(Recorder {
            throughput: Ewma::new(config.throughput_alpha),
            loss: Ewma::new(config.loss_alpha),
            recent_losses: VecDeque::with_capacity(config.slope_window),
            config,
            steps: 0,
            samples: 0,
            last_step: 0,
            samples_per_s: f64::NAN,
            latency_run: latency_histogram(),
            latency_window: latency_histogram(),
            device_latency: latency_histogram(),
            gpu_mem_bytes: None,
            gpu_mem_total_bytes: None,
        })
    }

    /// Takes one step's facts and returns them with the derived figures.
    pub fn record(&mut self, facts: StepFacts) -> StepRecord {
        self.steps += 1;
        self.samples += facts.samples;
        self.last_step = facts.step;
        let sps = if facts.seconds > 0.0 { facts.samples as f64 / facts.seconds } else { f64::NAN };
        self.samples_per_s = sps;
        let sps_ewma =
            if sps.is_finite() { self.throughput.update(sps) } else { self.throughput.get().unwrap_or(f64::NAN) };
        if facts.seconds.is_finite() && facts.seconds >= 0.0 {
            let us = ((facts.seconds * 1e6).round() as u64).clamp(1, LATENCY_MAX_US);
            // In range by construction: `saturating_record` cannot fail.
            self.latency_run.saturating_record(us);
            self.latency_window.saturating_record(us);
        }
        if let Some(d) = facts.device_seconds.filter(|d| d.is_finite() && *d >= 0.0) {
            self.device_latency.saturating_record(((d * 1e6).round() as u64).clamp(1, LATENCY_MAX_US));
        }
        let loss_ewma = if facts.loss.is_finite() {
            if self.recent_losses.len() == self.config.slope_window {
                self.recent_losses.pop_front();
            }
            self.recent_losses.push_back((facts.step, facts.loss));
            self.loss.update(facts.loss)
        } else {
            self.loss.get().unwrap_or(f64::NAN)
        };
        StepRecord {
            step: facts.step,
            epoch: facts.epoch,
            loss: facts.loss,
            samples: facts.samples,
            seconds: facts.seconds,
            grad_norm: facts.grad_norm,
            lr: facts.lr,
            batch_size: facts.batch_size,
            widths: facts.widths,
            device_seconds: facts.device_seconds,
            samples_per_s: sps,
            samples_per_s_ewma: sps_ewma,
            loss_ewma,
        }
    }

    /// The rolling figures now (reads `/proc/self/status` for the RSS).
    pub fn figures(&self) -> Figures {
        let q = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() { f64::NAN } else { h.value_at_quantile(q) as f64 * 1e-6 }
        };
        Figures {
            step: self.last_step,
            steps: self.steps,
            samples: self.samples,
            samples_per_s: self.samples_per_s,
            samples_per_s_ewma: self.throughput.get().unwrap_or(f64::NAN),
            latency_p50_s: q(&self.latency_run, 0.5),
            latency_p99_s: q(&self.latency_run, 0.99),
            window_p50_s: q(&self.latency_window, 0.5),
            window_p99_s: q(&self.latency_window, 0.99),
            loss_ewma: self.loss.get().unwrap_or(f64::NAN),
            loss_slope: slope(&self.recent_losses),
            rss_bytes: rss_bytes(),
            gpu_mem_bytes: self.gpu_mem_bytes,
            gpu_mem_total_bytes: self.gpu_mem_total_bytes,
            device_p50_s: (!self.device_latency.is_empty()).then(|| q(&self.device_latency, 0.5)),
        }
    }

    /// Starts a new latency window (the run-wide histogram is kept).
    pub fn end_window(&mut self) {
        self.latency_window.reset();
    }

    /// Forgets the throughput average, e.g. after the batch size changed.
    pub fn reset_throughput(&mut self) {
        self.throughput.reset();
    }

    /// GPU memory in use, as measured by the trainer (this crate does not know the device);
    /// reported in [`Figures::gpu_mem_bytes`] from now on.
    pub fn set_gpu_memory(&mut self, bytes: Option<u64>) {
        self.gpu_mem_bytes = bytes;
    }

    /// GPU memory in use and in all, as measured by the trainer (e.g. [`GpuMemory`] from
    /// `GpuProbe::memory`); reported in [`Figures`] from now on.
    ///
    /// [`GpuMemory`]: crate::GpuMemory
    pub fn set_gpu(&mut self, memory: crate::GpuMemory) {
        self.gpu_mem_bytes = Some(memory.used_bytes);
        self.gpu_mem_total_bytes = Some(memory.total_bytes);
    }

    /// Steps recorded.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Least-squares slope of `y` against `x` (NaN with fewer than two distinct points).
fn slope(points: &VecDeque<(u64, f64)>) -> f64 {
    let n = points.len();
    if n < 2 {
        return f64::NAN;
    }
    let x0 = points[0].0 as f64;
    let (mut sx, mut sy) = (0.0, 0.0);
    for &(x, y) in points {
        sx += x as f64 - x0;
        sy += y;
    }
    let (mx, my) = (sx / n as f64, sy / n as f64);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(x, y) in points {
        let dx = x as f64 - x0 - mx;
        sxy += dx * (y - my);
        sxx += dx * dx;
    }
    if sxx > 0.0 { sxy / sxx } else { f64::NAN }
}

/// Resident set size of this process in bytes: `VmRSS` of `/proc/self/status` on Linux,
/// `None` where that cannot be read.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(step: u64, loss: f64, seconds: f64) -> StepFacts {
        StepFacts { step, loss, samples: 100, seconds, lr: 0.1, batch_size: 100, ..Default::default() }
    }

    #[test]
    fn figures_follow_the_steps() {
        let mut r = Recorder::new(RecorderConfig::default()).unwrap();
        for i in 0..100u64 {
            // loss falls by 0.01 per step; step time 10 ms, every 10th 100 ms.
            let secs = if i % 10 == 9 { 0.1 } else { 0.01 };
            let rec = r.record(facts(i, 2.0 - 0.01 * i as f64, secs));
            assert!((rec.samples_per_s - 100.0 / secs).abs() < 1e-9);
        }
        let f = r.figures();
        assert_eq!(f.steps, 100);
        assert_eq!(f.samples, 10_000);
        assert!((f.loss_slope + 0.01).abs() < 1e-9, "{}", f.loss_slope);
        assert!((f.latency_p50_s - 0.01).abs() < 0.0002, "{}", f.latency_p50_s);
        assert!((f.latency_p99_s - 0.1).abs() < 0.002, "{}", f.latency_p99_s);
        assert!(f.loss_ewma > 1.01 && f.loss_ewma < 1.3, "{}", f.loss_ewma);
        if cfg!(target_os = "linux") {
            assert!(f.rss_bytes.unwrap() > 1 << 20);
        }
    }

    #[test]
    fn non_finite_loss_does_not_poison_the_averages() {
        let mut r = Recorder::new(RecorderConfig::default()).unwrap();
        r.record(facts(0, 1.0, 0.01));
        let rec = r.record(facts(1, f64::NAN, 0.0));
        assert_eq!(rec.loss_ewma, 1.0);
        assert!(rec.samples_per_s.is_nan());
        assert_eq!(rec.samples_per_s_ewma, 10_000.0);
        assert_eq!(r.figures().loss_ewma, 1.0);
    }

    #[test]
    fn window_resets_but_run_histogram_stays() {
        let mut r = Recorder::new(RecorderConfig::default()).unwrap();
        r.record(facts(0, 1.0, 0.5));
        r.end_window();
        r.record(facts(1, 1.0, 0.001));
        let f = r.figures();
        assert!((f.window_p99_s - 0.001).abs() < 1e-4);
        assert!((f.latency_p99_s - 0.5).abs() < 0.01);
    }

    #[test]
    fn gpu_figures_appear_only_when_reported() {
        let mut r = Recorder::new(RecorderConfig::default()).unwrap();
        r.record(facts(0, 1.0, 0.01));
        let f = r.figures();
        assert_eq!((f.device_p50_s, f.gpu_mem_bytes, f.gpu_mem_total_bytes), (None, None, None));
        // GPU times 1..=9 ms on steps 1..=9 (one step without): the median is 5 ms.
        for i in 1..=10u64 {
            r.record(StepFacts { device_seconds: (i < 10).then_some(i as f64 * 1e-3), ..facts(i, 1.0, 0.02) });
        }
        r.set_gpu(crate::GpuMemory::from_free_total(3 << 30, 80 << 30));
        let f = r.figures();
        // The histogram keeps 2 significant digits (as for the wall times).
        assert!((f.device_p50_s.unwrap() - 0.005).abs() < 1e-4, "{:?}", f.device_p50_s);
        assert_eq!(f.gpu_mem_bytes, Some(77 << 30));
        assert_eq!(f.gpu_mem_total_bytes, Some(80 << 30));
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Figures>(&json).unwrap(), f, "{json}");
    }

    #[test]
    fn bad_config_is_an_error() {
        let cfg = RecorderConfig { loss_alpha: 0.0, ..Default::default() };
        assert!(matches!(Recorder::new(cfg), Err(Error::InvalidConfig { field: "recorder.loss_alpha", .. })));
    }
}
