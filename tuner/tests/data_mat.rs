//! The MAT v5 reader on generated fixtures (plain, compressed, big-endian,
//! compact integer storage, malformed files) and on the real Flowers-102
//! label files from the shared folder beside the workspace.

use crate::data_support;
use crate::shared_data;

use std::path::Path;

use data_support::{mat_bytes, Store, Var};
use polytune::data::mat::{MatClass, MatFile};
use polytune::data::DataError;

fn vars() -> Vec<Var<'static>> {
    vec![
        Var::row("labels", &[77.0, 77.0, 3.0, 102.0, 1.0]),
        // Long name (not a small element) and a column vector.
        Var {
            name: "a_longer_name",
            dims: vec![3, 1],
            values: vec![-1.5, 0.25, 1e300],
            store: Store::Double,
        },
        // Doubles stored compactly, as MATLAB does.
        Var {
            name: "u8",
            dims: vec![1, 4],
            values: vec![0.0, 1.0, 200.0, 255.0],
            store: Store::Uint8,
        },
        Var {
            name: "u16",
            dims: vec![1, 3],
            values: vec![6765.0, 6755.0, 8189.0],
            store: Store::Uint16,
        },
        Var {
            name: "i32",
            dims: vec![2, 2],
            values: vec![-7.0, 1.0, 2.0, 3.0],
            store: Store::Int32,
        },
    ]
}

fn check_roundtrip(bytes: &[u8]) {
    let m = MatFile::parse("fixture.mat", bytes).unwrap();
    let names: Vec<&str> = m.variables().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["labels", "a_longer_name", "u8", "u16", "i32"]);
    assert_eq!(m.vector("labels").unwrap(), &[77.0, 77.0, 3.0, 102.0, 1.0]);
    assert_eq!(m.vector("a_longer_name").unwrap(), &[-1.5, 0.25, 1e300]);
    assert_eq!(m.vector("u8").unwrap(), &[0.0, 1.0, 200.0, 255.0]);
    assert_eq!(m.vector("u16").unwrap(), &[6765.0, 6755.0, 8189.0]);
    let i32v = m.get("i32").unwrap();
    assert_eq!(i32v.class, MatClass::Int32);
    assert_eq!(i32v.dims, vec![2, 2]);
    assert_eq!(i32v.data, vec![-7.0, 1.0, 2.0, 3.0]);
    // A 2×2 matrix is not a vector.
    let e = m.vector("i32").unwrap_err().to_string();
    assert!(
        e.contains("fixture.mat") && e.contains("`i32`") && e.contains("[2, 2]"),
        "{e}"
    );
}

#[test]
fn plain_compressed_and_big_endian_files_read_back_exactly() {
    for compressed in [false, true] {
        for be in [false, true] {
            check_roundtrip(&mat_bytes(&vars(), compressed, be));
        }
    }
}

#[test]
fn missing_variable_names_file_and_found_variables() {
    let bytes = mat_bytes(&[Var::row("trnid", &[1.0])], true, false);
    let m = MatFile::parse("setid.mat", &bytes).unwrap();
    match m.vector("tstid").unwrap_err() {
        DataError::MatVariableMissing { path, name, found } => {
            assert_eq!(path, Path::new("setid.mat"));
            assert_eq!(name, "tstid");
            assert_eq!(found, "trnid");
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn truncated_and_corrupt_files_are_rejected_with_the_file_name() {
    for compressed in [false, true] {
        let bytes = mat_bytes(&vars(), compressed, false);
        // Every cut inside the data must fail, never panic or succeed.
        for cut in [130, 140, 200, bytes.len() - 3] {
            let e = MatFile::parse("cut.mat", &bytes[..cut]).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, DataError::Mat { .. }), "{msg}");
            assert!(msg.starts_with("cut.mat:"), "{msg}");
        }
    }
    // Flip bytes inside the zlib stream.
    let mut bytes = mat_bytes(&vars(), true, false);
    for b in &mut bytes[140..160] {
        *b ^= 0x5a;
    }
    let e = MatFile::parse("bad.mat", &bytes).unwrap_err().to_string();
    assert!(e.starts_with("bad.mat:"), "{e}");
    // Not a MAT file at all.
    let e = MatFile::parse("x.mat", b"hello").unwrap_err().to_string();
    assert!(e.contains("shorter than the 128-byte"), "{e}");
    let mut v73 = b"MATLAB 7.3 MAT-file".to_vec();
    v73.resize(200, 0);
    let e = MatFile::parse("x.mat", &v73).unwrap_err().to_string();
    assert!(e.contains("7.3"), "{e}");
}

#[test]
fn missing_file_is_named() {
    let e = MatFile::open("/nonexistent/dir/imagelabels.mat").unwrap_err();
    assert!(matches!(e, DataError::MissingFile { .. }));
    assert!(e.to_string().contains("/nonexistent/dir/imagelabels.mat"));
}

/// The real Flowers-102 files from the shared folder beside the workspace
/// (skipped with a message when absent, a failure under `CI=true`).
#[test]
fn real_flowers_label_files() {
    let Some(dir) = shared_data::flowers102_labels("real_flowers_label_files") else {
        return;
    };
    let labels = MatFile::open(dir.join("imagelabels.mat")).unwrap();
    let l = labels.vector("labels").unwrap();
    assert_eq!(l.len(), 8189);
    assert!(l[..10].iter().all(|&v| v == 77.0), "{:?}", &l[..10]);
    assert!(l
        .iter()
        .all(|&v| v.fract() == 0.0 && (1.0..=102.0).contains(&v)));
    let setid = MatFile::open(dir.join("setid.mat")).unwrap();
    let trn = setid.vector("trnid").unwrap();
    assert_eq!(&trn[..5], &[6765.0, 6755.0, 6768.0, 6736.0, 6744.0]);
    assert_eq!(
        (
            trn.len(),
            setid.vector("valid").unwrap().len(),
            setid.vector("tstid").unwrap().len()
        ),
        (1020, 1020, 6149)
    );
    // The three id lists partition 1..=8189.
    let mut all: Vec<u32> = ["trnid", "valid", "tstid"]
        .iter()
        .flat_map(|v| setid.vector(v).unwrap().iter().map(|&x| x as u32))
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=8189).collect::<Vec<u32>>());
    // Each class has exactly 10 training images (the data set's design).
    let mut per_class = [0usize; 102];
    for &id in trn {
        per_class[l[id as usize - 1] as usize - 1] += 1;
    }
    assert!(per_class.iter().all(|&c| c == 10), "{per_class:?}");
}
