//! [`Head`]: the classification layer with the class count at run time.
//!
//! The ResNets of `poly_loss::nn::resnet` carry a `Linear<F, C>` head with a
//! compile-time class count, but a CSV or folder data set can have any
//! number of classes. Rather than monomorphising the trainer over class
//! counts, the trainer builds each model with a one-class placeholder `fc`
//! it never uses and trains this head instead: weight `(classes, F)` and
//! bias `(classes,)`, initialised like PyTorch's `nn.Linear`
//! (`U(±1/√F)` for both), with the tensors named `weight` / `bias` so the
//! saved model carries torchvision's `fc.weight` / `fc.bias`.
//!
//! The head is not a dfdx `TensorCollection`: dfdx 0.13 can only describe
//! tensors of compile-time shape there (`TensorOptions` has constructors for
//! `ConstShape`s only). Its optimiser step is dfdx's own Adam kernel
//! ([`HeadAdam`](super::optimiser::HeadAdam)), and the trainer traces with
//! `Gradients::leaky()` so the head's gradients survive the backward pass
//! (the vision ops free their intermediate gradients themselves).
//!
//! ```
//! use dfdx::prelude::*;
//! use polytune::train::Head;
//!
//! let dev = Cpu::default();
//! let head = Head::<Const<16>, f32, Cpu>::new(&dev, 7, /* seed */ 1).unwrap();
//! let x: Tensor<(usize, Const<16>), f32, Cpu> = dev.sample_normal_like(&(4, Const));
//! let logits = head.try_forward(x).unwrap();
//! assert_eq!(logits.shape().concrete(), [4, 7]);
//! ```

use dfdx::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Stream tag of the head's initialisation.
const TAG_HEAD: u64 = 0x6865_6164;

/// A batch of logits with the class count at run time: `(batch, classes)`.
pub type RuntimeLogits<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;

/// A linear classification head `F → classes` with `classes` known at run time.
#[derive(Clone, Debug)]
pub struct Head<F: ConstDim, E: Dtype, D: Storage<E>> {
    /// `(classes, F)`, torchvision's `fc.weight`.
    pub weight: Tensor<(usize, F), E, D>,
    /// `(classes,)`, torchvision's `fc.bias`.
    pub bias: Tensor<(usize,), E, D>,
}

impl<F: ConstDim, D: Device<f32>> Head<F, f32, D> {
    /// A head for `classes` classes initialised as PyTorch's `nn.Linear`
    /// (weight and bias `U(±1/√F)`), drawn from a stream keyed by `seed`.
    pub fn new(dev: &D, classes: usize, seed: u64) -> Result<Self, D::Err> {
        let f = F::SIZE;
        let bound = 1.0 / (f as f64).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ TAG_HEAD.rotate_left(17));
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect()
        };
        let w = draw(classes * f);
        let b = draw(classes);
        Ok(Head {
            weight: dev.try_tensor_from_vec(w, (classes, F::default()))?,
            bias: dev.try_tensor_from_vec(b, (classes,))?,
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.bias.shape().0
    }

    /// `x · Wᵀ + b` for features `(batch, F)`, with whatever tape `x` has
    /// (the weight and bias join it, as in dfdx's `Linear`).
    pub fn try_forward<T: Tape<f32, D>>(
        &self,
        x: Tensor<(usize, F), f32, D, T>,
    ) -> Result<RuntimeLogits<D, T>, D::Err> {
        let batch = x.shape().0;
        let w = self
            .weight
            .retaped::<T>()
            .try_permute::<(F, usize), Axes2<1, 0>>()?;
        let y = x.try_matmul(w)?;
        let b = self
            .bias
            .retaped::<T>()
            .try_broadcast_like::<(usize, usize), Axis<0>>(&(batch, self.classes()))?;
        y.try_add(b)
    }
}
