//! Data pipeline benchmarks (issue 4): decode + pad + resize of realistic
//! JPEGs (cold), cache reads (warm), and augmentation throughput.
//!
//! ```text
//! cargo bench -p polytune --bench data
//! python3 tuner/benches/data_baseline.py   # PIL / PyTorch baselines on the same files
//! ```
//!
//! The generated images (500×375 JPEGs, like Flowers-102's) are written to
//! `target/polytune-bench-data/` so the Python baseline reads the same files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use polytune::data::decode::{load_resized, PadResizer};
use polytune::data::{Augment, AugmentConfig, BatchPlan, DataConfig, Dataset, SourceKind};

const N_IMAGES: usize = 32;

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/polytune-bench-data")
}

/// 32 photo-like 500×375 JPEGs (smooth colour fields plus noise, quality
/// 90: ~40–60 KB each, like the real set) in a class-folder layout.
fn make_images() -> (PathBuf, Vec<PathBuf>) {
    let root = bench_dir().join("folders");
    let mut files = Vec::new();
    let mut state = 0x1234_5678u64;
    for i in 0..N_IMAGES {
        let split = if i < N_IMAGES - 2 { "train" } else { "valid" };
        let path = root
            .join(split)
            .join(format!("c{}", i % 2))
            .join(format!("img{i:03}.jpg"));
        if !path.exists() {
            let (w, h) = if i % 5 == 0 { (375, 500) } else { (500, 375) };
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = ((state >> 58) as i32) - 32;
                let fx = x as f32 / w as f32;
                let fy = y as f32 / h as f32;
                let r = 128.0 + 100.0 * (6.0 * fx + i as f32).sin() * (3.0 * fy).cos();
                let g = 128.0 + 90.0 * (5.0 * fy + 0.3 * i as f32).sin();
                let b = 100.0 + 80.0 * ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt();
                let c = |v: f32| (v as i32 + n).clamp(0, 255) as u8;
                image::Rgb([c(r), c(g), c(b)])
            });
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let f = std::fs::File::create(&path).unwrap();
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 90)
                .encode_image(&img)
                .unwrap();
        }
        files.push(path);
    }
    (root, files)
}

fn config(root: &Path, cache: &Path, size: u32) -> DataConfig {
    let mut cfg = DataConfig::new(SourceKind::Folders, Some(root.to_path_buf()));
    cfg.image_size = Some(size);
    cfg.cache_dir = cache.to_path_buf();
    cfg
}

fn decode(c: &mut Criterion) {
    let (root, files) = make_images();
    let mut g = c.benchmark_group("decode_resize_cold");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for size in [64u32, 224] {
        // One thread: decode + pad + resize, per image.
        g.throughput(Throughput::Elements(files.len() as u64));
        g.bench_with_input(BenchmarkId::new("one_thread", size), &size, |b, &size| {
            let mut rs = PadResizer::new();
            let mut out = vec![0u8; (size * size * 3) as usize];
            b.iter(|| {
                for f in &files {
                    load_resized(f, size, &mut rs, &mut out).unwrap();
                }
            })
        });
        // Baseline in the same run: decode, pad, then the `image` crate's own
        // triangle-filter resize (also antialiased) instead of fast_image_resize.
        g.bench_with_input(
            BenchmarkId::new("baseline_image_crate_resize", size),
            &size,
            |b, &size| {
                b.iter(|| {
                    for f in &files {
                        let img = image::open(f).unwrap().into_rgb8();
                        let (w, h) = img.dimensions();
                        let side = w.max(h);
                        let mut canvas = image::RgbImage::new(side, side);
                        image::imageops::replace(
                            &mut canvas,
                            &img,
                            ((side - w) / 2) as i64,
                            ((side - h) / 2) as i64,
                        );
                        let out = image::imageops::resize(
                            &canvas,
                            size,
                            size,
                            image::imageops::FilterType::Triangle,
                        );
                        std::hint::black_box(out);
                    }
                })
            },
        );
        // The cache build: all cores, plus writing the cache file.
        g.throughput(Throughput::Elements((N_IMAGES - 2) as u64));
        g.bench_with_input(
            BenchmarkId::new("cache_build_all_cores", size),
            &size,
            |b, &size| {
                b.iter_batched(
                    || tempfile::tempdir().unwrap(),
                    |cache| {
                        let data = Dataset::load(&config(&root, cache.path(), size)).unwrap();
                        assert_eq!(data.train().len(), N_IMAGES - 2);
                        cache
                    },
                    criterion::BatchSize::PerIteration,
                )
            },
        );
    }
    g.finish();
}

fn warm(c: &mut Criterion) {
    let (root, _) = make_images();
    let cache = bench_dir().join("cache");
    let mut g = c.benchmark_group("cache_warm");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for size in [64u32, 224] {
        let cfg = config(&root, &cache, size);
        Dataset::load(&cfg).unwrap(); // build once
        let n = (N_IMAGES - 2) as u64;
        // Open, validate and map the cache; touch every pixel.
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("open_and_read", size), &size, |b, _| {
            b.iter(|| {
                let data = Dataset::load(&cfg).unwrap();
                data.train().pixels().iter().map(|&v| v as u64).sum::<u64>()
            })
        });
        // Normalised NCHW f32 batches from the mapped cache (no augmentation).
        let data = Dataset::load(&cfg).unwrap();
        g.bench_with_input(BenchmarkId::new("eval_batches", size), &size, |b, _| {
            b.iter(|| {
                data.train()
                    .batches(&BatchPlan::eval(64))
                    .unwrap()
                    .map(|b| b.len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

fn augment(c: &mut Criterion) {
    let (root, _) = make_images();
    let cache = bench_dir().join("cache");
    let mut g = c.benchmark_group("augment_batch64");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for size in [64u32, 224] {
        let data = Dataset::load(&config(&root, &cache, size)).unwrap();
        let set = data.train();
        let idx: Vec<usize> = (0..64).map(|i| i % set.len()).collect();
        g.throughput(Throughput::Elements(64));
        let cases = [
            ("none", None),
            ("seed_p0.3", Some(AugmentConfig::default())),
            (
                "all_p1",
                Some(AugmentConfig {
                    p: 1.0,
                    ..AugmentConfig::default()
                }),
            ),
        ];
        for (name, cfg) in cases {
            let aug = cfg.map(|config| Augment {
                config,
                seed: 1,
                view: 0,
            });
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| set.assemble(&idx, aug.as_ref()).unwrap().images.len())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decode, warm, augment);
criterion_main!(benches);
