//! OpenTelemetry export (metrics and spans over OTLP), behind the `otlp` cargo feature.
//!
//! [`Telemetry`] has the same shape with and without the feature: `enabled.rs` holds the
//! OTLP exporter, `disabled.rs` an uninhabited stand-in, so without `otlp` a `Telemetry` is
//! zero-sized, every call on it compiles to nothing, and no OpenTelemetry crate is built.
//!
//! With `otlp`, the exporter speaks OTLP http/protobuf through a blocking `reqwest` client:
//! the SDK's batch span processor and periodic metric reader run on their own threads, and
//! this crate neither needs nor creates a tokio runtime. Create a `Telemetry` outside async
//! code (or in `spawn_blocking`).
//!
//! What is exported (instrument names; every data point carries the attribute `run`):
//!
//! | name | kind | unit |
//! |---|---|---|
//! | `tuneforge.steps` | counter | `{step}` |
//! | `tuneforge.samples` | counter | `{sample}` |
//! | `tuneforge.anomalies` | counter, attribute `kind` | `{anomaly}` |
//! | `tuneforge.rollbacks` | counter | `{rollback}` |
//! | `tuneforge.step.duration` | histogram | `s` |
//! | `tuneforge.evaluation.duration` | histogram | `s` |
//! | `tuneforge.loss` | gauge (finite losses only) | `1` |
//! | `tuneforge.samples_per_second` | gauge | `{sample}/s` |
//! | `tuneforge.learning_rate` | gauge | `1` |
//! | `tuneforge.batch_size` | gauge | `{sample}` |
//! | `tuneforge.grad_norm` | gauge | `1` |
//! | `tuneforge.eval.accuracy`, `tuneforge.eval.macro_f1` | gauges | `1` |
//! | `process.memory.rss` | observable gauge | `By` |
//!
//! Spans: `tuneforge.run` (root), `tuneforge.epoch` (child of the run),
//! `tuneforge.evaluation` and `tuneforge.decision` (children of the current epoch, else of the
//! run). Anomalies and rollbacks are span events on the current epoch span.

use std::time::Duration;

use crate::detect::Anomaly;
use crate::error::Result;
use crate::event::{Decision, EpochEnd, Evaluation, Rollback, RunEnd, RunStart, StepRecord};

#[cfg(feature = "otlp")]
mod enabled;
#[cfg(feature = "otlp")]
use enabled as imp;

#[cfg(not(feature = "otlp"))]
mod disabled;
#[cfg(not(feature = "otlp"))]
use disabled as imp;

/// Where and how to export, configured the standard OpenTelemetry way.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// Base URL of the OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318`; `/v1/traces` and
    /// `/v1/metrics` are appended.
    pub endpoint: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// How often metrics are pushed while the run goes on (they are always pushed at
    /// [`Telemetry::flush`] and [`Telemetry::shutdown`]).
    pub export_interval: Duration,
    /// Timeout of one export request.
    pub timeout: Duration,
}

impl OtlpConfig {
    /// `endpoint` with defaults: service `tuneforge`, metrics every 10 s, 10 s timeout.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            service_name: "tuneforge".into(),
            export_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        }
    }

    /// From the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (required: `None` without
    /// it, or when `OTEL_SDK_DISABLED=true`) and `OTEL_SERVICE_NAME` (default `tuneforge`).
    /// Only the http/protobuf protocol is supported: an `OTEL_EXPORTER_OTLP_PROTOCOL` other
    /// than `http/protobuf` is logged as a warning and ignored.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        let mut cfg = OtlpConfig::new(var("OTEL_EXPORTER_OTLP_ENDPOINT")?);
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            cfg.service_name = name;
        }
        if let Some(p) = var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && p != "http/protobuf"
        {
            tracing::warn!(protocol = %p, "only OTLP http/protobuf is supported; using it");
        }
        Some(cfg)
    }
}

/// The OpenTelemetry side of a run: counters, histograms, gauges and spans. Disabled (a no-op)
/// unless built with `otlp` and created by [`Telemetry::otlp`] or [`Telemetry::from_env`].
#[derive(Debug, Default)]
pub struct Telemetry {
    inner: Option<imp::Inner>,
}

impl Telemetry {
    /// A telemetry that exports nothing.
    pub fn disabled() -> Self {
        Telemetry { inner: None }
    }

    /// Exports to `config.endpoint` when built with `otlp`. Without the feature this logs a
    /// warning and returns a disabled telemetry (asking for export is not an error in a build
    /// that cannot do it).
    pub fn otlp(config: &OtlpConfig, run: &str) -> Result<Self> {
        Ok(Telemetry { inner: imp::Inner::new(config, run)? })
    }

    /// [`Telemetry::otlp`] with [`OtlpConfig::from_env`]; disabled when the variables are not
    /// set.
    pub fn from_env(run: &str) -> Result<Self> {
        match OtlpConfig::from_env() {
            Some(cfg) => Self::otlp(&cfg, run),
            None => Ok(Self::disabled()),
        }
    }

    /// Whether anything is exported.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Opens the run span.
    pub fn run_start(&mut self, e: &RunStart) {
        if let Some(i) = &mut self.inner {
            i.run_start(e);
        }
    }

    /// Opens an epoch span (closing an epoch span still open).
    pub fn epoch_start(&mut self, epoch: u32) {
        if let Some(i) = &mut self.inner {
            i.epoch_start(epoch);
        }
    }

    /// Closes the epoch span.
    pub fn epoch_end(&mut self, e: &EpochEnd) {
        if let Some(i) = &mut self.inner {
            i.epoch_end(e);
        }
    }

    /// Records one step's metrics.
    #[inline]
    pub fn step(&mut self, r: &StepRecord) {
        if let Some(i) = &mut self.inner {
            i.step(r);
        }
    }

    /// Records the GPU's memory (used and free gauges).
    pub fn gpu_memory(&mut self, m: &crate::GpuMemory) {
        if let Some(i) = &mut self.inner {
            i.gpu_memory(m);
        }
    }

    /// Counts an anomaly and adds it as an event to the current span.
    pub fn anomaly(&mut self, a: &Anomaly) {
        if let Some(i) = &mut self.inner {
            i.anomaly(a);
        }
    }

    /// Records an evaluation span (back-dated by its duration) and the metric gauges.
    pub fn evaluation(&mut self, e: &Evaluation) {
        if let Some(i) = &mut self.inner {
            i.evaluation(e);
        }
    }

    /// Records an agent-decision span.
    pub fn decision(&mut self, d: &Decision) {
        if let Some(i) = &mut self.inner {
            i.decision(d);
        }
    }

    /// Counts a rollback and adds it as an event to the current span.
    pub fn rollback(&mut self, r: &Rollback) {
        if let Some(i) = &mut self.inner {
            i.rollback(r);
        }
    }

    /// Closes the epoch and run spans.
    pub fn run_end(&mut self, e: &RunEnd) {
        if let Some(i) = &mut self.inner {
            i.run_end(e);
        }
    }

    /// Pushes everything recorded so far (blocking).
    pub fn flush(&self) -> Result<()> {
        match &self.inner {
            Some(i) => i.flush(),
            None => Ok(()),
        }
    }

    /// Flushes and stops the exporters (blocking); later calls record nothing. Errors if the
    /// receiver rejected or could not be reached with the data.
    pub fn shutdown(&mut self) -> Result<()> {
        match self.inner.take() {
            Some(i) => i.shutdown(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn config_from_the_standard_variables() {
        assert_eq!(OtlpConfig::from_vars(lookup(&[])), None);
        assert_eq!(OtlpConfig::from_vars(lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), None);
        let cfg = OtlpConfig::from_vars(lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318")])).unwrap();
        assert_eq!(cfg, OtlpConfig::new("http://h:4318"));
        assert_eq!(cfg.service_name, "tuneforge");
        let cfg = OtlpConfig::from_vars(lookup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            ("OTEL_SERVICE_NAME", "trainer-7"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .unwrap();
        assert_eq!(cfg.service_name, "trainer-7");
        let off = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"), ("OTEL_SDK_DISABLED", "TRUE")];
        assert_eq!(OtlpConfig::from_vars(lookup(&off)), None);
    }

    #[test]
    fn disabled_telemetry_is_a_no_op() {
        let mut t = Telemetry::disabled();
        assert!(!t.is_enabled());
        t.epoch_start(0);
        t.flush().unwrap();
        t.shutdown().unwrap();
        #[cfg(not(feature = "otlp"))]
        assert_eq!(std::mem::size_of::<Telemetry>(), 0);
    }
}
