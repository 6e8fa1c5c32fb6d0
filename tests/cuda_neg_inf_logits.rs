//! −inf logits (a masked class) where PyTorch's `cross_entropy` is finite:
//! class targets, no label smoothing, the target's own logit finite. The
//! loss and gradient must equal those with the −inf replaced by −1e30 (the
//! same probabilities, exactly 0 in f32, through the well-tested finite
//! path), on the CPU and — with `--features cuda` on a GPU — on CUDA.

use dfdx::prelude::*;
use poly_loss::prelude::*;

const B: usize = 4;
const C: usize = 6;
const TARGETS: [usize; B] = [0, 2, 5, 3];

/// Row-major logits with a masked class (never the target) in every row.
fn logits(masked: f32) -> Vec<f32> {
    let mut z: Vec<f32> = (0..B * C)
        .map(|i| ((i * 7) % 11) as f32 * 0.37 - 1.5)
        .collect();
    for (i, &t) in TARGETS.iter().enumerate() {
        z[i * C + (t + 1) % C] = masked;
        z[i * C + (t + 3) % C] = masked;
    }
    z
}

fn losses() -> Vec<(&'static str, PolyLoss<1>)> {
    let w: Vec<f32> = (0..C).map(|k| 0.5 + k as f32 * 0.25).collect();
    let focal = PolyKind::SoftmaxFocal {
        gamma: 2.0,
        alpha: None,
    };
    vec![
        ("plain", PolyLoss::new([1.0])),
        ("weighted", PolyLoss::new([1.0]).with_weight(w.clone())),
        ("focal", PolyLoss::new([1.0]).with_kind(focal)),
        (
            "focal weighted sum",
            PolyLoss::new([1.0])
                .with_kind(focal)
                .with_weight(w)
                .with_reduction(Reduction::Sum),
        ),
    ]
}

/// (loss, gradient) of `loss` on `$dev` with the masked logits at `$masked`.
macro_rules! run {
    ($dev:expr, $loss:expr, $masked:expr) => {{
        let x: Tensor<(usize, usize), f32, _> = $dev.tensor_from_vec(logits($masked), (B, C));
        let l = $loss.forward(x.leaky_trace(), &TARGETS);
        let v = l.array();
        (v, l.backward().get(&x).as_vec())
    }};
}

/// The −inf run against the −1e30 run, for every loss of [`losses`].
macro_rules! check {
    ($dev:expr, $device:expr) => {{
        for (name, loss) in losses() {
            let device = $device;
            let (v, g) = run!($dev, loss, f32::NEG_INFINITY);
            let (rv, rg) = run!($dev, loss, -1e30);
            assert!(v.is_finite(), "{device} {name}: loss {v} with -inf logits");
            assert!(
                (v - rv).abs() <= 1e-6 * (1.0 + rv.abs()),
                "{device} {name}: loss {v} with -inf vs {rv} with -1e30"
            );
            for (k, (a, b)) in g.iter().zip(&rg).enumerate() {
                assert!(
                    a.is_finite() && (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "{device} {name}: grad[{k}] {a} with -inf vs {b} with -1e30"
                );
            }
        }
    }};
}

#[test]
fn cpu_neg_inf_logits_give_the_finite_loss() {
    check!(Cpu::default(), "cpu");
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_neg_inf_logits_give_the_finite_loss() {
    check!(Cuda::default(), "cuda");
}
