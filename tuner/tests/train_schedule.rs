//! The one-cycle schedule and the discriminative rates against values worked
//! out by hand from fastai's definitions:
//!
//! ```text
//! SchedCos(a, b)(t) = a + (1 + cos(π (1 − t))) (b − a) / 2
//! combine_scheds([pct, 1 − pct], [SchedCos(lr/div, lr), SchedCos(lr, lr/div_final)])
//! position before step i of n = i / n; moms (0.95, 0.85, 0.95)
//! even_mults(a, b, n) = a · (b/a)^(i/(n−1))
//! ```

use polytune::train::schedule::{cos_anneal, even_mults, unfrozen_group_lrs, OneCycle};

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

/// fastai's `fit_one_cycle` defaults: lr_max 1e-3, div 25, div_final 1e5,
/// pct_start 0.25, over 100 steps.
#[test]
fn fit_one_cycle_defaults_match_hand_values() {
    let c = OneCycle {
        lr_max: 1e-3,
        div: 25.0,
        div_final: 1e5,
        pct_start: 0.25,
        moms: [0.95, 0.85, 0.95],
        total_steps: 100,
    };
    // (step, lr, momentum). Step 12: t = 0.12 / 0.25 = 0.48, cos(0.52 π) =
    // −0.0627905195, lr = 4e-5 + 0.9372094805 · 9.6e-4 / 2; β₁ = 0.95 −
    // 0.9372094805 · 0.1 / 2. Step 50: t = 1/3, cos(2π/3) = −1/2, lr = 1e-3 −
    // (1e-3 − 1e-8) / 4. Step 99: t = 0.74/0.75, almost the end.
    let want = [
        (0, 4e-5, 0.95),
        (12, 4.898605506259297e-4, 0.9031395259764656),
        (25, 1e-3, 0.85),
        (26, 9.995614194352788e-4, 0.850043858495057),
        (50, 7.500025e-4, 0.875),
        (99, 4.4858056472119566e-7, 0.9499561415049429),
    ];
    for (step, lr, mom) in want {
        assert!(
            close(c.lr(step), lr, 1e-12),
            "lr({step}) = {} vs {lr}",
            c.lr(step)
        );
        assert!(
            close(c.momentum(step), mom, 1e-12),
            "mom({step}) = {} vs {mom}",
            c.momentum(step)
        );
    }
    // A group whose peak is a tenth of lr_max follows the same curve, scaled.
    for step in [0, 12, 25, 50, 99] {
        assert!(close(c.lr_scaled(step, 0.1), 0.1 * c.lr(step), 1e-12));
    }
}

/// The frozen phase of the embedded default: one epoch of 22 steps,
/// base_lr 0.04, div 25, pct_start 0.99 (the peak is never reached).
#[test]
fn frozen_phase_warms_up_almost_to_the_end() {
    let c = OneCycle {
        lr_max: 0.04,
        div: 25.0,
        div_final: 1e5,
        pct_start: 0.99,
        moms: [0.95, 0.85, 0.95],
        total_steps: 22,
    };
    let want = [
        (0, 0.0016, 0.95),
        (10, 0.01834195575599817, 0.9064011568854214),
        (21, 0.03987860906185604, 0.85031612223475),
    ];
    for (step, lr, mom) in want {
        assert!(close(c.lr(step), lr, 1e-12), "lr({step}) = {}", c.lr(step));
        assert!(close(c.momentum(step), mom, 1e-12), "mom({step})");
    }
    // Monotone warm-up.
    assert!((1..22).all(|s| c.lr(s) > c.lr(s - 1)));
}

#[test]
fn discriminative_rates_are_fastai_slices() {
    // slice(1e-5, 1e-3) over six groups: each 100^(1/5) = 2.5119× the
    // previous (fastai's even_mults; ResNets have 3 groups, see
    // train_recipe.rs for those against fastai itself).
    let lrs = unfrozen_group_lrs(2e-3, 100.0, 6);
    let want = [
        1e-5,
        2.5118864315095805e-5,
        6.309573444801933e-5,
        1.5848931924611136e-4,
        3.981071705534973e-4,
        1e-3,
    ];
    assert_eq!(lrs.len(), 6);
    for (a, b) in lrs.iter().zip(want) {
        assert!(close(*a, b, 1e-12), "{a} vs {b}");
    }
    assert_eq!(even_mults(1.0, 8.0, 4), vec![1.0, 2.0, 4.0, 8.0]);
    assert_eq!(even_mults(3.0, 5.0, 1), vec![5.0]);
    assert!(even_mults(1.0, 2.0, 0).is_empty());
}

#[test]
fn cos_anneal_endpoints_and_midpoint() {
    assert_eq!(cos_anneal(2.0, 6.0, 0.0), 2.0);
    assert!(close(cos_anneal(2.0, 6.0, 1.0), 6.0, 1e-15));
    assert!(close(cos_anneal(2.0, 6.0, 0.5), 4.0, 1e-15));
    // pct_start = 0: no warm-up, the cycle starts at the peak.
    let c = OneCycle {
        lr_max: 1.0,
        div: 10.0,
        div_final: 100.0,
        pct_start: 0.0,
        moms: [0.9, 0.8, 0.9],
        total_steps: 4,
    };
    assert_eq!(c.lr(0), 1.0);
    assert_eq!(c.momentum(0), 0.8);
}
