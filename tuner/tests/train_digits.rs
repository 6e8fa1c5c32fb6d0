//! The trainer on the embedded digits set: the default config's accuracy,
//! and determinism (same seed and ε → the same bits; another ε →
//! the same batches; another seed → other batches and other results).

use crate::train_support;

use polytune::train::{epoch_batches, train, TrainConfig, TrainOptions};
use train_support::{digits_in, embedded_default, feature_file, report_bits, Recorder};

/// The bar: the default config reaches ≥ 95 % validation top-1 on
/// the digits. (Its speed is a benchmark's business, not a test's: see
/// BENCHMARKS.md.)
#[test]
fn embedded_default_reaches_95_percent() {
    let (cfg, data_cfg, seed) = embedded_default();
    assert_eq!(
        (cfg.model.as_str(), cfg.freeze_epochs, cfg.epochs),
        ("small-resnet", 1, 10)
    );
    let cache = tempfile::tempdir().unwrap();
    let data = digits_in(&data_cfg, cache.path());
    assert_eq!((data.train().len(), data.valid().len()), (1438, 178));
    // ε = 2: `polytune train`'s default.
    let report = train(&cfg, &data, TrainOptions::new(vec![2.0], seed)).unwrap();
    eprintln!(
        "embedded default: val top-1 {:.4}, top-5 {:.4}, CE {:.4} in {:.2} s \
         (frozen {:.2} s, of which features {:.2} s; unfrozen {:.2} s)",
        report.valid.top1,
        report.valid.top5,
        report.valid.loss,
        report.seconds,
        report.frozen_seconds,
        report.feature_seconds,
        report.unfrozen_seconds
    );
    assert_eq!(report.epochs.len(), 11);
    assert_eq!(report.valid.count, 178);
    assert!(
        report.valid.top1 >= 0.95,
        "val top-1 {} < 0.95",
        report.valid.top1
    );
    // Learning happened: the last epoch beats the first by a wide margin.
    assert!(report.epochs[0].valid.top1 < report.valid.top1);
    assert!(report.valid.loss < 0.5 * report.epochs[0].valid.loss);
}

/// A short version of the default (1 frozen + 2 unfrozen epochs).
fn short() -> (TrainConfig, polytune::data::DataConfig, u64) {
    let (mut cfg, data, seed) = embedded_default();
    cfg.epochs = 2;
    (cfg, data, seed)
}

#[test]
fn same_seed_same_bits_other_epsilon_same_batches_other_seed_differs() {
    let (cfg, data_cfg, seed) = short();
    let cache = tempfile::tempdir().unwrap();
    let data = digits_in(&data_cfg, cache.path());
    let run = |eps: f64, seed: u64| {
        let mut rec = Recorder::default();
        let r = train(
            &cfg,
            &data,
            TrainOptions::new(vec![eps], seed).with_observer(&mut rec),
        )
        .unwrap();
        (r, rec)
    };
    let (a, rec_a) = run(2.0, seed);
    let (b, rec_b) = run(2.0, seed);
    let (c, rec_c) = run(0.0, seed);
    let (d, rec_d) = run(2.0, seed + 1);

    // Same seed and ε: the same bits, although `a` computed the frozen
    // features and `b` read them from the cache.
    let (file_a, built_a) = feature_file(&a);
    let (file_b, built_b) = feature_file(&b);
    assert!(built_a && !built_b, "{:?} / {:?}", a.features, b.features);
    assert_eq!(file_a, file_b);
    assert_eq!(report_bits(&a), report_bits(&b));
    assert_eq!(rec_a.steps, rec_b.steps);

    // Other ε, same seed: the same batches in the same order with the same
    // augmentation views (and the same cached frozen features: the cache key
    // has no ε), but other losses and results.
    let batches = |r: &Recorder| -> Vec<(usize, usize, u64, Vec<usize>)> {
        r.steps
            .iter()
            .map(|s| (s.epoch, s.batch, s.view, s.indices.clone()))
            .collect()
    };
    assert_eq!(batches(&rec_a), batches(&rec_c));
    assert_eq!(feature_file(&c), (file_a.clone(), false));
    assert_ne!(
        rec_a.steps.iter().map(|s| s.loss).collect::<Vec<_>>(),
        rec_c.steps.iter().map(|s| s.loss).collect::<Vec<_>>()
    );
    assert_ne!(report_bits(&a), report_bits(&c));

    // The batches are the documented ones: each epoch is the seeded
    // permutation cut into full batches (22 of 64 from 1438 samples), every
    // epoch in another order, and each unfrozen epoch its own view.
    let n = data.train().len();
    let bs = cfg.batch_size as usize;
    assert_eq!(rec_a.steps.len(), 3 * (n / bs));
    for e in 0..3 {
        let want = epoch_batches(n, bs, seed, e as u64);
        let got: Vec<Vec<usize>> = rec_a
            .steps
            .iter()
            .filter(|s| s.epoch == e + 1)
            .map(|s| s.indices.clone())
            .collect();
        assert_eq!(got, want, "epoch {}", e + 1);
        let mut seen: Vec<usize> = got.concat();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), (n / bs) * bs, "epoch {}: no repeats", e + 1);
        assert!(rec_a
            .steps
            .iter()
            .filter(|s| s.epoch == e + 1)
            .all(|s| s.view == e as u64));
    }
    assert_ne!(rec_a.steps[0].indices, rec_a.steps[n / bs].indices);

    // Another seed: other batches, other features, other results.
    assert_ne!(batches(&rec_a), batches(&rec_d));
    assert_ne!(feature_file(&d).0, file_a);
    assert_ne!(report_bits(&a), report_bits(&d));
    assert_ne!(a.head, d.head);
}
