//! Batches for the trainer: normalised NCHW f32 images with labels, in a
//! seeded epoch order, optionally augmented.
//!
//! Determinism: the order of epoch `e` is a Fisher–Yates shuffle from the
//! stream (seed, "order", e); the augmentation of sample `i` comes from the
//! stream (seed, "augment", view, i) where `view = e` (a fresh augmentation
//! every epoch) or `view = e mod V` with `views = Some(V)` (a fixed set of V
//! augmentation views per sample, which a frozen-body feature cache can
//! compute once). Nothing depends on batch size, thread count or the loss,
//! so two trials that differ only in ε see identical batches.

use rayon::prelude::*;

use super::augment::{augment_into, AugmentConfig, AugmentParams, AugmentScratch, CachedImage};
use super::error::{DataError, Result};
use super::images::ImageSet;
use crate::rng::{names, Stream};

/// ImageNet channel means (RGB), applied after scaling to [0, 1].
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// One batch: `images` is `[len, 3, size, size]` row-major (NCHW) at the
/// set's [`ImageSet::image_size`], normalised with ImageNet mean/std.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Normalised pixels, NCHW.
    pub images: Vec<f32>,
    /// Class index of each sample.
    pub labels: Vec<usize>,
    /// Sample index (into the [`ImageSet`]) of each sample.
    pub indices: Vec<usize>,
    /// Side of the square images.
    pub image_size: usize,
    /// The augmentation view used (`None` when not augmented).
    pub view: Option<u64>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[len, 3, size, size]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 3, self.image_size, self.image_size]
    }
}

/// Augmentation of a batch: settings, the trial's seed and the view.
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    /// What to draw.
    pub config: AugmentConfig,
    /// The trial's seed.
    pub seed: u64,
    /// Augmentation view (see the module docs).
    pub view: u64,
}

impl Augment {
    /// The parameters drawn for sample `index`.
    pub fn params(&self, index: usize) -> AugmentParams {
        AugmentParams::draw(&self.config, self.seed, self.view, index as u64)
    }
}

/// How to cut a split into batches for one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// The trial's seed (order and augmentation).
    pub seed: u64,
    /// Epoch number (0-based).
    pub epoch: u64,
    /// Shuffle the order (else sample order).
    pub shuffle: bool,
    /// Drop a last, partial batch (as fastai's training loader does) —
    /// unless it is the only batch.
    pub drop_last: bool,
    /// Augment with these settings (`None`: plain images).
    pub augment: Option<AugmentConfig>,
    /// `Some(V)`: use augmentation view `epoch % V`; `None`: view = epoch.
    pub views: Option<u64>,
}

impl BatchPlan {
    /// Training: shuffled, augmented, partial last batch dropped.
    pub fn train(batch_size: usize, seed: u64, epoch: u64, augment: AugmentConfig) -> Self {
        BatchPlan {
            batch_size,
            seed,
            epoch,
            shuffle: true,
            drop_last: true,
            augment: Some(augment),
            views: None,
        }
    }

    /// Evaluation: sample order, no augmentation, every sample once.
    pub fn eval(batch_size: usize) -> Self {
        BatchPlan {
            batch_size,
            seed: 0,
            epoch: 0,
            shuffle: false,
            drop_last: false,
            augment: None,
            views: None,
        }
    }

    /// The augmentation view of this epoch.
    pub fn view(&self) -> u64 {
        match self.views {
            Some(v) if v > 0 => self.epoch % v,
            _ => self.epoch,
        }
    }
}

/// The order of `len` samples in `epoch` of a run seeded with `seed`.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    Stream::new(names::ORDER, seed, &[epoch]).shuffle(&mut order);
    order
}

/// Normalisation table: `lut[c][v] = (v/255 - mean[c]) / std[c]`.
struct Lut([[f32; 256]; 3]);

impl Lut {
    fn imagenet() -> &'static Lut {
        static LUT: std::sync::OnceLock<Lut> = std::sync::OnceLock::new();
        LUT.get_or_init(|| {
            let mut t = [[0.0f32; 256]; 3];
            for (c, row) in t.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                }
            }
            Lut(t)
        })
    }
}

/// Writes the normalised CHW version of the HWC u8 image `src` to `out`.
pub fn normalize_into(src: &[u8], out: &mut [f32]) {
    let n = src.len() / 3;
    assert_eq!(out.len(), src.len(), "output size");
    let lut = &Lut::imagenet().0;
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (p, px) in src.chunks_exact(3).enumerate() {
        r[p] = lut[0][px[0] as usize];
        g[p] = lut[1][px[1] as usize];
        b[p] = lut[2][px[2] as usize];
    }
}

impl ImageSet {
    /// Sample `index` as the batch stage reads it.
    pub fn cached_image(&self, index: usize) -> CachedImage<'_> {
        CachedImage {
            pixels: self.image(index),
            size: self.cached_size(index),
            orig: self.original_size(index),
            item: self.item_size(),
            resize: self.resize(),
        }
    }

    /// Writes sample `index` (normalised CHW, `3 * image_size²` floats) to
    /// `out`: augmented with `augment`, or without it fastai's validation
    /// path (the centre item resampled to `image_size`; a plain copy when
    /// the cached image is already the `image_size`² item).
    pub fn write_sample(
        &self,
        index: usize,
        augment: Option<&Augment>,
        scratch: &mut AugmentScratch,
        out: &mut [f32],
    ) {
        let size = self.image_size() as usize;
        let img = self.cached_image(index);
        let plain =
            img.size == (self.item_size(), self.item_size()) && img.item == self.image_size();
        let params = match augment {
            None if plain => return normalize_into(img.pixels, out),
            None => AugmentParams::validation(),
            Some(a) => a.params(index),
        };
        augment_into(&params, &img, size, scratch, out);
        let n = size * size;
        // Same arithmetic as the table, so p = 0 is bit-identical.
        for (c, plane) in out.chunks_exact_mut(n).enumerate() {
            let (m, s) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
            for v in plane {
                *v = (*v - m) / s;
            }
        }
    }

    /// Assembles the samples `indices` (in that order) into a batch.
    ///
    /// ```
    /// use polytune::data::ImageSet;
    /// let set = ImageSet::from_pixels(1, vec![0, 128, 255, 255, 255, 255], vec![3, 4]).unwrap();
    /// let b = set.assemble(&[1, 0], None).unwrap();
    /// assert_eq!(b.labels, vec![4, 3]);
    /// assert_eq!(b.shape(), [2, 3, 1, 1]);
    /// assert!((b.images[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
    /// ```
    pub fn assemble(&self, indices: &[usize], augment: Option<&Augment>) -> Result<Batch> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::Batch(format!(
                "sample index {bad} out of range for a split of {} images",
                self.len()
            )));
        }
        let size = self.image_size() as usize;
        let per = 3 * size * size;
        let mut images = vec![0.0f32; indices.len() * per];
        // Small images: give each rayon task several samples.
        let min_len = (16_384 / per).max(1);
        images
            .par_chunks_mut(per)
            .zip(indices.par_iter())
            .with_min_len(min_len)
            .for_each_init(AugmentScratch::default, |scratch, (out, &i)| {
                self.write_sample(i, augment, scratch, out);
            });
        Ok(Batch {
            images,
            labels: indices.iter().map(|&i| self.label(i)).collect(),
            indices: indices.to_vec(),
            image_size: size,
            view: augment.map(|a| a.view),
        })
    }

    /// The batches of one epoch.
    ///
    /// ```
    /// use polytune::data::{AugmentConfig, BatchPlan, ImageSet};
    /// let set = ImageSet::from_pixels(2, vec![7u8; 5 * 12], vec![0, 1, 0, 1, 0]).unwrap();
    /// let plan = BatchPlan::train(2, 42, 0, AugmentConfig::default());
    /// let sizes: Vec<usize> = set.batches(&plan).unwrap().map(|b| b.len()).collect();
    /// assert_eq!(sizes, vec![2, 2]); // the partial last batch is dropped
    /// ```
    pub fn batches(&self, plan: &BatchPlan) -> Result<Batches<'_>> {
        if plan.batch_size == 0 {
            return Err(DataError::Batch("batch size must be > 0".into()));
        }
        if plan.views == Some(0) {
            return Err(DataError::Batch("augmentation views must be > 0".into()));
        }
        let order = if plan.shuffle {
            epoch_order(self.len(), plan.seed, plan.epoch)
        } else {
            (0..self.len()).collect()
        };
        let full = order.len() / plan.batch_size;
        let count = if plan.drop_last && full > 0 {
            full
        } else {
            order.len().div_ceil(plan.batch_size)
        };
        Ok(Batches {
            set: self,
            order,
            batch_size: plan.batch_size,
            next: 0,
            count,
            augment: plan.augment.clone().map(|config| Augment {
                config,
                seed: plan.seed,
                view: plan.view(),
            }),
        })
    }
}

/// Iterator over the batches of one epoch (see [`ImageSet::batches`]).
#[derive(Debug)]
pub struct Batches<'a> {
    set: &'a ImageSet,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
    count: usize,
    augment: Option<Augment>,
}

impl Batches<'_> {
    /// The sample order of this epoch (all samples, including any dropped
    /// at the end).
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.count {
            return None;
        }
        let start = self.next * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        self.next += 1;
        Some(
            self.set
                .assemble(&self.order[start..end], self.augment.as_ref())
                .expect("indices come from the set"),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}
