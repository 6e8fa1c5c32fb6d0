//! polytune against a hostile or careless user (issue 11): one test per
//! attack, each failing on the code before the fix.
//!
//! - item 1: temp files never follow a planted symlink;
//! - item 2: outputs never overwrite inputs or study files;
//! - item 3: a changed weights or data file is a foreign study;
//! - item 5: no panics on values that pass clap or the config parser;
//! - item 6: numeric config values are range-checked;
//! - item 8: deleting `.lock` does not let a second process in;
//! - item 9: the plot is written atomically;
//! - item 10: a flipped byte in the pixel cache rebuilds it;
//! - item 11: a PNG declaring 16000×16000 pixels is refused from its header;
//! - item 12: weights with NaN are refused naming the tensor;
//! - item 13: causes printed once, ranges in messages, SIGTERM exits 143.

use crate::common;
use crate::hardening_support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{analytic, config, options};
use hardening_support::*;
use polytune::data::decode::decode_rgb;
use polytune::data::{DataConfig, Dataset, Origin, SourceKind};
use polytune::fs::write_atomic;
use polytune::study::{run_study_blocking, StudyConfig, StudyDir, StudyError, FINGERPRINT_VERSION};
use polytune::train::{check_weights, TrainConfig};

const ANALYTIC: &str = "[study]\nbudget = 3\nconfirm_seeds = 2\n";

// ---------------------------------------------------------------- item 1

#[test]
fn atomic_writes_never_follow_a_symlink_planted_at_the_temp_or_final_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let victim = d.join("victim.txt");
    let victim2 = d.join("victim2.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::write(&victim2, "precious too").unwrap();
    let out = d.join("shared");
    std::fs::create_dir(&out).unwrap();
    let pid = std::process::id();
    for name in ["tuned.toml", "summary.txt"] {
        // The exact temporary name the writers used (`.NAME.<pid>.tmp`).
        std::os::unix::fs::symlink(&victim, out.join(format!(".{name}.{pid}.tmp"))).unwrap();
    }
    // A symlink at the final name too: replaced, never written through.
    std::os::unix::fs::symlink(&victim2, out.join("tuned.toml")).unwrap();

    let tuned =
        poly_loss::PolyConfig::from_toml_str("[loss]\nterms = 1\nepsilon = [2.0]\n").unwrap();
    tuned.save(out.join("tuned.toml")).unwrap();
    write_atomic(&out.join("summary.txt"), b"summary\n").unwrap();

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(std::fs::read_to_string(&victim2).unwrap(), "precious too");
    let meta = std::fs::symlink_metadata(out.join("tuned.toml")).unwrap();
    assert!(meta.file_type().is_file(), "tuned.toml is still a symlink");
    let back = poly_loss::PolyConfig::load(out.join("tuned.toml")).unwrap();
    assert_eq!(back.loss.epsilon, vec![2.0]);
    assert_eq!(
        std::fs::read_to_string(out.join("summary.txt")).unwrap(),
        "summary\n"
    );
    // Only the planted links are left besides the outputs: no stray temp files.
    assert_eq!(
        names_starting(&out, "."),
        vec![
            format!(".summary.txt.{pid}.tmp"),
            format!(".tuned.toml.{pid}.tmp")
        ]
    );
}

// ---------------------------------------------------------------- item 2

#[test]
fn out_equal_to_the_config_or_a_study_file_is_refused_before_any_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("self.toml");
    let cfg_text = format!("# my config, with comments\n{ANALYTIC}");
    std::fs::write(&cfg_path, &cfg_text).unwrap();
    let study = tmp.path().join("study");

    // --config self.toml --out self.toml (also through another spelling).
    for out in [cfg_path.clone(), tmp.path().join("study/../self.toml")] {
        let (runner, ran) = counting_runner(analytic);
        let mut opts = options(&study);
        opts.config_source = cfg_path.display().to_string();
        opts.out = Some(out.clone());
        let err = run_study_blocking(config(ANALYTIC), opts, runner).unwrap_err();
        assert!(matches!(err, StudyError::Output { .. }), "{err}");
        assert!(err.to_string().contains("the study config"), "{err}");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a trial ran first");
        assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), cfg_text);
    }

    // --out study/trials.csv on an existing study: the journal survives.
    let (runner, _) = counting_runner(analytic);
    run_study_blocking(config(ANALYTIC), options(&study), runner).unwrap();
    let journal = std::fs::read_to_string(study.join("trials.csv")).unwrap();
    for name in ["trials.csv", "config.toml", "study.toml"] {
        let (runner, ran) = counting_runner(analytic);
        let mut opts = options(&study);
        opts.out = Some(study.join(name));
        let err = run_study_blocking(config(ANALYTIC), opts, runner).unwrap_err();
        assert!(matches!(err, StudyError::Output { .. }), "{name}: {err}");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
    assert_eq!(
        std::fs::read_to_string(study.join("trials.csv")).unwrap(),
        journal
    );
    // A hard link to the journal elsewhere is the journal too.
    let link = tmp.path().join("copy.csv");
    std::fs::hard_link(study.join("trials.csv"), &link).unwrap();
    let (runner, _) = counting_runner(analytic);
    let mut opts = options(&study);
    opts.out = Some(link);
    let err = run_study_blocking(config(ANALYTIC), opts, runner).unwrap_err();
    assert!(err.to_string().contains("the study's journal"), "{err}");
}

#[test]
fn a_directory_with_foreign_files_is_not_taken_over_as_a_study() {
    let tmp = tempfile::tempdir().unwrap();
    let user_cfg = format!("# the user's own config\n{ANALYTIC}");
    std::fs::write(tmp.path().join("config.toml"), &user_cfg).unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    // `--study-dir .` with the user's config.toml in it.
    let (runner, ran) = counting_runner(analytic);
    let err = run_study_blocking(config(ANALYTIC), options(tmp.path()), runner).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("config.toml, notes.txt but no study.toml") && msg.contains("--study-dir"),
        "{msg}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("config.toml")).unwrap(),
        user_cfg
    );
    assert!(!tmp.path().join("trials.csv").exists());
}

#[test]
fn train_refuses_to_save_over_its_config() {
    let (dir, cfg) = workdir("small.toml", SMALL);
    let before = std::fs::read_to_string(&cfg).unwrap();
    let c = cfg.to_str().unwrap();
    for flag in ["--save", "--metrics"] {
        let out = run(dir.path(), &["train", "--config", c, flag, c]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{flag} {c} is the config: refusing")),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before);
}

// ---------------------------------------------------------------- item 3

#[test]
fn a_replaced_weights_or_label_file_is_a_foreign_study_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w.safetensors");
    std::fs::write(&w, b"weights v1").unwrap();
    // A CSV source: the manifest is hashed by content, the images by name and size.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("img")).unwrap();
    for k in 0..4 {
        std::fs::write(data.join(format!("img/{k}.png")), vec![k as u8; 10 + k]).unwrap();
    }
    let manifest = data.join("labels.csv");
    let csv = "ImgPath,ImgLabel,SetType\nimg/0.png,a,train\nimg/1.png,b,train\nimg/2.png,a,valid\nimg/3.png,b,valid\n";
    std::fs::write(&manifest, csv).unwrap();
    let text = format!(
        "{ANALYTIC}[train]\nweights = {:?}\n[data]\nsource = \"csv\"\npath = {:?}\n",
        w.display().to_string(),
        manifest.display().to_string()
    );
    let study = tmp.path().join("study");
    let (runner, _) = counting_runner(analytic);
    run_study_blocking(config(&text), options(&study), runner).unwrap();

    // Same paths, new weights: refused, naming the weights file.
    std::fs::write(&w, b"weights v2").unwrap();
    let (runner, ran) = counting_runner(analytic);
    let err = run_study_blocking(config(&text), options(&study), runner).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StudyError::ForeignStudy { .. }), "{msg}");
    assert!(
        msg.contains(&format!("train.weights {}: content changed", w.display())),
        "{msg}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    std::fs::write(&w, b"weights v1").unwrap();

    // A relabelled image (same files): refused, naming the manifest.
    std::fs::write(&manifest, csv.replace("img/3.png,b", "img/3.png,a")).unwrap();
    let (runner, _) = counting_runner(analytic);
    let msg = run_study_blocking(config(&text), options(&study), runner)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!(
            "data index {}: content changed",
            manifest.display()
        )),
        "{msg}"
    );
    std::fs::write(&manifest, csv).unwrap();

    // An image of another size under the same name: the image manifest.
    std::fs::write(data.join("img/2.png"), vec![0u8; 99]).unwrap();
    let (runner, _) = counting_runner(analytic);
    let msg = run_study_blocking(config(&text), options(&study), runner)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!(
            "data images {}: content changed",
            manifest.display()
        )),
        "{msg}"
    );
    std::fs::write(data.join("img/2.png"), vec![2u8; 12]).unwrap();

    // Everything as it was: the study resumes from its journal.
    let (runner, ran) = counting_runner(analytic);
    let r = run_study_blocking(config(&text), options(&study), runner).unwrap();
    // 3 search trials and 2 × 2 confirmation runs, all from the journal.
    assert_eq!((r.replayed, ran.load(Ordering::SeqCst)), (7, 0));

    // A study recorded by an older polytune — with the previous fingerprint
    // version (whose searches drew from other random streams, so its
    // journal would not replay), or with none at all — is refused cleanly,
    // naming the directory and both versions, rather than resumed; and no
    // trial runs.
    let meta = std::fs::read_to_string(study.join("study.toml")).unwrap();
    let current = format!("fingerprint_version = {FINGERPRINT_VERSION}");
    assert!(meta.lines().any(|l| l == current), "{meta}");
    let previous = FINGERPRINT_VERSION - 1;
    for (version_line, old_version) in [
        (Some(format!("fingerprint_version = {previous}")), previous),
        (None, 0),
    ] {
        let old: String = meta
            .lines()
            .filter_map(|l| {
                if l.starts_with("fingerprint_version") {
                    version_line.clone()
                } else {
                    Some(l.to_string())
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(study.join("study.toml"), old).unwrap();
        let (runner, ran) = counting_runner(analytic);
        let msg = run_study_blocking(config(&text), options(&study), runner)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(&study.display().to_string())
                && msg.contains(&format!(
                    "with fingerprint version {old_version} (this one uses {FINGERPRINT_VERSION})"
                ))
                && msg.contains("not a study directory of this polytune"),
            "{msg}"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}

// ---------------------------------------------------------------- item 5

#[test]
fn huge_seed_budget_and_timeouts_are_errors_not_panics() {
    let (dir, cfg) = workdir("small.toml", SMALL);
    let cfg = cfg.to_str().unwrap();
    for (flag, value) in [
        ("--seed", "9223372036854775808"),
        ("--budget", "9223372036854775808"),
        ("--budget", "18446744073709551615"),
        ("--workers", "2000"),
    ] {
        let out = run(dir.path(), &["--config", cfg, flag, value]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && !err.contains("panicked"), "{err}");
    }
    for key in ["trial_timeout_s", "interrupt_grace_s"] {
        let body = SMALL.replace(
            "interrupt_grace_s = 0",
            &if key == "interrupt_grace_s" {
                format!("{key} = 1e20")
            } else {
                format!("interrupt_grace_s = 0\n{key} = 1e20")
            },
        );
        let (d, c) = workdir("t.toml", &body);
        let out = run(d.path(), &["--config", c.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {err}");
        assert!(
            err.contains(&format!("key `study.{key}`: 100000000000000000000 must be")),
            "{err}"
        );
        assert!(!d.path().join("studies").exists(), "{key}: a study started");
    }
}

#[test]
fn a_closed_stdout_after_the_study_finished_is_not_a_panic() {
    let (dir, cfg) = workdir("small.toml", &SMALL.replace("budget = 2", "budget = 1"));
    let mut child = polytune(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "--study-dir", "s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    drop(child.stdout.take()); // `polytune … | true`
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(dir.path().join("s/tuned.toml").is_file());
}

// ---------------------------------------------------------------- item 6

#[test]
fn every_size_from_the_config_is_range_checked_naming_the_key() {
    let cases = [
        (
            "[study]\nbudget = 9223372036854775807\n",
            "study.budget",
            "1..=1000000",
        ),
        (
            "[study]\nseed = 9223372036854775807\n",
            "study.seed",
            "0..=9007199254740992",
        ),
        (
            "[study]\nworkers = 2000\n",
            "study.workers",
            "2000 must be in 1..=1024",
        ),
        (
            "[study]\nconfirm_seeds = 5000\n",
            "study.confirm_seeds",
            "5000 must be in 2..=100",
        ),
        (
            "[search]\nsolver = \"random\"\n[search.random]\nbatch = 100000000000\n",
            "search.random.batch",
            "1..=1000",
        ),
        (
            "[search.particle_swarm]\nparticles = 100000000000\n",
            "search.particle_swarm.particles",
            "2..=1000",
        ),
        (
            "[search]\nupper = [1e300]\n",
            "search.upper",
            "1e300 must be in [-3.4028235e38, 3.4028235e38]",
        ),
        (
            "[search.nelder_mead]\ninitial_step = 1e300\n",
            "search.nelder_mead.initial_step",
            "(0, 3.4028235e38]",
        ),
    ];
    for (text, key, range) in cases {
        let e = StudyConfig::from_toml_str(text, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("key `{key}`")) && e.contains(range),
            "{text}: {e}"
        );
    }
    let train = [
        ("views = 100000000000", "train.views", "1..=256"),
        ("batch_size = 100000000000", "train.batch_size", "1..=65536"),
        (
            "eval_batch_size = 100000000",
            "train.eval_batch_size",
            "1..=65536",
        ),
    ];
    for (text, key, range) in train {
        let t: toml::Table = toml::from_str(text).unwrap();
        let e = TrainConfig::from_table(&t, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("key `{key}`")) && e.contains(range),
            "{text}: {e}"
        );
    }
    // The default views (freeze_epochs) is capped as well.
    let t: toml::Table = toml::from_str("freeze_epochs = 100000").unwrap();
    assert_eq!(
        TrainConfig::from_table(&t, "c").unwrap().feature_views(),
        256
    );
    // The digits are held in memory: 1024 px would be 5.6 GB.
    for (text, key) in [
        ("image_size = 1024", "data.image_size"),
        ("threads = 100000000", "data.threads"),
    ] {
        let e = DataConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
    // One batch of 4096² images would need 12 GiB.
    let (dir, cfg) = workdir(
        "big.toml",
        &SMALL
            .replace(
                "source = \"digits\"",
                "source = \"digits\"\nimage_size = 256",
            )
            .replace("lr_mult = 2", "lr_mult = 2\neval_batch_size = 8192"),
    );
    let out = run(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "key `train.eval_batch_size`: 8192 images at data.image_size = 256 need 6.0 GiB"
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------- item 8

#[test]
fn deleting_the_lock_file_does_not_let_a_second_process_in() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(ANALYTIC);
    let first = StudyDir::open(tmp.path(), &cfg, "a.toml").unwrap();
    std::fs::remove_file(tmp.path().join(".lock")).unwrap();
    let second = StudyDir::open(tmp.path(), &cfg, "a.toml");
    assert!(
        matches!(second, Err(StudyError::Locked { .. })),
        "{second:?}"
    );
    drop(first);
    StudyDir::open(tmp.path(), &cfg, "a.toml").unwrap();
}

// ---------------------------------------------------------------- item 9

#[test]
fn the_plot_is_replaced_atomically_not_rewritten_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let (runner, _) = counting_runner(analytic);
    run_study_blocking(config(ANALYTIC), options(tmp.path()), runner).unwrap();
    // plot.svg shares its inode with a file the user keeps: an in-place
    // write (truncate, write) would change that file as well.
    let keep = tmp.path().join("keep.svg");
    std::fs::write(&keep, "<svg>previous</svg>").unwrap();
    let plot = tmp.path().join("plot.svg");
    std::fs::remove_file(&plot).unwrap();
    std::fs::hard_link(&keep, &plot).unwrap();
    let mut opts = options(tmp.path());
    opts.plot = true;
    let (runner, _) = counting_runner(analytic);
    run_study_blocking(config(ANALYTIC), opts, runner).unwrap();
    assert_eq!(
        std::fs::read_to_string(&keep).unwrap(),
        "<svg>previous</svg>"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("model mean"),
        "{svg}"
    );
    assert_ne!(
        std::fs::metadata(&keep).unwrap().ino(),
        std::fs::metadata(&plot).unwrap().ino()
    );
}

// ---------------------------------------------------------------- item 10

#[test]
fn a_flipped_byte_in_the_pixel_cache_rebuilds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    for (split, class, name, c) in [
        ("train", "a", "1.png", [10u8, 20, 30]),
        ("train", "b", "1.png", [100, 110, 120]),
        ("valid", "a", "1.png", [160, 170, 180]),
        ("valid", "b", "1.png", [190, 200, 210]),
    ] {
        let path = root.join(split).join(class).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(6, 4, image::Rgb(c))
            .save(&path)
            .unwrap();
    }
    let mut cfg = DataConfig::new(SourceKind::Folders, Some(root));
    cfg.image_size = Some(6);
    cfg.cache_dir = tmp.path().join("cache");
    let good = Dataset::load(&cfg).unwrap();
    let pixels = good.train().pixels().to_vec();
    let Origin::Built { path, .. } = good.train().origin().clone() else {
        panic!("not built: {:?}", good.train().origin());
    };
    drop(good);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[64 + 7] ^= 0x40; // a pixel of the first image
    std::fs::write(&path, &bytes).unwrap();
    let again = Dataset::load(&cfg).unwrap();
    assert!(
        matches!(again.train().origin(), Origin::Built { .. }),
        "damaged cache used: {:?}",
        again.train().origin()
    );
    assert_eq!(again.train().pixels(), &pixels[..]);
}

// ---------------------------------------------------------------- item 11

#[test]
fn an_image_declaring_huge_dimensions_is_refused_from_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = tmp.path().join("bomb.png");
    let png = black_gray_png(16000, 16000);
    assert!(png.len() < 400_000, "{} bytes", png.len());
    std::fs::write(&bomb, &png).unwrap();
    let e = decode_rgb(&bomb).unwrap_err().to_string();
    assert!(
        e.contains(&bomb.display().to_string()) && e.contains("16000x16000"),
        "{e}"
    );
    // Just inside the limit still decodes.
    let ok = tmp.path().join("ok.png");
    std::fs::write(&ok, black_gray_png(8192, 2)).unwrap();
    let (rgb, w, h) = decode_rgb(&ok).unwrap();
    assert_eq!((rgb.len(), w, h), (8192 * 2 * 3, 8192, 2));
}

// ---------------------------------------------------------------- item 12

#[test]
fn weights_holding_nan_or_infinity_are_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = small_resnet_tensors();
    let good = tmp.path().join("good.safetensors");
    write_safetensors(&good, &tensors);
    let cfg = |p: &Path| TrainConfig {
        weights: Some(p.to_path_buf()),
        ..TrainConfig::default()
    };
    check_weights(&cfg(&good)).unwrap();
    let k = tensors
        .iter()
        .position(|(n, _, _)| n == "layer1.0.conv1.weight")
        .expect("small-resnet has layer1.0.conv1.weight");
    tensors[k].2[5] = f32::NAN;
    tensors[k].2[7] = f32::INFINITY;
    let bad = tmp.path().join("bad.safetensors");
    write_safetensors(&bad, &tensors);
    let e = check_weights(&cfg(&bad)).unwrap_err().to_string();
    assert!(
        e.contains(&bad.display().to_string())
            && e.contains(
                "`layer1.0.conv1.weight` holds NaN at flat index 5 (2 non-finite value(s))"
            ),
        "{e}"
    );
}

// ---------------------------------------------------------------- item 13

#[test]
fn an_error_cause_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["--config", "."]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
}

#[test]
fn sigterm_exits_143_and_the_study_resumes() {
    let (dir, cfg) = workdir("small.toml", &SMALL.replace("budget = 2", "budget = 6"));
    let cfg = cfg.to_str().unwrap();
    let child = polytune(dir.path(), &["--config", cfg, "--study-dir", "s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let journal = dir.path().join("s/trials.csv");
    let t = Instant::now();
    let rows = || {
        std::fs::read_to_string(&journal)
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0)
    };
    while rows() < 1 && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signals our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(
        (out.status.code(), out.status.signal()),
        (Some(143), None),
        "{err}"
    );
    assert!(
        err.contains("SIGTERM") && err.contains("to resume, run:"),
        "{err}"
    );
}
