//! The softmax PolyLoss op (plain and focal): one fused forward pass per row,
//! a backward that recomputes `p` from the logits and per-row statistics.
//!
//! Per row, with `y` the (smoothed) target distribution, `u_k = w_k y_k` its
//! class-weighted form (PyTorch's rule), `s = Σ u_k`:
//!
//! ```text
//! CE   = s·lse - Σ u_k z_k            pt = Σ y_k p_k          f = 1 - pt
//! loss = A(pt)·CE + w_row·G(pt)       plain: A = 1,  G = Σ ε_j f^j
//!                                     focal: A = α f^γ, G = Σ ε_j f^(γ+j)
//! ∂loss/∂z_k = A (s p_k - u_k) + Bc p_k (y_k - pt),   Bc = A'·CE + w_row·G'
//! ```
//! (`'` = d/dpt). For index targets `y_k = α_s/C + (1-α_s) δ_kt`, which folds
//! the gradient into `ca·e^(z_k-m) - cb·w_k` plus one term at the target.

mod cpu_kernel;
#[cfg(feature = "cuda")]
pub(crate) mod cuda_kernel;

use dfdx::prelude::*;

use super::targets::{TargetStorage, Targets};
use super::PolyLossError;
use crate::device::grads_mut_and_ref;

/// Parameters of one softmax PolyLoss call (validated by the caller).
#[derive(Debug, Clone)]
pub struct SoftmaxParams {
    /// ε₁..ε_N.
    pub eps: Vec<f32>,
    /// Focal γ (0 for plain).
    pub gamma: f32,
    /// Weight of the focal/CE term (α, or 1).
    pub focal_weight: f32,
    /// Whether the focal form is used.
    pub focal: bool,
    /// Label smoothing.
    pub smoothing: f32,
    /// Class weights.
    pub weight: Option<Vec<f32>>,
    /// Ignore index.
    pub ignore: Option<usize>,
}

/// One call: shapes, targets, parameters, and the output form.
pub struct SoftmaxJob<D: TargetStorage> {
    /// Rows.
    pub b: usize,
    /// Classes.
    pub c: usize,
    /// Targets (checked).
    pub targets: Targets<D>,
    /// Parameters.
    pub params: SoftmaxParams,
    /// `Some(s)`: the output is the scalar `s·Σ_i loss_i`; `None`: per-row `(B,)`.
    pub scale: Option<f32>,
    /// The scalar is a mean whose denominator (the counted rows' target
    /// weights, or logits) the device sums from [`Targets::ClassBuffer`]
    /// targets the host never reads; `scale` is then unused. Never set with
    /// host targets, so never on `Cpu`.
    pub device_mean: bool,
}

/// The device kernels of the op. Implemented for `Cpu` and `Cuda`.
pub trait SoftmaxKernel: TargetStorage {
    /// What the forward keeps for the backward.
    type SoftmaxSaved: Send + Sync + 'static;
    /// Forward: the output tensor (shape `out`) and the saved state.
    #[allow(clippy::type_complexity)]
    fn softmax_fwd<S: Shape, T, O: Shape>(
        &self,
        logits: &Tensor<S, f32, Self, T>,
        job: &SoftmaxJob<Self>,
        out: O,
    ) -> Result<(Tensor<O, f32, Self>, Self::SoftmaxSaved), Self::Err>;
    /// Backward: accumulates into `grad_logits`.
    fn softmax_bwd(
        &self,
        job: &SoftmaxJob<Self>,
        saved: &Self::SoftmaxSaved,
        grad_logits: &mut <Self as Storage<f32>>::Vec,
        grad_out: &<Self as Storage<f32>>::Vec,
    ) -> Result<(), Self::Err>;
}

/// Records the op on the logits' tape.
pub(crate) fn softmax_op<B: Dim, C: Dim, O: Shape, D, T>(
    logits: Tensor<(B, C), f32, D, T>,
    job: SoftmaxJob<D>,
    out: O,
) -> Result<Tensor<O, f32, D, T>, PolyLossError>
where
    D: SoftmaxKernel,
    T: Tape<f32, D>,
{
    let logits = logits.try_contiguous().map_err(PolyLossError::device)?;
    let (logits, mut tape) = logits.split_tape();
    let dev = logits.device().clone();
    let (out, saved) = dev
        .softmax_fwd(&logits, &job, out)
        .map_err(PolyLossError::device)?;
    if T::OWNS_TAPE {
        let (lg, og) = (logits.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let (grad_logits, grad_out) = grads_mut_and_ref!(grads, [lg], og);
            dev.softmax_bwd(&job, &saved, grad_logits, grad_out)
        });
    }
    Ok(out.put_tape(tape))
}

/// `(A, A', G, G')` at `f = 1 - pt` (derivatives with respect to pt), f64.
#[inline]
pub(crate) fn poly_terms(p: &SoftmaxParams, f: f64) -> (f64, f64, f64, f64) {
    focal_poly_terms(&p.eps, p.focal, p.gamma, p.focal_weight as f64, f)
}

/// Focal factor `A = aw·f^γ` (1 when not focal), polynomial
/// `G = Σ ε_j f^(γ+j)` (γ = 0 when not focal), and their derivatives with
/// respect to `pt = 1 - f`.
#[inline]
pub(crate) fn focal_poly_terms(
    eps: &[f32],
    focal: bool,
    gamma: f32,
    aw: f64,
    f: f64,
) -> (f64, f64, f64, f64) {
    let f = f.max(0.0);
    let gamma = if focal { gamma as f64 } else { 0.0 };
    let (a, da) = if focal {
        let da = if gamma > 0.0 && f > 0.0 {
            -aw * gamma * f.powf(gamma - 1.0)
        } else {
            0.0
        };
        (aw * f.powf(gamma), da)
    } else {
        (1.0, 0.0)
    };
    let (mut g, mut dg) = (0.0f64, 0.0f64);
    // pw = f^(γ+j-1) at step j; d/df f^(γ+j) = (γ+j)·f^(γ+j-1).
    let mut pw = f.powf(gamma);
    for (j, &e) in eps.iter().enumerate() {
        let e = e as f64;
        dg -= e * (gamma + (j + 1) as f64) * pw;
        pw *= f;
        g += e * pw;
    }
    (a, da, g, dg)
}
