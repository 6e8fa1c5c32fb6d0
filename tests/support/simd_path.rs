//! Shared body of the `loss_simd_*` tests: each test binary pins one
//! instruction-set path (POLY_LOSS_SIMD is read once per process) and checks
//! the fused op against a naive f64 reference on a multi-threaded shape.

use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

pub fn check_against_f64(path: &str) {
    std::env::set_var("POLY_LOSS_SIMD", path);
    let (b, c) = (40, 1003); // > 32k logits: the parallel path; 1003 leaves tails
    let mut rng = StdRng::seed_from_u64(42);
    let z: Vec<f32> = (0..b * c).map(|_| rng.gen_range(-20.0..20.0)).collect();
    let t: Vec<usize> = (0..b).map(|_| rng.gen_range(0..c)).collect();
    let w: Vec<f32> = (0..c).map(|k| 0.5 + (k % 4) as f32 * 0.25).collect();
    let (al, eps) = (0.1f64, 2.0f64);
    let active = poly_loss::loss::cpu_simd_path();
    if path != "best" {
        #[cfg(target_arch = "x86_64")]
        let detected_avx2 =
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let detected_avx2 = false;
        if path == "scalar" || detected_avx2 {
            assert_eq!(active, path, "POLY_LOSS_SIMD={path} was not honoured");
        }
    }
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
