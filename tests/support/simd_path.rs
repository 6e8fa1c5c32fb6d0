//! Shared body of the `simd_*` tests: each test binary pins one
//! instruction-set path (POLY_LOSS_SIMD is read once per process, by every
//! CPU kernel alike), asserts that the kernels took it, and checks the fused
//! loss against a naive f64 reference on a multi-threaded shape.

use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// The path `POLY_LOSS_SIMD=path` must give on this CPU, worked out from the
/// CPU's own feature flags; `None` when the CPU cannot run that path.
fn expected_path(path: &str) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    let (avx2, avx512) = {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let avx512 = avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512bw");
        (avx2, avx512)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (avx2, avx512) = (false, false);
    match path {
        "scalar" => Some("scalar"),
        "avx2" => avx2.then_some("avx2"),
        "best" if avx512 => Some("avx512"),
        "best" if avx2 => Some("avx2"),
        "best" => Some("scalar"),
        other => panic!("unknown instruction-set path {other:?}"),
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Pins `path` for this process (`scalar`, `avx2` or `best`; every test of
/// a binary pins the same value before its first kernel call) and asserts
/// the kernels took exactly that path. Returns false when the CPU cannot
/// run `path`: that fails under `CI=true` and otherwise skips the caller
/// with a message.
pub fn pin(path: &str) -> bool {
    std::env::set_var("POLY_LOSS_SIMD", path);
    let Some(want) = expected_path(path) else {
        let why = format!("POLY_LOSS_SIMD={path}: this CPU lacks the instructions (AVX2 + FMA)");
        assert!(!in_ci(), "{why}; CI=true, so the path may not go untested");
        eprintln!("SKIPPED {why}");
        return false;
    };
    assert_eq!(
        poly_loss::loss::cpu_simd_path(),
        want,
        "POLY_LOSS_SIMD={path} must run the {want} kernels"
    );
    true
}

/// Pins `path` ([`pin`]) and checks the fused loss against f64 on a
/// multi-threaded shape.
pub fn check_against_f64(path: &str) {
    if !pin(path) {
        return;
    }
    let (b, c) = (40, 1003); // > 32k logits: the parallel path; 1003 leaves tails
    let mut rng = StdRng::seed_from_u64(42);
    let z: Vec<f32> = (0..b * c).map(|_| rng.gen_range(-20.0..20.0)).collect();
    let t: Vec<usize> = (0..b).map(|_| rng.gen_range(0..c)).collect();
    let w: Vec<f32> = (0..c).map(|k| 0.5 + (k % 4) as f32 * 0.25).collect();
    let (al, eps) = (0.1f64, 2.0f64);
    let dev = Cpu::default();
    let x: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(z.clone(), (b, c));
    let loss = PolyLoss::new([eps as f32])
        .with_label_smoothing(al as f32)
        .with_weight(w.clone())
        .with_reduction(Reduction::Sum);
    let l = loss.forward(x.leaky_trace(), &t);
    let v = l.array() as f64;
    let g = l.backward().get(&x).as_vec();
    let mut want = 0.0f64;
    for i in 0..b {
        let row: Vec<f64> = z[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let wk = |k: usize| w[k] as f64;
        let y = |k: usize| al / c as f64 + if k == t[i] { 1.0 - al } else { 0.0 };
        let u = |k: usize| al / c as f64 * wk(k) + if k == t[i] { (1.0 - al) * wk(k) } else { 0.0 };
        let ce: f64 = (0..c).map(|k| u(k) * (lse - row[k])).sum();
        let p = |k: usize| (row[k] - lse).exp();
        let pt: f64 = (0..c).map(|k| y(k) * p(k)).sum();
        want += ce + wk(t[i]) * eps * (1.0 - pt);
        let s: f64 = (0..c).map(u).sum();
        for k in 0..c {
            // ∂/∂z_k = s p_k - u_k - w_t ε p_k (y_k - pt)
            let d = s * p(k) - u(k) - wk(t[i]) * eps * p(k) * (y(k) - pt);
            let got = g[i * c + k] as f64;
            assert!(
                (got - d).abs() < 2e-6 + 1e-4 * d.abs(),
                "{path}: row {i} class {k}: {got} vs {d}"
            );
        }
    }
    assert!(
        (v - want).abs() < 1e-5 * want.abs(),
        "{path}: loss {v} vs {want}"
    );
}

/// The tests of one `simd_*` binary, all on `path`: the fused loss (class and
/// probability targets) and, with the `vision` feature, every vision op that
/// dispatches on the instruction set. Expects the modules `simd_path`,
/// `simd_probs` and (with `vision`) `simd_vision` beside it.
#[macro_export]
macro_rules! simd_tests {
    ($path:literal) => {
        #[test]
        fn loss_matches_f64() {
            simd_path::check_against_f64($path);
        }

        #[test]
        fn loss_probability_targets_match_f64() {
            simd_probs::check_probs_against_f64($path);
        }

        #[cfg(feature = "vision")]
        #[test]
        fn conv2d_matches_f64() {
            if simd_path::pin($path) {
                simd_vision::conv2d_matches_f64($path);
            }
        }

        #[cfg(feature = "vision")]
        #[test]
        fn batch_norm_matches_f64() {
            if simd_path::pin($path) {
                simd_vision::batch_norm_matches_f64($path);
            }
        }

        #[cfg(feature = "vision")]
        #[test]
        fn add_relu_matches_f64() {
            if simd_path::pin($path) {
                simd_vision::add_relu_matches_f64($path);
            }
        }

        #[cfg(feature = "vision")]
        #[test]
        fn pools_match_f64() {
            if simd_path::pin($path) {
                simd_vision::pools_match_f64($path);
            }
        }
    };
}
