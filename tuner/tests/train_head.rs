//! The runtime-sized head: gradients against f64 finite differences of an
//! independent host implementation, its Adam step against dfdx's own `Adam`
//! on a `Linear`, and PyTorch's `nn.Linear` initialisation bounds.

use dfdx::nn::builders;
use dfdx::nn::modules::Linear;
use dfdx::optim::{Adam, Optimizer};
use dfdx::prelude::*;
use polytune::train::optimiser::{AdamW, HeadAdam};
use polytune::train::{Head, Loss};

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

#[test]
fn gradients_match_finite_differences() {
    let dev = Cpu::seed_from_u64(3);
    let head = Head::<Const<F>, f32, Cpu>::new(&dev, C, 11).unwrap();
    let x: Tensor<(usize, Const<F>), f32, Cpu> = dev.sample_normal_like(&(3, Const));
    let labels = [4usize, 0, 2];
    let eps = 2.0;
    let loss = Loss::new(&[eps], 0.0).unwrap();
    let logits = head.try_forward(x.trace(Gradients::leaky())).unwrap();
    let l = loss.forward(logits, &labels).unwrap();
    let value = l.as_vec()[0] as f64;
    let grads = l.backward();
    let (gw, gb, gx) = (
        grads.get(&head.weight).as_vec(),
        grads.get(&head.bias).as_vec(),
        grads.get(&x).as_vec(),
    );

    let (x64, w64, b64) = (
        to64(&x.as_vec()),
        to64(&head.weight.as_vec()),
        to64(&head.bias.as_vec()),
    );
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
    let mut head = Head::<Const<F>, f32, Cpu>::new(&dev, C, 2).unwrap();
    let mut lin: Linear<F, C, f32, Cpu> = dev.build_module::<builders::Linear<F, C>, f32>();
    lin.weight.copy_from(&head.weight.as_vec());
    lin.bias.copy_from(&head.bias.as_vec());
    let hyper = AdamW {
        beta2: 0.99,
        eps: 1e-5,
        weight_decay: 0.01,
    };
    let mut ours = HeadAdam::default();
    let mut theirs = Adam::new(&lin, hyper.config(0.0, 0.9));
    let labels = [1usize, 3, 0, 4];
    let loss = Loss::new(&[1.0], 0.1).unwrap();
    // A schedule that changes lr and β₁ every step, as the trainer does.
    for (step, (lr, beta1)) in [(1e-2, 0.95), (3e-2, 0.9), (2e-2, 0.85), (5e-3, 0.9)]
        .into_iter()
        .enumerate()
    {
        let x: Tensor<(usize, Const<F>), f32, Cpu> = dev.sample_normal_like(&(4, Const));
        let l = loss
            .forward(
                head.try_forward(x.trace(Gradients::leaky())).unwrap(),
                &labels,
            )
            .unwrap();
        let mut g = l.backward();
        ours.update(&mut head, &mut g, &hyper.config(lr, beta1))
            .unwrap();

        let xl = x.clone().realize::<(usize, Const<F>)>();
        let logits = lin.forward(xl.trace(lin.alloc_grads()));
        let l2 = loss
            .forward(logits.realize::<(usize, usize)>(), &labels)
            .unwrap();
        let g2 = l2.backward();
        theirs.cfg = hyper.config(lr, beta1);
        theirs.update(&mut lin, &g2).unwrap();

        for (a, b) in head.weight.as_vec().iter().zip(lin.weight.as_vec()) {
            assert!((a - b).abs() < 1e-6, "step {step}: weight {a} vs {b}");
        }
        for (a, b) in head.bias.as_vec().iter().zip(lin.bias.as_vec()) {
            assert!((a - b).abs() < 1e-6, "step {step}: bias {a} vs {b}");
        }
    }
}

#[test]
fn init_is_pytorch_linear_and_seeded() {
    let dev = Cpu::default();
    let a = Head::<Const<64>, f32, Cpu>::new(&dev, 50, 7).unwrap();
    let b = Head::<Const<64>, f32, Cpu>::new(&dev, 50, 7).unwrap();
    let c = Head::<Const<64>, f32, Cpu>::new(&dev, 50, 8).unwrap();
    assert_eq!(a.classes(), 50);
    assert_eq!(a.weight.as_vec(), b.weight.as_vec());
    assert_ne!(a.weight.as_vec(), c.weight.as_vec());
    let w = a.weight.as_vec();
    let bound = 1.0 / 8.0; // 1/√64
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(a.bias.as_vec().iter().all(|v| v.abs() <= bound));
    // U(−1/8, 1/8): mean 0, variance 1/192; 3200 draws.
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.005, "{mean}");
    assert!((var - 1.0 / 192.0).abs() < 0.0006, "{var}");
}
