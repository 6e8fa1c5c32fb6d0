//! Pretrained weights in, the fine-tuned model out (safetensors,
//! torchvision names).

use std::path::Path;

use ::safetensors::tensor::{Dtype as FileDtype, TensorView};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use poly_loss::nn::pretrained::{
    load_pretrained_from_bytes, visit_model, KeyProblem, LoadOptions, ModelItem, PretrainedError,
};
use poly_loss::nn::resnet::ImageClassifier;
use poly_loss::nn::VisionDevice;

use super::config::ModelKind;
use super::error::TrainError;
use super::head::Head;

/// Loads a torchvision-layout `state_dict` (safetensors) into the body of
/// `model`. The file's `fc` may have any class count, or be replaced by the
/// `head.*` of a model polytune saved with fastai's head (the trainer trains a
/// head of its own); anything else that does not fit — another
/// architecture, missing or extra tensors, other shapes — is an error that
/// names the file, the model and the first offending keys.
pub fn load_body<M, D>(model: &mut M, kind: ModelKind, path: &Path) -> Result<(), TrainError>
where
    D: VisionDevice,
    M: ImageClassifier<D>,
{
    let bytes = std::fs::read(path).map_err(|source| TrainError::Weights {
        path: path.to_path_buf(),
        message: format!("cannot read weights: {source}"),
    })?;
    // A model polytune saved with fastai's head (`head.*`, no `fc`): load
    // its body, with the model's own placeholder `fc` standing in.
    let bytes = without_fastai_head(model, &bytes, M::HEAD).unwrap_or(bytes);
    match load_pretrained_from_bytes(model, &bytes, path, &LoadOptions::head(M::HEAD)) {
        Ok(report) => {
            tracing::info!(
                "{}: loaded {} tensors into {kind}{}",
                path.display(),
                report.loaded.len(),
                if report.fresh_head.is_some() {
                    " (its classification head is not used: the trainer trains one for this data set)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(PretrainedError::Mismatch { problems, .. })
            if problems
                .iter()
                .all(|p| matches!(p, KeyProblem::NonFinite { .. })) =>
        {
            let shown: Vec<String> = problems.iter().take(3).map(ToString::to_string).collect();
            let more = problems.len().saturating_sub(shown.len());
            Err(TrainError::Weights {
                path: path.to_path_buf(),
                message: format!(
                    "{} tensor(s) hold NaN or infinity: {}{}",
                    problems.len(),
                    shown.join("; "),
                    if more > 0 {
                        format!("; and {more} more")
                    } else {
                        String::new()
                    }
                ),
            })
        }
        Err(PretrainedError::Mismatch { problems, .. }) => {
            let shown: Vec<String> = problems.iter().take(4).map(ToString::to_string).collect();
            let more = problems.len().saturating_sub(shown.len());
            Err(TrainError::Weights {
                path: path.to_path_buf(),
                message: format!(
                    "these weights are not for model `{kind}` (set train.model to the file's architecture): {} problem(s), e.g. {}{}",
                    problems.len(),
                    shown.join("; "),
                    if more > 0 { format!("; and {more} more") } else { String::new() }
                ),
            })
        }
        Err(e @ PretrainedError::Io { .. }) | Err(e @ PretrainedError::Format { .. }) => {
            Err(TrainError::Weights {
                path: path.to_path_buf(),
                message: match e {
                    PretrainedError::Io { source, .. } => format!("cannot read weights: {source}"),
                    PretrainedError::Format { source, .. } => {
                        format!("not a valid safetensors file: {source}")
                    }
                    PretrainedError::Mismatch { .. } => unreachable!(),
                },
            })
        }
    }
}

/// The file without its `head.*` tensors and with `model`'s own `<fc>.*`
/// added where the file has none, when it holds a fastai head; `None`
/// otherwise (or when it is not a safetensors file: the loader reports that).
fn without_fastai_head<M, D>(model: &M, bytes: &[u8], fc: &str) -> Option<Vec<u8>>
where
    M: TensorCollection<f32, D>,
    D: Device<f32>,
{
    let file = ::safetensors::SafeTensors::deserialize(bytes).ok()?;
    let names = file.names();
    if !names.iter().any(|n| n.starts_with("head.")) {
        return None;
    }
    let fc_prefix = format!("{fc}.");
    let has_fc = names.iter().any(|n| n.starts_with(&fc_prefix));
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in names {
        if name.starts_with("head.") {
            continue;
        }
        let view = file.tensor(name).ok()?;
        owned.push((
            name.to_string(),
            view.shape().to_vec(),
            view.data().to_vec(),
        ));
    }
    if !has_fc {
        let mut all = Vec::new();
        collect(model, "\u{0}", &mut all); // a prefix no name has: everything
        owned.extend(
            all.into_iter()
                .filter(|(n, _, _)| n.starts_with(&fc_prefix)),
        );
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| TensorView::new(FileDtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .ok()?;
    ::safetensors::tensor::serialize(views, &None).ok()
}

fn collect<M: TensorCollection<f32, D>, D: Device<f32>>(
    model: &M,
    skip: &str,
    out: &mut Vec<(String, Vec<usize>, Vec<u8>)>,
) {
    visit_model(model, |item| {
        if let ModelItem::Tensor {
            name,
            shape,
            values,
        } = item
        {
            if !name.starts_with(skip) {
                let bytes = values().iter().flat_map(|x| x.to_le_bytes()).collect();
                out.push((name, shape, bytes));
            }
        }
    });
}

/// Saves the body of `model` and `head` as one safetensors file with
/// torchvision's names (`conv1.weight`, …) and the head's
/// ([`Head::export`]: `fc.weight`, `fc.bias` for the linear head, which
/// `torchvision.models.resnet50(num_classes=C).load_state_dict(..)`
/// accepts; fastai's `create_head` indices under `head.` for fastai's),
/// written to a temporary name and renamed.
pub fn save_model<M, D>(model: &M, head: &Head<D>, path: &Path) -> Result<(), TrainError>
where
    D: VisionDevice,
    M: ImageClassifier<D>,
{
    let mut tensors = Vec::new();
    let head_prefix = format!("{}.", M::HEAD);
    collect(model, &head_prefix, &mut tensors);
    let f32_bytes = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for (name, shape, values) in head.export(M::HEAD) {
        tensors.push((name, shape, f32_bytes(values)));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(FileDtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainError::Weights {
                    path: path.to_path_buf(),
                    message: format!("cannot serialise `{n}`: {e:?}"),
                })
        })
        .collect::<Result<_, _>>()?;
    let bytes =
        ::safetensors::tensor::serialize(views, &None).map_err(|e| TrainError::Weights {
            path: path.to_path_buf(),
            message: format!("cannot serialise the model: {e:?}"),
        })?;
    crate::fs::write_atomic(path, &bytes).map_err(|e| TrainError::io(path, e))
}

/// Checks that `cfg.weights` (if set) loads into `cfg.model`: what a study
/// does once before starting trials, so a wrong file is one clear error
/// instead of a failed trial per ε.
pub fn check_weights(cfg: &super::TrainConfig) -> Result<(), TrainError> {
    use dfdx::nn::BuildModule;
    use poly_loss::nn::resnet::{ResNet18, ResNet50, SmallResNet};
    fn check<M: ImageClassifier<Cpu> + BuildModule<Cpu, f32>>(
        kind: ModelKind,
        path: &Path,
    ) -> Result<(), TrainError> {
        let dev = Cpu::default();
        let mut model = M::try_build(&dev).map_err(TrainError::device)?;
        load_body(&mut model, kind, path)
    }
    let Some(path) = &cfg.weights else {
        return Ok(());
    };
    let kind = cfg.model_kind();
    match kind {
        ModelKind::SmallResNet => check::<SmallResNet<1>>(kind, path),
        ModelKind::ResNet18 => check::<ResNet18<1>>(kind, path),
        ModelKind::ResNet50 => check::<ResNet50<1>>(kind, path),
    }
}
