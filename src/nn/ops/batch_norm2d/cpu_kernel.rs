//! CPU batch-norm: statistics per channel (parallel over channels, shifted
//! sums for accuracy), the affine transform + activation per plane (parallel
//! over planes), and the backward pass as one read-only reduction per channel
//! followed by one fused update pass per plane.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{BatchNorm2dKernel, BatchNormGrads, BatchNormOp, BatchNormTensors};
use crate::device::cpu::host_slice;
use std::mem::MaybeUninit;

use crate::nn::ops::cpu_util::{multiversion, relu_mask, uninit_vec, SendPtr};

/// f32 lanes are flushed to the f64 totals after this many values.
const FLUSH: usize = 1024;

multiversion! { avx2:
    /// One channel's `(Σ (x − k), Σ (x − k)²)` in f64 over its `batch`
    /// planes of `plane` values at `x[c0 + b·stride..]`, with eight f32 lanes
    /// flushed every ~1024 values. Shifting by a sample `k` of the data keeps
    /// `E[x²] − E[x]²` from cancelling catastrophically.
    fn channel_shifted_sums(
        x: &[f32],
        c0: usize,
        stride: usize,
        batch: usize,
        plane: usize,
        k: f32,
    ) -> (f64, f64) {
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        let (mut a, mut q) = ([0.0f32; 8], [0.0f32; 8]);
        let mut pending = 0;
        for b in 0..batch {
            let p = &x[c0 + b * stride..c0 + b * stride + plane];
            let chunks = p.chunks_exact(8);
            for (l, &v) in chunks.remainder().iter().enumerate() {
                let d = v - k;
                a[l] += d;
                q[l] += d * d;
            }
            for ch in chunks {
                for l in 0..8 {
                    let d = ch[l] - k;
                    a[l] += d;
                    q[l] += d * d;
                }
            }
            pending += plane;
            if pending >= FLUSH || b + 1 == batch {
                s1 += a.iter().map(|&v| v as f64).sum::<f64>();
                s2 += q.iter().map(|&v| v as f64).sum::<f64>();
                (a, q, pending) = ([0.0; 8], [0.0; 8], 0);
            }
        }
        (s1, s2)
    }
}

multiversion! { avx2:
    /// One plane of the forward pass: `y = act(scale·x + shift [+ r])`.
    fn affine_plane(
        x: &[f32],
        r: Option<&[f32]>,
        y: &mut [MaybeUninit<f32>],
        scale: f32,
        shift: f32,
        relu: bool,
    ) {
        match (r, relu) {
            (None, false) => {
                for (d, &v) in y.iter_mut().zip(x) {
                    d.write(v * scale + shift);
                }
            }
            (None, true) => {
                for (d, &v) in y.iter_mut().zip(x) {
                    let t = v * scale + shift;
                    d.write(if t > 0.0 { t } else { 0.0 });
                }
            }
            (Some(r), false) => {
                for ((d, &v), &rv) in y.iter_mut().zip(x).zip(r) {
                    d.write(v * scale + shift + rv);
                }
            }
            (Some(r), true) => {
                for ((d, &v), &rv) in y.iter_mut().zip(x).zip(r) {
                    let t = v * scale + shift + rv;
                    d.write(if t > 0.0 { t } else { 0.0 });
                }
            }
        }
    }
}

/// Where one channel's values lie in an NCHW buffer: `batch` planes of
/// `plane` values, plane `b` at `c0 + b·stride`.
#[derive(Clone, Copy, Debug)]
struct ChannelSpan {
    c0: usize,
    stride: usize,
    batch: usize,
    plane: usize,
}

impl ChannelSpan {
    /// One past the last index of the channel's last plane.
    fn end(&self) -> usize {
        self.c0 + (self.batch.max(1) - 1) * self.stride + self.plane
    }
}

/// One channel's `(Σ dz, Σ dz·(x − m))` over its planes, `dz = dy·[y > 0]`
/// (or `dy` without `y`): AVX2 intrinsics at [`crate::cpu_dispatch`] level
/// Avx2 and above (the compiler turns the masked sums into branches
/// otherwise), else a portable loop.
fn channel_grad_sums(
    x: &[f32],
    gy: &[f32],
    y: Option<&[f32]>,
    span: ChannelSpan,
    m: f32,
) -> (f64, f64) {
    let end = span.end();
    assert!(x.len() >= end && gy.len() >= end && y.is_none_or(|y| y.len() >= end));
    #[cfg(target_arch = "x86_64")]
    if crate::cpu_dispatch::level() >= crate::cpu_dispatch::Level::Avx2 {
        // SAFETY: the level is Avx2 or above only on CPUs with AVX2 + FMA;
        // every plane lies inside the slices (asserted above).
        return unsafe { channel_grad_sums_avx2(x, gy, y, span, m) };
    }
    channel_grad_sums_portable(x, gy, y, span, m)
}

/// The portable twin of [`channel_grad_sums_avx2`].
fn channel_grad_sums_portable(
    x: &[f32],
    gy: &[f32],
    y: Option<&[f32]>,
    span: ChannelSpan,
    m: f32,
) -> (f64, f64) {
    let ChannelSpan {
        c0,
        stride,
        batch,
        plane,
    } = span;
    let (mut sd, mut sdx) = (0.0f64, 0.0f64);
    for b in 0..batch {
        let at = c0 + b * stride;
        let (mut a, mut q) = (0.0f32, 0.0f32);
        for i in at..at + plane {
            let dz = match y {
                Some(y) => relu_mask(y[i], gy[i]),
                None => gy[i],
            };
            a += dz;
            q += dz * (x[i] - m);
        }
        sd += a as f64;
        sdx += q as f64;
    }
    (sd, sdx)
}

/// [`channel_grad_sums`] in AVX2 registers.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `span.end()` must not exceed the
/// length of `x`, `gy` or `y`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn channel_grad_sums_avx2(
    x: &[f32],
    gy: &[f32],
    y: Option<&[f32]>,
    span: ChannelSpan,
    m: f32,
) -> (f64, f64) {
    use std::arch::x86_64::*;
    let ChannelSpan {
        c0,
        stride,
        batch,
        plane,
    } = span;
    let hsum = |v: __m256| -> f64 {
        let mut t = [0.0f32; 8];
        // SAFETY: `t` holds 8 floats (an unaligned store).
        unsafe { _mm256_storeu_ps(t.as_mut_ptr(), v) };
        t.iter().map(|&e| e as f64).sum()
    };
    let (mut sd, mut sdx) = (0.0f64, 0.0f64);
    let (mut a, mut q) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (zero, mv) = (_mm256_setzero_ps(), _mm256_set1_ps(m));
    let mut pending = 0;
    for b in 0..batch {
        let at = c0 + b * stride;
        // SAFETY: b < batch, so at + plane ≤ c0 + (batch − 1)·stride + plane,
        // which the caller guarantees is within each slice: the plane
        // `at..at + plane` is inside `x`, `gy` and `y`.
        let (xp, gp) = unsafe { (x.as_ptr().add(at), gy.as_ptr().add(at)) };
        // SAFETY: as above, for `y`.
        let yp = y.map(|y| unsafe { y.as_ptr().add(at) });
        let mut i = 0;
        while i + 8 <= plane {
            // SAFETY: i + 8 ≤ plane: each load reads 8 floats of the plane.
            unsafe {
                let g = _mm256_loadu_ps(gp.add(i));
                let dz = match yp {
                    Some(yp) => _mm256_and_ps(
                        g,
                        _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(yp.add(i)), zero),
                    ),
                    None => g,
                };
                a = _mm256_add_ps(a, dz);
                q = _mm256_fmadd_ps(dz, _mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), mv), q);
            }
            i += 8;
        }
        for j in i..plane {
            // SAFETY: j < plane: each read is an element of the plane.
            let (g, yv, xv) = unsafe { (*gp.add(j), yp.map(|yp| *yp.add(j)), *xp.add(j)) };
            let dz = match yv {
                Some(yv) => relu_mask(yv, g),
                None => g,
            };
            sd += dz as f64;
            sdx += (dz * (xv - m)) as f64;
        }
        pending += plane;
        if pending >= FLUSH || b + 1 == batch {
            sd += hsum(a);
            sdx += hsum(q);
            a = _mm256_setzero_ps();
            q = _mm256_setzero_ps();
            pending = 0;
        }
    }
    (sd, sdx)
}

multiversion! { avx2:
    /// One plane of the input gradient: `gx += k·dz + cx·x + c0`, `gr += dz`,
    /// with `coef = [k, cx, c0]`.
    fn plane_grad(
        x: &[f32],
        gy: &[f32],
        y: Option<&[f32]>,
        gx: &mut [f32],
        gr: Option<&mut [f32]>,
        coef: [f32; 3],
    ) {
        let [k, cx, c0] = coef;
        match (y, gr) {
            (None, None) => {
                for ((g, &xv), &d) in gx.iter_mut().zip(x).zip(gy) {
                    *g += k * d + cx * xv + c0;
                }
            }
            (Some(y), None) => {
                for (((g, &xv), &d), &yv) in gx.iter_mut().zip(x).zip(gy).zip(y) {
                    let dz = relu_mask(yv, d);
                    *g += k * dz + cx * xv + c0;
                }
            }
            (None, Some(gr)) => {
                for (((g, r), &xv), &d) in gx.iter_mut().zip(gr.iter_mut()).zip(x).zip(gy) {
                    *g += k * d + cx * xv + c0;
                    *r += d;
                }
            }
            (Some(y), Some(gr)) => {
                for ((((g, r), &xv), &d), &yv) in
                    gx.iter_mut().zip(gr.iter_mut()).zip(x).zip(gy).zip(y)
                {
                    let dz = relu_mask(yv, d);
                    *g += k * dz + cx * xv + c0;
                    *r += dz;
                }
            }
        }
    }
}

/// Per-channel `scale = γ/√(var+ε)` and `shift = β − mean·scale`.
fn affine(
    op: &BatchNormOp,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
) -> Vec<(f32, f32)> {
    (0..op.channels)
        .map(|c| {
            let inv = 1.0 / (var[c] as f64 + op.eps).sqrt();
            let scale = gamma[c] as f64 * inv;
            (
                scale as f32,
                (beta[c] as f64 - mean[c] as f64 * scale) as f32,
            )
        })
        .collect()
}

impl BatchNorm2dKernel for Cpu {
    fn batch_norm2d_stats<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        channels: Sc,
    ) -> Result<(Tensor<Sc, f32, Self>, Tensor<Sc, f32, Self>), Self::Err> {
        let xs = host_slice(x);
        let (c_n, plane) = (op.channels, op.plane);
        assert_eq!(xs.len(), op.batch * c_n * plane);
        let n = op.per_channel() as f64;
        let stats: Vec<(f32, f32)> = (0..c_n)
            .into_par_iter()
            .map(|c| {
                let k = xs[c * plane];
                let (s1, s2) = channel_shifted_sums(xs, c * plane, c_n * plane, op.batch, plane, k);
                let d = s1 / n;
                ((k as f64 + d) as f32, (s2 / n - d * d).max(0.0) as f32)
            })
            .collect();
        let (mean, var): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
        Ok((
            self.try_tensor_from_vec(mean, channels)?,
            self.try_tensor_from_vec(var, channels)?,
        ))
    }

    fn batch_norm2d_forward<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        residual: Option<&Tensor<Sx, f32, Self>>,
        norm: &BatchNormTensors<'_, Sc, Self>,
        out: Sx,
    ) -> Result<Tensor<Sx, f32, Self>, Self::Err> {
        let xs = host_slice(x);
        let rs = residual.map(host_slice);
        let coef = affine(
            op,
            host_slice(norm.gamma),
            host_slice(norm.beta),
            host_slice(norm.mean),
            host_slice(norm.var),
        );
        let (c_n, plane) = (op.channels, op.plane);
        let total = op.batch * c_n * plane;
        assert_eq!(xs.len(), total);
        let relu = op.relu;
        // SAFETY: the planes cover the output and each is fully written.
        let y = unsafe {
            uninit_vec(total, |y| {
                y.par_chunks_mut(plane.max(1))
                    .enumerate()
                    .with_min_len((4096 / plane.max(1)).max(1))
                    .for_each(|(p, dst)| {
                        let (scale, shift) = coef[p % c_n];
                        let src = &xs[p * plane..(p + 1) * plane];
                        let r = rs.map(|r| &r[p * plane..(p + 1) * plane]);
                        affine_plane(src, r, dst, scale, shift, relu);
                    });
            })
        };
        self.try_tensor_from_vec(y, out)
    }

    fn batch_norm2d_backward<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        y: Option<&Tensor<Sx, f32, Self>>,
        norm: &BatchNormTensors<'_, Sc, Self>,
        grads: BatchNormGrads<'_, Self>,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let BatchNormGrads {
            x: gx,
            gamma: ggamma,
            beta: gbeta,
            residual: gresidual,
        } = grads;
        let xs = host_slice(x);
        let ys = y.map(host_slice);
        let (gamma, mean, var) = (
            host_slice(norm.gamma),
            host_slice(norm.mean),
            host_slice(norm.var),
        );
        let (c_n, plane) = (op.channels, op.plane);
        let total = op.batch * c_n * plane;
        assert_eq!(xs.len(), total);
        assert_eq!(gy.len(), total);
        assert_eq!(gx.len(), total);
        let n = op.per_channel() as f64;

        // Pass 1 (read-only, per channel): Σ dz and Σ dz·x̂, dz = dy·mask.
        let sums: Vec<(f64, f64)> = (0..c_n)
            .into_par_iter()
            .map(|c| {
                let span = ChannelSpan {
                    c0: c * plane,
                    stride: c_n * plane,
                    batch: op.batch,
                    plane,
                };
                let (sd, sdx) = channel_grad_sums(xs, gy, ys, span, mean[c]);
                let inv = 1.0 / (var[c] as f64 + op.eps).sqrt();
                (sd, sdx * inv)
            })
            .collect();
        for c in 0..c_n {
            gbeta[c] += sums[c].0 as f32;
            ggamma[c] += sums[c].1 as f32;
        }

        // Pass 2 (per plane): gx += k (dz − a − x̂·b); gr += dz.
        // Training mode subtracts the statistics' share (a, b); eval does not.
        let coefs: Vec<[f32; 3]> = (0..c_n)
            .map(|c| {
                let inv = 1.0 / (var[c] as f64 + op.eps).sqrt();
                let k = gamma[c] as f64 * inv;
                let (a, b) = if op.train {
                    (sums[c].0 / n, sums[c].1 / n)
                } else {
                    (0.0, 0.0)
                };
                // k (dz − a − (x − m)·inv·b) = k·dz + cx·x + c0
                let cx = -k * b * inv;
                let c0 = k * (b * inv * mean[c] as f64 - a);
                [k as f32, cx as f32, c0 as f32]
            })
            .collect();
        let gr_ptr = gresidual.map(|g| {
            assert_eq!(g.len(), total);
            SendPtr(g.as_mut_ptr())
        });
        gx.par_chunks_mut(plane.max(1))
            .enumerate()
            .with_min_len((4096 / plane.max(1)).max(1))
            .for_each(|(p, gxp)| {
                let at = p * plane;
                // SAFETY: plane `p` of the residual gradient belongs to this task only.
                let grp = gr_ptr
                    .map(|g| unsafe { std::slice::from_raw_parts_mut(g.get().add(at), plane) });
                let y = ys.map(|y| &y[at..at + plane]);
                plane_grad(
                    &xs[at..at + plane],
                    &gy[at..at + plane],
                    y,
                    gxp,
                    grp,
                    coefs[p % c_n],
                );
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_sums_simd_and_portable_agree() {
        // Planes of 1..=19 values (SIMD body and scalar tails), with and without a mask.
        let n = 3 * 5 * 19;
        let val = |i: usize| ((i * 7919 % 97) as f32 - 48.0) / 17.0;
        let x: Vec<f32> = (0..n).map(val).collect();
        let gy: Vec<f32> = (0..n).map(|i| val(i + 13)).collect();
        let y: Vec<f32> = (0..n).map(|i| val(i + 29)).collect();
        for plane in 1..=19 {
            for mask in [None, Some(y.as_slice())] {
                let span = ChannelSpan {
                    c0: 2,
                    stride: 5 * plane,
                    batch: 3,
                    plane,
                };
                let want = channel_grad_sums_portable(&x, &gy, mask, span, 0.3);
                let got = channel_grad_sums(&x, &gy, mask, span, 0.3);
                assert!(
                    (got.0 - want.0).abs() < 1e-5,
                    "{plane}: {got:?} vs {want:?}"
                );
                assert!(
                    (got.1 - want.1).abs() < 1e-5,
                    "{plane}: {got:?} vs {want:?}"
                );
            }
        }
    }
}
