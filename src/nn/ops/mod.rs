//! Differentiable vision ops on dfdx's public tape API (CPU and CUDA).
//!
//! Every op takes its input tensor by value with whatever tape it carries
//! (`NoneTape` for inference, `OwnedTape` for training) and returns the output
//! with the same tape; parameters (weights, batch-norm statistics) are passed
//! by reference, tape-free, and receive their gradients in the input's
//! `Gradients` through their ids — exactly how dfdx's own layers behave.
//! Gradients are accumulated (`+=`), so a tensor used twice gets the sum.
//!
//! | op | what |
//! | --- | --- |
//! | [`conv2d()`] | NCHW 2-D convolution, square kernel, stride, zero padding, optional bias |
//! | [`max_pool2d()`] | max pooling (kernel, stride, padding); gradient to the first maximum |
//! | [`global_avg_pool2d()`] | mean over H×W: `(B, C, H, W)` → `(B, C)` |
//! | [`batch_norm2d()`] | batch-norm with running (eval) or batch (train) statistics, [`BatchNormParams`]; fused [`Tail`]: ReLU, or `relu(bn(x) + residual)` (a ResNet block's tail in one pass) |
//! | [`add_relu()`] | `relu(a + b)` |
//!
//! The fused ops exist because dfdx's stock element-wise ops are far slower
//! than PyTorch on CPU (see `BENCHMARKS.md`); a ResNet spends most of its
//! non-convolution time exactly there.
//!
//! Devices implement the per-op kernel traits; [`VisionDevice`] bundles them
//! so downstream code can write one bound (`D: VisionDevice`).

pub mod add_relu;
pub mod batch_norm2d;
pub mod conv2d;
pub mod global_avg_pool2d;
pub mod max_pool2d;

pub(crate) mod cpu_util;
#[cfg(feature = "cuda")]
pub(crate) mod cuda_util;

pub use add_relu::{add_relu, try_add_relu, AddReluKernel};
pub use batch_norm2d::{
    batch_norm2d, try_batch_norm2d, BatchNorm2dKernel, BatchNormParams, BatchNormStats, Tail,
};
pub use conv2d::{conv2d, conv2d_output_size, try_conv2d, Conv2dKernel};
pub use global_avg_pool2d::{global_avg_pool2d, try_global_avg_pool2d, GlobalAvgPool2dKernel};
pub use max_pool2d::{max_pool2d, try_max_pool2d, MaxPool2dKernel};

use dfdx::prelude::*;

/// A 1-element stand-in for a released gradient buffer.
pub(crate) fn released<D: Storage<f32>>(dev: &D) -> Result<D::Vec, D::Err> {
    dev.try_alloc_len(1)
}

/// Frees the gradient of an op's output once the op's backward pass has
/// consumed it (every consumer of the output ran earlier in the reverse
/// pass, so nothing else reads it), as PyTorch's autograd does. This keeps
/// backward memory flat and lets the allocator hand the same warm pages to
/// the next gradient instead of faulting in fresh ones. Reading such an
/// intermediate gradient afterwards (`grads.get(&out)`) panics.
macro_rules! release_grad {
    ($grads:expr, $out:expr, $dev:expr) => {
        *$grads.get_or_alloc_mut(&$out)? = $crate::nn::ops::released(&$dev)?
    };
}
pub(crate) use release_grad;

/// A dfdx device with every vision kernel of this crate: `Cpu`, and `Cuda`
/// with the `cuda` feature. Use it as the one bound in generic model code.
pub trait VisionDevice:
    Device<f32>
    + Conv2dKernel
    + MaxPool2dKernel
    + GlobalAvgPool2dKernel
    + BatchNorm2dKernel
    + AddReluKernel
{
}

impl<D> VisionDevice for D where
    D: Device<f32>
        + Conv2dKernel
        + MaxPool2dKernel
        + GlobalAvgPool2dKernel
        + BatchNorm2dKernel
        + AddReluKernel
{
}
