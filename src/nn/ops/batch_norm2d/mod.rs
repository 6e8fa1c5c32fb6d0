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

/// Device kernels for the batch-norm ops. `mean`/`var` are per-channel
/// statistics (batch or running), `var` biased; `x`, `residual`, `y` are
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
    #[allow(clippy::too_many_arguments)]
    fn batch_norm2d_forward<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        residual: Option<&Tensor<Sx, f32, Self>>,
        gamma: &Tensor<Sc, f32, Self>,
        beta: &Tensor<Sc, f32, Self>,
        mean: &Tensor<Sc, f32, Self>,
        var: &Tensor<Sc, f32, Self>,
        out: Sx,
    ) -> Result<Tensor<Sx, f32, Self>, Self::Err>;

    /// Accumulates the gradients of `x`, `γ`, `β` and the residual. `y` (the
    /// forward output) is given iff `op.relu`, for the ReLU mask.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm2d_backward<Sx: Shape, Sc: Shape>(
        &self,
        op: &BatchNormOp,
        x: &Tensor<Sx, f32, Self>,
        y: Option<&Tensor<Sx, f32, Self>>,
        gamma: &Tensor<Sc, f32, Self>,
        mean: &Tensor<Sc, f32, Self>,
        var: &Tensor<Sc, f32, Self>,
        gx: &mut Self::Vec,
        ggamma: &mut Self::Vec,
        gbeta: &mut Self::Vec,
        gresidual: Option<&mut Self::Vec>,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err>;
}

/// Which statistics a call normalises with.
enum Stats<'a, const C: usize, D: Storage<f32>> {
    Running {
        mean: &'a Tensor<Rank1<C>, f32, D>,
        var: &'a Tensor<Rank1<C>, f32, D>,
    },
    Batch {
        running_mean: &'a mut Tensor<Rank1<C>, f32, D>,
        running_var: &'a mut Tensor<Rank1<C>, f32, D>,
        momentum: f64,
    },
}

type Img<B, const C: usize, H, W> = (B, Const<C>, H, W);

#[allow(clippy::too_many_arguments)]
fn batch_norm2d_impl<B: Dim, const C: usize, H: Dim, W: Dim, D, T, R>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    residual: Option<Tensor<Img<B, C, H, W>, f32, D, R>>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    stats: Stats<'_, C, D>,
    eps: f64,
    relu: bool,
) -> Result<Tensor<Img<B, C, H, W>, f32, D, T>, D::Err>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D> + Merge<R>,
    R: Tape<f32, D>,
{
    let shape = *x.shape();
    let (b, _, h, w) = shape;
    let op = BatchNormOp {
        batch: b.size(),
        channels: C,
        plane: h.size() * w.size(),
        eps,
        relu,
        train: matches!(stats, Stats::Batch { .. }),
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
        Stats::Running { mean, var } => (mean.clone(), var.clone()),
        Stats::Batch {
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
    let out =
        dev.batch_norm2d_forward(&op, &x, residual.as_ref(), weight, bias, &mean, &var, shape)?;
    if T::OWNS_TAPE {
        // All saves are `Arc` clones. The output (ReLU mask) is usually held by
        // the next layer anyway, so keeping it costs no memory.
        let y = relu.then(|| out.clone());
        let gamma = weight.clone();
        let (x_ghost, w_ghost, b_ghost, out_ghost) =
            (x.ghost(), weight.ghost(), bias.ghost(), out.ghost());
        let r_ghost = residual.as_ref().map(|r| r.ghost());
        drop(residual);
        tape.add_backward_op(move |grads| {
            if let Some(r_ghost) = r_ghost {
                let (gx, gw, gb, gr, gy) = grads_mut_and_ref!(
                    &mut *grads,
                    [x_ghost, w_ghost, b_ghost, r_ghost],
                    out_ghost
                );
                dev.batch_norm2d_backward(
                    &op,
                    &x,
                    y.as_ref(),
                    &gamma,
                    &mean,
                    &var,
                    gx,
                    gw,
                    gb,
                    Some(gr),
                    gy,
                )?;
            } else {
                let (gx, gw, gb, gy) =
                    grads_mut_and_ref!(&mut *grads, [x_ghost, w_ghost, b_ghost], out_ghost);
                dev.batch_norm2d_backward(
                    &op,
                    &x,
                    y.as_ref(),
                    &gamma,
                    &mean,
                    &var,
                    gx,
                    gw,
                    gb,
                    None,
                    gy,
                )?;
            }
            release_grad!(grads, out_ghost, dev);
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// Evaluation-mode batch-norm: normalises with the running statistics (not
/// updated), optionally followed by ReLU (fused: one pass, no temporary).
/// Works with or without a tape; with one, `x`, `weight` and `bias` get
/// gradients (`running_*` never do).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::ops::batch_norm2d_eval;
///
/// let dev = Cpu::default();
/// let x: Tensor<Rank4<1, 2, 1, 1>, f32, _> = dev.tensor([[[[3.0]], [[-1.0]]]]);
/// let (g, b): (Tensor<Rank1<2>, f32, _>, _) = (dev.ones(), dev.zeros());
/// let (m, v): (Tensor<Rank1<2>, f32, _>, _) = (dev.tensor([1.0, 0.0]), dev.tensor([4.0, 1.0]));
/// let y = batch_norm2d_eval(x, &g, &b, &m, &v, 0.0, true);
/// assert_eq!(y.as_vec(), vec![1.0, 0.0]); // (3−1)/2, relu(−1)
/// ```
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_eval<B: Dim, const C: usize, H: Dim, W: Dim, D, T>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    running_mean: &Tensor<Rank1<C>, f32, D>,
    running_var: &Tensor<Rank1<C>, f32, D>,
    eps: f64,
    relu: bool,
) -> Tensor<Img<B, C, H, W>, f32, D, T>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D>,
{
    try_batch_norm2d_eval(x, weight, bias, running_mean, running_var, eps, relu).unwrap()
}

/// Fallible [`batch_norm2d_eval`].
#[allow(clippy::too_many_arguments)]
pub fn try_batch_norm2d_eval<B: Dim, const C: usize, H: Dim, W: Dim, D, T>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    running_mean: &Tensor<Rank1<C>, f32, D>,
    running_var: &Tensor<Rank1<C>, f32, D>,
    eps: f64,
    relu: bool,
) -> Result<Tensor<Img<B, C, H, W>, f32, D, T>, D::Err>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D>,
{
    batch_norm2d_impl(
        x,
        None::<Tensor<Img<B, C, H, W>, f32, D, NoneTape>>,
        weight,
        bias,
        Stats::Running {
            mean: running_mean,
            var: running_var,
        },
        eps,
        relu,
    )
}

/// Training-mode batch-norm: normalises with the batch statistics and
/// updates `running_mean`/`running_var` in place (momentum, unbiased
/// variance, as PyTorch), optionally followed by a fused ReLU. Needs more
/// than one value per channel (`B·H·W > 1`).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::ops::batch_norm2d_train;
///
/// let dev = Cpu::default();
/// let x: Tensor<Rank4<2, 1, 1, 1>, f32, _> = dev.tensor([[[[1.0]]], [[[3.0]]]]);
/// let (g, b): (Tensor<Rank1<1>, f32, _>, _) = (dev.ones(), dev.zeros());
/// let (mut m, mut v): (Tensor<Rank1<1>, f32, _>, _) = (dev.zeros(), dev.ones());
/// let y = batch_norm2d_train(x, &g, &b, &mut m, &mut v, 0.0, 0.1, false);
/// assert_eq!(y.as_vec(), vec![-1.0, 1.0]);
/// assert_eq!(m.array(), [0.2]); // 0.9·0 + 0.1·2
/// assert_eq!(v.array(), [1.1]); // 0.9·1 + 0.1·(unbiased variance 2)
/// ```
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_train<B: Dim, const C: usize, H: Dim, W: Dim, D, T>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    running_mean: &mut Tensor<Rank1<C>, f32, D>,
    running_var: &mut Tensor<Rank1<C>, f32, D>,
    eps: f64,
    momentum: f64,
    relu: bool,
) -> Tensor<Img<B, C, H, W>, f32, D, T>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D>,
{
    try_batch_norm2d_train(
        x,
        weight,
        bias,
        running_mean,
        running_var,
        eps,
        momentum,
        relu,
    )
    .unwrap()
}

/// Fallible [`batch_norm2d_train`].
#[allow(clippy::too_many_arguments)]
pub fn try_batch_norm2d_train<B: Dim, const C: usize, H: Dim, W: Dim, D, T>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    running_mean: &mut Tensor<Rank1<C>, f32, D>,
    running_var: &mut Tensor<Rank1<C>, f32, D>,
    eps: f64,
    momentum: f64,
    relu: bool,
) -> Result<Tensor<Img<B, C, H, W>, f32, D, T>, D::Err>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D>,
{
    batch_norm2d_impl(
        x,
        None::<Tensor<Img<B, C, H, W>, f32, D, NoneTape>>,
        weight,
        bias,
        Stats::Batch {
            running_mean,
            running_var,
            momentum,
        },
        eps,
        relu,
    )
}

/// `relu(bn_eval(x) + residual)` in one pass: the tail of a ResNet block
/// with frozen statistics. `x` and `residual` must be different tensors;
/// their tapes are merged (either may carry it).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_add_relu_eval<B: Dim, const C: usize, H: Dim, W: Dim, D, T, R>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    residual: Tensor<Img<B, C, H, W>, f32, D, R>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    running_mean: &Tensor<Rank1<C>, f32, D>,
    running_var: &Tensor<Rank1<C>, f32, D>,
    eps: f64,
) -> Tensor<Img<B, C, H, W>, f32, D, T>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D> + Merge<R>,
    R: Tape<f32, D>,
{
    try_batch_norm2d_add_relu_eval(x, residual, weight, bias, running_mean, running_var, eps)
        .unwrap()
}

/// Fallible [`batch_norm2d_add_relu_eval`].
#[allow(clippy::too_many_arguments)]
pub fn try_batch_norm2d_add_relu_eval<B: Dim, const C: usize, H: Dim, W: Dim, D, T, R>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    residual: Tensor<Img<B, C, H, W>, f32, D, R>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    running_mean: &Tensor<Rank1<C>, f32, D>,
    running_var: &Tensor<Rank1<C>, f32, D>,
    eps: f64,
) -> Result<Tensor<Img<B, C, H, W>, f32, D, T>, D::Err>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D> + Merge<R>,
    R: Tape<f32, D>,
{
    batch_norm2d_impl(
        x,
        Some(residual),
        weight,
        bias,
        Stats::Running {
            mean: running_mean,
            var: running_var,
        },
        eps,
        true,
    )
}

/// `relu(bn_train(x) + residual)` in one pass (batch statistics, running
/// statistics updated as in [`batch_norm2d_train`]). `x` and `residual`
/// must be different tensors; their tapes are merged.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_add_relu_train<B: Dim, const C: usize, H: Dim, W: Dim, D, T, R>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    residual: Tensor<Img<B, C, H, W>, f32, D, R>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    running_mean: &mut Tensor<Rank1<C>, f32, D>,
    running_var: &mut Tensor<Rank1<C>, f32, D>,
    eps: f64,
    momentum: f64,
) -> Tensor<Img<B, C, H, W>, f32, D, T>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D> + Merge<R>,
    R: Tape<f32, D>,
{
    try_batch_norm2d_add_relu_train(
        x,
        residual,
        weight,
        bias,
        running_mean,
        running_var,
        eps,
        momentum,
    )
    .unwrap()
}

/// Fallible [`batch_norm2d_add_relu_train`].
#[allow(clippy::too_many_arguments)]
pub fn try_batch_norm2d_add_relu_train<B: Dim, const C: usize, H: Dim, W: Dim, D, T, R>(
    x: Tensor<Img<B, C, H, W>, f32, D, T>,
    residual: Tensor<Img<B, C, H, W>, f32, D, R>,
    weight: &Tensor<Rank1<C>, f32, D>,
    bias: &Tensor<Rank1<C>, f32, D>,
    running_mean: &mut Tensor<Rank1<C>, f32, D>,
    running_var: &mut Tensor<Rank1<C>, f32, D>,
    eps: f64,
    momentum: f64,
) -> Result<Tensor<Img<B, C, H, W>, f32, D, T>, D::Err>
where
    D: Device<f32> + BatchNorm2dKernel,
    T: Tape<f32, D> + Merge<R>,
    R: Tape<f32, D>,
{
    batch_norm2d_impl(
        x,
        Some(residual),
        weight,
        bias,
        Stats::Batch {
            running_mean,
            running_var,
            momentum,
        },
        eps,
        true,
    )
}
