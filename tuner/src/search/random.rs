//! Uniform random search as an argmin solver (the baseline the other
//! solvers must beat).

use argmin::core::{CostFunction, Error, IterState, Problem, Solver, KV};

use super::space::Bounds;
use crate::rng::{names, Stream};

/// Draws points uniformly in the box, `batch` per iteration (evaluated
/// concurrently through `bulk_cost`). `init` evaluates the baseline and the
/// paper default first. The sequence of points depends only on the seed, not
/// on `batch` or on the costs.
pub struct RandomSearch {
    bounds: Bounds,
    batch: usize,
    rng: Stream,
}

impl RandomSearch {
    /// A search seeded with `seed`.
    pub fn new(bounds: Bounds, batch: usize, seed: u64) -> Self {
        Self {
            bounds,
            batch: batch.max(1),
            rng: Stream::new(names::RANDOM_SEARCH, seed, &[]),
        }
    }

    fn draw(&mut self) -> Vec<f64> {
        let p: Vec<f64> = (0..self.bounds.dim())
            .map(|j| {
                let (lo, hi) = (self.bounds.lower[j], self.bounds.upper[j]);
                self.rng.uniform(lo, hi)
            })
            .collect();
        self.bounds.clamp(&p)
    }

    fn best_of(points: Vec<Vec<f64>>, costs: Vec<f64>) -> (Vec<f64>, f64) {
        points
            .into_iter()
            .zip(costs)
            .fold(None, |best: Option<(Vec<f64>, f64)>, (p, c)| match best {
                Some((bp, bc)) if bc <= c => Some((bp, bc)),
                _ => Some((p, c)),
            })
            .expect("at least one point")
    }
}

type RState = IterState<Vec<f64>, (), (), (), (), f64>;

impl<O> Solver<O, RState> for RandomSearch
where
    O: CostFunction<Param = Vec<f64>, Output = f64>,
{
    fn name(&self) -> &str {
        "Random search"
    }

    fn init(
        &mut self,
        problem: &mut Problem<O>,
        state: RState,
    ) -> Result<(RState, Option<KV>), Error> {
        let points = vec![self.bounds.baseline(), self.bounds.paper_default()];
        let costs = problem.bulk_cost(&points)?;
        let (p, c) = Self::best_of(points, costs);
        Ok((state.param(p).cost(c), None))
    }

    fn next_iter(
        &mut self,
        problem: &mut Problem<O>,
        state: RState,
    ) -> Result<(RState, Option<KV>), Error> {
        let points: Vec<Vec<f64>> = (0..self.batch).map(|_| self.draw()).collect();
        let costs = problem.bulk_cost(&points)?;
        let (p, c) = Self::best_of(points, costs);
        Ok((state.param(p).cost(c), None))
    }
}
