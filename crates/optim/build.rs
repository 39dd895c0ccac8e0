//! With the `cuda` feature: compiles `kernels/*.cu` to PTX with the pinned nvcc (through
//! cudaforge, as candle-kernels does) and writes `$OUT_DIR/ptx.rs`, one `&str` constant per
//! kernel file. Without it: nothing. See ../shared/CUDA.md for the toolkit (`NVCC`,
//! `CUDA_COMPUTE_CAP=90` on a machine without a GPU).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    cuda::build();
}

#[cfg(feature = "cuda")]
mod cuda {
    pub fn build() {
        println!("cargo::rerun-if-changed=kernels");
        println!("cargo::rerun-if-env-changed=NVCC");
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let ptx = cudaforge::KernelBuilder::new()
            .source_files(["kernels/fused_optim.cu"])
            .arg("-std=c++17")
            .arg("-O3")
            .build_ptx()
            .unwrap_or_else(|e| {
                panic!(
                    "tuneforge-optim (cuda): compiling kernels/fused_optim.cu to PTX failed: {e}\n\
                     Set NVCC (or put nvcc on PATH) and CUDA_COMPUTE_CAP (90 for H100/H200); \
                     ../shared/CUDA.md has the recipe for a machine without a GPU."
                )
            });
        ptx.write(out.join("ptx.rs")).expect("write ptx.rs into OUT_DIR");
    }
}
