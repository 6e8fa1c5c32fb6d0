//! `polytune status`: where a study stands — trials by state, the best ε
//! so far (mean over its finished seeds), workers seen, and an ETA from the
//! mean trial time and the number of busy workers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::pg::{PgStore, QueueRow, StudyRow, WorkerRow};
use super::StorageError;
use crate::study::{Journal, RowState, StudyConfig, StudyError, CONFIG_FILE, TRIALS_FILE};
use crate::trial::TrialPhase;

/// A study's standing.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyStatus {
    /// Name (PostgreSQL) or directory (journal).
    pub name: String,
    /// `running`, `finished`, `failed`, `interrupted` (journal: `recorded`).
    pub state: String,
    /// The verdict or failure in words, once ended.
    pub result: String,
    /// Search budget.
    pub budget: u64,
    /// Confirmation runs planned.
    pub confirm_runs: u64,
    /// Trials by `phase state` (e.g. `search finished`).
    pub counts: BTreeMap<String, u64>,
    /// Best ε so far: (ε, mean accuracy, finished seeds).
    pub best: Option<(Vec<f64>, f64, usize)>,
    /// Mean seconds of a finished trial.
    pub mean_trial_s: Option<f64>,
    /// Seconds left at the current pace (search + confirmation).
    pub eta_s: Option<f64>,
}

/// Summarises trial rows (state per row; ended ones with accuracy).
pub fn summarise(
    name: String,
    state: String,
    result: String,
    budget: u64,
    confirm_runs: u64,
    rows: &[QueueRow],
    busy_workers: usize,
) -> StudyStatus {
    let mut counts = BTreeMap::new();
    let mut by_eps: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    let mut durations = Vec::new();
    for r in rows {
        *counts
            .entry(format!("{} {}", r.phase.as_str(), r.state))
            .or_insert(0) += 1;
        if r.state == "finished" {
            durations.push(r.duration_s);
            if r.phase == TrialPhase::Search {
                if let Some(acc) = r.val_accuracy {
                    match by_eps.iter_mut().find(|(e, _)| *e == r.epsilon) {
                        Some((_, accs)) => accs.push(acc),
                        None => by_eps.push((r.epsilon.clone(), vec![acc])),
                    }
                }
            }
        }
    }
    let best = by_eps
        .into_iter()
        .map(|(e, a)| {
            let n = a.len();
            (e, a.iter().sum::<f64>() / n as f64, n)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let mean_trial_s =
        (!durations.is_empty()).then(|| durations.iter().sum::<f64>() / durations.len() as f64);
    let ended = |phase: &str| {
        counts
            .get(&format!("{phase} finished"))
            .copied()
            .unwrap_or(0)
            + counts.get(&format!("{phase} failed")).copied().unwrap_or(0)
    };
    let left =
        budget.saturating_sub(ended("search")) + confirm_runs.saturating_sub(ended("confirm"));
    let eta_s = match (state.as_str(), mean_trial_s) {
        ("running" | "recorded", Some(m)) => Some(left as f64 * m / busy_workers.max(1) as f64),
        _ => None,
    };
    StudyStatus {
        name,
        state,
        result,
        budget,
        confirm_runs,
        counts,
        best,
        mean_trial_s,
        eta_s,
    }
}

/// The status of one PostgreSQL study.
pub async fn pg_study_status(
    store: &PgStore,
    study: &StudyRow,
) -> Result<StudyStatus, StorageError> {
    let rows = store.queue(study.id).await?;
    let busy = rows.iter().filter(|r| r.state == "running").count();
    Ok(summarise(
        study.name.clone(),
        study.state.clone(),
        study.result.clone(),
        study.budget.max(0) as u64,
        study.confirm_runs.max(0) as u64,
        &rows,
        busy,
    ))
}

/// The status of a journal study directory (read only: no lock taken, so
/// it works while the study runs).
pub fn journal_status(dir: &Path) -> Result<StudyStatus, StudyError> {
    let (cfg, rows) = journal_rows(dir)?;
    let finished = dir.join(crate::study::TUNED_FILE).exists();
    Ok(summarise(
        dir.display().to_string(),
        if finished { "finished" } else { "recorded" }.into(),
        String::new(),
        cfg.study.budget,
        2 * cfg.study.confirm_seeds,
        &rows,
        cfg.study.workers,
    ))
}

/// A journal study's config and the standing of each recorded trial (its
/// last row). Read only and safe while the study runs: a last line still
/// being written is left out.
pub fn journal_rows(dir: &Path) -> Result<(StudyConfig, Vec<QueueRow>), StudyError> {
    let cfg = StudyConfig::load(dir.join(CONFIG_FILE))?;
    let path = dir.join(TRIALS_FILE);
    let mut text = std::fs::read_to_string(&path).map_err(|source| StudyError::Io {
        path: path.clone(),
        source,
    })?;
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    if text.is_empty() {
        return Ok((cfg, Vec::new()));
    }
    let records = Journal::parse_rows(&path, &text, cfg.search.terms)?;
    let mut last: BTreeMap<(u8, u64), QueueRow> = BTreeMap::new();
    for r in records {
        let state = match r.state {
            RowState::Finished => "finished",
            RowState::Failed => "failed",
            RowState::Retry | RowState::Cancelled => "pending",
        };
        let key = (u8::from(r.phase == TrialPhase::Confirm), r.trial);
        last.insert(
            key,
            QueueRow {
                phase: r.phase,
                trial: r.trial,
                state: state.into(),
                epsilon: r.epsilon,
                seed: r.seed,
                val_accuracy: r.val_accuracy,
                duration_s: r.duration_s,
                attempt: r.attempt as i32,
                worker: None,
            },
        );
    }
    Ok((cfg, last.into_values().collect()))
}

/// The status as text (one study).
pub fn render(s: &StudyStatus, workers: &[WorkerRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "study {}: {}", s.name, s.state);
    if !s.result.is_empty() {
        let _ = writeln!(out, "  result: {}", s.result);
    }
    let _ = writeln!(
        out,
        "  budget {} search trials + {} confirmation runs",
        s.budget, s.confirm_runs
    );
    for (k, v) in &s.counts {
        let _ = writeln!(out, "  {k:<18} {v}");
    }
    match &s.best {
        Some((e, acc, n)) => {
            let _ = writeln!(
                out,
                "  best so far: ε = {e:?}, mean val acc {acc:.4} over {n} seed(s)"
            );
        }
        None => {
            let _ = writeln!(out, "  best so far: none finished");
        }
    }
    if let Some(m) = s.mean_trial_s {
        let _ = writeln!(out, "  mean trial: {m:.1} s");
    }
    if let Some(eta) = s.eta_s {
        let _ = writeln!(out, "  ETA: {}", words_s(eta));
    }
    if !workers.is_empty() {
        let _ = writeln!(out, "  workers seen:");
        for w in workers {
            let _ = writeln!(
                out,
                "    {:<32} {:<8} {:>5} trials, seen {} ago{}",
                w.id,
                w.device,
                w.trials_done,
                words_s(w.seen_s_ago),
                if w.current.is_empty() {
                    String::new()
                } else {
                    format!(", running {}", w.current)
                }
            );
        }
    }
    out
}

/// `75 s`, `12 min`, `3.2 h`.
fn words_s(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        phase: TrialPhase,
        trial: u64,
        state: &str,
        eps: f64,
        acc: Option<f64>,
        d: f64,
    ) -> QueueRow {
        QueueRow {
            phase,
            trial,
            state: state.into(),
            epsilon: vec![eps],
            seed: trial,
            val_accuracy: acc,
            duration_s: d,
            attempt: 1,
            worker: None,
        }
    }

    #[test]
    fn best_is_the_mean_over_seeds_and_eta_counts_what_is_left() {
        use TrialPhase::*;
        let rows = vec![
            row(Search, 0, "finished", 0.0, Some(0.90), 10.0),
            row(Search, 1, "finished", 1.0, Some(0.95), 20.0),
            row(Search, 2, "finished", 1.0, Some(0.85), 30.0),
            row(Search, 3, "finished", 2.0, Some(0.91), 20.0),
            row(Search, 4, "running", 3.0, None, 0.0),
            row(Search, 5, "failed", 4.0, None, 5.0),
        ];
        let s = summarise("s".into(), "running".into(), String::new(), 10, 4, &rows, 2);
        // ε = 2 (0.91, one seed) beats ε = 1 (mean 0.90) and ε = 0 (0.90).
        let (e, acc, n) = s.best.clone().unwrap();
        assert_eq!((e, n), (vec![2.0], 1));
        assert!((acc - 0.91).abs() < 1e-12);
        assert_eq!(s.counts["search finished"], 4);
        assert_eq!(s.counts["search running"], 1);
        assert_eq!(s.counts["search failed"], 1);
        // Mean of finished trials: 20 s; left: 10 − 5 ended + 4 confirm = 9; 2 busy.
        assert_eq!(s.mean_trial_s, Some(20.0));
        assert_eq!(s.eta_s, Some(9.0 * 20.0 / 2.0));
        let text = render(&s, &[]);
        assert!(text.contains("ETA: 90 s"), "{text}");
    }
}
