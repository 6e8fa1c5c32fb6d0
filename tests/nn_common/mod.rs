//! Independent float64 references for the vision-op tests: direct-loop
//! convolution, pooling and batch-norm, central finite differences, and a
//! tolerance check that names the offending index.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values uniform in `[-1, 1)`.
pub fn uniform(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

pub fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` element-wise, where `atol` is
/// relative to the largest reference magnitude (f32 vs f64 rounding).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= rtol * (scale * 0.1 + w.abs()),
            "{what}[{i}]: got {g}, want {w} (err {err:e}, scale {scale:e})"
        );
    }
}

/// Convolution geometry for the references.
#[derive(Clone, Copy, Debug)]
pub struct Geo {
    pub b: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
}

impl Geo {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.p - self.k) / self.s + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.p - self.k) / self.s + 1
    }
    pub fn x_len(&self) -> usize {
        self.b * self.ci * self.h * self.w
    }
    pub fn w_len(&self) -> usize {
        self.co * self.ci * self.k * self.k
    }
    pub fn y_len(&self) -> usize {
        self.b * self.co * self.oh() * self.ow()
    }
}

/// Direct-loop convolution in f64.
pub fn conv_ref(g: &Geo, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let (oh, ow) = (g.oh(), g.ow());
    let mut y = vec![0.0; g.y_len()];
    for b in 0..g.b {
        for o in 0..g.co {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = bias.map_or(0.0, |bb| bb[o]);
                    for c in 0..g.ci {
                        for kh in 0..g.k {
                            for kw in 0..g.k {
                                let ih = (i * g.s + kh) as isize - g.p as isize;
                                let iw = (j * g.s + kw) as isize - g.p as isize;
                                if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize {
                                    continue;
                                }
                                let xi = ((b * g.ci + c) * g.h + ih as usize) * g.w + iw as usize;
                                let wi = ((o * g.ci + c) * g.k + kh) * g.k + kw;
                                acc += x[xi] * w[wi];
                            }
                        }
                    }
                    y[((b * g.co + o) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    y
}

/// Exact f64 gradients `(dx, dw, db)` of the linear loss `Σ conv(x, w, b)·r`
/// from the direct convolution: dL/dw[o,c,kh,kw] = Σ r·x_shifted, dL/dx by
/// the adjoint, dL/db = Σ r.
pub fn conv_grad_ref(g: &Geo, x: &[f64], w: &[f64], r: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (oh, ow, ci, co, k) = (g.oh(), g.ow(), g.ci, g.co, g.k);
    let mut gx = vec![0.0; g.x_len()];
    let mut gw = vec![0.0; g.w_len()];
    let mut gb = vec![0.0; co];
    for b in 0..g.b {
        for o in 0..co {
            for i in 0..oh {
                for j in 0..ow {
                    let ry = r[((b * co + o) * oh + i) * ow + j];
                    gb[o] += ry;
                    for c in 0..ci {
                        for kh in 0..k {
                            for kw in 0..k {
                                let ih = (i * g.s + kh) as isize - g.p as isize;
                                let iw = (j * g.s + kw) as isize - g.p as isize;
                                if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize {
                                    continue;
                                }
                                let xi = ((b * ci + c) * g.h + ih as usize) * g.w + iw as usize;
                                let wi = ((o * ci + c) * k + kh) * k + kw;
                                gw[wi] += ry * x[xi];
                                gx[xi] += ry * w[wi];
                            }
                        }
                    }
                }
            }
        }
    }
    (gx, gw, gb)
}

/// Direct-loop max pooling in f64 (padding never wins).
pub fn max_pool_ref(
    planes: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    x: &[f64],
) -> Vec<f64> {
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let mut y = Vec::with_capacity(planes * oh * ow);
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let mut m = f64::NEG_INFINITY;
                for kh in 0..k {
                    for kw in 0..k {
                        let ih = (i * s + kh) as isize - p as isize;
                        let iw = (j * s + kw) as isize - p as isize;
                        if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w {
                            m = m.max(x[(pl * h + ih as usize) * w + iw as usize]);
                        }
                    }
                }
                y.push(m);
            }
        }
    }
    y
}

/// Batch-norm reference in f64 over `(b, c, plane)`. `stats = None` uses
/// the batch statistics (biased variance); returns `(y, batch mean, batch
/// biased var)`.
#[allow(clippy::too_many_arguments)]
pub fn bn_ref(
    b: usize,
    c: usize,
    plane: usize,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    stats: Option<(&[f64], &[f64])>,
    eps: f64,
    residual: Option<&[f64]>,
    relu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = (b * plane) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals = (0..b).flat_map(|bb| {
            let at = (bb * c + ch) * plane;
            x[at..at + plane].iter().copied()
        });
        let m = vals.clone().sum::<f64>() / n;
        mean[ch] = m;
        var[ch] = vals.map(|v| (v - m) * (v - m)).sum::<f64>() / n;
    }
    let (um, uv) = stats.unwrap_or((&mean, &var));
    let mut y = vec![0.0; x.len()];
    for bb in 0..b {
        for ch in 0..c {
            for i in 0..plane {
                let at = (bb * c + ch) * plane + i;
                let mut v = gamma[ch] * (x[at] - um[ch]) / (uv[ch] + eps).sqrt() + beta[ch];
                if let Some(r) = residual {
                    v += r[at];
                }
                if relu {
                    v = v.max(0.0);
                }
                y[at] = v;
            }
        }
    }
    (y, mean, var)
}

/// Central finite differences of `f` (a scalar function of `v`) in f64.
pub fn fd_grad(v: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut v = v.to_vec();
    (0..v.len())
        .map(|i| {
            let orig = v[i];
            let h = 1e-6 * orig.abs().max(1.0);
            v[i] = orig + h;
            let fp = f(&v);
            v[i] = orig - h;
            let fm = f(&v);
            v[i] = orig;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
