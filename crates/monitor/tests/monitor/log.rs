//! The JSONL event log: what is written reads back; a crash's torn line is tolerated, damage
//! elsewhere is a typed error with its line number.

use std::io::Write as _;

use tuneforge_monitor::*;

fn every_kind_of_event() -> Vec<Event> {
    let step = StepRecord {
        step: 3,
        epoch: 0,
        loss: f64::NAN,
        samples: 128,
        seconds: 0.004,
        grad_norm: Some(f64::INFINITY),
        lr: 1e-3,
        batch_size: 128,
        widths: vec![256, 64],
        device_seconds: None,
        samples_per_s: 32000.0,
        samples_per_s_ewma: 31000.5,
        loss_ewma: 0.75,
    };
    vec![
        Event::RunStart(RunStart {
            run: "r1".into(),
            unix_ms: 1_700_000_000_000,
            attributes: [("dataset".to_string(), "fashion-mnist".to_string())].into(),
        }),
        Event::Step(step),
        Event::RunResume(RunResume { run: "r1".into(), step: 3 }),
        Event::Summary(Figures {
            step: 3,
            steps: 4,
            rss_bytes: Some(1 << 30),
            loss_slope: -0.01,
            window_p50_s: f64::NAN,
            ..Default::default()
        }),
        Event::Epoch(EpochEnd { epoch: 0, step: 3, samples: 512, seconds: 1.5 }),
        Event::Evaluation(Evaluation {
            step: 3,
            epoch: 0,
            accuracy: 0.8,
            macro_f1: 0.79,
            loss: Some(0.5),
            seconds: 0.2,
        }),
        Event::Anomaly(Anomaly {
            step: 3,
            kind: AnomalyKind::NonFiniteLoss,
            value: f64::NAN,
            threshold: f64::INFINITY,
        }),
        Event::Anomaly(Anomaly { step: 4, kind: AnomalyKind::ThroughputDrop, value: 10.0, threshold: 50.0 }),
        Event::Rollback(Rollback {
            step: 3,
            to_step: 0,
            lr_before: 1e-3,
            lr_after: 5e-4,
            cause: AnomalyKind::NonFiniteLoss,
        }),
        Event::Decision(Decision {
            step: 3,
            action: "lr*0.5".into(),
            lr: 5e-4,
            batch_size: 64,
            widths: vec![384],
            reward: Some(-0.25),
        }),
        Event::Checkpoint(Checkpoint { step: 3, path: Some("/tmp/ck".into()) }),
        Event::RunEnd(RunEnd { step: 3, seconds: 2.0, outcome: Outcome::Completed, anomalies: 2, rollbacks: 1 }),
    ]
}

/// NaN != NaN: compare through the JSON text.
fn same(a: &[Event], b: &[Event]) {
    assert_eq!(serde_json::to_string(a).unwrap(), serde_json::to_string(b).unwrap());
}

#[test]
fn every_event_round_trips_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let events = every_kind_of_event();
    let mut log = EventLog::open(&path).unwrap();
    for e in &events {
        log.append(e).unwrap();
    }
    log.sync().unwrap();
    assert_eq!(log.events_written(), events.len() as u64);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), events.len());
    assert!(text.contains(r#""loss":"NaN""#), "{text}");
    assert!(text.contains(r#""grad_norm":"inf""#), "{text}");
    assert!(text.lines().all(|l| l.starts_with(r#"{"event":""#)));
    let read = read_log(&path).unwrap();
    assert_eq!(read.torn_tail, None);
    same(&read.events, &events);
    assert!(matches!(&read.events[1], Event::Step(s) if s.loss.is_nan() && s.grad_norm == Some(f64::INFINITY)));
}

#[test]
fn a_torn_last_line_is_tolerated_and_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let events = every_kind_of_event();
    let mut log = EventLog::open(&path).unwrap();
    for e in &events[..4] {
        log.append(e).unwrap();
    }
    drop(log);
    // A crash in the middle of writing the fifth line.
    let line = serde_json::to_string(&events[4]).unwrap();
    let torn = &line[..line.len() / 2];
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(torn.as_bytes()).unwrap();

    let read = read_log(&path).unwrap();
    same(&read.events, &events[..4]);
    assert_eq!(read.torn_tail, Some(TornTail { line: 5, bytes: torn.len() }));

    // Reopening for append cuts the torn bytes, so the next event is on a line of its own.
    let mut log = EventLog::open(&path).unwrap();
    assert_eq!(log.repaired_bytes(), torn.len() as u64);
    log.append(&events[4]).unwrap();
    drop(log);
    let read = read_log(&path).unwrap();
    assert_eq!(read.torn_tail, None);
    same(&read.events, &events[..5]);
}

#[test]
fn every_prefix_of_a_log_reads_without_error() {
    // Wherever a crash cuts the file, the reader returns the complete events before the cut.
    let events = every_kind_of_event();
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for e in &events {
        serde_json::to_writer(&mut bytes, e).unwrap();
        bytes.push(b'\n');
        ends.push(bytes.len());
    }
    for cut in 0..=bytes.len() {
        let read = parse_log(std::path::Path::new("mem.jsonl"), &bytes[..cut]).unwrap();
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        // A cut just before a line's '\n' leaves that line complete JSON: it counts.
        let whole_line = ends.iter().any(|&end| end == cut + 1);
        let expected = complete + usize::from(whole_line);
        assert_eq!(read.events.len(), expected, "cut at {cut}");
        assert_eq!(read.torn_tail.is_some(), !ends.contains(&cut) && cut > 0 && !whole_line, "cut at {cut}");
    }
}

#[test]
fn a_corrupt_middle_line_is_an_error_with_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let events = every_kind_of_event();
    let mut text = String::new();
    for (i, e) in events.iter().enumerate() {
        if i == 3 {
            text.push_str("{\"event\":\"step\",\"step\":\n");
        }
        text.push_str(&serde_json::to_string(e).unwrap());
        text.push('\n');
    }
    std::fs::write(&path, &text).unwrap();
    match read_log(&path) {
        Err(Error::CorruptLine { path: p, line, .. }) => {
            assert_eq!(p, path);
            assert_eq!(line, 4);
        }
        other => panic!("expected CorruptLine, got {other:?}"),
    }
    // An unknown event kind is damage too (the enum is closed).
    std::fs::write(&path, "{\"event\":\"mystery\"}\n{\"event\":\"checkpoint\",\"step\":1}\n").unwrap();
    assert!(matches!(read_log(&path), Err(Error::CorruptLine { line: 1, .. })));
    // A missing file is an i/o error naming it.
    let missing = dir.path().join("missing.jsonl");
    assert!(matches!(read_log(&missing), Err(Error::Io { path, .. }) if path == missing));
}

#[test]
fn blank_lines_are_skipped() {
    let events = every_kind_of_event();
    let text = format!(
        "\n{}\n\n{}\n\n",
        serde_json::to_string(&events[0]).unwrap(),
        serde_json::to_string(&events[9]).unwrap()
    );
    let read = parse_log(std::path::Path::new("x"), text.as_bytes()).unwrap();
    same(&read.events, &[events[0].clone(), events[9].clone()]);
}

/// Two monitors time-sliced on one file (as PBT's members are): each switch of writer is
/// marked with a `run_resume`, so every step can be given back to its run.
#[test]
fn interleaved_monitors_mark_each_switch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let config = |run: &str| MonitorConfig { run: run.into(), log: Some(path.clone()), ..Default::default() };
    let mut a = Monitor::new(config("a"), Telemetry::disabled()).unwrap();
    let mut b = Monitor::new(config("b"), Telemetry::disabled()).unwrap();
    let facts =
        |step| StepFacts { step, loss: 1.0, samples: 8, seconds: 0.01, lr: 0.1, batch_size: 8, ..Default::default() };
    // a: steps 0-1, b: 0-2, a: 2, b: 3.
    let mut expected = Vec::new();
    for (m, run, steps) in [(&mut a, "a", 0..2), (&mut b, "b", 0..3)] {
        for s in steps {
            m.step(facts(s)).unwrap();
            expected.push((run, s));
        }
    }
    a.step(facts(2)).unwrap();
    expected.push(("a", 2));
    b.step(facts(3)).unwrap();
    expected.push(("b", 3));
    a.finish(Outcome::Completed).unwrap();
    b.finish(Outcome::Completed).unwrap();

    let log = read_log(&path).unwrap();
    let mut current = String::new();
    let mut seen = Vec::new();
    let mut resumes = Vec::new();
    for event in &log.events {
        match event {
            Event::RunStart(e) => current = e.run.clone(),
            Event::RunResume(e) => {
                current = e.run.clone();
                resumes.push((e.run.clone(), e.step));
            }
            Event::Step(e) => seen.push((current.clone(), e.step)),
            _ => {}
        }
    }
    let seen: Vec<(&str, u64)> = seen.iter().map(|(r, s)| (r.as_str(), *s)).collect();
    assert_eq!(seen, expected);
    // Both run_starts come first; then every change of writer, each at the step it is on:
    // a's steps, b's, a's step 2, b's step 3, a's run_end, b's run_end.
    let resumes: Vec<(&str, u64)> = resumes.iter().map(|(r, s)| (r.as_str(), *s)).collect();
    assert_eq!(resumes, [("a", 0), ("b", 0), ("a", 2), ("b", 3), ("a", 2), ("b", 3)]);
}

/// A log read while it grows, cut anywhere: after every piece the follower has returned, over
/// all its calls, exactly the events `parse_log` finds in the bytes so far up to their last
/// `\n`, and its pending line is what follows (or `parse_log`'s torn tail).
#[test]
fn a_follower_reads_a_growing_log_as_read_log_reads_each_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut bytes = Vec::new();
    for e in every_kind_of_event().iter().chain(&every_kind_of_event()) {
        serde_json::to_writer(&mut bytes, e).unwrap();
        bytes.extend_from_slice(b"\n");
    }
    bytes.extend_from_slice(b"\n \n"); // blank lines count as lines, and are skipped
    for stride in [1, 7, 61, 400] {
        let _ = std::fs::remove_file(&path);
        let mut follower = LogFollower::new(&path);
        assert_eq!(follower.read_new().unwrap(), Follow::default(), "no file yet");
        let mut seen = Vec::new();
        let mut cut = 0;
        std::fs::write(&path, b"").unwrap();
        while cut < bytes.len() {
            let next = (cut + stride).min(bytes.len());
            std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&bytes[cut..next]).unwrap();
            cut = next;
            let follow = follower.read_new().unwrap();
            assert!(!follow.restarted);
            seen.extend(follow.events);
            let head = bytes[..cut].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let whole = parse_log(&path, &bytes[..head]).unwrap();
            same(&seen, &whole.events);
            let tail = &bytes[head..cut];
            let pending = match tail.iter().all(u8::is_ascii_whitespace) {
                true => whole.torn_tail,
                false => Some(TornTail {
                    line: bytes[..head].iter().filter(|&&b| b == b'\n').count() as u64 + 1,
                    bytes: tail.len(),
                }),
            };
            assert_eq!(follower.pending(), pending.as_ref(), "stride {stride}, cut {cut}");
        }
    }
}

#[test]
fn a_follower_names_a_corrupt_line_once_one_follows_it_and_restarts_on_a_shorter_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let events = every_kind_of_event();
    let line = |e: &Event| serde_json::to_string(e).unwrap() + "\n";
    std::fs::write(&path, line(&events[0]) + &line(&events[1]) + "{\"event\":\"step\",\"step\":\n").unwrap();
    let mut follower = LogFollower::new(&path);
    // Last, it may be a torn write: pending, as read_log's torn tail.
    same(&follower.read_new().unwrap().events, &events[..2]);
    let bad = "{\"event\":\"step\",\"step\":".len();
    assert_eq!(follower.pending(), Some(&TornTail { line: 3, bytes: bad }));
    // A line after it: damage in the middle, with its line number.
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(line(&events[2]).as_bytes()).unwrap();
    assert!(matches!(follower.read_new(), Err(Error::CorruptLine { line: 3, .. })));
    // The file replaced by a shorter one: read again from its start.
    std::fs::write(&path, line(&events[4])).unwrap();
    let follow = follower.read_new().unwrap();
    assert!(follow.restarted);
    same(&follow.events, &events[4..5]);
    assert_eq!(follower.pending(), None);
}

/// `log_steps_every` thins the log's step events and keeps the ones that matter: the first,
/// the multiples, a step a detector fired on and the step before any other event.
#[test]
fn a_thinned_log_keeps_the_multiples_and_every_step_an_event_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("thin.jsonl");
    let config = MonitorConfig { log: Some(path.clone()), log_steps_every: 10, ..Default::default() };
    let mut monitor = Monitor::new(config, Telemetry::disabled()).unwrap();
    let mut steps = 0;
    for step in 3..=95u64 {
        let facts = StepFacts {
            step,
            epoch: u32::from(step >= 60),
            loss: if step == 73 { f64::NAN } else { 1.0 / step as f64 },
            samples: 32,
            seconds: 0.001,
            grad_norm: Some(1.0),
            lr: 1e-3,
            batch_size: 32,
            widths: vec![16],
            device_seconds: None,
        };
        monitor.step(facts).unwrap();
        steps += 1;
        match step {
            37 => monitor
                .evaluation(Evaluation { step, epoch: 0, accuracy: 0.5, macro_f1: 0.5, loss: None, seconds: 0.1 })
                .unwrap(),
            55 => monitor
                .decision(Decision {
                    step,
                    action: "lr*2".into(),
                    lr: 2e-3,
                    batch_size: 32,
                    widths: vec![16],
                    reward: None,
                })
                .unwrap(),
            88 => monitor.checkpoint(step, None).unwrap(),
            _ => {}
        }
    }
    assert_eq!(steps, 93);
    let summary = monitor.finish(Outcome::Completed).unwrap();
    let log = read_log(&path).unwrap();
    let logged: Vec<u64> =
        log.events.iter().filter_map(|e| if let Event::Step(s) = e { Some(s.step) } else { None }).collect();
    // 3: the first; 37, 55, 88: an evaluation, a decision, a checkpoint follow; 59: the epoch
    // ends (step 60 opens epoch 1); 73: NaN loss; 95: the run ends.
    let expected = [3, 10, 20, 30, 37, 40, 50, 55, 59, 60, 70, 73, 80, 88, 90, 95];
    assert_eq!(logged, expected);
    assert_eq!(summary.events_logged, log.events.len() as u64);
    // Every other step still counted: the run's figures cover all 93.
    assert_eq!(summary.figures.steps, 93);
    // Each logged step is the one the monitor saw (its own loss), not a neighbour's.
    for e in &log.events {
        if let Event::Step(s) = e {
            assert!(s.step == 73 && s.loss.is_nan() || s.loss == 1.0 / s.step as f64, "{s:?}");
        }
    }
    assert!(Monitor::new(MonitorConfig { log_steps_every: 0, ..Default::default() }, Telemetry::disabled()).is_err());
}
