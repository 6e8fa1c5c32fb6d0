//! The study plot (SVG).
//!
//! Top, one panel per coefficient ε_j: the surrogate's posterior mean
//! accuracy `m + f(ε)` along ε_j (the other coefficients held at the
//! recommended ε) with its ±2σ band, every search observation coloured by
//! its seed slot, failed trials on the floor, and the recommended ε.
//! Bottom: the confirmation — per-seed paired differences tuned − CE on
//! held-out data in accuracy points, their mean and 95 % CI, and zero.
//!
//! The SVG is rendered in memory and written atomically, so a full disk
//! never leaves a truncated plot in place of the previous one.

use std::path::Path;

use plotters::prelude::*;

use super::output::observations;
use super::StudyReport;
use crate::fs::write_atomic;
use crate::search::Surrogate;

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// The colour of seed slot `k`.
fn seed_colour(k: usize) -> RGBColor {
    const P: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    P[k % P.len()]
}

/// Draws `report` to an SVG file at `path` (atomically).
pub fn write_plot(report: &StudyReport, path: &Path) -> Result<(), String> {
    let svg = render(report)?;
    write_atomic(path, svg.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The SVG text of the plot.
pub fn render(report: &StudyReport) -> Result<String, String> {
    let err = |e: &dyn std::fmt::Display| format!("{e}");
    let trials = &report.trials;
    let n = trials.first().map_or(1, |t| t.epsilon.len());
    let study_seed = trials.first().map_or(0, |t| t.seed);
    let rec = &report.recommendation;
    let model_bounds = report.bounds.clone();
    let obs = observations(trials, study_seed);
    let model = Surrogate::fit(&obs, &model_bounds, study_seed);
    let finished: Vec<_> = trials.iter().filter(|t| t.is_finished()).collect();
    let panels = n.min(4);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (440 * panels.max(2) as u32, 760))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (top, bottom) = root.split_vertically(400);
        for (j, area) in top.split_evenly((1, panels)).iter().enumerate() {
            let (xlo, xhi) = (model_bounds.lower[j], model_bounds.upper[j]);
            let (xlo, xhi) = if xhi > xlo {
                (xlo, xhi)
            } else {
                (xlo - 1.0, xlo + 1.0)
            };
            // The model along ε_j.
            let curve: Vec<(f64, f64, f64)> = match &model {
                Some(m) => (0..=120)
                    .map(|i| {
                        let x = xlo + (xhi - xlo) * i as f64 / 120.0;
                        let mut e = rec.epsilon.clone();
                        e[j] = x;
                        let p = m.predict(&e);
                        (x, p.mean, 2.0 * p.var.max(0.0).sqrt())
                    })
                    .collect(),
                None => Vec::new(),
            };
            let (ylo, yhi) = range(
                finished
                    .iter()
                    .filter_map(|t| t.val_accuracy)
                    .chain(curve.iter().flat_map(|c| [c.1 - c.2, c.1 + c.2])),
            );
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("eps_{}: model mean ± 2σ and trials by seed", j + 1),
                    ("sans-serif", 16),
                )
                .margin(12)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(xlo..xhi, ylo..yhi)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc(format!("eps_{}", j + 1))
                .y_desc("val top-1 accuracy")
                .draw()
                .map_err(|e| err(&e))?;
            if !curve.is_empty() {
                let mut band: Vec<(f64, f64)> = curve.iter().map(|c| (c.0, c.1 + c.2)).collect();
                band.extend(curve.iter().rev().map(|c| (c.0, c.1 - c.2)));
                chart
                    .draw_series(std::iter::once(Polygon::new(band, BLUE.mix(0.15))))
                    .map_err(|e| err(&e))?
                    .label("model ± 2σ")
                    .legend(|(x, y)| {
                        Rectangle::new([(x - 8, y - 4), (x + 8, y + 4)], BLUE.mix(0.15).filled())
                    });
                chart
                    .draw_series(LineSeries::new(
                        curve.iter().map(|c| (c.0, c.1)),
                        BLUE.stroke_width(2),
                    ))
                    .map_err(|e| err(&e))?
                    .label("model mean")
                    .legend(|(x, y)| {
                        PathElement::new(vec![(x - 8, y), (x + 8, y)], BLUE.stroke_width(2))
                    });
            }
            chart
                .draw_series(finished.iter().map(|t| {
                    let slot = t.seed.wrapping_sub(study_seed) as usize;
                    Circle::new(
                        (t.epsilon[j], t.val_accuracy.unwrap_or_default()),
                        4,
                        seed_colour(slot).filled(),
                    )
                }))
                .map_err(|e| err(&e))?
                .label("trial (colour = seed)")
                .legend(|(x, y)| Circle::new((x, y), 4, seed_colour(0).filled()));
            chart
                .draw_series(
                    trials
                        .iter()
                        .filter(|t| !t.is_finished())
                        .map(|t| Cross::new((t.epsilon[j], ylo), 6, RED.stroke_width(2))),
                )
                .map_err(|e| err(&e))?
                .label("failed")
                .legend(|(x, y)| Cross::new((x, y), 5, RED.stroke_width(2)));
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(rec.epsilon[j], ylo), (rec.epsilon[j], yhi)],
                    GREEN.stroke_width(2),
                )))
                .map_err(|e| err(&e))?
                .label("recommended")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x - 8, y), (x + 8, y)], GREEN.stroke_width(2))
                });
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| err(&e))?;
        }
        // Bottom: the confirmation's paired differences and CI.
        let c = &report.confirmation;
        let v = &report.verdict;
        let diffs: Vec<(usize, f64)> = c
            .seeds
            .iter()
            .enumerate()
            .filter_map(|(k, &s)| {
                let arm = |base: bool| {
                    report.confirm.iter().find(|r| {
                        r.seed == s
                            && r.is_finished()
                            && (r.epsilon.iter().all(|e| *e == 0.0)) == base
                    })
                };
                match (arm(false), arm(true)) {
                    (Some(t), Some(b)) => Some((
                        k,
                        100.0
                            * (t.val_accuracy.unwrap_or_default()
                                - b.val_accuracy.unwrap_or_default()),
                    )),
                    _ => None,
                }
            })
            .collect();
        let (dlo, dhi) = range(diffs.iter().map(|d| d.1).chain([0.0, v.ci_low, v.ci_high]));
        let width = c.seeds.len().max(1) as f64 + 1.0;
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                format!("confirmation on held-out data: {}", v.sentence),
                ("sans-serif", 14),
            )
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5..width, dlo..dhi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("confirmation seed (last column: mean and 95 % CI)")
            .y_desc("tuned − CE, accuracy points")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(-0.5, 0.0), (width, 0.0)],
                BLACK.stroke_width(1),
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(
                diffs
                    .iter()
                    .map(|&(k, d)| Circle::new((k as f64, d), 5, seed_colour(k).filled())),
            )
            .map_err(|e| err(&e))?
            .label("paired difference per seed")
            .legend(|(x, y)| Circle::new((x, y), 4, seed_colour(0).filled()));
        if v.difference.is_finite() && v.n_seeds > 0 {
            let x = width - 0.5;
            let (lo, mid, hi) = (v.ci_low, v.difference, v.ci_high);
            let cap = 0.12;
            chart
                .draw_series([
                    PathElement::new(vec![(x, lo), (x, hi)], GREEN.stroke_width(2)),
                    PathElement::new(vec![(x - cap, lo), (x + cap, lo)], GREEN.stroke_width(2)),
                    PathElement::new(vec![(x - cap, hi), (x + cap, hi)], GREEN.stroke_width(2)),
                ])
                .map_err(|e| err(&e))?
                .label("mean, 95 % CI")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y - 6), (x, y + 6)], GREEN.stroke_width(2))
                });
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (x, mid),
                    7,
                    GREEN.filled(),
                )))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
