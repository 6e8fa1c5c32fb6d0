//! [`ImageSet`]: the preprocessed images of one split, in memory or
//! memory-mapped from the cache, with their labels.

use std::path::PathBuf;

use memmap2::Mmap;

use super::error::{DataError, Result};

/// How an [`ImageSet`] came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built in memory (the embedded digits set, or [`ImageSet::from_pixels`]).
    Memory,
    /// Read from a valid cache file.
    CacheHit {
        /// The cache file.
        path: PathBuf,
    },
    /// Decoded from the source images and written to the cache.
    Built {
        /// The cache file written.
        path: PathBuf,
        /// Images decoded.
        decoded: usize,
    },
}

pub(crate) enum Pixels {
    Owned(Vec<u8>),
    Mapped {
        map: Mmap,
        offset: usize,
        len: usize,
    },
}

impl Pixels {
    fn bytes(&self) -> &[u8] {
        match self {
            Pixels::Owned(v) => v,
            Pixels::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }
}

/// The images of one split: `len()` RGB images of `image_size`² pixels
/// stored as interleaved u8 (HWC), each with a label and its original size.
///
/// Sample indices are stable: index `i` is the `i`-th image of the split in
/// the source's order (minus images skipped as corrupt), the same in every
/// run while the source is unchanged — the key the trainer's feature cache
/// can rely on together with [`ImageSet::fingerprint`].
pub struct ImageSet {
    pub(crate) image_size: u32,
    pub(crate) pixels: Pixels,
    pub(crate) labels: Vec<usize>,
    pub(crate) orig_sizes: Vec<(u32, u32)>,
    pub(crate) source_index: Vec<u32>,
    pub(crate) skipped: Vec<PathBuf>,
    pub(crate) fingerprint: u64,
    pub(crate) origin: Origin,
}

impl std::fmt::Debug for ImageSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSet")
            .field("len", &self.len())
            .field("image_size", &self.image_size)
            .field("skipped", &self.skipped.len())
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .field("origin", &self.origin)
            .finish()
    }
}

impl ImageSet {
    /// An in-memory set from interleaved RGB `pixels` (`labels.len()` images
    /// of `image_size`² pixels each). Original sizes are taken as square.
    ///
    /// ```
    /// use polytune::data::ImageSet;
    /// let set = ImageSet::from_pixels(2, vec![0u8; 2 * 2 * 2 * 3], vec![0, 1]).unwrap();
    /// assert_eq!(set.len(), 2);
    /// assert_eq!(set.image(1).len(), 12);
    /// ```
    pub fn from_pixels(image_size: u32, pixels: Vec<u8>, labels: Vec<usize>) -> Result<Self> {
        let per = image_size as usize * image_size as usize * 3;
        if image_size == 0 || pixels.len() != per * labels.len() {
            return Err(DataError::Batch(format!(
                "ImageSet::from_pixels: {} bytes is not {} images of {image_size}x{image_size}x3",
                pixels.len(),
                labels.len()
            )));
        }
        let n = labels.len();
        let fingerprint = {
            let mut h = super::cache::Fnv::new();
            h.u64(image_size as u64);
            h.bytes(&pixels);
            for &l in &labels {
                h.u64(l as u64);
            }
            h.finish()
        };
        Ok(ImageSet {
            image_size,
            pixels: Pixels::Owned(pixels),
            labels,
            orig_sizes: vec![(image_size, image_size); n],
            source_index: (0..n as u32).collect(),
            skipped: Vec::new(),
            fingerprint,
            origin: Origin::Memory,
        })
    }

    /// The images `idx` of this set, in that order, as a new in-memory set
    /// that keeps this set's origin (it is cut from it: e.g. the held-out
    /// half of a cached validation split) and source indices; its
    /// fingerprint derives from this set's and `idx`.
    ///
    /// ```
    /// use polytune::data::ImageSet;
    /// let set = ImageSet::from_pixels(1, vec![1, 1, 1, 2, 2, 2, 3, 3, 3], vec![0, 1, 2]).unwrap();
    /// let cut = set.subset(&[2, 0]).unwrap();
    /// assert_eq!((cut.labels(), cut.image(0)), (&[2, 0][..], &[3u8, 3, 3][..]));
    /// assert_ne!(cut.fingerprint(), set.fingerprint());
    /// assert!(set.subset(&[3]).is_err());
    /// ```
    pub fn subset(&self, idx: &[usize]) -> Result<ImageSet> {
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::Batch(format!(
                "ImageSet::subset: index {bad} is out of range for {} images",
                self.len()
            )));
        }
        let mut pixels = Vec::with_capacity(idx.len() * self.image_bytes());
        for &i in idx {
            pixels.extend_from_slice(self.image(i));
        }
        let mut h = super::cache::Fnv::new();
        h.u64(self.fingerprint);
        for &i in idx {
            h.u64(i as u64);
        }
        Ok(ImageSet {
            image_size: self.image_size,
            pixels: Pixels::Owned(pixels),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            orig_sizes: idx.iter().map(|&i| self.orig_sizes[i]).collect(),
            source_index: idx.iter().map(|&i| self.source_index[i]).collect(),
            skipped: self.skipped.clone(),
            fingerprint: h.finish(),
            origin: self.origin.clone(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Side of every (square) image in pixels.
    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    /// Bytes per image (`3 * image_size²`).
    pub fn image_bytes(&self) -> usize {
        3 * self.image_size as usize * self.image_size as usize
    }

    /// Image `i` as interleaved RGB u8 (row-major HWC). Panics if out of range.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.image_bytes();
        &self.pixels.bytes()[i * per..(i + 1) * per]
    }

    /// All images back to back.
    pub fn pixels(&self) -> &[u8] {
        self.pixels.bytes()
    }

    /// Label of image `i` (0-based class index).
    pub fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    /// All labels, by sample index.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Width and height of image `i` before padding and resizing.
    pub fn original_size(&self, i: usize) -> (u32, u32) {
        self.orig_sizes[i]
    }

    /// Position of image `i` in the source's list for this split (differs
    /// from `i` only after corrupt images were skipped).
    pub fn source_index(&self, i: usize) -> usize {
        self.source_index[i] as usize
    }

    /// Source files that were skipped as undecodable (`skip_corrupt = true`).
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    /// A 64-bit key of the source files (paths, sizes, mtimes, labels), image
    /// size and preprocessing; equal fingerprints mean equal images. Use it
    /// to key caches derived from this set (e.g. frozen-body features).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Whether this set was read from the cache, built, or made in memory.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}
