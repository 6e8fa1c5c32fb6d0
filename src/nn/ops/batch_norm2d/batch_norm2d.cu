// Batch-norm over (B, C, plane): statistics, affine + ReLU (+ residual), backward.
#include "launch.cuh"

struct BnGeo {
    int batch, channels, plane;
    int relu;      // apply ReLU (y is the saved output for the mask)
    int residual;  // a residual is added / gets a gradient
    int train;     // batch statistics: backward includes their gradient
    float eps;
};

__device__ __forceinline__ double block_sum(double v, double *part) {
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    const double r = part[0];
    __syncthreads();
    return r;
}

// One POLY_BLOCK-thread block per channel: mean and biased variance, from sums
// shifted by the channel's first value (no catastrophic cancellation).
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) bn_stats(const BnGeo g, const float *x, float *mean, float *var) {
    __shared__ double part[POLY_BLOCK];
    const int c = blockIdx.x;
    const float k = x[(long long)c * g.plane];
    const long long n = (long long)g.batch * g.plane;
    float s1 = 0.0f, s2 = 0.0f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const long long b = i / g.plane, j = i % g.plane;
        const float d = x[(b * g.channels + c) * g.plane + j] - k;
        s1 += d;
        s2 += d * d;
    }
    const double t1 = block_sum(s1, part);
    const double t2 = block_sum(s2, part);
    if (threadIdx.x == 0) {
        const double m = t1 / (double)n;
        mean[c] = (float)(k + m);
        var[c] = (float)fmax(t2 / (double)n - m * m, 0.0);
    }
}

// y = act(gamma (x - mean) / sqrt(var + eps) + beta [+ r])
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) bn_forward(const BnGeo g, const float *x, const float *r, const float *gamma,
                                      const float *beta, const float *mean, const float *var, float *y) {
    const long long total = (long long)g.batch * g.channels * g.plane;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int c = (i / g.plane) % g.channels;
        const float scale = gamma[c] / sqrtf(var[c] + g.eps);
        float t = (x[i] - mean[c]) * scale + beta[c];
        if (g.residual) t += r[i];
        y[i] = g.relu ? fmaxf(t, 0.0f) : t;
    }
}

// One block per channel: sd = sum dz, sdx = sum dz (x - mean), dz = dy [y > 0].
// ggamma += sdx / std, gbeta += sd; coef[c] = (sd / n, sdx / std / n) in training mode, else 0.
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) bn_backward_reduce(const BnGeo g, const float *x, const float *y, const float *gy,
                                              const float *mean, const float *var, float *ggamma,
                                              float *gbeta, float *coef) {
    __shared__ double part[POLY_BLOCK];
    const int c = blockIdx.x;
    const long long n = (long long)g.batch * g.plane;
    const float m = mean[c];
    float sd = 0.0f, sdx = 0.0f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const long long b = i / g.plane, j = i % g.plane;
        const long long at = (b * g.channels + c) * g.plane + j;
        const float dz = (!g.relu || y[at] > 0.0f) ? gy[at] : 0.0f;
        sd += dz;
        sdx += dz * (x[at] - m);
    }
    const double t1 = block_sum(sd, part);
    const double t2 = block_sum(sdx, part);
    if (threadIdx.x == 0) {
        const double inv = 1.0 / sqrt((double)var[c] + (double)g.eps);
        ggamma[c] += (float)(t2 * inv);
        gbeta[c] += (float)t1;
        coef[2 * c] = g.train ? (float)(t1 / (double)n) : 0.0f;
        coef[2 * c + 1] = g.train ? (float)(t2 * inv / (double)n) : 0.0f;
    }
}

// gx += gamma/std (dz - a - xhat b); gr += dz.
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) bn_backward_apply(const BnGeo g, const float *x, const float *y, const float *gy,
                                             const float *gamma, const float *mean, const float *var,
                                             const float *coef, float *gx, float *gr) {
    const long long total = (long long)g.batch * g.channels * g.plane;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int c = (i / g.plane) % g.channels;
        const float inv = 1.0f / sqrtf(var[c] + g.eps);
        const float dz = (!g.relu || y[i] > 0.0f) ? gy[i] : 0.0f;
        const float xhat = (x[i] - mean[c]) * inv;
        gx[i] += gamma[c] * inv * (dz - coef[2 * c] - xhat * coef[2 * c + 1]);
        if (g.residual) gr[i] += dz;
    }
}
