//! The JSON the API answers with: a study's record joined with its trials
//! as the journal or the database has them, the best ε so far (mean
//! accuracy over its finished seeds), the ETA, the workers and, once
//! finished, the tuned TOML.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::registry::{Registry, StudyRecord, StudyState};
use super::ServeError;
use crate::storage::pg::{QueueRow, WorkerRow};
use crate::storage::status::{journal_rows, summarise};
use crate::storage::PgStore;
use crate::study::{TRIALS_FILE, TUNED_FILE};

/// The best ε so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestView {
    /// ε₁..εₙ.
    pub epsilon: Vec<f64>,
    /// Mean validation accuracy over its finished seeds.
    pub mean_accuracy: f64,
    /// Seeds behind the mean.
    pub seeds: usize,
}

/// One study in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySummary {
    /// The daemon's id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `queued`, `running`, `finished`, `failed` or `cancelled`.
    pub state: String,
    /// The verdict (finished) or the error (failed), in words.
    pub result: String,
    /// Unix seconds.
    pub submitted_at: u64,
    /// Unix seconds.
    pub started_at: Option<u64>,
    /// Unix seconds.
    pub ended_at: Option<u64>,
    /// Search budget.
    pub budget: u64,
    /// Confirmation runs planned.
    pub confirm_runs: u64,
    /// Search trials ended (finished or failed).
    pub search_done: u64,
    /// Confirmation runs ended.
    pub confirm_done: u64,
    /// Best ε so far.
    pub best: Option<BestView>,
    /// Seconds left at the current pace.
    pub eta_s: Option<f64>,
}

/// One trial (its latest standing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialView {
    /// `search` or `confirm`.
    pub phase: String,
    /// Index within the phase.
    pub trial: u64,
    /// `pending`, `running`, `finished` or `failed`.
    pub state: String,
    /// ε₁..εₙ.
    pub epsilon: Vec<f64>,
    /// Seed.
    pub seed: u64,
    /// Validation accuracy (finished).
    pub val_accuracy: Option<f64>,
    /// Seconds the last attempt took.
    pub duration_s: f64,
    /// Attempts started.
    pub attempt: i32,
    /// The worker that ran it last (PostgreSQL storage).
    pub worker: Option<String>,
}

/// A worker as seen (PostgreSQL storage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// `host:pid/slot`.
    pub id: String,
    /// Its device.
    pub device: String,
    /// Seconds since its last heartbeat.
    pub seen_s_ago: f64,
    /// Trials it ended.
    pub trials_done: i64,
    /// What it runs now.
    pub current: String,
}

/// One study in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyDetail {
    /// The list entry.
    #[serde(flatten)]
    pub summary: StudySummary,
    /// Trials by `phase state`.
    pub counts: BTreeMap<String, u64>,
    /// Mean seconds of a finished trial.
    pub mean_trial_s: Option<f64>,
    /// The search box, for the plot.
    pub lower: Vec<f64>,
    /// The search box, for the plot.
    pub upper: Vec<f64>,
    /// The trials.
    pub trials: Vec<TrialView>,
    /// Workers seen (PostgreSQL storage; the daemon's own workers otherwise).
    pub workers: Vec<WorkerView>,
    /// `tuned.toml`, once finished.
    pub tuned_toml: Option<String>,
}

fn trial_view(r: QueueRow) -> TrialView {
    TrialView {
        phase: r.phase.as_str().to_string(),
        trial: r.trial,
        state: r.state,
        epsilon: r.epsilon,
        seed: r.seed,
        val_accuracy: r.val_accuracy,
        duration_s: r.duration_s,
        attempt: r.attempt,
        worker: r.worker,
    }
}

fn worker_view(w: WorkerRow) -> WorkerView {
    WorkerView {
        id: w.id,
        device: w.device,
        seen_s_ago: w.seen_s_ago,
        trials_done: w.trials_done,
        current: w.current,
    }
}

/// Study `id` in full (`None`: no such study).
pub async fn detail(
    reg: &Registry,
    store: Option<&PgStore>,
    id: u64,
) -> Result<Option<StudyDetail>, ServeError> {
    gather(reg, store, id, true).await
}

/// Study `id`; with `full` false the workers and the tuned TOML (which a
/// list entry does not show) are neither queried nor read.
async fn gather(
    reg: &Registry,
    store: Option<&PgStore>,
    id: u64,
    full: bool,
) -> Result<Option<StudyDetail>, ServeError> {
    let Some(record) = reg.record(id) else {
        return Ok(None);
    };
    let cfg = reg.config(id)?;
    let dir = reg.study_dir(id);
    let (rows, workers) = match store {
        None if dir.join(TRIALS_FILE).exists() => {
            let (_, rows) = journal_rows(&dir).map_err(|e| ServeError::View {
                id,
                message: e.to_string(),
            })?;
            (rows, Vec::new())
        }
        None => (Vec::new(), Vec::new()),
        Some(store) => {
            let name = dir
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            let pg = |e: crate::storage::StorageError| ServeError::View {
                id,
                message: e.to_string(),
            };
            match store.study(&name).await.map_err(pg)? {
                Some(row) => {
                    let rows = store.queue(row.id).await.map_err(pg)?;
                    let prefix = format!("{name}/");
                    let workers = if full {
                        store
                            .workers()
                            .await
                            .map_err(pg)?
                            .into_iter()
                            .filter(|w| w.current.starts_with(&prefix) || w.seen_s_ago < 3600.0)
                            .map(worker_view)
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (rows, workers)
                }
                None => (Vec::new(), Vec::new()),
            }
        }
    };
    let busy = match store {
        Some(_) => rows.iter().filter(|r| r.state == "running").count(),
        None => cfg.study.workers,
    };
    let status = summarise(
        record.name.clone(),
        record.state.as_str().into(),
        record.result.clone(),
        cfg.study.budget,
        2 * cfg.study.confirm_seeds,
        &rows,
        busy,
    );
    let ended = |phase: &str| {
        ["finished", "failed"]
            .iter()
            .map(|s| {
                status
                    .counts
                    .get(&format!("{phase} {s}"))
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    };
    let tuned_toml = if full && record.state == StudyState::Finished {
        let path = dir.join(TUNED_FILE);
        Some(std::fs::read_to_string(&path).map_err(ServeError::io(&path))?)
    } else {
        None
    };
    let summary = StudySummary {
        search_done: ended("search"),
        confirm_done: ended("confirm"),
        best: status
            .best
            .clone()
            .map(|(epsilon, mean_accuracy, seeds)| BestView {
                epsilon,
                mean_accuracy,
                seeds,
            }),
        eta_s: status.eta_s.filter(|_| !record.state.is_final()),
        ..summary_of(&record, cfg.study.budget, 2 * cfg.study.confirm_seeds)
    };
    let bounds = cfg.search.bounds();
    Ok(Some(StudyDetail {
        summary,
        counts: status.counts,
        mean_trial_s: status.mean_trial_s,
        lower: bounds.lower,
        upper: bounds.upper,
        trials: rows.into_iter().map(trial_view).collect(),
        workers,
        tuned_toml,
    }))
}

fn summary_of(r: &StudyRecord, budget: u64, confirm_runs: u64) -> StudySummary {
    StudySummary {
        id: r.id,
        name: r.name.clone(),
        state: r.state.as_str().into(),
        result: r.result.clone(),
        submitted_at: r.submitted_at,
        started_at: r.started_at,
        ended_at: r.ended_at,
        budget,
        confirm_runs,
        search_done: 0,
        confirm_done: 0,
        best: None,
        eta_s: None,
    }
}

/// Every study, as list entries (progress and best from the same sources
/// as [`detail`]; the dashboard polls this, so no worker query and no
/// tuned-TOML read per study).
pub async fn list(
    reg: &Registry,
    store: Option<&PgStore>,
) -> Result<Vec<StudySummary>, ServeError> {
    let mut out = Vec::new();
    for r in reg.records() {
        if let Some(d) = gather(reg, store, r.id, false).await? {
            out.push(d.summary);
        }
    }
    Ok(out)
}
