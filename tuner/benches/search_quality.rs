//! Search-quality benchmark: Nelder–Mead and particle swarm vs random search.
//!
//! For a study config, runs each solver at a fixed budget over several study
//! seeds (the seed fixes the trainer's init/data order and the solvers'
//! generators) and prints, per solver, the best validation accuracy found
//! (mean ± std over seeds), the CE baseline, the gain, and the wall time.
//!
//! ```text
//! # The real measurement (needs the trainer: a built `polytune` binary):
//! cargo build --release -p polytune
//! cargo bench -p polytune --bench search_quality -- \
//!     --config configs/<study>.toml --child "target/release/polytune trial --spec -"
//! # The harness itself on an analytic, noisy surrogate (no trainer):
//! cargo bench -p polytune --bench search_quality -- --analytic
//! ```
//!
//! Options: `--budget N` (20), `--seeds N` (5), `--workers N` (from the
//! config), `--solvers a,b,c` (nelder-mead,particle-swarm,random).
//! Confirmation re-runs are off here (`rerun_seeds = 0`): the search alone
//! is measured.

use std::sync::Arc;
use std::time::Instant;

use polytune::orchestrator::{
    ChildCommand, FnRunner, TrialOutcome, TrialResult, TrialRunner, TrialSpec,
};
use polytune::search::SolverKind;
use polytune::study::{child_runner, run_study_blocking, StudyConfig, StudyOptions};

struct Args {
    config: Option<String>,
    child: Option<String>,
    analytic: bool,
    budget: u64,
    seeds: u64,
    workers: Option<usize>,
    solvers: Vec<SolverKind>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        config: None,
        child: std::env::var("POLYTUNE_TRIAL_CMD").ok(),
        analytic: false,
        budget: 20,
        seeds: 5,
        workers: None,
        solvers: vec![
            SolverKind::NelderMead,
            SolverKind::ParticleSwarm,
            SolverKind::Random,
        ],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--config" => a.config = Some(val("--config")?),
            "--child" => a.child = Some(val("--child")?),
            "--analytic" => a.analytic = true,
            "--budget" => {
                a.budget = val("--budget")?
                    .parse()
                    .map_err(|e| format!("--budget: {e}"))?
            }
            "--seeds" => {
                a.seeds = val("--seeds")?
                    .parse()
                    .map_err(|e| format!("--seeds: {e}"))?
            }
            "--workers" => {
                a.workers = Some(
                    val("--workers")?
                        .parse()
                        .map_err(|e| format!("--workers: {e}"))?,
                )
            }
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

/// A noisy analytic stand-in for a fine-tune: accuracy peaks at ε₁ = 3.7,
/// is quantised to one image in 1020 (Flowers-102's validation set), and
/// carries seed- and ε-dependent noise of about ±0.3 %.
fn surrogate(spec: &TrialSpec) -> TrialOutcome {
    let e = &spec.epsilon;
    let mut h = spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for x in e {
        h ^= x.to_bits().wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = h.rotate_left(29).wrapping_mul(0x94D0_49BB_1331_11EB);
    }
    let noise = ((h >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.006;
    let mut acc = 0.93 - 0.003 * (e[0] - 3.7).powi(2) + noise;
    for (j, x) in e.iter().enumerate().skip(1) {
        acc -= 0.01 * (x + 0.3 * j as f64).powi(2);
    }
    let acc = ((acc.clamp(0.0, 1.0)) * 1020.0).round() / 1020.0;
    TrialOutcome::Finished(TrialResult {
        val_accuracy: acc,
        val_loss: 0.3 + 0.02 * (e[0] - 3.7).abs() + noise,
        train_loss: 0.1,
        epochs: 1,
        seed: spec.seed,
        duration_s: 0.0,
    })
}

fn mean_std(v: &[f64]) -> (f64, f64) {
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

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("search_quality: {e}");
            std::process::exit(2);
        }
    };
    let (base_cfg, source) = match &args.config {
        Some(p) => match StudyConfig::load(from_workspace_root(p)) {
            Ok(c) => (c, p.clone()),
            Err(e) => {
                eprintln!("search_quality: {e}");
                std::process::exit(2);
            }
        },
        None if args.analytic => (StudyConfig::default(), "<analytic surrogate>".to_string()),
        None => {
            eprintln!("search_quality: give --config <study.toml> (with --child or POLYTUNE_TRIAL_CMD), or --analytic");
            std::process::exit(2);
        }
    };
    let runner: Arc<dyn TrialRunner> = if args.analytic {
        Arc::new(FnRunner::new(surrogate))
    } else {
        let line = args
            .child
            .clone()
            .unwrap_or_else(|| "target/release/polytune trial --spec -".to_string());
        let mut parts = line.split_whitespace();
        let program = from_workspace_root(parts.next().expect("a child command"));
        let cmd = ChildCommand::new(program, parts.collect::<Vec<_>>());
        Arc::new(child_runner(&base_cfg, cmd))
    };
    let scratch = tempfile::tempdir().expect("a temporary directory");
    println!(
        "search quality: {source}, budget {}, {} study seeds, {}",
        args.budget,
        args.seeds,
        if args.analytic {
            "in-process surrogate"
        } else {
            "child trials"
        }
    );
    println!(
        "{:<15} {:>18} {:>10} {:>9} {:>16} {:>7}",
        "solver", "best acc", "baseline", "gain", "wall s / study", "trials"
    );
    for &solver in &args.solvers {
        let (mut best, mut base, mut wall, mut trials) =
            (Vec::new(), Vec::new(), Vec::new(), 0usize);
        for seed in 0..args.seeds {
            let mut cfg = base_cfg.clone();
            cfg.search.solver = solver;
            cfg.study.seed = seed;
            cfg.study.budget = args.budget;
            cfg.study.rerun_seeds = 0;
            if let Some(w) = args.workers {
                cfg.study.workers = w;
            }
            let dir = scratch.path().join(format!("{solver}-{seed}"));
            let mut opts = StudyOptions::new(&dir);
            opts.progress = false;
            opts.plot = false;
            opts.config_source = source.clone();
            let t = Instant::now();
            match run_study_blocking(cfg, opts, runner.clone()) {
                Ok(r) => {
                    wall.push(t.elapsed().as_secs_f64());
                    best.push(r.best().val_accuracy.unwrap_or(f64::NAN));
                    base.push(r.baseline().val_accuracy.unwrap_or(f64::NAN));
                    trials += r.trials.len();
                }
                Err(e) => eprintln!("{solver} seed {seed}: {e}"),
            }
        }
        if best.is_empty() {
            println!("{:<15} (every study failed)", solver.as_str());
            continue;
        }
        let (bm, bs) = mean_std(&best);
        let (cm, _) = mean_std(&base);
        let (wm, ws) = mean_std(&wall);
        println!(
            "{:<15} {:>9.4} ± {:<6.4} {:>10.4} {:>+9.4} {:>8.2} ± {:<5.2} {:>7.1}",
            solver.as_str(),
            bm,
            bs,
            cm,
            bm - cm,
            wm,
            ws,
            trials as f64 / best.len() as f64
        );
    }
}
