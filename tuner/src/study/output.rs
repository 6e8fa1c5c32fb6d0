//! The tuned-coefficients TOML (a `poly_loss::PolyConfig`) and the
//! confirmation statistics.

use std::path::PathBuf;

use poly_loss::config::{LossSection, Provenance, ResultSection};
use poly_loss::PolyConfig;

use super::config::StudyConfig;
use super::dir::{StudyDir, TUNED_FILE};
use super::journal::{rfc3339, TrialRecord};
use super::verdict::verdict;
use super::{Confirmation, StudyError, StudyOptions, StudyReport};
use crate::hash::sha256_file;
use crate::search::{search_seed, Bounds, Recommendation, SearchEnd, Surrogate, LOSS_TIE_WEIGHT};
use crate::stats::paired_ci;

/// Mean and sample standard deviation of the finished runs of one ε.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedStats {
    /// The accuracies, in seed order (finished runs only).
    pub values: Vec<f64>,
    /// Their mean (NaN if none).
    pub mean: f64,
    /// Their sample standard deviation (n − 1; 0 for one value, NaN for none).
    pub std: f64,
    /// Runs that failed.
    pub failed: usize,
}

/// [`SeedStats`] of the accuracies of `runs`.
pub fn seed_stats<'a>(runs: impl IntoIterator<Item = &'a TrialRecord>) -> SeedStats {
    let mut values = Vec::new();
    let mut failed = 0;
    for r in runs {
        match (r.is_finished(), r.val_accuracy) {
            (true, Some(a)) => values.push(a),
            _ => failed += 1,
        }
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = match values.len() {
        0 => f64::NAN,
        1 => 0.0,
        _ => (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    };
    SeedStats {
        values,
        mean,
        std,
        failed,
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// What the search and the confirmation produced, for [`finish`].
pub(super) struct Findings {
    /// Search trials by index.
    pub trials: Vec<TrialRecord>,
    /// Confirmation runs (recommended ε then CE, per seed).
    pub confirm: Vec<TrialRecord>,
    /// The confirmation seeds (empty when CE itself is recommended).
    pub confirm_seeds: Vec<u64>,
    /// The recommendation.
    pub recommendation: Recommendation,
    /// Why the search ended.
    pub end: SearchEnd,
    /// Trials from the journal.
    pub replayed: usize,
    /// Trials run now.
    pub ran: usize,
}

/// The confirmation's statistics: per-arm stats and the paired CI in points.
fn confirmation(
    bounds: &crate::search::Bounds,
    recommended: &[f64],
    seeds: &[u64],
    runs: &[TrialRecord],
) -> Confirmation {
    let arm = |eps: &[f64], seed: u64| {
        runs.iter()
            .find(|r| r.seed == seed && bounds.same_point(&r.epsilon, eps))
    };
    let base = bounds.baseline();
    let tuned_runs: Vec<&TrialRecord> = seeds.iter().filter_map(|&s| arm(recommended, s)).collect();
    let base_runs: Vec<&TrialRecord> = seeds.iter().filter_map(|&s| arm(&base, s)).collect();
    // Pairs where both arms finished, in points.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &s in seeds {
        if let (Some(t), Some(c)) = (arm(recommended, s), arm(&base, s)) {
            if let (true, true, Some(x), Some(y)) = (
                t.is_finished(),
                c.is_finished(),
                t.val_accuracy,
                c.val_accuracy,
            ) {
                a.push(100.0 * x);
                b.push(100.0 * y);
            }
        }
    }
    let paired = if a.len() >= 2 {
        paired_ci(&a, &b, 0.95).ok()
    } else {
        None
    };
    Confirmation {
        seeds: seeds.to_vec(),
        tuned: seed_stats(tuned_runs),
        baseline: seed_stats(base_runs),
        paired,
    }
}

/// Builds the report and writes the tuned TOML (study dir, then `--out`),
/// reading each file back through `PolyConfig::load` as a check.
pub(super) fn finish(
    cfg: &StudyConfig,
    opts: &StudyOptions,
    dir: &StudyDir,
    found: Findings,
) -> Result<StudyReport, StudyError> {
    let st = &cfg.study;
    let bounds = cfg.search.bounds();
    let rec = &found.recommendation;
    let recommends_baseline = bounds.same_point(&rec.epsilon, &bounds.baseline());
    let confirmation = confirmation(&bounds, &rec.epsilon, &found.confirm_seeds, &found.confirm);
    let verdict = verdict(
        &rec.epsilon,
        confirmation.paired.as_ref(),
        recommends_baseline,
    );
    tracing::info!("verdict: {}", verdict.sentence);

    // The model's estimate at ε = 0 (the same surrogate the recommendation used).
    let baseline_estimate = baseline_estimate(&bounds, &found.trials, st.seed)
        .unwrap_or_else(|| found.trials[0].val_accuracy.unwrap_or(f64::NAN));

    // [loss]: the recommended ε — or plain cross-entropy when the tuned ε is
    // significantly worse on held-out data (the searched ε is kept in the
    // provenance).
    let written_eps = if verdict.keep_cross_entropy() {
        bounds.baseline()
    } else {
        rec.epsilon.clone()
    };
    let mut loss = LossSection::poly(written_eps.clone());
    if let Some(ls) = cfg
        .train
        .get("label_smoothing")
        .and_then(toml::Value::as_float)
    {
        loss.label_smoothing = ls;
    }
    let c = &confirmation;
    let result = ResultSection {
        metric: "val_top1_accuracy".into(),
        best: rec.posterior_mean,
        baseline: baseline_estimate,
        seeds: c.seeds.clone(),
        best_mean: finite(c.tuned.mean),
        best_std: finite(c.tuned.std),
        baseline_mean: finite(c.baseline.mean),
        baseline_std: finite(c.baseline.std),
        difference: Some(verdict.difference),
        ci_low: Some(verdict.ci_low),
        ci_high: Some(verdict.ci_high),
        n_seeds: Some(verdict.n_seeds as u64),
        significant: Some(verdict.significant),
        verdict: Some(verdict.sentence.clone()),
    };
    let pc = cfg.provenance.clone();
    let ov = opts.provenance.clone();
    let weights = ov.weights.or(pc.weights);
    let weights_sha256 = match &weights {
        Some(w) => Some(sha256_file(w).map_err(|source| StudyError::Io {
            path: w.clone(),
            source,
        })?),
        None => None,
    };
    let mut extra = pc.extra;
    extra.extend(ov.extra);
    let mut put = |k: &str, v: toml::Value| {
        extra.entry(k.to_string()).or_insert(v);
    };
    if let Some(w) = &weights {
        put("weights_file", toml::Value::String(w.display().to_string()));
    }
    put(
        "study_dir",
        toml::Value::String(dir.root().display().to_string()),
    );
    put(
        "config_fingerprint",
        toml::Value::String(dir.fingerprint().to_string()),
    );
    put(
        "searched_epsilon",
        toml::Value::Array(rec.epsilon.iter().map(|&e| toml::Value::Float(e)).collect()),
    );
    put(
        "search_trials",
        toml::Value::Integer(found.trials.len() as i64),
    );
    put(
        "confirm_trials",
        toml::Value::Integer(found.confirm.len() as i64),
    );
    put("recommended_seeds", toml::Value::Integer(rec.seeds as i64));
    put(
        "objective",
        toml::Value::String(format!(
            "validation error (1 - top-1), ties broken by {LOSS_TIE_WEIGHT:e} x validation CE loss; recommendation by the GP's posterior mean; verdict on held-out data"
        )),
    );
    if let SearchEnd::SolverFinished(why) = &found.end {
        put("search_end", toml::Value::String(why.clone()));
    }
    let provenance = Provenance {
        dataset: ov.dataset.or(pc.dataset),
        model: ov.model.or(pc.model),
        weights_sha256,
        schedule: ov.schedule.or(pc.schedule),
        solver: Some(cfg.search.solver.to_string()),
        budget: Some(st.budget),
        polytune_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        date: Some(rfc3339(std::time::SystemTime::now())),
        extra,
    };
    let tuned = PolyConfig {
        loss,
        result: Some(result),
        provenance: Some(provenance),
    };
    let mut tuned_paths: Vec<PathBuf> = vec![dir.file(TUNED_FILE)];
    tuned_paths.extend(opts.out.clone());
    for path in &tuned_paths {
        let fail = |e: poly_loss::config::PolyConfigError| StudyError::Output {
            path: path.clone(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StudyError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        tuned.save(path).map_err(fail)?;
        let back = PolyConfig::load(path).map_err(fail)?;
        if back.loss.epsilon != tuned.loss.epsilon {
            return Err(StudyError::Output {
                path: path.clone(),
                message: format!(
                    "read back ε = {:?}, wrote {:?}",
                    back.loss.epsilon, tuned.loss.epsilon
                ),
            });
        }
        tracing::info!("wrote {}", path.display());
    }
    Ok(StudyReport {
        study_dir: dir.root().to_path_buf(),
        solver: cfg.search.solver.to_string(),
        budget: st.budget,
        bounds: bounds.clone(),
        trials: found.trials,
        confirm: found.confirm,
        recommendation: found.recommendation,
        end: found.end,
        confirmation,
        verdict,
        replayed: found.replayed,
        ran: found.ran,
        tuned,
        tuned_paths,
    })
}

/// The search trials as the surrogate's observations: (ε, seed slot, score).
pub(crate) fn observations(trials: &[TrialRecord], study_seed: u64) -> Vec<(Vec<f64>, usize, f64)> {
    trials
        .iter()
        .filter(|t| t.is_finished())
        .map(|t| {
            // The slot is the seed's offset from the study seed (search_seed).
            let slot = t.seed.wrapping_sub(study_seed) as usize;
            debug_assert_eq!(search_seed(study_seed, slot), t.seed);
            (t.epsilon.clone(), slot, 1.0 - t.cost())
        })
        .collect()
}

/// The surrogate's posterior mean at ε = 0.
fn baseline_estimate(bounds: &Bounds, trials: &[TrialRecord], study_seed: u64) -> Option<f64> {
    let model = Surrogate::fit(&observations(trials, study_seed), bounds, study_seed)?;
    Some(model.predict(&bounds.baseline()).mean)
}
