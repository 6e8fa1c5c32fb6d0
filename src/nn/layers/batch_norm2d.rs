//! [`BatchNorm2d`]: batch-norm with torchvision's parameter names, usable
//! under a tape in both training and evaluation mode.

use dfdx::prelude::*;

use crate::nn::ops::{try_batch_norm2d, BatchNorm2dKernel, BatchNormParams, Tail};

/// Type-level builders, used with dfdx's `dev.build_module::<M, f32>()`.
pub mod builder {
    /// Builder of [`super::BatchNorm2d`] over `C` channels.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct BatchNorm2d<const C: usize>;
}

impl<const C: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E> for builder::BatchNorm2d<C>
where
    BatchNorm2d<C, E, D>: BuildModule<D, E>,
{
    type Built = BatchNorm2d<C, E, D>;
}

/// Default `eps` (PyTorch's).
pub const BN_EPS: f64 = 1e-5;
/// Default `momentum` (PyTorch's).
pub const BN_MOMENTUM: f64 = 0.1;

/// `torch.nn.BatchNorm2d(C)` on `(B, Const<C>, H, W)` batches.
///
/// # Mode: `Module` = eval, `ModuleMut` = train
///
/// The mode is chosen by the call, never stored, and both work with and
/// without a tape:
///
/// | call | statistics | running stats | typical use |
/// | --- | --- | --- | --- |
/// | [`Module::forward`] (`&self`) | running | unchanged | inference (no tape); fine-tuning with frozen statistics (tape: `x`, `weight`, `bias` get gradients) |
/// | [`ModuleMut::forward_mut`] (`&mut self`) | batch (biased variance) | updated: `(1 − momentum)·r + momentum·batch`, unbiased variance | training |
///
/// This matches dfdx's convention (`Module` for inference, `ModuleMut` for
/// training) but, unlike dfdx's `BatchNorm2D`, does not tie the mode to the
/// tape type. A model built from these layers and dfdx tuples therefore
/// trains with `model.forward_mut(x.traced(grads))`, fine-tunes with frozen
/// statistics via `model.forward(x.traced(grads))`, and infers with
/// `model.forward(x)`.
///
/// [`BatchNorm2d::forward_tail`] (and its `_mut` training twin) applies a
/// [`Tail`] — ReLU, or residual add + ReLU — in the same pass.
///
/// # Parameters
///
/// Safetensors keys as torchvision: `weight` (γ, init 1), `bias` (β, init 0),
/// `running_mean` (init 0), `running_var` (init 1). The running statistics are
/// detached (`do_gradient_update: false`): optimisers, `alloc_grads` and the
/// trainable-parameter count skip them, and `ResetParams` resets them.
/// `eps` and `momentum` are plain fields (defaults [`BN_EPS`],
/// [`BN_MOMENTUM`]); they are not saved, so files keep exactly torchvision's
/// key set, and a dtype/device conversion resets them to the defaults.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::builders::BatchNorm2d;
///
/// let dev = Cpu::default();
/// let mut bn = dev.build_module::<BatchNorm2d<4>, f32>();
/// let x: Tensor<Rank4<2, 4, 3, 3>, f32, _> = dev.sample_normal();
/// // Training step: batch statistics, running statistics move.
/// let grads = bn.alloc_grads();
/// let y = bn.forward_mut(x.trace(grads));
/// let _grads = y.square().mean().backward();
/// assert_ne!(bn.running_var.array(), [1.0; 4]);
/// // Frozen statistics, still differentiable: no update.
/// let before = bn.running_mean.array();
/// let _y = bn.forward(x.leaky_trace());
/// assert_eq!(bn.running_mean.array(), before);
/// ```
#[derive(Clone, Debug)]
pub struct BatchNorm2d<const C: usize, E: Dtype, D: Storage<E>> {
    /// γ, the per-channel scale.
    pub weight: Tensor<Rank1<C>, E, D>,
    /// β, the per-channel shift.
    pub bias: Tensor<Rank1<C>, E, D>,
    /// Running mean (evaluation statistics).
    pub running_mean: Tensor<Rank1<C>, E, D>,
    /// Running (unbiased) variance (evaluation statistics).
    pub running_var: Tensor<Rank1<C>, E, D>,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of the batch statistic in the running-statistics update.
    pub momentum: f64,
}

impl<const C: usize, E: Dtype, D: Device<E>> TensorCollection<E, D> for BatchNorm2d<C, E, D> {
    type To<E2: Dtype, D2: Device<E2>> = BatchNorm2d<C, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_to_ones(),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_to_zeros(),
                ),
                Self::tensor(
                    "running_mean",
                    |s| &s.running_mean,
                    |s| &mut s.running_mean,
                    TensorOptions::detached(|t| t.try_fill_with_zeros()),
                ),
                Self::tensor(
                    "running_var",
                    |s| &s.running_var,
                    |s| &mut s.running_var,
                    TensorOptions::detached(|t| t.try_fill_with_ones()),
                ),
            ),
            |(weight, bias, running_mean, running_var)| BatchNorm2d {
                weight,
                bias,
                running_mean,
                running_var,
                eps: BN_EPS,
                momentum: BN_MOMENTUM,
            },
        )
    }
}

type Img<B, const C: usize, H, W, D, T> = Tensor<(B, Const<C>, H, W), f32, D, T>;

impl<const C: usize, D: Device<f32> + BatchNorm2dKernel> BatchNorm2d<C, f32, D> {
    /// The op's parameters in evaluation mode (running statistics).
    pub fn params_eval(&self) -> BatchNormParams<'_, C, D> {
        BatchNormParams::eval(
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
            self.eps,
        )
    }

    /// The op's parameters in training mode (batch statistics; the running
    /// statistics are updated).
    pub fn params_train(&mut self) -> BatchNormParams<'_, C, D> {
        BatchNormParams::train(
            &self.weight,
            &self.bias,
            &mut self.running_mean,
            &mut self.running_var,
            self.eps,
            self.momentum,
        )
    }

    /// Evaluation mode followed by `tail` (ReLU, or residual add + ReLU: a
    /// ResNet block's tail), fused in one pass. `Tail::None` is
    /// [`Module::forward`].
    pub fn forward_tail<B: Dim, H: Dim, W: Dim, T: Tape<f32, D>>(
        &self,
        x: Img<B, C, H, W, D, T>,
        tail: Tail<(B, Const<C>, H, W), D, T>,
    ) -> Img<B, C, H, W, D, T> {
        self.try_forward_tail(x, tail).unwrap()
    }

    /// Fallible [`Self::forward_tail`].
    pub fn try_forward_tail<B: Dim, H: Dim, W: Dim, T: Tape<f32, D>>(
        &self,
        x: Img<B, C, H, W, D, T>,
        tail: Tail<(B, Const<C>, H, W), D, T>,
    ) -> Result<Img<B, C, H, W, D, T>, D::Err> {
        try_batch_norm2d(x, self.params_eval(), tail)
    }

    /// Training mode followed by `tail`, fused. `Tail::None` is
    /// [`ModuleMut::forward_mut`].
    pub fn forward_tail_mut<B: Dim, H: Dim, W: Dim, T: Tape<f32, D>>(
        &mut self,
        x: Img<B, C, H, W, D, T>,
        tail: Tail<(B, Const<C>, H, W), D, T>,
    ) -> Img<B, C, H, W, D, T> {
        self.try_forward_tail_mut(x, tail).unwrap()
    }

    /// Fallible [`Self::forward_tail_mut`].
    pub fn try_forward_tail_mut<B: Dim, H: Dim, W: Dim, T: Tape<f32, D>>(
        &mut self,
        x: Img<B, C, H, W, D, T>,
        tail: Tail<(B, Const<C>, H, W), D, T>,
    ) -> Result<Img<B, C, H, W, D, T>, D::Err> {
        try_batch_norm2d(x, self.params_train(), tail)
    }
}

/// Evaluation mode: running statistics, not updated; any tape.
impl<const C: usize, B: Dim, H: Dim, W: Dim, D, T> Module<Img<B, C, H, W, D, T>>
    for BatchNorm2d<C, f32, D>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D>,
{
    type Output = Img<B, C, H, W, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Img<B, C, H, W, D, T>) -> Result<Self::Output, D::Err> {
        self.try_forward_tail(x, Tail::None)
    }
}

/// Training mode: batch statistics, running statistics updated; any tape.
impl<const C: usize, B: Dim, H: Dim, W: Dim, D, T> ModuleMut<Img<B, C, H, W, D, T>>
    for BatchNorm2d<C, f32, D>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D>,
{
    type Output = Img<B, C, H, W, D, T>;
    type Error = D::Err;

    fn try_forward_mut(&mut self, x: Img<B, C, H, W, D, T>) -> Result<Self::Output, D::Err> {
        self.try_forward_tail_mut(x, Tail::None)
    }
}
