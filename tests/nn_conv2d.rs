//! conv2d forward and gradients against a float64 direct convolution and
//! central finite differences, over random batch sizes, image sizes, strides
//! and paddings (odd sizes included), plus the im2col chunking and 1×1 paths.

use crate::nn_common;

use dfdx::prelude::*;
use nn_common::*;
use poly_loss::nn::ops::conv2d;
use rand::Rng;

type Img<const C: usize> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu>;

/// Runs conv2d on `g` (with channel/kernel sizes fixed by the const
/// generics) and checks output and all three gradients.
fn check<const I: usize, const O: usize, const K: usize>(g: Geo, seed: u64, with_fd: bool) {
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
    assert_eq!(y.shape().concrete(), [g.b, O, g.oh(), g.ow()], "{g:?}");
    let (x64, w64, b64, r64) = (to64(&xv), to64(&wv), to64(&bv), to64(&rv));
    let want = conv_ref(&g, &x64, &w64, Some(&b64));
    assert_close(&format!("y {g:?}"), &y.as_vec(), &want, 1e-4);

    // Loss Σ y·r, so dL/dy = r.
    let rt = dev.tensor_from_vec(rv, *y.shape());
    let grads = (y * rt).sum().backward();
    let (gx, gw, gb) = (
        grads.get(&x).as_vec(),
        grads.get(&w).as_vec(),
        grads.get(&bias).as_vec(),
    );

    // Exact f64 gradients of the linear loss from the direct convolution.
    let (gx_ref, gw_ref, gb_ref) = conv_grad_ref(&g, &x64, &w64, &r64);
    assert_close(&format!("dx {g:?}"), &gx, &gx_ref, 1e-4);
    assert_close(&format!("dw {g:?}"), &gw, &gw_ref, 1e-4);
    assert_close(&format!("db {g:?}"), &gb, &gb_ref, 1e-4);

    if with_fd {
        // Finite differences of the f64 reference confirm the adjoint above.
        let loss_x = |xs: &[f64]| dot(&conv_ref(&g, xs, &w64, Some(&b64)), &r64);
        assert_close(&format!("dx fd {g:?}"), &gx, &fd_grad(&x64, loss_x), 1e-4);
        let loss_w = |ws: &[f64]| dot(&conv_ref(&g, &x64, ws, Some(&b64)), &r64);
        assert_close(&format!("dw fd {g:?}"), &gw, &fd_grad(&w64, loss_w), 1e-4);
        let loss_b = |bs: &[f64]| dot(&conv_ref(&g, &x64, &w64, Some(bs)), &r64);
        assert_close(&format!("db fd {g:?}"), &gb, &fd_grad(&b64, loss_b), 1e-4);
    }
}

/// Random geometries for fixed (I, O, K): batch 1..=3 (both the per-image
/// and the threaded-GEMM schedules), odd and even sizes, stride 1..=3,
/// padding 0..=K/2+1.
fn random_geos<const I: usize, const O: usize, const K: usize>(seed: u64, n: usize, fd: bool) {
    let mut r = rng(seed);
    for t in 0..n {
        let s = r.gen_range(1..=3);
        let p = r.gen_range(0..=K / 2 + 1);
        let min = K.saturating_sub(2 * p).max(1);
        let g = Geo {
            b: r.gen_range(1..=3),
            ci: I,
            co: O,
            h: r.gen_range(min..min + 9),
            w: r.gen_range(min..min + 9),
            k: K,
            s,
            p,
        };
        check::<I, O, K>(g, seed * 1000 + t as u64, fd && t < 2);
    }
}

#[test]
fn conv3x3_random_shapes() {
    random_geos::<3, 4, 3>(1, 12, true);
}

#[test]
fn conv1x1_random_shapes() {
    // Includes the pointwise fast path (stride 1, padding 0) and strided 1×1.
    random_geos::<5, 3, 1>(2, 12, true);
}

#[test]
fn conv_even_and_large_kernels() {
    random_geos::<2, 3, 2>(3, 6, true);
    random_geos::<3, 2, 5>(4, 6, false);
}

#[test]
fn conv_stem_geometry() {
    // torchvision's stem: 7×7, stride 2, padding 3, on an odd-sized image.
    let g = Geo {
        b: 2,
        ci: 3,
        co: 4,
        h: 23,
        w: 18,
        k: 7,
        s: 2,
        p: 3,
    };
    check::<3, 4, 7>(g, 11, false);
}

#[test]
fn conv_chunked_im2col() {
    // 64·3·3 = 576 im2col rows: chunks of 3640 positions, so a 64×64 output
    // (4096 positions) is processed in two chunks; also strided, and with the
    // threaded-GEMM schedule (batch 1).
    let g = Geo {
        b: 1,
        ci: 64,
        co: 3,
        h: 64,
        w: 64,
        k: 3,
        s: 1,
        p: 1,
    };
    check::<64, 3, 3>(g, 21, false);
    let g = Geo {
        b: 2,
        ci: 64,
        co: 2,
        h: 129,
        w: 127,
        k: 3,
        s: 2,
        p: 1,
    };
    check::<64, 2, 3>(g, 22, false);
}

#[test]
fn conv_pointwise_large() {
    let g = Geo {
        b: 3,
        ci: 16,
        co: 8,
        h: 15,
        w: 13,
        k: 1,
        s: 1,
        p: 0,
    };
    check::<16, 8, 1>(g, 31, false);
    let g = Geo {
        b: 3,
        ci: 16,
        co: 8,
        h: 15,
        w: 13,
        k: 1,
        s: 2,
        p: 0,
    };
    check::<16, 8, 1>(g, 32, false);
}

#[test]
fn conv3x3_winograd_shapes() {
    // 3×3 stride-1 convolutions with ≥ 16 channels each side and ≥ 64
    // output tiles of 4×4 take the Winograd F(4×4, 3×3) path: partial edge
    // tiles (odd sizes), paddings 0..=2, an output channel count off the
    // 8-wide vectors, batches split into several groups or one. The exact
    // f64 adjoints are checked; finite differences (whose adjoint check the
    // small-shape tests already make) would take minutes at this size.
    for (t, (b, h, w, p)) in [
        (4, 17, 13, 1),
        (2, 30, 19, 0),
        (1, 33, 31, 2),
        (9, 11, 12, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let g = Geo {
            b,
            ci: 16,
            co: 20,
            h,
            w,
            k: 3,
            s: 1,
            p,
        };
        assert!(g.b * g.oh().div_ceil(4) * g.ow().div_ceil(4) >= 64, "{g:?}");
        check::<16, 20, 3>(g, 40 + t as u64, false);
    }
}

#[test]
fn conv_gradients_accumulate_and_respect_no_bias() {
    // The same input through two convolutions: gradients must add up.
    let dev = Cpu::default();
    let mut r = rng(5);
    let g = Geo {
        b: 2,
        ci: 2,
        co: 3,
        h: 5,
        w: 6,
        k: 3,
        s: 1,
        p: 1,
    };
    let xv = uniform(&mut r, g.x_len());
    let wv = uniform(&mut r, g.w_len());
    let x: Img<2> = dev.tensor_from_vec(xv.clone(), (2, Const, 5, 6));
    let w: Tensor<Rank4<3, 2, 3, 3>, f32, _> = dev.tensor_from_vec(wv.clone(), Default::default());
    let xt = x.leaky_trace();
    let y1 = conv2d(xt.with_empty_tape(), &w, None, 1, 1).sum();
    let y2 = conv2d(xt, &w, None, 1, 1).sum();
    let grads = (y1 + y2).backward();
    let gx = grads.get(&x).as_vec();

    let grads1 = conv2d(x.leaky_trace(), &w, None, 1, 1).sum().backward();
    let gx1 = grads1.get(&x).as_vec();
    let gw1 = grads1.get(&w).as_vec();
    for (a, b) in gx.iter().zip(&gx1) {
        assert!((a - 2.0 * b).abs() < 1e-4, "{a} vs 2·{b}");
    }
    let gw = grads.get(&w).as_vec();
    for (a, b) in gw.iter().zip(&gw1) {
        assert!((a - 2.0 * b).abs() < 1e-3, "{a} vs 2·{b}");
    }
    // Without a tape nothing is recorded and the output matches.
    let y = conv2d(x.clone(), &w, None, 1, 1);
    let want = conv_ref(&g, &to64(&xv), &to64(&wv), None);
    assert_close("no-tape y", &y.as_vec(), &want, 1e-4);
}

#[test]
fn conv_accepts_strided_input() {
    // A permuted (non-contiguous) input must be read in logical order and
    // still receive its gradient.
    let dev = Cpu::default();
    let mut r = rng(6);
    let xv = uniform(&mut r, 2 * 3 * 4 * 5);
    // Stored as (B, H, C, W), viewed as (B, C, H, W).
    let stored: Tensor<Rank4<2, 4, 3, 5>, f32, _> =
        dev.tensor_from_vec(xv.clone(), Default::default());
    let x: Tensor<Rank4<2, 3, 4, 5>, f32, _, _> =
        stored.leaky_trace().permute::<_, Axes4<0, 2, 1, 3>>();
    let w: Tensor<Rank4<2, 3, 3, 3>, f32, _> = dev.sample_normal();
    let y = conv2d(x, &w, None, 1, 1);
    let logical: Tensor<Rank4<2, 3, 4, 5>, f32, _> =
        stored.clone().permute::<_, Axes4<0, 2, 1, 3>>();
    let g = Geo {
        b: 2,
        ci: 3,
        co: 2,
        h: 4,
        w: 5,
        k: 3,
        s: 1,
        p: 1,
    };
    let (x64, w64) = (to64(&logical.as_vec()), to64(&w.as_vec()));
    let want = conv_ref(&g, &x64, &w64, None);
    assert_close("permuted y", &y.as_vec(), &want, 1e-4);
    // d(Σ y·r)/dx in the logical (B, C, H, W) order by f64 finite
    // differences (exact up to rounding: the conv is linear in x) …
    let rv = uniform(&mut r, g.y_len());
    let rt = dev.tensor_from_vec(rv.clone(), *y.shape());
    let r64 = to64(&rv);
    let gx_logical = fd_grad(&x64, |xx| dot(&conv_ref(&g, xx, &w64, None), &r64));
    // … must arrive at the stored (B, H, C, W) positions.
    let mut want_stored = vec![0.0; gx_logical.len()];
    for b in 0..2 {
        for c in 0..3 {
            for h in 0..4 {
                for x in 0..5 {
                    want_stored[((b * 4 + h) * 3 + c) * 5 + x] =
                        gx_logical[((b * 3 + c) * 4 + h) * 5 + x];
                }
            }
        }
    }
    let grads = (y * rt).sum().backward();
    let gs = grads.get(&stored);
    assert_eq!(gs.shape().concrete(), [2, 4, 3, 5]);
    assert_close(
        "permuted input's gradient",
        &gs.as_vec(),
        &want_stored,
        1e-4,
    );
}

#[test]
fn conv_output_used_twice_gets_both_gradients() {
    // The output feeds two dfdx ops; its gradient (released by the conv's
    // backward once consumed) must be complete before the conv uses it.
    let dev = Cpu::seed_from_u64(7);
    let x: Tensor<Rank4<2, 3, 6, 5>, f32, _> = dev.sample_normal();
    let w: Tensor<Rank4<4, 3, 3, 3>, f32, _> = dev.sample_normal();
    let y = conv2d(x.leaky_trace(), &w, None, 1, 1);
    let y2 = y.with_empty_tape();
    let both = y.sum() + y2.relu().sum();
    let g_both = both.backward();
    let g_sum = conv2d(x.leaky_trace(), &w, None, 1, 1).sum().backward();
    let g_relu = conv2d(x.leaky_trace(), &w, None, 1, 1)
        .relu()
        .sum()
        .backward();
    for (name, a, b, c) in [
        (
            "dx",
            g_both.get(&x).as_vec(),
            g_sum.get(&x).as_vec(),
            g_relu.get(&x).as_vec(),
        ),
        (
            "dw",
            g_both.get(&w).as_vec(),
            g_sum.get(&w).as_vec(),
            g_relu.get(&w).as_vec(),
        ),
    ] {
        for (i, ((a, b), c)) in a.iter().zip(&b).zip(&c).enumerate() {
            assert!((a - (b + c)).abs() < 1e-3, "{name}[{i}]: {a} vs {b} + {c}");
        }
    }
}
