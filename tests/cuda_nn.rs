//! CUDA vision kernels against the CPU ones (themselves checked against
//! float64 references in `nn_*.rs`) on random inputs: outputs and every
//! gradient. Needs a GPU; `--features cuda,ci-check` only type-checks it.
#![cfg(feature = "cuda")]

use dfdx::prelude::*;
use poly_loss::nn::builders::{BatchNorm2d, Conv2d};
use poly_loss::nn::ops::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn uniform(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn close(what: &str, gpu: &[f32], cpu: &[f32], tol: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    let scale = cpu.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (g - c).abs() <= tol * (0.1 * scale + c.abs()),
            "{what}[{i}]: cuda {g} vs cpu {c}"
        );
    }
}

type Img<const C: usize, D> = Tensor<(usize, Const<C>, usize, usize), f32, D>;

fn conv_case<const I: usize, const O: usize, const K: usize>(
    b: usize,
    h: usize,
    w: usize,
    s: usize,
    p: usize,
    seed: u64,
) {
    let (cpu, gpu) = (Cpu::default(), Cuda::default());
    let mut r = StdRng::seed_from_u64(seed);
    let xv = uniform(&mut r, b * I * h * w);
    let wv = uniform(&mut r, O * I * K * K);
    let bv = uniform(&mut r, O);
    let run = |x: Vec<f32>| {
        let xc: Img<I, Cpu> = cpu.tensor_from_vec(x.clone(), (b, Const, h, w));
        let xg: Img<I, Cuda> = gpu.tensor_from_vec(x, (b, Const, h, w));
        let wc: Tensor<Rank4<O, I, K, K>, f32, Cpu> =
            cpu.tensor_from_vec(wv.clone(), Default::default());
        let wg: Tensor<Rank4<O, I, K, K>, f32, Cuda> =
            gpu.tensor_from_vec(wv.clone(), Default::default());
        let bc: Tensor<Rank1<O>, f32, Cpu> = cpu.tensor_from_vec(bv.clone(), Default::default());
        let bg: Tensor<Rank1<O>, f32, Cuda> = gpu.tensor_from_vec(bv.clone(), Default::default());
        let yc = conv2d(xc.leaky_trace(), &wc, Some(&bc), s, p);
        let yg = conv2d(xg.leaky_trace(), &wg, Some(&bg), s, p);
        let what = format!("conv I{I} O{O} K{K} b{b} {h}x{w} s{s} p{p}");
        close(&what, &yg.as_vec(), &yc.as_vec(), 1e-4);
        let rv = uniform(
            &mut StdRng::seed_from_u64(seed + 1),
            yc.shape().num_elements(),
        );
        let rc = cpu.tensor_from_vec(rv.clone(), *yc.shape());
        let rg = gpu.tensor_from_vec(rv, *yg.shape());
        let gc = (yc * rc).sum().backward();
        let gg = (yg * rg).sum().backward();
        close(
            &format!("dx {what}"),
            &gg.get(&xg).as_vec(),
            &gc.get(&xc).as_vec(),
            1e-4,
        );
        close(
            &format!("dw {what}"),
            &gg.get(&wg).as_vec(),
            &gc.get(&wc).as_vec(),
            1e-4,
        );
        close(
            &format!("db {what}"),
            &gg.get(&bg).as_vec(),
            &gc.get(&bc).as_vec(),
            1e-4,
        );
    };
    run(xv);
}

#[test]
fn conv2d_cuda_matches_cpu() {
    conv_case::<3, 8, 3>(2, 11, 9, 1, 1, 1);
    conv_case::<3, 8, 3>(3, 12, 13, 2, 1, 2);
    conv_case::<3, 4, 7>(2, 23, 20, 2, 3, 3);
    conv_case::<16, 8, 1>(3, 7, 5, 1, 0, 4);
    conv_case::<16, 8, 1>(2, 9, 9, 2, 0, 5);
    conv_case::<64, 32, 3>(4, 28, 28, 1, 1, 6);
}

/// More images than one im2col group holds: the loop over groups with
/// `b0 > 0` (group = 2^26 floats / (patch · out_plane) = 2^26 / (6272 · 4096)
/// = 2 images here, so 3 images are two groups, the second partial).
#[test]
fn conv2d_cuda_multi_group_im2col_matches_cpu() {
    conv_case::<128, 2, 7>(3, 64, 64, 1, 3, 11);
}

#[test]
fn pools_and_add_relu_cuda_match_cpu() {
    let (cpu, gpu) = (Cpu::default(), Cuda::default());
    let mut r = StdRng::seed_from_u64(7);
    let shape = (3usize, 5usize, 13usize, 11usize);
    let n = 3 * 5 * 13 * 11;
    let (av, bv, rv) = (uniform(&mut r, n), uniform(&mut r, n), uniform(&mut r, n));

    let xc: Tensor<_, f32, Cpu> = cpu.tensor_from_vec(av.clone(), shape);
    let xg: Tensor<_, f32, Cuda> = gpu.tensor_from_vec(av.clone(), shape);
    let yc = max_pool2d(xc.leaky_trace(), 3, 2, 1);
    let yg = max_pool2d(xg.leaky_trace(), 3, 2, 1);
    close("max_pool", &yg.as_vec(), &yc.as_vec(), 1e-6);
    let m = yc.shape().num_elements();
    let rc = cpu.tensor_from_vec(rv[..m].to_vec(), *yc.shape());
    let rg = gpu.tensor_from_vec(rv[..m].to_vec(), *yg.shape());
    let gc = (yc * rc).sum().backward();
    let gg = (yg * rg).sum().backward();
    close(
        "max_pool dx",
        &gg.get(&xg).as_vec(),
        &gc.get(&xc).as_vec(),
        1e-5,
    );

    let yc = global_avg_pool2d(xc.leaky_trace());
    let yg = global_avg_pool2d(xg.leaky_trace());
    close("gap", &yg.as_vec(), &yc.as_vec(), 1e-5);
    let gc = yc.square().sum().backward();
    let gg = yg.square().sum().backward();
    close("gap dx", &gg.get(&xg).as_vec(), &gc.get(&xc).as_vec(), 1e-5);

    let bc: Tensor<_, f32, Cpu> = cpu.tensor_from_vec(bv.clone(), shape);
    let bg: Tensor<_, f32, Cuda> = gpu.tensor_from_vec(bv, shape);
    let yc = add_relu(xc.leaky_trace(), bc.clone());
    let yg = add_relu(xg.leaky_trace(), bg.clone());
    close("add_relu", &yg.as_vec(), &yc.as_vec(), 1e-6);
    let gc = (yc * cpu.tensor_from_vec(rv.clone(), shape))
        .sum()
        .backward();
    let gg = (yg * gpu.tensor_from_vec(rv, shape)).sum().backward();
    close(
        "add_relu da",
        &gg.get(&xg).as_vec(),
        &gc.get(&xc).as_vec(),
        1e-6,
    );
    close(
        "add_relu db",
        &gg.get(&bg).as_vec(),
        &gc.get(&bc).as_vec(),
        1e-6,
    );
}

#[test]
fn batch_norm_cuda_matches_cpu() {
    batch_norm_case(4, 9, 7);
    // B·H·W = 1020 > 256 threads: the per-channel reductions' loops take
    // several elements per thread.
    batch_norm_case(3, 20, 17);
}

fn batch_norm_case(batch: usize, h: usize, w: usize) {
    let (cpu, gpu) = (Cpu::seed_from_u64(8), Cuda::seed_from_u64(8));
    let mut bn_c = cpu.build_module::<BatchNorm2d<6>, f32>();
    bn_c.weight = cpu.tensor([0.5, 1.0, 1.5, -1.0, 2.0, 0.7]);
    bn_c.bias = cpu.tensor([0.1, -0.2, 0.3, 0.0, -0.5, 0.2]);
    bn_c.running_mean = cpu.tensor([0.1, 0.0, -0.1, 0.2, 0.0, 0.3]);
    bn_c.running_var = cpu.tensor([1.0, 0.5, 2.0, 1.5, 0.8, 1.2]);
    let mut bn_g = bn_c.to_device(&gpu);
    let mut r = StdRng::seed_from_u64(9);
    let shape = (batch, Const::<6>, h, w);
    let n = batch * 6 * h * w;
    let (xv, resv, rv) = (uniform(&mut r, n), uniform(&mut r, n), uniform(&mut r, n));
    for variant in 0..6 {
        let xc: Img<6, Cpu> = cpu.tensor_from_vec(xv.clone(), shape);
        let xg: Img<6, Cuda> = gpu.tensor_from_vec(xv.clone(), shape);
        let resc: Img<6, Cpu> = cpu.tensor_from_vec(resv.clone(), shape);
        let resg: Img<6, Cuda> = gpu.tensor_from_vec(resv.clone(), shape);
        let (yc, yg) = match variant {
            0 => (
                bn_c.forward(xc.leaky_trace()),
                bn_g.forward(xg.leaky_trace()),
            ),
            1 => (
                bn_c.forward_mut(xc.leaky_trace()),
                bn_g.forward_mut(xg.leaky_trace()),
            ),
            2 => (
                bn_c.forward_tail(xc.leaky_trace(), Tail::Relu),
                bn_g.forward_tail(xg.leaky_trace(), Tail::Relu),
            ),
            3 => (
                bn_c.forward_tail_mut(xc.leaky_trace(), Tail::Relu),
                bn_g.forward_tail_mut(xg.leaky_trace(), Tail::Relu),
            ),
            4 => (
                bn_c.forward_tail(xc.leaky_trace(), Tail::AddRelu(resc.retaped())),
                bn_g.forward_tail(xg.leaky_trace(), Tail::AddRelu(resg.retaped())),
            ),
            _ => (
                bn_c.forward_tail_mut(xc.leaky_trace(), Tail::AddRelu(resc.retaped())),
                bn_g.forward_tail_mut(xg.leaky_trace(), Tail::AddRelu(resg.retaped())),
            ),
        };
        let what = format!("bn variant {variant} {batch}x6x{h}x{w}");
        close(&what, &yg.as_vec(), &yc.as_vec(), 1e-4);
        close(
            &format!("running_mean {what}"),
            &bn_g.running_mean.as_vec(),
            &bn_c.running_mean.as_vec(),
            1e-5,
        );
        close(
            &format!("running_var {what}"),
            &bn_g.running_var.as_vec(),
            &bn_c.running_var.as_vec(),
            1e-5,
        );
        let gc = (yc * cpu.tensor_from_vec(rv.clone(), shape))
            .sum()
            .backward();
        let gg = (yg * gpu.tensor_from_vec(rv.clone(), shape))
            .sum()
            .backward();
        close(
            &format!("dx {what}"),
            &gg.get(&xg).as_vec(),
            &gc.get(&xc).as_vec(),
            1e-3,
        );
        close(
            &format!("dgamma {what}"),
            &gg.get(&bn_g.weight).as_vec(),
            &gc.get(&bn_c.weight).as_vec(),
            1e-3,
        );
        close(
            &format!("dbeta {what}"),
            &gg.get(&bn_g.bias).as_vec(),
            &gc.get(&bn_c.bias).as_vec(),
            1e-3,
        );
        if variant >= 4 {
            close(
                &format!("dres {what}"),
                &gg.get(&resg).as_vec(),
                &gc.get(&resc).as_vec(),
                1e-3,
            );
        }
    }
}

#[test]
fn conv_module_cuda_matches_cpu() {
    let cpu = Cpu::seed_from_u64(10);
    let conv_c = cpu.build_module::<Conv2d<3, 4, 3, 2, 1, true>, f32>();
    let conv_g = conv_c.to_device(&Cuda::default());
    let x: Tensor<Rank4<2, 3, 10, 10>, f32, Cpu> = cpu.sample_normal();
    let yc = conv_c.forward(x.clone());
    let yg = conv_g.forward(x.to_device(&Cuda::default()));
    close("module", &yg.as_vec(), &yc.as_vec(), 1e-4);
}

/// One tensor, two consumers: both backward passes must add into its
/// gradient (the kernels accumulate with `+=`, never overwrite).
#[test]
fn gradients_accumulate_over_two_consumers_on_cuda() {
    let (cpu, gpu) = (Cpu::default(), Cuda::default());
    let mut r = StdRng::seed_from_u64(12);
    let shape = (2usize, Const::<4>, 9usize, 8usize);
    let n = 2 * 4 * 9 * 8;
    let (xv, bv) = (uniform(&mut r, n), uniform(&mut r, n));
    let wv = uniform(&mut r, 4 * 4 * 9);
    macro_rules! run {
        ($dev:expr) => {{
            let x: Img<4, _> = $dev.tensor_from_vec(xv.clone(), shape);
            let b: Img<4, _> = $dev.tensor_from_vec(bv.clone(), shape);
            let w: Tensor<Rank4<4, 4, 3, 3>, f32, _> =
                $dev.tensor_from_vec(wv.clone(), Default::default());
            let t = x.leaky_trace();
            let y = conv2d(t.with_empty_tape(), &w, None, 1, 1);
            let y = add_relu(y, b.clone());
            let y = y.with_empty_tape() + max_pool2d(y, 3, 1, 1);
            let p = global_avg_pool2d(t.with_empty_tape()).sum();
            let q = max_pool2d(t, 3, 2, 1).square().sum();
            let g = (y.square().sum() + p + q).backward();
            (g.get(&x).as_vec(), g.get(&w).as_vec(), g.get(&b).as_vec())
        }};
    }
    let (xc, wc, bc) = run!(cpu);
    let (xg, wg, bg) = run!(gpu);
    close("shared x: dx", &xg, &xc, 1e-4);
    close("shared x: dw", &wg, &wc, 1e-4);
    close("shared x: db", &bg, &bc, 1e-4);
}

/// ResNet-50 on CUDA against the CPU: logits and gradients of a training
/// step (train-mode batch-norm) at 2×3×64×64.
#[test]
fn resnet50_cuda_matches_cpu_logits_and_gradients() {
    use poly_loss::nn::resnet::{builders, BnMode, ImageClassifier};
    let cpu = Cpu::seed_from_u64(13);
    let gpu = Cuda::seed_from_u64(13);
    let mut mc = cpu.build_module::<builders::ResNet50<10>, f32>();
    let mut mg = mc.to_device(&gpu);
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        cpu.sample_normal_like(&(2, Const, 64, 64));
    let xg = x.to_device(&gpu);
    let lc = mc.forward_logits(x.leaky_trace(), BnMode::Train);
    let lg = mg.forward_logits(xg.leaky_trace(), BnMode::Train);
    close("resnet50 logits", &lg.as_vec(), &lc.as_vec(), 1e-3);
    let gc = poly_loss::prelude::poly_loss(lc, &[3, 7], [1.0]).backward();
    let gg = poly_loss::prelude::poly_loss(lg, &[3, 7], [1.0]).backward();
    close(
        "resnet50 d fc.weight",
        &gg.get(&mg.fc.weight).as_vec(),
        &gc.get(&mc.fc.weight).as_vec(),
        1e-3,
    );
    close(
        "resnet50 d layer4.2.bn3.weight",
        &gg.get(&mg.layer4.2.bn3.weight).as_vec(),
        &gc.get(&mc.layer4.2.bn3.weight).as_vec(),
        1e-2,
    );
    close(
        "resnet50 d conv1.weight",
        &gg.get(&mg.stem.conv1.weight).as_vec(),
        &gc.get(&mc.stem.conv1.weight).as_vec(),
        1e-2,
    );
    close(
        "resnet50 dx",
        &gg.get(&xg).as_vec(),
        &gc.get(&x).as_vec(),
        1e-2,
    );
    close(
        "resnet50 running_mean",
        &mg.stem.bn1.running_mean.as_vec(),
        &mc.stem.bn1.running_mean.as_vec(),
        1e-4,
    );
}
