//! The closed set of events a run writes to its JSONL log (and sends to OpenTelemetry).
//!
//! Every event is one JSON object on one line, tagged by `"event"`. Floats that may be NaN or
//! infinite (a loss that blew up) are written as the strings `"NaN"`, `"inf"` and `"-inf"`,
//! since JSON has no such numbers; finite floats are plain numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::Anomaly;

/// One entry of a run's event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run began.
    RunStart(RunStart),
    /// The run's events continue after another run of the same process wrote to the log
    /// (time-sliced runs, as in population-based training, share one file): every event up
    /// to the next `run_start` or `run_resume` belongs to this run.
    RunResume(RunResume),
    /// One optimiser step: the facts the trainer gave plus the derived figures.
    Step(StepRecord),
    /// Rolling figures (latency quantiles, loss slope, memory), every
    /// [`MonitorConfig::summary_every`](crate::MonitorConfig::summary_every) steps and at epoch ends.
    Summary(Figures),
    /// An epoch ended.
    Epoch(EpochEnd),
    /// A validation pass finished.
    Evaluation(Evaluation),
    /// A detector fired.
    Anomaly(Anomaly),
    /// The trainer restored an earlier snapshot and changed the learning rate.
    Rollback(Rollback),
    /// The agent changed a hyper-parameter (or decided not to).
    Decision(Decision),
    /// The trainer wrote a checkpoint (the log is fsynced with it).
    Checkpoint(Checkpoint),
    /// The run ended.
    RunEnd(RunEnd),
}

impl Event {
    /// The step the event belongs to (`None` for [`Event::RunStart`]).
    pub fn step(&self) -> Option<u64> {
        match self {
            Event::RunStart(_) => None,
            Event::RunResume(e) => Some(e.step),
            Event::Step(e) => Some(e.step),
            Event::Summary(e) => Some(e.step),
            Event::Epoch(e) => Some(e.step),
            Event::Evaluation(e) => Some(e.step),
            Event::Anomaly(e) => Some(e.step),
            Event::Rollback(e) => Some(e.step),
            Event::Decision(e) => Some(e.step),
            Event::Checkpoint(e) => Some(e.step),
            Event::RunEnd(e) => Some(e.step),
        }
    }
}

/// What the trainer knows about one optimiser step. Give one to
/// [`Monitor::step`](crate::Monitor::step) (or [`Recorder::record`](crate::Recorder::record))
/// after every step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepFacts {
    /// Global step number, increasing by one per optimiser step over the whole run (it keeps
    /// increasing across a rollback: it counts work done, not the weights' age).
    pub step: u64,
    /// 0-based epoch.
    pub epoch: u32,
    /// Training loss of the batch (may be NaN or infinite: that is what the detectors are for).
    #[serde(with = "float")]
    pub loss: f64,
    /// Samples (rows) processed by this step, normally the batch size.
    pub samples: u64,
    /// Wall time of the step in seconds (data, forward, backward, update).
    #[serde(with = "float")]
    pub seconds: f64,
    /// Global gradient norm before clipping, when the trainer computes it.
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Learning rate used by this step.
    #[serde(with = "float")]
    pub lr: f64,
    /// Batch size in force.
    pub batch_size: u32,
    /// Widths of the hidden layers in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<u32>,
    /// GPU time of the step in seconds, between CUDA events recorded on the device's stream
    /// around it (see `GpuProbe`, the `cuda` feature); `None` on the CPU.
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub device_seconds: Option<f64>,
}

/// A logged step: the trainer's facts plus the figures derived when it was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// See [`StepFacts::step`].
    pub step: u64,
    /// See [`StepFacts::epoch`].
    pub epoch: u32,
    /// See [`StepFacts::loss`].
    #[serde(with = "float")]
    pub loss: f64,
    /// See [`StepFacts::samples`].
    pub samples: u64,
    /// See [`StepFacts::seconds`].
    #[serde(with = "float")]
    pub seconds: f64,
    /// See [`StepFacts::grad_norm`].
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// See [`StepFacts::lr`].
    #[serde(with = "float")]
    pub lr: f64,
    /// See [`StepFacts::batch_size`].
    pub batch_size: u32,
    /// See [`StepFacts::widths`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<u32>,
    /// See [`StepFacts::device_seconds`].
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub device_seconds: Option<f64>,
    /// `samples / seconds` of this step.
    #[serde(with = "float")]
    pub samples_per_s: f64,
    /// Exponentially weighted moving average of `samples_per_s`.
    #[serde(with = "float")]
    pub samples_per_s_ewma: f64,
    /// Exponentially weighted moving average of the finite losses so far.
    #[serde(with = "float")]
    pub loss_ewma: f64,
}

/// Rolling figures of a run at one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The step they were taken at.
    pub step: u64,
    /// Steps recorded so far.
    pub steps: u64,
    /// Samples recorded so far.
    pub samples: u64,
    /// Samples/s of the last step.
    #[serde(with = "float")]
    pub samples_per_s: f64,
    /// EWMA of samples/s.
    #[serde(with = "float")]
    pub samples_per_s_ewma: f64,
    /// Median step wall time (s) over the whole run.
    #[serde(with = "float")]
    pub latency_p50_s: f64,
    /// 99th-percentile step wall time (s) over the whole run.
    #[serde(with = "float")]
    pub latency_p99_s: f64,
    /// Median step wall time (s) over the current window (since the last summary).
    #[serde(with = "float")]
    pub window_p50_s: f64,
    /// 99th-percentile step wall time (s) over the current window.
    #[serde(with = "float")]
    pub window_p99_s: f64,
    /// EWMA of the finite losses.
    #[serde(with = "float")]
    pub loss_ewma: f64,
    /// Least-squares slope of the loss per step over the last
    /// [`RecorderConfig::slope_window`](crate::RecorderConfig::slope_window) finite losses.
    #[serde(with = "float")]
    pub loss_slope: f64,
    /// Resident set size of this process in bytes (Linux; `None` elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// GPU memory in use in bytes, when the trainer reported it
    /// ([`Recorder::set_gpu_memory`](crate::Recorder::set_gpu_memory)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_bytes: Option<u64>,
    /// The GPU's total memory in bytes, when the trainer reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_total_bytes: Option<u64>,
    /// Median GPU time of a step (s) over the run, when steps report `device_seconds`.
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub device_p50_s: Option<f64>,
}

/// The first event of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    /// Run name or id.
    pub run: String,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Free-form description of the run (dataset, model spec, seed, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// End of an epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochEnd {
    /// The epoch that ended (0-based).
    pub epoch: u32,
    /// Last step of the epoch.
    pub step: u64,
    /// Samples processed in the epoch.
    pub samples: u64,
    /// Wall time of the epoch in seconds.
    #[serde(with = "float")]
    pub seconds: f64,
}

/// Result of a validation pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Step after which it was computed.
    pub step: u64,
    /// Epoch it belongs to.
    pub epoch: u32,
    /// Accuracy in `[0, 1]`.
    #[serde(with = "float")]
    pub accuracy: f64,
    /// Macro-averaged F1 in `[0, 1]`.
    #[serde(with = "float")]
    pub macro_f1: f64,
    /// Validation loss, when computed.
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Wall time of the pass in seconds.
    #[serde(with = "float")]
    pub seconds: f64,
}

/// The trainer rolled back to a snapshot and scaled the learning rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    /// Step at which the anomaly was seen.
    pub step: u64,
    /// Step of the snapshot restored.
    pub to_step: u64,
    /// Learning rate before.
    #[serde(with = "float")]
    pub lr_before: f64,
    /// Learning rate after.
    #[serde(with = "float")]
    pub lr_after: f64,
    /// The anomaly that caused it.
    pub cause: crate::AnomalyKind,
}

/// A run takes the log back after another run wrote to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResume {
    /// The run's name, as in its [`RunStart`].
    pub run: String,
    /// The step the run is at (that of the step event that follows, if one does).
    pub step: u64,
}

/// A decision of the tuning agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Step at which it was taken.
    pub step: u64,
    /// The action, as the agent names it (e.g. `"lr*0.5"`).
    pub action: String,
    /// Learning rate after the decision.
    #[serde(with = "float")]
    pub lr: f64,
    /// Batch size after the decision.
    pub batch_size: u32,
    /// Hidden widths after the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<u32>,
    /// Reward observed for the previous decision, if any.
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
}

/// A checkpoint written by the trainer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Step of the weights saved.
    pub step: u64,
    /// Where they were written, if on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran to its end.
    #[default]
    Completed,
    /// It was stopped early (budget, pruning, user).
    Stopped,
    /// It gave up: recovery failed or an error occurred.
    Aborted,
}

/// The last event of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    /// Last step.
    pub step: u64,
    /// Wall time of the run in seconds.
    #[serde(with = "float")]
    pub seconds: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// Anomalies seen.
    pub anomalies: u64,
    /// Rollbacks done.
    pub rollbacks: u64,
}

/// serde for an `f64` that may be NaN or infinite: finite values are numbers, the others the
/// strings `"NaN"`, `"inf"`, `"-inf"`.
pub(crate) mod float {
    use serde::{Deserializer, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(FloatVisitor)
    }

    pub(crate) struct FloatVisitor;

    impl de::Visitor<'_> for FloatVisitor {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number or one of \"NaN\", \"inf\", \"-inf\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
            }
        }
    }
}

/// [`float`] for `Option<f64>`.
pub(crate) mod opt_float {
    use serde::{Deserializer, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::float::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        struct OptVisitor;
        impl<'de> de::Visitor<'de> for OptVisitor {
            type Value = Option<f64>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("null, a number or one of \"NaN\", \"inf\", \"-inf\"")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                super::float::deserialize(d).map(Some)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Some(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Some(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                de::Visitor::visit_str(super::float::FloatVisitor, v).map(Some)
            }
        }
        d.deserialize_option(OptVisitor)
    }
}
