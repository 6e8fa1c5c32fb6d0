//! The frozen phase's batch-norm (`[train] frozen_bn`): with fastai's
//! `"train"` the body's batch-norm running statistics and γ/β change while
//! every convolution weight stays as loaded, and nothing is cached; with
//! `"frozen"` no body tensor changes at all and the feature cache is built,
//! then hit.

use crate::train_support;

use std::collections::BTreeMap;
use std::path::Path;

use polytune::train::{train, FeatureOrigin, TrainConfig, TrainOptions, TrainReport};
use train_support::{digits_in, embedded_default};

/// Every tensor of a saved model, by name.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let file = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(n, v)| {
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, values)
        })
        .collect()
}

fn is_bn(name: &str) -> bool {
    name.contains(".bn") || name.starts_with("bn1.") || name.contains("downsample.1.")
}

#[test]
fn frozen_bn_train_updates_norms_only_and_frozen_changes_nothing() {
    let (base, data_cfg, seed) = embedded_default();
    let dir = tempfile::tempdir().unwrap();
    let data = digits_in(&data_cfg, dir.path());
    let save = |cfg: &TrainConfig, name: &str| -> (TrainReport, BTreeMap<String, Vec<f32>>) {
        let path = dir.path().join(name);
        let mut o = TrainOptions::new(vec![2.0], seed);
        o.save = Some(path.clone());
        let r = train(cfg, &data, o).unwrap();
        (r, tensors(&path))
    };
    // A body with non-trivial statistics to start from: one unfrozen epoch.
    let (_, start) = save(
        &TrainConfig {
            freeze_epochs: 0,
            epochs: 1,
            ..base.clone()
        },
        "start.safetensors",
    );
    let frozen_only = |frozen_bn: &str| TrainConfig {
        weights: Some(dir.path().join("start.safetensors")),
        freeze_epochs: 1,
        epochs: 0,
        frozen_bn: frozen_bn.into(),
        feature_cache: true,
        ..base.clone()
    };
    let body = |t: &BTreeMap<String, Vec<f32>>| -> BTreeMap<String, Vec<f32>> {
        t.iter()
            .filter(|(n, _)| !n.starts_with("fc.") && !n.starts_with("head."))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    };
    let start = body(&start);
    assert!(start.keys().any(|n| n.ends_with("running_mean")));

    // "train": convolutions as loaded; every batch-norm's statistics and
    // affine parameters moved; no feature cache.
    let (r, after) = save(&frozen_only("train"), "train.safetensors");
    assert_eq!(r.features, Some(FeatureOrigin::Computed));
    let after = body(&after);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        start.keys().collect::<Vec<_>>()
    );
    let (mut norms, mut convs) = (0, 0);
    for (name, before) in &start {
        let now = &after[name];
        if is_bn(name) {
            norms += 1;
            assert_ne!(now, before, "{name} should train / update");
        } else {
            convs += 1;
            assert_eq!(now, before, "{name} must stay frozen");
        }
    }
    // 6 batch-norms (bn1; layer1.0 bn1, bn2; layer2.0 bn1, bn2, downsample.1)
    // of 4 tensors each, 6 convolutions (no bias).
    assert_eq!((norms, convs), (24, 6));

    // "frozen": nothing in the body changes; the cache is built, then hit.
    let (r, after) = save(&frozen_only("frozen"), "frozen.safetensors");
    assert!(
        matches!(r.features, Some(FeatureOrigin::Built(_))),
        "{:?}",
        r.features
    );
    assert_eq!(body(&after), start);
    let (again, _) = save(&frozen_only("frozen"), "frozen2.safetensors");
    assert!(
        matches!(again.features, Some(FeatureOrigin::CacheHit(_))),
        "{:?}",
        again.features
    );
}
