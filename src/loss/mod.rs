//! The PolyLoss family as fused dfdx ops.
//!
//! The paper's Poly-N loss (Leng et al., ICLR 2022) for one sample is
//! `CE + Σ_{j=1..N} ε_j (1 - pt)^j` with `pt` the predicted probability of the
//! target. The seed blog writes the series as `ε_j (1 - pt)^j / j`; this crate
//! follows the paper (see [`PolyLoss`]). N = 1 with ε₁ = 2 is the paper's
//! ImageNet default; ε₁ ≥ -1 keeps Poly-1 decreasing in pt, and
//! [`check_epsilon`] checks the same property for any N (the plain kinds
//! refuse other coefficients).
//!
//! Entry points:
//! - [`poly_loss`] / [`try_poly_loss`]: softmax Poly-N, mean over the batch,
//!   called as `poly_loss::<1, _>(logits, &labels, [2.0])` (or with N
//!   inferred); also as a method, [`PolyLossExt::poly_loss`].
//! - [`poly_focal_loss`], [`poly_sigmoid_loss`], [`poly_sigmoid_focal_loss`]:
//!   the paper's variants.
//! - [`PolyLoss`]: all options (label smoothing, class weights, ignore index,
//!   reduction), N fixed at compile time.
//! - [`DynPolyLoss`]: the same loss with N fixed at run time (`Vec<f32>`
//!   coefficients), usually built from a [`crate::PolyConfig`] with
//!   [`PolyConfig::build`](crate::PolyConfig::build); it runs the same kernels.
//!
//! Each call is one custom op on the tape: the forward makes one pass per row
//! (row max, log-sum-exp, pt, loss); the backward recomputes `p` from the
//! logits and per-row statistics and adds the gradient into the logits'
//! gradient once. Everything is computed from log-softmax, so logits of ±1e4
//! give finite values; NaN in a row makes that row's loss and gradient NaN.

#[cfg(feature = "cuda")]
mod cuda_inputs;
mod dyn_loss;
mod epsilon;
mod error;
mod poly_sigmoid;
mod poly_softmax;
mod row_blocks;
mod saved_logits;
mod simd;
mod spec;
mod targets;

use dfdx::prelude::*;

pub use dyn_loss::DynPolyLoss;
pub use epsilon::{check_epsilon, check_epsilon_box};
pub use error::PolyLossError;
pub use spec::{PolyKind, PolyLoss, Reduction};

use spec::LossRef;
pub use targets::{IntoTargets, PolyDevice, TargetStorage, Targets};

/// The instruction-set path the loss's CPU kernels use: `"avx512"`, `"avx2"`
/// or `"scalar"`, capped for every CPU kernel of the process by the
/// environment variable `POLY_LOSS_SIMD=scalar|avx2|avx512` (read once; the
/// vision kernels go up to AVX2).
pub fn cpu_simd_path() -> &'static str {
    match simd::level() {
        simd::Level::Avx512 => "avx512",
        simd::Level::Avx2 => "avx2",
        simd::Level::Scalar => "scalar",
    }
}

use poly_sigmoid::{sigmoid_op, SigmoidJob, SigmoidParams};
use poly_softmax::{softmax_op, SoftmaxJob, SoftmaxParams};

/// Logits the free loss functions accept: every `Tensor<(B, C), f32, D, T>`
/// (`Const` or `usize` dims, any [`PolyDevice`], any tape).
///
/// The free functions are generic over `<const N: usize, L: PolyLogits>` and
/// take the device and output type from here, so a turbofish that names N
/// needs only one placeholder: `poly_loss::<1, _>(logits, &labels, [2.0])`.
pub trait PolyLogits: Sized {
    /// The device the logits live on.
    type Device: PolyDevice;
    /// The reduced loss: `Tensor<Rank0, f32, D, T>` (the logits' tape).
    type Output;
    /// Runs `loss` on these logits (what the free functions call);
    /// [`PolyLoss::try_forward`] with the arguments in this order.
    fn try_poly_forward<const N: usize>(
        self,
        loss: &PolyLoss<N>,
        targets: impl IntoTargets<Self::Device>,
    ) -> Result<Self::Output, PolyLossError>;
}

impl<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>> PolyLogits for Tensor<(B, C), f32, D, T> {
    type Device = D;
    type Output = Tensor<Rank0, f32, D, T>;
    fn try_poly_forward<const N: usize>(
        self,
        loss: &PolyLoss<N>,
        targets: impl IntoTargets<D>,
    ) -> Result<Self::Output, PolyLossError> {
        loss.try_forward(self, targets)
    }
}

/// Softmax Poly-N loss, averaged over the batch: `mean_i [CE_i + Σ_j ε_j (1 - pt_i)^j]`.
///
/// `logits` is a `(B, C)` tensor (`Const` or `usize` dims, any tape; see
/// [`PolyLogits`]); `targets` are class indices (`&[usize]`, `&Vec<usize>`,
/// `Tensor<(B,), usize, D>`) or target probabilities (`Tensor<(B, C), f32, D>`).
/// Panics with [`PolyLossError`]'s message on bad input (including ε₁ < -1,
/// see [`check_epsilon`]); see [`try_poly_loss`].
///
/// Call shapes: `poly_loss::<1, _>(logits, &labels, [2.0])` (N named; the `_`
/// is the logits' type), `poly_loss(logits, &labels, [2.0])` (N inferred from
/// `epsilon`), or the method `logits.poly_loss::<1>(&labels, [2.0])`
/// ([`PolyLossExt`]).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<Rank2<2, 3>, f32, _> = dev.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]);
/// let loss = poly_loss::<1, _>(logits.leaky_trace(), &[0, 1][..], [2.0]);
/// // Poly-1 = CE + 2 (1 - pt), checked by hand.
/// let lse0 = (2.0f32.exp() + 0.5f32.exp() + (-1.0f32).exp()).ln();
/// let pt0 = (2.0 - lse0).exp();
/// let lse1 = (2.0 + 1.0f32.exp()).ln();
/// let pt1 = (1.0 - lse1).exp();
/// let want = ((lse0 - 2.0) + 2.0 * (1.0 - pt0) + (lse1 - 1.0) + 2.0 * (1.0 - pt1)) / 2.0;
/// assert!((loss.array() - want).abs() < 1e-6);
/// let grads = loss.backward();
/// assert_eq!(grads.get(&logits).shape(), &(Const::<2>, Const::<3>));
/// // The method form and the inferred N give the same value.
/// assert!((logits.clone().poly_loss::<1>(&[0, 1][..], [2.0]).array() - want).abs() < 1e-6);
/// assert!((poly_loss(logits, &[0, 1][..], [2.0]).array() - want).abs() < 1e-6);
/// ```
///
/// Poly-2, `CE + ε₁ (1 - pt) + ε₂ (1 - pt)²`:
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<(usize, usize), f32, _> =
///     dev.tensor_from_vec(vec![1.0, -1.0, 0.5, 0.0, 2.0, -0.5], (2, 3));
/// let labels = vec![2, 1];
/// let loss = poly_loss::<2, _>(logits.leaky_trace(), &labels, [2.0, -0.5]);
/// let z = logits.as_vec();
/// let mut want = 0.0f64;
/// for (i, &t) in labels.iter().enumerate() {
///     let row: Vec<f64> = z[i * 3..i * 3 + 3].iter().map(|&v| v as f64).collect();
///     let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
///     let f = 1.0 - (row[t] - lse).exp();
///     want += (lse - row[t] + 2.0 * f - 0.5 * f * f) / 2.0;
/// }
/// assert!((loss.array() as f64 - want).abs() < 1e-6);
/// // A Poly-2 that would rise with pt is refused: ε₁ = -1 needs ε₂ ≥ -1/2.
/// assert!(try_poly_loss::<2, _>(logits, &labels, [-1.0, -0.6]).is_err());
/// ```
pub fn poly_loss<const N: usize, L: PolyLogits>(
    logits: L,
    targets: impl IntoTargets<L::Device>,
    epsilon: [f32; N],
) -> L::Output {
    try_poly_loss(logits, targets, epsilon).unwrap_or_else(|e| panic!("{e}"))
}

/// Fallible [`poly_loss`]: `try_poly_loss::<1, _>(logits, &labels, [2.0])?`.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<Rank2<1, 3>, f32, _> = dev.zeros();
/// let e = try_poly_loss::<1, _>(logits, &[0][..], [-1.0001]).unwrap_err();
/// assert_eq!(e, PolyLossError::EpsilonBelowMinusOne { value: -1.0001f32 as f64 });
/// ```
pub fn try_poly_loss<const N: usize, L: PolyLogits>(
    logits: L,
    targets: impl IntoTargets<L::Device>,
    epsilon: [f32; N],
) -> Result<L::Output, PolyLossError> {
    logits.try_poly_forward(&PolyLoss::new(epsilon), targets)
}

/// Softmax Poly-N focal loss, mean over the batch:
/// `α (1 - pt)^γ CE + Σ_j ε_j (1 - pt)^(γ + j)` (α = 1 when `None`).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<Rank2<1, 2>, f32, _> = dev.tensor([[0.0, 0.0]]);
/// // pt = 1/2: 0.25 · 0.5² · ln 2 + 1 · 0.5³.
/// let loss = poly_focal_loss::<1, _>(logits.leaky_trace(), &[0][..], [1.0], 2.0, Some(0.25));
/// let want = 0.25 * 0.25 * 2f32.ln() + 0.125;
/// assert!((loss.array() - want).abs() < 1e-6);
/// ```
pub fn poly_focal_loss<const N: usize, L: PolyLogits>(
    logits: L,
    targets: impl IntoTargets<L::Device>,
    epsilon: [f32; N],
    gamma: f32,
    alpha: Option<f32>,
) -> L::Output {
    try_poly_focal_loss(logits, targets, epsilon, gamma, alpha).unwrap_or_else(|e| panic!("{e}"))
}

/// Fallible [`poly_focal_loss`].
pub fn try_poly_focal_loss<const N: usize, L: PolyLogits>(
    logits: L,
    targets: impl IntoTargets<L::Device>,
    epsilon: [f32; N],
    gamma: f32,
    alpha: Option<f32>,
) -> Result<L::Output, PolyLossError> {
    logits.try_poly_forward(&PolyLoss::focal(epsilon, gamma, alpha), targets)
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
/// let logits: Tensor<Rank2<1, 2>, f32, _> = dev.tensor([[0.0, 0.0]]);
/// let labels: Tensor<Rank2<1, 2>, f32, _> = dev.tensor([[1.0, 0.0]]);
/// // Each logit: pt = 1/2, BCE = ln 2, plus 1 · (1 - 1/2).
/// let loss = poly_sigmoid_loss::<1, _>(logits.leaky_trace(), labels, [1.0]);
/// assert!((loss.array() - (2f32.ln() + 0.5)).abs() < 1e-6);
/// ```
pub fn poly_sigmoid_loss<const N: usize, L: PolyLogits>(
    logits: L,
    targets: impl IntoTargets<L::Device>,
    epsilon: [f32; N],
) -> L::Output {
    try_poly_sigmoid_loss(logits, targets, epsilon).unwrap_or_else(|e| panic!("{e}"))
}

/// Fallible [`poly_sigmoid_loss`].
pub fn try_poly_sigmoid_loss<const N: usize, L: PolyLogits>(
    logits: L,
    targets: impl IntoTargets<L::Device>,
    epsilon: [f32; N],
) -> Result<L::Output, PolyLossError> {
    logits.try_poly_forward(&PolyLoss::sigmoid(epsilon), targets)
}

/// Sigmoid Poly-N focal loss (the paper's detection loss), mean over all
/// logits of `α_t (1 - pt)^γ BCE + Σ_j ε_j (1 - pt)^(γ + j)`.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<Rank2<1, 1>, f32, _> = dev.tensor([[0.0]]);
/// // One positive logit at pt = 1/2: α_t = 0.25.
/// let loss = poly_sigmoid_focal_loss::<1, _>(logits, &[0][..], [-1.0], 2.0, Some(0.25));
/// let want = 0.25 * 0.25 * 2f32.ln() - 0.125;
/// assert!((loss.array() - want).abs() < 1e-6);
/// ```
pub fn poly_sigmoid_focal_loss<const N: usize, L: PolyLogits>(
    logits: L,
    targets: impl IntoTargets<L::Device>,
    epsilon: [f32; N],
    gamma: f32,
    alpha: Option<f32>,
) -> L::Output {
    try_poly_sigmoid_focal_loss(logits, targets, epsilon, gamma, alpha)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Fallible [`poly_sigmoid_focal_loss`].
pub fn try_poly_sigmoid_focal_loss<const N: usize, L: PolyLogits>(
    logits: L,
    targets: impl IntoTargets<L::Device>,
    epsilon: [f32; N],
    gamma: f32,
    alpha: Option<f32>,
) -> Result<L::Output, PolyLossError> {
    logits.try_poly_forward(&PolyLoss::sigmoid_focal(epsilon, gamma, alpha), targets)
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
        self.loss_ref().try_forward(logits, targets)
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
        self.loss_ref().try_forward_per_sample(logits, targets)
    }
}

/// The one implementation behind [`PolyLoss`] and [`DynPolyLoss`]: checks,
/// the mean's denominator and the kernel launch.
impl LossRef<'_> {
    /// See [`PolyLoss::try_forward`].
    fn try_forward<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError> {
        if self.reduction == Reduction::None {
            return Err(PolyLossError::ReductionNone);
        }
        self.run(logits, targets, (), false)
    }

    /// See [`PolyLoss::try_forward_per_sample`].
    fn try_forward_per_sample<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
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
        let sigmoid = self.kind.is_sigmoid();
        let mean = !per_sample && self.reduction != Reduction::Sum;
        // Class targets in a device buffer stay there (no copy, no sync). A
        // mean whose denominator needs their values (an ignore index: the
        // counted rows; softmax class weights: Σ w[t]) has the device sum it
        // beside the losses; over no counted rows it is 0/0 = NaN there (as
        // PyTorch's), where host targets give `AllIgnored`.
        let device_mean = matches!(targets, Targets::ClassBuffer(_))
            && mean
            && (self.ignore_index.is_some() || (!sigmoid && self.weight.is_some()));
        if let Some(w) = self.weight {
            if w.len() != c {
                return Err(PolyLossError::ShapeMismatch {
                    what: "class weights",
                    got: vec![w.len()],
                    expected: vec![c],
                    logits: vec![b, c],
                });
            }
        }
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
                    wsum += self.weight.map_or(1.0, |w| w[value] as f64);
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
            // Every row counts with weight 1 (or the device sums the
            // denominator: `device_mean`); an out-of-range index makes the
            // loss NaN on the device.
            Targets::Probs(_) | Targets::ClassBuffer(_) => {
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
                    weight: self.weight.map(<[f32]>::to_vec),
                    ignore: self.ignore_index,
                },
                scale,
                device_mean,
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
                    weight: self.weight.map(<[f32]>::to_vec),
                    ignore: self.ignore_index,
                },
                scale,
                device_mean,
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
        DynPolyLoss, IntoTargets, PolyDevice, PolyKind, PolyLogits, PolyLoss, PolyLossError,
        PolyLossExt, Reduction,
    };
    pub use crate::config::{load_poly_loss, PolyConfig};
}
