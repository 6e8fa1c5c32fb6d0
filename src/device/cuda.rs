//! Device-side buffer access and kernel loading for CUDA kernels.
//!
//! Every `<Cuda as Storage<f32>>::Vec` derefs to a cudarc `CudaSlice` whose
//! `.device()` is dfdx's own `Arc<CudaDevice>`, so kernels launched on it run
//! on dfdx's stream and order with dfdx's own kernels.

use std::sync::Arc;

use cudarc::driver::{CudaDevice, CudaFunction, DeviceSlice, DriverError};
use dfdx::prelude::*;

/// dfdx's device buffer type for `f32` on CUDA (derefs to `CudaSlice<f32>`).
pub(crate) type CudaVec = <Cuda as Storage<f32>>::Vec;

/// dfdx's `CudaDevice` (context + stream) behind a `Cuda` handle.
pub(crate) fn cuda_device(dev: &Cuda) -> Result<Arc<CudaDevice>, CudaError> {
    let probe: CudaVec = dev.try_alloc_len(1)?;
    Ok(probe.device())
}

/// A device-side copy of a tensor's elements in logical (row-major) order.
///
/// dfdx exposes no handle to a tensor's device buffer; the gradient of
/// `Σ(probe · x)` with respect to `probe` is exactly `x` (a multiply by 1.0),
/// so one backward pass writes `x` into a gradient buffer that we can take.
/// Works for strided (broadcast/permuted) tensors too.
pub(crate) fn device_copy<S: Shape, T>(x: &Tensor<S, f32, Cuda, T>) -> Result<CudaVec, CudaError> {
    let dev = x.device().clone();
    let x: Tensor<S, f32, Cuda> = x.retaped();
    let probe: Tensor<S, f32, Cuda> = dev.try_zeros_like(x.shape())?;
    let mut grads = probe
        .leaky_trace()
        .try_mul(x)?
        .try_sum::<Rank0, _>()?
        .try_backward()?;
    let placeholder: CudaVec = dev.try_alloc_len(1)?;
    Ok(std::mem::replace(
        grads.get_or_alloc_mut(&probe)?,
        placeholder,
    ))
}

/// Wraps a device buffer holding `shape.num_elements()` elements as a tensor.
///
/// dfdx only builds tensors from host memory or from gradients, so the buffer
/// passes through a `Gradients` (one device-to-device copy).
pub(crate) fn tensor_from_device<S: Shape>(
    dev: &Cuda,
    shape: S,
    buf: CudaVec,
) -> Result<Tensor<S, f32, Cuda>, CudaError> {
    assert_eq!(
        buf.len(),
        shape.num_elements(),
        "device buffer does not match the shape"
    );
    let template: Tensor<S, f32, Cuda> = dev.try_zeros_like(&shape)?;
    let mut grads = Gradients::leaky();
    *grads.get_or_alloc_mut(&template)? = buf;
    Ok(grads.get(&template))
}

/// Loads a PTX module once per device; later calls are a map lookup.
pub(crate) fn load_module(
    dev: &Arc<CudaDevice>,
    module: &str,
    ptx: &'static str,
    functions: &'static [&'static str],
) -> Result<(), DriverError> {
    if !dev.has_func(module, functions[0]) {
        dev.load_ptx(ptx.into(), module, functions)?;
    }
    Ok(())
}

/// A function of a module loaded with [`load_module`].
pub(crate) fn function(dev: &Arc<CudaDevice>, module: &str, name: &str) -> CudaFunction {
    dev.get_func(module, name)
        .unwrap_or_else(|| panic!("CUDA kernel {module}::{name} was not loaded"))
}
