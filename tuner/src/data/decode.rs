//! Image decoding and the item stage's resize: the cached form of an image
//! at the item size `S` (`[data] item_size`), from which every draw takes
//! its `S`×`S` item (see [`super::augment`]).
//!
//! * `resize = "crop"` (fastai's `Resize(S, method=ResizeMethod.Crop)`, the
//!   seed's): the image resized so that its *short* side is `S`, aspect kept
//!   ([`stored_dims`]: the long side becomes `round(long·S/short)`). fastai
//!   instead crops the square of side `short` from the original and resizes
//!   only that square; both are one PIL-style bilinear resample, so the
//!   crop of the cached image equals fastai's item up to the resampling
//!   order: the square's offset is rounded to whole pixels at `S` instead of
//!   at the original resolution (< 1 cached pixel), the long axis is scaled
//!   by `round(long·S/short)/long` instead of `S/short` (< 0.5 pixel over the
//!   whole side), and pixels at the crop's border see their neighbours
//!   outside it through the filter, where PIL clamps at the crop.
//! * `resize = "pad"` (`ResizeMethod.Pad, pad_mode=Zeros`): keep the aspect
//!   ratio, pad with zeros to a square, resize the square to `S`×`S`.
//!
//! For the pad method fastai computes the padded square in the *original* resolution, pads with
//! zeros, then resizes the whole square with PIL's bilinear filter (which
//! widens its triangle kernel when downscaling, i.e. antialiases). The zero
//! border is therefore blurred into the image edge exactly as here:
//! `fast_image_resize`'s convolution resizer uses the same kernel placement
//! and normalisation as Pillow, with u8 rounding between its two passes.
//!
//! The square's side and the placement follow fastai's float arithmetic to
//! the bit (`m = max(w/S, h/S)`, `side = int(m*S)`, `top-left =
//! int(0.5*(dim - side))`), so a side that rounds down (e.g. a 29-pixel-wide
//! image at S = 100 gives a 28-pixel square) crops one column just as fastai
//! does. The validation split of fastai centres the image (`pcts = 0.5`);
//! the training split's random placement is reproduced by the augmentation's
//! pad jitter (see [`super::augment`]).

use std::path::Path;

use fast_image_resize::{
    images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};

use super::error::{DataError, Result};

/// Where fastai's `Resize(method=Pad)` puts an image of `w`×`h` inside its
/// padded square, in the original resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PadGeometry {
    /// Side of the padded square before resizing.
    pub side: u32,
    /// First source column and row kept (non-zero only when `side` rounded
    /// below the image's extent and fastai crops).
    pub crop_x: u32,
    /// See `crop_x`.
    pub crop_y: u32,
    /// Source columns and rows kept.
    pub keep_w: u32,
    /// See `keep_w`.
    pub keep_h: u32,
    /// Zero columns left of the image and zero rows above it.
    pub pad_left: u32,
    /// See `pad_left`.
    pub pad_top: u32,
}

impl PadGeometry {
    /// fastai's placement for an image of `w`×`h` and target side `size`,
    /// with the image's top-left at fraction `pct` of the free space
    /// (`(0.5, 0.5)` = centred, as on the validation split).
    pub fn fastai(w: u32, h: u32, size: u32, pct: (f64, f64)) -> Self {
        assert!(w > 0 && h > 0 && size > 0, "empty image or size");
        let s = size as f64;
        let (rw, rh) = (w as f64 / s, h as f64 / s);
        // `op = operator.gt` for the Pad method: m is the larger ratio.
        let m = if rw > rh { rw } else { rh };
        // Python's int() truncates toward zero; `m*s` is positive.
        let side = ((m * s) as u32).max(1);
        let tl = |p: f64, dim: u32| -> i64 { (p * (dim as f64 - side as f64)).trunc() as i64 };
        let (tlx, tly) = (tl(pct.0, w), tl(pct.1, h));
        let axis = |t: i64, dim: u32| -> (u32, u32, u32) {
            // (crop start, kept length, padding before)
            let start = t.max(0) as u32;
            let keep = (start + side).min(dim) - start;
            let pad = (-t).max(0) as u32;
            (start, keep, pad)
        };
        let (crop_x, keep_w, pad_left) = axis(tlx, w);
        let (crop_y, keep_h, pad_top) = axis(tly, h);
        PadGeometry {
            side,
            crop_x,
            crop_y,
            keep_w,
            keep_h,
            pad_left,
            pad_top,
        }
    }
}

/// Pads and resizes RGB images; keeps its buffers between calls, so use one
/// per thread.
pub struct PadResizer {
    resizer: Resizer,
    canvas: Vec<u8>,
    options: ResizeOptions,
}

impl Default for PadResizer {
    fn default() -> Self {
        Self::new()
    }
}

impl PadResizer {
    /// A resizer with PIL's bilinear filter.
    pub fn new() -> Self {
        PadResizer {
            resizer: Resizer::new(),
            canvas: Vec::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        }
    }

    /// Writes the centred, zero-padded, resized `size`×`size` version of the
    /// interleaved RGB image `rgb` (`w`×`h`) into `out` (`size*size*3` bytes,
    /// interleaved RGB).
    pub fn pad_resize(&mut self, rgb: &[u8], w: u32, h: u32, size: u32, out: &mut [u8]) {
        assert_eq!(rgb.len(), w as usize * h as usize * 3, "rgb buffer size");
        assert_eq!(
            out.len(),
            size as usize * size as usize * 3,
            "out buffer size"
        );
        let g = PadGeometry::fastai(w, h, size, (0.5, 0.5));
        let side = g.side as usize;
        self.canvas.clear();
        self.canvas.resize(side * side * 3, 0);
        let row_bytes = g.keep_w as usize * 3;
        for y in 0..g.keep_h as usize {
            let src_row = (g.crop_y as usize + y) * w as usize + g.crop_x as usize;
            let dst_row = (g.pad_top as usize + y) * side + g.pad_left as usize;
            self.canvas[dst_row * 3..dst_row * 3 + row_bytes]
                .copy_from_slice(&rgb[src_row * 3..src_row * 3 + row_bytes]);
        }
        if g.side == size {
            out.copy_from_slice(&self.canvas);
            return;
        }
        let src = ImageRef::new(g.side, g.side, &self.canvas, PixelType::U8x3)
            .expect("canvas has side*side*3 bytes");
        let mut dst =
            fast_image_resize::images::Image::from_slice_u8(size, size, out, PixelType::U8x3)
                .expect("out has size*size*3 bytes");
        self.resizer
            .resize(&src, &mut dst, &self.options)
            .expect("same pixel type, non-empty images");
    }
}

/// Side of the cached form of a `w`×`h` image at item size `item` with
/// `resize = "crop"`: the short side becomes `item`, the long side
/// `round(long·item/short)` (at least `item`).
///
/// ```
/// use polytune::data::decode::stored_dims;
/// assert_eq!(stored_dims(500, 667, 460), (460, 614));
/// assert_eq!(stored_dims(8, 8, 8), (8, 8));
/// ```
pub fn stored_dims(w: u32, h: u32, item: u32) -> (u32, u32) {
    let (short, long) = (w.min(h).max(1) as u64, w.max(h) as u64);
    let scaled = ((long * item as u64 * 2 + short) / (2 * short)).max(item as u64);
    let scaled = u32::try_from(scaled).unwrap_or(u32::MAX);
    if w <= h {
        (item, scaled)
    } else {
        (scaled, item)
    }
}

impl PadResizer {
    /// Writes the `item`-short-side version of the interleaved RGB image
    /// `rgb` (`w`×`h`), of [`stored_dims`]`(w, h, item)`, into `out`
    /// (interleaved RGB of that size).
    pub fn short_side_resize(&mut self, rgb: &[u8], w: u32, h: u32, item: u32, out: &mut [u8]) {
        assert_eq!(rgb.len(), w as usize * h as usize * 3, "rgb buffer size");
        let (sw, sh) = stored_dims(w, h, item);
        assert_eq!(out.len(), sw as usize * sh as usize * 3, "out buffer size");
        if (sw, sh) == (w, h) {
            out.copy_from_slice(rgb);
            return;
        }
        let src = ImageRef::new(w, h, rgb, PixelType::U8x3).expect("rgb has w*h*3 bytes");
        let mut dst = fast_image_resize::images::Image::from_slice_u8(sw, sh, out, PixelType::U8x3)
            .expect("out has sw*sh*3 bytes");
        self.resizer
            .resize(&src, &mut dst, &self.options)
            .expect("same pixel type, non-empty images");
    }
}

/// Largest side of an image's cached form ([`stored_dims`]): an image whose
/// aspect ratio would make it longer is refused (it would not fit a cache).
pub const MAX_STORED_SIDE: u32 = 16384;

/// Largest width or height of an image to decode. The image's header is
/// read first and a larger image is an error naming the file and its size,
/// before any pixel is allocated: a few hundred KB of PNG can declare
/// 16000×16000 pixels.
pub const MAX_DECODE_SIDE: u32 = 8192;
/// Most bytes the decoder may allocate for one image (an 8192×8192 RGBA8
/// image). With the RGB copy (≤ 192 MiB) and the padded square (≤ 192 MiB)
/// a decoding thread holds at most about 450 MiB at any time.
pub const MAX_DECODE_ALLOC: u64 = 256 << 20;

/// An image that cannot be opened: missing (named as such) or unreadable.
fn open_error(path: &Path, e: std::io::Error) -> DataError {
    if e.kind() == std::io::ErrorKind::NotFound {
        DataError::MissingFile {
            what: "image",
            path: path.to_path_buf(),
        }
    } else {
        DataError::io(path, e)
    }
}

/// Decodes the image file at `path` (JPEG or PNG, any colour type) to
/// interleaved 8-bit RGB, returning `(pixels, width, height)`. Images wider
/// or taller than [`MAX_DECODE_SIDE`] are refused from their header.
///
/// A truncated JPEG is an error (the decoder would otherwise fill the
/// missing part with grey, silently): a JPEG must end with its EOI marker.
pub fn decode_rgb(path: &Path) -> Result<(Vec<u8>, u32, u32)> {
    let bytes = std::fs::read(path).map_err(|e| open_error(path, e))?;
    decode_rgb_bytes(path, &bytes)
}

/// Like [`decode_rgb`] on bytes already read; `path` names them in errors.
pub fn decode_rgb_bytes(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, u32, u32)> {
    let err = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(err("file is empty".into()));
    }
    let format = image::guess_format(bytes).map_err(|e| err(e.to_string()))?;
    if format == image::ImageFormat::Jpeg && !jpeg_has_eoi(bytes) {
        return Err(err("JPEG data is truncated (no end-of-image marker)".into()));
    }
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (w, h) = reader().into_dimensions().map_err(|e| err(e.to_string()))?;
    if w == 0 || h == 0 {
        return Err(err(format!("image is {w}x{h}")));
    }
    if w > MAX_DECODE_SIDE || h > MAX_DECODE_SIDE {
        return Err(err(format!(
            "image is {w}x{h} pixels, larger than the {MAX_DECODE_SIDE}x{MAX_DECODE_SIDE} that polytune decodes (downscale it first)"
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE);
    limits.max_image_height = Some(MAX_DECODE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut r = reader();
    r.limits(limits);
    let img = r.decode().map_err(|e| err(e.to_string()))?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(err(format!("image is {w}x{h}")));
    }
    Ok((img.into_rgb8().into_raw(), w, h))
}

/// Whether JPEG data ends with the EOI marker `FF D9`, allowing for the few
/// trailing padding bytes some writers append.
fn jpeg_has_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Decodes `path` and writes its padded, resized `size`×`size` RGB version
/// into `out`; returns the original `(width, height)`.
pub fn load_resized(
    path: &Path,
    size: u32,
    resizer: &mut PadResizer,
    out: &mut [u8],
) -> Result<(u32, u32)> {
    let (rgb, w, h) = decode_rgb(path)?;
    resizer.pad_resize(&rgb, w, h, size, out);
    Ok((w, h))
}

/// The width and height an image file declares in its header (no pixels
/// decoded); errors name the file.
pub fn image_dims(path: &Path) -> Result<(u32, u32)> {
    let err = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| open_error(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let (w, h) = reader.into_dimensions().map_err(|e| err(e.to_string()))?;
    if w == 0 || h == 0 {
        return Err(err(format!("image is {w}x{h}")));
    }
    Ok((w, h))
}

/// The cached form's width and height of a `w`×`h` image at item size
/// `item` for `resize`; an error (naming `path`) when it would be longer
/// than [`MAX_STORED_SIDE`].
pub fn cached_dims(
    path: &Path,
    (w, h): (u32, u32),
    item: u32,
    resize: super::augment::ResizeMode,
) -> Result<(u32, u32)> {
    let dims = match resize {
        super::augment::ResizeMode::Pad => (item, item),
        super::augment::ResizeMode::Crop => stored_dims(w, h, item),
    };
    if dims.0.max(dims.1) > MAX_STORED_SIDE {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "image is {w}x{h}: at item_size {item} its short-side resize would be {}x{} pixels, longer than {MAX_STORED_SIDE} (aspect ratio too extreme)",
                dims.0, dims.1
            ),
        });
    }
    Ok(dims)
}

/// Decodes `path` and writes its cached form at item size `item` (see the
/// module docs) into `out`, which must hold `cached_dims` bytes; returns
/// the original `(width, height)`. An image whose pixels disagree with the
/// size `expect` read from its header is an error.
pub fn load_item(
    path: &Path,
    item: u32,
    resize: super::augment::ResizeMode,
    expect: (u32, u32),
    resizer: &mut PadResizer,
    out: &mut [u8],
) -> Result<(u32, u32)> {
    let (rgb, w, h) = decode_rgb(path)?;
    if (w, h) != expect {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "decoded {w}x{h} pixels, the header says {}x{}",
                expect.0, expect.1
            ),
        });
    }
    match resize {
        super::augment::ResizeMode::Pad => resizer.pad_resize(&rgb, w, h, item, out),
        super::augment::ResizeMode::Crop => resizer.short_side_resize(&rgb, w, h, item, out),
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastai_geometry_matches_python() {
        // Values printed by fastai's formula in Python (see module docs).
        let g = PadGeometry::fastai(500, 375, 224, (0.5, 0.5));
        assert_eq!(
            (g.side, g.pad_left, g.pad_top, g.keep_w, g.keep_h),
            (500, 0, 62, 500, 375)
        );
        let g = PadGeometry::fastai(375, 500, 224, (0.5, 0.5));
        assert_eq!((g.side, g.pad_left, g.pad_top), (500, 62, 0));
        let g = PadGeometry::fastai(1000, 667, 224, (0.5, 0.5));
        assert_eq!((g.side, g.pad_top), (1000, 166));
        // 29/100*100 = 28.999999999999996 in f64: fastai crops a column.
        let g = PadGeometry::fastai(29, 20, 100, (0.5, 0.5));
        assert_eq!(
            (g.side, g.crop_x, g.keep_w, g.pad_left, g.pad_top, g.keep_h),
            (28, 0, 28, 0, 4, 20)
        );
        // Random placement: pct 0 puts all padding below, pct 1 above.
        let g = PadGeometry::fastai(8, 4, 4, (0.0, 0.0));
        assert_eq!(g.pad_top, 0);
        let g = PadGeometry::fastai(8, 4, 4, (1.0, 1.0));
        assert_eq!(g.pad_top, 4);
    }

    #[test]
    fn jpeg_eoi_check() {
        assert!(jpeg_has_eoi(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]));
        assert!(jpeg_has_eoi(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9, 0, 0]));
        assert!(!jpeg_has_eoi(&[0xFF, 0xD8, 1, 2, 3, 4]));
    }
}
