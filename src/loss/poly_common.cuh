// Shared device code of the PolyLoss kernels: block reductions and the
// per-row polynomial/focal terms (the CUDA twin of poly_softmax::focal_poly_terms).
#pragma once
#include <math_constants.h>

// Parameter block layout (floats): see PRM_* below, then eps[0..n_eps).
#define PRM_SMOOTHING 0
#define PRM_GAMMA 1
#define PRM_ALPHA 2      // focal weight (softmax) or alpha (sigmoid); < 0: none
#define PRM_FOCAL 3      // 1: focal kind
#define PRM_N_EPS 4
#define PRM_EPS 5

#define IGNORED_ROW 0xFFFFFFFFu

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
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
