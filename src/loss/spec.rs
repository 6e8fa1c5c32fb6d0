//! The configurable loss: [`PolyLoss`], its [`PolyKind`] and [`Reduction`].

use super::PolyLossError;

/// Which member of the PolyLoss family to compute.
///
/// With `pt` the probability of the target (softmax: `Σ_k y_k p_k`; sigmoid,
/// per logit: `y σ(z) + (1 - y)(1 - σ(z))`) and `CE` the (binary)
/// cross-entropy:
///
/// | kind | per-sample loss |
/// |---|---|
/// | `Softmax` | `CE + Σ_j ε_j (1 - pt)^j` |
/// | `SoftmaxFocal` | `α (1 - pt)^γ CE + Σ_j ε_j (1 - pt)^(γ + j)` |
/// | `Sigmoid` | `Σ_k [BCE + Σ_j ε_j (1 - pt)^j]` |
/// | `SigmoidFocal` | `Σ_k [α_t (1 - pt)^γ BCE + Σ_j ε_j (1 - pt)^(γ + j)]`, `α_t = α y + (1 - α)(1 - y)` |
///
/// As in the paper's reference code, α weights only the focal term, never
/// the polynomial one; `alpha: None` means no α weighting (α = 1 on softmax).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum PolyKind {
    /// Poly-N on softmax cross-entropy (the paper's classification loss).
    #[default]
    Softmax,
    /// Poly-N on softmax focal loss.
    SoftmaxFocal {
        /// Focusing parameter γ ≥ 0.
        gamma: f32,
        /// Optional weight of the focal term, in [0, 1].
        alpha: Option<f32>,
    },
    /// Poly-N on per-logit sigmoid binary cross-entropy (multi-label).
    Sigmoid,
    /// Poly-N on per-logit sigmoid focal loss (detection).
    SigmoidFocal {
        /// Focusing parameter γ ≥ 0.
        gamma: f32,
        /// Optional α-balancing of positives (α) against negatives (1 - α).
        alpha: Option<f32>,
    },
}

impl PolyKind {
    /// `true` for the sigmoid (per-logit, multi-label) kinds.
    pub fn is_sigmoid(&self) -> bool {
        matches!(self, PolyKind::Sigmoid | PolyKind::SigmoidFocal { .. })
    }

    /// `(γ, α)` of the focal kinds; `(0, None)` otherwise.
    pub(crate) fn focal(&self) -> (f32, Option<f32>) {
        match *self {
            PolyKind::SoftmaxFocal { gamma, alpha } | PolyKind::SigmoidFocal { gamma, alpha } => {
                (gamma, alpha)
            }
            _ => (0.0, None),
        }
    }
}

/// How per-sample losses combine into the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Softmax kinds: `Σ_i loss_i / Σ_i w_i` over the rows that are not ignored, with
    /// `w_i` the weight of row i's target class (1 without class weights) —
    /// PyTorch's `cross_entropy` rule; probability targets divide by B.
    /// Sigmoid kinds: the mean over all logits of the rows that are not ignored.
    #[default]
    Mean,
    /// `Σ_i loss_i`.
    Sum,
    /// No reduction: use [`PolyLoss::forward_per_sample`], which gives the `(B,)` losses.
    None,
}

/// The configurable PolyLoss: `epsilon` holds ε₁..ε_N of the paper's form
/// `CE + Σ_{j=1..N} ε_j (1 - pt)^j`.
///
/// Range of ε (plain kinds): the loss must decrease in pt on [0, 1], i.e.
/// ε₁ ≥ -1 for N = 1 (the paper's bound) and, for N > 1,
/// `1 + (1 - f) Σ_j j ε_j f^(j-1) ≥ 0` for all `f = 1 - pt` in [0, 1]
/// (e.g. ε₁ = -1 needs ε₂ ≥ -1/2). [`PolyLoss::validate`] refuses other
/// values; see [`check_epsilon`](super::check_epsilon). Focal kinds are not
/// restricted.
///
/// Note on the N-term form: the seed blog writes the series as
/// `Σ_j ε_j (1 - pt)^j / j` (and its sample code adds only the N-th term);
/// this crate follows the paper, without the `1/j`. For N = 1 both agree; to
/// reproduce the blog's coefficients ε'_j pass `ε_j = ε'_j / j`.
///
/// Class weights, the ignore index and label smoothing follow PyTorch's
/// `F.cross_entropy` for the CE part (ε = 0 gives exactly PyTorch's value); the
/// polynomial term of a row is weighted by that row's target-class weight
/// (index targets) or by `Σ_k w_k y_k` (probability targets), so it counts
/// like the CE term of the same sample.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::prelude::*;
///
/// let dev = Cpu::default();
/// let logits: Tensor<Rank2<4, 3>, f32, _> = dev.sample_normal();
/// let loss = PolyLoss::new([2.0])
///     .with_label_smoothing(0.1)
///     .with_weight(vec![1.0, 2.0, 0.5])
///     .with_ignore_index(3);
/// let l = loss.forward(logits.leaky_trace(), &[0, 2, 3, 1][..]);
/// assert!(l.array().is_finite());
/// let grads = l.backward();
/// assert_eq!(grads.get(&logits).array()[2], [0.0; 3]); // row 2 is ignored
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PolyLoss<const N: usize> {
    /// ε₁..ε_N.
    pub epsilon: [f32; N],
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

impl<const N: usize> PolyLoss<N> {
    /// Poly-N on softmax cross-entropy with mean reduction and no options.
    pub fn new(epsilon: [f32; N]) -> Self {
        Self {
            epsilon,
            kind: PolyKind::Softmax,
            label_smoothing: 0.0,
            weight: None,
            ignore_index: None,
            reduction: Reduction::Mean,
        }
    }

    /// Poly-N focal loss on softmax (γ, optional α).
    pub fn focal(epsilon: [f32; N], gamma: f32, alpha: Option<f32>) -> Self {
        Self::new(epsilon).with_kind(PolyKind::SoftmaxFocal { gamma, alpha })
    }

    /// Poly-N on per-logit sigmoid BCE (multi-label).
    pub fn sigmoid(epsilon: [f32; N]) -> Self {
        Self::new(epsilon).with_kind(PolyKind::Sigmoid)
    }

    /// Poly-N on per-logit sigmoid focal loss (γ, optional α).
    pub fn sigmoid_focal(epsilon: [f32; N], gamma: f32, alpha: Option<f32>) -> Self {
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

    /// Checks the parameters that do not depend on the inputs: N ≥ 1, finite
    /// ε, label smoothing in [0, 1], γ ≥ 0, α in [0, 1], finite class weights,
    /// and, for the plain kinds, that the loss decreases in pt
    /// ([`check_epsilon`](super::check_epsilon): ε₁ ≥ -1 for N = 1).
    pub fn validate(&self) -> Result<(), PolyLossError> {
        self.loss_ref().validate()
    }

    /// The borrowed view the shared checks and kernels run on.
    pub(crate) fn loss_ref(&self) -> LossRef<'_> {
        LossRef {
            epsilon: &self.epsilon,
            kind: self.kind,
            label_smoothing: self.label_smoothing,
            weight: self.weight.as_deref(),
            ignore_index: self.ignore_index,
            reduction: self.reduction,
            no_terms: PolyLossError::NoTerms,
        }
    }
}

/// A loss's parameters, borrowed, whatever its term count: what [`PolyLoss`]
/// and [`DynPolyLoss`](super::DynPolyLoss) hand to the one set of checks and
/// the one kernel launch, so the typed and the run-time loss cannot drift.
#[derive(Debug, Clone)]
pub(crate) struct LossRef<'a> {
    /// ε₁..ε_N.
    pub(crate) epsilon: &'a [f32],
    /// Softmax or sigmoid, plain or focal.
    pub(crate) kind: PolyKind,
    /// Label smoothing α.
    pub(crate) label_smoothing: f32,
    /// Per-class weights.
    pub(crate) weight: Option<&'a [f32]>,
    /// The ignore index.
    pub(crate) ignore_index: Option<usize>,
    /// Mean, sum or none.
    pub(crate) reduction: Reduction,
    /// The error for an empty `epsilon`: [`PolyLossError::NoTerms`] for
    /// `PolyLoss<0>`, [`PolyLossError::EmptyEpsilon`] for a `DynPolyLoss`.
    pub(crate) no_terms: PolyLossError,
}

impl LossRef<'_> {
    /// See [`PolyLoss::validate`].
    pub(crate) fn validate(&self) -> Result<(), PolyLossError> {
        if self.epsilon.is_empty() {
            return Err(self.no_terms.clone());
        }
        let ls = self.label_smoothing;
        if !(0.0..=1.0).contains(&ls) {
            return Err(PolyLossError::InvalidParameter {
                name: "label_smoothing",
                value: ls,
                why: "must lie in [0, 1]",
            });
        }
        for &e in self.epsilon {
            if !e.is_finite() {
                return Err(PolyLossError::InvalidParameter {
                    name: "epsilon",
                    value: e,
                    why: "coefficients must be finite",
                });
            }
        }
        let (gamma, alpha) = self.kind.focal();
        if !(gamma >= 0.0 && gamma.is_finite()) {
            return Err(PolyLossError::InvalidParameter {
                name: "gamma",
                value: gamma,
                why: "must be finite and >= 0",
            });
        }
        if let Some(a) = alpha {
            if !(0.0..=1.0).contains(&a) {
                return Err(PolyLossError::InvalidParameter {
                    name: "alpha",
                    value: a,
                    why: "must lie in [0, 1]",
                });
            }
        }
        if !matches!(
            self.kind,
            PolyKind::SoftmaxFocal { .. } | PolyKind::SigmoidFocal { .. }
        ) {
            let eps: Vec<f64> = self.epsilon.iter().map(|&e| e as f64).collect();
            super::check_epsilon(&eps)?;
        }
        if let Some(w) = &self.weight {
            if let Some(&bad) = w.iter().find(|v| !v.is_finite()) {
                return Err(PolyLossError::InvalidParameter {
                    name: "weight",
                    value: bad,
                    why: "class weights must be finite",
                });
            }
        }
        Ok(())
    }
}
