//! CUDA kernel launch on dfdx's own device and stream.

use cudarc::driver::{CudaSlice, LaunchAsync, LaunchConfig};
use dfdx::prelude::*;

use super::{SigmoidJob, SigmoidKernel};
use crate::device::cuda::{
    cuda_device, device_copy, function, load_module, tensor_from_device, CudaVec,
};
use crate::loss::poly_softmax::cuda_kernel::{param_block, target_indices};
use crate::loss::targets::Targets;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/poly_sigmoid.ptx"));
const MODULE: &str = "poly_loss_sigmoid";
const FUNCS: &[&str] = &["poly_sigmoid_fwd", "poly_sigmoid_bwd"];
const F_PROBS: i32 = 1;
const F_WEIGHT: i32 = 2;
const F_SCALAR: i32 = 4;

/// Device buffers the backward reuses.
pub struct CudaSigmoidSaved {
    z: CudaVec,
    tgt: CudaSlice<u32>,
    weight: CudaSlice<f32>,
    prm: CudaSlice<f32>,
    flags: i32,
}

impl SigmoidKernel for Cuda {
    type SigmoidSaved = CudaSigmoidSaved;

    fn sigmoid_fwd<S: Shape, T, O: Shape>(
        &self,
        logits: &Tensor<S, f32, Self, T>,
        job: &SigmoidJob<Self>,
        out: O,
    ) -> Result<(Tensor<O, f32, Self>, CudaSigmoidSaved), CudaError> {
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
        let prm =
            dev.htod_sync_copy(&param_block(p.smoothing, p.gamma, p.alpha, p.focal, &p.eps))?;
        let flags = (if is_probs { F_PROBS } else { 0 })
            | (if p.weight.is_some() { F_WEIGHT } else { 0 })
            | (if job.scale.is_some() { F_SCALAR } else { 0 });
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
                block_dim: ((c.div_ceil(32) * 32).clamp(32, 256) as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let f = function(&dev, MODULE, "poly_sigmoid_fwd");
            let args = (
                &*z,
                &tgt,
                probs,
                &weight,
                &prm,
                &mut *out_buf,
                b as i32,
                c as i32,
                flags,
                job.scale.unwrap_or(1.0),
            );
            // SAFETY: z and probs hold b·c floats, tgt b indices, weight c,
            // out b (or 1 with F_SCALAR), prm the PRM_* block.
            unsafe { f.launch(cfg, args) }?;
        }
        let out = tensor_from_device(self, out, out_buf)?;
        Ok((
            out,
            CudaSigmoidSaved {
                z,
                tgt,
                weight,
                prm,
                flags,
            },
        ))
    }

    fn sigmoid_bwd(
        &self,
        job: &SigmoidJob<Self>,
        saved: &CudaSigmoidSaved,
        grad_logits: &mut <Self as Storage<f32>>::Vec,
        grad_out: &<Self as Storage<f32>>::Vec,
    ) -> Result<(), CudaError> {
        let (b, c) = (job.b, job.c);
        let n = b * c;
        if n == 0 {
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
            grid_dim: (n.div_ceil(256).min(65_535) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = function(&dev, MODULE, "poly_sigmoid_bwd");
        let args = (
            &*saved.z,
            &saved.tgt,
            probs,
            &saved.weight,
            &saved.prm,
            &**grad_out,
            &mut **grad_logits,
            b as i32,
            c as i32,
            saved.flags,
            job.scale.unwrap_or(1.0),
        );
        // SAFETY: as in the forward; grad_logits holds b·c floats (grid-stride loop).
        unsafe { f.launch(cfg, args) }?;
        Ok(())
    }
}
