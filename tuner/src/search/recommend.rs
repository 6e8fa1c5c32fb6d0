//! The surrogate model over a study's trials and the recommendation it
//! makes.
//!
//! Every finished trial is an observation `score = 1 − cost` (validation
//! accuracy, less the 1e-6 loss tie-breaker) of ε on one seed. The model is
//! the GP of [`super::gp`]: `score = m + f(ε) + b_seed + e`, fitted by
//! marginal likelihood, with ε mapped onto the unit box. The seed effect
//! `b_seed` is what pairing buys: points seen on the same seeds are compared
//! without the seeds' shared luck.
//!
//! The recommendation is the evaluated ε with the highest posterior mean of
//! `m + f(ε)` — never the single best observation. Only evaluated points are
//! candidates, so the answer always has at least one real fine-tune behind
//! it.

use super::gp::{FitOptions, Gp, Observation, Prediction};
use super::space::Bounds;
use super::{is_finished_cost, EvaluatedPoint};

/// A GP fitted to finished trials, in ε coordinates.
pub struct Surrogate {
    gp: Gp,
    bounds: Bounds,
}

impl std::fmt::Debug for Surrogate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surrogate")
            .field("observations", &self.gp.len())
            .field("hyper", self.gp.hyper())
            .finish()
    }
}

impl Surrogate {
    /// Fits the model to `(ε, seed slot, score)` observations; `None` when
    /// there are fewer than two or the fit fails (the caller falls back to
    /// means over seeds).
    pub fn fit(obs: &[(Vec<f64>, usize, f64)], bounds: &Bounds, seed: u64) -> Option<Self> {
        if obs.len() < 2 {
            return None;
        }
        let data: Vec<Observation> = obs
            .iter()
            .map(|(e, slot, y)| Observation {
                x: to_unit(bounds, e),
                group: *slot as u64,
                y: *y,
            })
            .collect();
        let opts = FitOptions {
            seed,
            ..FitOptions::default()
        };
        match Gp::fit(&data, &opts) {
            Ok(gp) => Some(Self {
                gp,
                bounds: bounds.clone(),
            }),
            Err(e) => {
                tracing::warn!("the surrogate model could not be fitted: {e}");
                None
            }
        }
    }

    /// Posterior of the mean score `m + f(ε)` (no seed effect, no noise).
    pub fn predict(&self, epsilon: &[f64]) -> Prediction {
        self.gp.predict(&to_unit(&self.bounds, epsilon))
    }

    /// The underlying GP (unit-box coordinates).
    pub fn gp(&self) -> &Gp {
        &self.gp
    }

    /// The box.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }
}

/// ε → the unit box.
pub(crate) fn to_unit(bounds: &Bounds, e: &[f64]) -> Vec<f64> {
    e.iter()
        .zip(bounds.lower.iter().zip(&bounds.upper))
        .map(|(&x, (&lo, &hi))| ((x - lo) / (hi - lo)).clamp(0.0, 1.0))
        .collect()
}

/// The unit box → ε (inside the box).
pub(crate) fn from_unit(bounds: &Bounds, u: &[f64]) -> Vec<f64> {
    let e: Vec<f64> = u
        .iter()
        .zip(bounds.lower.iter().zip(&bounds.upper))
        .map(|(&x, (&lo, &hi))| lo + (hi - lo) * x.clamp(0.0, 1.0))
        .collect();
    bounds.clamp(&e)
}

/// One distinct ε among the trials, with every seed it was run on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PointGroup {
    /// ε (as first evaluated).
    pub epsilon: Vec<f64>,
    /// Seed slots tried (finished or failed), in trial order.
    pub slots: Vec<usize>,
    /// Scores of the finished ones, in trial order.
    pub scores: Vec<f64>,
    /// Index of the first trial of this ε.
    pub first_index: u64,
}

impl PointGroup {
    /// Mean score over finished seeds (NaN if none).
    pub fn mean(&self) -> f64 {
        self.scores.iter().sum::<f64>() / self.scores.len() as f64
    }

    /// The smallest seed slot not tried yet.
    pub fn next_slot(&self) -> usize {
        (0..).find(|s| !self.slots.contains(s)).expect("finite")
    }
}

/// Groups `(ε, slot, cost, index)` trials by ε (the box's same-point rule).
pub(crate) fn group_points<'a>(
    bounds: &Bounds,
    trials: impl IntoIterator<Item = (&'a [f64], usize, f64, u64)>,
) -> Vec<PointGroup> {
    let mut groups: Vec<PointGroup> = Vec::new();
    for (eps, slot, cost, index) in trials {
        let g = match groups
            .iter_mut()
            .position(|g| bounds.same_point(&g.epsilon, eps))
        {
            Some(k) => &mut groups[k],
            None => {
                groups.push(PointGroup {
                    epsilon: eps.to_vec(),
                    slots: Vec::new(),
                    scores: Vec::new(),
                    first_index: index,
                });
                groups.last_mut().expect("just pushed")
            }
        };
        g.slots.push(slot);
        if is_finished_cost(cost) {
            g.scores.push(1.0 - cost);
        }
    }
    groups
}

/// What the study recommends after the search.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The recommended ε (an evaluated point).
    pub epsilon: Vec<f64>,
    /// The model's posterior mean score there (≈ validation accuracy); the
    /// mean over seeds when no model could be fitted.
    pub posterior_mean: f64,
    /// The model's posterior standard deviation there (NaN without a model).
    pub posterior_sd: f64,
    /// The mean score over the seeds it was run on.
    pub mean_over_seeds: f64,
    /// Finished seeds behind it.
    pub seeds: usize,
    /// True when the GP decided; false when it fell back to means over seeds.
    pub from_model: bool,
}

/// The evaluated ε with the best posterior mean of a GP fitted to all
/// finished `trials` (ties: the earliest). Falls back to the best mean over
/// seeds when the model cannot be fitted. `None` when no trial finished.
pub fn recommend(trials: &[EvaluatedPoint], bounds: &Bounds, seed: u64) -> Option<Recommendation> {
    let groups = group_points(
        bounds,
        trials
            .iter()
            .map(|t| (t.epsilon.as_slice(), t.slot, t.cost, t.index)),
    );
    let obs: Vec<(Vec<f64>, usize, f64)> = trials
        .iter()
        .filter(|t| is_finished_cost(t.cost))
        .map(|t| (t.epsilon.clone(), t.slot, 1.0 - t.cost))
        .collect();
    let model = Surrogate::fit(&obs, bounds, seed);
    let mut best: Option<Recommendation> = None;
    for g in groups.iter().filter(|g| !g.scores.is_empty()) {
        let (mean, sd) = match &model {
            Some(m) => {
                let p = m.predict(&g.epsilon);
                (p.mean, p.var.max(0.0).sqrt())
            }
            None => (g.mean(), f64::NAN),
        };
        if best.as_ref().is_none_or(|b| mean > b.posterior_mean) {
            best = Some(Recommendation {
                epsilon: g.epsilon.clone(),
                posterior_mean: mean,
                posterior_sd: sd,
                mean_over_seeds: g.mean(),
                seeds: g.scores.len(),
                from_model: model.is_some(),
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Bounds {
        Bounds {
            lower: vec![-1.0],
            upper: vec![10.0],
        }
    }

    #[test]
    fn unit_map_round_trips() {
        let b = b();
        assert_eq!(to_unit(&b, &[-1.0]), vec![0.0]);
        assert_eq!(to_unit(&b, &[10.0]), vec![1.0]);
        assert_eq!(from_unit(&b, &to_unit(&b, &[2.0])), vec![2.0]);
    }

    #[test]
    fn groups_collect_seeds_and_skip_failed_scores() {
        let b = b();
        let t = [
            (vec![0.0], 0, 0.1, 0),
            (vec![2.0], 0, 0.2, 1),
            (vec![0.0], 1, 0.3, 2),
            (vec![2.0], 1, 2.5, 3),
        ];
        let g = group_points(&b, t.iter().map(|(e, s, c, i)| (e.as_slice(), *s, *c, *i)));
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].slots, vec![0, 1]);
        assert!((g[0].mean() - 0.8).abs() < 1e-12);
        assert_eq!(g[1].scores.len(), 1);
        assert_eq!(g[1].next_slot(), 2);
    }

    #[test]
    fn recommendation_is_not_the_luckiest_observation() {
        // ε = 5 has the luckiest single draw (0.935 on seed slot 1, a seed
        // on which everything else did badly) but ε = 3 is better on the
        // other three paired seeds; the model prefers 3.
        let b = b();
        let mut trials = Vec::new();
        let mut idx = 0;
        let mut push = |e: f64, slot: usize, acc: f64| {
            trials.push(EvaluatedPoint {
                index: idx,
                epsilon: vec![e],
                slot,
                cost: 1.0 - acc,
            });
            idx += 1;
        };
        let seed_shift = [0.0, -0.03, 0.015, -0.01];
        for (slot, s) in seed_shift.iter().enumerate() {
            push(0.0, slot, 0.88 + s);
            push(3.0, slot, 0.91 + s);
        }
        for (slot, acc) in [0.86, 0.935, 0.87, 0.86].into_iter().enumerate() {
            push(5.0, slot, acc);
        }
        push(8.0, 0, 0.85);
        let rec = recommend(&trials, &b, 0).unwrap();
        assert_eq!(rec.epsilon, vec![3.0], "{rec:?}");
        assert_eq!(rec.seeds, 4);
        assert!((rec.mean_over_seeds - (0.91 - 0.00625)).abs() < 1e-9);
    }
}
