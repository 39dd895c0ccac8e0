//! Detector quality, measured: seeded synthetic streams with known injection points, and the
//! clean Fashion-MNIST trace. The figures printed here are the ones in `docs/benchmarks.md`
//! ("monitor"); print them with
//! `cargo test -p tuneforge-monitor --test monitor quality -- --nocapture --test-threads 1`.

use std::collections::BTreeMap;

use tuneforge_monitor::*;

use crate::trace::TraceRow;

/// SplitMix64: a tiny seeded generator, so the streams are the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// NaN loss (even injections) or NaN gradient norm (odd ones), one step.
    Nan,
    /// Loss multiplied by `factor` for `len` (1–3) steps.
    Spike { factor: f64, len: u64 },
    /// Gradient norm multiplied by `factor`, one step.
    Explode { factor: f64 },
    /// Samples/s multiplied by 0.3 for 10 steps.
    Slow,
}

struct Injection {
    step: u64,
    fault: Fault,
}

/// A clean stream plus injections: loss `0.3 + 2·exp(-t/300)` with 15% log-normal noise,
/// gradient norm `1 + 0.5·exp(-t/200)` with 30% log-normal noise, 10 000 samples/s with 5%
/// noise; `STEPS` steps; injections after step 100, at least 40 steps apart.
struct Stream {
    facts: Vec<StepFacts>,
    injections: Vec<Injection>,
}

const STEPS: u64 = 3000;

fn stream(seed: u64, faults: &[Fault]) -> Stream {
    let mut rng = Rng(seed);
    // Injection points: shuffled slots of 40 steps after step 100, one fault per slot.
    let slots = (STEPS - 140) / 40;
    assert!(faults.len() as u64 <= slots);
    let mut order: Vec<u64> = (0..slots).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut injections: Vec<Injection> = faults
        .iter()
        .zip(&order)
        .map(|(&fault, &slot)| Injection { step: 100 + slot * 40 + rng.next_u64() % 10, fault })
        .collect();
    injections.sort_by_key(|i| i.step);
    let mut facts = Vec::with_capacity(STEPS as usize);
    let mut nan_count = 0;
    for t in 0..STEPS {
        let tf = t as f64;
        let mut loss = (0.3 + 2.0 * (-tf / 300.0).exp()) * (0.15 * rng.normal()).exp();
        let mut grad = (1.0 + 0.5 * (-tf / 200.0).exp()) * (0.3 * rng.normal()).exp();
        let mut sps = 10_000.0 * (1.0 + 0.05 * rng.normal());
        for inj in &injections {
            match inj.fault {
                Fault::Nan if inj.step == t => {
                    if nan_count % 2 == 0 {
                        loss = f64::NAN;
                    } else {
                        grad = f64::NAN;
                    }
                    nan_count += 1;
                }
                Fault::Spike { factor, len } if (inj.step..inj.step + len).contains(&t) => loss *= factor,
                Fault::Explode { factor } if inj.step == t => grad *= factor,
                Fault::Slow if (inj.step..inj.step + 10).contains(&t) => sps *= 0.3,
                _ => {}
            }
        }
        facts.push(StepFacts {
            step: t,
            epoch: (t / 500) as u32,
            loss,
            samples: 128,
            seconds: 128.0 / sps,
            grad_norm: Some(grad),
            lr: 1e-3,
            batch_size: 128,
            widths: vec![256],
            device_seconds: None,
        });
    }
    Stream { facts, injections }
}

/// Every anomaly of a stream run through a `Monitor` with default configuration.
fn detect(facts: &[StepFacts]) -> Vec<Anomaly> {
    let mut monitor = Monitor::new(MonitorConfig::default(), Telemetry::disabled()).unwrap();
    let mut all = Vec::new();
    for f in facts {
        all.extend(monitor.step(f.clone()).unwrap().anomalies);
    }
    all
}

/// For each injection: the delay (steps) to the first matching anomaly within `window` steps.
fn delays(s: &Stream, found: &[Anomaly], window: u64, kinds: &[AnomalyKind]) -> Vec<Option<u64>> {
    s.injections
        .iter()
        .map(|inj| {
            found
                .iter()
                .filter(|a| kinds.contains(&a.kind) && a.step >= inj.step && a.step <= inj.step + window)
                .map(|a| a.step - inj.step)
                .min()
        })
        .collect()
}

/// Anomalies not within `slack` steps after any injection.
fn false_alarms(s: &Stream, found: &[Anomaly], slack: u64) -> usize {
    found.iter().filter(|a| !s.injections.iter().any(|i| a.step >= i.step && a.step <= i.step + slack)).count()
}

const SEEDS: std::ops::Range<u64> = 1..21;

#[test]
fn every_injected_nan_is_caught_at_its_step() {
    let (mut caught, mut total) = (0, 0);
    for seed in SEEDS {
        let s = stream(seed, &[Fault::Nan; 10]);
        let found = detect(&s.facts);
        for d in delays(&s, &found, 0, &[AnomalyKind::NonFiniteLoss, AnomalyKind::NonFiniteGradNorm]) {
            total += 1;
            caught += usize::from(d == Some(0));
        }
    }
    eprintln!("quality: NaN/Inf: {caught}/{total} caught at their step");
    assert_eq!(caught, total);
}

#[test]
fn spikes_are_caught_within_three_steps() {
    // Headline: spikes of 2.5x to 5x the loss (a z-score of about 10 to 27 against the 15%
    // noise), 1 to 3 steps long. Then a sweep of fixed factors, to show where detection fades.
    let mut rng = Rng(99);
    let mut rows = Vec::new();
    for (label, lo, hi) in [("x2.5-x5", 2.5, 5.0), ("x1.5", 1.5, 1.5), ("x2", 2.0, 2.0), ("x3", 3.0, 3.0)] {
        let (mut caught, mut total, mut delay_sum, mut fp, mut steps) = (0usize, 0usize, 0u64, 0usize, 0u64);
        for seed in SEEDS {
            let faults: Vec<Fault> =
                (0..30).map(|_| Fault::Spike { factor: rng.range(lo, hi), len: 1 + rng.next_u64() % 3 }).collect();
            let s = stream(seed * 1000 + 7, &faults);
            let found = detect(&s.facts);
            for d in delays(&s, &found, 3, &[AnomalyKind::LossSpike]) {
                total += 1;
                if let Some(d) = d {
                    caught += 1;
                    delay_sum += d;
                }
            }
            fp += false_alarms(&s, &found, 3);
            steps += STEPS;
        }
        let rate = caught as f64 / total as f64;
        eprintln!(
            "quality: loss spikes {label}: {caught}/{total} caught within 3 steps ({:.1}%), mean delay {:.2} steps; \
             {fp} flags elsewhere in {steps} steps ({:.3}%)",
            100.0 * rate,
            delay_sum as f64 / caught.max(1) as f64,
            100.0 * fp as f64 / steps as f64
        );
        rows.push((label, rate));
    }
    assert!(rows[0].1 >= 0.95, "{rows:?}");
}

#[test]
fn explosions_and_slowdowns_are_caught() {
    let mut rng = Rng(5);
    let (mut ex_caught, mut ex_total, mut slow_caught, mut slow_total, mut slow_delay) = (0, 0, 0, 0, 0);
    for seed in SEEDS {
        let mut faults: Vec<Fault> = (0..20).map(|_| Fault::Explode { factor: rng.range(20.0, 100.0) }).collect();
        faults.extend([Fault::Slow; 10]);
        let s = stream(seed * 31 + 3, &faults);
        let found = detect(&s.facts);
        let ex = delays(&s, &found, 0, &[AnomalyKind::ExplodingGradient]);
        let slow = delays(&s, &found, 10, &[AnomalyKind::ThroughputDrop]);
        for (inj, (e, sl)) in s.injections.iter().zip(ex.iter().zip(&slow)) {
            match inj.fault {
                Fault::Explode { .. } => {
                    ex_total += 1;
                    ex_caught += usize::from(e.is_some());
                }
                Fault::Slow => {
                    slow_total += 1;
                    if let Some(d) = sl {
                        slow_caught += 1;
                        slow_delay += d;
                    }
                }
                _ => unreachable!(),
            }
        }
    }
    eprintln!(
        "quality: exploding gradients (x20-x100): {ex_caught}/{ex_total} caught at their step; \
         throughput drops (x0.3 for 10 steps): {slow_caught}/{slow_total} caught, mean delay {:.1} steps",
        slow_delay as f64 / slow_caught.max(1) as f64
    );
    assert_eq!(ex_caught, ex_total);
    assert_eq!(slow_caught, slow_total);
}

#[test]
fn clean_streams_are_quiet() {
    let mut flagged = 0;
    for seed in SEEDS {
        let s = stream(seed + 500, &[]);
        flagged += detect(&s.facts).len();
    }
    let steps = STEPS * SEEDS.count() as u64;
    eprintln!("quality: clean synthetic streams: {flagged} flags in {steps} steps");
    assert!((flagged as f64) < 0.01 * steps as f64);
}

fn fixture() -> Vec<StepFacts> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fmnist_trace.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| {
            let r: TraceRow = serde_json::from_str(l).unwrap();
            StepFacts {
                step: r.step,
                epoch: r.epoch,
                loss: f64::from(r.loss),
                samples: u64::from(r.samples),
                seconds: f64::from(r.seconds),
                grad_norm: Some(f64::from(r.grad_norm)),
                lr: 1e-3,
                batch_size: 128,
                widths: vec![256],
                device_seconds: None,
            }
        })
        .collect()
}

#[test]
fn clean_fashion_mnist_trace_flags_at_most_one_percent_of_steps() {
    let facts = fixture();
    assert!(facts.len() >= 900, "{}", facts.len());
    assert!(facts.iter().all(|f| f.loss.is_finite()));
    let found = detect(&facts);
    let mut flagged_steps: Vec<u64> = found.iter().map(|a| a.step).collect();
    flagged_steps.dedup();
    let mut by_kind = BTreeMap::new();
    for a in &found {
        *by_kind.entry(a.kind.as_str()).or_insert(0) += 1;
    }
    let rate = flagged_steps.len() as f64 / facts.len() as f64;
    eprintln!(
        "quality: clean Fashion-MNIST trace: {} of {} steps flagged ({:.2}%), by kind {by_kind:?}",
        flagged_steps.len(),
        facts.len(),
        100.0 * rate
    );
    for a in &found {
        eprintln!("quality:   {a:?}");
    }
    assert!(rate <= 0.01, "{found:?}");
}

#[test]
fn nan_injected_into_the_real_trace_is_caught_and_rolled_back() {
    let mut facts = fixture();
    facts[500].loss = f64::NAN;
    facts[700].grad_norm = Some(f64::NAN);
    let mut monitor = Monitor::new(MonitorConfig::default(), Telemetry::disabled()).unwrap();
    monitor.snapshot_taken(0);
    let mut rollbacks = Vec::new();
    for f in facts {
        let step = f.step;
        let out = monitor.step(f).unwrap();
        match out.recovery {
            Some(Recovery::RollBack { to_step, .. }) => rollbacks.push((step, to_step)),
            Some(other) => panic!("{other:?}"),
            None if step % 100 == 0 => assert!(monitor.snapshot_taken(step)),
            None => {}
        }
    }
    assert_eq!(rollbacks, [(500, 400), (700, 600)]);
}
