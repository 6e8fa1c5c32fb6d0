//! What a loss call accepts as targets, and the devices that run the ops.

use dfdx::prelude::*;

use super::poly_sigmoid::SigmoidKernel;
use super::poly_softmax::SoftmaxKernel;
use super::PolyLossError;

/// Targets ready for a kernel: class indices (host, or still in the
/// device's buffer) or probabilities in the device's buffer, row-major
/// `B × C`.
pub enum Targets<D: TargetStorage> {
    /// One class index per row.
    Classes(Vec<usize>),
    /// One class index per row, in a class tensor's own device buffer (CUDA:
    /// dfdx's `usize` buffer, borrowed, never copied to the host). The host
    /// cannot check these values: the kernel range-checks them and an index
    /// outside `0..C` makes its row's loss and gradient NaN (where host
    /// targets give [`PolyLossError::TargetOutOfRange`]), and a mean over no
    /// counted rows (every row ignored) is NaN, as PyTorch's (host targets
    /// give [`PolyLossError::AllIgnored`]).
    ClassBuffer(D::Classes),
    /// Target probabilities, one row of C per sample.
    Probs(D::Probs),
}

/// Where a device keeps targets: probabilities (`Vec<f32>` on CPU, a
/// device buffer on CUDA) and class tensors' buffers (CUDA only).
/// Implemented for dfdx's `Cpu` and `Cuda`.
pub trait TargetStorage: Device<f32> {
    /// The probability buffer type.
    type Probs: Send + Sync + 'static;
    /// A class tensor's borrowed buffer ([`Targets::ClassBuffer`]);
    /// uninhabited on `Cpu`, whose class tensors are host memory anyway.
    type Classes: Send + Sync + 'static;
    /// Copies a tensor's elements (logical order) into a target buffer.
    fn probs_buffer<S: Shape, T>(
        &self,
        t: &Tensor<S, f32, Self, T>,
    ) -> Result<Self::Probs, Self::Err>;
    /// The device buffer of a class tensor when it can be borrowed without a
    /// copy (`None`: the caller copies the indices to the host).
    fn class_buffer<B: Dim, T>(&self, t: &Tensor<(B,), usize, Self, T>) -> Option<Self::Classes>;
}

/// A dfdx device that runs the PolyLoss ops: `Cpu`, and `Cuda` with the
/// `cuda` feature. Use it as the bound in generic code:
/// `fn f<D: PolyDevice, T: Tape<f32, D>>(..)`.
pub trait PolyDevice: TargetStorage + SoftmaxKernel + SigmoidKernel {}
impl<D: TargetStorage + SoftmaxKernel + SigmoidKernel> PolyDevice for D {}

/// Anything usable as the targets of a `(B, C)` batch of logits:
/// class indices (`&[usize]`, `&Vec<usize>`, `Vec<usize>`, `&[usize; B]`,
/// `Tensor<(B,), usize, D>`) or probabilities (`Tensor<(B, C), f32, D>`, by
/// value or reference; any tape on it is ignored: targets get no gradient).
pub trait IntoTargets<D: TargetStorage> {
    /// Checks the shape against `(batch, classes)` and converts.
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError>;
}

fn check_len(got: usize, batch: usize, classes: usize) -> Result<(), PolyLossError> {
    if got != batch {
        return Err(PolyLossError::ShapeMismatch {
            what: "targets",
            got: vec![got],
            expected: vec![batch],
            logits: vec![batch, classes],
        });
    }
    Ok(())
}

impl<D: TargetStorage> IntoTargets<D> for &[usize] {
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError> {
        check_len(self.len(), batch, classes)?;
        Ok(Targets::Classes(self.to_vec()))
    }
}

impl<D: TargetStorage, const K: usize> IntoTargets<D> for &[usize; K] {
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError> {
        self[..].into_targets(batch, classes)
    }
}

impl<D: TargetStorage> IntoTargets<D> for &Vec<usize> {
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError> {
        self[..].into_targets(batch, classes)
    }
}

impl<D: TargetStorage> IntoTargets<D> for Vec<usize> {
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError> {
        check_len(self.len(), batch, classes)?;
        Ok(Targets::Classes(self))
    }
}

impl<B2: Dim, D: TargetStorage, T> IntoTargets<D> for &Tensor<(B2,), usize, D, T> {
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError> {
        check_len(self.shape().0.size(), batch, classes)?;
        Ok(match self.device().class_buffer(self) {
            Some(buf) => Targets::ClassBuffer(buf),
            None => Targets::Classes(self.as_vec()),
        })
    }
}

impl<B2: Dim, D: TargetStorage, T> IntoTargets<D> for Tensor<(B2,), usize, D, T> {
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError> {
        (&self).into_targets(batch, classes)
    }
}

impl<B2: Dim, C2: Dim, D: TargetStorage, T> IntoTargets<D> for &Tensor<(B2, C2), f32, D, T> {
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError> {
        let (b2, c2) = (self.shape().0.size(), self.shape().1.size());
        if (b2, c2) != (batch, classes) {
            return Err(PolyLossError::ShapeMismatch {
                what: "target probabilities",
                got: vec![b2, c2],
                expected: vec![batch, classes],
                logits: vec![batch, classes],
            });
        }
        let buf = self
            .device()
            .probs_buffer(self)
            .map_err(PolyLossError::device)?;
        Ok(Targets::Probs(buf))
    }
}

impl<B2: Dim, C2: Dim, D: TargetStorage, T> IntoTargets<D> for Tensor<(B2, C2), f32, D, T> {
    fn into_targets(self, batch: usize, classes: usize) -> Result<Targets<D>, PolyLossError> {
        (&self).into_targets(batch, classes)
    }
}

impl TargetStorage for Cpu {
    type Probs = Vec<f32>;
    type Classes = std::convert::Infallible;
    fn class_buffer<B: Dim, T>(&self, _: &Tensor<(B,), usize, Self, T>) -> Option<Self::Classes> {
        None
    }
    fn probs_buffer<S: Shape, T>(&self, t: &Tensor<S, f32, Self, T>) -> Result<Vec<f32>, CpuError> {
        // `host_vec` copies the raw buffer: make strided (broadcast) targets
        // contiguous first.
        let t: Tensor<S, f32, Cpu> = t.retaped();
        Ok(crate::device::cpu::host_vec(&t.try_contiguous()?))
    }
}

#[cfg(feature = "cuda")]
impl TargetStorage for Cuda {
    type Probs = crate::device::cuda::DeviceView;
    type Classes = std::sync::Arc<crate::device::cuda::CudaUsizeVec>;
    fn class_buffer<B: Dim, T>(&self, t: &Tensor<(B,), usize, Self, T>) -> Option<Self::Classes> {
        crate::device::cuda::class_targets_view(t)
    }
    fn probs_buffer<S: Shape, T>(
        &self,
        t: &Tensor<S, f32, Self, T>,
    ) -> Result<Self::Probs, CudaError> {
        crate::device::cuda::device_view(t)
    }
}
