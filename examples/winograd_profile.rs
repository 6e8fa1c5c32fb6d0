//! Profiles the CPU Winograd F(4×4, 3×3) convolution at ResNet-50's 3×3
//! shapes (a profiling aid; the benchmark is `cargo bench --bench conv2d`).
//!
//! - `cargo run --release --example winograd_profile` prints the phase
//!   timings (weight, input and output transforms, the 36 GEMMs, and the
//!   whole forward / input-gradient / weight-gradient passes) at batch 8,
//!   one thread, for 64×56², 128×28², 256×14² and 512×7².
//! - `cargo run --release --example winograd_profile -- loop [C] [HW] [iters]`
//!   runs the forward pass in a steady loop (default 64 channels, 56×56,
//!   100 iterations) to attach `perf` to, and prints its mean time.

use poly_loss::nn::ops::conv2d::winograd_profile::{forward_loop, phase_timings};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("loop") {
        let num = |i: usize, default: usize| match args.get(i) {
            None => default,
            Some(s) => s.parse::<usize>().unwrap_or_else(|_| {
                eprintln!(
                    "usage: winograd_profile [loop [C] [HW] [iters]]: {s:?} is not a whole number"
                );
                std::process::exit(2)
            }),
        };
        let (c, hw, iters) = (num(1, 64), num(2, 56), num(3, 100));
        println!("fwd {:.2} ms", forward_loop(c, hw, iters));
        return;
    }
    for (c, hw) in [(64usize, 56usize), (128, 28), (256, 14), (512, 7)] {
        let t = phase_timings(8, c, hw);
        println!(
            "{c}x{hw}x{hw}: U {:.2} in {:.2} gemm {:.2} out {:.2} | fwd {:.2} dgrad {:.2} wgrad {:.2} ms",
            t.weights, t.input, t.gemm, t.output, t.forward, t.backward_input, t.backward_weight
        );
    }
}
