//! End to end through the real `polytune` binary on the embedded digits set
//! (small configs: 1 frozen + 1 unfrozen epoch per trial, budget 4):
//!
//! - a search writes the tuned TOML (study dir and `--out`), which loads as
//!   `PolyLoss<1>` with the recommended ε (a finished search trial's) and a
//!   verdict that matches the confirmation rows of `trials.csv`;
//! - SIGKILLed at seeded random points and rerun, it ends with the journal
//!   and the result of the uninterrupted run; a rerun with another seed is
//!   refused;
//! - trials whose training diverges to NaN are journaled as failed and the
//!   study still finishes;
//! - `polytune train` prints the metrics and writes one CSV row per epoch;
//! - bad configs give errors naming the file and the key.
//!
//! Every command runs in a temporary working directory, so the image and
//! feature caches (`.polytune-cache`) stay there.

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{journal_rows, tuned_core};

const BIN: &str = env!("CARGO_BIN_EXE_polytune");

/// A quick study on the digits: 1 + 1 epochs per trial, two confirmation seeds.
const SMALL: &str = r#"
[study]
budget = 20
seed = 0
confirm_seeds = 2
workers = 1

[search]
solver = "bayes"
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

/// A working directory with `name` holding `text`.
fn workdir(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join(name);
    std::fs::write(&cfg, text).unwrap();
    (dir, cfg)
}

fn polytune(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    polytune(cwd, args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `--config CFG --study-dir STUDY --budget 4` (and `extra`).
fn search_args<'a>(cfg: &'a str, study: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--config", cfg, "--study-dir", study, "--budget", "4"];
    v.extend_from_slice(extra);
    v
}

/// One journal row, by column name.
struct Row(std::collections::HashMap<String, String>);

impl Row {
    fn get(&self, k: &str) -> &str {
        &self.0[k]
    }
    fn f64(&self, k: &str) -> f64 {
        self.get(k).parse().unwrap()
    }
}

fn rows(study: &Path) -> Vec<Row> {
    let mut rdr = csv::Reader::from_path(study.join("trials.csv")).unwrap();
    let headers: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    rdr.records()
        .map(|r| {
            Row(headers
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(String::from))
                .collect())
        })
        .collect()
}

/// Rows in a journal (0 when there is none yet).
fn journal_rows_or_none(study: &Path) -> usize {
    std::fs::read_to_string(study.join("trials.csv"))
        .map(|t| t.lines().skip(1).filter(|l| !l.is_empty()).count())
        .unwrap_or(0)
}

/// The best finished search trial: highest accuracy, then lowest loss.
fn best_finished(rows: &[Row]) -> &Row {
    rows.iter()
        .filter(|r| r.get("phase") == "search" && r.get("state") == "finished")
        .min_by(|a, b| {
            b.f64("val_accuracy")
                .total_cmp(&a.f64("val_accuracy"))
                .then(a.f64("val_loss").total_cmp(&b.f64("val_loss")))
        })
        .expect("a finished search trial")
}

#[test]
fn search_writes_the_best_epsilon_and_resumes_after_sigkill_to_the_same_result() {
    let (work, cfg) = workdir("small.toml", SMALL);
    let cfg_s = cfg.to_str().unwrap();
    let study = work.path().join("study");
    let out = work.path().join("out/tuned.toml");
    let (study_s, out_s) = (study.to_str().unwrap(), out.to_str().unwrap());

    let t = Instant::now();
    let o = run(work.path(), &search_args(cfg_s, study_s, &["--out", out_s]));
    let uninterrupted = t.elapsed();
    assert!(o.status.success(), "{}", text(&o.stderr));
    eprintln!("uninterrupted study: {uninterrupted:.1?}");

    // The journal: trials 0..4 of the search (0 = CE baseline, 1 = the
    // paper's ε = 2, then Sobol points, all on seed 0), then the recommended
    // ε and CE on the confirmation seeds 1000000 and 1000001.
    let all = rows(&study);
    let search: Vec<&Row> = all.iter().filter(|r| r.get("phase") == "search").collect();
    assert_eq!(search.len(), 4);
    assert_eq!((search[0].f64("eps_1"), search[1].f64("eps_1")), (0.0, 2.0));
    assert!(search.iter().all(|r| r.get("state") == "finished"));
    assert!(search
        .iter()
        .all(|r| r.get("epochs") == "2" && r.get("seed") == "0"));
    assert!(search.iter().all(|r| r.f64("val_accuracy") > 0.3));
    let confirm: Vec<&Row> = all.iter().filter(|r| r.get("phase") == "confirm").collect();
    let tuned = poly_loss::PolyConfig::load(study.join("tuned.toml")).unwrap();
    let result = tuned.result.clone().unwrap();
    let searched = tuned.provenance.as_ref().unwrap().extra["searched_epsilon"]
        .as_array()
        .unwrap()[0]
        .as_float()
        .unwrap();
    assert!(search.iter().any(|r| r.f64("eps_1") == searched));
    if searched == 0.0 {
        assert!(confirm.is_empty());
        assert_eq!(result.n_seeds, Some(0));
    } else {
        assert_eq!(confirm.len(), 4);
        let seeds: Vec<&str> = confirm.iter().map(|r| r.get("seed")).collect();
        assert_eq!(seeds, ["1000000", "1000000", "1000001", "1000001"]);
        // The verdict, by hand from the confirmation rows (t(0.975, 1) =
        // 12.706204736174698).
        let d: Vec<f64> = confirm
            .chunks(2)
            .map(|p| {
                assert_eq!((p[0].f64("eps_1"), p[1].f64("eps_1")), (searched, 0.0));
                100.0 * (p[0].f64("val_accuracy") - p[1].f64("val_accuracy"))
            })
            .collect();
        let mean = (d[0] + d[1]) / 2.0;
        let half = 12.706204736174698 * (d[0] - d[1]).abs() / 2f64.sqrt() / 2f64.sqrt();
        assert!((result.difference.unwrap() - mean).abs() < 1e-9);
        assert!((result.ci_low.unwrap() - (mean - half)).abs() < 1e-9);
        assert!((result.ci_high.unwrap() - (mean + half)).abs() < 1e-9);
        assert_eq!(
            result.significant,
            Some(mean - half > 0.0 || mean + half < 0.0)
        );
        assert_eq!(result.n_seeds, Some(2));
    }

    // The tuned TOML (in the study dir and at --out) loads as PolyLoss<1>
    // with the recommended ε (cross-entropy when the verdict says so).
    for path in [study.join("tuned.toml"), out.clone()] {
        let tuned = poly_loss::PolyConfig::load(&path).unwrap();
        let loss = tuned.poly_loss::<1>().unwrap();
        let keep_ce = result.significant == Some(true) && result.difference.unwrap() < 0.0;
        let want = if keep_ce { 0.0 } else { searched };
        assert_eq!(tuned.loss.epsilon, vec![want]);
        assert_eq!(loss.epsilon[0] as f64, want as f32 as f64);
        assert!(tuned.result.unwrap().verdict.unwrap().len() > 20);
    }
    assert_eq!(
        std::fs::read_to_string(study.join("tuned.toml")).unwrap(),
        std::fs::read_to_string(&out).unwrap()
    );
    let summary = std::fs::read_to_string(study.join("summary.txt")).unwrap();
    assert!(summary.contains("verdict: "), "{summary}");

    // The same study, SIGKILLed at seeded random points and rerun each
    // time (KILL_SCHEDULE_SEED replays a schedule).
    let seed: u64 = std::env::var("KILL_SCHEDULE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9);
    let mut x = seed | 1;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    // Its own working directory: no image or feature cache to start from.
    let other_cwd = work.path().join("elsewhere");
    std::fs::create_dir(&other_cwd).unwrap();
    let killed = work.path().join("killed");
    let killed_s = killed.to_str().unwrap();
    // Three kills, each once the journal has grown by 1–2 rows (at most 5
    // of the 8), plus 0–200 ms into the next trial: every kill lands
    // partway, at a seeded point, however busy the machine.
    let mut kills = Vec::new();
    let mut partway = 0;
    loop {
        let rows_now = journal_rows_or_none(&killed);
        let plan = (kills.len() < 3).then(|| {
            let rows = (rows_now + 1 + rand(2) as usize).min(5);
            (rows, Duration::from_millis(rand(200)))
        });
        let mut child = polytune(&other_cwd, &search_args(cfg_s, killed_s, &[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reached: Option<Instant> = None;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if let Some((rows, extra)) = plan {
                if reached.is_none() && journal_rows_or_none(&killed) >= rows {
                    reached = Some(Instant::now());
                }
                if reached.is_some_and(|t| t.elapsed() >= extra) {
                    // SAFETY: kill(2) on the pid of our own child.
                    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
                    let s = child.wait().unwrap();
                    let done = journal_rows_or_none(&killed);
                    partway +=
                        (s.signal() == Some(libc::SIGKILL) && (1..8).contains(&done)) as usize;
                    kills.push((rows, extra, done));
                    break s;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if status.success() {
            break;
        }
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(kills.len() <= 3);
    }
    eprintln!(
        "kills (after row, + delay, rows then): {kills:?} (xorshift seed {seed}); {partway} partway"
    );
    assert!(
        partway >= 1,
        "no kill landed partway (seed {seed}, {kills:?})"
    );
    assert_eq!(journal_rows(&killed), journal_rows(&study), "seed {seed}");
    assert_eq!(
        tuned_core(&killed.join("tuned.toml")),
        tuned_core(&study.join("tuned.toml")),
        "seed {seed}"
    );

    // A rerun with another (fingerprinted) setting is refused, naming the
    // directory and the key, and changes nothing.
    let journal = std::fs::read(study.join("trials.csv")).unwrap();
    let o = run(work.path(), &search_args(cfg_s, study_s, &["--seed", "7"]));
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains(&format!("{study_s} holds a study made with config {cfg_s}"))
            && e.contains("study.seed: 0 vs 7"),
        "{e}"
    );
    assert_eq!(std::fs::read(study.join("trials.csv")).unwrap(), journal);
}

/// With base_lr = 1000, 1 + 1 epochs train to finite (if poor) results for
/// ε ∈ {0, 2}, while ε ≥ 1e36 drives the loss to NaN within two epochs
/// (checked with `polytune train` on seeds 0–2). Random search in
/// ε₁ ∈ [−1, 3e38] evaluates the baseline 0 first (the paper's 2 counts as
/// the same point in a box this wide), then points ~1e37–1e38.
const DIVERGING: &str = r#"
[study]
budget = 4
seed = 0
confirm_seeds = 2
workers = 1

[search]
solver = "random"
lower = [-1.0]
upper = [3e38]

[train]
model = "small-resnet"
freeze_epochs = 1
epochs = 1
base_lr = 1000.0
lr_mult = 2

[data]
source = "digits"
"#;

#[test]
fn trials_that_diverge_to_nan_are_failed_and_the_study_finishes() {
    let (work, cfg) = workdir("diverging.toml", DIVERGING);
    let study = work.path().join("study");
    let o = run(
        work.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--study-dir",
            study.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let all = rows(&study);
    let search: Vec<&Row> = all.iter().filter(|r| r.get("phase") == "search").collect();
    assert_eq!(search.len(), 4);
    assert_eq!(
        (search[0].get("state"), search[0].f64("eps_1")),
        ("finished", 0.0)
    );
    assert!(search[0].f64("val_loss").is_finite());
    for r in &search[1..] {
        assert!(r.f64("eps_1") > 1e36, "ε = {}", r.get("eps_1"));
        assert_eq!(r.get("state"), "failed");
        assert!(r.get("val_accuracy").is_empty());
        assert!(
            r.get("error")
                .contains("training diverged: the loss is NaN"),
            "{}",
            r.get("error")
        );
        assert!(!r.get("error").contains('\x1b'), "no colour codes");
    }
    let best = best_finished(&all);
    let tuned = poly_loss::PolyConfig::load(study.join("tuned.toml")).unwrap();
    assert_eq!(
        tuned.poly_loss::<1>().unwrap().epsilon[0] as f64,
        best.f64("eps_1")
    );
    assert!(all
        .iter()
        .filter(|r| r.get("phase") != "search")
        .all(|r| r.get("state") == "finished"));
}

#[test]
fn train_prints_metrics_and_writes_one_csv_row_per_epoch() {
    let (work, cfg) = workdir("small.toml", SMALL);
    let metrics = work.path().join("m/metrics.csv");
    let model = work.path().join("model.safetensors");
    let o = run(
        work.path(),
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--epsilon",
            "1.5",
            "--seed",
            "3",
            "--metrics",
            metrics.to_str().unwrap(),
            "--save",
            model.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    let table: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        table[0].split_whitespace().collect::<Vec<_>>(),
        [
            "epoch",
            "phase",
            "train_loss",
            "val_loss",
            "val_top1",
            "val_top5",
            "seconds"
        ]
    );

    let csv = std::fs::read_to_string(&metrics).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,phase,train_loss,val_loss,val_top1,val_top5,lr,seconds"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    for (i, (row, printed)) in lines[1..].iter().zip(&table[1..3]).enumerate() {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[0], (i + 1).to_string());
        assert_eq!(f[1], ["frozen", "unfrozen"][i]);
        let num = |k: usize| f[k].parse::<f64>().unwrap();
        assert!((0.0..=1.0).contains(&num(4)) && num(5) >= num(4));
        assert!(num(2).is_finite() && num(3) > 0.0 && num(6) > 0.0);
        // The printed table shows the same figures.
        let p: Vec<&str> = printed.split_whitespace().collect();
        assert_eq!((p[0], p[1]), (f[0], f[1]));
        assert_eq!(p[4], format!("{:.4}", num(4)));
    }
    let last: Vec<&str> = lines[2].split(',').collect();
    let top1: f64 = last[4].parse().unwrap();
    assert!(top1 > 0.2, "{top1} (chance is 0.1)");
    assert!(
        stdout.contains(&format!("validation: top-1 {top1:.4}")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("metrics: {}", metrics.display())));
    assert!(model.is_file());
}

#[test]
fn bad_configs_name_the_file_and_the_key() {
    let cases = [
        (
            "[train]\nlearning_rate = 0.1\n",
            "unknown field `learning_rate`",
        ),
        (
            "[train]\nbatch_size = 0\n",
            "key `train.batch_size`: 0 must be at least 1",
        ),
        (
            "[train]\nepochs = -1\n",
            "key `train.epochs`: -1 must not be negative",
        ),
        (
            "[data]\nsource = \"digits\"\nimage_sise = 8\n",
            "image_sise",
        ),
        ("[study]\nbudgte = 3\n", "budgte"),
        ("[search]\nlower = [1.0]\n", "key `search.lower`"),
        (
            "[train]\ndevice = \"gpu\"\n",
            "key `train.device`: \"gpu\" is not a device",
        ),
    ];
    for (toml, want) in cases {
        let (work, cfg) = workdir("bad.toml", toml);
        let cfg_s = cfg.to_str().unwrap();
        for args in [
            vec!["--config", cfg_s, "--budget", "2"],
            vec!["train", "--config", cfg_s],
        ] {
            let o = run(work.path(), &args);
            assert_eq!(o.status.code(), Some(1), "{args:?} {toml}");
            let e = text(&o.stderr);
            assert!(
                e.contains(&format!("error: {cfg_s}: ")) && e.contains(want),
                "{args:?} {toml}: {e}"
            );
            // Nothing was started: no study directory, no cache.
            assert!(!work.path().join("studies").exists(), "{args:?}");
        }
    }
    // --device overrides [train].device, and is checked the same way.
    let work = tempfile::tempdir().unwrap();
    for args in [
        vec!["--device", "tpu", "--budget", "2"],
        vec!["train", "--device", "tpu"],
    ] {
        let o = run(work.path(), &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = text(&o.stderr);
        assert!(
            e.contains("key `train.device`: \"tpu\" is not a device"),
            "{args:?}: {e}"
        );
        assert!(!work.path().join("studies").exists(), "{args:?}");
    }
    if !cfg!(feature = "cuda") {
        let o = run(work.path(), &["train", "--device", "cuda"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o.stderr).contains("needs polytune built with CUDA"),
            "{}",
            text(&o.stderr)
        );
    }
    let missing = work.path().join("nope.toml");
    let o = run(work.path(), &["--config", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains(missing.to_str().unwrap()));
}
