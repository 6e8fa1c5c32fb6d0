//! CPU batch-norm: statistics per channel (parallel over channels, shifted
//! sums for accuracy), the affine transform + activation per plane (parallel
//! over planes), and the backward pass as one read-only reduction per channel
//! followed by one fused update pass per plane.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{BatchNorm2dKernel, BatchNormOp};
use crate::device::cpu::host_slice;
use std::mem::MaybeUninit;

use crate::nn::ops::cpu_util::{multiversion, uninit_vec, SendPtr};

multiversion! {
    /// `(Σ (x − k), Σ (x − k)²)` in f64, with f32 lanes flushed every 1024
    /// values. Shifting by a sample `k` of the data keeps `E[x²] − E[x]²`
    /// from cancelling catastrophically.
    fn shifted_sums(xs: &[f32], k: f32) -> (f64, f64) {
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for block in xs.chunks(1024) {
            let mut a = [0.0f32; 8];
            let mut b = [0.0f32; 8];
            let chunks = block.chunks_exact(8);
            let rem = chunks.remainder();
            for c in chunks {
                for l in 0..8 {
                    let d = c[l] - k;
                    a[l] += d;
                    b[l] += d * d;
                }
            }
            for &v in rem {
                let d = v - k;
                a[0] += d;
                b[0] += d * d;
            }
            s1 += a.iter().map(|&v| v as f64).sum::<f64>();
            s2 += b.iter().map(|&v| v as f64).sum::<f64>();
        }
        (s1, s2)
    }
}

multiversion! {
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

multiversion! {
    /// One plane's `(Σ dz, Σ dz·(x − m))`, `dz = dy·[y > 0]` (or `dy`).
    fn plane_sums(x: &[f32], gy: &[f32], y: Option<&[f32]>, m: f32) -> (f64, f64) {
        let (mut sd, mut sdx) = (0.0f64, 0.0f64);
        let mut lanes = |x: &[f32], gy: &[f32], y: Option<&[f32]>| {
            let (mut a, mut q) = ([0.0f32; 8], [0.0f32; 8]);
            let n8 = x.len() / 8 * 8;
            match y {
                None => {
                    for (xc, gc) in x[..n8].chunks_exact(8).zip(gy[..n8].chunks_exact(8)) {
                        for l in 0..8 {
                            a[l] += gc[l];
                            q[l] += gc[l] * (xc[l] - m);
                        }
                    }
                }
                Some(y) => {
                    for ((xc, gc), yc) in x[..n8]
                        .chunks_exact(8)
                        .zip(gy[..n8].chunks_exact(8))
                        .zip(y[..n8].chunks_exact(8))
                    {
                        for l in 0..8 {
                            let dz = if yc[l] > 0.0 { gc[l] } else { 0.0 };
                            a[l] += dz;
                            q[l] += dz * (xc[l] - m);
                        }
                    }
                }
            }
            for i in n8..x.len() {
                let dz = match y {
                    Some(y) if y[i] <= 0.0 => 0.0,
                    _ => gy[i],
                };
                a[0] += dz;
                q[0] += dz * (x[i] - m);
            }
            sd += a.iter().map(|&v| v as f64).sum::<f64>();
            sdx += q.iter().map(|&v| v as f64).sum::<f64>();
        };
        for (i, (xc, gc)) in x.chunks(1024).zip(gy.chunks(1024)).enumerate() {
            lanes(xc, gc, y.map(|y| &y[i * 1024..i * 1024 + xc.len()]));
        }
        (sd, sdx)
    }
}

multiversion! {
    /// One plane of the input gradient: `gx += k·dz + cx·x + c0`, `gr += dz`.
    #[allow(clippy::too_many_arguments)]
    fn plane_grad(
        x: &[f32],
        gy: &[f32],
        y: Option<&[f32]>,
        gx: &mut [f32],
        gr: Option<&mut [f32]>,
        k: f32,
        cx: f32,
        c0: f32,
    ) {
        match (y, gr) {
            (None, None) => {
                for ((g, &xv), &d) in gx.iter_mut().zip(x).zip(gy) {
                    *g += k * d + cx * xv + c0;
                }
            }
            (Some(y), None) => {
                for (((g, &xv), &d), &yv) in gx.iter_mut().zip(x).zip(gy).zip(y) {
                    let dz = if yv > 0.0 { d } else { 0.0 };
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
                    let dz = if yv > 0.0 { d } else { 0.0 };
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
                let (mut s1, mut s2) = (0.0, 0.0);
                for b in 0..op.batch {
                    let at = (b * c_n + c) * plane;
                    let (a, q) = shifted_sums(&xs[at..at + plane], k);
                    s1 += a;
                    s2 += q;
                }
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
        gamma: &Tensor<Sc, f32, Self>,
        beta: &Tensor<Sc, f32, Self>,
        mean: &Tensor<Sc, f32, Self>,
        var: &Tensor<Sc, f32, Self>,
        out: Sx,
    ) -> Result<Tensor<Sx, f32, Self>, Self::Err> {
        let xs = host_slice(x);
        let rs = residual.map(host_slice);
        let coef = affine(
            op,
            host_slice(gamma),
            host_slice(beta),
            host_slice(mean),
            host_slice(var),
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
        gamma: &Tensor<Sc, f32, Self>,
        mean: &Tensor<Sc, f32, Self>,
        var: &Tensor<Sc, f32, Self>,
        gx: &mut Self::Vec,
        ggamma: &mut Self::Vec,
        gbeta: &mut Self::Vec,
        gresidual: Option<&mut Self::Vec>,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let xs = host_slice(x);
        let ys = y.map(host_slice);
        let (gamma, mean, var) = (host_slice(gamma), host_slice(mean), host_slice(var));
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
                let m = mean[c];
                let (mut sd, mut sdx) = (0.0f64, 0.0f64);
                for b in 0..op.batch {
                    let at = (b * c_n + c) * plane;
                    let y = ys.map(|y| &y[at..at + plane]);
                    let (a, q) = plane_sums(&xs[at..at + plane], &gy[at..at + plane], y, m);
                    sd += a;
                    sdx += q;
                }
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
                let [k, cx, c0] = coefs[p % c_n];
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
                    k,
                    cx,
                    c0,
                );
            });
        Ok(())
    }
}
