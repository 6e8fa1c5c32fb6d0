//! Parameter-free pooling layers: [`MaxPool2d`] and [`GlobalAvgPool2d`].

use dfdx::prelude::*;

use crate::nn::ops::{
    try_global_avg_pool2d, try_max_pool2d, GlobalAvgPool2dKernel, MaxPool2dKernel,
};

/// `torch.nn.MaxPool2d(K, stride=S, padding=P)` on `(B, C, H, W)` batches,
/// producing `(B, C, usize, usize)`. torchvision's ResNet stem is
/// `MaxPool2d<3, 2, 1>`. Builder and module are the same type.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::builders::MaxPool2d;
///
/// let dev = Cpu::default();
/// let pool = dev.build_module::<MaxPool2d<3, 2, 1>, f32>();
/// let x: Tensor<Rank4<1, 2, 8, 8>, f32, _> = dev.sample_normal();
/// assert_eq!(pool.forward(x).shape().concrete(), [1, 2, 4, 4]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MaxPool2d<const K: usize, const S: usize = K, const P: usize = 0>;

impl<const K: usize, const S: usize, const P: usize> ZeroSizedModule for MaxPool2d<K, S, P> {}
impl<const K: usize, const S: usize, const P: usize> NonMutableModule for MaxPool2d<K, S, P> {}

impl<const K: usize, const S: usize, const P: usize, B: Dim, C: Dim, H: Dim, W: Dim, D, T>
    Module<Tensor<(B, C, H, W), f32, D, T>> for MaxPool2d<K, S, P>
where
    D: Device<f32> + MaxPool2dKernel,
    T: Tape<f32, D>,
{
    type Output = Tensor<(B, C, usize, usize), f32, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, C, H, W), f32, D, T>) -> Result<Self::Output, D::Err> {
        try_max_pool2d(x, K, S, P)
    }
}

/// Mean over height and width, `(B, C, H, W)` → `(B, C)`: torchvision's
/// `avgpool` + `flatten`. Builder and module are the same type.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalAvgPool2d;

impl ZeroSizedModule for GlobalAvgPool2d {}
impl NonMutableModule for GlobalAvgPool2d {}

impl<B: Dim, C: Dim, H: Dim, W: Dim, D, T> Module<Tensor<(B, C, H, W), f32, D, T>>
    for GlobalAvgPool2d
where
    D: Device<f32> + GlobalAvgPool2dKernel,
    T: Tape<f32, D>,
{
    type Output = Tensor<(B, C), f32, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, C, H, W), f32, D, T>) -> Result<Self::Output, D::Err> {
        try_global_avg_pool2d(x)
    }
}
