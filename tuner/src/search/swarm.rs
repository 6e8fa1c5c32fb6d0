//! argmin's particle swarm, started from a swarm that contains the baseline
//! and the paper default.

use argmin::core::{CostFunction, Error, PopulationState, Problem, Solver, KV};
use argmin::solver::particleswarm::{Particle, ParticleSwarm};

use super::config::SwarmOptions;
use super::space::Bounds;
use crate::rng::{names, Stream};

type Swarm = ParticleSwarm<Vec<f64>, f64, Stream>;
type PState = PopulationState<Particle<Vec<f64>, f64>, f64>;

/// [`ParticleSwarm`] with a deterministic generator and a chosen initial
/// swarm: particle 0 is the baseline ε = 0, particle 1 the paper default,
/// the rest uniform in the box; velocities uniform in ±¼ of the box width.
/// The initial swarm and every iteration are evaluated with one `bulk_cost`
/// call, i.e. concurrently. Positions are clamped to the box by argmin.
pub struct SeededSwarm {
    inner: Swarm,
    positions: Vec<Vec<f64>>,
    velocities: Vec<Vec<f64>>,
}

impl SeededSwarm {
    /// A swarm of `opts.particles` seeded with `seed`.
    pub fn new(bounds: &Bounds, opts: &SwarmOptions, seed: u64) -> Result<Self, Error> {
        let mut rng = Stream::new(names::SWARM_INIT, seed, &[]);
        let inner =
            ParticleSwarm::new((bounds.lower.clone(), bounds.upper.clone()), opts.particles)
                .with_rng_generator(Stream::new(names::SWARM_MOVES, seed, &[]))
                .with_inertia_factor(opts.inertia)?
                .with_cognitive_factor(opts.cognitive)?
                .with_social_factor(opts.social)?;
        let mut positions = vec![bounds.baseline(), bounds.paper_default()];
        let n = bounds.dim();
        while positions.len() < opts.particles {
            positions.push(
                (0..n)
                    .map(|j| rng.uniform(bounds.lower[j], bounds.upper[j]))
                    .collect(),
            );
        }
        positions.truncate(opts.particles);
        let velocities = (0..opts.particles)
            .map(|_| {
                (0..n)
                    .map(|j| (bounds.upper[j] - bounds.lower[j]) * 0.25 * (2.0 * rng.unit() - 1.0))
                    .collect()
            })
            .collect();
        Ok(Self {
            inner,
            positions,
            velocities,
        })
    }
}

impl<O> Solver<O, PState> for SeededSwarm
where
    O: CostFunction<Param = Vec<f64>, Output = f64>,
{
    fn name(&self) -> &str {
        "Particle Swarm Optimization"
    }

    fn init(
        &mut self,
        problem: &mut Problem<O>,
        state: PState,
    ) -> Result<(PState, Option<KV>), Error> {
        let costs = problem.bulk_cost(&self.positions)?;
        let particles = self
            .positions
            .iter()
            .zip(&self.velocities)
            .zip(costs)
            .map(|((p, v), c)| Particle::new(p.clone(), c, v.clone()))
            .collect();
        self.inner.init(problem, state.population(particles))
    }

    fn next_iter(
        &mut self,
        problem: &mut Problem<O>,
        state: PState,
    ) -> Result<(PState, Option<KV>), Error> {
        self.inner.next_iter(problem, state)
    }
}
