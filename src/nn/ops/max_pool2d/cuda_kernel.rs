//! CUDA max pooling: one thread per output; the backward pass re-finds the
//! argmax and scatters with `atomicAdd` (windows may overlap).

use cudarc::driver::{DeviceRepr, LaunchAsync};
use dfdx::prelude::*;

use super::{MaxPool2dKernel, Pool2dOp};
use crate::device::cuda::{device_view, tensor_from_device, CudaVec, PtxTable};
use crate::nn::ops::cuda_util::{grid, int, kernel};

const PTX: PtxTable = include!(concat!(env!("OUT_DIR"), "/max_pool2d.ptx.rs"));
const MODULE: &str = "poly_loss_max_pool2d";
const NAMES: &[&str] = &["max_pool2d_forward", "max_pool2d_backward"];

/// `struct PoolGeo` in `max_pool2d.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PoolGeo {
    planes: i32,
    h: i32,
    w: i32,
    oh: i32,
    ow: i32,
    k: i32,
    s: i32,
    p: i32,
}

// SAFETY: plain `repr(C)` integers, passed by value like the C struct.
unsafe impl DeviceRepr for PoolGeo {}

impl From<&Pool2dOp> for PoolGeo {
    fn from(op: &Pool2dOp) -> Self {
        Self {
            planes: int(op.planes),
            h: int(op.h_in),
            w: int(op.w_in),
            oh: int(op.h_out),
            ow: int(op.w_out),
            k: int(op.kernel),
            s: int(op.stride),
            p: int(op.padding),
        }
    }
}

impl MaxPool2dKernel for Cuda {
    fn max_pool2d_forward<Sx: Shape, Sy: Shape>(
        &self,
        op: &Pool2dOp,
        x: &Tensor<Sx, f32, Self>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err> {
        let xs = device_view(x)?;
        let dev = xs.device();
        let total = op.planes * op.h_out * op.w_out;
        let mut y: CudaVec = self.try_alloc_len(total)?;
        if total > 0 {
            let f = kernel(&dev, MODULE, PTX, NAMES, "max_pool2d_forward")?;
            // SAFETY: the arguments match `max_pool2d_forward(PoolGeo, const
            // float*, float*)`; x holds planes·h·w floats (its shape), y the
            // `total` outputs the grid-stride loop writes, and window reads
            // are clipped to the plane.
            unsafe { f.launch(grid(total), (PoolGeo::from(op), &*xs, &mut *y))? };
        }
        tensor_from_device(self, out, y)
    }

    fn max_pool2d_backward<Sx: Shape>(
        &self,
        op: &Pool2dOp,
        x: &Tensor<Sx, f32, Self>,
        gx: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let xs = device_view(x)?;
        let dev = xs.device();
        // One thread per input element (a deterministic gather).
        let total = op.planes * op.h_in * op.w_in;
        if total > 0 && op.h_out * op.w_out > 0 {
            let f = kernel(&dev, MODULE, PTX, NAMES, "max_pool2d_backward")?;
            // SAFETY: the arguments match `max_pool2d_backward(PoolGeo, const
            // float*, float*, const float*)`; x and gx hold the `total` inputs,
            // gy planes·oh·ow floats (the output's gradient).
            unsafe { f.launch(grid(total), (PoolGeo::from(op), &*xs, &mut **gx, &**gy))? };
        }
        Ok(())
    }
}
