//! Shared pieces of the CPU kernels: a strided SGEMM wrapper, per-thread
//! scratch buffers that are reused across calls, and output buffers that are
//! written once without being zero-filled first.

use std::cell::RefCell;
use std::mem::MaybeUninit;

/// A raw pointer that rayon tasks may share. Each task writes a disjoint part
/// of the buffer behind it (the caller's obligation).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: only used to hand disjoint regions of one buffer to rayon tasks
// that all finish before the buffer is used again.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as for `Send`: tasks sharing the wrapper touch disjoint regions.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer. A method (not the field) so closures capture the whole
    /// `Send` wrapper rather than the raw pointer inside it.
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// A row-major view of a matrix: element `(i, j)` is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl Mat {
    /// A dense row-major matrix with `cols` columns.
    pub(crate) fn rows(ptr: *const f32, cols: usize) -> Self {
        Self {
            ptr,
            rs: cols as isize,
            cs: 1,
        }
    }
    /// The transpose of a dense row-major matrix with `cols` columns.
    pub(crate) fn rows_t(ptr: *const f32, cols: usize) -> Self {
        Self {
            ptr,
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// How many threads the kernels may use (rayon's pool).
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, on the `gemm` crate.
///
/// # Safety
/// Every pointer must be valid for the strided m×k, k×n and m×n extents, and
/// `dst` must not overlap `lhs` or `rhs`. With `accumulate == false` `dst` is
/// only written, so it may be uninitialised memory.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) < (m, n), and the caller guarantees `dst`
                    // is valid for writes over the strided m×n extent.
                    unsafe { *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = 0.0 };
                }
            }
        }
        return;
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // gemm computes dst := alpha·dst + beta·lhs·rhs, reading dst only if asked.
    // SAFETY: the caller guarantees the three pointers are valid for their
    // strided m×k, k×n and m×n extents and that `dst` overlaps neither input;
    // with `accumulate == false` gemm does not read `dst`.
    unsafe {
        gemm::gemm(
            m, n, k, dst, dst_cs, dst_rs, accumulate, lhs.ptr, lhs.cs, lhs.rs, rhs.ptr, rhs.cs,
            rhs.rs, 1.0f32, 1.0f32, false, false, false, par,
        )
    };
}

/// A `Vec<f32>` of `len` elements that `fill` initialises (in any order,
/// from any threads) through the uninitialised slice it gets; nothing is
/// zero-filled first.
///
/// # Safety
/// `fill` must write all `len` elements (partial writes leave uninitialised
/// floats in a `Vec`).
pub(crate) unsafe fn uninit_vec(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: `len` ≤ capacity (allocated above), and the caller guarantees
    // `fill` initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// Views initialised-by-contract scratch as `f32`s for a kernel that writes
/// before it reads (im2col targets, GEMM outputs).
pub(crate) fn as_f32_ptr(s: &mut [MaybeUninit<f32>]) -> *mut f32 {
    s.as_mut_ptr().cast()
}

/// Independent per-thread scratch buffers: one kernel may hold several at
/// once (e.g. transformed inputs and a padded plane) without the second
/// falling back to a fresh allocation.
pub(crate) const SCRATCH_SLOTS: usize = 3;

thread_local! {
    static SCRATCH: [RefCell<Vec<f32>>; SCRATCH_SLOTS] =
        const { [RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// Runs `f` on this thread's scratch buffer of at least `len` floats. The
/// buffer is kept between calls (it only grows), so steady-state training
/// allocates nothing here; its contents are garbage, and `f` must write what
/// it reads. If the buffer is already in use on this thread (a rayon task
/// stolen while waiting inside another), a fresh one is used instead.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_scratch_slot(0, len, f)
}

/// [`with_scratch`] on scratch slot `slot` (< [`SCRATCH_SLOTS`]).
pub(crate) fn with_scratch_slot<R>(slot: usize, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cells| match cells[slot].try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                // Growing zero-fills once; later calls reuse the memory as is.
                *buf = vec![0.0; len];
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

pub(crate) use crate::cpu_dispatch::multiversion;

multiversion! { avx2:
    /// Sums `xs` with eight independent accumulators (vectorises, and is
    /// more accurate than one running sum), flushed to f64 every 1024 values.
    pub(crate) fn sum_f32(xs: &[f32]) -> f64 {
        let mut total = 0.0f64;
        for block in xs.chunks(1024) {
            let mut acc = [0.0f32; 8];
            let chunks = block.chunks_exact(8);
            let rem = chunks.remainder();
            for c in chunks {
                for l in 0..8 {
                    acc[l] += c[l];
                }
            }
            total += acc.iter().map(|&a| a as f64).sum::<f64>();
            total += rem.iter().map(|&a| a as f64).sum::<f64>();
        }
        total
    }
}

/// `g` where `y > 0`, else `0.0` — a ReLU mask as a bitwise AND, which
/// vectorises where the equivalent `if` often compiles to scalar branches.
#[inline(always)]
pub(crate) fn relu_mask(y: f32, g: f32) -> f32 {
    f32::from_bits(g.to_bits() & ((y > 0.0) as u32).wrapping_neg())
}
