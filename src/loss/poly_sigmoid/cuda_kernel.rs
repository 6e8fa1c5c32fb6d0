//! CUDA kernel launch on dfdx's own device and stream.

use cudarc::driver::{LaunchAsync, LaunchConfig};
use dfdx::prelude::*;

use super::{SigmoidJob, SigmoidKernel};
use crate::device::cuda::{
    device_view, function, load_module, tensor_from_device, CudaVec, DeviceView, PtxTable, BLOCK,
};
use crate::loss::cuda_inputs::{
    probs_or_placeholder, reduce_rows, row_sums, DeviceInputs, JobInputs,
};

const PTX: PtxTable = include!(concat!(env!("OUT_DIR"), "/poly_sigmoid.ptx.rs"));
const MODULE: &str = "poly_loss_sigmoid";
const FUNCS: &[&str] = &[
    "poly_sigmoid_fwd",
    "poly_sigmoid_bwd",
    "poly_reduce_rows",
    "poly_class_targets",
];

/// Device buffers the backward reuses.
pub struct CudaSigmoidSaved {
    z: DeviceView,
    inputs: DeviceInputs,
}

impl SigmoidKernel for Cuda {
    type SigmoidSaved = CudaSigmoidSaved;

    fn sigmoid_fwd<S: Shape, T, O: Shape>(
        &self,
        logits: &Tensor<S, f32, Self, T>,
        job: &SigmoidJob<Self>,
        out: O,
    ) -> Result<(Tensor<O, f32, Self>, CudaSigmoidSaved), CudaError> {
        let z = device_view(logits)?;
        let dev = z.device();
        load_module(&dev, MODULE, PTX, FUNCS)?;
        let (b, c, p) = (job.b, job.c, &job.params);
        let mut inputs = JobInputs {
            targets: &job.targets,
            ignore: p.ignore,
            weight: p.weight.as_deref(),
            smoothing: p.smoothing,
            gamma: p.gamma,
            alpha: p.alpha,
            focal: p.focal,
            eps: &p.eps,
            scalar: job.scale.is_some(),
            device_mean: job.device_mean,
        }
        .upload(&dev, MODULE, c)?;
        let mut out_buf: CudaVec = self.try_alloc_len(out.num_elements())?;
        // Per-row losses (and denominators) of a scalar loss, summed by poly_reduce_rows.
        let mut rows = row_sums(&dev, b, c, inputs.flags)?;
        let mut placeholder = None;
        let probs = probs_or_placeholder(&dev, &job.targets, &mut placeholder)?;
        if b > 0 && c > 0 {
            let cfg = LaunchConfig {
                grid_dim: (b as u32, 1, 1),
                block_dim: ((c.div_ceil(32) * 32).clamp(32, BLOCK as usize) as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let f = function(&dev, MODULE, "poly_sigmoid_fwd");
            let args = (
                &*z,
                &inputs.tgt,
                probs,
                &inputs.weight,
                &inputs.prm,
                &mut *out_buf,
                &mut rows,
                b as i32,
                c as i32,
                inputs.flags,
            );
            // SAFETY: z and probs hold b·c floats, tgt b indices, weight c,
            // out b (or 1 with F_SCALAR), rows b with F_SCALAR (2·b with
            // F_DEV_MEAN), prm the PRM_* block.
            unsafe { f.launch(cfg, args) }?;
        }
        if let Some(scale) = job.scale {
            reduce_rows(&dev, MODULE, &rows, &mut inputs, &mut out_buf, b, scale)?;
        }
        let out = tensor_from_device(self, out, out_buf)?;
        Ok((out, CudaSigmoidSaved { z, inputs }))
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
        let dev = grad_out.device();
        let mut placeholder = None;
        let probs = probs_or_placeholder(&dev, &job.targets, &mut placeholder)?;
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(BLOCK as usize).min(65_535) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = function(&dev, MODULE, "poly_sigmoid_bwd");
        let args = (
            &*saved.z,
            &saved.inputs.tgt,
            probs,
            &saved.inputs.weight,
            &saved.inputs.prm,
            &**grad_out,
            &mut **grad_logits,
            b as i32,
            c as i32,
            saved.inputs.flags,
            &saved.inputs.scale,
        );
        // SAFETY: as in the forward; grad_logits holds b·c floats (grid-stride
        // loop); with F_SCALAR the forward's reduction has written scale.
        unsafe { f.launch(cfg, args) }?;
        Ok(())
    }
}
