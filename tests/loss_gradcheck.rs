//! Every variant against an independent float64 reference (PyTorch's
//! cross_entropy rules written out naively) and its central finite differences.

use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Clone)]
enum Tg {
    Idx(Vec<usize>),
    Prob(Vec<f64>),
}

/// Naive f64 loss straight from the definitions.
fn reference(
    cfg: &PolyLoss<3>,
    n: usize,
    z: &[f64],
    b: usize,
    c: usize,
    tg: &Tg,
    per_row: Option<&[f64]>,
) -> f64 {
    let eps = &cfg.epsilon[..n];
    let al = cfg.label_smoothing as f64;
    let w = |k: usize| cfg.weight.as_ref().map_or(1.0, |w| w[k] as f64);
    let (gamma, alpha) = match cfg.kind {
        PolyKind::SoftmaxFocal { gamma, alpha } | PolyKind::SigmoidFocal { gamma, alpha } => {
            (Some(gamma as f64), alpha.map(|a| a as f64))
        }
        _ => (None, None),
    };
    let poly = |f: f64| -> f64 {
        let g0 = gamma.unwrap_or(0.0);
        eps.iter()
            .enumerate()
            .map(|(j, &e)| e as f64 * f.powf(g0 + (j + 1) as f64))
            .sum()
    };
    let mut total = 0.0;
    let mut denom = 0.0;
    for i in 0..b {
        let row = &z[i * c..(i + 1) * c];
        let y: Vec<f64> = match tg {
            Tg::Idx(t) => {
                if Some(t[i]) == cfg.ignore_index {
                    continue;
                }
                (0..c).map(|k| if k == t[i] { 1.0 } else { 0.0 }).collect()
            }
            Tg::Prob(p) => p[i * c..(i + 1) * c].to_vec(),
        };
        let li = if cfg.kind.is_sigmoid() {
            let mut s = 0.0;
            for k in 0..c {
                let yk = (1.0 - al) * y[k] + 0.5 * al;
                let sig = 1.0 / (1.0 + (-row[k]).exp());
                let bce = -(yk * sig.ln() + (1.0 - yk) * (1.0 - sig).ln());
                let pt = yk * sig + (1.0 - yk) * (1.0 - sig);
                let a = match gamma {
                    Some(g) => {
                        alpha.map_or(1.0, |a| a * yk + (1.0 - a) * (1.0 - yk)) * (1.0 - pt).powf(g)
                    }
                    None => 1.0,
                };
                s += w(k) * (a * bce + poly(1.0 - pt));
            }
            denom += c as f64;
            s
        } else {
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let se: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            let logp: Vec<f64> = row.iter().map(|v| v - mx - se.ln()).collect();
            let ys: Vec<f64> = y.iter().map(|v| (1.0 - al) * v + al / c as f64).collect();
            let (ce, wrow) = match tg {
                Tg::Idx(t) => {
                    let ti = t[i];
                    let ce = (1.0 - al) * w(ti) * -logp[ti]
                        + al / c as f64 * (0..c).map(|k| w(k) * -logp[k]).sum::<f64>();
                    denom += w(ti);
                    (ce, w(ti))
                }
                Tg::Prob(_) => {
                    denom += 1.0;
                    (
                        -(0..c).map(|k| w(k) * ys[k] * logp[k]).sum::<f64>(),
                        (0..c).map(|k| w(k) * ys[k]).sum::<f64>(),
                    )
                }
            };
            let pt: f64 = (0..c).map(|k| ys[k] * logp[k].exp()).sum();
            let a = match gamma {
                Some(g) => alpha.unwrap_or(1.0) * (1.0 - pt).powf(g),
                None => 1.0,
            };
            a * ce + wrow * poly(1.0 - pt)
        };
        total += match per_row {
            Some(coef) => coef[i] * li,
            None => li,
        };
    }
    match (per_row, cfg.reduction) {
        (Some(_), _) | (None, Reduction::Sum) => total,
        _ => total / denom,
    }
}

struct Case {
    b: usize,
    c: usize,
    n: usize,
    loss: PolyLoss<3>,
    probs: bool,
    per_sample: bool,
}

/// Runs the op through dfdx with `usize` dims (and N = 1, 2 or 3).
fn run_op(case: &Case, z: &[f32], tg: &Tg, coef: &[f32]) -> (f32, Vec<f32>) {
    let dev = Cpu::default();
    let (b, c) = (case.b, case.c);
    let x: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(z.to_vec(), (b, c));
    macro_rules! go {
        ($n:literal) => {{
            let mut eps = [0.0f32; $n];
            eps.copy_from_slice(&case.loss.epsilon[..$n]);
            let l = PolyLoss::<$n> {
                epsilon: eps,
                kind: case.loss.kind,
                label_smoothing: case.loss.label_smoothing,
                weight: case.loss.weight.clone(),
                ignore_index: case.loss.ignore_index,
                reduction: case.loss.reduction,
            };
            let out = match tg {
                Tg::Idx(t) if case.per_sample => {
                    let cvec: Tensor<(usize,), f32, _> = dev.tensor_from_vec(coef.to_vec(), (b,));
                    (l.forward_per_sample(x.leaky_trace(), t) * cvec).sum()
                }
                Tg::Idx(t) => l.forward(x.leaky_trace(), t),
                Tg::Prob(p) => {
                    let pt: Tensor<(usize, usize), f32, _> =
                        dev.tensor_from_vec(p.iter().map(|&v| v as f32).collect(), (b, c));
                    if case.per_sample {
                        let cvec: Tensor<(usize,), f32, _> =
                            dev.tensor_from_vec(coef.to_vec(), (b,));
                        (l.forward_per_sample(x.leaky_trace(), pt) * cvec).sum()
                    } else {
                        l.forward(x.leaky_trace(), &pt)
                    }
                }
            };
            let v = out.array();
            let g = out.backward();
            (v, g.get(&x).as_vec())
        }};
    }
    match case.n {
        1 => go!(1),
        2 => go!(2),
        _ => go!(3),
    }
}

fn check(case: Case, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (b, c) = (case.b, case.c);
    let z: Vec<f32> = (0..b * c).map(|_| rng.gen_range(-3.0..3.0)).collect();
    let tg = if case.probs {
        let mut p = vec![0.0f64; b * c];
        for i in 0..b {
            let raw: Vec<f64> = (0..c).map(|_| rng.gen_range(0.0..1.0f64).powi(3)).collect();
            let s: f64 = raw.iter().sum();
            for k in 0..c {
                // Sigmoid targets are independent per logit; softmax ones sum to 1.
                p[i * c + k] = if case.loss.kind.is_sigmoid() {
                    raw[k].min(1.0)
                } else {
                    raw[k] / s
                };
            }
        }
        Tg::Prob(p)
    } else {
        Tg::Idx(
            (0..b)
                .map(|i| {
                    if i == 1 {
                        case.loss.ignore_index.unwrap_or(0).min(c - 1)
                    } else {
                        rng.gen_range(0..c)
                    }
                })
                .collect(),
        )
    };
    // Keep the ignored row if ignore_index is a real class; row 1 uses it.
    let tg = match (tg, case.loss.ignore_index) {
        (Tg::Idx(mut t), Some(ig)) => {
            t[1] = ig;
            Tg::Idx(t)
        }
        (t, _) => t,
    };
    let coef: Vec<f32> = (0..b).map(|_| rng.gen_range(0.5..2.0)).collect();
    let coef64: Vec<f64> = coef.iter().map(|&v| v as f64).collect();
    let per_row = if case.per_sample {
        Some(&coef64[..])
    } else {
        None
    };
    let (v, g) = run_op(&case, &z, &tg, &coef);
    let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    let want = reference(&case.loss, case.n, &z64, b, c, &tg, per_row);
    assert!(
        (v as f64 - want).abs() <= 2e-5 * (1.0 + want.abs()),
        "seed {seed}: loss {v} vs reference {want}"
    );
    let h = 1e-5;
    for k in 0..b * c {
        let mut zp = z64.clone();
        zp[k] += h;
        let mut zm = z64.clone();
        zm[k] -= h;
        let fd = (reference(&case.loss, case.n, &zp, b, c, &tg, per_row)
            - reference(&case.loss, case.n, &zm, b, c, &tg, per_row))
            / (2.0 * h);
        assert!(
            (g[k] as f64 - fd).abs() <= 1e-4 * (1.0 + fd.abs()),
            "seed {seed}: d/dz[{k}] = {} vs finite difference {fd}",
            g[k]
        );
    }
}

fn eps3() -> PolyLoss<3> {
    PolyLoss::new([2.0, -0.7, 0.4])
}

fn all_kinds() -> Vec<PolyKind> {
    vec![
        PolyKind::Softmax,
        PolyKind::SoftmaxFocal {
            gamma: 2.0,
            alpha: Some(0.25),
        },
        PolyKind::SoftmaxFocal {
            gamma: 0.5,
            alpha: None,
        },
        PolyKind::Sigmoid,
        PolyKind::SigmoidFocal {
            gamma: 2.0,
            alpha: Some(0.25),
        },
        PolyKind::SigmoidFocal {
            gamma: 1.5,
            alpha: None,
        },
    ]
}

#[test]
fn every_kind_index_targets() {
    let mut seed = 0;
    for kind in all_kinds() {
        for n in 1..=3 {
            for &(b, c) in &[(3, 5), (6, 37)] {
                seed += 1;
                check(
                    Case {
                        b,
                        c,
                        n,
                        loss: eps3().with_kind(kind),
                        probs: false,
                        per_sample: false,
                    },
                    seed,
                );
            }
        }
    }
}

#[test]
fn every_kind_probability_targets() {
    let mut seed = 100;
    for kind in all_kinds() {
        for n in [1, 3] {
            seed += 1;
            check(
                Case {
                    b: 4,
                    c: 9,
                    n,
                    loss: eps3().with_kind(kind),
                    probs: true,
                    per_sample: false,
                },
                seed,
            );
        }
    }
}

#[test]
fn options_smoothing_weights_ignore_reductions() {
    let mut seed = 200;
    let weight: Vec<f32> = (0..7).map(|k| 0.3 + 0.25 * k as f32).collect();
    for kind in all_kinds() {
        for probs in [false, true] {
            for red in [Reduction::Mean, Reduction::Sum] {
                for per_sample in [false, true] {
                    seed += 1;
                    let mut loss = eps3()
                        .with_kind(kind)
                        .with_label_smoothing(0.15)
                        .with_weight(weight.clone())
                        .with_reduction(red);
                    if !probs {
                        loss = loss.with_ignore_index(2);
                    }
                    check(
                        Case {
                            b: 5,
                            c: 7,
                            n: 2,
                            loss,
                            probs,
                            per_sample,
                        },
                        seed,
                    );
                }
            }
        }
    }
}

#[test]
fn ignore_index_outside_the_classes() {
    // PyTorch's default ignore index is -100; ours can be any usize, e.g. usize::MAX.
    let loss = eps3().with_ignore_index(usize::MAX);
    check(
        Case {
            b: 4,
            c: 6,
            n: 1,
            loss,
            probs: false,
            per_sample: false,
        },
        7,
    );
}

#[test]
fn const_dims_match_usize_dims() {
    let dev = Cpu::default();
    let x: Tensor<Rank2<4, 10>, f32, _> = dev.sample_normal();
    let t = [3usize, 0, 9, 4];
    let l1 = poly_loss(x.leaky_trace(), &t, [2.0]);
    let v1 = l1.array();
    let g1 = l1.backward();
    let xu: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(x.as_vec(), (4, 10));
    let tt: Tensor<(usize,), usize, _> = dev.tensor_from_vec(t.to_vec(), (4,));
    let l2 = poly_loss(xu.leaky_trace(), tt, [2.0]);
    assert_eq!(v1, l2.array());
    let g2 = l2.backward();
    assert_eq!(g1.get(&x).as_vec(), g2.get(&xu).as_vec());
    // Const batch with usize classes, and targets as a Const tensor.
    let xm: Tensor<(Const<4>, usize), f32, _> = dev.tensor_from_vec(x.as_vec(), (Const, 10));
    let tc: Tensor<Rank1<4>, usize, _> = dev.tensor(t);
    assert_eq!(poly_loss(xm.leaky_trace(), &tc, [2.0]).array(), v1);
    // The method form, with only N in the turbofish.
    assert_eq!(x.leaky_trace().poly_loss::<1>(&t, [2.0]).array(), v1);
}
