//! [`Conv2d`]: a convolution layer with torchvision's parameter names.

use dfdx::prelude::*;
use rand_distr::{uniform::SampleUniform, Distribution, Normal, StandardNormal, Uniform};

use crate::nn::ops::{try_conv2d, Conv2dKernel};

/// Type-level builders, used with dfdx's `dev.build_module::<M, f32>()`.
pub mod builder {
    /// Builder of [`super::Conv2d`]: `I` input channels, `O` output channels,
    /// `K×K` kernel, stride `S` (default 1), zero padding `P` (default 0),
    /// `BIAS` (default `false`, as every convolution in a ResNet).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Conv2d<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize = 1,
        const P: usize = 0,
        const BIAS: bool = false,
    >;
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const BIAS: bool,
        E,
        D,
    > BuildOnDevice<D, E> for builder::Conv2d<I, O, K, S, P, BIAS>
where
    E: Dtype,
    D: Device<E>,
    Conv2d<I, O, K, S, P, BIAS, E, D>: BuildModule<D, E>,
{
    type Built = Conv2d<I, O, K, S, P, BIAS, E, D>;
}

/// 2-D convolution layer, `torch.nn.Conv2d(I, O, K, stride=S, padding=P,
/// bias=BIAS)` on NCHW batches `(B, Const<I>, H, W)` (`B`, `H`, `W` any
/// `Dim`), producing `(B, Const<O>, usize, usize)`.
///
/// Parameters (safetensors keys `<field>.weight`, `<field>.bias`, as
/// torchvision): `weight` `(O, I, K, K)`, initialised Kaiming-normal with
/// fan-out and ReLU gain like torchvision's ResNet (`std = √(2 / (O·K²))`);
/// `bias` `(O,)` only when `BIAS`, initialised `U(±1/√(I·K²))` like PyTorch.
/// Forward works with and without a tape; `Module` and `ModuleMut` agree.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::builders::Conv2d;
///
/// let dev = Cpu::default();
/// let conv = dev.build_module::<Conv2d<3, 8, 3, 1, 1>, f32>();
/// let x: Tensor<Rank4<2, 3, 16, 16>, f32, _> = dev.sample_normal();
/// let y = conv.forward(x);
/// assert_eq!(y.shape().concrete(), [2, 8, 16, 16]);
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    const BIAS: bool,
    E: Dtype,
    D: Storage<E>,
> {
    /// `(O, I, K, K)` filters.
    pub weight: Tensor<Rank4<O, I, K, K>, E, D>,
    /// `(O,)` bias; `Some` iff `BIAS`.
    pub bias: Option<Tensor<Rank1<O>, E, D>>,
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const BIAS: bool,
        E,
        D,
    > TensorCollection<E, D> for Conv2d<I, O, K, S, P, BIAS, E, D>
where
    E: Dtype + num_traits::Float + SampleUniform,
    StandardNormal: Distribution<E>,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = Conv2d<I, O, K, S, P, BIAS, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let weight = Self::tensor(
            "weight",
            |s| &s.weight,
            |s| &mut s.weight,
            TensorOptions::reset_with(|t| {
                // torchvision ResNet: kaiming_normal_(mode="fan_out", nonlinearity="relu").
                let std = (2.0 / (O * K * K) as f64).sqrt();
                let std = E::from(std).expect("kaiming std fits the dtype");
                t.try_fill_with_distr(Normal::new(E::zero(), std).expect("positive std"))
            }),
        );
        if BIAS {
            let bias = Self::tensor(
                "bias",
                |s| s.bias.as_ref().expect("Conv2d<BIAS = true> has a bias"),
                |s| s.bias.as_mut().expect("Conv2d<BIAS = true> has a bias"),
                TensorOptions::reset_with(|t| {
                    let b = 1.0 / ((I * K * K) as f64).sqrt();
                    let b = E::from(b).expect("bias bound fits the dtype");
                    t.try_fill_with_distr(Uniform::new(-b, b))
                }),
            );
            visitor.visit_fields((weight, bias), |(weight, bias)| Conv2d {
                weight,
                bias: Some(bias),
            })
        } else {
            visitor.visit_fields(weight, |weight| Conv2d { weight, bias: None })
        }
    }
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const BIAS: bool,
        B,
        H,
        W,
        D,
        T,
    > Module<Tensor<(B, Const<I>, H, W), f32, D, T>> for Conv2d<I, O, K, S, P, BIAS, f32, D>
where
    B: Dim,
    H: Dim,
    W: Dim,
    D: Device<f32> + Conv2dKernel,
    T: Tape<f32, D>,
{
    type Output = Tensor<(B, Const<O>, usize, usize), f32, D, T>;
    type Error = D::Err;

    fn try_forward(
        &self,
        x: Tensor<(B, Const<I>, H, W), f32, D, T>,
    ) -> Result<Self::Output, D::Err> {
        try_conv2d(x, &self.weight, self.bias.as_ref(), S, P)
    }
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const BIAS: bool,
        E: Dtype,
        D: Storage<E>,
    > NonMutableModule for Conv2d<I, O, K, S, P, BIAS, E, D>
{
}
