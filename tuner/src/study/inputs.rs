//! The files a study reads, and digests of their content for the study's
//! fingerprint: a study's results are only as good as the weights and data
//! they were computed from, so a resume must see the same bytes, not just
//! the same paths.
//!
//! What is digested (SHA-256):
//! - `train.weights`: the whole file's content;
//! - the data source's index files — Flowers-102's `imagelabels.mat` and
//!   `setid.mat`, the CSV manifest — their whole content;
//! - the images: a manifest of one line per listed image (split, path
//!   relative to the data root, byte size, label), not the images' bytes
//!   (hashing every image on each run would cost seconds per start on
//!   Flowers-102; an edited image of unchanged size is caught by the
//!   pixel cache's own fingerprint, which includes modification times).
//!
//! The embedded digits set has no files: the polytune version covers it.
//! With an external trial program (`[trial] command`) the `[train]` and
//! `[data]` tables are the program's own: polytune reads no file named there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::config::{StudyConfig, StudyConfigError};
use super::StudyError;
use crate::data::dataset::open_index;
use crate::data::{flowers, DataConfig, SourceKind};
use crate::hash::{sha256_file, ContentHasher};

/// An input file of a study: what it is (for messages) and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputFile {
    /// e.g. `train.weights` or `data index`.
    pub role: &'static str,
    /// The file.
    pub path: PathBuf,
}

/// The data config of a study, when `[data]` names a file-based source.
fn file_data_config(cfg: &StudyConfig, origin: &str) -> Result<Option<DataConfig>, StudyError> {
    if cfg.trial.command.is_some() {
        return Ok(None);
    }
    let source = cfg.data.get("source").and_then(toml::Value::as_str);
    if matches!(source, None | Some("digits")) {
        return Ok(None);
    }
    let data = crate::train::data_config_from_table(&cfg.data, origin).map_err(|e| {
        StudyError::Config(StudyConfigError::Invalid {
            origin: origin.to_string(),
            key: "data".into(),
            message: e.to_string(),
        })
    })?;
    Ok((data.source != SourceKind::Digits && data.path.is_some()).then_some(data))
}

/// The weights file and the data source's index files (not the images).
pub(crate) fn index_files(cfg: &StudyConfig, origin: &str) -> Result<Vec<InputFile>, StudyError> {
    let mut out = Vec::new();
    if cfg.trial.command.is_some() {
        return Ok(out);
    }
    if let Some(w) = cfg.train.get("weights").and_then(toml::Value::as_str) {
        out.push(InputFile {
            role: "train.weights",
            path: PathBuf::from(w),
        });
    }
    if let Some(data) = file_data_config(cfg, origin)? {
        let root = data.path.clone().expect("file source has a path");
        match data.source {
            SourceKind::Flowers102 => {
                for name in [flowers::LABELS_FILE, flowers::SETID_FILE] {
                    out.push(InputFile {
                        role: "data index",
                        path: root.join(name),
                    });
                }
            }
            SourceKind::Csv => out.push(InputFile {
                role: "data index",
                path: root,
            }),
            SourceKind::Folders | SourceKind::Digits => {}
        }
    }
    Ok(out)
}

/// Every image the data source lists (empty for the digits).
pub(crate) fn image_files(cfg: &StudyConfig, origin: &str) -> Result<Vec<PathBuf>, StudyError> {
    let Some(data) = file_data_config(cfg, origin)? else {
        return Ok(Vec::new());
    };
    let index = open_index(&data).map_err(|e| data_error(&data, e))?;
    Ok(index
        .splits
        .iter()
        .flatten()
        .flatten()
        .map(|it| it.path.clone())
        .collect())
}

fn data_error(data: &DataConfig, e: crate::data::DataError) -> StudyError {
    StudyError::Io {
        path: data.path.clone().unwrap_or_default(),
        source: std::io::Error::other(format!("cannot list the data set's files: {e}")),
    }
}

/// Digests of the study's inputs, keyed by a label that names the file
/// (`train.weights w.safetensors`, `data index data/setid.mat`, `data
/// images data`); values are `sha256 <hex>` (images: of the manifest).
pub(crate) fn digest_inputs(
    cfg: &StudyConfig,
    origin: &str,
) -> Result<BTreeMap<String, String>, StudyError> {
    let mut out = BTreeMap::new();
    for f in index_files(cfg, origin)? {
        let digest = sha256_file(&f.path).map_err(|e| StudyError::Io {
            path: f.path.clone(),
            source: std::io::Error::new(e.kind(), format!("cannot hash {}: {e}", f.role)),
        })?;
        out.insert(
            format!("{} {}", f.role, f.path.display()),
            format!("sha256 {digest}"),
        );
    }
    if let Some(data) = file_data_config(cfg, origin)? {
        let index = open_index(&data).map_err(|e| data_error(&data, e))?;
        let mut h = ContentHasher::new();
        let mut count = 0usize;
        for split in crate::data::Split::ALL {
            for it in index.items(split).unwrap_or_default() {
                let size = std::fs::metadata(&it.path)
                    .map_err(|source| StudyError::Io {
                        path: it.path.clone(),
                        source,
                    })?
                    .len();
                let rel = it.path.strip_prefix(&index.root).unwrap_or(&it.path);
                h.update(split.name().as_bytes());
                h.update([0]);
                h.update(rel.as_os_str().as_encoded_bytes());
                h.update([0]);
                h.update(size.to_le_bytes());
                h.update((it.label as u64).to_le_bytes());
                count += 1;
            }
        }
        let root = data.path.clone().expect("file source has a path");
        out.insert(
            format!("data images {}", root.display()),
            format!(
                "sha256 {} of the names and sizes of {count} images",
                h.finish_hex()
            ),
        );
    }
    Ok(out)
}

/// `key: stored vs now` lines for the digests that differ.
pub(crate) fn digest_differences(
    stored: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut keys: Vec<&String> = stored.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| stored.get(*k) != now.get(*k))
        .map(|k| match (stored.get(k), now.get(k)) {
            (Some(a), Some(b)) => format!("{k}: content changed ({a} then, {b} now)"),
            (Some(a), None) => format!("{k}: no longer an input ({a} then)"),
            (None, Some(b)) => format!("{k}: not an input then ({b} now)"),
            (None, None) => unreachable!("key from one of the maps"),
        })
        .collect()
}

/// The role part of a digest label (`train.weights`, `data index`, `data
/// images`): labels also hold paths, which differ between machines.
fn role_of(label: &str) -> &str {
    ["train.weights", "data index", "data images"]
        .into_iter()
        .find(|r| label.starts_with(r))
        .unwrap_or(label)
}

/// Like [`digest_differences`], but matching inputs by role and content,
/// not by path: a worker finds the same files under another root.
pub(crate) fn digest_differences_by_role(
    stored: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let by_role = |m: &BTreeMap<String, String>| {
        let mut v: Vec<(String, String, String)> = m
            .iter()
            .map(|(k, d)| (role_of(k).to_string(), d.clone(), k.clone()))
            .collect();
        v.sort();
        v
    };
    let (a, b) = (by_role(stored), by_role(now));
    let mut out = Vec::new();
    for (ra, da, ka) in &a {
        if !b.iter().any(|(rb, db, _)| rb == ra && db == da) {
            match b.iter().find(|(rb, _, _)| rb == ra) {
                Some((_, db, kb)) => {
                    out.push(format!("{ka}: {da} at the coordinator, {kb}: {db} here"))
                }
                None => out.push(format!("{ka}: {da} at the coordinator, no such input here")),
            }
        }
    }
    for (rb, db, kb) in &b {
        if !a.iter().any(|(ra, _, _)| ra == rb) {
            out.push(format!("{kb}: {db} here, not an input at the coordinator"));
        }
    }
    out
}

#[cfg(test)]
mod role_tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn same_content_under_another_root_matches_other_content_does_not() {
        let coordinator = map(&[
            ("train.weights w/r50.safetensors", "sha256 aa"),
            ("data index data/imagelabels.mat", "sha256 bb"),
            ("data index data/setid.mat", "sha256 cc"),
            (
                "data images data",
                "sha256 dd of the names and sizes of 10 images",
            ),
        ]);
        let worker = map(&[
            ("train.weights /mnt/w/r50.safetensors", "sha256 aa"),
            ("data index /mnt/data/imagelabels.mat", "sha256 bb"),
            ("data index /mnt/data/setid.mat", "sha256 cc"),
            (
                "data images /mnt/data",
                "sha256 dd of the names and sizes of 10 images",
            ),
        ]);
        assert!(digest_differences_by_role(&coordinator, &worker).is_empty());
        // Other weights: named, with both digests.
        let mut other = worker.clone();
        other.insert(
            "train.weights /mnt/w/r50.safetensors".into(),
            "sha256 ee".into(),
        );
        let d = digest_differences_by_role(&coordinator, &other);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].contains("train.weights w/r50.safetensors: sha256 aa at the coordinator"),
            "{d:?}"
        );
        assert!(d[0].contains("sha256 ee here"), "{d:?}");
        // A missing input and an extra one are both differences.
        let mut fewer = worker.clone();
        fewer.remove("train.weights /mnt/w/r50.safetensors");
        assert_eq!(digest_differences_by_role(&coordinator, &fewer).len(), 1);
        assert_eq!(digest_differences_by_role(&fewer, &worker).len(), 1);
    }
}
