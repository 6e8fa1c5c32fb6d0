//! Host-side buffer access for CPU kernels.

use dfdx::prelude::*;

/// Copies a *contiguous* tensor's elements into a fresh `Vec` (one memcpy).
///
/// dfdx hides the storage, so a copy is the only stable way to read it; the
/// caller usually drops the tensor right after, so the copy replaces rather
/// than doubles the buffer. Call `try_contiguous()` first on tensors that may
/// come from `broadcast`/`permute` (that is a no-op for contiguous ones).
pub(crate) fn host_vec<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut buf = vec![0.0f32; t.shape().num_elements()];
    t.copy_into(&mut buf);
    buf
}

/// Like [`host_vec`], but takes the buffer from a small pool of recycled
/// buffers (see [`recycle`]). A fresh multi-megabyte `Vec` is fresh pages from
/// the kernel: page faults cost more than the copy itself, on every call.
pub(crate) fn host_vec_pooled<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let n = t.shape().num_elements();
    let mut buf = take_buffer(n);
    t.copy_into(&mut buf);
    buf
}

/// Most buffers the pool keeps.
const POOL_BUFFERS: usize = 8;
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

/// A buffer of length `n` (contents unspecified but initialised).
fn take_buffer(n: usize) -> Vec<f32> {
    let reuse = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // A buffer at least as big, but not wastefully bigger.
        let pos = pool
            .iter()
            .position(|b| b.capacity() >= n && b.capacity() <= 4 * n.max(1024));
        pos.map(|i| pool.swap_remove(i))
    };
    match reuse {
        Some(mut b) => {
            if b.len() >= n {
                b.truncate(n);
            } else {
                b.resize(n, 0.0);
            }
            b
        }
        None => vec![0.0f32; n],
    }
}

/// Hands a buffer back for [`host_vec_pooled`] to reuse.
pub(crate) fn recycle(buf: Vec<f32>) {
    if buf.capacity() < 1024 {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_BUFFERS {
        pool.push(buf);
    } else if let Some(smallest) = pool.iter_mut().min_by_key(|b| b.capacity()) {
        if smallest.capacity() < buf.capacity() {
            *smallest = buf;
        }
    }
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
    fn pooled_copies_are_exact_after_reuse() {
        let dev = Cpu::default();
        let a: Tensor<(usize,), f32, _> =
            dev.tensor_from_vec((0..5000).map(|i| i as f32).collect(), (5000,));
        let b: Tensor<(usize,), f32, _> =
            dev.tensor_from_vec((0..3000).map(|i| -(i as f32)).collect(), (3000,));
        let va = host_vec_pooled(&a);
        assert_eq!(va, a.as_vec());
        recycle(va);
        // A smaller request may get the same buffer back: it must hold b exactly.
        let vb = host_vec_pooled(&b);
        assert_eq!(vb, b.as_vec());
        recycle(vb);
        assert_eq!(host_vec_pooled(&a), a.as_vec());
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
