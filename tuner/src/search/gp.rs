//! Gaussian-process regression with a seed random effect: the surrogate of
//! the Bayesian search.
//!
//! # Model
//!
//! Observations `y_i` at `x_i ∈ [0,1]^d` (the caller maps ε into the unit
//! box) are made on seed group `g_i`:
//!
//! ```text
//! y_i = m + f(x_i) + b_{g_i} + e_i,
//! f ~ GP(0, σ_f² · k),   b_g ~ N(0, σ_b²) iid per group,   e_i ~ N(0, σ_n²),
//! k(x, x') = (1 + √5 r + 5r²/3) · exp(−√5 r),   r² = Σ_j (x_j − x'_j)² / ℓ_j²   (Matérn 5/2, ARD)
//! cov(y_i, y_j) = σ_f² k(x_i, x_j) + σ_b² [g_i = g_j] + σ_n² [i = j].
//! ```
//!
//! The seed effect `b_g` is what makes paired seeds (common random numbers)
//! informative: a seed that shifts every ε alike cancels in differences
//! between points observed on the same seed, so the posterior of `f` is
//! much sharper than an iid-noise model with the same total variance.
//!
//! `y` is standardised internally — `m = mean(y)`, `s = std(y)` (population
//! std; `s = 1` if it is 0 or n = 1), `ỹ = (y − m)/s` — exactly as
//! scikit-learn's `normalize_y=True`. The variances in [`Hyper`] are in these
//! standardised units. With `K = cov(ỹ)` and its Cholesky factor `L`:
//!
//! ```text
//! α = K⁻¹ ỹ,
//! log p(ỹ) = −½ ỹᵀα − Σ log L_ii − (n/2) log 2π,
//! E[m + f(x*)] = m + s · k*ᵀ α,            k*_i = σ_f² k(x*, x_i),
//! Var[f(x*)]   = s² · (σ_f² − k*ᵀ K⁻¹ k*),
//! E[b_g]       = s · σ_b² · Σ_{i: g_i = g} α_i.
//! ```
//!
//! [`Gp::predict`] returns the *latent* `m + f(x)`: no group effect, no
//! noise, in the original units of `y`.
//!
//! # Fitting (type-II maximum likelihood)
//!
//! [`Gp::fit`] maximises `log p(ỹ)` over the log hyperparameters inside
//! [`FitOptions`]' bounds, with analytic gradients
//! `∂ log p/∂θ = ½ tr((ααᵀ − K⁻¹) ∂K/∂θ)` and argmin's L-BFGS
//! (More–Thuente line search). Each bounded log parameter is written as
//! `log θ = lo + (hi − lo) · sigmoid(u)` so the search over `u` is
//! unconstrained and never leaves the box. It starts from a fixed default
//! point and from `restarts` scrambled-Sobol points in the log box (seeded by
//! [`FitOptions::seed`]), and keeps the best likelihood evaluated anywhere —
//! deterministic for a given seed. A covariance that fails Cholesky gets a
//! diagonal jitter (1e-10 × mean diagonal, ×10 up to 1e-4); points where even
//! that fails are skipped, so the fit never returns NaN.
//!
//! σ_b² is only identifiable when at least two groups exist and some group
//! has two or more observations. Otherwise (all observations on one seed:
//! the effect is a constant the standardisation already removed; every
//! observation on its own seed: the effect is indistinguishable from noise)
//! σ_b² is held at its lower bound.
//!
//! # Linear algebra
//!
//! The covariance matrices here are tiny (a search has ≤ a few hundred
//! observations), so a hand-written Cholesky, triangular solves and an
//! explicit inverse for the gradient (O(n³), n ≤ 200 → ≤ 10 ms) are used
//! instead of compiling a linear-algebra crate; they are checked against
//! scikit-learn / numpy goldens to 1e-8.
//!
//! ```
//! use polytune::search::gp::{FitOptions, Gp, Observation};
//!
//! let obs: Vec<Observation> = (0..8)
//!     .map(|i| {
//!         let x = i as f64 / 7.0;
//!         Observation { x: vec![x], group: i % 2, y: (3.0 * x).sin() }
//!     })
//!     .collect();
//! let gp = Gp::fit(&obs, &FitOptions::default()).unwrap();
//! let p = gp.predict(&[0.5]);
//! assert!((p.mean - 1.5f64.sin()).abs() < 0.05);
//! assert!(p.var >= 0.0);
//! ```

use std::sync::Mutex;

use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use super::acquisition::sobol_points;

/// One observation: the point in the unit box, its seed group and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Point in `[0,1]^d`.
    pub x: Vec<f64>,
    /// Seed group: observations on the same group share `b_g`.
    pub group: u64,
    /// Observed value (maximised by the search).
    pub y: f64,
}

/// Hyperparameters; the variances are in standardised units of `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyper {
    /// Matérn length scale per dimension (in the unit box).
    pub length_scales: Vec<f64>,
    /// σ_f²: variance of the smooth part `f`.
    pub signal_var: f64,
    /// σ_b²: variance of the per-group (seed) effect.
    pub group_var: f64,
    /// σ_n²: variance of the per-observation noise.
    pub noise_var: f64,
}

/// Options of [`Gp::fit`]. Bounds are `(lower, upper)` on the
/// hyperparameter itself; the search runs over its logarithm. A bound with
/// `lower == upper` holds that hyperparameter fixed (and then 0 is allowed,
/// e.g. `group_var_bounds = (0.0, 0.0)` for a model without a seed effect);
/// otherwise `0 < lower < upper < ∞`.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Extra L-BFGS starts besides the default one (scrambled-Sobol points in
    /// the log box). Default 4.
    pub restarts: usize,
    /// Seeds the restart points. Default 0.
    pub seed: u64,
    /// Bounds of every length scale ℓ_j. Default (0.02, 5).
    pub length_scale_bounds: (f64, f64),
    /// Bounds of σ_f². Default (1e-3, 20).
    pub signal_var_bounds: (f64, f64),
    /// Bounds of σ_b². Default (1e-6, 20).
    pub group_var_bounds: (f64, f64),
    /// Bounds of σ_n². Default (1e-6, 5).
    pub noise_var_bounds: (f64, f64),
    /// L-BFGS iterations per start. Default 100.
    pub max_iters: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            restarts: 4,
            seed: 0,
            length_scale_bounds: (0.02, 5.0),
            signal_var_bounds: (1e-3, 20.0),
            group_var_bounds: (1e-6, 20.0),
            noise_var_bounds: (1e-6, 5.0),
            max_iters: 100,
        }
    }
}

/// Posterior of the latent `m + f(x)` (no group effect, no noise), in the
/// original units of `y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Posterior mean.
    pub mean: f64,
    /// Posterior variance (≥ 0).
    pub var: f64,
}

/// Why a GP cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum GpError {
    /// No observations.
    #[error("a GP needs at least one observation")]
    Empty,
    /// The first observation's x is empty.
    #[error("observation 0 has an empty x (the unit box needs at least one dimension)")]
    ZeroDimension,
    /// An observation's x has a different length than the others.
    #[error("observation {index} has x of length {got}, expected {expected}")]
    DimensionMismatch {
        /// Index of the observation (or of the predicted point, `usize::MAX` for `with_extra`'s).
        index: usize,
        /// Expected length.
        expected: usize,
        /// Its length.
        got: usize,
    },
    /// An observation holds NaN or ±∞.
    #[error("observation {index}: {field} = {value} is not finite")]
    NonFinite {
        /// Index of the observation.
        index: usize,
        /// `"x"`, `"y"`.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A hyperparameter is invalid.
    #[error("hyperparameter {name} = {value} is invalid (must be finite, variances ≥ 0, length scales > 0)")]
    InvalidHyper {
        /// Which one.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// `length_scales` has the wrong length.
    #[error("{got} length scales for {expected}-dimensional x")]
    LengthScaleCount {
        /// Dimension of x.
        expected: usize,
        /// Length scales given.
        got: usize,
    },
    /// A fit bound is invalid.
    #[error("fit bound {name} = ({lower}, {upper}) is invalid: need 0 < lower < upper < ∞, or lower = upper ≥ 0 (fixed)")]
    InvalidBounds {
        /// Which bound.
        name: &'static str,
        /// Lower.
        lower: f64,
        /// Upper.
        upper: f64,
    },
    /// The covariance is not positive definite even with the largest jitter.
    #[error("covariance of {n} observations is not positive definite even with jitter {jitter:e}")]
    NotPositiveDefinite {
        /// Observations.
        n: usize,
        /// Largest jitter tried.
        jitter: f64,
    },
}

/// A GP conditioned on observations (see the module doc).
#[derive(Debug, Clone)]
pub struct Gp {
    obs: Vec<Observation>,
    dim: usize,
    hyper: Hyper,
    y_mean: f64,
    y_std: f64,
    /// Lower Cholesky factor of K (row-major n × n).
    chol: Vec<f64>,
    alpha: Vec<f64>,
    lml: f64,
    jitter: f64,
}

const LN_2PI: f64 = 1.837_877_066_409_345_5;
const SQRT5: f64 = 2.236_067_977_499_79;
/// Jitter ladder, relative to the mean diagonal of K.
const JITTER_START: f64 = 1e-10;
const JITTER_MAX: f64 = 1e-4;

impl Gp {
    /// Conditions a GP with fixed hyperparameters on `obs`.
    pub fn new(obs: &[Observation], hyper: Hyper) -> Result<Gp, GpError> {
        let dim = validate_observations(obs)?;
        validate_hyper(&hyper, dim)?;
        let (y_mean, y_std) = standardisation(obs);
        Self::build(obs.to_vec(), dim, hyper, y_mean, y_std)
    }

    /// Fits the hyperparameters by type-II maximum likelihood (see the module
    /// doc) and conditions on `obs`. Deterministic for a given
    /// [`FitOptions::seed`].
    pub fn fit(obs: &[Observation], opts: &FitOptions) -> Result<Gp, GpError> {
        let dim = validate_observations(obs)?;
        let (y_mean, y_std) = standardisation(obs);
        let space = ParamSpace::new(obs, dim, opts)?;
        let data = Data::new(obs, y_mean, y_std);
        let problem = LmlProblem {
            data: &data,
            space: &space,
            best: Mutex::new(None),
            cache: Mutex::new(None),
        };
        // The default start, then Sobol points in the log box.
        let mut starts = vec![space.default_u()];
        if space.free.is_empty() {
            starts.clear();
            // Nothing to optimise: evaluate the fixed point once.
            let _ = problem.evaluate(&[]);
        } else if opts.restarts > 0 {
            for p in sobol_points(opts.restarts, space.free.len(), opts.seed) {
                starts.push(space.u_from_unit(&p));
            }
        }
        for u0 in starts {
            // A failure of one start (every point non-PD) only loses that start.
            let _ = problem.evaluate(&u0);
            let Ok(solver) = LBFGS::new(MoreThuenteLineSearch::new(), 10)
                .with_tolerance_grad(1e-7)
                .and_then(|s| s.with_tolerance_cost(1e-12))
            else {
                continue;
            };
            let _ = Executor::new(&problem, solver)
                .configure(|s| s.param(u0).max_iters(opts.max_iters))
                .ctrlc(false)
                .run();
        }
        let best = problem.best.into_inner().unwrap_or_else(|e| e.into_inner());
        let Some((_, u)) = best else {
            return Err(GpError::NotPositiveDefinite {
                n: obs.len(),
                jitter: JITTER_MAX,
            });
        };
        let hyper = space.hyper(&u);
        Self::build(obs.to_vec(), dim, hyper, y_mean, y_std)
    }

    fn build(
        obs: Vec<Observation>,
        dim: usize,
        hyper: Hyper,
        y_mean: f64,
        y_std: f64,
    ) -> Result<Gp, GpError> {
        let data = Data::new(&obs, y_mean, y_std);
        let n = obs.len();
        let cov = data.covariance(&hyper);
        let f = factor(cov, &data.yn).ok_or(GpError::NotPositiveDefinite {
            n,
            jitter: JITTER_MAX,
        })?;
        Ok(Gp {
            obs,
            dim,
            hyper,
            y_mean,
            y_std,
            chol: f.chol,
            alpha: f.alpha,
            lml: f.lml,
            jitter: f.jitter,
        })
    }

    /// Log marginal likelihood of the standardised targets (scikit-learn's
    /// `log_marginal_likelihood_value_` with `normalize_y=True`). For a GP
    /// made by [`Gp::with_extra`], the standardisation of the original data
    /// is kept.
    pub fn log_marginal_likelihood(&self) -> f64 {
        self.lml
    }

    /// Posterior of the latent `m + f(x)` at `x` (original units, no group
    /// effect, no noise). An `x` of the wrong length or with non-finite
    /// coordinates gives NaN mean and variance; [`Gp::try_predict`] says why.
    pub fn predict(&self, x: &[f64]) -> Prediction {
        self.try_predict(x).unwrap_or(Prediction {
            mean: f64::NAN,
            var: f64::NAN,
        })
    }

    /// [`Gp::predict`] that rejects a wrong-length or non-finite `x`.
    pub fn try_predict(&self, x: &[f64]) -> Result<Prediction, GpError> {
        if x.len() != self.dim {
            return Err(GpError::DimensionMismatch {
                index: usize::MAX,
                expected: self.dim,
                got: x.len(),
            });
        }
        if let Some(&value) = x.iter().find(|v| !v.is_finite()) {
            return Err(GpError::NonFinite {
                index: usize::MAX,
                field: "x",
                value,
            });
        }
        let n = self.obs.len();
        let sf = self.hyper.signal_var;
        let ks: Vec<f64> = self
            .obs
            .iter()
            .map(|o| sf * matern52(x, &o.x, &self.hyper.length_scales))
            .collect();
        let mean_n: f64 = ks.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = forward_solve(&self.chol, n, &ks);
        let var_n = (sf - v.iter().map(|t| t * t).sum::<f64>()).max(0.0);
        Ok(Prediction {
            mean: self.y_mean + self.y_std * mean_n,
            var: self.y_std * self.y_std * var_n,
        })
    }

    /// The hyperparameters (standardised units).
    pub fn hyper(&self) -> &Hyper {
        &self.hyper
    }

    /// Number of observations.
    pub fn len(&self) -> usize {
        self.obs.len()
    }

    /// Always false: a GP holds at least one observation.
    pub fn is_empty(&self) -> bool {
        self.obs.is_empty()
    }

    /// Dimension of x.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The observations conditioned on.
    pub fn observations(&self) -> &[Observation] {
        &self.obs
    }

    /// Standard deviation used to standardise y (1 when y has no spread).
    pub fn y_scale(&self) -> f64 {
        self.y_std
    }

    /// Diagonal jitter that was added to K (0 when Cholesky succeeded
    /// without).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The same hyperparameters and standardisation, one more observation
    /// (kriging believer). Refactors K from scratch (O(n³), n is small).
    pub fn with_extra(&self, obs: Observation) -> Result<Gp, GpError> {
        let index = self.obs.len();
        check_observation(&obs, index, self.dim)?;
        let mut all = self.obs.clone();
        all.push(obs);
        Self::build(all, self.dim, self.hyper.clone(), self.y_mean, self.y_std)
    }

    /// Posterior mean of the group (seed) effect `b_g` in original units;
    /// `None` for a group without observations.
    pub fn group_effect(&self, group: u64) -> Option<f64> {
        let mut any = false;
        let mut sum = 0.0;
        for (o, a) in self.obs.iter().zip(&self.alpha) {
            if o.group == group {
                any = true;
                sum += a;
            }
        }
        any.then_some(self.y_std * self.hyper.group_var * sum)
    }

    /// The observation with the highest posterior mean of `m + f(x)` (lowest
    /// index on ties) and that mean: the incumbent for expected improvement
    /// and the recommendation of a noisy search (never a single lucky
    /// observation).
    pub fn best_observed(&self) -> (usize, f64) {
        let mut best = (0, f64::NEG_INFINITY);
        for (i, o) in self.obs.iter().enumerate() {
            let m = self.predict(&o.x).mean;
            if m > best.1 {
                best = (i, m);
            }
        }
        best
    }
}

fn check_observation(o: &Observation, index: usize, dim: usize) -> Result<(), GpError> {
    if o.x.len() != dim {
        return Err(GpError::DimensionMismatch {
            index,
            expected: dim,
            got: o.x.len(),
        });
    }
    if let Some(&value) = o.x.iter().find(|v| !v.is_finite()) {
        return Err(GpError::NonFinite {
            index,
            field: "x",
            value,
        });
    }
    if !o.y.is_finite() {
        return Err(GpError::NonFinite {
            index,
            field: "y",
            value: o.y,
        });
    }
    Ok(())
}

fn validate_observations(obs: &[Observation]) -> Result<usize, GpError> {
    let first = obs.first().ok_or(GpError::Empty)?;
    let dim = first.x.len();
    if dim == 0 {
        return Err(GpError::ZeroDimension);
    }
    for (i, o) in obs.iter().enumerate() {
        check_observation(o, i, dim)?;
    }
    Ok(dim)
}

fn validate_hyper(h: &Hyper, dim: usize) -> Result<(), GpError> {
    if h.length_scales.len() != dim {
        return Err(GpError::LengthScaleCount {
            expected: dim,
            got: h.length_scales.len(),
        });
    }
    if let Some(&value) = h
        .length_scales
        .iter()
        .find(|l| !(l.is_finite() && **l > 0.0))
    {
        return Err(GpError::InvalidHyper {
            name: "length_scales",
            value,
        });
    }
    for (name, value) in [
        ("signal_var", h.signal_var),
        ("group_var", h.group_var),
        ("noise_var", h.noise_var),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(GpError::InvalidHyper { name, value });
        }
    }
    Ok(())
}

/// `(mean, std)` as scikit-learn's `normalize_y`: population std, 1 if 0.
fn standardisation(obs: &[Observation]) -> (f64, f64) {
    let n = obs.len() as f64;
    let mean = obs.iter().map(|o| o.y).sum::<f64>() / n;
    let var = obs.iter().map(|o| (o.y - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    let std = if obs.len() == 1 || !std.is_finite() || std <= 0.0 {
        1.0
    } else {
        std
    };
    (mean, std)
}

/// Matérn 5/2 correlation with ARD length scales.
fn matern52(a: &[f64], b: &[f64], ls: &[f64]) -> f64 {
    let r2: f64 = a
        .iter()
        .zip(b)
        .zip(ls)
        .map(|((x, y), l)| ((x - y) / l).powi(2))
        .sum();
    let r = r2.sqrt();
    (1.0 + SQRT5 * r + 5.0 / 3.0 * r2) * (-SQRT5 * r).exp()
}

/// The observations in the layout the likelihood needs.
struct Data<'a> {
    obs: &'a [Observation],
    yn: Vec<f64>,
}

impl<'a> Data<'a> {
    fn new(obs: &'a [Observation], y_mean: f64, y_std: f64) -> Self {
        Self {
            obs,
            yn: obs.iter().map(|o| (o.y - y_mean) / y_std).collect(),
        }
    }

    fn n(&self) -> usize {
        self.obs.len()
    }

    /// K (row-major), without jitter.
    fn covariance(&self, h: &Hyper) -> Vec<f64> {
        let n = self.n();
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let mut v =
                    h.signal_var * matern52(&self.obs[i].x, &self.obs[j].x, &h.length_scales);
                if self.obs[i].group == self.obs[j].group {
                    v += h.group_var;
                }
                if i == j {
                    v += h.noise_var;
                }
                k[i * n + j] = v;
                k[j * n + i] = v;
            }
        }
        k
    }

    /// log p(ỹ) and its gradient with respect to
    /// `(log ℓ_1..log ℓ_d, log σ_f², log σ_b², log σ_n²)`.
    fn lml_and_grad(&self, h: &Hyper) -> Option<(f64, Vec<f64>)> {
        let n = self.n();
        let d = h.length_scales.len();
        let f = factor(self.covariance(h), &self.yn)?;
        // W = ααᵀ − K⁻¹, with K⁻¹ = L⁻ᵀ L⁻¹.
        let linv = lower_inverse(&f.chol, n);
        let mut w = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                // (L⁻ᵀL⁻¹)_ij = Σ_k≥max(i,j) Linv_ki Linv_kj
                let mut kinv = 0.0;
                for k in i..n {
                    kinv += linv[k * n + i] * linv[k * n + j];
                }
                let v = f.alpha[i] * f.alpha[j] - kinv;
                w[i * n + j] = v;
                w[j * n + i] = v;
            }
        }
        let mut grad = vec![0.0; d + 3];
        let mut diff2 = vec![0.0; d];
        for i in 0..n {
            for j in 0..=i {
                // Off-diagonal pairs count twice in the trace.
                let weight = if i == j { 0.5 } else { 1.0 } * w[i * n + j];
                let (xi, xj) = (&self.obs[i].x, &self.obs[j].x);
                let mut r2 = 0.0;
                for t in 0..d {
                    diff2[t] = ((xi[t] - xj[t]) / h.length_scales[t]).powi(2);
                    r2 += diff2[t];
                }
                let r = r2.sqrt();
                let e = (-SQRT5 * r).exp();
                let kval = (1.0 + SQRT5 * r + 5.0 / 3.0 * r2) * e;
                // ∂k/∂log ℓ_t = (5/3)(1 + √5 r) e^{−√5 r} (x_t − x'_t)²/ℓ_t²
                let common = h.signal_var * 5.0 / 3.0 * (1.0 + SQRT5 * r) * e;
                for t in 0..d {
                    grad[t] += weight * common * diff2[t];
                }
                grad[d] += weight * h.signal_var * kval;
                if self.obs[i].group == self.obs[j].group {
                    grad[d + 1] += weight * h.group_var;
                }
                if i == j {
                    grad[d + 2] += weight * h.noise_var;
                }
            }
        }
        Some((f.lml, grad))
    }
}

struct Factor {
    chol: Vec<f64>,
    alpha: Vec<f64>,
    lml: f64,
    jitter: f64,
}

/// Cholesky of `cov` (adding jitter if needed), α and log p(ỹ).
fn factor(cov: Vec<f64>, yn: &[f64]) -> Option<Factor> {
    let n = yn.len();
    if cov.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mean_diag = (0..n).map(|i| cov[i * n + i]).sum::<f64>() / n as f64;
    let scale = if mean_diag > 0.0 { mean_diag } else { 1.0 };
    let mut jitter = 0.0;
    let mut rel = JITTER_START;
    let chol = loop {
        let mut a = cov.clone();
        for i in 0..n {
            a[i * n + i] += jitter;
        }
        if cholesky_in_place(&mut a, n) {
            break a;
        }
        if rel > JITTER_MAX * 1.000_001 {
            return None;
        }
        jitter = rel * scale;
        rel *= 10.0;
    };
    let z = forward_solve(&chol, n, yn);
    let alpha = backward_solve(&chol, n, &z);
    let log_det_half: f64 = (0..n).map(|i| chol[i * n + i].ln()).sum();
    let lml = -0.5 * z.iter().map(|t| t * t).sum::<f64>() - log_det_half - 0.5 * n as f64 * LN_2PI;
    lml.is_finite().then_some(Factor {
        chol,
        alpha,
        lml,
        jitter,
    })
}

/// In-place lower Cholesky (upper triangle zeroed); false if not PD.
fn cholesky_in_place(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if !(s > 0.0 && s.is_finite()) {
            return false;
        }
        let ljj = s.sqrt();
        a[j * n + j] = ljj;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / ljj;
        }
        for k in j + 1..n {
            a[j * n + k] = 0.0;
        }
    }
    true
}

/// Solves L z = b.
fn forward_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * z[k];
        }
        z[i] = s / l[i * n + i];
    }
    z
}

/// Solves Lᵀ x = z.
fn backward_solve(l: &[f64], n: usize, z: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = z[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x
}

/// L⁻¹ of a lower-triangular L (row-major).
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for c in 0..n {
        inv[c * n + c] = 1.0 / l[c * n + c];
        for i in c + 1..n {
            let mut s = 0.0;
            for k in c..i {
                s -= l[i * n + k] * inv[k * n + c];
            }
            inv[i * n + c] = s / l[i * n + i];
        }
    }
    inv
}

/// Which hyperparameters the fit moves, and their log bounds.
struct ParamSpace {
    dim: usize,
    /// Value of every hyperparameter slot `(ℓ_1..ℓ_d, σ_f², σ_b², σ_n²)` when fixed.
    fixed: Vec<f64>,
    /// Free slots with `(log lo, log hi)`.
    free: Vec<(usize, f64, f64)>,
}

impl ParamSpace {
    fn new(obs: &[Observation], dim: usize, opts: &FitOptions) -> Result<Self, GpError> {
        let checked = |name: &'static str, (lower, upper): (f64, f64)| {
            let ok = lower.is_finite()
                && upper.is_finite()
                && ((lower == upper && lower >= 0.0) || (lower > 0.0 && lower < upper));
            if ok {
                Ok((lower, upper))
            } else {
                Err(GpError::InvalidBounds { name, lower, upper })
            }
        };
        let ls = checked("length_scale_bounds", opts.length_scale_bounds)?;
        if ls.0 == 0.0 {
            return Err(GpError::InvalidBounds {
                name: "length_scale_bounds",
                lower: ls.0,
                upper: ls.1,
            });
        }
        let sf = checked("signal_var_bounds", opts.signal_var_bounds)?;
        let sb = checked("group_var_bounds", opts.group_var_bounds)?;
        let sn = checked("noise_var_bounds", opts.noise_var_bounds)?;
        let identifiable = group_effect_identifiable(obs);
        let mut slots: Vec<(f64, f64)> = vec![ls; dim];
        slots.push(sf);
        slots.push(if identifiable { sb } else { (sb.0, sb.0) });
        slots.push(sn);
        let mut fixed = Vec::with_capacity(slots.len());
        let mut free = Vec::new();
        for (i, &(lo, hi)) in slots.iter().enumerate() {
            fixed.push(lo);
            if lo < hi {
                free.push((i, lo.ln(), hi.ln()));
            }
        }
        Ok(Self { dim, fixed, free })
    }

    fn hyper_from_slots(&self, slots: &[f64]) -> Hyper {
        let d = self.dim;
        Hyper {
            length_scales: slots[..d].to_vec(),
            signal_var: slots[d],
            group_var: slots[d + 1],
            noise_var: slots[d + 2],
        }
    }

    fn hyper(&self, u: &[f64]) -> Hyper {
        let mut slots = self.fixed.clone();
        for (&(i, lo, hi), &ui) in self.free.iter().zip(u) {
            slots[i] = (lo + (hi - lo) * sigmoid(ui)).exp();
        }
        self.hyper_from_slots(&slots)
    }

    /// `d log θ / d u` for each free slot.
    fn dlog_du(&self, u: &[f64]) -> Vec<f64> {
        self.free
            .iter()
            .zip(u)
            .map(|(&(_, lo, hi), &ui)| {
                let s = sigmoid(ui);
                (hi - lo) * s * (1.0 - s)
            })
            .collect()
    }

    /// u for a point given as fractions of each log box (clamped inside).
    fn u_from_unit(&self, p: &[f64]) -> Vec<f64> {
        p.iter()
            .map(|&t| logit(t.clamp(1e-3, 1.0 - 1e-3)))
            .collect()
    }

    /// The default start: ℓ = 0.3, σ_f² = 1, σ_b² = 0.3, σ_n² = 0.1, clamped.
    fn default_u(&self) -> Vec<f64> {
        let d = self.dim;
        self.free
            .iter()
            .map(|&(i, lo, hi)| {
                let v: f64 = if i < d {
                    0.3
                } else if i == d {
                    1.0
                } else if i == d + 1 {
                    0.3
                } else {
                    0.1
                };
                logit(((v.ln() - lo) / (hi - lo)).clamp(1e-3, 1.0 - 1e-3))
            })
            .collect()
    }
}

/// σ_b² is identifiable with ≥ 2 groups and some group holding ≥ 2 observations.
fn group_effect_identifiable(obs: &[Observation]) -> bool {
    let mut groups: Vec<u64> = obs.iter().map(|o| o.group).collect();
    groups.sort_unstable();
    let distinct = {
        let mut g = groups.clone();
        g.dedup();
        g.len()
    };
    distinct >= 2 && groups.windows(2).any(|w| w[0] == w[1])
}

fn sigmoid(u: f64) -> f64 {
    if u >= 0.0 {
        1.0 / (1.0 + (-u).exp())
    } else {
        let e = u.exp();
        e / (1.0 + e)
    }
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// `(u, −lml, −∂lml/∂u)` of the last evaluation.
type CachedEval = (Vec<f64>, f64, Vec<f64>);

/// −log p(ỹ) over the unconstrained u, for argmin. Remembers the best point
/// evaluated anywhere, and the last (cost, gradient) pair so the line
/// search's cost and gradient calls at one point factor K once.
struct LmlProblem<'a> {
    data: &'a Data<'a>,
    space: &'a ParamSpace,
    best: Mutex<Option<(f64, Vec<f64>)>>,
    cache: Mutex<Option<CachedEval>>,
}

impl LmlProblem<'_> {
    /// (−lml, −∂lml/∂u) at u, or None where K cannot be factored.
    fn evaluate(&self, u: &[f64]) -> Option<(f64, Vec<f64>)> {
        if u.iter().any(|v| !v.is_finite()) {
            return None;
        }
        if let Some((cu, c, g)) = self.cache.lock().ok()?.as_ref() {
            if cu.as_slice() == u {
                return Some((*c, g.clone()));
            }
        }
        let h = self.space.hyper(u);
        let (lml, grad_log) = self.data.lml_and_grad(&h)?;
        let chain = self.space.dlog_du(u);
        let grad_u: Vec<f64> = self
            .space
            .free
            .iter()
            .zip(&chain)
            .map(|(&(i, _, _), c)| -grad_log[i] * c)
            .collect();
        if grad_u.iter().any(|g| !g.is_finite()) {
            return None;
        }
        let mut best = self.best.lock().ok()?;
        if best.as_ref().is_none_or(|(b, _)| lml > *b) {
            *best = Some((lml, u.to_vec()));
        }
        drop(best);
        *self.cache.lock().ok()? = Some((u.to_vec(), -lml, grad_u.clone()));
        Some((-lml, grad_u))
    }
}

impl CostFunction for &LmlProblem<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, u: &Vec<f64>) -> Result<f64, ArgminError> {
        self.evaluate(u)
            .map(|(c, _)| c)
            .ok_or_else(|| ArgminError::msg("covariance not positive definite"))
    }
}

impl Gradient for &LmlProblem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, u: &Vec<f64>) -> Result<Vec<f64>, ArgminError> {
        self.evaluate(u)
            .map(|(_, g)| g)
            .ok_or_else(|| ArgminError::msg("covariance not positive definite"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradient of log p(ỹ) against central differences.
    #[test]
    fn lml_gradient_matches_finite_differences() {
        let obs: Vec<Observation> = (0..9)
            .map(|i| {
                let t = i as f64 / 8.0;
                Observation {
                    x: vec![t, (7.0 * t).fract()],
                    group: i % 3,
                    y: (3.0 * t).sin() + 0.3 * (i % 3) as f64,
                }
            })
            .collect();
        let (m, s) = standardisation(&obs);
        let data = Data::new(&obs, m, s);
        let base = [0.3f64, 0.7, 1.3, 0.4, 0.05];
        let hyper = |logs: &[f64]| Hyper {
            length_scales: vec![logs[0].exp(), logs[1].exp()],
            signal_var: logs[2].exp(),
            group_var: logs[3].exp(),
            noise_var: logs[4].exp(),
        };
        let logs: Vec<f64> = base.iter().map(|v| v.ln()).collect();
        let (_, grad) = data.lml_and_grad(&hyper(&logs)).unwrap();
        for k in 0..5 {
            let h = 1e-5;
            let mut up = logs.clone();
            up[k] += h;
            let mut down = logs.clone();
            down[k] -= h;
            let fd = (data.lml_and_grad(&hyper(&up)).unwrap().0
                - data.lml_and_grad(&hyper(&down)).unwrap().0)
                / (2.0 * h);
            assert!(
                (fd - grad[k]).abs() <= 1e-6 * fd.abs().max(1.0),
                "slot {k}: analytic {} vs finite difference {fd}",
                grad[k]
            );
        }
    }
}
