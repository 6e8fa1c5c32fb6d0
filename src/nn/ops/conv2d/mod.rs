//! 2-D convolution (NCHW, square kernel, stride, zero padding, dilation 1,
//! groups 1, optional bias).

mod cpu_kernel;
#[cfg(feature = "cuda")]
mod cuda_kernel;
mod winograd;

#[doc(hidden)]
pub use winograd::profile as winograd_profile;

use dfdx::prelude::*;

use crate::device::grads_mut_and_ref;
use crate::nn::ops::release_grad;

/// The geometry of one convolution call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOp {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub chan_in: usize,
    /// Output channels.
    pub chan_out: usize,
    /// Input height and width.
    pub h_in: usize,
    /// Input width.
    pub w_in: usize,
    /// Output height.
    pub h_out: usize,
    /// Output width.
    pub w_out: usize,
    /// Kernel size (square).
    pub kernel: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl Conv2dOp {
    /// Elements of one input image.
    pub fn in_image(&self) -> usize {
        self.chan_in * self.h_in * self.w_in
    }
    /// Output positions per image (`h_out * w_out`).
    pub fn out_plane(&self) -> usize {
        self.h_out * self.w_out
    }
    /// Rows of the im2col matrix (`chan_in * kernel²`).
    pub fn patch(&self) -> usize {
        self.chan_in * self.kernel * self.kernel
    }
    /// A 1×1, stride-1, unpadded convolution is a plain matrix product.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }
}

/// Output size of a convolution or pooling window along one axis:
/// `(size + 2·padding − kernel) / stride + 1`.
///
/// Panics when the padded input is smaller than the kernel or `stride == 0`.
pub fn conv2d_output_size(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    assert!(stride > 0, "stride must be at least 1");
    assert!(kernel > 0, "kernel size must be at least 1");
    assert!(
        size + 2 * padding >= kernel,
        "input size {size} with padding {padding} is smaller than kernel {kernel}"
    );
    (size + 2 * padding - kernel) / stride + 1
}

/// Device kernels for [`conv2d`]. Implemented for `Cpu` and (feature `cuda`)
/// `Cuda`; inputs are contiguous and tape-free.
pub trait Conv2dKernel: Storage<f32> {
    /// `y = conv(x, w) + b` with shape `out`.
    fn conv2d_forward<Sx: Shape, Sw: Shape, Sb: Shape, Sy: Shape>(
        &self,
        op: &Conv2dOp,
        x: &Tensor<Sx, f32, Self>,
        w: &Tensor<Sw, f32, Self>,
        b: Option<&Tensor<Sb, f32, Self>>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err>;

    /// Accumulates (`+=`) the gradients of `x`, `w` and `b` given the
    /// output's gradient `gy`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward<Sx: Shape, Sw: Shape>(
        &self,
        op: &Conv2dOp,
        x: &Tensor<Sx, f32, Self>,
        w: &Tensor<Sw, f32, Self>,
        gx: &mut Self::Vec,
        gw: &mut Self::Vec,
        gb: Option<&mut Self::Vec>,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err>;
}

/// 2-D convolution of an NCHW batch, as `torch.nn.functional.conv2d` with
/// dilation 1 and groups 1.
///
/// - `x`: `(B, Const<I>, H, W)`; `B`, `H`, `W` may be `usize` or `Const`.
/// - `weight`: `(O, I, K, K)`; `bias`: `(O,)` or `None`.
/// - Output: `(B, Const<O>, H', W')` with runtime spatial sizes
///   `H' = (H + 2·padding − K) / stride + 1` (see [`conv2d_output_size`]).
///
/// With an `OwnedTape` on `x`, the backward pass accumulates gradients for
/// `x`, `weight` and `bias` (looked up by tensor id, as dfdx's layers do).
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::ops::conv2d;
///
/// let dev = Cpu::default();
/// let x: Tensor<Rank4<2, 3, 8, 8>, f32, _> = dev.sample_normal();
/// let w: Tensor<Rank4<4, 3, 3, 3>, f32, _> = dev.sample_normal();
/// let y = conv2d(x.leaky_trace(), &w, None, 2, 1);
/// assert_eq!(y.shape().concrete(), [2, 4, 4, 4]);
/// let grads = y.sum().backward();
/// assert_eq!(grads.get(&w).shape().concrete(), [4, 3, 3, 3]);
/// ```
pub fn conv2d<B, const I: usize, H, W, const O: usize, const K: usize, D, T>(
    x: Tensor<(B, Const<I>, H, W), f32, D, T>,
    weight: &Tensor<Rank4<O, I, K, K>, f32, D>,
    bias: Option<&Tensor<Rank1<O>, f32, D>>,
    stride: usize,
    padding: usize,
) -> Tensor<(B, Const<O>, usize, usize), f32, D, T>
where
    B: Dim,
    H: Dim,
    W: Dim,
    D: Device<f32> + Conv2dKernel,
    T: Tape<f32, D>,
{
    try_conv2d(x, weight, bias, stride, padding).unwrap()
}

/// Fallible [`conv2d`] (device errors such as out-of-memory).
pub fn try_conv2d<B, const I: usize, H, W, const O: usize, const K: usize, D, T>(
    x: Tensor<(B, Const<I>, H, W), f32, D, T>,
    weight: &Tensor<Rank4<O, I, K, K>, f32, D>,
    bias: Option<&Tensor<Rank1<O>, f32, D>>,
    stride: usize,
    padding: usize,
) -> Result<Tensor<(B, Const<O>, usize, usize), f32, D, T>, D::Err>
where
    B: Dim,
    H: Dim,
    W: Dim,
    D: Device<f32> + Conv2dKernel,
    T: Tape<f32, D>,
{
    let (b, _, h, w) = *x.shape();
    let op = Conv2dOp {
        batch: b.size(),
        chan_in: I,
        chan_out: O,
        h_in: h.size(),
        w_in: w.size(),
        h_out: conv2d_output_size(h.size(), K, stride, padding),
        w_out: conv2d_output_size(w.size(), K, stride, padding),
        kernel: K,
        stride,
        padding,
    };
    let out_shape = (b, Const::<O>, op.h_out, op.w_out);
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let dev = x.device().clone();
    let out = dev.conv2d_forward(&op, &x, weight, bias, out_shape)?;
    if T::OWNS_TAPE {
        // Saving is an `Arc` clone: no copy of x or the weights.
        let w = weight.clone();
        let (x_ghost, w_ghost, out_ghost) = (x.ghost(), w.ghost(), out.ghost());
        let b_ghost = bias.map(|b| b.ghost());
        tape.add_backward_op(move |grads| {
            if let Some(b_ghost) = b_ghost {
                let (gx, gw, gb, gy) =
                    grads_mut_and_ref!(&mut *grads, [x_ghost, w_ghost, b_ghost], out_ghost);
                dev.conv2d_backward(&op, &x, &w, gx, gw, Some(gb), gy)?;
            } else {
                let (gx, gw, gy) = grads_mut_and_ref!(&mut *grads, [x_ghost, w_ghost], out_ghost);
                dev.conv2d_backward(&op, &x, &w, gx, gw, None, gy)?;
            }
            release_grad!(grads, out_ghost, dev);
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}
