//! The networks: [`ResNet`] (torchvision's 7×7 stem, four stages), with
//! [`ResNet50`] and [`ResNet18`], and [`SmallResNet`] for 8×8 … 32×32 inputs.

use dfdx::nn::modules::Linear;
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;

use super::block::{BasicBlock, Bottleneck, Downsample, Identity, Img, Stage};
use super::classifier::{
    BnMode, Features, ImageClassifier, Images, LayerGroup, LayerGroupVisitor, Logits,
};
use crate::nn::layers::{BatchNorm2d, Conv2d};
use crate::nn::ops::try_max_pool2d;
use crate::nn::VisionDevice;

/// A ResNet stem: `conv1` (K×K, stride S, padding P, `3 → W`), `bn1`, ReLU,
/// and with `POOL` torchvision's `maxpool` (3×3, stride 2, padding 1).
///
/// Tensors are named `conv1.weight`, `bn1.*`; the models flatten them to
/// the top level, as torchvision does.
#[derive(Clone, Debug)]
pub struct Stem<
    const W: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    const POOL: bool,
    E: Dtype,
    D: Storage<E>,
> {
    /// The stem convolution (no bias).
    pub conv1: Conv2d<3, W, K, S, P, false, E, D>,
    /// Its batch-norm (followed by ReLU).
    pub bn1: BatchNorm2d<W, E, D>,
}

/// torchvision's ImageNet stem: 7×7/2 conv, BN, ReLU, 3×3/2 max-pool.
pub type ImageNetStem<const W: usize, E = f32, D = Cpu> = Stem<W, 7, 2, 3, true, E, D>;
/// The stem for tiny images: 3×3/1 conv, BN, ReLU, no pooling.
pub type SmallStem<const W: usize, E = f32, D = Cpu> = Stem<W, 3, 1, 1, false, E, D>;

impl<const W: usize, const K: usize, const S: usize, const P: usize, const POOL: bool, D>
    TensorCollection<f32, D> for Stem<W, K, S, P, POOL, f32, D>
where
    D: Device<f32>,
{
    type To<E2: Dtype, D2: Device<E2>> = Stem<W, K, S, P, POOL, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
            ),
            |(conv1, bn1)| Stem { conv1, bn1 },
        )
    }
}

impl<const W: usize, const K: usize, const S: usize, const P: usize, const POOL: bool, D> Stage<D>
    for Stem<W, K, S, P, POOL, f32, D>
where
    D: VisionDevice,
{
    type In = Const<3>;
    type Out = Const<W>;

    fn try_forward_train<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
    ) -> Result<Img<Const<W>, D, T>, D::Err> {
        let x = self.conv1.try_forward(x)?;
        let x = self.bn1.try_forward_relu_mut(x)?;
        if POOL {
            try_max_pool2d(x, 3, 2, 1)
        } else {
            Ok(x)
        }
    }

    fn try_forward_eval<T: Tape<f32, D>>(
        &self,
        x: Images<D, T>,
    ) -> Result<Img<Const<W>, D, T>, D::Err> {
        let x = self.conv1.try_forward(x)?;
        let x = self.bn1.try_forward_relu(x)?;
        if POOL {
            try_max_pool2d(x, 3, 2, 1)
        } else {
            Ok(x)
        }
    }

    fn try_zero_init_residual(&mut self) -> Result<(), D::Err> {
        Ok(())
    }
}

/// A torchvision-layout ResNet: ImageNet stem ([`ImageNetStem`]`<W>`),
/// stages `layer1` … `layer4` (tuples of [`BasicBlock`]s or
/// [`Bottleneck`]s, see [`Stage`]), global average pooling and `fc`
/// (`F → C`).
///
/// Tensor names are exactly torchvision's `state_dict` keys (minus
/// `num_batches_tracked`): `conv1.weight`, `bn1.running_var`,
/// `layer2.0.downsample.1.weight`, `fc.bias`, …
///
/// Use the aliases [`ResNet50`] and [`ResNet18`]; other widths and depths
/// are this type with other stages. Implements [`ImageClassifier`]
/// (the trainer's interface) and dfdx's `Module` (eval-mode batch-norm,
/// `&self`) and `ModuleMut` (train-mode batch-norm, `&mut self`) on
/// [`Images`], with or without a tape.
#[derive(Clone, Debug)]
pub struct ResNet<
    const W: usize,
    L1,
    L2,
    L3,
    L4,
    const F: usize,
    const C: usize,
    E: Dtype,
    D: Storage<E>,
> {
    /// `conv1`, `bn1` (+ ReLU, max-pool).
    pub stem: ImageNetStem<W, E, D>,
    /// Stage 1 (stride 1).
    pub layer1: L1,
    /// Stage 2 (stride 2).
    pub layer2: L2,
    /// Stage 3 (stride 2).
    pub layer3: L3,
    /// Stage 4 (stride 2).
    pub layer4: L4,
    /// The classification head, `F → C`.
    pub fc: Linear<F, C, E, D>,
}

impl<const W: usize, L1, L2, L3, L4, const F: usize, const C: usize, D> TensorCollection<f32, D>
    for ResNet<W, L1, L2, L3, L4, F, C, f32, D>
where
    L1: TensorCollection<f32, D>,
    L2: TensorCollection<f32, D>,
    L3: TensorCollection<f32, D>,
    L4: TensorCollection<f32, D>,
    D: Device<f32>,
{
    type To<E2: Dtype, D2: Device<E2>> =
        ResNet<W, L1::To<E2, D2>, L2::To<E2, D2>, L3::To<E2, D2>, L4::To<E2, D2>, F, C, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                (
                    Self::module("conv1", |s| &s.stem.conv1, |s| &mut s.stem.conv1),
                    Self::module("bn1", |s| &s.stem.bn1, |s| &mut s.stem.bn1),
                ),
                Self::module("layer1", |s| &s.layer1, |s| &mut s.layer1),
                Self::module("layer2", |s| &s.layer2, |s| &mut s.layer2),
                Self::module("layer3", |s| &s.layer3, |s| &mut s.layer3),
                Self::module("layer4", |s| &s.layer4, |s| &mut s.layer4),
                Self::module("fc", |s| &s.fc, |s| &mut s.fc),
            ),
            |((conv1, bn1), layer1, layer2, layer3, layer4, fc)| ResNet {
                stem: Stem { conv1, bn1 },
                layer1,
                layer2,
                layer3,
                layer4,
                fc,
            },
        )
    }
}

impl<const W: usize, L1, L2, L3, L4, const F: usize, const C: usize, D> ImageClassifier<D>
    for ResNet<W, L1, L2, L3, L4, F, C, f32, D>
where
    D: VisionDevice + 'static,
    L1: Stage<D, In = Const<W>> + 'static,
    L2: Stage<D, In = L1::Out> + 'static,
    L3: Stage<D, In = L2::Out> + 'static,
    L4: Stage<D, In = L3::Out, Out = Const<F>> + 'static,
{
    type FeatureDim = Const<F>;
    type ClassDim = Const<C>;
    type Head = Linear<F, C, f32, D>;
    const HEAD: &'static str = "fc";
    /// fastai's `_resnet_split`: `body[:6]` (stem, `layer1`, `layer2`) |
    /// `body[6:]` (`layer3`, `layer4`) | the head.
    const GROUPS: &'static [&'static str] = &["stem-layer2", "layer3-layer4", "fc"];
    const MODULES: &'static [(&'static str, usize)] = &[
        ("stem", 0),
        ("layer1", 0),
        ("layer2", 0),
        ("layer3", 1),
        ("layer4", 1),
        ("fc", 2),
    ];

    fn try_forward_body<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        mode: BnMode,
    ) -> Result<Img<Const<F>, D, T>, D::Err> {
        if mode == BnMode::Eval {
            return self.try_forward_body_eval(x);
        }
        let x = self.stem.try_forward_train(x)?;
        let x = self.layer1.try_forward_train(x)?;
        let x = self.layer2.try_forward_train(x)?;
        let x = self.layer3.try_forward_train(x)?;
        self.layer4.try_forward_train(x)
    }

    fn try_forward_body_eval<T: Tape<f32, D>>(
        &self,
        x: Images<D, T>,
    ) -> Result<Img<Const<F>, D, T>, D::Err> {
        let x = self.stem.try_forward_eval(x)?;
        let x = self.layer1.try_forward_eval(x)?;
        let x = self.layer2.try_forward_eval(x)?;
        let x = self.layer3.try_forward_eval(x)?;
        self.layer4.try_forward_eval(x)
    }

    fn try_forward_head<T: Tape<f32, D>>(
        &self,
        features: Features<Const<F>, D, T>,
    ) -> Result<Logits<Const<C>, D, T>, D::Err> {
        self.fc.try_forward(features)
    }

    fn head(&self) -> &Self::Head {
        &self.fc
    }

    fn head_mut(&mut self) -> &mut Self::Head {
        &mut self.fc
    }

    fn try_visit_groups<V: LayerGroupVisitor<D>>(&mut self, v: &mut V) -> Result<(), V::Err> {
        let group = |slot| LayerGroup::nth(Self::GROUPS, Self::MODULES, slot);
        v.visit(group(0), &mut self.stem)?;
        v.visit(group(1), &mut self.layer1)?;
        v.visit(group(2), &mut self.layer2)?;
        v.visit(group(3), &mut self.layer3)?;
        v.visit(group(4), &mut self.layer4)?;
        v.visit(group(5), &mut self.fc)
    }

    fn try_zero_init_residual(&mut self) -> Result<(), D::Err> {
        self.layer1.try_zero_init_residual()?;
        self.layer2.try_zero_init_residual()?;
        self.layer3.try_zero_init_residual()?;
        self.layer4.try_zero_init_residual()
    }
}

/// A small ResNet for tiny images (8×8 to 32×32, 3 channels): a 3×3/1 stem
/// with 8 channels and no pooling ([`SmallStem`]), `layer1` = one
/// [`BasicBlock`] 8 → 8, `layer2` = one [`BasicBlock`] 8 → 16 with stride 2
/// and a [`Downsample`], global average pooling and `fc` (16 → `C`):
/// 5,266 parameters for 10 classes. Same parameter names and
/// [`ImageClassifier`] interface as [`ResNet50`], so tests and the quick
/// tuner run exercise the same code paths in milliseconds.
#[derive(Clone, Debug)]
pub struct SmallResNet<const C: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// `conv1`, `bn1` (+ ReLU).
    pub stem: SmallStem<8, E, D>,
    /// `layer1.0`: 8 → 8, stride 1.
    pub layer1: (BasicBlock<8, 8, 1, Identity, E, D>,),
    /// `layer2.0`: 8 → 16, stride 2.
    pub layer2: (BasicBlock<8, 16, 2, Downsample<8, 16, 2, E, D>, E, D>,),
    /// The classification head, 16 → `C`.
    pub fc: Linear<16, C, E, D>,
}

impl<const C: usize, D: Device<f32>> TensorCollection<f32, D> for SmallResNet<C, f32, D> {
    type To<E2: Dtype, D2: Device<E2>> = SmallResNet<C, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv1", |s| &s.stem.conv1, |s| &mut s.stem.conv1),
                Self::module("bn1", |s| &s.stem.bn1, |s| &mut s.stem.bn1),
                Self::module("layer1", |s| &s.layer1, |s| &mut s.layer1),
                Self::module("layer2", |s| &s.layer2, |s| &mut s.layer2),
                Self::module("fc", |s| &s.fc, |s| &mut s.fc),
            ),
            |(conv1, bn1, layer1, layer2, fc)| SmallResNet {
                stem: Stem { conv1, bn1 },
                layer1,
                layer2,
                fc,
            },
        )
    }
}

impl<const C: usize, D: VisionDevice + 'static> ImageClassifier<D> for SmallResNet<C, f32, D> {
    type FeatureDim = Const<16>;
    type ClassDim = Const<C>;
    type Head = Linear<16, C, f32, D>;
    const HEAD: &'static str = "fc";
    /// The same shape as fastai's ResNet split: the early layers (stem,
    /// `layer1`) | the last stage (`layer2`) | the head.
    const GROUPS: &'static [&'static str] = &["stem-layer1", "layer2", "fc"];
    const MODULES: &'static [(&'static str, usize)] =
        &[("stem", 0), ("layer1", 0), ("layer2", 1), ("fc", 2)];

    fn try_forward_body<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        mode: BnMode,
    ) -> Result<Img<Const<16>, D, T>, D::Err> {
        if mode == BnMode::Eval {
            return self.try_forward_body_eval(x);
        }
        let x = self.stem.try_forward_train(x)?;
        let x = self.layer1.try_forward_train(x)?;
        self.layer2.try_forward_train(x)
    }

    fn try_forward_body_eval<T: Tape<f32, D>>(
        &self,
        x: Images<D, T>,
    ) -> Result<Img<Const<16>, D, T>, D::Err> {
        let x = self.stem.try_forward_eval(x)?;
        let x = self.layer1.try_forward_eval(x)?;
        self.layer2.try_forward_eval(x)
    }

    fn try_forward_head<T: Tape<f32, D>>(
        &self,
        features: Features<Const<16>, D, T>,
    ) -> Result<Logits<Const<C>, D, T>, D::Err> {
        self.fc.try_forward(features)
    }

    fn head(&self) -> &Self::Head {
        &self.fc
    }

    fn head_mut(&mut self) -> &mut Self::Head {
        &mut self.fc
    }

    fn try_visit_groups<V: LayerGroupVisitor<D>>(&mut self, v: &mut V) -> Result<(), V::Err> {
        let group = |slot| LayerGroup::nth(Self::GROUPS, Self::MODULES, slot);
        v.visit(group(0), &mut self.stem)?;
        v.visit(group(1), &mut self.layer1)?;
        v.visit(group(2), &mut self.layer2)?;
        v.visit(group(3), &mut self.fc)
    }

    fn try_zero_init_residual(&mut self) -> Result<(), D::Err> {
        self.layer1.try_zero_init_residual()?;
        self.layer2.try_zero_init_residual()
    }
}

/// dfdx `Module` (eval-mode batch-norm) and `ModuleMut` (train-mode) for a
/// classifier, images → logits, matching the vision layers' convention.
macro_rules! module_impls {
    ([$($g:tt)*] $model:ty, $classes:ty, [$($bounds:tt)*]) => {
        impl<$($g)*, T: Tape<f32, D>> Module<Images<D, T>> for $model
        where
            $($bounds)*
        {
            type Output = Logits<$classes, D, T>;
            type Error = D::Err;

            fn try_forward(&self, x: Images<D, T>) -> Result<Self::Output, D::Err> {
                self.try_forward_logits_eval(x)
            }
        }

        impl<$($g)*, T: Tape<f32, D>> ModuleMut<Images<D, T>> for $model
        where
            $($bounds)*
        {
            type Output = Logits<$classes, D, T>;
            type Error = D::Err;

            fn try_forward_mut(&mut self, x: Images<D, T>) -> Result<Self::Output, D::Err> {
                self.try_forward_logits(x, BnMode::Train)
            }
        }
    };
}

module_impls!(
    [const W: usize, L1, L2, L3, L4, const F: usize, const C: usize, D]
    ResNet<W, L1, L2, L3, L4, F, C, f32, D>,
    Const<C>,
    [
        D: VisionDevice + 'static,
        L1: Stage<D, In = Const<W>> + 'static,
        L2: Stage<D, In = L1::Out> + 'static,
        L3: Stage<D, In = L2::Out> + 'static,
        L4: Stage<D, In = L3::Out, Out = Const<F>> + 'static,
    ]
);

module_impls!(
    [const C: usize, D]
    SmallResNet<C, f32, D>,
    Const<C>,
    [D: VisionDevice + 'static,]
);

/// Bottleneck with an identity shortcut, `C → M → C`.
type BnId<const C: usize, const M: usize, E, D> = Bottleneck<C, M, C, 1, Identity, E, D>;
/// Bottleneck with a downsampling shortcut (first block of a stage).
type BnDown<const I: usize, const M: usize, const O: usize, const S: usize, E, D> =
    Bottleneck<I, M, O, S, Downsample<I, O, S, E, D>, E, D>;

/// ResNet-50's `layer1`: 3 Bottlenecks, 64 → 256 channels.
pub type ResNet50Layer1<E = f32, D = Cpu> = (
    BnDown<64, 64, 256, 1, E, D>,
    BnId<256, 64, E, D>,
    BnId<256, 64, E, D>,
);
/// ResNet-50's `layer2`: 4 Bottlenecks, 256 → 512 channels, stride 2.
pub type ResNet50Layer2<E = f32, D = Cpu> = (
    BnDown<256, 128, 512, 2, E, D>,
    BnId<512, 128, E, D>,
    BnId<512, 128, E, D>,
    BnId<512, 128, E, D>,
);
/// ResNet-50's `layer3`: 6 Bottlenecks, 512 → 1024 channels, stride 2.
pub type ResNet50Layer3<E = f32, D = Cpu> = (
    BnDown<512, 256, 1024, 2, E, D>,
    BnId<1024, 256, E, D>,
    BnId<1024, 256, E, D>,
    BnId<1024, 256, E, D>,
    BnId<1024, 256, E, D>,
    BnId<1024, 256, E, D>,
);
/// ResNet-50's `layer4`: 3 Bottlenecks, 1024 → 2048 channels, stride 2.
pub type ResNet50Layer4<E = f32, D = Cpu> = (
    BnDown<1024, 512, 2048, 2, E, D>,
    BnId<2048, 512, E, D>,
    BnId<2048, 512, E, D>,
);

/// torchvision's `resnet50` (25.6 M parameters; 2048 features) with `C`
/// classes. Build with `dev.build_module::<builders::ResNet50<C>, f32>()`
/// or `ResNet50::<C, f32, _>::build(&dev)`.
pub type ResNet50<const C: usize, E = f32, D = Cpu> = ResNet<
    64,
    ResNet50Layer1<E, D>,
    ResNet50Layer2<E, D>,
    ResNet50Layer3<E, D>,
    ResNet50Layer4<E, D>,
    2048,
    C,
    E,
    D,
>;

/// BasicBlock with an identity shortcut, `C → C`.
type BbId<const C: usize, E, D> = BasicBlock<C, C, 1, Identity, E, D>;
/// BasicBlock with a downsampling shortcut.
type BbDown<const I: usize, const O: usize, const S: usize, E, D> =
    BasicBlock<I, O, S, Downsample<I, O, S, E, D>, E, D>;

/// torchvision's `resnet18` (11.7 M parameters; 512 features) with `C`
/// classes. `layer1` has no downsample (64 → 64, stride 1), as in torchvision.
pub type ResNet18<const C: usize, E = f32, D = Cpu> = ResNet<
    64,
    (BbId<64, E, D>, BbId<64, E, D>),
    (BbDown<64, 128, 2, E, D>, BbId<128, E, D>),
    (BbDown<128, 256, 2, E, D>, BbId<256, E, D>),
    (BbDown<256, 512, 2, E, D>, BbId<512, E, D>),
    512,
    C,
    E,
    D,
>;

/// Type-level builders for `dev.build_module::<builders::ResNet50<C>, f32>()`.
pub mod builders {
    use dfdx::prelude::*;

    macro_rules! builder {
        ($(#[$doc:meta])* $name:ident => $built:ident) => {
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, Default)]
            pub struct $name<const C: usize>;

            impl<const C: usize, D: Device<f32>> BuildOnDevice<D, f32> for $name<C>
            where
                super::$built<C, f32, D>: BuildModule<D, f32>,
            {
                type Built = super::$built<C, f32, D>;
            }
        };
    }

    builder!(
        /// Builds [`super::ResNet50`]`<C, f32, D>`.
        ResNet50 => ResNet50
    );
    builder!(
        /// Builds [`super::ResNet18`]`<C, f32, D>`.
        ResNet18 => ResNet18
    );
    builder!(
        /// Builds [`super::SmallResNet`]`<C, f32, D>`.
        SmallResNet => SmallResNet
    );
}
