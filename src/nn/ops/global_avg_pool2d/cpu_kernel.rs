//! CPU global average pooling, parallel over planes.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::GlobalAvgPool2dKernel;
use crate::device::cpu::host_slice;
use crate::nn::ops::cpu_util::sum_f32;

impl GlobalAvgPool2dKernel for Cpu {
    fn global_avg_pool2d_forward<Sx: Shape, Sy: Shape>(
        &self,
        planes: usize,
        plane: usize,
        x: &Tensor<Sx, f32, Self>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err> {
        let xs = host_slice(x);
        assert_eq!(xs.len(), planes * plane);
        let y: Vec<f32> = xs
            .par_chunks(plane)
            .with_min_len(16)
            .map(|p| (sum_f32(p) / plane as f64) as f32)
            .collect();
        self.try_tensor_from_vec(y, out)
    }

    fn global_avg_pool2d_backward(
        &self,
        planes: usize,
        plane: usize,
        gx: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        assert_eq!(gx.len(), planes * plane);
        let scale = 1.0 / plane as f32;
        gx.par_chunks_mut(plane)
            .zip(gy.par_iter())
            .with_min_len(16)
            .for_each(|(g, &v)| {
                let v = v * scale;
                for e in g {
                    *e += v;
                }
            });
        Ok(())
    }
}
