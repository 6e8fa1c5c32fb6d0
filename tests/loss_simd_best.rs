//! The fused op on the `best` instruction-set path against an f64 reference.

#[path = "support/simd_path.rs"]
mod simd_path;

#[path = "support/reference64.rs"]
mod reference64;
#[path = "support/simd_probs.rs"]
mod simd_probs;

#[test]
fn best_path_matches_f64() {
    simd_path::check_against_f64("best");
}

#[test]
fn best_path_probability_targets_match_f64() {
    simd_probs::check_probs_against_f64("best");
}
