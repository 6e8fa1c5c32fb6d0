//! Everything that dispatches on the instruction set, on the `scalar` path
//! (`POLY_LOSS_SIMD=scalar`, pinned for this whole process): the fused loss
//! and, with the `vision` feature, conv2d (Winograd, im2col, 1×1),
//! batch-norm, `add_relu` and the pools, each against an f64 reference.

#[path = "support/simd_path.rs"]
mod simd_path;

#[path = "support/reference64.rs"]
mod reference64;
#[path = "support/simd_probs.rs"]
mod simd_probs;

#[cfg(feature = "vision")]
#[path = "nn_common/mod.rs"]
mod nn_common;
#[cfg(feature = "vision")]
#[path = "support/simd_vision.rs"]
mod simd_vision;

simd_tests!("scalar");
