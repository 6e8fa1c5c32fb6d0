//! CUDA kernel launch: one block per row on dfdx's own device and stream.

use cudarc::driver::{CudaSlice, LaunchAsync, LaunchConfig};
use dfdx::prelude::*;

use super::{SoftmaxJob, SoftmaxKernel};
use crate::device::cuda::{
    device_view, function, load_module, tensor_from_device, CudaVec, DeviceView, PtxTable, BLOCK,
};
use crate::loss::cuda_inputs::{
    probs_or_placeholder, reduce_rows, row_sums, DeviceInputs, JobInputs,
};

const PTX: PtxTable = include!(concat!(env!("OUT_DIR"), "/poly_softmax.ptx.rs"));
const MODULE: &str = "poly_loss_softmax";
const FUNCS: &[&str] = &[
    "poly_softmax_fwd",
    "poly_softmax_bwd",
    "poly_reduce_rows",
    "poly_class_targets",
];
/// Device buffers the backward reuses.
pub struct CudaSoftmaxSaved {
    z: DeviceView,
    stats: CudaSlice<f32>,
    inputs: DeviceInputs,
}

fn threads_for(c: usize) -> u32 {
    // Enough warps to cover the row once, at most BLOCK (the kernels'
    // `__launch_bounds__`); wider rows loop.
    (c.div_ceil(32) * 32).clamp(32, BLOCK as usize) as u32
}

impl SoftmaxKernel for Cuda {
    type SoftmaxSaved = CudaSoftmaxSaved;

    fn softmax_fwd<S: Shape, T, O: Shape>(
        &self,
        logits: &Tensor<S, f32, Self, T>,
        job: &SoftmaxJob<Self>,
        out: O,
    ) -> Result<(Tensor<O, f32, Self>, CudaSoftmaxSaved), CudaError> {
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
            alpha: p.focal.then_some(p.focal_weight),
            focal: p.focal,
            eps: &p.eps,
            scalar: job.scale.is_some(),
            device_mean: job.device_mean,
        }
        .upload(&dev, MODULE, c)?;
        // In f64, as the CPU kernel.
        let wsum: f64 = p
            .weight
            .as_ref()
            .map_or(c as f64, |w| w.iter().map(|&v| f64::from(v)).sum());
        // SAFETY: the forward writes all 4·b stats when it runs (b > 0 and
        // c > 0); the backward returns before reading them when it does not.
        let mut stats = unsafe { dev.alloc::<f32>(4 * b.max(1)) }?;
        let mut out_buf: CudaVec = self.try_alloc_len(out.num_elements())?;
        // Per-row losses (and denominators) of a scalar loss, summed by poly_reduce_rows.
        let mut rows = row_sums(&dev, b, c, inputs.flags)?;
        let mut placeholder = None;
        let probs = probs_or_placeholder(&dev, &job.targets, &mut placeholder)?;
        if b > 0 && c > 0 {
            let cfg = LaunchConfig {
                grid_dim: (b as u32, 1, 1),
                block_dim: (threads_for(c), 1, 1),
                shared_mem_bytes: 0,
            };
            let f = function(&dev, MODULE, "poly_softmax_fwd");
            let args = (
                &*z,
                &inputs.tgt,
                probs,
                &inputs.weight,
                &inputs.prm,
                &mut stats,
                &mut *out_buf,
                &mut rows,
                b as i32,
                c as i32,
                inputs.flags,
                wsum,
            );
            // SAFETY: buffer lengths match the kernel's indexing: z and probs
            // hold b·c floats, tgt b indices (< c, IGNORED_ROW or BAD_ROW), weight c,
            // stats 4·b, out b (or 1 with F_SCALAR), rows b with F_SCALAR
            // (2·b with F_DEV_MEAN), prm the PRM_* block.
            unsafe { f.launch(cfg, args) }?;
        }
        if let Some(scale) = job.scale {
            reduce_rows(&dev, MODULE, &rows, &mut inputs, &mut out_buf, b, scale)?;
        }
        let out = tensor_from_device(self, out, out_buf)?;
        Ok((out, CudaSoftmaxSaved { z, stats, inputs }))
    }

    fn softmax_bwd(
        &self,
        job: &SoftmaxJob<Self>,
        saved: &CudaSoftmaxSaved,
        grad_logits: &mut <Self as Storage<f32>>::Vec,
        grad_out: &<Self as Storage<f32>>::Vec,
    ) -> Result<(), CudaError> {
        let (b, c) = (job.b, job.c);
        if b == 0 || c == 0 {
            return Ok(());
        }
        let dev = grad_out.device();
        let mut placeholder = None;
        let probs = probs_or_placeholder(&dev, &job.targets, &mut placeholder)?;
        let cfg = LaunchConfig {
            grid_dim: (b as u32, 1, 1),
            block_dim: (threads_for(c), 1, 1),
            shared_mem_bytes: 0,
        };
        let f = function(&dev, MODULE, "poly_softmax_bwd");
        let args = (
            &*saved.z,
            &saved.inputs.tgt,
            probs,
            &saved.inputs.weight,
            &saved.inputs.prm,
            &saved.stats,
            &**grad_out,
            &mut **grad_logits,
            b as i32,
            c as i32,
            saved.inputs.flags,
            &saved.inputs.scale,
        );
        // SAFETY: as in the forward; grad_logits holds b·c floats, grad_out b
        // (or 1, and then the forward's reduction has written scale).
        unsafe { f.launch(cfg, args) }?;
        Ok(())
    }
}
