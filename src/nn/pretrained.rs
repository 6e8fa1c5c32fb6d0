//! Loading pretrained torchvision / timm weights saved as `.safetensors`.
//!
//! dfdx's own [`LoadFromSafetensors`](dfdx::nn::LoadFromSafetensors) copies
//! raw bytes without looking at the dtype (an `f16` file would be
//! reinterpreted as garbage `f32`s), cannot skip a classification head whose
//! class count differs from the model's, and ignores extra keys. This loader
//! walks the model with dfdx's [`TensorCollection`] machinery (each tensor is
//! seen with its full dotted name, e.g. `layer2.0.downsample.1.weight`, the
//! names torchvision's `state_dict` uses) and checks the file against it
//! before anything is written:
//!
//! - every model tensor must be in the file with the same shape, and every
//!   file tensor must belong to the model; `*.num_batches_tracked` buffers
//!   (int64 in PyTorch) are ignored;
//! - `F32` is copied, `F16`, `BF16` and `F64` are converted to `f32`
//!   value by value; any other dtype is refused;
//! - when the head (the tensors under [`LoadOptions::head`], `fc` by default)
//!   differs only in its class count (the first dimension), everything else
//!   is loaded, the model keeps its freshly initialised head and the
//!   [`LoadReport`] says so (also logged with `tracing`);
//! - any other problem is a [`PretrainedError::Mismatch`] that lists every
//!   offending key with both shapes. The model is left untouched then.
//!
//! Turn a torchvision checkpoint into such a file with one line of Python
//! (see also `scripts/torchvision_to_safetensors.py`):
//!
//! ```text
//! python3 -c "import torch, safetensors.torch as st; st.save_file({k: v.contiguous() for k, v in torch.load('resnet50-11ad3fa6.pth', map_location='cpu', weights_only=True).items()}, 'resnet50.safetensors')"
//! ```
//!
//! # Example
//!
//! The loader works on any [`TensorCollection`]; here a dfdx `Linear` plays
//! the classification head of a file written for 1000 classes:
//!
//! ```
//! use dfdx::prelude::*;
//! use poly_loss::nn::pretrained::{load_pretrained, LoadOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Cpu::default();
//! let dir = std::env::temp_dir().join(format!("poly_loss_doc_{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("head1000.safetensors");
//! // A "checkpoint" whose fc has 1000 classes ...
//! let imagenet = dev.build_module::<(Linear<4, 8>, Linear<8, 1000>), f32>();
//! imagenet.save_safetensors(&path)?;
//! // ... loaded into a 10-class model: the body loads, the head stays fresh.
//! let mut model = dev.build_module::<(Linear<4, 8>, Linear<8, 10>), f32>();
//! let report = load_pretrained(&mut model, &path, &LoadOptions::head("1"))?;
//! assert_eq!(report.loaded.len(), 2);
//! let head = report.fresh_head.expect("class counts differ");
//! assert_eq!((head.file_classes, head.model_classes), (1000, 10));
//! assert_eq!(model.0.weight.array(), imagenet.0.weight.array());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype as FileDtype, SafeTensorError, SafeTensors, TensorView};
use dfdx::nn::tensor_collection::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
    ViewTensorName, ViewTensorRef,
};
use dfdx::prelude::{Device, HasShape, Shape, Tensor};
use num_traits::NumCast;

/// Which tensors form the classification head (allowed to differ in class count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Name of the head sub-module (`"fc"` in torchvision and timm ResNets):
    /// tensors named `<head>.*` may differ from the file in their first
    /// dimension only, in which case the head is not loaded. `None` checks
    /// the head like every other tensor.
    pub head: Option<String>,
}

impl Default for LoadOptions {
    /// Head `fc`, as in torchvision's and timm's ResNets.
    fn default() -> Self {
        Self::head("fc")
    }
}

impl LoadOptions {
    /// Options with the given head sub-module name.
    pub fn head(name: &str) -> Self {
        Self {
            head: Some(name.to_string()),
        }
    }

    /// Options that require the head to match like every other tensor.
    pub fn strict() -> Self {
        Self { head: None }
    }
}

/// What [`load_pretrained`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// Model tensors that received values from the file, in model order.
    pub loaded: Vec<String>,
    /// Loaded tensors that were converted to `f32` from another dtype
    /// (`F16`, `BF16` or `F64`), with the file's dtype.
    pub converted: Vec<(String, String)>,
    /// File tensors that were skipped on purpose (`*.num_batches_tracked`).
    pub ignored: Vec<String>,
    /// Set when the file's head has another class count: the head was not
    /// loaded and keeps its current (fresh) values.
    pub fresh_head: Option<FreshHead>,
}

/// A head left untouched because the file was written for another class count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreshHead {
    /// The head's name prefix (e.g. `fc`).
    pub head: String,
    /// Class count in the file (first dimension of the head tensors).
    pub file_classes: usize,
    /// Class count of the model.
    pub model_classes: usize,
    /// The head tensors that were skipped.
    pub keys: Vec<String>,
}

/// One disagreement between a file and the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// The model has a tensor the file lacks.
    Missing {
        /// Full dotted name.
        key: String,
        /// Shape in the model.
        model: Vec<usize>,
    },
    /// The file has a tensor the model lacks.
    Unexpected {
        /// Full dotted name.
        key: String,
        /// Shape in the file.
        file: Vec<usize>,
    },
    /// Same name, different shapes.
    Shape {
        /// Full dotted name.
        key: String,
        /// Shape in the file.
        file: Vec<usize>,
        /// Shape in the model.
        model: Vec<usize>,
    },
    /// The file stores the tensor in a dtype that does not convert to `f32`.
    Dtype {
        /// Full dotted name.
        key: String,
        /// The file's dtype, e.g. `I64`.
        dtype: String,
    },
    /// The tensor holds NaN or ±∞ (after conversion to `f32`): a model
    /// loaded from it would train to garbage without an error.
    NonFinite {
        /// Full dotted name.
        key: String,
        /// Flat index of the first non-finite value.
        index: usize,
        /// That value as text (`NaN`, `inf` or `-inf`).
        value: String,
        /// How many values of the tensor are not finite.
        count: usize,
    },
}

impl KeyProblem {
    /// The tensor name this problem is about.
    pub fn key(&self) -> &str {
        match self {
            KeyProblem::Missing { key, .. }
            | KeyProblem::Unexpected { key, .. }
            | KeyProblem::Shape { key, .. }
            | KeyProblem::Dtype { key, .. }
            | KeyProblem::NonFinite { key, .. } => key,
        }
    }
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::Missing { key, model } => {
                write!(f, "missing `{key}` (model shape {model:?})")
            }
            KeyProblem::Unexpected { key, file } => {
                write!(
                    f,
                    "unexpected `{key}` (file shape {file:?}, not in the model)"
                )
            }
            KeyProblem::Shape { key, file, model } => {
                write!(
                    f,
                    "`{key}` has shape {file:?} in the file but {model:?} in the model"
                )
            }
            KeyProblem::Dtype { key, dtype } => write!(
                f,
                "`{key}` is stored as {dtype}; only F32, F16, BF16 and F64 convert to f32"
            ),
            KeyProblem::NonFinite {
                key,
                index,
                value,
                count,
            } => write!(
                f,
                "`{key}` holds {value} at flat index {index} ({count} non-finite value(s)); weights must be finite"
            ),
        }
    }
}

/// Why pretrained weights could not be loaded. The model is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// The file could not be read.
    #[error("cannot read pretrained weights {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid safetensors file.
    #[error("{} is not a valid safetensors file: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: SafeTensorError,
    },
    /// Tensors are missing, unexpected, of the wrong shape or dtype.
    #[error("{} does not fit the model ({} problem(s)): {}", path.display(), problems.len(), join(problems))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Every problem found, sorted by key.
        problems: Vec<KeyProblem>,
    },
}

fn join(problems: &[KeyProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Loads a torchvision/timm-layout `state_dict` saved as `.safetensors` into
/// `model`, checking names, shapes, dtypes and finite values first (see the [module
/// docs](self)). On error nothing has been written to the model.
pub fn load_pretrained<M, D>(
    model: &mut M,
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<LoadReport, PretrainedError>
where
    M: TensorCollection<f32, D>,
    D: Device<f32>,
{
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| PretrainedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_pretrained_from_bytes(model, &bytes, path, options)
}

/// [`load_pretrained`] on a file already in memory; `name` is used in
/// errors and logs.
pub fn load_pretrained_from_bytes<M, D>(
    model: &mut M,
    bytes: &[u8],
    name: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<LoadReport, PretrainedError>
where
    M: TensorCollection<f32, D>,
    D: Device<f32>,
{
    let path = name.as_ref();
    let file = SafeTensors::deserialize(bytes).map_err(|source| PretrainedError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    let layout = model_layout(model);
    let plan = plan(&layout, &file, options).map_err(|problems| PretrainedError::Mismatch {
        path: path.to_path_buf(),
        problems,
    })?;

    let mut loader = Loader {
        file: &file,
        skip: plan.skip.iter().map(String::as_str).collect(),
        loaded: Vec::new(),
        converted: Vec::new(),
    };
    // Every check that can fail ran in `plan`; the walk only copies.
    M::iter_tensors(&mut RecursiveWalker {
        m: (model, String::new()),
        f: &mut loader,
    })
    .unwrap_or_else(|e: std::convert::Infallible| match e {});
    let report = LoadReport {
        loaded: loader.loaded,
        converted: loader.converted,
        ignored: plan.ignored,
        fresh_head: plan.fresh_head,
    };
    if let Some(h) = &report.fresh_head {
        tracing::warn!(
            file = %path.display(),
            head = %h.head,
            file_classes = h.file_classes,
            model_classes = h.model_classes,
            "pretrained head has another class count: loaded everything else, kept a fresh head"
        );
    }
    tracing::info!(
        file = %path.display(),
        loaded = report.loaded.len(),
        converted = report.converted.len(),
        ignored = report.ignored.len(),
        "loaded pretrained weights"
    );
    Ok(report)
}

/// The names and shapes of a model's tensors, and the names of its scalars.
#[derive(Debug, Default)]
struct Layout {
    tensors: Vec<(String, Vec<usize>)>,
    scalars: Vec<String>,
}

/// Full dotted names and shapes of every tensor of `model`, in visiting order
/// (what `save_safetensors` would write, scalars excluded).
pub fn tensor_names<M, D>(model: &M) -> Vec<(String, Vec<usize>)>
where
    M: TensorCollection<f32, D>,
    D: Device<f32>,
{
    model_layout(model).tensors
}

fn model_layout<M, D>(model: &M) -> Layout
where
    M: TensorCollection<f32, D>,
    D: Device<f32>,
{
    let mut layout = Layout::default();
    visit_model(model, |item| match item {
        ModelItem::Tensor { name, shape, .. } => layout.tensors.push((name, shape)),
        ModelItem::Scalar { name, .. } => layout.scalars.push(name),
    });
    layout
}

/// One named entry of a model, as [`visit_model`] hands it over.
pub enum ModelItem<'a> {
    /// An f32 tensor: its dotted name (torchvision's), its shape, and its
    /// values on demand (a host copy, made only when asked for).
    Tensor {
        /// e.g. `layer1.0.conv1.weight`.
        name: String,
        /// The concrete dims.
        shape: Vec<usize>,
        /// Copies the values to the host, in logical order.
        values: &'a dyn Fn() -> Vec<f32>,
    },
    /// A module scalar (e.g. a batch-norm ε or momentum), as f64.
    Scalar {
        /// e.g. `bn1.epsilon`.
        name: String,
        /// `None` when it does not fit an f64.
        value: Option<f64>,
    },
}

/// Calls `f` for every tensor and scalar of `model`, in dfdx's visiting
/// order (the order `save_safetensors` writes) — one walker for everything
/// that needs a model's names: layouts, hashes, exports.
///
/// ```
/// use dfdx::prelude::*;
/// use poly_loss::nn::pretrained::{visit_model, ModelItem};
///
/// let dev = Cpu::default();
/// let model = dev.build_module::<Linear<3, 2>, f32>();
/// let mut numel = Vec::new();
/// visit_model(&model, |item| {
///     if let ModelItem::Tensor { name, values, .. } = item {
///         numel.push((name, values().len()));
///     }
/// });
/// assert_eq!(numel, [("weight".to_string(), 6), ("bias".to_string(), 2)]);
/// ```
pub fn visit_model<M, D>(model: &M, f: impl FnMut(ModelItem<'_>))
where
    M: TensorCollection<f32, D>,
    D: Device<f32>,
{
    struct Visit<F>(F);
    impl<D: Device<f32>, F: FnMut(ModelItem<'_>)> TensorVisitor<f32, D> for Visit<F> {
        type Viewer = (ViewTensorRef, ViewTensorName);
        type Err = std::convert::Infallible;
        type E2 = f32;
        type D2 = D;

        fn visit<S: Shape>(
            &mut self,
            _: TensorOptions<S, f32, D>,
            (t, name): (&Tensor<S, f32, D>, String),
        ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
            let values = || t.as_vec();
            (self.0)(ModelItem::Tensor {
                name,
                shape: t.shape().concrete().into_iter().collect(),
                values: &values,
            });
            Ok(None)
        }

        fn visit_scalar<N: NumCast>(
            &mut self,
            _: ScalarOptions<N>,
            (v, name): (&N, String),
        ) -> Result<Option<N>, Self::Err> {
            (self.0)(ModelItem::Scalar {
                name,
                value: v.to_f64(),
            });
            Ok(None)
        }
    }
    M::iter_tensors(&mut RecursiveWalker {
        m: (model, String::new()),
        f: &mut Visit(f),
    })
    .unwrap_or_else(|e: std::convert::Infallible| match e {});
}

/// The outcome of checking a file against a model.
struct Plan {
    skip: Vec<String>,
    ignored: Vec<String>,
    fresh_head: Option<FreshHead>,
}

fn is_ignored(key: &str) -> bool {
    key == "num_batches_tracked" || key.ends_with(".num_batches_tracked")
}

fn converts_to_f32(dtype: FileDtype) -> bool {
    matches!(
        dtype,
        FileDtype::F32 | FileDtype::F16 | FileDtype::BF16 | FileDtype::F64
    )
}

fn plan(
    layout: &Layout,
    file: &SafeTensors<'_>,
    options: &LoadOptions,
) -> Result<Plan, Vec<KeyProblem>> {
    let file_tensors: BTreeMap<String, TensorView<'_>> = file.tensors().into_iter().collect();
    let model: HashMap<&str, &[usize]> = layout
        .tensors
        .iter()
        .map(|(k, s)| (k.as_str(), s.as_slice()))
        .collect();
    let scalars: HashSet<&str> = layout.scalars.iter().map(String::as_str).collect();
    let head_prefix = options.head.as_ref().map(|h| format!("{h}."));
    let in_head = |key: &str| head_prefix.as_deref().is_some_and(|p| key.starts_with(p));

    let mut problems = Vec::new();
    let mut ignored = Vec::new();
    // Head tensors whose shape differs: (key, file shape, model shape).
    let mut head_diffs = Vec::new();

    for (key, view) in &file_tensors {
        if is_ignored(key) {
            ignored.push(key.clone());
            continue;
        }
        if scalars.contains(key.as_str()) {
            // dfdx writes module scalars (e.g. a batch-norm epsilon) as F64 of
            // shape []; torchvision files have none, so they are optional.
            if matches!(view.dtype(), FileDtype::F64) && view.shape().iter().product::<usize>() == 1
            {
                let v = decode_scalar(view);
                if !v.is_finite() {
                    problems.push(KeyProblem::NonFinite {
                        key: key.clone(),
                        index: 0,
                        value: (v as f32).to_string(),
                        count: 1,
                    });
                }
            } else {
                problems.push(KeyProblem::Dtype {
                    key: key.clone(),
                    dtype: format!(
                        "{:?} {:?} (a scalar must be F64 of one element)",
                        view.dtype(),
                        view.shape()
                    ),
                });
            }
            continue;
        }
        let Some(&model_shape) = model.get(key.as_str()) else {
            problems.push(KeyProblem::Unexpected {
                key: key.clone(),
                file: view.shape().to_vec(),
            });
            continue;
        };
        if !converts_to_f32(view.dtype()) {
            problems.push(KeyProblem::Dtype {
                key: key.clone(),
                dtype: format!("{:?}", view.dtype()),
            });
        } else if let Some((index, value, count)) = non_finite(view) {
            problems.push(KeyProblem::NonFinite {
                key: key.clone(),
                index,
                value: value.to_string(),
                count,
            });
        }
        if view.shape() != model_shape {
            if in_head(key) {
                head_diffs.push((key.clone(), view.shape().to_vec(), model_shape.to_vec()));
            } else {
                problems.push(KeyProblem::Shape {
                    key: key.clone(),
                    file: view.shape().to_vec(),
                    model: model_shape.to_vec(),
                });
            }
        }
    }
    for (key, shape) in &layout.tensors {
        if !file_tensors.contains_key(key) {
            problems.push(KeyProblem::Missing {
                key: key.clone(),
                model: shape.clone(),
            });
        }
    }

    let mut fresh_head = None;
    if !head_diffs.is_empty() {
        let head = options.head.clone().unwrap_or_default();
        let keys: Vec<String> = layout
            .tensors
            .iter()
            .filter(|(k, _)| in_head(k) && file_tensors.contains_key(k))
            .map(|(k, _)| k.clone())
            .collect();
        // Only a class-count change is a legitimate head mismatch: every head
        // tensor differs in its first dimension alone, by the same counts.
        let class_counts = |shapes: &dyn Fn(&str) -> Vec<usize>| -> Vec<Option<usize>> {
            keys.iter().map(|k| shapes(k).first().copied()).collect()
        };
        let file_shape = |k: &str| file_tensors[k].shape().to_vec();
        let model_shape = |k: &str| model[k].to_vec();
        let file_classes = class_counts(&file_shape);
        let model_classes = class_counts(&model_shape);
        let same_rest = keys.iter().all(|k| {
            let (f, m) = (file_shape(k), model_shape(k));
            f.len() == m.len() && !f.is_empty() && f[1..] == m[1..]
        });
        let consistent = |c: &[Option<usize>]| c.iter().all(|&x| x.is_some() && x == c[0]);
        if same_rest && consistent(&file_classes) && consistent(&model_classes) {
            fresh_head = Some(FreshHead {
                head,
                file_classes: file_classes[0].unwrap_or_default(),
                model_classes: model_classes[0].unwrap_or_default(),
                keys,
            });
        } else {
            problems.extend(
                head_diffs
                    .into_iter()
                    .map(|(key, file, model)| KeyProblem::Shape { key, file, model }),
            );
        }
    }

    if !problems.is_empty() {
        problems.sort_by(|a, b| a.key().cmp(b.key()));
        return Err(problems);
    }
    Ok(Plan {
        skip: fresh_head
            .as_ref()
            .map(|h| h.keys.clone())
            .unwrap_or_default(),
        ignored,
        fresh_head,
    })
}

/// Decodes a tensor's little-endian bytes to `f32` values (converting, never
/// reinterpreting, other float widths). Callers check the dtype first.
fn decode_f32(view: &TensorView<'_>) -> Vec<f32> {
    let data = view.data();
    match view.dtype() {
        FileDtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        FileDtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        FileDtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        FileDtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => unreachable!("dtype {other:?} was refused by the plan"),
    }
}

/// The first non-finite value of a float tensor as `f32` (index, value) and
/// the count of non-finite values, or `None` when all are finite. F64
/// values beyond f32's range count as infinite: that is what loading gives.
fn non_finite(view: &TensorView<'_>) -> Option<(usize, f32, usize)> {
    let data = view.data();
    let values: Box<dyn Iterator<Item = f32> + '_> = match view.dtype() {
        FileDtype::F32 => Box::new(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        FileDtype::F64 => Box::new(
            data.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")) as f32),
        ),
        FileDtype::F16 => Box::new(
            data.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        FileDtype::BF16 => Box::new(
            data.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        _ => return None,
    };
    let mut first = None;
    let mut count = 0;
    for (i, v) in values.enumerate() {
        if !v.is_finite() {
            first.get_or_insert((i, v));
            count += 1;
        }
    }
    first.map(|(i, v)| (i, v, count))
}

/// Copies checked file tensors into the model.
struct Loader<'a, 'data> {
    file: &'a SafeTensors<'data>,
    skip: HashSet<&'a str>,
    loaded: Vec<String>,
    converted: Vec<(String, String)>,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for Loader<'_, '_> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = std::convert::Infallible;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (t, name): (&mut Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if self.skip.contains(name.as_str()) {
            return Ok(None);
        }
        let view = self
            .file
            .tensor(&name)
            .expect("the plan checked that every model tensor is in the file");
        t.copy_from(&decode_f32(&view));
        if view.dtype() != FileDtype::F32 {
            self.converted
                .push((name.clone(), format!("{:?}", view.dtype())));
        }
        self.loaded.push(name);
        Ok(None)
    }

    fn visit_scalar<N: NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, name): (&mut N, String),
    ) -> Result<Option<N>, Self::Err> {
        if let Ok(view) = self.file.tensor(&name) {
            let v = decode_scalar(&view);
            if let Some(v) = N::from(v) {
                *n = v;
            }
        }
        Ok(None)
    }
}

fn decode_scalar(view: &TensorView<'_>) -> f64 {
    let b = view.data();
    f64::from_le_bytes(b[..8].try_into().expect("plan checked an F64 scalar"))
}
