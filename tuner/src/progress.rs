//! Progress of the library's long loops — a study's trials, the image
//! cache's decoding — as a count against a total that may grow (a study's
//! confirmation phase adds trials), with a short message and a phase name.
//!
//! The library only counts; drawing is the program's business. As with
//! `tracing`, a program installs one process-wide [`ProgressDisplay`]
//! ([`install`]; the `polytune` binary draws indicatif bars) and every
//! [`Progress`] the library starts reports to it. Without one, or for a
//! [`Progress::hidden`], every call is a no-op, so library users and tests
//! see nothing and pay nothing.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use polytune::progress::{Progress, ProgressSink};
//!
//! #[derive(Default)]
//! struct Count(AtomicU64);
//! impl ProgressSink for Count {
//!     fn inc(&self, n: u64) {
//!         self.0.fetch_add(n, Ordering::Relaxed);
//!     }
//!     fn inc_length(&self, _extra: u64) {}
//!     fn set_message(&self, _msg: String) {}
//!     fn set_prefix(&self, _prefix: &'static str) {}
//!     fn finish(&self) {}
//! }
//!
//! let count = Arc::new(Count::default());
//! let p = Progress::from_sink(count.clone());
//! p.inc(2);
//! p.clone().inc(1); // clones report to the same sink
//! assert_eq!(count.0.load(Ordering::Relaxed), 3);
//! Progress::hidden().inc(5); // reports nowhere
//! ```

use std::sync::{Arc, OnceLock};

/// What is being counted (the display picks its layout by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressKind {
    /// A study's trials over its budget; the prefix is the phase (`search`,
    /// then `confirm`), the message the last trial's result.
    Trials,
    /// Images decoded into the preprocessing cache; the message says which
    /// split at which size.
    Decode,
}

/// One running progress display (e.g. a bar). Called from any thread.
pub trait ProgressSink: Send + Sync {
    /// `n` more items done.
    fn inc(&self, n: u64);
    /// The total grows by `extra` items.
    fn inc_length(&self, extra: u64);
    /// The text shown beside the count.
    fn set_message(&self, msg: String);
    /// The phase shown before the count.
    fn set_prefix(&self, prefix: &'static str);
    /// Done: remove the display.
    fn finish(&self);
}

/// Starts progress displays: what a program installs with [`install`].
pub trait ProgressDisplay: Send + Sync {
    /// A new display of `kind` over `len` items.
    fn start(&self, kind: ProgressKind, len: u64) -> Arc<dyn ProgressSink>;
}

static DISPLAY: OnceLock<Box<dyn ProgressDisplay>> = OnceLock::new();

/// A display was already installed in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a progress display is already installed")]
pub struct AlreadyInstalled;

/// Installs the process-wide display every later [`Progress::start`]
/// reports to. Once per process, like a global tracing subscriber.
pub fn install(display: impl ProgressDisplay + 'static) -> Result<(), AlreadyInstalled> {
    DISPLAY.set(Box::new(display)).map_err(|_| AlreadyInstalled)
}

/// A handle on one progress display, or on none. Cheap to clone; clones
/// report to the same display.
#[derive(Clone, Default)]
pub struct Progress {
    sink: Option<Arc<dyn ProgressSink>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("shown", &self.sink.is_some())
            .finish()
    }
}

impl Progress {
    /// Progress over `len` items on the installed display (a no-op without
    /// one).
    pub fn start(kind: ProgressKind, len: u64) -> Self {
        Self {
            sink: DISPLAY.get().map(|d| d.start(kind, len)),
        }
    }

    /// Progress that reports nowhere.
    pub fn hidden() -> Self {
        Self { sink: None }
    }

    /// Progress reporting to `sink` (an embedder's own display).
    pub fn from_sink(sink: Arc<dyn ProgressSink>) -> Self {
        Self { sink: Some(sink) }
    }

    /// `n` more items done.
    pub fn inc(&self, n: u64) {
        if let Some(s) = &self.sink {
            s.inc(n);
        }
    }

    /// The total grows by `extra` items.
    pub fn inc_length(&self, extra: u64) {
        if let Some(s) = &self.sink {
            s.inc_length(extra);
        }
    }

    /// The text shown beside the count.
    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(s) = &self.sink {
            s.set_message(msg.into());
        }
    }

    /// The phase shown before the count.
    pub fn set_prefix(&self, prefix: &'static str) {
        if let Some(s) = &self.sink {
            s.set_prefix(prefix);
        }
    }

    /// Done: removes the display.
    pub fn finish(&self) {
        if let Some(s) = &self.sink {
            s.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every display started: its kind, length and what it was told.
    type Started = Arc<Mutex<Vec<(ProgressKind, u64, Arc<Log>)>>>;

    /// Records every display started and what each was told.
    #[derive(Default)]
    struct Recorder(Started);

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl ProgressSink for Log {
        fn inc(&self, n: u64) {
            self.0.lock().unwrap().push(format!("inc {n}"));
        }
        fn inc_length(&self, extra: u64) {
            self.0.lock().unwrap().push(format!("len +{extra}"));
        }
        fn set_message(&self, msg: String) {
            self.0.lock().unwrap().push(format!("msg {msg}"));
        }
        fn set_prefix(&self, prefix: &'static str) {
            self.0.lock().unwrap().push(format!("prefix {prefix}"));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push("finish".into());
        }
    }

    impl ProgressDisplay for Recorder {
        fn start(&self, kind: ProgressKind, len: u64) -> Arc<dyn ProgressSink> {
            let log = Arc::new(Log::default());
            self.0.lock().unwrap().push((kind, len, log.clone()));
            log
        }
    }

    // The only test of this binary that installs a display (once per
    // process); other tests' progress may report to it too, so it looks
    // for its own display by its unique length.
    #[test]
    fn an_installed_display_receives_every_call_and_only_once() {
        let seen = Recorder::default();
        let all = seen.0.clone();
        install(seen).unwrap();
        assert_eq!(install(Recorder::default()), Err(AlreadyInstalled));
        let p = Progress::start(ProgressKind::Decode, 987_654_321);
        p.set_prefix("confirm");
        p.clone().inc(3);
        p.inc_length(4);
        p.set_message("m");
        p.finish();
        Progress::hidden().inc(1);
        let all = all.lock().unwrap();
        let mine: Vec<_> = all
            .iter()
            .filter(|(_, len, _)| *len == 987_654_321)
            .collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].0, ProgressKind::Decode);
        assert_eq!(
            *mine[0].2 .0.lock().unwrap(),
            ["prefix confirm", "inc 3", "len +4", "msg m", "finish"]
        );
    }
}
