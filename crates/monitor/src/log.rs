//! The append-only JSONL event log of a run, and its reader.
//!
//! Writing: every event is serialised into a reused buffer and handed to the kernel with one
//! `write` call ending in `\n`, so a crash (of the process) loses at most the line being
//! written. [`EventLog::sync`] fsyncs the file; [`Monitor`](crate::Monitor) calls it with every
//! checkpoint and at the end of the run, so a power cut loses at most the events since the
//! last checkpoint.
//!
//! Reading: [`read_log`] returns every event; a last line that does not parse (a torn write)
//! is reported in [`LogContents::torn_tail`] and otherwise ignored, while a bad line anywhere
//! else is [`Error::CorruptLine`] with its line number.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::event::Event;

/// An append-only event log file.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    events: u64,
    repaired: u64,
}

impl EventLog {
    /// Opens `path` for appending, creating it (and not its parent folder) if needed.
    ///
    /// If the file ends in a torn line (a crash while writing), the torn bytes are cut off first
    /// so that new events start on a line of their own; [`EventLog::repaired_bytes`] says how
    /// many were cut.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let cut = repair_tail(&mut file).map_err(|e| Error::io(&path, e))?;
        if cut > 0 {
            tracing::warn!(path = %path.display(), bytes = cut, "cut a torn last line off the event log");
        }
        Ok(EventLog { path, file, buf: Vec::with_capacity(512), events: 0, repaired: cut })
    }

    /// Appends one event as one line and hands it to the kernel (no fsync).
    pub fn append(&mut self, event: &Event) -> Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, event).map_err(|source| Error::Serialize { source })?;
        self.buf.push(b'\n');
        self.file.write_all(&self.buf).map_err(|e| Error::io(&self.path, e))?;
        self.events += 1;
        Ok(())
    }

    /// Forces what was written to stable storage (`fsync` of the data).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of a torn last line cut off when the file was opened (0 if it ended cleanly).
    pub fn repaired_bytes(&self) -> u64 {
        self.repaired
    }

    /// Events appended through this handle.
    pub fn events_written(&self) -> u64 {
        self.events
    }
}

/// If the file does not end in `\n`, truncates it after its last `\n` (or to empty). Returns
/// the number of bytes removed.
fn repair_tail(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Scan backwards in blocks for the last newline.
    let mut end = len;
    let mut block = [0u8; 4096];
    let mut last_newline: Option<u64> = None;
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            last_newline = Some(start + i as u64);
            break;
        }
        end = start;
    }
    let keep = last_newline.map_or(0, |i| i + 1);
    if keep == len {
        return Ok(0);
    }
    file.set_len(keep)?;
    Ok(len - keep)
}

/// What [`read_log`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogContents {
    /// Every complete event, in file order.
    pub events: Vec<Event>,
    /// The last line, when it did not parse (a torn write).
    pub torn_tail: Option<TornTail>,
}

/// A last line that did not parse: what a crash mid-write leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// 1-based line number.
    pub line: u64,
    /// Its length in bytes.
    pub bytes: usize,
}

/// Reads a whole event log. Blank lines are skipped; a last line that does not parse (a torn
/// write) is reported in [`LogContents::torn_tail`]; a bad line anywhere else is
/// [`Error::CorruptLine`] with its 1-based line number.
pub fn read_log(path: impl AsRef<Path>) -> Result<LogContents> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_log(path, &bytes)
}

/// [`read_log`] on bytes already in memory; `path` only names them in errors.
pub fn parse_log(path: &Path, bytes: &[u8]) -> Result<LogContents> {
    let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let last = lines.iter().rposition(|l| !blank(l));
    let mut out = LogContents::default();
    for (i, line) in lines.iter().enumerate() {
        if blank(line) {
            continue;
        }
        let number = i as u64 + 1;
        match serde_json::from_slice::<Event>(line) {
            Ok(event) => out.events.push(event),
            Err(_) if Some(i) == last => {
                out.torn_tail = Some(TornTail { line: number, bytes: line.len() });
            }
            Err(source) => {
                return Err(Error::CorruptLine { path: path.to_path_buf(), line: number, source });
            }
        }
    }
    Ok(out)
}

/// Reads an event log as it grows, a call at a time: each [`read_new`](Self::read_new)
/// parses only the lines appended since the last call, so following a long run costs what
/// reading its log once costs. The events it returns, over all calls, are those [`read_log`]
/// returns at that moment, with one difference: a last line without its `\n` is not an
/// event yet, even when it parses (read_log counts one that parses; the line may go on —
/// a JSON object followed by more bytes is no event — and [`EventLog::open`] cuts such a
/// tail before appending). It is kept for the next call and reported by
/// [`pending`](Self::pending), as read_log reports an unparsable one in
/// [`torn_tail`](LogContents::torn_tail); so is a last line that does not parse, until a line
/// follows it (then it is [`Error::CorruptLine`], as in read_log). The writer ends every
/// line with its `\n` in the same `write`, so only a crash leaves a line without one. A file that became shorter than what was read
/// (replaced) starts the reading over: [`Follow::restarted`].
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    /// Bytes consumed: up to and including the `\n` of the last line returned.
    offset: u64,
    /// Lines consumed.
    lines: u64,
    /// What follows `offset`, as last read: an unfinished or unparsable last line.
    pending: Option<TornTail>,
}

/// What one [`LogFollower::read_new`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Follow {
    /// The events of the lines appended since the last call, in file order.
    pub events: Vec<Event>,
    /// The file was shorter than what had been read: `events` are the whole file's again.
    pub restarted: bool,
}

impl LogFollower {
    /// A follower of `path` that has read nothing yet (the file need not exist yet).
    pub fn new(path: impl AsRef<Path>) -> Self {
        LogFollower { path: path.as_ref().to_path_buf(), offset: 0, lines: 0, pending: None }
    }

    /// The events of the lines completed since the last call. A missing file has none.
    pub fn read_new(&mut self) -> Result<Follow> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Follow::default()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(&self.path, e))?.len();
        let restarted = len < self.offset;
        if restarted {
            (self.offset, self.lines) = (0, 0);
        }
        let mut bytes = Vec::with_capacity((len - self.offset) as usize);
        file.seek(SeekFrom::Start(self.offset)).map_err(|e| Error::io(&self.path, e))?;
        file.take(len - self.offset).read_to_end(&mut bytes).map_err(|e| Error::io(&self.path, e))?;
        let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
        let mut out = Follow { events: Vec::new(), restarted };
        let mut start = 0;
        self.pending = None;
        while start < bytes.len() {
            let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') else {
                // No `\n` yet: kept for later, even when it parses (see the type's doc).
                let rest = &bytes[start..];
                if !blank(rest) {
                    self.pending = Some(TornTail { line: self.lines + 1, bytes: rest.len() });
                }
                break;
            };
            let line = &bytes[start..start + nl];
            let number = self.lines + 1;
            if !blank(line) {
                match serde_json::from_slice::<Event>(line) {
                    Ok(event) => out.events.push(event),
                    // The last line with content: torn, as read_log has it, unless more follows.
                    Err(_) if blank(&bytes[start + nl + 1..]) => {
                        self.pending = Some(TornTail { line: number, bytes: line.len() });
                        break;
                    }
                    Err(source) => return Err(Error::CorruptLine { path: self.path.clone(), line: number, source }),
                }
            }
            start += nl + 1;
            self.offset += nl as u64 + 1;
            self.lines += 1;
        }
        Ok(out)
    }

    /// The last line as last read when it is not an event yet: unfinished (no `\n`), or
    /// not parsable.
    pub fn pending(&self) -> Option<&TornTail> {
        self.pending.as_ref()
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
