//! The daemon's study queue: submitted studies kept on disk, started in
//! submission order with at most `max_running` coordinators at once, each
//! coordinator an ordinary [`run_study`](crate::study::run_study) on its
//! own thread.
//!
//! Layout under the daemon directory:
//! - `queue/<id>.json`: the study's record ([`StudyRecord`]), written
//!   atomically on every change of state;
//! - `queue/<id>.toml`: the config as submitted; `queue/<id>.resolved.toml`:
//!   the config after path confinement, which is what runs;
//! - `runs/study-<id>/`: the study directory (journal, `tuned.toml`, plot);
//!   with PostgreSQL storage its name is the study's name in the database;
//! - `cache/`: the trials' image caches.
//!
//! A study that was queued or running when the daemon stopped (SIGTERM,
//! crash, `kill -9`) is queued again at the next start and resumes from its
//! journal or the database; the study machinery guarantees no trial is
//! lost or recorded twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::confine::Confinement;
use super::ServeError;
use crate::fs::write_atomic;
use crate::orchestrator::{Shutdown, StopLevel};
use crate::storage::PgTarget;
use crate::study::{
    child_runner, run_study_blocking, trial_program, StudyConfig, StudyError, StudyOptions,
};

/// Longest study name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Where a submitted study stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudyState {
    /// Waiting for a free coordinator slot.
    Queued,
    /// Its coordinator runs.
    Running,
    /// Ended with a tuned TOML and a verdict.
    Finished,
    /// Ended with an error (see the record's `result`).
    Failed,
    /// Cancelled through the API.
    Cancelled,
}

impl StudyState {
    /// True once the study will not run again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Cancelled)
    }

    /// The state as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A submitted study's record (`queue/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyRecord {
    /// The daemon's id of the study.
    pub id: u64,
    /// A name for people (`?name=` at submission, default `study-<id>`).
    pub name: String,
    /// Where it stands.
    pub state: StudyState,
    /// Seconds since the Unix epoch.
    pub submitted_at: u64,
    /// When its coordinator last started.
    pub started_at: Option<u64>,
    /// When it ended.
    pub ended_at: Option<u64>,
    /// The verdict (finished) or the error (failed), in words.
    pub result: String,
    /// A cancel was asked for while it ran.
    #[serde(default)]
    pub cancel_requested: bool,
}

/// How the daemon runs studies.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// PostgreSQL storage (None: each study's journal).
    pub storage: Option<PgTarget>,
    /// With storage: workers the daemon runs per study (None: `study.workers`).
    pub local_workers: Option<usize>,
    /// Coordinators running at once.
    pub max_running: usize,
}

struct Entry {
    record: StudyRecord,
    /// The running coordinator's stop switch.
    stop: Option<Shutdown>,
}

struct Inner {
    studies: BTreeMap<u64, Entry>,
    next_id: u64,
    running: usize,
}

/// The queue (see the module docs). Shared by the API and the scheduler.
pub struct Registry {
    dir: PathBuf,
    settings: RunSettings,
    confinement: Confinement,
    inner: Mutex<Inner>,
    wake: Notify,
}

/// Why a submission or a cancel was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The config (or the name) is wrong: names the key.
    #[error("{0}")]
    BadConfig(String),
    /// No study with this id.
    #[error("no study {0}")]
    UnknownStudy(u64),
    /// The study has already ended.
    #[error("study {id} is already {state}")]
    AlreadyEnded {
        /// The study.
        id: u64,
        /// Its state.
        state: &'static str,
    },
    /// The daemon could not write its records.
    #[error(transparent)]
    Internal(#[from] ServeError),
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Registry {
    /// Opens the daemon directory `dir` (created if missing) and reads the
    /// records: studies that were queued or running are queued again.
    pub fn open(
        dir: &Path,
        settings: RunSettings,
        confinement: Confinement,
    ) -> Result<Arc<Self>, ServeError> {
        let queue = dir.join("queue");
        std::fs::create_dir_all(&queue).map_err(ServeError::io(&queue))?;
        let mut studies = BTreeMap::new();
        let mut next_id = 1;
        let entries = std::fs::read_dir(&queue).map_err(ServeError::io(&queue))?;
        for e in entries {
            let path = e.map_err(ServeError::io(&queue))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(ServeError::io(&path))?;
            let mut record: StudyRecord =
                serde_json::from_str(&text).map_err(|e| ServeError::Record {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let resume = match record.state {
                StudyState::Running if record.cancel_requested => {
                    record.state = StudyState::Cancelled;
                    record.ended_at = Some(now_s());
                    true
                }
                StudyState::Running => {
                    record.state = StudyState::Queued;
                    true
                }
                _ => false,
            };
            if resume {
                write_record(dir, &record)?;
            }
            next_id = next_id.max(record.id + 1);
            studies.insert(record.id, Entry { record, stop: None });
        }
        let queued = studies
            .values()
            .filter(|e| e.record.state == StudyState::Queued)
            .count();
        if queued > 0 {
            tracing::info!(
                "{} studies queued (resumed from {})",
                queued,
                queue.display()
            );
        }
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            settings,
            confinement,
            inner: Mutex::new(Inner {
                studies,
                next_id,
                running: 0,
            }),
            wake: Notify::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave a record half-changed: every
        // change is a whole-record replacement.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The daemon directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether studies keep their trials in PostgreSQL.
    pub fn storage(&self) -> Option<&PgTarget> {
        self.settings.storage.as_ref()
    }

    /// The study directory of study `id`.
    pub fn study_dir(&self, id: u64) -> PathBuf {
        self.dir.join("runs").join(study_dir_name(id))
    }

    /// All records, by id.
    pub fn records(&self) -> Vec<StudyRecord> {
        self.lock()
            .studies
            .values()
            .map(|e| e.record.clone())
            .collect()
    }

    /// One record.
    pub fn record(&self, id: u64) -> Option<StudyRecord> {
        self.lock().studies.get(&id).map(|e| e.record.clone())
    }

    /// The config study `id` runs with (after confinement).
    pub fn config(&self, id: u64) -> Result<StudyConfig, ServeError> {
        let path = self.dir.join("queue").join(format!("{id}.resolved.toml"));
        StudyConfig::load(&path).map_err(|e| ServeError::Record {
            path,
            message: e.to_string(),
        })
    }

    /// Checks a submitted config (TOML text): syntax and keys, ranges, the
    /// trainer's sections, and path confinement; then queues it. Returns
    /// the new record.
    pub fn submit(&self, text: &str, name: Option<&str>) -> Result<StudyRecord, RequestError> {
        let origin = "submitted config";
        let mut cfg = StudyConfig::from_toml_str(text, origin)
            .map_err(|e| RequestError::BadConfig(e.to_string()))?;
        cfg.validate_named(origin)
            .map_err(|e| RequestError::BadConfig(e.to_string()))?;
        self.confinement
            .apply(&mut cfg, origin)
            .map_err(|e| RequestError::BadConfig(format!("{origin}: {e}")))?;
        if cfg.trial.command.is_none() {
            let train = crate::train::TrainConfig::from_table(&cfg.train, origin)
                .map_err(|e| RequestError::BadConfig(e.to_string()))?;
            let data = crate::train::data_config_from_table(&cfg.data, origin)
                .map_err(|e| RequestError::BadConfig(e.to_string()))?;
            crate::train::config::check_batch_memory(&train, data.image_size(), origin)
                .map_err(|e| RequestError::BadConfig(e.to_string()))?;
        }
        if let Some(n) = name {
            check_name(n)?;
        }
        let mut inner = self.lock();
        let id = inner.next_id;
        let record = StudyRecord {
            id,
            name: name.map_or_else(|| study_dir_name(id), str::to_string),
            state: StudyState::Queued,
            submitted_at: now_s(),
            started_at: None,
            ended_at: None,
            result: String::new(),
            cancel_requested: false,
        };
        let queue = self.dir.join("queue");
        for (file, body) in [
            (format!("{id}.toml"), text.to_string()),
            (format!("{id}.resolved.toml"), cfg.to_toml_string()),
        ] {
            let path = queue.join(file);
            write_atomic(&path, body.as_bytes()).map_err(ServeError::io(&path))?;
        }
        // The record last: a crash before it leaves only unused files.
        write_record(&self.dir, &record)?;
        inner.next_id = id + 1;
        inner.studies.insert(
            id,
            Entry {
                record: record.clone(),
                stop: None,
            },
        );
        drop(inner);
        tracing::info!(study = id, name = %record.name, "study submitted");
        self.wake.notify_one();
        Ok(record)
    }

    /// Cancels a study: a queued one at once; a running one's trials are
    /// stopped and it is marked cancelled when its coordinator has ended.
    pub fn cancel(&self, id: u64) -> Result<StudyRecord, RequestError> {
        let mut inner = self.lock();
        let entry = inner
            .studies
            .get_mut(&id)
            .ok_or(RequestError::UnknownStudy(id))?;
        let r = &mut entry.record;
        if r.state.is_final() {
            return Err(RequestError::AlreadyEnded {
                id,
                state: r.state.as_str(),
            });
        }
        let mut updated = r.clone();
        if r.state == StudyState::Queued {
            updated.state = StudyState::Cancelled;
            updated.ended_at = Some(now_s());
            updated.result = "cancelled before it started".into();
        } else {
            updated.cancel_requested = true;
        }
        write_record(&self.dir, &updated)?;
        *r = updated.clone();
        if let Some(stop) = &entry.stop {
            stop.raise(StopLevel::Kill);
        }
        tracing::info!(study = id, "cancel requested");
        Ok(updated)
    }

    /// Starts queued studies while slots are free, until `shutdown` drains;
    /// then waits for the running coordinators to end.
    pub async fn schedule(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            if shutdown.is_stopping() {
                break;
            }
            self.start_ready(&shutdown);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = shutdown.reached(StopLevel::Draining) => {}
                // Belt and braces against a lost wake-up.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
        while self.lock().running > 0 {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    fn start_ready(self: &Arc<Self>, shutdown: &Shutdown) {
        loop {
            let mut inner = self.lock();
            if inner.running >= self.settings.max_running {
                return;
            }
            let Some(id) = inner
                .studies
                .values()
                .find(|e| e.record.state == StudyState::Queued)
                .map(|e| e.record.id)
            else {
                return;
            };
            let stop = shutdown.child();
            let entry = inner.studies.get_mut(&id).expect("listed above");
            let mut updated = entry.record.clone();
            updated.state = StudyState::Running;
            updated.started_at = Some(now_s());
            if let Err(e) = write_record(&self.dir, &updated) {
                tracing::error!(study = id, "cannot start: {e}");
                updated.state = StudyState::Failed;
                updated.result = e.to_string();
                entry.record = updated;
                continue;
            }
            entry.record = updated;
            entry.stop = Some(stop.clone());
            inner.running += 1;
            drop(inner);
            let this = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("study-{id}"))
                .spawn({
                    let this = Arc::clone(&this);
                    move || {
                        let outcome = this.run_one(id, stop);
                        this.finish(id, outcome);
                    }
                });
            if let Err(e) = spawned {
                this.finish(
                    id,
                    Err(StudyError::Runtime(format!("cannot start a thread: {e}"))),
                );
            }
        }
    }

    /// Runs study `id`'s coordinator to its end (blocking).
    fn run_one(&self, id: u64, stop: Shutdown) -> Result<String, StudyError> {
        let cfg = self
            .config(id)
            .map_err(|e| StudyError::Runtime(e.to_string()))?;
        tracing::info!(study = id, "study started");
        let runner = child_runner(
            &cfg,
            trial_program(&cfg).map_err(|e| StudyError::Io {
                path: PathBuf::from("polytune"),
                source: e,
            })?,
        );
        let mut opts = StudyOptions::new(self.study_dir(id));
        opts.config_source = format!("study {id} submitted to polytune serve");
        opts.progress = false;
        opts.handle_signals = false;
        opts.shutdown = Some(stop);
        opts.storage = self.settings.storage.clone();
        opts.local_workers = self.settings.local_workers;
        opts.provenance = crate::train::provenance_of(&cfg, &opts.config_source)
            .map_err(|e| StudyError::Runtime(e.to_string()))?;
        let report = run_study_blocking(cfg, opts, Arc::new(runner))?;
        Ok(report.verdict.sentence)
    }

    fn finish(&self, id: u64, outcome: Result<String, StudyError>) {
        let mut inner = self.lock();
        inner.running -= 1;
        if let Some(entry) = inner.studies.get_mut(&id) {
            entry.stop = None;
            let mut r = entry.record.clone();
            match outcome {
                Ok(verdict) => {
                    r.state = StudyState::Finished;
                    r.result = verdict;
                }
                Err(StudyError::Interrupted { .. }) if r.cancel_requested => {
                    r.state = StudyState::Cancelled;
                    r.result = "cancelled while running; trials recorded so far are kept".into();
                }
                // The daemon is stopping: the study resumes at its next start.
                Err(StudyError::Interrupted { .. }) => {}
                Err(e) => {
                    r.state = StudyState::Failed;
                    r.result = e.to_string();
                }
            }
            if r.state.is_final() {
                r.ended_at = Some(now_s());
                tracing::info!(study = id, state = r.state.as_str(), result = %r.result, "study ended");
            } else {
                tracing::info!(
                    study = id,
                    "study interrupted by the daemon's shutdown; it resumes at the next start"
                );
            }
            if let Err(e) = write_record(&self.dir, &r) {
                tracing::error!(study = id, "{e}");
            }
            entry.record = r;
        }
        drop(inner);
        self.wake.notify_one();
    }
}

/// `study-<id>`: the study directory's (and the database study's) name.
pub fn study_dir_name(id: u64) -> String {
    format!("study-{id}")
}

fn check_name(n: &str) -> Result<(), RequestError> {
    let ok = !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RequestError::BadConfig(format!(
            "name: {n:?} must be 1..={MAX_NAME_LEN} characters of A-Z a-z 0-9 - _ ."
        )))
    }
}

fn write_record(dir: &Path, r: &StudyRecord) -> Result<(), ServeError> {
    let path = dir.join("queue").join(format!("{}.json", r.id));
    let text = serde_json::to_string_pretty(r).map_err(|e| ServeError::Record {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, text.as_bytes()).map_err(ServeError::io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("flowers-102_v2.1").is_ok());
        for bad in ["", "a/b", "..\u{0}", &"x".repeat(MAX_NAME_LEN + 1), "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn running_studies_are_queued_again_and_cancelled_ones_stay_cancelled() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("queue")).unwrap();
        let base = StudyRecord {
            id: 1,
            name: "a".into(),
            state: StudyState::Running,
            submitted_at: 1,
            started_at: Some(2),
            ended_at: None,
            result: String::new(),
            cancel_requested: false,
        };
        write_record(dir, &base).unwrap();
        write_record(
            dir,
            &StudyRecord {
                id: 2,
                cancel_requested: true,
                ..base.clone()
            },
        )
        .unwrap();
        write_record(
            dir,
            &StudyRecord {
                id: 7,
                state: StudyState::Finished,
                ..base.clone()
            },
        )
        .unwrap();
        let settings = RunSettings {
            storage: None,
            local_workers: None,
            max_running: 1,
        };
        let c = Confinement {
            data_root: dir.canonicalize().unwrap(),
            cache_root: dir.join("cache"),
            allow_trial_command: false,
        };
        let reg = Registry::open(dir, settings, c).unwrap();
        let states: Vec<_> = reg.records().iter().map(|r| (r.id, r.state)).collect();
        assert_eq!(
            states,
            [
                (1, StudyState::Queued),
                (2, StudyState::Cancelled),
                (7, StudyState::Finished)
            ]
        );
        // Ids continue after the largest; records on disk were updated.
        assert_eq!(reg.lock().next_id, 8);
        let again: StudyRecord =
            serde_json::from_str(&std::fs::read_to_string(dir.join("queue/1.json")).unwrap())
                .unwrap();
        assert_eq!(again.state, StudyState::Queued);
        assert!(matches!(
            reg.cancel(7),
            Err(RequestError::AlreadyEnded { id: 7, .. })
        ));
        assert_eq!(reg.cancel(1).unwrap().state, StudyState::Cancelled);
        assert!(matches!(reg.cancel(9), Err(RequestError::UnknownStudy(9))));
    }
}
