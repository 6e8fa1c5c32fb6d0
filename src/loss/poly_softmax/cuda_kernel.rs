//! CUDA kernel launch: one block per row on dfdx's own device and stream.

use cudarc::driver::{CudaSlice, LaunchAsync, LaunchConfig};
use dfdx::prelude::*;

use super::{SoftmaxJob, SoftmaxKernel, SoftmaxParams};
use crate::device::cuda::{
    cuda_device, device_copy, function, load_module, tensor_from_device, CudaVec,
};
use crate::loss::targets::Targets;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/poly_softmax.ptx"));
const MODULE: &str = "poly_loss_softmax";
const FUNCS: &[&str] = &["poly_softmax_fwd", "poly_softmax_bwd"];
const F_PROBS: i32 = 1;
const F_WEIGHT: i32 = 2;
const F_SCALAR: i32 = 4;
/// Marks an ignored row in the target buffer.
pub(crate) const IGNORED_ROW: u32 = u32::MAX;

/// Device buffers the backward reuses.
pub struct CudaSaved {
    z: CudaVec,
    stats: CudaSlice<f32>,
    tgt: CudaSlice<u32>,
    weight: CudaSlice<f32>,
    prm: CudaSlice<f32>,
    flags: i32,
}

/// The parameter block of `poly_common.cuh` (PRM_*).
pub(crate) fn param_block(
    smoothing: f32,
    gamma: f32,
    alpha: Option<f32>,
    focal: bool,
    eps: &[f32],
) -> Vec<f32> {
    let mut v = vec![
        smoothing,
        gamma,
        alpha.unwrap_or(-1.0),
        if focal { 1.0 } else { 0.0 },
        eps.len() as f32,
    ];
    v.extend_from_slice(eps);
    v
}

/// Class indices as `u32` (ignored rows as [`IGNORED_ROW`]); the caller has
/// checked every other index is `< C`.
pub(crate) fn target_indices(t: &[usize], ignore: Option<usize>) -> Vec<u32> {
    t.iter()
        .map(|&v| {
            if Some(v) == ignore {
                IGNORED_ROW
            } else {
                v as u32
            }
        })
        .collect()
}

fn threads_for(c: usize) -> u32 {
    // Enough warps to cover the row once, at most 1024 threads (a block).
    (c.div_ceil(32) * 32).clamp(32, 1024) as u32
}

fn flags_of(job_probs: bool, p: &SoftmaxParams, scalar: bool) -> i32 {
    (if job_probs { F_PROBS } else { 0 })
        | (if p.weight.is_some() { F_WEIGHT } else { 0 })
        | (if scalar { F_SCALAR } else { 0 })
}

impl SoftmaxKernel for Cuda {
    type Saved = CudaSaved;

    fn softmax_fwd<S: Shape, T, O: Shape>(
        &self,
        logits: &Tensor<S, f32, Self, T>,
        job: &SoftmaxJob<Self>,
        out: O,
    ) -> Result<(Tensor<O, f32, Self>, CudaSaved), CudaError> {
        let dev = cuda_device(self)?;
        load_module(&dev, MODULE, PTX, FUNCS)?;
        let (b, c, p) = (job.b, job.c, &job.params);
        let z = device_copy(logits)?;
        let (tgt, is_probs) = match &job.targets {
            Targets::Classes(t) => (dev.htod_sync_copy(&target_indices(t, p.ignore))?, false),
            Targets::Probs(_) => (dev.alloc_zeros::<u32>(1)?, true),
        };
        let weight = match &p.weight {
            Some(w) => dev.htod_sync_copy(w)?,
            None => dev.alloc_zeros::<f32>(1)?,
        };
        let wsum: f32 = p.weight.as_ref().map_or(c as f32, |w| w.iter().sum());
        let prm = dev.htod_sync_copy(&param_block(
            p.smoothing,
            p.gamma,
            if p.focal { Some(p.focal_weight) } else { None },
            p.focal,
            &p.eps,
        ))?;
        let flags = flags_of(is_probs, p, job.scale.is_some());
        let mut stats = dev.alloc_zeros::<f32>(4 * b.max(1))?;
        let mut out_buf: CudaVec = self.try_alloc_len(out.num_elements())?;
        let dummy;
        let probs: &CudaSlice<f32> = match &job.targets {
            Targets::Probs(y) => y,
            Targets::Classes(_) => {
                dummy = dev.alloc_zeros::<f32>(1)?;
                &dummy
            }
        };
        if b > 0 && c > 0 {
            let cfg = LaunchConfig {
                grid_dim: (b as u32, 1, 1),
                block_dim: (threads_for(c), 1, 1),
                shared_mem_bytes: 0,
            };
            let f = function(&dev, MODULE, "poly_softmax_fwd");
            let args = (
                &*z,
                &tgt,
                probs,
                &weight,
                &prm,
                &mut stats,
                &mut *out_buf,
                b as i32,
                c as i32,
                flags,
                job.scale.unwrap_or(1.0),
                wsum,
            );
            // SAFETY: buffer lengths match the kernel's indexing: z and probs
            // hold b·c floats, tgt b indices (< c or IGNORED_ROW), weight c,
            // stats 4·b, out b (or 1 with F_SCALAR), prm the PRM_* block.
            unsafe { f.launch(cfg, args) }?;
        }
        let out = tensor_from_device(self, out, out_buf)?;
        Ok((
            out,
            CudaSaved {
                z,
                stats,
                tgt,
                weight,
                prm,
                flags,
            },
        ))
    }

    fn softmax_bwd(
        &self,
        job: &SoftmaxJob<Self>,
        saved: &CudaSaved,
        grad_logits: &mut <Self as Storage<f32>>::Vec,
        grad_out: &<Self as Storage<f32>>::Vec,
    ) -> Result<(), CudaError> {
        let (b, c) = (job.b, job.c);
        if b == 0 || c == 0 {
            return Ok(());
        }
        let dev = cuda_device(self)?;
        let dummy;
        let probs: &CudaSlice<f32> = match &job.targets {
            Targets::Probs(y) => y,
            Targets::Classes(_) => {
                dummy = dev.alloc_zeros::<f32>(1)?;
                &dummy
            }
        };
        let cfg = LaunchConfig {
            grid_dim: (b as u32, 1, 1),
            block_dim: (threads_for(c).min(256), 1, 1),
            shared_mem_bytes: 0,
        };
        let f = function(&dev, MODULE, "poly_softmax_bwd");
        let args = (
            &*saved.z,
            &saved.tgt,
            probs,
            &saved.weight,
            &saved.prm,
            &saved.stats,
            &**grad_out,
            &mut **grad_logits,
            b as i32,
            c as i32,
            saved.flags,
            job.scale.unwrap_or(1.0),
        );
        // SAFETY: as in the forward; grad_logits holds b·c floats, grad_out b (or 1).
        unsafe { f.launch(cfg, args) }?;
        Ok(())
    }
}
