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
        "{:>5}  {:<8}  {}  {:>8}  {:>8}  {:>8}  {:>8.1}  {}",
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

fn eps_list(e: &[f64]) -> String {
    e.iter()
        .map(|x| format!("{x:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl StudyReport {
    /// The trials (recommended ε marked), the confirmation runs, the
    /// recommendation and the verdict.
    pub fn summary_table(&self) -> String {
        let n = self.trials.first().map_or(1, |t| t.epsilon.len());
        let eps_head: String = (1..=n)
            .map(|j| format!("{:>8}", format!("eps_{j}")))
            .collect::<Vec<_>>()
            .join(" ");
        let head = format!(
            "{:>5}  {:<8}  {}  {:>8}  {:>8}  {:>8}  {:>8}  note",
            "trial", "state", eps_head, "val_acc", "val_loss", "seed", "time_s"
        );
        let mut out = String::new();
        let _ = writeln!(
            out,
            "search: {}, budget {}, {} fine-tunes ({} run now, {} recorded before)",
            self.solver,
            self.budget,
            self.trials.len(),
            self.ran,
            self.replayed
        );
        let _ = writeln!(out, "{head}");
        let rec = &self.recommendation;
        for t in &self.trials {
            let is_rec = t
                .epsilon
                .iter()
                .zip(&rec.epsilon)
                .all(|(a, b)| (a - b).abs() <= 1e-12 * a.abs().max(1.0));
            let is_base = t.epsilon.iter().all(|e| *e == 0.0);
            let mark = match (is_rec, is_base) {
                (true, true) => "recommended, baseline ",
                (true, false) => "recommended ",
                (false, true) => "baseline ",
                _ => "",
            };
            row(&mut out, t, mark);
        }
        if !self.confirm.is_empty() {
            let _ = writeln!(
                out,
                "\nconfirmation on held-out data (fresh seeds, never used by the search):\n{head}"
            );
            for r in &self.confirm {
                row(&mut out, r, "");
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "recommended ε = [{}]: model's posterior mean val acc {:.4} ± {:.4} (1 sd), mean over its {} seed(s) {:.4}{}",
            eps_list(&rec.epsilon),
            rec.posterior_mean,
            rec.posterior_sd,
            rec.seeds,
            rec.mean_over_seeds,
            if rec.from_model { "" } else { " (no model: chosen by the mean over seeds)" }
        );
        let c = &self.confirmation;
        if !c.seeds.is_empty() {
            let seeds: Vec<String> = c.seeds.iter().map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "held-out accuracy over seeds [{}]: tuned {:.4} ± {:.4} (n={}), cross-entropy {:.4} ± {:.4} (n={})",
                seeds.join(", "),
                c.tuned.mean,
                c.tuned.std,
                c.tuned.values.len(),
                c.baseline.mean,
                c.baseline.std,
                c.baseline.values.len(),
            );
            if let Some(p) = &c.paired {
                let _ = writeln!(
                    out,
                    "paired difference tuned − CE: {:+.2} points, SE {:.2}, 95 % CI [{:+.2}, {:+.2}] (t, {} dof)",
                    p.mean,
                    p.se,
                    p.ci_low,
                    p.ci_high,
                    p.n.saturating_sub(1)
                );
            }
            if c.tuned.failed + c.baseline.failed > 0 {
                let _ = writeln!(
                    out,
                    "({} confirmation run(s) failed and are not in the statistics)",
                    c.tuned.failed + c.baseline.failed
                );
            }
        }
        let _ = writeln!(out, "verdict: {}", self.verdict.sentence);
        let _ = writeln!(
            out,
            "fine-tunes: {} search + {} confirmation = {}",
            self.trials.len(),
            self.confirm.len(),
            self.trials.len() + self.confirm.len()
        );
        for p in &self.tuned_paths {
            let _ = writeln!(out, "tuned coefficients: {}", p.display());
        }
        out
    }
}
