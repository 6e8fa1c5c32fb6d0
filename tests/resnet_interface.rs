//! The trainer-facing interface: batch-norm modes, body/head split, layer
//! groups with their own optimisers, zero-init of residual branches, and a
//! small ResNet that actually learns.

use std::any::Any;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::optim::{Adam, AdamConfig, Optimizer, OptimizerUpdateError, Sgd, SgdConfig};
use dfdx::prelude::*;
use poly_loss::nn::pretrained::tensor_names;
use poly_loss::nn::resnet::{
    builders, BnMode, ImageClassifier, Images, LayerGroup, LayerGroupVisitor, Logits, ResNet18,
    SmallResNet, Stage,
};

type Small = SmallResNet<3, f32, Cpu>;

fn images(dev: &Cpu, n: usize, hw: usize) -> Images<Cpu> {
    dev.sample_normal_like(&(n, Const::<3>, hw, hw))
}

#[test]
fn batch_norm_modes_and_running_statistics() {
    let dev = Cpu::default();
    let mut m = dev.build_module::<builders::SmallResNet<3>, f32>();
    let x = images(&dev, 4, 9);
    let stats = |m: &Small| m.layer2.0.bn2.running_mean.as_vec();
    let before = stats(&m);

    // Eval without a tape: running statistics untouched, same as `Module`.
    let a = m.forward_logits(x.clone(), BnMode::Eval).as_vec();
    assert_eq!(stats(&m), before);
    assert_eq!(m.forward(x.clone()).as_vec(), a);
    // The `&self` body forward is what `BnMode::Eval` runs.
    let body = m.try_forward_body_eval(x.clone()).unwrap().as_vec();
    assert_eq!(m.forward_body(x.clone(), BnMode::Eval).as_vec(), body);

    // Eval under a tape (frozen statistics, fine-tuning): gradients reach
    // the convolutions and the batch-norm affine parameters; stats stay.
    let grads = m.alloc_grads();
    let logits = m.forward_logits(x.trace(grads), BnMode::Eval);
    assert_eq!(logits.as_vec(), a, "a tape does not change eval outputs");
    let grads = logits.square().mean().backward();
    assert_eq!(stats(&m), before);
    let g = grads.get(&m.layer1.0.bn1.weight).as_vec();
    assert!(g.iter().any(|v| *v != 0.0));
    assert!(grads
        .get(&m.stem.conv1.weight)
        .as_vec()
        .iter()
        .any(|v| *v != 0.0));

    // Train mode: batch statistics (different outputs), running stats move,
    // and `ModuleMut` is the same thing.
    let mut m2 = m.clone();
    let t = m.forward_logits(x.clone(), BnMode::Train).as_vec();
    assert_ne!(t, a);
    assert_ne!(stats(&m), before);
    assert_eq!(m2.forward_mut(x.clone()).as_vec(), t);
    assert_eq!(stats(&m2), stats(&m));
}

#[test]
fn head_on_cached_features_equals_the_full_forward() {
    let dev = Cpu::default();
    let mut m = dev.build_module::<builders::SmallResNet<3>, f32>();
    let x = images(&dev, 5, 8);
    // Frozen body: features without a tape, cached as plain tensors.
    let cached = m.try_forward_features(x.clone(), BnMode::Eval).unwrap();
    assert_eq!(cached.shape().concrete(), [5, 16]);
    let full = m
        .try_forward_logits(x.clone(), BnMode::Eval)
        .unwrap()
        .as_vec();
    assert_eq!(m.forward_head(cached.clone()).as_vec(), full);

    // The head trains alone on the cached features: only its tensors get
    // gradients and move.
    let body_before = m.layer2.0.conv2.weight.as_vec();
    let mut opt = Sgd::new(
        m.head(),
        SgdConfig {
            lr: 0.5,
            ..Default::default()
        },
    );
    let grads = m.head().alloc_grads();
    let logits = m.forward_head(cached.trace(grads));
    let target = dev
        .tensor([[1.0f32, 0.0, 0.0]; 5])
        .realize::<(usize, Const<3>)>();
    let loss0 = cross_entropy_with_logits_loss(logits, target.clone());
    let l0 = loss0.array();
    let grads = loss0.backward();
    opt.update(m.head_mut(), &grads).unwrap();
    let l1 = cross_entropy_with_logits_loss(m.forward_head(cached), target).array();
    assert!(l1 < l0, "head step lowers the loss: {l0} -> {l1}");
    assert_eq!(m.layer2.0.conv2.weight.as_vec(), body_before);
}

/// Records each group's tensor names (prefixed as in the whole model).
struct Names(Vec<(LayerGroup, Vec<String>)>);

impl LayerGroupVisitor<Cpu> for Names {
    type Err = ();
    fn visit<M: TensorCollection<f32, Cpu> + 'static>(
        &mut self,
        group: LayerGroup,
        module: &mut M,
    ) -> Result<(), ()> {
        // The stem's tensors sit at the top level (`conv1.*`, `bn1.*`).
        let prefix = group.prefix();
        let names = tensor_names(module)
            .into_iter()
            .map(|(k, _)| format!("{prefix}{k}"))
            .collect();
        self.0.push((group, names));
        Ok(())
    }
}

fn groups_partition_the_model<M: ImageClassifier<Cpu>>(mut m: M) {
    let mut v = Names(Vec::new());
    m.try_visit_groups(&mut v).unwrap();
    let modules: Vec<(&str, usize)> = v.0.iter().map(|(g, _)| (g.module, g.index)).collect();
    assert_eq!(modules, M::MODULES);
    assert_eq!(M::GROUPS.len(), 3, "fastai's split: early | late | head");
    assert_eq!(M::MODULES.last().unwrap().0, M::HEAD);
    for (i, (g, _)) in v.0.iter().enumerate() {
        assert_eq!(g.slot, i);
        assert_eq!(g.name, M::GROUPS[g.index]);
        assert_eq!(g.is_head, g.index + 1 == M::GROUPS.len());
        assert_eq!(g.is_head, g.module == M::HEAD);
    }
    let all: Vec<String> = v.0.into_iter().flat_map(|(_, n)| n).collect();
    let model: Vec<String> = tensor_names(&m).into_iter().map(|(k, _)| k).collect();
    assert_eq!(all, model, "groups cover every tensor once, in model order");
}

#[test]
fn layer_groups_partition_small_and_resnet18() {
    let dev = Cpu::default();
    groups_partition_the_model(Small::build(&dev));
    groups_partition_the_model(ResNet18::<4, f32, Cpu>::build(&dev));
}

/// One SGD per group, created on first visit, all reading the same gradients.
struct PerGroupSgd<'a> {
    lrs: Vec<f64>,
    opts: Vec<Option<Box<dyn Any>>>,
    grads: &'a Gradients<f32, Cpu>,
}

impl LayerGroupVisitor<Cpu> for PerGroupSgd<'_> {
    type Err = OptimizerUpdateError<CpuError>;
    fn visit<M: TensorCollection<f32, Cpu> + 'static>(
        &mut self,
        group: LayerGroup,
        module: &mut M,
    ) -> Result<(), Self::Err> {
        let lr = self.lrs[group.index];
        let opt = self.opts[group.slot].get_or_insert_with(|| {
            Box::new(Sgd::<M, f32, Cpu>::new(
                module,
                SgdConfig {
                    lr,
                    ..Default::default()
                },
            ))
        });
        opt.downcast_mut::<Sgd<M, f32, Cpu>>()
            .unwrap()
            .update(module, self.grads)
    }
}

#[test]
fn per_group_optimisers_share_one_gradients() {
    let dev = Cpu::default();
    let mut m = Small::build(&dev);
    let x = images(&dev, 4, 8);
    let target = dev
        .tensor([[0.0f32, 1.0, 0.0]; 4])
        .realize::<(usize, Const<3>)>();
    let grads = m.alloc_grads();
    let logits = m.forward_logits(x.trace(grads), BnMode::Train);
    let grads = cross_entropy_with_logits_loss(logits, target).backward();

    let before = m.clone();
    // Frozen stem and layer1 (group 0, lr 0), layer2 lr 0.1, head lr 1.
    let mut v = PerGroupSgd {
        lrs: vec![0.0, 0.1, 1.0],
        opts: (0..4).map(|_| None).collect(),
        grads: &grads,
    };
    m.try_visit_groups(&mut v).unwrap();
    assert_eq!(
        m.stem.conv1.weight.as_vec(),
        before.stem.conv1.weight.as_vec()
    );
    assert_eq!(
        m.layer1.0.conv2.weight.as_vec(),
        before.layer1.0.conv2.weight.as_vec()
    );
    // Each group moved by exactly −lr · gradient.
    let g = grads.get(&before.layer2.0.conv1.weight).as_vec();
    let (new, old) = (
        m.layer2.0.conv1.weight.as_vec(),
        before.layer2.0.conv1.weight.as_vec(),
    );
    for ((n, o), g) in new.iter().zip(old).zip(g) {
        assert!((n - (o - 0.1 * g)).abs() <= 1e-6 * (1.0 + o.abs()));
    }
    let g = grads.get(&before.fc.bias).as_vec();
    for ((n, o), g) in
        m.fc.bias
            .as_vec()
            .iter()
            .zip(before.fc.bias.as_vec())
            .zip(g)
    {
        assert!((n - (o - g)).abs() <= 1e-6);
    }
}

#[test]
fn zero_init_residual_makes_identity_blocks() {
    let dev = Cpu::default();
    let mut m = Small::build(&dev);
    m.try_zero_init_residual().unwrap();
    assert!(m.layer1.0.bn2.weight.as_vec().iter().all(|&v| v == 0.0));
    assert!(m.layer2.0.bn2.weight.as_vec().iter().all(|&v| v == 0.0));
    assert!(m.stem.bn1.weight.as_vec().iter().all(|&v| v == 1.0));
    // relu(0·… + 0 + x) = x for the non-negative activations a block receives.
    let x = images(&dev, 2, 8).relu();
    let x8 = m.stem.try_forward_eval(x).unwrap();
    let y = m.layer1.try_forward_eval(x8.clone()).unwrap();
    assert_eq!(y.as_vec(), x8.as_vec());
}

/// A 3-class toy task: the class is the channel that carries a bright 3×3
/// patch at a random place, on noise.
fn toy_batch(
    dev: &Cpu,
    rng_seed: u64,
    n: usize,
) -> (Images<Cpu>, Logits<Const<3>, Cpu>, Vec<usize>) {
    let mut state = rng_seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let hw = 10;
    let mut img = vec![0.0f32; n * 3 * hw * hw];
    let mut onehot = vec![0.0f32; n * 3];
    let mut labels = Vec::new();
    for i in 0..n {
        for v in &mut img[i * 300..(i + 1) * 300] {
            *v = (next() % 1000) as f32 / 2000.0 - 0.25;
        }
        let c = next() % 3;
        let (r0, c0) = (next() % (hw - 2), next() % (hw - 2));
        for r in r0..r0 + 3 {
            for col in c0..c0 + 3 {
                img[i * 300 + c * 100 + r * hw + col] += 2.0;
            }
        }
        onehot[i * 3 + c] = 1.0;
        labels.push(c);
    }
    (
        dev.tensor_from_vec(img, (n, Const::<3>, hw, hw)),
        dev.tensor_from_vec(onehot, (n, Const::<3>)),
        labels,
    )
}

#[test]
fn small_resnet_learns_a_toy_task() {
    let dev = Cpu::seed_from_u64(7);
    let mut m = Small::build(&dev);
    let mut opt = Adam::new(
        &m,
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    let mut grads = m.alloc_grads();
    let (vx, _, vlabels) = toy_batch(&dev, 99, 90);
    let mut first = None;
    for step in 0..60 {
        let (x, y, _) = toy_batch(&dev, step, 24);
        let logits = m.forward_logits(x.traced(grads), BnMode::Train);
        let loss = cross_entropy_with_logits_loss(logits, y);
        first.get_or_insert(loss.array());
        grads = loss.backward();
        opt.update(&mut m, &grads).unwrap();
        m.zero_grads(&mut grads);
    }
    let logits = m.try_forward_logits(vx, BnMode::Eval).unwrap().as_vec();
    let correct = vlabels
        .iter()
        .enumerate()
        .filter(|(i, &l)| {
            let row = &logits[i * 3..i * 3 + 3];
            let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == l
        })
        .count();
    assert!(
        correct >= 85,
        "held-out accuracy {correct}/90 (first loss {first:?})"
    );
}
