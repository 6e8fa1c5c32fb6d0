//! `polytune serve`: the tuner as a daemon. Teams submit study configs over
//! HTTP; the daemon queues them, runs up to `max_running` coordinators at
//! once (each an ordinary study: search, confirmation, verdict, tuned TOML),
//! and answers where each stands; a dashboard shows the same live.
//!
//! - [`registry`]: the queue on disk, restart-safe (queued and running
//!   studies resume from their journal or the database).
//! - [`confine`]: submitted configs may read only under `--data-root`.
//! - [`api`]: the `/api/v1` routes, bearer-token check, body cap, dashboard.
//! - [`view`]: the JSON of a study.
//! - [`client`]: the blocking client behind `polytune submit / status
//!   --server / fetch`.
//!
//! Security: the daemon listens on loopback unless told otherwise, and
//! refuses any other address without a bearer token. Tokens are compared
//! in constant time and never logged; storage passwords are redacted.

pub mod api;
pub mod client;
pub mod confine;
pub mod registry;
pub mod view;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::orchestrator::{Shutdown, StopLevel};
use crate::storage::{PgStore, PgTarget, StorageError};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8370";
/// The file in the daemon directory that holds the bound address.
pub const ADDR_FILE: &str = "serve.addr";
/// Default request body cap (a study config is a few KiB).
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Accepted body caps.
pub const MAX_BODY_RANGE: std::ops::RangeInclusive<usize> = 1024..=(64 << 20);
/// Accepted numbers of coordinators running at once.
pub const MAX_RUNNING_RANGE: std::ops::RangeInclusive<usize> = 1..=256;

/// Anything that stops the daemon or one of its answers. Messages name the
/// file or address.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// I/O on a daemon file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A record or resolved config of the queue is unreadable.
    #[error("{path}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A study's trials could not be read.
    #[error("study {id}: {message}")]
    View {
        /// The study.
        id: u64,
        /// What went wrong.
        message: String,
    },
    /// A non-loopback address without a token.
    #[error("--listen {addr} is not a loopback address: give --token-file so that only holders of the token can use the API")]
    TokenRequired {
        /// The address.
        addr: SocketAddr,
    },
    /// The token file is unusable.
    #[error("{path}: {message}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// What is wrong (never the token).
        message: String,
    },
    /// Another daemon holds the directory.
    #[error("{dir}: another polytune serve runs on this directory (it holds {dir}/serve.lock)")]
    Locked {
        /// The daemon directory.
        dir: PathBuf,
    },
    /// A setting out of range.
    #[error("{key}: {message}")]
    Setting {
        /// The option.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The storage refused.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ServeError {
    /// A `map_err` adapter naming `path`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
        move |source| ServeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Daemon directory: the queue, the study directories, the caches.
    pub dir: PathBuf,
    /// Where submitted configs' relative paths resolve; nothing outside it
    /// may be read.
    pub data_root: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token file (required off loopback).
    pub token_file: Option<PathBuf>,
    /// PostgreSQL storage for the studies' trials.
    pub storage: Option<PgTarget>,
    /// With storage: workers the daemon runs per study.
    pub local_workers: Option<usize>,
    /// Coordinators at once.
    pub max_running: usize,
    /// Request body cap in bytes.
    pub max_body_bytes: usize,
    /// Allow `[trial] command` programs (under the data root).
    pub allow_trial_command: bool,
    /// After SIGTERM: seconds running trials get before they are stopped.
    pub grace: Duration,
}

impl ServeOptions {
    /// Defaults: loopback, journal storage, one study at a time, 1 MiB bodies.
    pub fn new(dir: impl Into<PathBuf>, data_root: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            data_root: data_root.into(),
            listen: DEFAULT_LISTEN.parse().expect("valid address"),
            token_file: None,
            storage: None,
            local_workers: None,
            max_running: 1,
            max_body_bytes: DEFAULT_MAX_BODY,
            allow_trial_command: false,
            grace: Duration::from_secs(30),
        }
    }
}

/// Reads the token file: one line, at least 16 characters; warns when
/// others may read it.
fn read_token(path: &Path) -> Result<String, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |message: String| ServeError::Token {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "{}: the token file is readable by others (chmod 600 it)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim();
    if token.len() < 16 || token.contains(char::is_whitespace) {
        return Err(bad(
            "the token must be one line of at least 16 characters without spaces".into(),
        ));
    }
    Ok(token.to_string())
}

/// Holds `dir/serve.lock` for the daemon's life (close-on-exec, so trials
/// never inherit it; never through a symlink planted there).
fn lock_dir(dir: &Path) -> Result<std::fs::File, ServeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("serve.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(ServeError::io(&path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(ServeError::io(&path)(e)),
    }
}

/// Runs the daemon until `shutdown` drains (SIGINT / SIGTERM when the
/// caller installed the handler): serves the API, runs the queue, then
/// waits for the running coordinators, which leave their studies resumable.
/// `ready` is called with the bound address once the daemon accepts
/// requests.
pub async fn serve(
    opts: ServeOptions,
    shutdown: Shutdown,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if !MAX_RUNNING_RANGE.contains(&opts.max_running) {
        return Err(ServeError::Setting {
            key: "--max-running",
            message: format!("{} is not in {MAX_RUNNING_RANGE:?}", opts.max_running),
        });
    }
    if !MAX_BODY_RANGE.contains(&opts.max_body_bytes) {
        return Err(ServeError::Setting {
            key: "--max-body-bytes",
            message: format!("{} is not in {MAX_BODY_RANGE:?}", opts.max_body_bytes),
        });
    }
    let token = opts.token_file.as_deref().map(read_token).transpose()?;
    if token.is_none() && !opts.listen.ip().is_loopback() {
        return Err(ServeError::TokenRequired { addr: opts.listen });
    }
    let data_root = opts
        .data_root
        .canonicalize()
        .map_err(|e| ServeError::Setting {
            key: "--data-root",
            message: format!("{}: {e}", opts.data_root.display()),
        })?;
    // The database before anything is written: a wrong URL creates nothing.
    let store = match &opts.storage {
        Some(t) => Some(PgStore::open(t, "polytune serve").await?),
        None => None,
    };
    std::fs::create_dir_all(&opts.dir).map_err(ServeError::io(&opts.dir))?;
    let dir = opts.dir.canonicalize().map_err(ServeError::io(&opts.dir))?;
    let _lock = lock_dir(&dir)?;
    let cache_root = dir.join("cache");
    let registry = registry::Registry::open(
        &dir,
        registry::RunSettings {
            storage: opts.storage.clone(),
            local_workers: opts.local_workers,
            max_running: opts.max_running,
        },
        confine::Confinement {
            data_root,
            cache_root,
            allow_trial_command: opts.allow_trial_command,
        },
    )?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: opts.listen,
        source,
    })?;
    let state = Arc::new(api::AppState {
        registry: Arc::clone(&registry),
        store,
        token_digest: token.as_deref().map(api::token_digest),
    });
    let app = api::router(state, opts.max_body_bytes);
    let scheduler = tokio::spawn(Arc::clone(&registry).schedule(shutdown.clone()));
    tracing::info!(
        "polytune serve: http://{addr}/ (API /api/v1), directory {}, storage {}, {}",
        dir.display(),
        opts.storage.as_ref().map_or("journal", |t| t.redacted()),
        if token.is_some() {
            "bearer token required"
        } else {
            "no token (loopback only)"
        }
    );
    // For scripts and tests that listen on port 0.
    let addr_file = dir.join(ADDR_FILE);
    crate::fs::write_atomic(&addr_file, format!("{addr}\n").as_bytes())
        .map_err(ServeError::io(&addr_file))?;
    ready(addr);
    let stop = shutdown.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.reached(StopLevel::Draining).await });
    let served = server.await;
    // The API is down; let the coordinators leave their studies resumable.
    shutdown.raise(StopLevel::Draining);
    let grace = opts.grace;
    let kill = shutdown.clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        kill.raise(StopLevel::Kill);
    });
    let _ = scheduler.await;
    killer.abort();
    served.map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!("polytune serve stopped");
    Ok(())
}
