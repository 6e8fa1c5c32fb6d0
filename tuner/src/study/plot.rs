//! The study plot (SVG): ε_j vs validation accuracy for each coefficient,
//! and accuracy with the best-so-far per trial.

use std::path::Path;

use plotters::prelude::*;

use super::StudyReport;

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// Draws `report` to an SVG file at `path`, written atomically (a failed
/// write, e.g. a full disk, keeps the previous plot).
pub fn write_plot(report: &StudyReport, path: &Path) -> Result<(), String> {
    let mut svg = String::new();
    draw(report, &mut svg)?;
    super::write_atomic(path, svg.as_bytes()).map_err(|e| e.to_string())
}

/// Draws `report` as SVG text into `svg`.
fn draw(report: &StudyReport, svg: &mut String) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{e}");
    let trials = &report.trials;
    let n = trials.first().map_or(1, |t| t.epsilon.len());
    let finished: Vec<_> = trials.iter().filter(|t| t.is_finished()).collect();
    let (ylo, yhi) = range(finished.iter().filter_map(|t| t.val_accuracy));
    let panels = n.min(4);
    let root = SVGBackend::with_string(svg, (420 * panels.max(2) as u32, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(360);
    let best = report.best();
    for (j, area) in top.split_evenly((1, panels)).iter().enumerate() {
        let (xlo, xhi) = range(trials.iter().map(|t| t.epsilon[j]));
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("eps_{} vs validation accuracy", j + 1),
                ("sans-serif", 18),
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
        chart
            .draw_series(finished.iter().map(|t| {
                Circle::new(
                    (t.epsilon[j], t.val_accuracy.unwrap_or_default()),
                    4,
                    BLUE.filled(),
                )
            }))
            .map_err(|e| err(&e))?
            .label("trial")
            .legend(|(x, y)| Circle::new((x, y), 4, BLUE.filled()));
        if let Some(acc) = trials[0].val_accuracy {
            chart
                .draw_series(std::iter::once(Cross::new(
                    (trials[0].epsilon[j], acc),
                    7,
                    RED.stroke_width(2),
                )))
                .map_err(|e| err(&e))?
                .label("baseline (CE)")
                .legend(|(x, y)| Cross::new((x, y), 5, RED.stroke_width(2)));
        }
        if let Some(acc) = best.val_accuracy {
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (best.epsilon[j], acc),
                    8,
                    GREEN.filled(),
                )))
                .map_err(|e| err(&e))?
                .label("best")
                .legend(|(x, y)| TriangleMarker::new((x, y), 5, GREEN.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(&e))?;
    }
    let count = trials.len().max(2) as f64;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!(
                "{} : validation accuracy per trial and best so far",
                report.solver
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..count - 0.5, ylo..yhi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("trial")
        .y_desc("val top-1 accuracy")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(finished.iter().map(|t| {
            Circle::new(
                (t.trial as f64, t.val_accuracy.unwrap_or_default()),
                4,
                BLUE.filled(),
            )
        }))
        .map_err(|e| err(&e))?
        .label("trial")
        .legend(|(x, y)| Circle::new((x, y), 4, BLUE.filled()));
    // Failed trials sit on the floor of the plot as red crosses.
    chart
        .draw_series(
            trials
                .iter()
                .filter(|t| !t.is_finished())
                .map(|t| Cross::new((t.trial as f64, ylo), 6, RED.stroke_width(2))),
        )
        .map_err(|e| err(&e))?
        .label("failed")
        .legend(|(x, y)| Cross::new((x, y), 5, RED.stroke_width(2)));
    let mut best_so_far = f64::INFINITY;
    let mut acc_so_far = f64::NAN;
    let mut line = Vec::new();
    for t in trials {
        if t.is_finished() && t.cost() < best_so_far {
            if acc_so_far.is_finite() {
                line.push((t.trial as f64, acc_so_far)); // a step, not a slope
            }
            best_so_far = t.cost();
            acc_so_far = t.val_accuracy.unwrap_or_default();
        }
        if acc_so_far.is_finite() {
            line.push((t.trial as f64, acc_so_far));
        }
    }
    chart
        .draw_series(LineSeries::new(line, GREEN.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("best so far")
        .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], GREEN.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
