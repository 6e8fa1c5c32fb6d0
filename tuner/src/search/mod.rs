//! The argmin side of a study: solvers, the bound-respecting problem
//! wrappers, the budget, and the recommendation.
//!
//! A trial is one fine-tune of one ε on one seed. The seeds are paired
//! (common random numbers): search seed slot k is the same seed
//! ([`search_seed`]) for every ε, so a seed's shared effect (initialisation,
//! data order, augmentation) cancels in differences between ε values.
//!
//! Every solver runs through one path, [`run_search`]: an argmin
//! [`Executor`] over a [`Budgeted`] solver whose cost function asks an
//! [`Evaluator`] for costs. The evaluator numbers trials, spends the budget
//! (one unit per fine-tune, whatever the seed), serves repeated (ε, seed)
//! pairs from memory and hands new trials to a [`TrialBackend`] (the study's
//! worker pool, or an analytic function in tests).
//!
//! * The default solver, [`BayesSearch`], models accuracy with a Gaussian
//!   process that has a seed effect and a noise term, proposes points by
//!   expected improvement over the best posterior mean, and races: extra
//!   seeds go to the points still in contention with the incumbent.
//!   Nelder–Mead, particle swarm, Brent and random search stay selectable;
//!   they evaluate each point on the first seed only.
//! * Whatever the solver, the answer is [`recommend`]'s: the evaluated point
//!   with the best posterior mean of a GP fitted to every trial — never the
//!   single best observation (the best of 20 noisy draws is ≈ 1.87 σ above
//!   its mean by luck alone).
//! * The cost of a trial is `(1 − accuracy) + 1e-6 · min(val_loss, 100)`
//!   ([`trial_cost`]): validation error, ties broken by validation loss. The
//!   loss term is at most 1e-4, less than one image in 10 000.
//! * Failed trials cost [`failed_cost`] = 2 + 0.01·‖ε‖, worse than any real
//!   trial, and slightly worse the further ε is from the baseline, so a
//!   simplex of failures still has a direction; points asked for after the
//!   budget is spent cost [`UNEVALUATED_COST`] = 4 and run nothing. argmin
//!   never sees NaN or ∞.
//! * Nelder–Mead and Brent that converge with budget left restart around the
//!   best point with half the previous step, so the budget is used.
//! * The executor stops after the iteration in which the budget ran out
//!   ([`Budgeted::terminate`]).
//!
//! ```
//! use std::sync::Arc;
//! use polytune::search::{recommend, run_search, trial_cost, SearchConfig, TrialBackend, TrialRequest};
//!
//! // An analytic objective: accuracy peaks at ε₁ = 3; each seed shifts all ε alike.
//! struct Bowl;
//! impl TrialBackend for Bowl {
//!     fn run_trials(&self, trials: &[TrialRequest]) -> Option<Vec<f64>> {
//!         Some(trials.iter().map(|t| {
//!             let seed_shift = 0.01 * ((t.slot % 3) as f64 - 1.0);
//!             trial_cost(0.9 - 0.01 * (t.epsilon[0] - 3.0).powi(2) + seed_shift, 0.3)
//!         }).collect())
//!     }
//! }
//! let cfg = SearchConfig::default(); // bayes
//! let out = run_search(&cfg, 20, 0, 1, Arc::new(Bowl)).unwrap();
//! assert_eq!(out.trials.len(), 20);
//! assert_eq!(out.trials[0].epsilon, vec![0.0]);
//! let rec = recommend(&out.trials, &cfg.bounds(), 0).unwrap();
//! assert!((rec.epsilon[0] - 3.0).abs() < 0.5, "{rec:?}");
//! ```

pub mod acquisition;
mod bayes;
mod config;
pub mod gp;
mod random;
mod recommend;
mod space;
mod swarm;

use std::sync::{Arc, Mutex};

use argmin::core::{
    CostFunction, Error as ArgminError, Executor, Problem, Solver, State, TerminationReason,
    TerminationStatus, KV,
};
use argmin::solver::brent::BrentOpt;
use argmin::solver::neldermead::NelderMead;

pub use bayes::{BayesSearch, PairedPoint};
pub use config::{
    BayesOptions, BrentOptions, InvalidSetting, NelderMeadOptions, RandomOptions, SearchConfig,
    SolverKind, SwarmOptions,
};
pub use config::{MAX_ABS_BOUND, MAX_POINTS_PER_ITERATION};
pub use random::RandomSearch;
pub use recommend::{recommend, Recommendation, Surrogate};
pub use space::{
    confirm_seed, search_seed, Bounds, SineMap, CONFIRM_SEED_OFFSET, PAPER_EPSILON1,
    SAME_POINT_TOLERANCE,
};
pub use swarm::SeededSwarm;

/// Base cost of a failed trial: worse than any finished one (those are ≤ 1.0001).
pub const FAILED_COST: f64 = 2.0;

/// The cost of a failed trial at `epsilon`: `2 + 0.01·min(‖ε‖, 100)`, in
/// [2, 3], below [`UNEVALUATED_COST`].
pub fn failed_cost(epsilon: &[f64]) -> f64 {
    let norm = epsilon.iter().map(|e| e * e).sum::<f64>().sqrt();
    FAILED_COST
        + 0.01
            * if norm.is_finite() {
                norm.min(100.0)
            } else {
                100.0
            }
}
/// Cost returned for points asked for after the budget is spent or a stop
/// was requested; no trial runs for them.
pub const UNEVALUATED_COST: f64 = 4.0;
/// Weight of the validation loss in the cost (the tie-breaker).
pub const LOSS_TIE_WEIGHT: f64 = 1e-6;
/// The validation loss is capped here before weighting.
pub const LOSS_CAP: f64 = 100.0;

/// The cost of a finished trial: validation error plus a tie-breaking
/// `1e-6 · min(val_loss, 100)`. Always finite for finite inputs.
pub fn trial_cost(val_accuracy: f64, val_loss: f64) -> f64 {
    (1.0 - val_accuracy) + LOSS_TIE_WEIGHT * val_loss.clamp(0.0, LOSS_CAP)
}

/// True for the cost of a finished trial (not failed, not unevaluated).
pub fn is_finished_cost(cost: f64) -> bool {
    cost.is_finite() && cost < FAILED_COST
}

/// One fine-tune the search asks for: ε on one of the paired search seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRequest {
    /// Search trial index (0 = the baseline on the first seed).
    pub index: u64,
    /// ε.
    pub epsilon: Vec<f64>,
    /// Which search seed (0, 1, …): every ε sees the same seeds in the same
    /// order, so results are paired (common random numbers).
    pub slot: usize,
    /// The seed itself ([`search_seed`] of the study seed and the slot).
    pub seed: u64,
}

/// Runs search trials for the [`Evaluator`].
pub trait TrialBackend: Send + Sync + 'static {
    /// Runs `trials` (concurrently where it can) and returns one finite cost
    /// each, in order — [`failed_cost`] for a failed trial. `None` means the
    /// search must stop now (a shutdown, or a fatal error the backend keeps
    /// for its caller).
    fn run_trials(&self, trials: &[TrialRequest]) -> Option<Vec<f64>>;
}

/// One search trial as the evaluator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluatedPoint {
    /// Trial index (0 = baseline).
    pub index: u64,
    /// ε.
    pub epsilon: Vec<f64>,
    /// The seed slot.
    pub slot: usize,
    /// Its cost ([`trial_cost`] or [`failed_cost`]).
    pub cost: f64,
}

/// Why a search ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchEnd {
    /// All budgeted trials ran.
    BudgetSpent,
    /// The solver converged before the budget was spent and a restart around
    /// the best point found nothing new.
    SolverFinished(String),
    /// The backend asked to stop (shutdown or fatal error).
    Stopped,
}

/// The result of [`run_search`].
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// Every trial, by index.
    pub trials: Vec<EvaluatedPoint>,
    /// Why it ended.
    pub end: SearchEnd,
    /// Cost evaluations argmin asked for (including repeats and unevaluated ones).
    pub evaluations: u64,
}

impl SearchOutcome {
    /// The single trial with the lowest cost (lowest index on ties). This is
    /// one noisy observation: the study's answer is [`recommend`]'s, never
    /// this.
    pub fn lowest_cost(&self) -> Option<&EvaluatedPoint> {
        self.trials
            .iter()
            .fold(None, |best: Option<&EvaluatedPoint>, t| match best {
                Some(b) if b.cost <= t.cost => Some(b),
                _ => Some(t),
            })
    }
}

/// An error that prevents a search from running.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A setting is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    /// argmin reported an error.
    #[error("argmin {solver}: {source}")]
    Argmin {
        /// The solver.
        solver: SolverKind,
        /// argmin's error.
        source: ArgminError,
    },
}

#[derive(Debug)]
struct EvalState {
    next_index: u64,
    budget_left: u64,
    history: Vec<EvaluatedPoint>,
    stopped: bool,
    evaluations: u64,
}

/// The cost side shared by all solvers: numbers trials, spends the budget,
/// remembers every (ε, seed) trial, clamps into the box, and never returns a
/// non-finite cost. Synchronous: it runs on the executor's thread and blocks
/// while the backend runs trials.
pub struct Evaluator<B> {
    bounds: Bounds,
    study_seed: u64,
    backend: Arc<B>,
    state: Mutex<EvalState>,
}

impl<B: TrialBackend> Evaluator<B> {
    /// An evaluator that may run `budget` trials; search seeds derive from
    /// `study_seed` ([`search_seed`]).
    pub fn new(bounds: Bounds, budget: u64, study_seed: u64, backend: Arc<B>) -> Self {
        Self {
            bounds,
            study_seed,
            backend,
            state: Mutex::new(EvalState {
                next_index: 0,
                budget_left: budget,
                history: Vec::new(),
                stopped: budget == 0,
                evaluations: 0,
            }),
        }
    }

    /// The box.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// Costs for `(ε, seed slot)` points, running new trials as one
    /// concurrent batch. A point already run on that slot costs no budget.
    pub fn evaluate_paired(&self, points: &[(Vec<f64>, usize)]) -> Vec<f64> {
        let mut st = self.state.lock().expect("evaluator lock");
        st.evaluations += points.len() as u64;
        let mut costs = vec![UNEVALUATED_COST; points.len()];
        if st.stopped {
            return costs;
        }
        // New trials in this batch, and where each asked-for point gets its cost.
        let mut new: Vec<TrialRequest> = Vec::new();
        let mut from_new: Vec<(usize, usize)> = Vec::new();
        for (k, (p, slot)) in points.iter().enumerate() {
            if p.len() != self.bounds.dim() || p.iter().any(|x| !x.is_finite()) {
                tracing::warn!(point = ?p, "solver asked for an invalid point; not evaluated");
                continue;
            }
            let p = self.bounds.clamp(p);
            if let Some(seen) = st
                .history
                .iter()
                .find(|h| h.slot == *slot && self.bounds.same_point(&h.epsilon, &p))
            {
                costs[k] = seen.cost;
                continue;
            }
            if let Some(j) = new
                .iter()
                .position(|q| q.slot == *slot && self.bounds.same_point(&q.epsilon, &p))
            {
                from_new.push((k, j));
                continue;
            }
            if st.budget_left == 0 {
                continue; // UNEVALUATED_COST; the executor stops after this iteration
            }
            st.budget_left -= 1;
            let index = st.next_index;
            st.next_index += 1;
            from_new.push((k, new.len()));
            new.push(TrialRequest {
                index,
                epsilon: p,
                slot: *slot,
                seed: search_seed(self.study_seed, *slot),
            });
        }
        if !new.is_empty() {
            drop(st);
            let reply = self.backend.run_trials(&new);
            st = self.state.lock().expect("evaluator lock");
            match reply {
                Some(new_costs) if new_costs.len() == new.len() => {
                    let new_costs: Vec<f64> = new_costs
                        .into_iter()
                        .zip(&new)
                        .map(|(c, r)| {
                            if c.is_finite() {
                                c
                            } else {
                                failed_cost(&r.epsilon)
                            }
                        })
                        .collect();
                    for (k, j) in from_new {
                        costs[k] = new_costs[j];
                    }
                    for (r, cost) in new.into_iter().zip(new_costs) {
                        st.history.push(EvaluatedPoint {
                            index: r.index,
                            epsilon: r.epsilon,
                            slot: r.slot,
                            cost,
                        });
                    }
                }
                _ => {
                    st.stopped = true;
                    return vec![UNEVALUATED_COST; points.len()];
                }
            }
        }
        if st.budget_left == 0 {
            st.stopped = true;
        }
        costs
    }

    /// Costs for points on the first seed (the noise-unaware solvers).
    pub fn evaluate(&self, points: &[Vec<f64>]) -> Vec<f64> {
        let paired: Vec<(Vec<f64>, usize)> = points.iter().map(|p| (p.clone(), 0)).collect();
        self.evaluate_paired(&paired)
    }

    /// Trials run so far.
    pub fn trial_count(&self) -> usize {
        self.state.lock().expect("evaluator lock").history.len()
    }

    /// The lowest-cost point so far (lowest index on ties): where
    /// Nelder–Mead and Brent restart.
    pub fn best_point(&self) -> Option<Vec<f64>> {
        let st = self.state.lock().expect("evaluator lock");
        let mut best: Option<&EvaluatedPoint> = None;
        for h in &st.history {
            if best.is_none_or(|b| h.cost < b.cost || (h.cost == b.cost && h.index < b.index)) {
                best = Some(h);
            }
        }
        best.map(|b| b.epsilon.clone())
    }

    /// Evaluates one point on the first seed.
    pub fn evaluate_one(&self, point: &[f64]) -> f64 {
        self.evaluate(&[point.to_vec()])[0]
    }

    /// True once the budget is spent or the backend asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.state.lock().expect("evaluator lock").stopped
    }

    fn finish(&self, end_hint: Option<String>) -> SearchOutcome {
        let st = self.state.lock().expect("evaluator lock");
        let mut trials = st.history.clone();
        trials.sort_by_key(|t| t.index);
        let end = if st.budget_left == 0 {
            SearchEnd::BudgetSpent
        } else if st.stopped {
            SearchEnd::Stopped
        } else {
            SearchEnd::SolverFinished(end_hint.unwrap_or_else(|| "solver stopped".into()))
        };
        SearchOutcome {
            trials,
            end,
            evaluations: st.evaluations,
        }
    }
}

/// Wraps any argmin solver so the executor stops once the evaluator is
/// stopped (budget spent, shutdown, fatal error), after the current
/// iteration. Everything else is delegated.
pub struct Budgeted<S, B> {
    inner: S,
    eval: Arc<Evaluator<B>>,
    max_iters: u64,
}

impl<S, B> Budgeted<S, B> {
    /// Wraps `inner`; `max_iters` is a safety net against a solver that
    /// only repeats known points.
    pub fn new(inner: S, eval: Arc<Evaluator<B>>, max_iters: u64) -> Self {
        Self {
            inner,
            eval,
            max_iters,
        }
    }
}

impl<O, I, S, B> Solver<O, I> for Budgeted<S, B>
where
    I: State,
    S: Solver<O, I>,
    B: TrialBackend,
{
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn init(&mut self, problem: &mut Problem<O>, state: I) -> Result<(I, Option<KV>), ArgminError> {
        self.inner.init(problem, state)
    }

    fn next_iter(
        &mut self,
        problem: &mut Problem<O>,
        state: I,
    ) -> Result<(I, Option<KV>), ArgminError> {
        self.inner.next_iter(problem, state)
    }

    fn terminate(&mut self, state: &I) -> TerminationStatus {
        if self.eval.is_stopped() {
            return TerminationStatus::Terminated(TerminationReason::SolverExit(
                "trial budget spent or search stopped".into(),
            ));
        }
        if state.get_iter() >= self.max_iters {
            return TerminationStatus::Terminated(TerminationReason::MaxItersReached);
        }
        self.inner.terminate_internal(state)
    }
}

/// ε directly as the parameter (particle swarm, random search); `bulk_cost`
/// hands the whole batch to the evaluator so it runs concurrently.
pub struct DirectProblem<B> {
    eval: Arc<Evaluator<B>>,
}

impl<B: TrialBackend> CostFunction for DirectProblem<B> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Vec<f64>) -> Result<f64, ArgminError> {
        Ok(self.eval.evaluate_one(p))
    }

    fn bulk_cost<P>(&self, params: &[P]) -> Result<Vec<f64>, ArgminError>
    where
        P: std::borrow::Borrow<Vec<f64>> + argmin::core::SyncAlias,
        f64: argmin::core::SendAlias,
        Self: argmin::core::SyncAlias,
    {
        let points: Vec<Vec<f64>> = params.iter().map(|p| p.borrow().clone()).collect();
        Ok(self.eval.evaluate(&points))
    }
}

/// The Bayesian solver's parameter: ε on a seed slot; `bulk_cost` runs the
/// whole batch concurrently.
pub struct PairedProblem<B> {
    eval: Arc<Evaluator<B>>,
}

impl<B: TrialBackend> CostFunction for PairedProblem<B> {
    type Param = PairedPoint;
    type Output = f64;

    fn cost(&self, p: &PairedPoint) -> Result<f64, ArgminError> {
        Ok(self.eval.evaluate_paired(&[(p.epsilon.clone(), p.slot)])[0])
    }

    fn bulk_cost<P>(&self, params: &[P]) -> Result<Vec<f64>, ArgminError>
    where
        P: std::borrow::Borrow<PairedPoint> + argmin::core::SyncAlias,
        f64: argmin::core::SendAlias,
        Self: argmin::core::SyncAlias,
    {
        let points: Vec<(Vec<f64>, usize)> = params
            .iter()
            .map(|p| (p.borrow().epsilon.clone(), p.borrow().slot))
            .collect();
        Ok(self.eval.evaluate_paired(&points))
    }
}

/// Nelder–Mead's parameter: the internal point of the [`SineMap`].
pub struct SineProblem<B> {
    eval: Arc<Evaluator<B>>,
    map: SineMap,
}

impl<B: TrialBackend> CostFunction for SineProblem<B> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, u: &Vec<f64>) -> Result<f64, ArgminError> {
        Ok(self.eval.evaluate_one(&self.map.to_epsilon(u)))
    }
}

/// Brent's parameter: ε₁ as a scalar.
pub struct ScalarProblem<B> {
    eval: Arc<Evaluator<B>>,
}

impl<B: TrialBackend> CostFunction for ScalarProblem<B> {
    type Param = f64;
    type Output = f64;

    fn cost(&self, x: &f64) -> Result<f64, ArgminError> {
        Ok(self.eval.evaluate_one(&[*x]))
    }
}

/// The initial Nelder–Mead simplex in ε: the baseline 0, the paper default
/// (ε₁ = 2), and for j ≥ 2 the point 0 + step·e_j (−step if that leaves the
/// box).
pub fn initial_simplex(bounds: &Bounds, step: f64) -> Vec<Vec<f64>> {
    let mut simplex = vec![bounds.baseline(), bounds.paper_default()];
    for j in 1..bounds.dim() {
        let mut p = bounds.baseline();
        p[j] = if step <= bounds.upper[j] { step } else { -step };
        simplex.push(bounds.clamp(&p));
    }
    simplex
}

/// A restart simplex: the best point and, per coordinate, a step of
/// `fraction` of the box width (away from the nearer bound).
pub fn restart_simplex(bounds: &Bounds, best: &[f64], fraction: f64) -> Vec<Vec<f64>> {
    let mut simplex = vec![best.to_vec()];
    for j in 0..bounds.dim() {
        let step = fraction * (bounds.upper[j] - bounds.lower[j]);
        let mut p = best.to_vec();
        p[j] = if best[j] + step <= bounds.upper[j] {
            best[j] + step
        } else {
            best[j] - step
        };
        simplex.push(bounds.clamp(&p));
    }
    simplex
}

/// Runs one argmin executor over `solver` wrapped in [`Budgeted`]; returns
/// argmin's termination reason.
fn execute<O, S, I, B>(
    problem: O,
    solver: S,
    eval: &Arc<Evaluator<B>>,
    max_iters: u64,
    kind: SolverKind,
) -> Result<String, SearchError>
where
    O: CostFunction,
    S: Solver<O, I>,
    I: State,
    B: TrialBackend,
{
    let res = Executor::new(problem, Budgeted::new(solver, eval.clone(), max_iters))
        .ctrlc(false)
        .run()
        .map_err(|source| SearchError::Argmin {
            solver: kind,
            source,
        })?;
    Ok(res
        .state()
        .get_termination_reason()
        .map(|r| r.to_string())
        .unwrap_or_default())
}

/// Runs the configured solver for at most `budget` trials (the baseline
/// included). `seed` is the study seed: it seeds the solvers' generators and
/// the paired search seeds; `parallelism` is the batch the swarm-free
/// solvers propose at once (the number of workers). Blocks until done.
pub fn run_search<B: TrialBackend>(
    cfg: &SearchConfig,
    budget: u64,
    seed: u64,
    parallelism: usize,
    backend: Arc<B>,
) -> Result<SearchOutcome, SearchError> {
    cfg.validate()?;
    let bounds = cfg.bounds();
    let eval = Arc::new(Evaluator::new(bounds.clone(), budget, seed, backend));
    let max_iters = 50 * budget + 100;
    let kind = cfg.solver;
    let argmin_err = |source| SearchError::Argmin {
        solver: kind,
        source,
    };
    if kind == SolverKind::Bayes {
        let solver = BayesSearch::new(bounds.clone(), cfg.bayes.clone(), parallelism, seed);
        let problem = PairedProblem { eval: eval.clone() };
        let reason = execute(problem, solver, &eval, max_iters, kind)?;
        return Ok(eval.finish(Some(reason)));
    }
    // Trials 0 and 1: baseline and paper default, run concurrently.
    eval.evaluate(&[bounds.baseline(), bounds.paper_default()]);
    let mut reason: Option<String> = None;
    // Round 0 runs the solver from its initial simplex / bracket / swarm.
    // Nelder–Mead and Brent may converge with budget left: they restart
    // around the best point so far with a smaller step, until the budget is
    // spent or a round adds no new trial.
    for round in 0u32.. {
        if eval.is_stopped() {
            break;
        }
        let before = eval.trial_count();
        let shrink = 0.5f64.powi(round as i32);
        let best = eval.best_point().unwrap_or_else(|| bounds.baseline());
        match kind {
            SolverKind::Bayes => unreachable!("handled above"),
            SolverKind::NelderMead => {
                let o = &cfg.nelder_mead;
                let map = SineMap::new(bounds.clone());
                let simplex = if round == 0 {
                    initial_simplex(&bounds, o.initial_step)
                } else {
                    restart_simplex(&bounds, &best, 0.25 * shrink)
                };
                let simplex = simplex.iter().map(|p| map.to_internal(p)).collect();
                let nm = NelderMead::new(simplex)
                    .with_sd_tolerance(o.sd_tolerance)
                    .and_then(|s| s.with_alpha(o.alpha))
                    .and_then(|s| s.with_gamma(o.gamma))
                    .and_then(|s| s.with_rho(o.rho))
                    .and_then(|s| s.with_sigma(o.sigma))
                    .map_err(argmin_err)?;
                let problem = SineProblem {
                    eval: eval.clone(),
                    map,
                };
                reason = Some(execute(problem, nm, &eval, max_iters, kind)?);
            }
            SolverKind::Brent => {
                let (lo, hi) = if round == 0 {
                    (bounds.lower[0], bounds.upper[0])
                } else {
                    let w = 0.25 * shrink * (bounds.upper[0] - bounds.lower[0]);
                    (
                        (best[0] - w).max(bounds.lower[0]),
                        (best[0] + w).min(bounds.upper[0]),
                    )
                };
                let solver =
                    BrentOpt::new(lo, hi).set_tolerance(f64::EPSILON.sqrt(), cfg.brent.tolerance);
                let problem = ScalarProblem { eval: eval.clone() };
                reason = Some(execute(problem, solver, &eval, max_iters, kind)?);
            }
            SolverKind::ParticleSwarm => {
                let solver =
                    SeededSwarm::new(&bounds, &cfg.particle_swarm, seed).map_err(argmin_err)?;
                let problem = DirectProblem { eval: eval.clone() };
                reason = Some(execute(problem, solver, &eval, max_iters, kind)?);
                break;
            }
            SolverKind::Random => {
                let batch = cfg.random.batch.unwrap_or(parallelism).max(1);
                let solver = RandomSearch::new(bounds.clone(), batch, seed);
                let problem = DirectProblem { eval: eval.clone() };
                reason = Some(execute(problem, solver, &eval, max_iters, kind)?);
                break;
            }
        }
        if eval.trial_count() == before {
            break; // the restart found nothing new: converged for good
        }
        if !eval.is_stopped() {
            tracing::debug!(
                round,
                "{kind} converged with budget left; restarting around the best point"
            );
        }
    }
    Ok(eval.finish(reason))
}
