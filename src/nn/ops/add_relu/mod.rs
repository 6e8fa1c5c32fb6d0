//! `relu(a + b)`: a residual connection's add and activation in one pass.

mod cpu_kernel;
#[cfg(feature = "cuda")]
mod cuda_kernel;

use dfdx::prelude::*;

use crate::device::grads_mut_and_ref;
use crate::nn::ops::release_grad;

/// Device kernels for [`add_relu`].
pub trait AddReluKernel: Storage<f32> {
    /// `max(a + b, 0)`.
    fn add_relu_forward<S: Shape>(
        &self,
        a: &Tensor<S, f32, Self>,
        b: &Tensor<S, f32, Self>,
    ) -> Result<Tensor<S, f32, Self>, Self::Err>;

    /// `ga += gy·[y > 0]`, `gb += gy·[y > 0]`.
    fn add_relu_backward<S: Shape>(
        &self,
        y: &Tensor<S, f32, Self>,
        ga: &mut Self::Vec,
        gb: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err>;
}

/// `relu(a + b)` element-wise, in one pass with one output buffer (dfdx's
/// `(a + b).relu()` makes two passes and a temporary). The tapes are merged:
/// put the tape on `a` (or on both). `a` and `b` must be different tensors.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::ops::add_relu;
///
/// let dev = Cpu::default();
/// let a: Tensor<Rank1<3>, f32, _> = dev.tensor([1.0, -2.0, 0.5]);
/// let b: Tensor<Rank1<3>, f32, _> = dev.tensor([1.0, 1.0, -1.0]);
/// assert_eq!(add_relu(a, b).array(), [2.0, 0.0, 0.0]);
/// ```
pub fn add_relu<S: Shape, D, T, R>(
    a: Tensor<S, f32, D, T>,
    b: Tensor<S, f32, D, R>,
) -> Tensor<S, f32, D, T>
where
    D: Device<f32> + AddReluKernel,
    T: Tape<f32, D> + Merge<R>,
    R: Tape<f32, D>,
{
    try_add_relu(a, b).unwrap()
}

/// Fallible [`add_relu`].
pub fn try_add_relu<S: Shape, D, T, R>(
    a: Tensor<S, f32, D, T>,
    b: Tensor<S, f32, D, R>,
) -> Result<Tensor<S, f32, D, T>, D::Err>
where
    D: Device<f32> + AddReluKernel,
    T: Tape<f32, D> + Merge<R>,
    R: Tape<f32, D>,
{
    assert_eq!(a.shape(), b.shape(), "add_relu needs equal shapes");
    let (a, a_tape) = a.try_contiguous()?.split_tape();
    let (b, b_tape) = b.try_contiguous()?.split_tape();
    let mut tape = a_tape.merge(b_tape);
    let dev = a.device().clone();
    let out = dev.add_relu_forward(&a, &b)?;
    if T::OWNS_TAPE {
        let y = out.clone();
        let (a_ghost, b_ghost, out_ghost) = (a.ghost(), b.ghost(), out.ghost());
        drop((a, b));
        tape.add_backward_op(move |grads| {
            let (ga, gb, gy) = grads_mut_and_ref!(&mut *grads, [a_ghost, b_ghost], out_ghost);
            dev.add_relu_backward(&y, ga, gb, gy)?;
            release_grad!(grads, out_ghost, dev);
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
