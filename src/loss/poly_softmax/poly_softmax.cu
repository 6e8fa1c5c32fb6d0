// Softmax PolyLoss (plain and focal): one block per row.
// Forward: block max, then Σ e^(z-m) (+ the sums smoothing/weights/probabilities
// need), then thread 0 computes the row's loss and backward coefficients in
// double (same formulas as cpu_kernel.rs). A scalar (mean/sum) loss writes the
// row losses to rows[0..b) (and with F_DEV_MEAN the rows' denominators to
// rows[b..2b)) for poly_reduce_rows (no atomics), whose factor the backward
// reads. Backward: one pass per row that recomputes e^(z-m) and adds the
// gradient (accumulating).
#include "launch.cuh"
#include "../poly_common.cuh"

extern "C" __global__ void __launch_bounds__(POLY_BLOCK) poly_softmax_fwd(
    const float *z, const unsigned int *tgt, const float *probs, const float *weight,
    const float *prm, float *stats, float *out, double *rows, const int b, const int c,
    const int flags, const double wsum) {
    __shared__ float sh[32];
    const int i = blockIdx.x;
    if (i >= b) return;
    const float *zr = z + (size_t)i * c;
    const bool is_probs = flags & F_PROBS, has_w = flags & F_WEIGHT;
    const unsigned int t = is_probs ? 0u : tgt[i];
    if (!is_probs && t == IGNORED_ROW) {
        if (threadIdx.x == 0) {
            stats[4 * i] = 0.0f; stats[4 * i + 1] = 0.0f; stats[4 * i + 2] = 0.0f; stats[4 * i + 3] = 0.0f;
            if (flags & F_SCALAR) rows[i] = 0.0;
            else out[i] = 0.0f;
            if (flags & F_DEV_MEAN) rows[b + i] = 0.0;
        }
        return;
    }
    if (!is_probs && t == BAD_ROW) {  // out-of-range class (poly_class_targets)
        if (threadIdx.x == 0) {
            stats[4 * i] = CUDART_NAN_F; stats[4 * i + 1] = CUDART_NAN_F;
            stats[4 * i + 2] = CUDART_NAN_F; stats[4 * i + 3] = CUDART_NAN_F;
            if (flags & F_SCALAR) rows[i] = CUDART_NAN;
            else out[i] = CUDART_NAN_F;
            if (flags & F_DEV_MEAN) rows[b + i] = CUDART_NAN;
        }
        return;  // the backward sees NaN stats and writes a NaN gradient row
    }
    const float al = prm[PRM_SMOOTHING];
    const float sa = 1.0f - al, sb = al / (float)c;

    float m = -CUDART_INF_F;
    for (int k = threadIdx.x; k < c; k += blockDim.x) m = fmaxf(m, zr[k]);
    m = block_max(m, sh);

    // s: Σe, sh_: Σ(z-m) (NaN detector), a1..a3: kind-specific sums.
    float s = 0.f, d = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
    for (int k = threadIdx.x; k < c; k += blockDim.x) {
        const float x = zr[k] - m;
        const float e = __expf(x);
        s += e;
        d += x;
        if (is_probs) {
            const float yp = sa * probs[(size_t)i * c + k] + sb;
            const float u = has_w ? weight[k] * yp : yp;
            a1 += yp * e;
            a2 += u * x;
            a3 += u;
        } else if (has_w) {
            a1 += weight[k] * x;
        }
    }
    s = block_sum(s, sh);
    d = block_sum(d, sh);
    a1 = block_sum(a1, sh);
    if (is_probs) {
        a2 = block_sum(a2, sh);
        a3 = block_sum(a3, sh);
    }
    if (threadIdx.x != 0) return;

    const double S = (double)s, L = log(S);
    double loss, st1, st2, st3;
    if (isnan(d)) {  // NaN (or +inf) in the row
        loss = CUDART_NAN; st1 = CUDART_NAN; st2 = CUDART_NAN; st3 = CUDART_NAN;
    } else if (is_probs) {
        const double su = a3, ce = su * L - (double)a2, pt = (double)a1 / S;
        double A, dA, G, dG;
        focal_poly_terms(prm, prm[PRM_ALPHA] >= 0.f ? (double)prm[PRM_ALPHA] : 1.0, 1.0 - pt, &A, &dA, &G, &dG);
        loss = A * ce + su * G;
        const double bc = dA * ce + su * dG;
        st1 = (A * su - bc * pt) / S; st2 = bc / S; st3 = A;
    } else {
        const double ald = al, invc = 1.0 / (double)c;
        const double zt = (double)(zr[t] - m), logp_t = zt - L, p_t = exp(logp_t);
        const double w_t = has_w ? (double)weight[t] : 1.0;
        double ce, su;
        // The smoothing term only with smoothing: a -inf logit makes its sums
        // infinite, and 0 * inf would turn a finite loss into NaN.
        if (has_w) {
            ce = (1.0 - ald) * w_t * (L - zt) + (ald > 0.0 ? ald * invc * (wsum * L - (double)a1) : 0.0);
            su = (1.0 - ald) * w_t + ald * invc * wsum;
        } else {
            ce = (1.0 - ald) * (L - zt) + (ald > 0.0 ? ald * invc * ((double)c * L - (double)d) : 0.0);
            su = 1.0;
        }
        const double pt = ald * invc + (1.0 - ald) * p_t;
        const double f = (1.0 - ald) * -expm1(logp_t) + ald * (1.0 - invc);
        double A, dA, G, dG;
        focal_poly_terms(prm, prm[PRM_ALPHA] >= 0.f ? (double)prm[PRM_ALPHA] : 1.0, f, &A, &dA, &G, &dG);
        loss = A * ce + w_t * G;
        const double bc = dA * ce + w_t * dG;
        st1 = (A * su - bc * pt + bc * ald * invc) / S;
        st2 = A * ald * invc;
        st3 = (1.0 - ald) * (bc * p_t - A * w_t);
    }
    stats[4 * i] = m;
    stats[4 * i + 1] = (float)st1;
    stats[4 * i + 2] = (float)st2;
    stats[4 * i + 3] = (float)st3;
    if (flags & F_SCALAR) rows[i] = loss;
    else out[i] = (float)loss;
    // The row's share of the mean's denominator: its target's weight (class
    // targets only: F_DEV_MEAN is never set with probabilities).
    if (flags & F_DEV_MEAN) rows[b + i] = has_w ? (double)weight[t] : 1.0;
}

extern "C" __global__ void __launch_bounds__(POLY_BLOCK) poly_softmax_bwd(
    const float *z, const unsigned int *tgt, const float *probs, const float *weight,
    const float *prm, const float *stats, const float *grad_out, float *grad, const int b,
    const int c, const int flags, const float *scale) {
    const int i = blockIdx.x;
    if (i >= b) return;
    const bool is_probs = flags & F_PROBS, has_w = flags & F_WEIGHT;
    const unsigned int t = is_probs ? 0u : tgt[i];
    if (!is_probs && t == IGNORED_ROW) return;
    const float go = (flags & F_SCALAR) ? grad_out[0] * scale[0] : grad_out[i];
    const float m = stats[4 * i], c1 = stats[4 * i + 1], c2 = stats[4 * i + 2], c3 = stats[4 * i + 3];
    const float *zr = z + (size_t)i * c;
    float *gr = grad + (size_t)i * c;
    if (isnan(c1)) {
        for (int k = threadIdx.x; k < c; k += blockDim.x) gr[k] = CUDART_NAN_F;
        return;
    }
    if (is_probs) {
        const float al = prm[PRM_SMOOTHING];
        const float sa = 1.0f - al, sb = al / (float)c;
        const float *yr = probs + (size_t)i * c;
        for (int k = threadIdx.x; k < c; k += blockDim.x) {
            const float yp = sa * yr[k] + sb;
            const float wk = has_w ? weight[k] : 1.0f;
            gr[k] += go * (__expf(zr[k] - m) * (c1 + c2 * yp) - c3 * wk * yp);
        }
    } else {
        const float ca = go * c1, cb = go * c2;
        for (int k = threadIdx.x; k < c; k += blockDim.x) {
            const float wk = has_w ? weight[k] : 1.0f;
            float g = ca * __expf(zr[k] - m) - cb * wk;
            if ((unsigned int)k == t) g += go * c3;
            gr[k] += g;
        }
    }
}
