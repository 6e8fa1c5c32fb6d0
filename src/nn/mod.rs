//! Stable-Rust vision layers for dfdx 0.13: convolution, pooling and
//! batch-norm as differentiable ops ([`ops`]) and dfdx modules ([`layers`]),
//! on CPU and (feature `cuda`) CUDA.
//!
//! dfdx 0.13 compiles its own `conv2d`/`pool2d` only on nightly, and its
//! `BatchNorm2D` cannot run evaluation statistics under a tape; this module
//! fills both gaps with torchvision's parameter names, so torchvision
//! checkpoints (saved as safetensors) load field by field.
//!
//! ```
//! use dfdx::{optim::{Sgd, SgdConfig}, prelude::*};
//! use poly_loss::nn::builders::{BatchNorm2d, Conv2d, GlobalAvgPool2d, MaxPool2d};
//!
//! type Stem = (Conv2d<3, 16, 3, 1, 1>, BatchNorm2d<16>, MaxPool2d<2>, GlobalAvgPool2d);
//! let dev = Cpu::default();
//! let mut model = dev.build_module::<Stem, f32>();
//! let x: Tensor<Rank4<4, 3, 8, 8>, f32, _> = dev.sample_normal();
//!
//! // Training: ModuleMut = batch statistics (running stats updated).
//! let mut opt = Sgd::new(&model, SgdConfig::default());
//! let grads = model.alloc_grads();
//! let loss = model.forward_mut(x.trace(grads)).square().mean();
//! let grads = loss.backward();
//! opt.update(&mut model, &grads).unwrap();
//!
//! // Inference: Module = running statistics.
//! let y: Tensor<Rank2<4, 16>, f32, _> = model.forward(x);
//! ```

#![allow(clippy::type_complexity)] // dfdx tensor types are long by nature.

pub mod layers;
pub mod ops;

/// Type-level builders (`dev.build_module::<builders::Conv2d<3, 64, 7, 2, 3>, f32>()`).
pub mod builders {
    pub use super::layers::batch_norm2d::builder::BatchNorm2d;
    pub use super::layers::conv2d::builder::Conv2d;
    pub use super::layers::pool::{GlobalAvgPool2d, MaxPool2d};
}

/// The built module types (generic over dtype `E` and device `D`).
pub mod modules {
    pub use super::layers::{BatchNorm2d, Conv2d, GlobalAvgPool2d, MaxPool2d};
}

pub use ops::VisionDevice;

pub mod pretrained;
pub mod resnet;
