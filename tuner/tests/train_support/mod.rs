//! Helpers shared by the trainer tests: the embedded default's `[train]` and
//! `[data]` sections with the caches moved into a temporary directory, and a
//! batch-recording observer.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use polytune::data::{DataConfig, Dataset};
use polytune::study::{LoadedConfig, StudyConfig};
use polytune::train::{
    data_config_from_table, BatchInfo, EpochMetrics, FeatureOrigin, TrainConfig, TrainObserver,
    TrainReport,
};

/// The embedded default study config's `[train]`, `[data]` and seed.
pub fn embedded_default() -> (TrainConfig, DataConfig, u64) {
    let LoadedConfig {
        config: cfg,
        source,
        ..
    } = StudyConfig::load_or_default(None).unwrap();
    let train = TrainConfig::from_table(&cfg.train, &source).unwrap();
    let data = data_config_from_table(&cfg.data, &source).unwrap();
    (train, data, cfg.study.seed)
}

/// The embedded digits set with its caches (the feature cache included)
/// under `cache`.
pub fn digits_in(data: &DataConfig, cache: &Path) -> Dataset {
    let mut data = data.clone();
    data.cache_dir = cache.to_path_buf();
    Dataset::load(&data).unwrap()
}

/// One step as the observer saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub epoch: usize,
    pub batch: usize,
    pub view: u64,
    pub indices: Vec<usize>,
    pub loss: f32,
    pub lr: f64,
}

/// Records every step and epoch.
#[derive(Default)]
pub struct Recorder {
    pub steps: Vec<Step>,
    pub epochs: Vec<EpochMetrics>,
}

impl TrainObserver for Recorder {
    fn batch_end(&mut self, info: &BatchInfo<'_>) {
        self.steps.push(Step {
            epoch: info.epoch,
            batch: info.batch,
            view: info.view,
            indices: info.indices.to_vec(),
            loss: info.loss,
            lr: info.lr,
        });
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        self.epochs.push(*m);
    }
}

/// Every figure of a report that must be reproducible, as bits (times left out).
pub fn report_bits(r: &TrainReport) -> Vec<u64> {
    let mut out = Vec::new();
    for m in &r.epochs {
        out.extend([
            m.epoch as u64,
            m.train_loss.to_bits(),
            m.valid.top1.to_bits(),
            m.valid.top5.to_bits(),
            m.valid.loss.to_bits(),
            m.valid.count as u64,
            m.lr.to_bits(),
        ]);
    }
    for (_, _, values) in &r.head {
        out.extend(values.iter().map(|x| x.to_bits() as u64));
    }
    out
}

/// The cache file a report's frozen phase used, and whether it was built.
pub fn feature_file(r: &TrainReport) -> (PathBuf, bool) {
    match r.features.as_ref().expect("a frozen phase") {
        FeatureOrigin::Built(p) => (p.clone(), true),
        FeatureOrigin::CacheHit(p) => (p.clone(), false),
        FeatureOrigin::Computed => panic!("features were not cached"),
    }
}

/// Files in `dir` whose name contains `part`.
pub fn files_containing(dir: &Path, part: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().contains(part))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
