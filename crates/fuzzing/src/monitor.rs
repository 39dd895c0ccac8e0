//! Target of the monitor: the JSON-lines event log (`events.jsonl`).

use std::path::Path;

use tuneforge_monitor::{Event, LogContents, LogFollower, TornTail, parse_log};

use crate::{Verdict, same, scratch};

/// An event log as `tuneforge_monitor::read_log` reads it. In an accepted log, a torn tail
/// is the last non-blank line and every other non-blank line is an event; each event
/// serialises to JSON that parses back and serialises to the same JSON (floats, `NaN` and
/// infinities included); the re-serialised log reads back with the same events.
///
/// The same bytes followed as they grow (`LogFollower`, what `report --watch` reads),
/// written in three pieces cut where the input's first byte says: accepted and refused as
/// `parse_log` accepts and refuses them, with the same events and torn tail, except that a
/// last line without its `\n` is pending even when it parses (the follower's documented
/// difference).
pub fn event_log(data: &[u8]) -> Verdict {
    let path = Path::new("events.jsonl");
    let whole = parse_log(path, data);
    follow_in_pieces(data, &whole);
    let Ok(log) = whole else { return Verdict::Rejected };
    let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let non_blank = lines.iter().filter(|l| !blank(l)).count();
    same(
        "events + torn tail = non-blank lines",
        &(log.events.len() + usize::from(log.torn_tail.is_some())),
        &non_blank,
    );
    if let Some(torn) = &log.torn_tail {
        let last = lines.iter().rposition(|l| !blank(l)).map(|i| i as u64 + 1);
        same("the torn tail is the last non-blank line", &Some(torn.line), &last);
    }

    let mut text = String::new();
    for event in &log.events {
        let _ = event.step();
        let first = serde_json::to_string(event).expect("an event serialises");
        let back: Event = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("invariant broken: a serialised event does not parse: {e}\n{first}"));
        let second = serde_json::to_string(&back).expect("an event serialises");
        same("event → JSON → event → JSON", &second, &first);
        text.push_str(&first);
        text.push('\n');
    }
    let again = parse_log(path, text.as_bytes())
        .unwrap_or_else(|e| panic!("invariant broken: a re-serialised log does not parse: {e}"));
    same("re-serialised log: events", &again.events.len(), &log.events.len());
    same("re-serialised log: torn tail", &again.torn_tail, &None);
    Verdict::Accepted
}

/// `data` appended to a file in three pieces, a follower reading after each.
fn follow_in_pieces(data: &[u8], whole: &tuneforge_monitor::Result<LogContents>) {
    let cut = data.first().map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let pieces = [&data[..cut / 2], &data[cut / 2..cut], &data[cut..]];
    let path = scratch::write("follow.jsonl", b"");
    let mut follower = LogFollower::new(&path);
    let mut events = Vec::new();
    let mut refused = false;
    for piece in pieces {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("the scratch file");
        std::io::Write::write_all(&mut file, piece).expect("appending to the scratch file");
        match follower.read_new() {
            Ok(follow) => {
                same("no restart while the file grows", &follow.restarted, &false);
                events.extend(follow.events);
            }
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    match whole {
        Ok(log) => {
            same("follower accepts what parse_log accepts", &refused, &false);
            let head = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let tail = &data[head..];
            let (expected, pending) = match tail.iter().all(u8::is_ascii_whitespace) {
                true => (&log.events[..], log.torn_tail.clone()),
                false => {
                    let line = data[..head].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
                    // An unterminated tail that parsed is read_log's last event.
                    let n = log.events.len() - usize::from(log.torn_tail.is_none());
                    (&log.events[..n], Some(TornTail { line, bytes: tail.len() }))
                }
            };
            let json = |e: &[Event]| serde_json::to_string(e).expect("events serialise");
            same("follower's events", &json(&events), &json(expected));
            same("follower's pending line", &follower.pending(), &pending.as_ref());
        }
        Err(_) => same("follower refuses what parse_log refuses", &refused, &true),
    }
}
