//! The study config (TOML): `[study]`, `[search]`, and the `[train]` /
//! `[data]` tables that are passed through to every trial unchanged.
//!
//! ```
//! use polytune::study::StudyConfig;
//!
//! let cfg = StudyConfig::from_toml_str(r#"
//! [study]
//! budget = 12
//! workers = 2
//!
//! [search]
//! solver = "particle-swarm"
//! lower = [-1.0]
//! upper = [6.0]
//!
//! [train]
//! epochs = 3
//! "#, "example.toml").unwrap();
//! assert_eq!(cfg.study.budget, 12);
//! assert_eq!(cfg.train["epochs"].as_integer(), Some(3));
//!
//! let err = StudyConfig::from_toml_str("[study]\nworkers = 0\n", "bad.toml").unwrap_err();
//! assert_eq!(err.to_string(), "bad.toml: key `study.workers`: 0 must be in 1..=1024");
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hash::ContentHasher;
use crate::search::SearchConfig;

/// An error loading or checking a study config; names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum StudyConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (toml's message
    /// gives the line, column and key).
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or the name given for a string).
        origin: String,
        /// What toml said.
        message: String,
    },
    /// A value breaks a rule.
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// The dotted key.
        key: String,
        /// What is wrong, with the value.
        message: String,
    },
}

/// Largest `study.budget` (fine-tunes; far beyond any practical study, and
/// small enough for every counter and the TOML outputs).
pub const MAX_BUDGET: u64 = 1_000_000;
/// Largest `study.seed`: 2^53, so the seed, the search seeds `seed + k`
/// and the confirmation seeds `seed + 1000000 + k` are exact in TOML (i64)
/// and the journal (an external trial program that parses JSON numbers as
/// f64 sees seeds above 2^53 rounded: keep seeds small for those).
pub const MAX_SEED: u64 = 1 << 53;
/// Largest `study.workers`.
pub const MAX_WORKERS: usize = 1024;
/// Largest `study.trial_timeout_s` and `study.interrupt_grace_s` (10⁷ s,
/// about 116 days).
pub const MAX_SECONDS: f64 = 1e7;

/// `[study]`: budget, seeds and execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudySettings {
    /// Search fine-tunes (every seed of every point, the CE baseline
    /// included); 1..=10⁶.
    pub budget: u64,
    /// The study seed: search seed slot k is `seed + k` for every ε
    /// (paired), confirmation seed k is `seed + 1000000 + k`; it also seeds
    /// the solvers' generators; 0..=2⁵³.
    pub seed: u64,
    /// n: after the search, the recommended ε and cross-entropy run on n
    /// fresh paired seeds scored on held-out data (2..=100; the verdict's
    /// CI needs at least 2).
    pub confirm_seeds: u64,
    /// Trials run at once (e.g. one per GPU; 1 on a small CPU); 1..=1024.
    pub workers: usize,
    /// A trial running longer than this is killed (and retried, see
    /// `max_retries`); seconds in (0, 10⁷]. Raising it on a resume retries
    /// the trials that timed out under the lower limit.
    pub trial_timeout_s: f64,
    /// A trial lost to something outside it (killed by a signal it did not
    /// cause, e.g. the OOM killer; timed out) runs again up to this many
    /// times before it counts as failed (0..=10). Every attempt is journaled.
    pub max_retries: u32,
    /// After Ctrl-C / SIGTERM, running trials get this long to finish before
    /// they are terminated; seconds in [0, 10⁷].
    pub interrupt_grace_s: f64,
    /// With PostgreSQL storage: a running trial whose worker has not
    /// heartbeaten for this long goes back to the queue (the attempt counts
    /// toward `max_retries`). Workers heartbeat every `lease_s / 4`.
    /// Seconds in [1, 86400].
    pub lease_s: f64,
}

impl Default for StudySettings {
    fn default() -> Self {
        Self {
            budget: 20,
            seed: 0,
            confirm_seeds: 5,
            workers: 1,
            trial_timeout_s: 3600.0,
            max_retries: 2,
            interrupt_grace_s: 30.0,
            lease_s: 60.0,
        }
    }
}

/// `[provenance]`: descriptive keys copied into the tuned TOML (not part of
/// the fingerprint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceConfig {
    /// Data set name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Starting weights file, hashed (SHA-256) into the output. Relative
    /// paths are relative to the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// Training schedule in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Further keys, copied as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, toml::Value>,
}

/// The version of the trial model and journal a study is made with: 2 =
/// paired seeds, one row per (ε, seed) fine-tune, `confirm` rows.
pub const STUDY_FORMAT: u32 = 2;

/// `[trial]`: what one trial runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialConfig {
    /// An external trial program, e.g. `["python3", "train.py"]`: it reads
    /// the trial spec as JSON on stdin (`epsilon`, `seed`, `phase`, `trial`,
    /// and the `[train]` / `[data]` tables) and prints one JSON result line
    /// (`val_accuracy`, `val_loss`, …) on stdout. Without it, polytune's own
    /// trainer runs (`polytune trial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

/// A study config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// `[study]`.
    #[serde(default)]
    pub study: StudySettings,
    /// `[search]`.
    #[serde(default)]
    pub search: SearchConfig,
    /// `[trial]`.
    #[serde(default)]
    pub trial: TrialConfig,
    /// `[provenance]`.
    #[serde(default)]
    pub provenance: ProvenanceConfig,
    /// `[train]`: opaque here, handed to every trial in its spec.
    #[serde(default)]
    pub train: toml::Table,
    /// `[data]`: opaque here, handed to every trial in its spec.
    #[serde(default)]
    pub data: toml::Table,
}

/// The embedded default study config (`configs/digits-small-resnet.toml`):
/// the small ResNet on the embedded digits set, a few seconds per trial.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../configs/digits-small-resnet.toml");
/// The name the embedded default goes by (in messages and as the default
/// study directory `studies/<name>`).
pub const EMBEDDED_NAME: &str = "digits-small-resnet";
/// Where the embedded default comes from, in messages and `study.toml`.
pub const EMBEDDED_SOURCE: &str = "<embedded default>";

/// A study config with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The config.
    pub config: StudyConfig,
    /// Where it came from, for messages: the path, or [`EMBEDDED_SOURCE`].
    pub source: String,
    /// The name of its default study directory `studies/<name>`: the
    /// file's stem, or [`EMBEDDED_NAME`].
    pub name: String,
}

impl StudyConfig {
    /// The embedded default ([`EMBEDDED_DEFAULT`]).
    ///
    /// ```
    /// let cfg = polytune::study::StudyConfig::embedded_default()?;
    /// assert_eq!(cfg.train["model"].as_str(), Some("small-resnet"));
    /// # Ok::<(), polytune::study::StudyConfigError>(())
    /// ```
    pub fn embedded_default() -> Result<Self, StudyConfigError> {
        Self::from_toml_str(EMBEDDED_DEFAULT, EMBEDDED_SOURCE)
    }

    /// The config at `path` (what `--config` names), or the embedded
    /// default without one, with its source and default study name.
    pub fn load_or_default(path: Option<&Path>) -> Result<LoadedConfig, StudyConfigError> {
        match path {
            Some(p) => Ok(LoadedConfig {
                config: Self::load(p)?,
                source: p.display().to_string(),
                name: p
                    .file_stem()
                    .map_or("study".into(), |s| s.to_string_lossy().into_owned()),
            }),
            None => Ok(LoadedConfig {
                config: Self::embedded_default()?,
                source: EMBEDDED_SOURCE.into(),
                name: EMBEDDED_NAME.into(),
            }),
        }
    }

    /// Reads and checks a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, StudyConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| StudyConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and checks a config; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, StudyConfigError> {
        let cfg: StudyConfig = toml::from_str(text).map_err(|e| StudyConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        cfg.validate_named(origin)?;
        Ok(cfg)
    }

    /// Checks every rule (after overriding fields in code, e.g. `--budget`).
    pub fn validate(&self) -> Result<(), StudyConfigError> {
        self.validate_named("<config>")
    }

    /// [`StudyConfig::validate`] with a name for the config in the error.
    pub fn validate_named(&self, origin: &str) -> Result<(), StudyConfigError> {
        let bad = |key: &str, message: String| StudyConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };
        let s = &self.study;
        if s.budget == 0 {
            return Err(bad(
                "study.budget",
                "0 must be at least 1 (trial 0 is the baseline)".into(),
            ));
        }
        if s.budget > MAX_BUDGET {
            return Err(bad(
                "study.budget",
                format!("{} must be in 1..={MAX_BUDGET}", s.budget),
            ));
        }
        if s.seed > MAX_SEED {
            return Err(bad(
                "study.seed",
                format!("{} must be in 0..={MAX_SEED} (2^53)", s.seed),
            ));
        }
        if !(1..=MAX_WORKERS).contains(&s.workers) {
            return Err(bad(
                "study.workers",
                format!("{} must be in 1..={MAX_WORKERS}", s.workers),
            ));
        }
        if s.max_retries > 10 {
            return Err(bad(
                "study.max_retries",
                format!("{} must be in 0..=10", s.max_retries),
            ));
        }
        if !(2..=100).contains(&s.confirm_seeds) {
            return Err(bad(
                "study.confirm_seeds",
                format!(
                    "{} must be in 2..=100 (the verdict's confidence interval needs at least 2 paired seeds)",
                    s.confirm_seeds
                ),
            ));
        }
        if let Some(cmd) = &self.trial.command {
            if cmd.is_empty() || cmd[0].trim().is_empty() {
                return Err(bad(
                    "trial.command",
                    format!("{cmd:?} must name a program, e.g. [\"python3\", \"train.py\"]"),
                ));
            }
        }
        if !(s.trial_timeout_s > 0.0 && s.trial_timeout_s <= MAX_SECONDS) {
            return Err(bad(
                "study.trial_timeout_s",
                format!(
                    "{} must be a number of seconds in (0, {MAX_SECONDS:e}]",
                    s.trial_timeout_s
                ),
            ));
        }
        if !(s.interrupt_grace_s >= 0.0 && s.interrupt_grace_s <= MAX_SECONDS) {
            return Err(bad(
                "study.interrupt_grace_s",
                format!(
                    "{} must be a number of seconds in [0, {MAX_SECONDS:e}]",
                    s.interrupt_grace_s
                ),
            ));
        }
        if !(1.0..=86400.0).contains(&s.lease_s) {
            return Err(bad(
                "study.lease_s",
                format!("{} must be a number of seconds in [1, 86400]", s.lease_s),
            ));
        }
        self.search.validate().map_err(|e| bad(&e.key, e.message))
    }

    /// The config as TOML (what the study directory keeps).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a StudyConfig always serialises")
    }

    /// The parts that decide the study's trials and results: `[search]`,
    /// `study.seed`, `[train]` and `[data]`. Budget, workers, timeouts, K and
    /// provenance may change between runs of one study.
    pub fn fingerprint_fields(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let value = serde_json::json!({
            // Studies of another trial model (format 1: one seed per ε and
            // `rerun` rows) are foreign to this polytune.
            "format": STUDY_FORMAT,
            "study": { "seed": self.study.seed },
            "trial": self.trial,
            "search": self.search,
            "train": self.train,
            "data": self.data,
        });
        flatten("", &value, &mut out);
        out
    }

    /// SHA-256 (hex) of [`StudyConfig::fingerprint_fields`].
    pub fn fingerprint(&self) -> String {
        let mut h = ContentHasher::new();
        for (k, v) in self.fingerprint_fields() {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        h.finish_hex()
    }

    /// The fingerprinted keys whose values differ, as `key: a ≠ b` lines.
    pub fn differences(&self, other: &StudyConfig) -> Vec<String> {
        let (a, b) = (self.fingerprint_fields(), other.fingerprint_fields());
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
                format!("{k}: {} vs {}", show(a.get(k)), show(b.get(k)))
            })
            .collect()
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_fingerprint_scope() {
        let a = StudyConfig::from_toml_str("", "empty").unwrap();
        assert_eq!(a.study.budget, 20);
        assert_eq!(a.search.bounds().lower, vec![-1.0]);
        assert_eq!(a.search.bounds().upper, vec![10.0]);
        let mut b = a.clone();
        b.study.budget = 40;
        b.study.workers = 3;
        b.provenance.dataset = Some("x".into());
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.train.insert("epochs".into(), toml::Value::Integer(2));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.differences(&b),
            vec!["train.epochs: (absent) vs 2".to_string()]
        );
        // Known value: SHA-256 of the empty string.
        let empty = tempfile_path("fp_empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            crate::hash::sha256_file(&empty).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let _ = std::fs::remove_file(empty);
    }

    fn tempfile_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("polytune-{name}-{}", std::process::id()))
    }

    #[test]
    fn errors_name_file_key_and_value() {
        let e = StudyConfig::from_toml_str("[study]\nbudgte = 3\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:") && e.contains("budgte"), "{e}");
        let e = StudyConfig::from_toml_str("[search]\nlower = [1.0]\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `search.lower`") && e.contains("must contain 0"),
            "{e}"
        );
        // Poly-1 below ε₁ = -1 rewards wrong answers: the bound is refused.
        let e = StudyConfig::from_toml_str("[search]\nlower = [-1.0001]\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `search.lower`") && e.contains("lower[0] = -1.0001 is below -1"),
            "{e}"
        );
        assert!(StudyConfig::from_toml_str("[search]\nlower = [-1.0]\n", "c.toml").is_ok());
        let e = StudyConfig::from_toml_str("[search]\nterms = 2\nupper = [3.0]\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `search.upper`") && e.contains("[3.0] has 1 value(s)"),
            "{e}"
        );
        let e = StudyConfig::from_toml_str("[search]\nsolver = \"bayesian\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bayesian"), "{e}");
        let e = StudyConfig::from_toml_str("[search]\nsolver = \"brent\"\nterms = 2\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `search.solver`"), "{e}");
        let e = StudyConfig::from_toml_str("[study]\ntrial_timeout_s = -1\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `study.trial_timeout_s`: -1"), "{e}");
        let e = StudyConfig::from_toml_str("[study]\nbudget = 0\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `study.budget`: 0"), "{e}");
        let e = StudyConfig::from_toml_str("[sudy]\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sudy"), "{e}");
        // Round trip through the copy kept in the study dir.
        let cfg = StudyConfig::from_toml_str("[train]\nlr = 0.1\n[data]\nname = \"digits\"\n", "c")
            .unwrap();
        let back = StudyConfig::from_toml_str(&cfg.to_toml_string(), "copy").unwrap();
        assert_eq!(back, cfg);
    }
}
