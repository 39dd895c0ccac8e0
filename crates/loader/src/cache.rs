//! An LRU cache of decoded, scaled shards, bounded in bytes.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;

use crate::Result;

/// Counters of a [`ShardCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that had to decode.
    pub misses: u64,
    /// Shards dropped to stay under the byte bound.
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: usize,
    /// The bound.
    pub capacity_bytes: usize,
    /// Shards held now.
    pub shards: usize,
}

struct Inner {
    lru: LruCache<usize, Arc<[f32]>>,
    bytes: usize,
}

/// Decoded shards (runs of consecutive rows as scaled `f32`), least recently used first
/// out when the byte bound would be exceeded. A shard larger than the bound is decoded
/// but not kept. Safe to share between the prefetch worker and its owner.
pub struct ShardCache {
    inner: Mutex<Inner>,
    capacity_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for ShardCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCache").field("stats", &self.stats()).finish()
    }
}

impl ShardCache {
    /// An empty cache holding at most `capacity_bytes` of shard data.
    pub fn new(capacity_bytes: usize) -> Self {
        ShardCache {
            inner: Mutex::new(Inner { lru: LruCache::unbounded(), bytes: 0 }),
            capacity_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// The shard `key`, from the cache or from `decode` (then cached if it fits).
    pub fn get_or_decode(&self, key: usize, decode: impl FnOnce() -> Result<Vec<f32>>) -> Result<Arc<[f32]>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shard) = inner.lru.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(shard.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let shard: Arc<[f32]> = decode()?.into();
        let size = std::mem::size_of_val(&*shard);
        if size <= self.capacity_bytes {
            while inner.bytes + size > self.capacity_bytes {
                match inner.lru.pop_lru() {
                    Some((_, old)) => {
                        inner.bytes -= std::mem::size_of_val(&*old);
                        self.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
            inner.bytes += size;
            inner.lru.put(key, shard.clone());
        }
        Ok(shard)
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: inner.bytes,
            capacity_bytes: self.capacity_bytes,
            shards: inner.lru.len(),
        }
    }
}
