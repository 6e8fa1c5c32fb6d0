//! # polytune
//!
//! Searches the ε₁..εₙ coefficients of `poly_loss::PolyLoss<N>` with argmin
//! solvers, where each evaluation is a short fine-tune, and writes the best
//! coefficients to TOML for downstream training.

pub mod data;
pub mod fs;
pub mod hash;
pub mod orchestrator;
pub mod progress;
pub mod rng;
pub mod search;
pub mod serve;
pub mod stats;
pub mod storage;
pub mod study;
pub mod train;
pub mod trial;
