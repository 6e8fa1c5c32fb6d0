//! What the binary draws on stderr: log lines (tracing-subscriber,
//! `RUST_LOG`) and indicatif progress bars, sharing stderr without tearing
//! each other. The library reports progress through
//! [`polytune::progress`] and [`polytune::train::TrainObserver`]; the bars
//! here are those seams' displays.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use polytune::progress::{ProgressDisplay, ProgressKind, ProgressSink};
use polytune::train::{BatchInfo, EpochMetrics, Phase, TrainObserver};

fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
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

/// The library's progress ([`polytune::progress`]) as indicatif bars: a
/// study's trials in the shared set the log writer keeps clear of, the
/// cache's decoding as a bar of its own. indicatif draws nothing when
/// stderr is not a terminal (a trial's stderr is a pipe).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bars;

impl ProgressDisplay for Bars {
    fn start(&self, kind: ProgressKind, len: u64) -> Arc<dyn ProgressSink> {
        let (bar, template) = match kind {
            ProgressKind::Trials => (
                multi().add(ProgressBar::new(len)),
                "{prefix} [{bar:30}] {pos}/{len} trials, {elapsed} elapsed | {msg}",
            ),
            ProgressKind::Decode => (
                ProgressBar::new(len),
                "{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Arc::new(Bar(bar))
    }
}

/// One indicatif bar behind the library's [`ProgressSink`].
struct Bar(ProgressBar);

impl ProgressSink for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn inc_length(&self, extra: u64) {
        self.0.inc_length(extra);
    }
    fn set_message(&self, msg: String) {
        self.0.set_message(msg);
    }
    fn set_prefix(&self, prefix: &'static str) {
        self.0.set_prefix(prefix);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// indicatif bars for `polytune train`: epochs, and batches of the epoch.
pub struct TrainBars {
    epochs: ProgressBar,
    batches: ProgressBar,
}

impl TrainBars {
    /// Bars for `epochs` epochs, in the shared set.
    pub fn new(epochs: u64) -> Self {
        let e = multi().add(ProgressBar::new(epochs));
        if let Ok(style) =
            ProgressStyle::with_template("epochs  [{bar:30}] {pos}/{len} {elapsed} | {msg}")
        {
            e.set_style(style.progress_chars("=> "));
        }
        let b = multi().add(ProgressBar::new(0));
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:<8}[{bar:30}] {pos}/{len} batches | {msg}")
        {
            b.set_style(style.progress_chars("=> "));
        }
        TrainBars {
            epochs: e,
            batches: b,
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        self.batches.finish_and_clear();
        self.epochs.finish_and_clear();
    }
}

impl TrainObserver for TrainBars {
    fn phase_start(&mut self, phase: Phase, epochs: usize) {
        if phase == Phase::Frozen {
            self.batches.set_prefix("frozen");
            self.batches
                .set_message("preparing the frozen body's features");
        }
        tracing::info!("{} phase: {epochs} epoch(s)", phase.name());
    }

    fn epoch_start(&mut self, phase: Phase, _epoch: usize, batches: usize) {
        self.batches.set_prefix(phase.name());
        self.batches.set_length(batches as u64);
        self.batches.set_position(0);
    }

    fn batch_end(&mut self, info: &BatchInfo<'_>) {
        self.batches.inc(1);
        self.batches
            .set_message(format!("loss {:.4}, lr {:.2e}", info.loss, info.lr));
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        self.epochs.inc(1);
        self.epochs.set_message(format!(
            "val top-1 {:.4}, loss {:.4}",
            m.valid.top1, m.valid.loss
        ));
        tracing::info!("{m}");
    }
}
