//! With the `otlp` feature: OTLP http/protobuf exporters for metrics and spans.

use std::time::{Duration, SystemTime};

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _, ObservableGauge};
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use super::OtlpConfig;
use crate::detect::Anomaly;
use crate::error::{Error, Result};
use crate::event::{Decision, EpochEnd, Evaluation, Rollback, RunEnd, RunStart, StepRecord};
use crate::gpu::GpuMemory;

const SCOPE: &str = "tuneforge-monitor";

/// Bucket bounds for step and evaluation durations, in seconds.
const DURATION_BOUNDS: [f64; 16] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

pub(crate) struct Inner {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    tracer: SdkTracer,
    run_cx: Context,
    epoch_cx: Option<Context>,
    attrs: [KeyValue; 1],
    steps: Counter<u64>,
    samples: Counter<u64>,
    anomalies: Counter<u64>,
    rollbacks: Counter<u64>,
    step_duration: Histogram<f64>,
    device_duration: Histogram<f64>,
    gpu_memory_used: Gauge<u64>,
    gpu_memory_free: Gauge<u64>,
    eval_duration: Histogram<f64>,
    loss: Gauge<f64>,
    samples_per_s: Gauge<f64>,
    lr: Gauge<f64>,
    batch_size: Gauge<u64>,
    grad_norm: Gauge<f64>,
    accuracy: Gauge<f64>,
    macro_f1: Gauge<f64>,
    _rss: ObservableGauge<u64>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpTelemetry").field("run", &self.attrs[0].value).finish_non_exhaustive()
    }
}

fn exporter_error(e: impl std::fmt::Display) -> Error {
    Error::Telemetry { stage: "exporter", message: e.to_string() }
}

impl Inner {
    pub(crate) fn new(config: &OtlpConfig, run: &str) -> Result<Option<Self>> {
        let base = config.endpoint.trim_end_matches('/');
        let spans = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(config.timeout)
            .build()
            .map_err(exporter_error)?;
        let metrics = MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{base}/v1/metrics"))
            .with_timeout(config.timeout)
            .build()
            .map_err(exporter_error)?;
        let resource = Resource::builder().with_service_name(config.service_name.clone()).build();
        let tracer_provider =
            SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
        let reader = PeriodicReader::builder(metrics).with_interval(config.export_interval).build();
        let meter_provider = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
        let tracer = tracer_provider.tracer(SCOPE);
        let meter = meter_provider.meter(SCOPE);
        let inner = Self::instruments(&meter, tracer_provider, meter_provider, tracer, run);
        tracing::debug!(endpoint = %base, service = %config.service_name, "OTLP export on");
        Ok(Some(inner))
    }

    fn instruments(
        meter: &Meter,
        tracer_provider: SdkTracerProvider,
        meter_provider: SdkMeterProvider,
        tracer: SdkTracer,
        run: &str,
    ) -> Self {
        let counter = |name: &'static str, unit: &'static str, desc: &'static str| {
            meter.u64_counter(name).with_unit(unit).with_description(desc).build()
        };
        let gauge = |name: &'static str, unit: &'static str, desc: &'static str| {
            meter.f64_gauge(name).with_unit(unit).with_description(desc).build()
        };
        let histogram = |name: &'static str, desc: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(desc)
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build()
        };
        let run_attr = KeyValue::new("run", run.to_string());
        let rss_attrs = [run_attr.clone()];
        Inner {
            steps: counter("tuneforge.steps", "{step}", "optimiser steps"),
            samples: counter("tuneforge.samples", "{sample}", "training samples processed"),
            anomalies: counter("tuneforge.anomalies", "{anomaly}", "anomalies detected, by kind"),
            rollbacks: counter("tuneforge.rollbacks", "{rollback}", "rollbacks to a snapshot"),
            step_duration: histogram("tuneforge.step.duration", "wall time of one optimiser step"),
            device_duration: histogram("tuneforge.step.device_duration", "GPU time of one optimiser step"),
            gpu_memory_used: meter
                .u64_gauge("tuneforge.gpu.memory.used")
                .with_unit("By")
                .with_description("GPU memory in use (all processes)")
                .build(),
            gpu_memory_free: meter
                .u64_gauge("tuneforge.gpu.memory.free")
                .with_unit("By")
                .with_description("GPU memory free")
                .build(),
            eval_duration: histogram("tuneforge.evaluation.duration", "wall time of one validation pass"),
            loss: gauge("tuneforge.loss", "1", "training loss of the last step"),
            samples_per_s: gauge("tuneforge.samples_per_second", "{sample}/s", "training throughput"),
            lr: gauge("tuneforge.learning_rate", "1", "learning rate in force"),
            batch_size: meter
                .u64_gauge("tuneforge.batch_size")
                .with_unit("{sample}")
                .with_description("batch size in force")
                .build(),
            grad_norm: gauge("tuneforge.grad_norm", "1", "global gradient norm of the last step"),
            accuracy: gauge("tuneforge.eval.accuracy", "1", "validation accuracy"),
            macro_f1: gauge("tuneforge.eval.macro_f1", "1", "validation macro-F1"),
            _rss: meter
                .u64_observable_gauge("process.memory.rss")
                .with_unit("By")
                .with_description("resident set size of the training process")
                .with_callback(move |obs| {
                    if let Some(rss) = crate::recorder::rss_bytes() {
                        obs.observe(rss, &rss_attrs);
                    }
                })
                .build(),
            attrs: [run_attr],
            run_cx: Context::new(),
            epoch_cx: None,
            tracer,
            tracer_provider,
            meter_provider,
        }
    }

    fn parent(&self) -> &Context {
        self.epoch_cx.as_ref().unwrap_or(&self.run_cx)
    }

    pub(crate) fn run_start(&mut self, e: &RunStart) {
        let mut span = self.tracer.start_with_context("tuneforge.run", &Context::new());
        span.set_attribute(self.attrs[0].clone());
        for (k, v) in &e.attributes {
            span.set_attribute(KeyValue::new(k.clone(), v.clone()));
        }
        self.run_cx = Context::new().with_span(span);
    }

    pub(crate) fn epoch_start(&mut self, epoch: u32) {
        if let Some(cx) = self.epoch_cx.take() {
            cx.span().end();
        }
        let mut span = self.tracer.start_with_context("tuneforge.epoch", &self.run_cx);
        span.set_attribute(KeyValue::new("epoch", i64::from(epoch)));
        self.epoch_cx = Some(self.run_cx.with_span(span));
    }

    pub(crate) fn epoch_end(&mut self, e: &EpochEnd) {
        if let Some(cx) = self.epoch_cx.take() {
            let span = cx.span();
            span.set_attribute(KeyValue::new("last_step", e.step as i64));
            span.set_attribute(KeyValue::new("samples", e.samples as i64));
            span.end();
        }
    }

    pub(crate) fn step(&mut self, r: &StepRecord) {
        let a = &self.attrs;
        self.steps.add(1, a);
        self.samples.add(r.samples, a);
        if r.seconds.is_finite() {
            self.step_duration.record(r.seconds, a);
        }
        if let Some(d) = r.device_seconds.filter(|d| d.is_finite()) {
            self.device_duration.record(d, a);
        }
        if r.loss.is_finite() {
            self.loss.record(r.loss, a);
        }
        if r.samples_per_s.is_finite() {
            self.samples_per_s.record(r.samples_per_s, a);
        }
        self.lr.record(r.lr, a);
        self.batch_size.record(u64::from(r.batch_size), a);
        if let Some(g) = r.grad_norm.filter(|g| g.is_finite()) {
            self.grad_norm.record(g, a);
        }
    }

    pub(crate) fn gpu_memory(&mut self, m: &GpuMemory) {
        self.gpu_memory_used.record(m.used_bytes, &self.attrs);
        self.gpu_memory_free.record(m.free_bytes, &self.attrs);
    }

    pub(crate) fn anomaly(&mut self, an: &Anomaly) {
        self.anomalies.add(1, &[self.attrs[0].clone(), KeyValue::new("kind", an.kind.as_str())]);
        self.parent().span().add_event(
            "anomaly",
            vec![
                KeyValue::new("kind", an.kind.as_str()),
                KeyValue::new("step", an.step as i64),
                KeyValue::new("value", an.value),
                KeyValue::new("threshold", an.threshold),
            ],
        );
    }

    pub(crate) fn evaluation(&mut self, e: &Evaluation) {
        let now = SystemTime::now();
        let start = now.checked_sub(Duration::from_secs_f64(e.seconds.max(0.0))).unwrap_or(now);
        let mut attrs = vec![
            KeyValue::new("step", e.step as i64),
            KeyValue::new("epoch", i64::from(e.epoch)),
            KeyValue::new("accuracy", e.accuracy),
            KeyValue::new("macro_f1", e.macro_f1),
        ];
        if let Some(l) = e.loss {
            attrs.push(KeyValue::new("loss", l));
        }
        let mut span = self
            .tracer
            .span_builder("tuneforge.evaluation")
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, self.parent());
        span.end_with_timestamp(now);
        let a = &self.attrs;
        self.eval_duration.record(e.seconds, a);
        self.accuracy.record(e.accuracy, a);
        self.macro_f1.record(e.macro_f1, a);
    }

    pub(crate) fn decision(&mut self, d: &Decision) {
        let mut attrs = vec![
            KeyValue::new("step", d.step as i64),
            KeyValue::new("action", d.action.clone()),
            KeyValue::new("lr", d.lr),
            KeyValue::new("batch_size", i64::from(d.batch_size)),
            KeyValue::new("widths", format!("{:?}", d.widths)),
        ];
        if let Some(r) = d.reward {
            attrs.push(KeyValue::new("reward", r));
        }
        let mut span = self
            .tracer
            .span_builder("tuneforge.decision")
            .with_attributes(attrs)
            .start_with_context(&self.tracer, self.parent());
        span.end();
    }

    pub(crate) fn rollback(&mut self, r: &Rollback) {
        self.rollbacks.add(1, &self.attrs);
        self.parent().span().add_event(
            "rollback",
            vec![
                KeyValue::new("step", r.step as i64),
                KeyValue::new("to_step", r.to_step as i64),
                KeyValue::new("lr_before", r.lr_before),
                KeyValue::new("lr_after", r.lr_after),
                KeyValue::new("cause", r.cause.as_str()),
            ],
        );
    }

    pub(crate) fn run_end(&mut self, e: &RunEnd) {
        if let Some(cx) = self.epoch_cx.take() {
            cx.span().end();
        }
        let span = self.run_cx.span();
        span.set_attribute(KeyValue::new("last_step", e.step as i64));
        span.set_attribute(KeyValue::new("anomalies", e.anomalies as i64));
        span.set_attribute(KeyValue::new("rollbacks", e.rollbacks as i64));
        span.end();
        self.run_cx = Context::new();
    }

    pub(crate) fn flush(&self) -> Result<()> {
        let traces = self.tracer_provider.force_flush();
        let metrics = self.meter_provider.force_flush();
        traces.and(metrics).map_err(|e| Error::Telemetry { stage: "flush", message: e.to_string() })
    }

    pub(crate) fn shutdown(mut self) -> Result<()> {
        if let Some(cx) = self.epoch_cx.take() {
            cx.span().end();
        }
        self.run_cx.span().end();
        let traces = self.tracer_provider.shutdown();
        let metrics = self.meter_provider.shutdown();
        traces.and(metrics).map_err(|e| Error::Telemetry { stage: "shutdown", message: e.to_string() })
    }
}
