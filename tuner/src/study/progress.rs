//! Logging (tracing-subscriber, `RUST_LOG`) and the progress bar, sharing
//! stderr without tearing each other.

use std::io::Write;
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// The process-wide set of progress bars the log writer keeps clear of: add
/// other bars (e.g. the trainer's epoch and batch bars) here so log lines
/// do not tear them.
pub fn multi_progress() -> &'static MultiProgress {
    multi()
}

/// A stderr writer that hides the progress bars while a log line is written.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multi().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the global tracing subscriber: level from `RUST_LOG` (default
/// `info`), lines on stderr that do not collide with the progress bar;
/// colours only when stderr is a terminal (a trial's stderr is a pipe whose
/// tail ends up in the journal's `error` column).
/// Returns an error if a subscriber is already installed.
pub fn init_logging() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
}

/// Like [`init_logging`], but one JSON object per line (for log
/// collectors: `polytune serve --log-format json`).
pub fn init_json_logging() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
}

/// The study's progress bar over the budget, showing the best so far. Hidden
/// when disabled or when stderr is not a terminal.
#[derive(Clone, Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `len` trials.
    pub fn new(len: u64, enabled: bool) -> Self {
        let bar = if enabled {
            multi().add(ProgressBar::new(len))
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} trials, {elapsed} elapsed | {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix("search");
        Self { bar }
    }

    /// One more trial done.
    pub fn inc(&self, msg: String) {
        self.bar.inc(1);
        self.bar.set_message(msg);
    }

    /// Switches to another phase with `extra` more trials.
    pub fn phase(&self, prefix: &'static str, extra: u64) {
        self.bar.set_prefix(prefix);
        self.bar.inc_length(extra);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
