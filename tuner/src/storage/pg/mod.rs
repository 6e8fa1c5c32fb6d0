//! PostgreSQL study storage: the queue of trials that workers on any
//! machine claim, and the record of every attempt.
//!
//! **Queue.** The coordinator inserts a trial as `pending`
//! (`INSERT … ON CONFLICT DO NOTHING`, so a restarted coordinator finds the
//! rows its predecessor left); a worker claims the oldest pending trial
//! with `SELECT … FOR UPDATE SKIP LOCKED` (no two workers get the same row,
//! none waits for another's lock), counts the attempt, and heartbeats while
//! the trial runs; it writes the result and the attempt's row in one
//! statement, only if the trial is still its own (same worker, same
//! attempt). A `running` trial whose heartbeat is older than the study's
//! `lease_s` goes back to `pending` (its attempt recorded as `retry`), or
//! to `failed` after `max_retries` retries — whoever polls first does it,
//! coordinator or worker, so no trial stays `running` after its worker is
//! gone.
//!
//! **Connection loss.** Every operation runs through
//! the `with_client!` macro: a dropped connection, a server restart or a
//! server that is starting up is retried with exponential backoff (0.1 s
//! doubling to 5 s) for up to [`PgStore::reconnect_s`]; other errors
//! (authentication, SQL) are reported at once. Each operation is safe to
//! repeat: inserts do nothing twice, state changes are conditional.

pub mod connect;
pub mod schema;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

pub use connect::{PgEnv, PgTarget};
pub use schema::SCHEMA_VERSION;

use super::StorageError;
use crate::study::{RowState, TrialRecord};
use crate::trial::{TrialPhase, TrialSpec};

/// Classid of the study advisory locks (`'poly'`).
const STUDY_LOCK_CLASS: i32 = 0x706f_6c79;

/// Runs `$body` (which may use `?` on driver errors and names the pooled
/// connection `$c`) with the store's reconnect policy: a lost connection or
/// a restarting server is retried with backoff — the body runs again from
/// the start, which every operation here allows; other errors are reported
/// at once. (A macro, not a method taking an async closure: the closure's
/// borrowed future would not be `Send` for tokio.)
macro_rules! with_client {
    ($store:expr, $what:expr, |$c:ident| $body:block) => {{
        let store: &PgStore = $store;
        let what: &str = $what;
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let err = match store.pool.get().await {
                Ok(mut conn) => {
                    #[allow(unused_mut)]
                    let $c: &mut deadpool_postgres::Client = &mut conn;
                    let r: Result<_, tokio_postgres::Error> = async { $body }.await;
                    match r {
                        Ok(v) => break Ok(v),
                        Err(e) if is_transient(&e) => db_message(&e),
                        Err(e) => {
                            break Err(StorageError::Db {
                                target: store.target.redacted().into(),
                                what: what.into(),
                                message: db_message(&e),
                            })
                        }
                    }
                }
                Err(e) if pool_transient(&e) => e.to_string(),
                Err(e) => {
                    break Err(StorageError::Db {
                        target: store.target.redacted().into(),
                        what: what.into(),
                        message: e.to_string(),
                    })
                }
            };
            if start.elapsed() >= store.reconnect {
                break Err(StorageError::Unavailable {
                    target: store.target.redacted().into(),
                    waited_s: start.elapsed().as_secs_f64(),
                    message: err,
                });
            }
            tracing::warn!(
                "{}: {what}: {err}; retrying in {:.1} s",
                store.target.redacted(),
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }};
}

/// A connection pool to the study database, schema checked and migrated.
#[derive(Clone)]
pub struct PgStore {
    target: PgTarget,
    pool: Pool,
    reconnect: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.target)
    }
}

/// What a coordinator registers for its study.
#[derive(Debug, Clone)]
pub struct StudyRegistration {
    /// The study's name (unique in the database).
    pub name: String,
    /// The study fingerprint (config and input digests).
    pub fingerprint: String,
    /// Where the config came from.
    pub source: String,
    /// The resolved config as TOML.
    pub config: String,
    /// Input digests (`label → digest`) as TOML.
    pub inputs: String,
    /// Number of ε terms.
    pub terms: usize,
    /// Search budget.
    pub budget: u64,
    /// Confirmation runs planned (2 per confirmation seed).
    pub confirm_runs: u64,
    /// Seconds without a heartbeat before a running trial is requeued.
    pub lease_s: f64,
    /// Retries after a lost or timed-out attempt.
    pub max_retries: u32,
}

/// A study as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    /// Database id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Fingerprint.
    pub fingerprint: String,
    /// Config source.
    pub source: String,
    /// Resolved config (TOML).
    pub config: String,
    /// Input digests (TOML).
    pub inputs: String,
    /// Search budget.
    pub budget: i64,
    /// Confirmation runs planned.
    pub confirm_runs: i64,
    /// Lease in seconds.
    pub lease_s: f64,
    /// `running`, `finished`, `failed` or `interrupted`.
    pub state: String,
    /// The outcome in words once finished.
    pub result: String,
}

/// A trial a worker has claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The study's id.
    pub study_id: i64,
    /// The attempt number now running (1 = first).
    pub attempt: i32,
    /// What to run.
    pub spec: TrialSpec,
    /// The study's retry limit.
    pub max_retries: u32,
}

/// One trial row with its queue state (for status and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    /// Phase.
    pub phase: TrialPhase,
    /// Index within the phase.
    pub trial: u64,
    /// `pending`, `running`, `finished` or `failed`.
    pub state: String,
    /// ε.
    pub epsilon: Vec<f64>,
    /// Seed.
    pub seed: u64,
    /// Accuracy (finished).
    pub val_accuracy: Option<f64>,
    /// Seconds the last attempt took.
    pub duration_s: f64,
    /// Attempts started.
    pub attempt: i32,
    /// The last worker that claimed it.
    pub worker: Option<String>,
}

/// A worker as seen.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    /// `host:pid/slot`.
    pub id: String,
    /// Device it runs trials on.
    pub device: String,
    /// Seconds since its last heartbeat.
    pub seen_s_ago: f64,
    /// Trials it ended.
    pub trials_done: i64,
    /// What it runs now (`study/phase/trial`), empty when idle.
    pub current: String,
}

/// One ended attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    /// Phase.
    pub phase: TrialPhase,
    /// Trial.
    pub trial: u64,
    /// Attempt number.
    pub attempt: i32,
    /// `finished`, `failed`, `retry` or `cancelled`.
    pub state: String,
    /// Who ran it.
    pub worker: String,
    /// Why it did not finish.
    pub error: String,
}

/// True when `e` means the connection or server is (temporarily) gone.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

fn pool_transient(e: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => is_transient(e),
        PoolError::Timeout(_) => true,
        _ => false,
    }
}

fn phase_of(text: &str) -> TrialPhase {
    if text == "confirm" {
        TrialPhase::Confirm
    } else {
        TrialPhase::Search
    }
}

fn row_state(text: &str) -> RowState {
    match text {
        "finished" => RowState::Finished,
        "retry" => RowState::Retry,
        "cancelled" => RowState::Cancelled,
        _ => RowState::Failed,
    }
}

/// i64 ↔ u64 for seeds and indices (both < 2^63 by the config's ranges).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects (one try: a wrong URL or password is reported at once),
    /// checks the schema version and applies missing migrations.
    pub async fn open(target: &PgTarget, application_name: &str) -> Result<Self, StorageError> {
        let first = target.connect(application_name).await?;
        Self::migrate(target, first).await?;
        let mgr = Manager::from_config(
            target.config_named(application_name),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(4)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(connect::CONNECT_TIMEOUT_S)))
            .build()
            .map_err(|e| StorageError::Db {
                target: target.redacted().into(),
                what: "creating the connection pool".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            target: target.clone(),
            pool,
            reconnect: Duration::from_secs(120),
        })
    }

    /// How long an operation keeps retrying a lost connection.
    pub fn reconnect_s(&self) -> f64 {
        self.reconnect.as_secs_f64()
    }

    /// Sets [`PgStore::reconnect_s`].
    pub fn with_reconnect(mut self, limit: Duration) -> Self {
        self.reconnect = limit;
        self
    }

    /// The server (redacted).
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    async fn migrate(
        target: &PgTarget,
        mut client: tokio_postgres::Client,
    ) -> Result<(), StorageError> {
        let db = |what: &str| {
            let what = what.to_string();
            let t = target.redacted().to_string();
            move |e: tokio_postgres::Error| StorageError::Db {
                target: t,
                what,
                message: db_message(&e),
            }
        };
        let tx = client
            .transaction()
            .await
            .map_err(db("starting the migration"))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&schema::MIGRATION_LOCK],
        )
        .await
        .map_err(db("locking the schema"))?;
        let exists: bool = tx
            .query_one("SELECT to_regclass('polytune_schema') IS NOT NULL", &[])
            .await
            .map_err(db("looking for polytune_schema"))?
            .get(0);
        if !exists {
            tx.batch_execute(
                "CREATE TABLE polytune_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(db("creating polytune_schema"))?;
        }
        let row = tx
            .query_one("SELECT coalesce(max(version), 0) FROM polytune_schema", &[])
            .await
            .map_err(db("reading the schema version"))?;
        let found: i32 = row.get(0);
        if found > SCHEMA_VERSION {
            return Err(StorageError::SchemaNewer {
                target: target.redacted().into(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate() {
            let version = i as i32 + 1;
            if version <= found {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(db(&format!("applying schema migration {version}")))?;
            tx.execute(
                "INSERT INTO polytune_schema (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(db("recording the migration"))?;
            tracing::info!("{}: applied schema migration {version}", target.redacted());
        }
        tx.commit().await.map_err(db("committing the migration"))?;
        Ok(())
    }

    /// Finds or creates the study `reg.name`. An existing study must have
    /// the same fingerprint ([`StorageError::ForeignStudy`] otherwise,
    /// naming the differing keys); its budget, lease and retry limits are
    /// updated to this run's.
    pub async fn register_study(&self, reg: &StudyRegistration) -> Result<StudyRow, StorageError> {
        let row = with_client!(self, "registering the study", |c| {
            c.execute(
                    "INSERT INTO studies (name, fingerprint, source, config, inputs, terms, budget, confirm_runs, lease_s, max_retries, state)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running') ON CONFLICT (name) DO NOTHING",
                    &[
                        &reg.name,
                        &reg.fingerprint,
                        &reg.source,
                        &reg.config,
                        &reg.inputs,
                        &(reg.terms as i32),
                        &to_i64(reg.budget),
                        &to_i64(reg.confirm_runs),
                        &reg.lease_s,
                        &(reg.max_retries as i32),
                    ],
                )
                .await?;
            c.query_one(STUDY_SELECT_BY_NAME, &[&reg.name]).await
        })?;
        let stored = study_row(&row);
        if stored.fingerprint != reg.fingerprint {
            return Err(StorageError::ForeignStudy {
                study: reg.name.clone(),
                target: self.target.redacted().into(),
                stored_source: stored.source.clone(),
                differences: config_differences(&stored.config, &reg.config),
            });
        }
        Ok(stored)
    }

    /// Updates the run-time settings of a registered study (after its lock
    /// is held): budget, confirmation runs, lease, retries, config text.
    pub async fn update_study(&self, id: i64, reg: &StudyRegistration) -> Result<(), StorageError> {
        with_client!(self, "updating the study", |c| {
            c.execute(
                "UPDATE studies SET config = $2, budget = $3, confirm_runs = $4, lease_s = $5, max_retries = $6, state = 'running', updated_at = now() WHERE id = $1",
                &[
                    &id,
                    &reg.config,
                    &to_i64(reg.budget),
                    &to_i64(reg.confirm_runs),
                    &reg.lease_s,
                    &(reg.max_retries as i32),
                ],
            )
            .await
        })
        .map(|_| ())
    }

    /// Sets a study's state and result words.
    pub async fn set_study_state(
        &self,
        id: i64,
        state: &str,
        result: &str,
    ) -> Result<(), StorageError> {
        with_client!(self, "recording the study's state", |c| {
            c.execute(
                "UPDATE studies SET state = $2, result = $3, updated_at = now() WHERE id = $1",
                &[&id, &state, &result],
            )
            .await
        })
        .map(|_| ())
    }

    /// Every study, oldest first.
    pub async fn studies(&self) -> Result<Vec<StudyRow>, StorageError> {
        let rows = with_client!(self, "listing studies", |c| {
            c.query(&format!("{STUDY_SELECT} ORDER BY id"), &[]).await
        })?;
        Ok(rows.iter().map(study_row).collect())
    }

    /// One study by name.
    pub async fn study(&self, name: &str) -> Result<Option<StudyRow>, StorageError> {
        let row = with_client!(self, "reading the study", |c| {
            c.query_opt(STUDY_SELECT_BY_NAME, &[&name]).await
        })?;
        Ok(row.as_ref().map(study_row))
    }

    /// One study by id.
    pub async fn study_by_id(&self, id: i64) -> Result<Option<StudyRow>, StorageError> {
        let row = with_client!(self, "reading the study", |c| {
            c.query_opt(&format!("{STUDY_SELECT} WHERE id = $1"), &[&id])
                .await
        })?;
        Ok(row.as_ref().map(study_row))
    }

    /// The ended trials of a study (finished or failed), as journal records.
    pub async fn final_records(&self, study_id: i64) -> Result<Vec<TrialRecord>, StorageError> {
        let rows = with_client!(self, "reading the study's trials", |c| {
            c.query(
                    &format!("{TRIAL_SELECT} WHERE study_id = $1 AND state IN ('finished', 'failed') ORDER BY phase, trial"),
                    &[&study_id],
                )
                .await
        })?;
        Ok(rows.iter().map(trial_record).collect())
    }

    /// Inserts `specs` as pending (those already present are kept) and
    /// returns, per spec, the stored (ε, seed) — which differs from the
    /// spec only if the database holds another study's replay.
    pub async fn enqueue(
        &self,
        study_id: i64,
        specs: &[TrialSpec],
    ) -> Result<Vec<(Vec<f64>, u64)>, StorageError> {
        let texts: Vec<String> = specs.iter().map(TrialSpec::to_json).collect();
        with_client!(self, "queueing trials", |c| {
            let tx = c.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO trials (study_id, phase, trial, epsilon, seed, spec, state)
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT DO NOTHING",
                )
                .await?;
            let select = tx
                .prepare("SELECT epsilon, seed FROM trials WHERE study_id = $1 AND phase = $2 AND trial = $3")
                .await?;
            let mut out = Vec::with_capacity(specs.len());
            for (s, text) in specs.iter().zip(&texts) {
                let (phase, trial, seed) = (s.phase.as_str(), to_i64(s.trial), to_i64(s.seed));
                tx.execute(
                    &insert,
                    &[&study_id, &phase, &trial, &s.epsilon, &seed, text],
                )
                .await?;
                let row = tx.query_one(&select, &[&study_id, &phase, &trial]).await?;
                out.push((row.get::<_, Vec<f64>>(0), row.get::<_, i64>(1) as u64));
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// The ended (finished or failed) trials among `trials` of `phase`.
    pub async fn ended(
        &self,
        study_id: i64,
        phase: TrialPhase,
        trials: &[u64],
    ) -> Result<Vec<TrialRecord>, StorageError> {
        let idx: Vec<i64> = trials.iter().map(|t| to_i64(*t)).collect();
        let rows = with_client!(self, "polling trial results", |c| {
            c.query(
                    &format!("{TRIAL_SELECT} WHERE study_id = $1 AND phase = $2 AND trial = ANY($3) AND state IN ('finished', 'failed')"),
                    &[&study_id, &phase.as_str(), &idx],
                )
                .await
        })?;
        Ok(rows.iter().map(trial_record).collect())
    }

    /// Every trial of a study with its queue state, in phase and index order.
    pub async fn queue(&self, study_id: i64) -> Result<Vec<QueueRow>, StorageError> {
        let rows = with_client!(self, "reading the queue", |c| {
            c.query(
                    "SELECT phase, trial, state, epsilon, seed, val_accuracy, duration_s, attempt, worker
                     FROM trials WHERE study_id = $1 ORDER BY phase DESC, trial",
                    &[&study_id],
                )
                .await
        })?;
        Ok(rows
            .iter()
            .map(|r| QueueRow {
                phase: phase_of(r.get(0)),
                trial: r.get::<_, i64>(1) as u64,
                state: r.get(2),
                epsilon: r.get(3),
                seed: r.get::<_, i64>(4) as u64,
                val_accuracy: r.get(5),
                duration_s: r.get(6),
                attempt: r.get(7),
                worker: r.get(8),
            })
            .collect())
    }

    /// Every ended attempt of a study, in the order recorded.
    pub async fn attempts(&self, study_id: i64) -> Result<Vec<AttemptRow>, StorageError> {
        let rows = with_client!(self, "reading attempts", |c| {
            c.query(
                    "SELECT phase, trial, attempt, state, worker, error FROM attempts WHERE study_id = $1 ORDER BY id",
                    &[&study_id],
                )
                .await
        })?;
        Ok(rows
            .iter()
            .map(|r| AttemptRow {
                phase: phase_of(r.get(0)),
                trial: r.get::<_, i64>(1) as u64,
                attempt: r.get(2),
                state: r.get(3),
                worker: r.get(4),
                error: r.get(5),
            })
            .collect())
    }

    /// Workers seen, most recent first.
    pub async fn workers(&self) -> Result<Vec<WorkerRow>, StorageError> {
        let rows = with_client!(self, "listing workers", |c| {
            c.query(
                    "SELECT id, device, extract(epoch FROM now() - last_seen)::float8, trials_done, current FROM workers ORDER BY last_seen DESC",
                    &[],
                )
                .await
        })?;
        Ok(rows
            .iter()
            .map(|r| WorkerRow {
                id: r.get(0),
                device: r.get(1),
                seen_s_ago: r.get(2),
                trials_done: r.get(3),
                current: r.get(4),
            })
            .collect())
    }

    /// Puts back running trials whose heartbeat is older than their
    /// study's lease (of one study, or all): `pending`, or `failed` once
    /// the retries are spent; each lost attempt gets a `retry` (or
    /// `failed`) row. Returns how many were put back or failed.
    pub async fn requeue_lost(&self, study_id: Option<i64>) -> Result<u64, StorageError> {
        with_client!(self, "requeueing lost trials", |c| {
            let rows = c
                .query(
                    "WITH lost AS (
                        SELECT t.study_id, t.phase, t.trial FROM trials t JOIN studies s ON s.id = t.study_id
                        WHERE t.state = 'running' AND ($1::bigint IS NULL OR t.study_id = $1)
                          AND t.heartbeat_at < now() - s.lease_s * interval '1 second'
                        FOR UPDATE OF t SKIP LOCKED),
                     moved AS (
                        UPDATE trials t SET
                            state = CASE WHEN t.attempt > s.max_retries THEN 'failed' ELSE 'pending' END,
                            error = 'worker ' || coalesce(t.worker, '?') || ' lost: no heartbeat for '
                                    || s.lease_s || ' s' || CASE WHEN t.attempt > s.max_retries
                                    THEN ' (gave up after ' || t.attempt || ' attempts)' ELSE '' END,
                            heartbeat_at = NULL
                        FROM lost, studies s
                        WHERE s.id = t.study_id AND t.study_id = lost.study_id AND t.phase = lost.phase AND t.trial = lost.trial
                        RETURNING t.*)
                     INSERT INTO attempts (study_id, phase, trial, attempt, state, worker, epsilon, seed, start_time, duration_s, error)
                     SELECT study_id, phase, trial, attempt, CASE WHEN state = 'failed' THEN 'failed' ELSE 'retry' END,
                            coalesce(worker, '?'), epsilon, seed, start_time, 0, error FROM moved
                     RETURNING trial",
                    &[&study_id],
                )
                .await?;
            Ok(rows.len() as u64)
        })
    }

    /// Records a worker (or refreshes it).
    pub async fn register_worker(
        &self,
        id: &str,
        host: &str,
        device: &str,
    ) -> Result<(), StorageError> {
        let pid = std::process::id() as i32;
        with_client!(self, "registering the worker", |c| {
            c.execute(
                "INSERT INTO workers (id, host, pid, device) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET host = $2, pid = $3, device = $4, started_at = now(), last_seen = now(), current = ''",
                &[&id, &host, &pid, &device],
            )
            .await
        })
        .map(|_| ())
    }

    /// Claims the oldest pending trial (of `study`, or of any study) of a
    /// study whose coordinator runs: an interrupted or cancelled study's
    /// trials wait until it resumes.
    pub async fn claim(
        &self,
        worker: &str,
        study: Option<i64>,
    ) -> Result<Option<Claim>, StorageError> {
        let row = with_client!(self, "claiming a trial", |c| {
            c.query_opt(
                    "WITH next AS (
                        SELECT t.study_id, t.phase, t.trial FROM trials t JOIN studies s ON s.id = t.study_id
                        WHERE t.state = 'pending' AND s.state = 'running' AND ($2::bigint IS NULL OR t.study_id = $2)
                        ORDER BY t.seq LIMIT 1 FOR UPDATE OF t SKIP LOCKED),
                     claimed AS (
                        UPDATE trials t SET state = 'running', attempt = t.attempt + 1, worker = $1,
                            heartbeat_at = now(), start_time = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                        FROM next WHERE t.study_id = next.study_id AND t.phase = next.phase AND t.trial = next.trial
                        RETURNING t.study_id, t.phase, t.trial, t.attempt, t.spec),
                     seen AS (
                        UPDATE workers SET last_seen = now(),
                            current = (SELECT s.name || '/' || claimed.phase || '/' || claimed.trial FROM claimed JOIN studies s ON s.id = claimed.study_id)
                        WHERE id = $1 AND EXISTS (SELECT 1 FROM claimed))
                     SELECT claimed.study_id, claimed.attempt, claimed.spec, s.max_retries
                     FROM claimed JOIN studies s ON s.id = claimed.study_id",
                    &[&worker, &study],
                )
                .await
        })?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.get(2);
        let spec = TrialSpec::from_json(&text).map_err(|e| StorageError::Db {
            target: self.target.redacted().into(),
            what: "reading a claimed trial's spec".into(),
            message: e.to_string(),
        })?;
        Ok(Some(Claim {
            study_id: row.get(0),
            attempt: row.get(1),
            spec,
            max_retries: row.get::<_, i32>(3).max(0) as u32,
        }))
    }

    /// Refreshes the claim's heartbeat; `false` when the trial is no
    /// longer this worker's (its lease ran out and it was requeued).
    pub async fn heartbeat(&self, worker: &str, claim: &Claim) -> Result<bool, StorageError> {
        let (phase, trial) = (claim.spec.phase.as_str(), to_i64(claim.spec.trial));
        with_client!(self, "heartbeat", |c| {
            let n = c
                .execute(
                    "UPDATE trials SET heartbeat_at = now() WHERE study_id = $1 AND phase = $2 AND trial = $3
                     AND state = 'running' AND worker = $4 AND attempt = $5",
                    &[&claim.study_id, &phase, &trial, &worker, &claim.attempt],
                )
                .await?;
            c.execute(
                "UPDATE workers SET last_seen = now() WHERE id = $1",
                &[&worker],
            )
            .await?;
            Ok(n == 1)
        })
    }

    /// Records how a claimed attempt ended — in one statement, only if the
    /// trial is still this worker's attempt: the trial's new state (a
    /// `retry` goes back to `pending`, a `cancelled` attempt is given back
    /// uncounted) and the attempt's row. `false` if the claim was lost.
    pub async fn complete(
        &self,
        worker: &str,
        claim: &Claim,
        rec: &TrialRecord,
    ) -> Result<bool, StorageError> {
        let (phase, trial) = (claim.spec.phase.as_str(), to_i64(claim.spec.trial));
        let (trial_state, attempt_delta) = match rec.state {
            RowState::Finished => ("finished", 0),
            RowState::Failed => ("failed", 0),
            RowState::Retry => ("pending", 0),
            RowState::Cancelled => ("pending", -1),
        };
        let epochs = rec.epochs.map(|e| e as i32);
        with_client!(self, "recording a trial's result", |c| {
            let n = c
                .query(
                    "WITH done AS (
                        UPDATE trials SET state = $6, attempt = attempt + $7, heartbeat_at = NULL,
                            val_accuracy = $8, val_loss = $9, train_loss = $10, epochs = $11,
                            start_time = $12, duration_s = $13, error = $14
                        WHERE study_id = $1 AND phase = $2 AND trial = $3 AND state = 'running' AND worker = $4 AND attempt = $5
                        RETURNING study_id, phase, trial, epsilon, seed),
                     idle AS (
                        UPDATE workers SET last_seen = now(), current = '', trials_done = trials_done + 1
                        WHERE id = $4 AND EXISTS (SELECT 1 FROM done))
                     INSERT INTO attempts (study_id, phase, trial, attempt, state, worker, epsilon, seed,
                        val_accuracy, val_loss, train_loss, epochs, start_time, duration_s, error)
                     SELECT study_id, phase, trial, $5, $15, $4, epsilon, seed, $8, $9, $10, $11, $12, $13, $14 FROM done
                     RETURNING trial",
                    &[
                        &claim.study_id,
                        &phase,
                        &trial,
                        &worker,
                        &claim.attempt,
                        &trial_state,
                        &attempt_delta,
                        &rec.val_accuracy,
                        &rec.val_loss,
                        &rec.train_loss,
                        &epochs,
                        &rec.start_time,
                        &rec.duration_s,
                        &rec.error,
                        &rec.state.as_str(),
                    ],
                )
                .await?;
            Ok(n.len() == 1)
        })
    }

    /// Takes the study's advisory lock on a connection of its own; fails
    /// with [`StorageError::StudyLocked`] naming the holder if another
    /// coordinator has it.
    pub async fn lock_study(
        &self,
        study: &StudyRow,
        application_name: &str,
    ) -> Result<StudyLock, StorageError> {
        let key = i32::try_from(study.id).map_err(|_| StorageError::Db {
            target: self.target.redacted().into(),
            what: "locking the study".into(),
            message: format!("study id {} is beyond the lock key range", study.id),
        })?;
        let client = self.target.connect(application_name).await?;
        let lock = StudyLock {
            store: self.clone(),
            key,
            study: study.name.clone(),
            application_name: application_name.into(),
            client: tokio::sync::Mutex::new(client),
        };
        lock.acquire_on_current().await?;
        Ok(lock)
    }
}

/// A held study lock (a session-level advisory lock on its own connection).
/// If that connection drops — the server restarted — [`StudyLock::ensure`]
/// reconnects and takes the lock again, or reports that another
/// coordinator took it meanwhile.
pub struct StudyLock {
    store: PgStore,
    key: i32,
    study: String,
    application_name: String,
    client: tokio::sync::Mutex<tokio_postgres::Client>,
}

impl StudyLock {
    async fn acquire_on_current(&self) -> Result<(), StorageError> {
        let client = self.client.lock().await;
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&STUDY_LOCK_CLASS, &self.key],
            )
            .await
            .map_err(|e| self.db("locking the study", e))?
            .get(0);
        if got {
            return Ok(());
        }
        let holder = client
            .query_opt(
                "SELECT a.application_name, coalesce(a.client_addr::text, 'local socket'), a.pid
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid = $1::int::oid AND l.objid = $2::int::oid AND l.objsubid = 2 AND l.granted",
                &[&STUDY_LOCK_CLASS, &self.key],
            )
            .await
            .map_err(|e| tracing::warn!("cannot tell who holds the study lock: {}", db_message(&e)))
            .ok()
            .flatten()
            .map(|r| {
                format!(
                    "{} (from {}, server pid {})",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i32>(2)
                )
            })
            .unwrap_or_else(|| "another session".into());
        Err(StorageError::StudyLocked {
            study: self.study.clone(),
            target: self.store.target.redacted().into(),
            holder,
        })
    }

    fn db(&self, what: &str, e: tokio_postgres::Error) -> StorageError {
        StorageError::Db {
            target: self.store.target.redacted().into(),
            what: what.into(),
            message: db_message(&e),
        }
    }

    /// Checks the lock's connection; after a loss reconnects (with backoff,
    /// up to the store's reconnect limit) and takes the lock again.
    pub async fn ensure(&self) -> Result<(), StorageError> {
        if !self.client.lock().await.is_closed() {
            return Ok(());
        }
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.target.connect(&self.application_name).await {
                Ok(c) => {
                    *self.client.lock().await = c;
                    tracing::info!(
                        "{}: reconnected; taking the study lock again",
                        self.store.target.redacted()
                    );
                    return self.acquire_on_current().await;
                }
                Err(e) if start.elapsed() < self.store.reconnect => {
                    tracing::warn!("{e}; retrying in {:.1} s", delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Releases the lock (also released when the connection closes).
    pub async fn release(self) {
        let client = self.client.lock().await;
        let _ = client
            .execute(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&STUDY_LOCK_CLASS, &self.key],
            )
            .await;
    }
}

const STUDY_SELECT: &str =
    "SELECT id, name, fingerprint, source, config, inputs, budget, confirm_runs, lease_s, state, result FROM studies";
const STUDY_SELECT_BY_NAME: &str = "SELECT id, name, fingerprint, source, config, inputs, budget, confirm_runs, lease_s, state, result FROM studies WHERE name = $1";
const TRIAL_SELECT: &str = "SELECT phase, trial, state, epsilon, val_accuracy, val_loss, train_loss, epochs, seed, start_time, duration_s, attempt, error FROM trials";

fn study_row(r: &tokio_postgres::Row) -> StudyRow {
    StudyRow {
        id: r.get(0),
        name: r.get(1),
        fingerprint: r.get(2),
        source: r.get(3),
        config: r.get(4),
        inputs: r.get(5),
        budget: r.get(6),
        confirm_runs: r.get(7),
        lease_s: r.get(8),
        state: r.get(9),
        result: r.get(10),
    }
}

fn trial_record(r: &tokio_postgres::Row) -> TrialRecord {
    TrialRecord {
        trial: r.get::<_, i64>(1) as u64,
        phase: phase_of(r.get(0)),
        state: row_state(r.get(2)),
        epsilon: r.get(3),
        val_accuracy: r.get(4),
        val_loss: r.get(5),
        train_loss: r.get(6),
        epochs: r.get::<_, Option<i32>>(7).map(|e| e.max(0) as u32),
        seed: r.get::<_, i64>(8) as u64,
        start_time: r.get(9),
        duration_s: r.get(10),
        attempt: r.get::<_, i32>(11).max(1) as u32,
        error: r.get(12),
    }
}

/// The server's message (a `DbError`'s text and detail), else the driver's.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// The fingerprinted keys that differ between two stored configs.
fn config_differences(stored: &str, new: &str) -> Vec<String> {
    use crate::study::StudyConfig;
    match (
        StudyConfig::from_toml_str(stored, "stored"),
        StudyConfig::from_toml_str(new, "new"),
    ) {
        (Ok(a), Ok(b)) => {
            let d = a.differences(&b);
            if d.is_empty() {
                vec!["the weights or data (by content)".into()]
            } else {
                d
            }
        }
        _ => vec!["the config (the stored one does not parse)".into()],
    }
}
