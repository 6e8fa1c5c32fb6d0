//! CPU `relu(a + b)`, parallel over blocks, AVX2 when available.

use std::mem::MaybeUninit;

use dfdx::prelude::*;
use rayon::prelude::*;

use super::AddReluKernel;
use crate::device::cpu::host_slice;
use crate::nn::ops::cpu_util::{multiversion, relu_mask, uninit_vec};

/// Elements per parallel task.
const BLOCK: usize = 1 << 15;

multiversion! { avx2:
    fn forward_block(a: &[f32], b: &[f32], y: &mut [MaybeUninit<f32>]) {
        for ((d, &x), &r) in y.iter_mut().zip(a).zip(b) {
            let t = x + r;
            d.write(if t > 0.0 { t } else { 0.0 });
        }
    }
}

multiversion! { avx2:
    fn backward_block(y: &[f32], gy: &[f32], ga: &mut [f32], gb: &mut [f32]) {
        for (((a, b), &yv), &g) in ga.iter_mut().zip(gb.iter_mut()).zip(y).zip(gy) {
            let m = relu_mask(yv, g);
            *a += m;
            *b += m;
        }
    }
}

impl AddReluKernel for Cpu {
    fn add_relu_forward<S: Shape>(
        &self,
        a: &Tensor<S, f32, Self>,
        b: &Tensor<S, f32, Self>,
    ) -> Result<Tensor<S, f32, Self>, Self::Err> {
        let (a_s, b_s) = (host_slice(a), host_slice(b));
        let n = a_s.len();
        assert_eq!(b_s.len(), n);
        // SAFETY: the blocks cover the output and each is fully written.
        let y = unsafe {
            uninit_vec(n, |y| {
                y.par_chunks_mut(BLOCK)
                    .zip(a_s.par_chunks(BLOCK).zip(b_s.par_chunks(BLOCK)))
                    .for_each(|(y, (a, b))| forward_block(a, b, y));
            })
        };
        self.try_tensor_from_vec(y, *a.shape())
    }

    fn add_relu_backward<S: Shape>(
        &self,
        y: &Tensor<S, f32, Self>,
        ga: &mut Self::Vec,
        gb: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let ys = host_slice(y);
        assert_eq!(ga.len(), ys.len());
        assert_eq!(gb.len(), ys.len());
        assert_eq!(gy.len(), ys.len());
        ga.par_chunks_mut(BLOCK)
            .zip(gb.par_chunks_mut(BLOCK))
            .zip(ys.par_chunks(BLOCK).zip(gy.par_chunks(BLOCK)))
            .for_each(|((ga, gb), (ys, gy))| backward_block(ys, gy, ga, gb));
        Ok(())
    }
}
