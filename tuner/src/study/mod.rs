//! A study: the search run end to end, with a crash-safe journal, resume,
//! the recommendation, the confirmation on fresh seeds and held-out data,
//! the verdict, and the outputs (tuned TOML, summary, SVG plot).
//!
//! ```text
//! <study dir>/
//!   config.toml   the resolved study config (a later run with another is refused)
//!   study.toml    where it came from, its fingerprint, when
//!   trials.csv    one fsynced row per (ε, seed) fine-tune (the journal)
//!   tuned.toml    the recommended ε and the verdict as a poly_loss PolyConfig
//!   plot.svg      the model along each ε, trials by seed, the confirmation
//!   summary.txt   the summary table and the verdict
//! ```
//!
//! **Flow.** [`run_search`] spends the budget (one unit per fine-tune) on
//! paired seeds; [`recommend`] picks the evaluated ε with the best posterior
//! mean; the recommended ε and cross-entropy then run on `confirm_seeds`
//! fresh seeds ([`confirm_seed`]) in the `confirm` phase, which trials score
//! on held-out data; [`verdict`] turns the paired differences into a CI and
//! a sentence.
//!
//! **Resume.** Running the same study again replays the deterministic solver
//! from the start: a search trial whose index is already in the journal is
//! not run — its recorded result is used, after checking that the journal's
//! ε and seed are the ones the replay asks for (otherwise the journal is
//! corrupt or from another build and the study stops); confirmation trials
//! are matched by index the same way. So a resumed study reaches exactly the
//! trials and the result of an uninterrupted one. Cancelled rows and a torn
//! last line are ignored (those trials run again); failed trials stay
//! failed. Rows whose metrics are out of range (hand-edited or damaged) are
//! an error naming the file and line.
//!
//! ```no_run
//! use std::sync::Arc;
//! use polytune::orchestrator::ChildCommand;
//! use polytune::study::{child_runner, run_study_blocking, StudyConfig, StudyOptions};
//!
//! let mut cfg = StudyConfig::load("configs/study.toml")?;
//! cfg.study.budget = 20; // e.g. from --budget
//! cfg.validate()?;
//! let runner = child_runner(&cfg, ChildCommand::polytune_trial()?);
//! let mut opts = StudyOptions::new("studies/digits");
//! // (`trial_program(&cfg)?` instead of `ChildCommand::polytune_trial()?`
//! // honours an external `[trial] command`.)
//! opts.config_source = "configs/study.toml".into();
//! opts.out = Some("configs/tuned.toml".into());
//! let report = run_study_blocking(cfg, opts, Arc::new(runner))?;
//! println!("{}", report.summary_table());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod dir;
pub(crate) mod guard;
pub(crate) mod inputs;
pub(crate) use inputs::{digest_differences_by_role, digest_inputs};
mod journal;
mod output;
mod plot;
mod report;
mod verdict;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::{
    LoadedConfig, ProvenanceConfig, StudyConfig, StudyConfigError, StudySettings, TrialConfig,
    EMBEDDED_DEFAULT, EMBEDDED_NAME, EMBEDDED_SOURCE, STUDY_FORMAT,
};
pub use config::{MAX_BUDGET, MAX_SECONDS, MAX_SEED, MAX_WORKERS};
pub use dir::{
    StudyDir, CONFIG_FILE, FINGERPRINT_VERSION, META_FILE, PLOT_FILE, SUMMARY_FILE, TRIALS_FILE,
    TUNED_FILE,
};
pub use journal::{
    format_row, header, parse_row, rfc3339, Journal, JournalError, Opened, RowState, TrialRecord,
};
pub use output::{seed_stats, SeedStats};
pub use plot::write_plot;
pub use verdict::{verdict, Verdict};

use crate::orchestrator::{
    ChildCommand, ChildRunner, Orchestrator, Shutdown, StopLevel, TrialOutcome, TrialRun,
    TrialRunner,
};

use crate::progress::{Progress, ProgressKind};
use crate::search::{
    confirm_seed, recommend, run_search, Bounds, Recommendation, SearchEnd, SearchError,
    TrialBackend, TrialRequest,
};
use crate::stats::PairedCi;
use crate::storage::pg::{StudyLock, StudyRegistration};
use crate::storage::worker::{run_worker, WorkerOptions};
use crate::storage::{PgStore, PgTarget, StorageError};
use crate::trial::{TrialPhase, TrialSpec};

/// Anything that stops a study. Messages name the file, key or trial.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// A bad study config.
    #[error(transparent)]
    Config(#[from] StudyConfigError),
    /// I/O on a study file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The journal is unreadable or could not be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Another polytune holds the directory.
    #[error("{dir}: another polytune process is running this study (it holds {dir}/.lock)")]
    Locked {
        /// The study directory.
        dir: PathBuf,
    },
    /// The directory holds a study made with another config.
    #[error(
        "{dir} holds a study made with config {stored_source}, which differs from this run's config {new_source} in: {}; use another --study-dir or the same config",
        differences.join("; ")
    )]
    ForeignStudy {
        /// The study directory.
        dir: PathBuf,
        /// Where the stored study's config came from.
        stored_source: String,
        /// Where this run's config came from.
        new_source: String,
        /// `key: stored vs new` for each differing key.
        differences: Vec<String>,
    },
    /// The journal disagrees with the replayed search.
    #[error("{path}: {message}")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// What disagrees.
        message: String,
    },
    /// The search could not run.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// Ctrl-C / SIGTERM: the journal is consistent and the study resumable.
    #[error("interrupted: {done} of {budget} search trials are recorded in {journal}; {resume}")]
    Interrupted {
        /// Search trials recorded (finished or failed).
        done: usize,
        /// The budget.
        budget: u64,
        /// The journal.
        journal: PathBuf,
        /// How to resume.
        resume: String,
    },
    /// Every search trial failed: there is nothing to report.
    #[error("no search trial finished (all {trials} failed; see {journal})")]
    NoFinishedTrial {
        /// Trials run.
        trials: usize,
        /// The journal.
        journal: PathBuf,
    },
    /// The tuned TOML could not be written or read back.
    #[error("{path}: {message}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The PostgreSQL storage failed or refused the study.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The tokio runtime failed.
    #[error("runtime: {0}")]
    Runtime(String),
}

/// How to run a study (everything that is not in the config).
#[derive(Debug, Clone)]
pub struct StudyOptions {
    /// The study directory (created if missing; resumed if it holds this study).
    pub study_dir: PathBuf,
    /// Where the config came from (a path, or e.g. `<embedded default>`), for
    /// messages and `study.toml`.
    pub config_source: String,
    /// Also write the tuned TOML here (atomically).
    pub out: Option<PathBuf>,
    /// Report the trials to the installed progress display (see
    /// [`crate::progress`]; the binary's bar hides itself when stderr is not
    /// a terminal).
    pub progress: bool,
    /// Install the SIGINT / SIGTERM handler (with `study.interrupt_grace_s`).
    pub handle_signals: bool,
    /// The command line to show in the "how to resume" message.
    pub resume_command: Option<String>,
    /// An external stop switch (tests, embedding); a fresh one if `None`.
    pub shutdown: Option<Shutdown>,
    /// Provenance fields that override the config's `[provenance]`.
    pub provenance: ProvenanceConfig,
    /// Write `plot.svg`.
    pub plot: bool,
    /// Keep the trials in PostgreSQL instead of the journal: this process
    /// coordinates, `polytune worker`s (and the local workers) run them.
    pub storage: Option<PgTarget>,
    /// With `storage`: workers this process runs itself (default
    /// `study.workers`; 0 = only outside workers).
    pub local_workers: Option<usize>,
    /// With `storage`: pause between polls for results.
    pub poll: Duration,
}

impl StudyOptions {
    /// Defaults: progress bar, signal handler and plot on, no `--out`.
    pub fn new(study_dir: impl Into<PathBuf>) -> Self {
        Self {
            study_dir: study_dir.into(),
            config_source: "<config>".into(),
            out: None,
            progress: true,
            handle_signals: true,
            resume_command: None,
            shutdown: None,
            provenance: ProvenanceConfig::default(),
            plot: true,
            storage: None,
            local_workers: None,
            poll: Duration::from_millis(20),
        }
    }
}

/// The program each trial runs: the config's `[trial] command` (an
/// external trial program; see the protocol in [`crate::orchestrator`]),
/// or polytune's own trainer, `<current exe> trial --spec -`.
pub fn trial_program(cfg: &StudyConfig) -> std::io::Result<ChildCommand> {
    match cfg.trial.command.as_deref() {
        Some([program, args @ ..]) => Ok(ChildCommand::new(program, args)),
        _ => ChildCommand::polytune_trial(),
    }
}

/// A [`ChildRunner`] for `command` with the config's trial timeout.
pub fn child_runner(cfg: &StudyConfig, command: ChildCommand) -> ChildRunner {
    ChildRunner::new(command).with_timeout(Some(Duration::from_secs_f64(cfg.study.trial_timeout_s)))
}

/// The confirmation: the recommended ε and cross-entropy on fresh paired
/// seeds, scored on the held-out split.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmation {
    /// The confirmation seeds (never used by the search).
    pub seeds: Vec<u64>,
    /// Held-out accuracy of the recommended ε per seed (finished runs).
    pub tuned: SeedStats,
    /// Held-out accuracy of cross-entropy per seed (finished runs).
    pub baseline: SeedStats,
    /// The paired difference tuned − CE in accuracy points, over the seeds
    /// where both finished; `None` with fewer than two such pairs or when
    /// the recommendation is cross-entropy itself.
    pub paired: Option<PairedCi>,
}

/// What a study found.
#[derive(Debug, Clone)]
pub struct StudyReport {
    /// The study directory.
    pub study_dir: PathBuf,
    /// The solver.
    pub solver: String,
    /// The budget.
    pub budget: u64,
    /// The search box.
    pub bounds: Bounds,
    /// Search trials by index (one per (ε, seed) fine-tune).
    pub trials: Vec<TrialRecord>,
    /// Confirmation runs in order (recommended ε, then CE, per seed).
    pub confirm: Vec<TrialRecord>,
    /// The recommended ε and the model's view of it.
    pub recommendation: Recommendation,
    /// Why the search ended.
    pub end: SearchEnd,
    /// The confirmation on fresh seeds and held-out data.
    pub confirmation: Confirmation,
    /// The verdict against cross-entropy.
    pub verdict: Verdict,
    /// Trials taken from the journal instead of being run.
    pub replayed: usize,
    /// Trials run by this invocation.
    pub ran: usize,
    /// The tuned-coefficients file written.
    pub tuned: poly_loss::PolyConfig,
    /// Where it was written (study dir, then `--out`).
    pub tuned_paths: Vec<PathBuf>,
}

impl StudyReport {
    /// The baseline (trial 0: ε = 0 on the first seed).
    pub fn baseline(&self) -> &TrialRecord {
        &self.trials[0]
    }

    /// True when the recommendation is cross-entropy (ε = 0).
    pub fn recommends_baseline(&self) -> bool {
        self.recommendation.epsilon.iter().all(|e| *e == 0.0)
    }
}

/// Where trials run and are recorded.
enum Exec {
    /// The worker pool of this process; attempts appended to the journal.
    Local {
        orch: Orchestrator,
        journal: Mutex<Journal>,
    },
    /// Queued in PostgreSQL for workers; this process polls for results.
    Queue {
        store: Box<PgStore>,
        study_id: i64,
        lock: Arc<StudyLock>,
        handle: tokio::runtime::Handle,
        shutdown: Shutdown,
        poll: Duration,
    },
}

/// The study's [`TrialBackend`]: memo of recorded trials, then the pool
/// and journal, or the PostgreSQL queue.
struct Backend {
    exec: Exec,
    journal_path: PathBuf,
    bounds: Bounds,
    train: toml::Table,
    data: toml::Table,
    search_memo: HashMap<u64, TrialRecord>,
    confirm_memo: HashMap<u64, TrialRecord>,
    /// Attempts started per (phase, trial), journaled ones included.
    attempts: Mutex<HashMap<(TrialPhase, u64), u32>>,
    max_retries: u32,
    used: Mutex<BTreeMap<u64, TrialRecord>>,
    fatal: Mutex<Option<StudyError>>,
    counts: Mutex<(usize, usize)>,
    progress: Progress,
}

impl Backend {
    fn spec(&self, trial: u64, phase: TrialPhase, epsilon: Vec<f64>, seed: u64) -> TrialSpec {
        TrialSpec {
            trial,
            phase,
            epsilon,
            seed,
            train: self.train.clone(),
            data: self.data.clone(),
            worker: None,
        }
    }

    fn set_fatal(&self, e: StudyError) {
        let mut f = self.fatal.lock().expect("lock");
        if f.is_none() {
            *f = Some(e);
        }
    }

    /// A trial that ended now (finished or failed): logged, counted, and
    /// a search trial kept for the report.
    fn record_ended(&self, rec: &TrialRecord) {
        self.note(rec, false);
        if rec.phase == TrialPhase::Search {
            self.used
                .lock()
                .expect("lock")
                .insert(rec.trial, rec.clone());
        }
    }

    fn note(&self, r: &TrialRecord, replayed: bool) {
        {
            let mut c = self.counts.lock().expect("lock");
            if replayed {
                c.0 += 1
            } else {
                c.1 += 1
            }
        }
        let tag = if replayed { " (from journal)" } else { "" };
        match (r.state, r.val_accuracy) {
            (RowState::Finished, Some(acc)) => {
                tracing::info!(
                    "{} {} ε={} seed {}: val acc {:.4}, val loss {:.4}, {:.1} s{tag}",
                    r.phase.as_str(),
                    r.trial,
                    fmt_eps(&r.epsilon),
                    r.seed,
                    acc,
                    r.val_loss.unwrap_or(f64::NAN),
                    r.duration_s
                );
            }
            _ => tracing::warn!(
                "{} {} ε={} seed {} {}: {}{tag}",
                r.phase.as_str(),
                r.trial,
                fmt_eps(&r.epsilon),
                r.seed,
                r.state.as_str(),
                r.error
            ),
        }
        let msg = match r.val_accuracy {
            Some(acc) => format!(
                "last: ε={} seed {} acc {acc:.4}",
                fmt_eps(&r.epsilon),
                r.seed
            ),
            None => format!("last: ε={} {}", fmt_eps(&r.epsilon), r.state.as_str()),
        };
        self.progress.inc(1);
        self.progress.set_message(msg);
    }

    /// Runs `specs` on the pool and journals each attempt as it ends; a
    /// trial lost to an outside signal or a timeout runs again (up to
    /// `max_retries` more times, counting attempts journaled before a
    /// resume). `None` if any was cancelled or the journal failed.
    fn dispatch(&self, specs: Vec<TrialSpec>) -> Option<Vec<TrialRecord>> {
        match &self.exec {
            Exec::Local { orch, journal } => self.dispatch_local(orch, journal, specs),
            Exec::Queue { handle, .. } => {
                let handle = handle.clone();
                match handle.block_on(self.dispatch_queue(specs)) {
                    Ok(out) => out,
                    Err(e) => {
                        self.set_fatal(e);
                        None
                    }
                }
            }
        }
    }

    /// Queues `specs` in PostgreSQL and waits until each has ended
    /// (finished or failed; retries happen in the queue). `None` on a
    /// shutdown: the queued trials stay for the next coordinator.
    async fn dispatch_queue(
        &self,
        specs: Vec<TrialSpec>,
    ) -> Result<Option<Vec<TrialRecord>>, StudyError> {
        let Exec::Queue {
            store,
            study_id,
            lock,
            shutdown,
            poll,
            ..
        } = &self.exec
        else {
            unreachable!("dispatch_queue on a local backend")
        };
        let stored = store.enqueue(*study_id, &specs).await?;
        for (s, (eps, seed)) in specs.iter().zip(&stored) {
            if *seed != s.seed || !self.bounds.same_point(eps, &s.epsilon) {
                return Err(StudyError::Corrupt {
                    path: PathBuf::from(store.target().redacted()),
                    message: format!(
                        "{} trial {} is queued with ε = {eps:?}, seed {seed}, but the replayed search asks for ε = {:?}, seed {}; the database's study belongs to another config or polytune version",
                        s.phase.as_str(), s.trial, s.epsilon, s.seed
                    ),
                });
            }
        }
        let phase = specs.first().map_or(TrialPhase::Search, |s| s.phase);
        let index: Vec<u64> = specs.iter().map(|s| s.trial).collect();
        let mut done: HashMap<u64, TrialRecord> = HashMap::new();
        let mut last_requeue = std::time::Instant::now();
        let mut waiting_note = std::time::Instant::now();
        loop {
            if shutdown.is_stopping() {
                return Ok(None);
            }
            lock.ensure().await?;
            let open: Vec<u64> = index
                .iter()
                .copied()
                .filter(|i| !done.contains_key(i))
                .collect();
            for rec in store.ended(*study_id, phase, &open).await? {
                self.record_ended(&rec);
                done.insert(rec.trial, rec);
            }
            if done.len() == index.len() {
                return Ok(Some(index.iter().map(|i| done[i].clone()).collect()));
            }
            if last_requeue.elapsed() >= Duration::from_millis(500) {
                store.requeue_lost(Some(*study_id)).await?;
                last_requeue = std::time::Instant::now();
            }
            if waiting_note.elapsed() >= Duration::from_secs(60) {
                tracing::info!(
                    "waiting for {} queued trial(s) in {}; workers: `polytune worker --storage {}`",
                    index.len() - done.len(),
                    store.target().redacted(),
                    store.target().redacted()
                );
                waiting_note = std::time::Instant::now();
            }
            tokio::select! {
                _ = tokio::time::sleep(*poll) => {}
                _ = shutdown.reached(StopLevel::Draining) => {}
            }
        }
    }

    fn dispatch_local(
        &self,
        orch: &Orchestrator,
        journal: &Mutex<Journal>,
        specs: Vec<TrialSpec>,
    ) -> Option<Vec<TrialRecord>> {
        let n = specs.len();
        let mut out: Vec<Option<TrialRecord>> = vec![None; n];
        let mut pending: Vec<(usize, TrialSpec)> = specs.into_iter().enumerate().collect();
        let mut stop = false;
        while !pending.is_empty() && !stop {
            let batch: Vec<TrialSpec> = pending.iter().map(|(_, s)| s.clone()).collect();
            let rx = orch.run_batch_blocking(batch.clone());
            let mut again = Vec::new();
            for (i, run) in rx.iter().take(batch.len()) {
                let (slot, spec) = &pending[i];
                let key = (spec.phase, spec.trial);
                let attempt = {
                    let mut a = self.attempts.lock().expect("lock");
                    let e = a.entry(key).or_insert(0);
                    if run.launched {
                        *e += 1;
                    }
                    *e
                };
                let mut rec = record(spec, &run);
                rec.attempt = attempt.max(1);
                if rec.state == RowState::Retry && attempt > self.max_retries {
                    rec.state = RowState::Failed;
                    rec.error = format!("{} (gave up after {attempt} attempts)", rec.error);
                }
                // Trials that never started leave no row; started-and-cancelled
                // ones leave a `cancelled` row (ignored on resume).
                if run.launched {
                    if let Err(e) = journal.lock().expect("lock").append(&rec) {
                        self.set_fatal(e.into());
                        stop = true;
                    }
                }
                match rec.state {
                    RowState::Cancelled => stop = true,
                    RowState::Retry => {
                        self.note(&rec, false);
                        again.push((*slot, spec.clone()));
                    }
                    _ => {
                        self.record_ended(&rec);
                        out[*slot] = Some(rec);
                    }
                }
            }
            pending = again;
        }
        if stop || out.iter().any(Option::is_none) {
            return None;
        }
        Some(out.into_iter().map(|r| r.expect("checked")).collect())
    }

    /// Confirmation runs of `pairs` (ε, seed). A journaled confirmation of
    /// the same (ε, seed) is reused. New ones are numbered by their place in
    /// `pairs`, after the last journaled confirmation trial if the journal
    /// holds an earlier confirmation of other pairs (a study resumed with a
    /// bigger budget that changed the recommendation), so an interrupted
    /// confirmation resumes to exactly the rows of an uninterrupted one.
    fn confirm(&self, pairs: &[(Vec<f64>, u64)]) -> Option<Vec<TrialRecord>> {
        let find = |eps: &[f64], seed: u64| {
            self.confirm_memo
                .values()
                .find(|row| row.seed == seed && self.bounds.same_point(&row.epsilon, eps))
        };
        let same_round = self.confirm_memo.values().all(|row| {
            pairs
                .get(row.trial as usize)
                .is_some_and(|(e, s)| *s == row.seed && self.bounds.same_point(e, &row.epsilon))
        });
        let base = if same_round {
            0
        } else {
            self.confirm_memo.keys().max().map_or(0, |m| m + 1)
        };
        let mut out: Vec<Option<TrialRecord>> = vec![None; pairs.len()];
        let mut specs = Vec::new();
        let mut slots = Vec::new();
        for (r, (eps, seed)) in pairs.iter().enumerate() {
            match find(eps, *seed) {
                Some(row) => {
                    self.note(row, true);
                    out[r] = Some(row.clone());
                }
                None => {
                    specs.push(self.spec(base + r as u64, TrialPhase::Confirm, eps.clone(), *seed));
                    slots.push(r);
                }
            }
        }
        if !specs.is_empty() {
            let done = self.dispatch(specs)?;
            for (slot, rec) in slots.into_iter().zip(done) {
                out[slot] = Some(rec);
            }
        }
        Some(out.into_iter().map(|r| r.expect("filled")).collect())
    }
}

impl TrialBackend for Backend {
    fn run_trials(&self, trials: &[TrialRequest]) -> Option<Vec<f64>> {
        if self.fatal.lock().expect("lock").is_some() {
            return None;
        }
        let mut costs = vec![f64::NAN; trials.len()];
        let mut specs = Vec::new();
        let mut slots = Vec::new();
        for (k, t) in trials.iter().enumerate() {
            match self.search_memo.get(&t.index) {
                Some(row) => {
                    if !self.bounds.same_point(&row.epsilon, &t.epsilon) || row.seed != t.seed {
                        self.set_fatal(StudyError::Corrupt {
                            path: self.journal_path.clone(),
                            message: format!(
                                "search trial {} was recorded with ε = {:?}, seed {}, but the replayed search asks for ε = {:?}, seed {}; the journal belongs to another config or polytune version",
                                t.index, row.epsilon, row.seed, t.epsilon, t.seed
                            ),
                        });
                        return None;
                    }
                    self.note(row, true);
                    self.used.lock().expect("lock").insert(t.index, row.clone());
                    costs[k] = row.cost();
                }
                None => {
                    specs.push(self.spec(t.index, TrialPhase::Search, t.epsilon.clone(), t.seed));
                    slots.push(k);
                }
            }
        }
        if !specs.is_empty() {
            let done = self.dispatch(specs)?;
            for (k, rec) in slots.into_iter().zip(done) {
                costs[k] = rec.cost();
            }
        }
        Some(costs)
    }
}

/// The limit a timed-out trial ran under, from its journaled reason
/// ("timed out after 2.0 s (killed)").
fn timed_out_after(error: &str) -> Option<f64> {
    error
        .strip_prefix("timed out after ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn fmt_eps(eps: &[f64]) -> String {
    let parts: Vec<String> = eps.iter().map(|e| format!("{e:.4}")).collect();
    format!("[{}]", parts.join(", "))
}

/// The journal row of a trial run.
pub(crate) fn record(spec: &TrialSpec, run: &TrialRun) -> TrialRecord {
    let mut rec = TrialRecord {
        trial: spec.trial,
        phase: spec.phase,
        state: RowState::Failed,
        epsilon: spec.epsilon.clone(),
        val_accuracy: None,
        val_loss: None,
        train_loss: None,
        epochs: None,
        seed: spec.seed,
        start_time: rfc3339(run.started),
        duration_s: (run.duration.as_secs_f64() * 1000.0).round() / 1000.0,
        attempt: 1,
        error: String::new(),
    };
    match &run.outcome {
        TrialOutcome::Finished(r) => {
            rec.state = RowState::Finished;
            rec.val_accuracy = Some(r.val_accuracy);
            rec.val_loss = Some(r.val_loss);
            rec.train_loss = r.train_loss;
            rec.epochs = r.epochs;
        }
        TrialOutcome::Failed(why) => rec.error = why.clone(),
        TrialOutcome::Transient(why) => {
            rec.state = RowState::Retry;
            rec.error = why.clone();
        }
        TrialOutcome::Cancelled => {
            rec.state = RowState::Cancelled;
            rec.error = "cancelled by shutdown".into();
        }
    }
    rec
}

/// Runs a study on a new multi-threaded tokio runtime (see [`run_study`]).
pub fn run_study_blocking(
    cfg: StudyConfig,
    opts: StudyOptions,
    runner: Arc<dyn TrialRunner>,
) -> Result<StudyReport, StudyError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StudyError::Runtime(e.to_string()))?;
    rt.block_on(run_study(cfg, opts, runner))
}

/// Runs (or resumes) a study: the search within the budget, the K
/// confirmation runs, then `tuned.toml` (and `opts.out`), `summary.txt`
/// and `plot.svg`. On Ctrl-C / SIGTERM returns [`StudyError::Interrupted`]
/// with the journal consistent; running the same study again resumes it.
pub async fn run_study(
    cfg: StudyConfig,
    opts: StudyOptions,
    runner: Arc<dyn TrialRunner>,
) -> Result<StudyReport, StudyError> {
    cfg.validate_named(&opts.config_source)?;
    guard::check_outputs(&cfg, &opts)?;
    // The database first: a wrong URL, password or schema writes nothing.
    let app_name = format!(
        "polytune coordinator {}",
        crate::storage::worker::default_worker_id()
    );
    let store = match &opts.storage {
        Some(target) => Some(PgStore::open(target, &app_name).await?),
        None => None,
    };
    let dir = StudyDir::open(&opts.study_dir, &cfg, &opts.config_source)?;
    let st = &cfg.study;
    let shutdown = opts.shutdown.clone().unwrap_or_default();
    let journal_path;
    let rows;
    let mut queue = None;
    let exec_local;
    match &store {
        None => {
            journal_path = dir.file(TRIALS_FILE);
            let opened = Journal::open(&journal_path, cfg.search.terms)?;
            if let Some(torn) = &opened.dropped_torn_line {
                tracing::warn!(
                    "{}: dropped a torn last line from an interrupted write ({} bytes); that trial runs again",
                    journal_path.display(),
                    torn.len()
                );
            }
            rows = opened.rows;
            exec_local = Some(opened.journal);
        }
        Some(store) => {
            let name = dir
                .root()
                .file_name()
                .map_or("study".into(), |n| n.to_string_lossy().into_owned());
            journal_path = PathBuf::from(format!("{} study {name:?}", store.target().redacted()));
            let reg = StudyRegistration {
                name,
                fingerprint: dir.fingerprint().to_string(),
                source: opts.config_source.clone(),
                config: cfg.to_toml_string(),
                inputs: toml::to_string(dir.inputs()).map_err(|e| {
                    StudyError::Runtime(format!("cannot serialise the input digests: {e}"))
                })?,
                terms: cfg.search.terms,
                budget: st.budget,
                confirm_runs: 2 * st.confirm_seeds,
                lease_s: st.lease_s,
                max_retries: st.max_retries,
            };
            let row = store.register_study(&reg).await?;
            let lock = store.lock_study(&row, &app_name).await?;
            store.update_study(row.id, &reg).await?;
            rows = store.final_records(row.id).await?;
            queue = Some((row.id, Arc::new(lock)));
            exec_local = None;
        }
    }
    let mut search_memo = HashMap::new();
    let mut confirm_memo = HashMap::new();
    let mut attempts: HashMap<(TrialPhase, u64), u32> = HashMap::new();
    let timeout_now = cfg.study.trial_timeout_s;
    for row in rows {
        if row.state != RowState::Cancelled {
            let a = attempts.entry((row.phase, row.trial)).or_insert(0);
            *a = (*a).max(row.attempt);
        }
        match (row.state, row.phase) {
            (RowState::Cancelled | RowState::Retry, _) => {}
            // Timed out under a lower limit than today's: run it again.
            (RowState::Failed, _)
                if exec_local.is_some()
                    && timed_out_after(&row.error).is_some_and(|t| t < timeout_now - 0.05) =>
            {
                attempts.insert((row.phase, row.trial), 0);
            }
            (_, TrialPhase::Search) => {
                search_memo.insert(row.trial, row);
            }
            (_, TrialPhase::Confirm) => {
                confirm_memo.insert(row.trial, row);
            }
        }
    }
    if dir.resumed() || !search_memo.is_empty() {
        tracing::info!(
            "resuming the study in {} ({} search trials recorded)",
            journal_path.display(),
            search_memo.len()
        );
    }
    let listener = if opts.handle_signals {
        Some(
            shutdown
                .listen_for_signals(Duration::from_secs_f64(st.interrupt_grace_s))
                .map_err(|e| StudyError::Runtime(format!("cannot install signal handlers: {e}")))?,
        )
    } else {
        None
    };
    let progress = if opts.progress {
        Progress::start(ProgressKind::Trials, st.budget)
    } else {
        Progress::hidden()
    };
    progress.set_prefix("search");
    let mut local_workers = Vec::new();
    let workers_stop = shutdown.child();
    let exec = match (exec_local, &store, &queue) {
        (Some(journal), _, _) => Exec::Local {
            orch: Orchestrator::new(runner, st.workers, shutdown.clone()),
            journal: Mutex::new(journal),
        },
        (None, Some(store), Some((study_id, lock))) => {
            let k = opts.local_workers.unwrap_or(st.workers);
            for slot in 0..k {
                let mut w = WorkerOptions::new();
                w.id = format!("{}/{slot}", w.id);
                w.slot = Some(slot);
                w.study = Some(*study_id);
                let r = runner.clone();
                w.runner = Arc::new(move |_: &StudyConfig| Ok(r.clone()));
                let (store, stop) = (store.clone(), workers_stop.clone());
                local_workers.push(tokio::spawn(async move {
                    if let Err(e) = run_worker(&store, &w, &stop).await {
                        tracing::error!("local worker {}: {e}", w.id);
                    }
                }));
            }
            if k == 0 {
                tracing::info!(
                    "no local workers: start `polytune worker --storage {}` on the machines that should run trials",
                    store.target().redacted()
                );
            }
            Exec::Queue {
                store: Box::new(store.clone()),
                study_id: *study_id,
                lock: lock.clone(),
                handle: tokio::runtime::Handle::current(),
                shutdown: shutdown.clone(),
                poll: opts.poll,
            }
        }
        _ => unreachable!("a journal or a queue"),
    };
    let backend = Arc::new(Backend {
        exec,
        journal_path: journal_path.clone(),
        bounds: cfg.search.bounds(),
        train: cfg.train.clone(),
        data: cfg.data.clone(),
        search_memo,
        confirm_memo,
        attempts: Mutex::new(attempts),
        max_retries: cfg.study.max_retries,
        used: Mutex::new(BTreeMap::new()),
        fatal: Mutex::new(None),
        counts: Mutex::new((0, 0)),
        progress: progress.clone(),
    });
    let result = drive(&cfg, &opts, &dir, backend.clone(), &shutdown).await;
    progress.finish();
    // Local workers: on a normal end they are idle; on a stop they give
    // their trials back (after the grace period) before the lock goes.
    workers_stop.raise(StopLevel::Draining);
    for w in local_workers {
        let _ = w.await;
    }
    if let (Some(store), Some((study_id, lock))) = (&store, queue) {
        let (state, words) = match &result {
            Ok(r) => ("finished", r.verdict.sentence.clone()),
            Err(StudyError::Interrupted { .. }) => ("interrupted", String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        if let Err(e) = store.set_study_state(study_id, state, &words).await {
            tracing::warn!("{e}");
        }
        drop(backend);
        if let Ok(lock) = Arc::try_unwrap(lock) {
            lock.release().await;
        }
    }
    if let Some(l) = listener {
        l.abort();
    }
    result
}

async fn drive(
    cfg: &StudyConfig,
    opts: &StudyOptions,
    dir: &StudyDir,
    backend: Arc<Backend>,
    shutdown: &Shutdown,
) -> Result<StudyReport, StudyError> {
    let st = &cfg.study;
    let journal_path = dir.file(TRIALS_FILE);
    let interrupted = |backend: &Backend| {
        let done = backend.used.lock().expect("lock").len();
        StudyError::Interrupted {
            done,
            budget: st.budget,
            journal: journal_path.clone(),
            resume: match &opts.resume_command {
                Some(cmd) => format!("to resume, run: {cmd}"),
                None => "run the same command again to resume".into(),
            },
        }
    };
    let join = |e: tokio::task::JoinError| StudyError::Runtime(format!("search thread: {e}"));

    let (search_cfg, b) = (cfg.search.clone(), backend.clone());
    let (budget, seed, workers) = (st.budget, st.seed, st.workers);
    let outcome =
        tokio::task::spawn_blocking(move || run_search(&search_cfg, budget, seed, workers, b))
            .await
            .map_err(join)??;
    if let Some(e) = backend.fatal.lock().expect("lock").take() {
        return Err(e);
    }
    if outcome.end == SearchEnd::Stopped || shutdown.is_stopping() {
        return Err(interrupted(&backend));
    }
    if let SearchEnd::SolverFinished(why) = &outcome.end {
        tracing::info!(
            "{} stopped after {} of {} trials: {why}",
            cfg.search.solver,
            outcome.trials.len(),
            st.budget
        );
    }
    let trials: Vec<TrialRecord> = backend
        .used
        .lock()
        .expect("lock")
        .values()
        .cloned()
        .collect();
    debug_assert!(trials.iter().enumerate().all(|(i, t)| t.trial == i as u64));
    let bounds = cfg.search.bounds();
    let recommendation = recommend(&outcome.trials, &bounds, st.seed).ok_or_else(|| {
        StudyError::NoFinishedTrial {
            trials: trials.len(),
            journal: journal_path.clone(),
        }
    })?;
    tracing::info!(
        "recommended ε = {} (posterior mean {:.4} ± {:.4}, {} seed(s), mean over seeds {:.4})",
        fmt_eps(&recommendation.epsilon),
        recommendation.posterior_mean,
        recommendation.posterior_sd,
        recommendation.seeds,
        recommendation.mean_over_seeds
    );

    // Confirmation: the recommended ε and CE on fresh paired seeds, scored
    // on held-out data. Nothing to confirm when CE itself is recommended.
    let base_eps = bounds.baseline();
    let is_base = bounds.same_point(&recommendation.epsilon, &base_eps);
    let seeds: Vec<u64> = (0..st.confirm_seeds as usize)
        .map(|k| confirm_seed(st.seed, k))
        .collect();
    let mut pairs = Vec::new();
    if !is_base {
        for &s in &seeds {
            pairs.push((recommendation.epsilon.clone(), s));
            pairs.push((base_eps.clone(), s));
        }
    }
    backend.progress.set_prefix("confirm");
    backend.progress.inc_length(pairs.len() as u64);
    let b = backend.clone();
    let confirm = if pairs.is_empty() {
        Some(Vec::new())
    } else {
        tokio::task::spawn_blocking(move || b.confirm(&pairs))
            .await
            .map_err(join)?
    };
    if let Some(e) = backend.fatal.lock().expect("lock").take() {
        return Err(e);
    }
    let Some(confirm) = confirm else {
        return Err(interrupted(&backend));
    };

    let (replayed, ran) = *backend.counts.lock().expect("lock");
    let mut report = output::finish(
        cfg,
        opts,
        dir,
        output::Findings {
            trials,
            confirm,
            confirm_seeds: if is_base { Vec::new() } else { seeds },
            recommendation,
            end: outcome.end,
            replayed,
            ran,
        },
    )?;
    let summary = report.summary_table();
    let summary_path = dir.file(SUMMARY_FILE);
    crate::fs::write_atomic(&summary_path, summary.as_bytes()).map_err(|source| {
        StudyError::Io {
            path: summary_path,
            source,
        }
    })?;
    if opts.plot {
        let plot_path = dir.file(PLOT_FILE);
        if let Err(e) = write_plot(&report, &plot_path) {
            tracing::warn!("{}: could not draw the plot: {e}", plot_path.display());
        }
    }
    report.study_dir = dir.root().to_path_buf();
    Ok(report)
}
