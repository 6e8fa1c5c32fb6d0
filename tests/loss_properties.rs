//! Properties of the fused op: equality with dfdx's cross-entropy at ε = 0 and
//! with a composition of dfdx stock ops, shift invariance, stability at
//! extreme inputs, NaN propagation, error messages, tape behaviour.

use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

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

#[test]
fn extreme_logits_and_coefficients_stay_finite() {
    let dev = Cpu::default();
    // ±1e4 logits with the target on the losing side.
    let x: Tensor<Rank2<2, 4>, f32, _> =
        dev.tensor([[1e4, -1e4, 0.0, -1e4], [-1e4, -1e4, -1e4, 1e4]]);
    for eps in [-1.0f32, 0.0, 2.0, 100.0] {
        let l = poly_loss(x.leaky_trace(), &[1, 3], [eps]);
        let v = l.array();
        // Row 0: CE = 2e4, pt = 0; row 1: CE = 0, pt = 1.
        assert!((v - (2e4 + eps) / 2.0).abs() < 1.0, "eps {eps}: {v}");
        let g = l.backward().get(&x).array();
        assert!(g.iter().flatten().all(|v| v.is_finite()), "{g:?}");
        let f = PolyLoss::focal([eps], 2.0, Some(0.25)).forward(x.leaky_trace(), &[1, 3]);
        assert!(f.array().is_finite());
        assert!(f
            .backward()
            .get(&x)
            .array()
            .iter()
            .flatten()
            .all(|v| v.is_finite()));
        let s = poly_sigmoid_focal_loss(x.leaky_trace(), &[1, 3], [eps], 2.0, None);
        assert!(s.array().is_finite());
        assert!(s
            .backward()
            .get(&x)
            .array()
            .iter()
            .flatten()
            .all(|v| v.is_finite()));
    }
}

#[test]
fn one_hundred_thousand_classes() {
    let dev = Cpu::default();
    let (b, c) = (2, 100_000);
    let x = randn(&dev, b, c, 1e4, 9);
    let t = vec![17, 99_999];
    let l = poly_loss(x.leaky_trace(), &t, [100.0]);
    // Reference in f64.
    let z = x.as_vec();
    let mut want = 0.0f64;
    for i in 0..b {
        let row: Vec<f64> = z[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let logpt = row[t[i]] - lse;
        want += (-logpt + 100.0 * (1.0 - logpt.exp())) / b as f64;
    }
    assert!(
        ((l.array() as f64) - want).abs() < 1e-3 * want.abs().max(1.0),
        "{} vs {want}",
        l.array()
    );
    let g = l.backward().get(&x).as_vec();
    assert!(g.iter().all(|v| v.is_finite()));
    // Each row's gradient sums to zero (softmax invariance).
    for i in 0..b {
        let s: f64 = g[i * c..(i + 1) * c].iter().map(|&v| v as f64).sum();
        assert!(s.abs() < 1e-3, "row {i} sums to {s}");
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
    let e = try_poly_sigmoid_loss(x, &[0, 4, 1][..], [1.0]).unwrap_err();
    assert!(e.to_string().contains("row 1"), "{e}");
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
