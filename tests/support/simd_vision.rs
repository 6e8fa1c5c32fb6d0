//! Shared body of the vision checks in the `simd_*` tests: with the
//! process pinned to one instruction-set path (`POLY_LOSS_SIMD`, read once
//! per process), conv2d (the Winograd, im2col and 1×1 paths), batch-norm
//! (both modes, every fused tail), `add_relu`, max pooling and global
//! average pooling, forward and backward, against float64 references.
//! Loss `Σ y·r` makes `r` the output gradient, so the references are exact
//! f64 adjoints.

use dfdx::prelude::*;
use poly_loss::nn::ops::{
    add_relu, batch_norm2d, conv2d, global_avg_pool2d, max_pool2d, BatchNormParams, Tail,
};

use crate::nn_common::{
    assert_close, bn_ref, conv_grad_ref, conv_ref, max_pool_ref, rng, to64, uniform, Geo,
};

type Img<const C: usize> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu>;

/// Relative tolerance of every comparison (f32 kernels vs f64 references).
const RTOL: f64 = 1e-4;

/// conv2d forward and its three gradients against the direct f64
/// convolution and its adjoint.
fn check_conv<const I: usize, const O: usize, const K: usize>(path: &str, g: Geo, seed: u64) {
    assert_eq!((g.ci, g.co, g.k), (I, O, K));
    let dev = Cpu::default();
    let mut r = rng(seed);
    let (xv, wv, bv) = (
        uniform(&mut r, g.x_len()),
        uniform(&mut r, g.w_len()),
        uniform(&mut r, O),
    );
    let rv = uniform(&mut r, g.y_len());
    let x: Img<I> = dev.tensor_from_vec(xv.clone(), (g.b, Const, g.h, g.w));
    let w: Tensor<Rank4<O, I, K, K>, f32, _> = dev.tensor_from_vec(wv.clone(), Default::default());
    let bias: Tensor<Rank1<O>, f32, _> = dev.tensor_from_vec(bv.clone(), Default::default());
    let y = conv2d(x.leaky_trace(), &w, Some(&bias), g.s, g.p);
    let (x64, w64, b64, r64) = (to64(&xv), to64(&wv), to64(&bv), to64(&rv));
    let what = format!("{path}: conv {g:?}");
    assert_close(
        &what,
        &y.as_vec(),
        &conv_ref(&g, &x64, &w64, Some(&b64)),
        RTOL,
    );

    let rt = dev.tensor_from_vec(rv, *y.shape());
    let grads = (y * rt).sum().backward();
    let (gx, gw, gb) = conv_grad_ref(&g, &x64, &w64, &r64);
    assert_close(&format!("{what} dx"), &grads.get(&x).as_vec(), &gx, RTOL);
    assert_close(&format!("{what} dw"), &grads.get(&w).as_vec(), &gw, RTOL);
    assert_close(&format!("{what} db"), &grads.get(&bias).as_vec(), &gb, RTOL);
}

pub fn conv2d_matches_f64(path: &str) {
    let geo = |b, ci, co, h, w, k, s, p| Geo {
        b,
        ci,
        co,
        h,
        w,
        k,
        s,
        p,
    };
    // ≥ 16 channels each side, 3×3 stride 1, ≥ 64 output tiles: Winograd.
    let g = geo(4, 16, 20, 17, 13, 3, 1, 1);
    assert!(g.b * g.oh().div_ceil(4) * g.ow().div_ceil(4) >= 64);
    check_conv::<16, 20, 3>(path, g, 1);
    // Strided 3×3 (im2col and the strided copies), and a 1×1 projection.
    check_conv::<3, 8, 3>(path, geo(2, 3, 8, 11, 9, 3, 2, 1), 2);
    check_conv::<8, 12, 1>(path, geo(3, 8, 12, 9, 7, 1, 1, 0), 3);
}

/// The f64 gradients of `Σ y·r` through batch-norm: `(dx, dγ, dβ, dres)`.
/// Eval mode treats the statistics as constants; train mode adds their
/// share, `dx = γ/σ · (dz − mean(dz) − x̂·mean(dz·x̂))`.
#[allow(clippy::type_complexity)]
fn bn_grads_ref(
    (b, c, plane): (usize, usize, usize),
    x: &[f64],
    y: &[f64],
    r: &[f64],
    gamma: &[f64],
    (mean, var): (&[f64], &[f64]),
    (train, relu): (bool, bool),
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = (b * plane) as f64;
    let dz: Vec<f64> = (0..x.len())
        .map(|i| if relu && y[i] <= 0.0 { 0.0 } else { r[i] })
        .collect();
    let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let sigma = (var[ch] + EPS).sqrt();
        let at = |bb: usize, i: usize| (bb * c + ch) * plane + i;
        let xhat = |k: usize| (x[k] - mean[ch]) / sigma;
        let (mut sd, mut sdx) = (0.0, 0.0);
        for bb in 0..b {
            for i in 0..plane {
                let k = at(bb, i);
                sd += dz[k];
                sdx += dz[k] * xhat(k);
            }
        }
        db[ch] = sd;
        dg[ch] = sdx;
        for bb in 0..b {
            for i in 0..plane {
                let k = at(bb, i);
                let share = if train {
                    sd / n + xhat(k) * sdx / n
                } else {
                    0.0
                };
                dx[k] = gamma[ch] / sigma * (dz[k] - share);
            }
        }
    }
    (dx, dg, db, dz)
}

const EPS: f64 = 1e-5;

pub fn batch_norm_matches_f64(path: &str) {
    const C: usize = 4;
    // Planes of 35 values: the 8-wide vector bodies and their tails.
    let (b, h, w) = (3, 5, 7);
    let plane = h * w;
    let n = b * C * plane;
    let dev = Cpu::default();
    let mut r = rng(11);
    let xv: Vec<f32> = uniform(&mut r, n).iter().map(|v| 2.0 * v + 0.5).collect();
    let (resv, rv) = (uniform(&mut r, n), uniform(&mut r, n));
    let gv: Vec<f32> = uniform(&mut r, C).iter().map(|v| 1.0 + 0.5 * v).collect();
    let bv = uniform(&mut r, C);
    let rmv: Vec<f32> = uniform(&mut r, C).iter().map(|v| 0.3 * v).collect();
    let rvv: Vec<f32> = uniform(&mut r, C).iter().map(|v| 1.2 + 0.5 * v).collect();
    let (x64, res64, r64, g64, b64) = (to64(&xv), to64(&resv), to64(&rv), to64(&gv), to64(&bv));
    for train in [false, true] {
        for tail in ["none", "relu", "add_relu"] {
            let what = format!("{path}: bn train={train} tail={tail}");
            let shape = (b, Const::<C>, h, w);
            let x: Img<C> = dev.tensor_from_vec(xv.clone(), shape);
            let res: Img<C> = dev.tensor_from_vec(resv.clone(), shape);
            let gamma: Tensor<Rank1<C>, f32, _> = dev.tensor_from_vec(gv.clone(), (Const,));
            let beta: Tensor<Rank1<C>, f32, _> = dev.tensor_from_vec(bv.clone(), (Const,));
            let mut rm: Tensor<Rank1<C>, f32, _> = dev.tensor_from_vec(rmv.clone(), (Const,));
            let mut rvar: Tensor<Rank1<C>, f32, _> = dev.tensor_from_vec(rvv.clone(), (Const,));
            let t = match tail {
                "none" => Tail::None,
                "relu" => Tail::Relu,
                _ => Tail::AddRelu(res.retaped()),
            };
            let params = if train {
                BatchNormParams::train(&gamma, &beta, &mut rm, &mut rvar, EPS, 0.1)
            } else {
                BatchNormParams::eval(&gamma, &beta, &rm, &rvar, EPS)
            };
            let y = batch_norm2d(x.leaky_trace(), params, t);
            let (rm64, rv64) = (to64(&rmv), to64(&rvv));
            let relu = tail != "none";
            let residual = (tail == "add_relu").then_some(res64.as_slice());
            let stats = (!train).then_some((rm64.as_slice(), rv64.as_slice()));
            let (y64, bmean, bvar) =
                bn_ref(b, C, plane, &x64, &g64, &b64, stats, EPS, residual, relu);
            assert_close(&format!("{what} y"), &y.as_vec(), &y64, RTOL);
            if train {
                let unbiased = (b * plane) as f64 / (b * plane - 1) as f64;
                let want_m: Vec<f64> = (0..C).map(|c| 0.9 * rm64[c] + 0.1 * bmean[c]).collect();
                let want_v: Vec<f64> = (0..C)
                    .map(|c| 0.9 * rv64[c] + 0.1 * unbiased * bvar[c])
                    .collect();
                assert_close(&format!("{what} running_mean"), &rm.as_vec(), &want_m, RTOL);
                assert_close(
                    &format!("{what} running_var"),
                    &rvar.as_vec(),
                    &want_v,
                    RTOL,
                );
            }
            let rt = dev.tensor_from_vec(rv.clone(), *y.shape());
            let grads = (y * rt).sum().backward();
            let used = if train {
                (&bmean[..], &bvar[..])
            } else {
                (&rm64[..], &rv64[..])
            };
            let (dx, dg, db, dres) =
                bn_grads_ref((b, C, plane), &x64, &y64, &r64, &g64, used, (train, relu));
            assert_close(&format!("{what} dx"), &grads.get(&x).as_vec(), &dx, RTOL);
            assert_close(
                &format!("{what} dgamma"),
                &grads.get(&gamma).as_vec(),
                &dg,
                RTOL,
            );
            assert_close(
                &format!("{what} dbeta"),
                &grads.get(&beta).as_vec(),
                &db,
                RTOL,
            );
            if tail == "add_relu" {
                assert_close(
                    &format!("{what} dres"),
                    &grads.get(&res).as_vec(),
                    &dres,
                    RTOL,
                );
            }
        }
    }
}

pub fn add_relu_matches_f64(path: &str) {
    let dev = Cpu::default();
    let mut r = rng(12);
    let n = 3 * 5 * 37;
    let (av, bv, rv) = (uniform(&mut r, n), uniform(&mut r, n), uniform(&mut r, n));
    let shape = (3, Const::<5>, 37, 1);
    let a: Img<5> = dev.tensor_from_vec(av.clone(), shape);
    let b: Img<5> = dev.tensor_from_vec(bv.clone(), shape);
    let y = add_relu(a.leaky_trace(), b.clone());
    let sum: Vec<f64> = av
        .iter()
        .zip(&bv)
        .map(|(&p, &q)| p as f64 + q as f64)
        .collect();
    let want: Vec<f64> = sum.iter().map(|v| v.max(0.0)).collect();
    assert_close(&format!("{path}: add_relu"), &y.as_vec(), &want, RTOL);
    let grads = (y * dev.tensor_from_vec(rv.clone(), shape))
        .sum()
        .backward();
    let g: Vec<f64> = sum
        .iter()
        .zip(&rv)
        .map(|(&s, &r)| if s > 0.0 { r as f64 } else { 0.0 })
        .collect();
    assert_close(
        &format!("{path}: add_relu da"),
        &grads.get(&a).as_vec(),
        &g,
        RTOL,
    );
    assert_close(
        &format!("{path}: add_relu db"),
        &grads.get(&b).as_vec(),
        &g,
        RTOL,
    );
}

pub fn pools_match_f64(path: &str) {
    const C: usize = 3;
    let (b, h, w) = (2, 11, 9);
    let planes = b * C;
    let dev = Cpu::default();
    let mut r = rng(13);
    let xv = uniform(&mut r, planes * h * w);
    let x64 = to64(&xv);
    let x: Img<C> = dev.tensor_from_vec(xv, (b, Const, h, w));

    // Max pool 3×3 / 2, padding 1 (the ResNet stem's), gradient to the
    // first maximum of each window.
    let (k, s, p) = (3, 2, 1);
    let y = max_pool2d(x.leaky_trace(), k, s, p);
    let want = max_pool_ref(planes, h, w, k, s, p, &x64);
    assert_close(&format!("{path}: max_pool"), &y.as_vec(), &want, RTOL);
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let rv = uniform(&mut r, planes * oh * ow);
    let grads = (y * dev.tensor_from_vec(rv.clone(), (b, Const::<C>, oh, ow)))
        .sum()
        .backward();
    let mut gx = vec![0.0; x64.len()];
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let mut best: Option<(usize, f64)> = None;
                for kh in 0..k {
                    for kw in 0..k {
                        let ih = (i * s + kh) as isize - p as isize;
                        let iw = (j * s + kw) as isize - p as isize;
                        if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                            continue;
                        }
                        let at = (pl * h + ih as usize) * w + iw as usize;
                        if best.is_none_or(|(_, m)| x64[at] > m) {
                            best = Some((at, x64[at]));
                        }
                    }
                }
                let (at, _) = best.expect("every window overlaps the image");
                gx[at] += rv[(pl * oh + i) * ow + j] as f64;
            }
        }
    }
    assert_close(
        &format!("{path}: max_pool dx"),
        &grads.get(&x).as_vec(),
        &gx,
        RTOL,
    );

    // Global average pool: mean per plane; each input gets r / (h·w).
    let y = global_avg_pool2d(x.leaky_trace());
    let hw = h * w;
    let want: Vec<f64> = (0..planes)
        .map(|pl| x64[pl * hw..(pl + 1) * hw].iter().sum::<f64>() / hw as f64)
        .collect();
    assert_close(
        &format!("{path}: global_avg_pool"),
        &y.as_vec(),
        &want,
        RTOL,
    );
    let rv = uniform(&mut r, planes);
    let grads = (y * dev.tensor_from_vec(rv.clone(), (b, Const::<C>)))
        .sum()
        .backward();
    let gx: Vec<f64> = (0..planes * hw)
        .map(|i| rv[i / hw] as f64 / hw as f64)
        .collect();
    assert_close(
        &format!("{path}: global_avg_pool dx"),
        &grads.get(&x).as_vec(),
        &gx,
        RTOL,
    );
}
