// Max pooling over (planes, H, W); padding never wins, first maximum kept, NaN propagates.
#include "launch.cuh"

struct PoolGeo {
    int planes, h, w, oh, ow, k, s, p;
};

// Index within the plane of the first maximum of output (oh, ow)'s window.
__device__ __forceinline__ int window_argmax(const PoolGeo g, const float *plane, int oh, int ow) {
    const int h0 = max(oh * g.s - g.p, 0), h1 = min(oh * g.s - g.p + g.k, g.h);
    const int w0 = max(ow * g.s - g.p, 0), w1 = min(ow * g.s - g.p + g.k, g.w);
    int best = h0 * g.w + w0;
    float bv = plane[best];
    for (int ih = h0; ih < h1; ++ih) {
        for (int iw = w0; iw < w1; ++iw) {
            const float v = plane[ih * g.w + iw];
            if (v > bv || (isnan(v) && !isnan(bv))) {
                bv = v;
                best = ih * g.w + iw;
            }
        }
    }
    return best;
}

extern "C" __global__ void __launch_bounds__(POLY_BLOCK) max_pool2d_forward(const PoolGeo g, const float *x, float *y) {
    const long long total = (long long)g.planes * g.oh * g.ow;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int ow = i % g.ow, oh = (i / g.ow) % g.oh;
        const long long pl = i / ((long long)g.ow * g.oh);
        const float *plane = x + pl * g.h * g.w;
        y[i] = plane[window_argmax(g, plane, oh, ow)];
    }
}

// gx[argmax] += gy; windows overlap, hence the atomics.
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) max_pool2d_backward(const PoolGeo g, const float *x, float *gx, const float *gy) {
    const long long total = (long long)g.planes * g.oh * g.ow;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int ow = i % g.ow, oh = (i / g.ow) % g.oh;
        const long long pl = i / ((long long)g.ow * g.oh);
        const float *plane = x + pl * g.h * g.w;
        atomicAdd(gx + pl * g.h * g.w + window_argmax(g, plane, oh, ow), gy[i]);
    }
}
