//! Every hash polytune computes, in two kinds.
//!
//! * **Content keys** ([`ContentHasher`], [`sha256_file`], [`sha256`]):
//!   SHA-256, where a collision would let a study resume against other
//!   inputs or accept a forged token — the study fingerprint, the digests of
//!   weights and data, bearer tokens. Written as lower-case hex.
//! * **Fast keys** ([`FastHash`]): a 64-bit multiply-rotate hash over
//!   64-bit words with SplitMix64's finaliser ([`mix64`]), where the input
//!   is large and a collision only costs a needless rebuild or a missed
//!   reuse — cache file names and fingerprints, in-memory image sets, the
//!   frozen body's tensors (25 M weights hashed per trial). Not for
//!   security; stable across platforms and releases (a changed value only
//!   rebuilds caches).
//!
//! [`mix64`] is a bijection on u64 with full avalanche (every input bit
//! flips each output bit with probability ≈ ½), so nearby inputs give
//! unrelated outputs; it also derives the seeded streams of
//! [`crate::rng`].
//!
//! ```
//! use polytune::hash::{ContentHasher, FastHash};
//!
//! let mut c = ContentHasher::new();
//! c.update(b"abc");
//! assert_eq!(
//!     c.finish_hex(),
//!     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
//! );
//!
//! let key = |s: &str| {
//!     let mut h = FastHash::new();
//!     h.str(s);
//!     h.finish()
//! };
//! assert_eq!(key("flowers"), key("flowers"));
//! assert_ne!(key("flowers"), key("flowerz"));
//! ```

use std::path::Path;

use sha2::{Digest, Sha256};

/// SplitMix64's finaliser: a bijective 64-bit mixer with full avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fast 64-bit hash over words (cache keys and checksums, not
/// security). Variable-length inputs hash their length first, so
/// concatenations cannot collide by shifting a boundary.
#[derive(Debug, Clone, Copy)]
pub struct FastHash(u64);

impl Default for FastHash {
    fn default() -> Self {
        Self::new()
    }
}

impl FastHash {
    /// A fresh hash.
    pub fn new() -> Self {
        FastHash(0x243F_6A88_85A3_08D3) // π's digits: any fixed start
    }

    /// One 64-bit word.
    pub fn u64(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    /// Bytes: their length, then 8 at a time (little-endian, the last
    /// word zero-padded).
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.u64(u64::from_le_bytes(w));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.u64(u64::from_le_bytes(last));
    }

    /// A string's UTF-8 bytes (length first).
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// f32 values by their bits, two per word (length first).
    pub fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        let mut pairs = v.chunks_exact(2);
        for p in &mut pairs {
            self.u64(p[0].to_bits() as u64 | (p[1].to_bits() as u64) << 32);
        }
        if let [x] = pairs.remainder() {
            self.u64(x.to_bits() as u64);
        }
    }

    /// The hash.
    pub fn finish(self) -> u64 {
        mix64(self.0)
    }
}

/// A streamed SHA-256, finished as lower-case hex.
#[derive(Debug, Clone, Default)]
pub struct ContentHasher(Sha256);

impl ContentHasher {
    /// A fresh hash.
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// More input.
    pub fn update(&mut self, bytes: impl AsRef<[u8]>) {
        self.0.update(bytes.as_ref());
    }

    /// The digest as 64 lower-case hex digits.
    pub fn finish_hex(self) -> String {
        hex(&self.0.finalize())
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 (hex) of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = ContentHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish_hex())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 (Vigna's reference, `splitmix64.c`) from state 0: the
    /// state advances by the golden gamma before each output, which is what
    /// `mix64(k · gamma)` computes for the k-th output (k from 0).
    #[test]
    fn mix64_is_splitmix64() {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let first: Vec<u64> = (0..3u64).map(|k| mix64(k.wrapping_mul(GAMMA))).collect();
        assert_eq!(
            first,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
    }

    /// An independent byte-at-a-time model of the word hash.
    fn reference(bytes: &[u8]) -> u64 {
        let step = |h: u64, w: u64| (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        let mut h = step(0x243F_6A88_85A3_08D3, bytes.len() as u64);
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len() / 8 * 8 + 8, 0);
        for c in padded.chunks(8) {
            let w = c.iter().rev().fold(0u64, |a, &b| a << 8 | b as u64);
            h = step(h, w);
        }
        mix64(h)
    }

    #[test]
    fn fast_hash_matches_its_reference_and_separates_lengths() {
        for n in [0usize, 1, 7, 8, 9, 16, 31] {
            let b: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            let mut h = FastHash::new();
            h.bytes(&b);
            assert_eq!(h.finish(), reference(&b), "{n} bytes");
        }
        // A trailing zero byte is not padding.
        let one = |b: &[u8]| {
            let mut h = FastHash::new();
            h.bytes(b);
            h.finish()
        };
        assert_ne!(one(&[1]), one(&[1, 0]));
        // Two floats per word, by bits: -0.0 and 0.0 differ.
        let f = |v: &[f32]| {
            let mut h = FastHash::new();
            h.f32s(v);
            h.finish()
        };
        assert_ne!(f(&[0.0, 1.0]), f(&[-0.0, 1.0]));
        assert_ne!(f(&[1.0]), f(&[1.0, 0.0]));
    }

    #[test]
    fn sha256_of_a_file_is_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&sha256(b"abc")), sha256_file(&p).unwrap());
    }
}
