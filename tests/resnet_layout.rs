//! Our ResNet-50 / ResNet-18 have exactly torchvision's `state_dict` layout
//! (names and shapes, committed by `tests/reference/resnet_reference.py`),
//! torchvision's parameter counts and initialisation, compute torchvision's
//! ResNet-50 forward (against an f64 reference written from its
//! definition), and survive a save → load round trip bit for bit.

use crate::nn_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype, TensorView};
use dfdx::nn::{LoadFromSafetensors, SaveToSafetensors};
use dfdx::prelude::*;
use nn_common::{assert_close, bn_ref, conv_ref, dot, max_pool_ref, rng, to64, uniform, Geo};
use poly_loss::nn::pretrained::{
    load_pretrained, load_pretrained_from_bytes, tensor_names, LoadOptions,
};
use poly_loss::nn::resnet::{
    builders, BnMode, ImageClassifier, Images, ResNet18, ResNet50, SmallResNet,
};
use rand::Rng;

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

/// Deterministic values for every state-dict tensor: conv weights
/// U(±√(3/fan_in)) (unit gain), fc U(±1/√fan_in), batch-norm γ ∈ [0.4, 0.9),
/// β ∈ ±0.2, running mean ∈ ±0.2, running var ∈ [0.5, 2) — none at their
/// defaults, so every term of every layer shows in the output.
fn random_state_dict(names: &[(String, Vec<usize>)]) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut r = rng(2024);
    names
        .iter()
        .map(|(key, shape)| {
            let n: usize = shape.iter().product();
            let u = |r: &mut rand::rngs::StdRng, lo: f32, hi: f32| -> Vec<f32> {
                (0..n).map(|_| r.gen_range(lo..hi)).collect()
            };
            let fan_in = shape[1..].iter().product::<usize>().max(1) as f32;
            let last = key.rsplit('.').next().unwrap_or("");
            let v = match (key.starts_with("fc."), shape.len(), last) {
                (true, _, _) => {
                    let b = 1.0 / 2048f32.sqrt();
                    u(&mut r, -b, b)
                }
                (false, 4, _) => {
                    let b = (3.0 / fan_in).sqrt();
                    u(&mut r, -b, b)
                }
                (false, _, "weight") => u(&mut r, 0.4, 0.9),
                (false, _, "running_var") => u(&mut r, 0.5, 2.0),
                (false, _, "bias" | "running_mean") => u(&mut r, -0.2, 0.2),
                other => panic!("unexpected state-dict entry {key}: {other:?}"),
            };
            (key.clone(), (shape.clone(), v))
        })
        .collect()
}

/// torchvision's ResNet-50 forward (v1.5: stride on the 3×3 conv), written
/// from its definition with the f64 direct-loop ops, on the state dict
/// `sd`: logits and pooled features of `x` (`b` images of `h`×`w`), with
/// batch-norm on running statistics (`eval`) or batch statistics.
fn resnet50_f64(
    sd: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    x: &[f64],
    (b, h, w): (usize, usize, usize),
    eval: bool,
) -> (Vec<f64>, Vec<f64>) {
    let p = |k: &str| -> Vec<f64> { to64(&sd.get(k).unwrap_or_else(|| panic!("no {k}")).1) };
    let shape = |k: &str| sd[k].0.clone();
    // (activation, channels, height, width)
    type Act = (Vec<f64>, usize, usize, usize);
    let conv = |a: &Act, key: &str, s: usize, pad: usize| -> Act {
        let ws = shape(key);
        let g = Geo {
            b,
            ci: a.1,
            co: ws[0],
            h: a.2,
            w: a.3,
            k: ws[2],
            s,
            p: pad,
        };
        assert_eq!(ws[1], a.1, "{key}: input channels");
        (conv_ref(&g, &a.0, &p(key), None), g.co, g.oh(), g.ow())
    };
    let bn = |a: &Act, key: &str, residual: Option<&Act>, relu: bool| -> Act {
        let (rm, rv) = (
            p(&format!("{key}.running_mean")),
            p(&format!("{key}.running_var")),
        );
        let stats = eval.then_some((rm.as_slice(), rv.as_slice()));
        let (y, _, _) = bn_ref(
            b,
            a.1,
            a.2 * a.3,
            &a.0,
            &p(&format!("{key}.weight")),
            &p(&format!("{key}.bias")),
            stats,
            1e-5,
            residual.map(|r| r.0.as_slice()),
            relu,
        );
        (y, a.1, a.2, a.3)
    };
    let mut a: Act = (x.to_vec(), 3, h, w);
    a = bn(&conv(&a, "conv1.weight", 2, 3), "bn1", None, true);
    let (oh, ow) = ((a.2 + 2 - 3) / 2 + 1, (a.3 + 2 - 3) / 2 + 1);
    a = (max_pool_ref(b * a.1, a.2, a.3, 3, 2, 1, &a.0), a.1, oh, ow);
    for (layer, blocks, stride) in [(1, 3, 1), (2, 4, 2), (3, 6, 2), (4, 3, 2)] {
        for blk in 0..blocks {
            let k = |name: &str| format!("layer{layer}.{blk}.{name}");
            let s = if blk == 0 { stride } else { 1 };
            let identity = if blk == 0 {
                let d = conv(&a, &k("downsample.0.weight"), s, 0);
                bn(&d, &k("downsample.1"), None, false)
            } else {
                a.clone()
            };
            let y = bn(&conv(&a, &k("conv1.weight"), 1, 0), &k("bn1"), None, true);
            let y = bn(&conv(&y, &k("conv2.weight"), s, 1), &k("bn2"), None, true);
            a = bn(
                &conv(&y, &k("conv3.weight"), 1, 0),
                &k("bn3"),
                Some(&identity),
                true,
            );
        }
    }
    let plane = a.2 * a.3;
    let feats: Vec<f64> =
        a.0.chunks(plane)
            .map(|c| c.iter().sum::<f64>() / plane as f64)
            .collect();
    let (fw, fb) = (p("fc.weight"), p("fc.bias"));
    let classes = fb.len();
    let mut logits = vec![0.0; b * classes];
    for i in 0..b {
        for o in 0..classes {
            logits[i * classes + o] =
                fb[o] + dot(&fw[o * a.1..(o + 1) * a.1], &feats[i * a.1..(i + 1) * a.1]);
        }
    }
    (logits, feats)
}

/// The full ResNet-50 forward, values and all, against the f64 reference
/// above: eval-mode logits and train-mode (batch statistics) features, with
/// every parameter and running statistic loaded away from its default.
#[test]
fn resnet50_forward_matches_f64_torchvision_definition() {
    let dev = Cpu::default();
    let mut model = dev.build_module::<builders::ResNet50<7>, f32>();
    let sd = random_state_dict(&tensor_names(&model));
    let raw: Vec<(&String, &Vec<usize>, Vec<u8>)> = sd
        .iter()
        .map(|(k, (shape, v))| (k, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = raw
        .iter()
        .map(|(k, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.to_vec(), bytes).unwrap();
            (k.to_string(), view)
        })
        .collect();
    let bytes = ::safetensors::tensor::serialize(views, &None).unwrap();
    let report = load_pretrained_from_bytes(
        &mut model,
        &bytes,
        "random.safetensors",
        &LoadOptions::strict(),
    )
    .unwrap();
    assert_eq!(report.loaded.len(), sd.len());

    // 48×48: layer4 still has 2×2 maps, so train-mode batch statistics
    // average 8 values a channel (at 1×1 and batch 2, a channel's two values
    // normalise to ±γ, ill-conditioned when they nearly agree).
    let (b, h, w) = (2, 48, 48);
    let xv = uniform(&mut rng(7), b * 3 * h * w);
    let x: Images<Cpu> = dev.tensor_from_vec(xv.clone(), (b, Const::<3>, h, w));
    let logits = model.try_forward_logits(x.clone(), BnMode::Eval).unwrap();
    assert_eq!(logits.shape().concrete(), [2, 7]);
    let (want_logits, _) = resnet50_f64(&sd, &to64(&xv), (b, h, w), true);
    assert_close("eval logits", &logits.as_vec(), &want_logits, 1e-4);

    let f = model.forward_features(x, BnMode::Train);
    assert_eq!(f.shape().concrete(), [2, 2048]);
    let (_, want_feats) = resnet50_f64(&sd, &to64(&xv), (b, h, w), false);
    // Batch statistics in f32 over 53 layers: a little looser.
    assert_close("train-mode features", &f.as_vec(), &want_feats, 5e-4);
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
    let want_eval = a
        .try_forward_logits(x.clone(), BnMode::Eval)
        .unwrap()
        .as_vec();
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
            m.try_forward_logits(x.clone(), BnMode::Eval)
                .unwrap()
                .as_vec(),
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
