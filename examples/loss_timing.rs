//! Splits the fused Poly-1 forward+backward time into its parts at one shape
//! (a profiling aid; the benchmark is `cargo bench --bench poly_loss`).
//!
//! `cargo run --release --example loss_timing [B] [C] [iters] [part]`;
//! `RAYON_NUM_THREADS=1` or `2` picks the thread count. Under
//! `valgrind --tool=callgrind` the difference of two iteration counts gives
//! the instructions per call (BENCHMARKS.md).

use dfdx::prelude::*;
use poly_loss::prelude::*;
use std::time::Instant;

fn main() {
    let mut a = std::env::args()
        .skip(1)
        .map(|s| s.parse::<usize>().expect("a number"));
    let (b, c, iters) = (
        a.next().unwrap_or(256),
        a.next().unwrap_or(1000),
        a.next().unwrap_or(200),
    );
    let dev = Cpu::default();
    let x: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(b, c));
    let t: Vec<usize> = (0..b).map(|i| (i * 7919) % c).collect();
    // A fourth argument runs only the part whose name starts with it (for `perf`).
    let only = std::env::args().nth(4).unwrap_or_default();
    let time = |name: &str, f: &mut dyn FnMut()| {
        if !name.starts_with(only.as_str()) {
            return;
        }
        for _ in 0..10 {
            f();
        }
        // Mean and minimum per call: on a shared machine the minimum is the
        // call that ran undisturbed.
        let t0 = Instant::now();
        let mut min = f64::INFINITY;
        for _ in 0..iters {
            let t = Instant::now();
            f();
            min = min.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:<28} {:9.1} us mean {:9.1} us min",
            t0.elapsed().as_secs_f64() * 1e6 / iters as f64,
            min * 1e6
        );
    };
    // For scale: one copy of the logits (the op itself reads them in place).
    time("a copy of the logits", &mut || {
        std::hint::black_box(x.as_vec());
    });
    time("forward, no tape", &mut || {
        std::hint::black_box(poly_loss(x.clone(), &t, [2.0]).array());
    });
    time("forward, taped", &mut || {
        std::hint::black_box(poly_loss(x.leaky_trace(), &t, [2.0]).array());
    });
    time("forward + backward", &mut || {
        std::hint::black_box(poly_loss(x.leaky_trace(), &t, [2.0]).backward());
    });
    let y = dev.tensor_from_vec(
        (0..b * c)
            .map(|k| if t[k / c] == k % c { 1.0 } else { 0.0 })
            .collect::<Vec<f32>>(),
        (b, c),
    );
    time("dfdx cross-entropy fwd+bwd", &mut || {
        std::hint::black_box(cross_entropy_with_logits_loss(x.leaky_trace(), y.clone()).backward());
    });
}
