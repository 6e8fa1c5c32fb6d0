//! The embedded default data set: the UCI optical handwritten digits
//! (1797 greyscale 8×8 images with values 0..=16, classes 0–9) as shipped by
//! smartcore's `datasets` feature — real data that needs no download.
//!
//! Images are scaled to u8 (`round(v·255/16)`), replicated to three
//! channels so every model takes RGB input, and resized to the configured
//! size with the same pad-and-resize as file sources (a no-op at the native
//! 8 px). The train/valid split is stratified and fixed by `split_seed`:
//! each class's indices are shuffled with their own stream and
//! `round(valid_fraction · n_class)` of them go to validation. With the
//! defaults (`valid_fraction = 0.2`, seed [`DEFAULT_SPLIT_SEED`]) that is
//! **1438 train / 359 valid** images (valid per class: 36 36 35 37 36 36 36
//! 36 35 36). There is no test split.

use rayon::prelude::*;

use super::decode::PadResizer;
use super::images::ImageSet;
use crate::rng::{names, Stream};

/// Side of the digits images as shipped.
pub const NATIVE_SIZE: u32 = 8;
/// Number of images.
pub const NUM_SAMPLES: usize = 1797;
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// Default seed of the train/valid split.
pub const DEFAULT_SPLIT_SEED: u64 = 20220425;

/// The raw set: 8×8 u8 grey images (row-major, `NUM_SAMPLES * 64` bytes)
/// and labels.
pub fn raw() -> (Vec<u8>, Vec<usize>) {
    let ds = smartcore::dataset::digits::load_dataset();
    assert_eq!(ds.num_features, 64, "smartcore digits layout");
    let grey = ds
        .data
        .iter()
        .map(|&v| (v.clamp(0.0, 16.0) * 255.0 / 16.0).round() as u8)
        .collect();
    let labels = ds.target.iter().map(|&t| t as usize).collect();
    (grey, labels)
}

/// Stratified split of `labels` into (train, valid) index lists, each in
/// increasing order.
pub fn split_indices(labels: &[usize], valid_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut train = Vec::new();
    let mut valid = Vec::new();
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        Stream::new(names::SPLIT, seed, &[c as u64]).shuffle(&mut idx);
        let n_valid = (valid_fraction * idx.len() as f64).round() as usize;
        valid.extend_from_slice(&idx[..n_valid]);
        train.extend_from_slice(&idx[n_valid..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    (train, valid)
}

/// The digits train and valid sets, cached at `image_size` (the item size:
/// the digits are square, so both resize methods give the same images).
pub fn load(image_size: u32, valid_fraction: f64, seed: u64) -> (ImageSet, ImageSet) {
    let (grey, labels) = raw();
    let (train, valid) = split_indices(&labels, valid_fraction, seed);
    let build = |idx: &[usize]| -> ImageSet {
        let per = 3 * image_size as usize * image_size as usize;
        let mut pixels = vec![0u8; idx.len() * per];
        pixels
            .par_chunks_mut(per)
            .zip(idx.par_iter())
            .for_each_init(PadResizer::new, |rs, (out, &i)| {
                let rgb: Vec<u8> = grey[i * 64..(i + 1) * 64]
                    .iter()
                    .flat_map(|&g| [g, g, g])
                    .collect();
                rs.pad_resize(&rgb, NATIVE_SIZE, NATIVE_SIZE, image_size, out);
            });
        let l = idx.iter().map(|&i| labels[i]).collect();
        ImageSet::from_pixels(image_size, pixels, l).expect("sizes match")
    };
    (build(&train), build(&valid))
}
