//! PolyConfig: schema, strictness, error messages, atomic round-trip.

use poly_loss::config::{
    LossKind, LossSection, PolyConfig, PolyConfigError, Provenance, ResultSection,
};
use poly_loss::PolyKind;

const FULL: &str = r#"
[loss]
kind = "poly-focal"
terms = 2
epsilon = [2.0, -0.5]
label_smoothing = 0.1
gamma = 2.0
alpha = 0.25

[result]
metric = "val_top1_accuracy"
best = 0.9632
baseline = 0.9511
seeds = [0, 1, 2]
best_mean = 0.962
best_std = 0.003
baseline_mean = 0.95
baseline_std = 0.004
difference = 0.012

[provenance]
dataset = "digits"
model = "small-resnet"
weights_sha256 = "abc"
schedule = "3 epochs, lr 1e-3"
solver = "nelder-mead"
budget = 20
polytune_version = "0.1.0"
date = "2026-11-29T12:00:00Z"
gpu = "none"
lr_grid = [0.1, 0.01]
"#;

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("poly-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn full_file_parses_and_builds_the_loss() {
    let cfg = PolyConfig::from_toml_str(FULL).unwrap();
    assert_eq!(cfg.loss.kind, LossKind::PolyFocal);
    assert_eq!(cfg.loss.epsilon, vec![2.0, -0.5]);
    let r = cfg.result.as_ref().unwrap();
    assert_eq!(r.seeds, vec![0, 1, 2]);
    assert_eq!(r.difference, Some(0.012));
    let p = cfg.provenance.as_ref().unwrap();
    assert_eq!(p.budget, Some(20));
    assert_eq!(p.solver.as_deref(), Some("nelder-mead"));
    assert_eq!(p.extra["gpu"].as_str(), Some("none"));
    let loss = cfg.poly_loss::<2>().unwrap();
    assert_eq!(loss.epsilon, [2.0, -0.5]);
    assert_eq!(loss.label_smoothing, 0.1);
    assert_eq!(
        loss.kind,
        PolyKind::SoftmaxFocal {
            gamma: 2.0,
            alpha: Some(0.25)
        }
    );
}

#[test]
fn round_trip_keeps_every_key() {
    let cfg = PolyConfig::from_toml_str(FULL).unwrap();
    let text = cfg.to_toml_string().unwrap();
    let back = PolyConfig::from_toml_str(&text).unwrap();
    assert_eq!(cfg, back);
    assert!(
        text.contains("lr_grid"),
        "extra provenance key lost:\n{text}"
    );
}

#[test]
fn defaults_apply_to_minimal_files() {
    let cfg = PolyConfig::from_toml_str("[loss]\nterms = 1\nepsilon = [1.5]\n").unwrap();
    assert_eq!(cfg.loss.kind, LossKind::Poly);
    assert_eq!(cfg.loss.label_smoothing, 0.0);
    assert!(cfg.result.is_none() && cfg.provenance.is_none());
    let loss = cfg.poly_loss::<1>().unwrap();
    assert_eq!(loss.kind, PolyKind::Softmax);
    assert_eq!(loss.epsilon, [1.5]);
}

#[test]
fn sample_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/poly1-sample.toml");
    let loss = poly_loss::config::load_poly_loss::<1>(path).unwrap();
    assert_eq!(loss.epsilon, [2.0]);
}

fn err(text: &str) -> String {
    PolyConfig::from_toml_str(text).unwrap_err().to_string()
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let e = err("[loss]\nterms = 1\nepsilon = [2.0]\nepsilom = 3\n");
    assert!(e.contains("epsilom") && e.contains("line 4"), "{e}");
    let e = err("[loss]\nterms = 1\nepsilon = [2.0]\n[result]\nmetric = \"a\"\nbest = 1.0\nbaseline = 0.5\nbst = 2\n");
    assert!(e.contains("bst"), "{e}");
    let e = err("[loss]\nterms = 1\nepsilon = [2.0]\n[extra]\n");
    assert!(e.contains("extra"), "{e}");
    let e = err("[loss]\nkind = \"poly-softmax\"\nterms = 1\nepsilon = [2.0]\n");
    assert!(e.contains("poly-softmax") && e.contains("line 2"), "{e}");
}

#[test]
fn inconsistent_files_are_rejected_by_key() {
    let e = err("[loss]\nterms = 2\nepsilon = [2.0]\n");
    assert!(e.contains("loss.terms") && e.contains("terms = 2"), "{e}");
    let e = err("[loss]\nkind = \"poly-focal\"\nterms = 1\nepsilon = [2.0]\n");
    assert!(e.contains("loss.gamma") && e.contains("required"), "{e}");
    let e = err("[loss]\nterms = 1\nepsilon = [2.0]\ngamma = 2.0\n");
    assert!(e.contains("loss.gamma") && e.contains("only focal"), "{e}");
    let e = err("[loss]\nterms = 1\nepsilon = [2.0]\nlabel_smoothing = 1.5\n");
    assert!(e.contains("loss.label_smoothing"), "{e}");
    let e = err("[loss]\nkind = \"poly-sigmoid-focal\"\nterms = 1\nepsilon = [2.0]\ngamma = 2.0\nalpha = -0.1\n");
    assert!(e.contains("loss.alpha"), "{e}");
    let e = err("[loss]\nterms = 0\nepsilon = []\n");
    assert!(e.contains("loss.terms"), "{e}");
    let e = err("[loss]\nepsilon = [2.0]\n");
    assert!(e.contains("terms"), "{e}");
}

#[test]
fn wrong_n_names_both_counts() {
    let cfg = PolyConfig::from_toml_str("[loss]\nterms = 3\nepsilon = [1.0, 2.0, 3.0]\n").unwrap();
    let e = cfg.poly_loss::<1>().unwrap_err();
    assert!(matches!(
        e,
        PolyConfigError::TermsMismatch {
            found: 3,
            wanted: 1,
            ..
        }
    ));
    let msg = e.to_string();
    assert!(
        msg.contains("3 coefficient") && msg.contains("PolyLoss<1>"),
        "{msg}"
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = tmpdir("load-errors");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[loss]\nterms = 1\nepsilon = [2.0]\nfoo = 1\n").unwrap();
    let e = PolyConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("foo"), "{e}");
    std::fs::write(&path, "[loss]\nterms = 2\nepsilon = [2.0, 1.0]\n").unwrap();
    let e = poly_loss::config::load_poly_loss::<1>(&path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("PolyLoss<1>"), "{e}");
    let e = PolyConfig::load(dir.join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_is_atomic_and_round_trips() {
    let dir = tmpdir("save");
    let path = dir.join("tuned.toml");
    std::fs::write(&path, "old contents").unwrap();
    let mut cfg = PolyConfig::new(LossSection::poly(vec![2.25, 0.5]));
    cfg.result = Some(ResultSection {
        metric: "val_top1_accuracy".into(),
        best: 0.97,
        baseline: 0.95,
        seeds: vec![0, 1],
        best_mean: None,
        best_std: None,
        baseline_mean: None,
        baseline_std: None,
        difference: Some(0.4),
        ci_low: Some(-0.1),
        ci_high: Some(0.9),
        n_seeds: Some(5),
        significant: Some(false),
        verdict: Some("no significant difference from cross-entropy; CI [-0.10, +0.90]".into()),
    });
    cfg.provenance = Some(Provenance {
        dataset: Some("digits".into()),
        ..Default::default()
    });
    cfg.save(&path).unwrap();
    let back = PolyConfig::load(&path).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(back.poly_loss::<2>().unwrap().epsilon, [2.25, 0.5]);
    // Only the target file is left: the temporary was renamed away.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("tuned.toml")]);
    // An invalid config is refused and leaves the file untouched.
    let mut bad = cfg.clone();
    bad.loss.terms = 5;
    assert!(bad.save(&path).is_err());
    assert_eq!(PolyConfig::load(&path).unwrap(), cfg);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn epsilon_range_is_checked_for_the_plain_kinds() {
    // Poly-1: ε₁ ≥ -1 (the boundary itself is accepted).
    let e = err("[loss]\nterms = 1\nepsilon = [-1.0001]\n");
    assert!(
        e.contains("loss.epsilon") && e.contains("-1.0001") && e.contains(">= -1"),
        "{e}"
    );
    let cfg = PolyConfig::from_toml_str("[loss]\nterms = 1\nepsilon = [-1.0]\n").unwrap();
    assert_eq!(cfg.poly_loss::<1>().unwrap().epsilon, [-1.0]);
    let e = err("[loss]\nkind = \"poly-sigmoid\"\nterms = 1\nepsilon = [-2.0]\n");
    assert!(e.contains("loss.epsilon") && e.contains("-2"), "{e}");
    // Poly-2: ε₁ = -1 needs ε₂ ≥ -1/2.
    assert!(PolyConfig::from_toml_str("[loss]\nterms = 2\nepsilon = [-1.0, -0.5]\n").is_ok());
    let e = err("[loss]\nterms = 2\nepsilon = [-1.0, -0.6]\n");
    assert!(
        e.contains("loss.epsilon") && e.contains("[-1.0, -0.6]") && e.contains("decrease"),
        "{e}"
    );
    // The focal kinds are not restricted.
    let cfg = PolyConfig::from_toml_str(
        "[loss]\nkind = \"poly-focal\"\nterms = 1\nepsilon = [-2.0]\ngamma = 2.0\n",
    )
    .unwrap();
    assert!(cfg.poly_loss::<1>().is_ok());
    // A config built in code is checked the same way before saving.
    let mut cfg = PolyConfig::new(LossSection::poly(vec![-1.5]));
    assert!(cfg.validate().unwrap_err().to_string().contains("-1.5"));
    cfg.loss.epsilon = vec![-0.5];
    assert!(cfg.validate().is_ok());
}

#[test]
fn out_of_range_values_are_refused_by_key() {
    // Non-finite ε (TOML spells them nan / inf).
    for v in ["nan", "inf", "-inf"] {
        let e = err(&format!("[loss]\nterms = 2\nepsilon = [1.0, {v}]\n"));
        assert!(
            e.contains("loss.epsilon") && e.contains("epsilon[1]") && e.contains("not finite"),
            "{v}: {e}"
        );
    }
    // Negative or non-finite γ on both focal kinds.
    for kind in ["poly-focal", "poly-sigmoid-focal"] {
        for g in ["-0.5", "nan", "inf"] {
            let e = err(&format!(
                "[loss]\nkind = \"{kind}\"\nterms = 1\nepsilon = [1.0]\ngamma = {g}\n"
            ));
            assert!(
                e.contains("loss.gamma") && e.contains(">= 0"),
                "{kind} γ {g}: {e}"
            );
        }
        for a in ["1.5", "-0.01", "nan"] {
            let e = err(&format!(
                "[loss]\nkind = \"{kind}\"\nterms = 1\nepsilon = [1.0]\ngamma = 2.0\nalpha = {a}\n"
            ));
            assert!(
                e.contains("loss.alpha") && e.contains("outside [0, 1]"),
                "{kind} α {a}: {e}"
            );
        }
    }
    // α (and γ) on a non-focal kind.
    for kind in ["poly", "poly-sigmoid"] {
        let e = err(&format!(
            "[loss]\nkind = \"{kind}\"\nterms = 1\nepsilon = [1.0]\nalpha = 0.25\n"
        ));
        assert!(
            e.contains("loss.alpha") && e.contains("only focal") && e.contains(kind),
            "{kind}: {e}"
        );
        let e = err(&format!(
            "[loss]\nkind = \"{kind}\"\nterms = 1\nepsilon = [1.0]\ngamma = 2.0\n"
        ));
        assert!(
            e.contains("loss.gamma") && e.contains("only focal"),
            "{kind}: {e}"
        );
    }
    let e = err("[loss]\nterms = 1\nepsilon = [1.0]\nlabel_smoothing = nan\n");
    assert!(e.contains("loss.label_smoothing"), "{e}");
}

/// The loss a config builds, on zero logits of shape (1, 3) with target 0,
/// against hand values: softmax pt = 1/3, CE = ln 3; sigmoid pt = 1/2 and
/// BCE = ln 2 per logit (mean over the 3 logits).
#[test]
fn every_kind_maps_to_its_loss() {
    use dfdx::prelude::*;
    let dev = Cpu::default();
    let x: Tensor<Rank2<1, 3>, f32, _> = dev.zeros();
    let value = |toml: &str| {
        let cfg = PolyConfig::from_toml_str(toml).unwrap();
        let loss = cfg.poly_loss::<1>().unwrap();
        (loss.kind, loss.forward(x.clone(), &[0][..]).array() as f64)
    };
    let (ln2, ln3) = (2f64.ln(), 3f64.ln());
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;

    let (k, v) = value("[loss]\nkind = \"poly\"\nterms = 1\nepsilon = [2.0]\n");
    assert_eq!(k, PolyKind::Softmax);
    assert!(close(v, ln3 + 2.0 * 2.0 / 3.0), "{v}");

    let (k, v) = value(
        "[loss]\nkind = \"poly-focal\"\nterms = 1\nepsilon = [2.0]\ngamma = 2.0\nalpha = 0.25\n",
    );
    assert_eq!(
        k,
        PolyKind::SoftmaxFocal {
            gamma: 2.0,
            alpha: Some(0.25)
        }
    );
    let f = 2.0 / 3.0f64;
    assert!(close(v, 0.25 * f * f * ln3 + 2.0 * f.powi(3)), "{v}");

    let (k, v) = value("[loss]\nkind = \"poly-sigmoid\"\nterms = 1\nepsilon = [2.0]\n");
    assert_eq!(k, PolyKind::Sigmoid);
    assert!(close(v, ln2 + 2.0 * 0.5), "{v}");

    let (k, v) = value(
        "[loss]\nkind = \"poly-sigmoid-focal\"\nterms = 1\nepsilon = [2.0]\ngamma = 2.0\nalpha = 0.25\n",
    );
    assert_eq!(
        k,
        PolyKind::SigmoidFocal {
            gamma: 2.0,
            alpha: Some(0.25)
        }
    );
    // One positive (α_t = 0.25) and two negatives (α_t = 0.75), f = 1/2 each.
    let want = ((0.25 + 2.0 * 0.75) * 0.25 * ln2 + 3.0 * 2.0 * 0.125) / 3.0;
    assert!(close(v, want), "{v} vs {want}");

    // Without α the sigmoid focal kind does no α balancing.
    let (k, v) =
        value("[loss]\nkind = \"poly-sigmoid-focal\"\nterms = 1\nepsilon = [2.0]\ngamma = 2.0\n");
    assert_eq!(
        k,
        PolyKind::SigmoidFocal {
            gamma: 2.0,
            alpha: None
        }
    );
    assert!(close(v, 0.25 * ln2 + 2.0 * 0.125), "{v}");
}
