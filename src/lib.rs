//! `tuneforge`: train candle networks and tune them while they train.
//!
//! This facade re-exports the pipeline crates so that one dependency brings them all:
//! [`loader`], [`prep`], [`features`], [`model`], [`optim`], [`eval`], [`monitor`] and
//! [`agent`]. Each is also usable alone; see `docs/ARCHITECTURE.md`.

pub use tuneforge_agent as agent;
pub use tuneforge_eval as eval;
pub use tuneforge_features as features;
pub use tuneforge_loader as loader;
pub use tuneforge_model as model;
pub use tuneforge_monitor as monitor;
pub use tuneforge_optim as optim;
pub use tuneforge_prep as prep;

/// Tunes glibc's allocator for training, for **binaries** to call once at start-up (a
/// library must not change process-wide settings): freed multi-megabyte tensors stay in
/// the heap for reuse instead of being unmapped and page-faulted back in on the next step.
///
/// Sets `M_MMAP_THRESHOLD` and `M_TOP_PAD` to 256 MiB and `M_TRIM_THRESHOLD` to 1 GiB, as
/// the `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TOP_PAD_` / `MALLOC_TRIM_THRESHOLD_` environment
/// variables would. Measured on 2 cores (`cargo bench --bench train_step`, see
/// docs/benchmarks.md): a seed-cnn training step at batch 128 went from 173 ms to 98 ms and
/// widening a 1024-wide layer from 23 ms to 9 ms. The cost is memory: up to ~1 GiB of freed
/// heap may stay mapped. Returns `false` (and does nothing) off Linux/glibc.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time
        // (glibc serialises it with the arena locks).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20) == 1
                && libc::mallopt(libc::M_TOP_PAD, 256 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
