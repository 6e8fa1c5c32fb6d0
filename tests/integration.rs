//! Most poly-loss integration tests in one binary (one link instead of
//! fifteen on CI's 2 cores). Each test file is a module; the shared
//! references are declared once here. Separate binaries: the SIMD-override
//! tests (`simd_*`: each forces one CPU path for its whole process) and
//! the CUDA tests (`cuda_*`, run by name by `scripts/gpu-check.sh`).
//!
//! Run one file's tests with a filter: `cargo test -p poly-loss --test integration loss_dyn::`.

#[path = "../examples/support/digits.rs"]
#[allow(dead_code)]
mod digits;
#[cfg(feature = "vision")]
mod nn_common;
#[path = "support/reference64.rs"]
mod reference64;

mod config_poly;
mod loss_dyn;
mod loss_epsilon_range;
mod loss_golden;
mod loss_gradcheck;
mod loss_properties;
mod loss_threaded;
mod loss_train_digits;
#[cfg(feature = "vision")]
mod nn_conv2d;
#[cfg(feature = "vision")]
mod nn_layers;
#[cfg(feature = "vision")]
mod nn_pool_norm;
#[cfg(feature = "vision")]
mod pretrained_loader;
#[cfg(feature = "vision")]
mod resnet_interface;
#[cfg(feature = "vision")]
mod resnet_layout;
#[cfg(feature = "vision")]
mod resnet_parity;
