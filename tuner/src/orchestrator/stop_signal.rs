//! Which signal stopped the process, for its exit status: by shell
//! convention a program stopped by signal N exits with 128 + N (SIGINT:
//! 130, SIGTERM: 143), so callers and supervisors can tell a Ctrl-C from a
//! `kill`.

use std::sync::atomic::{AtomicI32, Ordering};

static FIRST: AtomicI32 = AtomicI32::new(0);

/// Records the first stop signal received (`"SIGINT"` or `"SIGTERM"`);
/// later ones do not change it.
pub(crate) fn record(name: &str) {
    let signo = match name {
        "SIGINT" => libc::SIGINT,
        "SIGTERM" => libc::SIGTERM,
        _ => return,
    };
    let _ = FIRST.compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst);
}

/// The exit status for a process stopped by the first recorded signal
/// (128 + its number), or `None` when no stop signal was received.
pub fn exit_code() -> Option<u8> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        n => u8::try_from(128 + n).ok(),
    }
}
