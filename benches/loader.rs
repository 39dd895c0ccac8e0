//! Loader throughput on Fashion-MNIST train (60000 × 784).
//!
//! `cargo bench --bench loader` (data from `TUNEFORGE_DATA`, default `../shared/datasets`).
//!
//! - `warm_epoch_b128`: one shuffled epoch of `/255`-scaled `f32` batches of 128 from a
//!   loader whose shard cache already holds the dataset (the steady state of training).
//! - `warm_epoch_b128_prefetch`: the same through the prefetch thread.
//! - `cold_epoch_b128`: inflate the `.gz` files into an empty cache directory, map them,
//!   and run the first epoch (the first run on a new machine).
//!
//! Throughput is reported in bytes of `f32` features produced (188.16 MB per epoch).

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tuneforge::loader::{Batch, DataDirs, Dataset, GzCache, Known, Loader, LoaderConfig, Scale};

const BATCH: usize = 128;

fn data_dirs() -> DataDirs {
    let dir = std::env::var_os("TUNEFORGE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"));
    DataDirs::new(vec![dir])
}

fn config() -> LoaderConfig {
    LoaderConfig { seed: 1, scale: Scale::divide(255.0), ..LoaderConfig::default() }
}

fn run_epoch(loader: &mut Loader, batch: &mut Batch) -> usize {
    let mut batches = 0;
    loop {
        loader.next_batch_into(BATCH, batch).expect("batch");
        batches += 1;
        if batch.end_of_epoch {
            return batches;
        }
    }
}

fn bench(c: &mut Criterion) {
    let dirs = data_dirs();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = GzCache::new(cache_dir.path());
    let train: Arc<dyn Dataset> = dirs.open(Known::FashionMnistTrain, &cache).expect("Fashion-MNIST train");
    let bytes = (train.len() * train.feature_len() * 4) as u64;

    let mut group = c.benchmark_group("loader/fashion-mnist-train");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(20);

    let mut loader = Loader::new(train.clone(), config()).expect("loader");
    let mut batch = Batch::default();
    run_epoch(&mut loader, &mut batch); // fill the shard cache
    group.bench_function("warm_epoch_b128", |b| b.iter(|| run_epoch(&mut loader, &mut batch)));
    let stats = loader.cache_stats();
    assert_eq!(stats.evictions, 0, "the default cache must hold Fashion-MNIST train: {stats:?}");

    let mut pre = Loader::new(train.clone(), config()).expect("loader").prefetch(8).expect("prefetch");
    loop {
        if pre.next_batch(BATCH).expect("batch").end_of_epoch {
            break;
        }
    }
    group.bench_function("warm_epoch_b128_prefetch", |b| {
        b.iter(|| {
            loop {
                if pre.next_batch(BATCH).expect("batch").end_of_epoch {
                    break;
                }
            }
        })
    });
    drop(pre);

    group.sample_size(10);
    group.bench_function("cold_epoch_b128", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let ds = dirs.open(Known::FashionMnistTrain, &GzCache::new(dir.path())).expect("open");
            let mut loader = Loader::new(ds, config()).expect("loader");
            run_epoch(&mut loader, &mut Batch::default())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
