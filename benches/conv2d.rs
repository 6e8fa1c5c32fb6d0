//! Vision-op benchmarks (issue 3), side by side with their baselines:
//!
//! - `conv3x3_256x56x56_b8`: one 3×3 conv 256→256, stride 1, padding 1, on
//!   (8, 256, 56, 56): forward, and forward + backward (input and weight
//!   gradients). Throughput is in FLOP ("elements/s" = FLOP/s); compare with
//!   `python3 benches/reference/conv_torch.py` (PyTorch CPU, same threads).
//! - `bn_relu_train_8x256x56x56`: training-mode batch-norm + ReLU, forward +
//!   backward: ours (fused) vs dfdx's `BatchNorm2D` + `relu()`.
//! - `add_relu_8x256x56x56`: residual add + ReLU, forward + backward: ours vs
//!   dfdx's `(a + b).relu()`.
//!
//! The backward passes are seeded with a fixed output gradient through a
//! tiny custom op (as PyTorch's `y.backward(gy)`), so no loss reduction is
//! timed. Run: `RAYON_NUM_THREADS=2 cargo bench --bench conv2d`; with
//! `--features cuda` a `cuda` group times the same ops on the GPU.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dfdx::prelude::*;
use poly_loss::nn::builders::BatchNorm2d as OurBn;
use poly_loss::nn::ops::{add_relu, conv2d, Tail, VisionDevice};

const B: usize = 8;
const C: usize = 256;
const HW: usize = 56;

type Img<D, T = NoneTape> = Tensor<(usize, Const<C>, usize, usize), f32, D, T>;

type Grad<D> = <D as Storage<f32>>::Vec;

/// `gy` as a gradient buffer: the gradient of `Σ probe·gy` w.r.t. `probe`
/// is `gy` itself (built once, outside the timed code).
fn seed_of<D: Device<f32>>(gy: &Img<D>) -> Grad<D> {
    let probe: Img<D> = gy.device().zeros_like(gy.shape());
    let mut g = (probe.leaky_trace() * gy.clone())
        .sum::<Rank0, _>()
        .backward();
    let empty = <D as Storage<f32>>::try_alloc_len(gy.device(), 0).unwrap();
    std::mem::replace(g.get_or_alloc_mut(&probe).unwrap(), empty)
}

/// Ends a taped computation at `y` with `dL/dy = seed` and runs the backward
/// pass (PyTorch's `y.backward(gy)`), returning the gradients.
fn backward_with<D: Device<f32>>(y: Img<D, OwnedTape<f32, D>>, seed: Grad<D>) -> Gradients<f32, D> {
    let (y, mut tape) = y.split_tape();
    let y_ghost = y.ghost();
    tape.add_backward_op(move |grads| {
        *grads.get_or_alloc_mut(&y_ghost)? = seed;
        Ok(())
    });
    let loss: Tensor<Rank0, f32, D, _> = y.device().zeros().put_tape(tape);
    loss.backward()
}

/// Times forward + backward per iteration, like PyTorch's
/// `f(x).backward(gy)` loop: the seed is cloned and the gradients dropped
/// outside the timed region (both are the harness's work, not the op's).
fn fwd_bwd<D: Device<f32> + Synchronize>(
    bch: &mut criterion::Bencher<'_>,
    dev: &D,
    seed: &Grad<D>,
    mut run: impl FnMut(Grad<D>) -> Gradients<f32, D>,
) {
    bch.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let s = seed.clone();
            let start = Instant::now();
            let grads = run(s);
            dev.synchronize();
            total += start.elapsed();
            drop(grads);
        }
        total
    })
}

fn ops<D: VisionDevice + DeviceBuildExt + Synchronize>(c: &mut Criterion, dev: D, name: &str) {
    let shape = (B, Const::<C>, HW, HW);
    let x: Img<D> = dev.sample_normal_like(&shape);
    let gy: Img<D> = dev.sample_normal_like(&shape);
    let w: Tensor<Rank4<C, C, 3, 3>, f32, D> = dev.sample_normal();
    let seed = seed_of(&gy);
    let flops = (2 * B * C * HW * HW * C * 9) as u64;

    let mut g = c.benchmark_group(format!("{name}/conv3x3_256x56x56_b8"));
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(flops));
    g.bench_function("forward", |bch| {
        bch.iter(|| {
            let y = conv2d(x.clone(), &w, None, 1, 1);
            dev.synchronize();
            y
        })
    });
    g.throughput(Throughput::Elements(3 * flops));
    g.bench_function("forward_backward", |bch| {
        fwd_bwd(bch, &dev, &seed, |seed| {
            let y = conv2d(x.leaky_trace(), &w, None, 1, 1);
            backward_with(y, seed)
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("{name}/bn_relu_train_8x256x56x56"));
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    let mut ours = dev.build_module::<OurBn<C>, f32>();
    g.bench_function(BenchmarkId::new("fwd_bwd", "ours_fused"), |bch| {
        fwd_bwd(bch, &dev, &seed, |seed| {
            let y = ours.forward_tail_mut(x.leaky_trace(), Tail::Relu);
            backward_with(y, seed)
        })
    });
    let mut stock = dev.build_module::<dfdx::nn::builders::BatchNorm2D<C>, f32>();
    g.bench_function(BenchmarkId::new("fwd_bwd", "dfdx_bn_then_relu"), |bch| {
        fwd_bwd(bch, &dev, &seed, |seed| {
            let y = stock.forward_mut(x.leaky_trace()).relu();
            backward_with(y, seed)
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("{name}/add_relu_8x256x56x56"));
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    let r: Img<D> = dev.sample_normal_like(&shape);
    g.bench_function(BenchmarkId::new("fwd_bwd", "ours_fused"), |bch| {
        fwd_bwd(bch, &dev, &seed, |seed| {
            let y = add_relu(x.leaky_trace(), r.clone());
            backward_with(y, seed)
        })
    });
    g.bench_function(BenchmarkId::new("fwd_bwd", "dfdx_add_then_relu"), |bch| {
        fwd_bwd(bch, &dev, &seed, |seed| {
            let y = (x.leaky_trace() + r.clone()).relu();
            backward_with(y, seed)
        })
    });
    g.finish();
}

fn cpu(c: &mut Criterion) {
    ops(c, Cpu::default(), "cpu");
}

#[cfg(feature = "cuda")]
fn cuda(c: &mut Criterion) {
    ops(c, Cuda::default(), "cuda");
}

#[cfg(not(feature = "cuda"))]
criterion_group!(benches, cpu);
#[cfg(feature = "cuda")]
criterion_group!(benches, cpu, cuda);
criterion_main!(benches);
