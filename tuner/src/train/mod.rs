//! The fine-tune trainer: fastai's `fine_tune` schedule with Poly-N (a `DynPolyLoss`),
//! a frozen-phase feature cache.
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | the `[train]` section ([`TrainConfig`]) |
//! | [`schedule`] | one-cycle learning rate and momentum, discriminative rates |
//! | [`head`] | the classification head, fastai's or linear ([`Head`]) |
//! | [`optimiser`] | fastai's Adam per layer group |
//! | [`features`] | the frozen body's feature cache |
//! | [`metrics`] | top-1 / top-5 / CE, the epoch CSV |
//! | [`trainer`] | the fine-tune loop ([`train`]) |
//! | [`weights`] | pretrained weights in, the trained model out |
//!
//! ```no_run
//! use polytune::data::Dataset;
//! use polytune::train::{train, TrainConfig, TrainOptions};
//!
//! let data = Dataset::digits(8)?; // the embedded digits set
//! let report = train(&TrainConfig::default(), &data, TrainOptions::new(vec![2.0], 7))?;
//! println!("val top-1 {:.3}, top-5 {:.3}", report.valid.top1, report.valid.top5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod error;
pub mod features;
pub mod head;
pub mod metrics;
pub mod optimiser;
pub mod provenance;
pub mod schedule;
pub mod trainer;
pub mod weights;

pub use config::{
    data_config_from_table, set_threads, ComputeDevice, FrozenBn, ModelKind, TrainConfig,
};
pub use error::TrainError;
pub use features::{FeatureKey, FeatureOrigin, FrozenFeatures};
pub use head::{Head, HeadKind, Pool};
pub use metrics::{EpochMetrics, EvalMetrics, Phase};
pub use provenance::{provenance_of, schedule_words};
pub use trainer::{
    epoch_batches, train, BatchInfo, Loss, Quiet, TrainObserver, TrainOptions, TrainReport,
    MAX_TERMS,
};
pub use weights::{check_weights, save_model};
