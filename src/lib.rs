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

/// CPU time (user + system) this process has used so far, in seconds, all threads
/// together: over a timed stretch, its increase ÷ the wall time is how many cores were
/// busy (`cargo xtask bench-step` reports it per phase). `None` where `getrusage` is not
/// available or fails.
pub fn process_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes one `rusage` into the pointer it is given, which points
        // at one (zeroed) `rusage`; it is read only when the call succeeded.
        let usage = unsafe {
            if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
                return None;
            }
            usage.assume_init()
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Some(secs(usage.ru_utime) + secs(usage.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    /// Fixed work (10⁹ multiply-adds) on one thread, then the same work on each of
    /// two threads: the second costs about twice the CPU time — every thread is counted —
    /// however busy the machine is (CPU time is spent on work, not on waiting).
    #[test]
    #[cfg(unix)]
    fn process_cpu_seconds_counts_every_thread() {
        // A chain of multiply-adds, ~0.1 s (CPU time is precise to microseconds on Linux).
        let work = || {
            let mut x = 1u64;
            for i in 0..std::hint::black_box(1_000_000_000u64) {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
            }
            std::hint::black_box(x)
        };
        let t0 = super::process_cpu_seconds().unwrap();
        work();
        let t1 = super::process_cpu_seconds().unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(work);
            }
        });
        let t2 = super::process_cpu_seconds().unwrap();
        let (one, two) = (t1 - t0, t2 - t1);
        assert!(one > 0.0, "no CPU time counted for {one} s of work");
        assert!(two > 1.5 * one && two < 3.0 * one, "one thread {one} s, two threads {two} s");
    }
}
