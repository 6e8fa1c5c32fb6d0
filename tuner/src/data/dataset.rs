//! [`Dataset`]: a configured data source with its train and valid images
//! loaded (through the cache) and its test images on request.

use super::cache::{load_split, CacheRequest};
use super::config::{DataConfig, SourceKind};
use super::digits;
use super::error::{DataError, Result};
use super::images::ImageSet;
use super::source::{SourceIndex, Split};
use super::{flowers, folders, manifest};

/// A loaded data set.
///
/// ```
/// use polytune::data::{BatchPlan, DataConfig, Dataset};
/// let data = Dataset::load(&DataConfig::default()).unwrap(); // embedded digits
/// assert_eq!(data.num_classes(), 10);
/// assert_eq!((data.train().len(), data.valid().len()), (1438, 359));
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
        config.validate()?;
        let size = config.image_size();
        if config.source == SourceKind::Digits {
            let (train, valid) = digits::load(size, config.valid_fraction, config.split_seed);
            return Ok(Dataset {
                config: config.clone(),
                index: None,
                classes: (0..digits::NUM_CLASSES).map(|k| k.to_string()).collect(),
                train,
                valid,
            });
        }
        let index = open_index(config)?;
        let train = load_index_split(config, &index, Split::Train)?;
        let valid = load_index_split(config, &index, Split::Valid)?;
        Ok(Dataset {
            config: config.clone(),
            classes: index.classes.clone(),
            index: Some(index),
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
        image_size: config.image_size(),
        skip_corrupt: config.skip_corrupt,
        num_classes: index.classes.len(),
        threads: config.threads,
    };
    load_split(&req, items)
}
