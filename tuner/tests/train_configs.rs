//! The shipped study configs parse and validate in every section the way
//! `polytune` reads them — without their data or weights — and say what
//! their comments promise.

use std::path::{Path, PathBuf};

use polytune::data::augment::ResizeMode;
use polytune::data::SourceKind;
use polytune::search::SolverKind;
use polytune::study::{LoadedConfig, StudyConfig, EMBEDDED_DEFAULT};
use polytune::train::{data_config_from_table, FrozenBn, HeadKind, ModelKind, TrainConfig};

fn config_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

#[test]
fn flowers102_resnet50_is_the_real_study() {
    let path = config_path("flowers102-resnet50.toml");
    let LoadedConfig {
        config: cfg,
        source,
        name,
    } = StudyConfig::load_or_default(Some(&path)).unwrap();
    assert_eq!(name, "flowers102-resnet50");
    let t = TrainConfig::from_table(&cfg.train, &source).unwrap();
    let d = data_config_from_table(&cfg.data, &source).unwrap();

    assert_eq!(t.model_kind(), ModelKind::ResNet50);
    assert_eq!(t.weights, None, "weights come from --weights");
    assert_eq!((t.batch_size, t.freeze_epochs, t.epochs), (64, 1, 5));
    assert_eq!((t.base_lr, t.lr_mult), (2e-3, 100.0));
    // fastai's head and frozen-phase batch-norm: nothing to cache.
    assert_eq!(t.head_kind(), HeadKind::Fastai);
    assert_eq!(t.frozen_bn_mode(), FrozenBn::Train);
    assert!(!t.uses_feature_cache());
    assert_eq!(d.resize, ResizeMode::Crop);
    assert_eq!(d.source, SourceKind::Flowers102);
    assert_eq!(d.path.as_deref(), Some(Path::new("data/flowers102")));
    assert_eq!(d.image_size(), 224);

    let s = &cfg.study;
    assert_eq!(
        (s.budget, s.workers, s.confirm_seeds, s.seed),
        (20, 1, 5, 0)
    );
    assert_eq!(cfg.search.solver, SolverKind::Bayes);
    assert_eq!(cfg.search.terms, 1);
    let b = cfg.search.bounds();
    assert_eq!((b.lower, b.upper), (vec![-1.0], vec![10.0]));
    assert_eq!(cfg.provenance.model.as_deref(), Some("resnet50"));
    // The copy a study directory keeps reads back to the same config.
    let back = StudyConfig::from_toml_str(&cfg.to_toml_string(), "copy").unwrap();
    assert_eq!(back.fingerprint(), cfg.fingerprint());
}

/// The seed's own run: bs 16, 8 + 15 epochs, fine_tune's rates, fastai's
/// head, train-mode batch-norm in the frozen phase, the seed's augmentations.
#[test]
fn flowers102_resnet50_seed_reproduces_the_seeds_run() {
    let path = config_path("flowers102-resnet50-seed.toml");
    let LoadedConfig {
        config: cfg,
        source,
        name,
    } = StudyConfig::load_or_default(Some(&path)).unwrap();
    assert_eq!(name, "flowers102-resnet50-seed");
    let t = TrainConfig::from_table(&cfg.train, &source).unwrap();
    let d = data_config_from_table(&cfg.data, &source).unwrap();
    assert_eq!(t.model_kind(), ModelKind::ResNet50);
    assert_eq!((t.batch_size, t.freeze_epochs, t.epochs), (16, 8, 15));
    assert_eq!(
        (t.base_lr, t.lr_mult, t.div, t.pct_start),
        (2e-3, 100.0, 5.0, 0.3)
    );
    assert_eq!((t.frozen_div, t.frozen_pct_start), (25.0, 0.99));
    assert_eq!((t.weight_decay, t.beta2, t.adam_eps), (0.01, 0.99, 1e-5));
    assert_eq!(t.moms, [0.95, 0.85, 0.95]);
    assert_eq!(t.head_kind(), HeadKind::Fastai);
    assert_eq!(t.frozen_bn_mode(), FrozenBn::Train);
    assert_eq!(t.bn(), polytune::train::config::BnMode::Train);
    assert_eq!(d.source, SourceKind::Flowers102);
    assert_eq!((d.image_size(), d.resize), (224, ResizeMode::Crop));
    let a = d.augment_config();
    assert_eq!(
        (
            a.p,
            a.p_flip,
            a.p_hsv,
            a.min_scale,
            a.max_rotate,
            a.max_warp,
            a.max_lighting
        ),
        (0.3, 0.5, 0.75, 0.75, 5.0, 0.05, 0.5)
    );
    assert_eq!(
        (a.min_zoom, a.max_zoom, a.max_hue, a.max_saturation),
        (0.9, 1.1, 0.3, 0.3)
    );
    assert_eq!(a.pad_mode, polytune::data::augment::PadMode::Zeros);
}

#[test]
fn the_embedded_default_is_the_digits_file() {
    let text = std::fs::read_to_string(config_path("digits-small-resnet.toml")).unwrap();
    assert_eq!(text, EMBEDDED_DEFAULT);
    let LoadedConfig {
        config: cfg,
        source,
        ..
    } = StudyConfig::load_or_default(None).unwrap();
    let t = TrainConfig::from_table(&cfg.train, &source).unwrap();
    let d = data_config_from_table(&cfg.data, &source).unwrap();
    assert_eq!(t.model_kind(), ModelKind::SmallResNet);
    // Kept fast: cached frozen features (see the config's comment).
    assert_eq!(t.frozen_bn_mode(), FrozenBn::Frozen);
    assert!(t.uses_feature_cache());
    assert_eq!(d.source, SourceKind::Digits);
    assert_eq!(cfg.study.budget, 20);
}

/// Without the data the study stops before any trial with an error that
/// names the directory it looked in: the placeholder, or `--data-dir`.
#[test]
fn flowers102_without_its_data_names_the_directory() {
    let path = config_path("flowers102-resnet50.toml");
    let work = tempfile::tempdir().unwrap();
    let elsewhere = work.path().join("no-flowers-here");
    for (extra, want) in [
        (vec![], "data/flowers102".to_string()),
        (
            vec!["--data-dir", elsewhere.to_str().unwrap()],
            elsewhere.display().to_string(),
        ),
    ] {
        let mut args = vec!["--config", path.to_str().unwrap()];
        args.extend(extra);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_polytune"))
            .current_dir(work.path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("error: ") && e.contains(&want), "{args:?}: {e}");
        assert!(!work.path().join("studies").exists());
    }
}
