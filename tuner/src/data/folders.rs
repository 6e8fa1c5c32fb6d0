//! The folder-per-class layout:
//!
//! ```text
//! <root>/train/<class>/*.jpg
//! <root>/valid/<class>/*.jpg
//! <root>/test/<class>/*.jpg      (optional)
//! ```
//!
//! Classes are the sub-directories of `train/` (numerically ordered when all
//! names are integers, else lexicographically). Images are the files with a
//! `.jpg`, `.jpeg` or `.png` extension (any case), sorted by name; hidden
//! entries (starting with `.`) and other files are ignored. A class folder
//! without images in `train/`, or a class folder in `valid/`/`test/` that
//! `train/` lacks, is an error naming the folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::source::{sort_class_names, Item, SourceIndex, Split};

/// File extensions taken as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Lists the class folders under `root`.
pub fn open(root: &Path) -> Result<SourceIndex> {
    if !root.is_dir() {
        return Err(DataError::MissingDir {
            what: "data",
            path: root.to_path_buf(),
        });
    }
    let train_dir = root.join(Split::Train.name());
    if !train_dir.is_dir() {
        return Err(DataError::MissingDir {
            what: "training (train/<class>/)",
            path: train_dir,
        });
    }
    let valid_dir = root.join(Split::Valid.name());
    if !valid_dir.is_dir() {
        return Err(DataError::MissingDir {
            what: "validation (valid/<class>/)",
            path: valid_dir,
        });
    }
    let mut classes = sub_dirs(&train_dir)?;
    if classes.is_empty() {
        return Err(DataError::Empty {
            location: train_dir,
            message: "no class folders".into(),
        });
    }
    sort_class_names(&mut classes);
    let class_of: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(k, c)| (c.as_str(), k))
        .collect();

    let mut splits: [Option<Vec<Item>>; 3] = [None, None, None];
    for split in Split::ALL {
        let dir = root.join(split.name());
        if split == Split::Test && !dir.is_dir() {
            continue;
        }
        let mut items = Vec::new();
        let mut names = sub_dirs(&dir)?;
        names.sort();
        for name in names {
            let class_dir = dir.join(&name);
            let Some(&label) = class_of.get(name.as_str()) else {
                return Err(DataError::Empty {
                    location: class_dir,
                    message: format!("class `{name}` has no folder in train/"),
                });
            };
            let files = image_files(&class_dir)?;
            if files.is_empty() && split == Split::Train {
                return Err(DataError::Empty {
                    location: class_dir,
                    message: format!("class `{name}` has no images (.jpg, .jpeg, .png)"),
                });
            }
            items.extend(files.into_iter().map(|path| Item { path, label }));
        }
        // Keep items grouped by class in label order, files by name.
        items.sort_by(|a, b| a.label.cmp(&b.label).then_with(|| a.path.cmp(&b.path)));
        splits[split.idx()] = Some(items);
    }
    let index = SourceIndex {
        kind: "folders",
        root: root.to_path_buf(),
        classes,
        splits,
    };
    index.check(root)?;
    Ok(index)
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    rd.map(|e| e.map_err(|e| DataError::io(dir, e))).collect()
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Names of the non-hidden sub-directories of `dir`.
fn sub_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in read_dir(dir)? {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_hidden(&name) && e.path().is_dir() {
            out.push(name);
        }
    }
    Ok(out)
}

/// Image files directly in `dir`, sorted by name.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in read_dir(dir)? {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let is_image = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXTENSIONS.iter().any(|k| x.eq_ignore_ascii_case(k)));
        if !is_hidden(&name) && is_image && path.is_file() {
            out.push(path);
        } else if !is_hidden(&name) && !path.is_dir() {
            tracing::debug!(path = %path.display(), "ignoring non-image file");
        }
    }
    out.sort();
    Ok(out)
}
