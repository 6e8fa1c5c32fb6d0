//! Neural-network building blocks on top of dfdx.

pub mod pretrained;
