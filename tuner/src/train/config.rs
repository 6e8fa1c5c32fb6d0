//! The `[train]` section of a polytune config: model, schedule, optimiser.
//!
//! ```toml
//! [train]
//! model = "resnet50"          # small-resnet | resnet18 | resnet50
//! weights = "resnet50.safetensors"  # optional torchvision state dict (safetensors)
//! batch_size = 64
//! eval_batch_size = 256
//! freeze_epochs = 1           # F: head only, body frozen (fastai's freeze_epochs)
//! epochs = 5                  # U: everything, after unfreezing
//! base_lr = 2e-3              # fastai's fine_tune base_lr
//! lr_mult = 100               # unfrozen: slice(base_lr/2/lr_mult, base_lr/2) over the layer groups
//! pct_start = 0.3             # one-cycle warm-up fraction, unfrozen phase
//! frozen_pct_start = 0.99     # the same, frozen phase
//! div = 5.0                   # start lr = lr / div, unfrozen phase
//! frozen_div = 25.0           # the same, frozen phase
//! div_final = 1e5             # final lr = lr / div_final
//! moms = [0.95, 0.85, 0.95]   # Adam β₁ over the cycle
//! beta2 = 0.99
//! adam_eps = 1e-5
//! weight_decay = 0.01         # decoupled (AdamW)
//! label_smoothing = 0.0
//! bn_mode = "train"           # batch-norm in the unfrozen phase: train | eval
//! head = "fastai"             # fastai's create_head | linear (one Linear on average-pooled features)
//! frozen_bn = "train"         # frozen phase: body BN trains (fastai's train_bn) | frozen (eval mode, cacheable)
//! feature_cache = true        # cache the frozen body's features on disk (frozen_bn = "frozen" only)
//! views = 1                   # augmentation views in the feature cache (default: freeze_epochs)
//! threads = 0                 # compute threads (0: all cores)
//! ```
//!
//! The defaults are fastai's `fine_tune` / `fit_one_cycle` / `Adam`
//! defaults. Unknown keys are rejected; impossible values (a zero batch
//! size, negative epochs, an unknown model, …) are errors that name the key
//! and the value.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::TrainError;
use crate::data::{DataConfig, DataError};

/// Largest `train.batch_size` and `train.eval_batch_size`.
pub const MAX_BATCH_SIZE: i64 = 65_536;
/// Largest `train.views` (the feature cache holds `views` copies of the
/// training features); the default, `freeze_epochs`, is capped to it.
pub const MAX_VIEWS: i64 = 256;
/// Largest input batch (`batch × 3 × image_size² × 4` bytes of f32) that
/// [`check_batch_memory`] lets a config ask for.
pub const MAX_BATCH_BYTES: u64 = 4 << 30;

/// The networks the trainer can fine-tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// [`poly_loss::nn::resnet::SmallResNet`]: 8×8 … 32×32 images, ~5 k parameters.
    SmallResNet,
    /// torchvision's `resnet18`.
    ResNet18,
    /// torchvision's `resnet50`.
    ResNet50,
}

impl ModelKind {
    /// Every model, in the order shown in messages.
    pub const ALL: [ModelKind; 3] = [
        ModelKind::SmallResNet,
        ModelKind::ResNet18,
        ModelKind::ResNet50,
    ];

    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::SmallResNet => "small-resnet",
            ModelKind::ResNet18 => "resnet18",
            ModelKind::ResNet50 => "resnet50",
        }
    }

    /// Width of the pooled features (the head's input).
    pub fn feature_dim(self) -> usize {
        match self {
            ModelKind::SmallResNet => 16,
            ModelKind::ResNet18 => 512,
            ModelKind::ResNet50 => 2048,
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ModelKind::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ModelKind::ALL.iter().map(|m| m.name()).collect();
                format!("unknown model (expected one of {})", names.join(", "))
            })
    }
}

/// The `[train]` table as written (integers signed, so that a negative value
/// gets a message naming its key rather than a type error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// `small-resnet`, `resnet18` or `resnet50`.
    pub model: String,
    /// Pretrained weights (a torchvision `state_dict` as safetensors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// Training batch size (the last partial batch of an epoch is dropped);
    /// 1..=65536.
    pub batch_size: i64,
    /// Batch size for evaluation and feature extraction; 1..=65536.
    pub eval_batch_size: i64,
    /// F: epochs with the body frozen (head only); 0..=100000.
    pub freeze_epochs: i64,
    /// U: epochs with everything trainable; 0..=100000.
    pub epochs: i64,
    /// fastai's `base_lr`: the head's peak rate while frozen; halved for the
    /// unfrozen phase.
    pub base_lr: f64,
    /// Ratio between the last and the first layer group's rate when unfrozen.
    pub lr_mult: f64,
    /// One-cycle warm-up fraction of the unfrozen phase.
    pub pct_start: f64,
    /// One-cycle warm-up fraction of the frozen phase.
    pub frozen_pct_start: f64,
    /// Unfrozen phase: the cycle starts at `lr / div`.
    pub div: f64,
    /// Frozen phase: the cycle starts at `lr / frozen_div`.
    pub frozen_div: f64,
    /// Both phases: the cycle ends at `lr / div_final`.
    pub div_final: f64,
    /// Adam β₁ at the start, the peak-lr point and the end of a cycle.
    pub moms: [f64; 3],
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub adam_eps: f64,
    /// Decoupled weight decay (AdamW), applied as `p -= lr · wd · p`.
    pub weight_decay: f64,
    /// Label smoothing of the training loss.
    pub label_smoothing: f64,
    /// Batch-norm in the unfrozen phase: `train` (batch statistics, as
    /// fastai) or `eval` (running statistics, frozen).
    pub bn_mode: String,
    /// The classification head: `fastai` (fastai's `create_head`: concat
    /// pool, batch-norm, dropout, 512 hidden units) or `linear` (one linear
    /// layer on average-pooled features).
    pub head: String,
    /// The body's batch-norm in the frozen phase: `train` (fastai's
    /// `train_bn=True`: batch statistics, running statistics updated, γ and
    /// β trained at `base_lr/10`; every frozen step runs the body forward and
    /// backward, so no feature cache is possible) or `frozen` (eval mode,
    /// nothing in the body changes, so its features are computed once and
    /// cached: much faster).
    pub frozen_bn: String,
    /// Cache the frozen body's features on disk (next to the image cache);
    /// only used with `frozen_bn = "frozen"`.
    pub feature_cache: bool,
    /// Augmentation views in the feature cache: frozen epoch `e` uses view
    /// `e % views` (1..=256; default: `freeze_epochs`, i.e. one view per
    /// epoch, at most 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub views: Option<i64>,
    /// Compute threads of a run (0: all cores). Results are bit-for-bit
    /// reproducible for a fixed thread count.
    pub threads: i64,
    /// Where a run computes: `"cpu"`, `"cuda"` (in a study, worker k's
    /// trials run on GPU k — set `workers` to the GPU count; otherwise
    /// GPU 0) or `"cuda:N"` (always GPU N). CUDA needs polytune built with
    /// `--features cuda`.
    pub device: String,
}

/// The compute device of a run (`[train].device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeDevice {
    /// dfdx's `Cpu` (rayon threads).
    Cpu,
    /// dfdx's `Cuda` on the GPU with this ordinal (`None`: the worker's
    /// GPU in a study, GPU 0 otherwise).
    Cuda(Option<usize>),
}

impl std::str::FromStr for ComputeDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(ComputeDevice::Cpu),
            "cuda" => Ok(ComputeDevice::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| ComputeDevice::Cuda(Some(n)))
                .ok_or_else(|| "is not a device: use \"cpu\", \"cuda\" or \"cuda:N\"".into()),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelKind::SmallResNet.name().into(),
            weights: None,
            batch_size: 64,
            eval_batch_size: 256,
            freeze_epochs: 1,
            epochs: 3,
            base_lr: 2e-3,
            lr_mult: 100.0,
            pct_start: 0.3,
            frozen_pct_start: 0.99,
            div: 5.0,
            frozen_div: 25.0,
            div_final: 1e5,
            moms: [0.95, 0.85, 0.95],
            beta2: 0.99,
            adam_eps: 1e-5,
            weight_decay: 0.01,
            label_smoothing: 0.0,
            bn_mode: "train".into(),
            head: HeadKind::Fastai.name().into(),
            frozen_bn: FrozenBn::Train.name().into(),
            feature_cache: true,
            views: None,
            threads: 0,
            device: "cpu".into(),
        }
    }
}

/// Batch-norm behaviour in the unfrozen phase.
pub use poly_loss::nn::resnet::BnMode;

pub use super::head::HeadKind;

/// The body's batch-norm while the body is frozen (`[train] frozen_bn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrozenBn {
    /// fastai (`train_bn=True`): batch statistics, running statistics
    /// updated, γ and β trained; no feature cache.
    Train,
    /// Eval mode, nothing changes: the body's features are cacheable.
    Frozen,
}

impl FrozenBn {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            FrozenBn::Train => "train",
            FrozenBn::Frozen => "frozen",
        }
    }
}

impl std::str::FromStr for FrozenBn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(FrozenBn::Train),
            "frozen" => Ok(FrozenBn::Frozen),
            _ => Err(
                "is not a frozen-phase batch-norm mode (expected \"train\" or \"frozen\")".into(),
            ),
        }
    }
}

impl TrainConfig {
    /// Parses a `[train]` table (e.g. [`crate::study::StudyConfig::train`] or
    /// a trial spec's) and validates it; `origin` names the config in errors.
    ///
    /// ```
    /// use polytune::train::TrainConfig;
    /// let t: toml::Table = toml::from_str("batch_size = 32\nepochs = 2").unwrap();
    /// let cfg = TrainConfig::from_table(&t, "study.toml").unwrap();
    /// assert_eq!((cfg.batch_size, cfg.epochs), (32, 2));
    ///
    /// let t: toml::Table = toml::from_str("batch_size = 0").unwrap();
    /// let e = TrainConfig::from_table(&t, "study.toml").unwrap_err().to_string();
    /// assert_eq!(e, "study.toml: key `train.batch_size`: 0 must be at least 1");
    /// ```
    pub fn from_table(table: &toml::Table, origin: &str) -> Result<Self, TrainError> {
        // Through TOML text under a `[train]` header, so that toml's messages
        // (unknown field, wrong type) point at the offending key; the line
        // is of this regenerated text, so only the key is reported.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrapper {
            #[serde(default)]
            train: TrainConfig,
        }
        let mut outer = toml::Table::new();
        outer.insert("train".into(), toml::Value::Table(table.clone()));
        let text = toml::to_string(&outer).map_err(|e| TrainError::ConfigParse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let w: Wrapper = toml::from_str(&text).map_err(|e| TrainError::ConfigParse {
            origin: origin.to_string(),
            message: keyed_toml_error("train", &text, &e),
        })?;
        w.train.validate(origin)?;
        Ok(w.train)
    }

    /// This config as a `[train]` table.
    pub fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("a TrainConfig always serialises")
    }

    /// Checks every value; errors name `origin`, the key and the value.
    pub fn validate(&self, origin: &str) -> Result<(), TrainError> {
        let bad = |key: &str, value: String, rule: &str| {
            Err(TrainError::Config {
                origin: origin.to_string(),
                key: format!("train.{key}"),
                message: format!("{value} {rule}"),
            })
        };
        if let Err(why) = self.model.parse::<ModelKind>() {
            return bad(
                "model",
                format!("{:?}", self.model),
                &format!("is an {why}"),
            );
        }
        if let Err(why) = parse_bn_mode(&self.bn_mode) {
            return bad("bn_mode", format!("{:?}", self.bn_mode), &why);
        }
        if let Err(why) = self.head.parse::<HeadKind>() {
            return bad("head", format!("{:?}", self.head), &why);
        }
        if let Err(why) = self.frozen_bn.parse::<FrozenBn>() {
            return bad("frozen_bn", format!("{:?}", self.frozen_bn), &why);
        }
        match self.device.parse::<ComputeDevice>() {
            Err(why) => return bad("device", format!("{:?}", self.device), &why),
            Ok(ComputeDevice::Cuda(_)) if !cfg!(feature = "cuda") => {
                return bad(
                    "device",
                    format!("{:?}", self.device),
                    "needs polytune built with CUDA (cargo build --release -p polytune --features cuda)",
                )
            }
            Ok(_) => {}
        }
        for (key, v) in [
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
        ] {
            if v < 1 {
                return bad(key, v.to_string(), "must be at least 1");
            }
            if v > MAX_BATCH_SIZE {
                return bad(
                    key,
                    v.to_string(),
                    &format!("must be in 1..={MAX_BATCH_SIZE}"),
                );
            }
        }
        for (key, v) in [
            ("freeze_epochs", self.freeze_epochs),
            ("epochs", self.epochs),
        ] {
            if v < 0 {
                return bad(key, v.to_string(), "must not be negative");
            }
            if v > 100_000 {
                return bad(key, v.to_string(), "is more than 100000");
            }
        }
        if self.freeze_epochs + self.epochs == 0 {
            return bad(
                "epochs",
                "0".into(),
                "leaves nothing to train (freeze_epochs is 0 too)",
            );
        }
        let positive = [
            ("base_lr", self.base_lr),
            ("lr_mult", self.lr_mult),
            ("div", self.div),
            ("frozen_div", self.frozen_div),
            ("div_final", self.div_final),
            ("adam_eps", self.adam_eps),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, v.to_string(), "must be a finite number > 0");
            }
        }
        for (key, v) in [
            ("pct_start", self.pct_start),
            ("frozen_pct_start", self.frozen_pct_start),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(key, v.to_string(), "must be in [0, 1)");
            }
        }
        for (i, &m) in self.moms.iter().enumerate() {
            if !(0.0..1.0).contains(&m) {
                return bad(&format!("moms[{i}]"), m.to_string(), "must be in [0, 1)");
            }
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", self.beta2.to_string(), "must be in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                self.weight_decay.to_string(),
                "must be a finite number >= 0",
            );
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(
                "label_smoothing",
                self.label_smoothing.to_string(),
                "must be in [0, 1)",
            );
        }
        if let Some(v) = self.views {
            if v < 1 {
                return bad("views", v.to_string(), "must be at least 1");
            }
            if v > MAX_VIEWS {
                return bad(
                    "views",
                    v.to_string(),
                    &format!("must be in 1..={MAX_VIEWS}"),
                );
            }
        }
        if !(0..=4096).contains(&self.threads) {
            return bad("threads", self.threads.to_string(), "must be in 0..=4096");
        }
        if let Some(w) = &self.weights {
            if w.as_os_str().is_empty() {
                return bad("weights", "\"\"".into(), "must not be empty");
            }
        }
        Ok(())
    }

    /// The model (the config must be valid).
    pub fn model_kind(&self) -> ModelKind {
        self.model.parse().expect("validated model")
    }

    /// The compute device (the config must be valid).
    pub fn compute_device(&self) -> ComputeDevice {
        self.device.parse().expect("validated device")
    }

    /// Batch-norm mode of the unfrozen phase (the config must be valid).
    pub fn bn(&self) -> BnMode {
        parse_bn_mode(&self.bn_mode).expect("validated bn_mode")
    }

    /// The head (the config must be valid).
    pub fn head_kind(&self) -> HeadKind {
        self.head.parse().expect("validated head")
    }

    /// The frozen phase's batch-norm (the config must be valid).
    pub fn frozen_bn_mode(&self) -> FrozenBn {
        self.frozen_bn.parse().expect("validated frozen_bn")
    }

    /// Whether the frozen phase reads its features from the cache:
    /// `feature_cache` with `frozen_bn = "frozen"` (a body whose batch-norm
    /// trains gives other features at every step).
    pub fn uses_feature_cache(&self) -> bool {
        self.feature_cache && self.frozen_bn_mode() == FrozenBn::Frozen
    }

    /// F as a count.
    pub fn frozen_epochs(&self) -> usize {
        self.freeze_epochs as usize
    }

    /// U as a count.
    pub fn unfrozen_epochs(&self) -> usize {
        self.epochs as usize
    }

    /// F + U.
    pub fn total_epochs(&self) -> usize {
        self.frozen_epochs() + self.unfrozen_epochs()
    }

    /// The number of augmentation views in the feature cache.
    pub fn feature_views(&self) -> u64 {
        self.views.unwrap_or(self.freeze_epochs).clamp(1, MAX_VIEWS) as u64
    }

    /// Resolves a relative `weights` path against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(w) = &self.weights {
            if w.is_relative() {
                self.weights = Some(base.join(w));
            }
        }
    }
}

/// Checks that one input batch of `image_size`² images fits in
/// [`MAX_BATCH_BYTES`] (the trainer allocates `batch × 3 × size² × 4` bytes
/// per batch, before the model's activations); the error names both keys.
///
/// ```
/// use polytune::train::{config::check_batch_memory, TrainConfig};
/// let cfg = TrainConfig::default(); // batch 64, eval batch 256
/// assert!(check_batch_memory(&cfg, 224, "c.toml").is_ok());
/// let e = check_batch_memory(&cfg, 4096, "c.toml").unwrap_err().to_string();
/// assert!(e.contains("train.batch_size`: 64 images at data.image_size = 4096"), "{e}");
/// ```
pub fn check_batch_memory(
    cfg: &TrainConfig,
    image_size: u32,
    origin: &str,
) -> Result<(), TrainError> {
    let per_image = 3 * 4 * image_size as u64 * image_size as u64;
    for (key, batch) in [
        ("batch_size", cfg.batch_size),
        ("eval_batch_size", cfg.eval_batch_size),
    ] {
        let bytes = per_image.saturating_mul(batch.max(0) as u64);
        if bytes > MAX_BATCH_BYTES {
            return Err(TrainError::Config {
                origin: origin.to_string(),
                key: format!("train.{key}"),
                message: format!(
                    "{batch} images at data.image_size = {image_size} need {:.1} GiB per batch, more than the {} GiB allowed; use a smaller batch or image size",
                    bytes as f64 / (1u64 << 30) as f64,
                    MAX_BATCH_BYTES >> 30
                ),
            });
        }
    }
    Ok(())
}

fn parse_bn_mode(s: &str) -> Result<BnMode, String> {
    match s {
        "train" => Ok(BnMode::Train),
        "eval" => Ok(BnMode::Eval),
        _ => Err("is not a batch-norm mode (expected \"train\" or \"eval\")".into()),
    }
}

/// A toml error on text this crate regenerated from a table: the key the
/// error points at (`section.key`) and toml's message, without the line and
/// snippet of the regenerated text (which would mislead about the user's
/// file).
pub(crate) fn keyed_toml_error(section: &str, text: &str, e: &toml::de::Error) -> String {
    let key = e.span().and_then(|span| {
        let start = text[..span.start.min(text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = text[start..].lines().next()?;
        let key = line.split('=').next()?.trim();
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
    });
    match key {
        Some(k) => format!("{section}.{k}: {}", e.message()),
        None => format!("[{section}]: {}", e.message()),
    }
}

/// Parses a `[data]` table (a study config's or a spec's) and validates it;
/// `origin` names the config in errors.
///
/// ```
/// use polytune::train::data_config_from_table;
/// let t: toml::Table = toml::from_str("image_size = 16").unwrap();
/// assert_eq!(data_config_from_table(&t, "c.toml").unwrap().image_size(), 16);
/// let t: toml::Table = toml::from_str("image_sise = 16").unwrap();
/// let e = data_config_from_table(&t, "c.toml").unwrap_err().to_string();
/// assert!(e.starts_with("c.toml: ") && e.contains("image_sise"), "{e}");
/// ```
pub fn data_config_from_table(table: &toml::Table, origin: &str) -> Result<DataConfig, TrainError> {
    let text = toml::to_string(table).map_err(|e| TrainError::ConfigParse {
        origin: origin.to_string(),
        message: format!("[data]: {e}"),
    })?;
    let cfg: DataConfig = toml::from_str(&text).map_err(|e| TrainError::ConfigParse {
        origin: origin.to_string(),
        message: keyed_toml_error("data", &text, &e),
    })?;
    cfg.validate().map_err(|e| match e {
        DataError::Config { .. } => TrainError::ConfigParse {
            origin: origin.to_string(),
            message: e.to_string().replace('\n', " "),
        },
        other => TrainError::Data(other),
    })?;
    Ok(cfg)
}

/// Makes rayon's global pool use `threads` threads (0 or less: leave the
/// default). Only the first call in a process takes effect; a later one is
/// logged as a warning.
pub fn set_threads(threads: i64) {
    if threads > 0 {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(threads as usize)
            .build_global()
        {
            tracing::warn!("cannot set {threads} compute threads: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrainConfig, TrainError> {
        TrainConfig::from_table(&toml::from_str(text).unwrap(), "c.toml")
    }

    #[test]
    fn device_parses_and_cuda_needs_the_feature() {
        assert_eq!(parse("").unwrap().compute_device(), ComputeDevice::Cpu);
        assert_eq!("cuda".parse(), Ok(ComputeDevice::Cuda(None)));
        assert_eq!("cuda:3".parse(), Ok(ComputeDevice::Cuda(Some(3))));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let e = parse(&format!("device = {bad:?}")).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "c.toml: key `train.device`: {bad:?} is not a device: use \"cpu\", \"cuda\" or \"cuda:N\""
                )
            );
        }
        let cuda = parse("device = \"cuda:1\"");
        if cfg!(feature = "cuda") {
            assert_eq!(cuda.unwrap().compute_device(), ComputeDevice::Cuda(Some(1)));
        } else {
            let e = cuda.unwrap_err().to_string();
            assert!(
                e.starts_with(
                    "c.toml: key `train.device`: \"cuda:1\" needs polytune built with CUDA"
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn defaults_are_fastai_fine_tune() {
        let c = parse("").unwrap();
        assert_eq!(c, TrainConfig::default());
        assert_eq!(c.model_kind(), ModelKind::SmallResNet);
        assert_eq!(
            (c.base_lr, c.lr_mult, c.div, c.div_final),
            (2e-3, 100.0, 5.0, 1e5)
        );
        assert_eq!(c.feature_views(), 1);
        assert_eq!(c.bn(), BnMode::Train);
        assert_eq!(c.head_kind(), HeadKind::Fastai);
        assert_eq!(c.frozen_bn_mode(), FrozenBn::Train);
        assert!(!c.uses_feature_cache(), "train-mode BN cannot cache");
        let back = TrainConfig::from_table(&c.to_table(), "x").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn errors_name_origin_key_and_value() {
        let cases = [
            ("batch_size = 0", "c.toml: key `train.batch_size`: 0 must be at least 1"),
            ("epochs = -2", "c.toml: key `train.epochs`: -2 must not be negative"),
            ("freeze_epochs = -1", "c.toml: key `train.freeze_epochs`: -1 must not be negative"),
            (
                "model = \"resnet34\"",
                "c.toml: key `train.model`: \"resnet34\" is an unknown model (expected one of small-resnet, resnet18, resnet50)",
            ),
            ("base_lr = 0.0", "c.toml: key `train.base_lr`: 0 must be a finite number > 0"),
            ("pct_start = 1.0", "c.toml: key `train.pct_start`: 1 must be in [0, 1)"),
            ("moms = [0.95, 1.5, 0.95]", "c.toml: key `train.moms[1]`: 1.5 must be in [0, 1)"),
            ("views = 0", "c.toml: key `train.views`: 0 must be at least 1"),
            (
                "bn_mode = \"frozen\"",
                "c.toml: key `train.bn_mode`: \"frozen\" is not a batch-norm mode (expected \"train\" or \"eval\")",
            ),
            (
                "head = \"mlp\"",
                "c.toml: key `train.head`: \"mlp\" is not a head (expected \"fastai\" or \"linear\")",
            ),
            (
                "frozen_bn = \"eval\"",
                "c.toml: key `train.frozen_bn`: \"eval\" is not a frozen-phase batch-norm mode (expected \"train\" or \"frozen\")",
            ),
            (
                "epochs = 0\nfreeze_epochs = 0",
                "c.toml: key `train.epochs`: 0 leaves nothing to train (freeze_epochs is 0 too)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), want, "{text}");
        }
        let e = parse("batchsize = 3").unwrap_err().to_string();
        assert!(e.starts_with("c.toml:") && e.contains("batchsize"), "{e}");
        let e = parse("batch_size = \"64\"").unwrap_err().to_string();
        assert!(e.starts_with("c.toml:") && e.contains("batch_size"), "{e}");
    }
}
