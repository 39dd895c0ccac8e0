//! Seeded epoch orders and variable-size batches of row indices.

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::{Error, Result};

/// Hands out row indices batch by batch, epoch after epoch.
///
/// Each epoch's order is a function of `(seed, epoch)` only — a fresh Fisher–Yates shuffle
/// of `0..len` — so a run resumed at epoch `e` sees the same order again. The batch size
/// may change between any two calls; an epoch still visits every row exactly once, and a
/// batch never spans two epochs (the last batch of an epoch may be short).
#[derive(Debug, Clone)]
pub struct EpochSampler {
    len: usize,
    seed: u64,
    shuffle: bool,
    epoch: u64,
    order: Vec<u32>,
    pos: usize,
}

/// One batch of indices from an [`EpochSampler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw<'a> {
    /// The epoch these rows belong to (0-based).
    pub epoch: u64,
    /// The rows, in sampling order.
    pub rows: &'a [u32],
    /// `true` if this batch ends its epoch.
    pub end_of_epoch: bool,
}

impl EpochSampler {
    /// A sampler over `len` rows. With `shuffle == false` every epoch is `0..len` in order.
    pub fn new(len: usize, seed: u64, shuffle: bool) -> Result<Self> {
        if len == 0 {
            return Err(Error::Invalid { what: "dataset", why: "it has no rows to sample".into() });
        }
        if len > u32::MAX as usize {
            return Err(Error::Invalid { what: "dataset", why: format!("{len} rows exceed the 2^32 supported") });
        }
        let mut s = EpochSampler { len, seed, shuffle, epoch: 0, order: Vec::new(), pos: 0 };
        s.start_epoch(0);
        Ok(s)
    }

    /// The epoch the next batch comes from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Rows already drawn in the current epoch.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Number of rows per epoch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a sampler has at least one row.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Jumps to `position` rows into `epoch` (for resuming a run).
    pub fn seek(&mut self, epoch: u64, position: usize) -> Result<()> {
        if position > self.len {
            return Err(Error::Invalid {
                what: "sampler position",
                why: format!("{position} is past the epoch's {} rows", self.len),
            });
        }
        self.start_epoch(epoch);
        self.pos = position;
        Ok(())
    }

    /// The order of rows in `epoch`.
    pub fn order_of(&self, epoch: u64) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.len as u32).collect();
        if self.shuffle {
            let mut rng = rand::rngs::StdRng::seed_from_u64(mix(self.seed, epoch));
            order.shuffle(&mut rng);
        }
        order
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.order = self.order_of(epoch);
        self.pos = 0;
    }

    /// The next at most `batch_size` rows (fewer only at the end of an epoch).
    pub fn next(&mut self, batch_size: usize) -> Result<Draw<'_>> {
        if batch_size == 0 {
            return Err(Error::Invalid { what: "batch size", why: "it must be at least 1".into() });
        }
        if self.pos == self.len {
            self.start_epoch(self.epoch + 1);
        }
        let start = self.pos;
        let end = (start + batch_size).min(self.len);
        self.pos = end;
        Ok(Draw { epoch: self.epoch, rows: &self.order[start..end], end_of_epoch: end == self.len })
    }
}

/// SplitMix64 of the seed and epoch, so nearby seeds and epochs give unrelated streams.
fn mix(seed: u64, epoch: u64) -> u64 {
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
