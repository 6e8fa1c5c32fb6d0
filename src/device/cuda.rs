//! Device-side buffer access, kernel loading and device opening for the CUDA
//! kernels.
//!
//! Every `<Cuda as Storage<f32>>::Vec` derefs to a cudarc `CudaSlice` whose
//! `.device()` is dfdx's own `Arc<CudaDevice>`, so kernels launched on it run
//! on dfdx's stream and order with dfdx's own kernels.
//!
//! # Output buffers are zeroed once before a kernel overwrites them
//!
//! Outputs come from `Storage::try_alloc_len`, which pops dfdx's allocation
//! cache and then memsets: one extra write pass over the output at memory
//! bandwidth (≈ 43 µs for a 205 MB activation at 4.8 TB/s), no extra
//! memory. An uninitialised output is not used, on purpose: dfdx 0.13's
//! only uninitialised allocator, `Cuda::alloc_empty`, is `pub(crate)` (as
//! are `CachableCudaSlice`'s fields and the `TensorCache`). The public
//! route — cudarc's `unsafe CudaDevice::alloc` swapped into a one-element
//! `try_alloc_len` buffer through `CachableCudaSlice`'s `DerefMut` — works,
//! but it takes the memory from the driver instead of dfdx's cache while
//! the buffer's `Drop` still hands it *to* the cache when caching is on (the
//! trainer enables it for the whole run). Only a dfdx allocation of the
//! same size takes a cached buffer out, so in evaluation (no gradient
//! buffers) every batch would add a forward pass's activations to the
//! cache until `empty_cache`: trading a memset for unbounded growth.

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

/// dfdx's `CudaDevice` (context + stream) behind a `Cuda` handle (allocates
/// one element: ops take the device of a buffer they already hold instead,
/// `CudaSlice::device()`).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn cuda_device(dev: &Cuda) -> Result<Arc<CudaDevice>, CudaError> {
    let probe: CudaVec = dev.try_alloc_len(1)?;
    Ok(probe.device())
}

/// A device-side copy of a tensor's elements in logical (row-major) order.
///
/// dfdx exposes no handle to a tensor's device buffer; the gradient of
/// `Σ(probe · x)` with respect to `probe` is exactly `x` (a multiply by 1.0),
/// so one backward pass writes `x` into a gradient buffer that we can take.
/// Works for strided (broadcast/permuted) tensors too. Costs ≈ 4× the tensor
/// in transient device memory and ~5 kernels: only the fallback of
/// [`device_view`] when [`zero_copy_available`] is false.
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

// ---------------------------------------------------------------------------
// Zero-copy access to dfdx's buffers (the unsafe boundary).
//
// dfdx 0.13 keeps `Tensor::data` crate-private and offers no public way to
// borrow a CUDA tensor's buffer. Every tensor an op reads is first brought to
// one concrete type, `Tensor<(usize,), f32, Cuda>` ([`Flat`]), by dfdx's own
// public reshape — free for a contiguous tensor (same buffer, same id), one
// strided copy kernel otherwise. For that single type [`FlatMirror`]
// declares the same fields with the same types in the same order, and
// [`verify_layout`] checks at run time, once per process, that the mirror
// really overlays a `Flat`: equal size and alignment; the `device` and
// `shape` fields at the addresses dfdx's public accessors return; shape and
// stride values of two tensors of different lengths; the `id` field equal to
// the id dfdx keys gradients by (via `Gradients::retain_leafs`); and the
// `data` field holding the tensor's elements (read back from the device).
// Only then are buffers borrowed; otherwise every op uses [`device_copy`].
// ---------------------------------------------------------------------------

/// The tensor types whose buffer is borrowed: flat `f32` (every op input)
/// and flat `usize` (class targets, [`class_targets_view`]).
type FlatOf<E> = Tensor<(usize,), E, Cuda>;
type Flat = FlatOf<f32>;

/// `FlatOf<E>`'s fields as dfdx 0.13 declares them (`tensor_impls.rs`).
#[allow(dead_code)]
struct FlatMirror<E: Unit> {
    id: UniqueId,
    data: Arc<<Cuda as Storage<E>>::Vec>,
    shape: (usize,),
    strides: [usize; 1],
    device: Cuda,
    tape: NoneTape,
}

/// `t` seen through the mirror, as a raw pointer (no reference is formed
/// until the layout is known).
fn mirror_ptr<E: Unit>(t: &FlatOf<E>) -> *const FlatMirror<E> {
    (t as *const FlatOf<E>).cast::<FlatMirror<E>>()
}

/// # Safety
/// Only after [`verify_layout`] returned true for `E`.
unsafe fn mirror<E: Unit>(t: &FlatOf<E>) -> &FlatMirror<E> {
    // SAFETY: the caller guarantees `verify_layout::<E>` held, so `FlatMirror<E>`
    // has `FlatOf<E>`'s size, alignment and field placement; the pointer comes
    // from a live reference, and the result borrows `t` for its lifetime.
    unsafe { &*(t as *const FlatOf<E>).cast::<FlatMirror<E>>() }
}

/// # Safety
/// Only after [`verify_layout`] returned true for `E`.
unsafe fn mirror_mut<E: Unit>(t: &mut FlatOf<E>) -> &mut FlatMirror<E> {
    // SAFETY: as in `mirror`: the caller guarantees the verified layout; the
    // pointer comes from a unique live reference whose borrow the result keeps.
    unsafe { &mut *(t as *mut FlatOf<E>).cast::<FlatMirror<E>>() }
}

/// Whether the mirror's fields sit where dfdx's public accessors of `t`
/// point, with the shape and stride of a flat tensor of `n` elements.
fn mirror_matches<E: Unit>(t: &FlatOf<E>, n: usize) -> bool {
    let m = mirror_ptr(t);
    // SAFETY: `m` points into `t` (same size, checked by the caller's
    // `verify_layout` or before); only field addresses are computed and
    // `usize` words read, and every bit pattern is a valid `usize`.
    unsafe {
        std::ptr::eq(std::ptr::addr_of!((*m).device), t.device())
            && std::ptr::eq(std::ptr::addr_of!((*m).shape), t.shape())
            && std::ptr::read(std::ptr::addr_of!((*m).shape.0)) == n
            && std::ptr::read(std::ptr::addr_of!((*m).strides)) == [1]
    }
}

/// The run-time check that [`FlatMirror<E>`] overlays [`FlatOf<E>`] (see
/// above), with `three` and `four` as sample elements (distinct lengths).
fn verify_layout<E: Unit + cudarc::driver::DeviceRepr>(
    dev: &Cuda,
    three: [E; 3],
    four: [E; 4],
) -> Result<bool, CudaError> {
    if std::mem::size_of::<FlatMirror<E>>() != std::mem::size_of::<FlatOf<E>>()
        || std::mem::align_of::<FlatMirror<E>>() != std::mem::align_of::<FlatOf<E>>()
    {
        return Ok(false);
    }
    let t: FlatOf<E> = dev.try_tensor_from_vec(three.to_vec(), (3,))?;
    let u: FlatOf<E> = dev.try_tensor_from_vec(four.to_vec(), (4,))?;
    // Until the `data` check below only field addresses are compared and
    // plain `usize` words (shape, strides, id) read: a wrong layout gives
    // `false`, never a read of an invalid value.
    if !mirror_matches(&t, 3) || !mirror_matches(&u, 4) {
        return Ok(false);
    }
    // SAFETY: as above; `UniqueId` is a `usize` newtype (any bits valid).
    let id: UniqueId = unsafe { std::ptr::read(std::ptr::addr_of!((*mirror_ptr(&t)).id)) };
    // `retain_leafs` keeps t's gradient only if `id` is t's id.
    let mut grads: Gradients<E, Cuda> = Gradients::leaky();
    grads.try_alloc_for(&t)?;
    *grads.get_or_alloc_mut(&t)? = dev.try_alloc_len(5)?;
    grads.retain_leafs(&[id]);
    if grads.get_or_alloc_mut(&t)?.len() != 5 {
        return Ok(false);
    }
    // Every other field is placed (same total size), so `data` is the
    // remaining slot: it must hold t's three elements.
    // SAFETY: all other fields verified; `data` is the `Arc<CudaVec>` dfdx stores.
    let m = unsafe { mirror(&t) };
    if m.data.len() != 3 {
        return Ok(false);
    }
    let host = m.data.device().dtoh_sync_copy(&**m.data)?;
    Ok(host == three)
}

/// Whether ops borrow dfdx's `f32` buffers (checked once per process on `dev`).
pub(crate) fn zero_copy_available(dev: &Cuda) -> bool {
    static VERIFIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERIFIED.get_or_init(|| {
        let ok = verify_layout::<f32>(dev, [1.0, 2.0, 3.0], [4.0; 4]).unwrap_or(false);
        if !ok {
            tracing::warn!(
                "dfdx's tensor layout did not verify: CUDA ops fall back to copying their inputs"
            );
        }
        ok
    })
}

/// Whether class targets are read from dfdx's `usize` buffers (checked once
/// per process on `dev`; a separate check: `Tensor<_, usize, _>` is another
/// instantiation, and `repr(Rust)` may lay it out differently).
pub(crate) fn zero_copy_usize_available(dev: &Cuda) -> bool {
    static VERIFIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERIFIED.get_or_init(|| {
        // Values above 2^32 catch a reader of 32-bit words.
        let ok = verify_layout::<usize>(dev, [1, 1 << 40, 3], [4; 4]).unwrap_or(false);
        if !ok {
            tracing::warn!(
                "dfdx's usize tensor layout did not verify: class targets are copied through the host"
            );
        }
        ok
    })
}

/// dfdx's device buffer of `usize` (derefs to `CudaSlice<usize>`).
pub(crate) type CudaUsizeVec = <Cuda as Storage<usize>>::Vec;

/// The device buffer of a `usize` tensor (class targets), borrowed without
/// a copy: `Some` when the `usize` layout verified and the tensor is
/// contiguous (`None`: the caller copies through the host, as before). The
/// elements are in logical order; holding the `Arc` keeps them unchanged
/// (dfdx writes in place only through `Arc::make_mut`, which copies while
/// another handle exists).
pub(crate) fn class_targets_view<B: Dim, T>(
    t: &Tensor<(B,), usize, Cuda, T>,
) -> Option<Arc<CudaUsizeVec>> {
    const {
        assert!(
            std::mem::size_of::<usize>() == 8,
            "kernels read 64-bit targets"
        )
    };
    let n = t.shape().0.size();
    if !zero_copy_usize_available(t.device()) {
        return None;
    }
    // A free change of the shape's type (same buffer, same strides).
    let flat: FlatOf<usize> = t.retaped::<NoneTape>().try_realize::<(usize,)>().ok()?;
    // Stride 1 required: a broadcast (stride 0) tensor takes the host copy.
    if !mirror_matches(&flat, n) {
        return None;
    }
    // SAFETY: `zero_copy_usize_available` returned true above, i.e.
    // `verify_layout::<usize>` held, which is `mirror`'s precondition.
    let data = Arc::clone(&unsafe { mirror(&flat) }.data);
    (data.len() == n).then_some(data)
}

/// A tensor's elements on the device in logical (row-major) order: dfdx's
/// own buffer when the tensor is contiguous (no copy), one strided copy
/// otherwise, or a [`device_copy`] if the layout check failed. Holding the
/// view keeps the buffer alive and unchanged: dfdx mutates a buffer in place
/// only through `Arc::make_mut`, which copies while another handle (ours)
/// exists.
///
/// Transient device memory: 0 for a contiguous tensor; its size for a
/// strided one; ≈ 4× its size in the fallback.
pub enum DeviceView {
    /// dfdx's own buffer (a clone of the tensor's `Arc`, read through the
    /// verified mirror).
    Shared(Arc<CudaVec>),
    /// An owned copy (fallback).
    Owned(CudaVec),
}

impl std::ops::Deref for DeviceView {
    type Target = cudarc::driver::CudaSlice<f32>;
    fn deref(&self) -> &Self::Target {
        match self {
            Self::Shared(v) => v,
            Self::Owned(v) => v,
        }
    }
}

/// See [`DeviceView`].
pub(crate) fn device_view<S: Shape, T>(
    x: &Tensor<S, f32, Cuda, T>,
) -> Result<DeviceView, CudaError> {
    let dev = x.device();
    if zero_copy_available(dev) {
        let n = x.shape().num_elements();
        // Free for a contiguous tensor (same buffer); dfdx's copy kernel otherwise.
        let flat: Flat = x.retaped::<NoneTape>().try_reshape_like(&(n,))?;
        if mirror_matches(&flat, n) {
            // SAFETY: `zero_copy_available` returned true above, i.e.
            // `verify_layout::<f32>` held, which is `mirror`'s precondition.
            let data = Arc::clone(&unsafe { mirror(&flat) }.data);
            if data.len() == n {
                return Ok(DeviceView::Shared(data));
            }
        }
    }
    Ok(DeviceView::Owned(device_copy(x)?))
}

/// Wraps a device buffer holding `shape.num_elements()` elements as a tensor:
/// without a copy when the layout verified (the buffer becomes the tensor's),
/// else through a `Gradients` (one device-to-device copy).
pub(crate) fn tensor_from_device<S: Shape>(
    dev: &Cuda,
    shape: S,
    buf: CudaVec,
) -> Result<Tensor<S, f32, Cuda>, CudaError> {
    let n = shape.num_elements();
    assert_eq!(buf.len(), n, "device buffer does not match the shape");
    if zero_copy_available(dev) {
        let mut flat: Flat = dev.try_zeros_like(&(1,))?;
        // SAFETY: the layout was verified; the fields written have the types
        // dfdx declares, and a flat tensor of `n` elements with stride 1 over
        // a buffer of `n` elements is a valid contiguous tensor.
        unsafe {
            let m = mirror_mut(&mut flat);
            m.data = Arc::new(buf);
            m.shape = (n,);
        }
        // Contiguous, so dfdx's reshape keeps the buffer.
        return flat.try_reshape_like(&shape);
    }
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

    // The tests below need a GPU (scripts/gpu-check.sh runs them).

    fn host(v: &cudarc::driver::CudaSlice<f32>) -> Vec<f32> {
        v.device().dtoh_sync_copy(v).unwrap()
    }

    #[test]
    fn zero_copy_layout_verifies_and_views_borrow_dfdx_buffers() {
        use cudarc::driver::DevicePtr;
        let dev = Cuda::default();
        assert!(
            zero_copy_available(&dev),
            "dfdx's tensor layout did not verify"
        );
        let x: Tensor<Rank2<2, 3>, f32, _> = dev.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        let (a, b) = (device_view(&x).unwrap(), device_view(&x.clone()).unwrap());
        assert!(matches!(a, DeviceView::Shared(_)));
        // The same device memory both times: no copy.
        assert_eq!(a.device_ptr(), b.device_ptr());
        assert_eq!(host(&a), x.as_vec());
    }

    #[test]
    fn strided_views_are_in_logical_order() {
        let dev = Cuda::default();
        let w: Tensor<Rank1<3>, f32, _> = dev.tensor([1.0, -2.0, 3.0]);
        let b: Tensor<Rank2<2, 3>, f32, _> = w.broadcast();
        assert_eq!(host(&device_view(&b).unwrap()), b.as_vec());
        let p: Tensor<Rank2<3, 2>, f32, _> = dev
            .tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
            .permute::<Rank2<3, 2>, _>();
        assert_eq!(host(&device_view(&p).unwrap()), p.as_vec());
    }

    #[test]
    fn tensor_from_device_takes_the_buffer() {
        use cudarc::driver::DevicePtr;
        let dev = Cuda::default();
        let cuda = cuda_device(&dev).unwrap();
        let mut buf: CudaVec = dev.try_alloc_len(6).unwrap();
        cuda.htod_sync_copy_into(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &mut buf)
            .unwrap();
        let ptr = *buf.device_ptr();
        let t = tensor_from_device(&dev, (Const::<2>, Const::<3>), buf).unwrap();
        assert_eq!(t.array(), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        assert_eq!(*device_view(&t).unwrap().device_ptr(), ptr);
    }

    #[test]
    fn class_target_views_borrow_dfdx_usize_buffers() {
        use cudarc::driver::DevicePtr;
        let dev = Cuda::default();
        assert!(
            zero_copy_usize_available(&dev),
            "dfdx's usize tensor layout did not verify"
        );
        let t: Tensor<(usize,), usize, _> = dev.tensor_from_vec(vec![3, 1 << 40, 0], (3,));
        let (a, b) = (
            class_targets_view(&t).unwrap(),
            class_targets_view(&t.clone()).unwrap(),
        );
        // The same device memory both times: no copy.
        assert_eq!(a.device_ptr(), b.device_ptr());
        assert_eq!(
            a.device().dtoh_sync_copy(&**a).unwrap(),
            vec![3, 1 << 40, 0]
        );
        // A broadcast (stride 0) tensor is not a flat buffer: the host copy.
        let one: Tensor<Rank0, usize, _> = dev.tensor(7);
        let wide: Tensor<Rank1<4>, usize, _> = one.broadcast();
        assert!(class_targets_view(&wide).is_none());
    }

    #[test]
    fn block_is_the_launch_bound() {
        let header = include_str!("launch.cuh");
        assert!(header.contains(&format!("#define POLY_BLOCK {BLOCK}")));
    }
}
