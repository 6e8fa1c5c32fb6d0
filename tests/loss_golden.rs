//! Committed PyTorch golden values (tests/reference/poly_loss_golden.py):
//! the seed's PolyLoss class and the paper's formulas, loss and gradient.

use dfdx::prelude::*;
use poly_loss::prelude::*;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn kind(p: &Value) -> PolyKind {
    let gamma = p["gamma"].as_f64().unwrap_or(0.0) as f32;
    let alpha = p["alpha"].as_f64().map(|a| a as f32);
    match p["kind"].as_str().unwrap_or("poly") {
        "poly" => PolyKind::Softmax,
        "poly-focal" => PolyKind::SoftmaxFocal { gamma, alpha },
        "poly-sigmoid" => PolyKind::Sigmoid,
        "poly-sigmoid-focal" => PolyKind::SigmoidFocal { gamma, alpha },
        k => panic!("unknown kind {k}"),
    }
}

fn build<const N: usize>(p: &Value) -> PolyLoss<N> {
    let eps: [f32; N] = floats(&p["epsilon"]).try_into().unwrap();
    let mut l = PolyLoss::new(eps).with_kind(kind(p));
    if let Some(a) = p["label_smoothing"].as_f64() {
        l = l.with_label_smoothing(a as f32);
    }
    if !p["weight"].is_null() {
        l = l.with_weight(floats(&p["weight"]));
    }
    if let Some(i) = p["ignore_index"].as_u64() {
        l = l.with_ignore_index(i as usize);
    }
    l.with_reduction(match p["reduction"].as_str().unwrap_or("mean") {
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        _ => Reduction::Mean,
    })
}

fn run<const N: usize>(case: &Value) -> (f32, Vec<f32>) {
    let dev = Cpu::default();
    let (b, c) = (
        case["b"].as_u64().unwrap() as usize,
        case["c"].as_u64().unwrap() as usize,
    );
    let x: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(floats(&case["logits"]), (b, c));
    let loss = build::<N>(&case["params"]);
    let out = if case["targets"].is_null() {
        let y: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(floats(&case["probs"]), (b, c));
        loss.forward(x.leaky_trace(), y)
    } else {
        let t: Vec<usize> = case["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        if loss.reduction == Reduction::None {
            // The golden case weights row i by i + 1 before summing.
            let coef: Tensor<(usize,), f32, _> =
                dev.tensor_from_vec((1..=b).map(|i| i as f32).collect(), (b,));
            (loss.forward_per_sample(x.leaky_trace(), &t) * coef).sum()
        } else {
            loss.forward(x.leaky_trace(), &t)
        }
    };
    let v = out.array();
    (v, out.backward().get(&x).as_vec())
}

#[test]
fn pytorch_golden_values() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/poly_loss_golden.json"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        // The inputs themselves must have the sizes the case declares.
        let name = case["name"].as_str().unwrap();
        let n = (case["b"].as_u64().unwrap() * case["c"].as_u64().unwrap()) as usize;
        assert_eq!(floats(&case["logits"]).len(), n, "{name}: logits");
        if case["targets"].is_null() {
            assert_eq!(floats(&case["probs"]).len(), n, "{name}: probs");
        } else {
            let t = case["targets"].as_array().unwrap().len() as u64;
            assert_eq!(t, case["b"].as_u64().unwrap(), "{name}: targets");
        }
    }
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (v, g) = match case["params"]["epsilon"].as_array().unwrap().len() {
            1 => run::<1>(case),
            2 => run::<2>(case),
            3 => run::<3>(case),
            n => panic!("{name}: N = {n}"),
        };
        let want = case["loss"].as_f64().unwrap();
        assert!(
            (v as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
            "{name}: loss {v} vs PyTorch {want}"
        );
        let want_grad = floats(&case["grad"]);
        let (b, c) = (case["b"].as_u64().unwrap(), case["c"].as_u64().unwrap());
        assert_eq!(
            want_grad.len() as u64,
            b * c,
            "{name}: the golden gradient has {} values for a ({b}, {c}) batch",
            want_grad.len()
        );
        assert_eq!(
            g.len(),
            want_grad.len(),
            "{name}: gradient length {} vs golden {}",
            g.len(),
            want_grad.len()
        );
        for (k, (a, b)) in g.iter().zip(want_grad).enumerate() {
            assert!(
                (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                "{name}: grad[{k}] {a} vs PyTorch {b}"
            );
        }
    }
}
