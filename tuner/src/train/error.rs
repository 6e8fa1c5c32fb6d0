//! [`TrainError`]: everything that stops a fine-tune, naming the file, key,
//! epoch or value at fault.

use std::path::PathBuf;

use crate::data::DataError;

/// Why a fine-tune (or a trial) could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The `[train]` table is not valid TOML for it (unknown key, wrong type).
    #[error("{origin}: {message}")]
    ConfigParse {
        /// The config file (or spec) it came from.
        origin: String,
        /// toml's message, with the key.
        message: String,
    },
    /// A `[train]` value breaks a rule.
    #[error("{origin}: key `{key}`: {message}")]
    Config {
        /// The config file (or spec) it came from.
        origin: String,
        /// The dotted key, e.g. `train.batch_size`.
        key: String,
        /// The value and the rule.
        message: String,
    },
    /// The data set could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The pretrained weights file could not be read or does not fit the model.
    #[error("{path}: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong (e.g. which model it does not fit, and why).
        message: String,
    },
    /// ε cannot be used (no terms, too many terms, not finite in f32).
    #[error("epsilon {epsilon:?}: {message}")]
    Epsilon {
        /// The coefficients given.
        epsilon: Vec<f64>,
        /// The rule broken.
        message: String,
    },
    /// The loss rejected its input.
    #[error("loss: {0}")]
    Loss(#[from] poly_loss::PolyLossError),
    /// The training loss became NaN or infinite: the run diverged.
    #[error("training diverged: the loss is {value} in {phase} epoch {epoch} (of {epochs}), batch {batch}; try a smaller learning rate")]
    NonFinite {
        /// `frozen` or `unfrozen`.
        phase: &'static str,
        /// Epoch number within the whole run, from 1.
        epoch: usize,
        /// F + U.
        epochs: usize,
        /// Batch number within the epoch, from 1.
        batch: usize,
        /// The loss value.
        value: f32,
    },
    /// A device (tensor backend) error.
    #[error("device error: {0}")]
    Device(String),
    /// I/O on an output file (metrics CSV, saved model).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl TrainError {
    pub(crate) fn device(e: impl std::fmt::Debug) -> Self {
        TrainError::Device(format!("{e:?}"))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
