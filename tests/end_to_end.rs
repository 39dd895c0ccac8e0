//! End-to-end tests through the `tuneforge` facade. They grow with the pipeline; today the
//! loader is the whole of it.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use tuneforge::loader::{DataDirs, GzCache, Known, Loader, LoaderConfig};

#[test]
fn the_default_dataset_is_committed_and_batches_through_the_facade() {
    let dirs = DataDirs::new(vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets")]);
    let tmp = tempfile::tempdir().unwrap();
    let digits = dirs.open(Known::Digits, &GzCache::new(tmp.path())).unwrap();
    let mut loader = Loader::new(digits, LoaderConfig::default()).unwrap();
    let mut rows = 0;
    let mut max = 0f32;
    loop {
        let b = loader.next_batch(100).unwrap();
        rows += b.len();
        max = b.features.iter().copied().fold(max, f32::max);
        assert!(b.labels.iter().all(|&l| l < 10));
        if b.end_of_epoch {
            break;
        }
    }
    assert_eq!(rows, 1797);
    // Digits pixels are 0..=16 (unscaled).
    assert_eq!(max, 16.0);
}
