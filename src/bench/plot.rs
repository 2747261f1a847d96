//! The bench's figure, the picture the paper shows as its Figure 9:
//! readings per second over time for every mode (left), and the averages
//! and peaks beside the paper's (right), saved by [`crate::plot::save`].

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Mode;
use super::report::{PAPER, Report};
use crate::plot::Figure;

/// The bench's figure of `report`.
struct Bench<'r>(&'r Report);

impl Figure for Bench<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        figure(self.0, root)
    }
}

/// Draws `report` into `path` (PNG, or SVG for `*.svg`).
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    crate::plot::save(&Bench(report), path, (1400, 600))
}

fn color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Relay => RGBColor(120, 120, 120),
        Mode::Centralized => RGBColor(214, 39, 40),
        Mode::Priority => RGBColor(31, 119, 180),
    }
}

/// `c` halfway to white: the paper's bars.
fn pale(c: RGBColor) -> RGBColor {
    let half = |v: u8| u8::try_from(u16::midpoint(u16::from(v), 255)).unwrap_or(255);
    RGBColor(half(c.0), half(c.1), half(c.2))
}

fn figure<DB: DrawingBackend>(report: &Report, root: &DrawingArea<DB, Shift>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (left, right) = root.split_horizontally(900);
    let seconds = report
        .modes
        .iter()
        .map(|m| m.per_second.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let top = report
        .modes
        .iter()
        .map(|m| m.peak_per_s as f64)
        .fold(PAPER.priority_peak, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!(
                "edgeprio bench: readings stored per second ({} nodes x {} sensors)",
                report.nodes, report.sensors
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..seconds as f64, 0f64..top)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds of load")
        .y_desc("readings (transactions) per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(e)?;
    for m in &report.modes {
        let c = color(m.mode);
        let points = m
            .per_second
            .iter()
            .enumerate()
            .map(|(i, &n)| ((i + 1) as f64, n as f64));
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))
            .map_err(e)?
            .label(format!(
                "ours, {} (avg {:.0}/s)",
                m.mode.as_str(),
                m.avg_per_s
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    for (name, avg, c) in [
        (
            "the paper, priority (avg 2,050/s)",
            PAPER.priority_avg,
            color(Mode::Priority),
        ),
        (
            "the paper, centralized (avg 1,800/s)",
            PAPER.centralized_avg,
            color(Mode::Centralized),
        ),
    ] {
        let style = ShapeStyle::from(c.mix(0.5)).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, avg), (seconds as f64, avg)],
                6,
                4,
                style,
            ))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    bars(report, &right)
}

/// The averages and peaks, ours beside the paper's.
fn bars<DB: DrawingBackend>(report: &Report, area: &DrawingArea<DB, Shift>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut groups: Vec<(String, f64, f64, RGBColor)> = vec![
        (
            "paper centralized".into(),
            PAPER.centralized_avg,
            PAPER.centralized_peak,
            pale(color(Mode::Centralized)),
        ),
        (
            "paper priority".into(),
            PAPER.priority_avg,
            PAPER.priority_peak,
            pale(color(Mode::Priority)),
        ),
    ];
    for m in &report.modes {
        groups.push((
            format!("ours {}", m.mode.as_str()),
            m.avg_per_s,
            m.peak_per_s as f64,
            color(m.mode),
        ));
    }
    let top = groups.iter().map(|g| g.2).fold(1.0, f64::max) * 1.15;
    let n = groups.len();
    let mut chart = ChartBuilder::on(area)
        .caption("average (solid) and peak (outline)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(e)?;
    let names: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 0.26 {
                #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 11))
        .y_desc("readings per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(e)?;
    for (i, (_, avg, peak, c)) in groups.iter().enumerate() {
        let x = i as f64;
        chart
            .draw_series([
                Rectangle::new([(x + 0.15, 0.0), (x + 0.85, *avg)], c.filled()),
                Rectangle::new([(x + 0.15, 0.0), (x + 0.85, *peak)], c.stroke_width(2)),
            ])
            .map_err(e)?;
        chart
            .draw_series([Text::new(
                format!("{avg:.0}"),
                (x + 0.2, avg + top * 0.01),
                ("sans-serif", 12),
            )])
            .map_err(e)?;
    }
    Ok(())
}
