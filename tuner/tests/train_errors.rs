//! Bad input to the trainer — config files with unknown keys or impossible
//! values, weights for another architecture — gives errors that name the
//! file and the key; `save` writes a safetensors model that loads back into
//! a torchvision-layout network and classifies as the trained one did.

use crate::train_support;

use std::path::Path;

use dfdx::prelude::*;
use poly_loss::nn::pretrained::{load_pretrained, tensor_names, LoadOptions};
use poly_loss::nn::resnet::{builders, SmallResNet};
use polytune::study::{LoadedConfig, StudyConfig};
use polytune::train::metrics::Accumulator;
use polytune::train::{
    check_weights, data_config_from_table, train, TrainConfig, TrainError, TrainOptions,
};
use train_support::{digits_in, embedded_default, files_containing};

/// Writes the embedded default with `train_extra` appended to its `[train]`
/// section (keys given later win through a fresh table) and loads it as
/// `polytune --config` does: the `[train]` section's error, as text.
fn train_error(dir: &Path, name: &str, train_lines: &str) -> (String, String) {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("[study]\nbudget = 3\n\n[train]\nmodel = \"small-resnet\"\n{train_lines}\n"),
    )
    .unwrap();
    let LoadedConfig {
        config: cfg,
        source,
        ..
    } = StudyConfig::load_or_default(Some(&path)).unwrap();
    assert_eq!(source, path.display().to_string());
    let e = TrainConfig::from_table(&cfg.train, &source).unwrap_err();
    (path.display().to_string(), e.to_string())
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (file, e) = train_error(dir.path(), "zero.toml", "batch_size = 0");
    assert_eq!(
        e,
        format!("{file}: key `train.batch_size`: 0 must be at least 1")
    );
    let (file, e) = train_error(dir.path(), "neg.toml", "epochs = -3");
    assert_eq!(
        e,
        format!("{file}: key `train.epochs`: -3 must not be negative")
    );
    let (file, e) = train_error(dir.path(), "negf.toml", "freeze_epochs = -1");
    assert_eq!(
        e,
        format!("{file}: key `train.freeze_epochs`: -1 must not be negative")
    );
    let (file, e) = train_error(dir.path(), "unknown.toml", "learning_rate = 0.1");
    assert!(
        // The key, not a line: the line toml sees is of a regenerated table.
        e.starts_with(&format!(
            "{file}: train.learning_rate: unknown field `learning_rate`"
        )) && !e.contains("line"),
        "{e}"
    );
    let (file, e) = train_error(dir.path(), "type.toml", "epochs = \"five\"");
    assert!(
        e.starts_with(&format!(
            "{file}: train.epochs: invalid type: string \"five\""
        )),
        "{e}"
    );

    // [data] and the study sections.
    let path = dir.path().join("data.toml");
    std::fs::write(&path, "[data]\nsource = \"digits\"\nimage_sise = 16\n").unwrap();
    let LoadedConfig {
        config: cfg,
        source,
        ..
    } = StudyConfig::load_or_default(Some(&path)).unwrap();
    let e = data_config_from_table(&cfg.data, &source)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "{}: data.image_sise: unknown field `image_sise`",
            path.display()
        )) && !e.contains("line"),
        "{e}"
    );
    let path = dir.path().join("study.toml");
    std::fs::write(&path, "[study]\nbudgte = 3\n").unwrap();
    let e = StudyConfig::load_or_default(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: ", path.display())) && e.contains("budgte"),
        "{e}"
    );
    let missing = dir.path().join("missing.toml");
    let e = StudyConfig::load_or_default(Some(&missing))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&missing.display().to_string()), "{e}");

    // The trainer itself re-checks a config built in code.
    let (cfg, data_cfg, seed) = embedded_default();
    let data = digits_in(&data_cfg, dir.path());
    let bad = TrainConfig {
        batch_size: 0,
        ..cfg
    };
    let e = train(&bad, &data, TrainOptions::new(vec![2.0], seed)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "[train]: key `train.batch_size`: 0 must be at least 1"
    );
}

/// Saves a small-ResNet model after a short run; returns its report's
/// validation figures and head.
fn trained_model(dir: &Path) -> (std::path::PathBuf, polytune::train::TrainReport) {
    let (mut cfg, data_cfg, seed) = embedded_default();
    cfg.epochs = 1;
    // The linear head exports torchvision's `fc`, loadable into the network.
    cfg.head = "linear".into();
    let data = digits_in(&data_cfg, dir);
    let path = dir.join("out/model.safetensors");
    let mut o = TrainOptions::new(vec![2.0], seed);
    o.save = Some(path.clone());
    let report = train(&cfg, &data, o).unwrap();
    (path, report)
}

#[test]
fn saved_model_loads_back_and_classifies_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (path, report) = trained_model(dir.path());
    assert!(path.is_file(), "the parent directory is created");
    assert!(files_containing(&dir.path().join("out"), ".tmp").is_empty());

    // Every tensor of torchvision's layout, the head with 10 classes.
    let dev = Cpu::default();
    let mut net = dev.build_module::<builders::SmallResNet<10>, f32>();
    let bytes = std::fs::read(&path).unwrap();
    let file = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut in_file: Vec<(String, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    in_file.sort();
    let mut want = tensor_names::<_, Cpu>(&net);
    want.sort();
    assert_eq!(in_file, want);
    let fc = file.tensor("fc.weight").unwrap();
    assert_eq!(fc.shape(), [10, 16]);
    let fc: Vec<f32> = fc
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(report.head[0].0, "fc.weight");
    assert_eq!(fc, report.head[0].2);

    // Loaded (strictly, head included) into a 10-class network, it gives
    // the run's final validation figures.
    load_pretrained(&mut net, &path, &LoadOptions::strict()).unwrap();
    let (_, data_cfg, _) = embedded_default();
    let data = digits_in(&data_cfg, dir.path());
    let valid = data.valid();
    let mut acc = Accumulator::default();
    let all: Vec<usize> = (0..valid.len()).collect();
    for chunk in all.chunks(100) {
        let b = valid.assemble(chunk, None).unwrap();
        let [n, _, h, w] = b.shape();
        let x = dev.tensor_from_vec(b.images, (n, Const::<3>, h, w));
        let logits = <SmallResNet<10> as Module<_>>::try_forward(&net, x).unwrap();
        acc.add(&logits.as_vec(), 10, &b.labels);
    }
    let m = acc.finish();
    assert_eq!(m.count, 178);
    assert_eq!(m.top1, report.valid.top1);
    assert!(
        (m.loss - report.valid.loss).abs() < 1e-5,
        "{} vs {}",
        m.loss,
        report.valid.loss
    );
}

#[test]
fn weights_for_another_architecture_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = trained_model(dir.path());
    let (cfg, data_cfg, seed) = embedded_default();

    // The small ResNet's file fits the small ResNet …
    let small = TrainConfig {
        weights: Some(path.clone()),
        ..cfg.clone()
    };
    check_weights(&small).unwrap();
    // … and not ResNet-18, whether checked up front or when training.
    let r18 = TrainConfig {
        model: "resnet18".into(),
        ..small.clone()
    };
    let e = check_weights(&r18).unwrap_err();
    assert!(matches!(e, TrainError::Weights { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: these weights are not for model `resnet18`",
            path.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("problem(s), e.g."), "{msg}");
    let data = digits_in(&data_cfg, dir.path());
    let e = train(&r18, &data, TrainOptions::new(vec![2.0], seed)).unwrap_err();
    assert_eq!(e.to_string(), msg);

    // Not a safetensors file; no file at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a model").unwrap();
    let e = check_weights(&TrainConfig {
        weights: Some(junk.clone()),
        ..cfg.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(&format!("{}: not a valid safetensors file", junk.display())),
        "{e}"
    );
    let missing = dir.path().join("missing.safetensors");
    let e = check_weights(&TrainConfig {
        weights: Some(missing.clone()),
        ..cfg
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read weights", missing.display())),
        "{e}"
    );
}
