//! The error type of the loss ops.

/// What is wrong with a PolyLoss call. The plain (panicking) forms panic with
/// this message; the `try_*` forms return it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolyLossError {
    /// `PolyLoss<0>`: the loss needs at least one polynomial coefficient.
    #[error(
        "PolyLoss<N> needs N >= 1 coefficients, got N = 0 (use ε = [0.0] for plain cross-entropy)"
    )]
    NoTerms,
    /// A [`DynPolyLoss`](super::DynPolyLoss) with no coefficients.
    #[error("DynPolyLoss needs at least 1 coefficient, got epsilon of length 0 (use epsilon = vec![0.0] for plain cross-entropy)")]
    EmptyEpsilon,
    /// A class index outside `0..C` (and not the ignore index). Class
    /// targets read on the GPU from a `usize` tensor are checked there and
    /// give a NaN loss instead (see [`Targets::ClassBuffer`](super::Targets::ClassBuffer)).
    #[error("target {value} in row {row} is out of range: the logits have {classes} classes (valid: 0..{classes})")]
    TargetOutOfRange {
        /// Row (sample) of the bad target.
        row: usize,
        /// The target value.
        value: usize,
        /// Number of classes C.
        classes: usize,
    },
    /// Targets do not match the logits' shape.
    #[error("shape mismatch: {what} has shape {got:?} but the logits of shape {logits:?} need {expected:?}")]
    ShapeMismatch {
        /// Which input is wrong ("targets", "class weights").
        what: &'static str,
        /// Its shape.
        got: Vec<usize>,
        /// The shape it must have.
        expected: Vec<usize>,
        /// The logits' shape.
        logits: Vec<usize>,
    },
    /// Mean reduction where every row carries the ignore index (host class
    /// targets; with a class tensor on a CUDA device, which the host does not
    /// read, such a mean is NaN instead, as PyTorch's).
    #[error("every one of the {rows} rows has the ignore index {ignore_index}: the mean over no rows is undefined")]
    AllIgnored {
        /// The ignore index.
        ignore_index: usize,
        /// Number of rows.
        rows: usize,
    },
    /// A parameter outside its domain (label smoothing, γ, α, a weight).
    #[error("invalid {name} = {value}: {why}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// The value given.
        value: f32,
        /// What it must satisfy.
        why: &'static str,
    },
    /// Poly-1's ε₁ below -1: the loss would rise with pt near pt = 1.
    #[error("epsilon[0] = {value} is below -1: Poly-1 = CE + ε₁(1 - pt) must decrease in pt, which needs ε₁ >= -1")]
    EpsilonBelowMinusOne {
        /// The ε₁ given.
        value: f64,
    },
    /// Poly-N (N > 1) coefficients that make the loss rise with pt somewhere
    /// in [0, 1] (see [`check_epsilon`](super::check_epsilon)).
    #[error("epsilon = {epsilon:?}: the loss rises with pt near pt = {pt:.4} (dL/dpt = {slope:.4} > 0); Poly-N must decrease in pt on [0, 1]")]
    EpsilonNotDecreasing {
        /// The coefficients ε₁..ε_N.
        epsilon: Vec<f64>,
        /// Where `q(1 - pt)` of [`check_epsilon`](super::check_epsilon) is smallest.
        pt: f64,
        /// dL/dpt there.
        slope: f64,
    },
    /// `forward` (a scalar) was asked of a loss configured with `Reduction::None`.
    #[error("this PolyLoss has reduction None: call forward_per_sample for the per-sample losses")]
    ReductionNone,
    /// An error of the dfdx device (allocation, CUDA launch).
    #[error("device error: {0}")]
    Device(String),
}

impl PolyLossError {
    pub(crate) fn device<E: std::fmt::Display>(e: E) -> Self {
        PolyLossError::Device(e.to_string())
    }
}
