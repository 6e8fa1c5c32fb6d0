//! Row blocks of a CPU kernel in parallel, with the calling thread taking
//! part and never waiting for a helper that has not started.
//!
//! A loss call at (256, 1000) is ≈ 100 µs of work per pass. Handing it to
//! rayon from a thread outside the pool (`par_chunks_mut(..).for_each`) parks
//! the caller and wakes the sleeping workers: two thread wake-ups per pass,
//! each tens of microseconds, more on a loaded machine, so two threads ran
//! slower than one. Here the caller claims blocks from an atomic counter
//! right away, while `rayon::spawn` asks the pool's other threads to join in;
//! a helper that wakes late finds every block claimed and leaves at once.
//! The caller waits only for blocks a helper has claimed and is running, so
//! a call is never slower than one thread by more than one block's time
//! (plus one wake-up signal).

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Below this many logits a call runs on one thread (the wake-up signals
/// cost more than a second thread saves).
pub(crate) const PAR_MIN_ELEMS: usize = 32 * 1024;
/// Work per block, in logits: small enough that blocks balance across
/// threads and a late helper still finds work, large enough that claiming
/// a block (one atomic add) is negligible.
const BLOCK_ELEMS: usize = 8 * 1024;

/// The state the caller shares with its helpers.
struct Shared {
    /// Next block to claim.
    next: AtomicUsize,
    /// Blocks finished.
    done: AtomicUsize,
    /// Number of blocks.
    blocks: usize,
    /// The block runner, type-erased; valid while `done < blocks` (see
    /// `run_blocks`'s safety argument).
    task: TaskPtr,
    /// The first panic of a block, re-raised on the caller once every block
    /// has finished (a panic must neither abort a rayon worker nor unwind
    /// the caller while helpers still use its closure).
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// A pointer to the caller's `&(dyn Fn(usize) + Sync)`, lifetime erased.
#[derive(Clone, Copy)]
struct TaskPtr(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync`, and it is only called while the caller
// keeps it alive (see `run_blocks`).
unsafe impl Send for TaskPtr {}
// SAFETY: as above: calling a `Sync` closure from several threads is allowed.
unsafe impl Sync for TaskPtr {}

impl Shared {
    /// Claims and runs blocks until none are left.
    fn work(&self) {
        loop {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            if k >= self.blocks {
                return;
            }
            let task = self.task;
            // SAFETY: block k < blocks was claimed by this thread alone, so
            // `done` cannot reach `blocks` before the increment below: the
            // caller is still inside `run_blocks`, which keeps the closure
            // behind `task` alive until `done == blocks`.
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| unsafe { (*task.0)(k) })) {
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(p);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// Runs `task(k)` for every block `k` in `0..blocks`, on the calling thread
/// and up to `helpers` rayon workers, and returns when all have finished.
fn run_blocks(blocks: usize, helpers: usize, task: &(dyn Fn(usize) + Sync)) {
    let task: *const (dyn Fn(usize) + Sync + '_) = task;
    // SAFETY: (lifetime erasure) the pointer outlives `task`'s borrow only
    // inside `Shared`, and `Shared::work` dereferences it only for a claimed
    // block k < blocks; this function returns only after all `blocks` blocks
    // are done, and every later claim sees k ≥ blocks and never touches it.
    let task = TaskPtr(unsafe {
        std::mem::transmute::<
            *const (dyn Fn(usize) + Sync + '_),
            *const (dyn Fn(usize) + Sync + 'static),
        >(task)
    });
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        blocks,
        task,
        panic: Mutex::new(None),
    });
    for _ in 0..helpers.min(blocks.saturating_sub(1)) {
        let s = Arc::clone(&shared);
        rayon::spawn(move || s.work());
    }
    shared.work();
    // Every block is claimed; wait for the ones helpers are still running.
    let mut spins = 0u32;
    while shared.done.load(Ordering::Acquire) < blocks {
        if spins < 1 << 12 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
    let payload = shared
        .panic
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(p) = payload {
        resume_unwind(p);
    }
}

/// A `*mut X` that may cross threads (blocks write disjoint ranges).
struct OutPtr<X>(*mut X);
impl<X> Clone for OutPtr<X> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<X> Copy for OutPtr<X> {}
// SAFETY: each block gets a disjoint range of the buffer (below), and `X: Send`.
unsafe impl<X: Send> Send for OutPtr<X> {}
// SAFETY: as above.
unsafe impl<X: Send> Sync for OutPtr<X> {}

/// Runs `f(first_row, block)` over blocks of `out` (`per_row` items a row,
/// `b` rows of `c` logits), in parallel when the call is big enough and the
/// rayon pool has more than one thread.
pub(crate) fn for_row_blocks<X: Send>(
    out: &mut [X],
    per_row: usize,
    b: usize,
    c: usize,
    f: impl Fn(usize, &mut [X]) + Sync + Send,
) {
    let threads = rayon::current_num_threads();
    if b * c < PAR_MIN_ELEMS || threads < 2 || per_row == 0 || b < 2 {
        f(0, out);
        return;
    }
    debug_assert_eq!(out.len(), b * per_row);
    let rows = (BLOCK_ELEMS / c.max(1)).clamp(1, b);
    let blocks = b.div_ceil(rows);
    let len = out.len();
    let base = OutPtr(out.as_mut_ptr());
    let task = move |k: usize| {
        // The whole wrapper, not its raw-pointer field (edition 2021 captures fields).
        let base = base;
        let first = k * rows;
        let start = first * per_row;
        let end = ((k + 1) * rows * per_row).min(len);
        // SAFETY: `start..end` lies inside `out` (end ≤ len, start < end for
        // k < blocks), blocks are disjoint ranges, each block runs once, and
        // `out` stays mutably borrowed until `run_blocks` returns.
        let blk = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
        f(first, blk);
    };
    run_blocks(blocks, threads - 1, &task);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_visited_once_with_its_index() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for &(b, c) in &[(7, 5000), (256, 1000), (33, 1003), (1, 40_000), (5, 3)] {
            let per_row = 3;
            let mut out = vec![0usize; b * per_row];
            pool.install(|| {
                for_row_blocks(&mut out, per_row, b, c, |first, blk| {
                    for (j, v) in blk.iter_mut().enumerate() {
                        *v += first * per_row + j + 1;
                    }
                })
            });
            let want: Vec<usize> = (1..=b * per_row).collect();
            assert_eq!(out, want, "({b}, {c})");
        }
    }

    #[test]
    fn the_caller_never_waits_for_a_helper_that_has_not_started() {
        // The pool's second thread is held until the call has returned: a
        // call that waited for its helper would never return (caught by a
        // deadlock watchdog, not a timing assertion).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        started_rx.recv().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let caller = std::thread::spawn(move || {
            let out = pool.install(|| {
                assert_eq!(rayon::current_num_threads(), 2);
                let mut out = vec![0u32; 64];
                for_row_blocks(&mut out, 1, 64, 1024, |first, blk| {
                    for (j, v) in blk.iter_mut().enumerate() {
                        *v = (first + j) as u32;
                    }
                });
                out
            });
            done_tx.send(out).unwrap();
            pool
        });
        let out = done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("for_row_blocks waited for a helper that could not start");
        release_tx.send(()).unwrap();
        drop(caller.join().unwrap());
        assert_eq!(out, (0..64).collect::<Vec<u32>>());
    }

    #[test]
    fn a_panicking_block_is_not_silently_lost() {
        // A panic in any block (caller or helper) reaches the caller once
        // all blocks are done; the pool's threads survive it.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.install(|| {
                let mut out = vec![0u8; 64];
                for_row_blocks(&mut out, 1, 64, 1024, |first, _| {
                    if first == 40 {
                        panic!("block at row 40")
                    }
                });
            })
        }));
        let msg = r.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"block at row 40"));
        let mut out = vec![0u8; 64];
        pool.install(|| for_row_blocks(&mut out, 1, 64, 1024, |_, blk| blk.fill(1)));
        assert_eq!(out, vec![1u8; 64]);
    }
}
