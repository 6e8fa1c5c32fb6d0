//! Shared body of the probability-target checks in the `simd_*` tests:
//! the 16-float chunk loops of `sum_exp_probs` (forward) and
//! `grad_probs_row` (backward) at class counts around the chunk width
//! (15, 16, 17: no chunk, one chunk, one chunk and a tail) and at 1000 (many
//! chunks, and 40 × 1000 logits take the threaded path), against the f64
//! reference, with label smoothing and class weights so every accumulator
//! matters; plain and focal.

use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::reference64::{self, assert_all_close, assert_close, Ref, Tg};

/// Pins the instruction-set path (POLY_LOSS_SIMD is read once per process;
/// every test of a binary sets the same value before its first call) and
/// checks that it was honoured where the CPU has it.
pub fn pin_path(path: &str) {
    std::env::set_var("POLY_LOSS_SIMD", path);
    let active = poly_loss::loss::cpu_simd_path();
    #[cfg(target_arch = "x86_64")]
    let has_avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let has_avx2 = false;
    match path {
        "scalar" => assert_eq!(active, "scalar"),
        // x86-64 CI machines have AVX2: running scalar instead would test
        // the wrong path, so that is a failure, not a fallback.
        "avx2" if cfg!(target_arch = "x86_64") => assert!(
            has_avx2 && active == "avx2",
            "POLY_LOSS_SIMD=avx2: active path {active}, CPU has AVX2+FMA: {has_avx2}"
        ),
        "avx2" => assert_eq!(active, "scalar", "no AVX2 off x86-64"),
        _ => {}
    }
}

pub fn check_probs_against_f64(path: &str) {
    pin_path(path);
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(16);
    for &(b, c) in &[(3, 15), (3, 16), (3, 17), (40, 1000)] {
        let z: Vec<f32> = (0..b * c).map(|_| rng.gen_range(-6.0..6.0)).collect();
        // Rows of target probabilities (summing to 1), some mass everywhere.
        let mut y = vec![0.0f32; b * c];
        for i in 0..b {
            let raw: Vec<f32> = (0..c).map(|_| rng.gen_range(0.0f32..1.0).powi(4)).collect();
            let s: f32 = raw.iter().sum();
            for k in 0..c {
                y[i * c + k] = raw[k] / s;
            }
        }
        let w: Vec<f32> = (0..c).map(|k| 0.5 + (k % 5) as f32 * 0.3).collect();
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let x: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(z.clone(), (b, c));
        let yt: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(y.clone(), (b, c));
        let eps = [2.0f32, -0.5];
        let eps64 = [2.0, -0.5];
        for focal in [None, Some((2.0f32, Some(0.25f32)))] {
            let mut loss = PolyLoss::new(eps)
                .with_label_smoothing(0.1)
                .with_weight(w.clone());
            let mut r = Ref {
                eps: &eps64,
                focal: None,
                smoothing: 0.1,
                weight: Some(&w64),
            };
            if let Some((g, a)) = focal {
                loss = loss.with_kind(PolyKind::SoftmaxFocal { gamma: g, alpha: a });
                r.focal = Some((g as f64, a.map(|v| v as f64)));
            }
            let what = format!("{path}: ({b}, {c}) focal {focal:?}");
            let l = loss.forward(x.leaky_trace(), &yt);
            let (want, wg) = reference64::softmax(&z, b, c, Tg::Prob(&y), r);
            assert_close(&what, l.array(), want, 2e-6, 1e-6);
            let g = l.backward().get(&x).as_vec();
            assert_all_close(&format!("{what}: grad"), &g, &wg, 1e-4, 1e-7);
        }
    }
}
