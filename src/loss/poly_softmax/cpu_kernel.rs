//! CPU kernel: blocks of rows in parallel when the batch is big enough
//! (`row_blocks`), each row's inner loops vectorised by `simd`; the logits
//! are read in place (`saved_logits`), never copied.

use dfdx::prelude::*;

use super::{poly_terms, SoftmaxJob, SoftmaxKernel, SoftmaxParams};
use crate::loss::row_blocks::for_row_blocks;
use crate::loss::saved_logits::SavedLogits;
use crate::loss::simd;
use crate::loss::targets::Targets;

/// Per-row statistics kept for the backward.
/// Index targets: `[m, ca, cb, cd]` with ∂/∂z_k = ca·e^(z_k-m) - cb·w_k + [k=t]·cd.
/// Probability targets: `[m, ca, bc, a]` with
/// ∂/∂z_k = e^(z_k-m)(ca + bc·y'_k) - a·w_k·y'_k.
type RowStat = [f32; 4];

/// The logits (a handle, not a copy) and the row statistics.
pub struct CpuSoftmaxSaved {
    z: SavedLogits,
    stats: Vec<RowStat>,
}

/// Forward of one row with class index `t`: (loss, stats).
fn row_index(z: &[f32], t: usize, p: &SoftmaxParams, wsum: f64) -> (f32, RowStat) {
    let c = z.len();
    let m = simd::row_max(z);
    let (s, sh) = simd::sum_exp_shift(z, m);
    if sh.is_nan() {
        return (f32::NAN, [m, f32::NAN, f32::NAN, f32::NAN]);
    }
    let s64 = s as f64;
    let l = s64.ln();
    let zt = (z[t] - m) as f64;
    let logp_t = zt - l;
    let p_t = logp_t.exp();
    let al = p.smoothing as f64;
    let invc = 1.0 / c as f64;
    let w_t = p.weight.as_ref().map_or(1.0, |w| w[t] as f64);
    let (ce, su) = match &p.weight {
        Some(w) => {
            let wsh = if al > 0.0 {
                simd::dot_shift(z, w, m) as f64
            } else {
                0.0
            };
            (
                (1.0 - al) * w_t * (l - zt) + al * invc * (wsum * l - wsh),
                (1.0 - al) * w_t + al * invc * wsum,
            )
        }
        // Without smoothing the term is skipped: a -inf logit makes `sh`
        // infinite and 0 * inf would turn a finite loss into NaN.
        None => (
            (1.0 - al) * (l - zt)
                + if al > 0.0 {
                    al * invc * (c as f64 * l - sh as f64)
                } else {
                    0.0
                },
            1.0,
        ),
    };
    let pt = al * invc + (1.0 - al) * p_t;
    // 1 - pt without cancellation when p_t → 1.
    let f = (1.0 - al) * -logp_t.exp_m1() + al * (1.0 - invc);
    let (a, da, g, dg) = poly_terms(p, f);
    let loss = a * ce + w_t * g;
    let bc = da * ce + w_t * dg;
    let ca = a * su - bc * pt + bc * al * invc;
    let cb = a * al * invc;
    let cd = (1.0 - al) * (bc * p_t - a * w_t);
    (loss as f32, [m, (ca / s64) as f32, cb as f32, cd as f32])
}

/// Forward of one row with target probabilities `y`: (loss, stats).
fn row_probs(z: &[f32], y: &[f32], p: &SoftmaxParams) -> (f32, RowStat) {
    let c = z.len();
    let m = simd::row_max(z);
    let al = p.smoothing;
    let (sa, sb) = (1.0 - al, al / c as f32);
    let [s, sye, suz, su, sh] = simd::sum_exp_probs(z, y, p.weight.as_deref(), m, sa, sb);
    if sh.is_nan() {
        return (f32::NAN, [m, f32::NAN, f32::NAN, f32::NAN]);
    }
    let (s, sye, suz, su) = (s as f64, sye as f64, suz as f64, su as f64);
    let l = s.ln();
    let ce = su * l - suz;
    let pt = sye / s;
    let (a, da, g, dg) = poly_terms(p, 1.0 - pt);
    // The polynomial term counts with the row's weight Σ w_k y'_k = su.
    let loss = a * ce + su * g;
    let bc = da * ce + su * dg;
    let ca = a * su - bc * pt;
    (loss as f32, [m, (ca / s) as f32, (bc / s) as f32, a as f32])
}

impl SoftmaxKernel for Cpu {
    type SoftmaxSaved = CpuSoftmaxSaved;

    fn softmax_fwd<S: Shape, T, O: Shape>(
        &self,
        logits: &Tensor<S, f32, Self, T>,
        job: &SoftmaxJob<Self>,
        out: O,
    ) -> Result<(Tensor<O, f32, Self>, CpuSoftmaxSaved), CpuError> {
        let (b, c, p) = (job.b, job.c, &job.params);
        let saved_z = SavedLogits::new(logits);
        let z = saved_z.slice();
        // Per row: [loss, stats..].
        let mut rows = vec![[0.0f32; 5]; b];
        if c > 0 {
            let wsum: f64 = p
                .weight
                .as_ref()
                .map_or(c as f64, |w| w.iter().map(|&v| v as f64).sum());
            for_row_blocks(&mut rows, 1, b, c, |first, blk| {
                for (j, r) in blk.iter_mut().enumerate() {
                    let i = first + j;
                    let zr = &z[i * c..(i + 1) * c];
                    let (l, st) = match &job.targets {
                        Targets::Classes(t) if Some(t[i]) == p.ignore => continue,
                        Targets::Classes(t) => row_index(zr, t[i], p, wsum),
                        Targets::Probs(y) => row_probs(zr, &y[i * c..(i + 1) * c], p),
                        Targets::ClassBuffer(never) => match *never {},
                    };
                    *r = [l, st[0], st[1], st[2], st[3]];
                }
            });
        }
        let data = match job.scale {
            Some(scale) => {
                let total: f64 = rows.iter().map(|r| r[0] as f64).sum();
                vec![(total * scale as f64) as f32]
            }
            None => rows.iter().map(|r| r[0]).collect(),
        };
        let stats = rows.iter().map(|r| [r[1], r[2], r[3], r[4]]).collect();
        let out = self.try_tensor_from_vec(data, out)?;
        Ok((out, CpuSoftmaxSaved { z: saved_z, stats }))
    }

    fn softmax_bwd(
        &self,
        job: &SoftmaxJob<Self>,
        saved: &CpuSoftmaxSaved,
        grad_logits: &mut <Self as Storage<f32>>::Vec,
        grad_out: &<Self as Storage<f32>>::Vec,
    ) -> Result<(), CpuError> {
        let (b, c, p) = (job.b, job.c, &job.params);
        if c == 0 {
            return Ok(());
        }
        let go_of = |i: usize| match job.scale {
            Some(s) => grad_out[0] * s,
            None => grad_out[i],
        };
        let w = p.weight.as_deref();
        let z = saved.z.slice();
        let (sa, sb) = (1.0 - p.smoothing, p.smoothing / c as f32);
        for_row_blocks(grad_logits, c, b, c, |first, blk| {
            for (j, g) in blk.chunks_mut(c).enumerate() {
                let i = first + j;
                let zr = &z[i * c..(i + 1) * c];
                let st = saved.stats[i];
                if let Targets::Classes(t) = &job.targets {
                    if Some(t[i]) == p.ignore {
                        continue;
                    }
                }
                if st[1].is_nan() {
                    g.iter_mut().for_each(|v| *v = f32::NAN);
                    continue;
                }
                let go = go_of(i);
                match &job.targets {
                    Targets::Classes(t) => {
                        let [m, ca, cb, cd] = st;
                        simd::grad_index_row(g, zr, w, m, go * ca, go * cb);
                        g[t[i]] += go * cd;
                    }
                    Targets::Probs(y) => {
                        let [m, ca, bc, a] = st;
                        let yr = &y[i * c..(i + 1) * c];
                        simd::grad_probs_row(g, zr, yr, w, m, [go * ca, go * bc, go * a, sa, sb]);
                    }
                    Targets::ClassBuffer(never) => match *never {},
                }
            }
        });
        Ok(())
    }
}
