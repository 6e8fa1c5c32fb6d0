//! The seed's augmentation recipe, statistically and geometrically: the
//! draws' rates and ranges over many samples (fastai's `Flip(p=0.5)`,
//! `p_affine = p_lighting = 0.3`, `Hue`/`Saturation`'s own p = 0.75,
//! rotation ≤ 5°, zoom 0.9–1.1, warp ≤ 0.05, `RandomResizedCropGPU` area
//! 0.75–1 with ratio 1), and the `Resize(method=Crop)` box on a fixed
//! non-square image, computed independently from fastai's formula.

use polytune::data::augment::{augment_into, PadMode, ResizeMode};
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
        assert!(p.zeros && p.resize == ResizeMode::Crop);
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

/// An image whose red channel is 16·x and green 16·y (x, y in pixels), so
/// a bilinear sample at (x, y) reads exactly (16x, 16y).
fn ramp(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let o = (y * size + x) * 3;
            v[o] = (16 * x) as u8;
            v[o + 1] = (16 * y) as u8;
        }
    }
    v
}

#[test]
fn resize_crop_box_is_fastais() {
    // A 32×16 original cached at 16 px: fastai's Resize(method=Pad) puts it
    // in a 32-px square (rows 8..24), scaled by 1/2: cached rows 4..12.
    // Resize(method=Crop) keeps the 16×16 square at
    // tl = int(pct·(32 − 16)) columns, i.e. source columns [tl, tl+16),
    // cached columns [tl/2, tl/2 + 8) and cached rows [4, 12).
    let size = 16;
    let src = ramp(size);
    for pct in [0.0, 0.25, 0.5, 1.0] {
        let params = AugmentParams {
            pad_pct: (pct, 0.5),
            ..AugmentParams::validation(ResizeMode::Crop)
        };
        let mut out = vec![0.0f32; size * size * 3];
        augment_into(
            &params,
            &src,
            size,
            (32, 16),
            &mut AugmentScratch::default(),
            &mut out,
        );
        let tl = (pct * 16.0f64).trunc() / 2.0; // cached px
        let (x0, y0, extent) = (tl, 4.0, 7.0); // 8 cached px, align_corners
        let n = size * size;
        for i in 0..size {
            for j in 0..size {
                let x = x0 + extent * j as f64 / 15.0;
                let y = y0 + extent * i as f64 / 15.0;
                let (r, g) = (out[i * size + j] as f64, out[n + i * size + j] as f64);
                assert!(
                    (r - 16.0 * x / 255.0).abs() < 1e-4 && (g - 16.0 * y / 255.0).abs() < 1e-4,
                    "pct {pct} ({i},{j}): ({r}, {g}) vs box x {x} y {y}"
                );
            }
        }
    }
    // A square original: the crop box is the whole image, so validation is
    // the cached pixels as they are.
    let mut out = vec![0.0f32; size * size * 3];
    augment_into(
        &AugmentParams::validation(ResizeMode::Crop),
        &src,
        size,
        (40, 40),
        &mut AugmentScratch::default(),
        &mut out,
    );
    for (k, &v) in out.iter().enumerate() {
        let (c, p) = (k / (size * size), k % (size * size));
        assert_eq!(v, src[p * 3 + c] as f32 / 255.0);
    }
}

#[test]
fn random_resized_crop_reads_its_window_and_zeros_outside() {
    let size = 16;
    let src = ramp(size);
    // Half-side 0.5 centred at (0.5, -0.5): the window x ∈ [0, 1], y ∈ [−1, 0]
    // of a square original, i.e. cached columns 7.5..15 and rows 0..7.5.
    let params = AugmentParams {
        crop: (0.5, (0.5, -0.5)),
        ..AugmentParams::validation(ResizeMode::Crop)
    };
    let mut out = vec![0.0f32; size * size * 3];
    augment_into(
        &params,
        &src,
        size,
        (16, 16),
        &mut AugmentScratch::default(),
        &mut out,
    );
    let n = size * size;
    for i in 0..size {
        for j in 0..size {
            let x = 7.5 + 7.5 * j as f64 / 15.0;
            let y = 7.5 * i as f64 / 15.0;
            let (r, g) = (out[i * size + j] as f64, out[n + i * size + j] as f64);
            assert!(
                (r - 16.0 * x / 255.0).abs() < 1e-4 && (g - 16.0 * y / 255.0).abs() < 1e-4,
                "({i},{j}): ({r}, {g}) vs ({x}, {y})"
            );
        }
    }
    // A 90° rotation of a corner window reaches outside the image: zeros
    // with pad_mode zeros, mirrored pixels with reflection.
    let rotated = AugmentParams {
        rotate_deg: 45.0,
        ..AugmentParams::validation(ResizeMode::Crop)
    };
    let corner = |zeros: bool| {
        let mut out = vec![0.0f32; size * size * 3];
        augment_into(
            &AugmentParams { zeros, ..rotated },
            &src,
            size,
            (16, 16),
            &mut AugmentScratch::default(),
            &mut out,
        );
        (out[0], out[n]) // the top-left output pixel maps outside [−1, 1]²
    };
    assert_eq!(corner(true), (0.0, 0.0));
    let (r, g) = corner(false);
    assert!(r > 0.0 || g > 0.0, "reflection reads the image: ({r}, {g})");
}
