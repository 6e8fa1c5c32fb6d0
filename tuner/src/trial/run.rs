//! The child's side: a [`TrialSpec`] in, a fine-tune, a [`TrialResult`] out.

use std::time::Instant;

use super::protocol::{SpecError, TrialPhase, TrialResult, TrialSpec};
use crate::data::{Dataset, Evaluation};
use crate::train::{
    data_config_from_table, set_threads, train, ComputeDevice, TrainConfig, TrainError,
    TrainObserver, TrainOptions, TrainReport,
};

/// Runs the fine-tune a spec describes: `[train]` and `[data]` from the
/// spec, its ε and seed. Returns the result line's contents.
pub fn run_trial(
    spec: &TrialSpec,
    observer: Option<&mut dyn TrainObserver>,
) -> Result<(TrialResult, TrainReport), TrainError> {
    let start = Instant::now();
    let origin = format!("trial spec ({} {})", spec.phase.as_str(), spec.trial);
    let mut cfg = TrainConfig::from_table(&spec.train, &origin)?;
    if let (ComputeDevice::Cuda(None), Some(worker)) = (cfg.compute_device(), spec.worker) {
        // One GPU per worker slot.
        cfg.device = format!("cuda:{worker}");
    }
    let data_cfg = data_config_from_table(&spec.data, &origin)?;
    // The search scores on the validation split, the confirmation on the
    // held-out split.
    let eval = match spec.phase {
        TrialPhase::Search => Evaluation::Valid,
        TrialPhase::Confirm => Evaluation::Holdout,
    };
    let data = Dataset::load_for(&data_cfg, eval)?;
    let opts = TrainOptions {
        epsilon: spec.epsilon.clone(),
        seed: spec.seed,
        metrics_csv: None,
        save: None,
        test: false,
        observer,
    };
    let report = train(&cfg, &data, opts)?;
    let result = TrialResult {
        val_accuracy: report.valid.top1,
        val_loss: report.valid.loss,
        train_loss: Some(report.train_loss),
        epochs: Some(report.epochs.len() as u32),
        seed: Some(spec.seed),
        duration_s: Some((start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    };
    Ok((result, report))
}

/// Why `polytune trial` failed.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// The spec could not be read or parsed.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The fine-tune failed.
    #[error("trial {trial} (ε = {epsilon:?}, seed {seed})")]
    Train {
        /// The trial number.
        trial: u64,
        /// Its ε.
        epsilon: Vec<f64>,
        /// Its seed.
        seed: u64,
        /// What went wrong (boxed: a `TrainError` is large).
        #[source]
        source: Box<TrainError>,
    },
    /// The result line could not be written to standard output.
    #[error(transparent)]
    Print(std::io::Error),
}

/// The child process's whole job (`polytune trial --spec FILE|-`): reads
/// the spec from a file or (`-`) standard input, applies its thread count,
/// fine-tunes, and prints the result line on standard output.
pub fn run_trial_command(spec_arg: &str) -> Result<(), TrialError> {
    let spec = TrialSpec::read(spec_arg)?;
    // The thread count is part of the config (results are reproducible
    // bit for bit for a fixed count), so apply it before any work.
    if let Some(t) = spec.train.get("threads").and_then(toml::Value::as_integer) {
        set_threads(t);
    }
    let (result, _) = run_trial(&spec, None).map_err(|source| TrialError::Train {
        trial: spec.trial,
        epsilon: spec.epsilon.clone(),
        seed: spec.seed,
        source: Box::new(source),
    })?;
    result.print().map_err(TrialError::Print)
}
