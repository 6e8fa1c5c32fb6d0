//! Whole studies: outputs, failures, bad directories, interrupt and resume.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use polytune::orchestrator::{ChildCommand, FnRunner, Shutdown, StopLevel};
use polytune::study::{child_runner, run_study_blocking, StudyError};
use polytune::trial::TrialSpec;

const NM: &str = r#"
[study]
budget = 10
confirm_seeds = 3
workers = 2
[search]
solver = "nelder-mead"
[train]
epochs = 2
label_smoothing = 0.1
[provenance]
dataset = "analytic"
model = "bowl"
"#;

#[test]
fn end_to_end_with_crashing_and_nan_children() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    let out = tmp.path().join("configs/tuned-copy.toml");
    let cfg = config(NM);
    let mut cmd = ChildCommand::new(fixture("trial_ok.sh"), Vec::<String>::new());
    cmd.env = vec![
        ("FIXTURE_CRASH_ABOVE".into(), "6".into()),
        ("FIXTURE_NAN_BETWEEN".into(), "3.2 3.3".into()),
    ];
    let mut opts = options(&dir);
    opts.out = Some(out.clone());
    let report = run_study_blocking(cfg.clone(), opts, Arc::new(child_runner(&cfg, cmd))).unwrap();

    // The journal, read independently: 10 search rows, some failed with reasons.
    let mut rdr = csv::Reader::from_path(dir.join("trials.csv")).unwrap();
    let h = rdr.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|x| x == name).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let mut search: Vec<&csv::StringRecord> = rows
        .iter()
        .filter(|r| &r[col("phase")] == "search")
        .collect();
    search.sort_by_key(|r| r[col("trial")].parse::<u64>().unwrap());
    assert_eq!(search.len(), 10);
    let failed: Vec<_> = search
        .iter()
        .filter(|r| &r[col("state")] == "failed")
        .collect();
    // Trials 0, 1, 2 = 0, 2, 4.58 finish; trial 3 (7.14) crashes; trial 4 (3.25) prints NaN.
    assert!(
        search[3][col("error")].contains("exit status 3"),
        "{:?}",
        search[3]
    );
    assert!(search[4][col("error")].contains("NaN"), "{:?}", search[4]);
    for r in &failed {
        let e: f64 = r[col("eps_1")].parse().unwrap();
        let why = &r[col("error")];
        assert!(
            (e > 6.0 && why.contains("exit status 3") && why.contains("out of memory"))
                || ((3.2..3.3).contains(&e) && why.contains("NaN")),
            "ε {e}: {why}"
        );
    }
    // The recommendation is an evaluated ε, never the failed region, and
    // what the TOML holds (the fixture's curve peaks at 3.7 and is better
    // than CE there by far more than the noise, so the verdict keeps it).
    let rec = report.recommendation.epsilon[0];
    assert!(
        search
            .iter()
            .any(|r| &r[col("state")] == "finished"
                && r[col("eps_1")].parse::<f64>().unwrap() == rec),
        "recommended {rec} was not a finished trial"
    );
    assert!(rec <= 6.0 && !(3.2..3.3).contains(&rec), "{rec}");
    // Confirmation rows: ε* and CE on seeds 1000000.. (never search seeds).
    let confirm: Vec<&csv::StringRecord> = rows
        .iter()
        .filter(|r| &r[col("phase")] == "confirm")
        .collect();
    assert_eq!(confirm.len(), 6);
    let seeds: Vec<u64> = vec![1_000_000, 1_000_001, 1_000_002];
    for r in &search {
        assert!(r[col("seed")].parse::<u64>().unwrap() < 1_000_000);
    }
    // The paired differences in points, by hand from the journal.
    let acc = |eps: f64, seed: u64| -> f64 {
        confirm
            .iter()
            .find(|r| {
                r[col("eps_1")].parse::<f64>().unwrap() == eps
                    && r[col("seed")].parse::<u64>().unwrap() == seed
            })
            .unwrap()[col("val_accuracy")]
        .parse::<f64>()
        .unwrap()
    };
    let d: Vec<f64> = seeds
        .iter()
        .map(|&s| 100.0 * (acc(rec, s) - acc(0.0, s)))
        .collect();
    let mean = d.iter().sum::<f64>() / 3.0;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    // The fixture's (ε, seed) interaction makes the differences differ.
    assert!(sd > 0.01, "{d:?}");
    // t(0.975, 2 dof) = 4.302652729911275 (scipy.stats.t.ppf).
    let half = 4.302652729911275 * sd / 3f64.sqrt();
    let tuned_accs: Vec<f64> = seeds.iter().map(|&s| acc(rec, s)).collect();
    let tmean = tuned_accs.iter().sum::<f64>() / 3.0;
    let tstd = (tuned_accs.iter().map(|a| (a - tmean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let base_accs: Vec<f64> = seeds.iter().map(|&s| acc(0.0, s)).collect();
    let bmean = base_accs.iter().sum::<f64>() / 3.0;
    let bstd = (base_accs.iter().map(|a| (a - bmean).powi(2)).sum::<f64>() / 2.0).sqrt();
    for path in [dir.join("tuned.toml"), out.clone()] {
        let tuned = poly_loss::PolyConfig::load(&path).unwrap();
        let loss = tuned.poly_loss::<1>().unwrap();
        assert_eq!(tuned.loss.epsilon, vec![rec]);
        assert_eq!(loss.epsilon, [rec as f32]);
        assert_eq!(tuned.loss.label_smoothing, 0.1);
        let res = tuned.result.unwrap();
        assert_eq!(res.metric, "val_top1_accuracy");
        assert_eq!(res.seeds, seeds);
        assert!((res.best_mean.unwrap() - tmean).abs() < 1e-12);
        assert!((res.best_std.unwrap() - tstd).abs() < 1e-12);
        assert!((res.baseline_mean.unwrap() - bmean).abs() < 1e-12);
        assert!((res.baseline_std.unwrap() - bstd).abs() < 1e-12);
        assert!((res.difference.unwrap() - mean).abs() < 1e-9);
        assert!((res.ci_low.unwrap() - (mean - half)).abs() < 1e-9);
        assert!((res.ci_high.unwrap() - (mean + half)).abs() < 1e-9);
        assert_eq!(res.n_seeds, Some(3));
        assert_eq!(
            res.significant,
            Some(mean - half > 0.0 || mean + half < 0.0)
        );
        let verdict = res.verdict.unwrap();
        assert_eq!(verdict, report.verdict.sentence);
        let prov = tuned.provenance.unwrap();
        assert_eq!(prov.dataset.as_deref(), Some("analytic"));
        assert_eq!(prov.solver.as_deref(), Some("nelder-mead"));
        assert_eq!(prov.budget, Some(10));
    }
    assert_eq!(report.ran, 10 + 6);
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(summary.contains("recommended "), "{summary}");
    assert!(summary.contains("verdict: "), "{summary}");
    assert!(
        summary.contains("fine-tunes: 10 search + 6 confirmation = 16"),
        "{summary}"
    );
    assert!(summary.contains("out of memory"), "{summary}");
    let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("model mean") && svg.contains("recommended"),
        "{}",
        &svg[..200.min(svg.len())]
    );
}

#[test]
fn every_trial_timing_out_is_a_clear_error_and_journaled() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("[study]\nbudget = 3\nworkers = 3\ntrial_timeout_s = 0.3\n");
    let runner = child_runner(
        &cfg,
        ChildCommand::new(fixture("trial_hang.sh"), Vec::<String>::new()),
    );
    let err = run_study_blocking(cfg, options(tmp.path()), Arc::new(runner)).unwrap_err();
    assert!(
        matches!(err, StudyError::NoFinishedTrial { trials: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("no search trial finished (all 3 failed"),
        "{err}"
    );
    // Each trial: two `retry` attempts, then `failed` (max_retries = 2).
    let rows = journal_rows(tmp.path());
    assert_eq!(rows.len(), 9);
    assert_eq!(rows.iter().filter(|r| r[2] == "retry").count(), 6);
    assert!(rows
        .iter()
        .all(|r| r.last().unwrap().contains("timed out after 0.3 s")));
    assert!(rows
        .iter()
        .filter(|r| r[2] == "failed")
        .all(|r| r.last().unwrap().contains("gave up after 3 attempts")));
}

#[test]
fn a_study_dir_of_another_config_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("[study]\nbudget = 3\nconfirm_seeds = 2\n[train]\nepochs = 2\n");
    run_study_blocking(cfg, options(tmp.path()), Arc::new(FnRunner::new(analytic))).unwrap();
    let other = config("[study]\nbudget = 3\nconfirm_seeds = 2\n[train]\nepochs = 3\n");
    let mut opts = options(tmp.path());
    opts.config_source = "other.toml".into();
    let err = run_study_blocking(other, opts, Arc::new(FnRunner::new(analytic))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StudyError::ForeignStudy { .. }), "{msg}");
    assert!(msg.contains("made with config test.toml"), "{msg}");
    assert!(msg.contains("this run's config other.toml"), "{msg}");
    assert!(msg.contains("train.epochs: 2 vs 3"), "{msg}");
    // A bigger budget is the same study: it continues.
    let more = config("[study]\nbudget = 5\nconfirm_seeds = 2\n[train]\nepochs = 2\n");
    let r =
        run_study_blocking(more, options(tmp.path()), Arc::new(FnRunner::new(analytic))).unwrap();
    // 3 search trials replayed, 2 new; the confirmation reuses what it can.
    assert_eq!(r.trials.len(), 5);
    assert!(
        r.replayed >= 3 && r.ran >= 2,
        "{} replayed, {} ran",
        r.replayed,
        r.ran
    );
}

#[test]
fn a_journal_that_disagrees_with_the_replay_is_a_corruption_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("[study]\nbudget = 5\nconfirm_seeds = 2\n");
    run_study_blocking(
        cfg.clone(),
        options(tmp.path()),
        Arc::new(FnRunner::new(analytic)),
    )
    .unwrap();
    let path = tmp.path().join("trials.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("3,search,"))
        .unwrap();
    let mut f: Vec<String> = lines[i].split(',').map(String::from).collect();
    f[3] = "1.2345".into();
    lines[i] = f.join(",");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = run_study_blocking(cfg, options(tmp.path()), Arc::new(FnRunner::new(analytic)))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StudyError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("search trial 3 was recorded with ε = [1.2345]"),
        "{msg}"
    );
}

#[test]
fn a_torn_last_line_is_dropped_and_that_trial_runs_again() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tempfile::tempdir().unwrap();
    let cfg = config("[study]\nbudget = 6\nconfirm_seeds = 2\n");
    run_study_blocking(
        cfg.clone(),
        options(reference.path()),
        Arc::new(FnRunner::new(analytic)),
    )
    .unwrap();
    // Keep the first 4 rows of the reference journal, then half of the 5th.
    let text = std::fs::read_to_string(reference.path().join("trials.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let torn = &lines[5][..lines[5].len() / 2];
    std::fs::create_dir_all(tmp.path()).unwrap();
    for name in ["study.toml", "config.toml"] {
        std::fs::copy(reference.path().join(name), tmp.path().join(name)).unwrap();
    }
    std::fs::write(
        tmp.path().join("trials.csv"),
        format!("{}\n{torn}", lines[..5].join("\n")),
    )
    .unwrap();
    let r =
        run_study_blocking(cfg, options(tmp.path()), Arc::new(FnRunner::new(analytic))).unwrap();
    assert_eq!(r.replayed, 4);
    assert_eq!(journal_rows(tmp.path()), journal_rows(reference.path()));
    assert!(
        !std::fs::read_to_string(tmp.path().join("trials.csv"))
            .unwrap()
            .contains(&format!("{torn}\n"))
            || torn.is_empty()
    );
    assert_eq!(
        tuned_core(&tmp.path().join("tuned.toml")),
        tuned_core(&reference.path().join("tuned.toml"))
    );
}

/// Interrupt (as Ctrl-C would: drain, then the grace ends) after k trials,
/// resume, and compare with an uninterrupted study, for each solver.
#[test]
fn interrupted_and_resumed_studies_equal_uninterrupted_ones() {
    for (solver, workers, k) in [
        ("nelder-mead", 1, 4),
        ("particle-swarm", 3, 7),
        ("random", 2, 5),
        ("brent", 1, 3),
    ] {
        let text = format!(
            "[study]\nbudget = 12\nconfirm_seeds = 3\nworkers = {workers}\n[search]\nsolver = \"{solver}\"\n[search.particle_swarm]\nparticles = 4\n"
        );
        let cfg = config(&text);
        let reference = tempfile::tempdir().unwrap();
        let full = run_study_blocking(
            cfg.clone(),
            options(reference.path()),
            Arc::new(FnRunner::new(analytic)),
        )
        .unwrap();

        let tmp = tempfile::tempdir().unwrap();
        let shutdown = Shutdown::new();
        let (count, s2) = (Arc::new(AtomicUsize::new(0)), shutdown.clone());
        let runner = FnRunner::new(move |spec: &TrialSpec| {
            if count.fetch_add(1, Ordering::SeqCst) + 1 == k {
                s2.raise(StopLevel::Draining);
            }
            analytic(spec)
        });
        let mut opts = options(tmp.path());
        opts.shutdown = Some(shutdown);
        opts.resume_command = Some("polytune --budget 12".into());
        let err = run_study_blocking(cfg.clone(), opts, Arc::new(runner)).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, StudyError::Interrupted { .. }),
            "{solver}: {msg}"
        );
        assert!(
            msg.contains("to resume, run: polytune --budget 12"),
            "{msg}"
        );
        assert!(
            journal_rows(tmp.path()).len() >= k,
            "{solver}: rows of the finished trials are kept"
        );

        let resumed =
            run_study_blocking(cfg, options(tmp.path()), Arc::new(FnRunner::new(analytic)))
                .unwrap();
        assert!(
            resumed.replayed >= k,
            "{solver}: {} replayed",
            resumed.replayed
        );
        assert_eq!(
            resumed.trials,
            full.trials
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    let r = resumed.trials.iter().find(|x| x.trial == t.trial).unwrap();
                    t.start_time = r.start_time.clone();
                    t.duration_s = r.duration_s;
                    t
                })
                .collect::<Vec<_>>(),
            "{solver}"
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
    }
}
