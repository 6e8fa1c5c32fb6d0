//! CUDA batch-norm: per-channel block reductions (statistics, and the
//! backward sums) plus element-wise kernels for the affine transform with
//! its fused ReLU / residual and for the input gradient.

use cudarc::driver::{DeviceRepr, LaunchAsync};
use dfdx::prelude::*;

use super::{BatchNorm2dKernel, BatchNormGrads, BatchNormOp, BatchNormTensors};
use crate::device::cuda::{device_view, tensor_from_device, CudaVec, PtxTable, BLOCK};
use crate::nn::ops::cuda_util::{grid, int, kernel, per_block};

const PTX: PtxTable = include!(concat!(env!("OUT_DIR"), "/batch_norm2d.ptx.rs"));
const MODULE: &str = "poly_loss_batch_norm2d";
const NAMES: &[&str] = &[
    "bn_stats",
    "bn_forward",
    "bn_backward_reduce",
    "bn_backward_apply",
];

/// `struct BnGeo` in `batch_norm2d.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct BnGeo {
    batch: i32,
    channels: i32,
    plane: i32,
    relu: i32,
    residual: i32,
    train: i32,
    eps: f32,
}

// SAFETY: plain `repr(C)` scalars, passed by value like the C struct.
unsafe impl DeviceRepr for BnGeo {}

fn geo(op: &BatchNormOp, residual: bool) -> BnGeo {
    BnGeo {
        batch: int(op.batch),
        channels: int(op.channels),
        plane: int(op.plane),
        relu: op.relu as i32,
        residual: residual as i32,
        train: op.train as i32,
        eps: op.eps as f32,
    }
}

impl BatchNorm2dKernel for Cuda {
    fn batch_norm2d_stats<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        channels: Sc,
    ) -> Result<(Tensor<Sc, f32, Self>, Tensor<Sc, f32, Self>), Self::Err> {
        let xs = device_view(x)?;
        let dev = xs.device();
        let mut mean: CudaVec = self.try_alloc_len(op.channels)?;
        let mut var: CudaVec = self.try_alloc_len(op.channels)?;
        if op.channels > 0 {
            let f = kernel(&dev, MODULE, PTX, NAMES, "bn_stats")?;
            // SAFETY: the arguments match `bn_stats(BnGeo, const float*,
            // float*, float*)`; x holds batch·channels·plane floats (the op
            // is built from its shape), mean and var `channels`, one block
            // per channel.
            unsafe {
                f.launch(
                    per_block(op.channels, BLOCK),
                    (geo(op, false), &*xs, &mut *mean, &mut *var),
                )?
            };
        }
        Ok((
            tensor_from_device(self, channels, mean)?,
            tensor_from_device(self, channels, var)?,
        ))
    }

    fn batch_norm2d_forward<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        residual: Option<&Tensor<Sx, f32, Self>>,
        norm: &BatchNormTensors<'_, Sc, Self>,
        out: Sx,
    ) -> Result<Tensor<Sx, f32, Self>, Self::Err> {
        let xs = device_view(x)?;
        let dev = xs.device();
        // Without a residual the kernel never reads `r`; x stands in.
        let rs = residual.map(device_view).transpose()?;
        let (g, b, m, v) = (
            device_view(norm.gamma)?,
            device_view(norm.beta)?,
            device_view(norm.mean)?,
            device_view(norm.var)?,
        );
        let total = op.batch * op.channels * op.plane;
        let mut y: CudaVec = self.try_alloc_len(total)?;
        if total > 0 {
            let f = kernel(&dev, MODULE, PTX, NAMES, "bn_forward")?;
            let r = rs.as_ref().unwrap_or(&xs);
            // SAFETY: the arguments match `bn_forward`'s; x, r (the residual
            // of x's shape, or x itself, unread) and y hold `total` floats,
            // the parameters and statistics `channels`; the grid-stride loop
            // touches indices < total only.
            unsafe {
                f.launch(
                    grid(total),
                    (
                        geo(op, residual.is_some()),
                        &*xs,
                        &**r,
                        &*g,
                        &*b,
                        &*m,
                        &*v,
                        &mut *y,
                    ),
                )?
            };
        }
        tensor_from_device(self, out, y)
    }

    fn batch_norm2d_backward<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        y: Option<&Tensor<Sx, f32, Self>>,
        norm: &BatchNormTensors<'_, Sc, Self>,
        grads: BatchNormGrads<'_, Self>,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let BatchNormGrads {
            x: gx,
            gamma: ggamma,
            beta: gbeta,
            residual: gresidual,
        } = grads;
        let dev = gy.device();
        let total = op.batch * op.channels * op.plane;
        if total == 0 {
            return Ok(());
        }
        let xs = device_view(x)?;
        // Without ReLU the kernels never read `y`; x stands in.
        let ys = y.map(device_view).transpose()?;
        let ys = ys.as_ref().unwrap_or(&xs);
        let (g, m, v) = (
            device_view(norm.gamma)?,
            device_view(norm.mean)?,
            device_view(norm.var)?,
        );
        // SAFETY: uninitialised; `bn_backward_reduce` below writes all
        // 2·channels values (one block per channel) before `bn_backward_apply`
        // reads them on the same stream.
        let mut coef = unsafe { dev.alloc::<f32>(2 * op.channels) }?;
        let geo = geo(op, gresidual.is_some());
        let reduce = kernel(&dev, MODULE, PTX, NAMES, "bn_backward_reduce")?;
        // SAFETY: the arguments match `bn_backward_reduce`'s; x, y (or x,
        // unread without ReLU) and gy hold `total` floats, mean, var, ggamma
        // and gbeta `channels`, coef 2·channels; one block per channel.
        unsafe {
            reduce.launch(
                per_block(op.channels, BLOCK),
                (
                    geo,
                    &*xs,
                    &**ys,
                    &**gy,
                    &*m,
                    &*v,
                    &mut **ggamma,
                    &mut **gbeta,
                    &mut coef,
                ),
            )?
        };
        let apply = kernel(&dev, MODULE, PTX, NAMES, "bn_backward_apply")?;
        // Without a residual the kernel never writes `gr`; a 1-float dummy stands in.
        let mut dummy;
        let gr = match gresidual {
            Some(gr) => &mut **gr,
            None => {
                dummy = dev.alloc_zeros::<f32>(1)?;
                &mut dummy
            }
        };
        // SAFETY: the arguments match `bn_backward_apply`'s; x, y, gy and gx
        // hold `total` floats, the parameters `channels`, coef 2·channels
        // (written above); `gr` is the residual's gradient (`total` floats)
        // or a dummy the kernel never touches without a residual.
        unsafe {
            apply.launch(
                grid(total),
                (geo, &*xs, &**ys, &**gy, &*g, &*m, &*v, &coef, &mut **gx, gr),
            )?
        };
        Ok(())
    }
}
