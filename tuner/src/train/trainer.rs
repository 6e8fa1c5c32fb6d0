//! The fine-tune: fastai's `fine_tune` schedule with Poly-N (a [`DynPolyLoss`]).
//!
//! 1. **Frozen** (F epochs), one cycle with peak rates `slice(base_lr)`
//!    (head `base_lr`, body groups `base_lr/10`), `div = frozen_div`,
//!    `pct_start = frozen_pct_start`:
//!    - `frozen_bn = "train"` (fastai's `train_bn=True`): every step runs the
//!      body with batch-norm in train mode (batch statistics, running
//!      statistics updated) under the tape, and the head and the body's
//!      batch-norm γ/β train; convolution weights stay fixed. Epoch `e`
//!      uses augmentation view `e`.
//!    - `frozen_bn = "frozen"`: the body is in eval mode and nothing in it
//!      changes, so its pooled features are taken from the feature cache
//!      ([`super::features`]) — or computed per batch when caching is off —
//!      and only the [`Head`] trains. Epoch `e` uses view `e % views`.
//! 2. **Unfrozen** (U epochs): everything trains with batch-norm in
//!    `bn_mode`, one cycle with `div`, `pct_start`, and peak rates
//!    `slice(base_lr/2/lr_mult, base_lr/2)` over the layer groups (head
//!    last). Epoch `e` (counted over the whole run) uses view `e`.
//!
//! The head is `[train] head` ([`Head`]: fastai's or linear) on the pooling
//! it needs ([`Pool`]). Every step sets each group's learning rate and β₁
//! from the cycle (fastai's `Adam`, [`super::optimiser`]).
//! The data order of epoch `e` is [`epoch_order`]`(n, seed, e)` with the last
//! partial batch dropped, and augmentation is drawn per (seed, view, sample),
//! so two runs that differ only in ε see the same batches and dropout
//! masks; the body is initialised from `seed` (or loaded), the head from
//! `seed`.
//!
//! A NaN or infinite training loss stops the run with
//! [`TrainError::NonFinite`].

use std::path::PathBuf;
use std::time::Instant;

use dfdx::nn::BuildModule;
use dfdx::prelude::*;
use poly_loss::loss::PolyDevice;
use poly_loss::nn::resnet::{BnMode, ImageClassifier, ResNet18, ResNet50, SmallResNet};
use poly_loss::nn::VisionDevice;
use poly_loss::DynPolyLoss;

use super::config::{ComputeDevice, FrozenBn, ModelKind, TrainConfig};
use super::error::TrainError;
use super::features::{
    extract_features, images_tensor, tensor_hash, FeatureKey, FeatureOrigin, FrozenFeatures,
};
use super::head::{Head, Pool, RuntimeFeatures, SeededDropout};
use super::metrics::{Accumulator, EpochMetrics, EvalMetrics, MetricsCsv, Phase};
use super::optimiser::{AdamW, BodyUpdate, GroupOptimisers};
use super::schedule::{frozen_group_lrs, unfrozen_group_lrs, OneCycle};
use super::weights::{load_body, save_model};
use crate::data::{epoch_order, Augment, Dataset, ImageSet};

/// Most ε terms a run accepts (the search's `search.terms` range, 1..=8).
pub const MAX_TERMS: usize = 8;

/// What happened in one training step (for progress bars and tests).
#[derive(Debug, Clone, Copy)]
pub struct BatchInfo<'a> {
    /// Frozen or unfrozen.
    pub phase: Phase,
    /// Epoch over the whole run, from 1.
    pub epoch: usize,
    /// Batch within the epoch, from 0.
    pub batch: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// The samples of the batch, in order.
    pub indices: &'a [usize],
    /// The augmentation view the batch was drawn with.
    pub view: u64,
    /// The batch's training loss.
    pub loss: f32,
    /// The head's learning rate in this step.
    pub lr: f64,
    /// β₁ in this step.
    pub momentum: f64,
}

/// Receives progress of a run. Every method has a no-op default.
pub trait TrainObserver {
    /// A phase begins (frozen features are being prepared when `phase` is frozen).
    fn phase_start(&mut self, _phase: Phase, _epochs: usize) {}
    /// An epoch begins.
    fn epoch_start(&mut self, _phase: Phase, _epoch: usize, _batches: usize) {}
    /// A training step finished.
    fn batch_end(&mut self, _info: &BatchInfo<'_>) {}
    /// An epoch finished (after evaluation).
    fn epoch_end(&mut self, _metrics: &EpochMetrics) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl TrainObserver for Quiet {}

/// How to run one fine-tune (everything that is not in [`TrainConfig`]).
pub struct TrainOptions<'a> {
    /// ε₁..ε_N of the loss (`[0.0]` is plain cross-entropy).
    pub epsilon: Vec<f64>,
    /// Seed of the initialisation, data order and augmentation.
    pub seed: u64,
    /// Write per-epoch metrics here.
    pub metrics_csv: Option<PathBuf>,
    /// Save the final model (safetensors, torchvision names) here.
    pub save: Option<PathBuf>,
    /// Evaluate the test split at the end.
    pub test: bool,
    /// Progress receiver (none: quiet).
    pub observer: Option<&'a mut dyn TrainObserver>,
}

impl TrainOptions<'static> {
    /// Options with no outputs and no observer.
    pub fn new(epsilon: Vec<f64>, seed: u64) -> Self {
        TrainOptions {
            epsilon,
            seed,
            metrics_csv: None,
            save: None,
            test: false,
            observer: None,
        }
    }
}

impl TrainOptions<'_> {
    /// The same options reporting to `observer`.
    pub fn with_observer(self, observer: &mut dyn TrainObserver) -> TrainOptions<'_> {
        TrainOptions {
            epsilon: self.epsilon,
            seed: self.seed,
            metrics_csv: self.metrics_csv,
            save: self.save,
            test: self.test,
            observer: Some(observer),
        }
    }
}

/// What a fine-tune did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The model trained.
    pub model: ModelKind,
    /// Classes of the data set.
    pub classes: usize,
    /// ε used.
    pub epsilon: Vec<f64>,
    /// Seed used.
    pub seed: u64,
    /// Every epoch's figures.
    pub epochs: Vec<EpochMetrics>,
    /// Validation metrics after the last epoch.
    pub valid: EvalMetrics,
    /// Test metrics, when asked for.
    pub test: Option<EvalMetrics>,
    /// Mean training loss of the last epoch.
    pub train_loss: f64,
    /// Where the frozen features came from (`None` without a frozen phase).
    pub features: Option<FeatureOrigin>,
    /// Wall time of the frozen phase (features included), seconds.
    pub frozen_seconds: f64,
    /// The part of it spent getting the features (cache read or build).
    pub feature_seconds: f64,
    /// Wall time of the unfrozen phase, seconds.
    pub unfrozen_seconds: f64,
    /// Wall time of the whole run (model build and loading included), seconds.
    pub seconds: f64,
    /// The head after training: every tensor's name, shape and values
    /// ([`Head::export`]; the linear head's `fc.weight` first, then `fc.bias`).
    pub head: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// The training loss: softmax Poly-N with N fixed at run time by ε's length
/// (a [`DynPolyLoss`], the same kernels as `PolyLoss<N>`).
#[derive(Debug, Clone)]
pub struct Loss {
    poly: DynPolyLoss,
}

impl Loss {
    /// Softmax Poly-N with `epsilon` (1 to [`MAX_TERMS`] finite values) and
    /// label smoothing.
    ///
    /// ```
    /// use polytune::train::Loss;
    /// assert_eq!(Loss::new(&[2.0, 0.5], 0.0).unwrap().terms(), 2);
    /// assert!(Loss::new(&[], 0.0).is_err());
    /// assert!(Loss::new(&[1e39], 0.0).is_err()); // not an f32
    /// assert!(Loss::new(&[0.0; 9], 0.0).is_err()); // more than MAX_TERMS
    /// ```
    pub fn new(epsilon: &[f64], label_smoothing: f64) -> Result<Self, TrainError> {
        let bad = |message: String| TrainError::Epsilon {
            epsilon: epsilon.to_vec(),
            message,
        };
        let e32: Vec<f32> = epsilon.iter().map(|&e| e as f32).collect();
        if let Some(i) = e32.iter().position(|e| !e.is_finite()) {
            return Err(bad(format!(
                "ε{} = {} is not a finite f32",
                i + 1,
                epsilon[i]
            )));
        }
        let n = e32.len();
        if !(1..=MAX_TERMS).contains(&n) {
            return Err(bad(format!(
                "{n} terms; a run takes 1 to {MAX_TERMS} coefficients"
            )));
        }
        Ok(Self {
            poly: DynPolyLoss::new(e32).with_label_smoothing(label_smoothing as f32),
        })
    }

    /// N.
    pub fn terms(&self) -> usize {
        self.poly.terms()
    }

    /// The loss the run trains with.
    pub fn poly(&self) -> &DynPolyLoss {
        &self.poly
    }

    /// The mean loss of a batch.
    pub fn forward<D: PolyDevice, T: Tape<f32, D>>(
        &self,
        logits: Tensor<(usize, usize), f32, D, T>,
        labels: &[usize],
    ) -> Result<Tensor<Rank0, f32, D, T>, TrainError> {
        Ok(self.poly.try_forward(logits, labels)?)
    }
}

/// The sample indices of each training batch of `epoch`: the seeded order,
/// cut into `batch` samples, the last partial batch dropped unless it is
/// the only one (the same batches as [`crate::data::BatchPlan::train`]).
pub fn epoch_batches(len: usize, batch: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let order = epoch_order(len, seed, epoch);
    let full = len / batch;
    let count = if full > 0 { full } else { len.div_ceil(batch) };
    order
        .chunks(batch)
        .take(count)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Runs one fine-tune of `cfg.model` on `data` (weights from
/// `cfg.weights`, if any).
///
/// ```no_run
/// use polytune::data::Dataset;
/// use polytune::train::{train, TrainConfig, TrainOptions};
///
/// let data = Dataset::digits(8)?;
/// let cfg = TrainConfig { epochs: 4, base_lr: 1e-2, ..TrainConfig::default() };
/// let report = train(&cfg, &data, TrainOptions::new(vec![2.0], 0))?;
/// println!("val top-1 {:.3}", report.valid.top1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn train(
    cfg: &TrainConfig,
    data: &Dataset,
    opts: TrainOptions<'_>,
) -> Result<TrainReport, TrainError> {
    cfg.validate("[train]")?;
    let loss = Loss::new(&opts.epsilon, cfg.label_smoothing)?;
    if data.train().is_empty() || data.valid().is_empty() {
        return Err(TrainError::Config {
            origin: "[data]".into(),
            key: "data".into(),
            message: format!(
                "the data set has {} training and {} validation images; both must be non-empty",
                data.train().len(),
                data.valid().len()
            ),
        });
    }
    match cfg.compute_device() {
        ComputeDevice::Cpu => {
            let dev = Cpu::seed_from_u64(opts.seed);
            dev.enable_cache();
            let report = run_on(dev.clone(), cfg, data, opts, loss);
            // dfdx's cache frees nothing when dropped: hand its buffers back.
            dev.empty_cache();
            report
        }
        #[cfg(feature = "cuda")]
        ComputeDevice::Cuda(ordinal) => {
            let ordinal = ordinal.unwrap_or(0);
            // Probes the driver first: Cuda::try_build panics without one.
            let dev =
                poly_loss::try_open_cuda(ordinal, opts.seed).map_err(|e| TrainError::Config {
                    origin: "[train]".into(),
                    key: "train.device".into(),
                    message: e.to_string(),
                })?;
            dev.enable_cache();
            let report = run_on(dev.clone(), cfg, data, opts, loss);
            // dfdx's cache frees nothing when dropped: hand its buffers back,
            // then the cuBLAS handle that would keep the context alive.
            dev.empty_cache();
            drop(dev);
            poly_loss::release_unused_cuda_handles();
            report
        }
        #[cfg(not(feature = "cuda"))]
        ComputeDevice::Cuda(_) => unreachable!("validate refuses CUDA without the feature"),
    }
}

/// [`train`] on a given device: picks the model type.
fn run_on<D>(
    dev: D,
    cfg: &TrainConfig,
    data: &Dataset,
    opts: TrainOptions<'_>,
    loss: Loss,
) -> Result<TrainReport, TrainError>
where
    D: VisionDevice + PolyDevice + 'static,
{
    match cfg.model_kind() {
        ModelKind::SmallResNet => Run::<SmallResNet<1, f32, D>, D>::go(cfg, data, opts, loss, dev),
        ModelKind::ResNet18 => Run::<ResNet18<1, f32, D>, D>::go(cfg, data, opts, loss, dev),
        ModelKind::ResNet50 => Run::<ResNet50<1, f32, D>, D>::go(cfg, data, opts, loss, dev),
    }
}

/// One run over a concrete model type (built with a one-class placeholder
/// head that is never used; see [`Head`]).
struct Run<'a, M: ImageClassifier<D>, D: VisionDevice + PolyDevice> {
    cfg: &'a TrainConfig,
    data: &'a Dataset,
    dev: D,
    model: M,
    head: Head<D>,
    pool: Pool,
    drop: SeededDropout,
    opt: GroupOptimisers<D>,
    loss: Loss,
    seed: u64,
    steps: usize,
    epochs: Vec<EpochMetrics>,
    csv: Option<MetricsCsv>,
}

impl<'a, M, D> Run<'a, M, D>
where
    D: VisionDevice + PolyDevice + 'static,
    M: ImageClassifier<D> + BuildModule<D, f32> + 'static,
{
    fn go(
        cfg: &'a TrainConfig,
        data: &'a Dataset,
        opts: TrainOptions<'_>,
        loss: Loss,
        dev: D,
    ) -> Result<TrainReport, TrainError> {
        let start = Instant::now();
        let kind = cfg.model_kind();
        let mut model = M::try_build(&dev).map_err(TrainError::device)?;
        if let Some(w) = &cfg.weights {
            load_body(&mut model, kind, w)?;
        }
        let head_kind = cfg.head_kind();
        let head = Head::new(
            &dev,
            head_kind,
            M::FeatureDim::SIZE,
            data.num_classes(),
            opts.seed,
        )
        .map_err(TrainError::device)?;
        let hyper = AdamW {
            beta2: cfg.beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
        };
        let opt = GroupOptimisers::new(M::MODULES.len(), hyper);
        let bs = cfg.batch_size as usize;
        let steps = epoch_batches(data.train().len(), bs, 0, 0).len();
        let csv = opts
            .metrics_csv
            .as_deref()
            .map(MetricsCsv::create)
            .transpose()?;
        let mut run = Run {
            cfg,
            data,
            dev,
            model,
            head,
            pool: head_kind.pool(),
            drop: SeededDropout::new(opts.seed),
            opt,
            loss,
            seed: opts.seed,
            steps,
            epochs: Vec::new(),
            csv,
        };
        let mut quiet = Quiet;
        let observer: &mut dyn TrainObserver = match opts.observer {
            Some(o) => o,
            None => &mut quiet,
        };
        let (mut frozen_s, mut feature_s, mut unfrozen_s) = (0.0, 0.0, 0.0);
        let mut features = None;
        if cfg.frozen_epochs() > 0 {
            let t = Instant::now();
            observer.phase_start(Phase::Frozen, cfg.frozen_epochs());
            let f = if cfg.uses_feature_cache() {
                Some(run.frozen_features()?)
            } else {
                None
            };
            feature_s = t.elapsed().as_secs_f64();
            run.frozen_phase(f.as_ref(), observer)?;
            features = Some(f.map_or(FeatureOrigin::Computed, |f| f.origin().clone()));
            frozen_s = t.elapsed().as_secs_f64();
        }
        if cfg.unfrozen_epochs() > 0 {
            let t = Instant::now();
            observer.phase_start(Phase::Unfrozen, cfg.unfrozen_epochs());
            run.unfrozen_phase(observer)?;
            unfrozen_s = t.elapsed().as_secs_f64();
        }
        let last = *run.epochs.last().expect("at least one epoch");
        let test = if opts.test {
            let set = data.load_test()?;
            Some(run.evaluate(&set)?)
        } else {
            None
        };
        if let Some(path) = &opts.save {
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
            }
            save_model(&run.model, &run.head, path)?;
            tracing::info!("saved the model to {}", path.display());
        }
        Ok(TrainReport {
            model: kind,
            classes: data.num_classes(),
            epsilon: opts.epsilon,
            seed: run.seed,
            valid: last.valid,
            test,
            train_loss: last.train_loss,
            epochs: run.epochs,
            features,
            frozen_seconds: frozen_s,
            feature_seconds: feature_s,
            unfrozen_seconds: unfrozen_s,
            seconds: start.elapsed().as_secs_f64(),
            head: run.head.export(M::HEAD),
        })
    }

    /// Width of the pooled features the head reads.
    fn dim(&self) -> usize {
        self.pool.width(M::FeatureDim::SIZE)
    }

    fn feature_key(&self) -> FeatureKey {
        let data = self.data;
        FeatureKey {
            model: self.cfg.model_kind().name().into(),
            body: tensor_hash(&self.model, &format!("{}.", M::HEAD)),
            train: data.train().fingerprint(),
            valid: data.valid().fingerprint(),
            image_size: data.image_size(),
            augment: format!(
                "{} resize={:?}",
                serde_json::to_string(&data.config().augment)
                    .expect("augmentation settings serialise"),
                data.config().resize
            ),
            seed: self.seed,
            views: self.cfg.feature_views(),
            pool: self.pool.name().into(),
            dim: self.dim(),
            n_train: data.train().len(),
            n_valid: data.valid().len(),
        }
    }

    /// The frozen body's features of every view and the valid split, from
    /// the cache or computed (and cached).
    fn frozen_features(&self) -> Result<FrozenFeatures, TrainError> {
        let key = self.feature_key();
        let dir = self.data.cache_dir().to_path_buf();
        FrozenFeatures::open_or_build(&dir, &key, || {
            let t = Instant::now();
            let eval_bs = self.cfg.eval_batch_size as usize;
            let train_set = self.data.train();
            let all: Vec<usize> = (0..train_set.len()).collect();
            let mut train = Vec::with_capacity(key.views as usize * all.len() * key.dim);
            for view in 0..key.views {
                let aug = self.augment(view);
                train.extend(extract_features(
                    &self.model,
                    &self.dev,
                    train_set,
                    &all,
                    Some(&aug),
                    eval_bs,
                    self.pool,
                )?);
            }
            let valid_set = self.data.valid();
            let idx: Vec<usize> = (0..valid_set.len()).collect();
            let valid = extract_features(
                &self.model,
                &self.dev,
                valid_set,
                &idx,
                None, // the set's validation path
                eval_bs,
                self.pool,
            )?;
            tracing::info!(
                "computed frozen-body features: {} views x {} train + {} valid images in {:.2} s",
                key.views,
                all.len(),
                idx.len(),
                t.elapsed().as_secs_f64()
            );
            Ok(FrozenFeatures::new(key.clone(), train, valid))
        })
    }

    /// One batch through the body (the tape through it, batch-norm in
    /// `bn` mode), the pool, the head and the loss: the loss value, checked
    /// at `at` = (phase, epoch, batch), and its gradients. Leaky: the head's
    /// gradients must survive the backward pass (see `Head`); the vision
    /// ops free their own intermediates.
    fn body_step(
        &mut self,
        set: &ImageSet,
        idx: &[usize],
        aug: &Augment,
        bn: BnMode,
        at: (Phase, usize, usize),
    ) -> Result<(f32, Gradients<f32, D>), TrainError> {
        let mut batch = set.assemble(idx, Some(aug))?;
        let x = images_tensor(&self.dev, &mut batch)?;
        let map = self
            .model
            .try_forward_body(x.traced(Gradients::leaky()), bn)
            .map_err(TrainError::device)?;
        let f = self.pool.try_apply(map).map_err(TrainError::device)?;
        let logits = self
            .head
            .try_forward_train(f, &mut self.drop)
            .map_err(TrainError::device)?;
        let loss = self.loss.forward(logits, &batch.labels)?;
        let value = loss.as_vec()[0];
        self.check(at.0, at.1, at.2, value)?;
        Ok((value, loss.backward()))
    }

    fn augment(&self, view: u64) -> Augment {
        Augment {
            config: self.data.config().augment_config(),
            seed: self.seed,
            view,
        }
    }

    fn check(
        &self,
        phase: Phase,
        epoch: usize,
        batch: usize,
        value: f32,
    ) -> Result<(), TrainError> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(TrainError::NonFinite {
                phase: phase.name(),
                epoch,
                epochs: self.cfg.total_epochs(),
                batch,
                value,
            })
        }
    }

    fn frozen_phase(
        &mut self,
        features: Option<&FrozenFeatures>,
        observer: &mut dyn TrainObserver,
    ) -> Result<(), TrainError> {
        let cfg = self.cfg;
        let epochs = cfg.frozen_epochs();
        let peaks = frozen_group_lrs(cfg.base_lr, M::GROUPS.len());
        let sched = OneCycle {
            lr_max: 1.0,
            div: cfg.frozen_div,
            div_final: cfg.div_final,
            pct_start: cfg.frozen_pct_start,
            moms: cfg.moms,
            total_steps: epochs * self.steps,
        };
        let train_bn = cfg.frozen_bn_mode() == FrozenBn::Train;
        let views = if train_bn {
            u64::MAX
        } else {
            cfg.feature_views()
        };
        let bs = cfg.batch_size as usize;
        let train_set = self.data.train();
        for e in 0..epochs {
            let t = Instant::now();
            let view = e as u64 % views;
            let aug = self.augment(view);
            let batches = epoch_batches(train_set.len(), bs, self.seed, e as u64);
            observer.epoch_start(Phase::Frozen, e + 1, batches.len());
            let (mut loss_sum, mut seen, mut lr) = (0.0f64, 0usize, 0.0);
            let mut lrs = peaks.clone();
            for (b, idx) in batches.iter().enumerate() {
                let step = e * self.steps + b;
                for (lr, &peak) in lrs.iter_mut().zip(&peaks) {
                    *lr = sched.lr_scaled(step, peak);
                }
                lr = *lrs.last().expect("head rate");
                let mom = sched.momentum(step);
                let labels: Vec<usize> = idx.iter().map(|&i| train_set.label(i)).collect();
                let value = if train_bn {
                    // fastai's frozen body with train_bn: batch statistics,
                    // the tape through the body for its γ/β.
                    let at = (Phase::Frozen, e + 1, b + 1);
                    let (value, mut grads) =
                        self.body_step(train_set, idx, &aug, BnMode::Train, at)?;
                    self.opt
                        .step_body(&mut self.model, &mut grads, &lrs, mom, BodyUpdate::NormOnly)
                        .map_err(TrainError::device)?;
                    self.opt
                        .step_head(&mut self.head, &mut grads, lr, mom)
                        .map_err(TrainError::device)?;
                    value
                } else {
                    let feats = match features {
                        Some(f) => idx
                            .iter()
                            .flat_map(|&i| f.train(view, i))
                            .copied()
                            .collect(),
                        None => extract_features(
                            &self.model,
                            &self.dev,
                            train_set,
                            idx,
                            Some(&aug),
                            bs,
                            self.pool,
                        )?,
                    };
                    let x: RuntimeFeatures<D> = self
                        .dev
                        .try_tensor_from_vec(feats, (idx.len(), self.dim()))
                        .map_err(TrainError::device)?;
                    let logits = self
                        .head
                        .try_forward_train(x.traced(Gradients::leaky()), &mut self.drop)
                        .map_err(TrainError::device)?;
                    let loss = self.loss.forward(logits, &labels)?;
                    let value = loss.as_vec()[0];
                    self.check(Phase::Frozen, e + 1, b + 1, value)?;
                    let mut grads = loss.backward();
                    self.opt
                        .step_head(&mut self.head, &mut grads, lr, mom)
                        .map_err(TrainError::device)?;
                    value
                };
                loss_sum += value as f64 * idx.len() as f64;
                seen += idx.len();
                observer.batch_end(&BatchInfo {
                    phase: Phase::Frozen,
                    epoch: e + 1,
                    batch: b,
                    batches: batches.len(),
                    indices: idx,
                    view,
                    loss: value,
                    lr,
                    momentum: mom,
                });
            }
            let valid = match features {
                Some(f) => self.evaluate_features(f.valid_all(), self.data.valid().labels())?,
                None => self.evaluate(self.data.valid())?,
            };
            self.end_epoch(
                EpochMetrics {
                    epoch: e + 1,
                    phase: Phase::Frozen,
                    train_loss: loss_sum / seen as f64,
                    valid,
                    lr,
                    seconds: t.elapsed().as_secs_f64(),
                },
                observer,
            )?;
        }
        Ok(())
    }

    fn unfrozen_phase(&mut self, observer: &mut dyn TrainObserver) -> Result<(), TrainError> {
        let cfg = self.cfg;
        let frozen = cfg.frozen_epochs();
        let epochs = cfg.unfrozen_epochs();
        let peaks = unfrozen_group_lrs(cfg.base_lr, cfg.lr_mult, M::GROUPS.len());
        let sched = OneCycle {
            lr_max: 1.0,
            div: cfg.div,
            div_final: cfg.div_final,
            pct_start: cfg.pct_start,
            moms: cfg.moms,
            total_steps: epochs * self.steps,
        };
        let bn = cfg.bn();
        let bs = cfg.batch_size as usize;
        let train_set = self.data.train();
        for u in 0..epochs {
            let t = Instant::now();
            let e = frozen + u;
            let view = e as u64;
            let aug = self.augment(view);
            let batches = epoch_batches(train_set.len(), bs, self.seed, e as u64);
            observer.epoch_start(Phase::Unfrozen, e + 1, batches.len());
            let (mut loss_sum, mut seen) = (0.0f64, 0usize);
            let mut lrs = peaks.clone();
            for (b, idx) in batches.iter().enumerate() {
                let at = (Phase::Unfrozen, e + 1, b + 1);
                let (value, mut grads) = self.body_step(train_set, idx, &aug, bn, at)?;
                let step = u * self.steps + b;
                for (lr, &peak) in lrs.iter_mut().zip(&peaks) {
                    *lr = sched.lr_scaled(step, peak);
                }
                let mom = sched.momentum(step);
                self.opt
                    .step_all(&mut self.model, &mut self.head, &mut grads, &lrs, mom)
                    .map_err(TrainError::device)?;
                loss_sum += value as f64 * idx.len() as f64;
                seen += idx.len();
                observer.batch_end(&BatchInfo {
                    phase: Phase::Unfrozen,
                    epoch: e + 1,
                    batch: b,
                    batches: batches.len(),
                    indices: idx,
                    view,
                    loss: value,
                    lr: *lrs.last().expect("head rate"),
                    momentum: mom,
                });
            }
            let valid = self.evaluate(self.data.valid())?;
            self.end_epoch(
                EpochMetrics {
                    epoch: e + 1,
                    phase: Phase::Unfrozen,
                    train_loss: loss_sum / seen as f64,
                    valid,
                    lr: *lrs.last().expect("head rate"),
                    seconds: t.elapsed().as_secs_f64(),
                },
                observer,
            )?;
        }
        Ok(())
    }

    fn end_epoch(
        &mut self,
        m: EpochMetrics,
        observer: &mut dyn TrainObserver,
    ) -> Result<(), TrainError> {
        if !m.valid.loss.is_finite() {
            return Err(TrainError::NonFinite {
                phase: m.phase.name(),
                epoch: m.epoch,
                epochs: self.cfg.total_epochs(),
                batch: 0,
                value: m.valid.loss as f32,
            });
        }
        tracing::debug!("{m}");
        if let Some(csv) = &mut self.csv {
            csv.append(&m)?;
        }
        observer.epoch_end(&m);
        self.epochs.push(m);
        Ok(())
    }

    /// Model and head on every image of `set` (eval-mode batch-norm, no
    /// augmentation; the set's validation path: the centre item at the image size).
    fn evaluate(&self, set: &ImageSet) -> Result<EvalMetrics, TrainError> {
        let eval_bs = self.cfg.eval_batch_size as usize;
        let classes = self.head.classes();
        let mut acc = Accumulator::default();
        let all: Vec<usize> = (0..set.len()).collect();
        for chunk in all.chunks(eval_bs) {
            let mut batch = set.assemble(chunk, None)?;
            let x = images_tensor(&self.dev, &mut batch)?;
            let map = self
                .model
                .try_forward_body_eval(x)
                .map_err(TrainError::device)?;
            let f = self.pool.try_apply(map).map_err(TrainError::device)?;
            let logits = self.head.try_forward_eval(f).map_err(TrainError::device)?;
            acc.add(&logits.as_vec(), classes, &batch.labels);
        }
        Ok(acc.finish())
    }

    /// The head on precomputed features (sample-major) with their labels.
    fn evaluate_features(
        &self,
        feats: &[f32],
        labels: &[usize],
    ) -> Result<EvalMetrics, TrainError> {
        let eval_bs = self.cfg.eval_batch_size as usize;
        let dim = self.dim();
        let classes = self.head.classes();
        let mut acc = Accumulator::default();
        for (rows, ys) in feats.chunks(eval_bs * dim).zip(labels.chunks(eval_bs)) {
            let x = self
                .dev
                .try_tensor_from_vec(rows.to_vec(), (ys.len(), dim))
                .map_err(TrainError::device)?;
            let logits = self.head.try_forward_eval(x).map_err(TrainError::device)?;
            acc.add(&logits.as_vec(), classes, ys);
        }
        Ok(acc.finish())
    }
}
