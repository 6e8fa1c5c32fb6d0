//! The main job until `polytune` exists: train a small dfdx MLP on the UCI
//! digits set once with cross-entropy and once with Poly-1 (ε = 2), and print
//! the validation metrics side by side.
//!
//! `cargo run --release --example train_digits [epochs] [seeds]`

#[path = "support/digits.rs"]
mod digits;

use digits::{load, train, Loss};

fn main() {
    let mut args = std::env::args().skip(1);
    let epochs: usize = args
        .next()
        .map_or(30, |a| a.parse().expect("epochs: a number"));
    let seeds: u64 = args
        .next()
        .map_or(3, |a| a.parse().expect("seeds: a number"));
    let data = load(0);
    println!(
        "UCI digits: {} train / {} validation, MLP 64-128-10, Adam 1e-3, batch 64, {epochs} epochs, {seeds} seeds",
        data.train_y.len(),
        data.val_y.len()
    );
    println!(
        "{:<16} {:>6} {:>14} {:>10} {:>8}",
        "loss", "seed", "final train", "val CE", "val acc"
    );
    let mut summary = Vec::new();
    for (name, loss) in [
        ("cross-entropy", Loss::CrossEntropy),
        ("poly-1 (eps=2)", Loss::Poly1(2.0)),
    ] {
        let mut accs = Vec::new();
        for seed in 0..seeds {
            let t0 = std::time::Instant::now();
            let (hist, m) = train(&data, loss, epochs, seed);
            println!(
                "{name:<16} {seed:>6} {:>14.4} {:>10.4} {:>7.2}%   ({:.2} s)",
                hist.last().copied().unwrap_or(f32::NAN),
                m.val_ce,
                100.0 * m.val_acc,
                t0.elapsed().as_secs_f32()
            );
            accs.push(m.val_acc as f64);
        }
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
        summary.push((name, mean, std));
    }
    println!();
    for (name, mean, std) in summary {
        println!(
            "{name:<16} val top-1 accuracy {:.2}% ± {:.2}",
            100.0 * mean,
            100.0 * std
        );
    }
}
