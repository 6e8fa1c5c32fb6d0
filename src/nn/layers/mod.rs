//! dfdx modules built on [`crate::nn::ops`]: [`Conv2d`], [`BatchNorm2d`],
//! [`MaxPool2d`], [`GlobalAvgPool2d`].
//!
//! As in dfdx, each parameterised layer has a type-level *builder* (in
//! [`crate::nn::builders`], used with `dev.build_module::<Builder, f32>()`)
//! and a *module* type holding the tensors (in [`crate::nn::modules`]). All
//! implement dfdx's `TensorCollection`, so `build_module`, `ZeroGrads`,
//! `ResetParams`, the optimisers, `ToDevice`/`ToDtype` and
//! `Save/LoadFromSafetensors` work on them and on any model made of them.

pub mod batch_norm2d;
pub mod conv2d;
pub mod pool;

pub use batch_norm2d::{BatchNorm2d, BN_EPS, BN_MOMENTUM};
pub use conv2d::Conv2d;
pub use pool::{GlobalAvgPool2d, MaxPool2d};
