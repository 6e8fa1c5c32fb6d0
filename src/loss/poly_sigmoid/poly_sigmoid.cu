// Sigmoid PolyLoss (plain and focal), per logit. Forward: one block per row,
// block-sum of the element losses in double (as the CPU), written per row or,
// for a scalar loss, to rows[0..b) (with F_DEV_MEAN the rows' denominators
// to rows[b..2b)) for poly_reduce_rows (no atomics), whose factor the backward reads. Backward: one thread per logit,
// recomputing everything from z and y (same formulas as poly_sigmoid::sigmoid_elem).
#include "launch.cuh"
#include "../poly_common.cuh"

__device__ __forceinline__ void sigmoid_elem(const float *prm, double z, double y, double w,
                                             double *loss, double *grad) {
    const double al = prm[PRM_SMOOTHING];
    y = (1.0 - al) * y + 0.5 * al;
    const double e = exp(-fabs(z));
    const double bce = fmax(z, 0.0) - z * y + log1p(e);
    const double sig = z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    const double oms = z >= 0.0 ? e / (1.0 + e) : 1.0 / (1.0 + e);
    const double f = y * oms + (1.0 - y) * sig;
    const float alpha = prm[PRM_ALPHA];
    const double aw = (prm[PRM_FOCAL] != 0.f && alpha >= 0.f)
                          ? (double)alpha * y + (1.0 - (double)alpha) * (1.0 - y) : 1.0;
    double A, dA, G, dG;
    focal_poly_terms(prm, aw, f, &A, &dA, &G, &dG);
    *loss = w * (A * bce + G);
    *grad = w * (A * (sig - y) + (dA * bce + dG) * (2.0 * y - 1.0) * sig * oms);
}

__device__ __forceinline__ bool target_of(const unsigned int *tgt, const float *probs, int flags,
                                          int i, int k, int c, double *y) {
    if (flags & F_PROBS) {
        *y = (double)probs[(size_t)i * c + k];
        return true;
    }
    const unsigned int t = tgt[i];
    if (t == IGNORED_ROW) return false;
    if (t == BAD_ROW) {  // out-of-range class (poly_class_targets): NaN loss and gradient
        *y = CUDART_NAN;
        return true;
    }
    *y = (t == (unsigned int)k) ? 1.0 : 0.0;
    return true;
}

extern "C" __global__ void __launch_bounds__(POLY_BLOCK) poly_sigmoid_fwd(
    const float *z, const unsigned int *tgt, const float *probs, const float *weight,
    const float *prm, float *out, double *rows, const int b, const int c, const int flags) {
    __shared__ double sh[32];
    const int i = blockIdx.x;
    if (i >= b) return;
    double acc = 0.0;
    for (int k = threadIdx.x; k < c; k += blockDim.x) {
        double y, l, g;
        if (!target_of(tgt, probs, flags, i, k, c, &y)) break;
        const double w = (flags & F_WEIGHT) ? (double)weight[k] : 1.0;
        sigmoid_elem(prm, (double)z[(size_t)i * c + k], y, w, &l, &g);
        acc += l;
    }
    acc = block_sum_d(acc, sh);
    if (threadIdx.x == 0) {
        if (flags & F_SCALAR) rows[i] = acc;
        else out[i] = (float)acc;
        // The row's share of the mean's denominator: C logits, none if ignored
        // (class targets only: F_DEV_MEAN is never set with probabilities).
        if (flags & F_DEV_MEAN) {
            const unsigned int t = tgt[i];
            rows[b + i] = t == IGNORED_ROW ? 0.0 : t == BAD_ROW ? CUDART_NAN : (double)c;
        }
    }
}

extern "C" __global__ void __launch_bounds__(POLY_BLOCK) poly_sigmoid_bwd(
    const float *z, const unsigned int *tgt, const float *probs, const float *weight,
    const float *prm, const float *grad_out, float *grad, const int b, const int c,
    const int flags, const float *scale) {
    const size_t n = (size_t)b * c;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx / c), k = (int)(idx % c);
        double y, l, g;
        if (!target_of(tgt, probs, flags, i, k, c, &y)) continue;
        const double w = (flags & F_WEIGHT) ? (double)weight[k] : 1.0;
        sigmoid_elem(prm, (double)z[idx], y, w, &l, &g);
        const float go = (flags & F_SCALAR) ? grad_out[0] * scale[0] : grad_out[i];
        grad[idx] += go * (float)g;
    }
}
