//! Helpers shared by the study tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use polytune::orchestrator::TrialOutcome;

use polytune::study::{StudyConfig, StudyOptions};
use polytune::trial::{TrialResult, TrialSpec};

/// The seed's shared effect on every ε: `0.002 · ((7·seed + 3) mod 5)`.
pub fn seed_effect(seed: u64) -> f64 {
    0.002 * ((seed.wrapping_mul(7).wrapping_add(3)) % 5) as f64
}

/// The (ε, seed) interaction: `0.0005 · (((seed·r + 13·seed + r) mod 7) − 3)`
/// with `r = round(1000 ε₁)` — not additive, so paired differences vary by
/// seed.
pub fn interaction(seed: u64, eps1: f64) -> f64 {
    let (s, r) = (seed as i128, (eps1 * 1000.0).round() as i128);
    let k = (s * r + 13 * s + r).rem_euclid(7);
    0.0005 * (k as f64 - 3.0)
}

/// The noise-free accuracy curve: peaks at ε₁ = 3.7 (and ε₂ = −0.5 when
/// there are two terms).
pub fn curve(e: &[f64]) -> f64 {
    let mut acc = 0.95 - 0.004 * (e[0] - 3.7).powi(2);
    if e.len() > 1 {
        acc -= 0.02 * (e[1] + 0.5).powi(2);
    }
    acc
}

/// The analytic "fine-tune": [`curve`] plus the seed's shared effect plus a
/// smaller (ε, seed) interaction, so paired seeds matter and re-runs differ.
pub fn analytic(spec: &TrialSpec) -> TrialOutcome {
    let e = &spec.epsilon;
    let acc = curve(e) + seed_effect(spec.seed) + interaction(spec.seed, e[0]);
    TrialOutcome::Finished(TrialResult {
        val_accuracy: acc.clamp(0.0, 1.0),
        val_loss: 0.2 + 0.01 * (e[0] - 3.7).abs(),
        train_loss: Some(0.05),
        epochs: Some(2),
        seed: Some(spec.seed),
        duration_s: Some(0.0),
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

/// The standard output of a command that must have succeeded (else a
/// failure showing its status, output and error output).
pub fn ok(out: std::process::Output) -> String {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "failed: {:?}\nstdout:\n{o}\nstderr:\n{e}",
        out.status
    );
    o
}
