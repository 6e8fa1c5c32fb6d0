//! Child-process trials: results, crashes, aborts, hangs, garbage, NaN,
//! timeouts and shutdown, with the fixture scripts in tests/fixtures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use polytune::orchestrator::{
    ChildCommand, ChildRunner, Shutdown, StopLevel, TrialOutcome, TrialRunner,
};

use polytune::trial::{TrialPhase, TrialSpec};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn spec(eps: f64, seed: u64) -> TrialSpec {
    TrialSpec {
        trial: 3,
        phase: TrialPhase::Search,
        epsilon: vec![eps],
        seed,
        train: toml::from_str("epochs = 2").unwrap(),
        data: toml::Table::new(),
        worker: None,
    }
}

fn runner(name: &str, env: &[(&str, &str)]) -> ChildRunner {
    let mut cmd = ChildCommand::new(fixture(name), Vec::<String>::new());
    cmd.env = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    ChildRunner::new(cmd)
}

async fn run(r: &ChildRunner, s: TrialSpec) -> TrialOutcome {
    r.run(s, Shutdown::new().subscribe()).await
}

#[tokio::test]
async fn a_good_child_reports_its_result() {
    match run(&runner("trial_ok.sh", &[]), spec(2.5, 11)).await {
        TrialOutcome::Finished(r) => {
            // 0.95 − 0.004·1.2², seed effect 0.002·((7·11 + 3) mod 5) = 0,
            // interaction 0.0005·(((11·2500 + 13·11 + 2500) mod 7) − 3) =
            // −0.001; loss 0.2 + 0.01·1.2, as the script computes.
            assert!((r.val_accuracy - 0.94324).abs() < 1e-9, "{r:?}");
            assert!((r.val_loss - 0.212).abs() < 1e-9, "{r:?}");
            assert_eq!((r.epochs, r.seed), (Some(2), Some(11)));
        }
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn failures_are_reported_with_their_reason() {
    let crash = run(
        &runner("trial_ok.sh", &[("FIXTURE_CRASH_ABOVE", "6")]),
        spec(7.5, 1),
    )
    .await;
    assert_eq!(
        crash,
        TrialOutcome::Failed(
            "exit status 3: fixture: eps=7.5 seed=1 | fixture: CUDA error: out of memory at eps=7.5".into()
        )
    );
    let nan = run(
        &runner("trial_ok.sh", &[("FIXTURE_NAN_BETWEEN", "1 2")]),
        spec(1.5, 1),
    )
    .await;
    match nan {
        TrialOutcome::Failed(m) => {
            assert!(m.contains("not a trial result") && m.contains("NaN"), "{m}")
        }
        o => panic!("{o:?}"),
    }
    match run(&runner("trial_abort.sh", &[]), spec(1.0, 1)).await {
        TrialOutcome::Failed(m) => {
            assert!(m.starts_with("killed by signal 6 (SIGABRT)"), "{m}");
            assert!(m.contains("assertion failed"), "{m}");
        }
        o => panic!("{o:?}"),
    }
    match run(&runner("trial_garbage.sh", &[]), spec(1.0, 1)).await {
        TrialOutcome::Failed(m) => assert!(m.contains("Segmentation fault (core dumped)?"), "{m}"),
        o => panic!("{o:?}"),
    }
    match run(&runner("trial_wrong_seed.sh", &[]), spec(1.0, 5)).await {
        TrialOutcome::Failed(m) => {
            assert_eq!(m, "the child used seed 999999 but the spec asked for 5")
        }
        o => panic!("{o:?}"),
    }
    let missing = ChildRunner::new(ChildCommand::new("/nonexistent/polytune", ["trial"]));
    match run(&missing, spec(1.0, 5)).await {
        TrialOutcome::Failed(m) => assert!(
            m.starts_with("cannot start `/nonexistent/polytune trial`"),
            "{m}"
        ),
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn a_hanging_child_is_killed_at_the_timeout_with_its_grandchildren() {
    let r = runner("trial_hang.sh", &[]).with_timeout(Some(Duration::from_millis(300)));
    let t = Instant::now();
    let out = run(&r, spec(1.0, 1)).await;
    assert_eq!(
        out,
        TrialOutcome::Transient("timed out after 0.3 s (killed)".into())
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn shutdown_cancels_a_running_child_promptly() {
    let r = runner("trial_hang.sh", &[]).with_term_grace(Duration::from_millis(200));
    let shutdown = Shutdown::new();
    let rx = shutdown.subscribe();
    let s2 = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s2.raise(StopLevel::Draining);
        tokio::time::sleep(Duration::from_millis(100)).await;
        s2.raise(StopLevel::Kill);
    });
    let t = Instant::now();
    assert_eq!(r.run(spec(1.0, 1), rx).await, TrialOutcome::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
