//! External trial programs (`[trial] command`): the documented example
//! program end to end, and programs that crash, print garbage or hang —
//! each a failed trial with a clear reason while the study goes on.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use polytune::study::{child_runner, run_study_blocking, trial_program};

fn example_program() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/trial_program.py")
}

fn python3() -> bool {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "python3 is missing in CI: the README's example trial program needs it"
        );
        eprintln!("skipping: python3 is not installed (the example trial program is Python)");
    }
    ok
}

#[test]
fn the_readme_example_program_runs_a_whole_study() {
    if !python3() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "[study]\nbudget = 6\nconfirm_seeds = 2\nworkers = 2\n[trial]\ncommand = [\"python3\", {:?}]\n[train]\nepochs = 12\n",
        example_program().display().to_string()
    );
    let cfg = config(&text);
    let runner = child_runner(&cfg, trial_program(&cfg).unwrap());
    let report = run_study_blocking(cfg, options(tmp.path()), Arc::new(runner)).unwrap();
    assert_eq!(report.trials.len(), 6);
    assert!(
        report.trials.iter().all(|t| t.is_finished()),
        "{:?}",
        report.trials
    );
    // The program reports the epochs it got from [train] and the spec's seed.
    assert!(report.trials.iter().all(|t| t.epochs == Some(12)));
    let tuned = poly_loss::PolyConfig::load(tmp.path().join("tuned.toml")).unwrap();
    let res = tuned.result.unwrap();
    assert!(res.verdict.is_some() && res.significant.is_some());
    if !report.recommends_baseline() {
        assert_eq!(report.confirm.len(), 4);
        assert!(report
            .confirm
            .iter()
            .all(|r| r.is_finished() && r.seed >= 1_000_000));
    }
}

#[test]
fn crashing_garbage_and_hanging_programs_fail_their_trials_and_the_study_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let flaky = fixture("trial_flaky.sh");
    let text = format!(
        "[study]\nbudget = 20\nconfirm_seeds = 2\nworkers = 3\ntrial_timeout_s = 2\n[search]\nsolver = \"random\"\n[trial]\ncommand = [\"sh\", {:?}]\n",
        flaky.display().to_string()
    );
    let cfg = config(&text);
    let runner = child_runner(&cfg, trial_program(&cfg).unwrap());
    let report = run_study_blocking(cfg, options(tmp.path()), Arc::new(runner)).unwrap();
    assert_eq!(report.trials.len(), 20);
    let mut seen = [0; 3];
    for t in &report.trials {
        let e = t.epsilon[0];
        if e > 8.0 {
            assert!(
                t.error.contains("exit status 3") && t.error.contains("flaky: crashed"),
                "{t:?}"
            );
            seen[0] += 1;
        } else if e > 6.0 {
            assert!(
                t.error.contains("not a trial result") && t.error.contains("no JSON"),
                "{t:?}"
            );
            seen[1] += 1;
        } else if e > 4.0 {
            assert!(t.error.contains("timed out after 2.0 s"), "{t:?}");
            seen[2] += 1;
        } else {
            assert!(t.is_finished(), "{t:?}");
        }
    }
    // Random search over [-1, 10] with seed 0 hits every failing region.
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}: {:?}", report.trials);
    // The answer comes from the finished trials only.
    assert!(report.recommendation.epsilon[0] <= 4.0);
}
