//! Which coefficients keep Poly-N decreasing in pt.
//!
//! Per sample, with `f = 1 - pt`, the plain (softmax or sigmoid) Poly-N loss is
//! `L(pt) = -ln pt + Σ_{j=1..N} ε_j (1 - pt)^j`, so
//!
//! ```text
//! dL/dpt = -1/pt - Σ_j j ε_j f^(j-1) = -q(f) / (1 - f),
//! q(f)   = 1 + (1 - f) Σ_j j ε_j f^(j-1)       (a polynomial of degree N)
//! ```
//!
//! `L` decreases in pt on (0, 1] — a more confident right answer never costs
//! more — exactly when `q(f) ≥ 0` for every `f ∈ [0, 1]` (`q(1) = 1`, so a
//! zero of `q` is isolated and `L` still decreases strictly). For N = 1,
//! `q(f) = 1 + ε₁ (1 - f)` is smallest at `f = 0` (pt = 1): the condition is
//! the paper's `ε₁ ≥ -1`. For N > 1 the minimum of `q` on `[0, 1]` is found
//! numerically: `q` on a grid of 4096 cells, then a golden-section search in
//! the two cells around every local minimum of the grid values.
//!
//! The allowed ε form a convex set (for each `f` the condition is linear in
//! ε), so a box of coefficients lies inside it exactly when its 2^N corners
//! do: [`check_epsilon_box`].
//!
//! The focal kinds are not restricted: there the range depends on γ and α,
//! and the paper itself uses negative ε with focal loss.

use super::PolyLossError;

/// Grid cells on `[0, 1]` for the minimum of `q` (N > 1).
const GRID: usize = 4096;
/// How far below zero the minimum of `q` may round (`q` is exactly 0 at the
/// boundary of the allowed set, e.g. ε₁ = -1, and f64 rounding must not
/// refuse such a value).
const TOLERANCE: f64 = 1e-12;

/// Checks that Poly-N with these coefficients decreases in pt on `[0, 1]`.
///
/// N = 1 needs `ε₁ ≥ -1` ([`PolyLossError::EpsilonBelowMinusOne`]); N > 1
/// needs `q(f) = 1 + (1 - f) Σ_j j ε_j f^(j-1) ≥ 0` on `[0, 1]` (see the
/// [module docs](self)), else [`PolyLossError::EpsilonNotDecreasing`] names
/// the coefficients and the pt where the loss rises. Non-finite values are
/// refused. [`PolyLoss`](super::PolyLoss) (plain kinds) and
/// [`PolyConfig`](crate::PolyConfig) call it; so can a search space.
///
/// ```
/// use poly_loss::loss::check_epsilon;
///
/// assert!(check_epsilon(&[2.0]).is_ok());
/// assert!(check_epsilon(&[-1.0]).is_ok());
/// let e = check_epsilon(&[-1.0001]).unwrap_err();
/// assert!(e.to_string().contains("-1.0001"));
/// // N = 2: ε₁ = -1 needs ε₂ ≥ -1/2 (q(f) = f (1 + 2 ε₂ (1 - f))).
/// assert!(check_epsilon(&[-1.0, -0.5]).is_ok());
/// assert!(check_epsilon(&[-1.0, -0.6]).is_err());
/// ```
pub fn check_epsilon(epsilon: &[f64]) -> Result<(), PolyLossError> {
    if epsilon.is_empty() {
        return Err(PolyLossError::NoTerms);
    }
    if let Some(&bad) = epsilon.iter().find(|e| !e.is_finite()) {
        return Err(PolyLossError::InvalidParameter {
            name: "epsilon",
            value: bad as f32,
            why: "coefficients must be finite",
        });
    }
    if let [e1] = epsilon {
        if *e1 < -1.0 {
            return Err(PolyLossError::EpsilonBelowMinusOne { value: *e1 });
        }
        return Ok(());
    }
    let (f, q) = min_q(epsilon);
    if q < -TOLERANCE {
        return Err(PolyLossError::EpsilonNotDecreasing {
            epsilon: epsilon.to_vec(),
            pt: 1.0 - f,
            slope: -q / (1.0 - f).max(f64::MIN_POSITIVE),
        });
    }
    Ok(())
}

/// Checks every corner of the box `lower[j] ≤ ε_j ≤ upper[j]` with
/// [`check_epsilon`]; since the allowed set is convex, the whole box is
/// allowed exactly when the corners are. The error is the first failing
/// corner's.
///
/// ```
/// use poly_loss::loss::check_epsilon_box;
///
/// assert!(check_epsilon_box(&[-1.0], &[10.0]).is_ok());
/// assert!(check_epsilon_box(&[-1.0, -0.5], &[10.0, 10.0]).is_ok());
/// // The corner (-1, -1) makes Poly-2 rise in pt.
/// assert!(check_epsilon_box(&[-1.0, -1.0], &[10.0, 10.0]).is_err());
/// ```
pub fn check_epsilon_box(lower: &[f64], upper: &[f64]) -> Result<(), PolyLossError> {
    if lower.len() != upper.len() {
        return Err(PolyLossError::ShapeMismatch {
            what: "epsilon bounds",
            got: vec![upper.len()],
            expected: vec![lower.len()],
            logits: vec![],
        });
    }
    let n = lower.len();
    if n >= usize::BITS as usize {
        // 2^n corners cannot be enumerated; no PolyLoss has this many terms.
        return Err(PolyLossError::ShapeMismatch {
            what: "epsilon bounds",
            got: vec![n],
            expected: vec![usize::BITS as usize - 1],
            logits: vec![],
        });
    }
    if n == 0 {
        return Err(PolyLossError::NoTerms);
    }
    let mut corner = vec![0.0f64; n];
    for mask in 0..(1usize << n) {
        for (j, c) in corner.iter_mut().enumerate() {
            *c = if mask >> j & 1 == 1 {
                upper[j]
            } else {
                lower[j]
            };
        }
        check_epsilon(&corner)?;
    }
    Ok(())
}

/// `q(f) = 1 + (1 - f) Σ_j j ε_j f^(j-1)` by Horner's rule.
fn q(epsilon: &[f64], f: f64) -> f64 {
    let mut r = 0.0;
    for (j, &e) in epsilon.iter().enumerate().rev() {
        r = r * f + (j + 1) as f64 * e;
    }
    1.0 + (1.0 - f) * r
}

/// `(f, q(f))` at the minimum of `q` on `[0, 1]`.
fn min_q(epsilon: &[f64]) -> (f64, f64) {
    let h = 1.0 / GRID as f64;
    let vals: Vec<f64> = (0..=GRID).map(|i| q(epsilon, i as f64 * h)).collect();
    let mut best = (0.0, vals[0]);
    for i in 0..=GRID {
        let left = if i > 0 { vals[i - 1] } else { f64::INFINITY };
        let right = if i < GRID { vals[i + 1] } else { f64::INFINITY };
        if vals[i] > left || vals[i] > right {
            continue;
        }
        let lo = (i.saturating_sub(1)) as f64 * h;
        let hi = ((i + 1).min(GRID)) as f64 * h;
        for cand in [(i as f64 * h, vals[i]), golden_min(epsilon, lo, hi)] {
            if cand.1 < best.1 {
                best = cand;
            }
        }
    }
    best
}

/// Golden-section search for the minimum of `q` on `[lo, hi]`.
fn golden_min(epsilon: &[f64], mut lo: f64, mut hi: f64) -> (f64, f64) {
    const INV_PHI: f64 = 0.618_033_988_749_894_9;
    let mut a = hi - INV_PHI * (hi - lo);
    let mut b = lo + INV_PHI * (hi - lo);
    let (mut qa, mut qb) = (q(epsilon, a), q(epsilon, b));
    for _ in 0..60 {
        if qa <= qb {
            hi = b;
            b = a;
            qb = qa;
            a = hi - INV_PHI * (hi - lo);
            qa = q(epsilon, a);
        } else {
            lo = a;
            a = b;
            qa = qb;
            b = lo + INV_PHI * (hi - lo);
            qb = q(epsilon, b);
        }
    }
    if qa <= qb {
        (a, qa)
    } else {
        (b, qb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_is_the_scaled_derivative() {
        // dL/dpt = -q(f)/(1-f), checked by central differences of L in f64.
        let eps = [0.7, -1.3, 0.4];
        let loss = |pt: f64| {
            -pt.ln()
                + eps
                    .iter()
                    .enumerate()
                    .map(|(j, e)| e * (1.0 - pt).powi(j as i32 + 1))
                    .sum::<f64>()
        };
        for pt in [0.05, 0.3, 0.5, 0.77, 0.99] {
            let h = 1e-6;
            let fd = (loss(pt + h) - loss(pt - h)) / (2.0 * h);
            let f = 1.0 - pt;
            let want = -q(&eps, f) / (1.0 - f);
            assert!(
                (fd - want).abs() < 1e-6 * (1.0 + want.abs()),
                "{fd} vs {want}"
            );
        }
    }
}
