// Global average pooling over (planes, plane) and its gradient.
#include "launch.cuh"

// One warp per plane: y[pl] = mean(x[pl, :]).
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) global_avg_pool2d_forward(const float *x, float *y, int planes, int plane) {
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (warp >= planes) return;
    const float *p = x + (long long)warp * plane;
    float acc = 0.0f;
    for (int i = lane; i < plane; i += 32) acc += p[i];
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffff, acc, off);
    if (lane == 0) y[warp] = acc / (float)plane;
}

// gx[pl, i] += gy[pl] / plane
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) global_avg_pool2d_backward(float *gx, const float *gy, int plane, long long total) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        gx[i] += gy[i / plane] / (float)plane;
    }
}
