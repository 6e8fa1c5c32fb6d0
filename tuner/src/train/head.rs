//! [`Head`]: the classification head, with the class count at run time —
//! fastai's `create_head` or one linear layer.
//!
//! For a body whose last stage gives the feature map `X ∈ R^{B×C×h×w}`,
//! fastai's head (`vision_learner(..)`'s default, `concat_pool=True`,
//! `lin_ftrs=[512]`, `ps=0.5`, `first_bn=True`, `bn_final=False`) is
//!
//! ```text
//! z0 = [max_hw X, mean_hw X]                  AdaptiveConcatPool2d + Flatten, (B, 2C)
//! z1 = Dropout_0.25(BN1d(z0))                 BatchNorm1d(2C), p = ps/2
//! z2 = ReLU(z1 · W1ᵀ)                         Linear(2C, 512, bias=False)
//! z3 = Dropout_0.5(BN1d(z2))                  BatchNorm1d(512), p = ps
//! y  = z3 · W2ᵀ                               Linear(512, n, bias=False)
//! BN1d(z) = γ ⊙ (z − μ) / √(σ² + 1e-5) + β    train: batch μ, σ² (biased); eval: running
//! running ← 0.9 · running + 0.1 · batch       (σ² unbiased, as PyTorch)
//! ```
//!
//! with fastai's initialisation: the linear weights Kaiming-normal
//! (`N(0, 2 / fan_in)`, `apply_init(head, nn.init.kaiming_normal_)`), each
//! `BatchNorm1d` γ = 1, β = 0.001 (fastai's `BatchNorm`), running
//! statistics 0 / 1. Note fastai's concat order: **max first, then mean**.
//! The linear head (`head = "linear"`) is `y = mean_hw X · Wᵀ + b` with
//! PyTorch's `nn.Linear` init (`U(±1/√F)`).
//!
//! The pooling is the only step that needs the feature map, so
//! [`Pool::try_apply`] produces the pooled vector the head starts from (the
//! frozen-phase feature cache stores exactly that vector: `[max, mean]`,
//! 2C floats per image, which determines the head's output as the map
//! does and is `h·w/2` times smaller).
//!
//! dfdx 0.13 can only describe tensors of compile-time shape in a
//! `TensorCollection`, so the head is plain runtime-shaped tensors
//! (`(usize, usize)`, `(usize,)`), updated by
//! [`GroupOptimisers`](super::optimiser::GroupOptimisers) through
//! [`Head::try_visit_params`], and the trainer traces with
//! `Gradients::leaky()` so the head's gradients survive the backward pass.
//!
//! ```
//! use dfdx::prelude::*;
//! use polytune::train::head::{Head, HeadKind, SeededDropout};
//!
//! let dev = Cpu::default();
//! let mut head = Head::new(&dev, HeadKind::Fastai, 16, 7, /* seed */ 1).unwrap();
//! assert_eq!(head.input_dim(), 32); // [max, mean] of 16 channels
//! let x: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, 32));
//! let mut drop = SeededDropout::new(1);
//! let logits = head.try_forward_train(x.clone(), &mut drop).unwrap();
//! assert_eq!(logits.shape().concrete(), [4, 7]);
//! let eval = head.try_forward_eval(x).unwrap(); // running statistics, no dropout
//! assert_eq!(eval.shape().concrete(), [4, 7]);
//! ```

use dfdx::prelude::*;
use poly_loss::nn::ops::{try_global_avg_pool2d, try_max_pool2d};
use poly_loss::nn::VisionDevice;

use crate::rng::{names, Stream};

/// A batch of logits with the class count at run time: `(batch, classes)`.
pub type RuntimeLogits<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;
/// A batch of pooled features with the width at run time: `(batch, width)`.
pub type RuntimeFeatures<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;

/// Which head a run trains (`[train] head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// fastai's `create_head`: concat pool, BN, dropout, 512 hidden, no bias.
    Fastai,
    /// One linear layer on average-pooled features (torchvision's `fc`).
    Linear,
}

impl HeadKind {
    /// Every head, in the order shown in messages.
    pub const ALL: [HeadKind; 2] = [HeadKind::Fastai, HeadKind::Linear];

    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::Fastai => "fastai",
            HeadKind::Linear => "linear",
        }
    }

    /// The pooling the head starts from.
    pub fn pool(self) -> Pool {
        match self {
            HeadKind::Fastai => Pool::MaxAvg,
            HeadKind::Linear => Pool::Avg,
        }
    }
}

impl std::str::FromStr for HeadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HeadKind::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| "is not a head (expected \"fastai\" or \"linear\")".into())
    }
}

/// Global pooling of the body's feature map into the head's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    /// Mean over h×w: `C` features.
    Avg,
    /// fastai's `AdaptiveConcatPool2d`: `[max over h×w, mean over h×w]`, `2C` features.
    MaxAvg,
}

impl Pool {
    /// A short name (feature cache keys).
    pub fn name(self) -> &'static str {
        match self {
            Pool::Avg => "avg",
            Pool::MaxAvg => "max+avg",
        }
    }

    /// Width of the pooled vector for `channels` channels.
    pub fn width(self, channels: usize) -> usize {
        match self {
            Pool::Avg => channels,
            Pool::MaxAvg => 2 * channels,
        }
    }

    /// Pools `(batch, C, h, w)` into `(batch, width)`, with whatever tape
    /// the map has. The max takes PyTorch's `adaptive_max_pool2d` gradient
    /// (all of it to the first maximum) when the map is square, as every
    /// map of a square image is.
    pub fn try_apply<C: Dim, D: VisionDevice, T: Tape<f32, D> + Merge<T> + std::fmt::Debug>(
        self,
        map: Tensor<(usize, C, usize, usize), f32, D, T>,
    ) -> Result<RuntimeFeatures<D, T>, D::Err> {
        let (b, c, h, w) = *map.shape();
        let c = c.size();
        match self {
            Pool::Avg => Ok(try_global_avg_pool2d(map)?.realize::<(usize, usize)>()),
            Pool::MaxAvg => {
                let for_max = map.with_empty_tape();
                let avg = try_global_avg_pool2d(map)?.realize::<(usize, usize)>();
                let max = if h == w {
                    try_max_pool2d(for_max, h, 1, 0)?.try_reshape_like(&(b, c))?
                } else {
                    for_max
                        .realize::<(usize, usize, usize, usize)>()
                        .try_max::<(usize, usize), Axes2<2, 3>>()?
                };
                (max, avg).try_concat_along(Axis::<1>)
            }
        }
    }
}

/// Where dropout masks come from: `mask(p, len)` is `len` values, each 0
/// with probability `p` and `1 / (1 − p)` otherwise (PyTorch's scaling).
pub trait DropoutSource {
    /// A mask for `len` activations with drop probability `p`.
    fn mask(&mut self, p: f64, len: usize) -> Vec<f32>;
}

/// Dropout masks from the run's [`names::DROPOUT`] stream, so two runs
/// that differ only in ε drop the same units.
pub struct SeededDropout(Stream);

impl SeededDropout {
    /// The stream of a run seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SeededDropout(Stream::new(names::DROPOUT, seed, &[]))
    }
}

impl DropoutSource for SeededDropout {
    fn mask(&mut self, p: f64, len: usize) -> Vec<f32> {
        let keep = (1.0 / (1.0 - p)) as f32;
        (0..len)
            .map(|_| {
                let u = self.0.unit();
                if u < p {
                    0.0
                } else {
                    keep
                }
            })
            .collect()
    }
}

/// `BatchNorm1d` over `(batch, n)`: γ, β trained; running statistics on
/// the host (they are only read in evaluation).
#[derive(Clone, Debug)]
pub struct BatchNorm1d<D: Storage<f32>> {
    /// γ, `(n,)`.
    pub weight: Tensor<(usize,), f32, D>,
    /// β, `(n,)`.
    pub bias: Tensor<(usize,), f32, D>,
    /// Running mean.
    pub running_mean: Vec<f32>,
    /// Running (unbiased) variance.
    pub running_var: Vec<f32>,
}

/// PyTorch's `BatchNorm1d` defaults.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl<D: Device<f32>> BatchNorm1d<D> {
    /// fastai's `BatchNorm(n, ndim=1)`: γ = 1, β = 1e-3, statistics 0 / 1.
    pub fn fastai(dev: &D, n: usize) -> Result<Self, D::Err> {
        Ok(BatchNorm1d {
            weight: dev.try_tensor_from_vec(vec![1.0; n], (n,))?,
            bias: dev.try_tensor_from_vec(vec![1e-3; n], (n,))?,
            running_mean: vec![0.0; n],
            running_var: vec![1.0; n],
        })
    }

    /// Train mode: normalise with the batch's statistics (biased variance)
    /// and update the running ones (unbiased variance, momentum 0.1).
    pub fn try_forward_train<T: Tape<f32, D> + Merge<T>>(
        &mut self,
        x: Tensor<(usize, usize), f32, D, T>,
    ) -> Result<RuntimeFeatures<D, T>, D::Err> {
        let (b, n) = *x.shape();
        let host = x.as_vec();
        let mut mean = vec![0.0f64; n];
        for row in host.chunks_exact(n) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= b as f64);
        let mut var = vec![0.0f64; n];
        for row in host.chunks_exact(n) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let unbiased = (b as f64 - 1.0).max(1.0);
        for k in 0..n {
            let rm = &mut self.running_mean[k];
            *rm = ((1.0 - BN_MOMENTUM) * *rm as f64 + BN_MOMENTUM * mean[k]) as f32;
            let rv = &mut self.running_var[k];
            *rv = ((1.0 - BN_MOMENTUM) * *rv as f64 + BN_MOMENTUM * var[k] / unbiased) as f32;
        }
        let shape = (b, n);
        let xhat = x.try_normalize::<Axis<0>>(BN_EPS)?;
        let g = self
            .weight
            .retaped::<T>()
            .try_broadcast_like::<_, Axis<0>>(&shape)?;
        let beta = self
            .bias
            .retaped::<T>()
            .try_broadcast_like::<_, Axis<0>>(&shape)?;
        xhat.try_mul(g)?.try_add(beta)
    }

    /// Eval mode: the running statistics, `x · s + t` with
    /// `s = γ / √(var + ε)`, `t = β − mean · s`.
    pub fn try_forward_eval(
        &self,
        x: Tensor<(usize, usize), f32, D>,
    ) -> Result<Tensor<(usize, usize), f32, D>, D::Err> {
        let shape = *x.shape();
        let n = shape.1;
        let (g, b) = (self.weight.as_vec(), self.bias.as_vec());
        let mut s = vec![0.0f32; n];
        let mut t = vec![0.0f32; n];
        for k in 0..n {
            let sk = g[k] as f64 / (self.running_var[k] as f64 + BN_EPS).sqrt();
            s[k] = sk as f32;
            t[k] = (b[k] as f64 - self.running_mean[k] as f64 * sk) as f32;
        }
        let dev = x.device().clone();
        let s = dev
            .try_tensor_from_vec(s, (n,))?
            .try_broadcast_like::<_, Axis<0>>(&shape)?;
        let t = dev
            .try_tensor_from_vec(t, (n,))?
            .try_broadcast_like::<_, Axis<0>>(&shape)?;
        x.try_mul(s)?.try_add(t)
    }
}

/// `x · Wᵀ (+ b)` for `x: (batch, in)`, `W: (out, in)`.
fn linear<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(
    x: Tensor<(usize, usize), f32, D, T>,
    weight: &Tensor<(usize, usize), f32, D>,
    bias: Option<&Tensor<(usize,), f32, D>>,
) -> Result<RuntimeFeatures<D, T>, D::Err> {
    let batch = x.shape().0;
    let w = weight
        .retaped::<T>()
        .try_permute::<(usize, usize), Axes2<1, 0>>()?;
    let y = x.try_matmul(w)?;
    match bias {
        None => Ok(y),
        Some(b) => {
            let out = b.shape().0;
            y.try_add(
                b.retaped::<T>()
                    .try_broadcast_like::<(usize, usize), Axis<0>>(&(batch, out))?,
            )
        }
    }
}

/// `x ⊙ mask` with a mask from `source` (identity for `p = 0`).
fn dropout<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<(usize, usize), f32, D, T>,
    p: f64,
    source: &mut dyn DropoutSource,
) -> Result<RuntimeFeatures<D, T>, D::Err> {
    if p <= 0.0 {
        return Ok(x);
    }
    let shape = *x.shape();
    let mask = source.mask(p, shape.0 * shape.1);
    let m = x.device().clone().try_tensor_from_vec(mask, shape)?;
    x.try_mul(m)
}

/// The layers of a head.
// One head per run: the size difference between the variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum HeadLayers<D: Storage<f32>> {
    /// `y = x · Wᵀ + b`.
    Linear {
        /// `(classes, in)`, torchvision's `fc.weight`.
        weight: Tensor<(usize, usize), f32, D>,
        /// `(classes,)`, torchvision's `fc.bias`.
        bias: Tensor<(usize,), f32, D>,
    },
    /// fastai's `create_head` (see the module docs).
    Fastai {
        /// `BatchNorm1d(2C)` (fastai's `head.2`).
        bn1: BatchNorm1d<D>,
        /// `Linear(2C, hidden, bias=False)` weight (`head.4`).
        lin1: Tensor<(usize, usize), f32, D>,
        /// `BatchNorm1d(hidden)` (`head.6`).
        bn2: BatchNorm1d<D>,
        /// `Linear(hidden, classes, bias=False)` weight (`head.8`).
        lin2: Tensor<(usize, usize), f32, D>,
        /// Dropout before `lin1` and before `lin2` (0.25, 0.5).
        ps: [f64; 2],
    },
}

/// A classification head with the class count at run time.
#[derive(Clone, Debug)]
pub struct Head<D: Storage<f32>> {
    kind: HeadKind,
    channels: usize,
    classes: usize,
    /// The layers (public for tests and exports).
    pub layers: HeadLayers<D>,
}

/// A trainable tensor of a head, as handed to an optimiser.
pub enum HeadParam<'a, D: Storage<f32>> {
    /// A vector (a bias, a batch-norm γ or β).
    Vector(&'a mut Tensor<(usize,), f32, D>),
    /// A weight matrix.
    Matrix(&'a mut Tensor<(usize, usize), f32, D>),
}

impl<'a, D: Storage<f32>> HeadParam<'a, D> {
    /// Whether weight decay applies: fastai's `wd_bn_bias=False` exempts
    /// batch-norm parameters and biases (the vectors).
    pub fn decays(&self) -> bool {
        matches!(self, HeadParam::Matrix(_))
    }
}

/// fastai's hidden width (`lin_ftrs=[512]`).
pub const FASTAI_HIDDEN: usize = 512;

impl<D: Device<f32>> Head<D> {
    /// A `kind` head on `channels` body channels for `classes` classes,
    /// initialised as fastai / PyTorch do (see the module docs) from a
    /// stream keyed by `seed`.
    pub fn new(
        dev: &D,
        kind: HeadKind,
        channels: usize,
        classes: usize,
        seed: u64,
    ) -> Result<Self, D::Err> {
        Self::with_hidden(dev, kind, channels, classes, FASTAI_HIDDEN, seed)
    }

    /// [`Self::new`] with another hidden width for the fastai head.
    pub fn with_hidden(
        dev: &D,
        kind: HeadKind,
        channels: usize,
        classes: usize,
        hidden: usize,
        seed: u64,
    ) -> Result<Self, D::Err> {
        let mut rng = Stream::new(names::HEAD_INIT, seed, &[]);
        let mut unit = move || rng.unit();
        let layers = match kind {
            HeadKind::Linear => {
                let f = channels;
                let bound = 1.0 / (f as f64).sqrt();
                let mut draw = |n: usize| -> Vec<f32> {
                    (0..n)
                        .map(|_| ((2.0 * unit() - 1.0) * bound) as f32)
                        .collect()
                };
                let w = draw(classes * f);
                let b = draw(classes);
                HeadLayers::Linear {
                    weight: dev.try_tensor_from_vec(w, (classes, f))?,
                    bias: dev.try_tensor_from_vec(b, (classes,))?,
                }
            }
            HeadKind::Fastai => {
                let f = 2 * channels;
                // Kaiming normal, fan_in, ReLU gain: N(0, 2 / fan_in), by Box–Muller.
                let mut kaiming = |rows: usize, cols: usize| -> Vec<f32> {
                    let std = (2.0 / cols as f64).sqrt();
                    (0..rows * cols)
                        .map(|_| {
                            let u1 = unit().max(f64::MIN_POSITIVE);
                            let u2 = unit();
                            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                            (z * std) as f32
                        })
                        .collect()
                };
                let w1 = kaiming(hidden, f);
                let w2 = kaiming(classes, hidden);
                HeadLayers::Fastai {
                    bn1: BatchNorm1d::fastai(dev, f)?,
                    lin1: dev.try_tensor_from_vec(w1, (hidden, f))?,
                    bn2: BatchNorm1d::fastai(dev, hidden)?,
                    lin2: dev.try_tensor_from_vec(w2, (classes, hidden))?,
                    ps: [0.25, 0.5],
                }
            }
        };
        Ok(Head {
            kind,
            channels,
            classes,
            layers,
        })
    }

    /// The head's kind.
    pub fn kind(&self) -> HeadKind {
        self.kind
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Width of the pooled input (`C` or `2C`).
    pub fn input_dim(&self) -> usize {
        self.kind.pool().width(self.channels)
    }

    /// Training forward on pooled features `(batch, input_dim)`: batch-norm
    /// with batch statistics (running ones updated), dropout from `drop`.
    pub fn try_forward_train<T: Tape<f32, D> + Merge<T>>(
        &mut self,
        x: RuntimeFeatures<D, T>,
        drop: &mut dyn DropoutSource,
    ) -> Result<RuntimeLogits<D, T>, D::Err> {
        match &mut self.layers {
            HeadLayers::Linear { weight, bias } => linear(x, weight, Some(bias)),
            HeadLayers::Fastai {
                bn1,
                lin1,
                bn2,
                lin2,
                ps,
            } => {
                let x = bn1.try_forward_train(x)?;
                let x = dropout(x, ps[0], drop)?;
                let x = linear(x, lin1, None)?.try_relu()?;
                let x = bn2.try_forward_train(x)?;
                let x = dropout(x, ps[1], drop)?;
                linear(x, lin2, None)
            }
        }
    }

    /// Evaluation forward: running statistics, no dropout, no tape.
    pub fn try_forward_eval(&self, x: RuntimeFeatures<D>) -> Result<RuntimeLogits<D>, D::Err> {
        match &self.layers {
            HeadLayers::Linear { weight, bias } => linear(x, weight, Some(bias)),
            HeadLayers::Fastai {
                bn1,
                lin1,
                bn2,
                lin2,
                ..
            } => {
                let x = bn1.try_forward_eval(x)?;
                let x = linear(x, lin1, None)?.try_relu()?;
                let x = bn2.try_forward_eval(x)?;
                linear(x, lin2, None)
            }
        }
    }

    /// Calls `f` on every trainable tensor, in a fixed order.
    pub fn try_visit_params<E>(
        &mut self,
        mut f: impl FnMut(HeadParam<'_, D>) -> Result<(), E>,
    ) -> Result<(), E> {
        match &mut self.layers {
            HeadLayers::Linear { weight, bias } => {
                f(HeadParam::Matrix(weight))?;
                f(HeadParam::Vector(bias))
            }
            HeadLayers::Fastai {
                bn1,
                lin1,
                bn2,
                lin2,
                ..
            } => {
                f(HeadParam::Vector(&mut bn1.weight))?;
                f(HeadParam::Vector(&mut bn1.bias))?;
                f(HeadParam::Matrix(lin1))?;
                f(HeadParam::Vector(&mut bn2.weight))?;
                f(HeadParam::Vector(&mut bn2.bias))?;
                f(HeadParam::Matrix(lin2))
            }
        }
    }

    /// Every tensor of the head with its name, shape and values: the linear
    /// head as `<fc>.weight`, `<fc>.bias` (torchvision's names, `fc` =
    /// `linear_name`), fastai's as the indices of its `nn.Sequential`
    /// under `head.` (`head.2.weight`, `head.2.running_mean`, `head.4.weight`,
    /// …, `head.8.weight`).
    pub fn export(&self, linear_name: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mat = |t: &Tensor<(usize, usize), f32, D>| {
            let (r, c) = *t.shape();
            (vec![r, c], t.as_vec())
        };
        let mut out = Vec::new();
        match &self.layers {
            HeadLayers::Linear { weight, bias } => {
                let (s, v) = mat(weight);
                out.push((format!("{linear_name}.weight"), s, v));
                out.push((
                    format!("{linear_name}.bias"),
                    vec![self.classes],
                    bias.as_vec(),
                ));
            }
            HeadLayers::Fastai {
                bn1,
                lin1,
                bn2,
                lin2,
                ..
            } => {
                let bn = |i: usize, bn: &BatchNorm1d<D>, out: &mut Vec<_>| {
                    let n = bn.running_mean.len();
                    out.push((format!("head.{i}.weight"), vec![n], bn.weight.as_vec()));
                    out.push((format!("head.{i}.bias"), vec![n], bn.bias.as_vec()));
                    out.push((
                        format!("head.{i}.running_mean"),
                        vec![n],
                        bn.running_mean.clone(),
                    ));
                    out.push((
                        format!("head.{i}.running_var"),
                        vec![n],
                        bn.running_var.clone(),
                    ));
                };
                bn(2, bn1, &mut out);
                let (s, v) = mat(lin1);
                out.push(("head.4.weight".into(), s, v));
                bn(6, bn2, &mut out);
                let (s, v) = mat(lin2);
                out.push(("head.8.weight".into(), s, v));
            }
        }
        out
    }
}
