//! The preprocessing cache: every image's item-stage form (see
//! [`super::decode`]: resized to short side `item_size` with `resize =
//! "crop"`, the zero-padded square at `item_size` with `"pad"`) stored once
//! as u8 in one file per (source, split, item size, resize method),
//! memory-mapped on reuse.
//!
//! Size: an image takes `3·w·h` bytes at its cached size. For Flowers-102
//! (every image's short side is 500 px, most are 500×667 or 667×500) at the
//! seed's `item_size = 460` with `"crop"` that is 3·460·614 = 847,320 bytes
//! (a square 500×500 image: 634,800), against 3·224² = 150,528 bytes when
//! images were cached at the final 224 px; the 1020-image train split takes
//! about 0.85 GB, the 6149-image test split about 5.2 GB of disk (mapped,
//! so resident memory follows what a run reads).
//!
//! A cache file is trusted only when its header, length, trailer and the
//! fingerprint of the source files all check out. The fingerprint hashes the
//! format version, the preprocessing, the split, item size, resize method, the
//! `skip_corrupt` flag, and for every source image its path, byte length,
//! modification time and label — so editing, replacing or touching an image
//! (or relabelling it) rebuilds the cache, while every trial and run with
//! unchanged sources maps the same file.
//!
//! Files are written under a temporary name in the cache directory, synced,
//! then renamed over the final name: a run killed mid-write leaves at worst a
//! stray `*.tmp.*` file (removed by a later build once it is an hour old),
//! never a truncated file under the trusted name; and a truncated or
//! otherwise damaged cache file fails validation and is rebuilt.
//!
//! Damage inside the file (a flipped byte in the pixels) is caught by a
//! CRC-32 over everything between the header and the trailer, checked on
//! every open (crc32fast runs at several GB/s, so even the Flowers-102 test
//! split's 0.9 GB costs a fraction of a second); a mismatch rebuilds the
//! cache like any other damage.
//!
//! Layout (little-endian): a 64-byte header (`PTUNEIMG`, version, header
//! length, fingerprint, item size, channels, count, source count, total
//! length, CRC-32 of the body), `count` images of `w*h*3` bytes each (HWC
//! RGB, back to back), then `count` u32 labels, `count` u32 source indices,
//! `count` (u32, u32) original sizes, `count` (u32, u32) cached sizes, and
//! the 8-byte trailer `PTUNEEND`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memmap2::{Mmap, MmapMut};
use rayon::prelude::*;

use super::augment::ResizeMode;
use super::decode::{cached_dims, image_dims, load_item, PadResizer};
use super::error::{DataError, Result};
use super::images::{ImageSet, Origin, Pixels};
use super::source::{Item, Split};
use crate::hash::FastHash;
use crate::progress::{Progress, ProgressKind};

const MAGIC: &[u8; 8] = b"PTUNEIMG";
const TRAILER: &[u8; 8] = b"PTUNEEND";
/// 2: the header holds a CRC-32 of the body. 3: images of any size (the
/// item stage), with their cached sizes.
const VERSION: u32 = 3;
const HEADER_LEN: usize = 64;
/// Names the preprocessing; change it whenever decode/pad/resize changes
/// output pixels, so old caches are rebuilt.
const PREPROCESS_ID: &str = "fastai-item-resize/pil-bilinear/fast_image_resize-6/v2";
/// File extension of cache files.
pub const CACHE_EXT: &str = "u8img";

/// What to load and where its cache lives.
#[derive(Debug, Clone)]
pub struct CacheRequest<'a> {
    /// Directory holding cache files (created when missing).
    pub cache_dir: &'a Path,
    /// Source layout name, part of the file name.
    pub kind: &'static str,
    /// The source's root directory or manifest (keys the file name).
    pub root: &'a Path,
    /// Which split.
    pub split: Split,
    /// Item size: the cached images' short side (`crop`) or side (`pad`).
    pub item_size: u32,
    /// How images are cached (see [`super::decode`]).
    pub resize: ResizeMode,
    /// Skip undecodable images (counted, with a warning) instead of failing.
    pub skip_corrupt: bool,
    /// Number of classes (labels are checked against it).
    pub num_classes: usize,
    /// Decoding threads; 0 uses rayon's global pool.
    pub threads: usize,
}

/// The cache file for a request.
pub fn cache_path(req: &CacheRequest<'_>) -> PathBuf {
    let root = std::fs::canonicalize(req.root).unwrap_or_else(|_| req.root.to_path_buf());
    let mut h = FastHash::new();
    h.str(req.kind);
    h.bytes(root.as_os_str().as_encoded_bytes());
    req.cache_dir.join(format!(
        "{}-{}-{}-{}px-{:016x}.{CACHE_EXT}",
        req.kind,
        req.split.name(),
        resize_name(req.resize),
        req.item_size,
        h.finish()
    ))
}

fn resize_name(r: ResizeMode) -> &'static str {
    match r {
        ResizeMode::Crop => "crop",
        ResizeMode::Pad => "pad",
    }
}

/// Fingerprint of the source files of a split (stats every file; a missing
/// file is an error naming it).
pub fn fingerprint(req: &CacheRequest<'_>, items: &[Item]) -> Result<u64> {
    let mut h = FastHash::new();
    h.u64(VERSION as u64);
    h.str(PREPROCESS_ID);
    h.str(req.kind);
    h.str(req.split.name());
    h.u64(req.item_size as u64);
    h.str(resize_name(req.resize));
    h.u64(req.skip_corrupt as u64);
    h.u64(items.len() as u64);
    for it in items {
        let meta = std::fs::metadata(&it.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::MissingFile {
                    what: "image",
                    path: it.path.clone(),
                }
            } else {
                DataError::io(&it.path, e)
            }
        })?;
        if !meta.is_file() {
            return Err(DataError::MissingFile {
                what: "image (found a directory)",
                path: it.path.clone(),
            });
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        h.bytes(it.path.as_os_str().as_encoded_bytes());
        h.u64(meta.len());
        h.u64(mtime.as_secs());
        h.u64(mtime.subsec_nanos() as u64);
        h.u64(it.label as u64);
    }
    Ok(h.finish())
}

/// Returns the split's images from a valid cache file, or decodes them in
/// parallel (with a progress bar on a terminal) and writes the cache first.
pub fn load_split(req: &CacheRequest<'_>, items: &[Item]) -> Result<ImageSet> {
    let fp = fingerprint(req, items)?;
    let path = cache_path(req);
    match open_cache(&path, fp, req, items) {
        Ok(set) => {
            tracing::info!(
                path = %path.display(),
                images = set.len(),
                "{} {} split: using cached {}px images ({})",
                req.kind,
                req.split,
                req.item_size,
                resize_name(req.resize)
            );
            return Ok(set);
        }
        Err(CacheMiss::Absent) => {
            tracing::info!(path = %path.display(), "no cache yet; decoding {} images", items.len());
        }
        Err(CacheMiss::Invalid(reason)) => {
            tracing::warn!(path = %path.display(), "cache is stale or damaged ({reason}); rebuilding");
        }
    }
    let decoded = build(&path, fp, req, items)?;
    match open_cache(&path, fp, req, items) {
        Ok(mut set) => {
            set.origin = Origin::Built {
                path: path.clone(),
                decoded,
            };
            Ok(set)
        }
        Err(CacheMiss::Absent) => Err(DataError::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "cache file vanished after writing",
            ),
        )),
        Err(CacheMiss::Invalid(reason)) => Err(DataError::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cache file just written fails validation: {reason}"),
            ),
        )),
    }
}

enum CacheMiss {
    Absent,
    Invalid(String),
}

fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn rd_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Bytes of metadata per image after the pixels: label, source index,
/// original size, cached size.
const META_PER_IMAGE: usize = 4 + 4 + 8 + 8;

/// Total file length for `count` images of `body` pixel bytes in all.
fn file_len(count: usize, body: usize) -> usize {
    HEADER_LEN + body + count * META_PER_IMAGE + TRAILER.len()
}

/// Whether `dims` is a cached size the item stage can produce.
fn valid_cached_dims(dims: (u32, u32), item: u32, resize: ResizeMode) -> bool {
    match resize {
        ResizeMode::Pad => dims == (item, item),
        ResizeMode::Crop => {
            dims.0.min(dims.1) == item && dims.0.max(dims.1) <= super::decode::MAX_STORED_SIDE
        }
    }
}

fn open_cache(
    path: &Path,
    fp: u64,
    req: &CacheRequest<'_>,
    items: &[Item],
) -> std::result::Result<ImageSet, CacheMiss> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheMiss::Absent),
        Err(e) => return Err(CacheMiss::Invalid(format!("cannot open: {e}"))),
    };
    let bad = |m: String| CacheMiss::Invalid(m);
    let actual_len = file
        .metadata()
        .map_err(|e| bad(format!("cannot stat: {e}")))?
        .len() as usize;
    if actual_len < HEADER_LEN + TRAILER.len() {
        return Err(bad(format!("only {actual_len} bytes")));
    }
    // SAFETY: cache files are never modified in place: writers create a new
    // file and rename it over this name, which leaves this inode (and the
    // mapping) untouched. A user truncating the file by hand while it is
    // mapped is outside what the cache guards against.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(format!("cannot map: {e}")))?;
    let h = &map[..HEADER_LEN];
    if &h[..8] != MAGIC {
        return Err(bad("bad magic".into()));
    }
    if rd_u32(h, 8) != VERSION || rd_u32(h, 12) as usize != HEADER_LEN {
        return Err(bad(format!(
            "format version {} (expected {VERSION})",
            rd_u32(h, 8)
        )));
    }
    if rd_u64(h, 16) != fp {
        return Err(bad("source files changed".into()));
    }
    let item = rd_u32(h, 24);
    if item != req.item_size || rd_u32(h, 28) != 3 {
        return Err(bad(format!(
            "item size {item} (expected {})",
            req.item_size
        )));
    }
    let count = rd_u64(h, 32) as usize;
    let source_len = rd_u64(h, 40) as usize;
    let total = rd_u64(h, 48) as usize;
    if source_len != items.len() || count > source_len {
        return Err(bad(format!(
            "holds {count} of {source_len} images, source has {}",
            items.len()
        )));
    }
    let fixed = file_len(count, 0);
    if total != actual_len || total < fixed {
        return Err(bad(format!(
            "length {actual_len} bytes, header says {total}, {count} images need at least {fixed} (truncated?)"
        )));
    }
    let body = total - fixed;
    if &map[total - TRAILER.len()..] != TRAILER {
        return Err(bad("missing trailer (incomplete write)".into()));
    }
    let stored_crc = rd_u32(h, 56);
    let crc = crc32fast::hash(&map[HEADER_LEN..total - TRAILER.len()]);
    if crc != stored_crc {
        return Err(bad(format!(
            "checksum mismatch (CRC-32 {crc:08x}, header says {stored_crc:08x}): damaged"
        )));
    }
    let meta = HEADER_LEN + body;
    let mut labels = Vec::with_capacity(count);
    let mut source_index = Vec::with_capacity(count);
    let mut orig_sizes = Vec::with_capacity(count);
    let mut dims = Vec::with_capacity(count);
    let mut pixel_bytes = 0usize;
    for k in 0..count {
        let label = rd_u32(&map, meta + 4 * k) as usize;
        let si = rd_u32(&map, meta + 4 * count + 4 * k);
        let w = rd_u32(&map, meta + 8 * count + 8 * k);
        let hh = rd_u32(&map, meta + 8 * count + 8 * k + 4);
        let cw = rd_u32(&map, meta + 16 * count + 8 * k);
        let ch = rd_u32(&map, meta + 16 * count + 8 * k + 4);
        if label >= req.num_classes {
            return Err(bad(format!("label {label} at {k} out of range")));
        }
        if si as usize >= source_len || (k > 0 && si <= source_index[k - 1]) {
            return Err(bad(format!("bad source index {si} at {k}")));
        }
        if items[si as usize].label != label {
            return Err(bad(format!("label of image {k} disagrees with the source")));
        }
        if !valid_cached_dims((cw, ch), item, req.resize) {
            return Err(bad(format!(
                "image {k} is cached at {cw}x{ch}, impossible for item size {item}"
            )));
        }
        pixel_bytes += 3 * cw as usize * ch as usize;
        labels.push(label);
        source_index.push(si);
        orig_sizes.push((w, hh));
        dims.push((cw, ch));
    }
    if pixel_bytes != body {
        return Err(bad(format!(
            "{count} images need {pixel_bytes} pixel bytes, the file holds {body}"
        )));
    }
    let mut skipped = Vec::new();
    let mut next = 0usize;
    for (i, it) in items.iter().enumerate() {
        if next < count && source_index[next] as usize == i {
            next += 1;
        } else {
            skipped.push(it.path.clone());
        }
    }
    if !skipped.is_empty() && !req.skip_corrupt {
        return Err(bad("cache skipped images but skip_corrupt is off".into()));
    }
    let mut set = ImageSet::from_parts(
        item,
        req.resize,
        Pixels::Mapped {
            map,
            offset: HEADER_LEN,
            len: body,
        },
        dims,
        labels,
        fp,
        Origin::CacheHit {
            path: path.to_path_buf(),
        },
    );
    set.orig_sizes = orig_sizes;
    set.source_index = source_index;
    set.skipped = skipped;
    Ok(set)
}
/// Decodes every item into a temporary file and renames it to `path`.
/// Returns the number of images decoded.
fn build(path: &Path, fp: u64, req: &CacheRequest<'_>, items: &[Item]) -> Result<usize> {
    std::fs::create_dir_all(req.cache_dir).map_err(|e| DataError::io(req.cache_dir, e))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let file_name = path
        .file_name()
        .expect("cache path has a name")
        .to_string_lossy();
    let tmp = path.with_file_name(format!("{file_name}.tmp.{}.{nanos}", std::process::id()));
    let result = write_tmp(&tmp, fp, req, items).and_then(|decoded| {
        std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))?;
        crate::fs::sync_dir_best_effort(req.cache_dir);
        Ok(decoded)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        remove_stale_tmp(req.cache_dir, &file_name);
    }
    result
}

fn write_tmp(tmp: &Path, fp: u64, req: &CacheRequest<'_>, items: &[Item]) -> Result<usize> {
    let n = items.len();
    let item = req.item_size;
    // Every image's cached size from its header, so each gets its own slot.
    let headers: Vec<Result<Sizes>> = in_pool(req, || {
        items
            .par_iter()
            .map(|it| {
                let orig = image_dims(&it.path)?;
                let cached = cached_dims(&it.path, orig, item, req.resize)?;
                Ok(Sizes { orig, cached })
            })
            .collect()
    })?;
    let mut sizes = Vec::with_capacity(n);
    let mut header_errors = Vec::with_capacity(n);
    for r in headers {
        match r {
            Ok(s) => {
                sizes.push(Some(s));
                header_errors.push(None);
            }
            // Fatal header errors (missing files, or any without skip_corrupt)
            // stop the build before anything is decoded.
            Err(e) if !(req.skip_corrupt && matches!(e, DataError::Decode { .. })) => {
                return Err(e)
            }
            Err(e) => {
                sizes.push(None);
                header_errors.push(Some(e));
            }
        }
    }
    let bytes = |s: &Option<Sizes>| s.map_or(0, |s| s.bytes());
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0usize);
    for r in &sizes {
        offsets.push(offsets.last().expect("non-empty") + bytes(r));
    }
    let body_all = offsets[n];
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| DataError::io(tmp, e))?;
    let io = |e| DataError::io(tmp, e);
    file.set_len((HEADER_LEN + body_all) as u64).map_err(io)?;
    let decoded =
        {
            // SAFETY: the temporary file was just created by this process under a
            // unique name; nothing else maps or writes it.
            let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
            let mut results = decode_all(req, items, &sizes, &mut map[HEADER_LEN..])?;
            for (r, e) in results.iter_mut().zip(header_errors) {
                if let Some(e) = e {
                    *r = Some(Err(e));
                }
            }

            // Keep the decodable images, in order, packed to the front.
            // (source index, original size, cached size) of each kept image.
            let mut kept: Vec<(usize, Size, Size)> = Vec::with_capacity(n);
            let mut failed: Vec<DataError> = Vec::new();
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Some(Ok(dims)) => {
                        let cached = sizes[i].map(|s| s.cached).unwrap_or_default();
                        kept.push((i, dims, cached));
                    }
                    Some(Err(e)) => failed.push(e),
                    None => {} // not attempted: an earlier failure aborted the build
                }
            }
            // Missing or unreadable files are errors even with skip_corrupt;
            // undecodable ones only without it. Report the first in source order.
            if let Some(p) = failed
                .iter()
                .position(|e| !(req.skip_corrupt && matches!(e, DataError::Decode { .. })))
            {
                return Err(failed.swap_remove(p));
            }
            if !failed.is_empty() {
                let names: Vec<String> = failed.iter().take(5).map(|e| e.to_string()).collect();
                tracing::warn!(
                "{} {} split: skipped {} undecodable image(s) of {n} (skip_corrupt = true): {}{}",
                req.kind,
                req.split,
                failed.len(),
                names.join("; "),
                if failed.len() > names.len() { "; ..." } else { "" }
            );
            }
            if kept.is_empty() {
                return Err(DataError::Empty {
                    location: req.root.to_path_buf(),
                    message: format!("every image of the {} split failed to decode", req.split),
                });
            }
            // Packing only moves images towards the front.
            let mut body = 0usize;
            for &(i, _, _) in &kept {
                let (src, len) = (offsets[i], offsets[i + 1] - offsets[i]);
                if src != body {
                    map.copy_within(HEADER_LEN + src..HEADER_LEN + src + len, HEADER_LEN + body);
                }
                body += len;
            }
            let mut crc = crc32fast::Hasher::new();
            crc.update(&map[HEADER_LEN..HEADER_LEN + body]);
            map.flush().map_err(io)?;
            drop(map);

            let count = kept.len();
            let total = file_len(count, body);
            file.set_len((HEADER_LEN + body) as u64).map_err(io)?;
            let mut meta = Vec::with_capacity(count * META_PER_IMAGE);
            for &(i, _, _) in &kept {
                meta.extend_from_slice(&(items[i].label as u32).to_le_bytes());
            }
            for &(i, _, _) in &kept {
                meta.extend_from_slice(&(i as u32).to_le_bytes());
            }
            for &(_, (wd, ht), _) in &kept {
                meta.extend_from_slice(&wd.to_le_bytes());
                meta.extend_from_slice(&ht.to_le_bytes());
            }
            for &(_, _, (cw, ch)) in &kept {
                meta.extend_from_slice(&cw.to_le_bytes());
                meta.extend_from_slice(&ch.to_le_bytes());
            }
            crc.update(&meta);
            let mut w = BufWriter::new(&file);
            w.seek(SeekFrom::End(0)).map_err(io)?;
            w.write_all(&meta).map_err(io)?;
            w.write_all(TRAILER).map_err(io)?;
            let mut header = [0u8; HEADER_LEN];
            header[..8].copy_from_slice(MAGIC);
            header[8..12].copy_from_slice(&VERSION.to_le_bytes());
            header[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
            header[16..24].copy_from_slice(&fp.to_le_bytes());
            header[24..28].copy_from_slice(&item.to_le_bytes());
            header[28..32].copy_from_slice(&3u32.to_le_bytes());
            header[32..40].copy_from_slice(&(count as u64).to_le_bytes());
            header[40..48].copy_from_slice(&(n as u64).to_le_bytes());
            header[48..56].copy_from_slice(&(total as u64).to_le_bytes());
            header[56..60].copy_from_slice(&crc.finalize().to_le_bytes());
            w.seek(SeekFrom::Start(0)).map_err(io)?;
            w.write_all(&header).map_err(io)?;
            w.flush().map_err(io)?;
            drop(w);
            count
        };
    file.sync_all().map_err(io)?;
    Ok(decoded)
}

/// Width and height in pixels.
type Size = (u32, u32);

/// An image's size as its header gives it and as it will be cached.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    orig: Size,
    cached: Size,
}

impl Sizes {
    /// Bytes of the cached image.
    fn bytes(&self) -> usize {
        3 * self.cached.0 as usize * self.cached.1 as usize
    }
}

/// Outcome of decoding one image: its original size, or why it failed.
type DecodeResult = Result<(u32, u32)>;

/// Runs `work` on `req.threads` threads (0: rayon's global pool).
fn in_pool<T: Send>(req: &CacheRequest<'_>, work: impl FnOnce() -> T + Send) -> Result<T> {
    if req.threads > 0 {
        Ok(rayon::ThreadPoolBuilder::new()
            .num_threads(req.threads)
            .build()
            .map_err(|e| DataError::config("data.threads", req.threads, e.to_string()))?
            .install(work))
    } else {
        Ok(work())
    }
}

/// Decodes `items` in parallel into consecutive slots of `out`, each the
/// size `sizes` gives it (an image whose header failed, `None`, has an
/// empty slot and is not attempted). Without `skip_corrupt`, the first
/// failure stops further decoding (the items not attempted come back as
/// `None`).
fn decode_all(
    req: &CacheRequest<'_>,
    items: &[Item],
    sizes: &[Option<Sizes>],
    out: &mut [u8],
) -> Result<Vec<Option<DecodeResult>>> {
    let mut slots: Vec<&mut [u8]> = Vec::with_capacity(items.len());
    let mut rest = out;
    for s in sizes {
        let len = s.map_or(0, |s| s.bytes());
        let (slot, tail) = rest.split_at_mut(len);
        slots.push(slot);
        rest = tail;
    }
    let bar = progress_bar(items.len() as u64, req);
    let done = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let work = || {
        slots
            .into_par_iter()
            .zip(items.par_iter().zip(sizes.par_iter()))
            .map_init(PadResizer::new, |rs, (chunk, (it, size))| {
                if abort.load(Ordering::Relaxed) {
                    return None;
                }
                let orig = size.as_ref()?.orig;
                let r = load_item(&it.path, req.item_size, req.resize, orig, rs, chunk);
                if r.is_err() && !req.skip_corrupt {
                    abort.store(true, Ordering::Relaxed);
                }
                bar.inc(1);
                done.fetch_add(1, Ordering::Relaxed);
                Some(r)
            })
            .collect::<Vec<_>>()
    };
    let results = in_pool(req, work)?;
    bar.finish();
    tracing::debug!(decoded = done.load(Ordering::Relaxed), "decode finished");
    Ok(results)
}
fn progress_bar(len: u64, req: &CacheRequest<'_>) -> Progress {
    let bar = Progress::start(ProgressKind::Decode, len);
    bar.set_message(format!(
        "decoding {} {} ({}px)",
        req.kind, req.split, req.item_size
    ));
    bar
}

/// Removes leftovers `<name>.tmp.*` of killed builds that are over an hour
/// old (younger ones may belong to a concurrent build).
fn remove_stale_tmp(dir: &Path, name: &str) {
    let prefix = format!("{name}.tmp.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let fname = e.file_name();
        if !fname.to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old {
            tracing::debug!(path = %e.path().display(), "removing stale temporary cache file");
            let _ = std::fs::remove_file(e.path());
        }
    }
}
