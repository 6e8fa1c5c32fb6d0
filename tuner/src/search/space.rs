//! The search space: per-coordinate bounds on ε and the bound-respecting
//! map Nelder–Mead searches through.

/// Per-coordinate bounds `lower[j] ≤ ε_j ≤ upper[j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    /// Lower bounds.
    pub lower: Vec<f64>,
    /// Upper bounds.
    pub upper: Vec<f64>,
}

/// Two points closer than this fraction of the box's width (in every
/// coordinate) are the same trial: a solver that asks again gets the stored
/// cost and spends no budget.
pub const SAME_POINT_TOLERANCE: f64 = 1e-9;

impl Bounds {
    /// The number of coordinates N.
    pub fn dim(&self) -> usize {
        self.lower.len()
    }

    /// Clamps a point into the box (also repairs the last-bit rounding of the
    /// sine map, so no trial is ever outside the box).
    pub fn clamp(&self, p: &[f64]) -> Vec<f64> {
        p.iter()
            .zip(self.lower.iter().zip(&self.upper))
            .map(|(&x, (&lo, &hi))| x.max(lo).min(hi))
            .collect()
    }

    /// True when `p` is inside the box (inclusive).
    pub fn contains(&self, p: &[f64]) -> bool {
        p.len() == self.dim()
            && p.iter()
                .zip(self.lower.iter().zip(&self.upper))
                .all(|(&x, (&lo, &hi))| lo <= x && x <= hi)
    }

    /// True when `a` and `b` are the same trial (see [`SAME_POINT_TOLERANCE`]).
    pub fn same_point(&self, a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).zip(self.lower.iter().zip(&self.upper)).all(
                |((&x, &y), (&lo, &hi))| (x - y).abs() <= SAME_POINT_TOLERANCE * (hi - lo).max(1.0),
            )
    }

    /// The cross-entropy baseline, ε = 0 (trial 0 of every study).
    pub fn baseline(&self) -> Vec<f64> {
        vec![0.0; self.dim()]
    }

    /// The paper's default ε₁ = 2 (other terms 0), clamped into the box.
    pub fn paper_default(&self) -> Vec<f64> {
        let mut p = self.baseline();
        p[0] = PAPER_EPSILON1;
        self.clamp(&p)
    }
}

/// The paper's default ε₁ for ImageNet-style classification.
pub const PAPER_EPSILON1: f64 = 2.0;

/// Confirmation seeds start this far from the study seed, beyond any search
/// seed (a point gets at most 100 search seeds), so the confirmation never
/// reuses a seed the search saw.
pub const CONFIRM_SEED_OFFSET: u64 = 1_000_000;

/// The seed of search slot `slot`: `study_seed + slot` (wrapping). Slot 0 is
/// the study seed itself; every ε uses the same slots, so results pair.
pub fn search_seed(study_seed: u64, slot: usize) -> u64 {
    study_seed.wrapping_add(slot as u64)
}

/// The seed of confirmation run `k`: `study_seed + 1 000 000 + k` (wrapping).
pub fn confirm_seed(study_seed: u64, k: usize) -> u64 {
    study_seed
        .wrapping_add(CONFIRM_SEED_OFFSET)
        .wrapping_add(k as u64)
}

/// Nelder–Mead has no bounds, so it searches an unbounded internal space
/// `u ∈ Rᴺ` mapped into the box coordinate-wise by
///
/// ```text
/// ε_j = lo_j + (hi_j − lo_j) · (1 + sin u_j) / 2
/// ```
///
/// (the MINUIT transform). The map is smooth and onto the closed box, so
/// every point Nelder–Mead proposes, however far it reflects or expands, is
/// a valid ε; a step past a bound folds back inside instead of sticking to
/// it. The inverse, `u_j = asin(2 (ε_j − lo_j) / (hi_j − lo_j) − 1)`, places
/// the initial simplex at chosen ε.
#[derive(Debug, Clone, PartialEq)]
pub struct SineMap {
    bounds: Bounds,
}

impl SineMap {
    /// The map onto `bounds`.
    pub fn new(bounds: Bounds) -> Self {
        Self { bounds }
    }

    /// Internal point → ε (always inside the box).
    pub fn to_epsilon(&self, u: &[f64]) -> Vec<f64> {
        let e: Vec<f64> = u
            .iter()
            .zip(self.bounds.lower.iter().zip(&self.bounds.upper))
            .map(|(&u, (&lo, &hi))| lo + (hi - lo) * (1.0 + u.sin()) / 2.0)
            .collect();
        self.bounds.clamp(&e)
    }

    /// ε (inside the box) → internal point in `[-π/2, π/2]ᴺ`.
    pub fn to_internal(&self, eps: &[f64]) -> Vec<f64> {
        eps.iter()
            .zip(self.bounds.lower.iter().zip(&self.bounds.upper))
            .map(|(&e, (&lo, &hi))| (2.0 * (e - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0).asin())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_map_round_trips_and_never_leaves_the_box() {
        let b = Bounds {
            lower: vec![-1.0, -3.0],
            upper: vec![10.0, 0.5],
        };
        let m = SineMap::new(b.clone());
        for eps in [[0.0, 0.0], [2.0, -1.0], [-1.0, 0.5], [10.0, -3.0]] {
            let back = m.to_epsilon(&m.to_internal(&eps));
            assert!(b.same_point(&back, &eps), "{eps:?} -> {back:?}");
        }
        let mut u = -50.0;
        while u < 50.0 {
            let e = m.to_epsilon(&[u, 1.7 * u]);
            assert!(b.contains(&e), "{u} -> {e:?}");
            u += 0.37;
        }
        // A known value: u = 0 is the middle of the box.
        assert_eq!(m.to_epsilon(&[0.0, 0.0]), vec![4.5, -1.25]);
    }

    #[test]
    fn anchors() {
        let b = Bounds {
            lower: vec![-1.0, -1.0],
            upper: vec![1.5, 1.0],
        };
        assert_eq!(b.baseline(), vec![0.0, 0.0]);
        assert_eq!(b.paper_default(), vec![1.5, 0.0]);
        assert!(b.same_point(&[1.0, 0.0], &[1.0 + 1e-12, 0.0]));
        assert!(!b.same_point(&[1.0, 0.0], &[1.0 + 1e-6, 0.0]));
    }
}
