//! The summary table printed at the end of a study.

use std::fmt::Write;

use super::journal::TrialRecord;
use super::StudyReport;

fn eps(e: &[f64]) -> String {
    e.iter()
        .map(|x| format!("{x:8.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn row(out: &mut String, r: &TrialRecord, mark: &str) {
    let acc = r.val_accuracy.map_or("-".into(), |a| format!("{a:.4}"));
    let loss = r.val_loss.map_or("-".into(), |l| format!("{l:.4}"));
    let note = if r.error.is_empty() {
        mark.to_string()
    } else {
        // Long reasons: keep the start (what failed) and the end (the last stderr line).
        let chars: Vec<char> = r.error.chars().collect();
        let e: String = if chars.len() > 110 {
            let head: String = chars[..30].iter().collect();
            let tail: String = chars[chars.len() - 77..].iter().collect();
            format!("{head}...{tail}")
        } else {
            r.error.clone()
        };
        format!("{mark}{e}")
    };
    let _ = writeln!(
        out,
        "{:>5}  {:<8}  {}  {:>8}  {:>8}  {:>6}  {:>8.1}  {}",
        r.trial,
        r.state.as_str(),
        eps(&r.epsilon),
        acc,
        loss,
        r.seed,
        r.duration_s,
        note
    );
}

impl StudyReport {
    /// The trials (best marked), the re-runs, and the result in a few lines.
    pub fn summary_table(&self) -> String {
        let n = self.trials.first().map_or(1, |t| t.epsilon.len());
        let eps_head: String = (1..=n)
            .map(|j| format!("{:>8}", format!("eps_{j}")))
            .collect::<Vec<_>>()
            .join(" ");
        let head = format!(
            "{:>5}  {:<8}  {}  {:>8}  {:>8}  {:>6}  {:>8}  note",
            "trial", "state", eps_head, "val_acc", "val_loss", "seed", "time_s"
        );
        let mut out = String::new();
        let _ = writeln!(
            out,
            "search: {}, budget {}, {} trials ({} run now, {} from the journal)",
            self.solver,
            self.budget,
            self.trials.len(),
            self.ran,
            self.replayed
        );
        let _ = writeln!(out, "{head}");
        for t in &self.trials {
            let mark = match (t.trial == self.best_index, t.trial == 0) {
                (true, true) => "best, baseline ",
                (true, false) => "best ",
                (false, true) => "baseline ",
                _ => "",
            };
            row(&mut out, t, mark);
        }
        if !self.reruns.is_empty() {
            let _ = writeln!(out, "\nconfirmation re-runs:\n{head}");
            for r in &self.reruns {
                row(&mut out, r, "");
            }
        }
        let c = &self.confirmation;
        let b = self.best();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "best      ε = [{}]  val acc {:.4} (trial {})",
            b.epsilon
                .iter()
                .map(|e| format!("{e:.4}"))
                .collect::<Vec<_>>()
                .join(", "),
            b.val_accuracy.unwrap_or(f64::NAN),
            b.trial
        );
        let _ = writeln!(
            out,
            "baseline  ε = 0 (cross-entropy)  val acc {:.4}",
            self.baseline().val_accuracy.unwrap_or(f64::NAN)
        );
        let seeds: Vec<String> = c.seeds.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "over seeds [{}]: best {:.4} ± {:.4} (n={}), baseline {:.4} ± {:.4} (n={}), difference {:+.4}",
            seeds.join(", "),
            c.best.mean,
            c.best.std,
            c.best.values.len(),
            c.baseline.mean,
            c.baseline.std,
            c.baseline.values.len(),
            c.difference
        );
        if c.best.failed + c.baseline.failed > 0 {
            let _ = writeln!(
                out,
                "({} confirmation run(s) failed and are not in the means)",
                c.best.failed + c.baseline.failed
            );
        }
        for p in &self.tuned_paths {
            let _ = writeln!(out, "tuned coefficients: {}", p.display());
        }
        out
    }
}
