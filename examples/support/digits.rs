//! Trains a small dfdx MLP on the UCI digits set (1797 8×8 images, 10
//! classes, shipped inside `smartcore`) with a given loss. Shared by
//! `examples/train_digits.rs` and `tests/loss_train_digits.rs`.

use dfdx::optim::Adam;
use dfdx::prelude::*;
use poly_loss::prelude::*;
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

pub type Mlp = (Linear<64, 128>, ReLU, Linear<128, 10>);

/// Which loss to train with.
#[derive(Clone, Copy, Debug)]
pub enum Loss {
    /// dfdx's own `cross_entropy_with_logits_loss`.
    CrossEntropy,
    /// The fused `poly_loss::<1>` with this ε.
    Poly1(f32),
}

/// Features scaled to [0, 1] and labels, split 80/20 with a fixed shuffle.
pub struct Digits {
    pub train_x: Vec<f32>,
    pub train_y: Vec<usize>,
    pub val_x: Vec<f32>,
    pub val_y: Vec<usize>,
}

pub fn load(seed: u64) -> Digits {
    let ds = smartcore::dataset::digits::load_dataset();
    assert_eq!((ds.num_samples, ds.num_features), (1797, 64));
    let mut idx: Vec<usize> = (0..ds.num_samples).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    let n_train = ds.num_samples * 4 / 5;
    let take = |ids: &[usize]| {
        let x: Vec<f32> = ids
            .iter()
            .flat_map(|&i| ds.data[i * 64..(i + 1) * 64].iter().map(|v| v / 16.0))
            .collect();
        let y: Vec<usize> = ids.iter().map(|&i| ds.target[i] as usize).collect();
        (x, y)
    };
    let (train_x, train_y) = take(&idx[..n_train]);
    let (val_x, val_y) = take(&idx[n_train..]);
    Digits {
        train_x,
        train_y,
        val_x,
        val_y,
    }
}

/// Metrics on the validation split.
#[derive(Clone, Copy, Debug)]
pub struct Metrics {
    /// Mean cross-entropy of the validation set.
    pub val_ce: f32,
    /// Top-1 accuracy of the validation set.
    pub val_acc: f32,
}

pub fn evaluate(dev: &Cpu, model: &<Mlp as BuildOnDevice<Cpu, f32>>::Built, d: &Digits) -> Metrics {
    let n = d.val_y.len();
    let x: Tensor<(usize, Const<64>), f32, _> = dev.tensor_from_vec(d.val_x.clone(), (n, Const));
    let logits = model.forward(x);
    let ce = poly_loss(logits.clone(), &d.val_y, [0.0]).array();
    let l = logits.as_vec();
    let correct = (0..n)
        .filter(|&i| {
            let row = &l[i * 10..(i + 1) * 10];
            let arg = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            arg == d.val_y[i]
        })
        .count();
    Metrics {
        val_ce: ce,
        val_acc: correct as f32 / n as f32,
    }
}

/// Trains for `epochs` epochs (batch 64, Adam 1e-3); returns the mean
/// training loss of each epoch and the final validation metrics.
pub fn train(d: &Digits, loss: Loss, epochs: usize, seed: u64) -> (Vec<f32>, Metrics) {
    let dev = Cpu::seed_from_u64(seed);
    let mut model = dev.build_module::<Mlp, f32>();
    let mut grads = model.alloc_grads();
    let mut opt = Adam::new(
        &model,
        AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
    );
    let n = d.train_y.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = Vec::with_capacity(epochs);
    for _ in 0..epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(64) {
            let xb: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| d.train_x[i * 64..(i + 1) * 64].iter().copied())
                .collect();
            let yb: Vec<usize> = chunk.iter().map(|&i| d.train_y[i]).collect();
            let x: Tensor<(usize, Const<64>), f32, _> =
                dev.tensor_from_vec(xb, (chunk.len(), Const));
            let logits = model.forward_mut(x.traced(grads));
            let l = match loss {
                Loss::CrossEntropy => {
                    let mut y = vec![0.0f32; chunk.len() * 10];
                    for (i, &k) in yb.iter().enumerate() {
                        y[i * 10 + k] = 1.0;
                    }
                    let y: Tensor<(usize, Const<10>), f32, _> =
                        dev.tensor_from_vec(y, (chunk.len(), Const));
                    cross_entropy_with_logits_loss(logits, y)
                }
                Loss::Poly1(eps) => poly_loss(logits, &yb, [eps]),
            };
            total += l.array();
            batches += 1;
            grads = l.backward();
            opt.update(&mut model, &grads)
                .expect("every parameter has a gradient");
            model.zero_grads(&mut grads);
        }
        history.push(total / batches as f32);
    }
    (history, evaluate(&dev, &model, d))
}
