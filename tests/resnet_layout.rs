//! Our ResNet-50 / ResNet-18 have exactly torchvision's `state_dict` layout
//! (names and shapes, committed by `tests/reference/resnet_reference.py`),
//! torchvision's parameter counts and initialisation, and survive a
//! save → load round trip bit for bit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dfdx::nn::{LoadFromSafetensors, SaveToSafetensors};
use dfdx::prelude::*;
use poly_loss::nn::pretrained::{load_pretrained, tensor_names, LoadOptions};
use poly_loss::nn::resnet::{
    builders, BnMode, ImageClassifier, Images, ResNet18, ResNet50, SmallResNet,
};

/// `(key, shape)` of torchvision's model `model` (`resnet50`, `resnet18`),
/// without `num_batches_tracked` (a step counter our batch-norm does not keep).
fn torchvision_keys(model: &str) -> BTreeSet<(String, Vec<usize>)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/resnet_torchvision_keys.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let keys: BTreeSet<_> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let (m, key, shape) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
            (m == model && !key.ends_with("num_batches_tracked")).then(|| {
                let shape = shape
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|d| d.parse().unwrap())
                    .collect();
                (key.to_string(), shape)
            })
        })
        .collect();
    assert!(
        keys.len() > 100,
        "{model}: too few keys in the reference list"
    );
    keys
}

fn our_keys<M: TensorCollection<f32, Cpu>>(m: &M) -> BTreeSet<(String, Vec<usize>)> {
    let names = tensor_names(m);
    let set: BTreeSet<_> = names.iter().cloned().collect();
    assert_eq!(set.len(), names.len(), "duplicate tensor names");
    set
}

fn assert_same_keys(ours: BTreeSet<(String, Vec<usize>)>, theirs: BTreeSet<(String, Vec<usize>)>) {
    let missing: Vec<_> = theirs.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&theirs).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing (torchvision has, we lack): {missing:?}\nextra (we have, torchvision lacks): {extra:?}"
    );
}

#[test]
fn resnet50_has_torchvision_state_dict_layout_and_init() {
    let dev = Cpu::default();
    let model = dev.build_module::<builders::ResNet50<1000>, f32>();
    assert_same_keys(our_keys(&model), torchvision_keys("resnet50"));
    // torchvision: sum(p.numel() for p in resnet50().parameters())
    assert_eq!(model.num_trainable_params(), 25_557_032);

    // Kaiming normal, fan-out, ReLU gain: std = sqrt(2 / (out · k²)).
    let w = model.layer3.0.conv2.weight.as_vec(); // (256, 256, 3, 3)
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let want = (2.0 / (256.0 * 9.0f64)).sqrt();
    assert!(mean.abs() < 0.02 * want, "mean {mean}");
    assert!((std / want - 1.0).abs() < 0.02, "std {std} vs {want}");
    // Batch-norm: γ = 1, β = 0, running stats 0 / 1.
    assert!(model.layer4.2.bn3.weight.as_vec().iter().all(|&v| v == 1.0));
    assert!(model.layer4.2.bn3.bias.as_vec().iter().all(|&v| v == 0.0));
    assert!(model
        .stem
        .bn1
        .running_mean
        .as_vec()
        .iter()
        .all(|&v| v == 0.0));
    assert!(model
        .stem
        .bn1
        .running_var
        .as_vec()
        .iter()
        .all(|&v| v == 1.0));
    // fc: U(±1/√2048).
    let bound = 1.0 / 2048f32.sqrt();
    let fc = model.fc.weight.as_vec();
    assert!(fc.iter().all(|v| v.abs() <= bound));
    assert!(fc.iter().any(|v| v.abs() > 0.9 * bound));
}

#[test]
fn resnet18_has_torchvision_state_dict_layout() {
    let dev = Cpu::default();
    let model = ResNet18::<1000, f32, Cpu>::build(&dev);
    assert_same_keys(our_keys(&model), torchvision_keys("resnet18"));
    assert_eq!(model.num_trainable_params(), 11_689_512);
}

#[test]
fn resnet50_runs_a_tiny_input() {
    let dev = Cpu::default();
    let mut model = dev.build_module::<builders::ResNet50<7>, f32>();
    let x: Images<Cpu> = dev.sample_normal_like(&(2, Const::<3>, 32, 32));
    let y = model.try_forward_logits_eval(x.clone()).unwrap();
    assert_eq!(y.shape().concrete(), [2, 7]);
    assert!(y.as_vec().iter().all(|v| v.is_finite()));
    let f = model.forward_features(x, BnMode::Train);
    assert_eq!(f.shape().concrete(), [2, 2048]);
    assert!(
        f.as_vec().iter().all(|v| v.is_finite() && *v >= 0.0),
        "pooled ReLU output"
    );
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poly_loss_resnet_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn save_then_load_gives_bit_identical_outputs() {
    let dev = Cpu::default();
    let mut a = dev.build_module::<builders::SmallResNet<10>, f32>();
    // Move the running statistics away from their defaults first.
    let x: Images<Cpu> = dev.sample_normal_like(&(6, Const::<3>, 12, 12));
    for _ in 0..3 {
        let _ = a.forward_logits(x.clone(), BnMode::Train);
    }
    let want_eval = a.try_forward_logits_eval(x.clone()).unwrap().as_vec();
    let path = temp_path("small.safetensors");
    a.save_safetensors(&path).unwrap();

    // dfdx's own loader and ours, into freshly initialised models.
    let mut b = SmallResNet::<10, f32, Cpu>::build(&dev);
    b.load_safetensors(&path).unwrap();
    let mut c = SmallResNet::<10, f32, Cpu>::build(&dev);
    let report = load_pretrained(&mut c, &path, &LoadOptions::strict()).unwrap();
    assert_eq!(report.loaded.len(), tensor_names(&c).len());
    for m in [&mut b, &mut c] {
        assert_eq!(
            m.try_forward_logits_eval(x.clone()).unwrap().as_vec(),
            want_eval
        );
    }
    // Train mode too (batch statistics), and the updated running stats.
    let want_train = a.forward_logits(x.clone(), BnMode::Train).as_vec();
    assert_eq!(
        c.forward_logits(x.clone(), BnMode::Train).as_vec(),
        want_train
    );
    assert_eq!(
        c.layer2.0.bn1.running_var.as_vec(),
        a.layer2.0.bn1.running_var.as_vec()
    );
}

#[test]
fn imagenet_checkpoint_into_fewer_classes_keeps_a_fresh_head() {
    let dev = Cpu::default();
    let imagenet = dev.build_module::<builders::SmallResNet<1000>, f32>();
    let path = temp_path("small1000.safetensors");
    imagenet.save_safetensors(&path).unwrap();
    let mut model = dev.build_module::<builders::SmallResNet<5>, f32>();
    let head_before = model.fc.weight.as_vec();
    let report = model.load_pretrained(&path).unwrap();
    let head = report.fresh_head.expect("head mismatch reported");
    assert_eq!((head.file_classes, head.model_classes), (1000, 5));
    assert_eq!(head.keys, ["fc.weight", "fc.bias"]);
    assert_eq!(model.fc.weight.as_vec(), head_before);
    assert_eq!(
        model.layer2.0.downsample.conv.weight.as_vec(),
        imagenet.layer2.0.downsample.conv.weight.as_vec()
    );

    // A ResNet-50 body cannot take a SmallResNet file: keyed error.
    let mut r50 = ResNet50::<5, f32, Cpu>::build(&dev);
    let err = r50.load_pretrained(&path).unwrap_err().to_string();
    assert!(
        err.contains(
            "`conv1.weight` has shape [8, 3, 3, 3] in the file but [64, 3, 7, 7] in the model"
        ),
        "{err}"
    );
    assert!(err.contains("missing `layer3.0.conv1.weight`"), "{err}");
}
