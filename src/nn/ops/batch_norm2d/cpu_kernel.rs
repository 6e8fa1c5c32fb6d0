//! CPU batch-norm: statistics per channel (parallel over channels, shifted
//! sums for accuracy), the affine transform + activation per plane (parallel
//! over planes), and the backward pass as one read-only reduction per channel
//! followed by one fused update pass per plane.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{BatchNorm2dKernel, BatchNormOp};
use crate::device::cpu::host_slice;
use crate::nn::ops::cpu_util::{uninit_vec, SendPtr};

/// `(Σ (x − k), Σ (x − k)²)` in f64, with f32 lanes flushed every 1024
/// values. Shifting by a sample `k` of the data keeps `E[x²] − E[x]²` from
/// cancelling catastrophically.
#[inline]
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
        // SAFETY: every plane task writes all `plane` outputs of its plane.
        let y = unsafe {
            uninit_vec(total, |yp| {
                let yp = SendPtr(yp);
                (0..op.batch * c_n)
                    .into_par_iter()
                    .with_min_len((4096 / plane.max(1)).max(1))
                    .for_each(|p| {
                        let (scale, shift) = coef[p % c_n];
                        let src = &xs[p * plane..(p + 1) * plane];
                        let dst = std::slice::from_raw_parts_mut(yp.get().add(p * plane), plane);
                        match (rs, relu) {
                            (None, false) => {
                                for (d, &v) in dst.iter_mut().zip(src) {
                                    *d = v * scale + shift;
                                }
                            }
                            (None, true) => {
                                for (d, &v) in dst.iter_mut().zip(src) {
                                    *d = (v * scale + shift).max(0.0);
                                }
                            }
                            (Some(r), _) => {
                                let r = &r[p * plane..(p + 1) * plane];
                                for ((d, &v), &rv) in dst.iter_mut().zip(src).zip(r) {
                                    let t = v * scale + shift + rv;
                                    *d = if relu { t.max(0.0) } else { t };
                                }
                            }
                        }
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
                    let (xr, gr) = (&xs[at..at + plane], &gy[at..at + plane]);
                    let (mut a, mut q) = ([0.0f32; 8], [0.0f32; 8]);
                    for i in 0..plane {
                        let keep = ys.is_none_or(|y| y[at + i] > 0.0);
                        let dz = if keep { gr[i] } else { 0.0 };
                        a[i % 8] += dz;
                        q[i % 8] += dz * (xr[i] - m);
                    }
                    sd += a.iter().map(|&v| v as f64).sum::<f64>();
                    sdx += q.iter().map(|&v| v as f64).sum::<f64>();
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
        let coefs: Vec<[f32; 5]> = (0..c_n)
            .map(|c| {
                let inv = 1.0 / (var[c] as f64 + op.eps).sqrt();
                let k = gamma[c] as f64 * inv;
                let (a, b) = if op.train {
                    (sums[c].0 / n, sums[c].1 / n)
                } else {
                    (0.0, 0.0)
                };
                [k as f32, a as f32, b as f32, mean[c], inv as f32]
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
                let [k, a, b, m, inv] = coefs[p % c_n];
                let at = p * plane;
                let (xr, gyr) = (&xs[at..at + plane], &gy[at..at + plane]);
                // SAFETY: plane `p` of the residual gradient belongs to this task only.
                let mut grp = gr_ptr
                    .map(|g| unsafe { std::slice::from_raw_parts_mut(g.get().add(at), plane) });
                for i in 0..plane {
                    let keep = ys.is_none_or(|y| y[at + i] > 0.0);
                    let dz = if keep { gyr[i] } else { 0.0 };
                    let xhat = (xr[i] - m) * inv;
                    gxp[i] += k * (dz - a - xhat * b);
                    if let Some(g) = grp.as_deref_mut() {
                        g[i] += dz;
                    }
                }
            });
        Ok(())
    }
}
