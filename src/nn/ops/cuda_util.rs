//! Shared pieces of the CUDA kernels: a cuBLAS handle per device (created
//! once, on dfdx's stream), launch geometry, and kernel loading.

use std::sync::{Arc, Mutex, Weak};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaDevice, CudaFunction, LaunchConfig};
use dfdx::prelude::*;

use crate::device::cuda::{function, load_module, PtxTable, BLOCK};

/// One cuBLAS handle per live `CudaDevice`, keyed by the device's address.
///
/// A handle holds an `Arc` of its device, so an entry would keep the device
/// (its context and every buffer cached on it) alive forever. Each lookup
/// therefore first drops the entries whose device nobody but the handle
/// holds any more (the `Cuda` and all its tensors are gone); a dropped
/// device's address can then be reused safely.
static BLAS: Mutex<Vec<BlasEntry>> = Mutex::new(Vec::new());

struct BlasEntry {
    key: usize,
    device: Weak<CudaDevice>,
    blas: Arc<CudaBlas>,
}

impl BlasEntry {
    /// Whether only this entry's handle still holds the device.
    fn orphaned(&self) -> bool {
        self.device.strong_count() <= 1 && Arc::strong_count(&self.blas) == 1
    }
}

/// The cached cuBLAS handle bound to `dev`'s stream, so GEMMs order with
/// dfdx's and our kernels.
pub(crate) fn blas(dev: &Arc<CudaDevice>) -> Result<Arc<CudaBlas>, CudaError> {
    let key = Arc::as_ptr(dev) as usize;
    let mut cache = BLAS.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|e| e.key == key || !e.orphaned());
    if let Some(e) = cache.iter().find(|e| e.key == key) {
        return Ok(e.blas.clone());
    }
    let b = Arc::new(CudaBlas::new(dev.clone())?);
    cache.push(BlasEntry {
        key,
        device: Arc::downgrade(dev),
        blas: b.clone(),
    });
    Ok(b)
}

/// Drops every cached cuBLAS handle whose device is otherwise unused, and
/// returns how many remain: call after dropping a `Cuda` to release its
/// context at once rather than at the next op on another device.
pub fn release_unused_cuda_handles() -> usize {
    let mut cache = BLAS.lock().unwrap_or_else(|e| e.into_inner());
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
