//! The seed's CSV manifest:
//!
//! ```text
//! ImgPath,ImgLabel,SetType
//! jpg/image_06765.jpg,1,train
//! jpg/image_06736.jpg,1,valid
//! ```
//!
//! `ImgPath` is relative to the CSV's directory (absolute paths are kept),
//! `ImgLabel` is the class name (any text; classes are ordered numerically
//! when all are integers, else lexicographically), and `SetType` is `train`,
//! `valid` or `test` (case-insensitive). Columns may come in any order and
//! extra columns are ignored. Rows keep file order within each split.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::source::{sort_class_names, Item, SourceIndex, Split};

/// The required column names.
pub const COLUMNS: [&str; 3] = ["ImgPath", "ImgLabel", "SetType"];

/// Reads the manifest at `csv_path` and lists every split.
pub fn open(csv_path: &Path) -> Result<SourceIndex> {
    if !csv_path.is_file() {
        return Err(DataError::MissingFile {
            what: "CSV manifest",
            path: csv_path.to_path_buf(),
        });
    }
    let base = csv_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let csv_err = |line: u64, message: String| DataError::Csv {
        path: csv_path.to_path_buf(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .map_err(|e| DataError::io(csv_path, std::io::Error::other(e.to_string())))?;
    let headers = reader
        .headers()
        .map_err(|e| csv_err(e.position().map_or(1, |p| p.line()), e.to_string()))?
        .clone();
    let mut col = [0usize; 3];
    for (k, name) in COLUMNS.iter().enumerate() {
        col[k] = headers.iter().position(|h| h == *name).ok_or_else(|| {
            csv_err(
                1,
                format!(
                    "header has no column `{name}` (found: {}; expected {})",
                    headers.iter().collect::<Vec<_>>().join(","),
                    COLUMNS.join(",")
                ),
            )
        })?;
    }

    let mut rows: Vec<(PathBuf, String, Split)> = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| csv_err(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        if rec.iter().all(|f| f.is_empty()) {
            continue; // blank line
        }
        let field = |k: usize| -> Result<&str> {
            let v = rec.get(col[k]).ok_or_else(|| {
                csv_err(
                    line,
                    format!(
                        "missing column `{}` (row has {} field(s), the header {})",
                        COLUMNS[k],
                        rec.len(),
                        headers.len()
                    ),
                )
            })?;
            if v.is_empty() {
                return Err(csv_err(line, format!("empty `{}`", COLUMNS[k])));
            }
            Ok(v)
        };
        let path = PathBuf::from(field(0)?);
        let label = field(1)?.to_string();
        let set = field(2)?;
        let split = match set.to_ascii_lowercase().as_str() {
            "train" => Split::Train,
            "valid" => Split::Valid,
            "test" => Split::Test,
            _ => {
                return Err(DataError::UnknownSetType {
                    path: csv_path.to_path_buf(),
                    line,
                    value: set.to_string(),
                })
            }
        };
        let path = if path.is_absolute() {
            path
        } else {
            base.join(path)
        };
        rows.push((path, label, split));
    }

    let mut classes: Vec<String> = rows
        .iter()
        .map(|r| r.1.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sort_class_names(&mut classes);
    let mut splits: [Option<Vec<Item>>; 3] = [Some(Vec::new()), Some(Vec::new()), None];
    let class_of: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(k, c)| (c.as_str(), k))
        .collect();
    for (path, label, split) in rows {
        let label = class_of[label.as_str()];
        splits[split.idx()]
            .get_or_insert_with(Vec::new)
            .push(Item { path, label });
    }
    let index = SourceIndex {
        kind: "csv",
        root: csv_path.to_path_buf(),
        classes,
        splits,
    };
    index.check(csv_path)?;
    Ok(index)
}
