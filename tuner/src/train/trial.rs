//! One trial: a [`TrialSpec`] in, a [`TrialResult`] out — what
//! `polytune trial --spec -` runs in each child process of a study.

use std::time::Instant;

use super::config::{keyed_toml_error, ComputeDevice, TrainConfig};
use super::error::TrainError;
use super::trainer::{train, TrainObserver, TrainOptions, TrainReport};
use crate::data::{DataConfig, DataError, Dataset, Evaluation};
use crate::orchestrator::{TrialPhase, TrialResult, TrialSpec};

/// Parses a `[data]` table (a study config's or a spec's) and validates it;
/// `origin` names the config in errors.
///
/// ```
/// use polytune::train::data_config_from_table;
/// let t: toml::Table = toml::from_str("image_size = 16").unwrap();
/// assert_eq!(data_config_from_table(&t, "c.toml").unwrap().image_size(), 16);
/// let t: toml::Table = toml::from_str("image_sise = 16").unwrap();
/// let e = data_config_from_table(&t, "c.toml").unwrap_err().to_string();
/// assert!(e.starts_with("c.toml: ") && e.contains("image_sise"), "{e}");
/// ```
pub fn data_config_from_table(table: &toml::Table, origin: &str) -> Result<DataConfig, TrainError> {
    let text = toml::to_string(table).map_err(|e| TrainError::ConfigParse {
        origin: origin.to_string(),
        message: format!("[data]: {e}"),
    })?;
    let cfg: DataConfig = toml::from_str(&text).map_err(|e| TrainError::ConfigParse {
        origin: origin.to_string(),
        message: keyed_toml_error("data", &text, &e),
    })?;
    cfg.validate().map_err(|e| match e {
        DataError::Config { .. } => TrainError::ConfigParse {
            origin: origin.to_string(),
            message: e.to_string().replace('\n', " "),
        },
        other => TrainError::Data(other),
    })?;
    Ok(cfg)
}

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
