//! CPU max pooling, parallel over planes. The backward pass re-finds each
//! window's argmax from the saved input instead of storing indices.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::{MaxPool2dKernel, Pool2dOp};
use crate::device::cpu::host_slice;
use crate::nn::ops::cpu_util::uninit_vec;

/// Valid input range `[lo, hi)` of a window starting at `o·s − p`.
#[inline]
fn window(o: usize, op: &Pool2dOp, size: usize) -> (usize, usize) {
    let start = (o * op.stride) as isize - op.padding as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + op.kernel as isize).max(0) as usize).min(size);
    (lo, hi)
}

/// Index (within the plane) of the first maximum of output `(oh, ow)`'s window.
#[inline]
fn argmax(plane: &[f32], op: &Pool2dOp, oh: usize, ow: usize) -> usize {
    let (h0, h1) = window(oh, op, op.h_in);
    let (w0, w1) = window(ow, op, op.w_in);
    let mut best = h0 * op.w_in + w0;
    let mut best_v = plane[best];
    for ih in h0..h1 {
        let row = &plane[ih * op.w_in..(ih + 1) * op.w_in];
        for (iw, &v) in row.iter().enumerate().take(w1).skip(w0) {
            // `>` keeps the first maximum; NaN wins and sticks, as in PyTorch.
            if v > best_v || (v.is_nan() && !best_v.is_nan()) {
                best_v = v;
                best = ih * op.w_in + iw;
            }
        }
    }
    best
}

impl MaxPool2dKernel for Cpu {
    fn max_pool2d_forward<Sx: Shape, Sy: Shape>(
        &self,
        op: &Pool2dOp,
        x: &Tensor<Sx, f32, Self>,
        out: Sy,
    ) -> Result<Tensor<Sy, f32, Self>, Self::Err> {
        let xs = host_slice(x);
        let (pin, pout) = (op.h_in * op.w_in, op.h_out * op.w_out);
        assert_eq!(xs.len(), op.planes * pin);
        // SAFETY: the planes cover the output and every output of a plane is written.
        let y = unsafe {
            uninit_vec(op.planes * pout, |y| {
                y.par_chunks_mut(pout.max(1))
                    .enumerate()
                    .with_min_len(4)
                    .for_each(|(p, dst)| {
                        let plane = &xs[p * pin..(p + 1) * pin];
                        for oh in 0..op.h_out {
                            for ow in 0..op.w_out {
                                dst[oh * op.w_out + ow].write(plane[argmax(plane, op, oh, ow)]);
                            }
                        }
                    });
            })
        };
        self.try_tensor_from_vec(y, out)
    }

    fn max_pool2d_backward<Sx: Shape>(
        &self,
        op: &Pool2dOp,
        x: &Tensor<Sx, f32, Self>,
        gx: &mut Self::Vec,
        gy: &Self::Vec,
    ) -> Result<(), Self::Err> {
        let xs = host_slice(x);
        let (pin, pout) = (op.h_in * op.w_in, op.h_out * op.w_out);
        assert_eq!(gx.len(), op.planes * pin);
        assert_eq!(gy.len(), op.planes * pout);
        gx.par_chunks_mut(pin.max(1))
            .zip(gy.par_chunks(pout.max(1)))
            .enumerate()
            .with_min_len(4)
            .for_each(|(p, (gxp, gyp))| {
                let plane = &xs[p * pin..(p + 1) * pin];
                for oh in 0..op.h_out {
                    for ow in 0..op.w_out {
                        gxp[argmax(plane, op, oh, ow)] += gyp[oh * op.w_out + ow];
                    }
                }
            });
        Ok(())
    }
}
