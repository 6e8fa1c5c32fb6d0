//! The CUDA ops against the CPU ops on random inputs (run on a machine with a
//! GPU: `cargo test --features cuda --test cuda_loss`).
#![cfg(feature = "cuda")]

use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn compare(loss: PolyLoss<2>, b: usize, c: usize, probs: bool, per_sample: bool, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let z: Vec<f32> = (0..b * c).map(|_| rng.gen_range(-6.0..6.0)).collect();
    let t: Vec<usize> = (0..b)
        .map(|i| if i % 7 == 3 { 1 } else { rng.gen_range(0..c) })
        .collect();
    let y: Vec<f32> = (0..b * c).map(|_| rng.gen_range(0.0..1.0f32)).collect();
    let coef: Vec<f32> = (0..b).map(|_| rng.gen_range(0.5..2.0)).collect();
    let cpu = Cpu::default();
    let gpu = Cuda::default();
    macro_rules! run {
        ($dev:expr) => {{
            let x: Tensor<(usize, usize), f32, _> = $dev.tensor_from_vec(z.clone(), (b, c));
            let yt: Tensor<(usize, usize), f32, _> = $dev.tensor_from_vec(y.clone(), (b, c));
            let out = match (probs, per_sample) {
                (false, false) => loss.forward(x.leaky_trace(), &t),
                (true, false) => loss.forward(x.leaky_trace(), yt),
                (p, true) => {
                    let cv: Tensor<(usize,), f32, _> = $dev.tensor_from_vec(coef.clone(), (b,));
                    let per = if p {
                        loss.forward_per_sample(x.leaky_trace(), yt)
                    } else {
                        loss.forward_per_sample(x.leaky_trace(), &t)
                    };
                    (per * cv).sum()
                }
            };
            let v = out.array();
            (v, out.backward().get(&x).as_vec())
        }};
    }
    let (vc, gc) = run!(cpu);
    let (vg, gg) = run!(gpu);
    let ctx = format!(
        "{:?} b={b} c={c} probs={probs} per_sample={per_sample}",
        loss.kind
    );
    assert!(
        (vc - vg).abs() <= 1e-4 * (1.0 + vc.abs()),
        "{ctx}: loss cpu {vc} vs cuda {vg}"
    );
    for (k, (a, g)) in gc.iter().zip(&gg).enumerate() {
        assert!(
            (a - g).abs() <= 1e-5 + 1e-4 * a.abs(),
            "{ctx}: grad[{k}] cpu {a} vs cuda {g}"
        );
    }
}

#[test]
fn cuda_matches_cpu_on_random_inputs() {
    let kinds = [
        PolyKind::Softmax,
        PolyKind::SoftmaxFocal {
            gamma: 2.0,
            alpha: Some(0.25),
        },
        PolyKind::Sigmoid,
        PolyKind::SigmoidFocal {
            gamma: 2.0,
            alpha: Some(0.25),
        },
    ];
    let mut seed = 0;
    for kind in kinds {
        for &(b, c) in &[(1, 1), (3, 5), (64, 102), (256, 1000), (17, 3000)] {
            for probs in [false, true] {
                for per_sample in [false, true] {
                    seed += 1;
                    let base = PolyLoss::new([2.0, -0.5]).with_kind(kind);
                    compare(base.clone(), b, c, probs, per_sample, seed);
                    let w: Vec<f32> = (0..c).map(|k| 0.5 + (k % 5) as f32 * 0.3).collect();
                    let mut opts = base.with_label_smoothing(0.1).with_weight(w);
                    if !probs {
                        opts = opts.with_ignore_index(1);
                    }
                    compare(opts, b.max(4), c.max(2), probs, per_sample, seed + 1000);
                }
            }
        }
    }
}

/// The option branches the random test above does not reach: smoothing
/// without weights, weights without smoothing, focal with α = None, γ = 0,
/// `Reduction::Sum`, and a large batch (the two-stage scalar reduction).
#[test]
fn cuda_matches_cpu_on_every_option_branch() {
    let kinds = [
        PolyKind::Softmax,
        PolyKind::SoftmaxFocal {
            gamma: 0.0,
            alpha: None,
        },
        PolyKind::SoftmaxFocal {
            gamma: 2.0,
            alpha: None,
        },
        PolyKind::Sigmoid,
        PolyKind::SigmoidFocal {
            gamma: 0.0,
            alpha: Some(0.25),
        },
        PolyKind::SigmoidFocal {
            gamma: 2.0,
            alpha: None,
        },
    ];
    let mut seed = 5000;
    for kind in kinds {
        for &(b, c) in &[(5, 7), (33, 300), (4096, 10)] {
            for probs in [false, true] {
                let w: Vec<f32> = (0..c).map(|k| 0.5 + (k % 5) as f32 * 0.3).collect();
                let base = PolyLoss::new([2.0, -0.5]).with_kind(kind);
                let variants = [
                    base.clone().with_label_smoothing(0.1),
                    base.clone().with_weight(w.clone()),
                    base.clone().with_reduction(Reduction::Sum),
                    base.clone()
                        .with_weight(w)
                        .with_label_smoothing(0.2)
                        .with_reduction(Reduction::Sum),
                ];
                for loss in variants {
                    for per_sample in [false, true] {
                        seed += 1;
                        compare(loss.clone(), b, c, probs, per_sample, seed);
                    }
                }
            }
        }
    }
}

/// NaN in a row of logits or of probability targets, for both kinds: the
/// same outputs and gradients as the CPU, NaN exactly where the CPU has NaN.
#[test]
fn cuda_nan_patterns_match_cpu() {
    fn same(what: &str, cpu: &[f32], gpu: &[f32]) {
        assert_eq!(cpu.len(), gpu.len(), "{what}: length");
        for (k, (a, g)) in cpu.iter().zip(gpu).enumerate() {
            let ok = if a.is_nan() {
                g.is_nan()
            } else {
                (a - g).abs() <= 1e-5 + 1e-4 * a.abs()
            };
            assert!(ok, "{what}[{k}]: cpu {a} vs cuda {g}");
        }
    }
    let (b, c) = (3, 5);
    let z: Vec<f32> = (0..b * c).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
    let y: Vec<f32> = (0..b * c).map(|i| ((i * 3) % 5) as f32 * 0.2).collect();
    for kind in [PolyKind::Softmax, PolyKind::Sigmoid] {
        for (nan_in_z, probs) in [(true, false), (true, true), (false, true)] {
            let (mut zv, mut yv) = (z.clone(), y.clone());
            if nan_in_z {
                zv[c + 2] = f32::NAN;
            } else {
                yv[c + 1] = f32::NAN;
            }
            let loss = PolyLoss::new([1.0]).with_kind(kind);
            macro_rules! run {
                ($dev:expr) => {{
                    let x: Tensor<(usize, usize), f32, _> =
                        $dev.tensor_from_vec(zv.clone(), (b, c));
                    let t: Tensor<(usize, usize), f32, _> =
                        $dev.tensor_from_vec(yv.clone(), (b, c));
                    let per = if probs {
                        loss.forward_per_sample(x.leaky_trace(), t)
                    } else {
                        loss.forward_per_sample(x.leaky_trace(), &[0, 1, 4])
                    };
                    let v = per.as_vec();
                    (v, per.sum().backward().get(&x).as_vec())
                }};
            }
            let (vc, gc) = run!(Cpu::default());
            let (vg, gg) = run!(Cuda::default());
            let what = format!("{kind:?} nan_in_z={nan_in_z} probs={probs}");
            assert!(vc[1].is_nan(), "{what}: the CPU propagates the NaN");
            same(&format!("{what} loss"), &vc, &vg);
            same(&format!("{what} grad"), &gc, &gg);
        }
    }
}

#[test]
fn cuda_extreme_inputs_stay_finite_and_nan_propagates() {
    let dev = Cuda::default();
    let x: Tensor<Rank2<2, 4>, f32, _> =
        dev.tensor([[1e4, -1e4, 0.0, -1e4], [-1e4, -1e4, -1e4, 1e4]]);
    let l = poly_loss(x.leaky_trace(), &[1, 3], [100.0]);
    assert!((l.array() - (2e4 + 100.0) / 2.0).abs() < 1.0);
    assert!(l.backward().get(&x).as_vec().iter().all(|v| v.is_finite()));
    let xn: Tensor<Rank2<2, 3>, f32, _> = dev.tensor([[0.0, f32::NAN, 1.0], [1.0, 2.0, 3.0]]);
    let per = PolyLoss::new([2.0]).forward_per_sample(xn.leaky_trace(), &[0, 2]);
    let v = per.array();
    assert!(v[0].is_nan() && v[1].is_finite());
    let g = per.sum().backward().get(&xn).as_vec();
    assert!(g[..3].iter().all(|v| v.is_nan()) && g[3..].iter().all(|v| v.is_finite()));
    // A large class count.
    let big: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(
        (0..200_000)
            .map(|i| ((i * 37) % 1000) as f32 * 0.01)
            .collect(),
        (2, 100_000),
    );
    let cpu_big: Tensor<(usize, usize), f32, _> =
        Cpu::default().tensor_from_vec(big.as_vec(), (2, 100_000));
    let (a, b) = (
        poly_loss(big, &[5, 99_999], [2.0]).array(),
        poly_loss(cpu_big, &[5, 99_999], [2.0]).array(),
    );
    assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
}

/// Class targets given as a `usize` tensor on the GPU reach the kernels from
/// dfdx's own buffer (no host copy) and give the CPU's losses and gradients;
/// the mean with an ignore index or class weights (whose denominator the
/// device sums from the targets) gives them too, and a mean over only ignored
/// rows is NaN (PyTorch's 0/0) where host targets give `AllIgnored`. An
/// out-of-range index, which the host never sees on the device path, makes
/// that row's loss NaN.
#[test]
fn cuda_class_tensor_targets_match_cpu_and_out_of_range_is_nan() {
    let (b, c) = (300, 11);
    let mut rng = StdRng::seed_from_u64(77);
    let z: Vec<f32> = (0..b * c).map(|_| rng.gen_range(-6.0..6.0)).collect();
    let t: Vec<usize> = (0..b)
        .map(|i| if i % 7 == 3 { 1 } else { rng.gen_range(0..c) })
        .collect();
    let w: Vec<f32> = (0..c).map(|k| 0.5 + (k % 5) as f32 * 0.3).collect();
    let (cpu, gpu) = (Cpu::default(), Cuda::default());
    for kind in [
        PolyKind::Softmax,
        PolyKind::SoftmaxFocal {
            gamma: 2.0,
            alpha: None,
        },
        PolyKind::Sigmoid,
    ] {
        let base = PolyLoss::new([2.0, -0.5]).with_kind(kind);
        let variants = [
            base.clone(),
            base.clone()
                .with_reduction(Reduction::Sum)
                .with_ignore_index(1),
            base.clone().with_ignore_index(1),
            base.clone().with_weight(w.clone()),
            base.clone().with_weight(w.clone()).with_ignore_index(1),
            base.clone()
                .with_weight(w.clone())
                .with_ignore_index(1)
                .with_label_smoothing(0.1),
        ];
        for loss in variants {
            let xc: Tensor<(usize, usize), f32, _> = cpu.tensor_from_vec(z.clone(), (b, c));
            let out_c = loss.forward(xc.leaky_trace(), &t);
            let vc = out_c.array();
            let gc = out_c.backward().get(&xc).as_vec();
            let xg: Tensor<(usize, usize), f32, _> = gpu.tensor_from_vec(z.clone(), (b, c));
            let tg: Tensor<(usize,), usize, _> = gpu.tensor_from_vec(t.clone(), (b,));
            let out_g = loss.forward(xg.leaky_trace(), tg);
            let vg = out_g.array();
            let gg = out_g.backward().get(&xg).as_vec();
            let ctx = format!("{loss:?}");
            assert!(
                (vc - vg).abs() <= 1e-4 * (1.0 + vc.abs()),
                "{ctx}: loss cpu {vc} vs cuda {vg}"
            );
            assert_eq!(gc.len(), gg.len());
            for (k, (a, g)) in gc.iter().zip(&gg).enumerate() {
                assert!(
                    (a - g).abs() <= 1e-5 + 1e-4 * a.abs(),
                    "{ctx}: grad[{k}] cpu {a} vs cuda {g}"
                );
            }
        }
        // Every row ignored: CPU refuses, the device mean is NaN with a zero gradient.
        let ones = vec![1usize; b];
        let loss = base.clone().with_weight(w.clone()).with_ignore_index(1);
        assert!(matches!(
            loss.try_forward(cpu.tensor_from_vec(z.clone(), (b, c)), &ones),
            Err(PolyLossError::AllIgnored { .. })
        ));
        let xg: Tensor<(usize, usize), f32, _> = gpu.tensor_from_vec(z.clone(), (b, c));
        let tg: Tensor<(usize,), usize, _> = gpu.tensor_from_vec(ones, (b,));
        let mean = loss.forward(xg.leaky_trace(), tg);
        assert!(
            mean.array().is_nan(),
            "{kind:?}: all ignored {}",
            mean.array()
        );
        let g = mean.backward().get(&xg).as_vec();
        assert!(
            g.iter().all(|&v| v == 0.0),
            "{kind:?}: all ignored gradient"
        );
        // Row 5 out of range (above 2^32: a 32-bit reader would see 3).
        let mut bad = t.clone();
        bad[5] = (1 << 32) + 3;
        let loss = base.clone();
        assert!(matches!(
            loss.try_forward(cpu.tensor_from_vec(z.clone(), (b, c)), &bad),
            Err(PolyLossError::TargetOutOfRange { row: 5, .. })
        ));
        let xg: Tensor<(usize, usize), f32, _> = gpu.tensor_from_vec(z.clone(), (b, c));
        let tg: Tensor<(usize,), usize, _> = gpu.tensor_from_vec(bad.clone(), (b,));
        let per = loss.forward_per_sample(xg.clone(), tg.clone()).as_vec();
        for (i, v) in per.iter().enumerate() {
            assert_eq!(v.is_nan(), i == 5, "{kind:?}: row {i} loss {v}");
        }
        let mean = loss.forward(xg.leaky_trace(), tg);
        assert!(mean.array().is_nan(), "{kind:?}: mean {}", mean.array());
        let g = mean.backward().get(&xg).as_vec();
        assert!(g[5 * c..6 * c].iter().all(|v| v.is_nan()), "{kind:?}");
    }
}
