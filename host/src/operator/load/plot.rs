//! The SVG written by `imgfleet bench load`: p50 and p99 against offered load, the p99
//! target, and where it tipped over.

use std::path::Path;

use plotters::prelude::*;

use super::stats::{Step, Verdict};

pub fn latency_vs_load(
    path: &Path,
    steps: &[Step],
    target_p99_ms: f64,
    title: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(!steps.is_empty(), "no steps to plot");
    let max_rps = steps.iter().map(|s| s.offered_rps).fold(0.0, f64::max) * 1.05;
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let max_ms = steps
        .iter()
        .map(|s| finite(s.p99_ms))
        .fold(target_p99_ms, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_rps, 0.0..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("offered load (requests/s)")
        .y_desc("latency (ms), from when each request was due")
        .draw()?;
    let series = |pick: fn(&Step) -> f64| {
        steps
            .iter()
            .filter(|s| pick(s).is_finite())
            .map(move |s| (s.offered_rps, pick(s)))
            .collect::<Vec<_>>()
    };
    let p50 = series(|s| s.p50_ms);
    let p99 = series(|s| s.p99_ms);
    chart
        .draw_series(LineSeries::new(p50.clone(), BLUE.stroke_width(2)))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(p50.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
    chart
        .draw_series(LineSeries::new(p99.clone(), RED.stroke_width(2)))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart.draw_series(p99.iter().map(|p| Circle::new(*p, 3, RED.filled())))?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, target_p99_ms), (max_rps, target_p99_ms)],
            BLACK.stroke_width(1),
        ))?
        .label(format!("p99 target {target_p99_ms} ms"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    if let Some(bad) = steps.iter().find(|s| s.verdict != Verdict::Held) {
        let x = bad.offered_rps;
        chart
            .draw_series(LineSeries::new(
                [(x, 0.0), (x, max_ms)],
                MAGENTA.stroke_width(1),
            ))?
            .label(format!("tip-over at {x:.0} req/s ({:?})", bad.verdict))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
