//! Vectorisable row primitives for the CPU kernels, with runtime dispatch to
//! AVX-512 / AVX2+FMA code paths.
//!
//! `f32::exp` is a scalar libm call, which keeps LLVM from vectorising a
//! softmax loop. [`exp_lane`] is a branch-free Cephes-style `expf` (range
//! reduction by ln 2, degree-6 minimax polynomial, exponent by bit shift; max
//! relative error ≈ 2 ulp over the clamped range) that LLVM vectorises. Each
//! primitive is written once as an `#[inline(always)]` body over 16 independent
//! lanes and compiled three times: for AVX-512, AVX2+FMA and the baseline;
//! [`crate::cpu_dispatch`] picks one at run time (`POLY_LOSS_SIMD` caps it).

const LANES: usize = 16;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;
const MAGIC_BITS: i32 = 0x4B40_0000;

/// e^x for finite x, ≈ 2 ulp; x below -87.3 gives ≈ 1e-38 instead of 0
/// (harmless in sums with the row maximum, whose term is 1); NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_lane(x: f32) -> f32 {
    // `<` with NaN is false, so NaN passes both clamps unchanged.
    let x = if x < -87.33 { -87.33 } else { x };
    let x = if x > 88.37 { 88.37 } else { x };
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let r2 = r * r;
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 1.666_666_5e-1)
        .mul_add(r, 0.5);
    let p = p.mul_add(r2, r + 1.0);
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC_BITS);
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    p * scale
}

use crate::cpu_dispatch::multiversion;
pub(crate) use crate::cpu_dispatch::{level, Level};

#[inline(always)]
fn hsum(a: [f32; LANES]) -> f32 {
    // Pairwise: keeps the order fixed and the error small.
    let mut w = a;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            w[i] += w[i + n];
        }
    }
    w[0]
}

multiversion! { avx512:
    /// max of a row (NaN entries are skipped; callers detect NaN separately).
    pub(crate) fn row_max(z: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let chunks = z.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for l in 0..LANES {
                acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for &v in acc.iter().chain(tail) {
            m = if v > m { v } else { m };
        }
        m
    }

    /// (Σ e^(z-m), Σ (z-m)); the second is NaN when the row holds NaN or +∞.
    pub(crate) fn sum_exp_shift(z: &[f32], m: f32) -> (f32, f32) {
        // Four independent accumulators per sum: the exp polynomial is a
        // long dependency chain, so several vectors must be in flight.
        let mut s = [[0.0f32; LANES]; 4];
        let mut d = [[0.0f32; LANES]; 4];
        let big = z.chunks_exact(4 * LANES);
        let rest = big.remainder();
        for c in big {
            for u in 0..4 {
                for l in 0..LANES {
                    let x = c[u * LANES + l] - m;
                    s[u][l] += exp_lane(x);
                    d[u][l] += x;
                }
            }
        }
        let chunks = rest.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for l in 0..LANES {
                let x = c[l] - m;
                s[0][l] += exp_lane(x);
                d[0][l] += x;
            }
        }
        let (mut s1, mut d1) = (0.0f32, 0.0f32);
        for u in 0..4 {
            s1 += hsum(s[u]);
            d1 += hsum(d[u]);
        }
        for &v in tail {
            s1 += exp_lane(v - m);
            d1 += v - m;
        }
        (s1, d1)
    }

    /// Σ w_k (z_k - m).
    pub(crate) fn dot_shift(z: &[f32], w: &[f32], m: f32) -> f32 {
        let mut s = [0.0f32; LANES];
        let zc = z.chunks_exact(LANES);
        let wc = w.chunks_exact(LANES);
        let (zt, wt) = (zc.remainder(), wc.remainder());
        for (c, wv) in zc.zip(wc) {
            for l in 0..LANES {
                s[l] += wv[l] * (c[l] - m);
            }
        }
        let mut s1 = hsum(s);
        for (&v, &wv) in zt.iter().zip(wt) {
            s1 += wv * (v - m);
        }
        s1
    }

    /// Probability targets: with e_k = e^(z_k-m), y'_k = a·y_k + b and
    /// u_k = w_k y'_k: returns (Σ e, Σ y' e, Σ u (z-m), Σ u, Σ (z-m)).
    pub(crate) fn sum_exp_probs(z: &[f32], y: &[f32], w: Option<&[f32]>, m: f32, a: f32, b: f32) -> [f32; 5] {
        let mut acc = [[0.0f32; LANES]; 5];
        let n = z.len() / LANES * LANES;
        for i in (0..n).step_by(LANES) {
            let (c, yc) = (&z[i..i + LANES], &y[i..i + LANES]);
            for l in 0..LANES {
                let x = c[l] - m;
                let e = exp_lane(x);
                let yp = a * yc[l] + b;
                let u = match w {
                    Some(w) => w[i + l] * yp,
                    None => yp,
                };
                acc[0][l] += e;
                acc[1][l] += yp * e;
                acc[2][l] += u * x;
                acc[3][l] += u;
                acc[4][l] += x;
            }
        }
        let mut out = [0.0f32; 5];
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = hsum(*a);
        }
        for k in n..z.len() {
            let x = z[k] - m;
            let e = exp_lane(x);
            let yp = a * y[k] + b;
            let u = w.map_or(yp, |w| w[k] * yp);
            out[0] += e;
            out[1] += yp * e;
            out[2] += u * x;
            out[3] += u;
            out[4] += x;
        }
        out
    }

    /// g_k += ca·e^(z_k-m) - cb·w_k (w_k = 1 without weights).
    pub(crate) fn grad_index_row(g: &mut [f32], z: &[f32], w: Option<&[f32]>, m: f32, ca: f32, cb: f32) {
        match w {
            Some(w) => {
                for ((g, &v), &wv) in g.iter_mut().zip(z).zip(w) {
                    *g += ca * exp_lane(v - m) - cb * wv;
                }
            }
            None => {
                for (g, &v) in g.iter_mut().zip(z) {
                    *g += ca.mul_add(exp_lane(v - m), -cb);
                }
            }
        }
    }

    /// g_k += e^(z_k-m)(ca + bc·y'_k) - a·w_k y'_k with y'_k = sa·y_k + sb.
    pub(crate) fn grad_probs_row(
        g: &mut [f32], z: &[f32], y: &[f32], w: Option<&[f32]>, m: f32,
        coef: [f32; 5],
    ) {
        let [ca, bc, a, sa, sb] = coef;
        match w {
            Some(w) => {
                for (((g, &v), &yv), &wv) in g.iter_mut().zip(z).zip(y).zip(w) {
                    let yp = sa * yv + sb;
                    *g += exp_lane(v - m) * (ca + bc * yp) - a * wv * yp;
                }
            }
            None => {
                for ((g, &v), &yv) in g.iter_mut().zip(z).zip(y) {
                    let yp = sa * yv + sb;
                    *g += exp_lane(v - m) * (ca + bc * yp) - a * yp;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_lane_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp_lane(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert!(exp_lane(f32::NAN).is_nan());
        assert!(exp_lane(-1e4) < 1.5e-38);
        assert!(exp_lane(0.0) == 1.0);
    }

    #[test]
    fn primitives_match_naive_sums() {
        let z: Vec<f32> = (0..1037)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0)
            .collect();
        let w: Vec<f32> = (0..1037).map(|i| 0.5 + (i % 3) as f32).collect();
        let m = row_max(&z);
        assert_eq!(m, z.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        let (s, d) = sum_exp_shift(&z, m);
        let s_ref: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let d_ref: f64 = z.iter().map(|&v| (v - m) as f64).sum();
        assert!((s as f64 - s_ref).abs() < 1e-5 * s_ref);
        assert!((d as f64 - d_ref).abs() < 1e-5 * d_ref.abs());
        let ds = dot_shift(&z, &w, m) as f64;
        let ds_ref: f64 = z.iter().zip(&w).map(|(&v, &w)| (w * (v - m)) as f64).sum();
        assert!((ds - ds_ref).abs() < 1e-5 * ds_ref.abs());
        let mut g = vec![1.0f32; z.len()];
        grad_index_row(&mut g, &z, Some(&w), m, 0.5, 0.25);
        for k in 0..z.len() {
            let want = 1.0 + 0.5 * ((z[k] - m) as f64).exp() - 0.25 * w[k] as f64;
            assert!((g[k] as f64 - want).abs() < 1e-6, "k={k}");
        }
        let mut zn = z.clone();
        zn[500] = f32::NAN;
        assert!(sum_exp_shift(&zn, row_max(&zn)).1.is_nan());
    }
}
