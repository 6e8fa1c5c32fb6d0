//! [`ImageSet`]: the item-stage images of one split (see
//! [`super::decode`]), in memory or memory-mapped from the cache, with their
//! labels and the final image size batches are made at.

use std::path::PathBuf;

use memmap2::Mmap;

use super::augment::ResizeMode;
use super::error::{DataError, Result};
use crate::hash::FastHash;

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

/// The images of one split: `len()` RGB images stored as interleaved u8
/// (HWC) at their item-stage size ([`ImageSet::cached_size`]: short side
/// [`ImageSet::item_size`] with `resize = "crop"`, the
/// `item_size`² padded square with `"pad"`), each with a label and its
/// original size. Batches ([`ImageSet::assemble`]) map a sample's
/// `item_size`² item to [`ImageSet::image_size`]² pixels.
///
/// Sample indices are stable: index `i` is the `i`-th image of the split in
/// the source's order (minus images skipped as corrupt), the same in every
/// run while the source is unchanged — the key the trainer's feature cache
/// can rely on together with [`ImageSet::fingerprint`].
pub struct ImageSet {
    /// Side of the batches' images.
    pub(crate) image_size: u32,
    /// Side of the item every sample is cut to.
    pub(crate) item_size: u32,
    pub(crate) resize: ResizeMode,
    pub(crate) pixels: Pixels,
    /// Cached width and height of each image.
    pub(crate) dims: Vec<(u32, u32)>,
    /// Byte offset of each image in `pixels`, and the total at the end.
    pub(crate) offsets: Vec<usize>,
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
            .field("item_size", &self.item_size)
            .field("resize", &self.resize)
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
            let mut h = FastHash::new();
            h.u64(image_size as u64);
            h.bytes(&pixels);
            for &l in &labels {
                h.u64(l as u64);
            }
            h.finish()
        };
        Ok(Self::from_parts(
            image_size,
            ResizeMode::Crop,
            Pixels::Owned(pixels),
            vec![(image_size, image_size); n],
            labels,
            fingerprint,
            Origin::Memory,
        ))
    }

    /// A set of images cached at `dims` (back to back in `pixels`) for item
    /// size `item_size`; batches at `item_size` until
    /// [`ImageSet::with_image_size`]; original sizes taken as the cached ones.
    pub(crate) fn from_parts(
        item_size: u32,
        resize: ResizeMode,
        pixels: Pixels,
        dims: Vec<(u32, u32)>,
        labels: Vec<usize>,
        fingerprint: u64,
        origin: Origin,
    ) -> Self {
        let mut offsets = Vec::with_capacity(dims.len() + 1);
        offsets.push(0);
        for &(w, h) in &dims {
            offsets.push(offsets.last().expect("non-empty") + 3 * w as usize * h as usize);
        }
        let n = labels.len();
        ImageSet {
            image_size: item_size,
            item_size,
            resize,
            pixels,
            orig_sizes: dims.clone(),
            dims,
            offsets,
            labels,
            source_index: (0..n as u32).collect(),
            skipped: Vec::new(),
            fingerprint,
            origin,
        }
    }

    /// This set with batches made at `image_size`² pixels (each sample's
    /// `item_size`² item resampled to it); the fingerprint covers the size.
    ///
    /// ```
    /// use polytune::data::ImageSet;
    /// let set = ImageSet::from_pixels(2, vec![9u8; 2 * 2 * 3], vec![0]).unwrap();
    /// let set = set.with_image_size(3).unwrap();
    /// assert_eq!((set.item_size(), set.image_size(), set.image(0).len()), (2, 3, 12));
    /// assert!(set.with_image_size(0).is_err());
    /// ```
    pub fn with_image_size(mut self, image_size: u32) -> Result<Self> {
        if image_size == 0 || image_size > super::config::MAX_IMAGE_SIZE {
            return Err(DataError::config(
                "data.image_size",
                image_size,
                format!("must be in 1..={}", super::config::MAX_IMAGE_SIZE),
            ));
        }
        if image_size != self.image_size {
            let mut h = FastHash::new();
            h.u64(self.fingerprint);
            h.str("image_size");
            h.u64(image_size as u64);
            self.fingerprint = h.finish();
            self.image_size = image_size;
        }
        Ok(self)
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
        let mut pixels = Vec::with_capacity(idx.iter().map(|&i| self.image(i).len()).sum());
        for &i in idx {
            pixels.extend_from_slice(self.image(i));
        }
        let mut h = FastHash::new();
        h.u64(self.fingerprint);
        for &i in idx {
            h.u64(i as u64);
        }
        let mut set = ImageSet::from_parts(
            self.item_size,
            self.resize,
            Pixels::Owned(pixels),
            idx.iter().map(|&i| self.dims[i]).collect(),
            idx.iter().map(|&i| self.labels[i]).collect(),
            h.finish(),
            self.origin.clone(),
        );
        set.image_size = self.image_size;
        set.orig_sizes = idx.iter().map(|&i| self.orig_sizes[i]).collect();
        set.source_index = idx.iter().map(|&i| self.source_index[i]).collect();
        set.skipped = self.skipped.clone();
        Ok(set)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Side of the (square) images of this set's batches.
    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    /// Side of the square item every sample is cut to before it is
    /// resampled to [`ImageSet::image_size`] (`[data] item_size`).
    pub fn item_size(&self) -> u32 {
        self.item_size
    }

    /// How the images were cached: short side `item_size` (`Crop`) or the
    /// padded `item_size`² square (`Pad`).
    pub fn resize(&self) -> ResizeMode {
        self.resize
    }

    /// Width and height of image `i` as cached. Panics if out of range.
    pub fn cached_size(&self, i: usize) -> (u32, u32) {
        self.dims[i]
    }

    /// Image `i` as cached: interleaved RGB u8 (row-major HWC) of
    /// [`ImageSet::cached_size`]. Panics if out of range.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels.bytes()[self.offsets[i]..self.offsets[i + 1]]
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

    /// Width and height of image `i` before the item stage.
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

    /// A 64-bit key of the source files (paths, sizes, mtimes, labels), item
    /// and image size and preprocessing; equal fingerprints mean equal images. Use it
    /// to key caches derived from this set (e.g. frozen-body features).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Whether this set was read from the cache, built, or made in memory.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}
