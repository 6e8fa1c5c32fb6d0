//! fastai's `Adam` per layer group: discriminative learning rates on dfdx 0.13.
//!
//! For every parameter `p` with gradient `g`, at the group's rate `lr`,
//! momentum `β₁` (from the one-cycle schedule) and the parameter's own step
//! count `t` (fastai keeps `step` per parameter, so a body tensor that first
//! trains after unfreezing starts its bias correction at 1):
//!
//! ```text
//! p ← p · (1 − lr · wd)                      decoupled weight decay (true_wd), matrices only
//! m ← β₁ m + (1 − β₁) g      v ← β₂ v + (1 − β₂) g²
//! p ← p − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
//! ```
//!
//! fastai's `wd_bn_bias=False`: batch-norm parameters and biases get no
//! weight decay. In these ResNets every trainable vector of the body is a
//! batch-norm γ or β (their convolutions have no bias), and every vector of
//! the head is a γ, β or bias, so "decays" is "is a matrix or a kernel".
//!
//! dfdx has no parameter groups, so the body is walked per sub-module
//! ([`ImageClassifier::try_visit_groups`], each sub-module tagged with its
//! layer group) and every tensor is stepped with dfdx's own Adam kernel
//! (`AdamConfig::try_update`); moments live in `Gradients` maps keyed by
//! tensor, step counts by the tensor's position in the (fixed) walk. The
//! runtime-sized [`Head`] is stepped the same way through
//! [`Head::try_visit_params`]. Everything reads the one `Gradients` a
//! backward pass produced.
//!
//! [`BodyUpdate::NormOnly`] steps only the batch-norm γ/β: fastai's frozen
//! phase with `train_bn=True` (the frozen body's norm layers keep training).

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
};
use dfdx::optim::{AdamConfig, WeightDecay};
use dfdx::prelude::*;
use poly_loss::nn::resnet::{ImageClassifier, LayerGroup, LayerGroupVisitor};
use poly_loss::nn::VisionDevice;

use super::head::{Head, HeadParam};

/// Adam hyper-parameters shared by every group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamW {
    /// dfdx's config for one step at `lr` with β₁ = `beta1`, with weight
    /// decay when `decay`.
    pub fn config(&self, lr: f64, beta1: f64, decay: bool) -> AdamConfig {
        AdamConfig {
            lr,
            betas: [beta1, self.beta2],
            eps: self.eps,
            weight_decay: (decay && self.weight_decay > 0.0)
                .then_some(WeightDecay::Decoupled(self.weight_decay)),
        }
    }
}

/// Which body tensors a step updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUpdate {
    /// Every trainable tensor (the unfrozen phase).
    All,
    /// Only batch-norm γ and β (the frozen phase with `frozen_bn = "train"`).
    NormOnly,
}

/// Adam state of one set of tensors: moments keyed by tensor, fastai's
/// per-parameter step count keyed by the tensor's position in the walk.
struct AdamState<D: Device<f32>> {
    moment1: Gradients<f32, D>,
    moment2: Gradients<f32, D>,
    steps: Vec<i32>,
}

impl<D: Device<f32>> Default for AdamState<D> {
    fn default() -> Self {
        AdamState {
            moment1: Gradients::leaky(),
            moment2: Gradients::leaky(),
            steps: Vec::new(),
        }
    }
}

impl<D: Device<f32>> AdamState<D> {
    /// One Adam step of `p` (the `k`-th tensor of this set) with `cfg`.
    fn step<S: Shape>(
        &mut self,
        k: usize,
        p: &mut Tensor<S, f32, D>,
        grads: &mut Gradients<f32, D>,
        cfg: &AdamConfig,
    ) -> Result<(), D::Err> {
        if self.steps.len() <= k {
            self.steps.resize(k + 1, 0);
        }
        self.steps[k] = self.steps[k].saturating_add(1);
        let g = grads.get_or_alloc_mut(p)?;
        let m = self.moment1.get_or_alloc_mut(p)?;
        let v = self.moment2.get_or_alloc_mut(p)?;
        cfg.try_update(self.steps[k], p, m, v, g)
    }
}

/// One Adam state per body sub-module, plus the head's.
pub struct GroupOptimisers<D: Device<f32>> {
    hyper: AdamW,
    body: Vec<AdamState<D>>,
    head: AdamState<D>,
}

impl<D: Device<f32>> GroupOptimisers<D> {
    /// Optimisers for a model with `modules` sub-modules (the head included).
    pub fn new(modules: usize, hyper: AdamW) -> Self {
        GroupOptimisers {
            hyper,
            body: (0..modules).map(|_| AdamState::default()).collect(),
            head: AdamState::default(),
        }
    }

    /// One step of the head alone at `lr`, β₁ = `beta1`.
    pub fn step_head(
        &mut self,
        head: &mut Head<D>,
        grads: &mut Gradients<f32, D>,
        lr: f64,
        beta1: f64,
    ) -> Result<(), D::Err> {
        let hyper = self.hyper;
        let state = &mut self.head;
        let mut k = 0;
        head.try_visit_params(|p| {
            let cfg = hyper.config(lr, beta1, p.decays());
            let r = match p {
                HeadParam::Vector(t) => state.step(k, t, grads, &cfg),
                HeadParam::Matrix(t) => state.step(k, t, grads, &cfg),
            };
            k += 1;
            r
        })
    }

    /// One step of the body's tensors selected by `which`; `lrs[g]` is
    /// layer group `g`'s rate (the head's, last, is not used here).
    pub fn step_body<M>(
        &mut self,
        model: &mut M,
        grads: &mut Gradients<f32, D>,
        lrs: &[f64],
        beta1: f64,
        which: BodyUpdate,
    ) -> Result<(), D::Err>
    where
        D: VisionDevice,
        M: ImageClassifier<D>,
    {
        let mut v = BodyVisitor {
            hyper: self.hyper,
            lrs,
            beta1,
            which,
            states: &mut self.body,
            grads,
        };
        model.try_visit_groups(&mut v)
    }

    /// One step of every body group and the head; `lrs[g]` is group `g`'s
    /// rate, the head's last.
    pub fn step_all<M>(
        &mut self,
        model: &mut M,
        head: &mut Head<D>,
        grads: &mut Gradients<f32, D>,
        lrs: &[f64],
        beta1: f64,
    ) -> Result<(), D::Err>
    where
        D: VisionDevice,
        M: ImageClassifier<D>,
    {
        self.step_body(model, grads, lrs, beta1, BodyUpdate::All)?;
        let head_lr = *lrs.last().expect("at least the head's rate");
        self.step_head(head, grads, head_lr, beta1)
    }
}

struct BodyVisitor<'a, D: Device<f32>> {
    hyper: AdamW,
    lrs: &'a [f64],
    beta1: f64,
    which: BodyUpdate,
    states: &'a mut Vec<AdamState<D>>,
    grads: &'a mut Gradients<f32, D>,
}

impl<D: Device<f32>> LayerGroupVisitor<D> for BodyVisitor<'_, D> {
    type Err = D::Err;

    fn visit<M: TensorCollection<f32, D> + 'static>(
        &mut self,
        group: LayerGroup,
        module: &mut M,
    ) -> Result<(), Self::Err> {
        if group.is_head {
            // The model's placeholder head is never used (see `Head`).
            return Ok(());
        }
        if self.states.len() <= group.slot {
            self.states.resize_with(group.slot + 1, AdamState::default);
        }
        let mut step = TensorStep {
            hyper: self.hyper,
            lr: self.lrs[group.index],
            beta1: self.beta1,
            which: self.which,
            state: &mut self.states[group.slot],
            grads: self.grads,
            k: 0,
        };
        M::iter_tensors(&mut RecursiveWalker {
            m: module,
            f: &mut step,
        })?;
        Ok(())
    }
}

/// Steps each trainable tensor of one sub-module.
struct TensorStep<'a, D: Device<f32>> {
    hyper: AdamW,
    lr: f64,
    beta1: f64,
    which: BodyUpdate,
    state: &'a mut AdamState<D>,
    grads: &'a mut Gradients<f32, D>,
    /// Position of the next trainable tensor in the walk.
    k: usize,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for TensorStep<'_, D> {
    type Viewer = ViewTensorMut;
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        p: &mut Tensor<S, f32, D>,
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        let k = self.k;
        self.k += 1;
        let is_vector = S::NUM_DIMS == 1;
        if self.which == BodyUpdate::NormOnly && !is_vector {
            return Ok(None);
        }
        let cfg = self.hyper.config(self.lr, self.beta1, !is_vector);
        self.state.step(k, p, self.grads, &cfg)?;
        Ok(None)
    }
}
