//! CUDA global average pooling: one warp per plane forward, one thread per
//! input element backward.

use cudarc::driver::LaunchAsync;
use dfdx::prelude::*;

use super::GlobalAvgPool2dKernel;
use crate::device::cuda::{device_view, tensor_from_device, CudaVec, PtxTable};
use crate::nn::ops::cuda_util::{grid, int, kernel};

const PTX: PtxTable = include!(concat!(env!("OUT_DIR"), "/global_avg_pool2d.ptx.rs"));
const MODULE: &str = "poly_loss_global_avg_pool2d";
const NAMES: &[&str] = &["global_avg_pool2d_forward", "global_avg_pool2d_backward"];

impl GlobalAvgPool2dKernel for Cuda {
    fn global_avg_pool2d_forward<Sx: Shape, Sy: Shape>(
        &self,
        planes: usize,
        plane: usize,
        x: &Tensor<Sx, f32, Self>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err> {
        let xs = device_view(x)?;
        let dev = xs.device();
        let mut y: CudaVec = self.try_alloc_len(planes)?;
        if planes > 0 {
            let f = kernel(&dev, MODULE, PTX, NAMES, "global_avg_pool2d_forward")?;
            // SAFETY: the arguments match `global_avg_pool2d_forward(const
            // float*, float*, int, int)`; x holds planes·plane floats (its
            // shape), y planes, and warps ≥ planes return at once.
            unsafe { f.launch(grid(planes * 32), (&*xs, &mut *y, int(planes), int(plane)))? };
        }
        tensor_from_device(self, out, y)
    }

    fn global_avg_pool2d_backward(
        &self,
        planes: usize,
        plane: usize,
        gx: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let dev = gy.device();
        let total = planes * plane;
        if total > 0 {
            let f = kernel(&dev, MODULE, PTX, NAMES, "global_avg_pool2d_backward")?;
            // SAFETY: the arguments match `global_avg_pool2d_backward(float*,
            // const float*, int, long long)`; gx holds total floats and gy
            // planes = total / plane, and the loop touches indices < total only.
            unsafe { f.launch(grid(total), (&mut **gx, &**gy, int(plane), total as i64))? };
        }
        Ok(())
    }
}
