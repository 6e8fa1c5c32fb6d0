//! Where to evaluate next: expected improvement on the GP posterior of the
//! latent objective, batches by kriging believer, and scrambled Sobol points.
//!
//! # Expected improvement (maximisation)
//!
//! For a posterior `f(x) ~ N(μ, σ²)`, an incumbent `best` and a margin `ξ`:
//!
//! ```text
//! EI = E[max(f − best − ξ, 0)] = (μ − best − ξ) Φ(z) + σ φ(z),   z = (μ − best − ξ)/σ,
//! ```
//!
//! and `max(μ − best − ξ, 0)` when σ = 0. The incumbent is the best
//! *posterior mean* among observed points ([`Gp::best_observed`]), not a
//! noisy observation, and the posterior is that of the latent `m + f(x)`
//! (seed effect and noise excluded): "EI on the posterior mean", which stays
//! meaningful when the observations are noisy.
//!
//! # Batches (kriging believer)
//!
//! [`propose_batch`] picks the EI maximiser, then pretends it was observed
//! with its own posterior mean (on a fresh seed group, same hyperparameters,
//! [`Gp::with_extra`]). That leaves the mean unchanged and shrinks the
//! variance around the pick, so the next EI maximiser lies elsewhere. The
//! incumbent stays the caller's `best`.
//!
//! # Candidates
//!
//! EI is evaluated on `candidates` scrambled Sobol points (Owen-scrambled,
//! `sobol_burley`), then the few best are refined by a compass (pattern)
//! search: ± a step along each coordinate, clamped into the box, the step
//! halved when no move improves, down to 1e-4. Points closer than
//! `min_distance` (max-norm in the unit box) to an observation or to an
//! earlier pick are excluded throughout, so a batch is distinct and never
//! re-proposes an observed point. When EI is negligible everywhere (below
//! 1e-12 of the y scale) the pick is the allowed candidate with the largest
//! posterior standard deviation — pure exploration — so a batch is only
//! short when the whole box is excluded.
//!
//! ```
//! use polytune::search::acquisition::{propose_batch, ProposeOptions};
//! use polytune::search::gp::{FitOptions, Gp, Observation};
//!
//! let obs: Vec<Observation> = [0.1, 0.4, 0.6, 0.9]
//!     .iter()
//!     .enumerate()
//!     .map(|(i, &x)| Observation { x: vec![x], group: i as u64, y: -(x - 0.5f64).powi(2) })
//!     .collect();
//! let gp = Gp::fit(&obs, &FitOptions::default()).unwrap();
//! let best = gp.best_observed().1;
//! let batch = propose_batch(&gp, 3, best, &ProposeOptions::default());
//! assert_eq!(batch.len(), 3);
//! assert!(batch.iter().flatten().all(|&v| (0.0..=1.0).contains(&v)));
//! ```

use super::gp::{Gp, Observation};

/// Largest dimension [`sobol_points`] supports (`sobol_burley`'s limit).
pub const MAX_SOBOL_DIM: usize = sobol_burley::NUM_DIMENSIONS as usize;
/// Largest number of points [`sobol_points`] returns (`sobol_burley`'s limit).
pub const MAX_SOBOL_POINTS: usize = 1 << 16;

/// Expected improvement for MAXIMISATION of f: `E[max(f − best − xi, 0)]`
/// under `N(mean, sd²)`. `sd = 0` → `max(mean − best − xi, 0)`. Never
/// negative; NaN inputs give 0.
///
/// ```
/// use polytune::search::acquisition::expected_improvement;
/// // At the incumbent with unit sd: σ φ(0) = 1/√(2π).
/// let ei = expected_improvement(0.0, 1.0, 0.0, 0.0);
/// assert!((ei - 0.398_942_280_401_432_7).abs() < 1e-15);
/// assert_eq!(expected_improvement(2.0, 0.0, 1.0, 0.5), 0.5);
/// ```
pub fn expected_improvement(mean: f64, sd: f64, best: f64, xi: f64) -> f64 {
    let gain = mean - best - xi;
    let ei = if sd > 0.0 {
        let z = gain / sd;
        gain * normal_cdf(z) + sd * normal_pdf(z)
    } else {
        gain
    };
    if ei > 0.0 {
        ei
    } else {
        0.0
    }
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

fn normal_pdf(z: f64) -> f64 {
    const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    INV_SQRT_2PI * (-0.5 * z * z).exp()
}

/// `n` scrambled Sobol points in `[0,1)^dim`, deterministic in `seed`.
/// `dim` must be in `1..=MAX_SOBOL_DIM` (the search uses 1..=8) and at most
/// [`MAX_SOBOL_POINTS`] are returned; `dim = 0` or too large gives no points.
///
/// ```
/// let p = polytune::search::acquisition::sobol_points(8, 2, 7);
/// assert_eq!(p.len(), 8);
/// // Stratified: each half of the first axis holds 4 points.
/// assert_eq!(p.iter().filter(|x| x[0] < 0.5).count(), 4);
/// ```
pub fn sobol_points(n: usize, dim: usize, seed: u64) -> Vec<Vec<f64>> {
    if dim == 0 || dim > MAX_SOBOL_DIM {
        return Vec::new();
    }
    let seed = fold_seed(seed);
    (0..n.min(MAX_SOBOL_POINTS) as u32)
        .map(|i| {
            (0..dim as u32)
                .map(|d| f64::from(sobol_burley::sample(i, d, seed)))
                .collect()
        })
        .collect()
}

/// A 64-bit seed as the 32-bit seed `sobol_burley` takes (splitmix64 finaliser).
fn fold_seed(seed: u64) -> u32 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z ^ (z >> 32)) as u32
}

/// Options of [`propose_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProposeOptions {
    /// Sobol candidates scored per pick. Default 512.
    pub candidates: usize,
    /// Smallest max-norm distance (unit box) from an observation or an
    /// earlier pick. Default 0.01.
    pub min_distance: f64,
    /// EI margin ξ in units of the standard deviation of the observed y
    /// ([`Gp::y_scale`]). Default 0.01.
    pub xi: f64,
    /// Seeds the Sobol candidates. Default 0.
    pub seed: u64,
}

impl Default for ProposeOptions {
    fn default() -> Self {
        Self {
            candidates: 512,
            min_distance: 0.01,
            xi: 0.01,
            seed: 0,
        }
    }
}

/// Candidates refined by the compass search per pick.
const REFINE_STARTS: usize = 4;
/// The compass search stops below this step.
const REFINE_MIN_STEP: f64 = 1e-4;

/// `k` distinct points maximising EI on the posterior of f (incumbent =
/// `best`, the best POSTERIOR MEAN among observed points), batch by kriging
/// believer; see the module doc. Every point lies in `[0,1]^d`, at least
/// `min_distance` (max-norm) from every observation and from the other
/// points. Deterministic for a given seed. Fewer than `k` points only when
/// the exclusions leave no candidate.
pub fn propose_batch(gp: &Gp, k: usize, best: f64, opts: &ProposeOptions) -> Vec<Vec<f64>> {
    let dim = gp.dim();
    let candidates = sobol_points(opts.candidates.max(1), dim, opts.seed);
    let min_distance = if opts.min_distance.is_finite() {
        opts.min_distance.max(0.0)
    } else {
        0.0
    };
    let xi = if opts.xi.is_finite() {
        opts.xi * gp.y_scale()
    } else {
        0.0
    };
    let best = if best.is_finite() {
        best
    } else {
        gp.best_observed().1
    };
    let negligible = 1e-12 * gp.y_scale();
    let fresh_group = fresh_group(gp);
    let mut model = gp.clone();
    let mut batch: Vec<Vec<f64>> = Vec::with_capacity(k);
    for _ in 0..k {
        let taken: Vec<&[f64]> = model
            .observations()
            .iter()
            .map(|o| o.x.as_slice())
            .collect();
        let allowed = |x: &[f64]| {
            taken
                .iter()
                .all(|t| max_norm_distance(t, x) >= min_distance)
        };
        // (candidate index, EI, sd)
        let scored: Vec<(usize, f64, f64)> = candidates
            .iter()
            .enumerate()
            .filter(|(_, x)| allowed(x))
            .map(|(i, x)| {
                let p = model.predict(x);
                let sd = p.var.max(0.0).sqrt();
                (i, expected_improvement(p.mean, sd, best, xi), sd)
            })
            .collect();
        if scored.is_empty() {
            break;
        }
        let max_ei = scored.iter().map(|s| s.1).fold(0.0, f64::max);
        let pick = if max_ei > negligible {
            let mut order: Vec<&(usize, f64, f64)> = scored.iter().collect();
            order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let ei_at = |x: &[f64]| {
                if !allowed(x) {
                    return f64::NEG_INFINITY;
                }
                let p = model.predict(x);
                expected_improvement(p.mean, p.var.max(0.0).sqrt(), best, xi)
            };
            let step = 0.5 / (candidates.len() as f64).powf(1.0 / dim as f64);
            let mut winner: Option<(Vec<f64>, f64)> = None;
            for &&(i, ei, _) in order.iter().take(REFINE_STARTS) {
                let (x, v) = compass_search(&candidates[i], ei, step, &ei_at);
                if winner.as_ref().is_none_or(|(_, w)| v > *w) {
                    winner = Some((x, v));
                }
            }
            match winner {
                Some((x, _)) => x,
                None => break,
            }
        } else {
            // EI is flat zero: explore where the model knows least.
            let &(i, _, _) = scored
                .iter()
                .fold(None, |acc: Option<&(usize, f64, f64)>, s| match acc {
                    Some(a) if a.2 >= s.2 => Some(a),
                    _ => Some(s),
                })
                .unwrap_or(&scored[0]);
            candidates[i].clone()
        };
        let believed = model.predict(&pick).mean;
        batch.push(pick.clone());
        if batch.len() == k {
            break;
        }
        match model.with_extra(Observation {
            x: pick,
            group: fresh_group,
            y: believed,
        }) {
            Ok(next) => model = next,
            Err(_) => break,
        }
    }
    batch
}

/// A group id not used by any observation.
fn fresh_group(gp: &Gp) -> u64 {
    let used: Vec<u64> = gp.observations().iter().map(|o| o.group).collect();
    let max = used.iter().copied().max().unwrap_or(0);
    if max < u64::MAX {
        return max + 1;
    }
    (0..).find(|g| !used.contains(g)).unwrap_or(0)
}

fn max_norm_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Maximises `f` from `x0` (value `f0`) by compass moves inside `[0,1]^d`:
/// the best of the ± `step` moves along each axis if it improves, else the
/// step is halved; stops below [`REFINE_MIN_STEP`] or after 40·d moves.
fn compass_search(x0: &[f64], f0: f64, step: f64, f: &dyn Fn(&[f64]) -> f64) -> (Vec<f64>, f64) {
    let mut x = x0.to_vec();
    let mut fx = f0;
    let mut step = step.max(REFINE_MIN_STEP);
    let mut moves = 0;
    while step >= REFINE_MIN_STEP && moves < 40 * x.len() {
        let mut best_move: Option<(Vec<f64>, f64)> = None;
        for j in 0..x.len() {
            for sign in [1.0, -1.0] {
                let mut y = x.clone();
                y[j] = (y[j] + sign * step).clamp(0.0, 1.0);
                if y[j] == x[j] {
                    continue;
                }
                let fy = f(&y);
                if fy > fx && best_move.as_ref().is_none_or(|(_, b)| fy > *b) {
                    best_move = Some((y, fy));
                }
            }
        }
        match best_move {
            Some((y, fy)) => {
                x = y;
                fx = fy;
                moves += 1;
            }
            None => step *= 0.5,
        }
    }
    (x, fx)
}
