//! The preprocessing cache: reuse, rebuild on source changes, rejection of
//! damaged files, and skipping corrupt images.

use crate::data_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use data_support::{rgb_image, save, tempdir};
use polytune::data::{DataConfig, DataError, Dataset, Origin, SourceKind};

/// A folder layout with 2 classes, 3 + 2 PNG training images (exact pixels)
/// and 2 validation images, each image of a distinct colour.
fn fixture(root: &Path) {
    let files = [
        ("train", "a", "1.png", [10u8, 20, 30]),
        ("train", "a", "2.png", [40, 50, 60]),
        ("train", "a", "3.png", [70, 80, 90]),
        ("train", "b", "1.png", [100, 110, 120]),
        ("train", "b", "2.png", [130, 140, 150]),
        ("valid", "a", "1.png", [160, 170, 180]),
        ("valid", "b", "1.png", [190, 200, 210]),
    ];
    for (split, class, name, c) in files {
        save(
            &root.join(split).join(class).join(name),
            &rgb_image(6, 4, |_, _| c),
        );
    }
}

fn config(root: &Path, cache: &Path, size: u32) -> DataConfig {
    let mut cfg = DataConfig::new(SourceKind::Folders, Some(root.to_path_buf()));
    cfg.image_size = Some(size);
    cfg.cache_dir = cache.to_path_buf();
    cfg
}

fn cache_file(origin: &Origin) -> PathBuf {
    match origin {
        Origin::CacheHit { path } | Origin::Built { path, .. } => path.clone(),
        Origin::Memory => panic!("not cached"),
    }
}

fn is_built(o: &Origin) -> bool {
    matches!(o, Origin::Built { .. })
}

fn touch(path: &Path, secs_later: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    let t = f.metadata().unwrap().modified().unwrap() + Duration::from_secs(secs_later);
    f.set_modified(t).unwrap();
}

#[test]
fn cache_is_reused_then_rebuilt_when_a_source_changes() {
    let dir = tempdir();
    let root = dir.path().join("data");
    let cache = dir.path().join("nested/cache");
    fixture(&root);
    let cfg = config(&root, &cache, 6);

    let first = Dataset::load(&cfg).unwrap();
    assert!(
        is_built(first.train().origin()),
        "{:?}",
        first.train().origin()
    );
    assert!(matches!(
        first.train().origin(),
        Origin::Built { decoded: 5, .. }
    ));
    let file = cache_file(first.train().origin());
    assert!(file.starts_with(&cache) && file.is_file());
    // Exact pixels: image 3 of train is class b's first, colour (100,110,120),
    // cached with its short side at the item size (6×4 → 9×6), flat.
    let img = first.train().image(3);
    assert_eq!(first.train().cached_size(3), (9, 6));
    assert_eq!(img.len(), 9 * 6 * 3);
    assert!(img.chunks(3).all(|p| p == [100, 110, 120]));
    assert_eq!(first.train().labels(), &[0, 0, 0, 1, 1]);

    // Second load: the same file, mapped, same content and fingerprint.
    let second = Dataset::load(&cfg).unwrap();
    assert_eq!(
        second.train().origin(),
        &Origin::CacheHit { path: file.clone() }
    );
    assert_eq!(second.train().pixels(), first.train().pixels());
    assert_eq!(second.train().fingerprint(), first.train().fingerprint());
    assert!(matches!(second.valid().origin(), Origin::CacheHit { .. }));

    // Touching one training image rebuilds the train cache only.
    touch(&root.join("train/b/2.png"), 10);
    let third = Dataset::load(&cfg).unwrap();
    assert!(is_built(third.train().origin()));
    assert!(matches!(third.valid().origin(), Origin::CacheHit { .. }));
    assert_ne!(third.train().fingerprint(), first.train().fingerprint());
    assert_eq!(third.train().pixels(), first.train().pixels());

    // Replacing an image's content changes the cached pixels.
    save(
        &root.join("train/a/1.png"),
        &rgb_image(6, 4, |_, _| [1, 2, 3]),
    );
    touch(&root.join("train/a/1.png"), 20);
    let fourth = Dataset::load(&cfg).unwrap();
    assert!(is_built(fourth.train().origin()));
    assert_eq!(&fourth.train().image(0)[18..21], &[1, 2, 3]);

    // A different image size is a different file; both stay valid.
    let small = Dataset::load(&config(&root, &cache, 3)).unwrap();
    assert!(is_built(small.train().origin()));
    assert_ne!(cache_file(small.train().origin()), file);
    assert!(matches!(
        Dataset::load(&cfg).unwrap().train().origin(),
        Origin::CacheHit { .. }
    ));
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn damaged_cache_files_are_rejected_and_rebuilt() {
    let dir = tempdir();
    let root = dir.path().join("data");
    let cache = dir.path().join("cache");
    fixture(&root);
    let cfg = config(&root, &cache, 6);
    let good = Dataset::load(&cfg).unwrap();
    let file = cache_file(good.train().origin());
    let pixels = good.train().pixels().to_vec();
    drop(good);
    let bytes = std::fs::read(&file).unwrap();

    // What a non-atomic writer killed midway would leave: a prefix.
    for cut in [0, 10, 64, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let again = Dataset::load(&cfg).unwrap();
        assert!(
            is_built(again.train().origin()),
            "cut at {cut}: {:?}",
            again.train().origin()
        );
        assert_eq!(again.train().pixels(), &pixels[..]);
    }
    // Extra bytes, a damaged header and a damaged trailer.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 1;
    let mut bad_trailer = bytes.clone();
    let n = bad_trailer.len();
    bad_trailer[n - 1] ^= 1;
    let mut bad_label = bytes.clone();
    // First label (u32) sits right after the pixels: 64 + 5 images × 108 bytes.
    bad_label[64 + 5 * 108] = 1;
    for (what, b) in [
        ("longer", longer),
        ("magic", bad_magic),
        ("trailer", bad_trailer),
        ("label", bad_label),
    ] {
        std::fs::write(&file, &b).unwrap();
        let again = Dataset::load(&cfg).unwrap();
        assert!(is_built(again.train().origin()), "{what}");
        assert_eq!(again.train().pixels(), &pixels[..], "{what}");
        assert_eq!(again.train().labels(), &[0, 0, 0, 1, 1], "{what}");
    }
}

#[test]
fn stale_temporary_files_are_cleaned_and_fresh_ones_kept() {
    let dir = tempdir();
    let root = dir.path().join("data");
    let cache = dir.path().join("cache");
    fixture(&root);
    let cfg = config(&root, &cache, 6);
    let file = cache_file(Dataset::load(&cfg).unwrap().train().origin());
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let stale = cache.join(format!("{name}.tmp.1.1"));
    let fresh = cache.join(format!("{name}.tmp.2.2"));
    std::fs::write(&stale, b"partial").unwrap();
    std::fs::write(&fresh, b"partial").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    touch(&root.join("train/a/1.png"), 5); // force a rebuild
    let data = Dataset::load(&cfg).unwrap();
    assert!(is_built(data.train().origin()));
    assert!(!stale.exists(), "stale temporary file kept");
    assert!(fresh.exists(), "a possibly concurrent build's file removed");
}

#[test]
fn corrupt_images_fail_by_name_or_are_skipped_and_counted() {
    let dir = tempdir();
    let root = dir.path().join("data");
    let cache = dir.path().join("cache");
    fixture(&root);
    // Replace train/a/2 with a truncated JPEG under a .jpg name.
    std::fs::remove_file(root.join("train/a/2.png")).unwrap();
    let good = root.join("train/a/2.jpg");
    save(
        &good,
        &rgb_image(32, 32, |x, y| [(x * 8) as u8, (y * 8) as u8, 0]),
    );
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&good, &bytes[..bytes.len() / 2]).unwrap();

    let mut cfg = config(&root, &cache, 6);
    let e = Dataset::load(&cfg).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("train/a/2.jpg"), "{e}");
    // Nothing was cached for the failed split.
    let cached = std::fs::read_dir(&cache)
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert_eq!(cached, 0, "a failed build left files in the cache");

    cfg.skip_corrupt = true;
    let data = Dataset::load(&cfg).unwrap();
    let train = data.train();
    assert_eq!(train.len(), 4);
    assert_eq!(train.skipped(), std::slice::from_ref(&good));
    assert_eq!(train.labels(), &[0, 0, 1, 1]);
    // Sample 1 is source item 2 (train/a/3.png); its colour proves the packing.
    assert_eq!(train.source_index(1), 2);
    assert_eq!(&train.image(1)[18..21], &[70, 80, 90]);
    assert_eq!(&train.image(2)[18..21], &[100, 110, 120]);
    // Reused from the cache with the same skip list.
    let again = Dataset::load(&cfg).unwrap();
    assert!(matches!(again.train().origin(), Origin::CacheHit { .. }));
    assert_eq!(again.train().skipped(), &[good]);
    assert_eq!(again.train().pixels(), train.pixels());
}
