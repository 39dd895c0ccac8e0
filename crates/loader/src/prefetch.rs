//! A background thread that keeps the next batches ready.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::batch::{Batch, Loader};
use crate::cache::{CacheStats, ShardCache};
use crate::{Error, Result};

/// A [`Loader`] running on its own thread, `depth` batches ahead of the caller.
///
/// The worker builds batches of the most recently requested size. When the caller changes
/// the size, batches already built are re-cut to the new size (rows are copied once), so
/// the sequence of rows is exactly what a plain [`Loader`] would give for the same sizes:
/// every row once per epoch, in the seeded order, no batch spanning two epochs.
///
/// Dropping the prefetcher stops the worker promptly (within one batch build). An error
/// in the worker (e.g. a failing read) is returned by the next call that reaches it; a
/// panic in the worker becomes [`Error::Worker`].
pub struct Prefetcher {
    rx: Option<Receiver<Result<Batch>>>,
    want: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    cache: Arc<ShardCache>,
    pending: VecDeque<(Batch, usize)>,
    finished: bool,
}

impl std::fmt::Debug for Prefetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher").field("pending", &self.pending.len()).finish()
    }
}

impl Prefetcher {
    pub(crate) fn spawn(mut loader: Loader, depth: usize) -> Result<Self> {
        if depth == 0 {
            return Err(Error::Invalid { what: "prefetch depth", why: "it must be at least 1".into() });
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(depth);
        // The worker starts with a guess; the first `next_batch` corrects it.
        let want = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let cache = loader.gatherer.cache.clone();
        let (w, s) = (want.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("tuneforge-prefetch".into())
            .spawn(move || worker(&mut loader, &tx, &w, &s))
            .map_err(|e| Error::Worker(format!("cannot start the prefetch thread: {e}")))?;
        Ok(Prefetcher {
            rx: Some(rx),
            want,
            stop,
            handle: Some(handle),
            cache,
            pending: VecDeque::new(),
            finished: false,
        })
    }

    /// The next batch of at most `batch_size` rows (fewer only at the end of an epoch).
    pub fn next_batch(&mut self, batch_size: usize) -> Result<Batch> {
        if batch_size == 0 {
            return Err(Error::Invalid { what: "batch size", why: "it must be at least 1".into() });
        }
        if self.want.swap(batch_size, Ordering::Relaxed) == 0
            && let Some(h) = &self.handle
        {
            h.thread().unpark();
        }
        if self.pending.is_empty() {
            self.receive()?;
        }
        // Fast path: the next ready batch is exactly what was asked for.
        if let Some((front, 0)) = self.pending.front()
            && (front.len() == batch_size || (front.len() < batch_size && front.end_of_epoch))
        {
            let (b, _) = self.pending.pop_front().expect("non-empty");
            return Ok(b);
        }
        // Re-cut: copy rows from ready batches until full or the epoch ends.
        let mut out = Batch::default();
        loop {
            if self.pending.is_empty() {
                self.receive()?;
            }
            let (chunk, offset) = self.pending.front_mut().expect("non-empty");
            if out.is_empty() {
                out.epoch = chunk.epoch;
                out.feature_shape.clone_from(&chunk.feature_shape);
            }
            let f = chunk.feature_len();
            let take = (batch_size - out.len()).min(chunk.len() - *offset);
            let range = *offset..*offset + take;
            out.rows.extend_from_slice(&chunk.rows[range.clone()]);
            out.labels.extend_from_slice(&chunk.labels[range.clone()]);
            out.features.extend_from_slice(&chunk.features[range.start * f..range.end * f]);
            *offset += take;
            let chunk_done = *offset == chunk.len();
            let epoch_done = chunk_done && chunk.end_of_epoch;
            if chunk_done {
                self.pending.pop_front();
            }
            if epoch_done {
                out.end_of_epoch = true;
                return Ok(out);
            }
            if out.len() == batch_size {
                return Ok(out);
            }
        }
    }

    fn receive(&mut self) -> Result<()> {
        if self.finished {
            return Err(Error::Worker("the worker stopped after an earlier error".into()));
        }
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        match rx.recv() {
            Ok(Ok(batch)) => {
                self.pending.push_back((batch, 0));
                Ok(())
            }
            Ok(Err(e)) => {
                self.finished = true;
                Err(e)
            }
            Err(_) => {
                self.finished = true;
                Err(Error::Worker("the worker thread ended (panicked)".into()))
            }
        }
    }

    /// Shard cache counters (shared with the worker).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn worker(loader: &mut Loader, tx: &SyncSender<Result<Batch>>, want: &AtomicUsize, stop: &AtomicBool) {
    // Wait for the first request so the first batches have the caller's size.
    while want.load(Ordering::Relaxed) == 0 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let size = want.load(Ordering::Relaxed);
        let mut batch = Batch::default();
        let result = loader.next_batch_into(size, &mut batch).map(|()| batch);
        let failed = result.is_err();
        // Blocks while the queue is full; fails at once when the receiver is dropped.
        if tx.send(result).is_err() {
            return;
        }
        if failed {
            return;
        }
    }
}
