//! AdamW per layer group: discriminative learning rates on dfdx 0.13.
//!
//! dfdx has no parameter groups, so every layer group of the body (visited
//! with [`ImageClassifier::try_visit_groups`]) gets its own dfdx `Adam`
//! with decoupled weight decay, created on first use and kept type-erased in
//! a `Box<dyn Any>` (groups are visited in the same order every time). The
//! runtime-sized [`Head`] gets [`HeadAdam`]: the same update through dfdx's
//! public Adam kernel (`AdamConfig::try_update`), with its moments kept in
//! a `Gradients` map. All of them read the one `Gradients` a backward pass
//! produced, and their config (learning rate, β₁) is set before every step
//! from the one-cycle schedule.
//!
//! Differences from fastai's defaults, on purpose: weight decay also applies
//! to batch-norm and bias parameters (fastai's `wd_bn_bias=False` needs
//! per-tensor control that dfdx's optimisers lack), and the frozen phase
//! keeps the body's batch-norm in eval mode (its features are cached).

use std::any::Any;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::optim::{Adam, AdamConfig, Optimizer, OptimizerUpdateError, WeightDecay};
use dfdx::prelude::*;
use poly_loss::nn::resnet::{ImageClassifier, LayerGroup, LayerGroupVisitor};
use poly_loss::nn::VisionDevice;

use super::head::Head;

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
    /// dfdx's config for one step at `lr` with β₁ = `beta1`.
    pub fn config(&self, lr: f64, beta1: f64) -> AdamConfig {
        AdamConfig {
            lr,
            betas: [beta1, self.beta2],
            eps: self.eps,
            weight_decay: (self.weight_decay > 0.0)
                .then_some(WeightDecay::Decoupled(self.weight_decay)),
        }
    }
}

/// dfdx's Adam update for the runtime-sized [`Head`]: the step counter and
/// both moments per tensor, updated by `AdamConfig::try_update` (the kernel
/// dfdx's `Adam` optimiser runs), so the head learns exactly as a dfdx
/// `Linear` would under `Adam`.
pub struct HeadAdam<D: Device<f32>> {
    t: i32,
    moment1: Gradients<f32, D>,
    moment2: Gradients<f32, D>,
}

impl<D: Device<f32>> Default for HeadAdam<D> {
    fn default() -> Self {
        HeadAdam {
            t: 0,
            moment1: Gradients::leaky(),
            moment2: Gradients::leaky(),
        }
    }
}

impl<D: Device<f32>> HeadAdam<D> {
    /// One step with `cfg`. `grads` must hold the head's gradients (trace
    /// with `Gradients::leaky()`); a missing one counts as zero.
    pub fn update<F: ConstDim>(
        &mut self,
        head: &mut Head<F, f32, D>,
        grads: &mut Gradients<f32, D>,
        cfg: &AdamConfig,
    ) -> Result<(), D::Err> {
        self.t = self.t.checked_add(1).expect("step count fits i32");
        let g = grads.get_or_alloc_mut(&head.weight)?;
        let m = self.moment1.get_or_alloc_mut(&head.weight)?;
        let v = self.moment2.get_or_alloc_mut(&head.weight)?;
        cfg.try_update(self.t, &mut head.weight, m, v, g)?;
        let g = grads.get_or_alloc_mut(&head.bias)?;
        let m = self.moment1.get_or_alloc_mut(&head.bias)?;
        let v = self.moment2.get_or_alloc_mut(&head.bias)?;
        cfg.try_update(self.t, &mut head.bias, m, v, g)
    }
}

/// One AdamW per body layer group, plus the head's.
pub struct GroupOptimisers<D: Device<f32>> {
    hyper: AdamW,
    body: Vec<Option<Box<dyn Any>>>,
    head: HeadAdam<D>,
}

impl<D: Device<f32>> GroupOptimisers<D> {
    /// Optimisers for a model with `groups` layer groups (the head included).
    pub fn new(groups: usize, hyper: AdamW) -> Self {
        GroupOptimisers {
            hyper,
            body: (0..groups.saturating_sub(1)).map(|_| None).collect(),
            head: HeadAdam::default(),
        }
    }

    /// One step of the head alone at `lr`, β₁ = `beta1`.
    pub fn step_head<F: ConstDim>(
        &mut self,
        head: &mut Head<F, f32, D>,
        grads: &mut Gradients<f32, D>,
        lr: f64,
        beta1: f64,
    ) -> Result<(), OptimizerUpdateError<D::Err>> {
        let cfg = self.hyper.config(lr, beta1);
        self.head
            .update(head, grads, &cfg)
            .map_err(OptimizerUpdateError::DeviceError)
    }

    /// One step of every body group and the head; `lrs[g]` is group `g`'s
    /// rate, the head's last.
    pub fn step_all<M>(
        &mut self,
        model: &mut M,
        head: &mut Head<M::FeatureDim, f32, D>,
        grads: &mut Gradients<f32, D>,
        lrs: &[f64],
        beta1: f64,
    ) -> Result<(), OptimizerUpdateError<D::Err>>
    where
        D: VisionDevice,
        M: ImageClassifier<D>,
    {
        let mut v = BodyVisitor {
            hyper: self.hyper,
            lrs,
            beta1,
            opts: &mut self.body,
            grads: &*grads,
        };
        model.try_visit_groups(&mut v)?;
        let head_lr = *lrs.last().expect("at least the head's rate");
        self.step_head(head, grads, head_lr, beta1)
    }
}

struct BodyVisitor<'a, D: Device<f32>> {
    hyper: AdamW,
    lrs: &'a [f64],
    beta1: f64,
    opts: &'a mut Vec<Option<Box<dyn Any>>>,
    grads: &'a Gradients<f32, D>,
}

impl<D: Device<f32>> LayerGroupVisitor<D> for BodyVisitor<'_, D> {
    type Err = OptimizerUpdateError<D::Err>;

    fn visit<M: TensorCollection<f32, D> + 'static>(
        &mut self,
        group: LayerGroup,
        module: &mut M,
    ) -> Result<(), Self::Err> {
        if group.is_head {
            // The model's placeholder head is never used (see `Head`).
            return Ok(());
        }
        let cfg = self.hyper.config(self.lrs[group.index], self.beta1);
        let slot = &mut self.opts[group.index];
        let opt = slot.get_or_insert_with(|| Box::new(Adam::<M, f32, D>::new(module, cfg)));
        let opt = opt
            .downcast_mut::<Adam<M, f32, D>>()
            .expect("layer groups keep their types");
        opt.cfg = cfg;
        opt.update(module, self.grads)
    }
}
