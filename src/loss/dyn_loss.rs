//! [`DynPolyLoss`]: the PolyLoss whose term count N is known only at run time.
//!
//! The loss is the same `CE + Σ_{j=1..N} ε_j (1 - pt)^j` family as
//! [`PolyLoss<N>`](super::PolyLoss) (see [`PolyKind`] for the four kinds);
//! only ε lives in a `Vec<f32>` instead of an `[f32; N]`. Both hand a borrowed
//! view of their parameters to one set of checks and one kernel launch, so a
//! `DynPolyLoss` and a `PolyLoss<N>` with the same fields give bit-identical
//! values and gradients.

use dfdx::prelude::*;

use super::spec::LossRef;
use super::{IntoTargets, PolyDevice, PolyKind, PolyLoss, PolyLossError, Reduction};

/// PolyLoss with N = `epsilon.len()` chosen at run time: what a program
/// that reads its coefficients from a file or a search uses
/// ([`PolyConfig::build`](crate::PolyConfig::build) makes one).
///
/// Fields, options and methods mirror [`PolyLoss<N>`](super::PolyLoss),
/// which stays the typed API; the two convert into each other with
/// [`From`] and [`TryFrom`]. An empty `epsilon` is refused
/// ([`PolyLossError::EmptyEpsilon`]); the plain kinds refuse coefficients
/// that make the loss rise in pt ([`check_epsilon`](super::check_epsilon)).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<(usize, usize), f32, _> =
///     dev.tensor_from_vec(vec![1.0, -1.0, 0.5, 0.0, 2.0, -0.5], (2, 3));
/// // N comes from the data, e.g. a tuned file or a command line.
/// let epsilon: Vec<f32> = "2.0,-0.5".split(',').map(|v| v.parse().unwrap()).collect();
/// let loss = DynPolyLoss::new(epsilon).with_label_smoothing(0.1);
/// let typed = PolyLoss::new([2.0, -0.5]).with_label_smoothing(0.1);
/// let a = loss.forward(logits.leaky_trace(), &[2, 1][..]);
/// let b = typed.forward(logits.leaky_trace(), &[2, 1][..]);
/// assert_eq!(a.array(), b.array()); // the same kernels, bit for bit
/// let grads = a.backward();
/// assert_eq!(grads.get(&logits).shape(), &(2, 3));
/// // No coefficients at all is an error, not plain cross-entropy.
/// let e = DynPolyLoss::new(vec![]).try_forward(logits, &[2, 1][..]).unwrap_err();
/// assert_eq!(e, PolyLossError::EmptyEpsilon);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DynPolyLoss {
    /// ε₁..ε_N (N ≥ 1).
    pub epsilon: Vec<f32>,
    /// Softmax or sigmoid, plain or focal.
    pub kind: PolyKind,
    /// Label smoothing α in [0, 1]: softmax targets become `(1 - α) y + α / C`,
    /// sigmoid targets `(1 - α) y + α / 2`.
    pub label_smoothing: f32,
    /// Per-class weights (length C), as PyTorch's `weight`.
    pub weight: Option<Vec<f32>>,
    /// Rows whose class index equals this contribute nothing (index targets only).
    pub ignore_index: Option<usize>,
    /// Mean, sum or none.
    pub reduction: Reduction,
}

impl DynPolyLoss {
    /// Poly-N on softmax cross-entropy with mean reduction and no options;
    /// N = `epsilon.len()` (a `Vec`, slice or array).
    pub fn new(epsilon: impl Into<Vec<f32>>) -> Self {
        Self {
            epsilon: epsilon.into(),
            kind: PolyKind::Softmax,
            label_smoothing: 0.0,
            weight: None,
            ignore_index: None,
            reduction: Reduction::Mean,
        }
    }

    /// Poly-N focal loss on softmax (γ, optional α).
    pub fn focal(epsilon: impl Into<Vec<f32>>, gamma: f32, alpha: Option<f32>) -> Self {
        Self::new(epsilon).with_kind(PolyKind::SoftmaxFocal { gamma, alpha })
    }

    /// Poly-N on per-logit sigmoid BCE (multi-label).
    pub fn sigmoid(epsilon: impl Into<Vec<f32>>) -> Self {
        Self::new(epsilon).with_kind(PolyKind::Sigmoid)
    }

    /// Poly-N on per-logit sigmoid focal loss (γ, optional α).
    pub fn sigmoid_focal(epsilon: impl Into<Vec<f32>>, gamma: f32, alpha: Option<f32>) -> Self {
        Self::new(epsilon).with_kind(PolyKind::SigmoidFocal { gamma, alpha })
    }

    /// Sets the kind.
    pub fn with_kind(mut self, kind: PolyKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets label smoothing α.
    pub fn with_label_smoothing(mut self, alpha: f32) -> Self {
        self.label_smoothing = alpha;
        self
    }

    /// Sets per-class weights (length C).
    pub fn with_weight(mut self, weight: Vec<f32>) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Sets the ignore index.
    pub fn with_ignore_index(mut self, index: usize) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// Sets the reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// N, the number of coefficients.
    pub fn terms(&self) -> usize {
        self.epsilon.len()
    }

    /// The checks of [`PolyLoss::validate`], with an empty `epsilon` refused
    /// as [`PolyLossError::EmptyEpsilon`].
    pub fn validate(&self) -> Result<(), PolyLossError> {
        self.loss_ref().validate()
    }

    /// The reduced loss (mean or sum, per [`Reduction`]); panics on bad input.
    pub fn forward<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Tensor<Rank0, f32, D, T> {
        self.try_forward(logits, targets)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fallible [`DynPolyLoss::forward`]; `Reduction::None` is an error here.
    pub fn try_forward<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Result<Tensor<Rank0, f32, D, T>, PolyLossError> {
        self.loss_ref().try_forward(logits, targets)
    }

    /// The per-sample losses `(B,)`, as [`PolyLoss::forward_per_sample`];
    /// panics on bad input.
    pub fn forward_per_sample<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Tensor<(B,), f32, D, T> {
        self.try_forward_per_sample(logits, targets)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fallible [`DynPolyLoss::forward_per_sample`].
    pub fn try_forward_per_sample<B: Dim, C: Dim, D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(B, C), f32, D, T>,
        targets: impl IntoTargets<D>,
    ) -> Result<Tensor<(B,), f32, D, T>, PolyLossError> {
        self.loss_ref().try_forward_per_sample(logits, targets)
    }

    /// The borrowed view the shared checks and kernels run on.
    fn loss_ref(&self) -> LossRef<'_> {
        LossRef {
            epsilon: &self.epsilon,
            kind: self.kind,
            label_smoothing: self.label_smoothing,
            weight: self.weight.as_deref(),
            ignore_index: self.ignore_index,
            reduction: self.reduction,
            no_terms: PolyLossError::EmptyEpsilon,
        }
    }
}

impl<const N: usize> From<PolyLoss<N>> for DynPolyLoss {
    /// The same loss with ε in a `Vec`.
    fn from(loss: PolyLoss<N>) -> Self {
        Self {
            epsilon: loss.epsilon.to_vec(),
            kind: loss.kind,
            label_smoothing: loss.label_smoothing,
            weight: loss.weight,
            ignore_index: loss.ignore_index,
            reduction: loss.reduction,
        }
    }
}

impl<const N: usize> TryFrom<DynPolyLoss> for PolyLoss<N> {
    /// The loss, unchanged, when it holds a number of coefficients other than N.
    type Error = DynPolyLoss;

    /// The typed loss when `epsilon.len() == N`.
    ///
    /// ```
    /// use poly_loss::prelude::*;
    ///
    /// let dynamic = DynPolyLoss::new(vec![2.0, -0.5]).with_ignore_index(0);
    /// let typed: PolyLoss<2> = dynamic.clone().try_into().unwrap();
    /// assert_eq!(typed, PolyLoss::new([2.0, -0.5]).with_ignore_index(0));
    /// assert!(PolyLoss::<1>::try_from(dynamic).is_err());
    /// ```
    fn try_from(loss: DynPolyLoss) -> Result<Self, Self::Error> {
        let epsilon: [f32; N] = match loss.epsilon.as_slice().try_into() {
            Ok(e) => e,
            Err(_) => return Err(loss),
        };
        Ok(PolyLoss {
            epsilon,
            kind: loss.kind,
            label_smoothing: loss.label_smoothing,
            weight: loss.weight,
            ignore_index: loss.ignore_index,
            reduction: loss.reduction,
        })
    }
}
