//! The logits a CPU kernel reads, forward and backward, kept without a copy.
//!
//! dfdx hides a tensor's buffer; [`crate::device::cpu::host_slice`] borrows
//! it through public indexing. Keeping a tape-free handle of the (contiguous)
//! logits — a reference count, not a copy — lets the backward read the same
//! memory: at (256, 1000) that saves copying 1 MB per call (≈ 13 % of the
//! fused op's time). dfdx changes a buffer only through `Arc::make_mut`,
//! which copies while this handle is alive, so the logits cannot change
//! under the backward.

use dfdx::prelude::*;

use crate::device::cpu::host_slice;

/// A tape-free handle of a contiguous CPU tensor, of any shape.
pub(crate) struct SavedLogits(Box<dyn HostSlice>);

trait HostSlice: Send + Sync {
    fn slice(&self) -> &[f32];
}

impl<S: Shape> HostSlice for Tensor<S, f32, Cpu> {
    fn slice(&self) -> &[f32] {
        host_slice(self)
    }
}

impl SavedLogits {
    /// Keeps `logits` (which must be contiguous: the ops call
    /// `try_contiguous` first; `host_slice` panics otherwise).
    pub(crate) fn new<S: Shape, T>(logits: &Tensor<S, f32, Cpu, T>) -> Self {
        Self(Box::new(logits.retaped::<NoneTape>()))
    }

    /// The elements in row-major order.
    pub(crate) fn slice(&self) -> &[f32] {
        self.0.slice()
    }
}
