use polytune::orchestrator::{FnRunner, TrialOutcome, TrialResult, TrialSpec};
use polytune::study::*;
use std::sync::Arc;
fn f(s: &TrialSpec) -> TrialOutcome {
    std::thread::sleep(std::time::Duration::from_millis(150));
    let e = s.epsilon[0];
    if e > 8.0 {
        return TrialOutcome::Failed("exit status 3: CUDA out of memory".into());
    }
    TrialOutcome::Finished(TrialResult {
        val_accuracy: 0.95 - 0.004 * (e - 3.7).powi(2) + 0.001 * (s.seed % 3) as f64,
        val_loss: 0.2,
        train_loss: 0.1,
        epochs: 2,
        seed: s.seed,
        duration_s: 0.15,
    })
}
fn main() {
    init_logging().unwrap();
    let dir = std::env::args().nth(1).unwrap();
    let cfg = StudyConfig::from_toml_str(
        "[study]\nbudget = 20\n[search]\nsolver = \"particle-swarm\"\n",
        "demo.toml",
    )
    .unwrap();
    let mut o = StudyOptions::new(dir);
    o.resume_command = Some("tmp_demo DIR".into());
    match run_study_blocking(cfg, o, Arc::new(FnRunner::new(f))) {
        Ok(r) => println!("{}", r.summary_table()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(130)
        }
    }
}
