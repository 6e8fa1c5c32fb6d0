//! The tuned-coefficients file: [`PolyConfig`] (TOML).
//!
//! ```toml
//! [loss]
//! kind = "poly"          # "poly" | "poly-focal" | "poly-sigmoid" | "poly-sigmoid-focal"
//! terms = 1              # N; must equal epsilon.len()
//! epsilon = [2.0]        # non-focal kinds: the loss must decrease in pt (ε₁ >= -1 for N = 1)
//! label_smoothing = 0.0  # optional
//! # gamma = 2.0          # focal kinds only (required there)
//! # alpha = 0.25         # focal kinds only (optional)
//!
//! [result]               # optional: written by the tuner
//! metric = "val_top1_accuracy"
//! best = 0.9632
//! baseline = 0.9511
//! seeds = [0, 1, 2]
//!
//! [provenance]           # optional: known keys typed, extra keys kept
//! dataset = "digits"
//! ```
//!
//! `[loss]` and `[result]` are strict: an unknown key is an error that names
//! the key and line. `[provenance]` keeps keys it does not know, so files
//! round-trip through [`PolyConfig::to_toml_string`].
//!
//! ```
//! use poly_loss::config::PolyConfig;
//!
//! let cfg = PolyConfig::from_toml_str("[loss]\nterms = 1\nepsilon = [2.0]\n").unwrap();
//! let loss = cfg.poly_loss::<1>().unwrap();
//! assert_eq!(loss.epsilon, [2.0]);
//! // Asking for another N names both counts.
//! let err = cfg.poly_loss::<2>().unwrap_err();
//! assert!(err.to_string().contains("1 coefficient"));
//! // N known only at run time: a `DynPolyLoss`, whatever `terms` says.
//! assert_eq!(cfg.build().unwrap().epsilon, vec![2.0]);
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::loss::{DynPolyLoss, PolyKind, PolyLoss};

/// Where a string config came from, in error messages.
const STRING_SOURCE: &str = "<toml string>";

/// An error reading, checking or writing a [`PolyConfig`]; every message names
/// the file (or `<toml string>`) and the key or line at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolyConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key is unknown, missing or of the wrong type
    /// (the message gives the line, column and key).
    #[error("{source_name}: {message}")]
    Parse {
        /// The file or `<toml string>`.
        source_name: String,
        /// toml's message with line and key.
        message: String,
    },
    /// Well-formed but inconsistent (e.g. `terms` ≠ `epsilon.len()`).
    #[error("{source_name}: key `{key}`: {message}")]
    Invalid {
        /// The file or `<toml string>`.
        source_name: String,
        /// The offending key, e.g. `loss.gamma`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `poly_loss::<N>()` asked for a different number of coefficients.
    #[error("{source_name}: key `loss.epsilon`: the file holds {found} coefficient(s) but PolyLoss<{wanted}> needs {wanted}")]
    TermsMismatch {
        /// The file or `<toml string>`.
        source_name: String,
        /// Coefficients in the file.
        found: usize,
        /// The N asked for.
        wanted: usize,
    },
    /// Serialising to TOML failed.
    #[error("cannot write the config as TOML: {0}")]
    Serialize(String),
}

/// The loss kind as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Poly-N on softmax cross-entropy.
    #[default]
    Poly,
    /// Poly-N on softmax focal loss (needs `gamma`).
    PolyFocal,
    /// Poly-N on sigmoid BCE.
    PolySigmoid,
    /// Poly-N on sigmoid focal loss (needs `gamma`).
    PolySigmoidFocal,
}

impl LossKind {
    fn is_focal(self) -> bool {
        matches!(self, LossKind::PolyFocal | LossKind::PolySigmoidFocal)
    }
}

/// `[loss]`: what to build the loss from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// Loss kind (default `poly`).
    #[serde(default)]
    pub kind: LossKind,
    /// N, the number of coefficients.
    pub terms: usize,
    /// ε₁..ε_N (the paper's form, no 1/j).
    pub epsilon: Vec<f64>,
    /// Label smoothing α in [0, 1].
    #[serde(default)]
    pub label_smoothing: f64,
    /// Focal γ (focal kinds only; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Focal α (focal kinds only; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

impl LossSection {
    /// A plain softmax Poly-N section with these coefficients.
    pub fn poly(epsilon: Vec<f64>) -> Self {
        Self {
            kind: LossKind::Poly,
            terms: epsilon.len(),
            epsilon,
            label_smoothing: 0.0,
            gamma: None,
            alpha: None,
        }
    }
}

/// `[result]`: what the search found and the verdict against
/// cross-entropy (written by the tuner).
///
/// `best` and `baseline` are the search's model (posterior mean validation
/// accuracy at the recommended ε and at ε = 0); the rest is the
/// confirmation on fresh paired seeds and held-out data: per-arm means and
/// standard deviations, and the paired difference tuned − CE in accuracy
/// points with its 95 % CI (`significant` when it excludes 0) and a
/// one-sentence `verdict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultSection {
    /// Name of the metric, e.g. `val_top1_accuracy`.
    pub metric: String,
    /// The search's estimate at the recommended ε.
    pub best: f64,
    /// The search's estimate at ε = 0 (cross-entropy).
    pub baseline: f64,
    /// Seeds of the confirmation runs.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Mean held-out accuracy of the recommended ε over the confirmation seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_mean: Option<f64>,
    /// Its standard deviation over the confirmation seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_std: Option<f64>,
    /// Mean held-out accuracy of cross-entropy over the confirmation seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_mean: Option<f64>,
    /// Its standard deviation over the confirmation seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_std: Option<f64>,
    /// Mean paired difference tuned − CE, in accuracy points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference: Option<f64>,
    /// Lower end of the difference's 95 % CI, in points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_low: Option<f64>,
    /// Upper end of the difference's 95 % CI, in points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_high: Option<f64>,
    /// Paired confirmation seeds behind the difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_seeds: Option<u64>,
    /// True when the CI excludes 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub significant: Option<bool>,
    /// The verdict in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

/// `[provenance]`: where the result came from. Unknown keys are kept in
/// `extra` and written back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Data set name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// SHA-256 of the starting weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// Training schedule description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Search algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver: Option<String>,
    /// Number of fine-tunes the search could spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// Version of polytune that wrote the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polytune_version: Option<String>,
    /// When it was written (RFC 3339 string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Any other keys, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, toml::Value>,
}

/// A tuned-coefficients file. See the [module docs](self) for the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolyConfig {
    /// `[loss]`.
    pub loss: LossSection,
    /// `[result]` (absent in hand-written configs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultSection>,
    /// `[provenance]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

impl PolyConfig {
    /// A config holding only a `[loss]` section.
    pub fn new(loss: LossSection) -> Self {
        Self {
            loss,
            result: None,
            provenance: None,
        }
    }

    /// Reads and checks a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PolyConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolyConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a config held in a string.
    pub fn from_toml_str(text: &str) -> Result<Self, PolyConfigError> {
        Self::parse(text, STRING_SOURCE)
    }

    fn parse(text: &str, source_name: &str) -> Result<Self, PolyConfigError> {
        let cfg: PolyConfig = toml::from_str(text).map_err(|e| PolyConfigError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.check(source_name)?;
        Ok(cfg)
    }

    /// Checks the cross-key rules (`terms` = `epsilon.len()`, γ present
    /// exactly for focal kinds, ranges; for the non-focal kinds the ε range of
    /// [`check_epsilon`](crate::loss::check_epsilon), ε₁ ≥ -1 for N = 1). `load` and `from_toml_str` call it;
    /// call it on configs built in code before saving them.
    pub fn validate(&self) -> Result<(), PolyConfigError> {
        self.check(STRING_SOURCE)
    }

    fn check(&self, source_name: &str) -> Result<(), PolyConfigError> {
        let bad = |key: &'static str, message: String| PolyConfigError::Invalid {
            source_name: source_name.to_string(),
            key,
            message,
        };
        let l = &self.loss;
        if l.terms == 0 {
            return Err(bad("loss.terms", "must be at least 1".into()));
        }
        if l.terms != l.epsilon.len() {
            return Err(bad(
                "loss.terms",
                format!(
                    "terms = {} but epsilon has {} value(s)",
                    l.terms,
                    l.epsilon.len()
                ),
            ));
        }
        if let Some((i, e)) = l.epsilon.iter().enumerate().find(|(_, e)| !e.is_finite()) {
            return Err(bad(
                "loss.epsilon",
                format!("epsilon[{i}] = {e} is not finite"),
            ));
        }
        if !l.kind.is_focal() {
            // Poly-N must decrease in pt: ε₁ ≥ -1 for N = 1 (the paper's bound).
            crate::loss::check_epsilon(&l.epsilon)
                .map_err(|e| bad("loss.epsilon", e.to_string()))?;
        }
        if !(0.0..=1.0).contains(&l.label_smoothing) {
            return Err(bad(
                "loss.label_smoothing",
                format!("{} is outside [0, 1]", l.label_smoothing),
            ));
        }
        if l.kind.is_focal() {
            match l.gamma {
                None => {
                    return Err(bad(
                        "loss.gamma",
                        format!("required for kind = {:?}", kind_name(l.kind)),
                    ))
                }
                Some(g) if !(g.is_finite() && g >= 0.0) => {
                    return Err(bad("loss.gamma", format!("{g} must be finite and >= 0")))
                }
                _ => {}
            }
            if let Some(a) = l.alpha {
                if !(0.0..=1.0).contains(&a) {
                    return Err(bad("loss.alpha", format!("{a} is outside [0, 1]")));
                }
            }
        } else {
            if l.gamma.is_some() {
                return Err(bad(
                    "loss.gamma",
                    format!(
                        "only focal kinds take gamma, not kind = {:?}",
                        kind_name(l.kind)
                    ),
                ));
            }
            if l.alpha.is_some() {
                return Err(bad(
                    "loss.alpha",
                    format!(
                        "only focal kinds take alpha, not kind = {:?}",
                        kind_name(l.kind)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The file's text.
    pub fn to_toml_string(&self) -> Result<String, PolyConfigError> {
        toml::to_string_pretty(self).map_err(|e| PolyConfigError::Serialize(e.to_string()))
    }

    /// Writes the config atomically: a temporary file created exclusively
    /// (`O_CREAT | O_EXCL`, random name, so a file or symlink planted in the
    /// directory is never opened) next to `path`, flushed to disk, renamed
    /// over `path` (a symlink there is replaced, never followed), then the
    /// directory flushed. Readers never see half a file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PolyConfigError> {
        let path = path.as_ref();
        self.validate()?;
        let text = self.to_toml_string()?;
        write_atomic(path, text.as_bytes()).map_err(|source| PolyConfigError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The configured loss. Fails when the file holds a number of
    /// coefficients other than `N`.
    pub fn poly_loss<const N: usize>(&self) -> Result<PolyLoss<N>, PolyConfigError> {
        self.poly_loss_named(STRING_SOURCE)
    }

    fn poly_loss_named<const N: usize>(
        &self,
        source_name: &str,
    ) -> Result<PolyLoss<N>, PolyConfigError> {
        self.build_named(source_name)?
            .try_into()
            .map_err(|loss: DynPolyLoss| PolyConfigError::TermsMismatch {
                source_name: source_name.to_string(),
                found: loss.terms(),
                wanted: N,
            })
    }

    /// The configured loss with N = `loss.terms` chosen at run time: what a
    /// program that does not know N at compile time (the tuner's trainer)
    /// uses. Fails, naming the key, when the config breaks a rule of
    /// [`PolyConfig::validate`] (a config from [`PolyConfig::load`] or
    /// [`PolyConfig::from_toml_str`] has passed them already).
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use poly_loss::prelude::*;
    ///
    /// let cfg = PolyConfig::from_toml_str(
    ///     "[loss]\nkind = \"poly-focal\"\nterms = 2\nepsilon = [1.0, -0.5]\ngamma = 2.0\n",
    /// )
    /// .unwrap();
    /// let loss = cfg.build().unwrap();
    /// assert_eq!(loss.epsilon, vec![1.0, -0.5]);
    /// assert_eq!(loss.kind, PolyKind::SoftmaxFocal { gamma: 2.0, alpha: None });
    ///
    /// let dev = Cpu::default();
    /// let logits: Tensor<(usize, usize), f32, _> = dev.tensor_from_vec(vec![0.0, 0.0], (1, 2));
    /// // pt = 1/2: (1/2)² ln 2 + 1·(1/2)³ - 0.5·(1/2)⁴.
    /// let want = 0.25 * 2f32.ln() + 0.125 - 0.5 * 0.0625;
    /// assert!((loss.forward(logits, &[0][..]).array() - want).abs() < 1e-6);
    ///
    /// // A config edited in code is checked again; the error names the key.
    /// let mut bad = cfg.clone();
    /// bad.loss.gamma = Some(-1.0);
    /// assert!(bad.build().unwrap_err().to_string().contains("loss.gamma"));
    /// ```
    pub fn build(&self) -> Result<DynPolyLoss, PolyConfigError> {
        self.build_named(STRING_SOURCE)
    }

    fn build_named(&self, source_name: &str) -> Result<DynPolyLoss, PolyConfigError> {
        self.check(source_name)?;
        let l = &self.loss;
        let epsilon: Vec<f32> = l.epsilon.iter().map(|&v| v as f32).collect();
        let gamma = l.gamma.unwrap_or(0.0) as f32;
        let alpha = l.alpha.map(|a| a as f32);
        let kind = match l.kind {
            LossKind::Poly => PolyKind::Softmax,
            LossKind::PolyFocal => PolyKind::SoftmaxFocal { gamma, alpha },
            LossKind::PolySigmoid => PolyKind::Sigmoid,
            LossKind::PolySigmoidFocal => PolyKind::SigmoidFocal { gamma, alpha },
        };
        Ok(DynPolyLoss::new(epsilon)
            .with_kind(kind)
            .with_label_smoothing(l.label_smoothing as f32))
    }
}

fn kind_name(k: LossKind) -> &'static str {
    match k {
        LossKind::Poly => "poly",
        LossKind::PolyFocal => "poly-focal",
        LossKind::PolySigmoid => "poly-sigmoid",
        LossKind::PolySigmoidFocal => "poly-sigmoid-focal",
    }
}

/// Loads a config and builds the loss in one step, naming the file in errors.
///
/// ```no_run
/// let loss = poly_loss::config::load_poly_loss::<1>("configs/poly1-sample.toml")?;
/// # Ok::<(), poly_loss::config::PolyConfigError>(())
/// ```
pub fn load_poly_loss<const N: usize>(
    path: impl AsRef<Path>,
) -> Result<PolyLoss<N>, PolyConfigError> {
    let path = path.as_ref();
    PolyConfig::load(path)?.poly_loss_named(&path.display().to_string())
}

/// See [`PolyConfig::save`]: exclusive temporary file, fsync, rename, fsync
/// of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // On failure the temporary file is removed when the error drops.
    tmp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
        // Some file systems cannot sync a directory; that is not a failure.
        if e.kind() != std::io::ErrorKind::InvalidInput
            && e.kind() != std::io::ErrorKind::Unsupported
        {
            return Err(e);
        }
    }
    Ok(())
}
