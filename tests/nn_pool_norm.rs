//! max_pool2d, global_avg_pool2d, the batch-norm ops (both modes, fused
//! ReLU and residual variants) and add_relu against float64 references and
//! central finite differences.

use crate::nn_common;

use dfdx::prelude::*;
use nn_common::*;
use poly_loss::nn::ops::*;
use rand::Rng;

type Img<const C: usize> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu>;

#[test]
fn max_pool_random_shapes_and_gradients() {
    let dev = Cpu::default();
    let mut r = rng(10);
    for t in 0..20 {
        let k: usize = r.gen_range(1..=4);
        let s = r.gen_range(1..=3);
        let p = r.gen_range(0..=k / 2);
        let (b, c) = (r.gen_range(1..=3), r.gen_range(1..=3));
        let h = r.gen_range(k.saturating_sub(2 * p).max(1)..12);
        let w = r.gen_range(k.saturating_sub(2 * p).max(1)..12);
        // Distinct values: no ties, so the argmax (and the gradient) is unique.
        let n = b * c * h * w;
        let mut xv: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        for i in (1..n).rev() {
            xv.swap(i, r.gen_range(0..=i));
        }
        let x: Tensor<(usize, usize, usize, usize), f32, _> =
            dev.tensor_from_vec(xv.clone(), (b, c, h, w));
        let y = max_pool2d(x.leaky_trace(), k, s, p);
        let x64 = to64(&xv);
        let want = max_pool_ref(b * c, h, w, k, s, p, &x64);
        let what = format!("case {t}: b{b} c{c} {h}x{w} k{k} s{s} p{p}");
        assert_close(&what, &y.as_vec(), &want, 1e-6);
        let rv = uniform(&mut r, want.len());
        let rt = dev.tensor_from_vec(rv.clone(), *y.shape());
        let grads = (y * rt).sum().backward();
        let fd = fd_grad(&x64, |xs| {
            dot(&max_pool_ref(b * c, h, w, k, s, p, xs), &to64(&rv))
        });
        assert_close(&format!("dx {what}"), &grads.get(&x).as_vec(), &fd, 1e-4);
    }
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    let dev = Cpu::default();
    let x: Tensor<Rank4<1, 1, 2, 2>, f32, _> = dev.tensor([[[[2.0, 2.0], [2.0, 1.0]]]]);
    let grads = max_pool2d(x.leaky_trace(), 2, 2, 0).sum().backward();
    assert_eq!(grads.get(&x).array(), [[[[1.0, 0.0], [0.0, 0.0]]]]);
    // Overlapping windows (3×3 stride 2 pad 1, the ResNet stem) accumulate.
    let x: Tensor<Rank4<1, 1, 3, 3>, f32, _> =
        dev.tensor([[[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]]);
    let y = max_pool2d(x.leaky_trace(), 3, 2, 1);
    assert_eq!(y.as_vec(), vec![9.0; 4]);
    let grads = y.sum().backward();
    assert_eq!(grads.get(&x).as_vec()[4], 4.0);
}

#[test]
fn global_avg_pool_matches_mean_and_gradient() {
    let dev = Cpu::default();
    let mut r = rng(12);
    let xv = uniform(&mut r, 2 * 3 * 5 * 7);
    let x: Tensor<Rank4<2, 3, 5, 7>, f32, _> = dev.tensor_from_vec(xv.clone(), Default::default());
    let y = global_avg_pool2d(x.leaky_trace());
    let want: Vec<f64> = to64(&xv)
        .chunks(35)
        .map(|c| c.iter().sum::<f64>() / 35.0)
        .collect();
    assert_close("gap", &y.as_vec(), &want, 1e-6);
    let rv = uniform(&mut r, 6);
    let rt: Tensor<Rank2<2, 3>, f32, _> = dev.tensor_from_vec(rv.clone(), Default::default());
    let grads = (y * rt).sum().backward();
    let want: Vec<f64> = (0..xv.len()).map(|i| rv[i / 35] as f64 / 35.0).collect();
    assert_close("gap dx", &grads.get(&x).as_vec(), &want, 1e-6);
    // Same as dfdx's AvgPoolGlobal.
    let stock = x.clone().mean::<Rank2<2, 3>, _>();
    assert_close(
        "vs dfdx",
        &stock.as_vec(),
        &to64(&global_avg_pool2d(x).as_vec()),
        1e-6,
    );
}

/// Everything a batch-norm check needs, drawn at random.
struct BnCase {
    b: usize,
    h: usize,
    w: usize,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    rmean: Vec<f32>,
    rvar: Vec<f32>,
    res: Vec<f32>,
    r: Vec<f32>,
}

const C: usize = 3;
const EPS: f64 = 1e-5;

fn bn_case(seed: u64) -> BnCase {
    let mut g = rng(seed);
    let (b, h, w) = (g.gen_range(1..=3), g.gen_range(1..=5), g.gen_range(2..=5));
    let n = b * C * h * w;
    // Shifted, scaled data exercises the shifted-sum statistics.
    let x = uniform(&mut g, n).iter().map(|v| 3.0 + 2.0 * v).collect();
    BnCase {
        b,
        h,
        w,
        x,
        gamma: uniform(&mut g, C).iter().map(|v| 1.0 + 0.5 * v).collect(),
        beta: uniform(&mut g, C),
        rmean: uniform(&mut g, C).iter().map(|v| 3.0 + v).collect(),
        rvar: uniform(&mut g, C).iter().map(|v| 1.5 + v).collect(),
        res: uniform(&mut g, n),
        r: uniform(&mut g, n),
    }
}

/// Checks one batch-norm variant's output and gradients (x, γ, β, residual)
/// against the f64 reference and finite differences.
fn check_bn(case: &BnCase, train: bool, relu: bool, residual: bool) {
    let dev = Cpu::default();
    let what = format!(
        "bn train={train} relu={relu} residual={residual} b{} {}x{}",
        case.b, case.h, case.w
    );
    let shape = (case.b, Const::<C>, case.h, case.w);
    let plane = case.h * case.w;
    let x: Img<C> = dev.tensor_from_vec(case.x.clone(), shape);
    let res: Img<C> = dev.tensor_from_vec(case.res.clone(), shape);
    let gamma: Tensor<Rank1<C>, f32, _> =
        dev.tensor_from_vec(case.gamma.clone(), Default::default());
    let beta: Tensor<Rank1<C>, f32, _> = dev.tensor_from_vec(case.beta.clone(), Default::default());
    let mut rmean: Tensor<Rank1<C>, f32, _> =
        dev.tensor_from_vec(case.rmean.clone(), Default::default());
    let mut rvar: Tensor<Rank1<C>, f32, _> =
        dev.tensor_from_vec(case.rvar.clone(), Default::default());
    let xt = x.leaky_trace();
    // The fused residual tail always applies ReLU.
    let tail = match (relu, residual) {
        (_, true) => Tail::AddRelu(res.retaped()),
        (true, false) => Tail::Relu,
        (false, false) => Tail::None,
    };
    let params = if train {
        BatchNormParams::train(&gamma, &beta, &mut rmean, &mut rvar, EPS, 0.1)
    } else {
        BatchNormParams::eval(&gamma, &beta, &rmean, &rvar, EPS)
    };
    let y = batch_norm2d(xt, params, tail);
    let (x64, g64, b64) = (to64(&case.x), to64(&case.gamma), to64(&case.beta));
    let (rm64, rv64, res64, r64) = (
        to64(&case.rmean),
        to64(&case.rvar),
        to64(&case.res),
        to64(&case.r),
    );
    let f = |xs: &[f64], gs: &[f64], bs: &[f64], rs: &[f64]| {
        let stats = (!train).then_some((rm64.as_slice(), rv64.as_slice()));
        bn_ref(
            case.b,
            C,
            plane,
            xs,
            gs,
            bs,
            stats,
            EPS,
            residual.then_some(rs),
            relu,
        )
    };
    let (want, bmean, bvar) = f(&x64, &g64, &b64, &res64);
    assert_close(&what, &y.as_vec(), &want, 1e-4);

    // Running statistics: updated only in training mode, with the unbiased variance.
    if train {
        let n = (case.b * plane) as f64;
        let m: Vec<f64> = (0..C).map(|c| 0.9 * rm64[c] + 0.1 * bmean[c]).collect();
        let v: Vec<f64> = (0..C)
            .map(|c| 0.9 * rv64[c] + 0.1 * bvar[c] * n / (n - 1.0))
            .collect();
        assert_close(&format!("running_mean {what}"), &rmean.as_vec(), &m, 1e-5);
        assert_close(&format!("running_var {what}"), &rvar.as_vec(), &v, 1e-5);
    } else {
        assert_eq!(rmean.as_vec(), case.rmean);
        assert_eq!(rvar.as_vec(), case.rvar);
    }

    let rt = dev.tensor_from_vec(case.r.clone(), *y.shape());
    let grads = (y * rt).sum().backward();
    let loss = |xs: &[f64], gs: &[f64], bs: &[f64], rs: &[f64]| dot(&f(xs, gs, bs, rs).0, &r64);
    let fx = fd_grad(&x64, |v| loss(v, &g64, &b64, &res64));
    assert_close(&format!("dx {what}"), &grads.get(&x).as_vec(), &fx, 1e-3);
    let fg = fd_grad(&g64, |v| loss(&x64, v, &b64, &res64));
    assert_close(
        &format!("dgamma {what}"),
        &grads.get(&gamma).as_vec(),
        &fg,
        1e-3,
    );
    let fb = fd_grad(&b64, |v| loss(&x64, &g64, v, &res64));
    assert_close(
        &format!("dbeta {what}"),
        &grads.get(&beta).as_vec(),
        &fb,
        1e-3,
    );
    if residual {
        let fr = fd_grad(&res64, |v| loss(&x64, &g64, &b64, v));
        assert_close(
            &format!("dres {what}"),
            &grads.get(&res).as_vec(),
            &fr,
            1e-3,
        );
    }
}

#[test]
fn batch_norm_all_variants_random_shapes() {
    for seed in 0..6 {
        let case = bn_case(100 + seed);
        for train in [false, true] {
            if train && case.b * case.h * case.w < 2 {
                continue;
            }
            for relu in [false, true] {
                check_bn(&case, train, relu, false);
            }
            check_bn(&case, train, true, true);
        }
    }
}

#[test]
fn batch_norm_running_stats_hand_computed() {
    // One channel, values 1, 2, 3, 6: mean 3, biased var 3.5, unbiased 14/3.
    let dev = Cpu::default();
    let x: Tensor<Rank4<2, 1, 1, 2>, f32, _> = dev.tensor([[[[1.0, 2.0]]], [[[3.0, 6.0]]]]);
    let (g, b): (Tensor<Rank1<1>, f32, _>, _) = (dev.ones(), dev.zeros());
    let mut m: Tensor<Rank1<1>, f32, _> = dev.tensor([1.0]);
    let mut v: Tensor<Rank1<1>, f32, _> = dev.tensor([2.0]);
    let params = BatchNormParams::train(&g, &b, &mut m, &mut v, 0.0, 0.1);
    let y = batch_norm2d(x.clone(), params, Tail::None);
    // 0.9·1 + 0.1·3 = 1.2 ; 0.9·2 + 0.1·14/3 = 2.2666…
    assert!((m.array()[0] - 1.2).abs() < 1e-6, "{:?}", m.array());
    assert!(
        (v.array()[0] - (1.8 + 1.4 / 3.0)).abs() < 1e-6,
        "{:?}",
        v.array()
    );
    let s = 3.5f32.sqrt();
    let want = [-2.0 / s, -1.0 / s, 0.0, 3.0 / s];
    for (a, b) in y.as_vec().iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    // A second step moves them again (momentum applied to the new values).
    let _ = batch_norm2d(
        x,
        BatchNormParams::train(&g, &b, &mut m, &mut v, 0.0, 0.5),
        Tail::None,
    );
    assert!((m.array()[0] - (0.6 + 1.5)).abs() < 1e-6);
}

#[test]
#[should_panic(expected = "more than one value per channel")]
fn batch_norm_train_refuses_single_values() {
    let dev = Cpu::default();
    let x: Tensor<Rank4<1, 2, 1, 1>, f32, _> = dev.zeros();
    let (g, b): (Tensor<Rank1<2>, f32, _>, _) = (dev.ones(), dev.zeros());
    let (mut m, mut v): (Tensor<Rank1<2>, f32, _>, _) = (dev.zeros(), dev.ones());
    let params = BatchNormParams::train(&g, &b, &mut m, &mut v, 1e-5, 0.1);
    let _ = batch_norm2d(x, params, Tail::None);
}

#[test]
fn add_relu_matches_reference_and_gradients() {
    let dev = Cpu::default();
    let mut r = rng(13);
    let n = 3 * 4 * 5 * 7;
    let (av, bv, rv) = (uniform(&mut r, n), uniform(&mut r, n), uniform(&mut r, n));
    let a: Tensor<Rank4<3, 4, 5, 7>, f32, _> = dev.tensor_from_vec(av.clone(), Default::default());
    let b: Tensor<Rank4<3, 4, 5, 7>, f32, _> = dev.tensor_from_vec(bv.clone(), Default::default());
    let y = add_relu(a.leaky_trace(), b.clone());
    let want: Vec<f64> = av
        .iter()
        .zip(&bv)
        .map(|(x, y)| (*x as f64 + *y as f64).max(0.0))
        .collect();
    assert_close("add_relu", &y.as_vec(), &want, 1e-6);
    let rt = dev.tensor_from_vec(rv.clone(), *y.shape());
    let grads = (y * rt).sum().backward();
    let gw: Vec<f64> = (0..n)
        .map(|i| if want[i] > 0.0 { rv[i] as f64 } else { 0.0 })
        .collect();
    assert_close("add_relu da", &grads.get(&a).as_vec(), &gw, 1e-6);
    assert_close("add_relu db", &grads.get(&b).as_vec(), &gw, 1e-6);
    // Same as dfdx's own composition.
    let stock = (a.clone() + b.clone()).relu();
    assert_eq!(stock.as_vec(), add_relu(a, b).as_vec());
}
