//! The PolyLoss family as fused dfdx ops.
//!
//! The paper's Poly-N loss (Leng et al., ICLR 2022) for one sample is
//! `CE + Σ_{j=1..N} ε_j (1 - pt)^j` with `pt` the predicted probability of the
//! target. The seed blog writes the series as `ε_j (1 - pt)^j / j`; this crate
//! follows the paper (see [`PolyLoss`]). N = 1 with ε₁ = 2 is the paper's
//! ImageNet default; ε₁ ≥ -1 keeps Poly-1 decreasing in pt.
//!
//! Entry points:
//! - [`poly_loss`] / [`try_poly_loss`]: softmax Poly-N, mean over the batch;
//!   also as a method, [`PolyLossExt::poly_loss`].
//! - [`poly_focal_loss`], [`poly_sigmoid_loss`], [`poly_sigmoid_focal_loss`]:
//!   the paper's variants.
//! - [`PolyLoss`]: all options (label smoothing, class weights, ignore index,
//!   reduction), usually built from a [`crate::PolyConfig`].
//!
//! Each call is one custom op on the tape: the forward makes one pass per row
//! (row max, log-sum-exp, pt, loss); the backward recomputes `p` from the
//! logits and per-row statistics and adds the gradient into the logits'
//! gradient once. Everything is computed from log-softmax, so logits of ±1e4
//! give finite values; NaN in a row makes that row's loss and gradient NaN.

#[cfg(feature = "cuda")]
mod cuda_inputs;
mod error;
mod poly_sigmoid;
mod poly_softmax;
mod simd;
mod spec;
mod targets;

use dfdx::prelude::*;

pub use error::PolyLossError;
pub use spec::{PolyKind, PolyLoss, Reduction};
pub use targets::{IntoTargets, PolyDevice, TargetStorage, Targets};

/// The instruction-set path the CPU kernels use: `"avx512"`, `"avx2"` or
/// `"scalar"` (capped by the environment variable `POLY_LOSS_SIMD=scalar|avx2`,
/// read once per process).
pub fn cpu_simd_path() -> &'static str {
    match simd::level() {
        simd::Level::Avx512 => "avx512",
        simd::Level::Avx2 => "avx2",
        simd::Level::Scalar => "scalar",
    }
}

use poly_sigmoid::{sigmoid_op, SigmoidJob, SigmoidParams};
use poly_softmax::{softmax_op, SoftmaxJob, SoftmaxParams};

/// Softmax Poly-N loss, averaged over the batch: `mean_i [CE_i + Σ_j ε_j (1 - pt_i)^j]`.
///
/// `logits` is a `(B, C)` tensor (`Const` or `usize` dims, any tape);
/// `targets` are class indices (`&[usize]`, `&Vec<usize>`, `Tensor<(B,), usize, D>`)
/// or target probabilities (`Tensor<(B, C), f32, D>`). N is inferred from
/// `epsilon`. Panics with [`PolyLossError`]'s message on bad input; see
/// [`try_poly_loss`].
///
/// Call shapes: `poly_loss(logits, &labels, [2.0])` (N inferred),
/// `poly_loss::<1, _, _, _, _>(..)`, or the method
/// `logits.poly_loss::<1>(&labels, [2.0])` ([`PolyLossExt`]). A turbofish that
/// names only N, `poly_loss::<1>(..)`, is rejected by rustc (E0107): a free
/// function generic over the logits' dims, device and tape must be given all
/// its generic arguments or none, and stable Rust has no default type
/// parameters on functions.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<Rank2<2, 3>, f32, _> = dev.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]);
/// let loss = poly_loss(logits.leaky_trace(), &[0, 1][..], [2.0]);
/// // Poly-1 = CE + 2 (1 - pt), checked by hand for row 0.
/// let lse0 = (2.0f32.exp() + 0.5f32.exp() + (-1.0f32).exp()).ln();
/// let pt0 = (2.0 - lse0).exp();
/// let lse1 = (2.0 + 1.0f32.exp()).ln();
/// let pt1 = (1.0 - lse1).exp();
/// let want = ((lse0 - 2.0) + 2.0 * (1.0 - pt0) + (lse1 - 1.0) + 2.0 * (1.0 - pt1)) / 2.0;
/// assert!((loss.array() - want).abs() < 1e-6);
/// let grads = loss.backward();
/// assert_eq!(grads.get(&logits).shape(), &(Const::<2>, Const::<3>));
/// ```
pub fn poly_loss<const N: usize, B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
    logits: Tensor<(B, C), f32, D, T>,
    targets: impl IntoTargets<D>,
    epsilon: [f32; N],
) -> Tensor<Rank0, f32, D, T> {
    try_poly_loss(logits, targets, epsilon).unwrap_or_else(|e| panic!("{e}"))
}

/// Fallible [`poly_loss`].
pub fn try_poly_loss<const N: usize, B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
    logits: Tensor<(B, C), f32, D, T>,
    targets: impl IntoTargets<D>,
    epsilon: [f32; N],
) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError> {
    PolyLoss::new(epsilon).try_forward(logits, targets)
}

/// Softmax Poly-N focal loss, mean over the batch:
/// `α (1 - pt)^γ CE + Σ_j ε_j (1 - pt)^(γ + j)` (α = 1 when `None`).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<Rank2<3, 4>, f32, _> = dev.sample_normal();
/// let loss = poly_focal_loss(logits.leaky_trace(), &[0, 3, 1][..], [1.0], 2.0, Some(0.25));
/// assert!(loss.array().is_finite());
/// ```
pub fn poly_focal_loss<const N: usize, B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
    logits: Tensor<(B, C), f32, D, T>,
    targets: impl IntoTargets<D>,
    epsilon: [f32; N],
    gamma: f32,
    alpha: Option<f32>,
) -> Tensor<Rank0, f32, D, T> {
    try_poly_focal_loss(logits, targets, epsilon, gamma, alpha).unwrap_or_else(|e| panic!("{e}"))
}

/// Fallible [`poly_focal_loss`].
pub fn try_poly_focal_loss<const N: usize, B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
    logits: Tensor<(B, C), f32, D, T>,
    targets: impl IntoTargets<D>,
    epsilon: [f32; N],
    gamma: f32,
    alpha: Option<f32>,
) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError> {
    PolyLoss::focal(epsilon, gamma, alpha).try_forward(logits, targets)
}

/// Sigmoid (multi-label) Poly-N loss, the mean over all logits of
/// `BCE + Σ_j ε_j (1 - pt)^j`. Targets: probabilities `(B, C)` (multi-hot
/// labels) or class indices (one-hot rows).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<Rank2<2, 3>, f32, _> = dev.sample_normal();
/// let labels: Tensor<Rank2<2, 3>, f32, _> = dev.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]);
/// let loss = poly_sigmoid_loss(logits.leaky_trace(), labels, [1.0]);
/// assert!(loss.array() > 0.0);
/// ```
pub fn poly_sigmoid_loss<const N: usize, B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
    logits: Tensor<(B, C), f32, D, T>,
    targets: impl IntoTargets<D>,
    epsilon: [f32; N],
) -> Tensor<Rank0, f32, D, T> {
    try_poly_sigmoid_loss(logits, targets, epsilon).unwrap_or_else(|e| panic!("{e}"))
}

/// Fallible [`poly_sigmoid_loss`].
pub fn try_poly_sigmoid_loss<const N: usize, B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
    logits: Tensor<(B, C), f32, D, T>,
    targets: impl IntoTargets<D>,
    epsilon: [f32; N],
) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError> {
    PolyLoss::sigmoid(epsilon).try_forward(logits, targets)
}

/// Sigmoid Poly-N focal loss (the paper's detection loss), mean over all
/// logits of `α_t (1 - pt)^γ BCE + Σ_j ε_j (1 - pt)^(γ + j)`.
pub fn poly_sigmoid_focal_loss<const N: usize, B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
    logits: Tensor<(B, C), f32, D, T>,
    targets: impl IntoTargets<D>,
    epsilon: [f32; N],
    gamma: f32,
    alpha: Option<f32>,
) -> Tensor<Rank0, f32, D, T> {
    try_poly_sigmoid_focal_loss(logits, targets, epsilon, gamma, alpha)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Fallible [`poly_sigmoid_focal_loss`].
pub fn try_poly_sigmoid_focal_loss<
    const N: usize,
    B: Dim,
    C: Dim,
    D: PolyDevice,
    T: Tape<f32, D>,
>(
    logits: Tensor<(B, C), f32, D, T>,
    targets: impl IntoTargets<D>,
    epsilon: [f32; N],
    gamma: f32,
    alpha: Option<f32>,
) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError> {
    PolyLoss::sigmoid_focal(epsilon, gamma, alpha).try_forward(logits, targets)
}

/// The loss as a method on logits, where the turbofish names only N:
/// `logits.poly_loss::<1>(&labels, [2.0])`.
pub trait PolyLossExt<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>: Sized {
    /// [`poly_loss`] as a method.
    fn poly_loss<const N: usize>(
        self,
        targets: impl IntoTargets<D>,
        epsilon: [f32; N],
    ) -> Tensor<Rank0, f32, D, T>;
    /// [`try_poly_loss`] as a method.
    fn try_poly_loss<const N: usize>(
        self,
        targets: impl IntoTargets<D>,
        epsilon: [f32; N],
    ) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError>;
}

impl<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>> PolyLossExt<B, C, D, T>
    for Tensor<(B, C), f32, D, T>
{
    fn poly_loss<const N: usize>(
        self,
        targets: impl IntoTargets<D>,
        epsilon: [f32; N],
    ) -> Tensor<Rank0, f32, D, T> {
        poly_loss(self, targets, epsilon)
    }
    fn try_poly_loss<const N: usize>(
        self,
        targets: impl IntoTargets<D>,
        epsilon: [f32; N],
    ) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError> {
        try_poly_loss(self, targets, epsilon)
    }
}

impl<const N: usize> PolyLoss<N> {
    /// The reduced loss (mean or sum, per [`Reduction`]); panics on bad input.
    pub fn forward<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Tensor<Rank0, f32, D, T> {
        self.try_forward(logits, targets)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fallible [`PolyLoss::forward`]; `Reduction::None` is an error here.
    pub fn try_forward<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError> {
        if self.reduction == Reduction::None {
            return Err(PolyLossError::ReductionNone);
        }
        self.run(logits, targets, (), false)
    }

    /// The per-sample losses `(B,)` (weighted by the target class's weight,
    /// zero for ignored rows; sigmoid kinds: summed over the classes) —
    /// reduction "none"; panics on bad input.
    pub fn forward_per_sample<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Tensor<(B,), f32, D, T> {
        self.try_forward_per_sample(logits, targets)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fallible [`PolyLoss::forward_per_sample`].
    pub fn try_forward_per_sample<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Result<Tensor<(B,), f32, D, T>, PolyLossError> {
        let b = logits.shape().0;
        self.run(logits, targets, (b,), true)
    }

    fn run<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>, O: Shape>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
        out: O,
        per_sample: bool,
    ) -> Result<Tensor<O, f32, D, T>, PolyLossError> {
        self.validate()?;
        let (b, c) = (logits.shape().0.size(), logits.shape().1.size());
        let targets = targets.into_targets(b, c)?;
        if let Some(w) = &self.weight {
            if w.len() != c {
                return Err(PolyLossError::ShapeMismatch {
                    what: "class weights",
                    got: vec![w.len()],
                    expected: vec![c],
                    logits: vec![b, c],
                });
            }
        }
        let sigmoid = self.kind.is_sigmoid();
        // The mean's denominator: PyTorch's Σ of the counted rows' target weights.
        let denom = match &targets {
            Targets::Classes(t) => {
                let mut counted = 0usize;
                let mut wsum = 0.0f64;
                for (row, &value) in t.iter().enumerate() {
                    if Some(value) == self.ignore_index {
                        continue;
                    }
                    if value >= c {
                        return Err(PolyLossError::TargetOutOfRange {
                            row,
                            value,
                            classes: c,
                        });
                    }
                    counted += 1;
                    wsum += self.weight.as_ref().map_or(1.0, |w| w[value] as f64);
                }
                if counted == 0 && self.reduction == Reduction::Mean && !per_sample {
                    if let Some(ignore_index) = self.ignore_index {
                        return Err(PolyLossError::AllIgnored {
                            ignore_index,
                            rows: b,
                        });
                    }
                }
                if sigmoid {
                    (counted * c) as f64
                } else {
                    wsum
                }
            }
            Targets::Probs(_) => {
                if sigmoid {
                    (b * c) as f64
                } else {
                    b as f64
                }
            }
        };
        let scale = match (per_sample, self.reduction) {
            (true, _) => None,
            (false, Reduction::Sum) => Some(1.0),
            (false, _) => Some((1.0 / denom) as f32),
        };
        let (gamma, alpha) = self.kind.focal();
        let focal = matches!(
            self.kind,
            PolyKind::SoftmaxFocal { .. } | PolyKind::SigmoidFocal { .. }
        );
        if sigmoid {
            let job = SigmoidJob {
                b,
                c,
                targets,
                params: SigmoidParams {
                    eps: self.epsilon.to_vec(),
                    gamma,
                    alpha,
                    focal,
                    smoothing: self.label_smoothing,
                    weight: self.weight.clone(),
                    ignore: self.ignore_index,
                },
                scale,
            };
            sigmoid_op(logits, job, out)
        } else {
            let job = SoftmaxJob {
                b,
                c,
                targets,
                params: SoftmaxParams {
                    eps: self.epsilon.to_vec(),
                    gamma,
                    focal_weight: alpha.unwrap_or(1.0),
                    focal,
                    smoothing: self.label_smoothing,
                    weight: self.weight.clone(),
                    ignore: self.ignore_index,
                },
                scale,
            };
            softmax_op(logits, job, out)
        }
    }
}

/// What user code needs: `use poly_loss::prelude::*;`.
pub mod prelude {
    pub use super::{
        poly_focal_loss, poly_loss, poly_sigmoid_focal_loss, poly_sigmoid_loss,
        try_poly_focal_loss, try_poly_loss, try_poly_sigmoid_focal_loss, try_poly_sigmoid_loss,
        IntoTargets, PolyDevice, PolyKind, PolyLoss, PolyLossError, PolyLossExt, Reduction,
    };
    pub use crate::config::{load_poly_loss, PolyConfig};
}
