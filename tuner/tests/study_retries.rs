//! Transient failures are retried: a trial SIGKILLed from outside (the OOM
//! killer, an operator) or past its timeout runs again up to
//! `study.max_retries` times, every attempt journaled; raising the timeout
//! on a resume retries the trials that timed out.

use crate::common;

use std::sync::Arc;

use common::*;
use polytune::orchestrator::{ChildCommand, FnRunner};
use polytune::study::{child_runner, run_study_blocking, StudyError};

const STUDY: &str =
    "[study]\nbudget = 6\nconfirm_seeds = 2\nworkers = 2\n[search]\nsolver = \"nelder-mead\"\n";

#[test]
fn a_trial_killed_from_outside_is_retried_and_the_result_is_unchanged() {
    let cfg = config(STUDY);
    let reference = tempfile::tempdir().unwrap();
    let ok = ChildCommand::new(fixture("trial_ok.sh"), Vec::<String>::new());
    run_study_blocking(
        cfg.clone(),
        options(reference.path()),
        Arc::new(child_runner(&cfg, ok)),
    )
    .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let mut killed = ChildCommand::new(fixture("trial_killed_once.sh"), Vec::<String>::new());
    killed.env = vec![("FIXTURE_DIR".into(), markers.path().into())];
    let report = run_study_blocking(
        cfg.clone(),
        options(tmp.path()),
        Arc::new(child_runner(&cfg, killed)),
    )
    .unwrap();
    // Every trial was killed once (a `retry` row naming SIGKILL), then finished.
    let rows = journal_rows(tmp.path());
    let retries: Vec<&Vec<String>> = rows.iter().filter(|r| r[2] == "retry").collect();
    assert_eq!(retries.len(), 6 + 4, "{rows:?}");
    assert!(retries
        .iter()
        .all(|r| r.last().unwrap().contains("killed by signal 9")));
    assert!(report
        .trials
        .iter()
        .all(|t| t.is_finished() && t.attempt == 2));
    // Without the retry rows, the journal and the answer are the reference's.
    let finished: Vec<Vec<String>> = rows
        .into_iter()
        .filter(|r| r[2] != "retry")
        .map(|mut r| {
            let n = r.len();
            r.remove(n - 2); // the attempt column
            r
        })
        .collect();
    let reference_rows: Vec<Vec<String>> = journal_rows(reference.path())
        .into_iter()
        .map(|mut r| {
            let n = r.len();
            r.remove(n - 2);
            r
        })
        .collect();
    assert_eq!(finished, reference_rows);
    assert_eq!(
        tuned_core(&tmp.path().join("tuned.toml")),
        tuned_core(&reference.path().join("tuned.toml"))
    );
}

#[test]
fn a_study_whose_trials_timed_out_completes_after_raising_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = |cfg: &polytune::study::StudyConfig| {
        let mut c = ChildCommand::new(fixture("trial_ok.sh"), Vec::<String>::new());
        c.env = vec![("FIXTURE_SLEEP".into(), "1".into())];
        child_runner(cfg, c)
    };
    let mut short = config(STUDY);
    short.study.trial_timeout_s = 0.2;
    short.study.max_retries = 1;
    short.study.budget = 2;
    let err =
        run_study_blocking(short.clone(), options(tmp.path()), Arc::new(slow(&short))).unwrap_err();
    assert!(matches!(err, StudyError::NoFinishedTrial { .. }), "{err}");
    // Two attempts per trial: one `retry`, one `failed`.
    let rows = journal_rows(tmp.path());
    assert_eq!(rows.iter().filter(|r| r[2] == "retry").count(), 2);
    assert_eq!(rows.iter().filter(|r| r[2] == "failed").count(), 2);
    // The same study with a longer timeout (not part of the fingerprint)
    // retries the timed-out trials and finishes.
    let mut long = short.clone();
    long.study.trial_timeout_s = 30.0;
    let report =
        run_study_blocking(long.clone(), options(tmp.path()), Arc::new(slow(&long))).unwrap();
    assert_eq!(report.trials.len(), 2);
    assert!(report.trials.iter().all(|t| t.is_finished()));
}

#[test]
fn retries_are_bounded_and_counted_across_a_resume() {
    // An in-process runner that reports every attempt of trial 1 as lost.
    let cfg = config(STUDY);
    let tmp = tempfile::tempdir().unwrap();
    let runner = FnRunner::new(|spec: &polytune::trial::TrialSpec| {
        if spec.phase == polytune::trial::TrialPhase::Search && spec.trial == 1 {
            polytune::orchestrator::TrialOutcome::Transient("killed by signal 9 (SIGKILL)".into())
        } else {
            analytic(spec)
        }
    });
    let report = run_study_blocking(cfg, options(tmp.path()), Arc::new(runner)).unwrap();
    let t1 = &report.trials[1];
    assert!(!t1.is_finished());
    assert_eq!(t1.attempt, 3);
    assert!(
        t1.error.contains("gave up after 3 attempts"),
        "{}",
        t1.error
    );
    let rows = journal_rows(tmp.path());
    let of_t1: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[0] == "1" && r[1] == "search")
        .collect();
    assert_eq!(of_t1.len(), 3);
}
