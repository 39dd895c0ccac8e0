//! The page: one HTML file with inline CSS and inline SVG, nothing fetched when viewed.

use std::fmt::Write as _;

use crate::chart::{self, PALETTE, Panel, Series, Ticks, strategy_color};
use crate::data::{Basis, Bench, MIN_IMPORTANCE_TRIALS, Omega, Source, Study, TrialData, pareto_front};
use crate::error::Result;
use tuneforge_agent::tune::StopWhen;

/// Trials drawn one by one (learning rate, batch size and widths over steps) in a study's
/// report: the best ones by validation macro-F1.
pub const TRACED_TRIALS: usize = 6;
/// Rows of a study's leaderboard (the best trials by validation macro-F1).
pub const LEADERBOARD_ROWS: usize = 25;
/// Rows of each study's leaderboard inside a bench-tune report.
pub const BENCH_LEADERBOARD_ROWS: usize = 10;
/// Points per line at most (longer series are thinned or averaged into buckets).
const MAX_POINTS: usize = 300;

const STYLE: &str = "
body{font-family:sans-serif;margin:1.5em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
figure{margin:.8em 0;max-width:100%}figcaption{font-size:.8em;color:#555}
figure svg{display:block;max-width:100%;height:auto}
.incomplete{background:#fff4e0;border:1px solid #f0b040;padding:.6em;border-radius:4px}
.note{color:#555;font-size:.85em}
details{margin:.6em 0;border:1px solid #ddd;border-radius:4px;padding:.4em .8em}
summary{cursor:pointer;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
";

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `refresh` when some study of `source` is running (unfinished, its process alive).
fn refreshing(source: &Source, refresh: Option<u32>) -> Option<u32> {
    refresh.filter(|_| source.studies().iter().any(|s| s.running()))
}

/// Where the study's data came from (HTML).
fn place_of(s: &Study) -> String {
    let code = |p: &std::path::Path| format!("<code>{}</code>", escape(&p.display().to_string()));
    match &s.kept {
        None => format!("Folder {}", code(&s.dir)),
        Some(kept) => format!(
            "Study <code>{}</code> in <code>{}</code>; steps from {}",
            escape(&kept.study),
            escape(&kept.target),
            if kept.folders.is_empty() {
                "no worker folder".to_string()
            } else {
                kept.folders.iter().map(|f| code(f)).collect::<Vec<_>>().join(", ")
            }
        ),
    }
}

/// The whole page.
/// `refresh`: seconds after which a browser reloads the page, while a study runs (the
/// `--watch` of `cargo xtask report` rewrites it meanwhile).
pub(crate) fn page(source: &Source, generated: &str, refresh: Option<u32>) -> Result<String> {
    let (title, place) = match source {
        Source::Study(s) => (format!("{} study {}", s.row.strategy, s.name()), place_of(s)),
        Source::Bench(b) => (
            format!("bench-tune, {} studies", b.studies.len()),
            format!("Folder <code>{}</code>", escape(&b.dir.display().to_string())),
        ),
    };
    let refresh = refreshing(source, refresh);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{r}\
         <title>tuneforge report: {t}</title><style>{STYLE}</style></head><body>\n\
         <h1>tuneforge report: {t}</h1>\n<p class=\"note\">{d}; written {g} by tuneforge {v}.</p>\n",
        t = escape(&title),
        d = place,
        g = escape(generated),
        v = env!("CARGO_PKG_VERSION"),
        r = refresh.map_or(String::new(), |s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">")),
    );
    let studies = source.studies();
    let incomplete: Vec<&Study> = studies.iter().copied().filter(|s| !s.complete()).collect();
    if !incomplete.is_empty() {
        let names: Vec<String> = incomplete
            .iter()
            .map(|s| {
                let state = match (&s.kept, s.process) {
                    (Some(kept), _) => format!(
                        "kept in {}: its workers may still run; start workers on it to continue it",
                        kept.target
                    ),
                    (None, Some(pid)) => format!("running in process {pid}"),
                    (None, None) => "not running: killed or stopped".into(),
                };
                format!("{} ({state}; {} of {} trials unfinished)", s.name(), s.unfinished(), s.trials.len())
            })
            .collect();
        let reload = match refresh {
            Some(s) => format!(" This page reloads every {s} s while a study runs."),
            None => String::new(),
        };
        let (missing, continued) = if incomplete.iter().all(|s| s.kept.is_some()) {
            ("no worker's <code>summary.json</code> covers every trial of", "")
        } else {
            (
                "no <code>summary.json</code> for",
                " (continue a stopped study with <code>cargo xtask tune --resume DIR</code>)",
            )
        };
        let _ = writeln!(
            h,
            "<p class=\"incomplete\" id=\"incomplete\"><b>Incomplete:</b> {missing} {}{continued}. \
             This report shows what the study store and the event log held when it was written.{}</p>",
            escape(&names.join(", ")),
            reload
        );
    }
    for s in &studies {
        for note in &s.notes {
            let _ = writeln!(h, "<p class=\"note\">{}: {}</p>", escape(&s.name()), escape(note));
        }
    }
    match source {
        Source::Study(s) => study_page(&mut h, s)?,
        Source::Bench(b) => bench_page(&mut h, b)?,
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

fn study_page(h: &mut String, s: &Study) -> Result<()> {
    overview(h, s);
    h.push_str("<h2 id=\"progress\">Progress</h2>\n");
    figure(
        h,
        "best-so-far",
        &progress_chart(&[s])?,
        "Best validation macro-F1 so far against wall time since the study began; dots: every validation evaluation.",
    );
    figure(
        h,
        "front",
        &front_chart(&[s])?,
        "Validation macro-F1 against training throughput, one dot per trial; the ringed line is the Pareto front (no trial is better on both).",
    );
    figure(
        h,
        "slices",
        &slices_chart(s)?,
        "Validation macro-F1 of every ended trial against where it started (log scales) and, when trials moved \
         (rl's actions, pbt's and pb2's explore, the monitor's rate cuts), where they ended; faded: stopped before its end (a rung, the budget). Where the F1 is high is \
         where the search space is worth keeping.",
    );
    importance_table(h, s);
    h.push_str("<h2 id=\"leaderboard\">Leaderboard</h2>\n");
    leaderboard(h, s, LEADERBOARD_ROWS);
    let shown = s.shown_trials(TRACED_TRIALS);
    h.push_str("<h2 id=\"curves\">Training curves</h2>\n");
    figure(
        h,
        "curves",
        &curves_chart(&shown)?,
        &format!("Training loss (bucket means) and validation macro-F1 of the {} best trials.", shown.len()),
    );
    h.push_str("<h2 id=\"traces\">What the strategy did</h2>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\">Learning rate, batch size and hidden widths over the steps of the {} best of {} trials; \
         red triangles are anomalies the monitor flagged, red rules are rollbacks.</p>",
        shown.len(),
        s.trials.len()
    );
    for t in &shown {
        figure(h, "trace", &trace_chart(t)?, &format!("Trial {} ({})", t.row.id, escape(&t.row.status)));
    }
    best_model(h, s)?;
    config_table(h, s);
    Ok(())
}

fn bench_page(h: &mut String, b: &Bench) -> Result<()> {
    h.push_str("<h2 id=\"strategies\">Strategies</h2>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\">Mean ± sample sd over each strategy's studies (seeds). Mean reward and test macro-F1 \
         come from finished studies only.</p>\n<table data-table=\"strategies\"><tr><th class=\"l\">strategy</th>\
         <th>studies</th><th>finished</th><th>mean reward</th><th>best val macro-F1</th><th>test macro-F1</th><th>trials</th></tr>"
    );
    let pm = |v: Option<(f64, f64)>| v.map_or("–".to_string(), |(m, sd)| format!("{m:.4} ± {sd:.4}"));
    for r in b.strategies() {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ± {:.1}</td></tr>",
            escape(&r.strategy),
            r.studies,
            r.finished,
            pm(r.mean_reward),
            pm(r.best_val_f1),
            pm(r.test_f1),
            r.trials.0,
            r.trials.1
        );
    }
    h.push_str("</table>\n");
    let studies: Vec<&Study> = b.studies.iter().collect();
    h.push_str("<h2 id=\"progress\">Progress</h2>\n");
    figure(
        h,
        "best-so-far",
        &progress_chart(&studies)?,
        "Best validation macro-F1 so far against wall time, one line per study, coloured by strategy.",
    );
    figure(
        h,
        "front",
        &front_chart(&studies)?,
        "Validation macro-F1 against training throughput for every trial of every study; the ringed line is the Pareto front.",
    );
    let best = studies
        .iter()
        .copied()
        .filter_map(|s| s.summary.as_ref().map(|sum| (s, sum.best.test_macro_f1)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(s, _)| s);
    if let Some(s) = best {
        best_model(h, s)?;
    }
    h.push_str("<h2 id=\"studies\">Studies</h2>\n");
    for s in &studies {
        let head = match &s.summary {
            Some(sum) => format!(
                "{}: {} trials, best val macro-F1 {:.4}, test macro-F1 {:.4}, mean reward {:.4}",
                s.name(),
                s.trials.len(),
                sum.best.val_macro_f1,
                sum.best.test_macro_f1,
                sum.mean_reward
            ),
            None => format!("{}: {} trials, incomplete", s.name(), s.trials.len()),
        };
        let _ = writeln!(h, "<details data-study=\"{}\"><summary>{}</summary>", escape(&s.name()), escape(&head));
        overview(h, s);
        leaderboard(h, s, BENCH_LEADERBOARD_ROWS);
        let shown = s.shown_trials(3);
        figure(h, "curves", &curves_chart(&shown)?, "Training loss and validation macro-F1 of its 3 best trials.");
        if let Some(t) = shown.first() {
            figure(
                h,
                "trace",
                &trace_chart(t)?,
                &format!("Its best trial, {}: learning rate, batch size and widths.", t.row.id),
            );
        }
        h.push_str("</details>\n");
    }
    Ok(())
}

fn figure(h: &mut String, kind: &str, svg: &str, caption: &str) {
    let _ =
        writeln!(h, "<figure class=\"chart\" data-chart=\"{kind}\">{svg}<figcaption>{caption}</figcaption></figure>");
}

fn overview(h: &mut String, s: &Study) {
    let best_val = s.best_val_f1().map_or("–".into(), |f| format!("{f:.4}"));
    let any_eval = s.best_so_far().last().map_or("–".into(), |&(_, f)| format!("{f:.4}"));
    let (test, wall) = match &s.summary {
        Some(sum) => (
            format!("{:.4} (accuracy {:.4})", sum.best.test_macro_f1, sum.best.test_accuracy),
            format!("{:.1} s", sum.wall_s),
        ),
        None => ("– (not finished)".into(), format!("{:.1} s so far", s.row.elapsed_s)),
    };
    let mut budget = match s.config.get("max_trials").and_then(serde_json::Value::as_u64) {
        Some(n) => format!("{:.0} s or {n} trials, whichever ends first", s.row.budget_s),
        None => format!("{:.0} s", s.row.budget_s),
    };
    if let Some(t) = s.config.get("trial_timeout_s").and_then(serde_json::Value::as_f64) {
        budget = format!("{budget}; each trial at most {t} s");
    }
    // An early-stopping rule (`--stop-at`, `--patience`), and why the study ended.
    let rule = s.config.get("stop_when").and_then(|v| serde_json::from_value::<StopWhen>(v.clone()).ok());
    if let Some(rule) = rule.filter(|r| !r.is_none()) {
        budget = format!("{budget}; {}", escape(&rule.to_string()));
    }
    if let Some(ended) = s.summary.as_ref().and_then(|sum| sum.ended.as_ref()) {
        budget = format!("{budget}; ended because {}", escape(&ended.to_string()));
    }
    let _ = writeln!(
        h,
        "<table data-table=\"overview\"><tr><th class=\"l\">dataset</th><td class=\"l\">{}</td></tr>\
         <tr><th class=\"l\">strategy</th><td class=\"l\">{}</td></tr><tr><th class=\"l\">seed</th><td class=\"l\">{}</td></tr>\
         <tr><th class=\"l\">budget</th><td class=\"l\">{}</td></tr><tr><th class=\"l\">wall time</th><td class=\"l\">{}</td></tr>\
         <tr><th class=\"l\">trials</th><td class=\"l\">{} ({} unfinished)</td></tr>{}\
         <tr><th class=\"l\">validation macro-F1 of the best model</th><td class=\"l\">{}</td></tr>\
         <tr><th class=\"l\">best validation macro-F1 at any evaluation (mid-trial too)</th><td class=\"l\">{}</td></tr>\
         <tr><th class=\"l\">test macro-F1 of the best model</th><td class=\"l\">{}</td></tr></table>",
        escape(&s.row.dataset),
        escape(&s.row.strategy),
        s.row.seed,
        budget,
        wall,
        s.trials.len(),
        s.unfinished(),
        search_space(&s.config),
        best_val,
        any_eval,
        test
    );
}

/// The overview's row for a study's starting point and action bounds (its stored config's
/// `lr`, `batch_size` and `env.bounds`); empty when the config does not have them.
fn search_space(config: &serde_json::Value) -> String {
    let (Some(lr), Some(batch), Some(b)) =
        (config["lr"].as_f64(), config["batch_size"].as_u64(), config["env"]["bounds"].as_object())
    else {
        return String::new();
    };
    let pair = |k: &str| match (b.get(k).and_then(|v| v[0].as_f64()), b.get(k).and_then(|v| v[1].as_f64())) {
        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
        _ => "?".into(),
    };
    // Enqueued starts (`--enqueue`), run before the strategy's own.
    let enqueued: Vec<String> = config["enqueued"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|e| serde_json::from_value::<tuneforge_agent::tune::Enqueued>(e.clone()).ok())
                .map(|e| escape(&e.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let enqueued =
        if enqueued.is_empty() { String::new() } else { format!("; enqueued first: {}", enqueued.join("; ")) };
    format!(
        "<tr><th class=\"l\">search space</th><td class=\"l\">starts at lr {lr}, batch {batch}; bounds: lr {}, \
         batch {}, widths {}{enqueued}</td></tr>",
        pair("lr"),
        pair("batch"),
        pair("width")
    )
}

/// What each hyper-parameter alone explains of the completed trials' validation macro-F1
/// (or, with too few, of every trial's at its first rung; [`Study::importances`]); the "at
/// the end" columns only where trials moved.
fn importance_table(h: &mut String, s: &Study) {
    let rows = s.importances();
    let completed = s.trials.iter().filter(|t| t.row.status == "completed").count();
    let Some(first) = rows.first() else {
        let at_rung = s.trials.iter().filter(|t| !t.record.rungs.is_empty()).count();
        let _ = writeln!(
            h,
            "<p class=\"note\">Importance: {completed} completed trials, fewer than the {MIN_IMPORTANCE_TRIALS} it \
             needs{}.</p>",
            if at_rung > 0 { format!(", and {at_rung} at their first rung") } else { String::new() }
        );
        return;
    };
    let moved = first.basis == Basis::Completed && rows.iter().any(|r| r.start != r.end);
    let what = match first.basis {
        Basis::Completed => format!("{} completed trials' validation macro-F1", first.trials),
        Basis::FirstRung => format!(
            "{} trials' validation macro-F1 at their first rung (⅑ of their rows: {completed} completed trials are \
             fewer than the {MIN_IMPORTANCE_TRIALS} the final F1 needs; grouped by the values they started with)",
            first.trials
        ),
    };
    let _ = writeln!(
        h,
        "<p class=\"note\">Importance: the share of the variance of the {what} \
         that each hyper-parameter explains alone — ω² of a one-way analysis of variance over its values (learning \
         rates in quarter-decades), 0 when it explains no more than as many random groups would; – where it took one \
         value, or one per trial. Hyper-parameters \
         interact and a strategy draws them together: read it beside the slices.</p>\n\
         <table data-table=\"importance\"><tr><th class=\"l\">hyper-parameter</th><th>ω² at the start</th>\
         <th>groups</th>{}</tr>",
        if moved { "<th>ω² at the end</th><th>groups</th>" } else { "" }
    );
    let cells = |o: Option<Omega>| match o {
        Some(o) => format!("<td>{:.3}</td><td>{}</td>", o.omega2, o.groups),
        None => "<td>–</td><td>–</td>".into(),
    };
    for r in &rows {
        let end = if moved { cells(r.end) } else { String::new() };
        let _ = writeln!(h, "<tr><td class=\"l\">{}</td>{}{end}</tr>", r.parameter, cells(r.start));
    }
    h.push_str("</table>\n");
}

fn leaderboard(h: &mut String, s: &Study, rows: usize) {
    let shown = s.shown_trials(rows);
    let _ = writeln!(
        h,
        "<p class=\"note\">The {} best of {} trials by validation macro-F1.</p>\n<table data-table=\"leaderboard\">\
         <tr><th>rank</th><th>trial</th><th class=\"l\">status</th><th>val macro-F1</th><th>samples/s</th><th>reward</th>\
         <th>steps</th><th>decisions</th><th class=\"l\">start (model, lr, batch)</th><th class=\"l\">now (lr, batch, widths)</th><th>resumed</th></tr>",
        shown.len(),
        s.trials.len()
    );
    let num = |v: Option<f64>, d: usize| v.filter(|v| v.is_finite()).map_or("–".into(), |v| format!("{v:.d$}"));
    for (rank, t) in shown.iter().enumerate() {
        let r = &t.record;
        let widths: Vec<String> = r.final_hparams.widths.iter().map(|w| w.to_string()).collect();
        let _ = writeln!(
            h,
            "<tr class=\"trial\"><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td>\
             <td class=\"l\">{}, {:.2e}, {}</td><td class=\"l\">{:.2e}, {}, [{}]</td><td>{}</td></tr>",
            rank + 1,
            t.row.id,
            escape(&t.row.status),
            num(t.row.val_macro_f1, 4),
            num(t.row.samples_per_s, 0),
            t.row.reward,
            r.steps,
            t.row.decisions,
            escape(&r.start.model),
            r.start.lr,
            r.start.batch_size,
            r.final_hparams.lr,
            r.final_hparams.batch_size,
            widths.join(", "),
            if t.row.resumed { "yes" } else { "no" }
        );
    }
    h.push_str("</table>\n");
}

fn best_model(h: &mut String, s: &Study) -> Result<()> {
    let Some(best) = &s.best else {
        return Ok(());
    };
    let _ = writeln!(
        h,
        "<h2 id=\"best-model\">Best model</h2>\n<p>{} trial {} (validation macro-F1 {:.4}) on the test split: \
         {} samples, accuracy {:.4}, macro-F1 {:.4}.</p>\n<div class=\"grid\"><table data-table=\"classification-report\">\
         <tr><th class=\"l\">class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>",
        escape(&s.name()),
        best.trial,
        best.val_macro_f1,
        best.report.support,
        best.report.accuracy,
        best.report.macro_avg.f1
    );
    let names: &[&str] = if s.row.dataset.starts_with("fashion-mnist") {
        &tuneforge_loader::registry::FASHION_MNIST_CLASSES
    } else {
        &[]
    };
    for (class, m) in best.report.per_class.iter().enumerate() {
        let name = names.get(class).map_or(String::new(), |n| format!(" {}", escape(n)));
        let _ = writeln!(
            h,
            "<tr class=\"class\"><td class=\"l\">{class}{name}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
            m.precision, m.recall, m.f1, m.support
        );
    }
    for (name, a) in [("macro avg", &best.report.macro_avg), ("weighted avg", &best.report.weighted_avg)] {
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">{name}</th><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
            a.precision, a.recall, a.f1, best.report.support
        );
    }
    h.push_str("</table>\n");
    let n = best.confusion.num_classes();
    let side = (220 + 36 * n as u32).min(620);
    let svg = chart::heat_map("Confusion matrix (test)", best.confusion.counts(), n, (side, side))?;
    figure(h, "confusion", &svg, "Rows: true class; columns: predicted; shade: share of the row.");
    h.push_str("</div>\n");
    Ok(())
}

fn config_table(h: &mut String, s: &Study) {
    let mut rows = Vec::new();
    flatten("", &s.config, &mut rows);
    h.push_str("<h2 id=\"config\">Study configuration</h2>\n<table data-table=\"config\">");
    for (k, v) in rows {
        let _ = write!(h, "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>", escape(&k), escape(&v));
    }
    h.push_str("</table>\n");
}

/// `{"env": {"lambda": 0.02}}` → `("env.lambda", "0.02")`; arrays stay as JSON.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn progress_chart(studies: &[&Study]) -> Result<String> {
    let mut panel = Panel::new("Best validation macro-F1 so far", "seconds since the study began", "macro-F1");
    panel.y_ticks = Ticks::Plain(3);
    let single = studies.len() == 1;
    let mut labelled = std::collections::BTreeSet::new();
    for s in studies {
        let color = strategy_color(&s.row.strategy);
        if single {
            let all: Vec<(f64, f64)> = s
                .trials
                .iter()
                .flat_map(|t| t.evaluations.iter())
                .map(|e| (e.at_unix - s.row.created_unix, e.macro_f1))
                .collect();
            panel.series.push(Series::dots("evaluations", faded(color), chart::thin(&all, MAX_POINTS * 2)));
        }
        let mut best = s.best_so_far();
        if let (Some(&(_, f1)), false) = (best.last(), s.row.elapsed_s.is_nan()) {
            // Hold the best until the end of the study.
            let end = s.row.elapsed_s.max(best.last().map_or(0.0, |p| p.0));
            best.push((end, f1));
        }
        let label = if labelled.insert(s.row.strategy.clone()) { s.row.strategy.clone() } else { String::new() };
        panel.series.push(Series::steps(label, color, best));
    }
    chart::render("best so far", (1000, 380), 1, 1, &[panel])
}

/// A lighter shade of a colour, for background dots.
fn faded(c: plotters::style::RGBColor) -> plotters::style::RGBColor {
    let f = |v: u8| (f64::from(v) + (255.0 - f64::from(v)) * 0.55) as u8;
    plotters::style::RGBColor(f(c.0), f(c.1), f(c.2))
}

fn front_chart(studies: &[&Study]) -> Result<String> {
    let mut panel = Panel::new("Validation macro-F1 against throughput", "training samples/s", "macro-F1");
    panel.y_ticks = Ticks::Plain(3);
    let mut by_strategy: std::collections::BTreeMap<(usize, String), Vec<(f64, f64)>> = Default::default();
    for s in studies {
        by_strategy
            .entry((crate::data::strategy_rank(&s.row.strategy), s.row.strategy.clone()))
            .or_default()
            .extend(s.front_points().into_iter().map(|(_, x, y)| (x, y)));
    }
    let all: Vec<(f64, f64)> = by_strategy.values().flatten().copied().collect();
    panel.front = pareto_front(&all).into_iter().map(|i| all[i]).collect();
    for ((_, strategy), points) in by_strategy {
        panel.series.push(Series::dots(strategy.clone(), strategy_color(&strategy), points));
    }
    chart::render("front", (1000, 420), 1, 1, &[panel])
}

/// Validation macro-F1 of each ended trial (failed ones left out) against its starting
/// learning rate, batch size and first hidden width (when the model's name gives widths):
/// completed trials in the strategy's colour, the others (stopped) faded. When trials moved
/// (`rl`'s actions, `pbt`'s and `pb2`'s explore, the monitor's rate cuts after a divergence), a second row
/// against where they ended.
fn slices_chart(s: &Study) -> Result<String> {
    let color = strategy_color(&s.row.strategy);
    let ended: Vec<&TrialData> = s
        .trials
        .iter()
        .filter(|t| !matches!(t.row.status.as_str(), "running" | "paused") && !t.row.status.starts_with("failed"))
        .collect();
    let moved = ended.iter().any(|t| {
        let (start, end) = (&t.record.start, &t.record.final_hparams);
        start.lr != end.lr || start.batch_size != end.batch_size || t.first_width() != t.end_first_width()
    });
    let start_width = |t: &TrialData| t.first_width().map(|w| (w as f64).log2());
    let final_width = |t: &TrialData| t.end_first_width().map(|w| (w as f64).log2());
    type Axis<'a> = (&'a str, &'a str, Ticks, &'a dyn Fn(&TrialData) -> Option<f64>);
    let mut rows: Vec<[Axis<'_>; 3]> = vec![[
        ("learning rate", "starting learning rate", Ticks::Pow10, &|t| Some(t.record.start.lr.log10())),
        ("batch size", "starting batch size", Ticks::Pow2, &|t| Some((t.record.start.batch_size as f64).log2())),
        ("hidden width", "starting first hidden width", Ticks::Pow2, &start_width),
    ]];
    if moved {
        rows.push([
            ("learning rate at the end", "learning rate at the trial's end", Ticks::Pow10, &|t| {
                Some(t.record.final_hparams.lr.log10())
            }),
            ("batch size at the end", "batch size at the trial's end", Ticks::Pow2, &|t| {
                Some((t.record.final_hparams.batch_size as f64).log2())
            }),
            ("hidden width at the end", "first hidden width at the trial's end", Ticks::Pow2, &final_width),
        ]);
    }
    // No width panels for a model without named widths (seed-cnn, text presets).
    let with_width = ended.iter().any(|t| t.first_width().is_some());
    let mut panels = Vec::new();
    for row in &rows {
        for &(title, x_desc, x_ticks, x_of) in row.iter().filter(|a| with_width || !a.0.starts_with("hidden width")) {
            let mut panel = Panel::new(format!("Validation macro-F1 by {title}"), x_desc, "macro-F1");
            (panel.x_ticks, panel.y_ticks, panel.legend) = (x_ticks, Ticks::Plain(3), false);
            for (completed, shade) in [(false, faded(color)), (true, color)] {
                let points: Vec<(f64, f64)> = ended
                    .iter()
                    .filter(|t| (t.row.status == "completed") == completed)
                    .filter_map(|t| Some((x_of(t)?, t.record.val_macro_f1)))
                    .collect();
                panel.series.push(Series::dots(String::new(), shade, keep_best(points, MAX_POINTS)));
            }
            panels.push(panel);
        }
    }
    let cols = panels.len() / rows.len();
    chart::render("slices", (1000, 300 * rows.len() as u32), rows.len(), cols, &panels)
}

/// At most `max` of `points` (a digits study has thousands of trials): the best quarter of
/// what is drawn (by y) kept whole, the rest thinned, so the best region is never thinned away.
fn keep_best(mut points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    points.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top = max / 4;
    let (best, rest) = points.split_at(top);
    // The rest at evenly spaced ranks: exactly `max - top` of them.
    let mut kept = best.to_vec();
    kept.extend((0..max - top).map(|i| rest[i * rest.len() / (max - top)]));
    kept
}

fn curves_chart(trials: &[&TrialData]) -> Result<String> {
    let mut loss = Panel::new("Training loss", "step", "loss");
    loss.y_ticks = Ticks::Plain(2);
    let mut f1 = Panel::new("Validation macro-F1", "step", "macro-F1");
    f1.y_ticks = Ticks::Plain(3);
    for (i, t) in trials.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let label = format!("trial {}", t.row.id);
        let points: Vec<(f64, f64)> = t.trace.points.iter().map(|p| (p.step as f64, p.loss)).collect();
        loss.series.push(Series::line(label.clone(), color, chart::bucket_means(&points, MAX_POINTS / 2)));
        let evals: Vec<(f64, f64)> = t.evaluations.iter().map(|e| (e.step as f64, e.macro_f1)).collect();
        f1.series.push(Series::line(label, color, evals));
    }
    loss.legend = false;
    chart::render("curves", (1000, 340), 1, 2, &[loss, f1])
}

fn trace_chart(t: &TrialData) -> Result<String> {
    let steps = |f: &dyn Fn(&crate::data::TracePoint) -> f64| -> Vec<(f64, f64)> {
        let all: Vec<(f64, f64)> = t.trace.points.iter().map(|p| (p.step as f64, f(p))).collect();
        chart::thin(&all, MAX_POINTS)
    };
    // A cosine schedule ends at 0: its tail below 1/1000 of the peak is drawn at that floor,
    // so that the log axis shows the decisions, not the last few steps.
    let floor = t.trace.points.iter().map(|p| p.lr).filter(|v| v.is_finite()).fold(0.0, f64::max) * 1e-3;
    let mut lr = Panel::new(format!("Trial {}: learning rate", t.row.id), "step", "lr (log)");
    lr.y_ticks = Ticks::Pow10;
    lr.series.push(Series::steps("", PALETTE[0], steps(&|p| p.lr.max(floor).log10())));
    let lr_at = |step: u64| {
        t.trace
            .points
            .iter()
            .find(|p| p.step >= step)
            .or(t.trace.points.last())
            .map_or(0.0, |p| p.lr.max(floor).log10())
    };
    lr.markers = t.trace.anomalies.iter().map(|&(step, _)| (step as f64, lr_at(step))).collect();
    lr.rules = t.trace.rollbacks.iter().map(|&s| s as f64).collect();
    let mut batch = Panel::new("batch size", "step", "batch");
    batch.y_ticks = Ticks::Plain(0);
    batch.series.push(Series::steps("", PALETTE[1], steps(&|p| f64::from(p.batch_size))));
    batch.rules = lr.rules.clone();
    let mut widths = Panel::new("hidden widths", "step", "units");
    widths.y_ticks = Ticks::Plain(0);
    let layers = t.trace.points.iter().map(|p| p.widths.len()).max().unwrap_or(0);
    for l in 0..layers {
        let w = steps(&|p| p.widths.get(l).map_or(f64::NAN, |&w| f64::from(w)));
        widths.series.push(Series::steps(format!("layer {}", l + 1), PALETTE[(2 + l) % PALETTE.len()], w));
    }
    widths.rules = lr.rules.clone();
    chart::render("trace", (1000, 260), 1, 3, &[lr, batch, widths])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn keep_best_keeps_the_best_quarter_and_at_most_max() {
        // 2,000 points with y a scrambled permutation of 0..2000.
        let points: Vec<(f64, f64)> = (0..2000u64).map(|i| (i as f64, ((i * 7919) % 2000) as f64)).collect();
        let kept = keep_best(points.clone(), 300);
        assert_eq!(kept.len(), 300);
        let ys: std::collections::BTreeSet<u64> = kept.iter().map(|p| p.1 as u64).collect();
        assert!((1925..2000).all(|y| ys.contains(&y)), "the best 75 are all kept");
        assert!(kept.iter().all(|p| points.contains(p)));
        let distinct: std::collections::BTreeSet<u64> = kept.iter().map(|p| p.0 as u64).collect();
        assert_eq!(distinct.len(), 300, "no point twice");
        // The rest spread over the ranks: some of the worst hundred too.
        assert!(ys.iter().any(|&y| y < 100));
        // One over: still 300.
        assert_eq!(keep_best(points[..301].to_vec(), 300).len(), 300);
        // Few points: all of them, as they were.
        assert_eq!(keep_best(points[..40].to_vec(), 300), points[..40]);
    }

    #[test]
    fn flatten_names_nested_keys() {
        let v: serde_json::Value = serde_json::json!({"a": {"b": 1, "c": "x"}, "d": [1, 2]});
        let mut out = Vec::new();
        flatten("", &v, &mut out);
        assert_eq!(out, [("a.b".into(), "1".into()), ("a.c".into(), "x".into()), ("d".into(), "[1,2]".into())]);
    }
}
