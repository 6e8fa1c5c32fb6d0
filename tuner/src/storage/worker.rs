//! `polytune worker`: claims pending trials from PostgreSQL and runs them.
//!
//! Loop: claim the oldest pending trial (`FOR UPDATE SKIP LOCKED`), run it
//! as the study's trial program (polytune's own `trial`, or the study's
//! `[trial] command`) while a heartbeat refreshes the claim every
//! `lease_s / 4`, then write the result and the attempt's row in one
//! statement. A claim that was taken away (the lease ran out, e.g. the
//! machine stalled) kills the trial and discards its result. When idle, the
//! worker requeues trials whose workers stopped heartbeating, then polls
//! again.
//!
//! **Inputs.** Relative `[data] path` and `[train] weights` of a study
//! resolve against `--data-root` (the same layout on each machine, or a
//! shared file system). Before its first trial of a study the worker hashes
//! those inputs the way the coordinator did and refuses the study on any
//! difference ([`StorageError::InputMismatch`]); the claimed trial goes back
//! to the queue uncounted.
//!
//! **Stop.** On the shutdown switch no new trial is claimed; a running one
//! finishes within the grace period or is killed and given back (not
//! counted as an attempt).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::pg::{Claim, PgStore};
use super::StorageError;
use crate::orchestrator::{Shutdown, StopLevel, TrialOutcome, TrialRun, TrialRunner};
use crate::study::{RowState, StudyConfig};
use crate::trial::TrialSpec;

/// Makes the trial runner for a study's config.
pub type RunnerFactory =
    Arc<dyn Fn(&StudyConfig) -> std::io::Result<Arc<dyn TrialRunner>> + Send + Sync>;

/// The runner polytune itself uses: the study's trial program as a child
/// process with the study's timeout.
pub fn child_runner_factory() -> RunnerFactory {
    Arc::new(|cfg: &StudyConfig| {
        let runner = crate::study::child_runner(cfg, crate::study::trial_program(cfg)?);
        Ok(Arc::new(runner) as Arc<dyn TrialRunner>)
    })
}

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerOptions {
    /// Its name in the database (`host:pid`, `/k` for local workers).
    pub id: String,
    /// Device for every trial (`[train].device` override), e.g. `cuda:1`.
    pub device: Option<String>,
    /// The worker slot given to trials (local workers: GPU k for worker k).
    pub slot: Option<usize>,
    /// Stop after this many trials.
    pub max_trials: Option<u64>,
    /// Where relative data and weights paths resolve.
    pub data_root: Option<PathBuf>,
    /// Only this study's trials (local workers of a coordinator).
    pub study: Option<i64>,
    /// Pause between polls of an empty queue.
    pub poll: Duration,
    /// Builds the trial runner of a study.
    pub runner: RunnerFactory,
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("id", &self.id)
            .field("device", &self.device)
            .field("slot", &self.slot)
            .field("max_trials", &self.max_trials)
            .field("data_root", &self.data_root)
            .field("study", &self.study)
            .finish()
    }
}

impl WorkerOptions {
    /// A worker named `host:pid` running child processes, polling every 20 ms.
    pub fn new() -> Self {
        Self {
            id: default_worker_id(),
            device: None,
            slot: None,
            max_trials: None,
            data_root: None,
            study: None,
            poll: Duration::from_millis(20),
            runner: child_runner_factory(),
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// `host:pid`.
pub fn default_worker_id() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}:{}", std::process::id())
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerReport {
    /// Attempts it ended and recorded.
    pub trials: u64,
    /// Results discarded because the claim had been requeued meanwhile.
    pub lost_claims: u64,
    /// Trials given back on shutdown.
    pub given_back: u64,
}

struct StudyCtx {
    name: String,
    runner: Arc<dyn TrialRunner>,
    heartbeat: Duration,
}

/// Runs the worker loop until `shutdown`, `max_trials`, or an error.
pub async fn run_worker(
    store: &PgStore,
    opts: &WorkerOptions,
    shutdown: &Shutdown,
) -> Result<WorkerReport, StorageError> {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    store
        .register_worker(&opts.id, &host, opts.device.as_deref().unwrap_or("config"))
        .await?;
    let mut studies: HashMap<i64, StudyCtx> = HashMap::new();
    let mut report = WorkerReport::default();
    let mut last_requeue = std::time::Instant::now() - Duration::from_secs(60);
    while !shutdown.is_stopping() && opts.max_trials.is_none_or(|m| report.trials < m) {
        let Some(mut claim) = store.claim(&opts.id, opts.study).await? else {
            if last_requeue.elapsed() >= Duration::from_millis(500) {
                let n = store.requeue_lost(opts.study).await?;
                if n > 0 {
                    tracing::warn!(
                        "{}: requeued {n} trial(s) whose worker stopped heartbeating",
                        opts.id
                    );
                }
                last_requeue = std::time::Instant::now();
            }
            tokio::select! {
                _ = tokio::time::sleep(opts.poll) => {}
                _ = shutdown.reached(StopLevel::Draining) => {}
            }
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(e) = studies.entry(claim.study_id) {
            match prepare_study(store, opts, claim.study_id).await {
                Ok(ctx) => {
                    e.insert(ctx);
                }
                Err(err) => {
                    give_back(store, opts, &claim).await?;
                    return Err(err);
                }
            }
        }
        let ctx = &studies[&claim.study_id];
        adapt_spec(&mut claim.spec, opts);
        tracing::info!(
            "{}: {} {} {} ε={:?} seed {} (attempt {})",
            opts.id,
            ctx.name,
            claim.spec.phase.as_str(),
            claim.spec.trial,
            claim.spec.epsilon,
            claim.spec.seed,
            claim.attempt
        );
        let (run, still_ours) = run_claimed(store, opts, ctx, &claim, shutdown).await?;
        if !still_ours {
            lost_claim(
                &mut report,
                opts,
                &claim,
                "was requeued while it ran (lease expired)",
            );
            continue;
        }
        let mut rec = crate::study::record(&claim.spec, &run);
        rec.attempt = claim.attempt.max(1) as u32;
        if rec.state == RowState::Retry && rec.attempt > claim.max_retries {
            rec.state = RowState::Failed;
            rec.error = format!("{} (gave up after {} attempts)", rec.error, rec.attempt);
        }
        if store.complete(&opts.id, &claim, &rec).await? {
            if rec.state == RowState::Cancelled {
                report.given_back += 1;
            } else {
                report.trials += 1;
            }
        } else {
            lost_claim(&mut report, opts, &claim, "had been requeued when it ended");
        }
    }
    Ok(report)
}

/// Counts and logs a result that is not recorded because the claim was lost.
fn lost_claim(report: &mut WorkerReport, opts: &WorkerOptions, claim: &Claim, why: &str) {
    report.lost_claims += 1;
    tracing::warn!(
        "{}: {} trial {} {why}; its result is discarded",
        opts.id,
        claim.spec.phase.as_str(),
        claim.spec.trial
    );
}

/// Gives a claimed, not yet started trial back uncounted.
async fn give_back(
    store: &PgStore,
    opts: &WorkerOptions,
    claim: &Claim,
) -> Result<(), StorageError> {
    let run = TrialRun {
        outcome: TrialOutcome::Cancelled,
        started: std::time::SystemTime::now(),
        duration: Duration::ZERO,
        launched: false,
    };
    let mut rec = crate::study::record(&claim.spec, &run);
    rec.error = format!("given back by worker {}", opts.id);
    store.complete(&opts.id, claim, &rec).await.map(|_| ())
}

/// Loads a study's config, checks this machine's inputs against the
/// coordinator's digests, and builds its runner.
async fn prepare_study(
    store: &PgStore,
    opts: &WorkerOptions,
    id: i64,
) -> Result<StudyCtx, StorageError> {
    let row = store
        .study_by_id(id)
        .await?
        .ok_or_else(|| StorageError::UnknownStudy {
            study: format!("#{id}"),
            target: store.target().redacted().into(),
        })?;
    let origin = format!("study {:?} in {}", row.name, store.target().redacted());
    let mut cfg =
        StudyConfig::from_toml_str(&row.config, &origin).map_err(|e| StorageError::Db {
            target: store.target().redacted().into(),
            what: format!("reading study {:?}'s config", row.name),
            message: e.to_string(),
        })?;
    if let Some(root) = &opts.data_root {
        rebase(&mut cfg.data, "path", root);
        rebase(&mut cfg.train, "weights", root);
    }
    let stored: BTreeMap<String, String> = toml::from_str(&row.inputs).unwrap_or_default();
    let (cfg2, origin2) = (cfg.clone(), origin.clone());
    let now = tokio::task::spawn_blocking(move || crate::study::digest_inputs(&cfg2, &origin2))
        .await
        .map_err(|e| StorageError::InputMismatch {
            study: row.name.clone(),
            differences: vec![format!("hashing the inputs failed: {e}")],
        })?
        .map_err(|e| StorageError::InputMismatch {
            study: row.name.clone(),
            differences: vec![e.to_string()],
        })?;
    let differences = crate::study::digest_differences_by_role(&stored, &now);
    if !differences.is_empty() {
        return Err(StorageError::InputMismatch {
            study: row.name.clone(),
            differences,
        });
    }
    let runner = (opts.runner)(&cfg).map_err(|e| StorageError::Db {
        target: store.target().redacted().into(),
        what: format!("preparing study {:?}'s trial program", row.name),
        message: e.to_string(),
    })?;
    let heartbeat = Duration::from_secs_f64((row.lease_s / 4.0).clamp(0.2, 10.0));
    tracing::info!("{}: joined study {:?} (inputs match)", opts.id, row.name);
    Ok(StudyCtx {
        name: row.name,
        runner,
        heartbeat,
    })
}

/// A relative path under `key` made relative to `root`.
fn rebase(table: &mut toml::Table, key: &str, root: &Path) {
    if let Some(toml::Value::String(p)) = table.get(key) {
        let path = Path::new(p);
        if path.is_relative() {
            let joined = root.join(path).display().to_string();
            table.insert(key.into(), toml::Value::String(joined));
        }
    }
}

/// The spec as this worker runs it: paths under `--data-root`, its device
/// and slot.
fn adapt_spec(spec: &mut TrialSpec, opts: &WorkerOptions) {
    if let Some(root) = &opts.data_root {
        rebase(&mut spec.data, "path", root);
        rebase(&mut spec.train, "weights", root);
    }
    if let Some(d) = &opts.device {
        spec.train
            .insert("device".into(), toml::Value::String(d.clone()));
    }
    spec.worker = opts.slot;
}

/// Runs a claimed trial with heartbeats. Returns the run and whether the
/// claim was still this worker's at the end.
async fn run_claimed(
    store: &PgStore,
    opts: &WorkerOptions,
    ctx: &StudyCtx,
    claim: &Claim,
    shutdown: &Shutdown,
) -> Result<(TrialRun, bool), StorageError> {
    // The trial's own stop switch: follows the worker's, and kills the
    // trial when the claim is lost.
    let trial_stop = shutdown.child();
    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();
    let mut task = tokio::spawn(ctx.runner.run(claim.spec.clone(), trial_stop.subscribe()));
    let mut ours = true;
    let outcome = loop {
        tokio::select! {
            joined = &mut task => break match joined {
                Ok(o) => o,
                Err(e) => TrialOutcome::Failed(format!("trial task failed: {e}")),
            },
            _ = tokio::time::sleep(ctx.heartbeat) => {
                match store.heartbeat(&opts.id, claim).await {
                    Ok(true) => {}
                    Ok(false) => {
                        ours = false;
                        trial_stop.raise(StopLevel::Kill);
                    }
                    Err(e) => {
                        trial_stop.raise(StopLevel::Kill);
                        let _ = task.await;
                        return Err(e);
                    }
                }
            }
        }
    };
    trial_stop.raise(StopLevel::Kill);
    Ok((
        TrialRun {
            outcome,
            started,
            duration: clock.elapsed(),
            launched: true,
        },
        ours,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_inputs_resolve_under_the_data_root_and_device_is_forced() {
        let mut spec = TrialSpec {
            trial: 3,
            phase: crate::trial::TrialPhase::Search,
            epsilon: vec![1.0],
            seed: 7,
            train: toml::toml! { weights = "w/r50.safetensors" device = "cpu" },
            data: toml::toml! { path = "data/flowers102" source = "flowers102" },
            worker: None,
        };
        let mut opts = WorkerOptions::new();
        opts.data_root = Some(PathBuf::from("/mnt/shared"));
        opts.device = Some("cuda:2".into());
        opts.slot = Some(1);
        adapt_spec(&mut spec, &opts);
        assert_eq!(
            spec.data["path"].as_str(),
            Some("/mnt/shared/data/flowers102")
        );
        assert_eq!(
            spec.train["weights"].as_str(),
            Some("/mnt/shared/w/r50.safetensors")
        );
        assert_eq!(spec.train["device"].as_str(), Some("cuda:2"));
        assert_eq!(spec.worker, Some(1));
        // Absolute paths are left alone.
        let mut t = toml::toml! { path = "/data/x" };
        rebase(&mut t, "path", Path::new("/mnt"));
        assert_eq!(t["path"].as_str(), Some("/data/x"));
    }
}
