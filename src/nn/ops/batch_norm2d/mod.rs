//! Batch normalisation over `(B, C, H, W)` in training mode (batch
//! statistics, running statistics updated) and evaluation mode (running
//! statistics), both differentiable, with optional fused ReLU and fused
//! residual add + ReLU.
//!
//! Forward: `y = act(γ_c · (x − μ_c) / √(σ²_c + ε) + β_c [+ r])`.
//! Training mode normalises with the batch mean and *biased* variance and
//! updates `running = (1 − momentum)·running + momentum·batch_stat`, using the
//! *unbiased* variance for `running_var` — exactly PyTorch's
//! `BatchNorm2d.train()`. Evaluation mode normalises with the running
//! statistics and still gives `γ`, `β` (and `x`) gradients, which is what
//! fine-tuning with frozen statistics needs.

mod cpu_kernel;
#[cfg(feature = "cuda")]
mod cuda_kernel;

use dfdx::prelude::*;

use crate::device::grads_mut_and_ref;
use crate::nn::ops::release_grad;

/// The geometry and options of one batch-norm call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormOp {
    /// Batch size.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// `H · W`.
    pub plane: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Apply ReLU after the affine transform (and the residual add).
    pub relu: bool,
    /// Batch statistics (`true`) or running statistics (`false`). In
    /// training mode the backward pass includes the statistics' gradients.
    pub train: bool,
}

impl BatchNormOp {
    /// Values per channel (`B · H · W`).
    pub fn per_channel(&self) -> usize {
        self.batch * self.plane
    }
}

/// The per-channel tensors one kernel call normalises with: the affine
/// parameters `γ`, `β` and the statistics `mean`, `var` (batch or running,
/// `var` biased).
pub struct BatchNormTensors<'a, Sc: Shape, D: Storage<f32>> {
    /// γ, the per-channel scale.
    pub gamma: &'a Tensor<Sc, f32, D>,
    /// β, the per-channel shift (unused by the backward pass).
    pub beta: &'a Tensor<Sc, f32, D>,
    /// The mean subtracted.
    pub mean: &'a Tensor<Sc, f32, D>,
    /// The (biased) variance divided by.
    pub var: &'a Tensor<Sc, f32, D>,
}

/// The gradient buffers one backward call accumulates into (`+=`).
pub struct BatchNormGrads<'a, D: Storage<f32>> {
    /// Of the input `x`.
    pub x: &'a mut D::Vec,
    /// Of γ.
    pub gamma: &'a mut D::Vec,
    /// Of β.
    pub beta: &'a mut D::Vec,
    /// Of the residual, when the op adds one ([`Tail::AddRelu`]).
    pub residual: Option<&'a mut D::Vec>,
}

/// Device kernels for the batch-norm ops. `x`, `residual`, `y` are
/// contiguous `(B, C, H, W)` tensors.
pub trait BatchNorm2dKernel: Storage<f32> {
    /// Per-channel mean and biased variance of `x` over batch and plane.
    fn batch_norm2d_stats<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        channels: Sc,
    ) -> Result<(Tensor<Sc, f32, Self>, Tensor<Sc, f32, Self>), Self::Err>;

    /// `y = act(γ (x − mean)/√(var + ε) + β [+ residual])`.
    fn batch_norm2d_forward<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        residual: Option<&Tensor<Sx, f32, Self>>,
        norm: &BatchNormTensors<'_, Sc, Self>,
        out: Sx,
    ) -> Result<Tensor<Sx, f32, Self>, Self::Err>;

    /// Accumulates the gradients of `x`, `γ`, `β` and the residual from the
    /// output gradient `gy`. `y` (the forward output) is given iff
    /// `op.relu`, for the ReLU mask.
    fn batch_norm2d_backward<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        y: Option<&Tensor<Sx, f32, Self>>,
        norm: &BatchNormTensors<'_, Sc, Self>,
        grads: BatchNormGrads<'_, Self>,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err>;
}

/// Which statistics a batch-norm call normalises with — its mode.
pub enum BatchNormStats<'a, const C: usize, D: Storage<f32>> {
    /// Evaluation mode: the running statistics, left unchanged.
    Running {
        /// Running mean.
        mean: &'a Tensor<Rank1<C>, f32, D>,
        /// Running (unbiased) variance.
        var: &'a Tensor<Rank1<C>, f32, D>,
    },
    /// Training mode: the batch statistics (biased variance); the running
    /// statistics are updated in place, `r = (1 − momentum)·r +
    /// momentum·batch_stat`, with the unbiased variance (as PyTorch).
    Batch {
        /// Running mean, updated.
        running_mean: &'a mut Tensor<Rank1<C>, f32, D>,
        /// Running (unbiased) variance, updated.
        running_var: &'a mut Tensor<Rank1<C>, f32, D>,
        /// Weight of the batch statistic in the update.
        momentum: f64,
    },
}

/// The parameters and mode of one [`batch_norm2d()`] call: `weight` (γ),
/// `bias` (β), the statistics and `eps`.
pub struct BatchNormParams<'a, const C: usize, D: Storage<f32>> {
    /// γ, the per-channel scale (gets a gradient under a tape).
    pub weight: &'a Tensor<Rank1<C>, f32, D>,
    /// β, the per-channel shift (gets a gradient under a tape).
    pub bias: &'a Tensor<Rank1<C>, f32, D>,
    /// Running statistics (eval) or batch statistics (train).
    pub stats: BatchNormStats<'a, C, D>,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl<'a, const C: usize, D: Storage<f32>> BatchNormParams<'a, C, D> {
    /// Evaluation mode: normalise with `running_mean`/`running_var`, which
    /// stay unchanged (and never get gradients).
    pub fn eval(
        weight: &'a Tensor<Rank1<C>, f32, D>,
        bias: &'a Tensor<Rank1<C>, f32, D>,
        running_mean: &'a Tensor<Rank1<C>, f32, D>,
        running_var: &'a Tensor<Rank1<C>, f32, D>,
        eps: f64,
    ) -> Self {
        let stats = BatchNormStats::Running {
            mean: running_mean,
            var: running_var,
        };
        Self {
            weight,
            bias,
            stats,
            eps,
        }
    }

    /// Training mode: normalise with the batch statistics and update
    /// `running_mean`/`running_var` with `momentum`.
    pub fn train(
        weight: &'a Tensor<Rank1<C>, f32, D>,
        bias: &'a Tensor<Rank1<C>, f32, D>,
        running_mean: &'a mut Tensor<Rank1<C>, f32, D>,
        running_var: &'a mut Tensor<Rank1<C>, f32, D>,
        eps: f64,
        momentum: f64,
    ) -> Self {
        let stats = BatchNormStats::Batch {
            running_mean,
            running_var,
            momentum,
        };
        Self {
            weight,
            bias,
            stats,
            eps,
        }
    }
}

/// What follows the affine transform in the same pass.
///
/// The residual of [`Tail::AddRelu`] carries the input's tape type `T`: a
/// residual branch recorded on `x.with_empty_tape()` (as a ResNet block
/// does) is merged back; a tape-free residual beside a traced `x` is passed
/// as `residual.retaped()`. Either way it gets its gradient.
pub enum Tail<S: Shape, D: Storage<f32>, T> {
    /// `y = bn(x)`.
    None,
    /// `y = relu(bn(x))`.
    Relu,
    /// `y = relu(bn(x) + residual)`: the tail of a ResNet block. The
    /// residual must be another tensor than `x`.
    AddRelu(Tensor<S, f32, D, T>),
}

type Img<B, const C: usize, H, W> = (B, Const<C>, H, W);

/// Batch-norm over `(B, C, H, W)` with running (eval) or batch (train)
/// statistics, see [`BatchNormStats`], followed by the fused `tail` (one
/// pass, no temporary). Works with or without a tape; with one, `x`,
/// `weight`, `bias` (and the residual) get gradients, the running
/// statistics never do. Training mode needs more than one value per
/// channel (`B·H·W > 1`).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::ops::{batch_norm2d, BatchNormParams, Tail};
///
/// let dev = Cpu::default();
/// let (g, b): (Tensor<Rank1<2>, f32, _>, _) = (dev.ones(), dev.zeros());
///
/// // Evaluation mode with a fused ReLU.
/// let x: Tensor<Rank4<1, 2, 1, 1>, f32, _> = dev.tensor([[[[3.0]], [[-1.0]]]]);
/// let (m, v): (Tensor<Rank1<2>, f32, _>, _) = (dev.tensor([1.0, 0.0]), dev.tensor([4.0, 1.0]));
/// let y = batch_norm2d(x, BatchNormParams::eval(&g, &b, &m, &v, 0.0), Tail::Relu);
/// assert_eq!(y.as_vec(), vec![1.0, 0.0]); // (3−1)/2, relu(−1)
///
/// // Training mode: batch statistics, running statistics updated.
/// let x: Tensor<Rank4<2, 1, 1, 1>, f32, _> = dev.tensor([[[[1.0]]], [[[3.0]]]]);
/// let (g, b): (Tensor<Rank1<1>, f32, _>, _) = (dev.ones(), dev.zeros());
/// let (mut m, mut v): (Tensor<Rank1<1>, f32, _>, _) = (dev.zeros(), dev.ones());
/// let y = batch_norm2d(x, BatchNormParams::train(&g, &b, &mut m, &mut v, 0.0, 0.1), Tail::None);
/// assert_eq!(y.as_vec(), vec![-1.0, 1.0]);
/// assert_eq!(m.array(), [0.2]); // 0.9·0 + 0.1·2
/// assert_eq!(v.array(), [1.1]); // 0.9·1 + 0.1·(unbiased variance 2)
/// ```
pub fn batch_norm2d<B: Dim, const C: usize, H: Dim, W: Dim, D, T>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    params: BatchNormParams<'_, C, D>,
    tail: Tail<Img<B, C, H, W>, D, T>,
) -> Tensor<Img<B, C, H, W>, f32, D, T>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D>,
{
    try_batch_norm2d(x, params, tail).unwrap()
}

/// Fallible [`batch_norm2d()`].
pub fn try_batch_norm2d<B: Dim, const C: usize, H: Dim, W: Dim, D, T>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    params: BatchNormParams<'_, C, D>,
    tail: Tail<Img<B, C, H, W>, D, T>,
) -> Result<Tensor<Img<B, C, H, W>, f32, D, T>, D::Err>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D>,
{
    let BatchNormParams {
        weight,
        bias,
        stats,
        eps,
    } = params;
    let shape = *x.shape();
    let (b, _, h, w) = shape;
    let (relu, residual) = match tail {
        Tail::None => (false, None),
        Tail::Relu => (true, None),
        Tail::AddRelu(r) => (true, Some(r)),
    };
    let op = BatchNormOp {
        batch: b.size(),
        channels: C,
        plane: h.size() * w.size(),
        eps,
        relu,
        train: matches!(stats, BatchNormStats::Batch { .. }),
    };
    let x = x.try_contiguous()?;
    let (x, tape) = x.split_tape();
    let (residual, mut tape) = match residual {
        Some(r) => {
            assert_eq!(r.shape(), &shape, "residual must have the input's shape");
            let (r, r_tape) = r.try_contiguous()?.split_tape();
            (Some(r), tape.merge(r_tape))
        }
        None => (None, tape),
    };
    let dev = x.device().clone();
    let (mean, var) = match stats {
        BatchNormStats::Running { mean, var } => (mean.clone(), var.clone()),
        BatchNormStats::Batch {
            running_mean,
            running_var,
            momentum,
        } => {
            let n = op.per_channel();
            assert!(
                n > 1,
                "batch_norm2d in training mode needs more than one value per channel, got {n}"
            );
            let (m, v) = dev.batch_norm2d_stats(&op, &x, (Const::<C>,))?;
            running_mean.try_axpy(1.0 - momentum, &m, momentum)?;
            running_var.try_axpy(1.0 - momentum, &v, momentum * n as f64 / (n - 1) as f64)?;
            (m, v)
        }
    };
    let norm = BatchNormTensors {
        gamma: weight,
        beta: bias,
        mean: &mean,
        var: &var,
    };
    let out = dev.batch_norm2d_forward(&op, &x, residual.as_ref(), &norm, shape)?;
    if T::OWNS_TAPE {
        // All saves are `Arc` clones. The output (ReLU mask) is usually held by
        // the next layer anyway, so keeping it costs no memory.
        let y = relu.then(|| out.clone());
        let (gamma, beta) = (weight.clone(), bias.clone());
        let (x_ghost, w_ghost, b_ghost, out_ghost) =
            (x.ghost(), weight.ghost(), bias.ghost(), out.ghost());
        let r_ghost = residual.as_ref().map(|r| r.ghost());
        drop(residual);
        tape.add_backward_op(move |grads| {
            let norm = BatchNormTensors {
                gamma: &gamma,
                beta: &beta,
                mean: &mean,
                var: &var,
            };
            if let Some(r_ghost) = r_ghost {
                let (gx, gw, gb, gr, gy) = grads_mut_and_ref!(
                    &mut *grads,
                    [x_ghost, w_ghost, b_ghost, r_ghost],
                    out_ghost
                );
                let g = BatchNormGrads {
                    x: gx,
                    gamma: gw,
                    beta: gb,
                    residual: Some(gr),
                };
                dev.batch_norm2d_backward(&op, &x, y.as_ref(), &norm, g, gy)?;
            } else {
                let (gx, gw, gb, gy) =
                    grads_mut_and_ref!(&mut *grads, [x_ghost, w_ghost, b_ghost], out_ghost);
                let g = BatchNormGrads {
                    x: gx,
                    gamma: gw,
                    beta: gb,
                    residual: None,
                };
                dev.batch_norm2d_backward(&op, &x, y.as_ref(), &norm, g, gy)?;
            }
            release_grad!(grads, out_ghost, dev);
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
