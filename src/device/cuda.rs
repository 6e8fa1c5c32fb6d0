//! Device-side buffer access, kernel loading and device opening for the CUDA
//! kernels.
//!
//! Every `<Cuda as Storage<f32>>::Vec` derefs to a cudarc `CudaSlice` whose
//! `.device()` is dfdx's own `Arc<CudaDevice>`, so kernels launched on it run
//! on dfdx's stream and order with dfdx's own kernels.

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUresult};
use cudarc::driver::{CudaDevice, CudaFunction, DeviceSlice, DriverError};
use dfdx::prelude::*;

// `BLOCK`: threads per block of every kernel (build.rs, from launch.cuh).
include!(concat!(env!("OUT_DIR"), "/launch.rs"));

/// One kernel file's PTX per GPU architecture, ascending (`(80, ptx)` is
/// `compute_80`), as build.rs embeds it.
pub(crate) type PtxTable = &'static [(u32, &'static str)];

/// Why [`try_open_cuda`] could not open a device.
#[derive(Debug, thiserror::Error)]
pub enum CudaOpenError {
    /// `cuInit` failed: no NVIDIA driver, no GPU, or a driver too old for
    /// this build.
    #[error("the CUDA driver could not be initialised ({0:?}): is there an NVIDIA GPU and driver on this machine?")]
    NoDriver(DriverError),
    /// The ordinal is past the last device.
    #[error("CUDA device {ordinal} does not exist: this machine has {count} CUDA device(s)")]
    NoSuchDevice {
        /// The device asked for.
        ordinal: usize,
        /// How many devices the driver reports.
        count: usize,
    },
    /// The driver is present, but dfdx could not set the device up.
    #[error("cannot open CUDA device {ordinal}: {error:?}")]
    Build {
        /// The device asked for.
        ordinal: usize,
        /// dfdx's error.
        error: CudaError,
    },
}

/// Opens CUDA device `ordinal` as a dfdx [`Cuda`] seeded with `seed`,
/// returning an error where `Cuda::try_build` would panic inside cudarc
/// (its `cuInit` and device lookup are `unwrap`ed): the driver is probed
/// first and the ordinal checked against the device count.
///
/// ```no_run
/// let dev = poly_loss::try_open_cuda(0, 42)?;
/// # Ok::<(), poly_loss::CudaOpenError>(())
/// ```
pub fn try_open_cuda(ordinal: usize, seed: u64) -> Result<Cuda, CudaOpenError> {
    cudarc::driver::result::init().map_err(CudaOpenError::NoDriver)?;
    let count = cudarc::driver::result::device::get_count().map_err(CudaOpenError::NoDriver)?;
    let count = usize::try_from(count).unwrap_or(0);
    if ordinal >= count {
        return Err(CudaOpenError::NoSuchDevice { ordinal, count });
    }
    Cuda::try_build(ordinal, seed).map_err(|error| CudaOpenError::Build { ordinal, error })
}

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

/// Loads a PTX module once per device (the newest architecture in `ptx` the
/// device can run); later calls are a map lookup.
///
/// Fails with `CUDA_ERROR_NO_BINARY_FOR_GPU` when the device is older than
/// every architecture built (see build.rs, `CUDA_ARCHS`).
pub(crate) fn load_module(
    dev: &Arc<CudaDevice>,
    module: &str,
    ptx: PtxTable,
    functions: &'static [&'static str],
) -> Result<(), DriverError> {
    if !dev.has_func(module, functions[0]) {
        let cap = compute_capability(dev)?;
        let (_, code) =
            best_ptx(ptx, cap).ok_or(DriverError(CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU))?;
        dev.load_ptx(code.into(), module, functions)?;
    }
    Ok(())
}

/// The device's compute capability as `10 * major + minor` (e.g. 86).
pub(crate) fn compute_capability(dev: &CudaDevice) -> Result<u32, DriverError> {
    let major = dev.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = dev.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    Ok(u32::try_from(10 * major + minor).unwrap_or(0))
}

/// The entry for the newest architecture not newer than `cap`: PTX for
/// `compute_X` runs (JIT-compiled) on every GPU of capability ≥ X.
pub(crate) fn best_ptx(table: PtxTable, cap: u32) -> Option<(u32, &'static str)> {
    table
        .iter()
        .copied()
        .filter(|&(a, _)| a <= cap)
        .max_by_key(|&(a, _)| a)
}

/// A function of a module loaded with [`load_module`].
pub(crate) fn function(dev: &Arc<CudaDevice>, module: &str, name: &str) -> CudaFunction {
    dev.get_func(module, name)
        .unwrap_or_else(|| panic!("CUDA kernel {module}::{name} was not loaded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_ptx_takes_the_newest_arch_the_device_runs() {
        let table: PtxTable = &[(75, "a"), (80, "b"), (86, "c"), (90, "d")];
        assert_eq!(best_ptx(table, 75), Some((75, "a")));
        assert_eq!(best_ptx(table, 89), Some((86, "c")));
        assert_eq!(best_ptx(table, 120), Some((90, "d")));
        assert_eq!(best_ptx(table, 70), None);
    }

    #[test]
    fn block_is_the_launch_bound() {
        let header = include_str!("launch.cuh");
        assert!(header.contains(&format!("#define POLY_BLOCK {BLOCK}")));
    }
}
