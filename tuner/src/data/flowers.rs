//! Oxford Flowers-102 in its official layout:
//!
//! ```text
//! <root>/jpg/image_00001.jpg ... image_08189.jpg
//! <root>/imagelabels.mat   variable `labels`: 1×8189 doubles in 1..=102
//! <root>/setid.mat         variables `trnid` (1020), `valid` (1020), `tstid` (6149): 1-based image ids
//! ```
//!
//! Class `k` (0-based) is the file's label `k + 1`; class names are the
//! labels as written ("1" .. "102"). Splits keep the order of the id
//! vectors. The three id vectors must partition the labelled images: an id
//! out of range, an id listed twice, or id vectors that together cover a
//! different number of images than there are labels are errors naming the
//! file and variable.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::mat::MatFile;
use super::source::{Item, SourceIndex};

/// Number of classes of Flowers-102.
pub const NUM_CLASSES: usize = 102;
/// The label file's name.
pub const LABELS_FILE: &str = "imagelabels.mat";
/// The split file's name.
pub const SETID_FILE: &str = "setid.mat";
/// The image directory's name.
pub const IMAGE_DIR: &str = "jpg";

/// Path of image `id` (1-based).
pub fn image_path(root: &Path, id: usize) -> PathBuf {
    root.join(IMAGE_DIR).join(format!("image_{id:05}.jpg"))
}

/// Reads the label and split files under `root` and lists every split.
pub fn open(root: &Path) -> Result<SourceIndex> {
    if !root.is_dir() {
        return Err(DataError::MissingDir {
            what: "Flowers-102 data",
            path: root.to_path_buf(),
        });
    }
    let jpg = root.join(IMAGE_DIR);
    if !jpg.is_dir() {
        return Err(DataError::MissingDir {
            what: "Flowers-102 image (jpg/)",
            path: jpg,
        });
    }
    let labels_path = root.join(LABELS_FILE);
    let setid_path = root.join(SETID_FILE);
    let labels_mat = open_mat(&labels_path)?;
    let setid_mat = open_mat(&setid_path)?;
    let raw_labels = labels_mat.vector("labels")?;
    let labels = check_labels(&labels_path, "labels", raw_labels, NUM_CLASSES)?;

    let mut seen: Vec<Option<&'static str>> = vec![None; labels.len()];
    let mut splits: [Option<Vec<Item>>; 3] = [None, None, None];
    let mut listed = 0usize;
    for (slot, var) in ["trnid", "valid", "tstid"].into_iter().enumerate() {
        let ids = setid_mat.vector(var)?;
        let mut items = Vec::with_capacity(ids.len());
        for (index, &v) in ids.iter().enumerate() {
            let id = as_index(v)
                .filter(|&i| (1..=labels.len()).contains(&i))
                .ok_or_else(|| DataError::IdOutOfRange {
                    path: setid_path.clone(),
                    variable: var.into(),
                    index,
                    value: v,
                    max: labels.len(),
                })?;
            if let Some(first) = seen[id - 1] {
                return Err(DataError::DuplicateId {
                    path: setid_path.clone(),
                    id,
                    first: first.into(),
                    second: var.into(),
                });
            }
            seen[id - 1] = Some(var);
            items.push(Item {
                path: image_path(root, id),
                label: labels[id - 1],
            });
        }
        listed += items.len();
        splits[slot] = Some(items);
    }
    if listed != labels.len() {
        return Err(DataError::LengthMismatch {
            what: "Flowers-102 splits must cover every labelled image",
            left: format!("{} (trnid + valid + tstid)", setid_path.display()),
            left_len: listed,
            right: format!("{} (labels)", labels_path.display()),
            right_len: labels.len(),
        });
    }
    let index = SourceIndex {
        kind: "flowers102",
        root: root.to_path_buf(),
        classes: (1..=NUM_CLASSES).map(|k| k.to_string()).collect(),
        splits,
    };
    index.check(&labels_path)?;
    Ok(index)
}

fn open_mat(path: &Path) -> Result<MatFile> {
    if !path.is_file() {
        return Err(DataError::MissingFile {
            what: "Flowers-102 MAT file",
            path: path.to_path_buf(),
        });
    }
    MatFile::open(path)
}

/// `v` as a positive integer, if it is one.
fn as_index(v: f64) -> Option<usize> {
    (v.fract() == 0.0 && v >= 1.0 && v <= usize::MAX as f64).then_some(v as usize)
}

/// Converts 1-based labels to 0-based classes, checking each is an integer
/// in `1..=classes`.
pub(crate) fn check_labels(
    path: &Path,
    var: &str,
    raw: &[f64],
    classes: usize,
) -> Result<Vec<usize>> {
    if raw.is_empty() {
        return Err(DataError::Empty {
            location: path.to_path_buf(),
            message: format!("`{var}` holds no labels"),
        });
    }
    raw.iter()
        .enumerate()
        .map(|(index, &v)| {
            as_index(v)
                .filter(|&l| l <= classes)
                .map(|l| l - 1)
                .ok_or_else(|| DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    variable: var.into(),
                    index,
                    value: v,
                    min: 1,
                    max: classes as i64,
                })
        })
        .collect()
}
