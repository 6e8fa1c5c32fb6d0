//! Every solver on analytic objectives, through the real argmin Executor path
//! (`run_search` → `Budgeted` solver → `Evaluator` → backend).

use std::sync::{Arc, Mutex};

use polytune::search::{
    failed_cost, run_search, trial_cost, SearchConfig, SearchEnd, SolverKind, TrialBackend,
    TrialRequest, FAILED_COST,
};

/// One batch of `(index, ε)` trials.
type Batch = Vec<(u64, Vec<f64>)>;

/// An analytic "fine-tune": records every batch, checks the bounds.
struct Analytic {
    f: fn(&[f64]) -> Option<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
    batches: Mutex<Vec<Batch>>,
    stop_after: Option<usize>,
}

impl Analytic {
    fn new(f: fn(&[f64]) -> Option<f64>, lower: Vec<f64>, upper: Vec<f64>) -> Arc<Self> {
        Arc::new(Self {
            f,
            lower,
            upper,
            batches: Mutex::new(Vec::new()),
            stop_after: None,
        })
    }
    fn all(&self) -> Vec<(u64, Vec<f64>)> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

impl TrialBackend for Analytic {
    fn run_trials(&self, trials: &[TrialRequest]) -> Option<Vec<f64>> {
        let trials: Vec<(u64, Vec<f64>)> = trials
            .iter()
            .map(|t| (t.index, t.epsilon.clone()))
            .collect();
        let mut b = self.batches.lock().unwrap();
        if let Some(k) = self.stop_after {
            if b.iter().map(Vec::len).sum::<usize>() >= k {
                return None;
            }
        }
        for (i, e) in &trials {
            for j in 0..e.len() {
                assert!(
                    self.lower[j] <= e[j] && e[j] <= self.upper[j],
                    "trial {i} out of bounds: {e:?}"
                );
            }
        }
        b.push(trials.to_vec());
        Some(
            trials
                .iter()
                .map(|(_, e)| {
                    (self.f)(e).map_or_else(|| failed_cost(e), |acc| trial_cost(acc, 0.5))
                })
                .collect(),
        )
    }
}

/// Accuracy peaks at ε₁ = 3.7 (a smooth bowl).
fn bowl1(e: &[f64]) -> Option<f64> {
    Some(0.95 - 0.004 * (e[0] - 3.7).powi(2))
}

/// 2-D: peak at (1.5, -0.5), anisotropic.
fn bowl2(e: &[f64]) -> Option<f64> {
    Some(0.95 - 0.004 * (e[0] - 1.5).powi(2) - 0.02 * (e[1] + 0.5).powi(2))
}

fn cfg(solver: SolverKind, terms: usize, lower: Vec<f64>, upper: Vec<f64>) -> SearchConfig {
    SearchConfig {
        solver,
        terms,
        lower: Some(lower),
        upper: Some(upper),
        ..Default::default()
    }
}

fn check_common(out: &polytune::search::SearchOutcome, backend: &Analytic, budget: usize) {
    let all = backend.all();
    // Indices 0..n, each run once, in order of assignment.
    let mut idx: Vec<u64> = all.iter().map(|(i, _)| *i).collect();
    idx.sort();
    assert_eq!(idx, (0..all.len() as u64).collect::<Vec<_>>());
    assert!(all.len() <= budget);
    assert_eq!(out.trials.len(), all.len());
    // Trial 0 is the baseline, trial 1 the paper default; both in the first batch.
    assert!(out.trials[0].epsilon.iter().all(|&e| e == 0.0));
    assert_eq!(out.trials[1].epsilon[0], 2.0);
    assert_eq!(backend.batches.lock().unwrap()[0].len(), 2);
    // No two trials at the same point.
    for a in 0..all.len() {
        for b in 0..a {
            assert_ne!(all[a].1, all[b].1, "trials {a} and {b} repeat a point");
        }
    }
}

#[test]
fn nelder_mead_finds_a_1d_optimum_within_budget() {
    let backend = Analytic::new(bowl1, vec![-1.0], vec![10.0]);
    let out = run_search(
        &cfg(SolverKind::NelderMead, 1, vec![-1.0], vec![10.0]),
        20,
        0,
        1,
        backend.clone(),
    )
    .unwrap();
    check_common(&out, &backend, 20);
    assert_eq!(out.end, SearchEnd::BudgetSpent);
    assert_eq!(out.trials.len(), 20);
    let best = out.lowest_cost().unwrap();
    assert!((best.epsilon[0] - 3.7).abs() < 0.1, "best {best:?}");
}

#[test]
fn nelder_mead_2d_respects_the_box_even_when_the_optimum_is_outside() {
    // Peak at (1.5, -0.5) but ε₂ ≥ 0 here: the best is on the boundary ε₂ = 0.
    let backend = Analytic::new(bowl2, vec![-1.0, 0.0], vec![4.0, 3.0]);
    let out = run_search(
        &cfg(SolverKind::NelderMead, 2, vec![-1.0, 0.0], vec![4.0, 3.0]),
        30,
        0,
        1,
        backend.clone(),
    )
    .unwrap();
    check_common(&out, &backend, 30);
    let best = out.lowest_cost().unwrap();
    assert!((best.epsilon[0] - 1.5).abs() < 0.3, "best {best:?}");
    assert!(best.epsilon[1] < 0.15, "best {best:?}");
    // The initial simplex: baseline, paper default, and the ε₂ step.
    assert_eq!(out.trials[2].epsilon, vec![0.0, 1.0]);
}

#[test]
fn particle_swarm_runs_each_swarm_as_one_concurrent_batch() {
    let backend = Analytic::new(bowl2, vec![-1.0, -2.0], vec![10.0, 2.0]);
    let mut c = cfg(
        SolverKind::ParticleSwarm,
        2,
        vec![-1.0, -2.0],
        vec![10.0, 2.0],
    );
    c.particle_swarm.particles = 6;
    let out = run_search(&c, 30, 3, 4, backend.clone()).unwrap();
    check_common(&out, &backend, 30);
    assert_eq!(out.end, SearchEnd::BudgetSpent);
    let batches = backend.batches.lock().unwrap().clone();
    // Anchors (2), then the 4 other initial particles, then swarm iterations
    // of up to 6 new points each (clamped repeats are served from memory).
    assert_eq!(batches[1].len(), 4);
    assert!(batches[2..].iter().all(|b| b.len() <= 6 && !b.is_empty()));
    assert!(batches[2..].iter().any(|b| b.len() >= 3), "{batches:?}");
    let best = out.lowest_cost().unwrap();
    let base = &out.trials[0];
    assert!(best.cost < base.cost);
    assert!(bowl2(&best.epsilon).unwrap() > 0.93, "best {best:?}");
    // Same seed, same trials; another seed, another swarm.
    let again = Analytic::new(bowl2, vec![-1.0, -2.0], vec![10.0, 2.0]);
    let out2 = run_search(&c, 30, 3, 4, again).unwrap();
    assert_eq!(out2.trials, out.trials);
    let other = Analytic::new(bowl2, vec![-1.0, -2.0], vec![10.0, 2.0]);
    let out3 = run_search(&c, 30, 4, 4, other).unwrap();
    assert_ne!(out3.trials, out.trials);
}

#[test]
fn random_search_counts_the_baseline_and_its_points_do_not_depend_on_batch() {
    let lo = vec![-1.0];
    let hi = vec![10.0];
    let b1 = Analytic::new(bowl1, lo.clone(), hi.clone());
    let b3 = Analytic::new(bowl1, lo.clone(), hi.clone());
    let mut c = cfg(SolverKind::Random, 1, lo.clone(), hi.clone());
    c.random.batch = Some(1);
    let o1 = run_search(&c, 11, 7, 1, b1.clone()).unwrap();
    c.random.batch = Some(3);
    let o3 = run_search(&c, 11, 7, 1, b3.clone()).unwrap();
    check_common(&o1, &b1, 11);
    check_common(&o3, &b3, 11);
    assert_eq!(o1.trials.len(), 11);
    assert_eq!(o1.trials, o3.trials);
    assert!(b3.batches.lock().unwrap()[1..].iter().all(|b| b.len() <= 3));
    // Uniform draws: 9 draws from [-1, 10] are not all in one half.
    let draws: Vec<f64> = o1.trials[2..].iter().map(|t| t.epsilon[0]).collect();
    assert!(
        draws.iter().any(|&x| x < 4.5) && draws.iter().any(|&x| x > 4.5),
        "{draws:?}"
    );
}

#[test]
fn brent_converges_on_one_coefficient() {
    let backend = Analytic::new(bowl1, vec![-1.0], vec![10.0]);
    let mut c = cfg(SolverKind::Brent, 1, vec![-1.0], vec![10.0]);
    c.brent.tolerance = 0.05;
    let out = run_search(&c, 20, 0, 1, backend.clone()).unwrap();
    check_common(&out, &backend, 20);
    let best = out.lowest_cost().unwrap();
    assert!((best.epsilon[0] - 3.7).abs() < 0.1, "best {best:?}");
    // Brent converges after ~6 trials, then restarts around the best point
    // on narrower brackets until the budget is spent.
    assert_eq!((out.trials.len(), &out.end), (20, &SearchEnd::BudgetSpent));
    let late: Vec<f64> = out.trials[8..].iter().map(|t| t.epsilon[0]).collect();
    assert!(late.iter().all(|e| (e - 3.7).abs() < 2.8), "{late:?}");
}

#[test]
fn failed_trials_get_a_penalty_and_the_search_goes_on() {
    // Trials with ε₁ > 5 "crash"; the optimum at 3.7 is still found.
    fn cliff(e: &[f64]) -> Option<f64> {
        (e[0] <= 5.0).then(|| 0.95 - 0.004 * (e[0] - 3.7).powi(2))
    }
    for solver in [
        SolverKind::NelderMead,
        SolverKind::ParticleSwarm,
        SolverKind::Random,
    ] {
        let backend = Analytic::new(cliff, vec![-1.0], vec![10.0]);
        let out = run_search(
            &cfg(solver, 1, vec![-1.0], vec![10.0]),
            16,
            1,
            2,
            backend.clone(),
        )
        .unwrap();
        check_common(&out, &backend, 16);
        assert_eq!(out.trials.len(), 16, "{solver}");
        assert!(out.trials.iter().all(|t| t.cost.is_finite()));
        let best = out.lowest_cost().unwrap();
        assert!(
            best.epsilon[0] <= 5.0 && best.cost < FAILED_COST,
            "{solver}: {best:?}"
        );
    }
}

#[test]
fn a_stopping_backend_ends_the_search_without_more_trials() {
    let backend = Arc::new(Analytic {
        f: bowl1,
        lower: vec![-1.0],
        upper: vec![10.0],
        batches: Mutex::new(Vec::new()),
        stop_after: Some(5),
    });
    let out = run_search(
        &cfg(SolverKind::NelderMead, 1, vec![-1.0], vec![10.0]),
        20,
        0,
        1,
        backend.clone(),
    )
    .unwrap();
    assert_eq!(out.end, SearchEnd::Stopped);
    assert_eq!(backend.all().len(), 5);
    assert_eq!(out.trials.len(), 5);
}

#[test]
fn budget_of_one_is_just_the_baseline() {
    let backend = Analytic::new(bowl1, vec![-1.0], vec![10.0]);
    let out = run_search(
        &cfg(SolverKind::NelderMead, 1, vec![-1.0], vec![10.0]),
        1,
        0,
        1,
        backend.clone(),
    )
    .unwrap();
    assert_eq!(out.trials.len(), 1);
    assert_eq!(out.trials[0].epsilon, vec![0.0]);
    assert_eq!(out.end, SearchEnd::BudgetSpent);
}
