//! ResNet-50 on the CPU, side by side with PyTorch (same thread count).
//!
//! ```text
//! cargo bench --bench resnet                               # all cases
//! RESNET_BENCH_CASES=train64 RESNET_BENCH_ITERS=5 cargo bench --bench resnet
//! RESNET_BENCH_NO_TORCH=1 cargo bench --bench resnet       # ours only
//! ```
//!
//! Cases (torchvision ResNet-50, 1000 classes, batch 8, random data):
//! - `train64`: one training step at 3×64×64 — forward with train-mode
//!   batch-norm, mean cross-entropy, backward, SGD update (lr 0.01,
//!   momentum 0.9), gradients kept allocated between steps (as PyTorch's
//!   `.grad`);
//! - `train224`: the same at 3×224×224;
//! - `eval224`: eval-mode forward without a tape at 3×224×224.
//!
//! Every case runs in its own process — ours (this binary re-executed with
//! `RESNET_BENCH_CHILD=<case>`) and PyTorch's
//! (`benches/reference/resnet_torch.py`) — so each process's peak resident
//! set (`VmHWM`) belongs to that case alone. Both sides report the median
//! step time after warm-up, the peak RSS, and the peak minus the RSS before
//! the model was built (`peak_over_base`: the case's own memory, without
//! the Python interpreter and libtorch that PyTorch loads before it starts).
//! Threads: `RESNET_BENCH_THREADS` (default 2) for both rayon and torch.
//! `RESNET_BENCH_ROUNDS` (default 1) repeats each case, alternating PyTorch
//! and ours, and keeps each side's best round (lowest median): on a shared
//! machine the least-disturbed round is the fairest comparison. The table's
//! "min ratio" compares the fastest single steps.
//!
//! Both sides also report the CPU time (user + system, all threads) per
//! step. With one thread (`RESNET_BENCH_THREADS=1`) that is the fairest
//! figure on a busy machine: it does not count time other processes hold
//! the core. With more threads it includes each runtime's spin-waiting.
//!
//! This is a plain `harness = false` binary rather than criterion: a step
//! takes 0.1–2 s, the memory figures need one process per case, and the
//! point is the ratio against PyTorch measured in the same run.

use std::process::Command;
use std::time::Instant;

use dfdx::optim::{Momentum, Sgd, SgdConfig};
use dfdx::prelude::*;
use poly_loss::nn::resnet::{builders, BnMode, ImageClassifier, Images};

const CASES: [&str; 3] = ["train64", "train224", "eval224"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A field of `/proc/self/status` in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// CPU time (user + system, all threads) this process has used, in ms.
fn cpu_ms() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// Runs one case in this process and prints its `key=value` line.
fn child(case: &str) {
    let iters = env_usize("RESNET_BENCH_ITERS", 5);
    let warmup = env_usize("RESNET_BENCH_WARMUP", 2);
    let base = status_mib("VmRSS");
    let dev = Cpu::seed_from_u64(0);
    let size = if case == "train64" { 64 } else { 224 };
    let mut model = dev.build_module::<builders::ResNet50<1000>, f32>();
    let x: Images<Cpu> = dev.sample_normal_like(&(8, Const::<3>, size, size));
    let mut onehot = vec![0.0f32; 8 * 1000];
    for i in 0..8 {
        onehot[i * 1000 + (i * 127) % 1000] = 1.0;
    }
    let y = dev.tensor_from_vec(onehot, (8, Const::<1000>));

    let mut times = Vec::new();
    let mut cpu_start = 0.0;
    match case {
        "train64" | "train224" => {
            let mut opt = Sgd::new(
                &model,
                SgdConfig {
                    lr: 0.01,
                    momentum: Some(Momentum::Classic(0.9)),
                    weight_decay: None,
                },
            );
            let mut grads = Some(model.alloc_grads());
            for i in 0..warmup + iters {
                if i == warmup {
                    cpu_start = cpu_ms();
                }
                let t = Instant::now();
                let mut g = grads.take().expect("gradients");
                model.zero_grads(&mut g);
                let logits = model.forward_logits(x.clone().traced(g), BnMode::Train);
                let loss = cross_entropy_with_logits_loss(logits, y.clone());
                let g = loss.backward();
                opt.update(&mut model, &g)
                    .expect("every parameter has a gradient");
                grads = Some(g);
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        "eval224" => {
            for i in 0..warmup + iters {
                if i == warmup {
                    cpu_start = cpu_ms();
                }
                let t = Instant::now();
                let logits = model.try_forward(x.clone()).expect("forward");
                std::hint::black_box(logits);
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        other => panic!("unknown case {other:?}; cases: {CASES:?}"),
    }
    let cpu_per_step = (cpu_ms() - cpu_start) / iters as f64;
    times.sort_by(f64::total_cmp);
    let peak = status_mib("VmHWM");
    println!(
        "case={case} median_ms={:.2} min_ms={:.2} cpu_ms={cpu_per_step:.2} peak_rss_mib={peak:.1} \
         base_rss_mib={base:.1} peak_over_base_mib={:.1} threads={}",
        times[times.len() / 2],
        times[0],
        peak - base,
        rayon::current_num_threads()
    );
}

/// Parses a `key=value …` line into the numbers we compare.
#[derive(Debug, Default)]
struct Figures {
    median_ms: f64,
    min_ms: f64,
    cpu_ms: f64,
    peak_rss_mib: f64,
    peak_over_base_mib: f64,
}

fn parse(out: &str) -> Option<Figures> {
    let line = out.lines().rev().find(|l| l.starts_with("case="))?;
    let mut f = Figures::default();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        let slot = match k {
            "median_ms" => &mut f.median_ms,
            "min_ms" => &mut f.min_ms,
            "cpu_ms" => &mut f.cpu_ms,
            "peak_rss_mib" => &mut f.peak_rss_mib,
            "peak_over_base_mib" => &mut f.peak_over_base_mib,
            _ => continue,
        };
        *slot = v.parse().ok()?;
    }
    Some(f)
}

fn run(cmd: &mut Command, what: &str) -> Option<Figures> {
    match cmd.output() {
        Ok(out) if out.status.success() => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let f = parse(&stdout);
            if f.is_none() {
                eprintln!("{what}: no result line in {stdout}");
            }
            f
        }
        Ok(out) => {
            eprintln!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
            None
        }
        Err(e) => {
            eprintln!("{what}: cannot start: {e}");
            None
        }
    }
}

fn main() {
    if let Ok(case) = std::env::var("RESNET_BENCH_CHILD") {
        child(&case);
        return;
    }
    let threads = env_usize("RESNET_BENCH_THREADS", 2);
    let cases: Vec<String> = std::env::var("RESNET_BENCH_CASES")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| CASES.iter().map(|s| s.to_string()).collect());
    let torch = std::env::var_os("RESNET_BENCH_NO_TORCH").is_none();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/reference/resnet_torch.py"
    );
    let exe = std::env::current_exe().expect("current exe");

    let rounds = env_usize("RESNET_BENCH_ROUNDS", 1).max(1);
    println!("threads {threads}, best of {rounds} round(s) per side");
    println!(
        "| case | ours median ms | torch median ms | time ratio (min ratio) | CPU ms/step ours / torch (ratio) | ours peak MiB (over base) | torch peak MiB (over base) | memory ratio (over base) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let best = |a: Option<Figures>, b: Option<Figures>| match (a, b) {
        (Some(a), Some(b)) => Some(if b.median_ms < a.median_ms { b } else { a }),
        (a, b) => a.or(b),
    };
    for case in &cases {
        let default_iters = if case == "train224" { 3 } else { 5 };
        let iters = env_usize("RESNET_BENCH_ITERS", default_iters).to_string();
        let (mut torch_fig, mut ours) = (None, None);
        for _ in 0..rounds {
            if torch {
                let t = run(
                    Command::new("python3")
                        .arg(script)
                        .args(["--case", case, "--iters", &iters, "--threads"])
                        .arg(threads.to_string()),
                    &format!("torch {case}"),
                );
                torch_fig = best(torch_fig, t);
            }
            let o = run(
                Command::new(&exe)
                    .env("RESNET_BENCH_CHILD", case)
                    .env("RESNET_BENCH_ITERS", &iters)
                    .env("RAYON_NUM_THREADS", threads.to_string()),
                &format!("ours {case}"),
            );
            ours = best(ours, o);
        }
        let fmt = |f: &Option<Figures>| match f {
            Some(f) => (
                format!("{:.1} (min {:.1})", f.median_ms, f.min_ms),
                format!("{:.0} ({:.0})", f.peak_rss_mib, f.peak_over_base_mib),
            ),
            None => ("-".into(), "-".into()),
        };
        let ((ot, om), (tt, tm)) = (fmt(&ours), fmt(&torch_fig));
        let (rt, rc, rm) = match (&ours, &torch_fig) {
            (Some(o), Some(t)) => (
                format!(
                    "{:.2}× ({:.2}×)",
                    o.median_ms / t.median_ms,
                    o.min_ms / t.min_ms
                ),
                format!(
                    "{:.0} / {:.0} ({:.2}×)",
                    o.cpu_ms,
                    t.cpu_ms,
                    o.cpu_ms / t.cpu_ms
                ),
                format!(
                    "{:.2}× ({:.2}×)",
                    o.peak_rss_mib / t.peak_rss_mib,
                    o.peak_over_base_mib / t.peak_over_base_mib
                ),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        println!("| {case} | {ot} | {tt} | {rt} | {rc} | {om} | {tm} | {rm} |");
    }
}
