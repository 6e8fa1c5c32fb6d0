//! Trainer benchmarks (issue 4), printed as a table:
//!
//! 1. The frozen phase's wall time per trial — the body frozen, only the
//!    head trains — without the feature cache (`feature_cache = false`: a
//!    body forward per batch and per validation pass), building the cache
//!    (a study's first trial) and reading it (every later trial), side by
//!    side in one run, on
//!    - the embedded default (small ResNet, digits, 1438 + 359 images at 8 px);
//!    - ResNet-50 (random init) on a synthetic class-folder set this bench
//!      generates: 4 classes, 48 train + 16 valid JPEGs at 64 px, so that the
//!      body is the expensive part, as in the real Flowers-102 study.
//! 2. One whole default `polytune train` (the binary, embedded default).
//!
//! ```text
//! cargo bench -p polytune --bench train
//! ```
//!
//! Each figure is the median of a few runs; the caches live in a temporary
//! directory that is removed at the end.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use polytune::data::{DataConfig, Dataset, SourceKind};
use polytune::study::{LoadedConfig, StudyConfig};
use polytune::train::{
    data_config_from_table, train, FeatureOrigin, TrainConfig, TrainOptions, TrainReport,
};

const REPEATS: usize = 5;
const SEED: u64 = 0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn frozen_run(cfg: &TrainConfig, data: &Dataset) -> TrainReport {
    train(cfg, data, TrainOptions::new(vec![2.0], SEED)).expect("training runs")
}

/// Frozen-phase seconds: (uncached, cache build, cache hit) medians, and the
/// feature part of the hit.
struct Frozen {
    uncached: f64,
    build: f64,
    hit: f64,
    hit_features: f64,
}

fn frozen_phase(cfg: &TrainConfig, data: &Dataset, repeats: usize) -> Frozen {
    // Frozen phase only: what the feature cache serves.
    let frozen = TrainConfig {
        epochs: 0,
        ..cfg.clone()
    };
    let uncached_cfg = TrainConfig {
        feature_cache: false,
        ..frozen.clone()
    };
    // Warm-up (allocator, rayon pool, page cache of the image cache).
    frozen_run(&uncached_cfg, data);

    let mut uncached = Vec::new();
    let mut build = Vec::new();
    let mut hit = Vec::new();
    let mut hit_features = Vec::new();
    for _ in 0..repeats {
        let r = frozen_run(&uncached_cfg, data);
        assert_eq!(r.features, Some(FeatureOrigin::Computed));
        uncached.push(r.frozen_seconds);

        // Build: remove any cache file of this key first.
        for e in std::fs::read_dir(data.cache_dir()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "f32feat") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let r = frozen_run(&frozen, data);
        assert!(matches!(r.features, Some(FeatureOrigin::Built(_))));
        build.push(r.frozen_seconds);

        let r = frozen_run(&frozen, data);
        assert!(matches!(r.features, Some(FeatureOrigin::CacheHit(_))));
        hit.push(r.frozen_seconds);
        hit_features.push(r.feature_seconds);
    }
    Frozen {
        uncached: median(uncached),
        build: median(build),
        hit: median(hit),
        hit_features: median(hit_features),
    }
}

/// 4 classes × (12 train + 4 valid) JPEGs of 80×64 px (padded to 64 px
/// squares by the loader): a colour and a stripe orientation per class,
/// with per-image noise.
fn synthetic_folders(root: &Path) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for class in 0..4usize {
        for i in 0..16usize {
            let split = if i < 12 { "train" } else { "valid" };
            let dir = root.join(split).join(format!("class{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            let img = image::RgbImage::from_fn(80, 64, |x, y| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((state >> 59) as i32) - 16;
                let stripe = match class {
                    0 => x / 8,
                    1 => y / 8,
                    2 => (x + y) / 8,
                    _ => (x + 80 - y) / 8,
                } % 2;
                let base = [60 + 40 * class as i32, 200 - 30 * class as i32, 90];
                let c = |v: i32| (v + 50 * stripe as i32 + noise).clamp(0, 255) as u8;
                image::Rgb([c(base[0]), c(base[1]), c(base[2])])
            });
            let f = std::fs::File::create(dir.join(format!("img{i:02}.jpg"))).unwrap();
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 90)
                .encode_image(&img)
                .unwrap();
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter.
    let tmp = tempfile::tempdir().unwrap();
    let threads = rayon::current_num_threads();
    println!("polytune trainer benchmark: {threads} compute threads, release build\n");

    // 1a. The embedded default.
    let LoadedConfig {
        config: study,
        source,
        ..
    } = StudyConfig::load_or_default(None).unwrap();
    let digits_cfg = TrainConfig::from_table(&study.train, &source).unwrap();
    let mut digits_data = data_config_from_table(&study.data, &source).unwrap();
    digits_data.cache_dir = tmp.path().join("digits-cache");
    std::fs::create_dir_all(&digits_data.cache_dir).unwrap();
    let digits = Dataset::load(&digits_data).unwrap();
    let t = Instant::now();
    let d = frozen_phase(&digits_cfg, &digits, REPEATS);
    let digits_bench_s = t.elapsed().as_secs_f64();

    // 1b. ResNet-50 on the synthetic folders at 64 px.
    let root = tmp.path().join("folders");
    synthetic_folders(&root);
    let mut folders = DataConfig::new(SourceKind::Folders, Some(root));
    folders.image_size = Some(64);
    folders.cache_dir = tmp.path().join("folders-cache");
    let folders = Dataset::load(&folders).unwrap();
    assert_eq!((folders.train().len(), folders.valid().len()), (48, 16));
    let r50_cfg = TrainConfig {
        model: "resnet50".into(),
        batch_size: 16,
        eval_batch_size: 16,
        freeze_epochs: 1,
        ..TrainConfig::default()
    };
    r50_cfg.validate("bench").unwrap();
    let t = Instant::now();
    let r = frozen_phase(&r50_cfg, &folders, 3);
    let r50_bench_s = t.elapsed().as_secs_f64();

    println!("Frozen phase per trial (F = 1 epoch, head only), median wall time:");
    println!();
    println!("| model, data | uncached | cache build (1st trial) | cache hit (later trials) | uncached / hit |");
    println!("|---|---:|---:|---:|---:|");
    for (name, f) in [
        (
            "small ResNet, embedded digits (1438 + 359 images, 8 px), batch 64",
            &d,
        ),
        (
            "ResNet-50 (random init), synthetic folders (48 + 16 images, 64 px), batch 16",
            &r,
        ),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.2} ms (features read: {:.2} ms) | {:.0}× |",
            1e3 * f.uncached,
            1e3 * f.build,
            1e3 * f.hit,
            1e3 * f.hit_features,
            f.uncached / f.hit
        );
    }
    println!();
    println!(
        "(medians of {REPEATS} rounds for the digits ({digits_bench_s:.1} s in all), 3 for ResNet-50 ({r50_bench_s:.1} s))"
    );

    // 2. One whole default `polytune train`, through the binary.
    let bin = env!("CARGO_BIN_EXE_polytune");
    let work = tmp.path().join("train-cwd");
    std::fs::create_dir_all(&work).unwrap();
    let mut walls = Vec::new();
    let mut last = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("train")
            .current_dir(&work)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        walls.push(t.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("validation:"))
            .unwrap_or_default()
            .to_string();
    }
    let (lo, hi) = (
        walls.iter().cloned().fold(f64::INFINITY, f64::min),
        walls.iter().cloned().fold(0.0, f64::max),
    );
    println!();
    println!(
        "Whole default `polytune train` (embedded digits, small ResNet, 1 + 10 epochs, ε = 2), \
         process wall time: median {:.2} s (min {lo:.2}, max {hi:.2}; 3 runs, the first builds the feature cache)",
        median(walls)
    );
    println!("  {last}");
}
