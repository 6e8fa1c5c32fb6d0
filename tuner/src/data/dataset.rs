//! [`Dataset`]: a configured data source with its train and valid images
//! loaded (through the cache) and its test images on request.
//!
//! **Held-out data.** A study scores its search on the validation split and
//! confirms its answer on data the search never scored ([`Evaluation`]):
//! the source's test split when it has one (Flowers-102's official `tstid`,
//! a CSV manifest's `test` rows, a `test/` folder); otherwise (the embedded
//! digits, sources without a test split) the validation split is cut in
//! two, stratified by class with the data's `split_seed`: one half stays the
//! validation split, the other half is held out. The cut depends only on
//! the labels and the seed, so every trial and every run sees the same
//! halves.

use super::cache::{load_split, CacheRequest};
use super::config::{DataConfig, SourceKind};
use super::digits;
use super::error::{DataError, Result};
use super::images::ImageSet;
use super::source::{SourceIndex, Split};

/// Which images a trial is scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// The validation split (the search).
    Valid,
    /// The held-out split (the confirmation): the test split, or the
    /// held-out half of the validation split (module docs).
    Holdout,
}

/// Seed tag of the validation/held-out cut (mixed with `split_seed`).
const HOLDOUT_TAG: u64 = 0x4f1d_5eed;
use super::{flowers, folders, manifest};

/// A loaded data set.
///
/// ```
/// use polytune::data::{BatchPlan, DataConfig, Dataset};
/// let data = Dataset::load(&DataConfig::default()).unwrap(); // embedded digits
/// assert_eq!(data.num_classes(), 10);
/// // 359 validation digits, cut in two: 178 score the search, 181 are held out.
/// assert_eq!((data.train().len(), data.valid().len()), (1438, 178));
/// let batch = data.valid().batches(&BatchPlan::eval(64)).unwrap().next().unwrap();
/// assert_eq!(batch.shape(), [64, 3, 8, 8]);
/// ```
#[derive(Debug)]
pub struct Dataset {
    config: DataConfig,
    index: Option<SourceIndex>,
    classes: Vec<String>,
    train: ImageSet,
    valid: ImageSet,
}

impl Dataset {
    /// Validates `config`, reads the source's index (labels, splits,
    /// manifest or folders) and loads the train and valid images, decoding
    /// them into the cache on first use.
    pub fn load(config: &DataConfig) -> Result<Self> {
        Self::load_for(config, Evaluation::Valid)
    }

    /// [`Dataset::load`] with [`Dataset::valid`] being the images `eval`
    /// names: the search's validation images or the held-out ones.
    pub fn load_for(config: &DataConfig, eval: Evaluation) -> Result<Self> {
        config.validate()?;
        let size = config.image_size();
        let (index, classes, train, valid) = if config.source == SourceKind::Digits {
            let (train, valid) =
                digits::load(config.item_size(), config.valid_fraction, config.split_seed);
            let (train, valid) = (train.with_image_size(size)?, valid.with_image_size(size)?);
            let classes = (0..digits::NUM_CLASSES).map(|k| k.to_string()).collect();
            (None, classes, train, valid)
        } else {
            let index = open_index(config)?;
            let train = load_index_split(config, &index, Split::Train)?;
            let has_test = index.items(Split::Test).is_some_and(|t| !t.is_empty());
            if has_test && eval == Evaluation::Holdout {
                let test = load_index_split(config, &index, Split::Test)?;
                let classes = index.classes.clone();
                return Ok(Dataset {
                    config: config.clone(),
                    classes,
                    index: Some(index),
                    train,
                    valid: test,
                });
            }
            let valid = load_index_split(config, &index, Split::Valid)?;
            let classes = index.classes.clone();
            if has_test {
                return Ok(Dataset {
                    config: config.clone(),
                    classes,
                    index: Some(index),
                    train,
                    valid,
                });
            }
            (Some(index), classes, train, valid)
        };
        // No test split: cut the validation split in two.
        let (keep, held) =
            digits::split_indices(valid.labels(), 0.5, config.split_seed ^ HOLDOUT_TAG);
        let valid = valid.subset(match eval {
            Evaluation::Valid => &keep,
            Evaluation::Holdout => &held,
        })?;
        Ok(Dataset {
            config: config.clone(),
            index,
            classes,
            train,
            valid,
        })
    }

    /// The embedded digits set at `image_size` with the default split.
    pub fn digits(image_size: u32) -> Result<Self> {
        Self::load(&DataConfig {
            image_size: Some(image_size),
            ..DataConfig::default()
        })
    }

    /// The configuration this was loaded with.
    pub fn config(&self) -> &DataConfig {
        &self.config
    }

    /// Directory of the preprocessed-image cache; derived caches (e.g. the
    /// trainer's frozen-body features) belong next to the image files,
    /// keyed by [`ImageSet::fingerprint`].
    pub fn cache_dir(&self) -> &std::path::Path {
        &self.config.cache_dir
    }

    /// Which source this is.
    pub fn source(&self) -> SourceKind {
        self.config.source
    }

    /// Number of classes (labels are `0..num_classes()`).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Class names by label.
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    /// Side of the square images.
    pub fn image_size(&self) -> u32 {
        self.config.image_size()
    }

    /// Training images.
    pub fn train(&self) -> &ImageSet {
        &self.train
    }

    /// Validation images.
    pub fn valid(&self) -> &ImageSet {
        &self.valid
    }

    /// The source's index (`None` for the embedded digits).
    pub fn index(&self) -> Option<&SourceIndex> {
        self.index.as_ref()
    }

    /// Whether the source has a test split.
    pub fn has_test(&self) -> bool {
        self.index
            .as_ref()
            .is_some_and(|i| i.items(Split::Test).is_some_and(|t| !t.is_empty()))
    }

    /// Loads the test images (through the cache).
    pub fn load_test(&self) -> Result<ImageSet> {
        let Some(index) = &self.index else {
            return Err(DataError::NoSuchSplit {
                source_kind: self.source().name(),
                split: "test",
            });
        };
        load_index_split(&self.config, index, Split::Test)
    }
}

/// Reads the index of a file-based source (no images are decoded).
pub fn open_index(config: &DataConfig) -> Result<SourceIndex> {
    let path = config.path.as_deref().ok_or_else(|| {
        DataError::config("data.path", "(missing)", "file-based sources need a path")
    })?;
    match config.source {
        SourceKind::Flowers102 => flowers::open(path),
        SourceKind::Csv => manifest::open(path),
        SourceKind::Folders => folders::open(path),
        SourceKind::Digits => Err(DataError::config(
            "data.source",
            "\"digits\"",
            "the digits set is embedded and has no index",
        )),
    }
}

/// Loads one split of an index through the cache.
pub fn load_index_split(
    config: &DataConfig,
    index: &SourceIndex,
    split: Split,
) -> Result<ImageSet> {
    let items = match index.items(split) {
        Some(items) if !items.is_empty() => items,
        _ => {
            return Err(DataError::NoSuchSplit {
                source_kind: index.kind,
                split: split.name(),
            })
        }
    };
    let req = CacheRequest {
        cache_dir: &config.cache_dir,
        kind: index.kind,
        root: &index.root,
        split,
        item_size: config.item_size(),
        resize: config.resize,
        skip_corrupt: config.skip_corrupt,
        num_classes: index.classes.len(),
        threads: config.threads,
    };
    load_split(&req, items)?.with_image_size(config.image_size())
}
