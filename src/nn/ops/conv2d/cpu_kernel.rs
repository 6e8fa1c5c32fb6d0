//! CPU convolution: im2col in column chunks + `gemm`, parallel over images.
//!
//! Per image `b`, the output `Y_b (O × H'W')` is `W (O × I·K²) · col(X_b)`
//! where `col` is the im2col matrix. It is built a chunk of output positions
//! at a time into a per-thread scratch buffer that is reused across calls, so
//! it stays cache-sized and is never zero-filled. A 1×1 stride-1 unpadded
//! convolution skips im2col: `X_b` already is the `(I × HW)` matrix.
//!
//! Backward, per image: `dW += dY_b · col(X_b)ᵀ` into a per-thread
//! accumulator (summed at the end), `dcol = Wᵀ · dY_b` scattered back into
//! `dX_b` by col2im. Images run on rayon's threads with single-threaded GEMMs;
//! when there are fewer tasks than threads the GEMMs are threaded instead.
//!
//! Small feature maps (late layers, small inputs) would make per-image GEMMs
//! a few columns wide; there, a task takes a group of images side by side
//! (`col` is `I·K² × g·H'W'`), runs one wide GEMM into scratch and scatters
//! the rows back to NCHW (and gathers `dY` the same way backward).

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{winograd, Conv2dKernel, Conv2dOp};
use crate::device::cpu::host_slice;
use crate::nn::ops::cpu_util::{
    as_f32_ptr, multiversion, sgemm, sum_f32, threads, uninit_vec, with_scratch, Mat, SendPtr,
};

/// Target size (floats) of one im2col chunk: 2 Mi floats = 8 MiB, a slice of
/// the shared L3 per thread, while keeping GEMMs at least 256 columns wide.
const COL_BUDGET: usize = 1 << 21;

/// Output positions per im2col chunk.
fn chunk_cols(op: &Conv2dOp) -> usize {
    (COL_BUDGET / op.patch().max(1))
        .max(256)
        .min(op.out_plane())
        .max(1)
}

/// The range of output columns `ow` whose input column `ow·s + kw − p` lies
/// in `[0, w_in)`.
#[inline]
fn valid_cols(op: &Conv2dOp, kw: usize) -> (usize, usize) {
    let (s, p) = (op.stride, op.padding);
    let lo = if p > kw { (p - kw).div_ceil(s) } else { 0 };
    let hi = if op.w_in + p > kw {
        (op.w_in + p - kw).div_ceil(s)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Visits the im2col matrix of one image for output positions
/// `[n0, n0 + nc)`: for every row `r = (c, kh, kw)` and every run of
/// positions within one output row, calls
/// `f(r·ld + j, len, Some((input offset of the first valid column, a, b)))`
/// or `None` when the whole run reads padding. `a..b` is the valid part of
/// the run (relative to the run start).
#[inline]
fn for_each_run(
    op: &Conv2dOp,
    n0: usize,
    nc: usize,
    ld: usize,
    mut f: impl FnMut(usize, usize, Option<(usize, usize, usize)>),
) {
    let (k, s, p) = (op.kernel, op.stride, op.padding);
    let (h_in, w_in, w_out) = (op.h_in, op.w_in, op.w_out);
    for c in 0..op.chan_in {
        for kh in 0..k {
            for kw in 0..k {
                let (lo, hi) = valid_cols(op, kw);
                let row = ((c * k + kh) * k + kw) * ld;
                let mut j = 0;
                let mut pos = n0;
                while j < nc {
                    let oh = pos / w_out;
                    let ow0 = pos % w_out;
                    let len = (w_out - ow0).min(nc - j);
                    let ih = (oh * s + kh) as isize - p as isize;
                    if ih < 0 || ih >= h_in as isize {
                        f(row + j, len, None);
                    } else {
                        let a = lo.clamp(ow0, ow0 + len);
                        let b = hi.clamp(a, ow0 + len);
                        // Input offset of output column `a` (only used when a < b).
                        let base = c * h_in * w_in + ih as usize * w_in;
                        let first = if a < b { base + a * s + kw - p } else { base };
                        f(row + j, len, Some((first, a - ow0, b - ow0)));
                    }
                    j += len;
                    pos += len;
                }
            }
        }
    }
}

/// Writes the im2col chunk `[n0, n0 + nc)` of image `x` into `col`
/// (`patch × nc` with row stride `ld`). Every element of that block is
/// written.
fn im2col(op: &Conv2dOp, x: &[f32], n0: usize, nc: usize, col: &mut [f32], ld: usize) {
    assert!(col.len() >= (op.patch() - 1) * ld + nc);
    // SAFETY: the block lies inside `col` (asserted), borrowed mutably here.
    unsafe { im2col_raw(op, x, n0, nc, col.as_mut_ptr(), ld) }
}

/// [`im2col`] through a raw pointer, so that several images can fill
/// disjoint column blocks of one matrix at the same time.
///
/// # Safety
/// `col` must be valid for writes of the `patch × nc` block with row
/// stride `ld`, and nothing else may access that block meanwhile.
unsafe fn im2col_raw(op: &Conv2dOp, x: &[f32], n0: usize, nc: usize, col: *mut f32, ld: usize) {
    if op.is_pointwise() {
        // Rows are the input's channel planes: one copy each.
        let n = op.out_plane();
        for c in 0..op.chan_in {
            // SAFETY: row c < patch (= chan_in here) of the block, `nc` floats
            // from `c·ld`: the caller's exclusively owned block.
            let row = unsafe { std::slice::from_raw_parts_mut(col.add(c * ld), nc) };
            row.copy_from_slice(&x[c * n + n0..c * n + n0 + nc]);
        }
        return;
    }
    let s = op.stride;
    for_each_run(op, n0, nc, ld, |at, len, valid| {
        // SAFETY: `for_each_run` passes `at = r·ld + j` with r < patch and
        // j + len ≤ nc: a run inside the caller's exclusively owned block.
        let seg = unsafe { std::slice::from_raw_parts_mut(col.add(at), len) };
        match valid {
            None => seg.fill(0.0),
            Some((first, a, b)) => {
                seg[..a].fill(0.0);
                seg[b..].fill(0.0);
                let dst = &mut seg[a..b];
                if s == 1 {
                    dst.copy_from_slice(&x[first..first + dst.len()]);
                } else if !dst.is_empty() {
                    strided_copy(dst, &x[first..first + (dst.len() - 1) * s + 1], s);
                }
            }
        }
    });
}

multiversion! { avx2:
    /// `dst[t] = src[t·s]`.
    fn strided_copy(dst: &mut [f32], src: &[f32], s: usize) {
        if s == 2 {
            // Pairs vectorise as de-interleaving loads.
            for (d, pair) in dst.iter_mut().zip(src.chunks(2)) {
                *d = pair[0];
            }
        } else {
            for (d, v) in dst.iter_mut().zip(src.iter().step_by(s)) {
                *d = *v;
            }
        }
    }
}

multiversion! { avx2:
    /// `dst[t·s] += src[t]`.
    fn strided_add(dst: &mut [f32], src: &[f32], s: usize) {
        if s == 2 {
            for (pair, v) in dst.chunks_mut(2).zip(src) {
                pair[0] += v;
            }
        } else {
            for (d, v) in dst.iter_mut().step_by(s).zip(src) {
                *d += v;
            }
        }
    }
}

multiversion! { avx2:
    /// `dst += src`.
    fn add_into(dst: &mut [f32], src: &[f32]) {
        for (g, v) in dst.iter_mut().zip(src) {
            *g += v;
        }
    }
}

/// Runs `f(j)` for every image `j < g`, on rayon's threads if `parallel`.
fn for_images(g: usize, parallel: bool, f: impl Fn(usize) + Sync + Send) {
    if parallel {
        (0..g).into_par_iter().for_each(f);
    } else {
        (0..g).for_each(f);
    }
}

/// im2col of all `n` output positions of image `x` into columns
/// `[c0, c0 + n)` of the matrix at `col` (row stride `ld`).
///
/// # Safety
/// As [`im2col_raw`] for that column block.
unsafe fn im2col_cols(op: &Conv2dOp, x: &[f32], n: usize, col: SendPtr<f32>, c0: usize, ld: usize) {
    // SAFETY: the caller guarantees the block at column `c0` is valid and
    // exclusively ours, which is `im2col_raw`'s contract for `col + c0`.
    unsafe { im2col_raw(op, x, 0, n, col.get().add(c0), ld) };
}

/// `dst += src`, split over rayon's threads for large buffers.
fn add_into_par(dst: &mut [f32], src: &[f32]) {
    const CHUNK: usize = 1 << 16;
    if dst.len() <= CHUNK {
        add_into(dst, src);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| add_into(d, s));
    }
}

/// Adds the im2col-shaped chunk `col` (row stride `ld`) back into image
/// gradient `gx`.
fn col2im_add(op: &Conv2dOp, col: &[f32], n0: usize, nc: usize, ld: usize, gx: &mut [f32]) {
    if op.is_pointwise() {
        let n = op.out_plane();
        for c in 0..op.chan_in {
            add_into(
                &mut gx[c * n + n0..c * n + n0 + nc],
                &col[c * ld..c * ld + nc],
            );
        }
        return;
    }
    let s = op.stride;
    for_each_run(op, n0, nc, ld, |at, _len, valid| {
        if let Some((first, a, b)) = valid {
            let src = &col[at + a..at + b];
            if s == 1 {
                add_into(&mut gx[first..first + src.len()], src);
            } else if !src.is_empty() {
                strided_add(&mut gx[first..first + (src.len() - 1) * s + 1], src, s);
            }
        }
    });
}

/// Forward for image `b` into `y_b` (`O × H'W'`, uninitialised on entry).
///
/// # Safety
/// `y_b` must be valid for `O · H'W'` writes and not aliased.
unsafe fn forward_image(
    op: &Conv2dOp,
    xb: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y_b: *mut f32,
    gemm_threads: usize,
) {
    let n = op.out_plane();
    let o = op.chan_out;
    if op.is_pointwise() {
        // SAFETY: `y_b` is the caller's O × n output; `w` is O × I and `xb`
        // I × n (the image's channel planes), distinct from `y_b`.
        unsafe {
            sgemm(
                o,
                n,
                op.chan_in,
                y_b,
                n as isize,
                1,
                false,
                Mat::rows(w.as_ptr(), op.chan_in),
                Mat::rows(xb.as_ptr(), n),
                gemm_threads,
            )
        };
    } else {
        let nc = chunk_cols(op);
        let patch = op.patch();
        with_scratch(patch * nc, |col| {
            let mut n0 = 0;
            while n0 < n {
                let len = nc.min(n - n0);
                im2col(op, xb, n0, len, &mut col[..patch * len], len);
                // SAFETY: columns n0..n0 + len ≤ n of the caller's O × n output
                // (row stride n); `w` is O × patch, `col` patch × len scratch.
                unsafe {
                    sgemm(
                        o,
                        len,
                        patch,
                        y_b.add(n0),
                        n as isize,
                        1,
                        false,
                        Mat::rows(w.as_ptr(), patch),
                        Mat::rows(col.as_ptr(), len),
                        gemm_threads,
                    )
                };
                n0 += len;
            }
        });
    }
    if let Some(bias) = bias {
        // SAFETY: the caller's O·H'W' floats, all written by the GEMMs above.
        let y = unsafe { std::slice::from_raw_parts_mut(y_b, o * n) };
        for (row, &bv) in y.chunks_exact_mut(n).zip(bias) {
            for v in row {
                *v += bv;
            }
        }
    }
}

/// Backward for image `b`: `gw_acc += dY_b · col(X_b)ᵀ`, `gx_b += col2im(Wᵀ · dY_b)`.
fn backward_image(
    op: &Conv2dOp,
    xb: &[f32],
    w: &[f32],
    gyb: &[f32],
    gxb: &mut [f32],
    gw_acc: &mut [f32],
    gemm_threads: usize,
) {
    let n = op.out_plane();
    let (o, i) = (op.chan_out, op.chan_in);
    // SAFETY: (all sgemm calls) extents follow from the op's geometry and the
    // slice lengths checked by the callers; destinations are distinct buffers.
    unsafe {
        if op.is_pointwise() {
            sgemm(
                o,
                i,
                n,
                gw_acc.as_mut_ptr(),
                i as isize,
                1,
                true,
                Mat::rows(gyb.as_ptr(), n),
                Mat::rows_t(xb.as_ptr(), n),
                gemm_threads,
            );
            sgemm(
                i,
                n,
                o,
                gxb.as_mut_ptr(),
                n as isize,
                1,
                true,
                Mat::rows_t(w.as_ptr(), i),
                Mat::rows(gyb.as_ptr(), n),
                gemm_threads,
            );
            return;
        }
        let nc = chunk_cols(op);
        let patch = op.patch();
        with_scratch(2 * patch * nc, |buf| {
            let (col, dcol) = buf.split_at_mut(patch * nc);
            let mut n0 = 0;
            while n0 < n {
                let len = nc.min(n - n0);
                let gy_chunk = Mat {
                    ptr: gyb.as_ptr().add(n0),
                    rs: n as isize,
                    cs: 1,
                };
                im2col(op, xb, n0, len, &mut col[..patch * len], len);
                sgemm(
                    o,
                    patch,
                    len,
                    gw_acc.as_mut_ptr(),
                    patch as isize,
                    1,
                    true,
                    gy_chunk,
                    Mat::rows_t(col.as_ptr(), len),
                    gemm_threads,
                );
                sgemm(
                    patch,
                    len,
                    o,
                    dcol.as_mut_ptr(),
                    len as isize,
                    1,
                    false,
                    Mat::rows_t(w.as_ptr(), patch),
                    gy_chunk,
                    gemm_threads,
                );
                col2im_add(op, &dcol[..patch * len], n0, len, len, gxb);
                n0 += len;
            }
        });
    }
}

/// Spare weight-gradient accumulators, kept between calls (one per extra
/// thread in use, as large as the largest weight seen).
static ACCUMULATORS: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

/// A zeroed accumulator of `len` floats, reusing a spare when there is one.
fn take_accumulator(len: usize) -> Vec<f32> {
    let spare = ACCUMULATORS.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut v = spare.unwrap_or_default();
    v.clear();
    v.resize(len, 0.0);
    v
}

/// Returns an accumulator for reuse by a later call.
fn give_back_accumulator(v: Vec<f32>) {
    ACCUMULATORS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(v);
}

/// Output positions below which images are grouped into one GEMM.
const WIDE: usize = 512;

/// Images per task: 1 for wide feature maps, else enough images side by side
/// for a ≥ `WIDE`-column GEMM (within the scratch budget), with the number
/// of tasks rounded down to whole rounds of `nt` threads.
fn group_size(op: &Conv2dOp, nt: usize) -> usize {
    let n = op.out_plane().max(1);
    if n >= WIDE || op.batch <= 1 {
        return 1;
    }
    let by_width = WIDE.div_ceil(n);
    let by_budget = (COL_BUDGET / (op.patch() * n).max(1)).max(1);
    let g = by_width.min(by_budget).clamp(1, op.batch);
    let mut tasks = op.batch.div_ceil(g);
    if tasks > nt {
        tasks = tasks / nt * nt;
    }
    op.batch.div_ceil(tasks)
}

/// Forward for `g > 1` images side by side (`xg`: their inputs, `yg`: their
/// uninitialised outputs).
///
/// # Safety
/// `yg` must be valid for `g · O · H'W'` writes and not aliased.
unsafe fn forward_group(
    op: &Conv2dOp,
    xg: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    yg: *mut f32,
    g: usize,
    gemm_threads: usize,
) {
    let (n, patch, o, in_img) = (op.out_plane(), op.patch(), op.chan_out, op.in_image());
    let gn = g * n;
    with_scratch(patch * gn + o * gn, |buf| {
        let (col, ytmp) = buf.split_at_mut(patch * gn);
        let colp = SendPtr(col.as_mut_ptr());
        // With a threaded GEMM the caller's thread is the only one here:
        // spread the im2col and the scatter over the threads as well.
        for_images(g, gemm_threads > 1, |j| {
            // SAFETY: `col` is patch × gn; image j writes columns
            // [j·n, (j+1)·n) of every row only.
            unsafe { im2col_cols(op, &xg[j * in_img..(j + 1) * in_img], n, colp, j * n, gn) };
        });
        // SAFETY: `ytmp` (O × gn), `w` (O × patch) and `col` (patch × gn) are
        // distinct buffers of those sizes.
        unsafe {
            sgemm(
                o,
                gn,
                patch,
                ytmp.as_mut_ptr(),
                gn as isize,
                1,
                false,
                Mat::rows(w.as_ptr(), patch),
                Mat::rows(col.as_ptr(), gn),
                gemm_threads,
            )
        };
        let ytmp = &*ytmp;
        let ygp = SendPtr(yg);
        for_images(g, gemm_threads > 1, |j| {
            for oc in 0..o {
                let src = &ytmp[oc * gn + j * n..oc * gn + (j + 1) * n];
                // SAFETY: plane (j, oc) of the caller's g·O·n output belongs
                // to image j's task only.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(ygp.get().add((j * o + oc) * n), n) };
                let bv = bias.map_or(0.0, |b| b[oc]);
                for (d, v) in dst.iter_mut().zip(src) {
                    *d = v + bv;
                }
            }
        });
    });
}

/// Backward for `g > 1` images side by side: gathers `dY` into one
/// `O × g·H'W'` matrix so both GEMMs are wide.
#[allow(clippy::too_many_arguments)]
fn backward_group(
    op: &Conv2dOp,
    xg: &[f32],
    w: &[f32],
    gyg: &[f32],
    gxg: &mut [f32],
    gw_acc: &mut [f32],
    g: usize,
    gemm_threads: usize,
) {
    let (n, patch, o, in_img) = (op.out_plane(), op.patch(), op.chan_out, op.in_image());
    let gn = g * n;
    with_scratch(2 * patch * gn + o * gn, |buf| {
        let (col, rest) = buf.split_at_mut(patch * gn);
        let (dcol, gy_wide) = rest.split_at_mut(patch * gn);
        let (colp, gyp) = (SendPtr(col.as_mut_ptr()), SendPtr(gy_wide.as_mut_ptr()));
        for_images(g, gemm_threads > 1, |j| {
            // SAFETY: image j writes columns [j·n, (j+1)·n) of every row of
            // both matrices only.
            unsafe {
                for oc in 0..o {
                    std::slice::from_raw_parts_mut(gyp.get().add(oc * gn + j * n), n)
                        .copy_from_slice(&gyg[(j * o + oc) * n..(j * o + oc + 1) * n]);
                }
                im2col_cols(op, &xg[j * in_img..(j + 1) * in_img], n, colp, j * n, gn);
            }
        });
        // SAFETY: extents follow from the geometry; destinations are distinct buffers.
        unsafe {
            sgemm(
                o,
                patch,
                gn,
                gw_acc.as_mut_ptr(),
                patch as isize,
                1,
                true,
                Mat::rows(gy_wide.as_ptr(), gn),
                Mat::rows_t(col.as_ptr(), gn),
                gemm_threads,
            );
            sgemm(
                patch,
                gn,
                o,
                dcol.as_mut_ptr(),
                gn as isize,
                1,
                false,
                Mat::rows_t(w.as_ptr(), patch),
                Mat::rows(gy_wide.as_ptr(), gn),
                gemm_threads,
            );
        }
        let dcol = &*dcol;
        let gxp = SendPtr(gxg.as_mut_ptr());
        for_images(g, gemm_threads > 1, |j| {
            // SAFETY: image j's input gradient belongs to image j's task.
            let gx = unsafe { std::slice::from_raw_parts_mut(gxp.get().add(j * in_img), in_img) };
            col2im_add(op, &dcol[j * n..], 0, n, gn, gx);
        });
    });
}

impl Conv2dKernel for Cpu {
    fn conv2d_forward<Sx: Shape, Sw: Shape, Sb: Shape, Sy: Shape>(
        &self,
        op: &Conv2dOp,
        x: &Tensor<Sx, f32, Self>,
        w: &Tensor<Sw, f32, Self>,
        b: Option<&Tensor<Sb, f32, Self>>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err> {
        let (xs, ws) = (host_slice(x), host_slice(w));
        let bs = b.map(host_slice);
        let in_img = op.in_image();
        let out_img = op.chan_out * op.out_plane();
        assert_eq!(xs.len(), op.batch * in_img);
        assert_eq!(ws.len(), op.chan_out * op.patch());
        assert_eq!(out.num_elements(), op.batch * out_img);
        if out_img == 0 {
            return self.try_tensor_from_vec(Vec::new(), out);
        }
        if winograd::applies(op) {
            // SAFETY: `y` is the fresh batch·O·H'W' buffer (valid, aliasing no
            // input) that `winograd::forward` needs, and it writes every element.
            let y = unsafe {
                uninit_vec(op.batch * out_img, |y| {
                    winograd::forward(op, xs, ws, bs, as_f32_ptr(y));
                })
            };
            return self.try_tensor_from_vec(y, out);
        }
        let nt = threads();
        let g = group_size(op, nt);
        let tasks = op.batch.div_ceil(g);
        let task = |t: usize, yg: &mut [std::mem::MaybeUninit<f32>], gemm_threads: usize| {
            let gi = yg.len() / out_img;
            let xg = &xs[t * g * in_img..(t * g + gi) * in_img];
            // SAFETY: `yg` is this task's own block of `gi` outputs, and both
            // paths write all of it (GEMMs without accumulation).
            unsafe {
                if gi == 1 {
                    forward_image(op, xg, ws, bs, as_f32_ptr(yg), gemm_threads);
                } else {
                    forward_group(op, xg, ws, bs, as_f32_ptr(yg), gi, gemm_threads);
                }
            }
        };
        // SAFETY: the task blocks cover the output and each is fully written.
        let y = unsafe {
            uninit_vec(op.batch * out_img, |y| {
                if tasks >= nt {
                    y.par_chunks_mut(g * out_img)
                        .enumerate()
                        .for_each(|(t, yg)| task(t, yg, 1));
                } else {
                    for (t, yg) in y.chunks_mut(g * out_img).enumerate() {
                        task(t, yg, nt);
                    }
                }
            })
        };
        self.try_tensor_from_vec(y, out)
    }

    fn conv2d_backward<Sx: Shape, Sw: Shape>(
        &self,
        op: &Conv2dOp,
        x: &Tensor<Sx, f32, Self>,
        w: &Tensor<Sw, f32, Self>,
        gx: &mut Self::Vec,
        gw: &mut Self::Vec,
        gb: Option<&mut Self::Vec>,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let (xs, ws) = (host_slice(x), host_slice(w));
        let in_img = op.in_image();
        let n = op.out_plane();
        let out_img = op.chan_out * n;
        assert_eq!(gx.len(), op.batch * in_img);
        assert_eq!(gy.len(), op.batch * out_img);
        assert_eq!(gw.len(), ws.len());
        if out_img == 0 || in_img == 0 {
            return Ok(());
        }
        if let Some(gb) = gb {
            gb.par_iter_mut().enumerate().for_each(|(o, g)| {
                let mut s = 0.0f64;
                for b in 0..op.batch {
                    let at = b * out_img + o * n;
                    s += sum_f32(&gy[at..at + n]);
                }
                *g += s as f32;
            });
        }
        if winograd::applies(op) {
            winograd::backward_input(op, ws, gy, gx);
            winograd::backward_weight(op, xs, gy, gw);
            return Ok(());
        }
        let nt = threads();
        let g = group_size(op, nt);
        let tasks = op.batch.div_ceil(g);
        let task = |t: usize, gxg: &mut [f32], acc: &mut [f32], gemm_threads: usize| {
            let gi = gxg.len() / in_img;
            let xg = &xs[t * g * in_img..(t * g + gi) * in_img];
            let gyg = &gy[t * g * out_img..(t * g + gi) * out_img];
            if gi == 1 {
                backward_image(op, xg, ws, gyg, gxg, acc, gemm_threads);
            } else {
                backward_group(op, xg, ws, gyg, gxg, acc, gi, gemm_threads);
            }
        };
        if tasks >= nt {
            // Tasks split into `nt` contiguous runs, one per thread: the
            // first accumulates straight into `gw`, the others into reused
            // per-thread accumulators that are added in afterwards.
            let per = tasks.div_ceil(nt);
            let gw_len = gw.len();
            let gw_ptr = SendPtr(gw.as_mut_ptr());
            let gx_ptr = SendPtr(gx.as_mut_ptr());
            let total = gx.len();
            let parts: Vec<Option<Vec<f32>>> = (0..nt)
                .into_par_iter()
                .map(|p| {
                    let (t0, t1) = (p * per, ((p + 1) * per).min(tasks));
                    if t0 >= t1 {
                        return None;
                    }
                    let mut own = (p > 0).then(|| take_accumulator(gw_len));
                    let acc = match own.as_deref_mut() {
                        Some(a) => a,
                        // SAFETY: only run 0 has no own accumulator and touches
                        // `gw` (all `gw_len` floats); the runs are joined before
                        // `gw` is used again.
                        None => unsafe { std::slice::from_raw_parts_mut(gw_ptr.get(), gw_len) },
                    };
                    for t in t0..t1 {
                        let lo = t * g * in_img;
                        let hi = ((t + 1) * g * in_img).min(total);
                        // SAFETY: lo < hi ≤ total = gx.len(); run `p` alone owns
                        // images [t0·g, t1·g) of gx until the runs are joined.
                        let gxg = unsafe {
                            std::slice::from_raw_parts_mut(gx_ptr.get().add(lo), hi - lo)
                        };
                        task(t, gxg, acc, 1);
                    }
                    own
                })
                .collect();
            for part in parts.into_iter().flatten() {
                add_into_par(gw, &part);
                give_back_accumulator(part);
            }
        } else {
            for (t, gxg) in gx.chunks_mut(g * in_img).enumerate() {
                task(t, gxg, gw, nt);
            }
        }
        Ok(())
    }
}
