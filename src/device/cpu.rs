//! Host-side buffer access for CPU kernels.

use dfdx::prelude::*;

/// Copies a *contiguous* tensor's elements into a fresh `Vec` (one memcpy).
///
/// dfdx hides the storage, so a copy is the only stable way to read it; the
/// caller usually drops the tensor right after, so the copy replaces rather
/// than doubles the buffer. Call `try_contiguous()` first on tensors that may
/// come from `broadcast`/`permute` (that is a no-op for contiguous ones).
/// Prefer [`host_slice`] where a borrow will do.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn host_vec<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut buf = vec![0.0f32; t.shape().num_elements()];
    t.copy_into(&mut buf);
    buf
}

/// Borrows a *contiguous* CPU tensor's elements without copying.
///
/// dfdx keeps `Tensor::data` private, but its public `Index` impl for CPU
/// tensors returns a reference into the tensor's own buffer. The address of
/// element `[0, .., 0]` is the buffer start; this checks, through the same
/// public indexing, that every dimension has the row-major stride and that the
/// last element is inside the buffer (indexing is bounds-checked by the
/// buffer), so the `num_elements()` values from that address are exactly the
/// tensor in logical order. Call `try_contiguous()` first (a no-op for
/// contiguous tensors); a strided tensor panics here instead of being misread.
///
/// The slice lives as long as the borrow of `t`; the buffer is behind an
/// `Arc`, and dfdx only ever mutates it through `Arc::make_mut`, which copies
/// while another handle (ours) is alive, so it cannot change under the slice.
pub(crate) fn host_slice<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> &[f32] {
    let shape = t.shape();
    let n = shape.num_elements();
    if n == 0 {
        return &[];
    }
    let dims = shape.concrete();
    let strides = shape.strides();
    let zero = S::Concrete::default();
    let first: *const f32 = &t[zero];
    let mut last = zero;
    for d in 0..S::NUM_DIMS {
        last[d] = dims[d] - 1;
        if dims[d] > 1 {
            let mut e = zero;
            e[d] = 1;
            let at: *const f32 = &t[e];
            assert_eq!(
                (at as usize).wrapping_sub(first as usize),
                strides[d] * std::mem::size_of::<f32>(),
                "host_slice needs a contiguous tensor (dimension {d} of {dims:?} is strided); call try_contiguous() first"
            );
        }
    }
    let end: *const f32 = &t[last];
    assert_eq!(
        (end as usize).wrapping_sub(first as usize),
        (n - 1) * std::mem::size_of::<f32>(),
        "host_slice needs a contiguous tensor of shape {dims:?}"
    );
    // SAFETY: `first` points at the start of the tensor's buffer (offset 0 of
    // the `Vec` dfdx indexes into) and element `n - 1` was reached through the
    // same bounds-checked indexing, so `n` initialised `f32`s follow it inside
    // one allocation. The strides checked above make that range the tensor's
    // logical row-major order. The buffer is shared (never mutated in place)
    // while `t` is borrowed, which bounds the returned lifetime.
    unsafe { std::slice::from_raw_parts(first, n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::grads_mut_and_ref;

    /// y = x² through the raw tape API: exercises `host_vec` and the
    /// gradient-borrowing macro the project's ops are built on.
    fn raw_square<S: Shape, T: Tape<f32, Cpu>>(
        x: Tensor<S, f32, Cpu, T>,
    ) -> Tensor<S, f32, Cpu, T> {
        let x = x.try_contiguous().unwrap();
        let (x, mut tape) = x.split_tape();
        let xs = host_vec(&x);
        let ys: Vec<f32> = xs.iter().map(|v| v * v).collect();
        let out = x.device().tensor_from_vec(ys, *x.shape());
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let (grad_x, grad_out) = grads_mut_and_ref!(grads, [x_ghost], out_ghost);
            for ((g, &go), &xv) in grad_x.iter_mut().zip(grad_out.iter()).zip(&xs) {
                *g += 2.0 * xv * go;
            }
            Ok(())
        });
        out.put_tape(tape)
    }

    #[test]
    fn host_slice_is_the_tensor_without_copy() {
        let dev = Cpu::default();
        let x: Tensor<Rank3<2, 3, 4>, f32, _> =
            dev.tensor_from_vec((0..24).map(|v| v as f32).collect(), (Const, Const, Const));
        let s = host_slice(&x);
        assert_eq!(s, host_vec(&x).as_slice());
        // The same memory as dfdx's own indexing, not a copy.
        assert_eq!(s.as_ptr(), &x[[0, 0, 0]] as *const f32);
        let d: Tensor<(usize, Const<3>), f32, _> = dev.tensor_from_vec(vec![1.0; 0], (0, Const));
        assert!(host_slice(&d).is_empty());
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn host_slice_refuses_strided_tensors() {
        let dev = Cpu::default();
        let w: Tensor<Rank1<3>, f32, _> = dev.tensor([1.0, 2.0, 3.0]);
        let b: Tensor<Rank2<2, 3>, f32, _> = w.broadcast();
        let _ = host_slice(&b);
    }

    #[test]
    fn raw_op_follows_strides() {
        let dev = Cpu::default();
        let w: Tensor<Rank1<3>, f32, _> = dev.tensor([1.0, -2.0, 3.0]);
        // Broadcast makes a strided input; the op must see logical order.
        let b: Tensor<Rank2<2, 3>, f32, _, _> = w.leaky_trace().broadcast();
        let grads = (raw_square(b).sum() * 0.5).backward();
        // d/dw Σ_rows ½w² = 2 rows · w
        assert_eq!(grads.get(&w).array(), [2.0, -4.0, 6.0]);
    }

    #[test]
    fn raw_op_gradients_accumulate() {
        let dev = Cpu::default();
        let x: Tensor<Rank1<3>, f32, _> = dev.tensor([1.0, -2.0, 0.5]);
        let xt = x.leaky_trace();
        // x feeds the op twice: both backward passes must add into one gradient.
        let y = raw_square(xt.with_empty_tape()) + raw_square(xt);
        let grads = y.sum().backward();
        assert_eq!(grads.get(&x).array(), [4.0, -8.0, 2.0]);
    }
}
