//! Path confinement for submitted studies: every file a submitted config
//! makes the daemon (or its trials) read must lie under the daemon's data
//! root, and the trials' cache is written under the daemon's own directory.
//!
//! A path `p` from a config is resolved as `root/p` when relative, taken as
//! is when absolute, then made canonical (symlinks and `..` resolved by the
//! file system) and accepted only when the canonical path starts with the
//! canonical root. The config is rewritten with the canonical paths, so the
//! trials read exactly what was checked. Images listed by a data index (a
//! CSV manifest, a folder tree) are checked the same way.

use std::path::{Component, Path, PathBuf};

use crate::study::StudyConfig;

/// Why a submitted config was refused: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfineError {
    /// The config key (`data.path`, `train.weights`, …).
    pub key: String,
    /// What is wrong, in words (never a file's contents).
    pub message: String,
}

fn refuse(key: &str, message: impl Into<String>) -> ConfineError {
    ConfineError {
        key: key.into(),
        message: message.into(),
    }
}

/// Where submitted studies may read from and write to.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// Canonical data root: inputs must lie under it.
    pub data_root: PathBuf,
    /// Canonical directory the trials' image caches go under.
    pub cache_root: PathBuf,
    /// Whether `[trial] command` may name a program (under the data root).
    pub allow_trial_command: bool,
}

impl Confinement {
    /// Resolves `p` (relative to the data root) to a canonical path under it.
    pub fn resolve(&self, key: &str, p: &str) -> Result<PathBuf, ConfineError> {
        if p.is_empty() {
            return Err(refuse(key, "is empty"));
        }
        let joined = self.data_root.join(p);
        let canonical = joined.canonicalize().map_err(|e| {
            refuse(
                key,
                format!("{p:?} cannot be opened under the data root: {}", e.kind()),
            )
        })?;
        if !canonical.starts_with(&self.data_root) {
            return Err(refuse(
                key,
                format!(
                    "{p:?} lies outside the data root {} (submitted studies may only read files under --data-root)",
                    self.data_root.display()
                ),
            ));
        }
        Ok(canonical)
    }

    /// Checks and rewrites `cfg`'s paths (see the module docs); `origin`
    /// names the submission in messages.
    pub fn apply(&self, cfg: &mut StudyConfig, origin: &str) -> Result<(), ConfineError> {
        let external = cfg.trial.command.is_some();
        if let Some(cmd) = &mut cfg.trial.command {
            if !self.allow_trial_command {
                return Err(refuse(
                    "trial.command",
                    "submitted studies cannot run their own trial program (the daemon runs polytune's trainer; start it with --allow-trial-command to allow programs under --data-root)",
                ));
            }
            let Some(program) = cmd.first_mut() else {
                return Err(refuse("trial.command", "is empty"));
            };
            *program = path_text(&self.resolve("trial.command", program)?);
        }
        for (table, key) in [("data", "path"), ("train", "weights")] {
            let name = format!("{table}.{key}");
            let t = if table == "data" {
                &mut cfg.data
            } else {
                &mut cfg.train
            };
            match t.get(key) {
                None => {}
                Some(toml::Value::String(p)) => {
                    let resolved = self.resolve(&name, p)?;
                    t.insert(key.into(), toml::Value::String(path_text(&resolved)));
                }
                Some(other) => {
                    return Err(refuse(
                        &name,
                        format!("must be a path (a string), not a {}", other.type_str()),
                    ))
                }
            }
        }
        if let Some(w) = &cfg.provenance.weights {
            let resolved = self.resolve("provenance.weights", &w.to_string_lossy())?;
            cfg.provenance.weights = Some(resolved);
        }
        if external {
            // An external program owns [data]; polytune writes no cache for it.
            return Ok(());
        }
        let cache = match cfg.data.get("cache_dir") {
            None => self.cache_root.clone(),
            Some(toml::Value::String(p)) => {
                self.cache_root.join(relative_inside("data.cache_dir", p)?)
            }
            Some(other) => {
                return Err(refuse(
                    "data.cache_dir",
                    format!("must be a path (a string), not a {}", other.type_str()),
                ))
            }
        };
        cfg.data
            .insert("cache_dir".into(), toml::Value::String(path_text(&cache)));
        let images = crate::study::inputs::image_files(cfg, origin)
            .map_err(|e| refuse("data.path", e.to_string()))?;
        for image in images {
            let normal = lexical_normal(&image);
            if !normal.starts_with(&self.data_root) {
                return Err(refuse(
                    "data.path",
                    format!(
                        "the data index lists {}, outside the data root {}",
                        image.display(),
                        self.data_root.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A relative path with no `..`, `/` or prefix: stays inside its parent.
fn relative_inside(key: &str, p: &str) -> Result<PathBuf, ConfineError> {
    let path = Path::new(p);
    if p.is_empty()
        || !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refuse(
            key,
            format!("{p:?} must be a relative path without `..` (it is placed under the daemon's cache directory)"),
        ));
    }
    Ok(path.to_path_buf())
}

/// `p` with `.` and `..` resolved by text (no file system access).
fn lexical_normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confinement(root: &Path, allow: bool) -> Confinement {
        Confinement {
            data_root: root.canonicalize().unwrap(),
            cache_root: root.canonicalize().unwrap().join("cache"),
            allow_trial_command: allow,
        }
    }

    #[test]
    fn paths_outside_the_root_are_refused_and_inside_ones_made_canonical() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("w")).unwrap();
        std::fs::write(root.join("w/model.safetensors"), b"x").unwrap();
        std::fs::write(tmp.path().join("secret"), b"TOPSECRET").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("link")).unwrap();
        let c = confinement(&root, false);
        let canon = root.canonicalize().unwrap();
        assert_eq!(
            c.resolve("train.weights", "w/../w/model.safetensors")
                .unwrap(),
            canon.join("w/model.safetensors")
        );
        for bad in ["/etc/passwd", "../secret", "link", "w/../../secret"] {
            let e = c.resolve("train.weights", bad).unwrap_err();
            assert_eq!(e.key, "train.weights");
            assert!(
                e.message.contains("outside the data root")
                    || e.message.contains("cannot be opened"),
                "{bad}: {e}"
            );
            assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        }
        assert!(c
            .resolve("data.path", "missing")
            .unwrap_err()
            .message
            .contains("cannot be opened"));
    }

    #[test]
    fn trial_commands_need_the_flag_and_cache_dirs_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("trial.sh"), b"#!/bin/sh\n").unwrap();
        let mut cfg = StudyConfig::default();
        cfg.trial.command = Some(vec!["trial.sh".into(), "--x".into()]);
        let e = confinement(tmp.path(), false)
            .apply(&mut cfg.clone(), "t")
            .unwrap_err();
        assert_eq!(e.key, "trial.command");
        confinement(tmp.path(), true).apply(&mut cfg, "t").unwrap();
        let program = &cfg.trial.command.as_ref().unwrap()[0];
        assert_eq!(
            Path::new(program),
            tmp.path().canonicalize().unwrap().join("trial.sh")
        );

        let mut own = StudyConfig::default();
        own.data
            .insert("cache_dir".into(), toml::Value::String("../up".into()));
        let e = confinement(tmp.path(), false)
            .apply(&mut own, "t")
            .unwrap_err();
        assert_eq!(e.key, "data.cache_dir");
        own.data
            .insert("cache_dir".into(), toml::Value::String("mine".into()));
        confinement(tmp.path(), false).apply(&mut own, "t").unwrap();
        assert_eq!(
            own.data["cache_dir"].as_str().unwrap(),
            path_text(&tmp.path().canonicalize().unwrap().join("cache/mine"))
        );
    }
}
