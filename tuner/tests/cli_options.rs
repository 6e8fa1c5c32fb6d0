//! The command-line options no other test covers, each through the real
//! `polytune` binary and checked by an effect a broken option could not
//! fake:
//!
//! - `train --test` evaluates the test split (a copy of the validation
//!   split here, so its metrics must equal the validation metrics, on its
//!   own image count);
//! - `--solver` and `--workers` override the config: the resolved config
//!   in the study directory and the tuned TOML's provenance say so, and the
//!   journal's ε sequence is the random solver's (which depends only on the
//!   seed: an in-process study with `solver = "random"` in its config
//!   proposes the same points);
//! - `--weights` loads a checkpoint converted by
//!   `scripts/torchvision_to_safetensors.py` from a committed `torch.save`
//!   file (`fixtures/weights/`): the conversion must give exactly what
//!   torch's own writer gave, and after a frozen-only fine-tune the saved
//!   body's convolutions are the checkpoint's, bit for bit.
//!
//! The conversion runs the script with `python3` and only the standard
//! library (no torch): when `python3` is missing the test fails under
//! `CI=true` and otherwise says that it skipped and why.

use crate::common;
use crate::data_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::{analytic, options};
use data_support::{flat_color, rgb_image, save};
use polytune::orchestrator::FnRunner;
use polytune::study::{run_study_blocking, StudyConfig};

const BIN: &str = env!("CARGO_BIN_EXE_polytune");

/// A small study on the digits (1 frozen + 1 unfrozen epoch per trial),
/// Nelder–Mead and one worker unless the command line says otherwise.
const SMALL: &str = r#"
[study]
budget = 3
seed = 5
confirm_seeds = 2
workers = 1

[search]
solver = "nelder-mead"
terms = 1
lower = [-1.0]
upper = [10.0]

[train]
model = "small-resnet"
freeze_epochs = 1
epochs = 1
base_lr = 0.04
lr_mult = 2

[data]
source = "digits"
"#;

fn polytune(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(cwd)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The numbers of the line of `out` that starts with `prefix`
/// (`validation: top-1 0.5000, top-5 …, CE … (12 images); …`).
fn metrics_line(out: &str, prefix: &str) -> Vec<f64> {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"));
    line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|t| !t.is_empty() && *t != ".")
        .map(|t| t.trim_end_matches('.').parse().unwrap())
        .collect()
}

/// Folder layout with three flat-colour classes: `train/` 6 images a class,
/// `valid/` 3 a class and `test/` a byte-identical copy of `valid/`.
fn folder_data(root: &Path) {
    for (split, n) in [("train", 6), ("valid", 3), ("test", 3)] {
        for (label, class) in ["iris", "lily", "rose"].into_iter().enumerate() {
            for k in 0..n {
                // test/ repeats valid/'s images (same k, same pixels).
                let k = if split == "train" { k + 10 } else { k };
                let img = rgb_image(12, 10, |x, y| {
                    let [r, g, b] = flat_color(label, k);
                    [r, g.wrapping_add((x * y) as u8), b]
                });
                save(&root.join(split).join(class).join(format!("{k}.png")), &img);
            }
        }
    }
}

#[test]
fn train_test_evaluates_the_test_split() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("flowers");
    folder_data(&data);
    let cfg = work.path().join("folders.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[data]\nsource = \"folders\"\nimage_size = 8\n",
            SMALL.split("[data]").next().unwrap()
        ),
    )
    .unwrap();
    let args = ["train", "--config", s(&cfg), "--data-dir", s(&data)];
    let out = ok(&polytune(work.path(), &[&args[..], &["--test"]].concat()));
    // validation: top-1 A, top-5 B, CE C (9 images); T s in all
    let valid = metrics_line(&out, "validation:");
    let test = metrics_line(&out, "test:");
    // [1, top-1, 5, top-5, CE, images] — the test split is the validation
    // split's images under the same labels.
    assert_eq!(test.len(), 6, "{out}");
    assert_eq!(test[5], 9.0, "test images: {out}");
    assert_eq!(&valid[..6], &test[..], "{out}");

    // Without --test there is no test line.
    let out = ok(&polytune(work.path(), &args));
    assert!(
        !out.contains("\ntest:") && !out.starts_with("test:"),
        "{out}"
    );
}

#[test]
fn train_test_fails_on_a_data_set_without_a_test_split() {
    // The digits have none: asking for it is an error, not a silent skip.
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("small.toml");
    std::fs::write(&cfg, SMALL).unwrap();
    let o = polytune(work.path(), &["train", "--config", s(&cfg), "--test"]);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(text(&o.stderr).contains("test"), "{}", text(&o.stderr));
}

/// The ε₁ of each search trial in the journal, by trial number.
fn search_epsilons(study: &Path) -> Vec<String> {
    let mut rdr = csv::Reader::from_path(study.join("trials.csv")).unwrap();
    let h = rdr.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (trial, phase, eps) = (col("trial"), col("phase"), col("eps_1"));
    let mut rows: Vec<(u64, String)> = rdr
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[phase] == "search")
        .map(|r| (r[trial].parse().unwrap(), r[eps].to_string()))
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, e)| e).collect()
}

#[test]
fn solver_and_workers_override_the_config() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("small.toml");
    std::fs::write(&cfg, SMALL).unwrap();
    let study = work.path().join("study");
    ok(&polytune(
        work.path(),
        &[
            "--config",
            s(&cfg),
            "--study-dir",
            s(&study),
            "--solver",
            "random",
            "--workers",
            "2",
        ],
    ));
    // The resolved config the study recorded.
    let resolved = StudyConfig::load(study.join("config.toml")).unwrap();
    assert_eq!(resolved.search.solver.to_string(), "random");
    assert_eq!(resolved.study.workers, 2);
    // The tuned TOML's provenance.
    let tuned: toml::Table =
        toml::from_str(&std::fs::read_to_string(study.join("tuned.toml")).unwrap()).unwrap();
    assert_eq!(tuned["provenance"]["solver"].as_str(), Some("random"));

    // The points are the random solver's: the same as an in-process study
    // whose config asks for it (random search ignores the costs).
    let mut want_cfg = StudyConfig::from_toml_str(
        &SMALL.replace("\"nelder-mead\"", "\"random\""),
        "random.toml",
    )
    .unwrap();
    want_cfg.study.workers = 2;
    let twin = work.path().join("twin");
    run_study_blocking(want_cfg, options(&twin), Arc::new(FnRunner::new(analytic))).unwrap();
    let (got, want) = (search_epsilons(&study), search_epsilons(&twin));
    assert_eq!(got.len(), 3);
    assert_eq!(got, want);
    // … and not Nelder–Mead's (the config's solver).
    let nm = work.path().join("nm");
    run_study_blocking(
        StudyConfig::from_toml_str(SMALL, "nm.toml").unwrap(),
        options(&nm),
        Arc::new(FnRunner::new(analytic)),
    )
    .unwrap();
    assert_ne!(got, search_epsilons(&nm));
}

/// `(dtype, shape, bytes)` of every tensor of a safetensors file.
type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn read_safetensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/weights")
        .join(name)
}

/// Runs the conversion script on the committed checkpoint into `dst`;
/// `None` (after saying why) when python3 is missing outside CI.
fn convert_checkpoint(dst: &Path) -> Option<()> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/torchvision_to_safetensors.py");
    let run = Command::new("python3")
        .arg(&script)
        .arg(fixture("checkpoint.pth"))
        .arg(dst)
        .output();
    let o = match run {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = "python3 is not on PATH: the conversion script cannot run";
            assert!(!in_ci(), "{why}; CI=true, so this check may not be skipped");
            eprintln!("SKIPPED weights_converted_by_the_script_load_with_weights: {why}");
            return None;
        }
        Err(e) => panic!("cannot run python3: {e}"),
    };
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    Some(())
}

#[test]
fn weights_converted_by_the_script_load_with_weights() {
    let work = tempfile::tempdir().unwrap();
    let converted = work.path().join("converted.safetensors");
    if convert_checkpoint(&converted).is_none() {
        return;
    }
    // The script (no torch) gives exactly what torch's writer gave: names
    // without `module.`, dtypes kept, strided and offset views in logical
    // order.
    let got = read_safetensors(&converted);
    let want = read_safetensors(&fixture("expected.safetensors"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want {
        assert_eq!(&got[k], w, "{k}");
    }
    assert_eq!(got["fc.bias"].0, "F16");
    assert_eq!(got["layer1.0.bn2.bias"].0, "BF16");
    assert_eq!(got["bn1.num_batches_tracked"].0, "I64");

    // `train --weights`: a frozen-only fine-tune leaves the body's
    // convolutions exactly as loaded; without the weights they differ.
    let cfg = work.path().join("frozen.toml");
    std::fs::write(
        &cfg,
        SMALL.replace("epochs = 1\nbase_lr", "epochs = 0\nbase_lr"),
    )
    .unwrap();
    let (with, without) = (
        work.path().join("with.safetensors"),
        work.path().join("without.safetensors"),
    );
    let base = ["train", "--config", s(&cfg), "--seed", "3"];
    ok(&polytune(
        work.path(),
        &[&base[..], &["--weights", s(&converted), "--save", s(&with)]].concat(),
    ));
    ok(&polytune(
        work.path(),
        &[&base[..], &["--save", s(&without)]].concat(),
    ));
    let (with, without) = (read_safetensors(&with), read_safetensors(&without));
    for k in [
        "conv1.weight",
        "layer1.0.conv2.weight",
        "layer2.0.downsample.0.weight",
    ] {
        assert_eq!(with[k], want[k], "{k}: loaded from --weights");
        assert_ne!(without[k].2, want[k].2, "{k}: without --weights");
    }

    // A missing file is an error that names it.
    let o = polytune(
        work.path(),
        &[&base[..], &["--weights", "nowhere.safetensors"]].concat(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("nowhere.safetensors"),
        "{}",
        text(&o.stderr)
    );
}

/// `device = "cuda"` (`--device cuda`) runs worker k's trials on GPU k and
/// `cuda:N` pins GPU N whatever the worker, as `run_trial` resolves a
/// spec's worker slot (set by the pool, see the orchestrator's tests). Seen
/// without a GPU: the error names the device the trial tried to open
/// (ordinals above any machine's GPU count). Needs a `--features cuda`
/// build: CI type-checks it, `scripts/gpu-check.sh`'s build runs it.
#[cfg(feature = "cuda")]
#[test]
fn worker_k_trains_on_gpu_k() {
    use polytune::trial::run_trial;
    use polytune::trial::{TrialPhase, TrialSpec};
    let spec = |device: &str, worker: Option<usize>| TrialSpec {
        trial: 0,
        phase: TrialPhase::Search,
        epsilon: vec![2.0],
        seed: 0,
        train: toml::from_str(&format!(
            "model = \"small-resnet\"\nepochs = 1\ndevice = \"{device}\""
        ))
        .unwrap(),
        data: toml::from_str("source = \"digits\"").unwrap(),
        worker,
    };
    let err = |device: &str, worker| match run_trial(&spec(device, worker), None) {
        Ok(_) => panic!("{device} with worker {worker:?} opened a GPU"),
        Err(e) => e.to_string(),
    };
    for (device, worker, want) in [
        ("cuda", Some(61), 61),
        ("cuda", Some(62), 62),
        ("cuda:63", Some(61), 63),
    ] {
        let e = err(device, worker);
        assert!(
            e.contains(&format!("cannot open CUDA device {want}:")),
            "{device}, worker {worker:?}: {e}"
        );
    }
}
