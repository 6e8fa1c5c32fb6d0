//! Kill-and-resume: a study run in a subprocess (this test binary re-run
//! with the argument `study-harness`, see [`main`]) is SIGKILLed at seeded random points, resumed each time
//! until it completes, and must end with exactly the journal rows and the
//! tuned result of an uninterrupted run. Kills are triggered by events, not
//! by the clock: after the journal reaches a seeded row count, plus a seeded
//! fraction of a trial. Every journal row written before a kill must be
//! byte-identical afterwards and never run again (the fixture logs each
//! launch). SIGINT is tested the same way (exit 130 with a resume hint).
//! The trials are real child processes (tests/fixtures/trial_ok.sh); the
//! schedule's seed is printed, so a failure can be replayed.
//!
//! The target has `harness = false`: its `main` either runs the subprocess
//! study (first argument `study-harness`) or runs the tests through
//! `libtest-mimic`, so the subprocess entry is not a test (nothing ignored)
//! and the tests keep libtest's filters and report.

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
        "[study]\nbudget = 12\nconfirm_seeds = 2\nworkers = {workers}\ninterrupt_grace_s = 0\n[search]\nsolver = \"{solver}\"\n[search.particle_swarm]\nparticles = 4\n"
    )
}

/// The subprocess' first argument.
const HARNESS_ARG: &str = "study-harness";

/// Runs the tests, or, given [`HARNESS_ARG`], the subprocess.
fn main() {
    if std::env::args().nth(1).as_deref() == Some(HARNESS_ARG) {
        std::process::exit(harness_entry());
    }
    let args = libtest_mimic::Arguments::from_args();
    let tests = vec![
        libtest_mimic::Trial::test(
            "sigkill_at_random_points_then_resume_equals_an_uninterrupted_run",
            || {
                sigkill_at_random_points_then_resume_equals_an_uninterrupted_run();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test(
            "sigint_stops_cleanly_with_a_resume_hint_and_the_study_resumes",
            || {
                sigint_stops_cleanly_with_a_resume_hint_and_the_study_resumes();
                Ok(())
            },
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// The subprocess: runs the study described by the environment
/// (`HARNESS_DIR`, `HARNESS_SOLVER`, `HARNESS_WORKERS`, optional
/// `HARNESS_LOG`) and returns the exit code: 0 done, 130 interrupted, 1
/// failed, 2 a missing or bad variable.
fn harness_entry() -> i32 {
    let var = |k: &str| {
        std::env::var(k).map_err(|_| {
            eprintln!("error: {k} is not set");
        })
    };
    let (Ok(dir), Ok(solver), Ok(workers)) = (
        var("HARNESS_DIR"),
        var("HARNESS_SOLVER"),
        var("HARNESS_WORKERS"),
    ) else {
        return 2;
    };
    let Ok(workers) = workers.parse::<usize>() else {
        eprintln!("error: HARNESS_WORKERS = {workers:?} is not a count");
        return 2;
    };
    let cfg = config(&study_toml(&solver, workers));
    let mut cmd = ChildCommand::new(fixture("trial_ok.sh"), Vec::<String>::new());
    cmd.env = vec![("FIXTURE_SLEEP".into(), "0.03".into())];
    if let Ok(log) = std::env::var("HARNESS_LOG") {
        cmd.env.push(("FIXTURE_LOG".into(), log.into()));
    }
    let mut opts = options(Path::new(&dir));
    opts.handle_signals = true;
    opts.resume_command = Some("harness --resume".into());
    match run_study_blocking(cfg.clone(), opts, Arc::new(child_runner(&cfg, cmd))) {
        Ok(_) => 0,
        Err(e @ StudyError::Interrupted { .. }) => {
            eprintln!("error: {e}");
            130
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn spawn(dir: &Path, solver: &str, workers: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg(HARNESS_ARG)
        .env("HARNESS_DIR", dir)
        .env("HARNESS_SOLVER", solver)
        .env("HARNESS_WORKERS", workers.to_string())
        .env("HARNESS_LOG", dir.join("launches.log"))
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

/// The journal's complete lines (up to the last newline).
fn complete_journal(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("trials.csv")).unwrap_or_default();
    match text.rfind('\n') {
        Some(i) => text[..=i].to_string(),
        None => String::new(),
    }
}

/// Runs the harness to completion. Kill k waits until the journal holds
/// `rows[k]` rows, then `extra_ms[k]` more (part of a trial), then sends
/// SIGKILL. Checks that the rows journaled before each kill survive
/// byte-identical. Returns how many kills landed partway.
fn run_with_kills(dir: &Path, solver: &str, workers: usize, kills: &[(usize, u64)]) -> usize {
    let mut partway = 0;
    let mut kept: Vec<String> = Vec::new();
    for k in 0.. {
        // After the scheduled kills, one run to the end.
        let (rows, extra_ms) = kills.get(k).copied().unwrap_or((usize::MAX, 0));
        let mut child = spawn(dir, solver, workers);
        let t = Instant::now();
        let mut reached: Option<Instant> = None;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{solver}: harness failed: {status:?}");
                let last = complete_journal(dir);
                for prefix in &kept {
                    assert!(
                        last.starts_with(prefix.as_str()),
                        "{solver}: journaled rows changed after a kill"
                    );
                }
                return partway;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{solver}: harness hangs"
            );
            if reached.is_none() && rows_in(dir) >= rows {
                reached = Some(Instant::now());
            }
            if reached.is_some_and(|r| r.elapsed() >= Duration::from_millis(extra_ms)) {
                let before = complete_journal(dir);
                child.kill().unwrap(); // SIGKILL
                let status = child.wait().unwrap();
                if status.signal() == Some(9) && !before.is_empty() {
                    partway += 1;
                }
                kept.push(before);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    unreachable!()
}

/// Launches per (ε, seed) from the fixture's log.
fn launches(dir: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for l in std::fs::read_to_string(dir.join("launches.log"))
        .unwrap_or_default()
        .lines()
    {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

fn sigkill_at_random_points_then_resume_equals_an_uninterrupted_run() {
    // A seeded schedule (printed, so a failure replays): kill k after
    // row k·(1..3) of the journal, plus 0..40 ms into the next trial.
    let seed: u64 = std::env::var("KILL_SCHEDULE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2545F4914F6CDD1D);
    eprintln!("kill schedule seed {seed} (set KILL_SCHEDULE_SEED to replay)");
    let mut x = seed;
    let mut next = move |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    for (solver, workers) in [("bayes", 1), ("bayes", 3), ("nelder-mead", 1)] {
        let reference = tempfile::tempdir().unwrap();
        assert_eq!(run_with_kills(reference.path(), solver, workers, &[]), 0);
        let tmp = tempfile::tempdir().unwrap();
        // 16 rows in all (12 search + 4 confirmation): kills until row ~15.
        let mut row = 0usize;
        let mut kills = Vec::new();
        while row < 15 {
            row += 1 + next(3) as usize;
            kills.push((row.min(15), next(40)));
        }
        let partway = run_with_kills(tmp.path(), solver, workers, &kills);
        assert!(
            partway >= 3,
            "{solver}: only {partway} kills landed partway"
        );
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
        // A journaled trial never runs again: each finished row's (ε, seed)
        // was launched once, unless a kill interrupted an earlier launch of
        // it before its row was written (then it has one row but may have
        // several launches — never two rows).
        let journal = journal_rows(tmp.path());
        let mut keys: Vec<(String, String, String)> = journal
            .iter()
            .map(|r| (r[1].clone(), r[0].clone(), r[2].clone()))
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{solver}: a trial has two rows");
        let total: usize = launches(tmp.path()).values().sum();
        assert!(
            total <= journal.len() + kills.len() * workers,
            "{solver}: {total} launches for {} rows and {} kills: journaled trials were re-run",
            journal.len(),
            kills.len()
        );
    }
}

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
