//! The device-side inputs both PolyLoss CUDA kernels read: targets, class
//! weights, the `PRM_*` parameter block of `poly_common.cuh` and the flag
//! word. One upload path, so the softmax and sigmoid launches cannot drift
//! apart in how they encode a job.
//!
//! Class targets given as a `usize` tensor on the GPU never visit the host:
//! dfdx's own buffer is borrowed (`device::cuda::class_targets_view`, a
//! checked view with the host copy as fallback) and `poly_class_targets`
//! turns it into the kernels' `u32` indices, range-checked on the device
//! (an out-of-range row's loss and gradient are NaN: no error flag to read
//! back, so no sync; the NaN shows wherever the loss is read). A mean whose
//! denominator needs the values (an ignore index, or softmax class weights)
//! has the forward write each row's share of it (`F_DEV_MEAN`), summed by
//! `poly_reduce_rows` beside the losses; the backward reads the resulting
//! factor from the device (`DeviceInputs::scale`).
//! Transient device memory: 4 bytes per row (8 more per row for such a mean). Weights and the parameter block
//! are small `htod_copy`s queued from owned host buffers (no wait).

use cudarc::driver::{CudaDevice, CudaSlice, DeviceSlice, DriverError, LaunchAsync, LaunchConfig};
use std::sync::Arc;

use crate::device::cuda::{function, BLOCK};
use crate::loss::targets::Targets;
use dfdx::prelude::{Cuda, CudaError};

/// Flag: targets are probabilities (`Targets::Probs`), not class indices.
pub(crate) const F_PROBS: i32 = 1;
/// Flag: per-class weights are given.
pub(crate) const F_WEIGHT: i32 = 2;
/// Flag: the output is one reduced scalar (mean or sum), not one per row.
pub(crate) const F_SCALAR: i32 = 4;
/// Flag: a mean whose denominator the forward sums on the device from class
/// targets in a device buffer (see [`JobInputs::device_mean`]).
pub(crate) const F_DEV_MEAN: i32 = 8;
/// Marks an ignored row in the target buffer.
pub(crate) const IGNORED_ROW: u32 = u32::MAX;

/// What a loss job hands the kernels besides the logits.
pub(crate) struct JobInputs<'a> {
    pub targets: &'a Targets<Cuda>,
    pub ignore: Option<usize>,
    pub weight: Option<&'a [f32]>,
    pub smoothing: f32,
    pub gamma: f32,
    /// The focal α (`None`: unweighted).
    pub alpha: Option<f32>,
    pub focal: bool,
    pub eps: &'a [f32],
    /// Whether the output is reduced to one scalar.
    pub scalar: bool,
    /// Whether that scalar is a mean over the rows' target weights (softmax)
    /// or logit counts (sigmoid), summed on the device because the targets
    /// are a device buffer the host does not read.
    pub device_mean: bool,
}

/// The uploaded inputs; kept for the backward pass.
pub(crate) struct DeviceInputs {
    pub tgt: CudaSlice<u32>,
    pub weight: CudaSlice<f32>,
    pub prm: CudaSlice<f32>,
    pub flags: i32,
    /// The factor of a scalar loss's gradient, written by `poly_reduce_rows`
    /// in the forward and read by the backward (one float).
    pub scale: CudaSlice<f32>,
}

impl JobInputs<'_> {
    /// Copies targets, weights and parameters to the device (one-element
    /// placeholders for what the job does not use: kernels never read them).
    ///
    /// The copies are queued on dfdx's stream from owned host buffers
    /// (`htod_copy`), so the host never waits for the device here.
    ///
    /// Class targets in a device buffer ([`Targets::ClassBuffer`]) never
    /// reach the host: `poly_class_targets` (of the loaded `module`) turns
    /// them into the same `u32` indices on the device, range-checked
    /// against `c`.
    pub fn upload(
        &self,
        dev: &Arc<CudaDevice>,
        module: &str,
        c: usize,
    ) -> Result<DeviceInputs, DriverError> {
        let (tgt, is_probs) = match self.targets {
            Targets::Classes(t) => (dev.htod_copy(target_indices(t, self.ignore))?, false),
            Targets::ClassBuffer(src) => (class_targets(dev, module, src, c, self.ignore)?, false),
            Targets::Probs(_) => (dev.alloc_zeros::<u32>(1)?, true),
        };
        let weight = match self.weight {
            Some(w) => dev.htod_copy(w.to_vec())?,
            None => dev.alloc_zeros::<f32>(1)?,
        };
        let prm = dev.htod_copy(param_block(
            self.smoothing,
            self.gamma,
            self.alpha,
            self.focal,
            self.eps,
        ))?;
        let flags = (if is_probs { F_PROBS } else { 0 })
            | (if self.weight.is_some() { F_WEIGHT } else { 0 })
            | (if self.scalar { F_SCALAR } else { 0 })
            | (if self.scalar && self.device_mean {
                F_DEV_MEAN
            } else {
                0
            });
        // SAFETY: one float, written by poly_reduce_rows in the forward
        // before the backward (same stream) reads it; per-row losses never
        // read it. A plain cudarc buffer, outside dfdx's cache.
        let scale = unsafe { dev.alloc::<f32>(1) }?;
        Ok(DeviceInputs {
            tgt,
            weight,
            prm,
            flags,
            scale,
        })
    }
}

/// `poly_class_targets`: dfdx's `usize` class buffer `src` (b indices) as
/// the kernels' `u32` indices, [`IGNORED_ROW`] for `ignore`, `BAD_ROW`
/// (NaN loss and gradient) for an index outside `0..c`; all on the device.
fn class_targets(
    dev: &Arc<CudaDevice>,
    module: &str,
    src: &CudaSlice<usize>,
    c: usize,
    ignore: Option<usize>,
) -> Result<CudaSlice<u32>, DriverError> {
    let b = src.len();
    // SAFETY: poly_class_targets writes every one of the b elements before
    // any kernel reads them (same stream); with b = 0 the one-element
    // placeholder is never read. A plain cudarc buffer: dfdx's cache is not
    // involved (see the `device::cuda` docs).
    let mut tgt = unsafe { dev.alloc::<u32>(b.max(1)) }?;
    if b > 0 {
        let f = function(dev, module, "poly_class_targets");
        let cfg = LaunchConfig {
            grid_dim: (b.div_ceil(BLOCK as usize) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // `c` fits an i32: the loss kernels take it as one.
        let args = (
            src,
            &mut tgt,
            b as i32,
            c as i32,
            i32::from(ignore.is_some()),
            ignore.unwrap_or(0) as u64,
        );
        // SAFETY: src holds b 64-bit indices (usize is 64-bit, checked in
        // `class_targets_view`), tgt b u32; the grid covers b threads.
        unsafe { f.launch(cfg, args) }?;
    }
    Ok(tgt)
}

/// The probability targets' buffer, or a one-element placeholder (kept in
/// `slot`) when the targets are class indices.
pub(crate) fn probs_or_placeholder<'a>(
    dev: &Arc<CudaDevice>,
    targets: &'a Targets<Cuda>,
    slot: &'a mut Option<CudaSlice<f32>>,
) -> Result<&'a CudaSlice<f32>, DriverError> {
    match targets {
        Targets::Probs(y) => Ok(y),
        Targets::Classes(_) | Targets::ClassBuffer(_) => {
            Ok(slot.insert(dev.alloc_zeros::<f32>(1)?))
        }
    }
}

/// The parameter block of `poly_common.cuh` (PRM_*).
fn param_block(
    smoothing: f32,
    gamma: f32,
    alpha: Option<f32>,
    focal: bool,
    eps: &[f32],
) -> Vec<f32> {
    let mut v = vec![
        smoothing,
        gamma,
        alpha.unwrap_or(-1.0),
        if focal { 1.0 } else { 0.0 },
        eps.len() as f32,
    ];
    v.extend_from_slice(eps);
    v
}

/// Class indices as `u32` (ignored rows as [`IGNORED_ROW`]); the caller has
/// checked every other index is `< C`.
fn target_indices(t: &[usize], ignore: Option<usize>) -> Vec<u32> {
    t.iter()
        .map(|&v| {
            if Some(v) == ignore {
                IGNORED_ROW
            } else {
                v as u32
            }
        })
        .collect()
}

/// The per-row buffer of a scalar loss's first stage: the row losses
/// `[0, b)` and, with [`F_DEV_MEAN`], the rows' shares of the mean's
/// denominator `[b, 2b)`. Left uninitialised when the forward will write
/// every element (`b > 0`, `c > 0`; `poly_reduce_rows` reads only those, a
/// per-row loss none); zeroed for `c = 0`, where no forward runs.
pub(crate) fn row_sums(
    dev: &Arc<CudaDevice>,
    b: usize,
    c: usize,
    flags: i32,
) -> Result<CudaSlice<f64>, DriverError> {
    let len = if flags & F_DEV_MEAN != 0 {
        2 * b
    } else if flags & F_SCALAR != 0 {
        b
    } else {
        1
    };
    if c == 0 {
        return dev.alloc_zeros::<f64>(len.max(1));
    }
    // SAFETY: see above: with c > 0 no element is read before the forward
    // (same stream) writes it.
    unsafe { dev.alloc::<f64>(len.max(1)) }
}

/// `out[0] = s · Σ rows[0..b)` in f64 by one block, in a fixed order: the
/// deterministic second stage of a scalar loss (also for `b = 0`: a zero),
/// with `s = scale`, or `1 / Σ rows[b..2b)` with [`F_DEV_MEAN`] in `inputs.flags`;
/// `s` goes to `inputs.scale` for the backward.
/// `module` is the loaded loss module (each has its own copy of the kernel).
pub(crate) fn reduce_rows(
    dev: &Arc<CudaDevice>,
    module: &str,
    rows: &CudaSlice<f64>,
    inputs: &mut DeviceInputs,
    out: &mut CudaSlice<f32>,
    b: usize,
    scale: f32,
) -> Result<(), CudaError> {
    let f = function(dev, module, "poly_reduce_rows");
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let args = (rows, out, &mut inputs.scale, b as i32, scale, inputs.flags);
    // SAFETY: rows holds b (2·b with F_DEV_MEAN) doubles written by the
    // forward; out and scale one float each.
    unsafe { f.launch(cfg, args) }?;
    Ok(())
}
