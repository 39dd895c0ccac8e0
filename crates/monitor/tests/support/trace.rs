//! The clean-trace fixture format: one JSON object per training step.
#![allow(dead_code, missing_docs)]

use serde::{Deserialize, Serialize};

/// One step of a recorded training run (f32: the fixture stays small).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceRow {
    pub step: u64,
    pub epoch: u32,
    pub loss: f32,
    pub grad_norm: f32,
    pub samples: u32,
    pub seconds: f32,
}
