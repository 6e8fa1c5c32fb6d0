//! # poly-loss
//!
//! PolyLoss (Leng et al., ICLR 2022) for the [dfdx](https://docs.rs/dfdx/0.13)
//! typed-tensor framework, as fused differentiable ops on CPU and CUDA, plus
//! the stable-Rust vision layers dfdx 0.13 lacks and a torchvision-layout
//! ResNet-50.

pub(crate) mod cpu_dispatch;
pub(crate) mod device;

pub mod config;
pub mod loss;
#[cfg(feature = "vision")]
pub mod nn;

pub use config::PolyConfig;
#[cfg(feature = "cuda")]
pub use device::cuda::{try_open_cuda, CudaOpenError};
pub use loss::{DynPolyLoss, PolyKind, PolyLoss, PolyLossError, Reduction};
#[cfg(all(feature = "cuda", feature = "vision"))]
pub use nn::ops::cuda_util::release_unused_cuda_handles;

/// `use poly_loss::prelude::*;` brings the loss functions, [`PolyLoss`],
/// [`PolyConfig`] and the traits their signatures use.
pub mod prelude {
    pub use crate::loss::prelude::*;
}
