//! The data pipeline's error type.
//!
//! Every variant names what the user has to fix: the file, the line of a CSV
//! manifest, the MAT variable and index, or the config key and its value.

use std::path::PathBuf;

/// Errors of the data pipeline (loading, decoding, caching, configuration).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A directory the layout requires does not exist.
    #[error("{what} directory not found: {path}")]
    MissingDir {
        /// What the directory is for (e.g. "Flowers-102 image").
        what: &'static str,
        /// The directory that was looked for.
        path: PathBuf,
    },

    /// A file the layout or a manifest refers to does not exist.
    #[error("{what} not found: {path}")]
    MissingFile {
        /// What the file is (e.g. "image", "label file").
        what: &'static str,
        /// The file that was looked for.
        path: PathBuf,
    },

    /// A MAT v5 file is malformed or holds something the reader does not support.
    #[error("{path}: {message}")]
    Mat {
        /// The `.mat` file.
        path: PathBuf,
        /// What is wrong, with the variable name and byte offset where known.
        message: String,
    },

    /// A variable the layout requires is not in a MAT file.
    #[error("{path}: no variable `{name}` (found: {found})")]
    MatVariableMissing {
        /// The `.mat` file.
        path: PathBuf,
        /// The variable that was looked for.
        name: String,
        /// The variables the file does hold, comma-separated.
        found: String,
    },

    /// Two lists that must correspond have different lengths.
    #[error("{what}: {left} has {left_len} entries but {right} has {right_len}")]
    LengthMismatch {
        /// What is being compared.
        what: &'static str,
        /// The first list (file and variable).
        left: String,
        /// Its length.
        left_len: usize,
        /// The second list.
        right: String,
        /// Its length.
        right_len: usize,
    },

    /// A class label outside the allowed range (or not an integer).
    #[error("{path}: `{variable}`[{index}] = {value} is not a label in {min}..={max}")]
    LabelOutOfRange {
        /// The file holding the label.
        path: PathBuf,
        /// The variable or column.
        variable: String,
        /// 0-based position in the variable.
        index: usize,
        /// The offending value.
        value: f64,
        /// Smallest allowed label.
        min: i64,
        /// Largest allowed label.
        max: i64,
    },

    /// An image id outside the range of known images (or not an integer).
    #[error("{path}: `{variable}`[{index}] = {value} is not an image id in 1..={max}")]
    IdOutOfRange {
        /// The file holding the id.
        path: PathBuf,
        /// The variable.
        variable: String,
        /// 0-based position in the variable.
        index: usize,
        /// The offending value.
        value: f64,
        /// Largest valid id (the number of labels).
        max: usize,
    },

    /// The same image id is listed twice among the splits.
    #[error("{path}: image id {id} is listed twice (in `{first}` and `{second}`)")]
    DuplicateId {
        /// The split file.
        path: PathBuf,
        /// The repeated 1-based id.
        id: usize,
        /// Variable of the first occurrence.
        first: String,
        /// Variable of the second occurrence.
        second: String,
    },

    /// An image file could not be decoded (corrupt, truncated, unknown format).
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },

    /// A CSV manifest is malformed (missing column, bad header, empty field).
    #[error("{path}, line {line}: {message}")]
    Csv {
        /// The manifest.
        path: PathBuf,
        /// 1-based line number in the file.
        line: u64,
        /// What is wrong.
        message: String,
    },

    /// A manifest row names a split other than train, valid or test.
    #[error("{path}, line {line}: unknown SetType {value:?} (expected train, valid or test)")]
    UnknownSetType {
        /// The manifest.
        path: PathBuf,
        /// 1-based line number in the file.
        line: u64,
        /// The unknown value.
        value: String,
    },

    /// A class has no training images, or a split holds no images at all.
    #[error("{location}: {message}")]
    Empty {
        /// The file or directory where the class or split was expected.
        location: PathBuf,
        /// Which class or split is empty.
        message: String,
    },

    /// A `[data]` configuration value is missing or impossible.
    #[error("config key `{key}` = {value}: {reason}")]
    Config {
        /// Dotted key, e.g. `data.image_size`.
        key: String,
        /// The offending value as written (or `(missing)`).
        value: String,
        /// Why it is rejected.
        reason: String,
    },

    /// A batch request that cannot be served (zero batch size, index out of range).
    #[error("{0}")]
    Batch(String),

    /// A split has no images for this source (e.g. the digits set has no test split).
    #[error("the {source_kind} data set has no {split} split")]
    NoSuchSplit {
        /// The data source kind.
        source_kind: &'static str,
        /// The split asked for.
        split: &'static str,
    },
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// A config error for `key` with the offending `value`.
    pub(crate) fn config(
        key: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        DataError::Config {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of the data pipeline.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
