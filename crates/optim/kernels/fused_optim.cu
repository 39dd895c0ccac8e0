// Multi-tensor fused optimiser steps for tuneforge-optim (CUDA).
//
// One launch updates every parameter tensor of a step: the host passes a table of device
// pointers (up to TF_MAX_TENSORS tensors; more are split over several launches) by value as
// the kernel's only argument, and each block walks chunks of TF_CHUNK elements of the
// concatenated parameters. Compiled to PTX at build time (build.rs, pinned nvcc).
//
// Arithmetic: every operation is an explicitly rounded f32 intrinsic in the order of the CPU
// kernels in src/kernels.rs (no contraction into fused multiply-adds, IEEE division and
// square root), so a CUDA step gives the same bits as the CPU step; a moment that falls
// below FLT_MIN is flushed to 0 exactly as on the CPU.
//
// The layouts of TfAdamArgs and TfSgdArgs must match the #[repr(C)] structs in
// src/cuda.rs field for field.

#include <float.h>
#include <stdint.h>

#define TF_MAX_TENSORS 32
#define TF_CHUNK 4096

struct TfAdamArgs {
    uint64_t p[TF_MAX_TENSORS];
    uint64_t g[TF_MAX_TENSORS];
    uint64_t m[TF_MAX_TENSORS];
    uint64_t v[TF_MAX_TENSORS];
    // Element count of each tensor, and the exclusive running total of chunks (tensor t
    // owns chunks chunk_end[t-1] .. chunk_end[t]).
    uint64_t n[TF_MAX_TENSORS];
    uint64_t chunk_end[TF_MAX_TENSORS];
    // Bias corrections 1/(1-beta^t), per tensor (each parameter counts its own steps).
    float scale_m[TF_MAX_TENSORS];
    float scale_v[TF_MAX_TENSORS];
    uint32_t count;
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float decay, l2, lr, eps;
};

struct TfSgdArgs {
    uint64_t p[TF_MAX_TENSORS];
    uint64_t g[TF_MAX_TENSORS];
    uint64_t buf[TF_MAX_TENSORS];  // 0 when momentum is 0
    uint64_t n[TF_MAX_TENSORS];
    uint64_t chunk_end[TF_MAX_TENSORS];
    uint32_t count;
    float lr, momentum, weight_decay;
    uint32_t nesterov;
};

__device__ __forceinline__ float tf_flush(float x) {
    return fabsf(x) < FLT_MIN ? 0.0f : x;
}

// Chunk c of the concatenated tensors: its tensor t and its elements begin .. end of t.
struct TfChunk {
    uint32_t t;
    uint64_t begin, end;
};

// The owner is found by a linear scan of the argument table (count is at most 32).
__device__ __forceinline__ TfChunk tf_chunk(const uint64_t* chunk_end, const uint64_t* n, uint32_t count, uint64_t c) {
    uint32_t t = 0;
    while (t + 1 < count && c >= chunk_end[t]) ++t;
    const uint64_t first = t == 0 ? 0 : chunk_end[t - 1];
    const uint64_t begin = (c - first) * TF_CHUNK;
    return TfChunk{t, begin, min(begin + TF_CHUNK, n[t])};
}

extern "C" __global__ void tf_adam_multi(const TfAdamArgs a) {
    const uint64_t chunks = a.chunk_end[a.count - 1];
    for (uint64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
        const TfChunk k = tf_chunk(a.chunk_end, a.n, a.count, c);
        const uint32_t t = k.t;
        float* p = reinterpret_cast<float*>(a.p[t]);
        const float* g = reinterpret_cast<const float*>(a.g[t]);
        float* m = reinterpret_cast<float*>(a.m[t]);
        float* v = reinterpret_cast<float*>(a.v[t]);
        const float sm = a.scale_m[t];
        const float sv = a.scale_v[t];
        for (uint64_t i = k.begin + threadIdx.x; i < k.end; i += blockDim.x) {
            const float pi = p[i];
            float gi = g[i];
            if (a.l2 != 0.0f) gi = __fadd_rn(gi, __fmul_rn(pi, a.l2));
            const float next_m = tf_flush(__fadd_rn(__fmul_rn(m[i], a.beta1), __fmul_rn(gi, a.one_minus_beta1)));
            const float next_v =
                tf_flush(__fadd_rn(__fmul_rn(v[i], a.beta2), __fmul_rn(__fmul_rn(gi, gi), a.one_minus_beta2)));
            const float m_hat = __fmul_rn(next_m, sm);
            const float v_hat = __fmul_rn(next_v, sv);
            const float adjusted = __fdiv_rn(m_hat, __fadd_rn(__fsqrt_rn(v_hat), a.eps));
            p[i] = __fsub_rn(__fmul_rn(pi, a.decay), __fmul_rn(adjusted, a.lr));
            m[i] = next_m;
            v[i] = next_v;
        }
    }
}

extern "C" __global__ void tf_sgd_multi(const TfSgdArgs a) {
    const uint64_t chunks = a.chunk_end[a.count - 1];
    for (uint64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
        const TfChunk k = tf_chunk(a.chunk_end, a.n, a.count, c);
        const uint32_t t = k.t;
        float* p = reinterpret_cast<float*>(a.p[t]);
        const float* g = reinterpret_cast<const float*>(a.g[t]);
        float* b = reinterpret_cast<float*>(a.buf[t]);
        for (uint64_t i = k.begin + threadIdx.x; i < k.end; i += blockDim.x) {
            const float pi = p[i];
            float d = g[i];
            if (a.weight_decay != 0.0f) d = __fadd_rn(d, __fmul_rn(pi, a.weight_decay));
            if (a.momentum != 0.0f) {
                const float next_b = tf_flush(__fadd_rn(__fmul_rn(b[i], a.momentum), d));
                d = a.nesterov ? __fadd_rn(d, __fmul_rn(next_b, a.momentum)) : next_b;
                b[i] = next_b;
            }
            p[i] = __fsub_rn(pi, __fmul_rn(d, a.lr));
        }
    }
}
