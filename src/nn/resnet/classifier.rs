//! [`ImageClassifier`]: what a trainer needs from a model, over
//! [`SmallResNet`](super::SmallResNet), [`ResNet18`](super::ResNet18) and
//! [`ResNet50`](super::ResNet50) alike.

use std::path::Path;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;

use super::block::Img;
use crate::nn::ops::try_global_avg_pool2d;
use crate::nn::pretrained::{load_pretrained, LoadOptions, LoadReport, PretrainedError};
use crate::nn::VisionDevice;

/// A batch of RGB images, NCHW: `(batch, 3, height, width)`.
pub type Images<D, T = NoneTape> = Img<Const<3>, D, T>;
/// A batch of pooled feature vectors `(batch, F)`, `F` = `Const<N>`.
pub type Features<F, D, T = NoneTape> = Tensor<(usize, F), f32, D, T>;
/// A batch of logits `(batch, C)`, `C` = `Const<N>`.
pub type Logits<C, D, T = NoneTape> = Tensor<(usize, C), f32, D, T>;

/// How batch-norm layers behave in a forward pass (PyTorch's
/// `model.train()` / `model.eval()`, but chosen per call, never stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BnMode {
    /// Batch statistics; running statistics are updated (needs `&mut`).
    #[default]
    Train,
    /// Running statistics, left unchanged. Under a tape the convolutions
    /// and batch-norm affine parameters still receive gradients.
    Eval,
}

/// One sub-module of a model as a member of a layer group (discriminative
/// learning rates), see [`ImageClassifier::try_visit_groups`].
///
/// A layer group is fastai's parameter group: the unit that gets one
/// learning rate. It can span several sub-modules (fastai's ResNet split puts
/// the stem, `layer1` and `layer2` in one group), so a visitor is called once
/// per sub-module with the group it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerGroup {
    /// The group, `0` = the earliest layers; the head's group is the last
    /// ([`ImageClassifier::GROUPS`]`.len() - 1`).
    pub index: usize,
    /// The group's name, [`ImageClassifier::GROUPS`]`[index]`.
    pub name: &'static str,
    /// The sub-module: `"stem"`, `"layer1"`, …, or the head's name (`"fc"`).
    /// Its tensors are named `<module>.<name>` in the whole model, except the
    /// stem's, which sit at the top level (`conv1.*`, `bn1.*`) as in torchvision.
    pub module: &'static str,
    /// Position of the sub-module in forward order
    /// ([`ImageClassifier::MODULES`]`[slot]`): a key for per-module state
    /// such as one optimiser per sub-module.
    pub slot: usize,
    /// Whether this is the classification head (the last group).
    pub is_head: bool,
}

impl LayerGroup {
    /// Sub-module `slot` of a model whose sub-modules are `modules`
    /// (`(name, group)` in forward order, head last) and whose groups are
    /// `groups`, as in [`ImageClassifier::MODULES`] / [`ImageClassifier::GROUPS`].
    pub fn nth(
        groups: &'static [&'static str],
        modules: &'static [(&'static str, usize)],
        slot: usize,
    ) -> Self {
        let (module, index) = modules[slot];
        LayerGroup {
            index,
            name: groups[index],
            module,
            slot,
            is_head: index + 1 == groups.len(),
        }
    }

    /// The prefix of this sub-module's tensor names in the whole model
    /// (`""` for the stem, `"layer3."`, `"fc."`).
    pub fn prefix(&self) -> String {
        if self.module == "stem" {
            String::new()
        } else {
            format!("{}.", self.module)
        }
    }
}

/// Receives each layer group of a model as its own [`TensorCollection`].
///
/// dfdx optimisers are typed by the module they update (`Adam<M, f32, D>`)
/// and keep their state keyed by tensor id, so one optimiser per group can
/// update its group from the single `Gradients` that one backward pass
/// produced. Groups are visited in forward order, the same order on every
/// call, so a visitor can keep per-module state in a `Vec` indexed by
/// [`LayerGroup::slot`] (e.g. `Box<dyn Any>` holding `Adam<M, f32, D>`,
/// downcast in [`Self::visit`]) and pick the rate by [`LayerGroup::index`].
///
/// # Example: one AdamW per layer group, learning rates per group
///
/// ```
/// use std::any::Any;
/// use dfdx::nn::tensor_collection::TensorCollection;
/// use dfdx::optim::{Adam, AdamConfig, Optimizer, OptimizerUpdateError, WeightDecay};
/// use dfdx::prelude::*;
/// use poly_loss::nn::resnet::{builders, BnMode, ImageClassifier, Images, LayerGroup, LayerGroupVisitor};
///
/// /// Optimiser state per group, created on first use.
/// struct PerGroupAdamW<'a> {
///     lrs: Vec<f64>,
///     opts: Vec<Option<Box<dyn Any>>>,
///     grads: &'a Gradients<f32, Cpu>,
/// }
///
/// impl LayerGroupVisitor<Cpu> for PerGroupAdamW<'_> {
///     type Err = OptimizerUpdateError<CpuError>;
///     fn visit<M: TensorCollection<f32, Cpu> + 'static>(
///         &mut self,
///         group: LayerGroup,
///         module: &mut M,
///     ) -> Result<(), Self::Err> {
///         let lr = self.lrs[group.index];
///         let opt = self.opts[group.slot].get_or_insert_with(|| {
///             let cfg = AdamConfig { lr, weight_decay: Some(WeightDecay::Decoupled(1e-4)), ..Default::default() };
///             Box::new(Adam::<M, f32, Cpu>::new(module, cfg))
///         });
///         let opt = opt.downcast_mut::<Adam<M, f32, Cpu>>().expect("groups keep their types");
///         opt.cfg.lr = lr; // a schedule may change it between steps
///         opt.update(module, self.grads)
///     }
/// }
///
/// let dev = Cpu::default();
/// let mut model = dev.build_module::<builders::SmallResNet<10>, f32>();
/// type M = poly_loss::nn::resnet::SmallResNet<10>;
/// // Smaller rates for earlier groups; the head (last group) learns fastest.
/// let n = <M as ImageClassifier<Cpu>>::GROUPS.len();
/// let lrs: Vec<f64> = (0..n).map(|i| 1e-3 * 0.5f64.powi((n - 1 - i) as i32)).collect();
/// let slots = <M as ImageClassifier<Cpu>>::MODULES.len();
/// let mut opts: Vec<Option<Box<dyn Any>>> = (0..slots).map(|_| None).collect();
///
/// let x: Images<Cpu> = dev.sample_normal_like(&(4, Const::<3>, 8, 8));
/// let y = dev.tensor([[1.0f32, 0., 0., 0., 0., 0., 0., 0., 0., 0.]; 4]).realize::<(usize, Const<10>)>();
/// for _ in 0..2 {
///     let grads = model.alloc_grads();
///     let logits = model.forward_logits(x.trace(grads), BnMode::Train);
///     let grads = cross_entropy_with_logits_loss(logits, y.clone()).backward();
///     let mut v = PerGroupAdamW { lrs: lrs.clone(), opts: std::mem::take(&mut opts), grads: &grads };
///     model.try_visit_groups(&mut v).unwrap();
///     opts = v.opts;
/// }
/// ```
pub trait LayerGroupVisitor<D: Device<f32>> {
    /// Error type of the visit (e.g. an optimiser's update error).
    type Err;
    /// Called once per group.
    fn visit<M: TensorCollection<f32, D> + 'static>(
        &mut self,
        group: LayerGroup,
        module: &mut M,
    ) -> Result<(), Self::Err>;
}

/// An image classifier split into a body (image → pooled features) and a
/// head (features → logits), so a trainer can
///
/// - **freeze the body**: run [`try_forward_features`] in [`BnMode::Eval`]
///   without a tape (running statistics, nothing recorded), cache the
///   features, and train the head alone on them with [`try_forward_head`]
///   under a tape;
/// - **fine-tune everything**: [`try_forward_logits`] under a tape, with
///   batch-norm in [`BnMode::Train`] or [`BnMode::Eval`] (frozen statistics);
/// - **use discriminative learning rates**: [`try_visit_groups`] hands over
///   the stem, each stage and the head as separate sub-modules, each tagged
///   with its layer group (fastai's split), one optimiser per sub-module
///   sharing one `Gradients`;
/// - **pool as it likes**: [`try_forward_body`] gives the last stage's
///   feature map before the global pooling (fastai's head concatenates
///   average and max pooling of it);
/// - **start from pretrained weights**: [`load_pretrained`].
///
/// The forwards come in one family: `try_forward_{body,features,logits}(x,
/// mode)` and their panicking twins `forward_*(x, mode)`, all through `&mut
/// self` (train mode updates running statistics). Eval mode is also
/// reachable through `&self`: [`try_forward_body_eval`] (what
/// `BnMode::Eval` runs) and dfdx's `Module::try_forward` (images → logits).
///
/// Every model takes `(batch, 3, H, W)` images (`H`, `W` at run time); the
/// whole model is a dfdx [`TensorCollection`] (build, optimisers,
/// `ZeroGrads`, `ResetParams`, `Save/LoadFromSafetensors`) whose tensor names
/// are torchvision's.
///
/// [`try_forward_features`]: Self::try_forward_features
/// [`try_forward_body_eval`]: Self::try_forward_body_eval
/// [`try_forward_head`]: Self::try_forward_head
/// [`try_forward_logits`]: Self::try_forward_logits
/// [`try_visit_groups`]: Self::try_visit_groups
/// [`try_forward_body`]: Self::try_forward_body
/// [`load_pretrained`]: Self::load_pretrained
pub trait ImageClassifier<D: VisionDevice>: TensorCollection<f32, D> + Sized {
    /// Width of the pooled features, `Const<N>` (2048 for ResNet-50).
    type FeatureDim: ConstDim;
    /// Number of classes, `Const<N>`.
    type ClassDim: ConstDim;
    /// The classification head, a sub-module (a dfdx `Linear`).
    type Head: TensorCollection<f32, D> + 'static;

    /// Name of the head's sub-module: its tensors are `<HEAD>.weight`,
    /// `<HEAD>.bias` (`"fc"` as in torchvision).
    const HEAD: &'static str;
    /// Layer-group names in forward order, the head's last: fastai's
    /// split into parameter groups (one learning rate each).
    const GROUPS: &'static [&'static str];
    /// Sub-modules in forward order with the index of their group in
    /// [`Self::GROUPS`], the head last.
    const MODULES: &'static [(&'static str, usize)];

    /// Body forward without the pooling: images → the last stage's feature
    /// map `(batch, FEATURES, h, w)`.
    fn try_forward_body<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        mode: BnMode,
    ) -> Result<Img<Self::FeatureDim, D, T>, D::Err>;

    /// [`Self::try_forward_body`] in [`BnMode::Eval`], through `&self` (for
    /// callers that share the model, such as feature extraction).
    fn try_forward_body_eval<T: Tape<f32, D>>(
        &self,
        x: Images<D, T>,
    ) -> Result<Img<Self::FeatureDim, D, T>, D::Err>;

    /// Body forward: images → globally average-pooled features `(batch, FEATURES)`.
    fn try_forward_features<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        mode: BnMode,
    ) -> Result<Features<Self::FeatureDim, D, T>, D::Err> {
        try_global_avg_pool2d(self.try_forward_body(x, mode)?)
    }

    /// Head forward: features → logits `(batch, CLASSES)`.
    fn try_forward_head<T: Tape<f32, D>>(
        &self,
        features: Features<Self::FeatureDim, D, T>,
    ) -> Result<Logits<Self::ClassDim, D, T>, D::Err>;

    /// The head sub-module.
    fn head(&self) -> &Self::Head;
    /// The head sub-module, mutably (for an optimiser of its own).
    fn head_mut(&mut self) -> &mut Self::Head;

    /// Visits the stem, each stage and the head (in [`Self::MODULES`] order)
    /// as separate sub-modules, each with its [`LayerGroup`].
    fn try_visit_groups<V: LayerGroupVisitor<D>>(&mut self, visitor: &mut V) -> Result<(), V::Err>;

    /// torchvision's `zero_init_residual=True`: γ = 0 for the last
    /// batch-norm of every residual branch.
    fn try_zero_init_residual(&mut self) -> Result<(), D::Err>;

    /// Full forward: images → logits.
    fn try_forward_logits<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        mode: BnMode,
    ) -> Result<Logits<Self::ClassDim, D, T>, D::Err> {
        let f = self.try_forward_features(x, mode)?;
        self.try_forward_head(f)
    }

    /// Panicking [`Self::try_forward_body`].
    fn forward_body<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        mode: BnMode,
    ) -> Img<Self::FeatureDim, D, T> {
        self.try_forward_body(x, mode).unwrap()
    }

    /// Panicking [`Self::try_forward_features`].
    fn forward_features<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        mode: BnMode,
    ) -> Features<Self::FeatureDim, D, T> {
        self.try_forward_features(x, mode).unwrap()
    }

    /// Panicking [`Self::try_forward_head`].
    fn forward_head<T: Tape<f32, D>>(
        &self,
        features: Features<Self::FeatureDim, D, T>,
    ) -> Logits<Self::ClassDim, D, T> {
        self.try_forward_head(features).unwrap()
    }

    /// Panicking [`Self::try_forward_logits`].
    fn forward_logits<T: Tape<f32, D>>(
        &mut self,
        x: Images<D, T>,
        mode: BnMode,
    ) -> Logits<Self::ClassDim, D, T> {
        self.try_forward_logits(x, mode).unwrap()
    }

    /// Loads a torchvision/timm `state_dict` saved as `.safetensors` (see
    /// [`crate::nn::pretrained`]); a head with another class count is left
    /// fresh and reported.
    fn load_pretrained(&mut self, path: impl AsRef<Path>) -> Result<LoadReport, PretrainedError> {
        load_pretrained(self, path, &LoadOptions::head(Self::HEAD))
    }
}
