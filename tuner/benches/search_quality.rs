//! Search-quality benchmark: what a study's *answer* is worth, per solver.
//!
//! **Surrogate mode** (`--analytic`, the default when no `--config` is
//! given): every study runs end to end in-process (search at the budget,
//! recommendation, confirmation on `confirm_seeds` fresh seeds, verdict) on
//! an analytic fine-tune with **seed-correlated** noise:
//!
//! ```text
//! acc(ε, s) = curve(ε) + b_s + e(ε, s),   b_s ~ N(0, 1 point) shared by every ε,
//!                                          e ~ N(0, 0.3 points) per (ε, seed, split),
//! ```
//!
//! quantised to one image in 1020 (Flowers-102's validation set). Two
//! curves: `peaked` (0.93 − 0.003 (ε₁ − 3.7)², optimum 3.7) and `flat` (ε
//! has no effect). Reported per solver over the study seeds:
//! - **regret** (peaked): curve(optimum) − curve(returned ε), in points;
//! - **coverage** (peaked): share of studies whose 95 % CI contains the true
//!   difference curve(ε*) − curve(0) (goal ≥ 90 %);
//! - **false positives** (flat): share of studies whose verdict says
//!   significant (goal ≤ 10 %).
//!
//! **Real mode** (`--config FILE`): the study on real trials (child
//! processes), per study seed the recommended ε, the confirmed difference,
//! its CI and the verdict (the regret is unknown there).
//!
//! ```text
//! cargo bench -p polytune --bench search_quality -- --analytic --seeds 20
//! cargo build --release -p polytune
//! cargo bench -p polytune --bench search_quality -- \
//!     --config configs/digits-small-resnet.toml --child "target/release/polytune trial --spec -" \
//!     --seeds 5 --solvers bayes
//! ```
//!
//! Options: `--budget N` (20), `--seeds N` (20 surrogate / 5 real),
//! `--confirm N` (5), `--workers N`, `--solvers a,b,c`
//! (bayes,nelder-mead,random). Study directories go to a temporary
//! directory, never the source tree.

use std::sync::Arc;
use std::time::Instant;

use polytune::orchestrator::{ChildCommand, FnRunner, TrialOutcome, TrialRunner};

use polytune::search::SolverKind;
use polytune::study::{child_runner, run_study_blocking, StudyConfig, StudyOptions, StudyReport};
use polytune::trial::{TrialPhase, TrialResult, TrialSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

struct Args {
    config: Option<String>,
    child: Option<String>,
    budget: u64,
    seeds: Option<u64>,
    confirm: u64,
    workers: Option<usize>,
    solvers: Vec<SolverKind>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        config: None,
        child: std::env::var("POLYTUNE_TRIAL_CMD").ok(),
        budget: 20,
        seeds: None,
        confirm: 5,
        workers: None,
        solvers: vec![
            SolverKind::Bayes,
            SolverKind::NelderMead,
            SolverKind::Random,
        ],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let num = |name: &str, v: String| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match arg.as_str() {
            "--config" => a.config = Some(val("--config")?),
            "--child" => a.child = Some(val("--child")?),
            "--analytic" => a.config = None,
            "--budget" => a.budget = num("--budget", val("--budget")?)?,
            "--seeds" => a.seeds = Some(num("--seeds", val("--seeds")?)?),
            "--confirm" => a.confirm = num("--confirm", val("--confirm")?)?,
            "--workers" => a.workers = Some(num("--workers", val("--workers")?)? as usize),
            "--solvers" => {
                a.solvers = val("--solvers")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--bench" => {} // passed by `cargo bench`
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// A deterministic N(0, 1) draw for a key.
fn normal(key: &[u64]) -> f64 {
    let mut s = 0xcbf2_9ce4_8422_2325u64;
    for k in key {
        s = (s ^ k).wrapping_mul(0x0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(s).sample(StandardNormal)
}

/// The true accuracy curves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Curve {
    Peaked,
    Flat,
}

impl Curve {
    fn at(self, e: &[f64]) -> f64 {
        match self {
            Curve::Peaked => 0.93 - 0.003 * (e[0] - 3.7).powi(2),
            Curve::Flat => 0.93,
        }
    }
    fn optimum(self) -> f64 {
        0.93
    }
}

/// The surrogate fine-tune: curve + seed effect + per-(ε, seed, split) noise.
fn surrogate(curve: Curve, study: u64, spec: &TrialSpec) -> TrialOutcome {
    let e = &spec.epsilon;
    let split = match spec.phase {
        TrialPhase::Search => 1,
        TrialPhase::Confirm => 2,
    };
    let b = 0.01 * normal(&[study, spec.seed]);
    let noise = 0.003 * normal(&[study, spec.seed, e[0].to_bits(), split]);
    let acc = ((curve.at(e) + b + noise).clamp(0.0, 1.0) * 1020.0).round() / 1020.0;
    TrialOutcome::Finished(TrialResult {
        val_accuracy: acc,
        val_loss: 0.3 + 0.02 * (e[0] - 3.7).abs(),
        train_loss: None,
        epochs: None,
        seed: Some(spec.seed),
        duration_s: None,
    })
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

/// `cargo bench` runs this in `tuner/`; relative paths the user gives are
/// meant from the workspace root (where the documented commands run).
fn from_workspace_root(path: &str) -> String {
    let p = std::path::Path::new(path);
    if p.is_absolute() || p.exists() {
        return path.to_string();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join(p).display().to_string()
}

fn run_one(
    cfg: &StudyConfig,
    solver: SolverKind,
    seed: u64,
    args: &Args,
    runner: Arc<dyn TrialRunner>,
    scratch: &std::path::Path,
    tag: &str,
) -> Option<(StudyReport, f64)> {
    let mut cfg = cfg.clone();
    cfg.search.solver = solver;
    cfg.study.seed = seed;
    cfg.study.budget = args.budget;
    cfg.study.confirm_seeds = args.confirm;
    if let Some(w) = args.workers {
        cfg.study.workers = w;
    }
    let dir = scratch.join(format!("{tag}-{solver}-{seed}"));
    let mut opts = StudyOptions::new(&dir);
    opts.progress = false;
    opts.plot = false;
    opts.handle_signals = false;
    opts.config_source = tag.to_string();
    let t = Instant::now();
    match run_study_blocking(cfg, opts, runner) {
        Ok(r) => Some((r, t.elapsed().as_secs_f64())),
        Err(e) => {
            eprintln!("{tag} {solver} seed {seed}: {e}");
            None
        }
    }
}

fn surrogate_mode(args: &Args, scratch: &std::path::Path) {
    let seeds = args.seeds.unwrap_or(20);
    println!(
        "search quality on the surrogate: budget {}, {} confirmation seeds, {seeds} study seeds per solver",
        args.budget, args.confirm
    );
    println!("seed effect sd 1 point, per-trial noise sd 0.3 points, accuracy in steps of 1/1020");
    println!(
        "{:<14} {:>18} {:>9} {:>11} {:>11} {:>10} {:>9}",
        "solver", "regret (points)", "median", "coverage", "false pos.", "s / study", "trials"
    );
    let base = StudyConfig::default();
    for &solver in &args.solvers {
        let (mut regret, mut covered, mut wall, mut fp, mut n_peak, mut n_flat, mut trials) =
            (Vec::new(), 0, Vec::new(), 0, 0, 0, 0usize);
        for curve in [Curve::Peaked, Curve::Flat] {
            for seed in 0..seeds {
                let runner: Arc<dyn TrialRunner> = Arc::new(FnRunner::new(move |s: &TrialSpec| {
                    surrogate(curve, seed, s)
                }));
                let tag = format!("{curve:?}");
                let Some((r, secs)) = run_one(&base, solver, seed, args, runner, scratch, &tag)
                else {
                    continue;
                };
                wall.push(secs);
                trials += r.trials.len() + r.confirm.len();
                let e = &r.recommendation.epsilon;
                let v = &r.verdict;
                match curve {
                    Curve::Peaked => {
                        n_peak += 1;
                        regret.push(100.0 * (curve.optimum() - curve.at(e)));
                        let truth = 100.0 * (curve.at(e) - curve.at(&[0.0]));
                        // A study that recommends ε = 0 states difference 0
                        // exactly, which is the truth there.
                        let inside = if v.n_seeds == 0 {
                            truth == 0.0 && v.difference == 0.0
                        } else {
                            v.ci_low <= truth && truth <= v.ci_high
                        };
                        covered += usize::from(inside);
                    }
                    Curve::Flat => {
                        n_flat += 1;
                        fp += usize::from(v.significant);
                    }
                }
            }
        }
        if regret.is_empty() {
            println!("{:<14} (every study failed)", solver.as_str());
            continue;
        }
        let (rm, rs) = mean_sd(&regret);
        let mut sorted = regret.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let (wm, _) = mean_sd(&wall);
        println!(
            "{:<14} {:>8.3} ± {:<7.3} {:>9.3} {:>5}/{:<5} {:>5}/{:<5} {:>10.2} {:>9.1}",
            solver.as_str(),
            rm,
            rs,
            median,
            covered,
            n_peak,
            fp,
            n_flat,
            wm,
            trials as f64 / wall.len() as f64
        );
    }
}

fn real_mode(args: &Args, path: &str, scratch: &std::path::Path) {
    let seeds = args.seeds.unwrap_or(5);
    let cfg = match StudyConfig::load(from_workspace_root(path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("search_quality: {e}");
            std::process::exit(2);
        }
    };
    let line = args
        .child
        .clone()
        .unwrap_or_else(|| "target/release/polytune trial --spec -".to_string());
    let mut parts = line.split_whitespace();
    let program = from_workspace_root(parts.next().expect("a child command"));
    let runner: Arc<dyn TrialRunner> = Arc::new(child_runner(
        &cfg,
        ChildCommand::new(program, parts.collect::<Vec<_>>()),
    ));
    println!(
        "search quality on {path}: budget {}, {} confirmation seeds, study seeds 0..{seeds}, child trials",
        args.budget, args.confirm
    );
    println!(
        "{:<12} {:>5} {:>12} {:>9} {:>20} {:>8} {:>8}  verdict",
        "solver", "seed", "recommended", "diff", "95 % CI (points)", "signif.", "s"
    );
    for &solver in &args.solvers {
        for seed in 0..seeds {
            let Some((r, secs)) =
                run_one(&cfg, solver, seed, args, runner.clone(), scratch, "real")
            else {
                continue;
            };
            let v = &r.verdict;
            println!(
                "{:<12} {:>5} {:>12} {:>+9.2} {:>20} {:>8} {:>8.1}  {}",
                solver.as_str(),
                seed,
                format!("{:.3?}", r.recommendation.epsilon),
                v.difference,
                format!("[{:+.2}, {:+.2}]", v.ci_low, v.ci_high),
                v.significant,
                secs,
                v.sentence
            );
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("search_quality: {e}");
            std::process::exit(2);
        }
    };
    let scratch = tempfile::tempdir().expect("a temporary directory");
    match args.config.clone() {
        Some(path) => real_mode(&args, &path, scratch.path()),
        None => surrogate_mode(&args, scratch.path()),
    }
}
