//! Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions on the CPU.
//!
//! A 4×4 block of outputs is computed from the 6×6 block of inputs under it
//! with 36 multiplications per (input, output) channel pair instead of
//! 144 (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016): with the 6×6 tile `d`, the 3×3 kernel `g` and the constant
//! matrices `Bᵀ` (6×6), `G` (6×3), `Aᵀ` (4×6),
//!
//! ```text
//! Y = Aᵀ [ Σ_c (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! so for each of the 36 positions ξ of the 6×6 transform domain the
//! channel sum is one matrix product `M_ξ (T × O) = V_ξ (T × C) · U_ξ (C × O)`
//! over all `T` tiles — 36 GEMMs through the same `gemm` crate as the direct
//! path, with 4× fewer multiply-adds than im2col + GEMM (2.25–4× here; tiles
//! hanging over the edge of 7×7 or 14×14 maps waste some).
//!
//! The same machinery gives both gradients:
//! - input gradient: the correlation of `dY` (padding `2 − p`) with the
//!   kernels rotated by 180° and transposed (`C × O`) — a Winograd forward
//!   pass of its own, accumulated into `dX`;
//! - weight gradient: `dU_ξ = Σ_t (A dY_t Aᵀ)_ξ · (Bᵀ d_t B)_ξᵀ` (36 GEMMs
//!   with the tiles as the reduction), then `dW += Gᵀ dU G`.
//!
//! Interpolation points 0, 1, −1, ½, −2 (and ∞): in float32 their error is
//! about that of the direct im2col + GEMM sum (≈ 6·10⁻⁶ of the output's
//! RMS at 64–512 channels, against ≈ 1.5·10⁻⁵ for Lavin's 0, ±1, ±2).
//!
//! The transforms run on 8 channels at a time: each group of 8 planes is
//! first staged as a zero-padded, channel-interleaved copy (8×8 transposes),
//! so every tile element is one contiguous 8-float vector and tiles on the
//! border need no special case; the 36 transformed vectors of a tile are
//! stored contiguously into `V_ξ (T × C)`. The outputs come back the same
//! way. A portable build of the same code serves CPUs without AVX2 + FMA.
//!
//! Scheduling mirrors the direct path: groups of images wide enough for a
//! ≥ 128-tile GEMM; with at least as many groups as threads, each thread
//! takes whole groups (single-threaded GEMMs); otherwise (the small late
//! layers) one group at a time with every phase — input transform,
//! the 36 GEMMs, output transform — spread over the threads.

use rayon::prelude::*;

use super::Conv2dOp;
use crate::nn::ops::cpu_util::{sgemm, threads, with_scratch_slot, Mat, SendPtr};

/// Output tile edge.
const M: usize = 4;
/// Input tile edge (`M + 3 − 1`).
const A: usize = 6;
/// Positions of the transform domain.
const XI: usize = A * A;
/// Channels per vector (one AVX2 register of f32).
const L: usize = 8;
/// Tiles per GEMM the scheduler aims for.
const WIDE_TILES: usize = 128;

/// Eight channels of one pixel (or of one transform position).
type Lanes = [f32; L];

#[inline(always)]
fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// Reads 8 floats at `p`.
///
/// # Safety
/// `p` must be valid for 8 reads.
#[inline(always)]
unsafe fn ld(p: *const f32) -> Lanes {
    // SAFETY: the caller guarantees 8 readable floats at `p`; `Lanes` has no
    // alignment beyond `f32`'s and the read is unaligned anyway.
    unsafe { p.cast::<Lanes>().read_unaligned() }
}

/// Writes 8 floats at `p`.
///
/// # Safety
/// `p` must be valid for 8 writes.
#[inline(always)]
unsafe fn st(p: *mut f32, v: Lanes) {
    // SAFETY: the caller guarantees 8 writable floats at `p`; the write is
    // unaligned.
    unsafe { p.cast::<Lanes>().write_unaligned(v) }
}

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] - b[l])
}

#[inline(always)]
fn scale(a: Lanes, k: f32) -> Lanes {
    std::array::from_fn(|l| a[l] * k)
}

/// `a·k + c`, fused where the build has FMA (the portable build would call
/// a slow software `fmaf`).
#[inline(always)]
fn fmadd<const F: bool>(a: Lanes, k: f32, c: Lanes) -> Lanes {
    std::array::from_fn(|l| {
        if F {
            a[l].mul_add(k, c[l])
        } else {
            a[l] * k + c[l]
        }
    })
}

// The transforms for the interpolation points 0, 1, −1, ½, −2, ∞, written
// out with their common subexpressions:
//
//      ⎡1  −3/2  −2   3/2   1   0⎤         ⎡  1      0      0  ⎤
//      ⎢0   −1   1/2  5/2   1   0⎥         ⎢ 1/3    1/3    1/3 ⎥
// Bᵀ = ⎢0    1  −5/2  1/2   1   0⎥    G =  ⎢−1/3    1/3  −1/3 ⎥
//      ⎢0   −2   −1    2    1   0⎥         ⎢−16/15 −8/15 −4/15⎥
//      ⎢0   1/2  −1  −1/2   1   0⎥         ⎢ 1/15 −2/15   4/15⎥
//      ⎣0    1  −3/2  −2   3/2  1⎦         ⎣  0      0      1  ⎦
//
//      ⎡1  1   1   1    1   0⎤
// Aᵀ = ⎢0  1  −1  1/2  −2   0⎥
//      ⎢0  1   1  1/4   4   0⎥
//      ⎣0  1  −1  1/8  −8   1⎦

/// `Bᵀ d` (6 → 6).
#[inline(always)]
fn bt6<const F: bool>(d: [Lanes; A]) -> [Lanes; A] {
    let e = sub(d[3], d[1]);
    let f = sub(d[4], d[2]);
    [
        fmadd::<F>(e, 1.5, add(sub(d[0], d[2]), f)),
        fmadd::<F>(d[3], 2.5, fmadd::<F>(d[2], 0.5, sub(d[4], d[1]))),
        fmadd::<F>(d[3], 0.5, fmadd::<F>(d[2], -2.5, add(d[4], d[1]))),
        fmadd::<F>(e, 2.0, f),
        fmadd::<F>(e, -0.5, f),
        fmadd::<F>(f, 1.5, fmadd::<F>(d[3], -2.0, add(d[5], d[1]))),
    ]
}

/// `Aᵀ m` (6 → 4).
#[inline(always)]
fn at4<const F: bool>(m: [Lanes; A]) -> [Lanes; M] {
    let p = add(m[1], m[2]);
    let q = sub(m[1], m[2]);
    [
        add(add(m[0], p), add(m[3], m[4])),
        fmadd::<F>(m[4], -2.0, fmadd::<F>(m[3], 0.5, q)),
        fmadd::<F>(m[4], 4.0, fmadd::<F>(m[3], 0.25, p)),
        fmadd::<F>(m[4], -8.0, fmadd::<F>(m[3], 0.125, add(q, m[5]))),
    ]
}

/// `A d` (4 → 6), the adjoint of [`at4`].
#[inline(always)]
fn a6<const F: bool>(d: [Lanes; M]) -> [Lanes; A] {
    let s = add(d[0], d[2]);
    let t = add(d[1], d[3]);
    [
        d[0],
        add(s, t),
        sub(s, t),
        fmadd::<F>(
            d[3],
            0.125,
            fmadd::<F>(d[2], 0.25, fmadd::<F>(d[1], 0.5, d[0])),
        ),
        fmadd::<F>(
            d[3],
            -8.0,
            fmadd::<F>(d[2], 4.0, fmadd::<F>(d[1], -2.0, d[0])),
        ),
        d[3],
    ]
}

/// `G g` (3 → 6).
#[inline(always)]
fn g6<const F: bool>(g: [Lanes; 3]) -> [Lanes; A] {
    let s = add(g[0], g[2]);
    [
        g[0],
        scale(add(s, g[1]), 1.0 / 3.0),
        scale(sub(g[1], s), 1.0 / 3.0),
        fmadd::<F>(
            g[2],
            -4.0 / 15.0,
            fmadd::<F>(g[1], -8.0 / 15.0, scale(g[0], -16.0 / 15.0)),
        ),
        fmadd::<F>(
            g[2],
            4.0 / 15.0,
            fmadd::<F>(g[1], -2.0 / 15.0, scale(g[0], 1.0 / 15.0)),
        ),
        g[2],
    ]
}

/// `Gᵀ m` (6 → 3), the adjoint of [`g6`].
#[inline(always)]
fn gt3<const F: bool>(m: [Lanes; A]) -> [Lanes; 3] {
    let p = scale(add(m[1], m[2]), 1.0 / 3.0);
    let q = scale(sub(m[1], m[2]), 1.0 / 3.0);
    [
        fmadd::<F>(
            m[4],
            1.0 / 15.0,
            fmadd::<F>(m[3], -16.0 / 15.0, add(m[0], q)),
        ),
        fmadd::<F>(m[4], -2.0 / 15.0, fmadd::<F>(m[3], -8.0 / 15.0, p)),
        fmadd::<F>(
            m[4],
            4.0 / 15.0,
            fmadd::<F>(m[3], -4.0 / 15.0, add(q, m[5])),
        ),
    ]
}

/// `rows[i][j] → out[j][i]` for an 8×8 block.
#[inline(always)]
fn transpose8<const F: bool>(rows: [Lanes; L]) -> [Lanes; L] {
    #[cfg(target_arch = "x86_64")]
    if F {
        // SAFETY: `F` is only true inside functions compiled for AVX2 + FMA
        // (see `dispatch!`), on CPUs that have them.
        return unsafe { transpose8_avx(rows) };
    }
    std::array::from_fn(|j| std::array::from_fn(|i| rows[i][j]))
}

/// [`transpose8`] in AVX registers.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose8_avx(rows: [Lanes; L]) -> [Lanes; L] {
    use std::arch::x86_64::*;
    // SAFETY: each `rows[i]` is 8 initialised floats (an unaligned load).
    let r: [__m256; L] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(rows[i].as_ptr()) });
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let o = [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ];
    let mut out = [[0.0f32; L]; L];
    for (dst, v) in out.iter_mut().zip(o) {
        // SAFETY: `dst` is a row of 8 floats of `out` (an unaligned store).
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
    }
    out
}

/// Which build of the vector code a convolution runs, chosen once per call
/// by the entry points ([`Isa::best`], from the process's
/// [`crate::cpu_dispatch::level`]) and passed down explicitly, so a test can
/// run either build in the same process without changing anyone else's.
mod isa {
    /// A build of the transforms: portable, or compiled for AVX2 + FMA.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Isa {
        /// Private: true only when made by [`Isa::avx2_fma`] on a CPU with
        /// AVX2 + FMA, which makes running that build sound.
        avx2_fma: bool,
        #[cfg(test)]
        trace: Option<&'static Trace>,
    }

    impl Isa {
        /// The portable build (any CPU).
        pub(super) const PORTABLE: Isa = Isa {
            avx2_fma: false,
            #[cfg(test)]
            trace: None,
        };

        /// The AVX2 + FMA build, when this CPU has both (whatever
        /// `POLY_LOSS_SIMD` says: tests use it to force that build).
        #[cfg(test)]
        pub(super) fn avx2_fma() -> Option<Isa> {
            Isa::at_least_avx2(crate::cpu_dispatch::detected())
        }

        /// The build for the process's [`crate::cpu_dispatch::level`]: AVX2 +
        /// FMA at Avx2 and above, else portable (so `POLY_LOSS_SIMD=scalar`
        /// forces the portable build).
        pub(super) fn best() -> Isa {
            Isa::at_least_avx2(crate::cpu_dispatch::level()).unwrap_or(Isa::PORTABLE)
        }

        /// The AVX2 + FMA build if `level` (detected, or detected and
        /// capped) allows it.
        fn at_least_avx2(level: crate::cpu_dispatch::Level) -> Option<Isa> {
            if cfg!(target_arch = "x86_64") && level >= crate::cpu_dispatch::Level::Avx2 {
                return Some(Isa {
                    avx2_fma: true,
                    #[cfg(test)]
                    trace: None,
                });
            }
            None
        }

        /// True for the AVX2 + FMA build (only on CPUs that have them).
        #[inline(always)]
        pub(super) fn is_avx2_fma(self) -> bool {
            self.avx2_fma
        }

        /// Counts the builds that calls on this `Isa` ran (tests).
        #[cfg(test)]
        pub(super) fn traced(self, trace: &'static Trace) -> Isa {
            Isa {
                trace: Some(trace),
                ..self
            }
        }

        /// Records that a dispatched function ran the `avx2_fma` build or not.
        #[inline(always)]
        pub(super) fn note(self, _avx2_fma: bool) {
            #[cfg(test)]
            if let Some(t) = self.trace {
                let n = if _avx2_fma { &t.avx2_fma } else { &t.portable };
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// How many dispatched calls ran each build (tests).
    #[cfg(test)]
    #[derive(Debug, Default)]
    pub(super) struct Trace {
        pub(super) portable: std::sync::atomic::AtomicUsize,
        pub(super) avx2_fma: std::sync::atomic::AtomicUsize,
    }
}

use isa::Isa;

/// Defines `$name(isa, args)` that runs `$generic::<true>` compiled for
/// AVX2 + FMA when `isa` says so, else the portable `$generic::<false>`.
macro_rules! dispatch {
    ($(#[$m:meta])* fn $name:ident => $generic:ident ($($arg:ident : $ty:ty),* $(,)?)) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if isa.is_avx2_fma() {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn fast($($arg: $ty),*) {
                    $generic::<true>($($arg),*)
                }
                isa.note(true);
                // SAFETY: an `Isa` is AVX2 + FMA only on CPUs that have them.
                return unsafe { fast($($arg),*) };
            }
            isa.note(false);
            $generic::<false>($($arg),*)
        }
    };
}

/// One Winograd convolution: `cin` planes of `h × w` per image, zero padding
/// `pad`, into `cout` planes of `ho × wo` (`ho = h + 2·pad − 2`).
#[derive(Clone, Copy, Debug)]
struct Geom {
    batch: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    /// Tile rows and columns per image.
    fn tiles(&self) -> (usize, usize) {
        (self.ho.div_ceil(M), self.wo.div_ceil(M))
    }
    fn tiles_img(&self) -> usize {
        let (th, tw) = self.tiles();
        th * tw
    }
}

/// Fewest tiles (over the batch) for the Winograd path: the kernel
/// transform costs `36·C·O` memory traffic per call whatever the batch, and
/// below this many tiles it is not paid back (ResNet-50's 7×7 maps at batch
/// 8 have 32).
const MIN_TILES: usize = 64;

/// Whether `op` takes the Winograd path: 3×3, stride 1, padding ≤ 2 (the
/// input gradient's padding is `2 − p`), enough channels on both sides
/// that the GEMMs, not the tile transforms, dominate, and enough tiles to
/// pay for the kernel transform.
pub(super) fn applies(op: &Conv2dOp) -> bool {
    op.kernel == 3
        && op.stride == 1
        && op.padding <= 2
        && op.chan_in >= 16
        && op.chan_out >= 16
        && op.h_out > 0
        && op.w_out > 0
        && op.batch * op.h_out.div_ceil(M) * op.w_out.div_ceil(M) >= MIN_TILES
}

/// Images per group and whether groups run one per thread (`true`) or one
/// at a time across all threads (`false`).
fn plan(batch: usize, tiles_img: usize, nt: usize) -> (usize, bool) {
    let g = WIDE_TILES.div_ceil(tiles_img.max(1)).clamp(1, batch.max(1));
    let mut tasks = batch.div_ceil(g);
    if tasks >= nt {
        tasks = tasks / nt * nt;
        (batch.div_ceil(tasks), true)
    } else {
        (g, nt == 1)
    }
}

/// A zero-padded, channel-interleaved copy of 8 channels of a group's
/// planes: element `(b, r, s, lane)` at `((b·hp + r)·wpp + s)·8 + lane`.
#[derive(Clone, Copy, Debug)]
struct Staged {
    hp: usize,
    wpp: usize,
}

impl Staged {
    fn len(&self, g: usize) -> usize {
        g * self.hp * self.wpp * L
    }
    #[inline(always)]
    fn at(&self, b: usize, r: usize, s: usize) -> usize {
        ((b * self.hp + r) * self.wpp + s) * L
    }
}

/// Where 8 channels of a group's NCHW planes are: channel `lane` of image
/// `b` starts at `base + b·img + lane·chan` and has `h × w` values.
#[derive(Clone, Copy, Debug)]
struct Planes {
    base: usize,
    img: usize,
    chan: usize,
    /// Channels present (the rest of the 8 lanes read as zero).
    n: usize,
    h: usize,
    w: usize,
}

/// Stages `src` into `p` with `pad` zero rows/columns before the data and
/// zeros after it: `p(b, r, s, lane) = src[b][lane][r − pad][s − pad]`.
#[inline(always)]
fn stage<const F: bool>(
    x: &[f32],
    src: Planes,
    g: usize,
    pad: usize,
    st8: Staged,
    p: &mut [f32],
    row: &mut [f32],
) {
    let (hp, wpp) = (st8.hp, st8.wpp);
    assert!(p.len() >= st8.len(g) && row.len() >= L * wpp && wpp % L == 0 && pad + src.w <= wpp);
    for b in 0..g {
        for r in 0..hp {
            let dst = &mut p[st8.at(b, r, 0)..][..wpp * L];
            let ih = r.wrapping_sub(pad);
            if ih >= src.h {
                dst.fill(0.0);
                continue;
            }
            // One padded row per channel, then 8×8 transposes into place.
            for lane in 0..L {
                let rr = &mut row[lane * wpp..][..wpp];
                if lane < src.n {
                    let at = src.base + b * src.img + lane * src.chan + ih * src.w;
                    rr[..pad].fill(0.0);
                    rr[pad..pad + src.w].copy_from_slice(&x[at..at + src.w]);
                    rr[pad + src.w..].fill(0.0);
                } else {
                    rr.fill(0.0);
                }
            }
            for s0 in (0..wpp).step_by(L) {
                let block: [Lanes; L] =
                    std::array::from_fn(|lane| row[lane * wpp + s0..][..L].try_into().unwrap());
                for (k, v) in transpose8::<F>(block).into_iter().enumerate() {
                    dst[(s0 + k) * L..][..L].copy_from_slice(&v);
                }
            }
        }
    }
}

/// Where tile `t` of a group starts: its image and top-left output position.
#[inline(always)]
fn tile_origin(t: usize, tw: usize, tiles_img: usize) -> (usize, usize, usize) {
    let (b, r) = (t / tiles_img, t % tiles_img);
    (b, M * (r / tw), M * (r % tw))
}

/// `V[ξ][t][c0..c0+8] = (Bᵀ d_t B)[ξ]` for the group's `t_count` tiles of
/// the staged channels `p`, at `v + ξ·sv + t·ldc`.
///
/// # Safety
/// `v` must be valid for those writes (`ξ < 36`, `t < t_count`, 8 floats
/// each), which no other thread touches.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
// Indexing the transposed halves reads clearer than zipped iterators.
#[allow(clippy::needless_range_loop)]
unsafe fn input_tiles<const F: bool>(
    p: &[f32],
    st8: Staged,
    tw: usize,
    tiles_img: usize,
    t_count: usize,
    v: *mut f32,
    sv: usize,
    ldc: usize,
) {
    let (b, r, s) = tile_origin(t_count - 1, tw, tiles_img);
    assert!(st8.at(b, r + A - 1, s + A - 1) + L <= p.len());
    let row = st8.wpp * L;
    for t in 0..t_count {
        let (b, r, s) = tile_origin(t, tw, tiles_img);
        let base = st8.at(b, r, s);
        // Columns first: cols[l][i] = Σ_k Bᵀ[i][k] d[k][l], then rows.
        let mut tmp = [[[0.0f32; L]; A]; A];
        for l in 0..A {
            let mut d = [[0.0f32; L]; A];
            for (k, dk) in d.iter_mut().enumerate() {
                // SAFETY: tiles come in increasing staged offset, so this
                // 8-float read (pixel (r + k, s + l) of image b) ends at or
                // before the last tile's last one, asserted ≤ `p.len()` above.
                *dk = unsafe { ld(p.as_ptr().add(base + k * row + l * L)) };
            }
            let col = bt6::<F>(d);
            for i in 0..A {
                tmp[i][l] = col[i];
            }
        }
        for (i, ti) in tmp.into_iter().enumerate() {
            for (j, vj) in bt6::<F>(ti).into_iter().enumerate() {
                // SAFETY: ξ = i·6 + j < 36 and t < t_count: a write the caller
                // guarantees valid and unshared.
                unsafe { st(v.add(t * ldc + (i * A + j) * sv), vj) };
            }
        }
    }
}

/// The output tiles of 8 channels: `q(b, r, s) = (Aᵀ M_t A)[r', s']` for
/// the tile over `(r, s)`, from `m + ξ·sm + t·ldo`.
///
/// # Safety
/// `m` must be valid for those reads (`ξ < 36`, `t < t_count`, 8 floats
/// each).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
// Indexing the transposed halves reads clearer than zipped iterators.
#[allow(clippy::needless_range_loop)]
unsafe fn output_tiles<const F: bool>(
    m: *const f32,
    sm: usize,
    ldo: usize,
    tw: usize,
    tiles_img: usize,
    t_count: usize,
    q: &mut [f32],
    st8: Staged,
) {
    let (b, r, s) = tile_origin(t_count - 1, tw, tiles_img);
    assert!(st8.at(b, r + M - 1, s + M - 1) + L <= q.len());
    let row = st8.wpp * L;
    for t in 0..t_count {
        let mut tmp = [[[0.0f32; L]; A]; M];
        for j in 0..A {
            let mut d = [[0.0f32; L]; A];
            for (i, di) in d.iter_mut().enumerate() {
                // SAFETY: ξ = i·6 + j < 36 and t < t_count: a read the caller
                // guarantees valid.
                *di = unsafe { ld(m.add(t * ldo + (i * A + j) * sm)) };
            }
            let col = at4::<F>(d);
            for r in 0..M {
                tmp[r][j] = col[r];
            }
        }
        let (b, r0, s0) = tile_origin(t, tw, tiles_img);
        let dst = st8.at(b, r0, s0);
        for (r, tr) in tmp.into_iter().enumerate() {
            for (s, v) in at4::<F>(tr).into_iter().enumerate() {
                // SAFETY: tiles come in increasing staged offset, so this
                // 8-float write (pixel (r0 + r, s0 + s) of image b) ends at or
                // before the last tile's last one, asserted ≤ `q.len()` above.
                unsafe { st(q.as_mut_ptr().add(dst + r * row + s * L), v) };
            }
        }
    }
}

/// `Gy[ξ][t][o0..o0+8] = (A dY_t Aᵀ)[ξ]` from the staged output gradient.
///
/// # Safety
/// As [`input_tiles`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
// Indexing the transposed halves reads clearer than zipped iterators.
#[allow(clippy::needless_range_loop)]
unsafe fn grad_tiles<const F: bool>(
    p: &[f32],
    st8: Staged,
    tw: usize,
    tiles_img: usize,
    t_count: usize,
    v: *mut f32,
    sv: usize,
    ldc: usize,
) {
    let (b, r, s) = tile_origin(t_count - 1, tw, tiles_img);
    assert!(st8.at(b, r + M - 1, s + M - 1) + L <= p.len());
    let row = st8.wpp * L;
    for t in 0..t_count {
        let (b, r, s) = tile_origin(t, tw, tiles_img);
        let base = st8.at(b, r, s);
        let mut tmp = [[[0.0f32; L]; M]; A];
        for l in 0..M {
            let mut d = [[0.0f32; L]; M];
            for (k, dk) in d.iter_mut().enumerate() {
                // SAFETY: tiles come in increasing staged offset, so this
                // 8-float read (pixel (r + k, s + l) of image b) ends at or
                // before the last tile's last one, asserted ≤ `p.len()` above.
                *dk = unsafe { ld(p.as_ptr().add(base + k * row + l * L)) };
            }
            let col = a6::<F>(d);
            for i in 0..A {
                tmp[i][l] = col[i];
            }
        }
        for (i, ti) in tmp.into_iter().enumerate() {
            for (j, vj) in a6::<F>(ti).into_iter().enumerate() {
                // SAFETY: ξ = i·6 + j < 36 and t < t_count: a write the caller
                // guarantees valid and unshared.
                unsafe { st(v.add(t * ldc + (i * A + j) * sv), vj) };
            }
        }
    }
}

/// Where a Winograd pass writes: NCHW planes, optionally accumulating.
#[derive(Clone, Copy)]
struct Out<'a> {
    /// `batch × cout × ho × wo`, uninitialised unless `accumulate`.
    y: SendPtr<f32>,
    accumulate: bool,
    bias: Option<&'a [f32]>,
}

/// Copies staged output channels `o0..o0 + n` of the group at `b0` back to
/// NCHW (`=` or `+=`, plus bias), clipped to `ho × wo`.
///
/// # Safety
/// `out.y` must be valid for those planes (images `b0..b0 + g`, channels
/// `o0..o0 + n`, `ho × wo` each; initialised if `out.accumulate`), which no
/// other thread touches.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn unstage<const F: bool>(
    q: &[f32],
    st8: Staged,
    g: usize,
    b0: usize,
    o0: usize,
    n: usize,
    geo: &Geom,
    out: Out,
) {
    let (ho, wo, co) = (geo.ho, geo.wo, geo.cout);
    assert!(q.len() >= st8.len(g) && round_up(wo, L) <= st8.wpp && ho <= st8.hp);
    let bias: Lanes = std::array::from_fn(|l| {
        out.bias
            .map_or(0.0, |b| if l < n { b[o0 + l] } else { 0.0 })
    });
    let y = out.y.get();
    for b in 0..g {
        for r in 0..ho {
            for s0 in (0..wo).step_by(L) {
                // SAFETY: b < g, r < ho ≤ hp and s0 + k < round_up(wo, 8) ≤ wpp
                // (asserted), so the 8 floats at `at(b, r, s0 + k)` lie inside
                // the g·hp·wpp·8 floats `q` holds.
                let block: [Lanes; L] =
                    std::array::from_fn(|k| unsafe { ld(q.as_ptr().add(st8.at(b, r, s0 + k))) });
                let cols = transpose8::<F>(block);
                let len = L.min(wo - s0);
                for (lane, v) in cols.into_iter().enumerate().take(n) {
                    let dst = (((b0 + b) * co + o0 + lane) * ho + r) * wo + s0;
                    if len == L {
                        let v = std::array::from_fn(|k| v[k] + bias[lane]);
                        // SAFETY: columns s0..s0 + 8 ≤ wo of row r of plane
                        // (b0 + b, o0 + lane), lane < n: the caller's planes,
                        // initialised when accumulating.
                        unsafe {
                            let dst = y.add(dst);
                            if out.accumulate {
                                st(dst, add(ld(dst), v));
                            } else {
                                st(dst, v);
                            }
                        }
                    } else {
                        for (k, &vk) in v.iter().enumerate().take(len) {
                            // SAFETY: column s0 + k < wo of row r of plane
                            // (b0 + b, o0 + lane), lane < n: the caller's
                            // planes, initialised when accumulating.
                            unsafe {
                                let d = y.add(dst + k);
                                if out.accumulate {
                                    *d += vk + bias[lane];
                                } else {
                                    d.write(vk + bias[lane]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Transformed kernels: `U[ξ][i][j]` (`rows × cols`) for the pass's input
/// channel `i` and output channel `j`.
#[derive(Clone, Copy)]
struct KernelLayout {
    /// `false`: the forward pass (`i` = c, `j` = o, `g = w[o][c]`);
    /// `true`: the input gradient (`i` = o, `j` = c, `g = rot180(w[o][c])`).
    adjoint: bool,
    chan_in: usize,
    chan_out: usize,
}

impl KernelLayout {
    fn rows(&self) -> usize {
        if self.adjoint {
            self.chan_out
        } else {
            self.chan_in
        }
    }
    fn cols(&self) -> usize {
        if self.adjoint {
            self.chan_in
        } else {
            self.chan_out
        }
    }
}

/// Row `i` of `U` for every ξ: `u + ξ·rows·cols + i·cols + j`.
///
/// # Safety
/// `u` must be valid for those writes (`ξ < 36`, `j < cols`), which no
/// other thread touches.
#[inline(always)]
unsafe fn weight_row<const F: bool>(w: &[f32], i: usize, kl: KernelLayout, u: *mut f32) {
    let (ci, cols, su) = (kl.chan_in, kl.cols(), kl.rows() * kl.cols());
    assert!(w.len() >= kl.chan_out * ci * 9 && i < kl.rows());
    for j0 in (0..cols).step_by(L) {
        let n = L.min(cols - j0);
        // Kernel element k of lane `lane` is at `w[first + lane·ls + k]`.
        let (first, ls) = if kl.adjoint {
            ((i * ci + j0) * 9, 9)
        } else {
            (j0 * ci * 9 + i * 9, ci * 9)
        };
        let mut ks = [[0.0f32; L]; 9];
        if n == L {
            // Eight kernels: their first 8 values by one transpose, the 9th apart.
            let rows: [Lanes; L] =
                std::array::from_fn(|lane| w[first + lane * ls..][..L].try_into().unwrap());
            ks[..L].copy_from_slice(&transpose8::<F>(rows));
            for lane in 0..L {
                ks[8][lane] = w[first + lane * ls + 8];
            }
        } else {
            for lane in 0..n {
                for (k, kk) in ks.iter_mut().enumerate() {
                    kk[lane] = w[first + lane * ls + k];
                }
            }
        }
        // The adjoint reads the kernel rotated by 180°.
        let g: [[Lanes; 3]; 3] = if kl.adjoint {
            std::array::from_fn(|kh| std::array::from_fn(|kw| ks[8 - (kh * 3 + kw)]))
        } else {
            std::array::from_fn(|kh| std::array::from_fn(|kw| ks[kh * 3 + kw]))
        };
        let mut tmp = [[[0.0f32; L]; 3]; A];
        for kw in 0..3 {
            let col = g6::<F>([g[0][kw], g[1][kw], g[2][kw]]);
            for a in 0..A {
                tmp[a][kw] = col[a];
            }
        }
        let dst = i * cols + j0;
        for (a, ta) in tmp.into_iter().enumerate() {
            for (b, v) in g6::<F>(ta).into_iter().enumerate() {
                let d = dst + (a * A + b) * su;
                // SAFETY: ξ = a·6 + b < 36, row i, columns j0..j0 + n ≤ cols:
                // writes the caller guarantees valid and unshared.
                unsafe {
                    if n == L {
                        st(u.add(d), v);
                    } else {
                        for (k, &vk) in v.iter().enumerate().take(n) {
                            u.add(d + k).write(vk);
                        }
                    }
                }
            }
        }
    }
}

/// `gw[o][c] += Gᵀ dU[·][o][c] G` for output channel `o` (`gw_o`: its
/// `cin × 9` weights), 8 input channels at a time.
#[inline(always)]
fn weight_grad_row<const F: bool>(du: &[f32], o: usize, ci: usize, co: usize, gw_o: &mut [f32]) {
    let su = ci * co;
    assert!(gw_o.len() == ci * 9 && du.len() >= XI * su && o < co);
    for c0 in (0..ci).step_by(L) {
        let n = L.min(ci - c0);
        let mut col = [[[0.0f32; L]; A]; A];
        for (xi, v) in col.iter_mut().flatten().enumerate() {
            let at = xi * su + o * ci + c0;
            if n == L {
                *v = du[at..at + L].try_into().unwrap();
            } else {
                v[..n]
                    .iter_mut()
                    .zip(&du[at..at + n])
                    .for_each(|(v, d)| *v = *d);
            }
        }
        let mut tmp = [[[0.0f32; L]; A]; 3];
        for j in 0..A {
            let cj = gt3::<F>([
                col[0][j], col[1][j], col[2][j], col[3][j], col[4][j], col[5][j],
            ]);
            for kh in 0..3 {
                tmp[kh][j] = cj[kh];
            }
        }
        let mut ks = [[0.0f32; L]; 9];
        for (kh, tk) in tmp.into_iter().enumerate() {
            ks[kh * 3..kh * 3 + 3].copy_from_slice(&gt3::<F>(tk));
        }
        let dst = &mut gw_o[c0 * 9..(c0 + n) * 9];
        if n == L {
            // Lane-major back to kernel-major: the first 8 values of each
            // kernel by one transpose, the 9th apart.
            let rows = transpose8::<F>(ks[..L].try_into().unwrap());
            for (lane, (kern, r)) in dst.chunks_exact_mut(9).zip(rows).enumerate() {
                for (d, v) in kern[..L].iter_mut().zip(r) {
                    *d += v;
                }
                kern[8] += ks[8][lane];
            }
        } else {
            for (lane, kern) in dst.chunks_exact_mut(9).enumerate() {
                for (k, d) in kern.iter_mut().enumerate() {
                    *d += ks[k][lane];
                }
            }
        }
    }
}

/// A group's transformed inputs `V` (`36 × T × ldc`) and GEMM results `M`
/// (`36 × T × ldo`), `T` = the largest group's tile count.
#[derive(Clone, Copy)]
struct GroupBufs {
    v: SendPtr<f32>,
    m: SendPtr<f32>,
    tiles: usize,
    ldc: usize,
    ldo: usize,
}

impl GroupBufs {
    fn len(tiles: usize, ldc: usize, ldo: usize) -> usize {
        XI * tiles * (ldc + ldo)
    }
}

/// The staging geometry of a pass's input: padded for every tile's 6×6
/// window, rows rounded up to whole 8×8 transposes.
fn input_staging(geo: &Geom) -> Staged {
    let (th, tw) = geo.tiles();
    let (hp, wp) = (M * th + 2, M * tw + 2);
    Staged {
        hp,
        wpp: round_up(wp.max(geo.w + geo.pad), L),
    }
}

/// The staging geometry of a pass's output (and of the output gradient).
fn output_staging(geo: &Geom) -> Staged {
    let (th, tw) = geo.tiles();
    Staged {
        hp: M * th,
        wpp: round_up(M * tw, L),
    }
}

/// Input transform of channels `c0..c0 + 8` of the group at `b0`.
fn group_input(isa: Isa, geo: &Geom, x: &[f32], c0: usize, b0: usize, g: usize, bufs: GroupBufs) {
    let st8 = input_staging(geo);
    with_scratch_slot(1, st8.len(g) + L * st8.wpp, |buf| {
        group_input_best(isa, geo, x, c0, b0, g, bufs, buf)
    });
}

/// [`group_input`] on the staging buffer `buf` (no closures inside: they
/// would not inherit the AVX2 build).
#[inline(always)]
fn group_input_in<const F: bool>(
    geo: &Geom,
    x: &[f32],
    c0: usize,
    b0: usize,
    g: usize,
    bufs: GroupBufs,
    buf: &mut [f32],
) {
    let st8 = input_staging(geo);
    let (tw, tiles_img) = (geo.tiles().1, geo.tiles_img());
    let src = Planes {
        base: (b0 * geo.cin + c0) * geo.h * geo.w,
        img: geo.cin * geo.h * geo.w,
        chan: geo.h * geo.w,
        n: L.min(geo.cin - c0),
        h: geo.h,
        w: geo.w,
    };
    let (p, row) = buf.split_at_mut(st8.len(g));
    stage::<F>(x, src, g, geo.pad, st8, p, row);
    // SAFETY: columns c0..c0+8 of every V row belong to this call.
    unsafe {
        input_tiles::<F>(
            p,
            st8,
            tw,
            tiles_img,
            g * tiles_img,
            bufs.v.get().add(c0),
            bufs.tiles * bufs.ldc,
            bufs.ldc,
        )
    };
}

dispatch!(
    /// [`group_input_in`], vectorised where the CPU allows.
    fn group_input_best => group_input_in(geo: &Geom, x: &[f32], c0: usize, b0: usize, g: usize, bufs: GroupBufs, buf: &mut [f32])
);

/// Output transform of channels `o0..o0 + 8` of the group at `b0`.
fn group_output(isa: Isa, geo: &Geom, o0: usize, b0: usize, g: usize, out: Out, bufs: GroupBufs) {
    let st8 = output_staging(geo);
    with_scratch_slot(1, st8.len(g), |q| {
        group_output_best(isa, geo, o0, b0, g, out, bufs, q)
    });
}

/// [`group_output`] on the staging buffer `q`.
#[inline(always)]
fn group_output_in<const F: bool>(
    geo: &Geom,
    o0: usize,
    b0: usize,
    g: usize,
    out: Out,
    bufs: GroupBufs,
    q: &mut [f32],
) {
    let st8 = output_staging(geo);
    let (tw, tiles_img) = (geo.tiles().1, geo.tiles_img());
    // SAFETY: M holds 36 × tiles × ldo values; the columns o0..o0+8 are
    // inside each row (ldo is a multiple of 8); the callers own output
    // channels o0..o0+8 of the group.
    unsafe {
        output_tiles::<F>(
            bufs.m.get().add(o0),
            bufs.tiles * bufs.ldo,
            bufs.ldo,
            tw,
            tiles_img,
            g * tiles_img,
            q,
            st8,
        );
        unstage::<F>(q, st8, g, b0, o0, L.min(geo.cout - o0), geo, out);
    }
}

dispatch!(
    /// [`group_output_in`], vectorised where the CPU allows.
    fn group_output_best => group_output_in(geo: &Geom, o0: usize, b0: usize, g: usize, out: Out, bufs: GroupBufs, q: &mut [f32])
);

/// `M_ξ (T × O) = V_ξ (T × C) · U_ξ (C × O)` for one group.
fn group_gemm(geo: &Geom, u: &[f32], xi: usize, t_count: usize, bufs: GroupBufs) {
    let (ci, co) = (geo.cin, geo.cout);
    // SAFETY: row ξ of V (t_count × ci, stride ldc), of U (ci × co) and of
    // M (t_count × co, stride ldo); M's is written by this call only.
    unsafe {
        sgemm(
            t_count,
            co,
            ci,
            bufs.m.get().add(xi * bufs.tiles * bufs.ldo),
            bufs.ldo as isize,
            1,
            false,
            Mat::rows(bufs.v.get().add(xi * bufs.tiles * bufs.ldc), bufs.ldc),
            Mat::rows(u.as_ptr().add(xi * ci * co), co),
            1,
        );
    }
}

/// `y (=|+=) conv(x, U) (+ bias)` with transformed kernels `u`
/// (`36 × cin × cout`), on `nt` threads.
///
/// # Safety
/// `out.y` must be valid for `batch·cout·ho·wo` elements and alias neither
/// `x` nor `u`.
unsafe fn winograd_pass(isa: Isa, geo: &Geom, x: &[f32], u: &[f32], out: Out, nt: usize) {
    assert!(x.len() >= geo.batch * geo.cin * geo.h * geo.w);
    assert!(u.len() >= XI * geo.cout * geo.cin);
    let tiles_img = geo.tiles_img();
    let (g, per_thread) = plan(geo.batch, tiles_img, nt);
    let groups = geo.batch.div_ceil(g);
    let (ldc, ldo, tiles) = (round_up(geo.cin, L), round_up(geo.cout, L), g * tiles_img);
    let (cb, ob) = (ldc / L, ldo / L);
    let run_group = |b0: usize, bufs: GroupBufs, parallel: bool| {
        let gi = g.min(geo.batch - b0);
        if parallel {
            (0..cb)
                .into_par_iter()
                .for_each(|k| group_input(isa, geo, x, k * L, b0, gi, bufs));
            (0..XI)
                .into_par_iter()
                .for_each(|xi| group_gemm(geo, u, xi, gi * tiles_img, bufs));
            (0..ob)
                .into_par_iter()
                .for_each(|k| group_output(isa, geo, k * L, b0, gi, out, bufs));
        } else {
            for k in 0..cb {
                group_input(isa, geo, x, k * L, b0, gi, bufs);
            }
            for xi in 0..XI {
                group_gemm(geo, u, xi, gi * tiles_img, bufs);
            }
            for k in 0..ob {
                group_output(isa, geo, k * L, b0, gi, out, bufs);
            }
        }
    };
    let with_bufs = |f: &dyn Fn(GroupBufs)| {
        with_scratch_slot(0, GroupBufs::len(tiles, ldc, ldo), |buf| {
            let (v, m) = buf.split_at_mut(XI * tiles * ldc);
            f(GroupBufs {
                v: SendPtr(v.as_mut_ptr()),
                m: SendPtr(m.as_mut_ptr()),
                tiles,
                ldc,
                ldo,
            })
        })
    };
    if per_thread && nt > 1 {
        (0..groups)
            .into_par_iter()
            .for_each(|gr| with_bufs(&|bufs| run_group(gr * g, bufs, false)));
    } else {
        with_bufs(&|bufs| {
            for gr in 0..groups {
                run_group(gr * g, bufs, !per_thread);
            }
        });
    }
}

/// `U` for `w` under layout `kl`, rows in parallel.
fn transform_weights(isa: Isa, w: &[f32], kl: KernelLayout, u: &mut [f32]) {
    assert!(u.len() >= XI * kl.rows() * kl.cols());
    let up = SendPtr(u.as_mut_ptr());
    (0..kl.rows())
        .into_par_iter()
        .with_min_len(8)
        .for_each(|i| weight_row_best(isa, w, i, kl, up));
}

dispatch!(
    /// [`weight_row`], vectorised where the CPU allows.
    fn weight_row_best => weight_row_safe(w: &[f32], i: usize, kl: KernelLayout, u: SendPtr<f32>)
);

#[inline(always)]
fn weight_row_safe<const F: bool>(w: &[f32], i: usize, kl: KernelLayout, u: SendPtr<f32>) {
    // SAFETY: the callers own row `i` of every ξ of `u`.
    unsafe { weight_row::<F>(w, i, kl, u.get()) }
}

dispatch!(
    /// [`weight_grad_row`], vectorised where the CPU allows.
    fn weight_grad_row_best => weight_grad_row(du: &[f32], o: usize, ci: usize, co: usize, gw_o: &mut [f32])
);

fn forward_geom(op: &Conv2dOp) -> Geom {
    Geom {
        batch: op.batch,
        cin: op.chan_in,
        cout: op.chan_out,
        h: op.h_in,
        w: op.w_in,
        pad: op.padding,
        ho: op.h_out,
        wo: op.w_out,
    }
}

/// Forward: `y = conv(x, w) + bias` into uninitialised `y`.
///
/// # Safety
/// `y` must be valid for `batch·O·H'·W'` writes and not alias the inputs.
pub(super) unsafe fn forward(
    op: &Conv2dOp,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: *mut f32,
) {
    // SAFETY: the caller's contract is `forward_nt`'s.
    unsafe { forward_nt(Isa::best(), op, x, w, bias, y, threads()) }
}

/// [`forward`] with an explicit build and thread count.
///
/// # Safety
/// As [`forward`].
unsafe fn forward_nt(
    isa: Isa,
    op: &Conv2dOp,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: *mut f32,
    nt: usize,
) {
    let kl = KernelLayout {
        adjoint: false,
        chan_in: op.chan_in,
        chan_out: op.chan_out,
    };
    with_scratch_slot(2, XI * op.chan_in * op.chan_out, |u| {
        transform_weights(isa, w, kl, u);
        let out = Out {
            y: SendPtr(y),
            accumulate: false,
            bias,
        };
        // SAFETY: `out.y` is the caller's `y`, valid for batch·O·H'·W' =
        // batch·cout·ho·wo writes of `forward_geom(op)` and aliasing neither
        // `x` nor the scratch `u`.
        unsafe { winograd_pass(isa, &forward_geom(op), x, u, out, nt) };
    });
}

/// Input gradient: `gx += corr(gy, rot180(w)ᵀ)` (padding `2 − p`).
pub(super) fn backward_input(op: &Conv2dOp, w: &[f32], gy: &[f32], gx: &mut [f32]) {
    backward_input_nt(Isa::best(), op, w, gy, gx, threads())
}

fn backward_input_nt(isa: Isa, op: &Conv2dOp, w: &[f32], gy: &[f32], gx: &mut [f32], nt: usize) {
    assert!(op.padding <= 2);
    assert_eq!(gx.len(), op.batch * op.in_image());
    let geo = Geom {
        batch: op.batch,
        cin: op.chan_out,
        cout: op.chan_in,
        h: op.h_out,
        w: op.w_out,
        pad: 2 - op.padding,
        ho: op.h_in,
        wo: op.w_in,
    };
    let kl = KernelLayout {
        adjoint: true,
        chan_in: op.chan_in,
        chan_out: op.chan_out,
    };
    with_scratch_slot(2, XI * op.chan_in * op.chan_out, |u| {
        transform_weights(isa, w, kl, u);
        let out = Out {
            y: SendPtr(gx.as_mut_ptr()),
            accumulate: true,
            bias: None,
        };
        // SAFETY: gx holds batch·C·H·W elements (asserted) and is borrowed
        // mutably here, so nothing else aliases it.
        unsafe { winograd_pass(isa, &geo, gy, u, out, nt) };
    });
}

/// Transform of output-gradient channels `o0..o0 + 8` of the group at `b0`
/// into the rows of `bufs.m`.
fn group_grad(isa: Isa, geo: &Geom, gy: &[f32], o0: usize, b0: usize, g: usize, bufs: GroupBufs) {
    let st8 = output_staging(geo);
    with_scratch_slot(1, st8.len(g) + L * st8.wpp, |buf| {
        group_grad_best(isa, geo, gy, o0, b0, g, bufs, buf)
    });
}

/// [`group_grad`] on the staging buffer `buf`.
#[inline(always)]
fn group_grad_in<const F: bool>(
    geo: &Geom,
    gy: &[f32],
    o0: usize,
    b0: usize,
    g: usize,
    bufs: GroupBufs,
    buf: &mut [f32],
) {
    let st8 = output_staging(geo);
    let (tw, tiles_img) = (geo.tiles().1, geo.tiles_img());
    let plane = geo.ho * geo.wo;
    let src = Planes {
        base: (b0 * geo.cout + o0) * plane,
        img: geo.cout * plane,
        chan: plane,
        n: L.min(geo.cout - o0),
        h: geo.ho,
        w: geo.wo,
    };
    let (q, row) = buf.split_at_mut(st8.len(g));
    stage::<F>(gy, src, g, 0, st8, q, row);
    // SAFETY: columns o0..o0+8 of every M row belong to this call.
    unsafe {
        grad_tiles::<F>(
            q,
            st8,
            tw,
            tiles_img,
            g * tiles_img,
            bufs.m.get().add(o0),
            bufs.tiles * bufs.ldo,
            bufs.ldo,
        )
    };
}

dispatch!(
    /// [`group_grad_in`], vectorised where the CPU allows.
    fn group_grad_best => group_grad_in(geo: &Geom, gy: &[f32], o0: usize, b0: usize, g: usize, bufs: GroupBufs, buf: &mut [f32])
);

/// Weight gradient: `gw += Gᵀ [Σ_t (Bᵀ d_t B) ⊗ (A dY_t Aᵀ)] G`.
pub(super) fn backward_weight(op: &Conv2dOp, x: &[f32], gy: &[f32], gw: &mut [f32]) {
    backward_weight_nt(Isa::best(), op, x, gy, gw, threads())
}

fn backward_weight_nt(isa: Isa, op: &Conv2dOp, x: &[f32], gy: &[f32], gw: &mut [f32], nt: usize) {
    let geo = forward_geom(op);
    let (ci, co) = (op.chan_in, op.chan_out);
    assert_eq!(gw.len(), co * ci * 9);
    assert!(x.len() >= op.batch * op.in_image() && gy.len() >= op.batch * co * op.out_plane());
    let tiles_img = geo.tiles_img();
    let (g, per_thread) = plan(op.batch, tiles_img, nt);
    let groups = op.batch.div_ceil(g);
    let (ldc, ldo, tiles) = (round_up(ci, L), round_up(co, L), g * tiles_img);
    let (cb, ob) = (ldc / L, ldo / L);
    let su = ci * co;
    // dU_ξ (O × C) (+)= Gy_ξᵀ (O × T) · V_ξ (T × C)
    let du_gemm = |xi: usize, t_count: usize, bufs: GroupBufs, du: SendPtr<f32>, acc: bool| {
        // SAFETY: Gy_ξ is t_count × co (stride ldo), V_ξ t_count × ci
        // (stride ldc), dU_ξ co × ci, written by this call only.
        unsafe {
            sgemm(
                co,
                ci,
                t_count,
                du.get().add(xi * su),
                ci as isize,
                1,
                acc,
                Mat::rows_t(bufs.m.get().add(xi * tiles * ldo), ldo),
                Mat::rows(bufs.v.get().add(xi * tiles * ldc), ldc),
                1,
            );
        }
    };
    let run_group = |gr: usize, bufs: GroupBufs, du: SendPtr<f32>, acc: bool, parallel: bool| {
        let b0 = gr * g;
        let gi = g.min(op.batch - b0);
        let t_count = gi * tiles_img;
        if parallel {
            (0..cb)
                .into_par_iter()
                .for_each(|k| group_input(isa, &geo, x, k * L, b0, gi, bufs));
            (0..ob)
                .into_par_iter()
                .for_each(|k| group_grad(isa, &geo, gy, k * L, b0, gi, bufs));
            (0..XI)
                .into_par_iter()
                .for_each(|xi| du_gemm(xi, t_count, bufs, du, acc));
        } else {
            for k in 0..cb {
                group_input(isa, &geo, x, k * L, b0, gi, bufs);
            }
            for k in 0..ob {
                group_grad(isa, &geo, gy, k * L, b0, gi, bufs);
            }
            for xi in 0..XI {
                du_gemm(xi, t_count, bufs, du, acc);
            }
        }
    };
    let with_bufs = |f: &dyn Fn(GroupBufs)| {
        with_scratch_slot(0, GroupBufs::len(tiles, ldc, ldo), |buf| {
            let (v, m) = buf.split_at_mut(XI * tiles * ldc);
            f(GroupBufs {
                v: SendPtr(v.as_mut_ptr()),
                m: SendPtr(m.as_mut_ptr()),
                tiles,
                ldc,
                ldo,
            })
        })
    };
    // dU (36 × C × O): one per thread run when groups run per thread.
    let runs = if per_thread && nt > 1 {
        nt.min(groups)
    } else {
        1
    };
    let per = groups.div_ceil(runs);
    with_scratch_slot(2, runs * XI * su, |du_all| {
        let du_ptr = SendPtr(du_all.as_mut_ptr());
        if runs > 1 {
            (0..runs).into_par_iter().for_each(|p| {
                // SAFETY: run `p` owns its dU block.
                let du = SendPtr(unsafe { du_ptr.get().add(p * XI * su) });
                with_bufs(&|bufs| {
                    for (k, gr) in (p * per..((p + 1) * per).min(groups)).enumerate() {
                        run_group(gr, bufs, du, k > 0, false);
                    }
                });
            });
            let (first, rest) = du_all.split_at_mut(XI * su);
            for p in 1..runs {
                if p * per < groups {
                    let part = &rest[(p - 1) * XI * su..][..XI * su];
                    first
                        .par_chunks_mut(4096)
                        .zip(part.par_chunks(4096))
                        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
                }
            }
        } else {
            with_bufs(&|bufs| {
                for gr in 0..groups {
                    run_group(gr, bufs, du_ptr, gr > 0, !per_thread);
                }
            });
        }
        let du = &du_all[..XI * su];
        gw.par_chunks_mut(ci * 9)
            .enumerate()
            .for_each(|(o, gw_o)| weight_grad_row_best(isa, du, o, ci, co, gw_o));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [−1, 1).
    fn vals(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    fn op(b: usize, ci: usize, co: usize, h: usize, w: usize, p: usize) -> Conv2dOp {
        Conv2dOp {
            batch: b,
            chan_in: ci,
            chan_out: co,
            h_in: h,
            w_in: w,
            h_out: h + 2 * p - 2,
            w_out: w + 2 * p - 2,
            kernel: 3,
            stride: 1,
            padding: p,
        }
    }

    /// f64 direct convolution and both gradients of `Σ y·r`.
    fn reference(op: &Conv2dOp, x: &[f32], w: &[f32], r: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (ci, co, h, wd, ho, wo, p) = (
            op.chan_in,
            op.chan_out,
            op.h_in,
            op.w_in,
            op.h_out,
            op.w_out,
            op.padding as isize,
        );
        let mut y = vec![0.0; op.batch * co * ho * wo];
        let mut gx = vec![0.0; x.len()];
        let mut gw = vec![0.0; w.len()];
        for b in 0..op.batch {
            for o in 0..co {
                for i in 0..ho {
                    for j in 0..wo {
                        let yi = ((b * co + o) * ho + i) * wo + j;
                        let mut s = 0.0;
                        for c in 0..ci {
                            for kh in 0..3 {
                                for kw in 0..3 {
                                    let (ih, iw) = (i as isize + kh - p, j as isize + kw - p);
                                    if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                        continue;
                                    }
                                    let xi = ((b * ci + c) * h + ih as usize) * wd + iw as usize;
                                    let wi = ((o * ci + c) * 3 + kh as usize) * 3 + kw as usize;
                                    s += x[xi] as f64 * w[wi] as f64;
                                    gx[xi] += r[yi] as f64 * w[wi] as f64;
                                    gw[wi] += r[yi] as f64 * x[xi] as f64;
                                }
                            }
                        }
                        y[yi] = s;
                    }
                }
            }
        }
        (y, gx, gw)
    }

    fn close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        let scale = (want.iter().map(|v| v * v).sum::<f64>() / want.len().max(1) as f64).sqrt();
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g as f64 - w).abs();
            assert!(
                err <= 2e-5 * (scale + w.abs()),
                "{what}[{i}]: got {g}, want {w}, rms {scale}"
            );
        }
    }

    /// Forward, input and weight gradients against f64, with the gradient
    /// buffers pre-filled (they must accumulate).
    fn check(isa: Isa, op: Conv2dOp, nt: usize, seed: u64) {
        let x = vals(op.batch * op.in_image(), seed);
        let w = vals(op.chan_out * op.chan_in * 9, seed + 1);
        let bias = vals(op.chan_out, seed + 2);
        let r = vals(op.batch * op.chan_out * op.out_plane(), seed + 3);
        let (mut y_ref, gx_ref, gw_ref) = reference(&op, &x, &w, &r);
        for (i, v) in y_ref.iter_mut().enumerate() {
            *v += bias[i / op.out_plane() % op.chan_out] as f64;
        }
        let mut y = vec![f32::NAN; y_ref.len()];
        // SAFETY: y has batch·O·H'·W' elements.
        unsafe { forward_nt(isa, &op, &x, &w, Some(&bias), y.as_mut_ptr(), nt) };
        close(&format!("y {op:?} nt {nt}"), &y, &y_ref);

        let mut gx = vec![1.0f32; x.len()];
        backward_input_nt(isa, &op, &w, &r, &mut gx, nt);
        let gx_ref: Vec<f64> = gx_ref.iter().map(|v| v + 1.0).collect();
        close(&format!("gx {op:?} nt {nt}"), &gx, &gx_ref);

        let mut gw = vec![-1.0f32; w.len()];
        backward_weight_nt(isa, &op, &x, &r, &mut gw, nt);
        let gw_ref: Vec<f64> = gw_ref.iter().map(|v| v - 1.0).collect();
        close(&format!("gw {op:?} nt {nt}"), &gw, &gw_ref);
    }

    #[test]
    fn matches_direct_over_shapes_paddings_and_schedules() {
        // Odd and even sizes (partial edge tiles), paddings 0..=2, channel
        // counts off the vector width, batch grouping and both schedules.
        let cases = [
            (1, 3, 5, 6, 6, 1),
            (2, 9, 17, 7, 9, 1),
            (3, 16, 8, 5, 11, 0),
            (2, 11, 3, 4, 3, 2),
            (5, 8, 12, 13, 6, 1),
            (1, 1, 1, 3, 3, 0),
            (9, 4, 4, 3, 5, 1),
        ];
        for (k, &(b, ci, co, h, w, p)) in cases.iter().enumerate() {
            for nt in [1, 2, 3] {
                check(
                    Isa::best(),
                    op(b, ci, co, h, w, p),
                    nt,
                    10 * k as u64 + nt as u64,
                );
            }
        }
    }

    #[test]
    fn many_tiles_per_group() {
        // 20×20 → 25 tiles per image, 6 images: several groups per thread.
        for nt in [1, 2] {
            check(Isa::best(), op(6, 4, 6, 20, 18, 1), nt, 99);
        }
    }

    /// Both builds, each asked for explicitly, match the reference, and the
    /// trace shows every dispatched call ran the build asked for.
    fn check_build(isa: Isa, avx2_fma: bool) {
        let trace: &'static isa::Trace = Box::leak(Box::default());
        for nt in [1, 2] {
            check(isa.traced(trace), op(3, 10, 9, 7, 6, 1), nt, 7);
        }
        let ran = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::Relaxed);
        let (portable, fast) = (ran(&trace.portable), ran(&trace.avx2_fma));
        if avx2_fma {
            assert!(fast > 0 && portable == 0, "AVX2 + FMA asked for: {trace:?}");
        } else {
            assert!(portable > 0 && fast == 0, "portable asked for: {trace:?}");
        }
    }

    #[test]
    fn portable_build_matches_direct() {
        check_build(Isa::PORTABLE, false);
    }

    #[test]
    fn avx2_fma_build_matches_direct() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        match Isa::avx2_fma() {
            Some(isa) => check_build(isa, true),
            None if ci => panic!("CI=true but this CPU lacks AVX2 + FMA: the build is untested"),
            None => eprintln!("SKIPPED avx2_fma_build_matches_direct: this CPU lacks AVX2 + FMA"),
        }
    }

    #[test]
    fn best_is_the_fastest_build_the_process_level_allows() {
        use crate::cpu_dispatch::{level, Level};
        #[cfg(target_arch = "x86_64")]
        let has = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        assert_eq!(Isa::avx2_fma().is_some(), has);
        // `level` is what the CPU has, capped by POLY_LOSS_SIMD.
        assert_eq!(Isa::best().is_avx2_fma(), level() >= Level::Avx2);
        assert!(!Isa::PORTABLE.is_avx2_fma());
    }
}

/// Profiling aids (not tests: they measure, they check nothing). Run them
/// through `cargo run --release --example winograd_profile`; hidden from the
/// docs because they expose the kernel's internal phases.
#[doc(hidden)]
pub mod profile {
    use super::*;
    use std::time::Instant;

    /// Best of `n` runs of `f`, in ms.
    fn best(n: usize, mut f: impl FnMut()) -> f64 {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    }

    /// A 3×3, stride-1, padding-1 convolution with `c` channels in and out
    /// on `hw`×`hw` images: the shape of ResNet-50's 3×3 layers.
    fn square_op(batch: usize, c: usize, hw: usize) -> Conv2dOp {
        Conv2dOp {
            batch,
            chan_in: c,
            chan_out: c,
            h_in: hw,
            w_in: hw,
            h_out: hw,
            w_out: hw,
            kernel: 3,
            stride: 1,
            padding: 1,
        }
    }

    /// Single-threaded phase timings (best of 3–5 runs, ms) of one
    /// 3×3, stride-1, padding-1 convolution: the weight transform, the input transform, the 36
    /// GEMMs and the output transform (each summed over the batch's tile
    /// groups), then the whole forward, input-gradient and weight-gradient
    /// passes.
    #[derive(Clone, Copy, Debug)]
    pub struct PhaseTimings {
        /// Weight transform `U = G w Gᵀ`.
        pub weights: f64,
        /// Input transform `V = Bᵀ d B` of every tile.
        pub input: f64,
        /// The 36 per-frequency GEMMs `M = U V`.
        pub gemm: f64,
        /// Output transform `y = Aᵀ M A`.
        pub output: f64,
        /// Whole forward pass.
        pub forward: f64,
        /// Whole input-gradient pass.
        pub backward_input: f64,
        /// Whole weight-gradient pass.
        pub backward_weight: f64,
    }

    /// Measures [`PhaseTimings`] at batch `batch`, `c` channels, `hw`×`hw`.
    pub fn phase_timings(batch: usize, c: usize, hw: usize) -> PhaseTimings {
        let op = square_op(batch, c, hw);
        let geo = forward_geom(&op);
        let x = vec![0.5f32; op.batch * op.in_image()];
        let w = vec![0.25f32; c * c * 9];
        let mut u = vec![0.0f32; XI * c * c];
        let kl = KernelLayout {
            adjoint: false,
            chan_in: c,
            chan_out: c,
        };
        let isa = Isa::best();
        let weights = best(5, || transform_weights(isa, &w, kl, &mut u));
        let tiles_img = geo.tiles_img();
        let (g, _) = plan(op.batch, tiles_img, 1);
        let (ldc, ldo, tiles) = (round_up(c, L), round_up(c, L), g * tiles_img);
        let mut buf = vec![0.0f32; GroupBufs::len(tiles, ldc, ldo)];
        let (v, m) = buf.split_at_mut(XI * tiles * ldc);
        let bufs = GroupBufs {
            v: SendPtr(v.as_mut_ptr()),
            m: SendPtr(m.as_mut_ptr()),
            tiles,
            ldc,
            ldo,
        };
        let groups = op.batch.div_ceil(g) as f64;
        let input = best(5, || {
            (0..ldc / L).for_each(|k| group_input(isa, &geo, &x, k * L, 0, g, bufs))
        }) * groups;
        let gemm = best(5, || {
            (0..XI).for_each(|xi| group_gemm(&geo, &u, xi, tiles, bufs))
        }) * groups;
        let mut y = vec![0.0f32; op.batch * c * hw * hw];
        let out = Out {
            y: SendPtr(y.as_mut_ptr()),
            accumulate: false,
            bias: None,
        };
        let output = best(5, || {
            (0..ldo / L).for_each(|k| group_output(isa, &geo, k * L, 0, g, out, bufs))
        }) * groups;
        // SAFETY: `y` holds `batch · c · hw²` floats, the output of `op`.
        let forward = best(5, || unsafe {
            forward_nt(isa, &op, &x, &w, None, y.as_mut_ptr(), 1)
        });
        let mut gw = vec![0.0f32; c * c * 9];
        let backward_weight = best(3, || backward_weight_nt(isa, &op, &x, &y, &mut gw, 1));
        let mut gx = vec![0.0f32; x.len()];
        let backward_input = best(3, || backward_input_nt(isa, &op, &w, &y, &mut gx, 1));
        PhaseTimings {
            weights,
            input,
            gemm,
            output,
            forward,
            backward_input,
            backward_weight,
        }
    }

    /// Mean time (ms) of `iters` single-threaded forward passes at batch 8,
    /// `c` channels, `hw`×`hw` (a steady loop to attach `perf` to).
    pub fn forward_loop(c: usize, hw: usize, iters: usize) -> f64 {
        let op = square_op(8, c, hw);
        let x = vec![0.5f32; op.batch * op.in_image()];
        let w = vec![0.25f32; c * c * 9];
        let mut y = vec![0.0f32; x.len()];
        let t = Instant::now();
        for _ in 0..iters {
            // SAFETY: `y` holds `8 · c · hw²` floats, the output of `op`.
            unsafe { forward_nt(Isa::best(), &op, &x, &w, None, y.as_mut_ptr(), 1) };
        }
        t.elapsed().as_secs_f64() * 1e3 / iters.max(1) as f64
    }
}
