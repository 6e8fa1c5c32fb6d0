//! A study: the search run end to end, with a crash-safe journal, resume,
//! confirmation re-runs, and the outputs (tuned TOML, summary, SVG plot).
//!
//! ```text
//! <study dir>/
//!   config.toml   the resolved study config (refused if a rerun differs)
//!   study.toml    where it came from, its fingerprint, when
//!   trials.csv    one fsynced row per trial (the journal)
//!   tuned.toml    the best ε as a poly_loss PolyConfig (written atomically)
//!   plot.svg      ε vs accuracy, and accuracy / best-so-far per trial
//!   summary.txt   the summary table
//! ```
//!
//! **Resume.** Running the same study again replays the deterministic solver
//! from the start: a search trial whose index is already in the journal is
//! not run — its recorded result is used, after checking that the journal's
//! ε is the ε the replay asks for (otherwise the journal is corrupt or from
//! another build and the study stops). So a resumed study reaches exactly the
//! trials and the result of an uninterrupted one. Cancelled rows and a torn
//! last line are ignored (those trials run again); failed trials stay failed.
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
//! opts.config_source = "configs/study.toml".into();
//! opts.out = Some("configs/tuned.toml".into());
//! let report = run_study_blocking(cfg, opts, Arc::new(runner))?;
//! println!("{}", report.summary_table());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod dir;
pub(crate) mod guard;
mod inputs;
mod journal;
mod output;
mod plot;
mod progress;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::{sha256_file, ConfigError, ProvenanceConfig, StudyConfig, StudySettings};
pub use config::{MAX_BUDGET, MAX_RERUN_SEEDS, MAX_SECONDS, MAX_SEED, MAX_WORKERS};
pub use dir::{
    write_atomic, StudyDir, CONFIG_FILE, META_FILE, PLOT_FILE, SUMMARY_FILE, TRIALS_FILE,
    TUNED_FILE,
};
pub use journal::{
    format_row, header, parse_row, rfc3339, Journal, JournalError, Opened, RowState, TrialRecord,
};
pub use output::{seed_stats, SeedStats};
pub use plot::write_plot;
pub use progress::{init_logging, multi_progress, LogWriter, Progress};

use crate::orchestrator::{
    ChildCommand, ChildRunner, Orchestrator, Shutdown, TrialOutcome, TrialPhase, TrialRun,
    TrialRunner, TrialSpec,
};
use crate::search::{run_search, Bounds, SearchEnd, SearchError, TrialBackend};

/// Anything that stops a study. Messages name the file, key or trial.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// A bad study config.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// Show the progress bar (hidden anyway when stderr is not a terminal).
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
        }
    }
}

/// A [`ChildRunner`] for `command` with the config's trial timeout.
pub fn child_runner(cfg: &StudyConfig, command: ChildCommand) -> ChildRunner {
    ChildRunner::new(command).with_timeout(Some(Duration::from_secs_f64(cfg.study.trial_timeout_s)))
}

/// Mean ± std over seeds of the best ε and of the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmation {
    /// All seeds: the study seed, then the K re-run seeds.
    pub seeds: Vec<u64>,
    /// Best ε over the seeds (finished runs only).
    pub best: SeedStats,
    /// Baseline over the seeds (finished runs only).
    pub baseline: SeedStats,
    /// `best.mean − baseline.mean`.
    pub difference: f64,
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
    /// Search trials by index.
    pub trials: Vec<TrialRecord>,
    /// Confirmation re-runs in order.
    pub reruns: Vec<TrialRecord>,
    /// Index of the best search trial.
    pub best_index: u64,
    /// Why the search ended.
    pub end: SearchEnd,
    /// Mean ± std over seeds.
    pub confirmation: Confirmation,
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
    /// The best search trial.
    pub fn best(&self) -> &TrialRecord {
        &self.trials[self.best_index as usize]
    }

    /// The baseline (trial 0).
    pub fn baseline(&self) -> &TrialRecord {
        &self.trials[0]
    }
}

/// The study's [`TrialBackend`]: journal memo, worker pool, journal writes.
struct Backend {
    orch: Orchestrator,
    journal: Mutex<Journal>,
    journal_path: PathBuf,
    bounds: Bounds,
    seed: u64,
    train: toml::Table,
    data: toml::Table,
    search_memo: HashMap<u64, TrialRecord>,
    rerun_memo: Vec<TrialRecord>,
    used: Mutex<BTreeMap<u64, TrialRecord>>,
    fatal: Mutex<Option<StudyError>>,
    counts: Mutex<(usize, usize)>,
    progress: Progress,
    best: Mutex<Option<(f64, f64, Vec<f64>)>>,
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
        if r.phase == TrialPhase::Search && r.is_finished() {
            let mut b = self.best.lock().expect("lock");
            let c = r.cost();
            if b.as_ref().is_none_or(|(bc, _, _)| c < *bc) {
                *b = Some((c, r.val_accuracy.unwrap_or_default(), r.epsilon.clone()));
            }
        }
        let msg = match &*self.best.lock().expect("lock") {
            Some((_, acc, eps)) => format!("best val acc {acc:.4} at ε={}", fmt_eps(eps)),
            None => "no finished trial yet".into(),
        };
        self.progress.inc(msg);
    }

    /// Runs `specs` on the pool, journals each as it ends; `None` if any was
    /// cancelled or the journal failed.
    fn dispatch(&self, specs: Vec<TrialSpec>) -> Option<Vec<TrialRecord>> {
        let n = specs.len();
        let mut out: Vec<Option<TrialRecord>> = vec![None; n];
        let rx = self.orch.run_batch_blocking(specs.clone());
        let mut stop = false;
        for (i, run) in rx.iter().take(n) {
            let rec = record(&specs[i], &run);
            // Trials that never started leave no row; started-and-cancelled
            // ones leave a `cancelled` row (ignored on resume).
            if run.launched {
                if let Err(e) = self.journal.lock().expect("lock").append(&rec) {
                    self.set_fatal(e.into());
                    stop = true;
                }
            }
            if rec.state == RowState::Cancelled {
                stop = true;
            } else {
                self.note(&rec, false);
                if rec.phase == TrialPhase::Search {
                    self.used
                        .lock()
                        .expect("lock")
                        .insert(rec.trial, rec.clone());
                }
            }
            out[i] = Some(rec);
        }
        if stop || out.iter().any(Option::is_none) {
            return None;
        }
        Some(out.into_iter().map(|r| r.expect("checked")).collect())
    }

    /// Confirmation runs of `(ε, seed)` pairs, memoised by (ε, seed).
    fn reruns(&self, pairs: &[(Vec<f64>, u64)]) -> Option<Vec<TrialRecord>> {
        let mut out: Vec<Option<TrialRecord>> = vec![None; pairs.len()];
        let mut specs = Vec::new();
        let mut slots = Vec::new();
        for (r, (eps, seed)) in pairs.iter().enumerate() {
            let hit = self
                .rerun_memo
                .iter()
                .rev()
                .find(|row| row.seed == *seed && self.bounds.same_point(&row.epsilon, eps));
            match hit {
                Some(row) => {
                    self.note(row, true);
                    out[r] = Some(row.clone());
                }
                None => {
                    specs.push(self.spec(r as u64, TrialPhase::Rerun, eps.clone(), *seed));
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
    fn run_trials(&self, trials: &[(u64, Vec<f64>)]) -> Option<Vec<f64>> {
        if self.fatal.lock().expect("lock").is_some() {
            return None;
        }
        let mut costs = vec![f64::NAN; trials.len()];
        let mut specs = Vec::new();
        let mut slots = Vec::new();
        for (k, (index, eps)) in trials.iter().enumerate() {
            match self.search_memo.get(index) {
                Some(row) => {
                    if !self.bounds.same_point(&row.epsilon, eps) || row.seed != self.seed {
                        self.set_fatal(StudyError::Corrupt {
                            path: self.journal_path.clone(),
                            message: format!(
                                "search trial {index} was recorded with ε = {:?}, seed {}, but the replayed search asks for ε = {eps:?}, seed {}; the journal belongs to another config or polytune version",
                                row.epsilon, row.seed, self.seed
                            ),
                        });
                        return None;
                    }
                    self.note(row, true);
                    self.used.lock().expect("lock").insert(*index, row.clone());
                    costs[k] = row.cost();
                }
                None => {
                    specs.push(self.spec(*index, TrialPhase::Search, eps.clone(), self.seed));
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

fn fmt_eps(eps: &[f64]) -> String {
    let parts: Vec<String> = eps.iter().map(|e| format!("{e:.4}")).collect();
    format!("[{}]", parts.join(", "))
}

/// The journal row of a trial run.
fn record(spec: &TrialSpec, run: &TrialRun) -> TrialRecord {
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
        error: String::new(),
    };
    match &run.outcome {
        TrialOutcome::Finished(r) => {
            rec.state = RowState::Finished;
            rec.val_accuracy = Some(r.val_accuracy);
            rec.val_loss = Some(r.val_loss);
            rec.train_loss = Some(r.train_loss);
            rec.epochs = Some(r.epochs);
        }
        TrialOutcome::Failed(why) => rec.error = why.clone(),
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
/// confirmation re-runs, then `tuned.toml` (and `opts.out`), `summary.txt`
/// and `plot.svg`. On Ctrl-C / SIGTERM returns [`StudyError::Interrupted`]
/// with the journal consistent; running the same study again resumes it.
pub async fn run_study(
    cfg: StudyConfig,
    opts: StudyOptions,
    runner: Arc<dyn TrialRunner>,
) -> Result<StudyReport, StudyError> {
    cfg.validate_named(&opts.config_source)?;
    guard::check_outputs(&cfg, &opts)?;
    let dir = StudyDir::open(&opts.study_dir, &cfg, &opts.config_source)?;
    let journal_path = dir.file(TRIALS_FILE);
    let terms = cfg.search.terms;
    let opened = Journal::open(&journal_path, terms)?;
    if let Some(torn) = &opened.dropped_torn_line {
        tracing::warn!(
            "{}: dropped a torn last line from an interrupted write ({} bytes); that trial runs again",
            journal_path.display(),
            torn.len()
        );
    }
    let mut search_memo = HashMap::new();
    let mut rerun_memo = Vec::new();
    for row in opened.rows {
        match (row.state, row.phase) {
            (RowState::Cancelled, _) => {}
            (_, TrialPhase::Search) => {
                search_memo.insert(row.trial, row);
            }
            (_, TrialPhase::Rerun) => rerun_memo.push(row),
        }
    }
    if dir.resumed() {
        tracing::info!(
            "resuming the study in {} ({} search trials recorded)",
            dir.root().display(),
            search_memo.len()
        );
    }
    let st = &cfg.study;
    let shutdown = opts.shutdown.clone().unwrap_or_default();
    let listener = if opts.handle_signals {
        Some(
            shutdown
                .listen_for_signals(Duration::from_secs_f64(st.interrupt_grace_s))
                .map_err(|e| StudyError::Runtime(format!("cannot install signal handlers: {e}")))?,
        )
    } else {
        None
    };
    let progress = Progress::new(st.budget, opts.progress);
    let backend = Arc::new(Backend {
        orch: Orchestrator::new(runner, st.workers, shutdown.clone()),
        journal: Mutex::new(opened.journal),
        journal_path: journal_path.clone(),
        bounds: cfg.search.bounds(),
        seed: st.seed,
        train: cfg.train.clone(),
        data: cfg.data.clone(),
        search_memo,
        rerun_memo,
        used: Mutex::new(BTreeMap::new()),
        fatal: Mutex::new(None),
        counts: Mutex::new((0, 0)),
        progress: progress.clone(),
        best: Mutex::new(None),
    });
    let result = drive(&cfg, &opts, &dir, backend.clone(), &shutdown).await;
    progress.finish();
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
    let best_index = trials
        .iter()
        .filter(|t| t.is_finished())
        .fold(None, |b: Option<&TrialRecord>, t| match b {
            Some(b) if b.cost() <= t.cost() => Some(b),
            _ => Some(t),
        })
        .map(|t| t.trial)
        .ok_or_else(|| StudyError::NoFinishedTrial {
            trials: trials.len(),
            journal: journal_path.clone(),
        })?;

    // Confirmation re-runs: best ε and the baseline on seeds seed+1..=seed+K.
    let best_eps = trials[best_index as usize].epsilon.clone();
    let base_eps = trials[0].epsilon.clone();
    let same = backend.bounds.same_point(&best_eps, &base_eps);
    let rerun_seeds: Vec<u64> = (1..=st.rerun_seeds)
        .map(|k| st.seed.wrapping_add(k))
        .collect();
    let mut pairs = Vec::new();
    for &s in &rerun_seeds {
        pairs.push((best_eps.clone(), s));
        if !same {
            pairs.push((base_eps.clone(), s));
        }
    }
    backend.progress.phase("re-runs", pairs.len() as u64);
    let b = backend.clone();
    let reruns = if pairs.is_empty() {
        Some(Vec::new())
    } else {
        tokio::task::spawn_blocking(move || b.reruns(&pairs))
            .await
            .map_err(join)?
    };
    if let Some(e) = backend.fatal.lock().expect("lock").take() {
        return Err(e);
    }
    let Some(reruns) = reruns else {
        return Err(interrupted(&backend));
    };

    let (replayed, ran) = *backend.counts.lock().expect("lock");
    let mut report = output::finish(
        cfg,
        opts,
        dir,
        trials,
        reruns,
        best_index,
        outcome.end,
        replayed,
        ran,
    )?;
    let summary = report.summary_table();
    let summary_path = dir.file(SUMMARY_FILE);
    write_atomic(&summary_path, summary.as_bytes()).map_err(|source| StudyError::Io {
        path: summary_path,
        source,
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
