//! `DynPolyLoss` (N at run time) against `PolyLoss<N>` (N at compile time):
//! bit-identical values and gradients for every kind and option, both
//! checked against the float64 reference; `PolyConfig::build` from TOML text;
//! the errors for no coefficients and for bad config keys.

use dfdx::prelude::*;
use poly_loss::config::{PolyConfig, PolyConfigError};
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::reference64;
use reference64::{assert_all_close, assert_close, Ref, Tg};

const B: usize = 7;
const C: usize = 5;
/// An ignore index outside `0..C`, as PyTorch's -100.
const IGNORE: usize = 99;

fn logits(dev: &Cpu, seed: u64) -> Tensor<(usize, usize), f32, Cpu> {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..B * C).map(|_| rng.gen_range(-3.0..3.0)).collect();
    dev.tensor_from_vec(v, (B, C))
}

/// Class targets; rows 1 and 4 carry [`IGNORE`].
fn labels(seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..B)
        .map(|i| {
            if i == 1 || i == 4 {
                IGNORE
            } else {
                rng.gen_range(0..C)
            }
        })
        .collect()
}

fn kinds() -> [(&'static str, PolyKind); 4] {
    [
        ("softmax", PolyKind::Softmax),
        (
            "softmax focal",
            PolyKind::SoftmaxFocal {
                gamma: 2.0,
                alpha: Some(0.25),
            },
        ),
        ("sigmoid", PolyKind::Sigmoid),
        (
            "sigmoid focal",
            PolyKind::SigmoidFocal {
                gamma: 1.5,
                alpha: Some(0.25),
            },
        ),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Value(s) and logits' gradient of `run` on fresh traced logits.
fn value_and_grad<S: Shape>(
    x: &Tensor<(usize, usize), f32, Cpu>,
    run: impl FnOnce(
        Tensor<(usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>,
    ) -> Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>,
) -> (Vec<f32>, Vec<f32>) {
    let l = run(x.clone().traced(Gradients::leaky()));
    let value = l.as_vec();
    let grads = l.sum().backward();
    (value, grads.get(x).as_vec())
}

/// The float64 reference of the mean loss over the rows not ignored, with
/// zero gradient on the ignored rows.
fn reference(x: &[f32], t: &[usize], kind: PolyKind, r: Ref) -> (f64, Vec<f64>) {
    let kept: Vec<usize> = (0..B).filter(|&i| t[i] != IGNORE).collect();
    let z: Vec<f32> = kept
        .iter()
        .flat_map(|&i| x[i * C..(i + 1) * C].iter().copied())
        .collect();
    let tk: Vec<usize> = kept.iter().map(|&i| t[i]).collect();
    let (loss, g) = if kind.is_sigmoid() {
        reference64::sigmoid(&z, kept.len(), C, Tg::Idx(&tk), r)
    } else {
        reference64::softmax(&z, kept.len(), C, Tg::Idx(&tk), r)
    };
    let mut grad = vec![0.0; B * C];
    for (row, &i) in kept.iter().enumerate() {
        grad[i * C..(i + 1) * C].copy_from_slice(&g[row * C..(row + 1) * C]);
    }
    (loss, grad)
}

/// Every kind × option set × reduction for one N: `DynPolyLoss` gives the
/// bits of `PolyLoss<N>`, and the mean of both matches the f64 reference.
fn dyn_equals_typed<const N: usize>(eps: [f32; N], seed: u64) {
    let dev = Cpu::default();
    let x = logits(&dev, seed);
    let t = labels(seed + 1);
    let weight = vec![1.0f32, 2.0, 0.5, 1.5, 0.75];
    let w64: Vec<f64> = weight.iter().map(|&w| w as f64).collect();
    let eps64: Vec<f64> = eps.iter().map(|&e| e as f64).collect();
    for (name, kind) in kinds() {
        for with_options in [false, true] {
            let mut typed = PolyLoss::new(eps).with_kind(kind).with_ignore_index(IGNORE);
            if with_options {
                typed = typed.with_label_smoothing(0.1).with_weight(weight.clone());
            }
            let dynamic = DynPolyLoss::from(typed.clone());
            assert_eq!(dynamic.epsilon, eps.to_vec());
            // The same loss built by hand, not by conversion.
            let mut by_hand = DynPolyLoss::new(eps.to_vec())
                .with_kind(kind)
                .with_ignore_index(IGNORE);
            if with_options {
                by_hand = by_hand
                    .with_label_smoothing(0.1)
                    .with_weight(weight.clone());
            }
            assert_eq!(by_hand, dynamic);
            let what = format!("N = {N}, {name}, options {with_options}");

            for reduction in [Reduction::Mean, Reduction::Sum] {
                let (ty, dy) = (
                    typed.clone().with_reduction(reduction),
                    dynamic.clone().with_reduction(reduction),
                );
                let (vt, gt) = value_and_grad(&x, |l| ty.forward(l, &t));
                let (vd, gd) = value_and_grad(&x, |l| dy.forward(l, &t));
                assert_eq!(bits(&vd), bits(&vt), "{what}, {reduction:?}: value");
                assert_eq!(bits(&gd), bits(&gt), "{what}, {reduction:?}: gradient");
                if reduction == Reduction::Mean {
                    let (gamma, alpha) = match kind {
                        PolyKind::SoftmaxFocal { gamma, alpha }
                        | PolyKind::SigmoidFocal { gamma, alpha } => {
                            (Some(gamma as f64), alpha.map(|a| a as f64))
                        }
                        _ => (None, None),
                    };
                    let r = Ref {
                        eps: &eps64,
                        focal: gamma.map(|g| (g, alpha)),
                        smoothing: if with_options { 0.1f32 as f64 } else { 0.0 },
                        weight: with_options.then_some(&w64[..]),
                    };
                    let (want, wgrad) = reference(&x.as_vec(), &t, kind, r);
                    assert_close(&what, vd[0], want, 1e-5, 1e-6);
                    assert_all_close(&format!("{what}: grad"), &gd, &wgrad, 1e-4, 1e-6);
                }
            }
            let (ty, dy) = (
                typed.clone().with_reduction(Reduction::None),
                dynamic.clone().with_reduction(Reduction::None),
            );
            let (vt, gt) = value_and_grad(&x, |l| ty.forward_per_sample(l, &t));
            let (vd, gd) = value_and_grad(&x, |l| dy.forward_per_sample(l, &t));
            assert_eq!(vd.len(), B);
            assert_eq!(bits(&vd), bits(&vt), "{what}, per sample: values");
            assert_eq!(bits(&gd), bits(&gt), "{what}, per sample: gradient");
            assert_eq!(vd[1], 0.0, "{what}: ignored row");
            // Reduction None refuses the scalar form, like the typed loss.
            let e = dy.try_forward(x.clone(), &t).unwrap_err();
            assert_eq!(e, PolyLossError::ReductionNone);
            assert_eq!(ty.try_forward(x.clone(), &t).unwrap_err(), e);
        }
    }
}

#[test]
fn dyn_equals_typed_poly1() {
    dyn_equals_typed([2.0], 11);
}

#[test]
fn dyn_equals_typed_poly2() {
    dyn_equals_typed([2.0, -0.5], 12);
}

#[test]
fn dyn_equals_typed_poly3() {
    dyn_equals_typed([1.0, 0.5, -0.2], 13);
}

#[test]
fn dyn_equals_typed_on_probability_targets() {
    let dev = Cpu::default();
    let x = logits(&dev, 21);
    let mut rng = StdRng::seed_from_u64(22);
    let mut p: Vec<f32> = (0..B * C).map(|_| rng.gen_range(0.0..1.0)).collect();
    for row in p.chunks_mut(C) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    let probs: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(p, (B, C));
    for (name, kind) in kinds() {
        let typed = PolyLoss::new([1.5, 0.25])
            .with_kind(kind)
            .with_label_smoothing(0.05);
        let dynamic = DynPolyLoss::new(vec![1.5, 0.25])
            .with_kind(kind)
            .with_label_smoothing(0.05);
        let (vt, gt) = value_and_grad(&x, |l| typed.forward(l, probs.clone()));
        let (vd, gd) = value_and_grad(&x, |l| dynamic.forward(l, probs.clone()));
        assert_eq!(bits(&vd), bits(&vt), "{name}: value");
        assert_eq!(bits(&gd), bits(&gt), "{name}: gradient");
    }
}

#[test]
fn conversions_keep_every_field() {
    let typed = PolyLoss::sigmoid_focal([0.5, -0.25, 0.125], 2.0, Some(0.3))
        .with_label_smoothing(0.2)
        .with_weight(vec![1.0, 2.0])
        .with_ignore_index(7)
        .with_reduction(Reduction::Sum);
    let dynamic = DynPolyLoss::from(typed.clone());
    assert_eq!(
        dynamic,
        DynPolyLoss::sigmoid_focal(vec![0.5, -0.25, 0.125], 2.0, Some(0.3))
            .with_label_smoothing(0.2)
            .with_weight(vec![1.0, 2.0])
            .with_ignore_index(7)
            .with_reduction(Reduction::Sum)
    );
    assert_eq!(dynamic.terms(), 3);
    assert_eq!(PolyLoss::<3>::try_from(dynamic.clone()).unwrap(), typed);
    // The wrong N gives the loss back unchanged.
    assert_eq!(
        PolyLoss::<2>::try_from(dynamic.clone()).unwrap_err(),
        dynamic
    );
    assert_eq!(
        DynPolyLoss::focal([1.0], 2.0, None).kind,
        PolyKind::SoftmaxFocal {
            gamma: 2.0,
            alpha: None
        }
    );
    assert_eq!(DynPolyLoss::sigmoid([1.0]).kind, PolyKind::Sigmoid);
}

#[test]
fn empty_epsilon_is_refused_with_its_count() {
    let dev = Cpu::default();
    let x = logits(&dev, 31);
    let t = vec![0usize; B];
    for loss in [
        DynPolyLoss::new(Vec::<f32>::new()),
        DynPolyLoss::focal([], 2.0, None),
        DynPolyLoss::sigmoid([]),
    ] {
        assert_eq!(loss.validate().unwrap_err(), PolyLossError::EmptyEpsilon);
        let e = loss.try_forward(x.clone(), &t).unwrap_err();
        assert_eq!(e, PolyLossError::EmptyEpsilon);
        let msg = e.to_string();
        assert!(
            msg.contains("length 0") && msg.contains("at least 1"),
            "{msg}"
        );
        let e = loss
            .clone()
            .with_reduction(Reduction::None)
            .try_forward_per_sample(x.clone(), &t)
            .unwrap_err();
        assert_eq!(e, PolyLossError::EmptyEpsilon);
    }
    // PolyLoss<0> keeps its own error.
    assert_eq!(
        PolyLoss::new([]).try_forward(x, &t).unwrap_err(),
        PolyLossError::NoTerms
    );
}

#[test]
fn dyn_validation_errors_match_the_typed_ones() {
    let dev = Cpu::default();
    let x = logits(&dev, 41);
    let t = labels(42);
    let cases: [(PolyLoss<2>, &str); 6] = [
        (PolyLoss::new([-1.0, -0.6]), "rises"),
        (PolyLoss::new([f32::INFINITY, 0.0]), "epsilon"),
        (
            PolyLoss::new([1.0, 0.0]).with_label_smoothing(1.5),
            "label_smoothing",
        ),
        (PolyLoss::focal([1.0, 0.0], -1.0, None), "gamma"),
        (PolyLoss::sigmoid_focal([1.0, 0.0], 2.0, Some(2.0)), "alpha"),
        (
            PolyLoss::new([1.0, 0.0]).with_weight(vec![1.0; C - 1]),
            "class weights",
        ),
    ];
    for (typed, key) in cases {
        let dynamic = DynPolyLoss::from(typed.clone());
        let et = typed.try_forward(x.clone(), &t).unwrap_err();
        let ed = dynamic.try_forward(x.clone(), &t).unwrap_err();
        assert_eq!(ed, et);
        assert!(ed.to_string().contains(key), "{key}: {ed}");
    }
    // All rows ignored under the mean.
    let all: Vec<usize> = vec![IGNORE; B];
    let e = DynPolyLoss::new([2.0])
        .with_ignore_index(IGNORE)
        .try_forward(x, &all)
        .unwrap_err();
    assert_eq!(
        e,
        PolyLossError::AllIgnored {
            ignore_index: IGNORE,
            rows: B
        }
    );
}

const TUNED: &str = r#"
[loss]
kind = "poly-sigmoid-focal"
terms = 3
epsilon = [0.75, -0.5, 0.25]
label_smoothing = 0.1
gamma = 2.0
alpha = 0.25

[result]
metric = "val_top1_accuracy"
best = 0.9
baseline = 0.88

[provenance]
dataset = "digits"
"#;

#[test]
fn config_builds_the_loss_it_describes() {
    let cfg = PolyConfig::from_toml_str(TUNED).unwrap();
    let built = cfg.build().unwrap();
    let typed: PolyLoss<3> = cfg.poly_loss::<3>().unwrap();
    assert_eq!(
        built,
        DynPolyLoss::sigmoid_focal(vec![0.75, -0.5, 0.25], 2.0, Some(0.25))
            .with_label_smoothing(0.1)
    );
    assert_eq!(DynPolyLoss::from(typed.clone()), built);
    // Through the file's text and back: the same loss, the same numbers.
    let again = PolyConfig::from_toml_str(&cfg.to_toml_string().unwrap())
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(again, built);
    let dev = Cpu::default();
    let x = logits(&dev, 51);
    let t: Vec<usize> = (0..B).map(|i| i % C).collect();
    let (vt, gt) = value_and_grad(&x, |l| typed.forward(l, &t));
    let (vd, gd) = value_and_grad(&x, |l| again.forward(l, &t));
    assert_eq!(bits(&vd), bits(&vt));
    assert_eq!(bits(&gd), bits(&gt));
    // And the value is the one the file's numbers define.
    let eps = [0.75f32 as f64, -0.5, 0.25];
    let r = Ref {
        eps: &eps,
        focal: Some((2.0, Some(0.25))),
        smoothing: 0.1f32 as f64,
        weight: None,
    };
    let (want, _) = reference64::sigmoid(&x.as_vec(), B, C, Tg::Idx(&t), r);
    assert_close("config sigmoid focal", vd[0], want, 1e-5, 1e-6);

    // Each kind maps to its PolyKind.
    for (kind, want) in [
        ("poly", PolyKind::Softmax),
        ("poly-sigmoid", PolyKind::Sigmoid),
    ] {
        let text = format!("[loss]\nkind = \"{kind}\"\nterms = 2\nepsilon = [1.0, 0.5]\n");
        let l = PolyConfig::from_toml_str(&text).unwrap().build().unwrap();
        assert_eq!(l.kind, want, "{kind}");
        assert_eq!(l.epsilon, vec![1.0, 0.5]);
        assert_eq!(l.label_smoothing, 0.0);
    }
    let text = "[loss]\nkind = \"poly-focal\"\nterms = 1\nepsilon = [-2.0]\ngamma = 0.5\n";
    let l = PolyConfig::from_toml_str(text).unwrap().build().unwrap();
    assert_eq!(
        l.kind,
        PolyKind::SoftmaxFocal {
            gamma: 0.5,
            alpha: None
        }
    );
}

#[test]
fn config_errors_name_the_key() {
    // A misspelt key is refused when the text is read, with its name.
    let e =
        PolyConfig::from_toml_str("[loss]\nterms = 1\nepsilon = [2.0]\ngama = 2.0\n").unwrap_err();
    assert!(matches!(e, PolyConfigError::Parse { .. }), "{e:?}");
    assert!(e.to_string().contains("gama"), "{e}");
    // No coefficients: `terms` must be at least 1.
    let e = PolyConfig::from_toml_str("[loss]\nterms = 0\nepsilon = []\n").unwrap_err();
    assert!(e.to_string().contains("loss.terms"), "{e}");
    // A config edited in code is checked again by build, naming the key.
    let mut cfg = PolyConfig::from_toml_str(TUNED).unwrap();
    cfg.loss.epsilon.clear();
    let e = cfg.build().unwrap_err();
    assert!(
        matches!(
            e,
            PolyConfigError::Invalid {
                key: "loss.terms",
                ..
            }
        ),
        "{e:?}"
    );
    let mut cfg = PolyConfig::from_toml_str(TUNED).unwrap();
    cfg.loss.alpha = Some(1.5);
    let e = cfg.build().unwrap_err();
    assert!(e.to_string().contains("loss.alpha"), "{e}");
    let mut cfg = PolyConfig::from_toml_str("[loss]\nterms = 1\nepsilon = [2.0]\n").unwrap();
    cfg.loss.epsilon = vec![-1.5];
    let e = cfg.build().unwrap_err();
    assert!(
        matches!(
            e,
            PolyConfigError::Invalid {
                key: "loss.epsilon",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("-1.5"), "{e}");
}
