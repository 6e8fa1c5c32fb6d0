//! The three file layouts on generated fixtures: exact labels, ids and
//! order, and every bad input the issue lists, each naming file/line/key.

use crate::data_support;
use crate::shared_data;

use std::path::Path;

use data_support::{flat_color, flowers_fixture, rgb_image, save, tempdir, write_mat, Var};
use polytune::data::{
    flowers, folders, manifest, DataConfig, DataError, Dataset, SourceKind, Split,
};

/// 12 labelled images, 3 classes; the id lists partition 1..=12.
const LABELS: [f64; 12] = [2.0, 2.0, 1.0, 3.0, 1.0, 3.0, 2.0, 1.0, 3.0, 1.0, 2.0, 3.0];
const TRN: [f64; 4] = [3.0, 1.0, 4.0, 2.0];
const VAL: [f64; 3] = [5.0, 6.0, 7.0];
const TST: [f64; 5] = [12.0, 8.0, 9.0, 10.0, 11.0];

fn flowers_with_3_classes(root: &Path) {
    flowers_fixture(root, &LABELS, &TRN, &VAL, &TST, 12, 9);
}

#[test]
fn flowers_layout_gives_exact_ids_and_labels() {
    let dir = tempdir();
    let root = dir.path();
    flowers_with_3_classes(root);
    // A fixture with only 3 labels in use: the layout still has 102 classes.
    let index = flowers::open(root);
    // Classes 4..=102 have no training images: an error naming the label file.
    let e = index.unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("imagelabels.mat")
            && msg.contains("99 class(es) have no training images: 4, 5"),
        "{msg}"
    );

    // With all 102 classes present in training the index is built.
    let labels: Vec<f64> = (0..104).map(|i| (i % 102 + 1) as f64).collect();
    let trn: Vec<f64> = (1..=102).map(|i| i as f64).collect();
    let root2 = dir.path().join("full");
    flowers_fixture(&root2, &labels, &trn, &[103.0], &[104.0], 4, 3);
    let index = flowers::open(&root2).unwrap();
    assert_eq!(index.classes.len(), 102);
    assert_eq!(index.classes[0], "1");
    let train = index.items(Split::Train).unwrap();
    assert_eq!(train.len(), 102);
    assert_eq!(train[0].path, root2.join("jpg/image_00001.jpg"));
    assert_eq!(train[101].label, 101);
    let valid = index.items(Split::Valid).unwrap();
    assert_eq!(
        (valid[0].path.clone(), valid[0].label),
        (root2.join("jpg/image_00103.jpg"), 0)
    );
    let test = index.items(Split::Test).unwrap();
    assert_eq!(
        (test[0].path.clone(), test[0].label),
        (root2.join("jpg/image_00104.jpg"), 1)
    );
}

#[test]
fn flowers_dataset_loads_in_id_order_with_pixels() {
    let dir = tempdir();
    let root = dir.path().join("f");
    // All 102 classes in training (ids 1..=102), 2 valid, 1 test.
    let labels: Vec<f64> = (0..105).map(|i| (i % 102 + 1) as f64).collect();
    let mut trn: Vec<f64> = (1..=102).map(|i| i as f64).collect();
    trn.reverse(); // split order is the id list's order, not id order
    flowers_fixture(&root, &labels, &trn, &[103.0, 104.0], &[105.0], 6, 4);
    let mut cfg = DataConfig::new(SourceKind::Flowers102, Some(root.clone()));
    cfg.image_size = Some(6);
    cfg.cache_dir = dir.path().join("cache");
    let data = Dataset::load(&cfg).unwrap();
    assert_eq!(data.num_classes(), 102);
    assert_eq!(data.train().len(), 102);
    // First training image is id 102, label 102 → class 101.
    assert_eq!(data.train().label(0), 101);
    assert_eq!(data.train().original_size(0), (6, 4));
    // Its centre pixel is the fixture's flat colour (JPEG: within a few levels).
    let want = flat_color(102, 102 % 4);
    let img = data.train().image(0);
    let o = (3 * 9 + 4) * 3;
    for c in 0..3 {
        assert!(
            (img[o + c] as i32 - want[c] as i32).abs() <= 4,
            "{c}: {} vs {}",
            img[o + c],
            want[c]
        );
    }
    // resize = "crop": cached with its short side at the item size (6×4 → 9×6).
    assert_eq!(data.train().cached_size(0), (9, 6));
    // resize = "pad": a 6×4 image at 6 px has a zero row at the top and bottom.
    let pad = Dataset::load(&DataConfig {
        resize: polytune::data::augment::ResizeMode::Pad,
        ..cfg.clone()
    })
    .unwrap();
    let img = pad.train().image(0);
    assert_eq!(pad.train().cached_size(0), (6, 6));
    assert!(img[..18].iter().all(|&v| v == 0));
    assert!(img[5 * 18..].iter().all(|&v| v == 0));
    assert_eq!(data.valid().labels(), &[0, 1]);
    assert!(data.has_test());
    let test = data.load_test().unwrap();
    assert_eq!(test.labels(), &[2]);
}

fn flowers_error(labels: &[f64], trn: &[f64], val: &[f64], tst: &[f64]) -> String {
    let dir = tempdir();
    let root = dir.path();
    std::fs::create_dir_all(root.join("jpg")).unwrap();
    write_mat(
        &root.join("imagelabels.mat"),
        &[Var::row("labels", labels)],
        true,
    );
    write_mat(
        &root.join("setid.mat"),
        &[
            Var::row("trnid", trn),
            Var::row("valid", val),
            Var::row("tstid", tst),
        ],
        false,
    );
    flowers::open(root).unwrap_err().to_string()
}

#[test]
fn flowers_bad_labels_and_ids_are_named() {
    // Label out of range (0 and 103), and not an integer.
    let e = flowers_error(&[1.0, 0.0, 2.0], &[1.0], &[2.0], &[3.0]);
    assert!(
        e.contains("imagelabels.mat") && e.contains("`labels`[1] = 0") && e.contains("1..=102"),
        "{e}"
    );
    let e = flowers_error(&[1.0, 2.0, 103.0], &[1.0], &[2.0], &[3.0]);
    assert!(e.contains("`labels`[2] = 103"), "{e}");
    let e = flowers_error(&[1.0, 2.5, 3.0], &[1.0], &[2.0], &[3.0]);
    assert!(e.contains("`labels`[1] = 2.5"), "{e}");
    // Id out of range.
    let e = flowers_error(&[1.0, 2.0, 3.0], &[1.0], &[2.0], &[4.0]);
    assert!(
        e.contains("setid.mat") && e.contains("`tstid`[0] = 4") && e.contains("1..=3"),
        "{e}"
    );
    let e = flowers_error(&[1.0, 2.0, 3.0], &[0.0], &[2.0], &[3.0]);
    assert!(e.contains("`trnid`[0] = 0"), "{e}");
    // Duplicate id across splits.
    let e = flowers_error(&[1.0, 2.0, 3.0], &[1.0, 2.0], &[2.0], &[3.0]);
    assert!(
        e.contains("image id 2 is listed twice (in `trnid` and `valid`)"),
        "{e}"
    );
    // Labels and ids of different lengths.
    let e = flowers_error(&[1.0, 2.0, 3.0, 1.0], &[1.0], &[2.0], &[3.0]);
    assert!(
        e.contains("setid.mat")
            && e.contains("has 3 entries")
            && e.contains("imagelabels.mat")
            && e.contains("has 4"),
        "{e}"
    );
}

#[test]
fn flowers_missing_pieces_are_named() {
    let dir = tempdir();
    let e = flowers::open(&dir.path().join("absent")).unwrap_err();
    assert!(
        matches!(e, DataError::MissingDir { .. }) && e.to_string().contains("absent"),
        "{e}"
    );
    let e = flowers::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("jpg"), "{e}");
    std::fs::create_dir_all(dir.path().join("jpg")).unwrap();
    let e = flowers::open(dir.path()).unwrap_err();
    assert!(
        matches!(e, DataError::MissingFile { .. }) && e.to_string().contains("imagelabels.mat"),
        "{e}"
    );
    // Variable missing.
    write_mat(
        &dir.path().join("imagelabels.mat"),
        &[Var::row("labelz", &[1.0])],
        true,
    );
    write_mat(
        &dir.path().join("setid.mat"),
        &[Var::row("trnid", &[1.0])],
        true,
    );
    let e = flowers::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("imagelabels.mat: no variable `labels` (found: labelz)"),
        "{e}"
    );

    // A listed image that is missing is named when the split is loaded.
    let root = dir.path().join("f");
    let labels: Vec<f64> = (0..103).map(|i| (i % 102 + 1) as f64).collect();
    let trn: Vec<f64> = (1..=102).map(|i| i as f64).collect();
    flowers_fixture(&root, &labels, &trn, &[103.0], &[], 4, 4);
    std::fs::remove_file(root.join("jpg/image_00050.jpg")).unwrap();
    let mut cfg = DataConfig::new(SourceKind::Flowers102, Some(root.clone()));
    cfg.image_size = Some(4);
    cfg.cache_dir = dir.path().join("cache");
    let e = Dataset::load(&cfg).unwrap_err();
    assert!(matches!(e, DataError::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("image_00050.jpg"), "{e}");
}

fn write_csv(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("manifest.csv");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn csv_manifest_relative_paths_labels_and_order() {
    let dir = tempdir();
    let d = dir.path();
    for name in ["a.jpg", "b.jpg", "c.png", "sub/d.jpg", "e.jpg"] {
        save(
            &d.join("imgs").join(name),
            &rgb_image(5, 5, |_, _| [1, 2, 3]),
        );
    }
    let csv = write_csv(
        d,
        "Extra,SetType,ImgLabel,ImgPath\n\
         x,train,10,imgs/a.jpg\n\
         x,Train,9,imgs/b.jpg\n\
         x,valid,10,imgs/c.png\n\
         \n\
         x,test,9,imgs/sub/d.jpg\n\
         x,train,9,imgs/e.jpg\n",
    );
    let idx = manifest::open(&csv).unwrap();
    // Integer class names sort numerically: "9" < "10".
    assert_eq!(idx.classes, vec!["9".to_string(), "10".to_string()]);
    let train = idx.items(Split::Train).unwrap();
    assert_eq!(train.len(), 3);
    assert_eq!(
        (train[0].path.clone(), train[0].label),
        (d.join("imgs/a.jpg"), 1)
    );
    assert_eq!(
        (train[1].path.clone(), train[1].label),
        (d.join("imgs/b.jpg"), 0)
    );
    assert_eq!(train[2].path, d.join("imgs/e.jpg"));
    assert_eq!(
        idx.items(Split::Valid).unwrap()[0].path,
        d.join("imgs/c.png")
    );
    assert_eq!(idx.items(Split::Test).unwrap()[0].label, 0);

    let mut cfg = DataConfig::new(SourceKind::Csv, Some(csv));
    cfg.image_size = Some(5);
    cfg.cache_dir = d.join("cache");
    let data = Dataset::load(&cfg).unwrap();
    assert_eq!(data.class_names(), &["9".to_string(), "10".to_string()]);
    assert_eq!(data.train().labels(), &[1, 0, 0]);
    let px = &data.train().image(0)[..3];
    assert!(
        px.iter()
            .zip([1u8, 2, 3])
            .all(|(&a, b)| (a as i32 - b as i32).abs() <= 3),
        "{px:?}"
    );
}

#[test]
fn csv_bad_rows_name_the_line() {
    let dir = tempdir();
    let d = dir.path();
    let csv = write_csv(d, "ImgPath,ImgLabel,SetType\na.jpg,1,train\nb.jpg,2\n");
    let e = manifest::open(&csv).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Csv { line: 3, .. }), "{msg}");
    assert!(
        msg.contains("manifest.csv, line 3: missing column `SetType`"),
        "{msg}"
    );

    let csv = write_csv(
        d,
        "ImgPath,ImgLabel,SetType\na.jpg,1,train\nb.jpg,2,validation\n",
    );
    let msg = manifest::open(&csv).unwrap_err().to_string();
    assert!(
        msg.contains("line 3: unknown SetType \"validation\""),
        "{msg}"
    );

    let csv = write_csv(d, "ImgPath,Label,SetType\na.jpg,1,train\n");
    let msg = manifest::open(&csv).unwrap_err().to_string();
    assert!(
        msg.contains("line 1") && msg.contains("no column `ImgLabel`"),
        "{msg}"
    );

    let csv = write_csv(d, "ImgPath,ImgLabel,SetType\na.jpg,,train\n");
    let msg = manifest::open(&csv).unwrap_err().to_string();
    assert!(msg.contains("line 2: empty `ImgLabel`"), "{msg}");

    // A class seen only in valid has no training images.
    let csv = write_csv(
        d,
        "ImgPath,ImgLabel,SetType\na.jpg,cat,train\nb.jpg,dog,valid\nc.jpg,cat,valid\n",
    );
    let msg = manifest::open(&csv).unwrap_err().to_string();
    assert!(
        msg.contains("manifest.csv") && msg.contains("no training images: dog"),
        "{msg}"
    );

    // No validation rows at all.
    let csv = write_csv(d, "ImgPath,ImgLabel,SetType\na.jpg,cat,train\n");
    let msg = manifest::open(&csv).unwrap_err().to_string();
    assert!(msg.contains("the valid split has no images"), "{msg}");

    let e = manifest::open(&d.join("missing.csv")).unwrap_err();
    assert!(matches!(e, DataError::MissingFile { .. }) && e.to_string().contains("missing.csv"));

    // A listed image that does not exist is named when loading.
    let csv = write_csv(
        d,
        "ImgPath,ImgLabel,SetType\nnot_there.jpg,cat,train\nnot_there.jpg,cat,valid\n",
    );
    let mut cfg = DataConfig::new(SourceKind::Csv, Some(csv));
    cfg.cache_dir = d.join("cache");
    let e = Dataset::load(&cfg).unwrap_err();
    assert!(
        matches!(e, DataError::MissingFile { .. }) && e.to_string().contains("not_there.jpg"),
        "{e}"
    );
}

#[test]
fn class_folders_layout() {
    let dir = tempdir();
    let d = dir.path();
    let img = rgb_image(4, 4, |_, _| [9, 9, 9]);
    for (split, class, file) in [
        ("train", "tulip", "2.jpg"),
        ("train", "tulip", "1.JPG"),
        ("train", "rose", "x.png"),
        ("valid", "rose", "v.jpeg"),
        ("test", "tulip", "t.jpg"),
    ] {
        save(&d.join(split).join(class).join(file), &img);
    }
    std::fs::write(d.join("train/rose/notes.txt"), "ignored").unwrap();
    std::fs::write(d.join("train/rose/.hidden.jpg"), "ignored").unwrap();
    let idx = folders::open(d).unwrap();
    assert_eq!(idx.classes, vec!["rose".to_string(), "tulip".to_string()]);
    let train = idx.items(Split::Train).unwrap();
    let names: Vec<String> = train
        .iter()
        .map(|i| i.path.strip_prefix(d).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        ["train/rose/x.png", "train/tulip/1.JPG", "train/tulip/2.jpg"]
    );
    assert_eq!(train.iter().map(|i| i.label).collect::<Vec<_>>(), [0, 1, 1]);
    assert_eq!(idx.items(Split::Valid).unwrap().len(), 1);
    assert_eq!(idx.items(Split::Test).unwrap()[0].label, 1);

    // An empty training class folder.
    std::fs::create_dir_all(d.join("train/lily")).unwrap();
    let msg = folders::open(d).unwrap_err().to_string();
    assert!(
        msg.contains("train/lily") && msg.contains("class `lily` has no images"),
        "{msg}"
    );
    std::fs::remove_dir(d.join("train/lily")).unwrap();
    // A validation class unknown to train/.
    save(&d.join("valid/daisy/a.jpg"), &img);
    let msg = folders::open(d).unwrap_err().to_string();
    assert!(
        msg.contains("valid/daisy") && msg.contains("no folder in train/"),
        "{msg}"
    );
    std::fs::remove_dir_all(d.join("valid/daisy")).unwrap();
    // Missing valid/.
    std::fs::remove_dir_all(d.join("valid")).unwrap();
    let e = folders::open(d).unwrap_err();
    assert!(
        matches!(e, DataError::MissingDir { .. }) && e.to_string().contains("valid"),
        "{e}"
    );
    let e = folders::open(&d.join("nowhere")).unwrap_err();
    assert!(
        matches!(e, DataError::MissingDir { .. }) && e.to_string().contains("nowhere"),
        "{e}"
    );
}

/// The Flowers-102 index on the real label files from the shared folder
/// beside the workspace (skipped with a message when absent, a failure under
/// `CI=true`).
#[test]
fn real_flowers_index() {
    let Some(real) = shared_data::flowers102_labels("real_flowers_index") else {
        return;
    };
    let dir = tempdir();
    let root = dir.path();
    std::fs::create_dir_all(root.join("jpg")).unwrap();
    for f in ["imagelabels.mat", "setid.mat"] {
        std::fs::copy(real.join(f), root.join(f)).unwrap();
    }
    let idx = flowers::open(root).unwrap();
    assert_eq!(idx.classes.len(), 102);
    let sizes: Vec<usize> = [Split::Train, Split::Valid, Split::Test]
        .iter()
        .map(|&s| idx.items(s).unwrap().len())
        .collect();
    assert_eq!(sizes, [1020, 1020, 6149]);
    let train = idx.items(Split::Train).unwrap();
    let first: Vec<String> = train[..5]
        .iter()
        .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        first,
        [
            "image_06765.jpg",
            "image_06755.jpg",
            "image_06768.jpg",
            "image_06736.jpg",
            "image_06744.jpg"
        ]
    );
    // Images 1..=10 carry label 77 (class 76); find them among the splits.
    let all: Vec<_> = Split::ALL
        .iter()
        .flat_map(|&s| idx.items(s).unwrap().iter())
        .collect();
    for id in 1..=10 {
        let name = format!("image_{id:05}.jpg");
        let item = all.iter().find(|i| i.path.ends_with(&name)).unwrap();
        assert_eq!(item.label, 76, "{name}");
    }
}
