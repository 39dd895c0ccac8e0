#![allow(clippy::unwrap_used)]
//! `cargo xtask bench-tune` as the nightly job runs it, on digits with tiny budgets.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BEGIN: &str = "<!-- bench-tune:begin -->";
const END: &str = "<!-- bench-tune:end -->";

/// `bench-tune --dataset digits` with `--out`, `--json` and `--doc` all under `tmp`.
fn bench_tune(tmp: &Path, out: &str, json: &str, args: &[&str]) -> Output {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets");
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench-tune", "--dataset", "digits", "--doc"])
        .arg(tmp.join("benchmarks.md"))
        .arg("--out")
        .arg(tmp.join(out))
        .arg("--json")
        .arg(tmp.join(json))
        .arg("--data-dir")
        .arg(data)
        .arg("--cache-dir")
        .arg(tmp.join("cache"))
        .args(args)
        .env_remove("TUNEFORGE_DATA")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn writes_runs_aggregates_and_the_doc_section_keeping_the_rest_of_the_doc() {
    let tmp = tempfile::tempdir().unwrap();
    let doc = tmp.path().join("benchmarks.md");
    let before = "# Benchmarks\n\nintro\n\n";
    let after = "\n\n## monitor\n\nstays as it is\n";
    std::fs::write(&doc, format!("{before}{BEGIN}\nstale table\n{END}{after}")).unwrap();
    let args = ["--budget", "3s", "--seeds", "2", "--strategies", "fixed,random"];
    let out = bench_tune(tmp.path(), "runs", "results/r.json", &args);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (i, line) in ["fixed seed 0", "fixed seed 1", "random seed 0", "random seed 1"].iter().enumerate() {
        assert!(stdout.contains(&format!("[{}/4] {line}: best val macro-F1 ", i + 1)), "{stdout}");
    }

    let report = read_json(&tmp.path().join("results/r.json"));
    assert_eq!(report["dataset"], "digits");
    assert_eq!(report["seeds"], 2);
    assert!(report["command"].as_str().unwrap().starts_with("cargo xtask bench-tune --dataset digits"));
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        let dir = tmp.path().join("runs").join(format!("{}-seed{}", r["strategy"].as_str().unwrap(), r["seed"]));
        assert!(r["trials"].as_u64().unwrap() >= 1);
        // The completed trials' mean reward, from the study's own summary.
        let summary = read_json(&dir.join("summary.json"));
        let done: Vec<f64> = summary["trials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["status"] == "completed")
            .map(|t| t["reward"].as_f64().unwrap())
            .collect();
        assert!(!done.is_empty(), "{}", dir.display());
        let mean = done.iter().sum::<f64>() / done.len() as f64;
        assert!((r["completed_reward"].as_f64().unwrap() - mean).abs() < 1e-12, "{r}");
    }
    let aggregates = report["aggregates"].as_array().unwrap();
    assert_eq!(aggregates.len(), 2);
    for a in aggregates {
        let mine: Vec<&Value> = runs.iter().filter(|r| r["strategy"] == a["strategy"]).collect();
        assert_eq!(mine.len(), 2);
        assert_eq!(a["n"], 2);
        for metric in ["best_val_macro_f1", "test_macro_f1", "samples_per_s", "reward", "completed_reward", "trials"] {
            let xs: Vec<f64> = mine.iter().map(|r| r[metric].as_f64().unwrap()).collect();
            let mean = (xs[0] + xs[1]) / 2.0;
            let sd = (xs[0] - xs[1]).abs() / 2f64.sqrt();
            let (m, s) = (a[metric]["mean"].as_f64().unwrap(), a[metric]["sd"].as_f64().unwrap());
            assert!((m - mean).abs() <= 1e-9 * mean.abs().max(1.0), "{} {metric}: {m} vs {mean}", a["strategy"]);
            assert!((s - sd).abs() <= 1e-9 * sd.abs().max(1.0), "{} {metric}: sd {s} vs {sd}", a["strategy"]);
        }
    }

    let doc = std::fs::read_to_string(&doc).unwrap();
    assert!(doc.starts_with(&format!("{before}{BEGIN}\n## Tuning strategies (bench-tune)\n")), "{doc}");
    assert!(doc.ends_with(&format!("{END}{after}")), "{doc}");
    assert!(!doc.contains("stale table"), "{doc}");
    assert!(
        doc.contains(
            "| strategy | best val macro-F1 | test macro-F1 | samples/s | reward | completed-trial reward | trials |"
        ),
        "{doc}"
    );
    assert!(doc.contains("`cargo xtask bench-tune --dataset digits"), "{doc}");
    for strategy in ["fixed", "random"] {
        assert!(doc.contains(&format!("\n| {strategy} | ")), "{doc}");
    }
}

#[test]
fn compare_flags_a_regression_exits_non_zero_and_still_writes_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--budget", "2s", "--seeds", "1", "--strategies", "fixed"];
    let out = bench_tune(tmp.path(), "runs-1", "first.json", &args);
    assert!(out.status.success(), "{}", text(&out));

    // The previous night was 0.5 better on test macro-F1: far beyond any noise.
    let mut prev = read_json(&tmp.path().join("first.json"));
    let mean = &mut prev["aggregates"][0]["test_macro_f1"]["mean"];
    *mean = (mean.as_f64().unwrap() + 0.5).into();
    let prev_path = tmp.path().join("prev.json");
    std::fs::write(&prev_path, serde_json::to_string_pretty(&prev).unwrap()).unwrap();
    let prev_path = prev_path.to_str().unwrap();

    let out = bench_tune(tmp.path(), "runs-2", "now.json", &[&args[..], &["--compare", prev_path]].concat());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("REGRESSED fixed test macro-F1: "), "{all}");
    assert!(all.contains("metrics regressed"), "{all}");
    let report = read_json(&tmp.path().join("now.json"));
    let flagged = report["regressions"].as_array().unwrap();
    assert!(flagged.iter().any(|r| r["strategy"] == "fixed" && r["metric"] == "test macro-F1"), "{report}");
    let doc = std::fs::read_to_string(tmp.path().join("benchmarks.md")).unwrap();
    assert!(doc.contains("Regressed:") && doc.contains("- fixed test macro-F1: "), "{doc}");
    assert_eq!(doc.matches(BEGIN).count(), 1, "{doc}");

    // Refused before any study runs: a file measured with another budget, and an --out that
    // holds earlier studies.
    for (out, budget, needle) in
        [("runs-3", "1s", "compare like with like"), ("runs-1", "2s", "holds an earlier study")]
    {
        let args = ["--budget", budget, "--seeds", "1", "--strategies", "fixed", "--compare", prev_path];
        let out = bench_tune(tmp.path(), out, "refused.json", &args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains(needle) && !all.contains("[1/"), "{all}");
    }
    assert!(!tmp.path().join("refused.json").exists());
}

/// The nightly job (.github/workflows/nightly-tune.yml) compares its run with the file
/// docs/bench-results/BASELINE names, and bench-tune refuses, before running anything, a file
/// measured under another setup (λ, budget, trial length, ...): a change of defaults without
/// a new baseline would fail every nightly. This runs the nightly's command as written in
/// the workflow, with `--dry-run`.
#[test]
fn the_nightly_baseline_was_measured_under_the_nightly_setup() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workflow = std::fs::read_to_string(repo.join(".github/workflows/nightly-tune.yml")).unwrap();
    let line = workflow
        .lines()
        .find(|l| l.trim_start().starts_with("cargo xtask bench-tune") && l.contains("--compare"))
        .expect("the workflow runs `cargo xtask bench-tune ... --compare`");
    let (_, rest) = line.split_once("bench-tune").unwrap();
    let (flags, _) = rest.split_once("--compare").unwrap();
    let baseline = std::fs::read_to_string(repo.join("docs/bench-results/BASELINE")).unwrap();
    let baseline = repo.join("docs/bench-results").join(baseline.lines().next().unwrap().trim());
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("bench-tune")
        .args(flags.split_whitespace())
        .arg("--compare")
        .arg(&baseline)
        .arg("--out")
        .arg(tmp.path().join("runs"))
        .arg("--doc")
        .arg(repo.join("docs/benchmarks.md"))
        .arg("--dry-run")
        .output()
        .unwrap();
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    // Every strategy, 3 seeds each.
    assert!(text.contains("dry run: 27 studies") && text.contains("nothing run"), "{text}");
    assert!(!tmp.path().join("runs").exists(), "a dry run writes nothing");
}
