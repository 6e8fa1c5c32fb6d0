//! The database schema, as numbered migrations applied in order at start.
//!
//! `polytune_schema` records each applied version. A database whose newest
//! version is above [`SCHEMA_VERSION`] was made by a newer polytune: it is
//! refused before anything is written (an older binary could misread it).
//! Migrations run in one transaction under a transaction-level advisory
//! lock, so coordinators and workers starting together apply each once.
//!
//! Tables (version 1):
//! - `studies`: one row per study name — fingerprint, resolved config,
//!   input digests, budget, lease and retry limits, state, result;
//! - `trials`: one row per (study, phase, trial) — the queue and the final
//!   record: `pending → running → finished | failed` (a lost or killed
//!   attempt goes back to `pending`); `attempt` counts started attempts;
//! - `attempts`: one row per ended attempt (the journal's rows);
//! - `workers`: every worker seen, with its last heartbeat.

/// The schema version this polytune writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Advisory-lock key serialising migrations (`'poly'` in ASCII).
pub const MIGRATION_LOCK: i64 = 0x706f_6c79_0000_0001;

/// The migrations, by version (1-based).
pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE studies (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    fingerprint   text NOT NULL,
    source        text NOT NULL,
    config        text NOT NULL,
    inputs        text NOT NULL,
    terms         integer NOT NULL,
    budget        bigint NOT NULL,
    confirm_runs  bigint NOT NULL,
    lease_s       double precision NOT NULL,
    max_retries   integer NOT NULL,
    state         text NOT NULL,
    result        text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE trials (
    study_id      bigint NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    phase         text NOT NULL,
    trial         bigint NOT NULL,
    seq           bigserial,
    epsilon       double precision[] NOT NULL,
    seed          bigint NOT NULL,
    spec          text NOT NULL,
    state         text NOT NULL,
    attempt       integer NOT NULL DEFAULT 0,
    worker        text,
    heartbeat_at  timestamptz,
    val_accuracy  double precision,
    val_loss      double precision,
    train_loss    double precision,
    epochs        integer,
    start_time    text NOT NULL DEFAULT '',
    duration_s    double precision NOT NULL DEFAULT 0,
    error         text NOT NULL DEFAULT '',
    PRIMARY KEY (study_id, phase, trial)
);
CREATE INDEX trials_pending ON trials (seq) WHERE state = 'pending';
CREATE INDEX trials_running ON trials (heartbeat_at) WHERE state = 'running';
CREATE TABLE attempts (
    id            bigserial PRIMARY KEY,
    study_id      bigint NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    phase         text NOT NULL,
    trial         bigint NOT NULL,
    attempt       integer NOT NULL,
    state         text NOT NULL,
    worker        text NOT NULL,
    epsilon       double precision[] NOT NULL,
    seed          bigint NOT NULL,
    val_accuracy  double precision,
    val_loss      double precision,
    train_loss    double precision,
    epochs        integer,
    start_time    text NOT NULL,
    duration_s    double precision NOT NULL,
    error         text NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_trial ON attempts (study_id, phase, trial);
CREATE TABLE workers (
    id            text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    device        text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    trials_done   bigint NOT NULL DEFAULT 0,
    current       text NOT NULL DEFAULT ''
);
"#];
