//! Shared pieces of the CUDA kernels: a cuBLAS handle per device (created
//! once, on dfdx's stream), launch geometry, and kernel loading.

use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaDevice, CudaFunction, LaunchConfig};
use dfdx::prelude::*;

use crate::device::cuda::{function, load_module};

/// One cuBLAS handle per `CudaDevice` (keyed by its address: the handle keeps
/// the device alive, so the address is never reused while cached).
static BLAS: Mutex<Vec<(usize, Arc<CudaBlas>)>> = Mutex::new(Vec::new());

/// The cached cuBLAS handle bound to `dev`'s stream, so GEMMs order with
/// dfdx's and our kernels.
pub(crate) fn blas(dev: &Arc<CudaDevice>) -> Result<Arc<CudaBlas>, CudaError> {
    let key = Arc::as_ptr(dev) as usize;
    let mut cache = BLAS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, b)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(b.clone());
    }
    let b = Arc::new(CudaBlas::new(dev.clone())?);
    cache.push((key, b.clone()));
    Ok(b)
}

/// A 1-D launch of `n` threads in blocks of 256.
pub(crate) fn grid(n: usize) -> LaunchConfig {
    const THREADS: u32 = 256;
    let n = u32::try_from(n).expect("CUDA launch larger than 2^32 threads");
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS).max(1), 1, 1),
        block_dim: (THREADS, 1, 1),
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
    ptx: &'static str,
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
