//! torchvision-layout ResNets on the crate's vision layers: [`ResNet50`],
//! [`ResNet18`], the generic [`ResNet`], their blocks ([`Bottleneck`],
//! [`BasicBlock`]) and [`SmallResNet`] (the generic ResNet with a small stem
//! and two stages) for tiny images, all behind the
//! trainer-facing [`ImageClassifier`] trait.
//!
//! Parameter names are torchvision's `state_dict` keys, so a torchvision or
//! timm checkpoint converted to `.safetensors` loads with
//! [`ImageClassifier::load_pretrained`] (see [`crate::nn::pretrained`]).
//! Initialisation is torchvision's: Kaiming-normal (fan-out, ReLU gain)
//! convolutions, batch-norm γ = 1, β = 0, running statistics 0 / 1, `fc` as
//! `nn.Linear` (`U(±1/√fan_in)`); [`ImageClassifier::try_zero_init_residual`]
//! is `zero_init_residual=True`.
//!
//! # Example
//!
//! ```
//! use dfdx::optim::{Sgd, SgdConfig};
//! use dfdx::prelude::*;
//! use poly_loss::nn::resnet::{builders, BnMode, ImageClassifier, Images};
//!
//! let dev = Cpu::default();
//! let mut model = dev.build_module::<builders::SmallResNet<10>, f32>();
//! let x: Images<Cpu> = dev.sample_normal_like(&(4, Const::<3>, 8, 8));
//!
//! // Fine-tune everything: train-mode batch-norm, tape through the body.
//! let grads = model.alloc_grads();
//! let logits = model.forward_logits(x.trace(grads), BnMode::Train);
//! let loss = cross_entropy_with_logits_loss(logits, dev.ones_like(&(4, Const::<10>)) / 10.0);
//! let grads = loss.backward();
//! let mut sgd = Sgd::new(&model, SgdConfig::default());
//! sgd.update(&mut model, &grads).unwrap();
//!
//! // Frozen body: features without a tape (running statistics), then the
//! // head alone under a tape.
//! let features = model.forward_features(x.clone(), BnMode::Eval);
//! let head_grads = model.head().alloc_grads();
//! let logits = model.forward_head(features.trace(head_grads));
//! assert_eq!(logits.shape().concrete(), [4, 10]);
//! ```

mod block;
mod classifier;
mod model;

pub use block::{BasicBlock, Bottleneck, Downsample, EmptyStage, Identity, Img, Shortcut, Stage};
pub use classifier::{
    BnMode, Features, ImageClassifier, Images, LayerGroup, LayerGroupVisitor, Logits,
};
pub use model::{
    builders, ImageNetStem, ResNet, ResNet18, ResNet50, ResNet50Layer1, ResNet50Layer2,
    ResNet50Layer3, ResNet50Layer4, SmallResNet, SmallStem, Stem,
};
