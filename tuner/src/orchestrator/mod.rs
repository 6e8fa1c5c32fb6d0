//! The tokio side of a study: a worker pool that runs trials, each in a child
//! process, with per-trial timeouts and clean shutdown on Ctrl-C / SIGTERM.
//!
//! * [`TrialRunner`] runs one trial. [`ChildRunner`] starts a child process
//!   (by default `<current exe> trial --spec -`, see [`ChildCommand`]) so a
//!   crash, abort, OOM kill, garbage output or NaN metric fails that trial
//!   only. [`FnRunner`] runs a closure in-process (tests, benchmarks).
//! * [`Orchestrator`] bounds how many trials run at once (the worker pool) and
//!   hands batches of trials from the synchronous argmin side to tokio.
//! * [`Shutdown`] is the stop switch: on the first signal no new trial
//!   starts, running ones get a grace period to finish, then they are killed
//!   (a second signal kills at once).
//!
//! What a trial is and the spec / result formats it speaks live in
//! [`crate::trial`]; this module only starts, watches and stops processes.

mod child;
pub mod stop_signal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::trial::{TrialResult, TrialSpec};

pub use child::{ChildCommand, ChildRunner};

/// How one trial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialOutcome {
    /// The child reported a valid result.
    Finished(TrialResult),
    /// The trial failed for good (crash, non-zero exit, garbage or NaN
    /// output); the reason is recorded and the search goes on.
    Failed(String),
    /// The trial was lost to something outside it — killed by a signal it
    /// did not cause (the OOM killer, an operator's `kill -9`) or past the
    /// trial timeout: worth retrying (`study.max_retries`).
    Transient(String),
    /// Stopped by a shutdown request before it could finish; not a result,
    /// so a resumed study runs it again.
    Cancelled,
}

/// One trial's outcome with the parent's timing.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRun {
    /// How it ended.
    pub outcome: TrialOutcome,
    /// When it started (a worker was free).
    pub started: std::time::SystemTime,
    /// Wall time from start to end (zero if it never started).
    pub duration: Duration,
    /// False when a shutdown came before a worker picked the trial up.
    pub launched: bool,
}

/// How far a shutdown has gone. Ordered: `Running < Draining < Kill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    /// Normal operation.
    Running,
    /// No new trial starts; running trials may finish.
    Draining,
    /// Running trials are terminated now.
    Kill,
}

/// A cloneable stop switch shared by the orchestrator, the runners and the
/// search driver.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<StopLevel>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A switch in the `Running` position.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(StopLevel::Running)),
        }
    }

    /// The current level.
    pub fn level(&self) -> StopLevel {
        *self.tx.borrow()
    }

    /// True once a stop was requested (draining or killing).
    pub fn is_stopping(&self) -> bool {
        self.level() >= StopLevel::Draining
    }

    /// Raises the level (never lowers it).
    pub fn raise(&self, level: StopLevel) {
        self.tx.send_if_modified(|cur| {
            if level > *cur {
                *cur = level;
                true
            } else {
                false
            }
        });
    }

    /// A receiver that sees every change of level.
    pub fn subscribe(&self) -> watch::Receiver<StopLevel> {
        self.tx.subscribe()
    }

    /// Waits until the level is at least `level`.
    pub async fn reached(&self, level: StopLevel) {
        let mut rx = self.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail.
        let _ = rx.wait_for(|l| *l >= level).await;
    }

    /// A switch that follows this one (every level this one reaches) and
    /// can also be raised on its own: stops one part (a trial, the local
    /// workers) without stopping everything. Must be called inside a tokio
    /// runtime; the forwarding task ends when either reaches `Kill`.
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::new();
        let (outer, inner) = (self.clone(), child.clone());
        tokio::spawn(async move {
            let mut rx = outer.subscribe();
            loop {
                let level = *rx.borrow_and_update();
                inner.raise(level);
                if inner.level() == StopLevel::Kill {
                    break;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    _ = inner.reached(StopLevel::Kill) => break,
                }
            }
        });
        child
    }

    /// Listens for SIGINT and SIGTERM: the first one starts draining and
    /// schedules [`StopLevel::Kill`] after `grace`; a second one kills at
    /// once. Must be called inside a tokio runtime; the task ends when the
    /// level reaches `Kill`.
    pub fn listen_for_signals(
        &self,
        grace: Duration,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let mut grace_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
            loop {
                let timer = async {
                    match grace_timer.as_mut() {
                        Some(t) => t.await,
                        None => std::future::pending().await,
                    }
                };
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                    _ = timer => {
                        tracing::warn!("grace period of {:.0} s over: terminating running trials", grace.as_secs_f64());
                        this.raise(StopLevel::Kill);
                        return;
                    }
                    _ = this.reached(StopLevel::Kill) => return,
                };
                stop_signal::record(name);
                if this.is_stopping() {
                    tracing::warn!("second {name}: terminating running trials now");
                    this.raise(StopLevel::Kill);
                    return;
                }
                tracing::warn!(
                    "{name}: no new trials start; running trials get {:.0} s to finish (signal again to stop them now)",
                    grace.as_secs_f64()
                );
                this.raise(StopLevel::Draining);
                grace_timer = Some(Box::pin(tokio::time::sleep(grace)));
            }
        }))
    }
}

fn not_started() -> TrialRun {
    TrialRun {
        outcome: TrialOutcome::Cancelled,
        started: std::time::SystemTime::now(),
        duration: Duration::ZERO,
        launched: false,
    }
}

/// A boxed future, as [`TrialRunner::run`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs one trial. Implementations must return [`TrialOutcome::Cancelled`]
/// promptly once `stop` reaches [`StopLevel::Kill`], and never panic.
pub trait TrialRunner: Send + Sync + 'static {
    /// Runs `spec` to completion (or cancellation).
    fn run(&self, spec: TrialSpec, stop: watch::Receiver<StopLevel>) -> BoxFuture<TrialOutcome>;
}

/// Runs trials in-process with a synchronous closure on tokio's blocking
/// pool: for analytic objectives in tests and benchmarks. A panic in the
/// closure fails the trial (like a crashing child would).
pub struct FnRunner<F> {
    f: Arc<F>,
}

impl<F> FnRunner<F>
where
    F: Fn(&TrialSpec) -> TrialOutcome + Send + Sync + 'static,
{
    /// Wraps the closure.
    pub fn new(f: F) -> Self {
        Self { f: Arc::new(f) }
    }
}

impl<F> TrialRunner for FnRunner<F>
where
    F: Fn(&TrialSpec) -> TrialOutcome + Send + Sync + 'static,
{
    fn run(
        &self,
        spec: TrialSpec,
        mut stop: watch::Receiver<StopLevel>,
    ) -> BoxFuture<TrialOutcome> {
        let f = self.f.clone();
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || f(&spec));
            tokio::select! {
                joined = task => match joined {
                    Ok(outcome) => outcome,
                    Err(e) => TrialOutcome::Failed(format!("trial panicked: {}", panic_message(e))),
                },
                // The closure cannot be interrupted; its thread finishes on its own.
                _ = stop.wait_for(|l| *l >= StopLevel::Kill) => TrialOutcome::Cancelled,
            }
        })
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into()),
        Err(e) => e.to_string(),
    }
}

/// The worker pool: at most `workers` trials run at once; a batch's trials
/// start in submission order.
#[derive(Clone)]
pub struct Orchestrator {
    runner: Arc<dyn TrialRunner>,
    permits: Arc<Semaphore>,
    /// Free worker slot numbers (one per permit): a trial learns which
    /// worker runs it, e.g. to pick that worker's GPU.
    slots: Arc<std::sync::Mutex<Vec<usize>>>,
    shutdown: Shutdown,
    handle: tokio::runtime::Handle,
}

impl Orchestrator {
    /// A pool of `workers` (≥ 1) slots. Must be called inside a tokio
    /// runtime; its handle is kept for [`Orchestrator::run_batch_blocking`].
    pub fn new(runner: Arc<dyn TrialRunner>, workers: usize, shutdown: Shutdown) -> Self {
        Self {
            runner,
            permits: Arc::new(Semaphore::new(workers.max(1))),
            slots: Arc::new(std::sync::Mutex::new((0..workers.max(1)).rev().collect())),
            shutdown,
            handle: tokio::runtime::Handle::current(),
        }
    }

    /// The stop switch this pool obeys.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Runs one trial when a worker is free. Returns `Cancelled` without
    /// starting it once a stop was requested.
    pub async fn run_one(&self, spec: TrialSpec) -> TrialRun {
        match self.acquire().await {
            Some(permit) => self.launch(spec, permit).await,
            None => not_started(),
        }
    }

    /// Waits for a free worker; `None` once a stop was requested.
    async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.shutdown.is_stopping() {
            return None;
        }
        let permit = tokio::select! {
            p = self.permits.clone().acquire_owned() => p.ok()?,
            _ = self.shutdown.reached(StopLevel::Draining) => return None,
        };
        (!self.shutdown.is_stopping()).then_some(permit)
    }

    /// Runs a trial on an acquired worker slot.
    async fn launch(
        &self,
        mut spec: TrialSpec,
        _permit: tokio::sync::OwnedSemaphorePermit,
    ) -> TrialRun {
        let slot = SlotGuard::take(&self.slots);
        spec.worker = Some(slot.0);
        tracing::debug!(trial = spec.trial, phase = spec.phase.as_str(), epsilon = ?spec.epsilon, seed = spec.seed, worker = slot.0, "trial starts");
        let started = std::time::SystemTime::now();
        let clock = std::time::Instant::now();
        let outcome = self.runner.run(spec, self.shutdown.subscribe()).await;
        drop(slot);
        TrialRun {
            outcome,
            started,
            duration: clock.elapsed(),
            launched: true,
        }
    }

    /// Starts all `specs` on the pool and returns a channel that yields
    /// `(position in specs, outcome)` as each finishes. Callable from a
    /// blocking thread (argmin's synchronous cost function); every spec
    /// yields exactly one message.
    pub fn run_batch_blocking(
        &self,
        specs: Vec<TrialSpec>,
    ) -> std::sync::mpsc::Receiver<(usize, TrialRun)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let this = self.clone();
        // One task hands out worker slots in order, so trials start in
        // submission order (trial 0, the baseline, first).
        self.handle.spawn(async move {
            for (i, spec) in specs.into_iter().enumerate() {
                match this.acquire().await {
                    Some(permit) => {
                        let (that, tx) = (this.clone(), tx.clone());
                        tokio::spawn(async move {
                            let _ = tx.send((i, that.launch(spec, permit).await));
                        });
                    }
                    None => {
                        let _ = tx.send((i, not_started()));
                    }
                }
            }
        });
        rx
    }
}

/// A worker slot number, handed back to the free list when the trial ends
/// (or its future is dropped), like the permit it goes with.
struct SlotGuard(usize, Arc<std::sync::Mutex<Vec<usize>>>);

impl SlotGuard {
    fn take(slots: &Arc<std::sync::Mutex<Vec<usize>>>) -> Self {
        // Every held permit holds one slot, so a slot is always free here.
        let n = slots
            .lock()
            .expect("slot list")
            .pop()
            .expect("a free slot per permit");
        SlotGuard(n, slots.clone())
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Ok(mut free) = self.1.lock() {
            free.push(self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trial::TrialPhase;

    fn spec(i: u64) -> TrialSpec {
        TrialSpec {
            trial: i,
            phase: TrialPhase::Search,
            epsilon: vec![i as f64],
            seed: 0,
            train: Default::default(),
            data: Default::default(),
            worker: None,
        }
    }

    /// Holds every trial that enters until the test releases it, so a test
    /// decides when trials overlap (events, no sleeps).
    #[derive(Default)]
    struct Gate {
        state: std::sync::Mutex<GateState>,
        changed: std::sync::Condvar,
    }

    #[derive(Default)]
    struct GateState {
        /// Trials inside the gate: (trial, worker slot).
        held: Vec<(u64, usize)>,
        /// Trials allowed to leave.
        released: Vec<u64>,
        /// Most trials inside at once.
        peak: usize,
        /// Everyone may leave (the test is over, or failed).
        open: bool,
    }

    /// Opens the gate when dropped, so a failing test does not leave trials
    /// waiting for the deadlock guard.
    struct OpenOnDrop(Arc<Gate>);

    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            if let Ok(mut s) = self.0.state.lock() {
                s.open = true;
            }
            self.0.changed.notify_all();
        }
    }

    impl GateState {
        fn waiting(&self) -> Vec<(u64, usize)> {
            let mut w: Vec<_> = self
                .held
                .iter()
                .copied()
                .filter(|(t, _)| !self.released.contains(t))
                .collect();
            w.sort_unstable();
            w
        }
    }

    /// Only a guard against a hung test: correct code never waits this long.
    const DEADLOCK: Duration = Duration::from_secs(120);

    impl Gate {
        /// A trial's body: enter, wait until released, leave.
        fn pass(&self, trial: u64, worker: usize) {
            let mut s = self.state.lock().unwrap();
            s.held.push((trial, worker));
            s.peak = s.peak.max(s.held.len());
            self.changed.notify_all();
            let (mut s, _) = self
                .changed
                .wait_timeout_while(s, DEADLOCK, |s| !s.open && !s.released.contains(&trial))
                .unwrap();
            s.held.retain(|&(t, _)| t != trial);
            self.changed.notify_all();
        }

        /// Waits until `n` trials wait inside and returns them (sorted).
        fn wait_for(&self, n: usize) -> Vec<(u64, usize)> {
            let s = self.state.lock().unwrap();
            let (s, r) = self
                .changed
                .wait_timeout_while(s, DEADLOCK, |s| s.waiting().len() < n)
                .unwrap();
            assert!(!r.timed_out(), "waited for {n} trials: {:?}", s.waiting());
            s.waiting()
        }

        /// Lets `trials` leave.
        fn release(&self, trials: &[(u64, usize)]) {
            let mut s = self.state.lock().unwrap();
            s.released.extend(trials.iter().map(|&(t, _)| t));
            self.changed.notify_all();
        }

        /// With `n` trials held, a correct pool starts no other: give a pool
        /// that would a moment to do so (a bounded wait for a non-event,
        /// which cannot fail correct code however slow the machine).
        fn assert_no_more_than(&self, n: usize) {
            let s = self.state.lock().unwrap();
            let (s, _) = self
                .changed
                .wait_timeout_while(s, Duration::from_millis(50), |s| s.waiting().len() <= n)
                .unwrap();
            assert!(
                s.waiting().len() <= n,
                "more than {n} at once: {:?}",
                s.waiting()
            );
        }

        fn peak(&self) -> usize {
            self.state.lock().unwrap().peak
        }
    }

    /// Runs `n` gated trials on a pool of `workers`, releasing them a full
    /// pool at a time; returns the trials (with slots) of each round and the
    /// outcomes in submission order.
    async fn gated_rounds(
        workers: usize,
        n: u64,
    ) -> (Vec<Vec<(u64, usize)>>, Vec<TrialRun>, usize) {
        let gate = Arc::new(Gate::default());
        let g = gate.clone();
        let runner = FnRunner::new(move |s: &TrialSpec| {
            g.pass(s.trial, s.worker.expect("the pool sets the worker slot"));
            TrialOutcome::Failed(format!("eps {}", s.epsilon[0]))
        });
        let pool = Orchestrator::new(Arc::new(runner), workers, Shutdown::new());
        let g = gate.clone();
        let (rounds, runs) = tokio::task::spawn_blocking(move || {
            let _open = OpenOnDrop(g.clone());
            let rx = pool.run_batch_blocking((0..n).map(spec).collect());
            let mut rounds = Vec::new();
            let mut left = n as usize;
            while left > 0 {
                let k = workers.min(left);
                let held = g.wait_for(k);
                g.assert_no_more_than(k);
                g.release(&held);
                left -= k;
                rounds.push(held);
            }
            let mut got: Vec<_> = rx.iter().take(n as usize).collect();
            got.sort_by_key(|(i, _)| *i);
            (rounds, got.into_iter().map(|(_, r)| r).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        (rounds, runs, gate.peak())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_never_exceeds_its_workers() {
        let (rounds, runs, peak) = gated_rounds(2, 6).await;
        // Two at a time, in submission order.
        let trials: Vec<Vec<u64>> = rounds
            .iter()
            .map(|r| r.iter().map(|&(t, _)| t).collect())
            .collect();
        assert_eq!(trials, [[0, 1], [2, 3], [4, 5]]);
        assert_eq!(peak, 2);
        assert_eq!(runs.len(), 6);
        for (i, o) in runs.iter().enumerate() {
            assert_eq!(o.outcome, TrialOutcome::Failed(format!("eps {i}")));
            assert!(o.launched);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_trials_get_distinct_worker_slots() {
        let (rounds, runs, peak) = gated_rounds(3, 9).await;
        assert_eq!((rounds.len(), runs.len(), peak), (3, 9, 3));
        for r in &rounds {
            let mut slots: Vec<usize> = r.iter().map(|&(_, w)| w).collect();
            slots.sort_unstable();
            assert_eq!(
                slots,
                [0, 1, 2],
                "trials running at once hold distinct slots 0..workers: {r:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_worker_starts_a_batch_in_submission_order() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let o = order.clone();
        let runner = FnRunner::new(move |s: &TrialSpec| {
            o.lock().unwrap().push(s.trial);
            TrialOutcome::Cancelled
        });
        let pool = Orchestrator::new(Arc::new(runner), 1, Shutdown::new());
        tokio::task::spawn_blocking(move || {
            pool.run_batch_blocking((0..8).map(spec).collect())
                .iter()
                .take(8)
                .count()
        })
        .await
        .unwrap();
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn draining_pool_starts_nothing_and_panics_fail_one_trial() {
        let runner = FnRunner::new(|s: &TrialSpec| {
            if s.trial == 1 {
                panic!("boom in trial 1");
            }
            TrialOutcome::Failed("ran".into())
        });
        let shutdown = Shutdown::new();
        let pool = Orchestrator::new(Arc::new(runner), 1, shutdown.clone());
        assert_eq!(
            pool.run_one(spec(0)).await.outcome,
            TrialOutcome::Failed("ran".into())
        );
        match pool.run_one(spec(1)).await.outcome {
            TrialOutcome::Failed(m) => assert!(m.contains("boom in trial 1"), "{m}"),
            o => panic!("{o:?}"),
        }
        shutdown.raise(StopLevel::Draining);
        assert_eq!(pool.run_one(spec(2)).await.outcome, TrialOutcome::Cancelled);
        shutdown.raise(StopLevel::Running); // never lowers
        assert_eq!(shutdown.level(), StopLevel::Draining);
    }
}
