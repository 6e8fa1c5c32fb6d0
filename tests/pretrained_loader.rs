//! The pretrained loader against files written here with the `safetensors`
//! crate: dtype conversion (never reinterpretation), ignored buffers, the
//! fresh-head rule, and an error naming the key (and both shapes) for every
//! other disagreement. dfdx's own modules stand in for the model.

use std::collections::HashMap;
use std::path::PathBuf;

use ::safetensors::tensor::{Dtype as FileDtype, TensorView};
use dfdx::nn::modules::{BatchNorm1D, Linear};
use dfdx::nn::{ModuleVisitor, SaveToSafetensors, TensorCollection};
use dfdx::prelude::*;
use poly_loss::nn::pretrained::{
    load_pretrained, load_pretrained_from_bytes, tensor_names, KeyProblem, LoadOptions,
    PretrainedError,
};

/// body = `0` (Linear 3→4), `1` (BatchNorm1D 4, with dfdx scalars), head = `fc`.
#[derive(Clone, Debug)]
struct Net<const CLASSES: usize> {
    body: (Linear<3, 4, f32, Cpu>, BatchNorm1D<4, f32, Cpu>),
    fc: Linear<4, CLASSES, f32, Cpu>,
}

impl<const CLASSES: usize> TensorCollection<f32, Cpu> for Net<CLASSES> {
    type To<E2: Dtype, D2: Device<E2>> = Net<CLASSES>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, Cpu>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("body", |s| &s.body, |s| &mut s.body),
                Self::module("fc", |s| &s.fc, |s| &mut s.fc),
            ),
            |(_body, _fc)| unreachable!("never rebuilt in these tests"),
        )
    }
}

fn net<const C: usize>(dev: &Cpu) -> Net<C> {
    Net {
        body: dev.build_module::<(builders::Linear<3, 4>, builders::BatchNorm1D<4>), f32>(),
        fc: dev.build_module::<builders::Linear<4, C>, f32>(),
    }
}

/// Every tensor of a model as (name → values).
fn values<const C: usize>(m: &Net<C>) -> HashMap<&'static str, Vec<f32>> {
    HashMap::from([
        ("body.0.weight", m.body.0.weight.as_vec()),
        ("body.0.bias", m.body.0.bias.as_vec()),
        ("body.1.scale", m.body.1.scale.as_vec()),
        ("body.1.bias", m.body.1.bias.as_vec()),
        ("body.1.running_mean", m.body.1.running_mean.as_vec()),
        ("body.1.running_var", m.body.1.running_var.as_vec()),
        ("fc.weight", m.fc.weight.as_vec()),
        ("fc.bias", m.fc.bias.as_vec()),
    ])
}

/// A tensor to write: dtype, shape, little-endian bytes.
struct Entry(FileDtype, Vec<usize>, Vec<u8>);

fn f32s(shape: &[usize], v: impl Fn(usize) -> f32) -> Entry {
    let n: usize = shape.iter().product();
    let bytes = (0..n).flat_map(|i| v(i).to_le_bytes()).collect();
    Entry(FileDtype::F32, shape.to_vec(), bytes)
}

/// Distinct, easily recognised values per key.
fn value(key_index: usize, i: usize) -> f32 {
    (key_index as f32 + 1.0) * 0.25 + i as f32 * 0.0625
}

const KEYS: [(&str, &[usize]); 8] = [
    ("body.0.weight", &[4, 3]),
    ("body.0.bias", &[4]),
    ("body.1.scale", &[4]),
    ("body.1.bias", &[4]),
    ("body.1.running_mean", &[4]),
    ("body.1.running_var", &[4]),
    ("fc.weight", &[5, 4]),
    ("fc.bias", &[5]),
];

/// A complete f32 file for `Net<5>` plus torchvision's int64 counter.
fn full_file() -> Vec<(String, Entry)> {
    let mut entries: Vec<(String, Entry)> = KEYS
        .iter()
        .enumerate()
        .map(|(k, (name, shape))| (name.to_string(), f32s(shape, |i| value(k, i))))
        .collect();
    entries.push((
        "body.1.num_batches_tracked".into(),
        Entry(FileDtype::I64, vec![], 7i64.to_le_bytes().to_vec()),
    ));
    entries
}

fn serialize(entries: &[(String, Entry)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(k, Entry(d, s, b))| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    ::safetensors::tensor::serialize(views, &None).unwrap()
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poly_loss_pretrained_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn mismatch(err: PretrainedError) -> Vec<KeyProblem> {
    match err {
        PretrainedError::Mismatch { problems, .. } => problems,
        other => panic!("expected a mismatch, got {other}"),
    }
}

#[test]
fn loads_every_tensor_and_ignores_num_batches_tracked() {
    let dev = Cpu::default();
    let mut m = net::<5>(&dev);
    let path = temp_path("full.safetensors");
    std::fs::write(&path, serialize(&full_file())).unwrap();
    let report = load_pretrained(&mut m, &path, &LoadOptions::default()).unwrap();
    assert_eq!(report.loaded.len(), 8);
    assert!(report.converted.is_empty());
    assert_eq!(report.ignored, ["body.1.num_batches_tracked"]);
    assert_eq!(report.fresh_head, None);
    let got = values(&m);
    for (k, (name, shape)) in KEYS.iter().enumerate() {
        let n: usize = shape.iter().product();
        let want: Vec<f32> = (0..n).map(|i| value(k, i)).collect();
        assert_eq!(got[name], want, "{name}");
    }
}

#[test]
fn converts_half_bfloat_and_double_values() {
    let dev = Cpu::default();
    let mut m = net::<5>(&dev);
    // Values that each format rounds differently; reinterpreting the bytes
    // as f32 would give entirely different numbers (and wrong lengths).
    let raw = [0.1f64, -1.25, 3.0e-3, 65504.0];
    let mut entries = full_file();
    let set = |entries: &mut Vec<(String, Entry)>, key: &str, e: Entry| {
        entries.iter_mut().find(|(k, _)| k == key).unwrap().1 = e;
    };
    set(
        &mut entries,
        "body.0.bias",
        Entry(
            FileDtype::F16,
            vec![4],
            raw.iter()
                .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
                .collect(),
        ),
    );
    set(
        &mut entries,
        "body.1.scale",
        Entry(
            FileDtype::BF16,
            vec![4],
            raw.iter()
                .flat_map(|&v| half::bf16::from_f64(v).to_le_bytes())
                .collect(),
        ),
    );
    set(
        &mut entries,
        "fc.bias",
        Entry(
            FileDtype::F64,
            vec![5],
            [0.1f64, -1.25, 3.0e-3, 65504.0, 1e-40]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    );
    let report = load_pretrained_from_bytes(
        &mut m,
        &serialize(&entries),
        "mixed.safetensors",
        &LoadOptions::default(),
    )
    .unwrap();
    let mut converted = report.converted.clone();
    converted.sort();
    assert_eq!(
        converted,
        [
            ("body.0.bias".to_string(), "F16".to_string()),
            ("body.1.scale".to_string(), "BF16".to_string()),
            ("fc.bias".to_string(), "F64".to_string()),
        ]
    );
    let f16: Vec<f32> = raw
        .iter()
        .map(|&v| half::f16::from_f64(v).to_f32())
        .collect();
    let bf16: Vec<f32> = raw
        .iter()
        .map(|&v| half::bf16::from_f64(v).to_f32())
        .collect();
    assert_eq!(m.body.0.bias.as_vec(), f16);
    assert_eq!(m.body.1.scale.as_vec(), bf16);
    assert_eq!(
        m.fc.bias.as_vec(),
        vec![0.1f32, -1.25, 3.0e-3, 65504.0, 1e-40f64 as f32]
    );
    // Sanity: the rounding really differs between the formats.
    assert_ne!(f16[0], bf16[0]);
    assert_ne!(f16[0], 0.1f32);
}

#[test]
fn refuses_integer_dtypes_naming_the_key() {
    let dev = Cpu::default();
    let mut m = net::<5>(&dev);
    let before = values(&m);
    let mut entries = full_file();
    entries[1].1 = Entry(
        FileDtype::I32,
        vec![4],
        [1i32, 2, 3, 4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    );
    let err = load_pretrained_from_bytes(
        &mut m,
        &serialize(&entries),
        "ints.safetensors",
        &LoadOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ints.safetensors") && msg.contains("`body.0.bias`") && msg.contains("I32"),
        "{msg}"
    );
    assert_eq!(
        mismatch(err),
        [KeyProblem::Dtype {
            key: "body.0.bias".into(),
            dtype: "I32".into()
        }]
    );
    assert_eq!(values(&m), before, "a failed load must not touch the model");
}

#[test]
fn missing_unexpected_and_wrong_shape_are_all_reported() {
    let dev = Cpu::default();
    let mut m = net::<5>(&dev);
    let before = values(&m);
    let mut entries = full_file();
    entries.retain(|(k, _)| k != "body.1.running_var");
    entries.push(("body.2.weight".into(), f32s(&[2, 2], |i| i as f32)));
    entries[0].1 = f32s(&[3, 4], |i| i as f32);
    let err = load_pretrained_from_bytes(
        &mut m,
        &serialize(&entries),
        "broken.safetensors",
        &LoadOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    for needle in [
        "broken.safetensors",
        "`body.0.weight` has shape [3, 4] in the file but [4, 3] in the model",
        "missing `body.1.running_var` (model shape [4])",
        "unexpected `body.2.weight` (file shape [2, 2]",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    assert_eq!(
        mismatch(err),
        [
            KeyProblem::Shape {
                key: "body.0.weight".into(),
                file: vec![3, 4],
                model: vec![4, 3]
            },
            KeyProblem::Missing {
                key: "body.1.running_var".into(),
                model: vec![4]
            },
            KeyProblem::Unexpected {
                key: "body.2.weight".into(),
                file: vec![2, 2]
            },
        ]
    );
    assert_eq!(values(&m), before);
}

#[test]
fn other_class_count_keeps_a_fresh_head() {
    let dev = Cpu::default();
    let mut m = net::<3>(&dev);
    let before = values(&m);
    let report = load_pretrained_from_bytes(
        &mut m,
        &serialize(&full_file()),
        "five_classes.safetensors",
        &LoadOptions::default(),
    )
    .unwrap();
    let head = report
        .fresh_head
        .expect("the head must be reported as fresh");
    assert_eq!(head.head, "fc");
    assert_eq!((head.file_classes, head.model_classes), (5, 3));
    assert_eq!(head.keys, ["fc.weight", "fc.bias"]);
    assert_eq!(report.loaded.len(), 6);
    let got = values(&m);
    assert_eq!(got["fc.weight"], before["fc.weight"]);
    assert_eq!(got["fc.bias"], before["fc.bias"]);
    assert_eq!(
        got["body.0.weight"],
        (0..12).map(|i| value(0, i)).collect::<Vec<_>>()
    );

    // Strict options treat the same file as a shape error on both head tensors.
    let err = load_pretrained_from_bytes(
        &mut m,
        &serialize(&full_file()),
        "five_classes.safetensors",
        &LoadOptions::strict(),
    )
    .unwrap_err();
    let keys: Vec<String> = mismatch(err).iter().map(|p| p.key().to_string()).collect();
    assert_eq!(keys, ["fc.bias", "fc.weight"]);
}

#[test]
fn head_with_other_input_width_is_an_error() {
    let dev = Cpu::default();
    let mut m = net::<5>(&dev);
    let mut entries = full_file();
    let fc_w = entries.iter().position(|(k, _)| k == "fc.weight").unwrap();
    entries[fc_w].1 = f32s(&[5, 8], |i| i as f32);
    let err = load_pretrained_from_bytes(
        &mut m,
        &serialize(&entries),
        "wide.safetensors",
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        mismatch(err),
        [KeyProblem::Shape {
            key: "fc.weight".into(),
            file: vec![5, 8],
            model: vec![5, 4]
        }]
    );
    // A head tensor missing from the file is an error too, not a fresh head.
    let mut entries = full_file();
    entries.retain(|(k, _)| k != "fc.bias");
    let err = load_pretrained_from_bytes(
        &mut m,
        &serialize(&entries),
        "headless.safetensors",
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        mismatch(err),
        [KeyProblem::Missing {
            key: "fc.bias".into(),
            model: vec![5]
        }]
    );
}

#[test]
fn dfdx_saved_file_round_trips_with_scalars() {
    let dev = Cpu::default();
    let mut a = net::<5>(&dev);
    a.body.1.epsilon = 1e-3;
    a.body.1.running_var = dev.sample_uniform();
    let path = temp_path("roundtrip.safetensors");
    a.save_safetensors(&path).unwrap();
    let mut b = net::<5>(&dev);
    let report = load_pretrained(&mut b, &path, &LoadOptions::default()).unwrap();
    assert_eq!(report.loaded.len(), 8);
    assert_eq!(values(&a), values(&b));
    assert_eq!(b.body.1.epsilon, 1e-3, "scalars in the file are loaded");
    assert_eq!(
        tensor_names(&b)
            .iter()
            .map(|(k, s)| (k.as_str(), s.clone()))
            .collect::<Vec<_>>(),
        KEYS.iter()
            .map(|(k, s)| (*k, s.to_vec()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn unreadable_and_invalid_files_name_the_path() {
    let dev = Cpu::default();
    let mut m = net::<5>(&dev);
    let missing = temp_path("does_not_exist.safetensors");
    let err = load_pretrained(&mut m, &missing, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, PretrainedError::Io { .. }));
    assert!(err.to_string().contains("does_not_exist.safetensors"));

    let garbage = temp_path("garbage.safetensors");
    std::fs::write(&garbage, b"\x08\0\0\0\0\0\0\0not json").unwrap();
    let err = load_pretrained(&mut m, &garbage, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, PretrainedError::Format { .. }), "{err}");
    assert!(err.to_string().contains("garbage.safetensors"));
}
