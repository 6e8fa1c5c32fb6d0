//! The seed's data augmentation, fastai-style, on cached u8 images.
//!
//! What the seed's `Resize(460)` + `aug_transforms(size=224,
//! min_scale=0.75, …, p_affine=0.3, p_lighting=0.3, pad_mode="zeros")` +
//! `Hue(0.3)` + `Saturation(0.3)` do to one training image, each transform
//! applied with its probability and its magnitude drawn as fastai draws it
//! (`fastai/vision/augment.py`):
//!
//! | transform  | fastai draw (when applied)                             | here            |
//! |------------|--------------------------------------------------------|-----------------|
//! | item       | `Resize(item_size, method=Crop)`: the square of side min(w, h) at a random position (training; centred in validation), resized to `item_size`; `Pad`: the image in its zero-padded square | `[data] item_size`, `resize`, `pad_jitter` |
//! | crop       | `RandomResizedCropGPU(ratio=(1,1))`: a square of area U(min_scale, 1) at a random place (training only) | `min_scale` (0.75) |
//! | flip       | mirror left–right, p = 0.5 (`Flip`'s own)              | `flip`, `p_flip` |
//! | warp       | perspective, corners moved by U(−w, w) in x and in y (each axis its own coin) | `max_warp` (0.05) |
//! | rotate     | θ ~ U(−5°, 5°)                                          | `max_rotate`    |
//! | zoom       | z ~ U(0.9, 1.1), centre ~ U(0,1)²                       | `min_zoom`, `max_zoom` |
//! | brightness | b ~ U(0.5(1−l), 0.5(1+l)); logit(x) += logit(b)         | `max_lighting` (0.5) |
//! | contrast   | c = exp U(ln(1−l), −ln(1−l)); logit(x) *= c              | `max_lighting`  |
//! | saturation | s = exp U(ln(1−m), −ln(1−m)); in logit space, lerp to grey by s; p = 0.75 (`Saturation`'s default) | `max_saturation` (0.3), `p_hsv` |
//! | hue        | h += exp U(ln(1−m), −ln(1−m)), mod 1 (a shift in [−0.3, +0.43] turns for m = 0.3); p = 0.75 (`Hue`'s default) | `max_hue` (0.3), `p_hsv` |
//! | pad jitter | the training split's `Resize` places its crop (or the image in its padded square) at a random position (always, not with `p`) | `pad_jitter` |
//!
//! Rotation, zoom and warp are applied with `p` (the seed's `p_affine`),
//! brightness and contrast with `p` too (its `p_lighting`; both 0.3). The
//! seed passes only the magnitudes to `Hue` and `Saturation`, so their own
//! default p = 0.75 applies, not 0.3.
//!
//! **Two stages, as fastai's presizing.** The item stage is fastai's item
//! transform `Resize(item_size)`: the cache holds each image with its short
//! side resized to `item_size` ([`super::decode`]), and a draw cuts the
//! `item_size`² item out of it at `pad_pct` of the free length
//! ([`item_origin`]: `int(pct·(long − item_size))`, fastai's
//! `int(pct·(w − side))` at the item resolution); validation takes
//! `pct = 0.5`, the centre. With `resize = "pad"` the cached image is the
//! zero-padded square at `item_size` and the draw moves the image inside it
//! (`pad_jitter`). The batch stage is then one bilinear resample
//! (`align_corners=True`) from the item to `image_size`²: the output pixel
//! `v` is mapped through the random resized crop (`u' = c + r·v`), the
//! affine (flip·rotate·zoom) and the perspective warp into the item's
//! [−1, 1]², then into cached pixels (zeros or reflection outside the
//! item); then the lighting transforms in logit space, then hue — the order
//! of fastai's batch pipeline (affine and crop: order 30; the merged
//! brightness/contrast/saturation `LightingTfm`, then `Hue`: order 40).
//!
//! fastai's `_grid_sample` shrinks its input with `F.interpolate(mode=
//! 'area')` first when the crop would be downsampled more than 2× (a crop
//! side above 2·`image_size`: the seed's 460 px validation item becomes
//! 448 px before its 224 px sample, and so do training crops of 449–460
//! px, about a fifth of the draws); so does this ([`area_side`]): the
//! crop's pixels are sampled through the composed map, area-averaged, then
//! sampled bilinearly to `image_size`.
//!
//! Where this is not fastai's arithmetic: fastai resamples the item twice
//! in training (the affine at `item_size`, then the crop to `image_size`);
//! here the maps are composed into one sample (two, with the area step),
//! and the crop's window is continuous where fastai rounds it to whole
//! pixels. And `RandomResizedCropGPU` draws one crop per batch; here each
//! sample draws its own, so a sample's augmentation does not depend on the
//! batch it lands in.
//!
//! Reproducibility: the parameters of sample `index` in augmentation view
//! `view` come from their own random stream keyed by (seed, view, index), and
//! every draw is made whether or not its transform is applied, so the result
//! does not depend on batch composition, thread count, or on the other
//! probabilities. With `p = 0` and `pad_jitter = false` the output equals the
//! input exactly.

use serde::{Deserialize, Serialize};

use super::decode::PadGeometry;
use super::error::{DataError, Result};
use crate::rng::{names, Stream};

/// How an image becomes a square (`[data] resize`): fastai's
/// `ResizeMethod.Crop` (the seed's `Resize(460)`) or `ResizeMethod.Pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// The square of side min(w, h): at a random position in training
    /// (`pad_jitter`), centred in validation.
    #[default]
    Crop,
    /// The whole image in its zero-padded square (at a random position in
    /// training with `pad_jitter`).
    Pad,
}

/// What the geometric transforms read outside the `Resize` output
/// (`pad_mode` of `aug_transforms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadMode {
    /// Zeros (black), the seed's `pad_mode="zeros"`.
    #[default]
    Zeros,
    /// The image mirrored at its border (fastai's default).
    Reflection,
}

/// Augmentation settings (`[data.augment]`); defaults are the seed's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Probability of the affine (rotate, zoom, warp) and of the lighting
    /// (brightness, contrast) transforms: the seed's `p_affine` and
    /// `p_lighting` (both 0.3).
    pub p: f64,
    /// Whether horizontal flips are drawn.
    pub flip: bool,
    /// Probability of a flip (fastai's `Flip(p=0.5)`).
    pub p_flip: f64,
    /// Probability of the hue and of the saturation transform (fastai's
    /// `Hue` / `Saturation` default, 0.75).
    pub p_hsv: f64,
    /// Smallest area fraction of `RandomResizedCropGPU`'s square crop (1 disables).
    pub min_scale: f64,
    /// What the geometric transforms read outside the image.
    pub pad_mode: PadMode,
    /// Largest rotation in degrees (0 disables).
    pub max_rotate: f64,
    /// Smallest zoom factor (1 with `max_zoom` 1 disables zoom).
    pub min_zoom: f64,
    /// Largest zoom factor.
    pub max_zoom: f64,
    /// Brightness and contrast magnitude, in [0, 1) (0 disables).
    pub max_lighting: f64,
    /// Perspective warp magnitude, in [0, 1) (0 disables; fastai's default is 0.2, the seed's 0.05).
    pub max_warp: f64,
    /// Hue magnitude, in [0, 1) (0 disables).
    pub max_hue: f64,
    /// Saturation magnitude, in [0, 1) (0 disables).
    pub max_saturation: f64,
    /// Random position of the item crop (or of the image in its padded
    /// square), as fastai's training-split `Resize`; centred without.
    pub pad_jitter: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            p: 0.3,
            flip: true,
            p_flip: 0.5,
            p_hsv: 0.75,
            min_scale: 0.75,
            pad_mode: PadMode::Zeros,
            max_rotate: 5.0,
            min_zoom: 0.9,
            max_zoom: 1.1,
            max_lighting: 0.5,
            max_warp: 0.05,
            max_hue: 0.3,
            max_saturation: 0.3,
            pad_jitter: true,
        }
    }
}

impl AugmentConfig {
    /// Settings that change nothing but the item stage's validation path:
    /// the centre item, resampled to the image size (with `item_size =
    /// image_size` and square images: the image unchanged).
    pub fn none() -> Self {
        AugmentConfig {
            p: 0.0,
            flip: false,
            p_flip: 0.0,
            p_hsv: 0.0,
            min_scale: 1.0,
            pad_mode: PadMode::Zeros,
            max_rotate: 0.0,
            min_zoom: 1.0,
            max_zoom: 1.0,
            max_lighting: 0.0,
            max_warp: 0.0,
            max_hue: 0.0,
            max_saturation: 0.0,
            pad_jitter: false,
        }
    }

    /// Checks every value; `prefix` is the table's dotted key (e.g.
    /// `data.augment`) used in the error.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let key = |k: &str| format!("{prefix}.{k}");
        let unit_open = |k: &str, v: f64| -> Result<()> {
            if !(0.0..1.0).contains(&v) {
                return Err(DataError::config(key(k), v, "must be in [0, 1)"));
            }
            Ok(())
        };
        for (k, v) in [
            ("p", self.p),
            ("p_flip", self.p_flip),
            ("p_hsv", self.p_hsv),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(DataError::config(
                    key(k),
                    v,
                    "must be a probability in [0, 1]",
                ));
            }
        }
        if !(self.min_scale > 0.0 && self.min_scale <= 1.0) {
            return Err(DataError::config(
                key("min_scale"),
                self.min_scale,
                "must be in (0, 1]",
            ));
        }
        if !(0.0..=180.0).contains(&self.max_rotate) {
            return Err(DataError::config(
                key("max_rotate"),
                self.max_rotate,
                "must be in [0, 180] degrees",
            ));
        }
        if !(self.min_zoom > 0.0 && self.min_zoom.is_finite()) {
            return Err(DataError::config(
                key("min_zoom"),
                self.min_zoom,
                "must be > 0",
            ));
        }
        if !(self.max_zoom >= self.min_zoom && self.max_zoom.is_finite()) {
            return Err(DataError::config(
                key("max_zoom"),
                self.max_zoom,
                format!("must be >= min_zoom ({})", self.min_zoom),
            ));
        }
        unit_open("max_lighting", self.max_lighting)?;
        unit_open("max_warp", self.max_warp)?;
        unit_open("max_hue", self.max_hue)?;
        unit_open("max_saturation", self.max_saturation)?;
        Ok(())
    }
}

/// The drawn augmentation of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentParams {
    /// Mirror left–right.
    pub flip: bool,
    /// Rotation in degrees.
    pub rotate_deg: f64,
    /// Zoom factor (> 1 zooms in).
    pub zoom: f64,
    /// Zoom centre as fractions of the image (fastai's `col_pct`, `row_pct`).
    pub zoom_center: (f64, f64),
    /// Perspective warp magnitudes in x and y.
    pub warp: (f64, f64),
    /// Brightness change (0.5 = none).
    pub brightness: f64,
    /// Contrast factor (1 = none).
    pub contrast: f64,
    /// Saturation factor (1 = none).
    pub saturation: f64,
    /// Hue shift in turns (0 = none).
    pub hue_shift: f64,
    /// Position of the item crop / of the image in its padded square
    /// (fastai's `Resize` `pcts`; 0.5, 0.5 = centred).
    pub pad_pct: (f64, f64),
    /// The random resized crop: half-side `r` ∈ (0, 1] and centre `c` of the
    /// square window in the item's [−1, 1]² (1, (0, 0) = all of it).
    pub crop: (f64, (f64, f64)),
    /// Zeros (true) or reflection outside the `Resize` output.
    pub zeros: bool,
}

impl AugmentParams {
    /// Parameters that change nothing.
    pub fn identity() -> Self {
        AugmentParams {
            flip: false,
            rotate_deg: 0.0,
            zoom: 1.0,
            zoom_center: (0.5, 0.5),
            warp: (0.0, 0.0),
            brightness: 0.5,
            contrast: 1.0,
            saturation: 1.0,
            hue_shift: 0.0,
            pad_pct: (0.5, 0.5),
            crop: (1.0, (0.0, 0.0)),
            zeros: true,
        }
    }

    /// The validation split's transform: the centre item (or the centred
    /// padded square) resampled to the image size and nothing else, as
    /// fastai's validation path. The same as [`AugmentParams::identity`].
    pub fn validation() -> Self {
        Self::identity()
    }

    /// Draws the augmentation of sample `index` in view `view` of a run
    /// seeded with `seed`.
    pub fn draw(cfg: &AugmentConfig, seed: u64, view: u64, index: u64) -> Self {
        let mut r = Stream::new(names::AUGMENT, seed, &[view, index]);
        let p = cfg.p;
        // Every draw is made unconditionally, in a fixed order.
        let coin = |r: &mut Stream| r.unit() < p;
        let flip = (r.unit() < cfg.p_flip) & cfg.flip;
        let sym = |r: &mut _, m: f64| -> f64 {
            let on = coin(r);
            let v = r.uniform(-m, m);
            if on {
                v
            } else {
                0.0
            }
        };
        let warp_x = sym(&mut r, cfg.max_warp);
        let warp_y = sym(&mut r, cfg.max_warp);
        let rotate_deg = sym(&mut r, cfg.max_rotate);
        let zoom_on = r.unit() < p;
        let zoom_v = r.uniform(cfg.min_zoom, cfg.max_zoom);
        let zoom_center = (r.unit(), r.unit());
        let ml = cfg.max_lighting;
        let b_on = r.unit() < p;
        let b_v = r.uniform(0.5 * (1.0 - ml), 0.5 * (1.0 + ml));
        let log_uniform = |r: &mut Stream, m: f64| r.uniform((1.0 - m).ln(), -(1.0 - m).ln()).exp();
        let c_on = r.unit() < p;
        let c_v = log_uniform(&mut r, ml);
        let s_on = r.unit() < cfg.p_hsv;
        let s_v = log_uniform(&mut r, cfg.max_saturation);
        let h_on = r.unit() < cfg.p_hsv;
        let h_v = log_uniform(&mut r, cfg.max_hue);
        let pad_pct = (r.unit(), r.unit());
        // RandomResizedCropGPU with ratio 1: area fraction U(min_scale, 1),
        // the square's top-left uniform over the free space.
        let area = r.uniform(cfg.min_scale, 1.0);
        let (tx, ty) = (r.unit(), r.unit());
        let half = area.sqrt().min(1.0);
        let centre = |t: f64| -1.0 + half + 2.0 * (1.0 - half) * t;
        AugmentParams {
            flip,
            rotate_deg,
            zoom: if zoom_on { zoom_v } else { 1.0 },
            zoom_center,
            warp: (warp_x, warp_y),
            brightness: if b_on { b_v } else { 0.5 },
            contrast: if c_on { c_v } else { 1.0 },
            saturation: if s_on { s_v } else { 1.0 },
            // fastai adds the log-uniform draw (around 1) and takes mod 1;
            // adding (draw - 1) is the same shift without a float detour.
            hue_shift: if h_on && cfg.max_hue > 0.0 {
                h_v - 1.0
            } else {
                0.0
            },
            pad_pct: if cfg.pad_jitter { pad_pct } else { (0.5, 0.5) },
            crop: if cfg.min_scale < 1.0 {
                (half, (centre(tx), centre(ty)))
            } else {
                (1.0, (0.0, 0.0))
            },
            zeros: cfg.pad_mode == PadMode::Zeros,
        }
    }

    fn lighting_is_identity(&self) -> bool {
        self.brightness == 0.5 && self.contrast == 1.0 && self.saturation == 1.0
    }
}

/// Working buffers for [`augment_into`]; keep one per thread.
#[derive(Default)]
pub struct AugmentScratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

/// One cached image as the batch stage reads it (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct CachedImage<'a> {
    /// Interleaved RGB u8, `size.0 × size.1` pixels.
    pub pixels: &'a [u8],
    /// Cached width and height.
    pub size: (u32, u32),
    /// Width and height before the item stage.
    pub orig: (u32, u32),
    /// Item size: the side of the square every draw cuts.
    pub item: u32,
    /// How the image was cached.
    pub resize: ResizeMode,
}

impl<'a> CachedImage<'a> {
    /// A square `size`×`size` image that is its own item.
    pub fn square(pixels: &'a [u8], size: u32) -> Self {
        CachedImage {
            pixels,
            size: (size, size),
            orig: (size, size),
            item: size,
            resize: ResizeMode::Crop,
        }
    }
}

/// Top-left corner, in cached pixels, of the `item`×`item` square that the
/// item stage cuts at `pct` from a `resize = "crop"` image cached at
/// `size` (short side `item`): `int(pct·(side − item))` per axis, as
/// fastai's `Resize` computes `tl` (at the original resolution there). With
/// `"pad"` the item is the whole cached square: (0, 0).
///
/// ```
/// use polytune::data::augment::{item_origin, ResizeMode};
/// assert_eq!(item_origin(ResizeMode::Crop, (614, 460), 460, (0.5, 0.5)), (77, 0));
/// assert_eq!(item_origin(ResizeMode::Crop, (460, 614), 460, (0.999, 0.999)), (0, 153));
/// ```
pub fn item_origin(resize: ResizeMode, size: (u32, u32), item: u32, pct: (f64, f64)) -> (u32, u32) {
    match resize {
        ResizeMode::Pad => (0, 0),
        ResizeMode::Crop => {
            let tl = |p: f64, dim: u32| (p * dim.saturating_sub(item) as f64).trunc() as u32;
            (tl(pct.0, size.0), tl(pct.1, size.1))
        }
    }
}

/// Applies `params` to the cached image `img` and writes planar CHW values
/// in [0, 1] of the `out_size`×`out_size` result to `out`
/// (`3*out_size²` floats).
pub fn augment_into(
    params: &AugmentParams,
    img: &CachedImage<'_>,
    out_size: usize,
    scratch: &mut AugmentScratch,
    out: &mut [f32],
) {
    let n = out_size * out_size;
    let (sw, sh) = (img.size.0 as usize, img.size.1 as usize);
    assert_eq!(img.pixels.len(), sw * sh * 3, "cached image size");
    assert_eq!(out.len(), n * 3, "output size");
    let AugmentScratch { a, b, c } = scratch;
    a.clear();
    match GridMap::new(params, img, out_size) {
        // The item is the cached image and the output size: a copy.
        None => a.extend(img.pixels.iter().map(|&v| v as f32 / 255.0)),
        Some(map) => {
            a.resize(n * 3, 0.0);
            let crop = (params.crop.0 * img.item as f64).round().max(1.0) as usize;
            match area_side(crop, out_size) {
                None => map.sample(img.pixels, (sw, sh), a, out_size),
                Some(m) => {
                    // fastai's order: the crop's pixels, area-averaged to
                    // m², then one bilinear sample to the output.
                    b.clear();
                    b.resize(crop * crop * 3, 0.0);
                    map.sample(img.pixels, (sw, sh), b, crop);
                    c.clear();
                    c.resize(m * m * 3, 0.0);
                    area_average(b, crop, c, m);
                    resize_bilinear(c, m, a, out_size);
                }
            }
        }
    }
    if !params.lighting_is_identity() {
        lighting(a, params);
    }
    if params.hue_shift != 0.0 {
        shift_hue(a, params.hue_shift as f32);
    }
    for (p, px) in a.chunks_exact(3).enumerate() {
        out[p] = px[0];
        out[n + p] = px[1];
        out[2 * n + p] = px[2];
    }
}

/// The geometric part: output grid → source coordinates.
struct GridMap {
    /// The random resized crop: half-side and centre in the item.
    crop: (f64, (f64, f64)),
    /// Affine rows (flip·rotate·zoom) acting on normalised (x, y, 1).
    m: [[f64; 3]; 2],
    /// Perspective coefficients c0..c7 (c8 = 1), if warping.
    persp: Option<[f64; 8]>,
    /// The item inside the cached image: origin and extent in cached
    /// pixels (normalised −1 ↦ origin, +1 ↦ origin + extent).
    window: ((f64, f64), (f64, f64)),
    /// Pad-jitter translation in cached pixels (pad mode).
    shift: (f64, f64),
    /// Zeros (true) or reflection outside the item.
    zeros: bool,
}

impl GridMap {
    fn new(p: &AugmentParams, img: &CachedImage<'_>, out_size: usize) -> Option<Self> {
        let item = img.item as usize;
        let last = item.saturating_sub(1) as f64;
        let (ox, oy) = item_origin(img.resize, img.size, img.item, p.pad_pct);
        let shift = match img.resize {
            ResizeMode::Pad => jitter_shift(p.pad_pct, item, img.orig),
            ResizeMode::Crop => (0.0, 0.0),
        };
        let window = ((ox as f64, oy as f64), (last, last));
        let whole = img.size == (img.item, img.item) && item == out_size;
        if !p.flip
            && p.rotate_deg == 0.0
            && p.zoom == 1.0
            && p.warp == (0.0, 0.0)
            && p.crop == (1.0, (0.0, 0.0))
            && shift == (0.0, 0.0)
            && whole
        {
            return None;
        }
        let f = if p.flip { -1.0 } else { 1.0 };
        let t = p.rotate_deg.to_radians();
        let (sin, cos) = t.sin_cos();
        let s = 1.0 / p.zoom;
        let zc = (
            (1.0 - s) * (2.0 * p.zoom_center.0 - 1.0),
            (1.0 - s) * (2.0 * p.zoom_center.1 - 1.0),
        );
        // F·R·Z with F = diag(f, 1), R = [[cos, sin], [-sin, cos]], Z = [[s, 0, zc.0], [0, s, zc.1]].
        let fr = [[f * cos, f * sin], [-sin, cos]];
        let m = [
            [
                fr[0][0] * s,
                fr[0][1] * s,
                fr[0][0] * zc.0 + fr[0][1] * zc.1,
            ],
            [
                fr[1][0] * s,
                fr[1][1] * s,
                fr[1][0] * zc.0 + fr[1][1] * zc.1,
            ],
        ];
        let persp = if p.warp != (0.0, 0.0) {
            perspective_coeffs(p.warp.0, p.warp.1)
        } else {
            None
        };
        Some(GridMap {
            crop: p.crop,
            m,
            persp,
            window,
            shift,
            zeros: p.zeros,
        })
    }

    /// Bilinear resampling of the cached image `src` (HWC u8, `sw`×`sh`)
    /// into `dst` (HWC f32 in [0, 1], `out`×`out`; PyTorch `grid_sample`,
    /// `align_corners=True`), zeros or reflection outside the item.
    fn sample(&self, src: &[u8], (sw, sh): (usize, usize), dst: &mut [f32], out: usize) {
        let last = out.saturating_sub(1) as f64;
        let norm = |i: usize| {
            if out > 1 {
                -1.0 + 2.0 * i as f64 / last
            } else {
                0.0
            }
        };
        let (half, (cx, cy)) = self.crop;
        let ((ox, oy), (ew, eh)) = self.window;
        let rect = (ox.floor(), oy.floor(), (ox + ew).ceil(), (oy + eh).ceil());
        for i in 0..out {
            let yo = cy + half * norm(i);
            for j in 0..out {
                let xo = cx + half * norm(j);
                let mut x = self.m[0][0] * xo + self.m[0][1] * yo + self.m[0][2];
                let mut y = self.m[1][0] * xo + self.m[1][1] * yo + self.m[1][2];
                if let Some(c) = &self.persp {
                    let z = c[6] * x + c[7] * y + 1.0;
                    let nx = (c[0] * x + c[1] * y + c[2]) / z;
                    let ny = (c[3] * x + c[4] * y + c[5]) / z;
                    x = nx;
                    y = ny;
                }
                let o = (i * out + j) * 3;
                // (x, y) in the item's [−1, 1]²: to its pixels, padded, then
                // into the cached image.
                let (mut px, mut py) = ((x + 1.0) * 0.5 * ew, (y + 1.0) * 0.5 * eh);
                if !self.zeros {
                    px = reflect(px, ew);
                    py = reflect(py, eh);
                }
                // The jitter moves the centred image with zero fill (fastai
                // pads with zeros before the affine resample).
                let px = ox + px - self.shift.0;
                let py = oy + py - self.shift.1;
                bilinear(src, (sw, sh), px, py, rect, &mut dst[o..o + 3]);
            }
        }
    }
}

/// fastai's `_grid_sample` shrinks its input first when a bilinear sample
/// would downsample by more than 2×: for a `crop`-px square resampled to
/// `out` px (an identity grid, zoom 1) it area-averages the crop to
/// `floor(crop / d)` px with `d = crop / out / 2`, when `d > 1`
/// (`F.interpolate(scale_factor=1/d, mode='area', recompute_scale_factor=True)`).
/// Returns that side, or `None` when fastai samples directly.
///
/// ```
/// use polytune::data::augment::area_side;
/// assert_eq!(area_side(460, 224), Some(448)); // the seed's validation item
/// assert_eq!(area_side(448, 224), None);
/// assert_eq!(area_side(8, 8), None);
/// ```
pub fn area_side(crop: usize, out: usize) -> Option<usize> {
    if out == 0 {
        return None;
    }
    let d = crop as f64 / out as f64 / 2.0;
    (d > 1.0).then(|| ((crop as f64 * (1.0 / d)).floor() as usize).max(1))
}

/// PyTorch's `adaptive_avg_pool2d` (what `mode='area'` runs) of the HWC
/// `n`×`n` image `src` to `m`×`m`: output pixel k averages input pixels
/// `floor(k·n/m) .. ceil((k+1)·n/m)` per axis.
fn area_average(src: &[f32], n: usize, dst: &mut [f32], m: usize) {
    let bins: Vec<(usize, usize)> = (0..m)
        .map(|k| (k * n / m, ((k + 1) * n).div_ceil(m)))
        .collect();
    for (i, &(y0, y1)) in bins.iter().enumerate() {
        for (j, &(x0, x1)) in bins.iter().enumerate() {
            let mut acc = [0.0f32; 3];
            for y in y0..y1 {
                for px in src[(y * n + x0) * 3..(y * n + x1) * 3].chunks_exact(3) {
                    for (a, &v) in acc.iter_mut().zip(px) {
                        *a += v;
                    }
                }
            }
            let count = ((y1 - y0) * (x1 - x0)) as f32;
            let o = (i * m + j) * 3;
            for (d, a) in dst[o..o + 3].iter_mut().zip(acc) {
                *d = a / count;
            }
        }
    }
}

/// Bilinear resize of the HWC `m`×`m` image `src` to `out`×`out`, the
/// identity grid with `align_corners=True` (output k reads k·(m−1)/(out−1)).
fn resize_bilinear(src: &[f32], m: usize, dst: &mut [f32], out: usize) {
    let pos = |k: usize| -> (usize, usize, f32) {
        let p = if out > 1 {
            k as f64 * (m - 1) as f64 / (out - 1) as f64
        } else {
            (m - 1) as f64 / 2.0
        };
        let lo = (p.floor() as usize).min(m - 1);
        (lo, (lo + 1).min(m - 1), (p - lo as f64) as f32)
    };
    for i in 0..out {
        let (y0, y1, wy) = pos(i);
        for j in 0..out {
            let (x0, x1, wx) = pos(j);
            let o = (i * out + j) * 3;
            for c in 0..3 {
                let at = |y: usize, x: usize| src[(y * m + x) * 3 + c];
                let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                dst[o + c] = top * (1.0 - wy) + bottom * wy;
            }
        }
    }
}

/// Bilinear sample, scaled to [0, 1], of the HWC u8 image `src` (`w`×`h`)
/// at pixel coordinates (px, py); taps outside the image or outside `rect`
/// (x0, y0, x1, y1, inclusive) count as 0 (inside it none are).
#[inline]
fn bilinear(
    src: &[u8],
    (w, h): (usize, usize),
    px: f64,
    py: f64,
    rect: (f64, f64, f64, f64),
    out: &mut [f32],
) {
    let (fx, fy) = (px.floor(), py.floor());
    let (wx, wy) = ((px - fx) as f32, (py - fy) as f32);
    let (x0, y0) = (fx as i64, fy as i64);
    let (w, h) = (w as i64, h as i64);
    let (rx0, ry0, rx1, ry1) = (rect.0 as i64, rect.1 as i64, rect.2 as i64, rect.3 as i64);
    // Four taps: (offset into src, weight); outside taps get weight 0.
    let mut taps = [(0usize, 0.0f32); 4];
    let corners = [
        (x0, y0, (1.0 - wx) * (1.0 - wy)),
        (x0 + 1, y0, wx * (1.0 - wy)),
        (x0, y0 + 1, (1.0 - wx) * wy),
        (x0 + 1, y0 + 1, wx * wy),
    ];
    for (t, &(x, y, wt)) in taps.iter_mut().zip(&corners) {
        let inside =
            x >= rx0.max(0) && y >= ry0.max(0) && x <= rx1.min(w - 1) && y <= ry1.min(h - 1);
        if inside && wt != 0.0 {
            *t = (((y * w + x) as usize) * 3, wt);
        }
    }
    for (c, o) in out.iter_mut().enumerate() {
        *o = taps
            .iter()
            .map(|&(k, wt)| src[k + c] as f32 / 255.0 * wt)
            .sum();
    }
}

/// PyTorch's `reflect_coordinates` for `align_corners=True` then clipping:
/// reflects `x` into [0, last].
#[inline]
fn reflect(x: f64, last: f64) -> f64 {
    if (0.0..=last).contains(&x) {
        return x; // the common case: no reflection needed
    }
    if last <= 0.0 {
        return 0.0;
    }
    let ax = x.abs();
    let flips = (ax / last).floor();
    let extra = ax - flips * last;
    let r = if flips as i64 % 2 == 0 {
        extra
    } else {
        last - extra
    };
    r.clamp(0.0, last)
}

/// Translation (cached pixels) that moves the image from its centred place
/// in the padded square to the place fastai would pick for `pct`.
fn jitter_shift(pct: (f64, f64), size: usize, orig: (u32, u32)) -> (f64, f64) {
    if pct == (0.5, 0.5) || size < 2 || orig.0 == 0 || orig.1 == 0 {
        return (0.0, 0.0);
    }
    let centred = PadGeometry::fastai(orig.0, orig.1, size as u32, (0.5, 0.5));
    let placed = PadGeometry::fastai(orig.0, orig.1, size as u32, pct);
    let scale = size as f64 / centred.side as f64; // source px -> cached px
    let dx = (placed.pad_left as f64 - centred.pad_left as f64) * scale;
    let dy = (placed.pad_top as f64 - centred.pad_top as f64) * scale;
    (dx, dy)
}

/// fastai's `_WarpCoord`: the perspective map sending the corners
/// (±1, ±1) to the corners moved by (x_t, y_t) (`find_coeffs(orig, targ)`).
fn perspective_coeffs(x_t: f64, y_t: f64) -> Option<[f64; 8]> {
    let orig = [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)];
    let targ = [
        (-1.0 - y_t, -1.0 - x_t),
        (-1.0 + y_t, 1.0 + x_t),
        (1.0 + y_t, -1.0 + x_t),
        (1.0 - y_t, 1.0 - x_t),
    ];
    // Rows as in fastai's find_coeffs(p1 = orig, p2 = targ): A c = p1.
    let mut a = [[0.0f64; 9]; 8];
    for (i, (&(p1x, p1y), &(p2x, p2y))) in orig.iter().zip(targ.iter()).enumerate() {
        a[2 * i] = [p2x, p2y, 1.0, 0.0, 0.0, 0.0, -p1x * p2x, -p1x * p2y, p1x];
        a[2 * i + 1] = [0.0, 0.0, 0.0, p2x, p2y, 1.0, -p1y * p2x, -p1y * p2y, p1y];
    }
    solve8(a)
}

/// Gaussian elimination with partial pivoting on an augmented 8×9 system.
fn solve8(mut a: [[f64; 9]; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let piv = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        for row in 0..8 {
            if row != col {
                let f = a[row][col] / a[col][col];
                if f != 0.0 {
                    let pivot = a[col];
                    for (v, p) in a[row][col..].iter_mut().zip(&pivot[col..]) {
                        *v -= f * p;
                    }
                }
            }
        }
    }
    let mut x = [0.0; 8];
    for i in 0..8 {
        x[i] = a[i][8] / a[i][i];
    }
    Some(x)
}

/// fastai's `rgb2hsv` → hue shift → `hsv2rgb`, per pixel.
fn shift_hue(px: &mut [f32], shift: f32) {
    for p in px.chunks_exact_mut(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let eq = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eq { 1.0 } else { maxc };
        let div = if eq { 1.0 } else { cr };
        let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
        let h = if maxc == r {
            bc - gc
        } else if maxc == g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let h = (h / 6.0 + 1.0).rem_euclid(1.0);
        let h = (h + shift).rem_euclid(1.0);
        let v = maxc;
        let hi = (h * 6.0).floor();
        let f = h * 6.0 - hi;
        let pp = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        let (nr, ng, nb) = match (hi as i32).rem_euclid(6) {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
        p[0] = nr;
        p[1] = ng;
        p[2] = nb;
    }
}

/// Brightness, contrast and saturation in logit space, as fastai's
/// `LightingTfm`s: `sigmoid(sat((logit(x) + logit(b)) * c))`.
fn lighting(px: &mut [f32], p: &AugmentParams) {
    let add = logit(p.brightness as f32);
    let mul = p.contrast as f32;
    let s = p.saturation as f32;
    let with_sat = p.saturation != 1.0;
    for q in px.chunks_exact_mut(3) {
        let mut l = [0.0f32; 3];
        for c in 0..3 {
            l[c] = (logit(q[c]) + add) * mul;
        }
        if with_sat {
            let g = 0.2989 * l[0] + 0.5870 * l[1] + 0.1140 * l[2];
            for v in &mut l {
                *v = *v * s + g * (1.0 - s);
            }
        }
        for c in 0..3 {
            q[c] = 1.0 / (1.0 + (-l[c]).exp());
        }
    }
}

/// fastai's `logit`: clamps to [1e-7, 1 - 1e-7] first.
fn logit(x: f32) -> f32 {
    let x = x.clamp(1e-7, 1.0 - 1e-7);
    (x / (1.0 - x)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_params_copy_exactly() {
        let size = 5;
        let src: Vec<u8> = (0..size * size * 3).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = vec![0.0; src.len()];
        augment_into(
            &AugmentParams::identity(),
            &CachedImage::square(&src, size as u32),
            size,
            &mut AugmentScratch::default(),
            &mut out,
        );
        for p in 0..size * size {
            for c in 0..3 {
                assert_eq!(out[c * size * size + p], src[p * 3 + c] as f32 / 255.0);
            }
        }
    }

    #[test]
    fn flip_mirrors_columns() {
        let size = 4;
        let src: Vec<u8> = (0..size * size * 3).map(|i| (i * 5 % 256) as u8).collect();
        let mut out = vec![0.0; src.len()];
        let p = AugmentParams {
            flip: true,
            ..AugmentParams::identity()
        };
        augment_into(
            &p,
            &CachedImage::square(&src, size as u32),
            size,
            &mut AugmentScratch::default(),
            &mut out,
        );
        for i in 0..size {
            for j in 0..size {
                for c in 0..3 {
                    let want = src[(i * size + (size - 1 - j)) * 3 + c] as f32 / 255.0;
                    let got = out[c * size * size + i * size + j];
                    assert!((got - want).abs() < 1e-6, "({i},{j},{c}) {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn rotation_by_90_degrees_transposes() {
        // θ = 90°: source (x, y) = (y_out, -x_out): out(i, j) = src(size-1-j, i).
        let size = 5;
        let src: Vec<u8> = (0..size * size * 3).map(|i| (i * 11 % 256) as u8).collect();
        let mut out = vec![0.0; src.len()];
        let p = AugmentParams {
            rotate_deg: 90.0,
            ..AugmentParams::identity()
        };
        augment_into(
            &p,
            &CachedImage::square(&src, size as u32),
            size,
            &mut AugmentScratch::default(),
            &mut out,
        );
        for i in 0..size {
            for j in 0..size {
                let want = src[((size - 1 - j) * size + i) * 3] as f32 / 255.0;
                let got = out[i * size + j];
                assert!((got - want).abs() < 1e-5, "({i},{j}) {got} vs {want}");
            }
        }
    }

    #[test]
    fn perspective_maps_corners() {
        let (xt, yt) = (0.1, -0.05);
        let c = perspective_coeffs(xt, yt).unwrap();
        let map = |x: f64, y: f64| {
            let z = c[6] * x + c[7] * y + 1.0;
            (
                (c[0] * x + c[1] * y + c[2]) / z,
                (c[3] * x + c[4] * y + c[5]) / z,
            )
        };
        // find_coeffs(p1=orig, p2=targ) gives the map targ -> orig.
        let targ = [
            (-1.0 - yt, -1.0 - xt),
            (-1.0 + yt, 1.0 + xt),
            (1.0 + yt, -1.0 + xt),
            (1.0 - yt, 1.0 - xt),
        ];
        let orig = [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)];
        for (t, o) in targ.iter().zip(orig.iter()) {
            let (x, y) = map(t.0, t.1);
            assert!((x - o.0).abs() < 1e-12 && (y - o.1).abs() < 1e-12);
        }
    }

    #[test]
    fn hue_roundtrip_and_shift() {
        let mut px = vec![0.8f32, 0.2, 0.4, 0.1, 0.1, 0.1, 0.0, 0.5, 1.0];
        let orig = px.clone();
        shift_hue(&mut px, 1.0); // a whole turn changes nothing
        for (a, b) in px.iter().zip(orig.iter()) {
            assert!((a - b).abs() < 1e-5);
        }
        // Pure red shifted by 1/3 turn is pure green.
        let mut red = vec![1.0f32, 0.0, 0.0];
        shift_hue(&mut red, 1.0 / 3.0);
        assert!(
            (red[0]).abs() < 1e-5 && (red[1] - 1.0).abs() < 1e-5 && red[2].abs() < 1e-5,
            "{red:?}"
        );
    }

    #[test]
    fn lighting_matches_formula() {
        let p = AugmentParams {
            brightness: 0.7,
            contrast: 1.3,
            saturation: 0.8,
            ..AugmentParams::identity()
        };
        let x = [0.2f64, 0.5, 0.9];
        let mut px: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        lighting(&mut px, &p);
        let lg = |v: f64| (v / (1.0 - v)).ln();
        let l: Vec<f64> = x.iter().map(|&v| (lg(v) + lg(0.7)) * 1.3).collect();
        let g = 0.2989 * l[0] + 0.587 * l[1] + 0.114 * l[2];
        for c in 0..3 {
            let want = 1.0 / (1.0 + (-(l[c] * 0.8 + g * 0.2)).exp());
            assert!(
                (px[c] as f64 - want).abs() < 1e-5,
                "{c}: {} vs {want}",
                px[c]
            );
        }
    }

    #[test]
    fn reflect_matches_pytorch() {
        assert_eq!(reflect(-1.0, 4.0), 1.0);
        assert_eq!(reflect(5.0, 4.0), 3.0);
        assert_eq!(reflect(9.0, 4.0), 1.0);
        assert_eq!(reflect(2.5, 4.0), 2.5);
    }
}
