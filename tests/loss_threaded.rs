//! The CPU kernels' threaded path (≥ 32k logits and more than one rayon
//! thread) against the f64 reference: the sigmoid kinds, which no other test
//! runs that large, and softmax with index targets. Each check runs inside
//! an explicit 4-thread rayon pool, so the path is taken whatever the
//! machine's core count.

use crate::reference64;

use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use reference64::{assert_all_close, assert_close, Ref, Tg};

const B: usize = 40;
const C: usize = 1003; // 40 × 1003 = 40 120 logits ≥ 32 Ki; 1003 leaves SIMD tails

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .expect("a rayon pool")
}

fn inputs(seed: u64) -> (Vec<f32>, Vec<usize>, Vec<f32>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let z: Vec<f32> = (0..B * C).map(|_| rng.gen_range(-8.0..8.0)).collect();
    let t: Vec<usize> = (0..B).map(|_| rng.gen_range(0..C)).collect();
    // Multi-label targets: a few positives per row, some soft values.
    let y: Vec<f32> = (0..B * C)
        .map(|_| match rng.gen_range(0..100) {
            0..=2 => 1.0,
            3 => 0.5,
            _ => 0.0,
        })
        .collect();
    let w: Vec<f32> = (0..C).map(|k| 0.5 + (k % 7) as f32 * 0.2).collect();
    (z, t, y, w)
}

#[test]
fn sigmoid_kinds_on_the_threaded_path_match_f64() {
    let (z, t, y, w) = inputs(32);
    let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let eps = [1.5f32, 0.5];
    let eps64 = [1.5, 0.5];
    pool().install(|| {
        assert!(rayon::current_num_threads() > 1);
        let dev = Cpu::default();
        let x: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(z.clone(), (B, C));
        let yt: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(y.clone(), (B, C));
        let kinds = [
            (PolyKind::Sigmoid, None),
            (
                PolyKind::SigmoidFocal {
                    gamma: 2.0,
                    alpha: Some(0.25),
                },
                Some((2.0, Some(0.25))),
            ),
        ];
        for (kind, focal) in kinds {
            let loss = PolyLoss::new(eps)
                .with_kind(kind)
                .with_label_smoothing(0.05)
                .with_weight(w.clone());
            let r = Ref {
                eps: &eps64,
                focal,
                smoothing: 0.05,
                weight: Some(&w64),
            };
            for probs in [false, true] {
                let what = format!("{kind:?} probability targets {probs}");
                let l = if probs {
                    loss.forward(x.leaky_trace(), &yt)
                } else {
                    loss.forward(x.leaky_trace(), &t)
                };
                let tg = if probs { Tg::Prob(&y) } else { Tg::Idx(&t) };
                let (want, wg) = reference64::sigmoid(&z, B, C, tg, r);
                assert_close(&what, l.array(), want, 1e-5, 1e-7);
                let g = l.backward().get(&x).as_vec();
                assert_all_close(&format!("{what}: grad"), &g, &wg, 1e-4, 1e-9);
            }
        }
    });
}

#[test]
fn softmax_on_the_threaded_path_matches_f64() {
    let (z, t, _, w) = inputs(33);
    let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    pool().install(|| {
        let dev = Cpu::default();
        let x: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(z.clone(), (B, C));
        let l = PolyLoss::focal([1.0, 0.25], 1.5, Some(0.5))
            .with_label_smoothing(0.1)
            .with_weight(w.clone())
            .forward(x.leaky_trace(), &t);
        let r = Ref {
            eps: &[1.0, 0.25],
            focal: Some((1.5, Some(0.5))),
            smoothing: 0.1,
            weight: Some(&w64),
        };
        let (want, wg) = reference64::softmax(&z, B, C, Tg::Idx(&t), r);
        assert_close("softmax focal", l.array(), want, 1e-5, 1e-7);
        let g = l.backward().get(&x).as_vec();
        assert_all_close("softmax focal: grad", &g, &wg, 1e-4, 1e-8);
    });
}
