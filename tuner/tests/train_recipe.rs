//! fastai's fine-tune recipe against golden values produced by fastai itself
//! (`train_golden/fastai_recipe.py`, fastai 2.8 / PyTorch, float64): the
//! head's forward and backward, its layout and init, `fine_tune`'s learning
//! rates and momentum per step on both phases, the per-group rates of
//! `slice`, and the membership of ResNet-50's layer groups.

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use poly_loss::nn::pretrained::{visit_model, ModelItem};
use poly_loss::nn::resnet::{ImageClassifier, LayerGroup, LayerGroupVisitor, ResNet50};
use polytune::train::head::{DropoutSource, HeadLayers};
use polytune::train::schedule::{frozen_group_lrs, unfrozen_group_lrs, OneCycle};
use polytune::train::{Head, HeadKind, Pool};
use serde_json::Value;

fn golden() -> Value {
    serde_json::from_str(include_str!("train_golden/fastai_recipe.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}[{i}]: {g} vs fastai's {w}"
        );
    }
}

/// The masks fastai's two `nn.Dropout`s were replaced with, in order.
struct Fixed(Vec<Vec<f32>>);

impl DropoutSource for Fixed {
    fn mask(&mut self, p: f64, len: usize) -> Vec<f32> {
        let m = self.0.remove(0);
        assert_eq!(m.len(), len);
        assert!(m
            .iter()
            .all(|&v| v == 0.0 || (v as f64 - 1.0 / (1.0 - p)).abs() < 1e-6));
        m
    }
}

#[test]
fn fastai_head_forward_backward_and_running_stats_match_fastai() {
    let g = golden();
    let h = &g["head"];
    let u = |k: &str| h[k].as_u64().unwrap() as usize;
    let (c, n, hidden, b) = (u("channels"), u("classes"), u("hidden"), u("batch"));
    let dev = Cpu::default();
    let mut head = Head::with_hidden(&dev, HeadKind::Fastai, c, n, hidden, 0).unwrap();
    let t1 = |k: &str| {
        let v = floats(&h[k]);
        let len = v.len();
        dev.tensor_from_vec(v, (len,))
    };
    let t2 = |k: &str, rows: usize| {
        let v = floats(&h[k]);
        let cols = v.len() / rows;
        dev.tensor_from_vec(v, (rows, cols))
    };
    let HeadLayers::Fastai {
        bn1,
        lin1,
        bn2,
        lin2,
        ps,
    } = &mut head.layers
    else {
        panic!("a fastai head")
    };
    assert_eq!(*ps, [0.25, 0.5]);
    bn1.weight = t1("bn1_weight");
    bn1.bias = t1("bn1_bias");
    *lin1 = t2("lin1_weight", hidden);
    bn2.weight = t1("bn2_weight");
    bn2.bias = t1("bn2_bias");
    *lin2 = t2("lin2_weight", n);
    let params = head.clone();

    let x: Tensor<(usize, usize, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(floats(&h["x"]), (b, c, 3, 3));
    let f = Pool::MaxAvg.try_apply(x.trace(Gradients::leaky())).unwrap();
    assert_eq!(f.shape().concrete(), [b, 2 * c]);
    let mut masks = Fixed(vec![floats(&h["mask1"]), floats(&h["mask2"])]);
    let y = head.try_forward_train(f, &mut masks).unwrap();
    close(&y.as_vec(), &floats(&h["logits"]), "train-mode logits");
    let gy = dev.tensor_from_vec(floats(&h["g"]), (b, n));
    let grads = y
        .try_mul(gy)
        .unwrap()
        .try_sum::<Rank0, _>()
        .unwrap()
        .backward();
    close(&grads.get(&x).as_vec(), &floats(&h["grad_x"]), "d/d map");
    let HeadLayers::Fastai {
        bn1,
        lin1,
        bn2,
        lin2,
        ..
    } = &params.layers
    else {
        unreachable!()
    };
    for (t, k) in [
        (&bn1.weight, "grad_bn1_weight"),
        (&bn1.bias, "grad_bn1_bias"),
        (&bn2.weight, "grad_bn2_weight"),
        (&bn2.bias, "grad_bn2_bias"),
    ] {
        close(&grads.get(t).as_vec(), &floats(&h[k]), k);
    }
    close(
        &grads.get(lin1).as_vec(),
        &floats(&h["grad_lin1_weight"]),
        "grad_lin1_weight",
    );
    close(
        &grads.get(lin2).as_vec(),
        &floats(&h["grad_lin2_weight"]),
        "grad_lin2_weight",
    );
    let HeadLayers::Fastai { bn1, bn2, .. } = &head.layers else {
        unreachable!()
    };
    close(
        &bn1.running_mean,
        &floats(&h["bn1_running_mean"]),
        "bn1 mean",
    );
    close(&bn1.running_var, &floats(&h["bn1_running_var"]), "bn1 var");
    close(
        &bn2.running_mean,
        &floats(&h["bn2_running_mean"]),
        "bn2 mean",
    );
    close(&bn2.running_var, &floats(&h["bn2_running_var"]), "bn2 var");

    // Eval mode after the step: running statistics, no dropout.
    let f = Pool::MaxAvg.try_apply(x.clone()).unwrap();
    let y = head.try_forward_eval(f).unwrap();
    close(&y.as_vec(), &floats(&h["logits_eval_after"]), "eval logits");
}

#[test]
fn fastai_head_layout_and_init_are_fastais() {
    let g = golden();
    let dev = Cpu::default();
    let head = Head::new(&dev, HeadKind::Fastai, 2048, 102, 3).unwrap();
    assert_eq!(head.input_dim(), 4096);
    let ours: Vec<(String, Vec<usize>)> = head
        .export("fc")
        .into_iter()
        .map(|(n, s, _)| (n, s))
        .collect();
    let theirs: Vec<(String, Vec<usize>)> = g["head_default"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let shape = e[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (format!("head.{}", e[0].as_str().unwrap()), shape)
        })
        .collect();
    assert_eq!(ours, theirs);
    // BatchNorm: fastai's γ = 1, β = 1e-3, statistics 0 / 1.
    let HeadLayers::Fastai {
        bn1, lin1, lin2, ..
    } = &head.layers
    else {
        panic!("a fastai head")
    };
    let (w0, b0) = (
        g["head"]["init_bn_weight"].as_f64().unwrap() as f32,
        g["head"]["init_bn_bias"].as_f64().unwrap() as f32,
    );
    assert!(bn1.weight.as_vec().iter().all(|&v| v == w0));
    assert!(bn1.bias.as_vec().iter().all(|&v| v == b0));
    assert!(bn1.running_mean.iter().all(|&v| v == 0.0));
    assert!(bn1.running_var.iter().all(|&v| v == 1.0));
    // Kaiming normal (fan_in): mean 0, std √(2 / fan_in); 2 M and 52 k draws.
    for (w, fan_in) in [(lin1.as_vec(), 4096.0), (lin2.as_vec(), 512.0)] {
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let sd = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = (2.0f64 / fan_in).sqrt();
        assert!(mean.abs() < 5.0 * want / n.sqrt(), "mean {mean}");
        assert!((sd / want - 1.0).abs() < 0.02, "sd {sd} vs {want}");
    }
    // Seeded: the same seed gives the same head, another seed another.
    let again = Head::new(&dev, HeadKind::Fastai, 2048, 102, 3).unwrap();
    let other = Head::new(&dev, HeadKind::Fastai, 2048, 102, 4).unwrap();
    assert_eq!(again.export("fc"), head.export("fc"));
    assert_ne!(other.export("fc"), head.export("fc"));
}

#[test]
fn fine_tune_rates_and_momentum_per_step_match_fastai() {
    let g = golden();
    let ft = &g["fine_tune"];
    let u = |k: &str| ft[k].as_u64().unwrap() as usize;
    let (steps, frozen, unfrozen) = (u("steps_per_epoch"), u("freeze_epochs"), u("epochs"));
    let base_lr = ft["base_lr"].as_f64().unwrap();
    let lr_mult = ft["lr_mult"].as_f64().unwrap();
    let f64s = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    // fastai's combine_scheds computes the position within a phase with
    // float32 tensors (`pos = tensor(pos)`), so its rates carry float32
    // rounding of the position (~1e-8); here it is f64 step/total. Rates
    // are compared to 1e-6 of the group's peak.
    let rel = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();

    // The peaks `slice` gives 3 groups (fastai's Optimizer.set_hyper).
    let frozen_peaks = frozen_group_lrs(base_lr, 3);
    let unfrozen_peaks = unfrozen_group_lrs(base_lr, lr_mult, 3);
    for (ours, theirs) in [
        (&frozen_peaks, f64s(&ft["frozen_peaks"])),
        (&unfrozen_peaks, f64s(&ft["unfrozen_peaks"])),
    ] {
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(rel(*a, *b), "peak {a} vs fastai's {b}");
        }
    }

    // Every step of both cycles (the trainer's defaults are fastai's).
    let cfg = polytune::train::TrainConfig::default();
    let cycle = |div: f64, pct: f64, epochs: usize| OneCycle {
        lr_max: 1.0,
        div,
        div_final: cfg.div_final,
        pct_start: pct,
        moms: cfg.moms,
        total_steps: epochs * steps,
    };
    let phases = [
        (
            cycle(cfg.frozen_div, cfg.frozen_pct_start, frozen),
            &frozen_peaks,
            frozen,
        ),
        (
            cycle(cfg.div, cfg.pct_start, unfrozen),
            &unfrozen_peaks,
            unfrozen,
        ),
    ];
    let recorded = ft["steps"].as_array().unwrap();
    assert_eq!(recorded.len(), (frozen + unfrozen) * steps);
    let mut it = recorded.iter();
    for (sched, peaks, epochs) in phases {
        for step in 0..epochs * steps {
            let s = it.next().unwrap();
            let theirs = f64s(&s["lrs"]);
            for (gi, (&peak, want)) in peaks.iter().zip(&theirs).enumerate() {
                let got = sched.lr_scaled(step, peak);
                assert!(
                    (got - want).abs() <= 1e-6 * peak,
                    "step {step} group {gi}: {got} vs {want}"
                );
            }
            let mom = s["mom"].as_f64().unwrap();
            assert!((sched.momentum(step) - mom).abs() < 1e-7, "step {step}");
        }
    }
}

/// Each group's trainable tensor names, in the whole model's naming.
struct GroupNames(Vec<Vec<String>>);

impl LayerGroupVisitor<Cpu> for GroupNames {
    type Err = ();
    fn visit<M: TensorCollection<f32, Cpu> + 'static>(
        &mut self,
        group: LayerGroup,
        module: &mut M,
    ) -> Result<(), ()> {
        if self.0.len() <= group.index {
            self.0.resize(group.index + 1, Vec::new());
        }
        let prefix = group.prefix();
        let names = &mut self.0[group.index];
        visit_model(&*module, |item| {
            if let ModelItem::Tensor { name, .. } = item {
                if !name.ends_with("running_mean") && !name.ends_with("running_var") {
                    names.push(format!("{prefix}{name}"));
                }
            }
        });
        Ok(())
    }
}

#[test]
fn resnet50_layer_groups_are_fastais_split() {
    let g = golden();
    let want: Vec<Vec<String>> = g["resnet50_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|grp| {
            grp.as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(want.len(), 3);
    let dev = Cpu::default();
    let mut model: ResNet50<1, f32, Cpu> = dfdx::nn::BuildModule::build(&dev);
    assert_eq!(
        <ResNet50<1, f32, Cpu> as ImageClassifier<Cpu>>::GROUPS.len(),
        3
    );
    let mut v = GroupNames(Vec::new());
    model.try_visit_groups(&mut v).unwrap();
    assert_eq!(v.0[0], want[0], "stem … layer2");
    assert_eq!(v.0[1], want[1], "layer3, layer4");
    // The head group: the trainer's fastai head (the model's `fc` is a placeholder).
    let head = Head::new(&dev, HeadKind::Fastai, 2048, 102, 0).unwrap();
    let trainable: Vec<String> = head
        .export("fc")
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| !n.contains("running"))
        .collect();
    assert_eq!(trainable, want[2]);
}
