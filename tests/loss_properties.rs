//! Properties of the fused op: equality with dfdx's cross-entropy at ε = 0 and
//! with a composition of dfdx stock ops, shift invariance, stability at
//! extreme inputs, NaN propagation, error messages, tape behaviour.

use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::reference64;
use reference64::{assert_all_close, assert_close, Ref, Tg};

fn randn(dev: &Cpu, b: usize, c: usize, scale: f32, seed: u64) -> Tensor<(usize, usize), f32, Cpu> {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..b * c).map(|_| rng.gen_range(-scale..scale)).collect();
    dev.tensor_from_vec(v, (b, c))
}

fn labels(b: usize, c: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..b).map(|_| rng.gen_range(0..c)).collect()
}

fn onehot(dev: &Cpu, t: &[usize], c: usize) -> Tensor<(usize, usize), f32, Cpu> {
    let mut v = vec![0.0f32; t.len() * c];
    for (i, &k) in t.iter().enumerate() {
        v[i * c + k] = 1.0;
    }
    dev.tensor_from_vec(v, (t.len(), c))
}

/// Poly-1 from dfdx stock ops: log_softmax, exp, sums, mean.
fn composed_poly1<T: Tape<f32, Cpu> + Merge<T>>(
    logits: Tensor<(usize, usize), f32, Cpu, T>,
    y: Tensor<(usize, usize), f32, Cpu>,
    eps: f32,
) -> Tensor<Rank0, f32, Cpu, T> {
    let logp = logits.log_softmax::<Axis<1>>();
    let ce = (logp.with_empty_tape() * y.clone())
        .sum::<(usize,), Axis<1>>()
        .negate();
    let pt = (logp.exp() * y).sum::<(usize,), Axis<1>>();
    (ce + (pt.negate() + 1.0) * eps).mean()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn epsilon_zero_is_dfdx_cross_entropy() {
    let dev = Cpu::default();
    // (64, 1000) takes the multi-threaded path, (5, 13) the single-threaded one.
    for &(b, c) in &[(5, 13), (64, 1000)] {
        let x = randn(&dev, b, c, 4.0, b as u64);
        let t = labels(b, c, 1);
        let ours = poly_loss(x.leaky_trace(), &t, [0.0]);
        let theirs = cross_entropy_with_logits_loss(x.leaky_trace(), onehot(&dev, &t, c));
        assert!(
            (ours.array() - theirs.array()).abs() < 1e-6,
            "{} vs {}",
            ours.array(),
            theirs.array()
        );
        let (g1, g2) = (ours.backward(), theirs.backward());
        let d = max_abs_diff(&g1.get(&x).as_vec(), &g2.get(&x).as_vec());
        assert!(d < 1e-6, "gradient differs by {d}");
    }
}

#[test]
fn matches_composition_of_stock_ops() {
    let dev = Cpu::default();
    for &(b, c) in &[(7, 10), (64, 1000)] {
        let x = randn(&dev, b, c, 3.0, 3);
        let t = labels(b, c, 4);
        let ours = poly_loss(x.leaky_trace(), &t, [2.0]);
        let stock = composed_poly1(x.leaky_trace(), onehot(&dev, &t, c), 2.0);
        assert!(
            (ours.array() - stock.array()).abs() < 1e-6 * (1.0 + stock.array().abs()),
            "{} vs {}",
            ours.array(),
            stock.array()
        );
        let (g1, g2) = (ours.backward(), stock.backward());
        let d = max_abs_diff(&g1.get(&x).as_vec(), &g2.get(&x).as_vec());
        assert!(d < 1e-6, "gradient differs by {d}");
        // Probability targets give the same as the equivalent indices.
        let probs = poly_loss(x.leaky_trace(), onehot(&dev, &t, c), [2.0]);
        let want = g1_loss(&x, &t);
        assert!((probs.array() - want).abs() < 1e-6 * (1.0 + want.abs()));
    }
}

fn g1_loss(x: &Tensor<(usize, usize), f32, Cpu>, t: &[usize]) -> f32 {
    poly_loss(x.clone(), t, [2.0]).array()
}

#[test]
fn adding_a_constant_to_a_row_changes_nothing() {
    let dev = Cpu::default();
    let (b, c) = (6, 50);
    let x = randn(&dev, b, c, 2.0, 5);
    let mut shifted = x.as_vec();
    for (i, v) in shifted.iter_mut().enumerate() {
        *v += [0.0, 7.5, -30.0, 100.0, -0.25, 1e3][i / c];
    }
    let xs: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(shifted, (b, c));
    let t = labels(b, c, 6);
    let loss = PolyLoss::new([2.0, 1.0]).with_label_smoothing(0.1);
    let (l1, l2) = (
        loss.forward(x.leaky_trace(), &t),
        loss.forward(xs.leaky_trace(), &t),
    );
    assert!(
        (l1.array() - l2.array()).abs() < 1e-4,
        "{} vs {}",
        l1.array(),
        l2.array()
    );
    let d = max_abs_diff(
        &l1.backward().get(&x).as_vec(),
        &l2.backward().get(&xs).as_vec(),
    );
    assert!(d < 1e-5, "gradient differs by {d}");
}

fn softmax_ref(z: &[f32], t: &[usize], c: usize, r: Ref) -> (f64, Vec<f64>) {
    reference64::softmax(z, t.len(), c, Tg::Idx(t), r)
}

fn sigmoid_ref(z: &[f32], t: &[usize], c: usize, r: Ref) -> (f64, Vec<f64>) {
    reference64::sigmoid(z, t.len(), c, Tg::Idx(t), r)
}

fn assert_grad(what: &str, got: &[f32], want: &[f64]) {
    assert_all_close(&format!("{what}: grad"), got, want, 1e-4, 1e-6);
}

#[test]
fn f64_references_match_finite_differences() {
    // The references below are checked once against central differences.
    let z: Vec<f32> = vec![0.3, -1.2, 2.0, 0.7, -0.4, 1.1];
    let t = [2usize, 0];
    let eps = [1.5, -0.3];
    let w = [0.5, 2.0, 1.25];
    let probs = [0.2f32, 0.0, 0.8, 0.5, 0.25, 0.25];
    for focal in [None, Some((2.0, Some(0.25)))] {
        for (sig, idx) in [(false, true), (true, true), (false, false), (true, false)] {
            let rf = Ref {
                eps: &eps,
                focal,
                smoothing: 0.1,
                weight: Some(&w),
            };
            let tg = if idx { Tg::Idx(&t) } else { Tg::Prob(&probs) };
            let r = |z: &[f32]| {
                if sig {
                    reference64::sigmoid(z, 2, 3, tg, rf)
                } else {
                    reference64::softmax(z, 2, 3, tg, rf)
                }
            };
            let (_, g) = r(&z);
            for k in 0..z.len() {
                let h = 1e-3f32;
                let (mut zp, mut zm) = (z.clone(), z.clone());
                zp[k] += h;
                zm[k] -= h;
                // Central differences of the f64 loss over the step f32 really took.
                let fd = (r(&zp).0 - r(&zm).0) / (zp[k] as f64 - zm[k] as f64);
                assert!(
                    (fd - g[k]).abs() < 1e-5 * (1.0 + g[k].abs()),
                    "sigmoid {sig} index targets {idx} k {k}: {fd} vs {}",
                    g[k]
                );
            }
        }
    }
}

#[test]
fn focal_free_functions_match_f64_references() {
    let dev = Cpu::default();
    let (b, c) = (5, 7);
    let x = randn(&dev, b, c, 3.0, 21);
    let z = x.as_vec();
    let t = labels(b, c, 22);
    let eps = [1.5f32, -0.3];
    let eps64 = [1.5, -0.3];
    for (gamma, alpha) in [(2.0f32, Some(0.25f32)), (0.5, None), (3.0, Some(0.9))] {
        let focal = Ref::focal(&eps64, gamma as f64, alpha.map(|a| a as f64));
        let what = format!("softmax focal γ {gamma} α {alpha:?}");
        let l = poly_focal_loss::<2, _>(x.leaky_trace(), &t, eps, gamma, alpha);
        let (want, wg) = softmax_ref(&z, &t, c, focal);
        assert_close(&what, l.array(), want, 1e-5, 1e-6);
        assert_grad(&what, &l.backward().get(&x).as_vec(), &wg);
        let what = format!("sigmoid focal γ {gamma} α {alpha:?}");
        let l = poly_sigmoid_focal_loss::<2, _>(x.leaky_trace(), &t, eps, gamma, alpha);
        let (want, wg) = sigmoid_ref(&z, &t, c, focal);
        assert_close(&what, l.array(), want, 1e-5, 1e-6);
        assert_grad(&what, &l.backward().get(&x).as_vec(), &wg);
    }
    // The try_ forms give the same numbers.
    let l = try_poly_focal_loss::<2, _>(x.clone(), &t, eps, 2.0, Some(0.25)).unwrap();
    let (want, _) = softmax_ref(&z, &t, c, Ref::focal(&eps64, 2.0, Some(0.25)));
    assert_close("try_poly_focal_loss", l.array(), want, 1e-5, 1e-6);
    let l = try_poly_sigmoid_focal_loss::<2, _>(x.clone(), &t, eps, 2.0, Some(0.25)).unwrap();
    let (want, _) = sigmoid_ref(&z, &t, c, Ref::focal(&eps64, 2.0, Some(0.25)));
    assert_close("try_poly_sigmoid_focal_loss", l.array(), want, 1e-5, 1e-6);
}

#[test]
fn extreme_logits_match_f64_references() {
    let dev = Cpu::default();
    // ±1e4 logits with the target on the losing side (row 0) and winning (row 1).
    let x: Tensor<Rank2<2, 4>, f32, _> =
        dev.tensor([[1e4, -1e4, 0.0, -1e4], [-1e4, -1e4, -1e4, 1e4]]);
    let z = x.as_vec();
    let t = [1usize, 3];
    for eps in [-1.0f32, 0.0, 2.0, 100.0] {
        let e64 = [eps as f64];
        let l = poly_loss::<1, _>(x.leaky_trace(), &t, [eps]);
        // Row 0: CE = 2e4, pt = 0; row 1: CE = 0, pt = 1.
        let (want, wg) = softmax_ref(&z, &t, 4, Ref::plain(&e64));
        assert!((want - (2e4 + eps as f64) / 2.0).abs() < 1e-9);
        assert_close(&format!("poly ε {eps}"), l.array(), want, 1e-6, 1e-6);
        assert_grad(
            &format!("poly ε {eps}"),
            &l.backward().get(&x).as_vec(),
            &wg,
        );

        let focal = Ref::focal(&e64, 2.0, Some(0.25));
        let what = format!("focal ε {eps}");
        let l = poly_focal_loss::<1, _>(x.leaky_trace(), &t, [eps], 2.0, Some(0.25));
        let (want, wg) = softmax_ref(&z, &t, 4, focal);
        // α f^γ CE + ε f^3 with f = 1 in row 0, f = 0 in row 1.
        assert!((want - (0.25 * 2e4 + eps as f64) / 2.0).abs() < 1e-9);
        assert_close(&what, l.array(), want, 1e-6, 1e-6);
        assert_grad(&what, &l.backward().get(&x).as_vec(), &wg);

        let what = format!("sigmoid ε {eps}");
        let l = poly_sigmoid_loss::<1, _>(x.leaky_trace(), &t, [eps]);
        let (want, wg) = sigmoid_ref(&z, &t, 4, Ref::plain(&e64));
        assert_close(&what, l.array(), want, 1e-6, 1e-6);
        assert_grad(&what, &l.backward().get(&x).as_vec(), &wg);

        for alpha in [None, Some(0.25f32)] {
            let what = format!("sigmoid focal ε {eps} α {alpha:?}");
            let l = poly_sigmoid_focal_loss::<1, _>(x.leaky_trace(), &t, [eps], 2.0, alpha);
            let focal = Ref::focal(&e64, 2.0, alpha.map(|a| a as f64));
            let (want, wg) = sigmoid_ref(&z, &t, 4, focal);
            assert_close(&what, l.array(), want, 1e-6, 1e-6);
            assert_grad(&what, &l.backward().get(&x).as_vec(), &wg);
        }
    }
}

#[test]
fn one_hundred_thousand_classes() {
    let dev = Cpu::default();
    let (b, c) = (2, 100_000);
    let t = vec![17, 99_999];
    // Scale 1e4: p is one-hot on each row's maximum; scale 8: p is spread out.
    for (scale, seed) in [(1e4f32, 9), (8.0, 10)] {
        let x = randn(&dev, b, c, scale, seed);
        let z = x.as_vec();
        let l = poly_loss::<1, _>(x.leaky_trace(), &t, [100.0]);
        let (want, wg) = softmax_ref(&z, &t, c, Ref::plain(&[100.0]));
        assert_close(&format!("scale {scale}"), l.array(), want, 1e-5, 1e-5);
        let g = l.backward().get(&x).as_vec();
        assert_grad(&format!("scale {scale}"), &g, &wg);
    }
}

#[test]
fn nan_propagates_to_its_row() {
    let dev = Cpu::default();
    let x: Tensor<Rank2<3, 4>, f32, _> = dev.tensor([
        [1.0, 2.0, 3.0, 4.0],
        [0.0, f32::NAN, 1.0, 2.0],
        [1.0, 1.0, 1.0, 1.0],
    ]);
    let t = [0usize, 2, 3];
    let l = poly_loss(x.leaky_trace(), &t, [2.0]);
    assert!(l.array().is_nan());
    let per = PolyLoss::new([2.0]).forward_per_sample(x.leaky_trace(), &t);
    let v = per.array();
    assert!(
        v[0].is_finite() && v[1].is_nan() && v[2].is_finite(),
        "{v:?}"
    );
    let g = per.sum().backward().get(&x).array();
    assert!(g[1].iter().all(|v| v.is_nan()));
    assert!(g[0].iter().chain(&g[2]).all(|v| v.is_finite()));
    // +∞ is NaN too, as in PyTorch; sigmoid: NaN logit → NaN loss, no crash.
    let xi: Tensor<Rank2<1, 2>, f32, _> = dev.tensor([[f32::INFINITY, 0.0]]);
    assert!(poly_loss(xi.clone(), &[0], [1.0]).array().is_nan());
    assert!(poly_sigmoid_loss(x.clone(), &t, [1.0]).array().is_nan());
}

#[test]
fn errors_name_what_is_wrong() {
    let dev = Cpu::default();
    let x: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(vec![0.0; 12], (3, 4));
    let e = try_poly_loss(x.clone(), &[0, 1, 7][..], [2.0]).unwrap_err();
    assert_eq!(
        e,
        PolyLossError::TargetOutOfRange {
            row: 2,
            value: 7,
            classes: 4
        }
    );
    assert!(e.to_string().contains("row 2") && e.to_string().contains("target 7"));
    let e = try_poly_loss(x.clone(), &[0, 1][..], [2.0]).unwrap_err();
    assert!(
        matches!(
            e,
            PolyLossError::ShapeMismatch {
                what: "targets",
                ..
            }
        ),
        "{e}"
    );
    let p: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(vec![0.25; 8], (2, 4));
    let e = try_poly_loss(x.clone(), p, [2.0]).unwrap_err();
    assert!(
        e.to_string().contains("[2, 4]") && e.to_string().contains("[3, 4]"),
        "{e}"
    );
    let e = try_poly_loss(x.clone(), &[0, 1, 2][..], []).unwrap_err();
    assert_eq!(e, PolyLossError::NoTerms);
    let e = PolyLoss::new([1.0])
        .with_ignore_index(5)
        .try_forward(x.clone(), &[5, 5, 5][..])
        .unwrap_err();
    assert_eq!(
        e,
        PolyLossError::AllIgnored {
            ignore_index: 5,
            rows: 3
        }
    );
    // ...but a sum over all-ignored rows is 0, as in PyTorch.
    let s = PolyLoss::new([1.0])
        .with_ignore_index(5)
        .with_reduction(Reduction::Sum);
    assert_eq!(s.forward(x.clone(), &[5, 5, 5][..]).array(), 0.0);
    let e = PolyLoss::new([1.0])
        .with_weight(vec![1.0; 3])
        .try_forward(x.clone(), &[0, 1, 2][..])
        .unwrap_err();
    assert!(e.to_string().contains("class weights"), "{e}");
    let e = PolyLoss::new([1.0])
        .with_label_smoothing(1.5)
        .try_forward(x.clone(), &[0, 1, 2][..])
        .unwrap_err();
    assert!(e.to_string().contains("label_smoothing"), "{e}");
    let e = PolyLoss::focal([1.0], -1.0, None)
        .try_forward(x.clone(), &[0, 1, 2][..])
        .unwrap_err();
    assert!(e.to_string().contains("gamma"), "{e}");
    let e = PolyLoss::new([1.0])
        .with_reduction(Reduction::None)
        .try_forward(x.clone(), &[0, 1, 2][..])
        .unwrap_err();
    assert_eq!(e, PolyLossError::ReductionNone);
    let e = try_poly_sigmoid_loss(x.clone(), &[0, 4, 1][..], [1.0]).unwrap_err();
    assert!(e.to_string().contains("row 1"), "{e}");
    let t = &[0, 1, 2][..];
    // Non-finite ε, on every kind.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for kind in [
            PolyKind::Softmax,
            PolyKind::Sigmoid,
            PolyKind::SoftmaxFocal {
                gamma: 2.0,
                alpha: None,
            },
            PolyKind::SigmoidFocal {
                gamma: 2.0,
                alpha: None,
            },
        ] {
            let e = PolyLoss::new([1.0, bad])
                .with_kind(kind)
                .try_forward(x.clone(), t)
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    PolyLossError::InvalidParameter {
                        name: "epsilon",
                        ..
                    }
                ),
                "{kind:?} ε {bad}: {e}"
            );
            assert!(e.to_string().contains("finite"), "{e}");
        }
    }
    // α outside [0, 1] (or NaN) on both focal kinds, through the free functions.
    for bad in [-0.1f32, 1.5, f32::NAN] {
        let e = try_poly_focal_loss(x.clone(), t, [1.0], 2.0, Some(bad)).unwrap_err();
        assert!(
            matches!(e, PolyLossError::InvalidParameter { name: "alpha", value, .. }
                if value.to_bits() == bad.to_bits()),
            "α {bad}: {e}"
        );
        let e = try_poly_sigmoid_focal_loss(x.clone(), t, [1.0], 2.0, Some(bad)).unwrap_err();
        assert!(e.to_string().contains("invalid alpha"), "α {bad}: {e}");
    }
    // α = 0 and α = 1 are inside.
    assert!(try_poly_focal_loss(x.clone(), t, [1.0], 2.0, Some(0.0)).is_ok());
    assert!(try_poly_sigmoid_focal_loss(x.clone(), t, [1.0], 2.0, Some(1.0)).is_ok());
    // γ: negative or non-finite.
    for bad in [-0.5f32, f32::NAN, f32::INFINITY] {
        let e = try_poly_sigmoid_focal_loss(x.clone(), t, [1.0], bad, None).unwrap_err();
        assert!(
            matches!(e, PolyLossError::InvalidParameter { name: "gamma", .. }),
            "γ {bad}: {e}"
        );
    }
    // Non-finite class weights, softmax and sigmoid.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for kind in [PolyKind::Softmax, PolyKind::Sigmoid] {
            let e = PolyLoss::new([1.0])
                .with_kind(kind)
                .with_weight(vec![1.0, 2.0, bad, 1.0])
                .try_forward(x.clone(), t)
                .unwrap_err();
            assert!(
                matches!(e, PolyLossError::InvalidParameter { name: "weight", .. }),
                "{kind:?} weight {bad}: {e}"
            );
            assert!(
                e.to_string().contains("class weights must be finite"),
                "{e}"
            );
        }
    }
    // Label smoothing: NaN and negative.
    for bad in [f32::NAN, -0.1] {
        let e = PolyLoss::new([1.0])
            .with_label_smoothing(bad)
            .try_forward(x.clone(), t)
            .unwrap_err();
        assert!(e.to_string().contains("label_smoothing"), "{e}");
    }
}

#[test]
#[should_panic(expected = "target 9 in row 0 is out of range")]
fn plain_form_panics_with_the_message() {
    let dev = Cpu::default();
    let x: Tensor<Rank2<1, 3>, f32, _> = dev.zeros();
    let _ = poly_loss(x, &[9], [2.0]);
}

#[test]
fn gradients_accumulate_and_follow_strides() {
    let dev = Cpu::default();
    let x = randn(&dev, 4, 6, 1.0, 11);
    let t = labels(4, 6, 12);
    let xt = x.leaky_trace();
    let twice = poly_loss(xt.with_empty_tape(), &t, [2.0]) + poly_loss(xt, &t, [2.0]);
    let g2 = twice.backward().get(&x).as_vec();
    let g1 = poly_loss(x.leaky_trace(), &t, [2.0])
        .backward()
        .get(&x)
        .as_vec();
    assert!(max_abs_diff(&g2, &g1.iter().map(|v| 2.0 * v).collect::<Vec<_>>()) < 1e-6);
    // A broadcast (strided) input: the gradient of the vector sums the rows'.
    let v: Tensor<Rank1<6>, f32, _> = dev.tensor([0.5, -1.0, 2.0, 0.0, 1.0, -0.5]);
    let bl: Tensor<Rank2<4, 6>, f32, _, _> = v.leaky_trace().broadcast();
    let gv = poly_loss(bl, &t, [2.0]).backward().get(&v).array();
    let rows: Tensor<Rank2<4, 6>, f32, _> = v
        .clone()
        .broadcast::<Rank2<4, 6>, _>()
        .try_contiguous()
        .unwrap();
    let gr = poly_loss(rows.leaky_trace(), &t, [2.0])
        .backward()
        .get(&rows)
        .array();
    for k in 0..6 {
        let want: f32 = (0..4).map(|i| gr[i][k]).sum();
        assert!((gv[k] - want).abs() < 1e-6);
    }
    // Without a tape the op records nothing and still computes the value.
    assert_eq!(
        poly_loss(x.clone(), &t, [2.0]).array(),
        poly_loss(x.leaky_trace(), &t, [2.0]).array()
    );
}
