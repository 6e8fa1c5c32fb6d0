//! The study directory: the config used, its fingerprint (config and input
//! contents), an exclusive lock, and atomic writes of its files.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::StudyConfig;
use super::inputs::{digest_differences, digest_inputs};
use super::journal::rfc3339;
use super::StudyError;
use crate::hash::ContentHasher;

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
/// The lock file (locked with `flock`, as the directory itself is).
pub const LOCK_FILE: &str = ".lock";
/// Version of the fingerprint's recipe, recorded in `study.toml`. 2: the
/// config plus content digests of the weights and data. 3: the random and
/// particle-swarm searches and the head's initialisation and dropout draw
/// from [`crate::rng`] streams, so a journal of version 2 would not replay
/// (other ε) or would mix results of two initialisations. A study recorded with another version
/// cannot be checked against its inputs or replayed and is refused.
pub const FINGERPRINT_VERSION: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    /// Absent in studies of older polytune versions (read as 0).
    #[serde(default)]
    fingerprint_version: u32,
    fingerprint: String,
    source: String,
    created: String,
    polytune_version: String,
    /// Content digests of the inputs (see `inputs.rs`).
    #[serde(default)]
    inputs: BTreeMap<String, String>,
}

/// An open, locked study directory.
#[derive(Debug)]
pub struct StudyDir {
    root: PathBuf,
    fingerprint: String,
    inputs: BTreeMap<String, String>,
    resumed: bool,
    _lock: StudyLock,
}

/// `flock` locks on the directory itself and on its `.lock` file, held
/// while this value lives (the process's life in a study). Locking the
/// directory means deleting `.lock` cannot let a second process in; the
/// `.lock` file keeps older polytune versions out too. Both descriptors are
/// close-on-exec, so trial children never inherit the locks.
#[derive(Debug)]
struct StudyLock {
    _dir: File,
    _file: File,
}

impl StudyLock {
    fn acquire(root: &Path) -> Result<Self, StudyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StudyError::Io { path, source }
        };
        let dir = File::open(root).map_err(io(root))?;
        flock_exclusive(&dir, root)?;
        let lock_path = root.join(LOCK_FILE);
        // No truncation and no following a symlink planted at `.lock`.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        flock_exclusive(&file, root)?;
        Ok(Self {
            _dir: dir,
            _file: file,
        })
    }
}

fn flock_exclusive(f: &File, root: &Path) -> Result<(), StudyError> {
    // SAFETY: flock on a file descriptor we own and keep open.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(StudyError::Locked {
            dir: root.to_path_buf(),
        })
    } else {
        Err(StudyError::Io {
            path: root.to_path_buf(),
            source: e,
        })
    }
}

/// Whether `name` is a file polytune itself leaves in a directory that is
/// not (yet) a study: the lock and temporary files of an interrupted write.
fn own_leftover(name: &str) -> bool {
    name == LOCK_FILE
        || [META_FILE, CONFIG_FILE]
            .iter()
            .any(|f| name.starts_with(&format!(".{f}.")) && name.ends_with(".tmp"))
}

fn not_a_study(root: &Path, why: String) -> StudyError {
    StudyError::Io {
        path: root.to_path_buf(),
        source: std::io::Error::other(format!(
            "{why}: not a study directory of this polytune; use another --study-dir (an empty or new one)"
        )),
    }
}

/// The study's fingerprint: the config's, then the input digests.
fn study_fingerprint(cfg: &StudyConfig, inputs: &BTreeMap<String, String>) -> String {
    let mut h = ContentHasher::new();
    h.update(format!("polytune study fingerprint v{FINGERPRINT_VERSION}\0").as_bytes());
    h.update(cfg.fingerprint().as_bytes());
    for (k, v) in inputs {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
    }
    h.finish_hex()
}

impl StudyDir {
    /// Opens `root` for `cfg` (from `source`, a path or a name): creates it
    /// and records the config, or — when it already holds a study — checks
    /// that the study was made with the same fingerprinted config and the
    /// same weights and data (by content, see `inputs.rs`) and refuses
    /// otherwise, naming both configs and the keys or files that differ.
    /// A directory that holds other files but no study is refused (it may
    /// be the user's: nothing in it is overwritten). Holds an exclusive
    /// lock so two runs never share a directory.
    pub fn open(root: &Path, cfg: &StudyConfig, source: &str) -> Result<Self, StudyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StudyError::Io { path, source }
        };
        std::fs::create_dir_all(root).map_err(io(root))?;
        let lock = StudyLock::acquire(root)?;
        let config_path = root.join(CONFIG_FILE);
        let meta_path = root.join(META_FILE);
        let inputs = digest_inputs(cfg, source)?;
        let fingerprint = study_fingerprint(cfg, &inputs);
        let stored_meta = match std::fs::read_to_string(&meta_path) {
            Ok(text) => Some(toml::from_str::<Meta>(&text).map_err(|e| {
                not_a_study(
                    root,
                    format!(
                        "{} is not a polytune study record ({})",
                        meta_path.display(),
                        e.message()
                    ),
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&meta_path)(e)),
        };
        match &stored_meta {
            None => {
                let mut foreign: Vec<String> = std::fs::read_dir(root)
                    .map_err(io(root))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !own_leftover(n))
                    .collect();
                if !foreign.is_empty() {
                    foreign.sort();
                    let more = foreign.len().saturating_sub(5);
                    foreign.truncate(5);
                    return Err(not_a_study(
                        root,
                        format!(
                            "{} holds {}{} but no {META_FILE}",
                            root.display(),
                            foreign.join(", "),
                            if more > 0 {
                                format!(" and {more} more")
                            } else {
                                String::new()
                            }
                        ),
                    ));
                }
            }
            Some(meta) if meta.fingerprint_version != FINGERPRINT_VERSION => {
                return Err(not_a_study(
                    root,
                    format!(
                        "{} was made by polytune {} with fingerprint version {} (this one uses {FINGERPRINT_VERSION}), so its trials cannot be checked against the inputs or replayed",
                        root.display(),
                        meta.polytune_version,
                        meta.fingerprint_version
                    ),
                ));
            }
            Some(meta) if meta.fingerprint != fingerprint => {
                let mut differences = match StudyConfig::load(&config_path) {
                    Ok(stored) => stored.differences(cfg),
                    Err(_) => Vec::new(),
                };
                differences.extend(digest_differences(&meta.inputs, &inputs));
                if differences.is_empty() {
                    differences.push(format!(
                        "the fingerprint ({} then, {fingerprint} now)",
                        meta.fingerprint
                    ));
                }
                return Err(StudyError::ForeignStudy {
                    dir: root.to_path_buf(),
                    stored_source: meta.source.clone(),
                    new_source: source.to_string(),
                    differences,
                });
            }
            Some(_) => {}
        }
        let resumed = stored_meta.is_some() && config_path.exists();
        if stored_meta.is_none() {
            // The record first: a directory with it is a study of ours, so
            // a crash before config.toml is written still resumes.
            let meta = Meta {
                fingerprint_version: FINGERPRINT_VERSION,
                fingerprint: fingerprint.clone(),
                source: source.to_string(),
                created: rfc3339(std::time::SystemTime::now()),
                polytune_version: env!("CARGO_PKG_VERSION").to_string(),
                inputs: inputs.clone(),
            };
            let text = toml::to_string_pretty(&meta).map_err(|e| {
                io(&meta_path)(std::io::Error::other(format!("cannot serialise: {e}")))
            })?;
            crate::fs::write_atomic(&meta_path, text.as_bytes()).map_err(io(&meta_path))?;
        }
        // The config used now (budget, workers etc. may have changed).
        let text = format!(
            "# polytune study config (resolved), from {source}\n# fingerprint {fingerprint}\n{}",
            cfg.to_toml_string()
        );
        crate::fs::write_atomic(&config_path, text.as_bytes()).map_err(io(&config_path))?;
        Ok(Self {
            root: root.to_path_buf(),
            fingerprint,
            inputs,
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

    /// Content digests of the study's inputs (`label → digest`).
    pub fn inputs(&self) -> &BTreeMap<String, String> {
        &self.inputs
    }

    /// True when the directory already held this study.
    pub fn resumed(&self) -> bool {
        self.resumed
    }
}
