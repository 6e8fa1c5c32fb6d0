//! The augmentation against golden outputs of fastai's transforms recomputed
//! in float64 PyTorch (`tests/data_golden/augment_golden.py`, which uses
//! torch's own `affine_grid`, `grid_sample` and `linalg.solve`).

use polytune::data::augment::{augment_into, ResizeMode};
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
            resize: ResizeMode::Pad,
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
            &image,
            size,
            (size as u32, size as u32),
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
