//! The verdict: does the tuned ε beat cross-entropy, by how much, and how
//! sure is that?
//!
//! The confirmation runs the recommended ε and cross-entropy (ε = 0) on n
//! fresh seeds that the search never used, scored on held-out data that the
//! search never scored. Per seed both runs share initialisation, data order
//! and augmentation, so the per-seed difference `d_i = acc(ε*, s_i) −
//! acc(0, s_i)` cancels the seed's luck. The verdict is the mean of `d_i`
//! in accuracy points with its 95 % confidence interval
//! `mean ± t₀.₉₇₅,ₙ₋₁ · sd/√n` ([`crate::stats::paired_ci`]); it is
//! *significant* when the interval excludes 0. The search's own runs are
//! never part of it (they selected ε* and are biased upwards).

use crate::stats::PairedCi;

/// The answer of a study, as written to `summary.txt`, the log and
/// `tuned.toml`'s `[result]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Mean paired difference tuned − CE, in accuracy points (NaN when
    /// there is no confirmation to speak of).
    pub difference: f64,
    /// Lower end of the 95 % CI, in points.
    pub ci_low: f64,
    /// Upper end of the 95 % CI, in points.
    pub ci_high: f64,
    /// Paired seeds behind it.
    pub n_seeds: usize,
    /// True when the CI excludes 0.
    pub significant: bool,
    /// One sentence for people.
    pub sentence: String,
}

impl Verdict {
    /// True when the study says to keep cross-entropy: it recommended ε = 0,
    /// or the tuned ε is significantly worse.
    pub fn keep_cross_entropy(&self) -> bool {
        self.n_seeds == 0 && self.difference == 0.0 || self.significant && self.difference < 0.0
    }
}

fn eps_text(e: &[f64]) -> String {
    let parts: Vec<String> = e.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", parts.join(", "))
}

/// The verdict for the recommended `epsilon`: `paired` is the confirmation's
/// paired CI in points (`None` when fewer than two pairs finished);
/// `recommends_baseline` when the search's answer is ε = 0 itself (nothing
/// to confirm).
///
/// ```
/// use polytune::stats::paired_ci;
/// use polytune::study::verdict;
///
/// // Accuracy points per seed, tuned vs CE, on 5 paired seeds.
/// let tuned = [97.2, 96.9, 97.8, 97.0, 97.5];
/// let ce = [96.9, 97.1, 97.4, 97.2, 97.3];
/// let ci = paired_ci(&tuned, &ce, 0.95).unwrap();
/// let v = verdict(&[2.0], Some(&ci), false);
/// assert!(!v.significant);
/// assert!(v.sentence.starts_with("no significant difference from cross-entropy; CI ["), "{}", v.sentence);
/// ```
pub fn verdict(epsilon: &[f64], paired: Option<&PairedCi>, recommends_baseline: bool) -> Verdict {
    if recommends_baseline {
        return Verdict {
            difference: 0.0,
            ci_low: 0.0,
            ci_high: 0.0,
            n_seeds: 0,
            significant: false,
            sentence: "keep cross-entropy: the search's model ranks ε = 0 best, so there is nothing to confirm".into(),
        };
    }
    let Some(ci) = paired else {
        return Verdict {
            difference: f64::NAN,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
            n_seeds: 0,
            significant: false,
            sentence: format!(
                "no verdict for ε = {}: fewer than two confirmation seeds finished for both ε and cross-entropy",
                eps_text(epsilon)
            ),
        };
    };
    let range = format!("[{:+.2}, {:+.2}]", ci.ci_low, ci.ci_high);
    let sentence = if !ci.significant {
        format!(
            "no significant difference from cross-entropy; CI {range} points ({} paired seeds, held-out data)",
            ci.n
        )
    } else if ci.mean > 0.0 {
        format!(
            "ε = {} beats cross-entropy by {:+.2} points on held-out data (95 % CI {range}, {} paired seeds)",
            eps_text(epsilon),
            ci.mean,
            ci.n
        )
    } else {
        format!(
            "ε = {} is worse than cross-entropy by {:.2} points on held-out data (95 % CI {range}, {} paired seeds): keep cross-entropy",
            eps_text(epsilon),
            -ci.mean,
            ci.n
        )
    };
    Verdict {
        difference: ci.mean,
        ci_low: ci.ci_low,
        ci_high: ci.ci_high,
        n_seeds: ci.n,
        significant: ci.significant,
        sentence,
    }
}
