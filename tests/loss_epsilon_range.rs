//! The ε range: Poly-N must decrease in pt on [0, 1] (ε₁ ≥ -1 for N = 1),
//! checked against independent references: the closed form of the N = 2
//! condition, and a brute-force scan of the loss itself for N = 3.

use dfdx::prelude::*;
use poly_loss::loss::{check_epsilon, check_epsilon_box};
use poly_loss::prelude::*;

#[test]
fn poly1_needs_epsilon_at_least_minus_one() {
    let dev = Cpu::default();
    let x: Tensor<Rank2<2, 3>, f32, _> = dev.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]);
    let e = try_poly_loss::<1, _>(x.clone(), &[0, 2][..], [-1.0001]).unwrap_err();
    assert_eq!(
        e,
        PolyLossError::EpsilonBelowMinusOne {
            value: -1.0001f32 as f64
        }
    );
    assert!(e.to_string().contains("-1.0001"), "{e}");
    assert!(e.to_string().contains(">= -1"), "{e}");
    // ε₁ = -1 is the boundary and accepted, on every plain entry point.
    assert!(try_poly_loss::<1, _>(x.clone(), &[0, 2][..], [-1.0]).is_ok());
    assert!(try_poly_sigmoid_loss::<1, _>(x.clone(), &[0, 2][..], [-1.0]).is_ok());
    let e = try_poly_sigmoid_loss::<1, _>(x.clone(), &[0, 2][..], [-1.5]).unwrap_err();
    assert!(e.to_string().contains("-1.5"), "{e}");
    assert!(PolyLoss::new([-1.0001]).validate().is_err());
    assert!(PolyLoss::new([-1.0]).validate().is_ok());
    // The plain form panics with the message.
    let r = std::panic::catch_unwind(|| poly_loss::<1, _>(x.clone(), &[0, 2][..], [-3.0]));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("epsilon[0] = -3"), "{msg}");
    // The focal kinds are not restricted (the paper uses negative ε there).
    assert!(try_poly_focal_loss::<1, _>(x.clone(), &[0, 2][..], [-2.0], 2.0, None).is_ok());
    assert!(try_poly_sigmoid_focal_loss::<1, _>(x, &[0, 2][..], [-2.0], 2.0, None).is_ok());
}

#[test]
fn check_epsilon_refuses_non_finite_and_empty() {
    assert_eq!(check_epsilon(&[]).unwrap_err(), PolyLossError::NoTerms);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let e = check_epsilon(&[1.0, bad]).unwrap_err();
        assert!(
            matches!(
                e,
                PolyLossError::InvalidParameter {
                    name: "epsilon",
                    ..
                }
            ),
            "{e}"
        );
    }
}

/// The N = 2 condition in closed form: q(f) = 1 + ε₁ + (2ε₂ - ε₁) f - 2ε₂ f²
/// must be ≥ 0 on [0, 1]; a quadratic's minimum there is at an end or at
/// its vertex.
fn poly2_decreasing(e1: f64, e2: f64) -> bool {
    let q = |f: f64| 1.0 + e1 + (2.0 * e2 - e1) * f - 2.0 * e2 * f * f;
    let mut m = q(0.0).min(q(1.0));
    if e2 < 0.0 {
        let v = (2.0 * e2 - e1) / (4.0 * e2);
        if (0.0..=1.0).contains(&v) {
            m = m.min(q(v));
        }
    }
    m >= -1e-12
}

#[test]
fn poly2_matches_the_closed_form() {
    let mut refused = 0;
    let mut accepted = 0;
    for i in 0..=60 {
        for k in 0..=60 {
            let e1 = -3.0 + 0.1 * i as f64;
            let e2 = -3.0 + 0.1 * k as f64;
            // Skip points within rounding of the boundary.
            let near = [-1e-6, 1e-6]
                .iter()
                .any(|d| poly2_decreasing(e1 + d, e2) != poly2_decreasing(e1, e2));
            if near {
                continue;
            }
            let want = poly2_decreasing(e1, e2);
            let got = check_epsilon(&[e1, e2]);
            assert_eq!(got.is_ok(), want, "ε = [{e1}, {e2}]: {got:?}");
            if want {
                accepted += 1;
            } else {
                refused += 1;
                let e = got.unwrap_err();
                assert!(
                    matches!(&e, PolyLossError::EpsilonNotDecreasing { epsilon, slope, .. }
                        if epsilon == &vec![e1, e2] && *slope > 0.0),
                    "{e}"
                );
            }
        }
    }
    assert!(accepted > 100 && refused > 100, "{accepted} / {refused}");
    // Named points: ε₁ = -1 needs ε₂ ≥ -1/2 (q = f (1 + 2ε₂(1 - f))).
    assert!(check_epsilon(&[-1.0, -0.5]).is_ok());
    let e = check_epsilon(&[-1.0, -0.6]).unwrap_err();
    assert!(e.to_string().contains("[-1.0, -0.6]"), "{e}");
    // An interior minimum: ε = [0, -2] gives q(f) = 1 - 4f(1 - f), q(1/2) = 0;
    // slightly below is refused at pt ≈ 1/2.
    assert!(check_epsilon(&[0.0, -2.0]).is_ok());
    match check_epsilon(&[0.0, -2.01]).unwrap_err() {
        PolyLossError::EpsilonNotDecreasing { pt, .. } => {
            assert!((pt - 0.5).abs() < 1e-3, "pt {pt}")
        }
        e => panic!("{e}"),
    }
}

/// Brute force on the loss itself: L(pt) = -ln pt + Σ ε_j (1-pt)^j on a fine
/// grid of pt; rising anywhere by more than rounding means "not decreasing".
fn rises_somewhere(eps: &[f64]) -> bool {
    let l = |pt: f64| {
        -pt.ln()
            + eps
                .iter()
                .enumerate()
                .map(|(j, e)| e * (1.0 - pt).powi(j as i32 + 1))
                .sum::<f64>()
    };
    let n = 20_000;
    let mut prev = l(1e-9);
    for i in 1..=n {
        let cur = l(i as f64 / n as f64);
        if cur > prev + 1e-9 {
            return true;
        }
        prev = cur;
    }
    false
}

#[test]
fn poly3_matches_a_scan_of_the_loss() {
    let (mut ok, mut bad) = (0, 0);
    for e1 in [-1.0, -0.5, 0.0, 2.0] {
        for e2 in [-2.0, -0.5, 0.0, 1.0] {
            for e3 in [-3.0, -1.0, 0.0, 1.5, 4.0] {
                let eps = [e1, e2, e3];
                let got = check_epsilon(&eps).is_ok();
                assert_eq!(got, !rises_somewhere(&eps), "ε = {eps:?}");
                if got {
                    ok += 1
                } else {
                    bad += 1
                }
            }
        }
    }
    assert!(ok > 10 && bad > 10, "{ok} / {bad}");
}

#[test]
fn boxes_are_checked_at_their_corners() {
    assert!(check_epsilon_box(&[-1.0], &[10.0]).is_ok());
    let e = check_epsilon_box(&[-1.5], &[10.0]).unwrap_err();
    assert_eq!(e, PolyLossError::EpsilonBelowMinusOne { value: -1.5 });
    assert!(check_epsilon_box(&[-1.0, -0.5], &[10.0, 10.0]).is_ok());
    // Only the corner (-1, -1) fails; its error names it.
    let e = check_epsilon_box(&[-1.0, -1.0], &[10.0, 10.0]).unwrap_err();
    assert!(e.to_string().contains("[-1.0, -1.0]"), "{e}");
    // The allowed set is convex: a box whose corners pass has no failing
    // interior point (sampled).
    let (lo, hi) = ([-1.0, -0.5, -0.2], [3.0, 2.0, 1.0]);
    if check_epsilon_box(&lo, &hi).is_ok() {
        for i in 0..=8 {
            for k in 0..=8 {
                for m in 0..=8 {
                    let t = [i as f64 / 8.0, k as f64 / 8.0, m as f64 / 8.0];
                    let p: Vec<f64> = (0..3).map(|j| lo[j] + t[j] * (hi[j] - lo[j])).collect();
                    assert!(check_epsilon(&p).is_ok(), "{p:?}");
                }
            }
        }
    } else {
        panic!("the box {lo:?}..{hi:?} should pass");
    }
    assert!(check_epsilon_box(&[0.0], &[1.0, 2.0]).is_err());
}
