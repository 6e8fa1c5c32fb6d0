//! The frozen-phase feature cache.
//!
//! While the body is frozen with its batch-norm in eval mode
//! (`frozen_bn = "frozen"`) its output for a given input never changes, so
//! the trainer computes the pooled features of every training image (in
//! each augmentation view) and every validation image once, stores them on
//! disk next to the image cache, and trains the head on them: the frozen
//! phase of every later trial with the same key costs no body forward pass.
//! (With fastai's `frozen_bn = "train"` the body's batch-norm normalises
//! with batch statistics and trains, so the features change every step and
//! nothing can be cached.)
//!
//! What is stored is the head's input before any trained layer: the global
//! pooling of the body's feature map ([`Pool`]) — the mean over h×w for the
//! linear head, fastai's `[max, mean]` (2C floats) for fastai's head. Every
//! layer after the pooling trains, the pooling has no parameters, so the
//! pooled vector determines the head's output exactly as the map does, at
//! `h·w/2` times less space (ResNet-50 at 224 px: 4096 instead of
//! 2048 × 7 × 7 floats per image).
//!
//! **Key.** Everything that decides the features: the model, a hash of the
//! body's tensors (pretrained weights or a seeded initialisation, running
//! statistics included), the fingerprints of the train and valid
//! [`ImageSet`]s (source files, image size, preprocessing), the augmentation
//! settings, the seed (augmentation is drawn per seed, view and sample), the
//! number of views, the pooling, and the sizes. The key is written into the file in full
//! and compared on open, and its hash names the file.
//!
//! **Safety.** Files are written to a temporary name, synced and renamed, so
//! a kill mid-write leaves no file under the trusted name. On open the magic,
//! version, key, sizes, exact length, a checksum of the data and the trailer
//! are checked; a file that fails any check (truncated, foreign, corrupt) is
//! logged and rebuilt, never trusted.
//!
//! Layout (little-endian): `PTUNEFEA`, version u32, key length u32, the key
//! text, `views × n_train × dim` f32 train features (view-major, then sample
//! index), `n_valid × dim` f32 valid features, a u64 checksum of the data,
//! `PTFEAEND`.

use std::io::Write;
use std::path::{Path, PathBuf};

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use poly_loss::nn::pretrained::{visit_model, ModelItem};
use poly_loss::nn::resnet::{ImageClassifier, Images};

use super::head::Pool;
use poly_loss::nn::VisionDevice;

use super::error::TrainError;
use crate::data::{Augment, ImageSet};
use crate::hash::FastHash;

const MAGIC: &[u8; 8] = b"PTUNEFEA";
const TRAILER: &[u8; 8] = b"PTFEAEND";
const VERSION: u32 = 2;
/// File extension of feature cache files.
pub const FEATURE_EXT: &str = "f32feat";

/// A hash of every tensor of `model` except those under `skip_prefix`
/// (names, shapes and values, running statistics included).
pub fn tensor_hash<M, D>(model: &M, skip_prefix: &str) -> u64
where
    M: TensorCollection<f32, D>,
    D: Device<f32>,
{
    let mut h = FastHash::new();
    visit_model(model, |item| match item {
        ModelItem::Tensor {
            name,
            shape,
            values,
        } => {
            if !name.starts_with(skip_prefix) {
                h.bytes(name.as_bytes());
                for d in shape {
                    h.u64(d as u64);
                }
                h.f32s(&values());
            }
        }
        ModelItem::Scalar { name, value } => {
            h.bytes(name.as_bytes());
            h.u64(value.map_or(0, f64::to_bits));
        }
    });
    h.finish()
}

/// Everything that decides the cached features (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureKey {
    /// Model name.
    pub model: String,
    /// [`tensor_hash`] of the body.
    pub body: u64,
    /// [`ImageSet::fingerprint`] of the training split.
    pub train: u64,
    /// [`ImageSet::fingerprint`] of the validation split.
    pub valid: u64,
    /// Image side.
    pub image_size: u32,
    /// The augmentation settings, as canonical JSON.
    pub augment: String,
    /// The run's seed (augmentation draws).
    pub seed: u64,
    /// Augmentation views of the training split.
    pub views: u64,
    /// The pooling ([`Pool::name`]).
    pub pool: String,
    /// Feature width.
    pub dim: usize,
    /// Training images.
    pub n_train: usize,
    /// Validation images.
    pub n_valid: usize,
}

impl FeatureKey {
    /// The key as the text stored in the file.
    pub fn text(&self) -> String {
        format!(
            "polytune frozen-body features v{VERSION}\nmodel={}\nbody={:016x}\ntrain={:016x}\nvalid={:016x}\nimage_size={}\naugment={}\nseed={}\nviews={}\npool={}\ndim={}\nn_train={}\nn_valid={}\n",
            self.model,
            self.body,
            self.train,
            self.valid,
            self.image_size,
            self.augment,
            self.seed,
            self.views,
            self.pool,
            self.dim,
            self.n_train,
            self.n_valid
        )
    }

    /// The cache file's name: `features-<model>-<hash of the key>.f32feat`.
    pub fn file_name(&self) -> String {
        let mut h = FastHash::new();
        h.bytes(self.text().as_bytes());
        format!("features-{}-{:016x}.{FEATURE_EXT}", self.model, h.finish())
    }

    fn train_len(&self) -> usize {
        self.views as usize * self.n_train * self.dim
    }

    fn valid_len(&self) -> usize {
        self.n_valid * self.dim
    }
}

/// Where a [`FrozenFeatures`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureOrigin {
    /// Read from a valid cache file.
    CacheHit(PathBuf),
    /// Computed and written to this cache file.
    Built(PathBuf),
    /// Computed, not stored (caching off, or the write failed).
    Computed,
}

/// The frozen body's features of the training split (per view) and the
/// validation split.
#[derive(Debug, Clone)]
pub struct FrozenFeatures {
    key: FeatureKey,
    train: Vec<f32>,
    valid: Vec<f32>,
    origin: FeatureOrigin,
}

impl FrozenFeatures {
    /// Wraps computed features (lengths must match the key).
    pub fn new(key: FeatureKey, train: Vec<f32>, valid: Vec<f32>) -> Self {
        assert_eq!(train.len(), key.train_len(), "train features");
        assert_eq!(valid.len(), key.valid_len(), "valid features");
        FrozenFeatures {
            key,
            train,
            valid,
            origin: FeatureOrigin::Computed,
        }
    }

    /// The key.
    pub fn key(&self) -> &FeatureKey {
        &self.key
    }

    /// Where these came from.
    pub fn origin(&self) -> &FeatureOrigin {
        &self.origin
    }

    /// Features of training sample `index` in augmentation view `view`.
    pub fn train(&self, view: u64, index: usize) -> &[f32] {
        let d = self.key.dim;
        let at = (view as usize * self.key.n_train + index) * d;
        &self.train[at..at + d]
    }

    /// Features of validation sample `index`.
    pub fn valid(&self, index: usize) -> &[f32] {
        let d = self.key.dim;
        &self.valid[index * d..(index + 1) * d]
    }

    /// All validation features, sample-major.
    pub fn valid_all(&self) -> &[f32] {
        &self.valid
    }

    /// Opens the cache file for `key` in `dir` if it is valid; otherwise runs
    /// `build`, writes the result (atomically) and returns it. A write
    /// failure is logged and the features are used anyway.
    pub fn open_or_build(
        dir: &Path,
        key: &FeatureKey,
        build: impl FnOnce() -> Result<FrozenFeatures, TrainError>,
    ) -> Result<FrozenFeatures, TrainError> {
        let path = dir.join(key.file_name());
        match Self::read(&path, key) {
            Ok(Some(f)) => {
                tracing::info!("frozen-body features: cache hit {}", path.display());
                return Ok(f);
            }
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(
                    "{}: invalid feature cache ({why}); rebuilding it",
                    path.display()
                );
            }
        }
        let mut f = build()?;
        match f.write(&path) {
            Ok(()) => {
                tracing::info!("frozen-body features: wrote {}", path.display());
                f.origin = FeatureOrigin::Built(path);
            }
            Err(e) => {
                tracing::warn!(
                    "{}: could not write the feature cache ({e}); continuing without it",
                    path.display()
                );
            }
        }
        Ok(f)
    }

    /// Reads and validates `path` against `key`: `Ok(None)` when there is no
    /// file, `Err(reason)` when it exists but cannot be trusted.
    pub fn read(path: &Path, key: &FeatureKey) -> Result<Option<FrozenFeatures>, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let text = key.text();
        let head = 16 + text.len();
        let data = 4 * (key.train_len() + key.valid_len());
        let want = head + data + 16;
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err("not a polytune feature cache (bad magic)".into());
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("format version {version}, expected {VERSION}"));
        }
        let key_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        if bytes.get(16..16 + key_len) != Some(text.as_bytes()) {
            return Err(
                "made for another model, data set, seed or augmentation (key differs)".into(),
            );
        }
        if bytes.len() != want {
            return Err(format!(
                "{} bytes, expected {want} (truncated or damaged)",
                bytes.len()
            ));
        }
        if &bytes[want - 8..] != TRAILER {
            return Err("bad trailer".into());
        }
        let body = &bytes[head..head + data];
        let stored = u64::from_le_bytes(bytes[head + data..want - 8].try_into().expect("8 bytes"));
        let mut h = FastHash::new();
        h.bytes(body);
        if h.finish() != stored {
            return Err("checksum mismatch (damaged)".into());
        }
        let floats: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let (train, valid) = floats.split_at(key.train_len());
        Ok(Some(FrozenFeatures {
            key: key.clone(),
            train: train.to_vec(),
            valid: valid.to_vec(),
            origin: FeatureOrigin::CacheHit(path.to_path_buf()),
        }))
    }

    /// Writes the cache file: a temporary name in the same directory, synced,
    /// then renamed over `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dir.join(format!(
            "{}.tmp.{}.{nanos}",
            path.file_name()
                .map_or("features".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let result = (|| {
            let text = self.key.text();
            let mut body = Vec::with_capacity(4 * (self.train.len() + self.valid.len()));
            for x in self.train.iter().chain(&self.valid) {
                body.extend_from_slice(&x.to_le_bytes());
            }
            let mut h = FastHash::new();
            h.bytes(&body);
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            f.write_all(MAGIC)?;
            f.write_all(&VERSION.to_le_bytes())?;
            f.write_all(&(text.len() as u32).to_le_bytes())?;
            f.write_all(text.as_bytes())?;
            f.write_all(&body)?;
            f.write_all(&h.finish().to_le_bytes())?;
            f.write_all(TRAILER)?;
            let f = f.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// The body's features (eval-mode batch-norm, no tape) of `indices` of
/// `set`, augmented with `augment` if given, in batches of `batch`, pooled
/// with `pool`: `indices.len() × pool.width(F)` floats, sample-major.
pub fn extract_features<M, D>(
    model: &M,
    dev: &D,
    set: &ImageSet,
    indices: &[usize],
    augment: Option<&Augment>,
    batch: usize,
    pool: Pool,
) -> Result<Vec<f32>, TrainError>
where
    D: VisionDevice,
    M: ImageClassifier<D>,
{
    let dim = pool.width(M::FeatureDim::SIZE);
    let mut out = Vec::with_capacity(indices.len() * dim);
    for chunk in indices.chunks(batch.max(1)) {
        let mut b = set.assemble(chunk, augment)?;
        let x: Images<D> = images_tensor(dev, &mut b)?;
        let map = model.try_forward_body_eval(x).map_err(TrainError::device)?;
        let f = pool.try_apply(map).map_err(TrainError::device)?;
        out.extend(f.as_vec());
    }
    Ok(out)
}

/// A batch's pixels as an `(n, 3, s, s)` tensor (moved out of the batch).
pub(crate) fn images_tensor<D: Device<f32>>(
    dev: &D,
    b: &mut crate::data::Batch,
) -> Result<Images<D>, TrainError> {
    let [n, c, h, w] = b.shape();
    debug_assert_eq!(c, 3);
    dev.try_tensor_from_vec(std::mem::take(&mut b.images), (n, Const::<3>, h, w))
        .map_err(TrainError::device)
}
