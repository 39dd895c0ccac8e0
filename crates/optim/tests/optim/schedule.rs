//! Learning-rate schedules: hand-computed values, state round trips, validation.

use tuneforge_optim::{Error, Schedule, ScheduleConfig, ScheduleState};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15 * b.abs().max(1e-300)
}

#[test]
fn article_decay_matches_hand_computation_for_three_steps() {
    // α(t+1) = α(t) / (1 + β^t), t starting at 1, α(1) = α₀ = 0.1, β = 0.5:
    //   α(1) = 0.1                                   (step index 0)
    //   α(2) = α(1) / (1 + 0.5¹) = 0.1 / 1.5        = 0.0666666666666666…
    //   α(3) = α(2) / (1 + 0.5²) = 0.0666… / 1.25   = 0.0533333333333333…
    //   α(4) = α(3) / (1 + 0.5³) = 0.0533… / 1.125  = 0.0474074074074074…
    let hand = [0.1, 0.1 / 1.5, 0.1 / 1.5 / 1.25, 0.1 / 1.5 / 1.25 / 1.125];
    let decimal = [0.1, 0.066_666_666_666_666_67, 0.053_333_333_333_333_33, 0.047_407_407_407_407_41];
    let mut s = Schedule::new(ScheduleConfig::ArticleDecay { beta: 0.5 }, 0.1).unwrap();
    for (t, (h, d)) in hand.iter().zip(decimal).enumerate() {
        let lr = s.next_lr();
        assert!(close(lr, *h), "α({}) = {lr}, by hand {h}", t + 1);
        assert!((lr - d).abs() < 1e-16, "α({}) = {lr}, by hand {d}", t + 1);
        assert_eq!(s.lr_at(t as u64), lr);
    }
    assert_eq!(s.step(), 4);

    // β = 2: α(2) = α(1)/3, α(3) = α(2)/5, α(4) = α(3)/9.
    let s = Schedule::new(ScheduleConfig::ArticleDecay { beta: 2.0 }, 1.0).unwrap();
    assert!(close(s.lr_at(1), 1.0 / 3.0));
    assert!(close(s.lr_at(2), 1.0 / 15.0));
    assert!(close(s.lr_at(3), 1.0 / 135.0));
}

#[test]
fn article_decay_settles_and_terminates_for_any_beta() {
    for beta in [0.0, 0.3, 0.99, 0.9999, 1.0, 1.5, 1e10] {
        let s = Schedule::new(ScheduleConfig::ArticleDecay { beta }, 0.1).unwrap();
        let far = s.lr_at(u64::MAX);
        assert!(far.is_finite() && far >= 0.0, "beta {beta}: {far}");
        assert_eq!(s.lr_at(1_000_000), far, "beta {beta}");
    }
    let s = Schedule::new(ScheduleConfig::ArticleDecay { beta: 0.0 }, 0.1).unwrap();
    assert_eq!(s.lr_at(10), 0.1, "β = 0: 0^t = 0 for t ≥ 1, the rate never changes");
}

#[test]
fn constant_step_exponential_and_cosine_values() {
    let lr = |c: ScheduleConfig, base: f64| {
        let s = Schedule::new(c, base).unwrap();
        move |step: u64| s.lr_at(step)
    };
    let constant = lr(ScheduleConfig::Constant, 0.3);
    assert_eq!([constant(0), constant(1000)], [0.3, 0.3]);

    let step = lr(ScheduleConfig::Step { step_size: 10, gamma: 0.5 }, 0.8);
    assert_eq!([step(0), step(9), step(10), step(19), step(20), step(35)], [0.8, 0.8, 0.4, 0.4, 0.2, 0.1]);

    let exp = lr(ScheduleConfig::Exponential { gamma: 0.5 }, 1.0);
    assert_eq!([exp(0), exp(1), exp(3)], [1.0, 0.5, 0.125]);

    let cos = lr(ScheduleConfig::Cosine { total_steps: 14, warmup_steps: 4, min_lr: 0.1 }, 1.1);
    // Warm-up: 1.1·(s+1)/4.
    assert!(close(cos(0), 0.275) && close(cos(1), 0.55) && close(cos(3), 1.1));
    // Cosine over 10 steps from 1.1 to 0.1: at s = 4 + 5 (half way) 0.6.
    assert!(close(cos(4), 1.1));
    assert!(close(cos(9), 0.6), "{}", cos(9));
    assert!((cos(13) - (0.1 + 0.5 * (1.0 + (0.9 * std::f64::consts::PI).cos()))).abs() < 1e-15);
    assert_eq!([cos(14), cos(1000)], [0.1, 0.1]);

    let no_warmup = lr(ScheduleConfig::Cosine { total_steps: 2, warmup_steps: 0, min_lr: 0.0 }, 1.0);
    assert!(close(no_warmup(0), 1.0) && close(no_warmup(1), 0.5) && no_warmup(2) == 0.0);
}

#[test]
fn state_round_trips_through_json_and_continues_identically() {
    let configs = [
        ScheduleConfig::Constant,
        ScheduleConfig::Step { step_size: 3, gamma: 0.7 },
        ScheduleConfig::Exponential { gamma: 0.97 },
        ScheduleConfig::Cosine { total_steps: 50, warmup_steps: 5, min_lr: 1e-5 },
        ScheduleConfig::ArticleDecay { beta: 0.9 },
    ];
    for config in configs {
        let mut a = Schedule::new(config.clone(), 0.01).unwrap();
        for _ in 0..17 {
            a.next_lr();
        }
        let json = serde_json::to_string(&a).unwrap();
        let mut b: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(a, b);
        let mut c = Schedule::from_state(a.state()).unwrap();
        for _ in 0..40 {
            let lr = a.next_lr();
            assert_eq!(lr.to_bits(), b.next_lr().to_bits(), "{config:?}");
            assert_eq!(lr.to_bits(), c.next_lr().to_bits(), "{config:?}");
        }
    }
}

#[test]
fn json_form() {
    let c: ScheduleConfig =
        serde_json::from_str(r#"{"kind": "cosine", "total_steps": 100, "warmup_steps": 10}"#).unwrap();
    assert_eq!(c, ScheduleConfig::Cosine { total_steps: 100, warmup_steps: 10, min_lr: 0.0 });
    let c: ScheduleConfig = serde_json::from_str(r#"{"kind": "article_decay", "beta": 0.5}"#).unwrap();
    assert_eq!(c, ScheduleConfig::ArticleDecay { beta: 0.5 });
    assert!(serde_json::from_str::<ScheduleConfig>(r#"{"kind": "step", "step_size": 1, "gamma": 1, "x": 1}"#).is_err());

    let s = Schedule::new(ScheduleConfig::Constant, 0.5).unwrap();
    let v: serde_json::Value = serde_json::to_value(&s).unwrap();
    assert_eq!(v, serde_json::json!({"config": {"kind": "constant"}, "base_lr": 0.5, "step": 0}));
    // A saved state is checked on the way in.
    let bad = r#"{"config": {"kind": "step", "step_size": 0, "gamma": 0.5}, "base_lr": 0.5, "step": 0}"#;
    let e = serde_json::from_str::<Schedule>(bad).unwrap_err();
    assert!(e.to_string().contains("step_size"), "{e}");
}

#[test]
fn invalid_schedules_are_refused() {
    let bad = [
        (ScheduleConfig::Step { step_size: 0, gamma: 0.5 }, 0.1, "step_size"),
        (ScheduleConfig::Exponential { gamma: -1.0 }, 0.1, "gamma"),
        (ScheduleConfig::Exponential { gamma: f64::NAN }, 0.1, "gamma"),
        (ScheduleConfig::Cosine { total_steps: 5, warmup_steps: 6, min_lr: 0.0 }, 0.1, "warmup_steps"),
        (ScheduleConfig::ArticleDecay { beta: f64::INFINITY }, 0.1, "beta"),
        (ScheduleConfig::Constant, -0.1, "lr"),
    ];
    for (config, base, field) in bad {
        let e = Schedule::new(config.clone(), base).unwrap_err();
        assert!(matches!(e, Error::InvalidHyperParameter { field: f, .. } if f == field), "{config:?}: {e}");
    }
    let e = Schedule::from_state(ScheduleState {
        config: ScheduleConfig::Constant,
        base_lr: f64::NAN,
        step: 3,
        position: None,
        rate: None,
    });
    assert!(e.is_err());
}

#[test]
fn base_rate_can_be_scaled_mid_run() {
    let mut s = Schedule::new(ScheduleConfig::Exponential { gamma: 0.5 }, 1.0).unwrap();
    s.next_lr();
    s.scale_base_lr(0.5).unwrap();
    assert_eq!(s.next_lr(), 0.25);
    assert!(s.scale_base_lr(f64::INFINITY).is_err());
    assert_eq!(s.base_lr(), 0.5);
}

/// After `retime(½)` (the batch doubled) each step moves the schedule two of its steps: the
/// rates are those of the un-re-timed schedule at positions 40, 42, 44, … (computed from a
/// separate schedule's `lr_at`), the cosine ends at step 70 instead of 100, and the step
/// count itself is untouched.
#[test]
fn a_retimed_schedule_keeps_its_course_in_samples() {
    let configs = [
        ScheduleConfig::Cosine { total_steps: 100, warmup_steps: 10, min_lr: 0.001 },
        ScheduleConfig::Exponential { gamma: 0.97 },
        ScheduleConfig::Step { step_size: 15, gamma: 0.5 },
    ];
    for config in configs {
        let reference = Schedule::new(config.clone(), 0.1).unwrap();
        let mut s = reference.clone();
        for _ in 0..40 {
            s.next_lr();
        }
        s.retime(0.5).unwrap();
        assert_eq!((s.step(), s.position(), s.rate()), (40, 40.0, 2.0));
        for k in 0..40u64 {
            let (lr, want) = (s.next_lr(), reference.lr_at(40 + 2 * k));
            assert!((lr - want).abs() <= 1e-12 * want.abs().max(1e-12), "{config:?} step {}: {lr} vs {want}", 40 + k);
        }
        assert_eq!(s.step(), 80);
        // Back to the starting batch: one position per step again, from where it was.
        s.retime(2.0).unwrap();
        assert_eq!((s.position(), s.rate()), (120.0, 1.0));
        let (lr, want) = (s.next_lr(), reference.lr_at(120));
        assert!((lr - want).abs() <= 1e-12 * want.abs().max(1e-12), "{config:?}: {lr} vs {want}");
    }
    // The article decay counts optimiser steps: not re-timed.
    let reference = Schedule::new(ScheduleConfig::ArticleDecay { beta: 0.5 }, 0.1).unwrap();
    let mut s = reference.clone();
    s.next_lr();
    s.retime(0.5).unwrap();
    assert_eq!(s.next_lr(), reference.lr_at(1));
}

/// A re-timed schedule's state round-trips (the next rates are the same); one that was never
/// re-timed saves exactly the fields it saved before re-timing existed, so old checkpoints
/// and new ones of un-re-timed runs are the same JSON.
#[test]
fn retimed_state_round_trips_and_plain_state_is_unchanged() {
    let config = ScheduleConfig::Cosine { total_steps: 50, warmup_steps: 0, min_lr: 0.0 };
    let mut s = Schedule::new(config.clone(), 0.01).unwrap();
    for _ in 0..7 {
        s.next_lr();
    }
    let plain = serde_json::to_value(s.state()).unwrap();
    assert_eq!(plain.as_object().unwrap().keys().collect::<Vec<_>>(), ["base_lr", "config", "step"]);
    s.retime(0.25).unwrap();
    s.next_lr();
    let json = serde_json::to_string(&s).unwrap();
    let mut back: Schedule = serde_json::from_str(&json).unwrap();
    assert_eq!((back.step(), back.position(), back.rate()), (8, 11.0, 4.0));
    for _ in 0..12 {
        assert_eq!(back.next_lr(), s.next_lr());
    }
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = s.retime(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidHyperParameter { field: "factor", .. }), "{bad}: {e}");
    }
    assert_eq!(s.rate(), 4.0, "a failed retime changes nothing");
    let e = Schedule::from_state(ScheduleState { config, base_lr: 0.1, step: 3, position: Some(-1.0), rate: None });
    assert!(matches!(e, Err(Error::InvalidHyperParameter { field: "position", .. })), "{e:?}");
}
