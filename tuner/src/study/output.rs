//! The tuned-coefficients TOML (a `poly_loss::PolyConfig`) and the
//! confirmation statistics.

use std::path::PathBuf;

use poly_loss::config::{LossSection, Provenance, ResultSection};
use poly_loss::PolyConfig;

use super::config::{sha256_file, StudyConfig};
use super::dir::{StudyDir, TUNED_FILE};
use super::journal::{rfc3339, TrialRecord};
use super::{Confirmation, StudyError, StudyOptions, StudyReport};
use crate::search::{SearchEnd, LOSS_TIE_WEIGHT};

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

/// Builds the report and writes the tuned TOML (study dir, then `--out`),
/// reading each file back through `PolyConfig::load` as a check.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    cfg: &StudyConfig,
    opts: &StudyOptions,
    dir: &StudyDir,
    trials: Vec<TrialRecord>,
    reruns: Vec<TrialRecord>,
    best_index: u64,
    end: SearchEnd,
    replayed: usize,
    ran: usize,
) -> Result<StudyReport, StudyError> {
    let st = &cfg.study;
    let best = &trials[best_index as usize];
    let base = &trials[0];
    let same = best.trial == 0;
    let seeds: Vec<u64> = std::iter::once(st.seed)
        .chain((1..=st.rerun_seeds).map(|k| st.seed.wrapping_add(k)))
        .collect();
    let bounds = cfg.search.bounds();
    let best_runs: Vec<&TrialRecord> = std::iter::once(best)
        .chain(
            reruns
                .iter()
                .filter(|r| bounds.same_point(&r.epsilon, &best.epsilon)),
        )
        .collect();
    let base_runs: Vec<&TrialRecord> = std::iter::once(base)
        .chain(
            reruns
                .iter()
                .filter(|r| bounds.same_point(&r.epsilon, &base.epsilon)),
        )
        .collect();
    let best_stats = seed_stats(best_runs);
    let base_stats = if same {
        best_stats.clone()
    } else {
        seed_stats(base_runs)
    };
    let confirmation = Confirmation {
        seeds: seeds.clone(),
        difference: best_stats.mean - base_stats.mean,
        best: best_stats,
        baseline: base_stats,
    };

    // [loss]: plain Poly-N; label smoothing as the trainer used it.
    let mut loss = LossSection::poly(best.epsilon.clone());
    if let Some(ls) = cfg
        .train
        .get("label_smoothing")
        .and_then(toml::Value::as_float)
    {
        loss.label_smoothing = ls;
    }
    let result = ResultSection {
        metric: "val_top1_accuracy".into(),
        best: best.val_accuracy.unwrap_or(f64::NAN),
        baseline: base.val_accuracy.unwrap_or(f64::NAN),
        seeds,
        best_mean: finite(confirmation.best.mean),
        best_std: finite(confirmation.best.std),
        baseline_mean: finite(confirmation.baseline.mean),
        baseline_std: finite(confirmation.baseline.std),
        difference: finite(confirmation.difference),
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
    put("best_trial", toml::Value::Integer(best.trial as i64));
    put("trials", toml::Value::Integer(trials.len() as i64));
    put(
        "objective",
        toml::Value::String(format!(
            "validation error (1 - top-1), ties broken by {LOSS_TIE_WEIGHT:e} x validation CE loss"
        )),
    );
    if let SearchEnd::SolverFinished(why) = &end {
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
        let fail = |e: poly_loss::config::ConfigError| StudyError::Output {
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
        trials,
        reruns,
        best_index,
        end,
        confirmation,
        replayed,
        ran,
        tuned,
        tuned_paths,
    })
}
