//! Evaluation metrics (top-1, top-5, cross-entropy) and the per-epoch CSV.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::TrainError;

/// Accuracy and loss over a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalMetrics {
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy (top-C when there are fewer than 5 classes).
    pub top5: f64,
    /// Mean cross-entropy (plain CE, whatever the training loss was).
    pub loss: f64,
    /// Samples evaluated.
    pub count: usize,
}

/// Accumulates [`EvalMetrics`] batch by batch, in f64.
///
/// A sample's rank is the number of classes with a larger logit than its
/// label's, plus the number of lower-indexed classes with an equal one (ties
/// go to the lower index, as `argmax` breaks them); it is top-k correct when
/// its rank is below k.
///
/// ```
/// use polytune::train::metrics::Accumulator;
/// let mut acc = Accumulator::default();
/// // Two samples of 3 classes; the first is right, the second ranks 2nd.
/// acc.add(&[3.0, 1.0, 0.0, 0.0, 2.0, 1.0], 3, &[0, 2]);
/// let m = acc.finish();
/// assert_eq!((m.top1, m.top5, m.count), (0.5, 1.0, 2));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    top1: usize,
    top5: usize,
    loss: f64,
    count: usize,
}

impl Accumulator {
    /// Adds a batch of row-major logits (`labels.len() × classes`).
    pub fn add(&mut self, logits: &[f32], classes: usize, labels: &[usize]) {
        assert_eq!(logits.len(), labels.len() * classes, "logits shape");
        for (row, &y) in logits.chunks_exact(classes).zip(labels) {
            let zy = row[y];
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(j, &z)| z > zy || (z == zy && j < y))
                .count();
            self.top1 += (rank < 1) as usize;
            self.top5 += (rank < 5) as usize;
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z as f64));
            let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
            self.loss += lse - zy as f64;
            self.count += 1;
        }
    }

    /// The metrics so far (NaN for an empty split).
    pub fn finish(&self) -> EvalMetrics {
        let n = self.count as f64;
        EvalMetrics {
            top1: self.top1 as f64 / n,
            top5: self.top5 as f64 / n,
            loss: self.loss / n,
            count: self.count,
        }
    }
}

/// Which part of `fine_tune` an epoch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Body frozen, head only.
    Frozen,
    /// Everything trainable.
    Unfrozen,
}

impl Phase {
    /// `frozen` / `unfrozen`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Frozen => "frozen",
            Phase::Unfrozen => "unfrozen",
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochMetrics {
    /// Epoch number over the whole run, from 1.
    pub epoch: usize,
    /// Frozen or unfrozen.
    pub phase: Phase,
    /// Mean training loss (the PolyLoss being optimised) over the epoch's samples.
    pub train_loss: f64,
    /// Validation metrics after the epoch.
    pub valid: EvalMetrics,
    /// The head's learning rate at the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch (training and evaluation), seconds.
    pub seconds: f64,
}

/// The log line: `epoch 3 (unfrozen): train loss …, val loss …, top-1 …, top-5 …, 1.23 s`.
impl std::fmt::Display for EpochMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {} ({}): train loss {:.4}, val loss {:.4}, top-1 {:.4}, top-5 {:.4}, {:.2} s",
            self.epoch,
            self.phase.name(),
            self.train_loss,
            self.valid.loss,
            self.valid.top1,
            self.valid.top5,
            self.seconds
        )
    }
}

/// The per-epoch metrics CSV: written row by row, flushed after each.
#[derive(Debug)]
pub struct MetricsCsv {
    path: PathBuf,
    file: std::fs::File,
}

/// The CSV header.
pub const CSV_HEADER: &str = "epoch,phase,train_loss,val_loss,val_top1,val_top5,lr,seconds";

impl MetricsCsv {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        let mut file = std::fs::File::create(path).map_err(|e| TrainError::io(path, e))?;
        writeln!(file, "{CSV_HEADER}").map_err(|e| TrainError::io(path, e))?;
        Ok(MetricsCsv {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one epoch.
    pub fn append(&mut self, m: &EpochMetrics) -> Result<(), TrainError> {
        writeln!(
            self.file,
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.3}",
            m.epoch,
            m.phase.name(),
            m.train_loss,
            m.valid.loss,
            m.valid.top1,
            m.valid.top5,
            m.lr,
            m.seconds
        )
        .and_then(|_| self.file.flush())
        .map_err(|e| TrainError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ce_and_ranks_against_hand_values() {
        let mut a = Accumulator::default();
        // Row 0: label 1, logits [0, 0]: a tie, lower index wins -> rank 1.
        // Row 1: label 0, logits [ln 3, 0]: p = 3/4.
        a.add(&[0.0, 0.0, 3f32.ln(), 0.0], 2, &[1, 0]);
        let m = a.finish();
        assert_eq!(m.top1, 0.5);
        assert_eq!(m.top5, 1.0);
        let want = (2f64.ln() + (4.0f64 / 3.0).ln()) / 2.0;
        assert!((m.loss - want).abs() < 1e-7, "{} vs {want}", m.loss);
        // Seven classes: rank 5 is outside the top five.
        let mut b = Accumulator::default();
        b.add(&[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0], 7, &[5]);
        assert_eq!(b.finish().top5, 0.0);
        let mut c = Accumulator::default();
        c.add(&[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0], 7, &[4]);
        assert_eq!(c.finish().top5, 1.0);
    }
}
