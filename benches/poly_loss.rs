//! Forward + backward of Poly-1 (ε = 2) against dfdx's own cross-entropy and
//! against Poly-1 composed from dfdx stock ops, at the shapes.
//!
//! `cargo bench --bench poly_loss` (CPU); `--features cuda` adds a CUDA group.
//! The PyTorch side: `python3 benches/reference/poly_loss_torch.py`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Duration;

const SHAPES: [(usize, usize); 4] = [(64, 102), (256, 1000), (1024, 1000), (4096, 1000)];

/// Poly-1 from dfdx stock ops (what a user would write without this crate).
fn composed_poly1<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(
    logits: Tensor<(usize, usize), f32, D, T>,
    y: Tensor<(usize, usize), f32, D>,
    eps: f32,
) -> Tensor<Rank0, f32, D, T> {
    let logp = logits.log_softmax::<Axis<1>>();
    let ce = (logp.with_empty_tape() * y.clone())
        .sum::<(usize,), Axis<1>>()
        .negate();
    let pt = (logp.exp() * y).sum::<(usize,), Axis<1>>();
    (ce + (pt.negate() + 1.0) * eps).mean()
}

type Matrix<D> = Tensor<(usize, usize), f32, D>;

/// Logits in [-4, 4), class indices and their one-hot rows.
fn inputs<D: Device<f32>>(dev: &D, b: usize, c: usize) -> (Matrix<D>, Vec<usize>, Matrix<D>) {
    let mut rng = StdRng::seed_from_u64(7);
    let x: Vec<f32> = (0..b * c).map(|_| rng.gen_range(-4.0..4.0)).collect();
    let t: Vec<usize> = (0..b).map(|_| rng.gen_range(0..c)).collect();
    let mut y = vec![0.0f32; b * c];
    for (i, &k) in t.iter().enumerate() {
        y[i * c + k] = 1.0;
    }
    (
        dev.tensor_from_vec(x, (b, c)),
        t,
        dev.tensor_from_vec(y, (b, c)),
    )
}

fn group<D: PolyDevice>(c: &mut Criterion, name: &str, dev: &D, sync: impl Fn(&D)) {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for &(b, cl) in &SHAPES {
        let (x, t, y) = inputs(dev, b, cl);
        let id = format!("{b}x{cl}");
        g.bench_function(BenchmarkId::new("fused_poly1", &id), |bench| {
            bench.iter(|| {
                let l = poly_loss(x.leaky_trace(), &t, [2.0]);
                let grads = l.backward();
                sync(dev);
                grads
            })
        });
        g.bench_function(BenchmarkId::new("dfdx_cross_entropy", &id), |bench| {
            bench.iter(|| {
                let l = cross_entropy_with_logits_loss(x.leaky_trace(), y.clone());
                let grads = l.backward();
                sync(dev);
                grads
            })
        });
        g.bench_function(BenchmarkId::new("dfdx_composed_poly1", &id), |bench| {
            bench.iter(|| {
                let l = composed_poly1(x.leaky_trace(), y.clone(), 2.0);
                let grads = l.backward();
                sync(dev);
                grads
            })
        });
    }
    g.finish();
}

fn cpu(c: &mut Criterion) {
    group(c, "cpu", &Cpu::default(), |_| {});
}

#[cfg(feature = "cuda")]
fn cuda(c: &mut Criterion) {
    let dev = Cuda::default();
    group(c, "cuda", &dev, |d| d.synchronize());
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &mut Criterion) {}

criterion_group!(benches, cpu, cuda);
criterion_main!(benches);
