//! fastai's one-cycle schedule and discriminative learning rates.
//!
//! `fit_one_cycle(n, lr_max, div, div_final, pct_start, moms)` sets, before
//! training step `i` of `total` (position `pos = i / total`):
//!
//! ```text
//! lr(pos)  = cos_anneal(lr_max/div, lr_max, pos/pct)                  pos < pct
//!          = cos_anneal(lr_max, lr_max/div_final, (pos-pct)/(1-pct))  otherwise
//! mom(pos) = the same with (moms[0], moms[1]) and (moms[1], moms[2])
//! cos_anneal(a, b, t) = a + (1 + cos(π (1 - t))) (b - a) / 2
//! ```
//!
//! `fine_tune(U, base_lr, freeze_epochs = F, lr_mult)` runs one cycle of F
//! epochs with the body frozen, `fit_one_cycle(F, slice(base_lr),
//! pct_start = 0.99)`, then one of U epochs unfrozen,
//! `fit_one_cycle(U, slice(base_lr/2/lr_mult, base_lr/2), pct_start, div = 5)`.
//! fastai's `Optimizer.set_hyper` turns a `slice` into one peak rate per
//! layer group (n groups, the head last):
//!
//! ```text
//! slice(hi)     → [hi/10, …, hi/10, hi]                       (frozen_group_lrs)
//! slice(lo, hi) → lo · (hi/lo)^(g/(n−1)),  g = 0 … n−1       (even_mults, unfrozen_group_lrs)
//! ```
//!
//! so with fastai's 3-group ResNet split and `lr_mult = 100` the unfrozen
//! peaks are `base_lr/2 · [1/100, 1/10, 1]`. While frozen only the head and
//! (with `train_bn`) the body's batch-norm parameters train, the latter at
//! `base_lr/10`.
//!
//! ```
//! use polytune::train::schedule::{even_mults, OneCycle};
//! let c = OneCycle { lr_max: 1e-2, div: 25.0, div_final: 1e5, pct_start: 0.25, moms: [0.95, 0.85, 0.95], total_steps: 100 };
//! assert!((c.lr(0) - 4e-4).abs() < 1e-12);          // lr_max / div
//! assert!((c.lr(25) - 1e-2).abs() < 1e-12);         // the peak at pct_start
//! assert!((c.momentum(25) - 0.85).abs() < 1e-12);   // momentum is lowest there
//! let lrs = even_mults(1e-5, 1e-3, 3);
//! assert!((lrs[1] - 1e-4).abs() < 1e-15);
//! ```

use std::f64::consts::PI;

/// fastai's `SchedCos(start, end)` at `t ∈ [0, 1]`.
pub fn cos_anneal(start: f64, end: f64, t: f64) -> f64 {
    start + (1.0 + (PI * (1.0 - t)).cos()) * (end - start) / 2.0
}

/// One cycle of learning rate and momentum over `total_steps` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycle {
    /// The peak learning rate.
    pub lr_max: f64,
    /// The cycle starts at `lr_max / div`.
    pub div: f64,
    /// The cycle ends at `lr_max / div_final`.
    pub div_final: f64,
    /// Fraction of the steps spent warming up, in [0, 1).
    pub pct_start: f64,
    /// Momentum (Adam β₁) at the start, the peak and the end.
    pub moms: [f64; 3],
    /// Steps in the cycle (epochs × batches per epoch).
    pub total_steps: usize,
}

impl OneCycle {
    /// The position of `step` in the cycle, `step / total_steps`.
    pub fn position(&self, step: usize) -> f64 {
        if self.total_steps == 0 {
            0.0
        } else {
            step as f64 / self.total_steps as f64
        }
    }

    /// Which half of the cycle `pos` is in and where within it (fastai's
    /// `combine_scheds`: the second half starts at `pos >= pct_start`).
    fn phase(&self, pos: f64) -> (bool, f64) {
        let pct = self.pct_start;
        if pos < pct {
            (true, pos / pct)
        } else {
            (false, (pos - pct) / (1.0 - pct))
        }
    }

    /// Learning rate before step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        self.lr_scaled(step, 1.0)
    }

    /// Learning rate of a group whose peak is `scale · lr_max`.
    pub fn lr_scaled(&self, step: usize, scale: f64) -> f64 {
        let peak = self.lr_max * scale;
        match self.phase(self.position(step)) {
            (true, t) => cos_anneal(peak / self.div, peak, t),
            (false, t) => cos_anneal(peak, peak / self.div_final, t),
        }
    }

    /// Momentum (Adam β₁) before step `step`.
    pub fn momentum(&self, step: usize) -> f64 {
        let [a, b, c] = self.moms;
        match self.phase(self.position(step)) {
            (true, t) => cos_anneal(a, b, t),
            (false, t) => cos_anneal(b, c, t),
        }
    }
}

/// fastai's `even_mults(start, stop, n)`: `n` rates from `start` to `stop`
/// in geometric progression (`[stop]` for `n = 1`).
pub fn even_mults(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![stop],
        _ => {
            let step = (stop / start).powf(1.0 / (n - 1) as f64);
            (0..n).map(|i| start * step.powi(i as i32)).collect()
        }
    }
}

/// Peak learning rates of `groups` layer groups (the head last) in the
/// frozen phase: fastai's `slice(base_lr)`, i.e. `base_lr / 10` for every
/// body group and `base_lr` for the head.
pub fn frozen_group_lrs(base_lr: f64, groups: usize) -> Vec<f64> {
    let mut v = vec![base_lr / 10.0; groups.saturating_sub(1)];
    if groups > 0 {
        v.push(base_lr);
    }
    v
}

/// Peak learning rates of `groups` layer groups (the head last) in the
/// unfrozen phase: `slice(base_lr / 2 / lr_mult, base_lr / 2)`.
pub fn unfrozen_group_lrs(base_lr: f64, lr_mult: f64, groups: usize) -> Vec<f64> {
    let hi = base_lr / 2.0;
    even_mults(hi / lr_mult, hi, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_midpoints() {
        let c = OneCycle {
            lr_max: 1.0,
            div: 4.0,
            div_final: 100.0,
            pct_start: 0.5,
            moms: [0.9, 0.8, 0.9],
            total_steps: 8,
        };
        // Warm-up: steps 0..4 at t = 0, 1/4, 1/2, 3/4 of cos_anneal(0.25, 1).
        let warm = |t: f64| 0.25 + (1.0 + (PI * (1.0 - t)).cos()) * 0.75 / 2.0;
        for s in 0..4 {
            assert!((c.lr(s) - warm(s as f64 / 4.0)).abs() < 1e-12);
        }
        assert!((c.lr(2) - 0.625).abs() < 1e-12); // halfway: the mean of 0.25 and 1
        assert!((c.lr(4) - 1.0).abs() < 1e-12);
        assert!((c.lr(6) - (1.0 + 0.01) / 2.0).abs() < 1e-12);
        assert!((c.momentum(0) - 0.9).abs() < 1e-12);
        assert!((c.momentum(4) - 0.8).abs() < 1e-12);
        assert!((c.lr_scaled(4, 0.1) - 0.1).abs() < 1e-12);
    }
}
