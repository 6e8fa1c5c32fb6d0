//! CUDA convolution: im2col for a group of images, then one strided-batched
//! cuBLAS SGEMM; backward recomputes im2col, accumulates `dW` with one
//! strided-batched SGEMM into per-image partials plus one SGEMM summing them
//! ([`weight_grad`]), and gathers `dX` from `Wᵀ·dY` with col2im (no atomics).
//! 1×1 stride-1 unpadded convolutions skip im2col. The im2col workspaces
//! (`col`, `dcol`: at most [`COL_BUDGET`] floats each) are per-device
//! grow-only scratch buffers reused across calls (`cuda_util::take_scratch`).
//!
//! cuBLAS is column-major: a row-major `r × c` matrix is its `c × r`
//! transpose there, so `Y_b = W · col_b` is issued as `Y_bᵀ = col_bᵀ · Wᵀ`.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    CudaDevice, CudaSlice, CudaView, DevicePtr, DevicePtrMut, DeviceRepr, LaunchAsync,
};
use dfdx::prelude::*;

use super::{Conv2dKernel, Conv2dOp};
use crate::device::cuda::{device_view, tensor_from_device, CudaVec, PtxTable, BLOCK};
use crate::nn::ops::cuda_util::{
    blas, grid, int, kernel, per_block, return_scratch, take_scratch, Scratch,
};

const PTX: PtxTable = include!(concat!(env!("OUT_DIR"), "/conv2d.ptx.rs"));
const MODULE: &str = "poly_loss_conv2d";
const NAMES: &[&str] = &[
    "conv2d_im2col",
    "conv2d_col2im",
    "conv2d_bias_add",
    "conv2d_bias_grad",
];

/// Floats of im2col workspace per group of images (256 MiB).
const COL_BUDGET: usize = 1 << 26;

/// The kernels' view of a [`Conv2dOp`] (`struct ConvGeo` in `conv2d.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ConvGeo {
    c: i32,
    h: i32,
    w: i32,
    o: i32,
    oh: i32,
    ow: i32,
    k: i32,
    s: i32,
    p: i32,
}

// SAFETY: plain `repr(C)` integers, passed by value like the C struct.
unsafe impl DeviceRepr for ConvGeo {}

impl From<&Conv2dOp> for ConvGeo {
    fn from(op: &Conv2dOp) -> Self {
        Self {
            c: int(op.chan_in),
            h: int(op.h_in),
            w: int(op.w_in),
            o: int(op.chan_out),
            oh: int(op.h_out),
            ow: int(op.w_out),
            k: int(op.kernel),
            s: int(op.stride),
            p: int(op.padding),
        }
    }
}

fn trans(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// Column-major `C = op(A)·op(B) + β·C` for `batch` matrices at the given
/// strides (0 = shared).
///
/// # Safety
/// The buffers must hold the described matrices: `batch` column-major
/// `op(A)` (m×k), `op(B)` (k×n) and `C` (m×n) with leading dimensions
/// `lda`, `ldb`, `ldc`, the j-th at `j·stride`; `C` must not overlap `A`
/// or `B`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_batched<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
    blas: &CudaBlas,
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    (a, lda, sa): (&A, usize, usize),
    (b, ldb, sb): (&B, usize, usize),
    beta: f32,
    (c, ldc, sc): (&mut C, usize, usize),
    batch: usize,
) -> Result<(), CudaError> {
    let gemm = GemmConfig {
        transa: trans(ta),
        transb: trans(tb),
        m: int(m),
        n: int(n),
        k: int(k),
        alpha: 1.0f32,
        lda: int(lda),
        ldb: int(ldb),
        beta,
        ldc: int(ldc),
    };
    if batch == 1 {
        // SAFETY: the caller guarantees the buffers hold the matrices `gemm`
        // describes and that `c` overlaps neither input.
        unsafe { blas.gemm(gemm, a, b, c) }?;
    } else {
        let cfg = StridedBatchedConfig {
            gemm,
            batch_size: int(batch),
            stride_a: sa as i64,
            stride_b: sb as i64,
            stride_c: sc as i64,
        };
        // SAFETY: as above, for all `batch` matrices at their strides.
        unsafe { blas.gemm_strided_batched(cfg, a, b, c) }?;
    }
    Ok(())
}

/// Floats of the per-image weight-gradient partials summed at once (64 MiB).
const WGRAD_BUDGET: usize = 1 << 24;

/// `dWᵀ (p×o) += Σ_j A_j (p×k) · B_jᵀ (k×o)` over `count` images, where
/// image j's `A_j` is row-major `p × k` at `j·sa` in `a` and `B_j` row-major
/// `o × k` at `j·sb` in `b` (im2col columns or input, and the output
/// gradient). Instead of one small GEMM per image: one strided-batched GEMM
/// writes the per-image products to a workspace and one GEMM with a ones
/// vector adds their sum to `gw` — two cuBLAS calls per chunk of images
/// (chunks bounded by [`WGRAD_BUDGET`]), in a fixed order (deterministic).
///
/// # Safety
/// `a` and `b` must hold the described matrices (`count` of each at their
/// strides), `gw` `p·o` floats.
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad(
    blas: &CudaBlas,
    dev: &std::sync::Arc<CudaDevice>,
    (p, o, k): (usize, usize, usize),
    (a, sa): (&CudaSlice<f32>, usize),
    (b, sb): (&CudaView<'_, f32>, usize),
    count: usize,
    gw: &mut CudaSlice<f32>,
) -> Result<(), CudaError> {
    let per = p * o;
    let chunk = (WGRAD_BUDGET / per.max(1)).clamp(1, count.max(1));
    if chunk == 1 {
        for j in 0..count {
            let av = a.slice(j * sa..j * sa + p * k);
            let bv = b.slice(j * sb..j * sb + o * k);
            // SAFETY: `av` (p·k floats) is A_j, `bv` (o·k) B_j, both
            // bounds-checked views; `gw` holds p·o floats and is a separate
            // buffer.
            unsafe {
                gemm_batched(
                    blas,
                    (true, false),
                    (p, o, k),
                    (&av, k, 0),
                    (&bv, k, 0),
                    1.0,
                    (gw, p, 0),
                    1,
                )
            }?;
        }
        return Ok(());
    }
    let mut partial = take_scratch(dev, Scratch::WeightGrad, chunk * per)?;
    let ones = dev.htod_copy(vec![1.0f32; chunk])?;
    let mut c0 = 0;
    while c0 < count {
        let ci = chunk.min(count - c0);
        let av = a.slice(c0 * sa..(c0 + ci - 1) * sa + p * k);
        let bv = b.slice(c0 * sb..(c0 + ci - 1) * sb + o * k);
        // partial_j (p×o, column-major) = A_j · B_jᵀ
        // SAFETY: `av`/`bv` are bounds-checked views ending at the last
        // image's A (p·k) and B (o·k); `partial` is scratch of at least
        // chunk·p·o ≥ ci·per floats, distinct from both.
        unsafe {
            gemm_batched(
                blas,
                (true, false),
                (p, o, k),
                (&av, k, sa),
                (&bv, k, sb),
                0.0,
                (&mut partial, p, per),
                ci,
            )
        }?;
        // gw (p·o) += [partial_0 … partial_ci-1] (p·o × ci) · 1 (ci)
        // SAFETY: `partial` holds ci·per floats (written above), `ones`
        // chunk ≥ ci, `gw` per = p·o floats, a separate buffer.
        unsafe {
            gemm_batched(
                blas,
                (false, false),
                (per, 1, ci),
                (&partial, per, 0),
                (&ones, ci, 0),
                1.0,
                (gw, per, 0),
                1,
            )
        }?;
        c0 += ci;
    }
    return_scratch(dev, Scratch::WeightGrad, partial);
    Ok(())
}

/// Images per im2col group.
fn group(op: &Conv2dOp) -> usize {
    (COL_BUDGET / (op.patch() * op.out_plane()).max(1)).clamp(1, op.batch.max(1))
}

impl Conv2dKernel for Cuda {
    fn conv2d_forward<Sx: Shape, Sw: Shape, Sb: Shape, Sy: Shape>(
        &self,
        op: &Conv2dOp,
        x: &Tensor<Sx, f32, Self>,
        w: &Tensor<Sw, f32, Self>,
        b: Option<&Tensor<Sb, f32, Self>>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err> {
        let (xs, ws) = (device_view(x)?, device_view(w)?);
        let dev = xs.device();
        let blas = blas(&dev)?;
        let (n, patch, o) = (op.out_plane(), op.patch(), op.chan_out);
        let (in_img, out_img) = (op.in_image(), o * n);
        let mut y: CudaVec = self.try_alloc_len(op.batch * out_img)?;
        if op.batch > 0 && n > 0 {
            if op.is_pointwise() {
                // Y_bᵀ (N×O) = X_bᵀ (N×I) · Wᵀ (I×O), all images at once.
                // SAFETY: x holds batch images of in_img = I·N floats, w O·I,
                // y (fresh) batch·O·N: the described matrices.
                unsafe {
                    gemm_batched(
                        &blas,
                        (false, false),
                        (n, o, op.chan_in),
                        (&*xs, n, in_img),
                        (&*ws, op.chan_in, 0),
                        0.0,
                        (&mut *y, n, out_img),
                        op.batch,
                    )?;
                }
            } else {
                let geo = ConvGeo::from(op);
                let im2col = kernel(&dev, MODULE, PTX, NAMES, "conv2d_im2col")?;
                let g = group(op);
                let mut col = take_scratch(&dev, Scratch::Col, g * patch * n)?;
                let mut b0 = 0;
                while b0 < op.batch {
                    let gi = g.min(op.batch - b0);
                    let xv = xs.slice(b0 * in_img..(b0 + gi) * in_img);
                    // SAFETY: `conv2d_im2col(ConvGeo, const float*, float*, int)`
                    // reads the gi images of `xv` and writes gi·patch·N floats
                    // of `col` (scratch of g·patch·N ≥ that); the GEMM then
                    // reads `col` and w (O·patch) and writes the gi images of
                    // `yv`, a separate buffer.
                    unsafe {
                        im2col
                            .clone()
                            .launch(grid(gi * patch * n), (geo, &xv, &mut col, int(gi)))?;
                        let mut yv = y.slice_mut(b0 * out_img..(b0 + gi) * out_img);
                        gemm_batched(
                            &blas,
                            (false, false),
                            (n, o, patch),
                            (&col, n, patch * n),
                            (&*ws, patch, 0),
                            0.0,
                            (&mut yv, n, out_img),
                            gi,
                        )?;
                    }
                    b0 += gi;
                }
                return_scratch(&dev, Scratch::Col, col);
            }
            if let Some(b) = b {
                let bs = device_view(b)?;
                let f = kernel(&dev, MODULE, PTX, NAMES, "conv2d_bias_add")?;
                let total = op.batch * out_img;
                // SAFETY: the arguments match `conv2d_bias_add(float*, const
                // float*, int, int, long long)`; y holds `total` floats, the
                // bias O, and the loop touches indices < total only.
                unsafe { f.launch(grid(total), (&mut *y, &*bs, int(o), int(n), total as i64))? };
            }
        }
        tensor_from_device(self, out, y)
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
        let (xs, ws) = (device_view(x)?, device_view(w)?);
        let dev = xs.device();
        let blas = blas(&dev)?;
        let (n, patch, o, i) = (op.out_plane(), op.patch(), op.chan_out, op.chan_in);
        let (in_img, out_img) = (op.in_image(), o * n);
        if op.batch == 0 || n == 0 {
            return Ok(());
        }
        if let Some(gb) = gb {
            let f = kernel(&dev, MODULE, PTX, NAMES, "conv2d_bias_grad")?;
            // SAFETY: the arguments match `conv2d_bias_grad(const float*,
            // float*, int, int, int)`; gy holds batch·O·N floats, gb O, one
            // block per output channel.
            unsafe {
                f.launch(
                    per_block(o, BLOCK),
                    (&**gy, &mut **gb, int(op.batch), int(o), int(n)),
                )?
            };
        }
        if op.is_pointwise() {
            // SAFETY: x and gx hold batch images of in_img = I·N floats, gy
            // batch·O·N, w O·I and gw I·O: the described matrices; the written
            // gradients are separate buffers from what is read.
            unsafe {
                // dWᵀ (I×O) += Σ_b X_b (I×N) · dY_bᵀ (N×O)
                weight_grad(
                    &blas,
                    &dev,
                    (i, o, n),
                    (&*xs, in_img),
                    (&gy.slice(..), out_img),
                    op.batch,
                    gw,
                )?;
                // dX_bᵀ (N×I) += dY_bᵀ (N×O) · W (O×I)
                gemm_batched(
                    &blas,
                    (false, true),
                    (n, i, o),
                    (&**gy, n, out_img),
                    (&*ws, i, 0),
                    1.0,
                    (&mut **gx, n, in_img),
                    op.batch,
                )?;
            }
            return Ok(());
        }
        let geo = ConvGeo::from(op);
        let im2col = kernel(&dev, MODULE, PTX, NAMES, "conv2d_im2col")?;
        let col2im = kernel(&dev, MODULE, PTX, NAMES, "conv2d_col2im")?;
        let g = group(op);
        let mut col = take_scratch(&dev, Scratch::Col, g * patch * n)?;
        let mut dcol = take_scratch(&dev, Scratch::DCol, g * patch * n)?;
        let mut b0 = 0;
        while b0 < op.batch {
            let gi = g.min(op.batch - b0);
            let xv = xs.slice(b0 * in_img..(b0 + gi) * in_img);
            let gyv = gy.slice(b0 * out_img..(b0 + gi) * out_img);
            // SAFETY: `xv`, `gyv` and `gxv` are bounds-checked views of the
            // group's gi images; `col` and `dcol` are distinct scratch of at
            // least g·patch·N floats, of which im2col and the GEMM write
            // gi·patch·N; w holds O·patch and gw patch·O floats; the kernel
            // signatures (ConvGeo, const float*, float*, int) match.
            unsafe {
                im2col
                    .clone()
                    .launch(grid(gi * patch * n), (geo, &xv, &mut col, int(gi)))?;
                // dWᵀ (patch×O) += Σ_j col_j (patch×N) · dY_jᵀ (N×O)
                weight_grad(
                    &blas,
                    &dev,
                    (patch, o, n),
                    (&col, patch * n),
                    (&gyv, out_img),
                    gi,
                    gw,
                )?;
                // dcol_bᵀ (N×patch) = dY_bᵀ (N×O) · W (O×patch), all images of the group.
                gemm_batched(
                    &blas,
                    (false, true),
                    (n, patch, o),
                    (&gyv, n, out_img),
                    (&*ws, patch, 0),
                    0.0,
                    (&mut dcol, n, patch * n),
                    gi,
                )?;
                let mut gxv = gx.slice_mut(b0 * in_img..(b0 + gi) * in_img);
                col2im
                    .clone()
                    .launch(grid(gi * in_img), (geo, &dcol, &mut gxv, int(gi)))?;
            }
            b0 += gi;
        }
        return_scratch(&dev, Scratch::Col, col);
        return_scratch(&dev, Scratch::DCol, dcol);
        Ok(())
    }
}
