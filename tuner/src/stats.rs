//! The paired verdict statistic: a Student-t confidence interval for the mean
//! of paired differences.
//!
//! Two configurations (tuned ε and cross-entropy) are run on the same seeds,
//! so the seed's shared effect cancels in the differences
//! `d_i = a_i − b_i`, i = 1..n. With
//!
//! ```text
//! d̄ = Σ d_i / n,   s = sqrt(Σ (d_i − d̄)² / (n − 1)),   se = s / √n,
//! CI_level = d̄ ± t_{(1+level)/2, n−1} · se,
//! ```
//!
//! the interval covers the true mean difference with probability `level`
//! when the differences are iid normal. `significant` means the interval
//! excludes 0, which is the two-sided paired t-test at 1 − level. The
//! two-sided p-value `2·P(T_{n−1} > |d̄|/se)` is reported too.
//!
//! When all differences are equal (s = 0) the interval collapses to
//! `[d̄, d̄]`, `significant` is `d̄ ≠ 0` and the p-value is 0 (or 1 when
//! d̄ = 0): with no spread at all there is no evidence of noise. This is the
//! limit of the formulas, not a statistical claim; with real fine-tunes it
//! does not happen.
//!
//! Student-t quantiles come from `statrs` (inverse regularised incomplete
//! beta), polished by Newton steps on the lower tail of its CDF so they match
//! `scipy.stats.t.ppf` to ~1e-12 (tested against committed scipy goldens).
//!
//! ```
//! use polytune::stats::paired_ci;
//!
//! let tuned = [0.962, 0.970, 0.958];
//! let ce = [0.960, 0.961, 0.955];
//! let ci = paired_ci(&tuned, &ce, 0.95).unwrap();
//! assert_eq!(ci.n, 3);
//! assert!((ci.mean - 0.004_666_666_666_666_67).abs() < 1e-12);
//! assert!(ci.ci_low < 0.0 && !ci.significant); // three seeds are not enough here
//! ```

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A paired-difference confidence interval (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct PairedCi {
    /// Number of pairs.
    pub n: usize,
    /// Mean difference a − b.
    pub mean: f64,
    /// Sample standard deviation of the differences (n − 1 in the denominator).
    pub std: f64,
    /// Standard error of the mean difference, `std / √n`.
    pub se: f64,
    /// Lower end of the interval.
    pub ci_low: f64,
    /// Upper end of the interval.
    pub ci_high: f64,
    /// Confidence level in (0, 1), e.g. 0.95.
    pub level: f64,
    /// True when the interval excludes 0.
    pub significant: bool,
    /// Two-sided p-value of the paired t-test (equals scipy's `ttest_rel`).
    pub p_value: f64,
}

/// Why a paired interval cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StatsError {
    /// Fewer than two pairs: no spread can be estimated.
    #[error("a paired confidence interval needs at least 2 pairs, got {n}")]
    TooFewPairs {
        /// Pairs given.
        n: usize,
    },
    /// The two samples differ in length.
    #[error("paired samples differ in length: a has {a} values, b has {b}")]
    LengthMismatch {
        /// Length of a.
        a: usize,
        /// Length of b.
        b: usize,
    },
    /// A value is NaN or infinite.
    #[error("sample {sample}[{index}] = {value} is not finite")]
    NonFinite {
        /// `"a"` or `"b"`.
        sample: &'static str,
        /// Index into that sample.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The confidence level is not in (0, 1).
    #[error("confidence level {level} is outside (0, 1)")]
    InvalidLevel {
        /// The level given.
        level: f64,
    },
}

/// Paired differences `a_i − b_i`: mean, sample std (n − 1), `se = std/√n`,
/// `CI = mean ± t_{(1+level)/2, n−1}·se`; `significant` = the CI excludes 0.
///
/// When all differences are equal (std = 0) the CI is `[mean, mean]` and
/// `significant = mean ≠ 0`.
pub fn paired_ci(a: &[f64], b: &[f64], level: f64) -> Result<PairedCi, StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            a: a.len(),
            b: b.len(),
        });
    }
    if a.len() < 2 {
        return Err(StatsError::TooFewPairs { n: a.len() });
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(StatsError::InvalidLevel { level });
    }
    for (sample, values) in [("a", a), ("b", b)] {
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(StatsError::NonFinite {
                sample,
                index,
                value,
            });
        }
    }
    let n = a.len();
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let nf = n as f64;
    let mean = diffs.iter().sum::<f64>() / nf;
    let ss: f64 = diffs.iter().map(|d| (d - mean).powi(2)).sum();
    let std = (ss / (nf - 1.0)).sqrt();
    let se = std / nf.sqrt();
    let dof = nf - 1.0;
    let t = student_t_quantile(0.5 * (1.0 + level), dof);
    let (ci_low, ci_high, p_value) = if se > 0.0 {
        let half = t * se;
        let stat = (mean / se).abs();
        (
            mean - half,
            mean + half,
            2.0 * student_t_lower_tail(-stat, dof),
        )
    } else {
        (mean, mean, if mean == 0.0 { 1.0 } else { 0.0 })
    };
    let significant = ci_low > 0.0 || ci_high < 0.0;
    Ok(PairedCi {
        n,
        mean,
        std,
        se,
        ci_low,
        ci_high,
        level,
        significant,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// P(T ≤ x) for Student's t with `dof` degrees of freedom.
fn student_t_lower_tail(x: f64, dof: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, dof) {
        Ok(t) => t.cdf(x),
        Err(_) => f64::NAN,
    }
}

/// Student-t quantile: the x with `P(T_dof ≤ x) = p`, for p in (0, 1) and
/// dof ≥ 1 (real-valued dof allowed). Returns NaN for arguments outside
/// those ranges (never panics).
///
/// ```
/// // The two-sided 95 % critical value for 4 pairs.
/// let t = polytune::stats::student_t_quantile(0.975, 3.0);
/// assert!((t - 3.182_446_305_284_263).abs() < 1e-12);
/// ```
pub fn student_t_quantile(p: f64, dof: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && dof.is_finite() && dof >= 1.0) {
        return f64::NAN;
    }
    if p == 0.5 {
        return 0.0;
    }
    let Ok(dist) = StudentsT::new(0.0, 1.0, dof) else {
        return f64::NAN;
    };
    // Work on the lower tail, where the CDF is accurate in relative terms.
    let q = p.min(1.0 - p);
    let mut x = dist.inverse_cdf(q).min(0.0);
    if !x.is_finite() {
        x = -1.0;
    }
    for _ in 0..4 {
        let f = dist.cdf(x) - q;
        let d = student_t_density(x, dof);
        if d.is_nan() || d <= 0.0 || !f.is_finite() {
            break;
        }
        let step = f / d;
        let next = x - step;
        if !next.is_finite() {
            break;
        }
        x = next.min(0.0);
        if step.abs() <= 1e-15 * x.abs().max(1.0) {
            break;
        }
    }
    if p > 0.5 {
        -x
    } else {
        x
    }
}

/// The Student-t density, via log-gamma for stability at large dof.
fn student_t_density(x: f64, dof: f64) -> f64 {
    use statrs::function::gamma::ln_gamma;
    let log_norm =
        ln_gamma(0.5 * (dof + 1.0)) - ln_gamma(0.5 * dof) - 0.5 * (dof * std::f64::consts::PI).ln();
    (log_norm - 0.5 * (dof + 1.0) * (x * x / dof).ln_1p()).exp()
}
