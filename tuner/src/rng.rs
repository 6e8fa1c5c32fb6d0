//! Seeded random streams: every random choice polytune makes (data order,
//! the digits split, augmentation, the head's initialisation and dropout,
//! the random and particle-swarm searches)
//! comes from a [`Stream`] derived from a seed, a stream name and an index.
//!
//! A stream is ChaCha8 keyed by the words (name, seed, index…): the words
//! are folded with SplitMix64's bijective mixer ([`crate::hash::mix64`]),
//! h ← mix64(h ⊕ mix64(w)), and the 256-bit key is mix64(h + i) for
//! i = 0..4. Distinct keys give independent streams, so a trial's seed
//! alone fixes its batches and augmentations whatever the thread
//! scheduling, two trials that differ only in ε see identical data, and a
//! solver's draws do not depend on how many workers evaluate them. The
//! derivation and the sampling ([`Stream::unit`], [`Stream::below`]) are
//! written out here rather than taken from `rand`'s distributions so the
//! streams stay the same across `rand` versions.
//!
//! Names are listed here ([`names`]) so no two uses share a stream by
//! accident; a name is up to 8 ASCII bytes, packed big-endian into one
//! word.
//!
//! ```
//! use polytune::rng::{names, Stream};
//!
//! let mut a = Stream::new(names::ORDER, 7, &[0]); // seed 7, epoch 0
//! let mut b = Stream::new(names::ORDER, 7, &[0]);
//! assert_eq!(a.next_u64(), b.next_u64()); // same key, same stream
//! let mut c = Stream::new(names::ORDER, 7, &[1]);
//! assert_ne!(a.next_u64(), c.next_u64()); // next epoch, another stream
//!
//! let mut v = [0, 1, 2, 3, 4];
//! a.shuffle(&mut v);
//! v.sort();
//! assert_eq!(v, [0, 1, 2, 3, 4]);
//! assert!((0.0..1.0).contains(&a.unit()));
//! ```

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::hash::mix64;

/// A stream's name: up to 8 ASCII bytes packed big-endian into a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamName(u64);

impl StreamName {
    /// The name `s` (checked at compile time when used in a constant: at
    /// most 8 bytes, ASCII).
    pub const fn new(s: &str) -> Self {
        let b = s.as_bytes();
        assert!(
            !b.is_empty() && b.len() <= 8,
            "a stream name is 1..=8 bytes"
        );
        let mut w = 0u64;
        let mut i = 0;
        while i < b.len() {
            assert!(b[i].is_ascii(), "a stream name is ASCII");
            w = w << 8 | b[i] as u64;
            i += 1;
        }
        StreamName(w)
    }

    /// The packed word.
    pub const fn word(self) -> u64 {
        self.0
    }
}

/// Every stream polytune draws from.
pub mod names {
    use super::StreamName;

    /// Data order of an epoch; index: (epoch).
    pub const ORDER: StreamName = StreamName::new("order");
    /// Augmentation of one sample; index: (view, sample index). ("augm":
    /// the name the stream had as a bare tag, kept so data is unchanged.)
    pub const AUGMENT: StreamName = StreamName::new("augm");
    /// The digits set's train / valid split; index: (class).
    pub const SPLIT: StreamName = StreamName::new("split");
    /// The random search's points; no index.
    pub const RANDOM_SEARCH: StreamName = StreamName::new("random");
    /// The particle swarm's initial positions and velocities; no index.
    pub const SWARM_INIT: StreamName = StreamName::new("pso-init");
    /// argmin's particle-swarm moves (its own generator); no index.
    pub const SWARM_MOVES: StreamName = StreamName::new("pso-move");
    /// The classification head's initial weights; no index.
    pub const HEAD_INIT: StreamName = StreamName::new("head");
    /// The head's dropout masks over a run; no index.
    pub const DROPOUT: StreamName = StreamName::new("dropout");
}

/// A deterministic random stream (ChaCha8) for one (name, seed, index).
#[derive(Debug, Clone)]
pub struct Stream(ChaCha8Rng);

impl Stream {
    /// The stream `name` of `seed` at `index` (key words: name, seed,
    /// index…, in that order).
    pub fn new(name: StreamName, seed: u64, index: &[u64]) -> Self {
        let mut h = 0x243F_6A88_85A3_08D3u64; // π's digits: any fixed start
        for k in [name.word(), seed].into_iter().chain(index.iter().copied()) {
            h = mix64(h ^ mix64(k));
        }
        let mut key = [0u8; 32];
        for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&mix64(h.wrapping_add(i as u64)).to_le_bytes());
        }
        Stream(ChaCha8Rng::from_seed(key))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniform f64 in [0, 1) from the top 53 bits of the next word.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform f64 in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// An integer in `0..n` (n > 0) by widening multiplication (bias <
    /// n/2^64).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// argmin's particle swarm draws from its own generator (a `rand` 0.9
/// `Rng`); this lets that generator be a [`Stream`] too.
impl rand_core_09::RngCore for Stream {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streams the data pipeline drew before the names existed, as
    /// its old `stream(&[tag, seed, index…])` built them: keys unchanged
    /// keep every data order and augmentation unchanged.
    #[test]
    fn names_are_the_old_data_tags() {
        assert_eq!(names::ORDER.word(), 0x006f_7264_6572);
        assert_eq!(names::AUGMENT.word(), 0x6175_676d);
        assert_eq!(names::SPLIT.word(), 0x0073_706c_6974);
        let all = [
            names::ORDER,
            names::AUGMENT,
            names::SPLIT,
            names::RANDOM_SEARCH,
            names::SWARM_INIT,
            names::SWARM_MOVES,
            names::HEAD_INIT,
            names::DROPOUT,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| b != a), "{a:?} twice");
        }
    }

    /// The key derivation against a model of the data pipeline's former
    /// `stream(&[tag, seed, index…])`: ChaCha8 keyed by hand from the same
    /// words, so the data streams are the ones the goldens were made with.
    #[test]
    fn streams_are_keyed_by_name_seed_and_index_in_order() {
        let model = |words: &[u64]| {
            let mut h = 0x243F_6A88_85A3_08D3u64;
            for &w in words {
                h = mix64(h ^ mix64(w));
            }
            let mut key = [0u8; 32];
            for i in 0..4 {
                key[8 * i..8 * i + 8]
                    .copy_from_slice(&mix64(h.wrapping_add(i as u64)).to_le_bytes());
            }
            ChaCha8Rng::from_seed(key).next_u64()
        };
        let n = names::ORDER;
        assert_eq!(Stream::new(n, 3, &[5]).next_u64(), model(&[n.word(), 3, 5]));
        assert_ne!(
            Stream::new(n, 3, &[5]).next_u64(),
            Stream::new(n, 5, &[3]).next_u64()
        );
        assert_ne!(
            Stream::new(n, 3, &[]).next_u64(),
            Stream::new(names::SPLIT, 3, &[]).next_u64()
        );
    }

    #[test]
    fn shuffle_is_a_permutation_and_uniformish() {
        let mut counts = [0usize; 4];
        for s in 0..4000u64 {
            let mut v = [0usize, 1, 2, 3];
            Stream::new(names::ORDER, s, &[]).shuffle(&mut v);
            let mut sorted = v;
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3]);
            counts[v[0]] += 1;
        }
        // Each element leads ~1000 times; 4 sigma is ~110.
        assert!(
            counts.iter().all(|&c| (880..=1120).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn unit_and_below_stay_in_range() {
        let mut s = Stream::new(names::RANDOM_SEARCH, 1, &[]);
        for _ in 0..1000 {
            let u = s.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(s.below(3) < 3);
            let x = s.uniform(-2.0, 5.0);
            assert!((-2.0..5.0).contains(&x));
        }
    }
}
