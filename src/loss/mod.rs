//! The PolyLoss family as fused dfdx ops.

mod error;
mod spec;

pub use error::PolyLossError;
pub use spec::{PolyKind, PolyLoss, Reduction};
