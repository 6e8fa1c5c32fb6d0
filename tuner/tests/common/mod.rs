//! Helpers shared by the study tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use polytune::orchestrator::{TrialOutcome, TrialResult, TrialSpec};
use polytune::study::{StudyConfig, StudyOptions};

/// The analytic "fine-tune": accuracy peaks at ε₁ = 3.7 (and ε₂ = −0.5 when
/// there are two terms), with a small seed-dependent offset so re-runs on
/// other seeds differ.
pub fn analytic(spec: &TrialSpec) -> TrialOutcome {
    let e = &spec.epsilon;
    let mut acc = 0.95 - 0.004 * (e[0] - 3.7).powi(2);
    if e.len() > 1 {
        acc -= 0.02 * (e[1] + 0.5).powi(2);
    }
    acc += 0.001 * ((spec.seed * 7 + 3) % 5) as f64;
    TrialOutcome::Finished(TrialResult {
        val_accuracy: acc.clamp(0.0, 1.0),
        val_loss: 0.2 + 0.01 * (e[0] - 3.7).abs(),
        train_loss: 0.05,
        epochs: 2,
        seed: spec.seed,
        duration_s: 0.0,
    })
}

pub fn config(text: &str) -> StudyConfig {
    StudyConfig::from_toml_str(text, "test.toml").unwrap()
}

pub fn options(dir: &Path) -> StudyOptions {
    let mut o = StudyOptions::new(dir);
    o.progress = false;
    o.handle_signals = false;
    o.config_source = "test.toml".into();
    o
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The journal's rows without the timing columns, sorted, cancelled rows
/// dropped: what must be equal between an uninterrupted and a resumed study.
pub fn journal_rows(dir: &Path) -> Vec<Vec<String>> {
    let mut rdr = csv::Reader::from_path(dir.join("trials.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let skip: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| *h == "start_time" || *h == "duration_s")
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<Vec<String>> = rdr
        .records()
        .map(|r| {
            r.unwrap()
                .iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(i))
                .map(|(_, f)| f.to_string())
                .collect()
        })
        .filter(|r: &Vec<String>| r[2] != "cancelled")
        .collect();
    rows.sort();
    rows
}

/// `[loss]` and `[result]` of a tuned TOML (provenance has dates and paths).
pub fn tuned_core(
    path: &Path,
) -> (
    poly_loss::config::LossSection,
    Option<poly_loss::config::ResultSection>,
) {
    let c = poly_loss::PolyConfig::load(path).unwrap();
    (c.loss, c.result)
}
