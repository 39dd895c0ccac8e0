//! Without the `otlp` feature: an uninhabited exporter, so `Option<Inner>` is always `None`
//! and costs nothing.

use super::OtlpConfig;
use crate::detect::Anomaly;
use crate::error::Result;
use crate::event::{Decision, EpochEnd, Evaluation, Rollback, RunEnd, RunStart, StepRecord};
use crate::gpu::GpuMemory;

/// Never constructed.
#[derive(Debug)]
pub(crate) enum Inner {}

impl Inner {
    pub(crate) fn new(config: &OtlpConfig, _run: &str) -> Result<Option<Self>> {
        tracing::warn!(
            endpoint = %config.endpoint,
            "OpenTelemetry export asked for, but tuneforge-monitor was built without the `otlp` feature"
        );
        Ok(None)
    }
    pub(crate) fn run_start(&mut self, _: &RunStart) {
        match *self {}
    }
    pub(crate) fn epoch_start(&mut self, _: u32) {
        match *self {}
    }
    pub(crate) fn epoch_end(&mut self, _: &EpochEnd) {
        match *self {}
    }
    pub(crate) fn step(&mut self, _: &StepRecord) {
        match *self {}
    }
    pub(crate) fn gpu_memory(&mut self, _: &GpuMemory) {
        match *self {}
    }
    pub(crate) fn anomaly(&mut self, _: &Anomaly) {
        match *self {}
    }
    pub(crate) fn evaluation(&mut self, _: &Evaluation) {
        match *self {}
    }
    pub(crate) fn decision(&mut self, _: &Decision) {
        match *self {}
    }
    pub(crate) fn rollback(&mut self, _: &Rollback) {
        match *self {}
    }
    pub(crate) fn run_end(&mut self, _: &RunEnd) {
        match *self {}
    }
    pub(crate) fn flush(&self) -> Result<()> {
        match *self {}
    }
    pub(crate) fn shutdown(self) -> Result<()> {
        match self {}
    }
}
