//! The study directory: the config used, its fingerprint, an exclusive lock.

use std::fs::File;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::StudyConfig;
use super::journal::{rfc3339, sync_dir};
use super::StudyError;

/// The resolved config of the study (TOML).
pub const CONFIG_FILE: &str = "config.toml";
/// Where the config came from and its fingerprint.
pub const META_FILE: &str = "study.toml";
/// The journal.
pub const TRIALS_FILE: &str = "trials.csv";
/// The tuned coefficients.
pub const TUNED_FILE: &str = "tuned.toml";
/// The plot.
pub const PLOT_FILE: &str = "plot.svg";
/// The summary table as text.
pub const SUMMARY_FILE: &str = "summary.txt";
const LOCK_FILE: &str = ".lock";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    fingerprint: String,
    source: String,
    created: String,
    polytune_version: String,
}

/// An open, locked study directory.
#[derive(Debug)]
pub struct StudyDir {
    root: PathBuf,
    fingerprint: String,
    resumed: bool,
    _lock: File,
}

impl StudyDir {
    /// Opens `root` for `cfg` (from `source`, a path or a name): creates it
    /// and records the config, or — when it already holds a study — checks
    /// that the study was made with the same fingerprinted config and
    /// refuses otherwise, naming both configs and the keys that differ.
    /// Holds an exclusive lock so two runs never share a directory.
    pub fn open(root: &Path, cfg: &StudyConfig, source: &str) -> Result<Self, StudyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StudyError::Io { path, source }
        };
        std::fs::create_dir_all(root).map_err(io(root))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StudyError::Locked {
                dir: root.to_path_buf(),
            });
        }
        let config_path = root.join(CONFIG_FILE);
        let meta_path = root.join(META_FILE);
        let fingerprint = cfg.fingerprint();
        let resumed = config_path.exists();
        if resumed {
            let stored = StudyConfig::load(&config_path)?;
            let stored_source = std::fs::read_to_string(&meta_path)
                .ok()
                .and_then(|t| toml::from_str::<Meta>(&t).ok())
                .map(|m| m.source)
                .unwrap_or_else(|| "(unknown)".into());
            if stored.fingerprint() != fingerprint {
                return Err(StudyError::ForeignStudy {
                    dir: root.to_path_buf(),
                    stored_source,
                    new_source: source.to_string(),
                    differences: stored.differences(cfg),
                });
            }
        } else if root.join(TRIALS_FILE).exists() {
            return Err(StudyError::Io {
                path: config_path,
                source: std::io::Error::other(format!(
                    "{} holds {TRIALS_FILE} but no {CONFIG_FILE}: not a study directory of this polytune",
                    root.display()
                )),
            });
        }
        // The config used now (budget, workers etc. may have changed).
        let text = format!(
            "# polytune study config (resolved), from {source}\n# fingerprint {fingerprint}\n{}",
            cfg.to_toml_string()
        );
        write_atomic(&config_path, text.as_bytes()).map_err(io(&config_path))?;
        if !resumed {
            let meta = Meta {
                fingerprint: fingerprint.clone(),
                source: source.to_string(),
                created: rfc3339(std::time::SystemTime::now()),
                polytune_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            let text = toml::to_string_pretty(&meta).expect("meta serialises");
            write_atomic(&meta_path, text.as_bytes()).map_err(io(&meta_path))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            fingerprint,
            resumed,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The config fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// True when the directory already held this study.
    pub fn resumed(&self) -> bool {
        self.resumed
    }
}

/// Writes a file atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        sync_dir(&dir);
    }
    res
}
