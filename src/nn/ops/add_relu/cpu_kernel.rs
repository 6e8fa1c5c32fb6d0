//! CPU `relu(a + b)`, parallel over blocks.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::AddReluKernel;
use crate::device::cpu::host_slice;
use crate::nn::ops::cpu_util::{uninit_vec, SendPtr};

/// Elements per parallel task.
const BLOCK: usize = 1 << 14;

impl AddReluKernel for Cpu {
    fn add_relu_forward<S: Shape>(
        &self,
        a: &Tensor<S, f32, Self>,
        b: &Tensor<S, f32, Self>,
    ) -> Result<Tensor<S, f32, Self>, Self::Err> {
        let (a_s, b_s) = (host_slice(a), host_slice(b));
        let n = a_s.len();
        assert_eq!(b_s.len(), n);
        // SAFETY: each block task writes all elements of its own block.
        let y = unsafe {
            uninit_vec(n, |yp| {
                let yp = SendPtr(yp);
                (0..n.div_ceil(BLOCK)).into_par_iter().for_each(|blk| {
                    let lo = blk * BLOCK;
                    let hi = (lo + BLOCK).min(n);
                    let dst = std::slice::from_raw_parts_mut(yp.get().add(lo), hi - lo);
                    for ((d, &x), &r) in dst.iter_mut().zip(&a_s[lo..hi]).zip(&b_s[lo..hi]) {
                        *d = (x + r).max(0.0);
                    }
                });
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
        ga.par_chunks_mut(BLOCK)
            .zip(gb.par_chunks_mut(BLOCK))
            .zip(ys.par_chunks(BLOCK).zip(gy.par_chunks(BLOCK)))
            .for_each(|((ga, gb), (ys, gy))| {
                for i in 0..ys.len() {
                    let g = if ys[i] > 0.0 { gy[i] } else { 0.0 };
                    ga[i] += g;
                    gb[i] += g;
                }
            });
        Ok(())
    }
}
