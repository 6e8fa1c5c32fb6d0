//! Global average pooling: the mean over each `H × W` plane.

mod cpu_kernel;
#[cfg(feature = "cuda")]
mod cuda_kernel;

use dfdx::prelude::*;

use crate::device::grads_mut_and_ref;
use crate::nn::ops::release_grad;

/// Device kernels for [`global_avg_pool2d`].
pub trait GlobalAvgPool2dKernel: Storage<f32> {
    /// Means of `planes` consecutive planes of `plane` elements each.
    fn global_avg_pool2d_forward<Sx: Shape, Sy: Shape>(
        &self,
        planes: usize,
        plane: usize,
        x: &Tensor<Sx, f32, Self>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err>;

    /// `gx[p, i] += gy[p] / plane`.
    fn global_avg_pool2d_backward(
        &self,
        planes: usize,
        plane: usize,
        gx: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err>;
}

/// Mean over height and width: `(B, C, H, W)` → `(B, C)`, as
/// `torch.nn.AdaptiveAvgPool2d(1)` followed by `flatten(1)` (the ResNet
/// head's pooling). Same results as dfdx's `AvgPoolGlobal`, in one pass
/// without dfdx's generic reduction machinery.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::ops::global_avg_pool2d;
///
/// let dev = Cpu::default();
/// let x: Tensor<Rank4<1, 2, 1, 2>, f32, _> = dev.tensor([[[[1.0, 3.0]], [[-2.0, 0.0]]]]);
/// assert_eq!(global_avg_pool2d(x).array(), [[2.0, -1.0]]);
/// ```
pub fn global_avg_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, D, T>(
    x: Tensor<(B, C, H, W), f32, D, T>,
) -> Tensor<(B, C), f32, D, T>
where
    D: Device<f32> + GlobalAvgPool2dKernel,
    T: Tape<f32, D>,
{
    try_global_avg_pool2d(x).unwrap()
}

/// Fallible [`global_avg_pool2d`].
pub fn try_global_avg_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, D, T>(
    x: Tensor<(B, C, H, W), f32, D, T>,
) -> Result<Tensor<(B, C), f32, D, T>, D::Err>
where
    D: Device<f32> + GlobalAvgPool2dKernel,
    T: Tape<f32, D>,
{
    let (b, c, h, w) = *x.shape();
    let (planes, plane) = (b.size() * c.size(), h.size() * w.size());
    assert!(plane > 0, "global_avg_pool2d needs a non-empty image");
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let dev = x.device().clone();
    let out = dev.global_avg_pool2d_forward(planes, plane, &x, (b, c))?;
    if T::OWNS_TAPE {
        // Only the input's id is needed: the gradient does not depend on x.
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        drop(x);
        tape.add_backward_op(move |grads| {
            let (gx, gy) = grads_mut_and_ref!(&mut *grads, [x_ghost], out_ghost);
            dev.global_avg_pool2d_backward(planes, plane, gx, gy)?;
            release_grad!(grads, out_ghost, dev);
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
