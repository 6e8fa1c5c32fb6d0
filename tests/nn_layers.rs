//! The layer modules under dfdx's machinery: building and initialisation,
//! parameter names, the batch-norm modes, optimisers, reset, and the
//! safetensors round trip.

use dfdx::optim::{Sgd, SgdConfig};
use dfdx::prelude::*;
use poly_loss::nn::builders::{BatchNorm2d, Conv2d, GlobalAvgPool2d, MaxPool2d};
use poly_loss::nn::modules;
use poly_loss::nn::ops::Tail;

type Net = (
    (Conv2d<3, 8, 3, 1, 1>, BatchNorm2d<8>),
    MaxPool2d<3, 2, 1>,
    (Conv2d<8, 6, 1, 1, 0, true>, BatchNorm2d<6>),
    GlobalAvgPool2d,
);

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "poly_loss_{}_{name}.safetensors",
        std::process::id()
    ))
}

fn keys(path: &std::path::Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut k: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    k.sort();
    k
}

#[test]
fn parameter_names_and_shapes_are_torchvisions() {
    let dev = Cpu::default();
    let net = dev.build_module::<Net, f32>();
    let path = tmp("names");
    net.save_safetensors(&path).unwrap();
    let got = keys(&path);
    std::fs::remove_file(&path).unwrap();
    let want: Vec<(String, Vec<usize>)> = [
        ("0.0.weight", vec![8, 3, 3, 3]),
        ("0.1.bias", vec![8]),
        ("0.1.running_mean", vec![8]),
        ("0.1.running_var", vec![8]),
        ("0.1.weight", vec![8]),
        ("2.0.bias", vec![6]),
        ("2.0.weight", vec![6, 8, 1, 1]),
        ("2.1.bias", vec![6]),
        ("2.1.running_mean", vec![6]),
        ("2.1.running_var", vec![6]),
        ("2.1.weight", vec![6]),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_string(), s))
    .collect();
    assert_eq!(got, want);
    // Running statistics are not trainable parameters.
    assert_eq!(net.num_trainable_params(), 8 * 27 + 16 + 6 * 8 + 6 + 12);
}

#[test]
fn initialisation_follows_torchvision() {
    let dev = Cpu::seed_from_u64(3);
    let conv = dev.build_module::<Conv2d<64, 128, 3>, f32>();
    let w = conv.weight.as_vec();
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64;
    let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64;
    // Kaiming normal, fan_out = 128·9, gain √2: std = √(2/1152) ≈ 0.04167.
    let want = (2.0f64 / 1152.0).sqrt();
    assert!(mean.abs() < 1e-3, "mean {mean}");
    assert!(
        (var.sqrt() / want - 1.0).abs() < 0.02,
        "std {} vs {want}",
        var.sqrt()
    );
    assert!(conv.bias.is_none());
    let biased = dev.build_module::<Conv2d<4, 2, 3, 1, 0, true>, f32>();
    let bound = 1.0 / 36f32.sqrt();
    assert!(biased
        .bias
        .as_ref()
        .unwrap()
        .as_vec()
        .iter()
        .all(|b| b.abs() <= bound));
    let bn = dev.build_module::<BatchNorm2d<5>, f32>();
    assert_eq!(bn.weight.array(), [1.0; 5]);
    assert_eq!(bn.bias.array(), [0.0; 5]);
    assert_eq!(bn.running_mean.array(), [0.0; 5]);
    assert_eq!(bn.running_var.array(), [1.0; 5]);
    assert_eq!((bn.eps, bn.momentum), (1e-5, 0.1));
}

#[test]
fn batch_norm_modes_and_optimiser() {
    let dev = Cpu::seed_from_u64(4);
    let mut net = dev.build_module::<Net, f32>();
    let x: Tensor<Rank4<4, 3, 9, 9>, f32, _> = dev.sample_normal();
    let mut opt = Sgd::new(
        &net,
        SgdConfig {
            lr: 0.1,
            momentum: None,
            weight_decay: None,
        },
    );

    // Eval mode with a tape: gradients for γ/β, running stats untouched,
    // and the optimiser never moves the running statistics.
    let stats0 = (net.0 .1.running_mean.array(), net.0 .1.running_var.array());
    let grads = net.alloc_grads();
    let loss = net.forward(x.trace(grads)).square().mean();
    let grads = loss.backward();
    assert!(grads
        .get(&net.0 .1.weight)
        .array()
        .iter()
        .any(|g| *g != 0.0));
    let gamma0 = net.0 .1.weight.array();
    opt.update(&mut net, &grads).unwrap();
    assert_ne!(net.0 .1.weight.array(), gamma0);
    assert_eq!(
        (net.0 .1.running_mean.array(), net.0 .1.running_var.array()),
        stats0
    );

    // Train mode: running statistics move; eval output then differs from train output.
    let grads = net.alloc_grads();
    let y_train = net.forward_mut(x.trace(grads));
    assert_ne!(net.0 .1.running_mean.array(), stats0.0);
    let y_eval = net.forward(x.clone());
    assert_ne!(y_train.as_vec(), y_eval.as_vec());
    // Train mode without a tape also updates (PyTorch's train() under no_grad).
    let before = net.2 .1.running_var.array();
    let _ = net.forward_mut(x.clone());
    assert_ne!(net.2 .1.running_var.array(), before);

    // Reset restores the statistics too.
    net.reset_params();
    assert_eq!(net.0 .1.running_var.array(), [1.0; 8]);
}

#[test]
fn save_load_round_trip_is_bit_identical() {
    let dev = Cpu::seed_from_u64(5);
    let mut a = dev.build_module::<Net, f32>();
    let x: Tensor<Rank4<2, 3, 7, 8>, f32, _> = dev.sample_normal();
    // Move the running statistics away from their defaults first.
    for _ in 0..2 {
        let _ = a.forward_mut(x.clone());
    }
    let path = tmp("roundtrip");
    a.save_safetensors(&path).unwrap();
    let mut b = Cpu::seed_from_u64(99).build_module::<Net, f32>();
    assert_ne!(a.forward(x.clone()).as_vec(), b.forward(x.clone()).as_vec());
    b.load_safetensors(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(a.forward(x.clone()).as_vec(), b.forward(x.clone()).as_vec());
    assert_eq!(
        a.forward_mut(x.clone()).as_vec(),
        b.forward_mut(x.clone()).as_vec()
    );
    assert_eq!(a.0 .1.running_var.array(), b.0 .1.running_var.array());
}

#[test]
fn modules_compose_with_dfdx_and_fused_methods_agree() {
    let dev = Cpu::seed_from_u64(6);
    let mut bn = dev.build_module::<BatchNorm2d<4>, f32>();
    let x: Tensor<Rank4<2, 4, 3, 3>, f32, _> = dev.sample_normal();
    let r: Tensor<Rank4<2, 4, 3, 3>, f32, _> = dev.sample_normal();
    // Fused BN+ReLU equals BN then dfdx's ReLU (eval and train).
    assert_eq!(
        bn.forward_tail(x.clone(), Tail::Relu).as_vec(),
        bn.forward(x.clone()).relu().as_vec()
    );
    let mut bn2 = bn.clone();
    assert_eq!(
        bn.forward_tail_mut(x.clone(), Tail::Relu).as_vec(),
        bn2.forward_mut(x.clone()).relu().as_vec()
    );
    assert_eq!(bn.running_mean.array(), bn2.running_mean.array());
    // Fused BN + add + ReLU against the unfused composition.
    let fused = bn
        .forward_tail(x.clone(), Tail::AddRelu(r.clone()))
        .as_vec();
    let plain = (bn.forward(x.clone()) + r.clone()).relu().as_vec();
    for (a, b) in fused.iter().zip(&plain) {
        assert!((a - b).abs() < 1e-6);
    }
    let fused = bn
        .forward_tail_mut(x.clone(), Tail::AddRelu(r.clone()))
        .as_vec();
    let plain = (bn2.forward_mut(x) + r).relu().as_vec();
    for (a, b) in fused.iter().zip(&plain) {
        assert!((a - b).abs() < 1e-5);
    }
    // Module types are nameable for struct fields.
    let _: &modules::BatchNorm2d<4, f32, Cpu> = &bn;
    let conv: modules::Conv2d<4, 2, 3, 2, 1, false, f32, Cpu> =
        dev.build_module::<Conv2d<4, 2, 3, 2, 1>, f32>();
    let y = conv.forward(dev.zeros::<Rank4<1, 4, 5, 5>>());
    assert_eq!(y.shape().concrete(), [1, 2, 3, 3]);
}
