//! The networks: [`ResNet`] (a stem, up to four stages, the head), with
//! [`ResNet50`] and [`ResNet18`] (torchvision's 7×7 stem, four stages) and
//! [`SmallResNet`] (3×3 stem, two stages) for 8×8 … 32×32 inputs.

use dfdx::nn::modules::Linear;
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;

use super::block::{BasicBlock, Bottleneck, Downsample, EmptyStage, Identity, Img, Stage};
use super::classifier::{
    BnMode, Features, ImageClassifier, Images, LayerGroup, LayerGroupVisitor, Logits,
};
use crate::nn::layers::{BatchNorm2d, Conv2d};
use crate::nn::ops::{try_global_avg_pool2d, try_max_pool2d, Tail};
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
        let x = self.bn1.try_forward_tail_mut(x, Tail::Relu)?;
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
        let x = self.bn1.try_forward_tail(x, Tail::Relu)?;
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

/// A torchvision-layout ResNet: a stem `St` ([`ImageNetStem`]`<W>` for the
/// ImageNet models, [`SmallStem`] for tiny images), stages `layer1` …
/// `layer4` (tuples of [`BasicBlock`]s or [`Bottleneck`]s, see [`Stage`];
/// `layer3`/`layer4` may be [`EmptyStage`]s for a shallower net), global
/// average pooling and `fc` (`F → C`).
///
/// Tensor names are exactly torchvision's `state_dict` keys (minus
/// `num_batches_tracked`): `conv1.weight`, `bn1.running_var`,
/// `layer2.0.downsample.1.weight`, `fc.bias`, … (an empty stage has none).
///
/// Use the aliases [`ResNet50`], [`ResNet18`] and [`SmallResNet`]; other
/// widths and depths are this type with other stages. Implements
/// [`ImageClassifier`] (the trainer's interface) and dfdx's `Module`
/// (eval-mode batch-norm, `&self`) and `ModuleMut` (train-mode batch-norm,
/// `&mut self`) on [`Images`], with or without a tape.
#[derive(Clone, Debug)]
pub struct ResNet<St, L1, L2, L3, L4, const F: usize, const C: usize, E: Dtype, D: Storage<E>> {
    /// `conv1`, `bn1` (+ ReLU, max-pool for the ImageNet stem).
    pub stem: St,
    /// Stage 1.
    pub layer1: L1,
    /// Stage 2.
    pub layer2: L2,
    /// Stage 3 (or an [`EmptyStage`]).
    pub layer3: L3,
    /// Stage 4 (or an [`EmptyStage`]).
    pub layer4: L4,
    /// The classification head, `F → C`.
    pub fc: Linear<F, C, E, D>,
}

/// The ResNet of stem `Stem<W, K, S, P, POOL>`: the impls below flatten the
/// stem's tensors to the top level (`conv1.*`, `bn1.*`) as torchvision does.
type ResNetOf<
    const W: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    const POOL: bool,
    L1,
    L2,
    L3,
    L4,
    const F: usize,
    const C: usize,
    E,
    D,
> = ResNet<Stem<W, K, S, P, POOL, E, D>, L1, L2, L3, L4, F, C, E, D>;

impl<
        const W: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const POOL: bool,
        L1,
        L2,
        L3,
        L4,
        const F: usize,
        const C: usize,
        D,
    > TensorCollection<f32, D> for ResNetOf<W, K, S, P, POOL, L1, L2, L3, L4, F, C, f32, D>
where
    L1: TensorCollection<f32, D>,
    L2: TensorCollection<f32, D>,
    L3: TensorCollection<f32, D>,
    L4: TensorCollection<f32, D>,
    D: Device<f32>,
{
    type To<E2: Dtype, D2: Device<E2>> = ResNetOf<
        W,
        K,
        S,
        P,
        POOL,
        L1::To<E2, D2>,
        L2::To<E2, D2>,
        L3::To<E2, D2>,
        L4::To<E2, D2>,
        F,
        C,
        E2,
        D2,
    >;

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

/// fastai's `_resnet_split`, `body[:6]` | `body[6:]` | head, generalised
/// to the stages a ResNet has: the stem and the first half of the stages |
/// the other stages | the head. Indexed by the number of stages (2, 3, 4).
const GROUPS_BY_DEPTH: [&[&str]; 3] = [
    &["stem-layer1", "layer2", "fc"],
    &["stem-layer2", "layer3", "fc"],
    &["stem-layer2", "layer3-layer4", "fc"],
];
/// The sub-modules and their groups, for [`GROUPS_BY_DEPTH`].
const MODULES_BY_DEPTH: [&[(&str, usize)]; 3] = [
    &[("stem", 0), ("layer1", 0), ("layer2", 1), ("fc", 2)],
    &[
        ("stem", 0),
        ("layer1", 0),
        ("layer2", 0),
        ("layer3", 1),
        ("fc", 2),
    ],
    &[
        ("stem", 0),
        ("layer1", 0),
        ("layer2", 0),
        ("layer3", 1),
        ("layer4", 1),
        ("fc", 2),
    ],
];

/// The number of non-empty stages, minus 2 (an index into the tables
/// above). Only trailing stages may be empty, and at most two.
const fn depth_index(empty: [bool; 4]) -> usize {
    match empty {
        [false, false, false, false] => 2,
        [false, false, false, true] => 1,
        [false, false, true, true] => 0,
        _ => panic!("a ResNet needs layer1 and layer2; layer4 must be empty when layer3 is"),
    }
}

impl<
        const W: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const POOL: bool,
        L1,
        L2,
        L3,
        L4,
        const F: usize,
        const C: usize,
        D,
    > ImageClassifier<D> for ResNetOf<W, K, S, P, POOL, L1, L2, L3, L4, F, C, f32, D>
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
    /// `body[6:]` (`layer3`, `layer4`) | the head; with two stages (stem,
    /// `layer1`) | `layer2` | the head.
    const GROUPS: &'static [&'static str] =
        GROUPS_BY_DEPTH[depth_index([L1::EMPTY, L2::EMPTY, L3::EMPTY, L4::EMPTY])];
    const MODULES: &'static [(&'static str, usize)] =
        MODULES_BY_DEPTH[depth_index([L1::EMPTY, L2::EMPTY, L3::EMPTY, L4::EMPTY])];

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
        // Slots follow MODULES, which lists the non-empty stages only.
        let mut slot = 0;
        let mut group = || {
            slot += 1;
            LayerGroup::nth(Self::GROUPS, Self::MODULES, slot - 1)
        };
        v.visit(group(), &mut self.stem)?;
        v.visit(group(), &mut self.layer1)?;
        v.visit(group(), &mut self.layer2)?;
        if !L3::EMPTY {
            v.visit(group(), &mut self.layer3)?;
        }
        if !L4::EMPTY {
            v.visit(group(), &mut self.layer4)?;
        }
        v.visit(group(), &mut self.fc)
    }

    fn try_zero_init_residual(&mut self) -> Result<(), D::Err> {
        self.layer1.try_zero_init_residual()?;
        self.layer2.try_zero_init_residual()?;
        self.layer3.try_zero_init_residual()?;
        self.layer4.try_zero_init_residual()
    }
}

/// dfdx `Module`: images → logits with eval-mode batch-norm, through `&self`.
impl<
        const W: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const POOL: bool,
        L1,
        L2,
        L3,
        L4,
        const F: usize,
        const C: usize,
        D,
        T,
    > Module<Images<D, T>> for ResNetOf<W, K, S, P, POOL, L1, L2, L3, L4, F, C, f32, D>
where
    D: VisionDevice + 'static,
    L1: Stage<D, In = Const<W>> + 'static,
    L2: Stage<D, In = L1::Out> + 'static,
    L3: Stage<D, In = L2::Out> + 'static,
    L4: Stage<D, In = L3::Out, Out = Const<F>> + 'static,
    T: Tape<f32, D>,
{
    type Output = Logits<Const<C>, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Images<D, T>) -> Result<Self::Output, D::Err> {
        let body = self.try_forward_body_eval(x)?;
        self.try_forward_head(try_global_avg_pool2d(body)?)
    }
}

/// dfdx `ModuleMut`: images → logits with train-mode batch-norm.
impl<
        const W: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const POOL: bool,
        L1,
        L2,
        L3,
        L4,
        const F: usize,
        const C: usize,
        D,
        T,
    > ModuleMut<Images<D, T>> for ResNetOf<W, K, S, P, POOL, L1, L2, L3, L4, F, C, f32, D>
where
    D: VisionDevice + 'static,
    L1: Stage<D, In = Const<W>> + 'static,
    L2: Stage<D, In = L1::Out> + 'static,
    L3: Stage<D, In = L2::Out> + 'static,
    L4: Stage<D, In = L3::Out, Out = Const<F>> + 'static,
    T: Tape<f32, D>,
{
    type Output = Logits<Const<C>, D, T>;
    type Error = D::Err;

    fn try_forward_mut(&mut self, x: Images<D, T>) -> Result<Self::Output, D::Err> {
        self.try_forward_logits(x, BnMode::Train)
    }
}

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
    ImageNetStem<64, E, D>,
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
    ImageNetStem<64, E, D>,
    (BbId<64, E, D>, BbId<64, E, D>),
    (BbDown<64, 128, 2, E, D>, BbId<128, E, D>),
    (BbDown<128, 256, 2, E, D>, BbId<256, E, D>),
    (BbDown<256, 512, 2, E, D>, BbId<512, E, D>),
    512,
    C,
    E,
    D,
>;

/// A small ResNet for tiny images (8×8 to 32×32, 3 channels): a 3×3/1 stem
/// with 8 channels and no pooling ([`SmallStem`]), `layer1` = one
/// [`BasicBlock`] 8 → 8, `layer2` = one [`BasicBlock`] 8 → 16 with stride 2
/// and a [`Downsample`], no `layer3`/`layer4` ([`EmptyStage`]s), global
/// average pooling and `fc` (16 → `C`): 5,266 parameters for 10 classes.
/// The generic [`ResNet`], so tests and the quick tuner run exercise the
/// same code paths as [`ResNet50`] in milliseconds. Layer groups: (stem,
/// `layer1`) | `layer2` | `fc`.
pub type SmallResNet<const C: usize, E = f32, D = Cpu> = ResNet<
    SmallStem<8, E, D>,
    (BasicBlock<8, 8, 1, Identity, E, D>,),
    (BbDown<8, 16, 2, E, D>,),
    EmptyStage<16>,
    EmptyStage<16>,
    16,
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
