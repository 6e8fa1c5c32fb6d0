//! The parent ↔ child protocol of one trial.
//!
//! The parent writes one [`TrialSpec`] as JSON to the child's standard input
//! (or a file, with `--spec <path>`); the child fine-tunes and prints one
//! [`TrialResult`] as a single JSON line on standard output. Anything the
//! child prints before that line (logs, progress) is ignored; the **last
//! non-empty stdout line** is the result. Errors go to stderr with a non-zero
//! exit status; the parent records the last stderr lines as the failure
//! reason.
//!
//! ```
//! use polytune::trial::{TrialPhase, TrialResult, TrialSpec};
//!
//! let spec = TrialSpec {
//!     trial: 0,
//!     phase: TrialPhase::Search,
//!     epsilon: vec![0.0],
//!     seed: 7,
//!     train: toml::Table::new(),
//!     data: toml::Table::new(),
//!     worker: None,
//! };
//! let json = spec.to_json();
//! assert_eq!(TrialSpec::from_json(&json).unwrap(), spec);
//!
//! // What a child prints on stdout:
//! let line = r#"{"val_accuracy":0.95,"val_loss":0.2,"train_loss":0.1,"epochs":3,"seed":7,"duration_s":1.5}"#;
//! let result = TrialResult::parse_stdout(line).unwrap();
//! assert_eq!(result.epochs, Some(3));
//!
//! // The least an external trial program prints:
//! let result = TrialResult::parse_stdout(r#"{"val_accuracy":0.9,"val_loss":0.4}"#).unwrap();
//! assert_eq!((result.seed, result.epochs), (None, None));
//! ```

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why a trial runs, and so which data it is scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialPhase {
    /// A point the solver asked for (trial 0 is the CE baseline), scored on
    /// the validation split.
    Search,
    /// A confirmation run of the recommended ε or of cross-entropy on a
    /// fresh seed, scored on the held-out split the search never saw (a
    /// data set's test split, or the held-out part carved from its
    /// validation split). An external trial program must do the same.
    Confirm,
}

impl TrialPhase {
    /// The name used in the journal and the spec (`search` / `confirm`).
    pub fn as_str(self) -> &'static str {
        match self {
            TrialPhase::Search => "search",
            TrialPhase::Confirm => "confirm",
        }
    }
}

/// What one trial (one fine-tune) must do. Sent by the parent as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialSpec {
    /// Trial number within its phase (search trials count from 0; trial 0 is
    /// the cross-entropy baseline).
    pub trial: u64,
    /// Search or confirmation.
    pub phase: TrialPhase,
    /// ε₁..ε_N of `PolyLoss<N>` (all zero: plain cross-entropy).
    pub epsilon: Vec<f64>,
    /// Seed of the fine-tune: init, data order and augmentation.
    pub seed: u64,
    /// The study config's `[train]` table, passed through unchanged.
    #[serde(default)]
    pub train: toml::Table,
    /// The study config's `[data]` table, passed through unchanged.
    #[serde(default)]
    pub data: toml::Table,
    /// The worker slot (0..workers) the orchestrator runs this trial on:
    /// `[train].device = "cuda"` puts worker k on GPU k. Set by the pool,
    /// not part of what a trial computes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
}

/// A spec that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Reading the file or stdin failed.
    #[error("cannot read the trial spec from {source_name}: {source}")]
    Io {
        /// The file or `<stdin>`.
        source_name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a valid spec.
    #[error("{source_name}: invalid trial spec: {message}")]
    Parse {
        /// The file or `<stdin>`.
        source_name: String,
        /// serde_json's message (line, column, field).
        message: String,
    },
}

impl TrialSpec {
    /// The spec as one line of JSON.
    pub fn to_json(&self) -> String {
        // A spec holds only strings, numbers, booleans, arrays and tables.
        serde_json::to_string(self).expect("a TrialSpec always serialises")
    }

    /// Parses a spec from JSON.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        Self::parse(text, "<string>")
    }

    fn parse(text: &str, source_name: &str) -> Result<Self, SpecError> {
        serde_json::from_str(text).map_err(|e| SpecError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })
    }

    /// Reads the spec the way `polytune trial --spec <arg>` does: `-` reads
    /// standard input, anything else is a file path.
    pub fn read(arg: &str) -> Result<Self, SpecError> {
        if arg == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| SpecError::Io {
                    source_name: "<stdin>".into(),
                    source,
                })?;
            Self::parse(&text, "<stdin>")
        } else {
            let path = Path::new(arg);
            let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
                source_name: path.display().to_string(),
                source,
            })?;
            Self::parse(&text, &path.display().to_string())
        }
    }
}

/// What a finished trial reports: one JSON line on the child's stdout.
/// `val_accuracy` and `val_loss` are required; an external trial program
/// may leave out the rest (`seed`, when given, must equal the spec's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// Final validation top-1 accuracy in [0, 1].
    pub val_accuracy: f64,
    /// Final validation cross-entropy loss (the tie-breaker).
    pub val_loss: f64,
    /// Training loss of the last epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Epochs trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    /// The seed the trial actually used (must equal the spec's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Wall time of the fine-tune in seconds (as measured by the child).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// Why a child's stdout is not an acceptable result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResultError {
    /// Nothing was printed on stdout.
    #[error("no result line on stdout")]
    Empty,
    /// The last line is not a `TrialResult`.
    #[error("last stdout line is not a trial result ({message}): {line:?}")]
    Garbage {
        /// The offending line (cut to 200 characters).
        line: String,
        /// serde_json's message.
        message: String,
    },
    /// A metric is NaN, infinite or out of range.
    #[error("{field} = {value} is not a valid value ({why})")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The rule it breaks.
        why: &'static str,
    },
}

impl TrialResult {
    /// The result as one line of JSON (no trailing newline). A NaN or
    /// infinite metric is written as `null`, which the parent rejects.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a TrialResult always serialises")
    }

    /// Prints the result line on stdout and flushes: what `polytune trial`
    /// does last.
    pub fn print(&self) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", self.to_json_line())?;
        out.flush()
    }

    /// Parses a child's whole stdout: the last non-empty line must be a
    /// valid result (finite metrics, accuracy in [0, 1]).
    pub fn parse_stdout(stdout: &str) -> Result<Self, ResultError> {
        let line = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or(ResultError::Empty)?;
        let result: TrialResult = serde_json::from_str(line).map_err(|e| ResultError::Garbage {
            line: line.chars().take(200).collect(),
            message: e.to_string(),
        })?;
        result.check()?;
        Ok(result)
    }

    /// Checks the ranges a usable result must satisfy.
    pub fn check(&self) -> Result<(), ResultError> {
        let bad = |field, value, why| Err(ResultError::Invalid { field, value, why });
        if !(self.val_accuracy.is_finite() && (0.0..=1.0).contains(&self.val_accuracy)) {
            return bad("val_accuracy", self.val_accuracy, "must be in [0, 1]");
        }
        if !(self.val_loss.is_finite() && self.val_loss >= 0.0) {
            return bad("val_loss", self.val_loss, "must be finite and >= 0");
        }
        if let Some(t) = self.train_loss.filter(|t| !t.is_finite()) {
            return bad("train_loss", t, "must be finite");
        }
        if let Some(d) = self.duration_s.filter(|d| !(d.is_finite() && *d >= 0.0)) {
            return bad("duration_s", d, "must be finite and >= 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_line(acc: &str, loss: &str) -> String {
        format!(
            r#"{{"val_accuracy":{acc},"val_loss":{loss},"train_loss":0.1,"epochs":2,"seed":1,"duration_s":0.5}}"#
        )
    }

    #[test]
    fn last_line_wins_and_logs_before_are_ignored() {
        let out = format!("epoch 1\n{}\n\n", ok_line("0.5", "1.0"));
        let r = TrialResult::parse_stdout(&out).unwrap();
        assert_eq!(r.val_accuracy, 0.5);
        assert_eq!(r.val_loss, 1.0);
    }

    #[test]
    fn nan_null_and_range_errors_name_the_field() {
        // serde_json writes NaN as null; null is not an f64.
        let e = TrialResult::parse_stdout(&ok_line("0.5", "null")).unwrap_err();
        assert!(matches!(e, ResultError::Garbage { .. }), "{e}");
        let e = TrialResult::parse_stdout(&ok_line("1.5", "0.1")).unwrap_err();
        assert!(e.to_string().contains("val_accuracy = 1.5"), "{e}");
        let e = TrialResult::parse_stdout(&ok_line("0.5", "-1")).unwrap_err();
        assert!(e.to_string().contains("val_loss = -1"), "{e}");
        assert_eq!(TrialResult::parse_stdout("\n \n"), Err(ResultError::Empty));
        let e = TrialResult::parse_stdout("Segmentation fault").unwrap_err();
        assert!(e.to_string().contains("Segmentation fault"), "{e}");
    }

    #[test]
    fn spec_round_trips_with_nested_tables() {
        let train: toml::Table =
            toml::from_str("epochs = 3\nlr = 1e-3\n[sched]\nkind = \"one-cycle\"\n").unwrap();
        let spec = TrialSpec {
            trial: 4,
            phase: TrialPhase::Confirm,
            epsilon: vec![0.1 + 0.2, -1.0],
            seed: 9,
            train,
            data: toml::Table::new(),
            worker: None,
        };
        let back = TrialSpec::from_json(&spec.to_json()).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.epsilon[0].to_bits(), (0.1f64 + 0.2).to_bits());
        let e = TrialSpec::from_json("{\"trial\":1}").unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
    }
}
