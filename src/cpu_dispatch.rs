//! The one CPU feature dispatch of every CPU kernel: the loss rows
//! (`loss::simd`), convolution (im2col helpers and Winograd), batch-norm,
//! `add_relu` and the pooling sums.
//!
//! The crate is built for baseline x86-64 (SSE2). A hot loop is written once
//! as an `#[inline(always)]` body and compiled again with
//! `#[target_feature]` for AVX2 + FMA (and, for the loss rows, AVX-512);
//! [`level`] picks the build at run time. The level is detected once per
//! process and then cached:
//!
//! | [`Level`] | needs |
//! | --- | --- |
//! | `Avx512` | AVX2, FMA, AVX-512 F/VL/DQ/BW |
//! | `Avx2` | AVX2, FMA |
//! | `Scalar` | nothing (the portable build) |
//!
//! # `POLY_LOSS_SIMD`
//!
//! The environment variable `POLY_LOSS_SIMD=scalar|avx2|avx512` caps the
//! level for every kernel of the process (it never raises it above what the
//! CPU has): `scalar` forces the portable code everywhere, `avx2` keeps
//! AVX-512 out. Unset, empty, `avx512` or `best` mean no cap; any other
//! value is ignored with a warning. It is read once, at the first kernel
//! call, so set it before the process starts (the `simd_*` test binaries
//! each pin one value for their whole process). The `gemm` crate behind the
//! convolutions' matrix products dispatches on its own and is not capped.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level, ordered: a build for a level runs on every
/// CPU whose [`level`] is at least that.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub(crate) enum Level {
    /// The portable build (baseline x86-64, or any other architecture).
    Scalar = 1,
    /// AVX2 + FMA.
    Avx2 = 2,
    /// AVX-512 F/VL/DQ/BW (with AVX2 + FMA).
    Avx512 = 3,
}

impl Level {
    fn from_u8(v: u8) -> Option<Level> {
        match v {
            1 => Some(Level::Scalar),
            2 => Some(Level::Avx2),
            3 => Some(Level::Avx512),
            _ => None,
        }
    }

    /// The name `POLY_LOSS_SIMD` uses for this level.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

/// The environment variable that caps [`level`].
pub(crate) const ENV: &str = "POLY_LOSS_SIMD";

static LEVEL: AtomicU8 = AtomicU8::new(0);
static DETECTED: AtomicU8 = AtomicU8::new(0);

/// The level every CPU kernel runs at: what the CPU has ([`detected`]),
/// capped by `POLY_LOSS_SIMD`. Worked out once per process.
#[inline]
pub(crate) fn level() -> Level {
    if let Some(l) = Level::from_u8(LEVEL.load(Ordering::Relaxed)) {
        return l;
    }
    let l = capped(detected(), std::env::var(ENV).ok().as_deref());
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

/// What this CPU supports, whatever `POLY_LOSS_SIMD` says (for code that
/// must know whether a given build is sound to run, such as tests that
/// force a build).
pub(crate) fn detected() -> Level {
    if let Some(l) = Level::from_u8(DETECTED.load(Ordering::Relaxed)) {
        return l;
    }
    let l = detect_cpu();
    DETECTED.store(l as u8, Ordering::Relaxed);
    l
}

fn detect_cpu() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        if avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512bw")
        {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// `best` lowered to the cap `POLY_LOSS_SIMD` names (`None`: unset).
fn capped(best: Level, cap: Option<&str>) -> Level {
    let cap = match cap.map(str::trim) {
        None | Some("" | "best" | "avx512") => return best,
        Some("scalar") => Level::Scalar,
        Some("avx2") => Level::Avx2,
        Some(other) => {
            tracing::warn!(
                "{ENV}={other:?} is not one of scalar, avx2, avx512: ignored, using {}",
                best.name()
            );
            return best;
        }
    };
    best.min(cap)
}

/// Defines functions whose body is compiled for each level up to a maximum
/// and dispatched on [`level`] at every call:
///
/// ```text
/// multiversion! { avx2:   // or `avx512:` for an AVX-512 build as well
///     /// Docs.
///     pub(crate) fn name(a: &[f32]) -> f64 { ... }
/// }
/// ```
///
/// Above the maximum the highest build runs (an `avx2:` function runs its
/// AVX2 build on an AVX-512 CPU); `POLY_LOSS_SIMD=scalar` runs the
/// portable body everywhere.
macro_rules! multiversion {
    (avx512: $($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block)*) => {$(
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                fn v512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v256($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match $crate::cpu_dispatch::level() {
                    // SAFETY: `level` reports Avx512 only when the CPU has
                    // avx512f/vl/dq/bw, avx2 and fma (the cap only lowers it).
                    $crate::cpu_dispatch::Level::Avx512 => return unsafe { v512($($arg),*) },
                    // SAFETY: `level` reports Avx2 only when the CPU has avx2
                    // and fma (the cap only lowers it).
                    $crate::cpu_dispatch::Level::Avx2 => return unsafe { v256($($arg),*) },
                    $crate::cpu_dispatch::Level::Scalar => {}
                }
            }
            body($($arg),*)
        }
    )*};
    (avx2: $($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block)*) => {$(
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn v256($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if $crate::cpu_dispatch::level() >= $crate::cpu_dispatch::Level::Avx2 {
                    // SAFETY: `level` is Avx2 or above only when the CPU has
                    // avx2 and fma (the cap only lowers it).
                    return unsafe { v256($($arg),*) };
                }
            }
            body($($arg),*)
        }
    )*};
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_only_lowers_the_level() {
        use Level::*;
        for best in [Scalar, Avx2, Avx512] {
            assert_eq!(capped(best, None), best);
            assert_eq!(capped(best, Some("")), best);
            assert_eq!(capped(best, Some("best")), best);
            assert_eq!(capped(best, Some("avx512")), best);
            assert_eq!(capped(best, Some("scalar")), Scalar);
            assert_eq!(capped(best, Some(" scalar ")), Scalar);
            assert_eq!(capped(best, Some("avx2")), best.min(Avx2));
            assert_eq!(capped(best, Some("sse9")), best);
        }
        assert!(level() <= detected());
    }
}
