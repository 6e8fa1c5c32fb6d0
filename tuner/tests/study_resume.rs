//! Kill-and-resume: a study run in a subprocess (this test binary re-run as
//! `harness_entry`) is SIGKILLed at increasing random-ish points, resumed
//! each time until it completes, and must end with exactly the journal rows
//! and the tuned result of an uninterrupted run. SIGINT is tested the same
//! way (exit 130 with a resume hint). The trials are real child processes
//! (tests/fixtures/trial_ok.sh).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use polytune::orchestrator::ChildCommand;
use polytune::study::{child_runner, run_study_blocking, StudyError};

fn study_toml(solver: &str, workers: usize) -> String {
    format!(
        "[study]\nbudget = 12\nrerun_seeds = 2\nworkers = {workers}\ninterrupt_grace_s = 0\n[search]\nsolver = \"{solver}\"\n[search.particle_swarm]\nparticles = 4\n"
    )
}

/// The subprocess: runs the study described by the environment.
#[test]
#[ignore = "entry point of the subprocess the resume tests start"]
fn harness_entry() {
    let Ok(dir) = std::env::var("HARNESS_DIR") else {
        return;
    };
    let solver = std::env::var("HARNESS_SOLVER").unwrap();
    let workers: usize = std::env::var("HARNESS_WORKERS").unwrap().parse().unwrap();
    let cfg = config(&study_toml(&solver, workers));
    let mut cmd = ChildCommand::new(fixture("trial_ok.sh"), Vec::<String>::new());
    cmd.env = vec![("FIXTURE_SLEEP".into(), "0.03".into())];
    let mut opts = options(Path::new(&dir));
    opts.handle_signals = true;
    opts.resume_command = Some("harness --resume".into());
    match run_study_blocking(cfg.clone(), opts, Arc::new(child_runner(&cfg, cmd))) {
        Ok(_) => std::process::exit(0),
        Err(e @ StudyError::Interrupted { .. }) => {
            eprintln!("error: {e}");
            std::process::exit(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}

fn spawn(dir: &Path, solver: &str, workers: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "harness_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HARNESS_DIR", dir)
        .env("HARNESS_SOLVER", solver)
        .env("HARNESS_WORKERS", workers.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn rows_in(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("trials.csv"))
        .map(|t| t.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

/// Runs the harness to completion, SIGKILLing it after `delays` in turn.
/// Returns how many kills landed while the study was partway.
fn run_with_kills(dir: &Path, solver: &str, workers: usize, delays: &[u64]) -> usize {
    let mut partway = 0;
    for &ms in delays.iter().chain(std::iter::repeat(&60_000)) {
        let mut child = spawn(dir, solver, workers);
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{solver}: harness failed: {status:?}");
                return partway;
            }
            if t.elapsed() >= Duration::from_millis(ms) {
                let before = rows_in(dir);
                child.kill().unwrap(); // SIGKILL
                let status = child.wait().unwrap();
                if status.signal() == Some(9) && before > 0 {
                    partway += 1;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    unreachable!()
}

#[test]
fn sigkill_at_random_points_then_resume_equals_an_uninterrupted_run() {
    // Deterministic "random" kill times: a small LCG.
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        60 + (x >> 33) % 250
    };
    for (solver, workers) in [("nelder-mead", 1), ("particle-swarm", 3)] {
        let reference = tempfile::tempdir().unwrap();
        assert_eq!(run_with_kills(reference.path(), solver, workers, &[]), 0);
        let tmp = tempfile::tempdir().unwrap();
        // Kill times grow so the study always gets further and finishes.
        let delays: Vec<u64> = (0..12).map(|i| next() + 60 * i).collect();
        let partway = run_with_kills(tmp.path(), solver, workers, &delays);
        assert!(partway >= 1, "{solver}: no kill landed partway through");
        assert_eq!(
            journal_rows(tmp.path()),
            journal_rows(reference.path()),
            "{solver}"
        );
        assert_eq!(
            tuned_core(&tmp.path().join("tuned.toml")),
            tuned_core(&reference.path().join("tuned.toml")),
            "{solver}"
        );
    }
}

#[test]
fn sigint_stops_cleanly_with_a_resume_hint_and_the_study_resumes() {
    let reference = tempfile::tempdir().unwrap();
    run_with_kills(reference.path(), "random", 2, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let child = spawn(tmp.path(), "random", 2);
    // Wait for a few rows, then Ctrl-C.
    let t = Instant::now();
    while rows_in(tmp.path()) < 3 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signals our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("to resume, run: harness --resume"),
        "{stderr}"
    );
    assert!(stderr.contains("search trials are recorded in"), "{stderr}");
    // Every line of the journal is complete.
    let text = std::fs::read_to_string(tmp.path().join("trials.csv")).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(run_with_kills(tmp.path(), "random", 2, &[]), 0);
    assert_eq!(journal_rows(tmp.path()), journal_rows(reference.path()));
    assert_eq!(
        tuned_core(&tmp.path().join("tuned.toml")),
        tuned_core(&reference.path().join("tuned.toml"))
    );
}
