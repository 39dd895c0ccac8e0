//! The study store's traffic for one `rl` trial of a PostgreSQL worker, without the training:
//! the claim of a new trial, the policy reload, the first evaluation, two decisions with
//! their evaluations, a saved row (a rung), the rung results read, the best trial asked,
//! the finish with the policy merged, the checkpoint dropped — the statements a digits trial
//! sends, counted from the server's log (docs/benchmarks.md, "An `rl` PostgreSQL worker").
//!
//! `TUNEFORGE_PG_URL=postgres://... cargo bench --bench study_store` (`source .ci/postgres.sh`
//! starts a throw-away server and sets it); without the variable the bench says so and does
//! nothing. Each run uses a new study, first 300 trials' worth of warm-up then `ANALYZE`
//! (steady state); `TUNEFORGE_BENCH_FRESH=1` measures from the first trial instead, which on
//! a server just started is a fresh database's start (plans made on empty tables: see
//! `ANALYZE_AT` in the store). The time of a whole tuning run moves by 20% between runs on a
//! 2-core VM, so store changes are compared here, not by trial counts.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tuneforge::agent::store::postgres::{Claim, PgOptions};
use tuneforge::agent::store::{DecisionRow, EvaluationRow, PostgresStore, StudyRow, StudyStore, TrialRow};

fn row(id: u64, status: &str) -> TrialRow {
    TrialRow {
        id,
        status: status.into(),
        config: r#"{"lr":0.001,"batch_size":64,"hidden":[128]}"#.into(),
        record: format!(r#"{{"id":{id},"decisions":[],"rungs":[0.91,0.95]}}"#),
        val_macro_f1: (status != "running").then_some(0.9 + (id % 97) as f64 / 1000.0),
        samples_per_s: Some(25_000.0),
        reward: 1.5,
        decisions: 2,
        resumed: false,
        started_unix: 1_790_000_000.0,
        updated_unix: 1_790_000_001.0,
        ended_unix: (status != "running").then_some(1_790_000_002.0),
        pid: std::process::id(),
    }
}

fn decision(trial: u64, idx: u64) -> DecisionRow {
    DecisionRow {
        trial,
        idx,
        step: 40 * idx,
        observation: "[0.5,0.25,0.125,0.9,0.1,0.0,1.0,0.3]".into(),
        action: r#"{"lr_scale":2.0,"batch_scale":1.0,"width_scale":1.0}"#.into(),
        applied: r#"{"lr":0.002,"batch_size":64,"hidden":[128]}"#.into(),
        reward: 0.01,
        val_macro_f1: 0.9,
        samples_per_s: 25_000.0,
        at_unix: 1_790_000_001.0,
    }
}

fn evaluation(trial: u64, idx: u64) -> EvaluationRow {
    EvaluationRow {
        trial,
        idx,
        step: 40 * idx,
        split: "val".into(),
        macro_f1: 0.9,
        accuracy: 0.91,
        loss: 0.3,
        at_unix: 1_790_000_001.0,
    }
}

fn store_per_trial(c: &mut Criterion) {
    let Ok(url) = std::env::var("TUNEFORGE_PG_URL") else {
        eprintln!("study_store: TUNEFORGE_PG_URL is not set (source .ci/postgres.sh); nothing measured");
        return;
    };
    let name = format!("bench-{}-{}", std::process::id(), tuneforge::agent::trial::unix_now() as u64);
    let options = PgOptions { worker: "bench".into(), ..PgOptions::default() };
    let mut store = PostgresStore::open(&url, &name, options).expect("open the study store");
    let study = StudyRow {
        config: r#"{"strategy":"rl"}"#.into(),
        strategy: "rl".into(),
        dataset: "digits".into(),
        seed: 0,
        budget_s: 3600.0,
        elapsed_s: 0.0,
        created_unix: 1_790_000_000.0,
    };
    store.create_or_join(&study, None).expect("create the study");
    // A policy state of the size the digits study's is (about 4 KB of JSON).
    let numbers: Vec<String> = (0..400).map(|k| (f64::from(k) * 0.001_234_5).to_string()).collect();
    let policy = format!("[{}]", numbers.join(","));
    let mut group = c.benchmark_group("study_store");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30).measurement_time(Duration::from_secs(20));
    let mut trial = || {
        let Claim::New(id) = store.claim(true, &mut |id| row(id, "running"), None).expect("claim") else {
            panic!("expected a new trial");
        };
        store.policy().expect("policy");
        store.add_evaluation(&evaluation(id, 0)).expect("evaluation");
        for k in 0..2 {
            store.add_decision_evaluated(&decision(id, k), Some(&evaluation(id, k + 1))).expect("decision");
        }
        store.save_trial(&row(id, "running"), 1.0).expect("save");
        store.trials_from(id).expect("rung results");
        store.best_trial().expect("best");
        store.finish_trial_merging(&row(id, "stopped"), &mut |_| Ok(policy.clone()), 2.0).expect("finish");
        store.delete_checkpoint(id).expect("drop the checkpoint");
    };
    // TUNEFORGE_BENCH_FRESH=1: measured from the study's first trial, as a fresh database's
    // first workers see it (with a server started just before: tables empty, never analyzed).
    if std::env::var_os("TUNEFORGE_BENCH_FRESH").is_none() {
        for _ in 0..300 {
            trial();
        }
        let mut direct = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        direct.batch_execute("ANALYZE").expect("analyze");
    }
    group.bench_function("rl_trial_postgres", |b| b.iter(&mut trial));
    group.finish();
}

criterion_group!(benches, store_per_trial);
criterion_main!(benches);
