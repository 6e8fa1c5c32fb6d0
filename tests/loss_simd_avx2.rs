//! The fused op on the `avx2` instruction-set path against an f64 reference.

#[path = "support/simd_path.rs"]
mod simd_path;

#[test]
fn avx2_path_matches_f64() {
    simd_path::check_against_f64("avx2");
}
