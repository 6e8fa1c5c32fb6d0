//! Residual blocks in torchvision's layout: [`BasicBlock`] (ResNet-18/34) and
//! [`Bottleneck`] (ResNet-50/101/152, "v1.5": the stride sits on the 3×3
//! conv), their shortcuts ([`Downsample`], [`Identity`]) and [`Stage`], the
//! trait that blocks, tuples of blocks (`layer1` … `layer4`) and
//! [`EmptyStage`] share.

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::nn::ZeroSizedModule;
use dfdx::prelude::*;

use crate::nn::layers::{BatchNorm2d, Conv2d};
use crate::nn::ops::Tail;
use crate::nn::VisionDevice;

/// An NCHW batch with `C` channels (`Const<N>`), run-time batch and size.
pub type Img<C, D, T = NoneTape> = Tensor<(usize, C, usize, usize), f32, D, T>;

/// A residual block, or a sequence of blocks (a tuple, as torchvision's
/// `nn.Sequential` `layerN`; its tensors are named `0.…`, `1.…`).
///
/// Both forwards work with or without a tape:
/// - [`Stage::try_forward_train`] (`&mut self`): batch-norm uses batch
///   statistics and updates the running statistics (PyTorch's `train()`);
/// - [`Stage::try_forward_eval`] (`&self`): batch-norm uses the running
///   statistics (PyTorch's `eval()`); with a tape, the affine parameters and
///   convolutions still get gradients (fine-tuning with frozen statistics).
pub trait Stage<D: VisionDevice>: TensorCollection<f32, D> {
    /// Input channels, `Const<N>`.
    type In: ConstDim;
    /// Output channels, `Const<N>`.
    type Out: ConstDim;
    /// Whether this is an [`EmptyStage`]: a [`ResNet`](super::ResNet)
    /// leaves it out of its layer groups.
    const EMPTY: bool = false;

    /// Training-mode forward (batch statistics, running statistics updated).
    fn try_forward_train<T: Tape<f32, D>>(
        &mut self,
        x: Img<Self::In, D, T>,
    ) -> Result<Img<Self::Out, D, T>, D::Err>;

    /// Evaluation-mode forward (running statistics).
    fn try_forward_eval<T: Tape<f32, D>>(
        &self,
        x: Img<Self::In, D, T>,
    ) -> Result<Img<Self::Out, D, T>, D::Err>;

    /// Sets γ of the last batch-norm of every residual branch to 0, so each
    /// block starts as the identity (torchvision's `zero_init_residual=True`).
    fn try_zero_init_residual(&mut self) -> Result<(), D::Err>;
}

/// A stage slot left empty: no blocks, no tensors, passes its `C`-channel
/// input through. A [`ResNet`](super::ResNet) with `EmptyStage`s as
/// `layer3` and `layer4` has two stages, as
/// [`SmallResNet`](super::SmallResNet).
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyStage<const C: usize>;

impl<const C: usize> ZeroSizedModule for EmptyStage<C> {}

impl<const C: usize, D: VisionDevice> Stage<D> for EmptyStage<C> {
    type In = Const<C>;
    type Out = Const<C>;
    const EMPTY: bool = true;

    fn try_forward_train<T: Tape<f32, D>>(
        &mut self,
        x: Img<Const<C>, D, T>,
    ) -> Result<Img<Const<C>, D, T>, D::Err> {
        Ok(x)
    }

    fn try_forward_eval<T: Tape<f32, D>>(
        &self,
        x: Img<Const<C>, D, T>,
    ) -> Result<Img<Const<C>, D, T>, D::Err> {
        Ok(x)
    }

    fn try_zero_init_residual(&mut self) -> Result<(), D::Err> {
        Ok(())
    }
}

/// The shortcut branch of a block: [`Identity`] or [`Downsample`].
pub trait Shortcut<const I: usize, const O: usize, D: VisionDevice>:
    TensorCollection<f32, D>
{
    /// Training-mode shortcut.
    fn try_shortcut_train<T: Tape<f32, D>>(
        &mut self,
        x: Img<Const<I>, D, T>,
    ) -> Result<Img<Const<O>, D, T>, D::Err>;

    /// Evaluation-mode shortcut.
    fn try_shortcut_eval<T: Tape<f32, D>>(
        &self,
        x: Img<Const<I>, D, T>,
    ) -> Result<Img<Const<O>, D, T>, D::Err>;
}

/// The identity shortcut (no tensors): the block's input is added as is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl ZeroSizedModule for Identity {}

impl<const C: usize, D: VisionDevice> Shortcut<C, C, D> for Identity {
    fn try_shortcut_train<T: Tape<f32, D>>(
        &mut self,
        x: Img<Const<C>, D, T>,
    ) -> Result<Img<Const<C>, D, T>, D::Err> {
        Ok(x)
    }

    fn try_shortcut_eval<T: Tape<f32, D>>(
        &self,
        x: Img<Const<C>, D, T>,
    ) -> Result<Img<Const<C>, D, T>, D::Err> {
        Ok(x)
    }
}

/// torchvision's `downsample`: `Sequential(conv1x1(I, O, stride=S), BatchNorm2d(O))`,
/// whose tensors are named `0.weight` and `1.weight`, `1.bias`, `1.running_*`.
#[derive(Clone, Debug)]
pub struct Downsample<const I: usize, const O: usize, const S: usize, E: Dtype, D: Storage<E>> {
    /// `downsample.0`: 1×1 convolution with stride `S`, no bias.
    pub conv: Conv2d<I, O, 1, S, 0, false, E, D>,
    /// `downsample.1`.
    pub bn: BatchNorm2d<O, E, D>,
}

impl<const I: usize, const O: usize, const S: usize, D: Device<f32>> TensorCollection<f32, D>
    for Downsample<I, O, S, f32, D>
{
    type To<E2: Dtype, D2: Device<E2>> = Downsample<I, O, S, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("0", |s| &s.conv, |s| &mut s.conv),
                Self::module("1", |s| &s.bn, |s| &mut s.bn),
            ),
            |(conv, bn)| Downsample { conv, bn },
        )
    }
}

impl<const I: usize, const O: usize, const S: usize, D: VisionDevice> Shortcut<I, O, D>
    for Downsample<I, O, S, f32, D>
{
    fn try_shortcut_train<T: Tape<f32, D>>(
        &mut self,
        x: Img<Const<I>, D, T>,
    ) -> Result<Img<Const<O>, D, T>, D::Err> {
        let x = self.conv.try_forward(x)?;
        self.bn.try_forward_mut(x)
    }

    fn try_shortcut_eval<T: Tape<f32, D>>(
        &self,
        x: Img<Const<I>, D, T>,
    ) -> Result<Img<Const<O>, D, T>, D::Err> {
        let x = self.conv.try_forward(x)?;
        self.bn.try_forward(x)
    }
}

/// torchvision's `BasicBlock` (expansion 1): `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`
/// with 3×3 convolutions `I → O` (stride `S`) and `O → O`.
///
/// Tensors: `conv1.weight`, `bn1.*`, `conv2.weight`, `bn2.*`, and with a
/// [`Downsample`] shortcut `downsample.0.weight`, `downsample.1.*`.
#[derive(Clone, Debug)]
pub struct BasicBlock<const I: usize, const O: usize, const S: usize, SC, E: Dtype, D: Storage<E>> {
    /// 3×3, stride `S`, `I → O`.
    pub conv1: Conv2d<I, O, 3, S, 1, false, E, D>,
    /// Followed by ReLU.
    pub bn1: BatchNorm2d<O, E, D>,
    /// 3×3, stride 1, `O → O`.
    pub conv2: Conv2d<O, O, 3, 1, 1, false, E, D>,
    /// Last batch-norm of the branch (zero-initialised by `zero_init_residual`).
    pub bn2: BatchNorm2d<O, E, D>,
    /// [`Identity`] or [`Downsample`].
    pub downsample: SC,
}

impl<const I: usize, const O: usize, const S: usize, SC, D> TensorCollection<f32, D>
    for BasicBlock<I, O, S, SC, f32, D>
where
    SC: TensorCollection<f32, D>,
    D: Device<f32>,
{
    type To<E2: Dtype, D2: Device<E2>> = BasicBlock<I, O, S, SC::To<E2, D2>, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("conv2", |s| &s.conv2, |s| &mut s.conv2),
                Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
                Self::module("downsample", |s| &s.downsample, |s| &mut s.downsample),
            ),
            |(conv1, bn1, conv2, bn2, downsample)| BasicBlock {
                conv1,
                bn1,
                conv2,
                bn2,
                downsample,
            },
        )
    }
}

impl<const I: usize, const O: usize, const S: usize, SC, D> Stage<D>
    for BasicBlock<I, O, S, SC, f32, D>
where
    SC: Shortcut<I, O, D>,
    D: VisionDevice,
{
    type In = Const<I>;
    type Out = Const<O>;

    fn try_forward_train<T: Tape<f32, D>>(
        &mut self,
        x: Img<Const<I>, D, T>,
    ) -> Result<Img<Const<O>, D, T>, D::Err> {
        // The shortcut records on an empty tape that the fused tail merges
        // back, so `x` gets the gradients of both branches.
        let shortcut = self.downsample.try_shortcut_train(x.with_empty_tape())?;
        let y = self.conv1.try_forward(x)?;
        let y = self.bn1.try_forward_tail_mut(y, Tail::Relu)?;
        let y = self.conv2.try_forward(y)?;
        self.bn2.try_forward_tail_mut(y, Tail::AddRelu(shortcut))
    }

    fn try_forward_eval<T: Tape<f32, D>>(
        &self,
        x: Img<Const<I>, D, T>,
    ) -> Result<Img<Const<O>, D, T>, D::Err> {
        let shortcut = self.downsample.try_shortcut_eval(x.with_empty_tape())?;
        let y = self.conv1.try_forward(x)?;
        let y = self.bn1.try_forward_tail(y, Tail::Relu)?;
        let y = self.conv2.try_forward(y)?;
        self.bn2.try_forward_tail(y, Tail::AddRelu(shortcut))
    }

    fn try_zero_init_residual(&mut self) -> Result<(), D::Err> {
        self.bn2.weight.try_fill_with_zeros()
    }
}

/// torchvision's `Bottleneck` (expansion 4, "ResNet v1.5"):
/// `relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x))`
/// with convolutions 1×1 `I → M`, 3×3 stride `S` `M → M`, 1×1 `M → O`.
///
/// Tensors: `conv1.weight`, `bn1.*`, `conv2.weight`, `bn2.*`,
/// `conv3.weight`, `bn3.*`, and with a [`Downsample`] shortcut
/// `downsample.0.weight`, `downsample.1.*`.
#[derive(Clone, Debug)]
pub struct Bottleneck<
    const I: usize,
    const M: usize,
    const O: usize,
    const S: usize,
    SC,
    E: Dtype,
    D: Storage<E>,
> {
    /// 1×1, `I → M`.
    pub conv1: Conv2d<I, M, 1, 1, 0, false, E, D>,
    /// Followed by ReLU.
    pub bn1: BatchNorm2d<M, E, D>,
    /// 3×3, stride `S`, `M → M`.
    pub conv2: Conv2d<M, M, 3, S, 1, false, E, D>,
    /// Followed by ReLU.
    pub bn2: BatchNorm2d<M, E, D>,
    /// 1×1, `M → O`.
    pub conv3: Conv2d<M, O, 1, 1, 0, false, E, D>,
    /// Last batch-norm of the branch (zero-initialised by `zero_init_residual`).
    pub bn3: BatchNorm2d<O, E, D>,
    /// [`Identity`] or [`Downsample`].
    pub downsample: SC,
}

impl<const I: usize, const M: usize, const O: usize, const S: usize, SC, D> TensorCollection<f32, D>
    for Bottleneck<I, M, O, S, SC, f32, D>
where
    SC: TensorCollection<f32, D>,
    D: Device<f32>,
{
    type To<E2: Dtype, D2: Device<E2>> = Bottleneck<I, M, O, S, SC::To<E2, D2>, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                (
                    Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                    Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                ),
                (
                    Self::module("conv2", |s| &s.conv2, |s| &mut s.conv2),
                    Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
                ),
                (
                    Self::module("conv3", |s| &s.conv3, |s| &mut s.conv3),
                    Self::module("bn3", |s| &s.bn3, |s| &mut s.bn3),
                ),
                Self::module("downsample", |s| &s.downsample, |s| &mut s.downsample),
            ),
            |((conv1, bn1), (conv2, bn2), (conv3, bn3), downsample)| Bottleneck {
                conv1,
                bn1,
                conv2,
                bn2,
                conv3,
                bn3,
                downsample,
            },
        )
    }
}

impl<const I: usize, const M: usize, const O: usize, const S: usize, SC, D> Stage<D>
    for Bottleneck<I, M, O, S, SC, f32, D>
where
    SC: Shortcut<I, O, D>,
    D: VisionDevice,
{
    type In = Const<I>;
    type Out = Const<O>;

    fn try_forward_train<T: Tape<f32, D>>(
        &mut self,
        x: Img<Const<I>, D, T>,
    ) -> Result<Img<Const<O>, D, T>, D::Err> {
        let shortcut = self.downsample.try_shortcut_train(x.with_empty_tape())?;
        let y = self.conv1.try_forward(x)?;
        let y = self.bn1.try_forward_tail_mut(y, Tail::Relu)?;
        let y = self.conv2.try_forward(y)?;
        let y = self.bn2.try_forward_tail_mut(y, Tail::Relu)?;
        let y = self.conv3.try_forward(y)?;
        self.bn3.try_forward_tail_mut(y, Tail::AddRelu(shortcut))
    }

    fn try_forward_eval<T: Tape<f32, D>>(
        &self,
        x: Img<Const<I>, D, T>,
    ) -> Result<Img<Const<O>, D, T>, D::Err> {
        let shortcut = self.downsample.try_shortcut_eval(x.with_empty_tape())?;
        let y = self.conv1.try_forward(x)?;
        let y = self.bn1.try_forward_tail(y, Tail::Relu)?;
        let y = self.conv2.try_forward(y)?;
        let y = self.bn2.try_forward_tail(y, Tail::Relu)?;
        let y = self.conv3.try_forward(y)?;
        self.bn3.try_forward_tail(y, Tail::AddRelu(shortcut))
    }

    fn try_zero_init_residual(&mut self) -> Result<(), D::Err> {
        self.bn3.weight.try_fill_with_zeros()
    }
}

/// Tuples of stages run in order, like torchvision's `nn.Sequential`;
/// consecutive stages must agree on the channel count (checked at compile time).
macro_rules! tuple_stage {
    ([$($m:ident),+] [$($i:tt),+] $first:ident, $last:ident, [$($prev:ident => $next:ident),*]) => {
        impl<D: VisionDevice, $($m: Stage<D>),+> Stage<D> for ($($m,)+)
        where
            $($next: Stage<D, In = <$prev as Stage<D>>::Out>,)*
        {
            type In = <$first as Stage<D>>::In;
            type Out = <$last as Stage<D>>::Out;

            fn try_forward_train<T: Tape<f32, D>>(
                &mut self,
                x: Img<Self::In, D, T>,
            ) -> Result<Img<Self::Out, D, T>, D::Err> {
                $( let x = self.$i.try_forward_train(x)?; )+
                Ok(x)
            }

            fn try_forward_eval<T: Tape<f32, D>>(
                &self,
                x: Img<Self::In, D, T>,
            ) -> Result<Img<Self::Out, D, T>, D::Err> {
                $( let x = self.$i.try_forward_eval(x)?; )+
                Ok(x)
            }

            fn try_zero_init_residual(&mut self) -> Result<(), D::Err> {
                $( self.$i.try_zero_init_residual()?; )+
                Ok(())
            }
        }
    };
}

tuple_stage!([M1] [0] M1, M1, []);
tuple_stage!([M1, M2] [0, 1] M1, M2, [M1 => M2]);
tuple_stage!([M1, M2, M3] [0, 1, 2] M1, M3, [M1 => M2, M2 => M3]);
tuple_stage!([M1, M2, M3, M4] [0, 1, 2, 3] M1, M4, [M1 => M2, M2 => M3, M3 => M4]);
tuple_stage!([M1, M2, M3, M4, M5] [0, 1, 2, 3, 4] M1, M5, [M1 => M2, M2 => M3, M3 => M4, M4 => M5]);
tuple_stage!(
    [M1, M2, M3, M4, M5, M6] [0, 1, 2, 3, 4, 5] M1, M6,
    [M1 => M2, M2 => M3, M3 => M4, M4 => M5, M5 => M6]
);
