//! Where a study's trials live, and the workers that run them.
//!
//! Two storages with the same semantics — a trial is one (ε, seed)
//! fine-tune with one final record; lost attempts are retried up to
//! `study.max_retries`; the search replays deterministically on resume:
//! - the **journal** (default): `trials.csv` in the study directory, trials
//!   run as children of the one `polytune` process (see [`crate::study`]);
//! - **PostgreSQL** (`--storage postgresql://…`, [`pg`]): one coordinator
//!   per study (held by an advisory lock) runs the search and queues its
//!   trials; `polytune worker`s on any machine claim and run them
//!   ([`worker`]), heartbeating; a trial whose worker stops heartbeating is
//!   requeued after `study.lease_s`.
//!
//! [`status`] reads either storage for `polytune status`.

pub mod pg;
pub mod status;
pub mod worker;

pub use pg::{PgStore, PgTarget};

/// A storage problem. Every message names the server by its redacted URL
/// (never the password) and the study or operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The `--storage` value is not a usable PostgreSQL URL.
    #[error("--storage {url}: {message}")]
    BadUrl {
        /// The URL as given, password masked.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The server could not be reached.
    #[error("{target}: cannot connect: {message}")]
    Connect {
        /// The server.
        target: String,
        /// The driver's reason.
        message: String,
    },
    /// The server refused the login.
    #[error("{target}: authentication failed: {message} (check the password in the URL, PGPASSWORD or PGPASSFILE)")]
    Auth {
        /// The server.
        target: String,
        /// The server's reason.
        message: String,
    },
    /// The database was made by a newer polytune.
    #[error("{target}: the database has polytune schema version {found}, newer than this polytune's {supported}; upgrade polytune (nothing was written)")]
    SchemaNewer {
        /// The server.
        target: String,
        /// Version found.
        found: i32,
        /// Version this binary knows.
        supported: i32,
    },
    /// A query failed.
    #[error("{target}: {what}: {message}")]
    Db {
        /// The server.
        target: String,
        /// The operation.
        what: String,
        /// The server's or driver's reason.
        message: String,
    },
    /// The connection stayed lost longer than the reconnect limit.
    #[error("{target}: the database stayed unreachable for {waited_s:.0} s: {message}")]
    Unavailable {
        /// The server.
        target: String,
        /// Seconds spent retrying.
        waited_s: f64,
        /// The last reason.
        message: String,
    },
    /// A study of this name exists with another config or other inputs.
    #[error("{target}: study {study:?} exists with another config or inputs (made from {stored_source}); differs in: {}; use another study name (--study-dir) or the same config", differences.join("; "))]
    ForeignStudy {
        /// The study name.
        study: String,
        /// The server.
        target: String,
        /// Where the stored study's config came from.
        stored_source: String,
        /// What differs.
        differences: Vec<String>,
    },
    /// Another coordinator runs this study.
    #[error("{target}: study {study:?} is already being coordinated by {holder}; only one coordinator per study may run (start `polytune worker`s to add capacity)")]
    StudyLocked {
        /// The study name.
        study: String,
        /// The server.
        target: String,
        /// Who holds the lock.
        holder: String,
    },
    /// A worker's data or weights differ from the study's.
    #[error("study {study:?}: this worker's inputs differ from the coordinator's: {}; check --data-root", differences.join("; "))]
    InputMismatch {
        /// The study name.
        study: String,
        /// What differs.
        differences: Vec<String>,
    },
    /// A study name that the database does not hold.
    #[error("{target}: no study named {study:?}")]
    UnknownStudy {
        /// The name asked for.
        study: String,
        /// The server.
        target: String,
    },
}

impl StorageError {
    /// The error of a failed first connection: authentication or reach.
    pub fn from_connect(target: &PgTarget, e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let message = pg::db_message(&e);
        match e.code() {
            Some(c)
                if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                StorageError::Auth {
                    target: target.redacted().into(),
                    message,
                }
            }
            _ if message.contains("password missing") => StorageError::Auth {
                target: target.redacted().into(),
                message,
            },
            _ => StorageError::Connect {
                target: target.redacted().into(),
                message,
            },
        }
    }
}
