//! What every on-disk layout produces: the class names and, per split, the
//! list of (image file, label) in a fixed order.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};

/// A data split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training images.
    Train,
    /// Validation images (metrics each epoch).
    Valid,
    /// Held-out test images (final metrics on request).
    Test,
}

impl Split {
    /// All splits in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The lower-case name used in manifests, folders and cache file names.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    pub(crate) fn idx(self) -> usize {
        match self {
            Split::Train => 0,
            Split::Valid => 1,
            Split::Test => 2,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One image of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The image file.
    pub path: PathBuf,
    /// 0-based class index.
    pub label: usize,
}

/// The parsed index of a file-based data source.
#[derive(Debug, Clone)]
pub struct SourceIndex {
    /// Short name of the layout ("flowers102", "csv", "folders").
    pub kind: &'static str,
    /// The data directory or manifest the index was read from.
    pub root: PathBuf,
    /// Class names; label `k` is `classes[k]`.
    pub classes: Vec<String>,
    /// Items of train, valid and test; `None` where the layout has no such split.
    pub splits: [Option<Vec<Item>>; 3],
}

impl SourceIndex {
    /// The items of `split`, if the source has it.
    pub fn items(&self, split: Split) -> Option<&[Item]> {
        self.splits[split.idx()].as_deref()
    }

    /// Checks that train and valid exist and are non-empty and that every
    /// class has at least one training image; `location` names the source in
    /// errors.
    pub(crate) fn check(&self, location: &Path) -> Result<()> {
        for split in [Split::Train, Split::Valid] {
            match self.items(split) {
                Some(items) if !items.is_empty() => {}
                _ => {
                    return Err(DataError::Empty {
                        location: location.to_path_buf(),
                        message: format!("the {split} split has no images"),
                    })
                }
            }
        }
        if self.classes.is_empty() {
            return Err(DataError::Empty {
                location: location.to_path_buf(),
                message: "no classes".into(),
            });
        }
        let mut count = vec![0usize; self.classes.len()];
        for it in self.items(Split::Train).unwrap_or_default() {
            count[it.label] += 1;
        }
        let empty: Vec<&str> = count
            .iter()
            .zip(&self.classes)
            .filter(|(&c, _)| c == 0)
            .map(|(_, n)| n.as_str())
            .collect();
        if !empty.is_empty() {
            let shown: Vec<&str> = empty.iter().take(10).copied().collect();
            return Err(DataError::Empty {
                location: location.to_path_buf(),
                message: format!(
                    "{} class(es) have no training images: {}{}",
                    empty.len(),
                    shown.join(", "),
                    if empty.len() > shown.len() {
                        ", ..."
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(())
    }
}

/// Sorts class names numerically when they are all integers (so "10" comes
/// after "9", as pandas/fastai order integer labels), lexicographically
/// otherwise.
pub(crate) fn sort_class_names(names: &mut [String]) {
    if names.iter().all(|n| n.trim().parse::<i64>().is_ok()) {
        names.sort_by_key(|n| n.trim().parse::<i64>().expect("checked"));
    } else {
        names.sort();
    }
}
