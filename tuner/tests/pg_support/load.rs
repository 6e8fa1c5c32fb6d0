//! The storage load driver shared by `tests/pg_storage.rs` (200 trials, a
//! check) and `benches/pg_queue.rs` (2,000 trials, the figure): queue `n`
//! trials of a fresh study in one batch, run them with `workers` workers,
//! wait until all ended, and count what the database recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use polytune::orchestrator::{
    ChildCommand, ChildRunner, FnRunner, Shutdown, StopLevel, TrialOutcome, TrialRunner,
};

use polytune::storage::pg::{PgStore, StudyRegistration};
use polytune::storage::worker::{run_worker, WorkerOptions};
use polytune::study::StudyConfig;
use polytune::trial::{TrialPhase, TrialResult, TrialSpec};

/// How each trial runs.
#[derive(Debug, Clone)]
pub enum LoadTrial {
    /// In-process: a 5 ms sleep (measures the storage path).
    InProcess,
    /// A child process per trial: this script (e.g. a 5 ms sleep).
    Command(std::path::PathBuf),
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Trials that ended `finished`.
    pub finished: usize,
    /// Attempt rows recorded.
    pub attempts: usize,
    /// Trials with more than one attempt row.
    pub duplicated: usize,
    /// Seconds from the first claim to the last result.
    pub seconds: f64,
}

/// Runs the load: `n` trials, `workers` in-process workers.
pub async fn run_load(
    store: &PgStore,
    name: &str,
    n: u64,
    workers: usize,
    trial: LoadTrial,
) -> LoadReport {
    let reg = StudyRegistration {
        name: name.into(),
        fingerprint: format!("load {name}"),
        source: "load test".into(),
        config: "[study]\nbudget = 1\n".into(),
        inputs: String::new(),
        terms: 1,
        budget: n,
        confirm_runs: 0,
        lease_s: 30.0,
        max_retries: 2,
    };
    let row = store.register_study(&reg).await.expect("register");
    let specs: Vec<TrialSpec> = (0..n)
        .map(|i| TrialSpec {
            trial: i,
            phase: TrialPhase::Search,
            epsilon: vec![i as f64 / n as f64],
            seed: i,
            train: Default::default(),
            data: Default::default(),
            worker: None,
        })
        .collect();
    store.enqueue(row.id, &specs).await.expect("enqueue");
    let runner: Arc<dyn TrialRunner> = match trial {
        LoadTrial::InProcess => Arc::new(FnRunner::new(|spec: &TrialSpec| {
            std::thread::sleep(Duration::from_millis(5));
            TrialOutcome::Finished(TrialResult {
                val_accuracy: 0.5,
                val_loss: 1.0,
                train_loss: None,
                epochs: None,
                seed: Some(spec.seed),
                duration_s: None,
            })
        })),
        LoadTrial::Command(path) => Arc::new(ChildRunner::new(ChildCommand::new(
            path,
            Vec::<String>::new(),
        ))),
    };
    let start = Instant::now();
    let shutdown = Shutdown::new();
    let mut handles = Vec::new();
    for k in 0..workers {
        let mut w = WorkerOptions::new();
        w.id = format!("{name}/{k}");
        w.study = Some(row.id);
        w.poll = Duration::from_millis(5);
        let r = runner.clone();
        w.runner = Arc::new(move |_: &StudyConfig| Ok(r.clone()));
        let (store, stop) = (store.clone(), shutdown.clone());
        handles.push(tokio::spawn(
            async move { run_worker(&store, &w, &stop).await },
        ));
    }
    let all: Vec<u64> = (0..n).collect();
    loop {
        if store
            .ended(row.id, TrialPhase::Search, &all)
            .await
            .expect("poll")
            .len()
            == n as usize
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    shutdown.raise(StopLevel::Draining);
    for h in handles {
        h.await.expect("worker task").expect("worker");
    }
    let attempts = store.attempts(row.id).await.expect("attempts");
    let mut per_trial = std::collections::HashMap::new();
    for a in &attempts {
        *per_trial.entry(a.trial).or_insert(0usize) += 1;
    }
    let finished = store
        .ended(row.id, TrialPhase::Search, &all)
        .await
        .expect("ended")
        .iter()
        .filter(|r| r.is_finished())
        .count();
    LoadReport {
        finished,
        attempts: attempts.len(),
        duplicated: per_trial.values().filter(|c| **c > 1).count(),
        seconds,
    }
}
