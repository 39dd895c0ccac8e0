//! Building batches: seeded order, any batch size, scaled `f32` features from cached shards.

use std::sync::Arc;

use rayon::prelude::*;

use crate::cache::{CacheStats, ShardCache};
use crate::sampler::EpochSampler;
use crate::{Dataset, Error, Result, Scale};

/// Batches of at least this many values are gathered by rayon's threads (a batch of 128
/// Fashion-MNIST images is 100,352 values; digits' batches of 32 × 64 stay on one thread).
const PARALLEL_VALUES: usize = 1 << 16;

/// How a [`Loader`] samples and decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Seed of the epoch orders.
    pub seed: u64,
    /// Shuffle each epoch (`false`: rows in file order, e.g. for evaluation).
    pub shuffle: bool,
    /// Applied to every feature as batches are built (e.g. `Scale::divide(255.0)`).
    pub scale: Scale,
    /// Rows per cached shard. Small shards waste less when the cache cannot hold the
    /// whole dataset; large shards mean fewer cache entries.
    pub shard_rows: usize,
    /// Byte bound of the shard cache (decoded, scaled `f32`). `0` disables caching:
    /// rows are decoded straight into each batch.
    pub cache_bytes: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig { seed: 0, shuffle: true, scale: Scale::IDENTITY, shard_rows: 256, cache_bytes: 512 << 20 }
    }
}

/// A batch of rows: contiguous `f32` features (row-major) and `u32` labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Epoch the rows come from.
    pub epoch: u64,
    /// `true` if this is the last batch of its epoch.
    pub end_of_epoch: bool,
    /// Dataset row of each batch row.
    pub rows: Vec<u32>,
    /// `rows.len() * feature_len` scaled features.
    pub features: Vec<f32>,
    /// One label per row.
    pub labels: Vec<u32>,
    /// Shape of one row's features.
    pub feature_shape: Vec<usize>,
}

impl Batch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` when the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per row.
    pub fn feature_len(&self) -> usize {
        self.feature_shape.iter().product()
    }

    /// Features of batch row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let f = self.feature_len();
        &self.features[i * f..(i + 1) * f]
    }
}

/// Copies rows of a dataset into batches, through the shard cache.
#[derive(Clone)]
pub(crate) struct Gatherer {
    pub(crate) dataset: Arc<dyn Dataset>,
    pub(crate) cache: Arc<ShardCache>,
    pub(crate) scale: Scale,
    pub(crate) shard_rows: usize,
    pub(crate) use_cache: bool,
}

impl Gatherer {
    pub(crate) fn gather(&self, rows: &[u32], out: &mut Batch) -> Result<()> {
        let ds = &*self.dataset;
        let f = ds.feature_len();
        let n = ds.len();
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= n) {
            return Err(Error::Invalid { what: "row index", why: format!("row {bad} of a dataset with {n} rows") });
        }
        out.rows.clear();
        out.rows.extend_from_slice(rows);
        out.labels.clear();
        out.labels.extend(rows.iter().map(|&r| ds.label(r as usize)));
        out.feature_shape.clear();
        out.feature_shape.extend_from_slice(ds.feature_shape());
        out.features.resize(rows.len() * f, 0.0);
        if f == 0 {
            return Ok(());
        }
        let sr = self.shard_rows;
        let copy_row = |dst: &mut [f32], r: u32| -> Result<()> {
            let r = r as usize;
            if !self.use_cache {
                ds.read_row(r, dst)?;
                self.scale.apply(dst);
                return Ok(());
            }
            let key = r / sr;
            let shard = self.cache.get_or_decode(key, || {
                let start = key * sr;
                let end = (start + sr).min(n);
                let mut buf = vec![0f32; (end - start) * f];
                ds.read_rows(start, end, &mut buf)?;
                self.scale.apply(&mut buf);
                Ok(buf)
            })?;
            let off = (r - key * sr) * f;
            dst.copy_from_slice(&shard[off..off + f]);
            Ok(())
        };
        if rows.len() * f >= PARALLEL_VALUES {
            // Rows are independent: rayon's threads copy them (a shard missing from the cache
            // is decoded once, under the cache's lock).
            out.features.par_chunks_mut(f).zip(rows.par_iter()).try_for_each(|(dst, &r)| copy_row(dst, r))?;
        } else {
            out.features.chunks_exact_mut(f).zip(rows).try_for_each(|(dst, &r)| copy_row(dst, r))?;
        }
        Ok(())
    }
}

/// Batches from a [`Dataset`]: a seeded [`EpochSampler`] plus an LRU [`ShardCache`].
///
/// ```
/// use std::sync::Arc;
/// use tuneforge_loader::{CsvDataset, CsvOptions, Loader, LoaderConfig};
/// let csv = "a,b,label\n1,2,x\n3,4,y\n5,6,x\n";
/// let data = tuneforge_loader::read_csv_from("t.csv".as_ref(), csv.as_bytes(), &CsvOptions::with_label("label"))?;
/// let mut loader = Loader::new(Arc::new(CsvDataset::new(data)?), LoaderConfig::default())?;
/// let first = loader.next_batch(2)?;   // batch sizes may change between any two calls
/// let second = loader.next_batch(5)?;  // ...but never cross an epoch boundary
/// assert_eq!((first.len(), second.len()), (2, 1));
/// assert!(second.end_of_epoch);
/// # Ok::<(), tuneforge_loader::Error>(())
/// ```
pub struct Loader {
    pub(crate) gatherer: Gatherer,
    pub(crate) sampler: EpochSampler,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("rows", &self.gatherer.dataset.len())
            .field("epoch", &self.sampler.epoch())
            .field("position", &self.sampler.position())
            .finish()
    }
}

impl Loader {
    /// A loader over `dataset`.
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig) -> Result<Self> {
        if config.shard_rows == 0 {
            return Err(Error::Invalid { what: "shard_rows", why: "it must be at least 1".into() });
        }
        let sampler = EpochSampler::new(dataset.len(), config.seed, config.shuffle)?;
        let gatherer = Gatherer {
            dataset,
            cache: Arc::new(ShardCache::new(config.cache_bytes)),
            scale: config.scale,
            shard_rows: config.shard_rows,
            use_cache: config.cache_bytes > 0,
        };
        Ok(Loader { gatherer, sampler })
    }

    /// The next batch of at most `batch_size` rows (fewer only at the end of an epoch).
    pub fn next_batch(&mut self, batch_size: usize) -> Result<Batch> {
        let mut batch = Batch::default();
        self.next_batch_into(batch_size, &mut batch)?;
        Ok(batch)
    }

    /// Like [`Loader::next_batch`], reusing `out`'s buffers.
    pub fn next_batch_into(&mut self, batch_size: usize, out: &mut Batch) -> Result<()> {
        let draw = self.sampler.next(batch_size)?;
        out.epoch = draw.epoch;
        out.end_of_epoch = draw.end_of_epoch;
        self.gatherer.gather(draw.rows, out)
    }

    /// The given rows as a batch (epoch 0, not end of epoch), e.g. for evaluation.
    pub fn gather(&self, rows: &[u32], out: &mut Batch) -> Result<()> {
        out.epoch = 0;
        out.end_of_epoch = false;
        self.gatherer.gather(rows, out)
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.gatherer.dataset
    }

    /// The sampler (epoch, position; `seek` to resume).
    pub fn sampler(&mut self) -> &mut EpochSampler {
        &mut self.sampler
    }

    /// Epoch the next batch comes from.
    pub fn epoch(&self) -> u64 {
        self.sampler.epoch()
    }

    /// Rows of the current epoch already drawn (with [`Loader::epoch`], what
    /// `sampler().seek` takes to resume).
    pub fn position(&self) -> usize {
        self.sampler.position()
    }

    /// Shard cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.gatherer.cache.stats()
    }

    /// Moves the loader to a background thread that keeps `depth` batches ready.
    pub fn prefetch(self, depth: usize) -> Result<crate::Prefetcher> {
        crate::Prefetcher::spawn(self, depth)
    }
}
