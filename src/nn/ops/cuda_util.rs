//! Shared pieces of the CUDA kernels: a cuBLAS handle and scratch buffers
//! per device (created once, on dfdx's stream), launch geometry, and kernel
//! loading.

use std::sync::{Arc, Mutex, Weak};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaDevice, CudaFunction, CudaSlice, DeviceSlice, LaunchConfig};
use dfdx::prelude::*;

use crate::device::cuda::{function, load_module, PtxTable, BLOCK};

/// Per live `CudaDevice` (keyed by its address): a cuBLAS handle and the
/// grow-only scratch buffers of the ops (im2col workspaces), reused across
/// calls instead of allocated each time.
///
/// The handle and the buffers each hold an `Arc` of the device, so an entry
/// would keep the device (its context and every buffer cached on it) alive
/// forever. Each lookup therefore first drops the entries whose device
/// nobody else holds any more (the `Cuda` and all its tensors are gone); a
/// dropped device's address can then be reused safely.
static DEVICES: Mutex<Vec<DeviceEntry>> = Mutex::new(Vec::new());

/// Scratch buffers per device (indices into `DeviceEntry::scratch`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scratch {
    /// conv2d's im2col columns.
    Col = 0,
    /// conv2d's column gradient.
    DCol = 1,
    /// conv2d's per-image weight-gradient partials.
    WeightGrad = 2,
}

struct DeviceEntry {
    key: usize,
    device: Weak<CudaDevice>,
    blas: Arc<CudaBlas>,
    scratch: [Option<CudaSlice<f32>>; 3],
}

impl DeviceEntry {
    /// Whether only this entry (its handle and buffers) still holds the device.
    fn orphaned(&self) -> bool {
        let held = 1 + self.scratch.iter().flatten().count();
        self.device.strong_count() <= held && Arc::strong_count(&self.blas) == 1
    }
}

fn entry<'a>(
    cache: &'a mut Vec<DeviceEntry>,
    dev: &Arc<CudaDevice>,
) -> Result<&'a mut DeviceEntry, CudaError> {
    let key = Arc::as_ptr(dev) as usize;
    cache.retain(|e| e.key == key || !e.orphaned());
    let pos = match cache.iter().position(|e| e.key == key) {
        Some(pos) => pos,
        None => {
            cache.push(DeviceEntry {
                key,
                device: Arc::downgrade(dev),
                blas: Arc::new(CudaBlas::new(dev.clone())?),
                scratch: [None, None, None],
            });
            cache.len() - 1
        }
    };
    Ok(&mut cache[pos])
}

/// The cached cuBLAS handle bound to `dev`'s stream, so GEMMs order with
/// dfdx's and our kernels.
pub(crate) fn blas(dev: &Arc<CudaDevice>) -> Result<Arc<CudaBlas>, CudaError> {
    let mut cache = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    Ok(entry(&mut cache, dev)?.blas.clone())
}

/// Takes `dev`'s scratch buffer `which` with at least `len` floats
/// (contents unspecified), growing it if needed; hand it back with
/// [`return_scratch`]. Everything on a device runs on its one stream, so a
/// buffer handed back while kernels still use it is only reused by later
/// kernels of the same stream. A concurrent caller that finds it taken
/// allocates its own.
pub(crate) fn take_scratch(
    dev: &Arc<CudaDevice>,
    which: Scratch,
    len: usize,
) -> Result<CudaSlice<f32>, CudaError> {
    let cached = {
        let mut cache = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
        entry(&mut cache, dev)?.scratch[which as usize].take()
    };
    match cached {
        Some(buf) if buf.len() >= len => Ok(buf),
        // SAFETY: scratch contents are unspecified; every user writes
        // before it reads.
        _ => Ok(unsafe { dev.alloc::<f32>(len.max(1)) }?),
    }
}

/// Hands a buffer from [`take_scratch`] back (the larger one is kept).
pub(crate) fn return_scratch(dev: &Arc<CudaDevice>, which: Scratch, buf: CudaSlice<f32>) {
    let mut cache = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(e) = entry(&mut cache, dev) {
        let slot = &mut e.scratch[which as usize];
        if slot.as_ref().is_none_or(|old| old.len() < buf.len()) {
            *slot = Some(buf);
        }
    }
}

/// Drops the cuBLAS handles and scratch buffers of devices that are
/// otherwise unused, and returns how many devices remain cached: call after
/// dropping a `Cuda` to release its context at once rather than at the next
/// op on another device.
pub fn release_unused_cuda_handles() -> usize {
    let mut cache = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|e| !e.orphaned());
    cache.len()
}

/// A 1-D launch of `n` threads in blocks of [`BLOCK`].
pub(crate) fn grid(n: usize) -> LaunchConfig {
    let n = u32::try_from(n).expect("CUDA launch larger than 2^32 threads");
    LaunchConfig {
        grid_dim: (n.div_ceil(BLOCK).max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `threads` per item (`blocks` of them), for per-channel or
/// per-plane reductions.
pub(crate) fn per_block(blocks: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (u32::try_from(blocks).expect("too many CUDA blocks"), 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Loads `module` (once per device) and returns its function `name`.
pub(crate) fn kernel(
    dev: &Arc<CudaDevice>,
    module: &'static str,
    ptx: PtxTable,
    names: &'static [&'static str],
    name: &str,
) -> Result<CudaFunction, CudaError> {
    load_module(dev, module, ptx, names)?;
    Ok(function(dev, module, name))
}

/// `i32` for a kernel argument, refusing sizes CUDA indices cannot hold.
pub(crate) fn int(v: usize) -> i32 {
    i32::try_from(v).expect("size does not fit the kernels' 32-bit indices")
}
