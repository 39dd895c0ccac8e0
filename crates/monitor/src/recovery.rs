//! What a trainer should do about an anomaly: the recovery policy.
//!
//! The policy only decides; the trainer acts. On a divergence (NaN/Inf loss or gradient, an
//! exploding gradient) it answers [`Recovery::RollBack`]: restore the last good in-memory
//! snapshot (weights and optimiser state), multiply the learning rate by `lr_factor`, and go
//! on. If rollbacks keep failing (`max_consecutive` rollbacks to the same snapshot), or there
//! is no snapshot to go back to, it answers [`Recovery::Abort`].

use serde::{Deserialize, Serialize};

use crate::detect::{Anomaly, AnomalyKind};
use crate::error::{Error, Result};

/// When and how to roll back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// On or off; off, [`RecoveryPolicy::decide`] always answers `None`. Default on.
    pub enabled: bool,
    /// Learning-rate multiplier applied at each rollback, in `(0, 1]`. Default 0.5.
    pub lr_factor: f64,
    /// Also roll back on a loss spike (not only on divergence). Default off: a spike alone is
    /// often a hard batch, and the weights are still fine.
    pub on_loss_spike: bool,
    /// Rollbacks in a row to the same snapshot (no newer good snapshot in between) before the
    /// policy gives up with [`Recovery::Abort`], ≥ 1. Default 4 (the LR is then 1/16th).
    pub max_consecutive: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig { enabled: true, lr_factor: 0.5, on_loss_spike: false, max_consecutive: 4 }
    }
}

impl RecoveryConfig {
    /// Checks the documented ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr_factor > 0.0 && self.lr_factor <= 1.0) {
            return Err(Error::InvalidConfig {
                field: "recovery.lr_factor",
                value: self.lr_factor.to_string(),
                reason: "must be in (0, 1]",
            });
        }
        if self.max_consecutive == 0 {
            return Err(Error::InvalidConfig {
                field: "recovery.max_consecutive",
                value: "0".into(),
                reason: "must be >= 1",
            });
        }
        Ok(())
    }
}

/// The policy's answer to a step's anomalies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Recovery {
    /// Restore the snapshot taken at `to_step`, multiply the learning rate by `lr_factor`,
    /// then report it with [`Monitor::rolled_back`](crate::Monitor::rolled_back) and go on.
    RollBack {
        /// Step of the snapshot to restore.
        to_step: u64,
        /// Learning-rate multiplier (0.5 halves it).
        lr_factor: f64,
        /// What caused it.
        cause: AnomalyKind,
    },
    /// Stop the run: recovery failed.
    Abort {
        /// What caused it.
        cause: AnomalyKind,
        /// Why rolling back was not tried again.
        reason: AbortReason,
    },
}

/// Why the policy gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortReason {
    /// No good snapshot was ever reported ([`RecoveryPolicy::snapshot_taken`]).
    NoSnapshot,
    /// `max_consecutive` rollbacks to the same snapshot did not help.
    TooManyRollbacks,
}

/// What a [`RecoveryPolicy`] remembers ([`RecoveryPolicy::state`]), saved with a checkpoint
/// so that a resumed run rolls back (or gives up) exactly as the uninterrupted one would.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryState {
    /// Step of the last good snapshot.
    pub last_good: Option<u64>,
    /// Step of the last divergence.
    pub last_bad_step: Option<u64>,
    /// Rollbacks in a row to `last_good`.
    pub consecutive: u32,
    /// Rollbacks decided in all.
    pub total: u64,
}

/// Decides rollbacks; remembers the last good snapshot and how often it was restored.
#[derive(Clone, Debug)]
pub struct RecoveryPolicy {
    config: RecoveryConfig,
    last_good: Option<u64>,
    last_bad_step: Option<u64>,
    consecutive: u32,
    total: u64,
}

impl RecoveryPolicy {
    /// A policy with `config` (see [`RecoveryConfig::validate`]).
    pub fn new(config: RecoveryConfig) -> Result<Self> {
        config.validate()?;
        Ok(RecoveryPolicy { config, last_good: None, last_bad_step: None, consecutive: 0, total: 0 })
    }

    /// The trainer took an in-memory snapshot of weights and optimiser state after `step`.
    /// Returns whether it counts as good: a snapshot of a step that itself had a divergence is
    /// refused (the trainer should not keep it).
    pub fn snapshot_taken(&mut self, step: u64) -> bool {
        if self.last_bad_step == Some(step) {
            return false;
        }
        if self.last_good != Some(step) {
            self.consecutive = 0;
        }
        self.last_good = Some(step);
        true
    }

    /// What the policy remembers (see [`RecoveryState`]).
    pub fn state(&self) -> RecoveryState {
        RecoveryState {
            last_good: self.last_good,
            last_bad_step: self.last_bad_step,
            consecutive: self.consecutive,
            total: self.total,
        }
    }

    /// Continues from `state` (taken with [`RecoveryPolicy::state`]); the config is kept.
    pub fn restore(&mut self, state: RecoveryState) {
        self.last_good = state.last_good;
        self.last_bad_step = state.last_bad_step;
        self.consecutive = state.consecutive;
        self.total = state.total;
    }

    /// The step of the last good snapshot.
    pub fn last_good(&self) -> Option<u64> {
        self.last_good
    }

    /// Rollbacks decided so far.
    pub fn rollbacks(&self) -> u64 {
        self.total
    }

    /// The answer to one step's anomalies (`None`: carry on).
    pub fn decide(&mut self, anomalies: &[Anomaly]) -> Option<Recovery> {
        if !self.config.enabled {
            return None;
        }
        let trigger = anomalies
            .iter()
            .find(|a| a.kind.is_divergence() || (self.config.on_loss_spike && a.kind == AnomalyKind::LossSpike))?;
        self.last_bad_step = Some(trigger.step);
        let cause = trigger.kind;
        let Some(to_step) = self.last_good else {
            return Some(Recovery::Abort { cause, reason: AbortReason::NoSnapshot });
        };
        if self.consecutive >= self.config.max_consecutive {
            return Some(Recovery::Abort { cause, reason: AbortReason::TooManyRollbacks });
        }
        self.consecutive += 1;
        self.total += 1;
        Some(Recovery::RollBack { to_step, lr_factor: self.config.lr_factor, cause })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(step: u64, kind: AnomalyKind) -> Anomaly {
        Anomaly { step, kind, value: f64::NAN, threshold: f64::INFINITY }
    }

    #[test]
    fn nan_rolls_back_to_the_last_snapshot_with_half_the_lr() {
        let mut p = RecoveryPolicy::new(RecoveryConfig::default()).unwrap();
        assert!(p.snapshot_taken(0));
        assert!(p.snapshot_taken(100));
        assert_eq!(p.decide(&[]), None);
        assert_eq!(
            p.decide(&[anomaly(150, AnomalyKind::NonFiniteLoss)]),
            Some(Recovery::RollBack { to_step: 100, lr_factor: 0.5, cause: AnomalyKind::NonFiniteLoss })
        );
        assert_eq!(p.rollbacks(), 1);
    }

    #[test]
    fn spikes_and_throughput_drops_do_not_roll_back_by_default() {
        let mut p = RecoveryPolicy::new(RecoveryConfig::default()).unwrap();
        p.snapshot_taken(0);
        assert_eq!(p.decide(&[anomaly(5, AnomalyKind::LossSpike), anomaly(5, AnomalyKind::ThroughputDrop)]), None);
        let mut p = RecoveryPolicy::new(RecoveryConfig { on_loss_spike: true, ..Default::default() }).unwrap();
        p.snapshot_taken(0);
        assert!(matches!(p.decide(&[anomaly(5, AnomalyKind::LossSpike)]), Some(Recovery::RollBack { .. })));
    }

    #[test]
    fn exploding_gradient_rolls_back() {
        let mut p = RecoveryPolicy::new(RecoveryConfig::default()).unwrap();
        p.snapshot_taken(10);
        assert!(matches!(
            p.decide(&[anomaly(12, AnomalyKind::ExplodingGradient)]),
            Some(Recovery::RollBack { to_step: 10, cause: AnomalyKind::ExplodingGradient, .. })
        ));
    }

    #[test]
    fn no_snapshot_aborts() {
        let mut p = RecoveryPolicy::new(RecoveryConfig::default()).unwrap();
        assert_eq!(
            p.decide(&[anomaly(3, AnomalyKind::NonFiniteGradNorm)]),
            Some(Recovery::Abort { cause: AnomalyKind::NonFiniteGradNorm, reason: AbortReason::NoSnapshot })
        );
    }

    #[test]
    fn repeated_failure_aborts_and_a_new_snapshot_resets_the_count() {
        let mut p = RecoveryPolicy::new(RecoveryConfig { max_consecutive: 2, ..Default::default() }).unwrap();
        p.snapshot_taken(0);
        for step in [5, 6] {
            assert!(matches!(p.decide(&[anomaly(step, AnomalyKind::NonFiniteLoss)]), Some(Recovery::RollBack { .. })));
        }
        assert!(matches!(
            p.decide(&[anomaly(7, AnomalyKind::NonFiniteLoss)]),
            Some(Recovery::Abort { reason: AbortReason::TooManyRollbacks, .. })
        ));
        // A bad step's snapshot is refused; a good later one re-arms the policy.
        assert!(!p.snapshot_taken(7));
        assert!(p.snapshot_taken(20));
        assert!(matches!(
            p.decide(&[anomaly(25, AnomalyKind::NonFiniteLoss)]),
            Some(Recovery::RollBack { to_step: 20, .. })
        ));
    }

    #[test]
    fn disabled_never_decides() {
        let mut p = RecoveryPolicy::new(RecoveryConfig { enabled: false, ..Default::default() }).unwrap();
        p.snapshot_taken(0);
        assert_eq!(p.decide(&[anomaly(1, AnomalyKind::NonFiniteLoss)]), None);
        assert!(RecoveryPolicy::new(RecoveryConfig { lr_factor: 0.0, ..Default::default() }).is_err());
    }
}
