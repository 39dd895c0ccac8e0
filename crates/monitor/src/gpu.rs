//! GPU telemetry: the device's name and memory, and the GPU time of each step.
//!
//! [`GpuInfo`] and [`GpuMemory`] are plain data, always compiled. `GpuProbe`, which reads
//! them from the CUDA driver (through candle's re-exported cudarc) and times steps with CUDA
//! events, needs the `cuda` feature.

use serde::{Deserialize, Serialize};

/// What a GPU is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// CUDA ordinal (`cuda:N`).
    pub ordinal: usize,
    /// The driver's name for it, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Memory in all, bytes.
    pub total_bytes: u64,
}

/// A GPU's memory at one moment (all processes, as the driver counts it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuMemory {
    /// In use, bytes (`total - free`).
    pub used_bytes: u64,
    /// Free, bytes.
    pub free_bytes: u64,
    /// In all, bytes.
    pub total_bytes: u64,
}

impl GpuMemory {
    /// From the driver's `(free, total)` pair.
    pub fn from_free_total(free: u64, total: u64) -> Self {
        Self { used_bytes: total.saturating_sub(free), free_bytes: free, total_bytes: total }
    }
}

#[cfg(feature = "cuda")]
pub use probe::GpuProbe;

#[cfg(feature = "cuda")]
mod probe {
    use std::sync::Arc;

    use candle_core::Device;
    use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
    use candle_core::cuda_backend::cudarc::driver::{CudaContext, CudaEvent, CudaStream, DriverError};

    use super::{GpuInfo, GpuMemory};
    use crate::error::{Error, Result};

    /// Reads a CUDA device's name and memory and times steps on its stream.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let device = candle_core::Device::new_cuda(0)?;
    /// let probe = tuneforge_monitor::GpuProbe::for_device(&device)?.expect("a CUDA device");
    /// probe.begin_step()?;
    /// // ... forward, backward, optimiser step on `device` ...
    /// let gpu_seconds = probe.end_step()?;
    /// println!("{} {gpu_seconds:.6} s, {:?}", probe.info().name, probe.memory()?);
    /// # Ok(()) }
    /// ```
    pub struct GpuProbe {
        info: GpuInfo,
        ctx: Arc<CudaContext>,
        stream: Arc<CudaStream>,
        start: CudaEvent,
        end: CudaEvent,
    }

    impl std::fmt::Debug for GpuProbe {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("GpuProbe").field("info", &self.info).finish_non_exhaustive()
        }
    }

    impl GpuProbe {
        /// A probe for `device`'s GPU, or `None` when it is not a CUDA device.
        pub fn for_device(device: &Device) -> Result<Option<Self>> {
            let Device::Cuda(cuda) = device else { return Ok(None) };
            let stream = cuda.cuda_stream();
            let ctx = stream.context().clone();
            let ordinal = ctx.ordinal();
            let err = |what| move |e: DriverError| Error::Gpu { ordinal, what, message: e.to_string() };
            let info = GpuInfo {
                ordinal,
                name: ctx.name().map_err(err("device name"))?,
                compute_capability: ctx.compute_capability().map_err(err("compute capability"))?,
                total_bytes: ctx.total_mem().map_err(err("total memory"))? as u64,
            };
            let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
            let start = ctx.new_event(timing).map_err(err("creating a timing event"))?;
            let end = ctx.new_event(timing).map_err(err("creating a timing event"))?;
            Ok(Some(Self { info, ctx, stream, start, end }))
        }

        /// The device's name, compute capability and memory size.
        pub fn info(&self) -> &GpuInfo {
            &self.info
        }

        fn err(&self, what: &'static str) -> impl Fn(DriverError) -> Error + '_ {
            move |e| Error::Gpu { ordinal: self.info.ordinal, what, message: e.to_string() }
        }

        /// Memory in use and free now (`cuMemGetInfo`).
        pub fn memory(&self) -> Result<GpuMemory> {
            let (free, total) = self.ctx.mem_get_info().map_err(self.err("memory info"))?;
            Ok(GpuMemory::from_free_total(free as u64, total as u64))
        }

        /// Marks the start of a step on the device's stream (no wait).
        pub fn begin_step(&self) -> Result<()> {
            self.start.record(&self.stream).map_err(self.err("recording the step's start event"))
        }

        /// Marks the end of the step and returns the GPU time between the two marks in
        /// seconds: waits until the device has finished the step's work.
        pub fn end_step(&self) -> Result<f64> {
            self.end.record(&self.stream).map_err(self.err("recording the step's end event"))?;
            let ms = self.start.elapsed_ms(&self.end).map_err(self.err("timing the step"))?;
            Ok(f64::from(ms) * 1e-3)
        }
    }
}
