//! One trial: the unit of a study's work, and the boundary between the
//! search (the parent) and a fine-tune (a child process).
//!
//! A study evaluates the objective f(ε) = validation accuracy after a short
//! fine-tune with Poly-N coefficients ε and seed s. Each evaluation is one
//! trial: a [`TrialSpec`] (ε, s, the config's `[train]` and `[data]`
//! tables, and the phase, which fixes the split it is scored on) goes to a
//! child process, which answers with one [`TrialResult`] line. Running each
//! trial in its own process is what makes a crash, an OOM kill or a NaN
//! fail that trial only; the parent's process handling lives in
//! [`crate::orchestrator`].
//!
//! * [`protocol`]: the spec and result formats and how they are read
//!   (the contract an external `[trial] command` program also follows);
//! * [`run`]: the child's side, what `polytune trial --spec -` runs
//!   ([`run_trial_command`]), and [`run_trial`] for in-process trials.

pub mod protocol;
pub mod run;

pub use protocol::{ResultError, SpecError, TrialPhase, TrialResult, TrialSpec};
pub use run::{run_trial, run_trial_command, TrialError};
