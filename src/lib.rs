//! # poly-loss
//!
//! PolyLoss (Leng et al., ICLR 2022) for the [dfdx](https://docs.rs/dfdx/0.13)
//! typed-tensor framework, as fused differentiable ops on CPU and CUDA, plus
//! the stable-Rust vision layers dfdx 0.13 lacks and a torchvision-layout
//! ResNet-50.

pub(crate) mod device;
pub mod nn;
