//! The sigmoid (multi-label) PolyLoss op, plain and focal. Each logit is its
//! own binary problem:
//!
//! ```text
//! y' = (1-α_s) y + α_s/2        σ = σ(z)        pt = y'σ + (1-y')(1-σ)     f = 1 - pt
//! BCE = max(z,0) - z y' + ln(1 + e^-|z|)
//! l   = w_k [A·BCE + G],   plain: A = 1, G = Σ ε_j f^j
//!                          focal: A = α_t f^γ, G = Σ ε_j f^(γ+j), α_t = α y' + (1-α)(1-y')
//! ∂l/∂z = w_k [A (σ - y') + (A'·BCE + G') (2y'-1) σ (1-σ)]
//! ```
//! The backward recomputes everything from the logits and targets: no
//! per-element state is kept.

mod cpu_kernel;
#[cfg(feature = "cuda")]
mod cuda_kernel;

use dfdx::prelude::*;

use super::poly_softmax::focal_poly_terms;
use super::targets::{TargetStorage, Targets};
use super::PolyLossError;
use crate::device::grads_mut_and_ref;

/// Parameters of one sigmoid PolyLoss call (validated by the caller).
#[derive(Debug, Clone)]
pub struct SigmoidParams {
    /// ε₁..ε_N.
    pub eps: Vec<f32>,
    /// Focal γ (0 for plain).
    pub gamma: f32,
    /// Focal α (positives α, negatives 1 - α); `None`: no balancing.
    pub alpha: Option<f32>,
    /// Whether the focal form is used.
    pub focal: bool,
    /// Label smoothing (towards 1/2).
    pub smoothing: f32,
    /// Class weights.
    pub weight: Option<Vec<f32>>,
    /// Ignore index (index targets: the whole row).
    pub ignore: Option<usize>,
}

/// One call: shapes, targets, parameters, and the output form.
pub struct SigmoidJob<D: TargetStorage> {
    /// Rows.
    pub b: usize,
    /// Classes.
    pub c: usize,
    /// Targets (checked); class indices mean one-hot rows.
    pub targets: Targets<D>,
    /// Parameters.
    pub params: SigmoidParams,
    /// `Some(s)`: the output is `s·Σ_i loss_i`; `None`: per-row sums `(B,)`.
    pub scale: Option<f32>,
    /// The scalar is a mean whose denominator (the counted rows' target
    /// weights, or logits) the device sums from [`Targets::ClassBuffer`]
    /// targets the host never reads; `scale` is then unused. Never set with
    /// host targets, so never on `Cpu`.
    pub device_mean: bool,
}

/// The device kernels of the op. Implemented for `Cpu` and `Cuda`.
pub trait SigmoidKernel: TargetStorage {
    /// What the forward keeps for the backward.
    type SigmoidSaved: Send + Sync + 'static;
    /// Forward: the output tensor (shape `out`) and the saved state.
    #[allow(clippy::type_complexity)]
    fn sigmoid_fwd<S: Shape, T, O: Shape>(
        &self,
        logits: &Tensor<S, f32, Self, T>,
        job: &SigmoidJob<Self>,
        out: O,
    ) -> Result<(Tensor<O, f32, Self>, Self::SigmoidSaved), Self::Err>;
    /// Backward: accumulates into `grad_logits`.
    fn sigmoid_bwd(
        &self,
        job: &SigmoidJob<Self>,
        saved: &Self::SigmoidSaved,
        grad_logits: &mut <Self as Storage<f32>>::Vec,
        grad_out: &<Self as Storage<f32>>::Vec,
    ) -> Result<(), Self::Err>;
}

/// Records the op on the logits' tape.
pub(crate) fn sigmoid_op<B: Dim, C: Dim, O: Shape, D, T>(
    logits: Tensor<(B, C), f32, D, T>,
    job: SigmoidJob<D>,
    out: O,
) -> Result<Tensor<O, f32, D, T>, PolyLossError>
where
    D: SigmoidKernel,
    T: Tape<f32, D>,
{
    let logits = logits.try_contiguous().map_err(PolyLossError::device)?;
    let (logits, mut tape) = logits.split_tape();
    let dev = logits.device().clone();
    let (out, saved) = dev
        .sigmoid_fwd(&logits, &job, out)
        .map_err(PolyLossError::device)?;
    if T::OWNS_TAPE {
        let (lg, og) = (logits.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let (grad_logits, grad_out) = grads_mut_and_ref!(grads, [lg], og);
            dev.sigmoid_bwd(&job, &saved, grad_logits, grad_out)
        });
    }
    Ok(out.put_tape(tape))
}

/// Loss and ∂loss/∂z of one logit `z` with (unsmoothed) target `y` and class
/// weight `w`, in f64.
#[inline]
pub(crate) fn sigmoid_elem(p: &SigmoidParams, z: f64, y: f64, w: f64) -> (f64, f64) {
    let al = p.smoothing as f64;
    let y = (1.0 - al) * y + 0.5 * al;
    let e = (-z.abs()).exp();
    let bce = z.max(0.0) - z * y + e.ln_1p();
    let (sig, one_minus_sig) = if z >= 0.0 {
        (1.0 / (1.0 + e), e / (1.0 + e))
    } else {
        (e / (1.0 + e), 1.0 / (1.0 + e))
    };
    let f = y * one_minus_sig + (1.0 - y) * sig;
    let aw = match p.alpha {
        Some(a) if p.focal => a as f64 * y + (1.0 - a as f64) * (1.0 - y),
        _ => 1.0,
    };
    let (a, da, g, dg) = focal_poly_terms(&p.eps, p.focal, p.gamma, aw, f);
    let loss = w * (a * bce + g);
    let dpt = (2.0 * y - 1.0) * sig * one_minus_sig;
    let grad = w * (a * (sig - y) + (da * bce + dg) * dpt);
    (loss, grad)
}
