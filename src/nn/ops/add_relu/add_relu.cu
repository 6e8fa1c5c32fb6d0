// relu(a + b) and its gradient (mask from the saved output).
#include "launch.cuh"

extern "C" __global__ void __launch_bounds__(POLY_BLOCK) add_relu_forward(const float *a, const float *b, float *y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        y[i] = fmaxf(a[i] + b[i], 0.0f);
    }
}

extern "C" __global__ void __launch_bounds__(POLY_BLOCK) add_relu_backward(const float *y, float *ga, float *gb, const float *gy, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const float g = y[i] > 0.0f ? gy[i] : 0.0f;
        ga[i] += g;
        gb[i] += g;
    }
}
