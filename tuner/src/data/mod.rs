//! The data pipeline: data sets, decoding, the preprocessing cache,
//! augmentation and batches.
//!
//! Sources ([`SourceKind`]): the embedded UCI digits (default), Oxford
//! Flowers-102 in its official layout, the seed's CSV manifest, and a
//! folder-per-class tree. Images are decoded once and stored at the item
//! size (`[data] item_size`: short side resized to it for fastai's
//! `Resize(method=Crop)`, or zero-padded to a square of that side for
//! `Pad`) as u8 in a memory-mapped cache file per (source, split, item
//! size, method) that every later trial and run reuses. Each draw cuts the
//! square item from the cached image (random in training, centred in
//! validation) and resamples it to `image_size` with the seed's batch
//! augmentation ([`augment`]). Batches are normalised NCHW f32 with ImageNet
//! mean/std, in a seeded order, reproducible per (seed, view, sample).
//!
//! ```
//! use polytune::data::{AugmentConfig, BatchPlan, DataConfig, Dataset};
//!
//! let data = Dataset::load(&DataConfig::default())?; // the embedded digits
//! let plan = BatchPlan::train(32, /* seed */ 7, /* epoch */ 0, AugmentConfig::default());
//! for batch in data.train().batches(&plan)? {
//!     assert_eq!(batch.images.len(), batch.len() * 3 * 8 * 8);
//!     assert!(batch.labels.iter().all(|&l| l < data.num_classes()));
//! }
//! # Ok::<(), polytune::data::DataError>(())
//! ```

pub mod augment;
pub mod batch;
pub mod cache;
pub mod config;
pub mod dataset;
pub mod decode;
pub mod digits;
pub mod error;
pub mod flowers;
pub mod folders;
pub mod images;
pub mod manifest;
pub mod mat;
pub mod source;

pub use augment::{AugmentConfig, AugmentParams, AugmentScratch, CachedImage};
pub use batch::{epoch_order, Augment, Batch, BatchPlan, Batches, IMAGENET_MEAN, IMAGENET_STD};
pub use config::{DataConfig, SourceKind};
pub use dataset::{Dataset, Evaluation};
pub use error::DataError;
pub use images::{ImageSet, Origin};
pub use source::{Item, SourceIndex, Split};
