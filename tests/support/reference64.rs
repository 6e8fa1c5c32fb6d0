//! Naive float64 references of the PolyLoss family, written out from the
//! definitions (paper + PyTorch's `cross_entropy` rules), loss and analytic
//! gradient, for the tests that compare the fused op's SIMD, threaded and
//! extreme-input paths. Numerically careful where the definitions allow
//! (log-sum-exp with the row maximum, `1 - pt` via `expm1`, BCE via
//! `ln_1p`), so ±1e4 logits give the exact limits. `f64_references_match_finite_differences`
//! (tests/loss_properties.rs) checks the gradients against central differences.

#![allow(dead_code)]

/// What the reference computes: ε, optional focal (γ, α), label smoothing,
/// optional class weights. Reduction: the mean (PyTorch's denominator).
#[derive(Clone, Copy)]
pub struct Ref<'a> {
    pub eps: &'a [f64],
    pub focal: Option<(f64, Option<f64>)>,
    pub smoothing: f64,
    pub weight: Option<&'a [f64]>,
}

impl<'a> Ref<'a> {
    pub fn plain(eps: &'a [f64]) -> Self {
        Self {
            eps,
            focal: None,
            smoothing: 0.0,
            weight: None,
        }
    }
    pub fn focal(eps: &'a [f64], gamma: f64, alpha: Option<f64>) -> Self {
        Self {
            focal: Some((gamma, alpha)),
            ..Self::plain(eps)
        }
    }
    fn w(&self, k: usize) -> f64 {
        self.weight.map_or(1.0, |w| w[k])
    }
}

/// Class indices or probabilities (row-major B × C).
#[derive(Clone, Copy)]
pub enum Tg<'a> {
    Idx(&'a [usize]),
    Prob(&'a [f32]),
}

/// `(A, dA/dpt, G, dG/dpt)` at `f = 1 - pt`: focal factor `aw·f^γ` (1 when
/// plain) and polynomial `Σ ε_j f^(γ+j)`.
pub fn terms(r: &Ref, aw: f64, f: f64) -> (f64, f64, f64, f64) {
    let g0 = r.focal.map_or(0.0, |fc| fc.0);
    let (a, da) = match r.focal {
        Some((gamma, _)) if gamma > 0.0 => (aw * f.powf(gamma), -aw * gamma * f.powf(gamma - 1.0)),
        Some(_) => (aw, 0.0),
        None => (1.0, 0.0),
    };
    let (mut g, mut dg) = (0.0, 0.0);
    for (j, &e) in r.eps.iter().enumerate() {
        let p = g0 + (j + 1) as f64;
        g += e * f.powf(p);
        dg -= e * p * f.powf(p - 1.0);
    }
    (a, da, g, dg)
}

/// Softmax Poly-N, mean: `Σ_i [A·CE_i + w_row·G] / denom` with
/// `CE = -Σ_k w_k y'_k log p_k`, `pt = Σ_k y'_k p_k`, y' the smoothed target;
/// index targets: `w_row = w_t`, denom `Σ_i w_{t_i}`; probabilities:
/// `w_row = Σ_k w_k y'_k`, denom B. Gradient:
/// `A (s p_k - u_k) + (A'·CE + w_row·G') p_k (y'_k - pt)`, `u = w y'`, `s = Σ u`.
pub fn softmax(z: &[f32], b: usize, c: usize, tg: Tg, r: Ref) -> (f64, Vec<f64>) {
    let al = r.smoothing;
    let mut rows = Vec::with_capacity(b);
    let mut denom = 0.0;
    for i in 0..b {
        let row: Vec<f64> = z[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let logp: Vec<f64> = row.iter().map(|v| v - lse).collect();
        let (y, w_row, f) = match tg {
            Tg::Idx(t) => {
                let y: Vec<f64> = (0..c)
                    .map(|k| al / c as f64 + if k == t[i] { 1.0 - al } else { 0.0 })
                    .collect();
                // 1 - pt without cancellation: (1-α)(1 - p_t) + α(1 - mean p).
                let f = (1.0 - al) * -logp[t[i]].exp_m1()
                    + al * (1.0 - logp.iter().map(|l| l.exp()).sum::<f64>() / c as f64);
                denom += r.w(t[i]);
                (y, r.w(t[i]), f)
            }
            Tg::Prob(p) => {
                let y: Vec<f64> = (0..c)
                    .map(|k| (1.0 - al) * p[i * c + k] as f64 + al / c as f64)
                    .collect();
                let w_row: f64 = (0..c).map(|k| r.w(k) * y[k]).sum();
                let pt: f64 = (0..c).map(|k| y[k] * logp[k].exp()).sum();
                denom += 1.0;
                (y, w_row, 1.0 - pt)
            }
        };
        let pt = 1.0 - f;
        let ce: f64 = -(0..c).map(|k| r.w(k) * y[k] * logp[k]).sum::<f64>();
        let s: f64 = (0..c).map(|k| r.w(k) * y[k]).sum();
        let aw = r.focal.and_then(|fc| fc.1).unwrap_or(1.0);
        let (a, da, g, dg) = terms(&r, aw, f);
        let bc = da * ce + w_row * dg;
        let grad: Vec<f64> = (0..c)
            .map(|k| {
                let p = logp[k].exp();
                a * (s * p - r.w(k) * y[k]) + bc * p * (y[k] - pt)
            })
            .collect();
        rows.push((a * ce + w_row * g, grad));
    }
    let loss = rows.iter().map(|r| r.0).sum::<f64>() / denom;
    let grad = rows
        .into_iter()
        .flat_map(|r| r.1)
        .map(|g| g / denom)
        .collect();
    (loss, grad)
}

/// Sigmoid Poly-N, mean over all B·C logits: per logit
/// `w_k [A·BCE + G]`, `y' = (1-α_s) y + α_s/2`, `pt = y'σ + (1-y')(1-σ)`,
/// `A = α_t f^γ`, `α_t = α y' + (1-α)(1-y')`. Index targets mean one-hot rows.
pub fn sigmoid(z: &[f32], b: usize, c: usize, tg: Tg, r: Ref) -> (f64, Vec<f64>) {
    let n = (b * c) as f64;
    let mut loss = 0.0;
    let mut grad = vec![0.0; b * c];
    for (idx, &zf) in z.iter().enumerate().take(b * c) {
        let (i, k) = (idx / c, idx % c);
        let y0 = match tg {
            Tg::Idx(t) => {
                if t[i] == k {
                    1.0
                } else {
                    0.0
                }
            }
            Tg::Prob(p) => p[idx] as f64,
        };
        let y = (1.0 - r.smoothing) * y0 + 0.5 * r.smoothing;
        let zz = zf as f64;
        let sig = 1.0 / (1.0 + (-zz).exp());
        let one_minus = 1.0 / (1.0 + zz.exp());
        let bce = zz.max(0.0) + (-zz.abs()).exp().ln_1p() - zz * y;
        let f = y * one_minus + (1.0 - y) * sig;
        let aw = match r.focal.and_then(|fc| fc.1) {
            Some(al) => al * y + (1.0 - al) * (1.0 - y),
            None => 1.0,
        };
        let (a, da, g, dg) = terms(&r, aw, f);
        let w = r.w(k);
        loss += w * (a * bce + g) / n;
        let dpt = (2.0 * y - 1.0) * sig * one_minus;
        grad[idx] = w * (a * (sig - y) + (da * bce + dg) * dpt) / n;
    }
    (loss, grad)
}

/// `|got - want| ≤ abs + rel·|want|`, naming `what` on failure.
pub fn assert_close(what: &str, got: f32, want: f64, rel: f64, abs: f64) {
    assert!(
        (got as f64 - want).abs() <= abs + rel * want.abs(),
        "{what}: {got} vs f64 reference {want}"
    );
}

/// Element-wise [`assert_close`] after checking the lengths.
pub fn assert_all_close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_close(&format!("{what}[{k}]"), g, w, rel, abs);
    }
}
