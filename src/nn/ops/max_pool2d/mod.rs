//! 2-D max pooling (square window, stride, padding that never wins).

mod cpu_kernel;
#[cfg(feature = "cuda")]
mod cuda_kernel;

use dfdx::prelude::*;

use crate::device::grads_mut_and_ref;
use crate::nn::ops::conv2d::conv2d_output_size;
use crate::nn::ops::release_grad;

/// The geometry of one pooling call (over `planes = B·C` independent planes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dOp {
    /// Independent `H × W` planes (`batch · channels`).
    pub planes: usize,
    /// Input height.
    pub h_in: usize,
    /// Input width.
    pub w_in: usize,
    /// Output height.
    pub h_out: usize,
    /// Output width.
    pub w_out: usize,
    /// Window size (square).
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Implicit `−∞` padding on every side.
    pub padding: usize,
}

/// Device kernels for [`max_pool2d`].
pub trait MaxPool2dKernel: Storage<f32> {
    /// Window maxima with output shape `out`.
    fn max_pool2d_forward<Sx: Shape, Sy: Shape>(
        &self,
        op: &Pool2dOp,
        x: &Tensor<Sx, f32, Self>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err>;

    /// `gx[argmax] += gy` for every window (first maximum in row-major order).
    fn max_pool2d_backward<Sx: Shape>(
        &self,
        op: &Pool2dOp,
        x: &Tensor<Sx, f32, Self>,
        gx: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err>;
}

/// Max pooling over `kernel × kernel` windows, as
/// `torch.nn.functional.max_pool2d(x, kernel, stride, padding)`: padded
/// positions never win, NaN propagates, and the gradient goes to the first
/// maximum of each window (row-major), like PyTorch on CPU.
///
/// `x`: `(B, C, H, W)` (any `Dim`s); output `(B, C, H', W')` with
/// `H' = (H + 2·padding − kernel) / stride + 1`. PyTorch requires
/// `padding ≤ kernel / 2` so that no window is all padding; so does this.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::ops::max_pool2d;
///
/// let dev = Cpu::default();
/// let x: Tensor<Rank4<1, 1, 2, 2>, f32, _> = dev.tensor([[[[1.0, 4.0], [3.0, 2.0]]]]);
/// let y = max_pool2d(x, 2, 2, 0);
/// assert_eq!(y.as_vec(), vec![4.0]);
/// ```
pub fn max_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, D, T>(
    x: Tensor<(B, C, H, W), f32, D, T>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Tensor<(B, C, usize, usize), f32, D, T>
where
    D: Device<f32> + MaxPool2dKernel,
    T: Tape<f32, D>,
{
    try_max_pool2d(x, kernel, stride, padding).unwrap()
}

/// Fallible [`max_pool2d`].
pub fn try_max_pool2d<B: Dim, C: Dim, H: Dim, W: Dim, D, T>(
    x: Tensor<(B, C, H, W), f32, D, T>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor<(B, C, usize, usize), f32, D, T>, D::Err>
where
    D: Device<f32> + MaxPool2dKernel,
    T: Tape<f32, D>,
{
    assert!(
        2 * padding <= kernel,
        "max_pool2d padding {padding} must be at most half the kernel {kernel}"
    );
    let (b, c, h, w) = *x.shape();
    assert!(
        h.size() > 0 && w.size() > 0,
        "max_pool2d needs a non-empty image, got {}x{}",
        h.size(),
        w.size()
    );
    let op = Pool2dOp {
        planes: b.size() * c.size(),
        h_in: h.size(),
        w_in: w.size(),
        h_out: conv2d_output_size(h.size(), kernel, stride, padding),
        w_out: conv2d_output_size(w.size(), kernel, stride, padding),
        kernel,
        stride,
        padding,
    };
    let out_shape = (b, c, op.h_out, op.w_out);
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let dev = x.device().clone();
    let out = dev.max_pool2d_forward(&op, &x, out_shape)?;
    if T::OWNS_TAPE {
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let (gx, gy) = grads_mut_and_ref!(&mut *grads, [x_ghost], out_ghost);
            dev.max_pool2d_backward(&op, &x, gx, gy)?;
            release_grad!(grads, out_ghost, dev);
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
