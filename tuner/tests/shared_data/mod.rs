//! The project's shared folder, which sits beside the workspace root
//! (`<workspace>/../shared`) in every checkout and in CI's fresh clone: the
//! real Flowers-102 label files live in `shared/data/flowers102`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// True when the environment says this is a CI run (`CI` set to anything but
/// empty, `0` or `false`, as CI services and `.ci/run`'s callers do).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Where the real label files must be: `<workspace>/../shared/data/flowers102`.
pub fn flowers102_dir() -> PathBuf {
    // CARGO_MANIFEST_DIR is `<workspace>/tuner`.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tuner/ has a parent: the workspace root");
    workspace.join("../shared/data/flowers102")
}

/// The folder with the real `imagelabels.mat` and `setid.mat`. When they are
/// absent, `test` fails under CI (the check must run there) and otherwise
/// says loudly on stderr that it is skipped and why (`None`).
pub fn flowers102_labels(test: &str) -> Option<PathBuf> {
    let dir = flowers102_dir();
    let missing: Vec<&str> = ["imagelabels.mat", "setid.mat"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    let why = format!(
        "{test}: {missing:?} not found in {} (the shared folder must sit beside the workspace root)",
        dir.display()
    );
    assert!(!in_ci(), "{why}; CI=true, so this check may not be skipped");
    eprintln!("SKIPPED {why}");
    None
}
