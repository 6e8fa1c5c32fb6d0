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

// gx[i] += Σ gy over the windows whose first maximum is input element i: a
// gather over the (at most ⌈k/s⌉²) windows covering i, in a fixed order — one
// thread per input element, so no atomics and the same result every run.
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) max_pool2d_backward(const PoolGeo g, const float *x, float *gx, const float *gy) {
    const long long total = (long long)g.planes * g.h * g.w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int iw = i % g.w, ih = (i / g.w) % g.h;
        const long long pl = i / ((long long)g.w * g.h);
        const float *plane = x + pl * g.h * g.w;
        const float *gyp = gy + pl * g.oh * g.ow;
        // Windows (oh, ow) with oh*s - p <= ih <= oh*s - p + k - 1 (same for w).
        const int hn = ih + g.p - g.k + 1, wn = iw + g.p - g.k + 1;
        const int oh0 = hn <= 0 ? 0 : (hn + g.s - 1) / g.s, oh1 = min((ih + g.p) / g.s, g.oh - 1);
        const int ow0 = wn <= 0 ? 0 : (wn + g.s - 1) / g.s, ow1 = min((iw + g.p) / g.s, g.ow - 1);
        const int self_at = ih * g.w + iw;
        float acc = 0.0f;
        for (int oh = oh0; oh <= oh1; ++oh) {
            for (int ow = ow0; ow <= ow1; ++ow) {
                if (window_argmax(g, plane, oh, ow) == self_at) acc += gyp[oh * g.ow + ow];
            }
        }
        gx[i] += acc;
    }
}
