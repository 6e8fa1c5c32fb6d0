//! The one place that reaches into dfdx storage for the project's own ops.
//!
//! dfdx 0.13 keeps `Tensor::data` and its custom-op machinery crate-private.
//! The public tape API (`split_tape`, `put_tape`, `ghost`,
//! `Tape::add_backward_op`, `Gradients::get_or_alloc_mut`) is enough to build
//! differentiable ops; this module adds the few buffer conversions every op
//! needs, so kernels see plain slices (CPU) or `CudaSlice`s (CUDA).

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

/// Borrows the gradients of an op's inputs mutably and of its output
/// immutably, allocating any that are missing — the public-API twin of
/// dfdx's crate-private `Gradients::mut_and_ref`.
///
/// Use inside `Tape::add_backward_op` closures with ghosts (or tensors):
/// `let (grad_x, grad_w, grad_out) = grads_mut_and_ref!(grads, [x_ghost, w_ghost], out_ghost);`
/// Expands to `?`s, so the closure must return `Result<(), D::Err>`.
/// Panics if two of the tensors are the same tensor.
macro_rules! grads_mut_and_ref {
    ($grads:expr, [$($inp:expr),+ $(,)?], $out:expr) => {{
        let grads = $grads;
        $( grads.try_alloc_for(&$inp)?; )+
        grads.try_alloc_for(&$out)?;
        let out_ptr = $crate::device::const_ptr(grads.get_or_alloc_mut(&$out)?);
        let ptrs = [
            $( $crate::device::mut_ptr(grads.get_or_alloc_mut(&$inp)?) as *const (), )+
            out_ptr as *const (),
        ];
        for (i, a) in ptrs.iter().enumerate() {
            for b in &ptrs[i + 1..] {
                assert!(a != b, "an op got the same tensor twice as input/output");
            }
        }
        // SAFETY: every entry was allocated above, so the `get_or_alloc_mut`
        // calls only look entries up and never restructure the map: each
        // pointer stays valid for the borrow of `grads`. Distinct tensors own
        // distinct entries (asserted above), so the mutable borrows never alias
        // each other or the shared one.
        unsafe {
            ( $( &mut *$crate::device::mut_ptr(grads.get_or_alloc_mut(&$inp)?), )+ &*out_ptr )
        }
    }};
}
pub(crate) use grads_mut_and_ref;

/// `&mut T` → `*mut T` with the type kept (for [`grads_mut_and_ref`]).
#[doc(hidden)]
pub(crate) fn mut_ptr<T>(r: &mut T) -> *mut T {
    r
}

/// `&T` → `*const T` with the type kept (for [`grads_mut_and_ref`]).
#[doc(hidden)]
pub(crate) fn const_ptr<T>(r: &T) -> *const T {
    r
}
