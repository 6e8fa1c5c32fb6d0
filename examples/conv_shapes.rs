//! Times every convolution shape of a ResNet-50 step (batch 8) with our CPU
//! kernels: forward, backward (input + weight gradients), min of N runs.
//! `cargo run --release --example conv_shapes [size=224] [iters=3] [filter]`

use dfdx::prelude::*;
use poly_loss::nn::ops::conv2d::Conv2dOp;
use poly_loss::nn::ops::{conv2d_output_size, Conv2dKernel};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(224);
    let iters: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let filter = args.get(2).cloned().unwrap_or_default();
    let dev = Cpu::default();
    // (cin, cout, k, stride, pad, input size, count)
    let s = size;
    let shapes: Vec<(usize, usize, usize, usize, usize, usize, usize)> = vec![
        (3, 64, 7, 2, 3, s, 1),
        (64, 64, 1, 1, 0, s / 4, 1),
        (64, 64, 3, 1, 1, s / 4, 3),
        (64, 256, 1, 1, 0, s / 4, 4),
        (256, 64, 1, 1, 0, s / 4, 2),
        (256, 128, 1, 1, 0, s / 4, 1),
        (128, 128, 3, 2, 1, s / 4, 1),
        (256, 512, 1, 2, 0, s / 4, 1),
        (128, 512, 1, 1, 0, s / 8, 4),
        (512, 128, 1, 1, 0, s / 8, 3),
        (128, 128, 3, 1, 1, s / 8, 3),
        (512, 256, 1, 1, 0, s / 8, 1),
        (256, 256, 3, 2, 1, s / 8, 1),
        (512, 1024, 1, 2, 0, s / 8, 1),
        (256, 1024, 1, 1, 0, s / 16, 6),
        (1024, 256, 1, 1, 0, s / 16, 5),
        (256, 256, 3, 1, 1, s / 16, 5),
        (1024, 512, 1, 1, 0, s / 16, 1),
        (512, 512, 3, 2, 1, s / 16, 1),
        (1024, 2048, 1, 2, 0, s / 16, 1),
        (512, 2048, 1, 1, 0, s / 32, 3),
        (2048, 512, 1, 1, 0, s / 32, 2),
        (512, 512, 3, 1, 1, s / 32, 2),
    ];
    let b = 8;
    let (mut tf, mut tb) = (0.0, 0.0);
    for (ci, co, k, st, p, h, count) in shapes {
        let name = format!("{ci}->{co} k{k} s{st} {h}x{h}");
        if !name.contains(&filter) {
            continue;
        }
        let ho = conv2d_output_size(h, k, st, p);
        let op = Conv2dOp {
            batch: b,
            chan_in: ci,
            chan_out: co,
            h_in: h,
            w_in: h,
            h_out: ho,
            w_out: ho,
            kernel: k,
            stride: st,
            padding: p,
        };
        let x: Tensor<(usize, usize, usize, usize), f32, _> =
            dev.sample_normal_like(&(b, ci, h, h));
        let w: Tensor<(usize, usize, usize, usize), f32, _> =
            dev.sample_normal_like(&(co, ci, k, k));
        let gyd: Vec<f32> = dev.sample_normal_like(&(b, co, ho, ho)).as_vec();
        let mut gy = dev.try_alloc_len(gyd.len()).unwrap();
        gy.copy_from_slice(&gyd);
        let mut gx = dev.try_alloc_len(b * ci * h * h).unwrap();
        let mut gw = dev.try_alloc_len(co * ci * k * k).unwrap();
        let flops = 2.0 * (b * co * ho * ho * ci * k * k) as f64;
        let mut best_f = f64::MAX;
        let mut best_b = f64::MAX;
        for _ in 0..iters + 1 {
            let t = Instant::now();
            let y = dev
                .conv2d_forward(
                    &op,
                    &x,
                    &w,
                    None::<&Tensor<(usize,), f32, Cpu>>,
                    (b, co, ho, ho),
                )
                .unwrap();
            best_f = best_f.min(t.elapsed().as_secs_f64());
            drop(y);
            if std::env::var_os("FWD_ONLY").is_some() {
                continue;
            }
            let t = Instant::now();
            dev.conv2d_backward(&op, &x, &w, &mut gx, &mut gw, None, &gy)
                .unwrap();
            best_b = best_b.min(t.elapsed().as_secs_f64());
        }
        tf += best_f * count as f64;
        tb += best_b * count as f64;
        println!(
            "{name:28} x{count}  fwd {:7.2} ms {:6.1} GF/s   bwd {:7.2} ms {:6.1} GF/s",
            best_f * 1e3,
            flops / best_f / 1e9,
            best_b * 1e3,
            2.0 * flops / best_b / 1e9
        );
    }
    println!(
        "total (weighted by count): fwd {:.1} ms, bwd {:.1} ms",
        tf * 1e3,
        tb * 1e3
    );
}
