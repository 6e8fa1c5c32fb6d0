//! A small reader for MATLAB Level 5 MAT-files (the format of Flowers-102's
//! `imagelabels.mat` and `setid.mat`).
//!
//! It reads numeric arrays (any numeric class, stored in any numeric MAT data
//! type, including MATLAB's compact storage of doubles as small integers),
//! whether plain or zlib-compressed (`miCOMPRESSED` around `miMATRIX`), in
//! either byte order. Cell, struct, object, char and sparse variables are
//! listed by name but not decoded. HDF5-based v7.3 files are rejected with a
//! clear message.
//!
//! Why not a crate: the one maintained MAT reader on crates.io (`matfile`)
//! pulls in nom and libflate for what is ~300 lines here, and its parse
//! errors do not name the variable or offset; this reader's do.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{DataError, Result};

/// Size of the fixed MAT v5 file header.
const HEADER_LEN: usize = 128;
/// Upper bound on one decompressed variable, so a corrupt length cannot make
/// the reader allocate without limit (the Flowers files decompress to ~70 KB).
const MAX_DECOMPRESSED: u64 = 1 << 30;

// MAT data types (Table 1-1 of the MAT-File Format document).
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;

/// The MATLAB class of an array (`mxCLASS`), as stored in its array flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatClass {
    /// Cell array (not decoded).
    Cell,
    /// Struct (not decoded).
    Struct,
    /// Object (not decoded).
    Object,
    /// Character array (not decoded).
    Char,
    /// Sparse matrix (not decoded).
    Sparse,
    /// `double`.
    Double,
    /// `single`.
    Single,
    /// `int8`.
    Int8,
    /// `uint8`.
    Uint8,
    /// `int16`.
    Int16,
    /// `uint16`.
    Uint16,
    /// `int32`.
    Int32,
    /// `uint32`.
    Uint32,
    /// `int64`.
    Int64,
    /// `uint64`.
    Uint64,
    /// Any other class code (function handles, opaque objects, ...).
    Other(u8),
}

impl MatClass {
    fn from_code(code: u8) -> Self {
        match code {
            1 => MatClass::Cell,
            2 => MatClass::Struct,
            3 => MatClass::Object,
            4 => MatClass::Char,
            5 => MatClass::Sparse,
            6 => MatClass::Double,
            7 => MatClass::Single,
            8 => MatClass::Int8,
            9 => MatClass::Uint8,
            10 => MatClass::Int16,
            11 => MatClass::Uint16,
            12 => MatClass::Int32,
            13 => MatClass::Uint32,
            14 => MatClass::Int64,
            15 => MatClass::Uint64,
            other => MatClass::Other(other),
        }
    }

    /// Whether the reader decodes arrays of this class.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            MatClass::Double
                | MatClass::Single
                | MatClass::Int8
                | MatClass::Uint8
                | MatClass::Int16
                | MatClass::Uint16
                | MatClass::Int32
                | MatClass::Uint32
                | MatClass::Int64
                | MatClass::Uint64
        )
    }
}

/// One top-level variable of a MAT file.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// The variable's name.
    pub name: String,
    /// Its MATLAB class.
    pub class: MatClass,
    /// Its dimensions (at least two, MATLAB's column-major order).
    pub dims: Vec<usize>,
    /// Whether it has an imaginary part (not kept).
    pub complex: bool,
    /// The real part in column-major order, converted to f64; empty for
    /// classes that are not decoded (see [`MatClass::is_numeric`]).
    pub data: Vec<f64>,
}

/// The variables of a MAT v5 file.
#[derive(Debug, Clone)]
pub struct MatFile {
    path: PathBuf,
    vars: Vec<MatArray>,
}

impl MatFile {
    /// Reads and parses the MAT file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::MissingFile {
                    what: "MAT file",
                    path: path.to_path_buf(),
                }
            } else {
                DataError::io(path, e)
            }
        })?;
        Self::parse(path, &bytes)
    }

    /// Parses MAT file bytes; `path` is only used in error messages.
    pub fn parse(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |message: String| DataError::Mat {
            path: path.clone(),
            message,
        };
        if bytes.len() < HEADER_LEN {
            return Err(err(format!(
                "file is {} bytes, shorter than the 128-byte MAT v5 header",
                bytes.len()
            )));
        }
        if bytes.starts_with(b"MATLAB 7.3") {
            return Err(err(
                "MAT v7.3 (HDF5) files are not supported; save with `-v7` or `-v6`".into(),
            ));
        }
        if bytes[..4].contains(&0) {
            return Err(err(
                "not a MAT v5 file (its header text is missing; Level 4 files are not supported)"
                    .into(),
            ));
        }
        let big_endian = match &bytes[126..128] {
            b"IM" => false,
            b"MI" => true,
            other => {
                return Err(err(format!(
                    "bad endian indicator {:?} at byte 126 (expected \"IM\" or \"MI\")",
                    String::from_utf8_lossy(other)
                )))
            }
        };
        let mut vars = Vec::new();
        let mut cur = Cursor {
            bytes,
            pos: HEADER_LEN,
            big_endian,
            base: 0,
        };
        while cur.remaining() > 0 {
            let start = cur.pos;
            if cur.remaining() < 8 {
                return Err(err(format!(
                    "truncated data element tag at byte {start} ({} bytes left)",
                    cur.remaining()
                )));
            }
            let tag = cur.tag().map_err(&err)?;
            match tag.ty {
                MI_COMPRESSED => {
                    let body = cur
                        .take(tag.len)
                        .map_err(|m| err(format!("compressed element at byte {start}: {m}")))?;
                    let inflated = inflate(body)
                        .map_err(|m| err(format!("compressed element at byte {start}: {m}")))?;
                    // A compressed element holds one ordinary data element;
                    // offsets inside it are reported relative to the element.
                    let mut inner = Cursor {
                        bytes: &inflated,
                        pos: 0,
                        big_endian,
                        base: start,
                    };
                    let inner_tag = inner
                        .tag()
                        .map_err(|m| err(format!("compressed element at byte {start}: {m}")))?;
                    if inner_tag.ty == MI_MATRIX {
                        let body = inner
                            .take(inner_tag.len)
                            .map_err(|m| err(format!("compressed element at byte {start}: {m}")))?;
                        vars.push(parse_matrix(body, big_endian, start).map_err(&err)?);
                    }
                    // Compressed elements are not padded to 8 bytes.
                }
                MI_MATRIX => {
                    let body = cur
                        .take(tag.len)
                        .map_err(|m| err(format!("matrix element at byte {start}: {m}")))?;
                    vars.push(parse_matrix(body, big_endian, start).map_err(&err)?);
                    cur.align8();
                }
                _ => {
                    // Other top-level elements carry no variables: skip them.
                    cur.take(if tag.small { 4 } else { tag.len })
                        .map_err(|m| err(format!("element at byte {start}: {m}")))?;
                    cur.align8();
                }
            }
        }
        Ok(MatFile { path, vars })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All variables, in file order.
    pub fn variables(&self) -> &[MatArray] {
        &self.vars
    }

    /// The variable called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&MatArray> {
        self.vars.iter().find(|v| v.name == name)
    }

    /// The numeric, real vector (1×n or n×1) called `name`, as f64 values.
    ///
    /// Errors name the file and variable when it is missing, not numeric,
    /// complex, or not a vector.
    pub fn vector(&self, name: &str) -> Result<&[f64]> {
        let var = self
            .get(name)
            .ok_or_else(|| DataError::MatVariableMissing {
                path: self.path.clone(),
                name: name.to_string(),
                found: if self.vars.is_empty() {
                    "none".into()
                } else {
                    self.vars
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?;
        let err = |message: String| DataError::Mat {
            path: self.path.clone(),
            message: format!("variable `{name}`: {message}"),
        };
        if !var.class.is_numeric() {
            return Err(err(format!("is of class {:?}, not numeric", var.class)));
        }
        if var.complex {
            return Err(err("is complex, expected real numbers".into()));
        }
        let non_singleton = var.dims.iter().filter(|&&d| d != 1).count();
        if non_singleton > 1 {
            return Err(err(format!(
                "has dimensions {:?}, expected a vector",
                var.dims
            )));
        }
        Ok(&var.data)
    }
}

/// A data element tag.
struct Tag {
    ty: u32,
    /// Data bytes of the element (for a small element: those used of the 4
    /// bytes that follow the first tag word).
    len: usize,
    /// Whether the element uses the packed "small data element" form.
    small: bool,
}

/// A bounds-checked reader over MAT bytes. Error strings carry absolute
/// offsets (`base` + position) so users can find the spot with a hex dump.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    big_endian: bool,
    base: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "needs {n} bytes at byte {} but only {} remain (truncated file?)",
                self.offset(),
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn align8(&mut self) {
        let pad = (8 - self.pos % 8) % 8;
        self.pos = (self.pos + pad).min(self.bytes.len());
    }

    /// Reads a tag; for the "small data element" form (data packed into the
    /// tag) the returned length is that of the 4 data bytes that follow.
    fn tag(&mut self) -> std::result::Result<Tag, String> {
        let first = self.u32()?;
        if first >> 16 != 0 {
            // Small element: 2 bytes type, 2 bytes length, 4 bytes data.
            let len = (first >> 16) as usize;
            if len > 4 {
                return Err(format!(
                    "small data element at byte {} claims {len} bytes (at most 4)",
                    self.offset() - 4
                ));
            }
            return Ok(Tag {
                ty: first & 0xffff,
                len,
                small: true,
            });
        }
        let len = self.u32()? as usize;
        Ok(Tag {
            ty: first,
            len,
            small: false,
        })
    }

    /// Reads a sub-element of a matrix: returns its type and data bytes, and
    /// skips the padding after it.
    fn sub_element(&mut self, what: &str) -> std::result::Result<(u32, &'a [u8]), String> {
        let at = self.offset();
        let tag = self.tag().map_err(|m| format!("{what}: {m}"))?;
        if tag.small {
            let data = self.take(4).map_err(|m| format!("{what}: {m}"))?;
            return Ok((tag.ty, &data[..tag.len]));
        }
        let data = self
            .take(tag.len)
            .map_err(|m| format!("{what} at byte {at}: {m}"))?;
        self.align8();
        Ok((tag.ty, data))
    }
}

fn inflate(body: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(body)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zlib data is corrupt: {e}"))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(format!(
            "decompresses to more than {MAX_DECOMPRESSED} bytes"
        ));
    }
    Ok(out)
}

/// Parses the body of an `miMATRIX` element (after its tag). `at` is the
/// file offset of the element, for messages.
fn parse_matrix(body: &[u8], big_endian: bool, at: usize) -> std::result::Result<MatArray, String> {
    let mut cur = Cursor {
        bytes: body,
        pos: 0,
        big_endian,
        base: 0,
    };
    let ctx = |m: String| format!("matrix element at byte {at}: {m}");
    // Array flags: class in the low byte of the first u32, flag bits above it.
    let (ty, flags) = cur.sub_element("array flags").map_err(ctx)?;
    if ty != MI_UINT32 || flags.len() < 8 {
        return Err(ctx(format!(
            "array flags have type {ty} and {} bytes (expected miUINT32, 8 bytes)",
            flags.len()
        )));
    }
    let word = read_u32(&flags[..4], big_endian);
    let class = MatClass::from_code((word & 0xff) as u8);
    let complex = word & 0x0800 != 0;

    let (ty, dims_raw) = cur.sub_element("dimensions").map_err(ctx)?;
    if ty != MI_INT32 || dims_raw.len() % 4 != 0 || dims_raw.len() < 8 {
        return Err(ctx(format!(
            "dimensions have type {ty} and {} bytes (expected miINT32, at least 2 values)",
            dims_raw.len()
        )));
    }
    let mut dims = Vec::with_capacity(dims_raw.len() / 4);
    for c in dims_raw.chunks_exact(4) {
        let d = read_u32(c, big_endian) as i32;
        if d < 0 {
            return Err(ctx(format!("negative dimension {d}")));
        }
        dims.push(d as usize);
    }

    let (ty, name_raw) = cur.sub_element("array name").map_err(ctx)?;
    if ty != MI_INT8 && ty != MI_UTF8 && ty != MI_UINT8 {
        return Err(ctx(format!("array name has type {ty}, expected miINT8")));
    }
    let name = String::from_utf8_lossy(name_raw).into_owned();
    let ctx = |m: String| format!("variable `{name}` (matrix element at byte {at}): {m}");

    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| ctx(format!("dimensions {dims:?} overflow")))?;
    let mut data = Vec::new();
    if class.is_numeric() {
        let (ty, raw) = cur.sub_element("real part").map_err(ctx)?;
        data = decode_numeric(ty, raw, big_endian).map_err(ctx)?;
        if data.len() != count {
            return Err(ctx(format!(
                "holds {} values but its dimensions {dims:?} need {count}",
                data.len()
            )));
        }
    }
    Ok(MatArray {
        name,
        class,
        dims,
        complex,
        data,
    })
}

fn read_u32(b: &[u8], big_endian: bool) -> u32 {
    let b: [u8; 4] = b.try_into().expect("4 bytes");
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Converts the bytes of a numeric element of MAT type `ty` to f64.
fn decode_numeric(ty: u32, raw: &[u8], be: bool) -> std::result::Result<Vec<f64>, String> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {{
            if $n > 1 && raw.len() % $n.max(1) != 0 {
                return Err(format!(
                    "{} bytes of data are not a whole number of {}-byte values",
                    raw.len(),
                    $n
                ));
            }
            raw.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().expect("chunk");
                    (if be {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as f64
                })
                .collect()
        }};
    }
    Ok(match ty {
        MI_INT8 => conv!(i8, 1),
        MI_UINT8 => conv!(u8, 1),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        other => return Err(format!("unsupported numeric data type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_element_tag_is_unpacked() {
        // Small element: type 1 (miINT8), 3 bytes "abc".
        let mut b = Vec::new();
        b.extend_from_slice(&((3u32 << 16) | 1).to_le_bytes());
        b.extend_from_slice(b"abc\0");
        let mut c = Cursor {
            bytes: &b,
            pos: 0,
            big_endian: false,
            base: 0,
        };
        let (ty, data) = c.sub_element("name").unwrap();
        assert_eq!(ty, 1);
        assert_eq!(data, b"abc");
        assert_eq!(c.pos, 8);
    }

    #[test]
    fn header_checks() {
        let e = MatFile::parse("x.mat", &[1u8; 10]).unwrap_err().to_string();
        assert!(e.contains("x.mat") && e.contains("shorter"), "{e}");
        let mut h = vec![b' '; 128];
        h[126] = b'X';
        h[127] = b'Y';
        let e = MatFile::parse("x.mat", &h).unwrap_err().to_string();
        assert!(e.contains("endian"), "{e}");
    }
}
