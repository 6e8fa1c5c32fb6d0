//! `[search]`: the solver and its options.

use serde::{Deserialize, Serialize};

use super::space::Bounds;

/// Which argmin solver drives the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SolverKind {
    /// Noise-aware Bayesian optimisation: a Gaussian process with a seed
    /// effect, expected improvement on the posterior mean, racing (the
    /// default).
    #[default]
    Bayes,
    /// Nelder–Mead simplex through the sine map (one seed per point).
    NelderMead,
    /// Particle swarm; each iteration's swarm runs concurrently.
    ParticleSwarm,
    /// Brent's method on ε₁ (N = 1 only).
    Brent,
    /// Uniform random search in the box (a baseline).
    Random,
}

impl SolverKind {
    /// The name as written in configs and outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            SolverKind::Bayes => "bayes",
            SolverKind::NelderMead => "nelder-mead",
            SolverKind::ParticleSwarm => "particle-swarm",
            SolverKind::Brent => "brent",
            SolverKind::Random => "random",
        }
    }
}

impl std::fmt::Display for SolverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SolverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bayes" => Ok(Self::Bayes),
            "nelder-mead" => Ok(Self::NelderMead),
            "particle-swarm" => Ok(Self::ParticleSwarm),
            "brent" => Ok(Self::Brent),
            "random" => Ok(Self::Random),
            _ => Err(format!(
                "unknown solver {s:?} (expected bayes, nelder-mead, particle-swarm, brent or random)"
            )),
        }
    }
}

/// `[search.bayes]`: the Bayesian solver and its racing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BayesOptions {
    /// Points of the space-filling start (ε = 0, the paper's ε₁ = 2, then
    /// Sobol points), all on the first seed; 0 = `max(4, 2N + 2)`.
    pub initial_points: usize,
    /// Seeds the incumbent (best posterior mean) gets before the search
    /// trusts it.
    pub min_seeds: usize,
    /// Most seeds any point gets in the search.
    pub max_seeds: usize,
    /// A point stays in the race while the model's probability that it
    /// beats the incumbent is at least this.
    pub race_threshold: f64,
    /// Candidate points per proposal (Sobol points plus local refinement).
    pub candidates: usize,
    /// Exploration margin ξ of expected improvement, in standard deviations
    /// of the observed scores.
    pub xi: f64,
    /// Restarts of the marginal-likelihood fit.
    pub fit_restarts: usize,
}

impl Default for BayesOptions {
    fn default() -> Self {
        Self {
            initial_points: 0,
            min_seeds: 3,
            max_seeds: 5,
            race_threshold: 0.1,
            candidates: 512,
            xi: 0.0,
            fit_restarts: 4,
        }
    }
}

impl BayesOptions {
    /// The start's size for N coefficients.
    pub fn initial_points_for(&self, terms: usize) -> usize {
        if self.initial_points == 0 {
            (2 * terms + 2).max(4)
        } else {
            self.initial_points
        }
    }
}

/// `[search.nelder_mead]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NelderMeadOptions {
    /// Initial simplex offset of ε₂..ε_N from 0 (ε₁'s edge is 0 → 2).
    pub initial_step: f64,
    /// Stop when the standard deviation of the simplex's costs falls below
    /// this (cost units: 0.001 is one validation image in 1000).
    pub sd_tolerance: f64,
    /// Reflection coefficient (> 0).
    pub alpha: f64,
    /// Expansion coefficient (> 1).
    pub gamma: f64,
    /// Contraction coefficient (0, 0.5].
    pub rho: f64,
    /// Shrink coefficient (0, 1].
    pub sigma: f64,
}

impl Default for NelderMeadOptions {
    fn default() -> Self {
        Self {
            initial_step: 1.0,
            sd_tolerance: 1e-9,
            alpha: 1.0,
            gamma: 2.0,
            rho: 0.5,
            sigma: 0.5,
        }
    }
}

/// `[search.particle_swarm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmOptions {
    /// Swarm size (2..=1000); the baseline and the paper default are two of them.
    pub particles: usize,
    /// Inertia weight (SPSO 2011: 1 / (2 ln 2)).
    pub inertia: f64,
    /// Pull towards a particle's own best (SPSO 2011: 0.5 + ln 2).
    pub cognitive: f64,
    /// Pull towards the swarm's best (SPSO 2011: 0.5 + ln 2).
    pub social: f64,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        Self {
            particles: 5,
            inertia: 1.0 / (2.0 * std::f64::consts::LN_2),
            cognitive: 0.5 + std::f64::consts::LN_2,
            social: 0.5 + std::f64::consts::LN_2,
        }
    }
}

/// `[search.brent]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrentOptions {
    /// Absolute resolution in ε₁ at which Brent stops.
    pub tolerance: f64,
}

impl Default for BrentOptions {
    fn default() -> Self {
        Self { tolerance: 0.05 }
    }
}

/// `[search.random]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomOptions {
    /// Points drawn per iteration (run concurrently; 1..=1000); default: the
    /// number of workers. The sequence of points does not depend on it.
    pub batch: Option<usize>,
}

/// `[search]` of a study config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// The solver.
    #[serde(default)]
    pub solver: SolverKind,
    /// N, the number of coefficients ε₁..ε_N searched.
    #[serde(default = "one")]
    pub terms: usize,
    /// Lower bounds per coefficient (default −1 each; |bound| ≤ f32::MAX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<Vec<f64>>,
    /// Upper bounds per coefficient (default 10 each; |bound| ≤ f32::MAX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<Vec<f64>>,
    /// Bayesian solver options.
    #[serde(default)]
    pub bayes: BayesOptions,
    /// Nelder–Mead options.
    #[serde(default)]
    pub nelder_mead: NelderMeadOptions,
    /// Particle swarm options.
    #[serde(default)]
    pub particle_swarm: SwarmOptions,
    /// Brent options.
    #[serde(default)]
    pub brent: BrentOptions,
    /// Random search options.
    #[serde(default)]
    pub random: RandomOptions,
}

fn one() -> usize {
    1
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            solver: SolverKind::default(),
            terms: 1,
            lower: None,
            upper: None,
            bayes: Default::default(),
            nelder_mead: Default::default(),
            particle_swarm: Default::default(),
            brent: Default::default(),
            random: Default::default(),
        }
    }
}

/// Largest |ε| a search bound may have (`search.lower`, `search.upper`,
/// `search.nelder_mead.initial_step`): f32's largest value, as the loss
/// computes in f32 (a larger ε becomes ∞). Useful coefficients are far
/// smaller (the paper's are in [-1, 10]).
pub const MAX_ABS_BOUND: f64 = f32::MAX as f64;
/// Largest `search.particle_swarm.particles` and `search.random.batch`
/// (points held and dispatched per iteration).
pub const MAX_POINTS_PER_ITERATION: usize = 1000;

/// A setting that breaks a rule: the key (e.g. `search.lower`) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct InvalidSetting {
    /// The dotted key.
    pub key: String,
    /// What is wrong, naming the value.
    pub message: String,
}

fn invalid(key: &str, message: String) -> InvalidSetting {
    InvalidSetting {
        key: key.to_string(),
        message,
    }
}

impl SearchConfig {
    /// The bounds, defaults filled in (call [`SearchConfig::validate`] first).
    pub fn bounds(&self) -> Bounds {
        Bounds {
            lower: self.lower.clone().unwrap_or_else(|| vec![-1.0; self.terms]),
            upper: self.upper.clone().unwrap_or_else(|| vec![10.0; self.terms]),
        }
    }

    /// Checks every rule; the error names the key and the value.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=8).contains(&self.terms) {
            return Err(invalid(
                "search.terms",
                format!("{} must be in 1..=8", self.terms),
            ));
        }
        for (key, b) in [("search.lower", &self.lower), ("search.upper", &self.upper)] {
            if let Some(b) = b {
                if b.len() != self.terms {
                    return Err(invalid(
                        key,
                        format!("{b:?} has {} value(s) but terms = {}", b.len(), self.terms),
                    ));
                }
                if let Some(x) = b.iter().find(|x| !x.is_finite()) {
                    return Err(invalid(key, format!("{x} is not finite")));
                }
                if let Some(x) = b.iter().find(|x| x.abs() > MAX_ABS_BOUND) {
                    return Err(invalid(
                        key,
                        format!(
                            "{x:e} must be in [-{m:e}, {m:e}] (f32's range: the loss computes in f32)",
                            m = f32::MAX
                        ),
                    ));
                }
            }
        }
        let b = self.bounds();
        for j in 0..self.terms {
            let (lo, hi) = (b.lower[j], b.upper[j]);
            if lo >= hi {
                return Err(invalid(
                    "search.lower",
                    format!("lower[{j}] = {lo} is not below upper[{j}] = {hi}"),
                ));
            }
            if !(lo <= 0.0 && 0.0 <= hi) {
                return Err(invalid(
                    "search.lower",
                    format!(
                        "the box [{lo}, {hi}] of ε{} must contain 0: trial 0 is the cross-entropy baseline ε = 0",
                        j + 1
                    ),
                ));
            }
        }
        if self.terms == 1 && b.lower[0] < -1.0 {
            return Err(invalid(
                "search.lower",
                format!(
                    "lower[0] = {} is below -1: Poly-1 with ε₁ < -1 is not decreasing in pt (it rewards wrong answers)",
                    b.lower[0]
                ),
            ));
        }
        let by = &self.bayes;
        if by.initial_points != 0 && !(2..=64).contains(&by.initial_points) {
            return Err(invalid(
                "search.bayes.initial_points",
                format!("{} must be 0 (automatic) or in 2..=64", by.initial_points),
            ));
        }
        if !(1..=100).contains(&by.min_seeds) {
            return Err(invalid(
                "search.bayes.min_seeds",
                format!("{} must be in 1..=100", by.min_seeds),
            ));
        }
        if !(by.min_seeds..=100).contains(&by.max_seeds) {
            return Err(invalid(
                "search.bayes.max_seeds",
                format!(
                    "{} must be in min_seeds..=100 ({}..=100)",
                    by.max_seeds, by.min_seeds
                ),
            ));
        }
        if !(by.race_threshold > 0.0 && by.race_threshold < 0.5) {
            return Err(invalid(
                "search.bayes.race_threshold",
                format!("{} must be in (0, 0.5)", by.race_threshold),
            ));
        }
        if !(16..=100_000).contains(&by.candidates) {
            return Err(invalid(
                "search.bayes.candidates",
                format!("{} must be in 16..=100000", by.candidates),
            ));
        }
        if !(by.xi.is_finite() && (0.0..=0.1).contains(&by.xi)) {
            return Err(invalid(
                "search.bayes.xi",
                format!("{} must be in [0, 0.1]", by.xi),
            ));
        }
        if !(1..=64).contains(&by.fit_restarts) {
            return Err(invalid(
                "search.bayes.fit_restarts",
                format!("{} must be in 1..=64", by.fit_restarts),
            ));
        }
        let nm = &self.nelder_mead;
        let pos = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(key, format!("{v} must be finite and > 0")))
            }
        };
        pos("search.nelder_mead.initial_step", nm.initial_step)?;
        if nm.initial_step > MAX_ABS_BOUND {
            return Err(invalid(
                "search.nelder_mead.initial_step",
                format!(
                    "{:e} must be in (0, {:e}] (f32's range)",
                    nm.initial_step,
                    f32::MAX
                ),
            ));
        }
        pos("search.nelder_mead.alpha", nm.alpha)?;
        if !(nm.sd_tolerance.is_finite() && nm.sd_tolerance >= 0.0) {
            return Err(invalid(
                "search.nelder_mead.sd_tolerance",
                format!("{} must be finite and >= 0", nm.sd_tolerance),
            ));
        }
        if !(nm.gamma.is_finite() && nm.gamma > 1.0) {
            return Err(invalid(
                "search.nelder_mead.gamma",
                format!("{} must be > 1", nm.gamma),
            ));
        }
        if !(nm.rho > 0.0 && nm.rho <= 0.5) {
            return Err(invalid(
                "search.nelder_mead.rho",
                format!("{} must be in (0, 0.5]", nm.rho),
            ));
        }
        if !(nm.sigma > 0.0 && nm.sigma <= 1.0) {
            return Err(invalid(
                "search.nelder_mead.sigma",
                format!("{} must be in (0, 1]", nm.sigma),
            ));
        }
        let ps = &self.particle_swarm;
        if !(2..=MAX_POINTS_PER_ITERATION).contains(&ps.particles) {
            return Err(invalid(
                "search.particle_swarm.particles",
                format!("{} must be in 2..={MAX_POINTS_PER_ITERATION}", ps.particles),
            ));
        }
        for (key, v) in [
            ("search.particle_swarm.inertia", ps.inertia),
            ("search.particle_swarm.cognitive", ps.cognitive),
            ("search.particle_swarm.social", ps.social),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(key, format!("{v} must be finite and >= 0")));
            }
        }
        pos("search.brent.tolerance", self.brent.tolerance)?;
        if self.solver == SolverKind::Brent && self.terms != 1 {
            return Err(invalid(
                "search.solver",
                format!(
                    "\"brent\" searches one coefficient but terms = {}",
                    self.terms
                ),
            ));
        }
        if let Some(b) = self.random.batch {
            if !(1..=MAX_POINTS_PER_ITERATION).contains(&b) {
                return Err(invalid(
                    "search.random.batch",
                    format!("{b} must be in 1..={MAX_POINTS_PER_ITERATION}"),
                ));
            }
        }
        Ok(())
    }
}
