//! CPU kernel: blocks of rows in parallel when it pays (`row_blocks`); per logit in f64 (this kind
//! calls exp, ln_1p and powf per element and is not on a benchmarked path).

use dfdx::prelude::*;

use super::{sigmoid_elem, SigmoidJob, SigmoidKernel};
use crate::loss::row_blocks::for_row_blocks;
use crate::loss::saved_logits::SavedLogits;
use crate::loss::targets::Targets;

/// The logits (a handle, not a copy), reused by the backward.
pub struct CpuSigmoidSaved {
    z: SavedLogits,
}

/// Target of element (i, k), or `None` for an ignored row.
#[inline]
fn target<
    D: crate::loss::targets::TargetStorage<Probs = Vec<f32>, Classes = std::convert::Infallible>,
>(
    job: &SigmoidJob<D>,
    i: usize,
    k: usize,
) -> Option<f64> {
    match &job.targets {
        Targets::Classes(t) if Some(t[i]) == job.params.ignore => None,
        Targets::Classes(t) => Some(if t[i] == k { 1.0 } else { 0.0 }),
        Targets::Probs(y) => Some(y[i * job.c + k] as f64),
        Targets::ClassBuffer(never) => match *never {},
    }
}

impl SigmoidKernel for Cpu {
    type SigmoidSaved = CpuSigmoidSaved;

    fn sigmoid_fwd<S: Shape, T, O: Shape>(
        &self,
        logits: &Tensor<S, f32, Self, T>,
        job: &SigmoidJob<Self>,
        out: O,
    ) -> Result<(Tensor<O, f32, Self>, CpuSigmoidSaved), CpuError> {
        let (b, c, p) = (job.b, job.c, &job.params);
        let saved_z = SavedLogits::new(logits);
        let z = saved_z.slice();
        let mut losses = vec![0.0f64; b];
        for_row_blocks(&mut losses, 1, b, c, |first, blk| {
            for (j, l) in blk.iter_mut().enumerate() {
                let i = first + j;
                let mut acc = 0.0;
                for k in 0..c {
                    let Some(y) = target(job, i, k) else { break };
                    let w = p.weight.as_ref().map_or(1.0, |w| w[k] as f64);
                    acc += sigmoid_elem(p, z[i * c + k] as f64, y, w).0;
                }
                *l = acc;
            }
        });
        let data = match job.scale {
            Some(s) => vec![(losses.iter().sum::<f64>() * s as f64) as f32],
            None => losses.iter().map(|&v| v as f32).collect(),
        };
        let out = self.try_tensor_from_vec(data, out)?;
        Ok((out, CpuSigmoidSaved { z: saved_z }))
    }

    fn sigmoid_bwd(
        &self,
        job: &SigmoidJob<Self>,
        saved: &CpuSigmoidSaved,
        grad_logits: &mut <Self as Storage<f32>>::Vec,
        grad_out: &<Self as Storage<f32>>::Vec,
    ) -> Result<(), CpuError> {
        let (b, c, p) = (job.b, job.c, &job.params);
        if c == 0 {
            return Ok(());
        }
        let z = saved.z.slice();
        for_row_blocks(grad_logits, c, b, c, |first, blk| {
            for (j, g) in blk.chunks_mut(c).enumerate() {
                let i = first + j;
                let go = match job.scale {
                    Some(s) => grad_out[0] as f64 * s as f64,
                    None => grad_out[i] as f64,
                };
                for (k, gk) in g.iter_mut().enumerate() {
                    let Some(y) = target(job, i, k) else { break };
                    let w = p.weight.as_ref().map_or(1.0, |w| w[k] as f64);
                    let d = sigmoid_elem(p, z[i * c + k] as f64, y, w).1;
                    *gk += (go * d) as f32;
                }
            }
        });
        Ok(())
    }
}
