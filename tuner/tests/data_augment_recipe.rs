//! The seed's augmentation recipe, statistically and geometrically: the
//! draws' rates and ranges over many samples (fastai's `Flip(p=0.5)`,
//! `p_affine = p_lighting = 0.3`, `Hue`/`Saturation`'s own p = 0.75,
//! rotation ≤ 5°, zoom 0.9–1.1, warp ≤ 0.05, `RandomResizedCropGPU` area
//! 0.75–1 with ratio 1), the item stage's crop box on a fixed non-square
//! cached image computed independently from fastai's formula, and the
//! train path's item offsets over many draws (uniform over the free length).

use polytune::data::augment::{augment_into, item_origin, CachedImage, PadMode, ResizeMode};
use polytune::data::{AugmentConfig, AugmentParams, AugmentScratch, DataConfig};

const DRAWS: u64 = 20_000;

/// The seed's training transforms as `[data]` gives them.
fn seed_config() -> AugmentConfig {
    let d = DataConfig::from_toml("source = \"digits\"").unwrap();
    assert_eq!(d.resize, ResizeMode::Crop);
    d.augment_config()
}

fn rate(hits: usize) -> f64 {
    hits as f64 / DRAWS as f64
}

/// |observed − p| within 4.5 binomial standard errors.
fn near(observed: f64, p: f64, what: &str) {
    let se = (p * (1.0 - p) / DRAWS as f64).sqrt();
    assert!(
        (observed - p).abs() < 4.5 * se,
        "{what}: rate {observed} vs {p} (se {se})"
    );
}

#[test]
fn draws_have_the_seeds_rates_and_ranges() {
    let cfg = seed_config();
    assert_eq!(
        (cfg.p, cfg.p_flip, cfg.p_hsv, cfg.min_scale, cfg.max_warp),
        (0.3, 0.5, 0.75, 0.75, 0.05)
    );
    assert_eq!(cfg.pad_mode, PadMode::Zeros);
    let draws: Vec<AugmentParams> = (0..DRAWS)
        .map(|i| AugmentParams::draw(&cfg, 11, 2, i))
        .collect();
    let count = |f: &dyn Fn(&AugmentParams) -> bool| draws.iter().filter(|p| f(p)).count();
    near(rate(count(&|p| p.flip)), 0.5, "flip");
    near(rate(count(&|p| p.rotate_deg != 0.0)), 0.3, "rotate");
    near(rate(count(&|p| p.zoom != 1.0)), 0.3, "zoom");
    near(rate(count(&|p| p.warp.0 != 0.0)), 0.3, "warp x");
    near(rate(count(&|p| p.brightness != 0.5)), 0.3, "brightness");
    near(rate(count(&|p| p.contrast != 1.0)), 0.3, "contrast");
    near(rate(count(&|p| p.saturation != 1.0)), 0.75, "saturation");
    near(rate(count(&|p| p.hue_shift != 0.0)), 0.75, "hue");
    for p in &draws {
        assert!(p.rotate_deg.abs() <= 5.0);
        assert!((0.9..=1.1).contains(&p.zoom));
        assert!(p.warp.0.abs() <= 0.05 && p.warp.1.abs() <= 0.05);
        assert!((0.25..=0.75).contains(&p.brightness));
        assert!(p.zeros);
        // The random resized crop: a square of area r² ∈ [0.75, 1] inside [−1, 1]².
        let (r, (cx, cy)) = p.crop;
        assert!((0.75f64.sqrt() - 1e-12..=1.0).contains(&r), "{r}");
        assert!(cx - r >= -1.0 - 1e-12 && cx + r <= 1.0 + 1e-12);
        assert!(cy - r >= -1.0 - 1e-12 && cy + r <= 1.0 + 1e-12);
    }
    // The extremes are reached: rotations near ±5°, zooms near 0.9 and 1.1,
    // crop areas near 0.75 and 1, and the area is uniform (mean 0.875).
    let max_rot = draws.iter().map(|p| p.rotate_deg).fold(0.0, f64::max);
    let min_rot = draws.iter().map(|p| p.rotate_deg).fold(0.0, f64::min);
    assert!(max_rot > 4.9 && min_rot < -4.9, "{min_rot} {max_rot}");
    let zooms: Vec<f64> = draws.iter().map(|p| p.zoom).filter(|&z| z != 1.0).collect();
    assert!(zooms.iter().cloned().fold(2.0, f64::min) < 0.905);
    assert!(zooms.iter().cloned().fold(0.0, f64::max) > 1.095);
    let areas: Vec<f64> = draws.iter().map(|p| p.crop.0 * p.crop.0).collect();
    let mean = areas.iter().sum::<f64>() / areas.len() as f64;
    assert!((mean - 0.875).abs() < 0.002, "mean crop area {mean}");
    // Without min_scale < 1 there is no crop; the validation path has none.
    let no_crop = AugmentConfig {
        min_scale: 1.0,
        ..cfg.clone()
    };
    assert_eq!(
        AugmentParams::draw(&no_crop, 11, 2, 5).crop,
        (1.0, (0.0, 0.0))
    );
}

/// A `w`×`h` image whose red channel is `kx·x` and green `ky·y` (x, y in
/// pixels), so a bilinear sample at (x, y) reads exactly (kx·x, ky·y).
fn ramp(w: usize, h: usize, kx: usize, ky: usize) -> Vec<u8> {
    let mut v = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let o = (y * w + x) * 3;
            v[o] = (kx * x) as u8;
            v[o + 1] = (ky * y) as u8;
        }
    }
    v
}

/// Checks that `out` (planar, `size`²) reads the ramp `(kx·x, ky·y)` at
/// x = x0 + ext·j/(size−1), y = y0 + ext·i/(size−1).
fn reads_box(
    out: &[f32],
    size: usize,
    (kx, ky): (f64, f64),
    (x0, y0, ext): (f64, f64, f64),
    what: &str,
) {
    let n = size * size;
    let last = (size - 1) as f64;
    for i in 0..size {
        for j in 0..size {
            let x = x0 + ext * j as f64 / last;
            let y = y0 + ext * i as f64 / last;
            let (r, g) = (out[i * size + j] as f64, out[n + i * size + j] as f64);
            assert!(
                (r - kx * x / 255.0).abs() < 1e-4 && (g - ky * y / 255.0).abs() < 1e-4,
                "{what} ({i},{j}): ({r}, {g}) vs box x {x} y {y}"
            );
        }
    }
}

#[test]
fn item_crop_box_is_fastais() {
    // A landscape image cached at item size 16: short side 16, long side 32.
    // fastai's Resize(16, method=Crop) keeps the square of side h at
    // tl = int(pct·(w − h)); at the item resolution that is cached columns
    // [int(pct·16), int(pct·16) + 16) and all 16 rows.
    let (w, h, item) = (32usize, 16usize, 16u32);
    let src = ramp(w, h, 8, 16);
    let img = CachedImage {
        pixels: &src,
        size: (w as u32, h as u32),
        orig: (64, 32),
        item,
        resize: ResizeMode::Crop,
    };
    for pct in [0.0, 0.25, 0.5, 0.77, 0.999] {
        let tl = (pct * 16.0f64).trunc();
        assert_eq!(
            item_origin(ResizeMode::Crop, img.size, item, (pct, 0.3)),
            (tl as u32, 0)
        );
        let params = AugmentParams {
            pad_pct: (pct, 0.3),
            ..AugmentParams::validation()
        };
        // At the item size: the item's pixels as they are.
        let mut out = vec![0.0f32; 16 * 16 * 3];
        augment_into(&params, &img, 16, &mut AugmentScratch::default(), &mut out);
        reads_box(
            &out,
            16,
            (8.0, 16.0),
            (tl, 0.0, 15.0),
            &format!("pct {pct} at 16 px"),
        );
        // At 9 px: one bilinear resample of the same box (align_corners; a
        // shrink by less than 2×, so fastai has no area step).
        let mut out = vec![0.0f32; 9 * 9 * 3];
        augment_into(&params, &img, 9, &mut AugmentScratch::default(), &mut out);
        reads_box(
            &out,
            9,
            (8.0, 16.0),
            (tl, 0.0, 15.0),
            &format!("pct {pct} at 9 px"),
        );
    }
    // Portrait: the free length is vertical.
    let src = ramp(h, w, 16, 8);
    let img = CachedImage {
        pixels: &src,
        size: (h as u32, w as u32),
        orig: (h as u32, w as u32),
        item,
        resize: ResizeMode::Crop,
    };
    let params = AugmentParams {
        pad_pct: (0.9, 0.6),
        ..AugmentParams::validation()
    };
    let mut out = vec![0.0f32; 16 * 16 * 3];
    augment_into(&params, &img, 16, &mut AugmentScratch::default(), &mut out);
    reads_box(&out, 16, (16.0, 8.0), (0.0, 9.0, 15.0), "portrait pct 0.6");
    // A square cached image is its own item: validation copies it.
    let sq = ramp(16, 16, 16, 16);
    let mut out = vec![0.0f32; 16 * 16 * 3];
    augment_into(
        &AugmentParams::validation(),
        &CachedImage::square(&sq, 16),
        16,
        &mut AugmentScratch::default(),
        &mut out,
    );
    for (k, &v) in out.iter().enumerate() {
        let (c, p) = (k / 256, k % 256);
        assert_eq!(v, sq[p * 3 + c] as f32 / 255.0);
    }
}

#[test]
fn train_item_offsets_are_uniform_over_the_free_length() {
    // Flowers-like: a 500×667 image cached at item 460 is 460×614, so the
    // item's top edge ranges over 0..=154 rows; fastai draws pct ~ U(0, 1)
    // and takes int(pct·154): every offset 0..=153 with probability 1/154
    // (154 itself only at pct = 1).
    let cfg = seed_config();
    let size = (460, 614);
    let free = 154usize;
    let mut counts = vec![0usize; free + 1];
    let mut xs = 0usize;
    for i in 0..DRAWS {
        let p = AugmentParams::draw(&cfg, 5, 1, i);
        let (x0, y0) = item_origin(ResizeMode::Crop, size, 460, p.pad_pct);
        xs += x0 as usize;
        counts[y0 as usize] += 1;
    }
    assert_eq!(xs, 0, "the short side has no free length");
    assert_eq!(counts[free], 0);
    // Pearson χ² over the 154 equiprobable offsets: 153 degrees of freedom,
    // mean 153, sd √306 ≈ 17.5; fail beyond mean + 5 sd.
    let e = DRAWS as f64 / free as f64;
    let chi2: f64 = counts[..free]
        .iter()
        .map(|&c| (c as f64 - e).powi(2) / e)
        .sum();
    assert!(chi2 < 153.0 + 5.0 * 306f64.sqrt(), "chi2 {chi2}");
    assert!(
        counts[0] > 0 && counts[free - 1] > 0,
        "both ends are reached"
    );
    let mean = counts
        .iter()
        .enumerate()
        .map(|(k, &c)| k * c)
        .sum::<usize>() as f64
        / DRAWS as f64;
    // Uniform on 0..=153: mean 76.5, sd 44.5; the mean's se is 0.31.
    assert!((mean - 76.5).abs() < 1.6, "mean offset {mean}");
    // Without pad_jitter the training item is the centre one.
    let fixed = AugmentConfig {
        pad_jitter: false,
        ..cfg
    };
    let p = AugmentParams::draw(&fixed, 5, 1, 3);
    assert_eq!(item_origin(ResizeMode::Crop, size, 460, p.pad_pct), (0, 77));
}

#[test]
fn random_resized_crop_reads_its_window_and_zeros_outside() {
    let size = 16;
    let src = ramp(size, size, 16, 16);
    let img = CachedImage::square(&src, size as u32);
    // Half-side 0.5 centred at (0.5, -0.5): the window x ∈ [0, 1], y ∈ [−1, 0]
    // of the item, i.e. cached columns 7.5..15 and rows 0..7.5.
    let params = AugmentParams {
        crop: (0.5, (0.5, -0.5)),
        ..AugmentParams::validation()
    };
    let mut out = vec![0.0f32; size * size * 3];
    augment_into(
        &params,
        &img,
        size,
        &mut AugmentScratch::default(),
        &mut out,
    );
    reads_box(&out, size, (16.0, 16.0), (7.5, 0.0, 7.5), "window");
    let n = size * size;
    // A 45° rotation of the item reaches outside it at the corners: zeros
    // with pad_mode zeros, mirrored pixels with reflection.
    let rotated = AugmentParams {
        rotate_deg: 45.0,
        ..AugmentParams::validation()
    };
    let corner = |zeros: bool| {
        let mut out = vec![0.0f32; size * size * 3];
        augment_into(
            &AugmentParams { zeros, ..rotated },
            &img,
            size,
            &mut AugmentScratch::default(),
            &mut out,
        );
        (out[0], out[n]) // the top-left output pixel maps outside [−1, 1]²
    };
    assert_eq!(corner(true), (0.0, 0.0));
    let (r, g) = corner(false);
    assert!(r > 0.0 || g > 0.0, "reflection reads the image: ({r}, {g})");
}
