//! CUDA `relu(a + b)`: one element-wise kernel each way.

use cudarc::driver::LaunchAsync;
use dfdx::prelude::*;

use super::AddReluKernel;
use crate::device::cuda::{device_view, tensor_from_device, CudaVec, PtxTable};
use crate::nn::ops::cuda_util::{grid, kernel};

const PTX: PtxTable = include!(concat!(env!("OUT_DIR"), "/add_relu.ptx.rs"));
const MODULE: &str = "poly_loss_add_relu";
const NAMES: &[&str] = &["add_relu_forward", "add_relu_backward"];

impl AddReluKernel for Cuda {
    fn add_relu_forward<S: Shape>(
        &self,
        a: &Tensor<S, f32, Self>,
        b: &Tensor<S, f32, Self>,
    ) -> Result<Tensor<S, f32, Self>, Self::Err> {
        let (av, bv) = (device_view(a)?, device_view(b)?);
        let dev = av.device();
        let n = a.shape().num_elements();
        let mut y: CudaVec = self.try_alloc_len(n)?;
        if n > 0 {
            let f = kernel(&dev, MODULE, PTX, NAMES, "add_relu_forward")?;
            // SAFETY: the arguments match `add_relu_forward(const float*,
            // const float*, float*, long long)`; a, b (equal shapes, asserted
            // by `try_add_relu`) and y hold n floats, and the grid-stride loop
            // touches indices < n only.
            unsafe { f.launch(grid(n), (&*av, &*bv, &mut *y, n as i64))? };
        }
        tensor_from_device(self, *a.shape(), y)
    }

    fn add_relu_backward<S: Shape>(
        &self,
        y: &Tensor<S, f32, Self>,
        ga: &mut Self::Vec,
        gb: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let ys = device_view(y)?;
        let dev = ys.device();
        let n = y.shape().num_elements();
        if n > 0 {
            let f = kernel(&dev, MODULE, PTX, NAMES, "add_relu_backward")?;
            // SAFETY: the arguments match `add_relu_backward(const float*,
            // float*, float*, const float*, long long)`; y, gy and the
            // gradients of a and b (same shape) hold n floats, and the
            // grid-stride loop touches indices < n only.
            unsafe { f.launch(grid(n), (&*ys, &mut **ga, &mut **gb, &**gy, n as i64))? };
        }
        Ok(())
    }
}
