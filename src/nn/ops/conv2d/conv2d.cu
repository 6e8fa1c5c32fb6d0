// im2col / col2im and bias kernels for conv2d; the matrix products run on cuBLAS.
// Layouts: x (B, C, H, W); col per image (C*K*K, OH*OW) row-major, images back to back.
#include "launch.cuh"

struct ConvGeo {
    int c, h, w, o, oh, ow, k, s, p;
};

// col[img][r][n] = x[b0 + img][c][oh*s + kh - p][ow*s + kw - p] (0 outside), r = (c, kh, kw).
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) conv2d_im2col(const ConvGeo g, const float *x, float *col, int nimg) {
    const int n_pos = g.oh * g.ow;
    const int patch = g.c * g.k * g.k;
    const long long total = (long long)nimg * patch * n_pos;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int n = i % n_pos;
        const int r = (i / n_pos) % patch;
        const int img = i / ((long long)n_pos * patch);
        const int kw = r % g.k, kh = (r / g.k) % g.k, c = r / (g.k * g.k);
        const int ih = (n / g.ow) * g.s + kh - g.p;
        const int iw = (n % g.ow) * g.s + kw - g.p;
        float v = 0.0f;
        if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
            v = x[(((long long)img * g.c + c) * g.h + ih) * g.w + iw];
        }
        col[i] = v;
    }
}

// gx[img][c][ih][iw] += sum over (kh, kw) hitting it of dcol[img][(c, kh, kw)][oh*ow_n + ow].
// A gather (one thread per input element), so no atomics.
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) conv2d_col2im(const ConvGeo g, const float *dcol, float *gx, int nimg) {
    const int n_pos = g.oh * g.ow;
    const int patch = g.c * g.k * g.k;
    const long long total = (long long)nimg * g.c * g.h * g.w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int iw = i % g.w;
        const int ih = (i / g.w) % g.h;
        const int c = (i / ((long long)g.w * g.h)) % g.c;
        const int img = i / ((long long)g.w * g.h * g.c);
        const float *d = dcol + (long long)img * patch * n_pos;
        float acc = 0.0f;
        for (int kh = 0; kh < g.k; ++kh) {
            const int th = ih + g.p - kh;
            if (th < 0 || th % g.s != 0) continue;
            const int oh = th / g.s;
            if (oh >= g.oh) continue;
            for (int kw = 0; kw < g.k; ++kw) {
                const int tw = iw + g.p - kw;
                if (tw < 0 || tw % g.s != 0) continue;
                const int ow = tw / g.s;
                if (ow >= g.ow) continue;
                acc += d[((long long)(c * g.k + kh) * g.k + kw) * n_pos + oh * g.ow + ow];
            }
        }
        gx[i] += acc;
    }
}

// y[b][o][n] += bias[o]
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) conv2d_bias_add(float *y, const float *bias, int o, int n_pos, long long total) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        y[i] += bias[(i / n_pos) % o];
    }
}

// gb[o] += sum over b, n of gy[b][o][n]; one block (POLY_BLOCK threads) per channel.
extern "C" __global__ void __launch_bounds__(POLY_BLOCK) conv2d_bias_grad(const float *gy, float *gb, int batch, int o, int n_pos) {
    __shared__ double part[POLY_BLOCK];
    const int ch = blockIdx.x;
    double acc = 0.0;
    for (long long i = threadIdx.x; i < (long long)batch * n_pos; i += blockDim.x) {
        const long long b = i / n_pos, n = i % n_pos;
        acc += gy[(b * o + ch) * n_pos + n];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) gb[ch] += (float)part[0];
}
