//! Everything that dispatches on the instruction set, on the `best` path
//! (`POLY_LOSS_SIMD=best`, pinned for this whole process): the fused loss
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

const PATH: &str = "best";

#[test]
fn loss_matches_f64() {
    simd_path::check_against_f64(PATH);
}

#[test]
fn loss_probability_targets_match_f64() {
    simd_probs::check_probs_against_f64(PATH);
}

#[cfg(feature = "vision")]
#[test]
fn conv2d_matches_f64() {
    if simd_path::pin(PATH) {
        simd_vision::conv2d_matches_f64(PATH);
    }
}

#[cfg(feature = "vision")]
#[test]
fn batch_norm_matches_f64() {
    if simd_path::pin(PATH) {
        simd_vision::batch_norm_matches_f64(PATH);
    }
}

#[cfg(feature = "vision")]
#[test]
fn add_relu_matches_f64() {
    if simd_path::pin(PATH) {
        simd_vision::add_relu_matches_f64(PATH);
    }
}

#[cfg(feature = "vision")]
#[test]
fn pools_match_f64() {
    if simd_path::pin(PATH) {
        simd_vision::pools_match_f64(PATH);
    }
}
