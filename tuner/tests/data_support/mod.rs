//! Fixture writers shared by the data tests: MAT v5 files (plain and
//! zlib-compressed, either byte order), JPEG/PNG images, and the Flowers-102,
//! CSV and folder layouts built from them.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// How a numeric variable's values are stored in the file.
#[derive(Clone, Copy)]
pub enum Store {
    /// miDOUBLE.
    Double,
    /// miUINT8 inside a double-class array (MATLAB's compact form).
    Uint8,
    /// miUINT16 inside a double-class array.
    Uint16,
    /// miINT32 inside an int32-class array.
    Int32,
}

/// A variable to write: name, dims, values, storage.
pub struct Var<'a> {
    pub name: &'a str,
    pub dims: Vec<i32>,
    pub values: Vec<f64>,
    pub store: Store,
}

impl<'a> Var<'a> {
    /// A 1×n row vector of doubles.
    pub fn row(name: &'a str, values: &[f64]) -> Self {
        Var {
            name,
            dims: vec![1, values.len() as i32],
            values: values.to_vec(),
            store: Store::Double,
        }
    }
}

struct W {
    be: bool,
    buf: Vec<u8>,
}

impl W {
    fn u32(&mut self, v: u32) {
        let b = if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }
    fn pad8(&mut self) {
        while !self.buf.len().is_multiple_of(8) {
            self.buf.push(0);
        }
    }
    /// A sub-element: small form when `data.len() <= 4` and `small` is set.
    fn element(&mut self, ty: u32, data: &[u8], small: bool) {
        if small && data.len() <= 4 {
            self.u32(((data.len() as u32) << 16) | ty);
            let mut d = data.to_vec();
            d.resize(4, 0);
            self.buf.extend_from_slice(&d);
        } else {
            self.u32(ty);
            self.u32(data.len() as u32);
            self.buf.extend_from_slice(data);
            self.pad8();
        }
    }
}

fn matrix_element(v: &Var, be: bool) -> Vec<u8> {
    let mut w = W {
        be,
        buf: Vec::new(),
    };
    let class = match v.store {
        Store::Int32 => 12u32,
        _ => 6, // double
    };
    // Array flags.
    let mut flags = Vec::new();
    let put = |x: u32, out: &mut Vec<u8>| {
        out.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() })
    };
    put(class, &mut flags);
    put(0, &mut flags);
    w.element(6, &flags, false);
    let mut dims = Vec::new();
    for &d in &v.dims {
        put(d as u32, &mut dims);
    }
    w.element(5, &dims, false);
    w.element(1, v.name.as_bytes(), true);
    let mut data = Vec::new();
    let ty = match v.store {
        Store::Double => {
            for &x in &v.values {
                data.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
            }
            9
        }
        Store::Uint8 => {
            data.extend(v.values.iter().map(|&x| x as u8));
            2
        }
        Store::Uint16 => {
            for &x in &v.values {
                let x = x as u16;
                data.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
            }
            4
        }
        Store::Int32 => {
            for &x in &v.values {
                let x = x as i32;
                data.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
            }
            5
        }
    };
    w.element(ty, &data, false);
    let body = w.buf;
    let mut out = W {
        be,
        buf: Vec::new(),
    };
    out.u32(14);
    out.u32(body.len() as u32);
    out.buf.extend_from_slice(&body);
    out.buf
}

/// A complete MAT v5 file holding `vars`.
pub fn mat_bytes(vars: &[Var], compressed: bool, be: bool) -> Vec<u8> {
    let mut text = b"MATLAB 5.0 MAT-file, Platform: test, Created by polytune tests".to_vec();
    text.resize(116, b' ');
    let mut out = W { be, buf: text };
    out.buf.extend_from_slice(&[0u8; 8]); // subsystem offset
    let version: u16 = 0x0100;
    out.buf.extend_from_slice(&if be {
        version.to_be_bytes()
    } else {
        version.to_le_bytes()
    });
    out.buf.extend_from_slice(if be { b"MI" } else { b"IM" });
    for v in vars {
        let m = matrix_element(v, be);
        if compressed {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&m).unwrap();
            let z = z.finish().unwrap();
            out.u32(15);
            out.u32(z.len() as u32);
            out.buf.extend_from_slice(&z);
        } else {
            out.buf.extend_from_slice(&m);
        }
    }
    out.buf
}

/// Writes `vars` as a MAT file at `path`.
pub fn write_mat(path: &Path, vars: &[Var], compressed: bool) {
    std::fs::write(path, mat_bytes(vars, compressed, false)).unwrap();
}

/// An RGB image whose pixel (x, y) is `f(x, y)`.
pub fn rgb_image(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)))
}

/// Saves `img` as JPEG (quality 95) or PNG according to the extension.
pub fn save(path: &Path, img: &image::RgbImage) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let ext = path
        .extension()
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    if ext == "png" {
        img.save_with_format(path, image::ImageFormat::Png).unwrap();
    } else {
        let f = std::fs::File::create(path).unwrap();
        let mut enc =
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 95);
        enc.encode_image(img).unwrap();
    }
}

/// A flat-colour image that identifies `(label, k)` (JPEG keeps flat colours
/// within a couple of levels).
pub fn flat_color(label: usize, k: usize) -> [u8; 3] {
    [(40 + 20 * label) as u8, (30 + 50 * k) as u8, 200]
}

/// A Flowers-102 layout under `root`: `labels` (1-based, per image id), the
/// three id lists; image `id` is a flat-colour JPEG of `w`×`h`.
pub fn flowers_fixture(
    root: &Path,
    labels: &[f64],
    trnid: &[f64],
    valid: &[f64],
    tstid: &[f64],
    w: u32,
    h: u32,
) {
    std::fs::create_dir_all(root.join("jpg")).unwrap();
    for (i, &l) in labels.iter().enumerate() {
        let id = i + 1;
        let c = flat_color(l as usize, id % 4);
        save(
            &root.join(format!("jpg/image_{id:05}.jpg")),
            &rgb_image(w, h, |_, _| c),
        );
    }
    write_mat(
        &root.join("imagelabels.mat"),
        &[Var::row("labels", labels)],
        true,
    );
    write_mat(
        &root.join("setid.mat"),
        &[
            Var::row("trnid", trnid),
            Var::row("valid", valid),
            Var::row("tstid", tstid),
        ],
        true,
    );
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `dir/name`.
pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
