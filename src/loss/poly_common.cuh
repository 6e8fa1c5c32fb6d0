// Shared device code of the PolyLoss kernels: block reductions, the
// per-row polynomial/focal terms (the CUDA twin of poly_softmax::focal_poly_terms)
// and the deterministic reduction of per-row losses to one scalar.
#pragma once
#include <math_constants.h>
#include "launch.cuh"

// Parameter block layout (floats): see PRM_* below, then eps[0..n_eps).
#define PRM_SMOOTHING 0
#define PRM_GAMMA 1
#define PRM_ALPHA 2      // focal weight (softmax) or alpha (sigmoid); < 0: none
#define PRM_FOCAL 3      // 1: focal kind
#define PRM_N_EPS 4
#define PRM_EPS 5

// The flag word of a loss launch (cuda_inputs.rs's F_* constants).
#define F_PROBS 1     // targets are probabilities, not class indices
#define F_WEIGHT 2    // per-class weights are given
#define F_SCALAR 4    // one reduced scalar (mean or sum), not one loss per row
#define F_DEV_MEAN 8  // a mean whose denominator the forward sums on the device
                      // (class targets in a device buffer: ignore index, class weights)

#define IGNORED_ROW 0xFFFFFFFFu
// A class index outside 0..C read from a device target buffer (see
// poly_class_targets): the row's loss and gradient become NaN.
#define BAD_ROW 0xFFFFFFFEu

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sums `v` over the block in double, in a fixed order (same result every run);
// every thread gets the result. `sh` holds 32 doubles.
__device__ __forceinline__ double block_sum_d(double v, double *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = (threadIdx.x < nwarps) ? sh[threadIdx.x] : 0.0;
    if (warp == 0) v = warp_sum_d(v);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

// Sums `v` over the block; every thread gets the result. `sh` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = (threadIdx.x < nwarps) ? sh[threadIdx.x] : 0.0f;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}
__device__ __forceinline__ float block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = (threadIdx.x < nwarps) ? sh[threadIdx.x] : -CUDART_INF_F;
    if (warp == 0) v = warp_max(v);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

// A = aw f^γ (1 if not focal), G = Σ ε_j f^(γ+j); da, dg: d/dpt (pt = 1 - f).
__device__ __forceinline__ void focal_poly_terms(const float *prm, double aw, double f,
                                                 double *a, double *da, double *g, double *dg) {
    f = f > 0.0 ? f : 0.0;
    const bool focal = prm[PRM_FOCAL] != 0.0f;
    const double gamma = focal ? (double)prm[PRM_GAMMA] : 0.0;
    if (focal) {
        *a = aw * pow(f, gamma);
        *da = (gamma > 0.0 && f > 0.0) ? -aw * gamma * pow(f, gamma - 1.0) : 0.0;
    } else {
        *a = 1.0;
        *da = 0.0;
    }
    double pw = pow(f, gamma), gs = 0.0, dgs = 0.0;
    const int n = (int)prm[PRM_N_EPS];
    for (int j = 0; j < n; ++j) {
        const double e = (double)prm[PRM_EPS + j];
        dgs -= e * (gamma + (double)(j + 1)) * pw;
        pw *= f;
        gs += e * pw;
    }
    *g = gs;
    *dg = dgs;
}

// The second stage of the scalar (mean/sum) losses, by one block in double
// in a fixed order (deterministic where a float atomicAdd across rows would
// not be): out[0] = s · Σ rows[0..b) and scale_out[0] = s, the factor the
// backward applies to the scalar's gradient. s = `scale` (host-known
// denominator), or with F_DEV_MEAN s = 1 / Σ rows[b..2b), the per-row
// denominators the forward wrote (a mean over no counted rows is 0/0 = NaN,
// as PyTorch's). Launch: 1 block.
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) poly_reduce_rows(
    const double *rows, float *out, float *scale_out, const int b, const float scale,
    const int flags) {
    __shared__ double sh[32];
    double acc = 0.0, den = 0.0;
    const bool dev_mean = flags & F_DEV_MEAN;
    for (int i = threadIdx.x; i < b; i += blockDim.x) {
        acc += rows[i];
        if (dev_mean) den += rows[b + i];
    }
    acc = block_sum_d(acc, sh);
    if (dev_mean) den = block_sum_d(den, sh);
    if (threadIdx.x == 0) {
        // As the host path: the factor rounded to f32 first, then the product in f64.
        const float s = dev_mean ? (float)(1.0 / den) : scale;
        out[0] = (float)(acc * (double)s);
        scale_out[0] = s;
    }
}

// Class targets straight from dfdx's `usize` device buffer (64-bit): tgt[i] =
// src[i] as a 32-bit index, IGNORED_ROW for the ignore index (when
// has_ignore), BAD_ROW for an index outside 0..c. Range-checked here because
// the host never sees the values (no copy, no sync); a bad row turns its
// loss (and so a reduced loss) and its gradient into NaN, which the caller
// sees when it reads the loss. Launch: ceil(b / POLY_BLOCK) blocks.
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) poly_class_targets(
    const unsigned long long *src, unsigned int *tgt, const int b, const int c,
    const int has_ignore, const unsigned long long ignore) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= b) return;
    const unsigned long long v = src[i];
    if (has_ignore && v == ignore) tgt[i] = IGNORED_ROW;
    else if (v >= (unsigned long long)c) tgt[i] = BAD_ROW;
    else tgt[i] = (unsigned int)v;
}
