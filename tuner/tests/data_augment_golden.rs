//! The augmentation against golden outputs of fastai's transforms recomputed
//! in float64 PyTorch (`tests/data_golden/augment_golden.py`, which uses
//! torch's own `affine_grid`, `grid_sample` and `linalg.solve`).

use polytune::data::augment::{augment_into, CachedImage};
use polytune::data::{AugmentParams, AugmentScratch};

#[test]
fn augmentation_matches_pytorch_golden_values() {
    let text = include_str!("data_golden/augment_golden.txt");
    let mut lines = text.lines();
    let size: usize = lines
        .next()
        .unwrap()
        .strip_prefix("size ")
        .unwrap()
        .parse()
        .unwrap();
    let image: Vec<u8> = lines
        .next()
        .unwrap()
        .strip_prefix("image ")
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(image.len(), size * size * 3);
    let mut cases = 0;
    while let Some(case) = lines.next() {
        let out = lines
            .next()
            .unwrap_or_else(|| panic!("golden file: `{case}` has no `out` line"));
        let mut it = case.strip_prefix("case ").unwrap().split_whitespace();
        let name = it.next().unwrap().to_string();
        let kv: std::collections::HashMap<&str, f64> = it
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k, v.parse().unwrap())
            })
            .collect();
        let params = AugmentParams {
            flip: kv["flip"] != 0.0,
            rotate_deg: kv["rot"],
            zoom: kv["zoom"],
            zoom_center: (kv["cx"], kv["cy"]),
            warp: (kv["wx"], kv["wy"]),
            brightness: kv["b"],
            contrast: kv["c"],
            saturation: kv["s"],
            hue_shift: kv["hue"],
            pad_pct: (0.5, 0.5),
            crop: (1.0, (0.0, 0.0)),
            zeros: false, // the golden cases pad by reflection
        };
        let want: Vec<f64> = out
            .strip_prefix("out ")
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(
            want.len(),
            size * size * 3,
            "{name}: golden output length (size {size}, 3 planes)"
        );
        let mut got = vec![0.0f32; size * size * 3];
        augment_into(
            &params,
            &CachedImage::square(&image, size as u32),
            size,
            &mut AugmentScratch::default(),
            &mut got,
        );
        assert_eq!(got.len(), want.len(), "{name}: output length");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0f64, f64::max);
        assert!(worst < 2e-4, "{name}: max |diff| = {worst}");
        // The case must actually change the image (else it tests nothing).
        let unchanged = got.iter().enumerate().all(|(k, &g)| {
            (g - image[(k % (size * size)) * 3 + k / (size * size)] as f32 / 255.0).abs() < 1e-3
        });
        assert!(!unchanged, "{name}: golden case leaves the image unchanged");
        cases += 1;
    }
    assert_eq!(cases, 11);
}

/// The fixed smooth test image of `augment_golden.py item` (HWC u8).
fn original(w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f64, y as f64);
            let r = 127.5 + 127.5 * (xf / 9.0).sin() * (yf / 13.0).cos();
            let g = 127.5 + 127.5 * (xf / 11.0 + yf / 17.0).cos();
            let b = 127.5 + 127.5 * ((xf + 2.0 * yf) / 15.0).sin();
            out.extend([r, g, b].map(|v| (v + 0.5).floor() as u8));
        }
    }
    out
}

/// Mean and largest |a − b|.
fn diff(a: &[f32], b: &[f64]) -> (f64, f64) {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .collect();
    (
        d.iter().sum::<f64>() / d.len() as f64,
        d.iter().cloned().fold(0.0, f64::max),
    )
}

/// The item stage against fastai 2.8 itself (`augment_golden.py item`): the
/// pipeline order, `Resize(ITEM)`'s crop box for given draws in training and
/// in validation, and the validation path's final pixels.
///
/// Box: fastai crops the square of side `short` at `int(pct·(long −
/// short))` original pixels, then resizes it to ITEM; polytune resizes the
/// whole image to short side ITEM, then cuts at `int(pct·(long' − ITEM))`
/// cached pixels. Mapped back to the original the two offsets differ by
/// less than one cached pixel (`short/ITEM` original pixels), and the sides
/// agree.
///
/// Pixels: the validation output (ITEM → IMAGE, here 92 → 44 px, the seed's
/// 460 → 224 scaled by 1/5, so fastai's `_grid_sample` area-averages the
/// item to 88 px before its bilinear sample, as `augment_into` does) differs
/// from fastai's only by the item stage's resampling order (PIL resizes the
/// cropped square; here the whole image is resized, so the item's border
/// pixels see their outside neighbours through the filter) and u8 rounding:
/// measured mean |diff| 0.0011 and max 0.0059 (1.5/255), so the bounds are
/// mean ≤ 1/255 and max ≤ 3/255. On this smooth image (up to ~15 levels per
/// item pixel) the same item cut one cached pixel off fastai's box has a
/// mean |diff| of 0.025, and fastai's item sampled without the area step
/// 0.010: both fail the bounds, so the test sees either error.
#[test]
fn item_stage_matches_fastai() {
    use polytune::data::augment::{item_origin, ResizeMode};
    use polytune::data::decode::{stored_dims, PadResizer};

    let text = include_str!("data_golden/item_golden.txt");
    let mut lines = text.lines().peekable();
    assert!(lines.next().unwrap().starts_with("fastai 2.8"));
    // fastai's batch pipeline order for the seed's transforms: what
    // `augment_into` composes (geometry, then lighting, then hue).
    assert_eq!(
        lines.next().unwrap(),
        "order affine:30 RandomResizedCropGPU:30 lighting:40 Hue:40"
    );
    let sizes: Vec<u32> = lines
        .next()
        .unwrap()
        .strip_prefix("sizes ")
        .unwrap()
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    let (item, image) = (sizes[0], sizes[1] as usize);
    let mut originals = 0;
    while let Some(line) = lines.next() {
        let v: Vec<u64> = line
            .strip_prefix("original ")
            .unwrap()
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect();
        let (w, h) = (v[0] as u32, v[1] as u32);
        let rgb = original(w as usize, h as usize);
        assert_eq!(
            rgb.iter().map(|&p| p as u64).sum::<u64>(),
            v[2],
            "test image"
        );
        let dims = stored_dims(w, h, item);
        let mut cached = vec![0u8; dims.0 as usize * dims.1 as usize * 3];
        PadResizer::new().short_side_resize(&rgb, w, h, item, &mut cached);
        let img = CachedImage {
            pixels: &cached,
            size: dims,
            orig: (w, h),
            item,
            resize: ResizeMode::Crop,
        };
        let short = w.min(h) as f64;
        let to_orig = (w as f64 / dims.0 as f64, h as f64 / dims.1 as f64);
        let mut boxes = 0;
        while let Some(b) = lines.peek().and_then(|l| l.strip_prefix("box ")) {
            let f: Vec<&str> = b.split(' ').collect();
            let pct: (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            let bx: Vec<f64> = f[3..].iter().map(|v| v.parse().unwrap()).collect();
            let (ox, oy) = item_origin(ResizeMode::Crop, dims, item, pct);
            let ours = (ox as f64 * to_orig.0, oy as f64 * to_orig.1);
            let tol = short / item as f64;
            assert!(
                (ours.0 - bx[0]).abs() < tol && (ours.1 - bx[1]).abs() < tol,
                "{w}x{h} {} pct {pct:?}: ours {ours:?} vs fastai {bx:?} (tol {tol})",
                f[0]
            );
            assert_eq!((bx[2] - bx[0], bx[3] - bx[1]), (short, short));
            assert!(f[0] == "train" || pct == (0.5, 0.5));
            boxes += 1;
            lines.next();
        }
        assert_eq!(boxes, 5);
        let mut golden = |prefix: &str| -> Vec<f64> {
            let v: Vec<f64> = lines
                .next()
                .unwrap()
                .strip_prefix(prefix)
                .unwrap()
                .split(' ')
                .map(|v| v.parse().unwrap())
                .collect();
            assert_eq!(v.len(), 3 * image * image);
            v
        };
        let (fastai, bilinear) = (golden("valid "), golden("bilinear "));
        let run = |params: &AugmentParams| {
            let mut got = vec![0.0f32; 3 * image * image];
            augment_into(
                params,
                &img,
                image,
                &mut AugmentScratch::default(),
                &mut got,
            );
            got
        };
        let ours = run(&AugmentParams::validation());
        let (mean, max) = diff(&ours, &fastai);
        eprintln!("{w}x{h}: vs fastai's validation path: mean |diff| {mean:.5}, max {max:.5}");
        assert!(
            mean <= 1.0 / 255.0 && max <= 3.0 / 255.0,
            "{w}x{h}: mean {mean}, max {max}"
        );
        // Without fastai's area step the output is measurably different
        // (the bound above would see its absence).
        let (mean_b, _) = diff(&ours, &bilinear);
        eprintln!(
            "{w}x{h}: vs fastai's item sampled without the area step: mean |diff| {mean_b:.5}"
        );
        assert!(
            mean_b > 2.0 / 255.0,
            "{w}x{h}: the area step changes nothing? ({mean_b})"
        );
        let want = &fastai;
        // The same path one cached pixel off along the long side fails.
        let free = (dims.0.max(dims.1) - item) as f64;
        let (ox, oy) = item_origin(ResizeMode::Crop, dims, item, (0.5, 0.5));
        let off = ((ox.max(oy) + 1) as f64 + 0.5) / free;
        let shifted = AugmentParams {
            pad_pct: (off, off),
            ..AugmentParams::validation()
        };
        let (mean_off, _) = diff(&run(&shifted), want);
        eprintln!("{w}x{h}: one pixel off: mean |diff| {mean_off:.5}");
        assert!(
            mean_off > 2.0 / 255.0,
            "{w}x{h}: a 1-px shift goes unseen ({mean_off})"
        );
        originals += 1;
    }
    assert_eq!(originals, 2);
}
