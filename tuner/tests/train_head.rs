//! The linear head: gradients against f64 finite differences of an
//! independent host implementation, its Adam step against dfdx's own `Adam`
//! on a `Linear`, and PyTorch's `nn.Linear` initialisation bounds. (fastai's
//! head is checked against fastai itself in `train_recipe.rs`.)

use dfdx::nn::builders;
use dfdx::nn::modules::Linear;
use dfdx::optim::{Adam, Optimizer};
use dfdx::prelude::*;
use polytune::train::head::{HeadLayers, SeededDropout};
use polytune::train::optimiser::{AdamW, GroupOptimisers};
use polytune::train::{Head, HeadKind, Loss};

const F: usize = 4;
const C: usize = 5;

/// Poly-1 (mean over rows) of `x · Wᵀ + b` in f64, written out on the host.
fn host_loss(x: &[f64], w: &[f64], b: &[f64], labels: &[usize], eps: f64) -> f64 {
    let rows = labels.len();
    let mut total = 0.0;
    for (r, &y) in labels.iter().enumerate() {
        let z: Vec<f64> = (0..C)
            .map(|k| b[k] + (0..F).map(|j| x[r * F + j] * w[k * F + j]).sum::<f64>())
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let pt = (z[y] - lse).exp();
        total += lse - z[y] + eps * (1.0 - pt);
    }
    total / rows as f64
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

type Weight = Tensor<(usize, usize), f32, Cpu>;
type Bias = Tensor<(usize,), f32, Cpu>;

/// The linear head's weight and bias.
fn wb(h: &Head<Cpu>) -> (&Weight, &Bias) {
    match &h.layers {
        HeadLayers::Linear { weight, bias } => (weight, bias),
        HeadLayers::Fastai { .. } => panic!("a linear head"),
    }
}

#[test]
fn gradients_match_finite_differences() {
    let dev = Cpu::seed_from_u64(3);
    let mut head = Head::new(&dev, HeadKind::Linear, F, C, 11).unwrap();
    assert_eq!(head.input_dim(), F);
    let x: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(3, F));
    let labels = [4usize, 0, 2];
    let eps = 2.0;
    let loss = Loss::new(&[eps], 0.0).unwrap();
    let logits = head
        .try_forward_train(x.trace(Gradients::leaky()), &mut SeededDropout::new(0))
        .unwrap();
    let l = loss.forward(logits, &labels).unwrap();
    let value = l.as_vec()[0] as f64;
    let grads = l.backward();
    let (w, b) = wb(&head);
    let (gw, gb, gx) = (
        grads.get(w).as_vec(),
        grads.get(b).as_vec(),
        grads.get(&x).as_vec(),
    );

    let (x64, w64, b64) = (to64(&x.as_vec()), to64(&w.as_vec()), to64(&b.as_vec()));
    assert!((host_loss(&x64, &w64, &b64, &labels, eps) - value).abs() < 1e-5);
    let h = 1e-6;
    let fd = |which: usize, i: usize| {
        let mut p = [x64.clone(), w64.clone(), b64.clone()];
        p[which][i] += h;
        let up = host_loss(&p[0], &p[1], &p[2], &labels, eps);
        p[which][i] -= 2.0 * h;
        let down = host_loss(&p[0], &p[1], &p[2], &labels, eps);
        (up - down) / (2.0 * h)
    };
    let check = |got: &[f32], which: usize, what: &str| {
        for (i, &g) in got.iter().enumerate() {
            let want = fd(which, i);
            assert!(
                (g as f64 - want).abs() < 2e-5 + 1e-3 * want.abs(),
                "d loss / d {what}[{i}]: {g} vs finite difference {want}"
            );
        }
    };
    check(&gx, 0, "x");
    check(&gw, 1, "weight");
    check(&gb, 2, "bias");
}

#[test]
fn head_adam_steps_like_dfdx_adam_on_a_linear() {
    let dev = Cpu::seed_from_u64(5);
    let mut head = Head::new(&dev, HeadKind::Linear, F, C, 2).unwrap();
    let mut lin: Linear<F, C, f32, Cpu> = dev.build_module::<builders::Linear<F, C>, f32>();
    lin.weight.copy_from(&wb(&head).0.as_vec());
    lin.bias.copy_from(&wb(&head).1.as_vec());
    // fastai's wd_bn_bias=False: the weight decays, the bias does not; dfdx's
    // Adam decays both, so the reference gets the decay by hand on the weight.
    let wd = 0.01;
    let hyper = AdamW {
        beta2: 0.99,
        eps: 1e-5,
        weight_decay: wd,
    };
    let mut ours = GroupOptimisers::new(0, hyper);
    let mut theirs = Adam::new(&lin, hyper.config(0.0, 0.9, false));
    let labels = [1usize, 3, 0, 4];
    let loss = Loss::new(&[1.0], 0.1).unwrap();
    // A schedule that changes lr and β₁ every step, as the trainer does.
    for (step, (lr, beta1)) in [(1e-2, 0.95), (3e-2, 0.9), (2e-2, 0.85), (5e-3, 0.9)]
        .into_iter()
        .enumerate()
    {
        let x: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, F));
        let l = loss
            .forward(
                head.try_forward_train(x.trace(Gradients::leaky()), &mut SeededDropout::new(0))
                    .unwrap(),
                &labels,
            )
            .unwrap();
        let mut g = l.backward();
        ours.step_head(&mut head, &mut g, lr, beta1).unwrap();

        let xl = x.clone().realize::<(usize, Const<F>)>();
        let logits = lin.forward(xl.trace(lin.alloc_grads()));
        let l2 = loss
            .forward(logits.realize::<(usize, usize)>(), &labels)
            .unwrap();
        let g2 = l2.backward();
        // Decoupled decay first (p ← p − lr·wd·p), then dfdx's Adam without it.
        let decayed: Vec<f32> = lin
            .weight
            .as_vec()
            .iter()
            .map(|&p| p - (lr * wd) as f32 * p)
            .collect();
        lin.weight.copy_from(&decayed);
        theirs.cfg = hyper.config(lr, beta1, false);
        theirs.update(&mut lin, &g2).unwrap();

        let (w, b) = wb(&head);
        for (a, b) in w.as_vec().iter().zip(lin.weight.as_vec()) {
            assert!((a - b).abs() < 1e-6, "step {step}: weight {a} vs {b}");
        }
        for (a, b) in b.as_vec().iter().zip(lin.bias.as_vec()) {
            assert!((a - b).abs() < 1e-6, "step {step}: bias {a} vs {b}");
        }
    }
}

#[test]
fn init_is_pytorch_linear_and_seeded() {
    let dev = Cpu::default();
    let a = Head::new(&dev, HeadKind::Linear, 64, 50, 7).unwrap();
    let b = Head::new(&dev, HeadKind::Linear, 64, 50, 7).unwrap();
    let c = Head::new(&dev, HeadKind::Linear, 64, 50, 8).unwrap();
    assert_eq!(a.classes(), 50);
    assert_eq!(wb(&a).0.as_vec(), wb(&b).0.as_vec());
    assert_ne!(wb(&a).0.as_vec(), wb(&c).0.as_vec());
    let w = wb(&a).0.as_vec();
    let bound = 1.0 / 8.0; // 1/√64
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(wb(&a).1.as_vec().iter().all(|v| v.abs() <= bound));
    // U(−1/8, 1/8): mean 0, variance 1/192; 3200 draws.
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.005, "{mean}");
    assert!((var - 1.0 / 192.0).abs() < 0.0006, "{var}");
}
