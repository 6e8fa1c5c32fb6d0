//! Noise-aware Bayesian optimisation with racing, as an argmin [`Solver`].
//!
//! A trial's validation accuracy `y(ε, s)` on seed `s` is modelled as
//!
//! ```text
//! y(ε, s) = m + f(ε) + b_s + e,   f ~ GP(0, σ_f² Matérn-5/2),  b_s ~ N(0, σ_b²),  e ~ N(0, σ_n²)
//! ```
//!
//! ([`super::gp`]; hyperparameters by marginal likelihood, refitted every
//! iteration). Seeds are paired: slot k is the same seed for every ε, so the
//! seed effect `b_s` is shared and cancels in comparisons.
//!
//! * **Start**: ε = 0 (cross-entropy), the paper's ε₁ = 2 and Sobol points
//!   (`initial_points` in all) on the first seed, as one batch.
//! * **Incumbent**: the evaluated ε with the best posterior mean of
//!   `m + f(ε)`; never a single lucky observation.
//! * **Racing** (F-race style): the incumbent and every evaluated ε whose
//!   probability of beating it, `Φ((μ_p − μ_inc) / √(σ²_p + σ²_inc))`, is at
//!   least `race_threshold` are in contention. The incumbent gets seeds up to
//!   `min_seeds`; contenders get seeds until they have as many as the
//!   incumbent; while contenders remain, the incumbent gets one more (up to
//!   `max_seeds`). A point whose probability falls below the threshold gets
//!   no more seeds.
//! * **Exploration**: expected improvement over the incumbent's posterior
//!   mean on the GP's latent `f` (noise excluded), maximised over Sobol
//!   candidates with local refinement; a batch of K points for K workers by
//!   kriging believer. New points are run on the first seed.
//! * **Split**: with one worker, iterations alternate between a racing
//!   evaluation (when one is due) and a new point; with K workers, up to
//!   ⌊K/2⌋ of each batch race and the rest explore.
//!
//! Failed trials are left out of the model; proposals keep `min_distance`
//! away from them.

use argmin::core::{CostFunction, Error, IterState, Problem, Solver, KV};

use super::acquisition::{propose_batch, sobol_points, ProposeOptions};
use super::config::BayesOptions;
use super::is_finished_cost;
use super::recommend::{from_unit, group_points, to_unit, PointGroup, Surrogate};
use super::space::Bounds;

/// Proposals closer than this (max-norm, in the unit box) to an evaluated or
/// failed point are not new points.
const MIN_DISTANCE: f64 = 0.01;

/// The Bayesian solver's parameter: ε on one seed slot.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedPoint {
    /// ε.
    pub epsilon: Vec<f64>,
    /// The search seed slot (0 = first seed).
    pub slot: usize,
}

type BState = IterState<PairedPoint, (), (), (), (), f64>;

/// The solver: see the module docs.
pub struct BayesSearch {
    bounds: Bounds,
    opts: BayesOptions,
    batch: usize,
    seed: u64,
    /// Every trial so far: (ε, slot, cost, order).
    history: Vec<(Vec<f64>, usize, f64, u64)>,
    iteration: u64,
}

/// Φ, the standard normal CDF.
fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

impl BayesSearch {
    /// A solver over `bounds` proposing `batch` trials per iteration (the
    /// number of workers), seeded with the study seed.
    pub fn new(bounds: Bounds, opts: BayesOptions, batch: usize, seed: u64) -> Self {
        Self {
            bounds,
            opts,
            batch: batch.max(1),
            seed,
            history: Vec::new(),
            iteration: 0,
        }
    }

    /// ε = 0, the paper default, then Sobol points, all on slot 0.
    fn initial_design(&self) -> Vec<PairedPoint> {
        let n = self.opts.initial_points_for(self.bounds.dim());
        let mut pts = vec![self.bounds.baseline(), self.bounds.paper_default()];
        let sobol = sobol_points(4 * n + 8, self.bounds.dim(), self.seed);
        for u in sobol {
            if pts.len() >= n {
                break;
            }
            let e = from_unit(&self.bounds, &u);
            if pts
                .iter()
                .all(|p| max_dist(&to_unit(&self.bounds, p), &u) >= MIN_DISTANCE)
            {
                pts.push(e);
            }
        }
        pts.into_iter()
            .map(|epsilon| PairedPoint { epsilon, slot: 0 })
            .collect()
    }

    fn record(&mut self, points: &[PairedPoint], costs: &[f64]) {
        for (p, &c) in points.iter().zip(costs) {
            // Unevaluated points (budget spent) are not trials.
            if c.is_finite() && c < super::UNEVALUATED_COST {
                let order = self.history.len() as u64;
                self.history.push((p.epsilon.clone(), p.slot, c, order));
            }
        }
    }

    fn groups(&self) -> Vec<PointGroup> {
        group_points(
            &self.bounds,
            self.history
                .iter()
                .map(|(e, s, c, i)| (e.as_slice(), *s, *c, *i)),
        )
    }

    /// The incumbent's (group index, posterior mean) under `model`.
    fn incumbent(groups: &[PointGroup], model: &Surrogate) -> Option<(usize, f64, f64)> {
        let mut best: Option<(usize, f64, f64)> = None;
        for (k, g) in groups.iter().enumerate() {
            if g.scores.is_empty() {
                continue;
            }
            let p = model.predict(&g.epsilon);
            if best.is_none_or(|(_, m, _)| p.mean > m) {
                best = Some((k, p.mean, p.var.max(0.0)));
            }
        }
        best
    }

    /// Racing evaluations due now, most urgent first.
    fn races(&self, groups: &[PointGroup], model: &Surrogate) -> Vec<PairedPoint> {
        let Some((inc, mu_inc, var_inc)) = Self::incumbent(groups, model) else {
            return Vec::new();
        };
        let mut members: Vec<(usize, f64)> = vec![(inc, mu_inc)];
        for (k, g) in groups.iter().enumerate() {
            if k == inc || g.scores.is_empty() {
                continue;
            }
            let p = model.predict(&g.epsilon);
            let z = (p.mean - mu_inc) / (p.var.max(0.0) + var_inc + 1e-12).sqrt();
            if normal_cdf(z) >= self.opts.race_threshold {
                members.push((k, p.mean));
            }
        }
        let n_of = |k: usize| groups[k].slots.len();
        let max_seeds = self.opts.max_seeds;
        let target = self.opts.min_seeds.max(n_of(inc)).min(max_seeds);
        let mut due: Vec<(usize, f64)> = members
            .iter()
            .copied()
            .filter(|&(k, _)| n_of(k) < target)
            .collect();
        if due.is_empty() && members.len() > 1 && n_of(inc) < max_seeds {
            due.push((inc, mu_inc));
        }
        due.sort_by(|a, b| {
            n_of(a.0)
                .cmp(&n_of(b.0))
                .then(b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal))
        });
        due.into_iter()
            .map(|(k, _)| PairedPoint {
                epsilon: groups[k].epsilon.clone(),
                slot: groups[k].next_slot(),
            })
            .collect()
    }

    /// New points on slot 0, kept away from every tried ε.
    fn explore(&self, model: Option<&Surrogate>, best: f64, k: usize) -> Vec<PairedPoint> {
        if k == 0 {
            return Vec::new();
        }
        let tried: Vec<Vec<f64>> = self
            .history
            .iter()
            .map(|(e, _, _, _)| to_unit(&self.bounds, e))
            .collect();
        let far = |u: &[f64], chosen: &[Vec<f64>]| {
            tried
                .iter()
                .chain(chosen)
                .all(|t| max_dist(t, u) >= MIN_DISTANCE)
        };
        let seed = self.seed ^ self.iteration.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut chosen: Vec<Vec<f64>> = Vec::new();
        if let Some(m) = model {
            let failed = self
                .history
                .iter()
                .filter(|h| !is_finished_cost(h.2))
                .count();
            let opts = ProposeOptions {
                candidates: self.opts.candidates,
                min_distance: MIN_DISTANCE,
                xi: self.opts.xi,
                seed,
            };
            for u in propose_batch(m.gp(), k + failed, best, &opts) {
                if chosen.len() < k && far(&u, &chosen) {
                    chosen.push(u);
                }
            }
        }
        // Without a model (or if it found too few): space-filling points.
        if chosen.len() < k {
            for u in sobol_points(64 * k + 64, self.bounds.dim(), seed) {
                if chosen.len() >= k {
                    break;
                }
                if far(&u, &chosen) {
                    chosen.push(u);
                }
            }
        }
        chosen
            .into_iter()
            .map(|u| PairedPoint {
                epsilon: from_unit(&self.bounds, &u),
                slot: 0,
            })
            .collect()
    }

    /// The next batch: racing evaluations and new points (module docs).
    fn next_batch(&self) -> (Vec<PairedPoint>, Option<(Vec<f64>, f64)>) {
        let groups = self.groups();
        let obs: Vec<(Vec<f64>, usize, f64)> = self
            .history
            .iter()
            .filter(|h| is_finished_cost(h.2))
            .map(|(e, s, c, _)| (e.clone(), *s, 1.0 - c))
            .collect();
        let model = Surrogate::fit(&obs, &self.bounds, self.seed);
        let Some(model) = model else {
            return (self.explore(None, 0.0, self.batch), None);
        };
        let (inc, mu_inc, _) = Self::incumbent(&groups, &model).expect("a finished trial");
        let races = self.races(&groups, &model);
        let n_race = if self.batch == 1 {
            usize::from(!races.is_empty() && self.iteration % 2 == 1)
        } else {
            races.len().min(self.batch / 2)
        };
        let mut batch: Vec<PairedPoint> = races.iter().take(n_race).cloned().collect();
        let mut explore = self.explore(Some(&model), mu_inc, self.batch - n_race);
        // Nothing new worth trying: spend the slot on racing instead.
        if explore.is_empty() {
            batch.extend(races.into_iter().skip(n_race).take(self.batch - n_race));
        }
        batch.append(&mut explore);
        if batch.is_empty() {
            // Box exhausted and nothing to race: one more seed for the incumbent.
            batch.push(PairedPoint {
                epsilon: groups[inc].epsilon.clone(),
                slot: groups[inc].next_slot(),
            });
        }
        (batch, Some((groups[inc].epsilon.clone(), 1.0 - mu_inc)))
    }

    fn state_of(&self, state: BState, incumbent: Option<(Vec<f64>, f64)>) -> BState {
        match incumbent {
            Some((epsilon, cost)) => state.param(PairedPoint { epsilon, slot: 0 }).cost(cost),
            None => {
                let best = self
                    .history
                    .iter()
                    .min_by(|a, b| a.2.partial_cmp(&b.2).unwrap_or(std::cmp::Ordering::Equal));
                match best {
                    Some((e, _, c, _)) => state
                        .param(PairedPoint {
                            epsilon: e.clone(),
                            slot: 0,
                        })
                        .cost(*c),
                    None => state,
                }
            }
        }
    }
}

fn max_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

impl<O> Solver<O, BState> for BayesSearch
where
    O: CostFunction<Param = PairedPoint, Output = f64>,
{
    fn name(&self) -> &str {
        "Bayesian optimisation (GP with seed effect, EI, racing)"
    }

    fn init(
        &mut self,
        problem: &mut Problem<O>,
        state: BState,
    ) -> Result<(BState, Option<KV>), Error> {
        let points = self.initial_design();
        let costs = problem.bulk_cost(&points)?;
        self.record(&points, &costs);
        Ok((self.state_of(state, None), None))
    }

    fn next_iter(
        &mut self,
        problem: &mut Problem<O>,
        state: BState,
    ) -> Result<(BState, Option<KV>), Error> {
        self.iteration += 1;
        let (points, incumbent) = self.next_batch();
        let costs = problem.bulk_cost(&points)?;
        self.record(&points, &costs);
        Ok((self.state_of(state, incumbent), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_known_values() {
        // scipy.stats.norm.cdf
        for (z, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (-1.281_551_565_544_600_5, 0.1),
            (-3.0, 0.001_349_898_031_630_094_6),
        ] {
            assert!(
                (normal_cdf(z) - want).abs() < 1e-15,
                "{z}: {}",
                normal_cdf(z)
            );
        }
    }

    #[test]
    fn initial_design_starts_with_baseline_and_paper_default() {
        let b = Bounds {
            lower: vec![-1.0],
            upper: vec![10.0],
        };
        let s = BayesSearch::new(b.clone(), BayesOptions::default(), 1, 3);
        let d = s.initial_design();
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].epsilon, vec![0.0]);
        assert_eq!(d[1].epsilon, vec![2.0]);
        assert!(d.iter().all(|p| p.slot == 0 && b.contains(&p.epsilon)));
        for i in 0..d.len() {
            for j in 0..i {
                assert!(!b.same_point(&d[i].epsilon, &d[j].epsilon));
            }
        }
    }
}
