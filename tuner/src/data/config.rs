//! The `[data]` section of a polytune config.
//!
//! ```toml
//! [data]
//! source = "flowers102"          # digits | flowers102 | csv | folders
//! path = "data/flowers102"       # data directory (flowers102, folders) or CSV file (csv)
//! image_size = 224               # side of the batches' square images (default: 8 for digits, 224 otherwise)
//! item_size = 460                # fastai's item Resize: side of the square item (default: image_size)
//! cache_dir = ".polytune-cache"  # preprocessed-image cache
//! skip_corrupt = false           # skip undecodable images with a warning instead of failing
//! threads = 0                    # decoding threads (0 = all cores)
//! resize = "crop"                # fastai's Resize method: crop (the seed's) | pad
//!
//! [data.augment]                 # the seed's augmentation (these are the defaults)
//! p = 0.3                        # p_affine and p_lighting
//! flip = true
//! p_flip = 0.5
//! p_hsv = 0.75                   # Hue / Saturation's own default p
//! min_scale = 0.75               # RandomResizedCropGPU, ratio 1
//! pad_mode = "zeros"             # zeros | reflection
//! max_rotate = 5.0
//! min_zoom = 0.9
//! max_zoom = 1.1
//! max_lighting = 0.5
//! max_warp = 0.05
//! max_hue = 0.3
//! max_saturation = 0.3
//! pad_jitter = true              # random Resize position in training
//! ```
//!
//! The two sizes are fastai's presizing (`item_tfms=Resize(item_size)`,
//! `batch_tfms=aug_transforms(size=image_size, …)`): images are cached at
//! the item size, every draw cuts an `item_size`² item from the cached image
//! (a random square in training, the centre one in validation) and the
//! batch transform resamples it, once, to `image_size`² (see
//! [`super::augment`]). The default `item_size = image_size` keeps a single
//! size (the embedded digits' behaviour and cost are unchanged by it).
//!
//! Unknown keys are rejected by serde (`deny_unknown_fields`); impossible
//! values by [`DataConfig::validate`], naming the key and the value.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::augment::{AugmentConfig, ResizeMode};
use super::error::{DataError, Result};

/// Which data set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The embedded UCI handwritten digits (no files needed).
    #[default]
    Digits,
    /// Oxford Flowers-102 in its official layout.
    Flowers102,
    /// The seed's CSV manifest `ImgPath,ImgLabel,SetType`.
    Csv,
    /// `train/<class>/*.jpg`, `valid/<class>/*.jpg`, optional `test/<class>/*.jpg`.
    Folders,
}

impl SourceKind {
    /// The name used in configs and cache file names.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Digits => "digits",
            SourceKind::Flowers102 => "flowers102",
            SourceKind::Csv => "csv",
            SourceKind::Folders => "folders",
        }
    }
}

/// Largest accepted `image_size` (a 4096² RGB image is 48 MiB).
pub const MAX_IMAGE_SIZE: u32 = 4096;

/// Largest `image_size` for the embedded digits, which are held in memory
/// (1797 images × 3 × 256² bytes = 353 MB; the native size is 8).
pub const MAX_DIGITS_IMAGE_SIZE: u32 = 256;
/// Largest `threads`.
pub const MAX_THREADS: usize = 4096;

/// The `[data]` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Which data set.
    #[serde(default)]
    pub source: SourceKind,
    /// Data directory (flowers102, folders) or manifest file (csv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Side of the batches' square images; default 8 for digits (native),
    /// 224 otherwise; 1..=4096 (digits: 1..=256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u32>,
    /// Side of the square item the images are cached for and cut to before
    /// the batch transform (fastai's `item_tfms=Resize(item_size)`); default
    /// `image_size`; 1..=4096 (digits: 1..=256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_size: Option<u32>,
    /// Directory of the preprocessed-image cache.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// Skip undecodable images (counted, with a warning) instead of failing.
    #[serde(default)]
    pub skip_corrupt: bool,
    /// Decoding threads; 0 uses all cores; at most 4096.
    #[serde(default)]
    pub threads: usize,
    /// Fraction of the digits set held out for validation (digits only).
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    /// Seed of the digits train/valid split (digits only; fixed by default
    /// so every trial validates on the same images).
    #[serde(default = "default_split_seed")]
    pub split_seed: u64,
    /// How images are made square: fastai's `Resize` `crop` (the seed's:
    /// the square of side min(w, h), at a random position in training,
    /// centred in validation) or `pad` (the whole image, zero-padded).
    #[serde(default)]
    pub resize: ResizeMode,
    /// Augmentation of training batches.
    #[serde(default)]
    pub augment: AugmentConfig,
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from(".polytune-cache")
}

fn default_valid_fraction() -> f64 {
    0.2
}

fn default_split_seed() -> u64 {
    super::digits::DEFAULT_SPLIT_SEED
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: SourceKind::Digits,
            path: None,
            image_size: None,
            item_size: None,
            cache_dir: default_cache_dir(),
            skip_corrupt: false,
            threads: 0,
            valid_fraction: default_valid_fraction(),
            split_seed: default_split_seed(),
            resize: ResizeMode::default(),
            augment: AugmentConfig::default(),
        }
    }
}

impl DataConfig {
    /// A config for `source` at `path`, other settings at their defaults.
    pub fn new(source: SourceKind, path: Option<PathBuf>) -> Self {
        DataConfig {
            source,
            path,
            ..Default::default()
        }
    }

    /// The image size in effect (the default depends on the source).
    pub fn image_size(&self) -> u32 {
        self.image_size.unwrap_or(match self.source {
            SourceKind::Digits => super::digits::NATIVE_SIZE,
            _ => 224,
        })
    }

    /// The item size in effect (`image_size` unless set).
    ///
    /// ```
    /// use polytune::data::DataConfig;
    /// let cfg = DataConfig::from_toml("source = \"digits\"\nimage_size = 16").unwrap();
    /// assert_eq!(cfg.item_size(), 16);
    /// let cfg = DataConfig::from_toml("image_size = 16\nitem_size = 24").unwrap();
    /// assert_eq!((cfg.image_size(), cfg.item_size()), (16, 24));
    /// ```
    pub fn item_size(&self) -> u32 {
        self.item_size.unwrap_or_else(|| self.image_size())
    }

    /// The training augmentation.
    pub fn augment_config(&self) -> AugmentConfig {
        self.augment.clone()
    }

    /// Parses the *contents* of a `[data]` table (as it would appear under
    /// the header) and validates it. Handy for tests and tools; a full
    /// config embeds [`DataConfig`] as its `data` field instead.
    ///
    /// ```
    /// use polytune::data::{DataConfig, SourceKind};
    /// let cfg = DataConfig::from_toml("source = \"digits\"\nimage_size = 16").unwrap();
    /// assert_eq!((cfg.source, cfg.image_size()), (SourceKind::Digits, 16));
    /// assert!(DataConfig::from_toml("image_sise = 16").is_err());
    /// ```
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: DataConfig = toml::from_str(text).map_err(|e| DataError::Config {
            key: "data".into(),
            value: "(toml)".into(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values serde cannot: required paths, ranges, zoom order.
    pub fn validate(&self) -> Result<()> {
        match (self.source, &self.path) {
            (SourceKind::Digits, Some(p)) => {
                tracing::warn!(
                    "data.path = {:?} is ignored: the digits set is embedded",
                    p.display().to_string()
                );
            }
            (SourceKind::Digits, None) => {}
            (kind, None) => {
                return Err(DataError::config(
                    "data.path",
                    "(missing)",
                    format!(
                        "source \"{}\" needs a path ({})",
                        kind.name(),
                        match kind {
                            SourceKind::Csv => "the CSV manifest",
                            _ => "the data directory",
                        }
                    ),
                ));
            }
            (_, Some(p)) if p.as_os_str().is_empty() => {
                return Err(DataError::config("data.path", "\"\"", "must not be empty"));
            }
            _ => {}
        }
        for (key, size) in [
            ("data.image_size", self.image_size),
            ("data.item_size", self.item_size),
        ] {
            let Some(s) = size else { continue };
            if s == 0 || s > MAX_IMAGE_SIZE {
                return Err(DataError::config(
                    key,
                    s,
                    format!("must be in 1..={MAX_IMAGE_SIZE}"),
                ));
            }
            if self.source == SourceKind::Digits && s > MAX_DIGITS_IMAGE_SIZE {
                return Err(DataError::config(
                    key,
                    s,
                    format!(
                        "must be in 1..={MAX_DIGITS_IMAGE_SIZE} for the embedded digits (8x8 images held in memory)"
                    ),
                ));
            }
        }
        if self.threads > MAX_THREADS {
            return Err(DataError::config(
                "data.threads",
                self.threads,
                format!("must be in 0..={MAX_THREADS}"),
            ));
        }
        if self.cache_dir.as_os_str().is_empty() {
            return Err(DataError::config(
                "data.cache_dir",
                "\"\"",
                "must not be empty",
            ));
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return Err(DataError::config(
                "data.valid_fraction",
                self.valid_fraction,
                "must be in (0, 1)",
            ));
        }
        self.augment.validate("data.augment")
    }

    /// Resolves relative `path` and `cache_dir` against `base` (e.g. the
    /// directory of the config file).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &self.path {
            if p.is_relative() {
                self.path = Some(base.join(p));
            }
        }
        if self.cache_dir.is_relative() {
            self.cache_dir = base.join(&self.cache_dir);
        }
    }
}
