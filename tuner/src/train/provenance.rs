//! What a tuned TOML says about how its coefficients were found: the model,
//! the data set and the schedule in words, filled in from the trainer's
//! sections where the config's `[provenance]` leaves them out.

use crate::study::{ProvenanceConfig, StudyConfig};
use crate::train::{data_config_from_table, TrainConfig, TrainError};

/// The provenance to record for `cfg` (from `origin`): the config's
/// `[provenance]` first, then the model, data set and schedule of its
/// `[train]` / `[data]` sections. An external trial program owns those
/// sections, so for it only the config's own fields are used.
///
/// ```
/// let cfg = polytune::study::StudyConfig::from_toml_str(
///     "[train]\nmodel = \"small-resnet\"\n[data]\nsource = \"digits\"\n",
///     "example",
/// )
/// .unwrap();
/// let p = polytune::train::provenance_of(&cfg, "example").unwrap();
/// assert_eq!(p.model.as_deref(), Some("small-resnet"));
/// assert!(p.schedule.unwrap().starts_with("fastai fine_tune"));
/// ```
pub fn provenance_of(cfg: &StudyConfig, origin: &str) -> Result<ProvenanceConfig, TrainError> {
    let mut p = ProvenanceConfig::default();
    if cfg.trial.command.is_some() {
        return Ok(p);
    }
    let train = TrainConfig::from_table(&cfg.train, origin)?;
    let data = data_config_from_table(&cfg.data, origin)?;
    p.weights = train.weights.clone();
    if cfg.provenance.model.is_none() {
        p.model = Some(train.model.to_string());
    }
    if cfg.provenance.dataset.is_none() {
        p.dataset = Some(match &data.path {
            Some(path) => format!("{} ({})", data.source.name(), path.display()),
            None => data.source.name().to_string(),
        });
    }
    if cfg.provenance.schedule.is_none() {
        p.schedule = Some(schedule_words(&train));
    }
    Ok(p)
}

/// The schedule in words, for the tuned TOML's provenance.
pub fn schedule_words(t: &TrainConfig) -> String {
    format!(
        "fastai fine_tune: {} frozen epoch(s) (one-cycle, lr {}), then {} unfrozen (one-cycle, lr slice({}/{}, {}), bn {}), AdamW wd {}, batch {}{}",
        t.freeze_epochs,
        t.base_lr,
        t.epochs,
        t.base_lr / 2.0,
        t.lr_mult,
        t.base_lr / 2.0,
        t.bn_mode,
        t.weight_decay,
        t.batch_size,
        if t.label_smoothing > 0.0 {
            format!(", label smoothing {}", t.label_smoothing)
        } else {
            String::new()
        }
    )
}
