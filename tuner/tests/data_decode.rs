//! Decoding and the fastai-style pad + resize, against hand-computed pixels
//! and a naive f64 implementation of PIL's bilinear resampling.

use crate::data_support;

use data_support::{rgb_image, save, tempdir};
use polytune::data::decode::{decode_rgb, PadGeometry, PadResizer};
use polytune::data::DataError;

fn resize(rgb: &[u8], w: u32, h: u32, size: u32) -> Vec<u8> {
    let mut out = vec![0u8; (size * size * 3) as usize];
    PadResizer::new().pad_resize(rgb, w, h, size, &mut out);
    out
}

/// PIL's `ImagingResample` with the bilinear (triangle) filter, one axis:
/// support scaled by the downscale factor, weights normalised, u8 rounding.
fn pil_axis(src: &[f64], in_len: usize, out_len: usize) -> Vec<f64> {
    let scale = in_len as f64 / out_len as f64;
    let fscale = scale.max(1.0);
    let support = fscale; // triangle support 1
    (0..out_len)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5).floor().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).floor().min(in_len as f64)) as usize;
            let mut ws = Vec::new();
            for x in xmin..xmax {
                let t = ((x as f64 - center + 0.5) / fscale).abs();
                ws.push(if t < 1.0 { 1.0 - t } else { 0.0 });
            }
            let total: f64 = ws.iter().sum();
            let v: f64 = ws
                .iter()
                .enumerate()
                .map(|(k, w)| w * src[xmin + k])
                .sum::<f64>()
                / total;
            v.round().clamp(0.0, 255.0)
        })
        .collect()
}

/// Where fastai puts the source pixels, transcribed from its Python with no
/// code from the crate: `Resize.encodes` with `ResizeMethod.Pad` and
/// `crop_pad` → `_do_crop_pad` (fastai 2.7, `vision/augment.py`):
///
/// ```text
/// m = w/size if w/size > h/size else h/size      # op = operator.gt for Pad
/// cp_sz = (int(m*size), int(m*size))
/// tl = (int(pct[0]*(w-cp_sz[0])), int(pct[1]*(h-cp_sz[1])))
/// crop box (max(tl, 0), min(tl + cp_sz, orig)); pad before = max(-tl, 0)
/// ```
///
/// Returns the padded square's side and, per source pixel kept, where it
/// lands: `(side, [(src_x, src_y, dst_x, dst_y)])`.
fn fastai_placement(
    w: u32,
    h: u32,
    size: u32,
    pct: (f64, f64),
) -> (usize, Vec<(usize, usize, usize, usize)>) {
    let (w, h, size) = (w as f64, h as f64, size as f64);
    let m = if w / size > h / size {
        w / size
    } else {
        h / size
    };
    // Python's int() truncates toward zero (`as i64` does the same).
    let cp = (m * size) as i64;
    let tl = [
        (pct.0 * (w - cp as f64)) as i64,
        (pct.1 * (h - cp as f64)) as i64,
    ];
    let orig = [w as i64, h as i64];
    let start = [tl[0].max(0), tl[1].max(0)];
    let end = [(tl[0] + cp).min(orig[0]), (tl[1] + cp).min(orig[1])];
    let pad = [(-tl[0]).max(0), (-tl[1]).max(0)];
    let mut placed = Vec::new();
    for sy in start[1]..end[1] {
        for sx in start[0]..end[0] {
            let (dx, dy) = (sx - start[0] + pad[0], sy - start[1] + pad[1]);
            assert!(dx < cp && dy < cp, "fastai's placement leaves the square");
            placed.push((sx as usize, sy as usize, dx as usize, dy as usize));
        }
    }
    (cp as usize, placed)
}

#[test]
fn pad_geometry_matches_fastai_by_hand() {
    // (w, h, size, pct) → (side, crop_x, crop_y, keep_w, keep_h, pad_left,
    // pad_top), each worked out by hand from fastai's formulas above.
    let cases = [
        // Landscape: m = 37/16, side int(37.0) = 37; tl = (0, int(-7.0)).
        ((37, 23, 16, (0.5, 0.5)), (37, 0, 0, 37, 23, 0, 7)),
        // Portrait: the same, transposed.
        ((23, 37, 16, (0.5, 0.5)), (37, 0, 0, 23, 37, 7, 0)),
        // Odd free space: tl = (0, int(0.5·(20−25))) = int(−2.5) = −2.
        ((25, 20, 10, (0.5, 0.5)), (25, 0, 0, 25, 20, 0, 2)),
        // 0.29·100 = 28.999… → side 28 < 29: fastai crops one column,
        // tl = (int(0.5), int(−4.0)) = (0, −4).
        ((29, 20, 100, (0.5, 0.5)), (28, 0, 0, 28, 20, 0, 4)),
        // Random placement (training): tl = (0, int(0.9·(30−50))) = −18.
        ((50, 30, 8, (0.1, 0.9)), (50, 0, 0, 50, 30, 0, 18)),
        ((30, 50, 8, (0.0, 1.0)), (50, 0, 0, 30, 50, 0, 0)),
        ((30, 50, 8, (1.0, 0.0)), (50, 0, 0, 30, 50, 20, 0)),
        // Square: nothing to pad.
        ((9, 9, 4, (0.3, 0.7)), (9, 0, 0, 9, 9, 0, 0)),
    ];
    for ((w, h, size, pct), want) in cases {
        let g = PadGeometry::fastai(w, h, size, pct);
        let got = (
            g.side, g.crop_x, g.crop_y, g.keep_w, g.keep_h, g.pad_left, g.pad_top,
        );
        assert_eq!(got, want, "{w}x{h} at size {size}, pct {pct:?}");
    }
}

#[test]
fn pad_geometry_matches_transcribed_fastai_over_sizes() {
    // Every pixel the crate keeps lands where fastai's own steps put it.
    for (w, h) in [
        (1u32, 1u32),
        (3, 7),
        (29, 20),
        (61, 40),
        (100, 33),
        (17, 64),
    ] {
        for size in [1u32, 7, 16, 100, 224] {
            for pct in [(0.5, 0.5), (0.0, 1.0), (0.37, 0.81)] {
                let (side, placed) = fastai_placement(w, h, size, pct);
                let g = PadGeometry::fastai(w, h, size, pct);
                let what = format!("{w}x{h} at size {size}, pct {pct:?}");
                assert_eq!(g.side as usize, side, "{what}: side");
                let mut got = Vec::new();
                for y in 0..g.keep_h as usize {
                    for x in 0..g.keep_w as usize {
                        got.push((
                            g.crop_x as usize + x,
                            g.crop_y as usize + y,
                            g.pad_left as usize + x,
                            g.pad_top as usize + y,
                        ));
                    }
                }
                assert_eq!(got, placed, "{what}: placement");
            }
        }
    }
}

/// fastai's Resize(Pad, Zeros) with PIL bilinear, written naively.
fn reference(rgb: &[u8], w: u32, h: u32, size: u32) -> Vec<u8> {
    let (side, placed) = fastai_placement(w, h, size, (0.5, 0.5));
    let s = size as usize;
    let mut canvas = vec![0.0f64; side * side * 3];
    for (sx, sy, dx, dy) in placed {
        for c in 0..3 {
            canvas[(dy * side + dx) * 3 + c] = rgb[(sy * w as usize + sx) * 3 + c] as f64;
        }
    }
    if side == s {
        return canvas.iter().map(|&v| v as u8).collect();
    }
    // Horizontal pass, then vertical (as PIL does).
    let mut horiz = vec![0.0; side * s * 3];
    for y in 0..side {
        for c in 0..3 {
            let row: Vec<f64> = (0..side).map(|x| canvas[(y * side + x) * 3 + c]).collect();
            for (x, v) in pil_axis(&row, side, s).into_iter().enumerate() {
                horiz[(y * s + x) * 3 + c] = v;
            }
        }
    }
    let mut out = vec![0u8; s * s * 3];
    for x in 0..s {
        for c in 0..3 {
            let col: Vec<f64> = (0..side).map(|y| horiz[(y * s + x) * 3 + c]).collect();
            for (y, v) in pil_axis(&col, side, s).into_iter().enumerate() {
                out[(y * s + x) * 3 + c] = v as u8;
            }
        }
    }
    out
}

#[test]
fn padding_without_resize_is_exact() {
    // 4×2 image, size 4: one zero row above and one below, pixels unchanged.
    let rgb: Vec<u8> = (0..4 * 2 * 3).map(|i| 10 + i as u8).collect();
    let out = resize(&rgb, 4, 2, 4);
    let row = 4 * 3;
    assert!(out[..row].iter().all(|&v| v == 0));
    assert_eq!(&out[row..3 * row], &rgb[..]);
    assert!(out[3 * row..].iter().all(|&v| v == 0));
    // Portrait: zero columns left and right.
    let out = resize(&rgb, 2, 4, 4);
    for y in 0..4 {
        assert_eq!(&out[(y * 4) * 3..(y * 4) * 3 + 3], &[0, 0, 0]);
        assert_eq!(
            &out[(y * 4 + 1) * 3..(y * 4 + 3) * 3],
            &rgb[y * 6..y * 6 + 6]
        );
        assert_eq!(&out[(y * 4 + 3) * 3..(y * 4 + 4) * 3], &[0, 0, 0]);
    }
}

#[test]
fn downscale_matches_hand_computed_pixels() {
    // 8×4 of value 210 → padded to 8×8 (2 zero rows above and below) →
    // 4×4. Bilinear with support 2 (scale 2): output row 0 sees input rows
    // 0,1,2 with weights 3/7,3/7,1/7 → 210/7 = 30; row 1 sees rows 1..4
    // with 1/8,3/8,3/8,1/8 → 210·7/8 = 183.75 → 184.
    let rgb = vec![210u8; 8 * 4 * 3];
    let out = resize(&rgb, 8, 4, 4);
    let want_rows = [30i32, 184, 184, 30];
    for y in 0..4 {
        for x in 0..4 {
            for c in 0..3 {
                let got = out[(y * 4 + x) * 3 + c] as i32;
                assert!(
                    (got - want_rows[y]).abs() <= 1,
                    "({x},{y},{c}) = {got}, want {}",
                    want_rows[y]
                );
            }
        }
    }
}

#[test]
fn random_images_match_naive_pil_bilinear() {
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 56) as u8
    };
    // Landscape and portrait downscales, an upscale, and fastai's crop case
    // (29 px at size 100 rounds to a 28-px square).
    for &(w, h, size) in &[
        (37u32, 23u32, 16u32),
        (23, 37, 16),
        (50, 50, 7),
        (5, 3, 12),
        (29, 20, 100),
        (61, 40, 224),
    ] {
        let rgb: Vec<u8> = (0..w * h * 3).map(|_| next()).collect();
        let got = resize(&rgb, w, h, size);
        let want = reference(&rgb, w, h, size);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= 1, "{w}x{h} -> {size}: max difference {worst}");
    }
}

#[test]
fn jpeg_and_png_decode_to_rgb() {
    let dir = tempdir();
    let img = rgb_image(
        40,
        30,
        |x, _| if x < 20 { [200, 30, 60] } else { [20, 220, 90] },
    );
    let jpg = dir.path().join("a.jpg");
    let png = dir.path().join("a.PNG");
    save(&jpg, &img);
    save(&png, &img);
    let (px, w, h) = decode_rgb(&png).unwrap();
    assert_eq!((w, h), (40, 30));
    assert_eq!(px, img.as_raw().clone());
    let (px, w, h) = decode_rgb(&jpg).unwrap();
    assert_eq!((w, h), (40, 30));
    // Away from the colour edge, JPEG keeps flat colours within a few levels.
    for (x, want) in [(5usize, [200u8, 30, 60]), (35, [20, 220, 90])] {
        let o = (15 * 40 + x) * 3;
        for c in 0..3 {
            assert!(
                (px[o + c] as i32 - want[c] as i32).abs() <= 4,
                "x={x} c={c}: {}",
                px[o + c]
            );
        }
    }
    // Greyscale PNGs become RGB with equal channels.
    let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 50 + y * 7) as u8]));
    let gp = dir.path().join("g.png");
    grey.save(&gp).unwrap();
    let (px, _, _) = decode_rgb(&gp).unwrap();
    assert_eq!(&px[..6], &[0, 0, 0, 50, 50, 50]);
}

#[test]
fn corrupt_truncated_and_missing_images_name_the_file() {
    let dir = tempdir();
    let jpg = dir.path().join("ok.jpg");
    save(
        &jpg,
        &rgb_image(64, 48, |x, y| [(x * 4) as u8, (y * 5) as u8, 7]),
    );
    let bytes = std::fs::read(&jpg).unwrap();

    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = decode_rgb(&truncated).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("truncated.jpg"), "{e}");

    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"this is not an image at all").unwrap();
    let e = decode_rgb(&garbage).unwrap_err();
    assert!(
        matches!(e, DataError::Decode { .. }) && e.to_string().contains("garbage.jpg"),
        "{e}"
    );

    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let e = decode_rgb(&empty).unwrap_err();
    assert!(
        e.to_string().contains("empty.jpg") && e.to_string().contains("empty"),
        "{e}"
    );

    // A JPEG whose entropy data is damaged (header intact, EOI present).
    let mut damaged = bytes.clone();
    let n = damaged.len();
    for b in &mut damaged[n / 2..n / 2 + 8] {
        *b = 0xFF;
    }
    let dpath = dir.path().join("damaged.jpg");
    std::fs::write(&dpath, &damaged).unwrap();
    // Damaged scan data may decode to garbage pixels (as with PIL); it must
    // not panic, and an error, if any, names the file.
    if let Err(e) = decode_rgb(&dpath) {
        assert!(e.to_string().contains("damaged.jpg"), "{e}");
    }

    let e = decode_rgb(&dir.path().join("nope.jpg")).unwrap_err();
    assert!(
        matches!(e, DataError::MissingFile { .. }) && e.to_string().contains("nope.jpg"),
        "{e}"
    );
}
