//! The frozen-body feature cache through the trainer: built on the first
//! run, reused (and really read: no body forward) on the next, rebuilt when
//! anything in its key changes (weights, image size, augmentation views or
//! settings, data), never trusted when truncated or damaged, and written
//! through a temporary name.

use crate::train_support;

use std::path::{Path, PathBuf};

use polytune::data::{DataConfig, Dataset};
use polytune::train::{
    train, FeatureKey, FeatureOrigin, FrozenFeatures, TrainConfig, TrainOptions, TrainReport,
};
use train_support::{digits_in, embedded_default, feature_file, files_containing, report_bits};

/// The embedded default, frozen phase only (the part the cache serves).
fn frozen_only() -> (TrainConfig, DataConfig, u64) {
    let (mut cfg, data, seed) = embedded_default();
    cfg.epochs = 0;
    (cfg, data, seed)
}

fn run(cfg: &TrainConfig, data: &Dataset, seed: u64) -> TrainReport {
    train(cfg, data, TrainOptions::new(vec![2.0], seed)).unwrap()
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    files_containing(dir, ".tmp")
}

/// The key stored in a cache file (magic, version, key length, key text),
/// parsed back into a [`FeatureKey`] through its public fields.
fn stored_key(path: &Path) -> FeatureKey {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"PTUNEFEA");
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&bytes[16..16 + len]).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
            .to_string()
    };
    let hex = |k: &str| u64::from_str_radix(&get(k), 16).unwrap();
    let key = FeatureKey {
        model: get("model"),
        body: hex("body"),
        train: hex("train"),
        valid: hex("valid"),
        image_size: get("image_size").parse().unwrap(),
        augment: get("augment"),
        seed: get("seed").parse().unwrap(),
        views: get("views").parse().unwrap(),
        pool: get("pool"),
        dim: get("dim").parse().unwrap(),
        n_train: get("n_train").parse().unwrap(),
        n_valid: get("n_valid").parse().unwrap(),
    };
    assert_eq!(key.text(), text, "the key round-trips");
    assert_eq!(
        path.file_name().unwrap().to_string_lossy(),
        key.file_name(),
        "the file is named by its key"
    );
    key
}

#[test]
fn built_once_then_read_from_disk_without_a_body_forward() {
    let (mut cfg, data_cfg, seed) = frozen_only();
    let cache = tempfile::tempdir().unwrap();
    let data = digits_in(&data_cfg, cache.path());
    // A seeded random body's eval-mode features hardly tell the digits
    // apart; a body fine-tuned for two epochs does, which makes a run on
    // zeroed features easy to tell from a run on the real ones.
    let weights = tempfile::tempdir().unwrap();
    let trained = weights.path().join("trained.safetensors");
    let mut o = TrainOptions::new(vec![2.0], seed);
    o.save = Some(trained.clone());
    train(
        &TrainConfig {
            epochs: 2,
            ..cfg.clone()
        },
        &data,
        o,
    )
    .unwrap();
    cfg.weights = Some(trained);

    let first = run(&cfg, &data, seed);
    let (path, built) = feature_file(&first);
    assert!(built, "{:?}", first.features);
    assert_eq!(path.parent().unwrap(), cache.path());
    assert!(temp_files(cache.path()).is_empty());
    let key = stored_key(&path);
    assert_eq!(
        (key.model.as_str(), key.dim, key.views, key.seed),
        ("small-resnet", 32, 1, seed) // fastai's head: [max, avg] of 16 channels
    );
    assert_eq!((key.n_train, key.n_valid, key.image_size), (1438, 178, 8));
    let on_disk = FrozenFeatures::read(&path, &key).unwrap().unwrap();
    assert_eq!(on_disk.valid_all().len(), 178 * 32);
    assert_eq!(key.pool, "max+avg");
    assert!(on_disk.valid_all().iter().all(|x| x.is_finite()));

    let second = run(&cfg, &data, seed);
    assert_eq!(second.features, Some(FeatureOrigin::CacheHit(path.clone())));
    assert_eq!(report_bits(&first), report_bits(&second));

    // Replace the stored features with zeros (a valid file under the same
    // key): the next run must train on them, i.e. it reads the file and runs
    // no body forward. Zero features leave only the bias, so every image
    // gets the same class and top-1 is that class's share.
    let zeros = FrozenFeatures::new(
        key.clone(),
        vec![0.0; key.views as usize * key.n_train * key.dim],
        vec![0.0; key.n_valid * key.dim],
    );
    zeros.write(&path).unwrap();
    let third = run(&cfg, &data, seed);
    assert_eq!(third.features, Some(FeatureOrigin::CacheHit(path.clone())));
    let labels = data.valid().labels();
    let share = |k: usize| labels.iter().filter(|&&l| l == k).count() as f64 / labels.len() as f64;
    let largest = (0..10).map(share).fold(0.0, f64::max);
    assert!(
        (0..10).any(|k| third.valid.top1 == share(k)),
        "top-1 {} on zero features is one class's share",
        third.valid.top1
    );
    assert!(third.valid.top1 <= largest);
    assert!(
        first.valid.top1 > largest + 0.2,
        "real features: top-1 {}",
        first.valid.top1
    );
    assert_eq!(files_containing(cache.path(), ".f32feat").len(), 2);
    assert!(temp_files(cache.path()).is_empty());
}

#[test]
fn a_change_of_key_builds_another_file() {
    let (cfg, data_cfg, seed) = frozen_only();
    let cache = tempfile::tempdir().unwrap();
    let data = digits_in(&data_cfg, cache.path());
    let base = feature_file(&run(&cfg, &data, seed));
    assert!(base.1);

    let mut seen = vec![base.0.clone()];
    let mut expect_new = |r: &TrainReport, what: &str| {
        let (p, built) = feature_file(r);
        assert!(built, "{what}: {:?}", r.features);
        assert!(!seen.contains(&p), "{what}: {} reused", p.display());
        seen.push(p);
    };

    // Image size.
    let mut d = data_cfg.clone();
    d.image_size = Some(16);
    expect_new(
        &run(&cfg, &digits_in(&d, cache.path()), seed),
        "image size 16",
    );
    // Augmentation views.
    let two_views = TrainConfig {
        views: Some(2),
        ..cfg.clone()
    };
    expect_new(&run(&two_views, &data, seed), "2 views");
    // Augmentation settings.
    let mut d = data_cfg.clone();
    d.augment.p = 0.5;
    expect_new(&run(&cfg, &digits_in(&d, cache.path()), seed), "augment p");
    // Data: another train/valid split of the digits.
    let mut d = data_cfg.clone();
    d.split_seed += 1;
    expect_new(
        &run(&cfg, &digits_in(&d, cache.path()), seed),
        "another split",
    );

    // Weights. A frozen-only run leaves the body at its seeded init, so the
    // model saved by a run with seed s + 1 is a body other than seed s's,
    // while the one saved with seed s is that very body: the key is the
    // body's content, not the file's name.
    let weights = tempfile::tempdir().unwrap();
    let save = |s: u64, name: &str| {
        let path = weights.path().join(name);
        let mut o = TrainOptions::new(vec![2.0], s);
        o.save = Some(path.clone());
        train(&cfg, &data, o).unwrap();
        path
    };
    let other = save(seed + 1, "other.safetensors");
    let same = save(seed, "same.safetensors");
    let with = |w: PathBuf| TrainConfig {
        weights: Some(w),
        ..cfg.clone()
    };
    expect_new(&run(&with(other.clone()), &data, seed), "other weights");
    assert_eq!(
        feature_file(&run(&with(same), &data, seed)),
        (base.0.clone(), false),
        "weights equal to the seeded init"
    );
    assert_eq!(
        feature_file(&run(&with(other), &data, seed)),
        (seen[5].clone(), false),
        "the same weights again"
    );

    // Nothing was overwritten: the first key still hits its file.
    assert_eq!(feature_file(&run(&cfg, &data, seed)), (base.0, false));
    // Six keys above, and the seed + 1 run that saved `other`.
    assert_eq!(files_containing(cache.path(), ".f32feat").len(), 7);
    assert!(temp_files(cache.path()).is_empty());
}

#[test]
fn truncated_damaged_or_foreign_files_are_rebuilt() {
    let (cfg, data_cfg, seed) = frozen_only();
    let cache = tempfile::tempdir().unwrap();
    let data = digits_in(&data_cfg, cache.path());
    let first = run(&cfg, &data, seed);
    let (path, _) = feature_file(&first);
    let good = std::fs::read(&path).unwrap();

    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to half", good[..good.len() / 2].to_vec()),
        ("last byte cut", good[..good.len() - 1].to_vec()),
        ("one data byte flipped", {
            let mut b = good.clone();
            let at = b.len() / 2;
            b[at] ^= 0x40;
            b
        }),
        ("trailing bytes", {
            let mut b = good.clone();
            b.extend_from_slice(b"junk");
            b
        }),
        ("bad magic", {
            let mut b = good.clone();
            b[0] = b'X';
            b
        }),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damages {
        std::fs::write(&path, &bytes).unwrap();
        let r = run(&cfg, &data, seed);
        assert_eq!(
            r.features,
            Some(FeatureOrigin::Built(path.clone())),
            "{what}: not trusted"
        );
        assert!(std::fs::read(&path).unwrap() == good, "{what}: rewritten");
        assert_eq!(report_bits(&r), report_bits(&first), "{what}");
    }

    // A kill mid-write leaves only a temporary file, which is never read
    // under the trusted name.
    std::fs::remove_file(&path).unwrap();
    let stale = path.with_extension("f32feat.tmp.1.2");
    std::fs::write(&stale, &good[..good.len() / 3]).unwrap();
    let r = run(&cfg, &data, seed);
    assert_eq!(r.features, Some(FeatureOrigin::Built(path.clone())));
    assert_eq!(temp_files(cache.path()), vec![stale.clone()]);
    std::fs::remove_file(&stale).unwrap();

    // When the rename cannot happen (a directory holds the name), the
    // features are used uncached and no temporary file is left behind.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep"), b"x").unwrap();
    let r = run(&cfg, &data, seed);
    assert_eq!(r.features, Some(FeatureOrigin::Computed));
    assert_eq!(report_bits(&r), report_bits(&first));
    assert!(temp_files(cache.path()).is_empty());
}
