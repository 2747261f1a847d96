//! `tune --plot`: the recording's temperature (top) and humidity (bottom)
//! over time, with the readings one setting sends real-time marked.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Scored, Track};
use crate::domain::{Route, Sample};
use crate::plot::Figure;

/// One stream's counted readings and its events, in hours from the start of
/// the recording.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// `node/sensor`.
    pub name: String,
    /// Every scored reading.
    pub points: Vec<(f64, Sample)>,
    /// The ones routed real-time.
    pub events: Vec<(f64, Sample)>,
}

/// Collects the series of a replay from its [`Scored`] rows.
#[derive(Debug, Default)]
pub struct Collector {
    start_ms: Option<i64>,
    series: Vec<Series>,
}

impl Collector {
    /// A collector whose time axis starts at `start_ms`.
    pub fn new(start_ms: Option<i64>) -> Self {
        Self {
            start_ms,
            series: Vec::new(),
        }
    }

    /// Takes one scored row (rows outside the counted range are left out).
    pub fn take(&mut self, s: Scored<'_>) {
        let (true, Some((sample, score))) = (s.counted, s.score) else {
            return;
        };
        let start = *self.start_ms.get_or_insert(s.row.ts_ms);
        let hours = (s.row.ts_ms - start) as f64 / 3_600_000.0;
        if self.series.last().is_none_or(|l| l.name != s.track.name()) {
            self.series.push(Series {
                name: Track::name(s.track),
                ..Series::default()
            });
        }
        let series = self.series.last_mut().expect("pushed above");
        series.points.push((hours, sample));
        if score.route == Route::Realtime {
            series.events.push((hours, sample));
        }
    }

    /// The series collected.
    pub fn into_series(self) -> Vec<Series> {
        self.series
    }
}

/// The figure: `title` above, every series below.
struct Tune<'s> {
    title: String,
    series: &'s [Series],
}

/// Draws `series` into `path` (PNG, or SVG for `*.svg`) under `title`.
pub fn draw(title: &str, series: &[Series], path: &Path) -> Result<(), String> {
    crate::plot::save(
        &Tune {
            title: title.to_string(),
            series,
        },
        path,
        (1400, 800),
    )
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
const EVENT: RGBColor = RGBColor(214, 39, 40);

impl Figure for Tune<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let root = root.titled(&self.title, ("sans-serif", 20)).map_err(e)?;
        let (top, bottom) = root.split_vertically(390);
        panel(&top, self.series, "temperature (°C)", |s| s.temperature)?;
        panel(&bottom, self.series, "relative humidity (%)", |s| {
            s.humidity
        })
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    what: &str,
    value: impl Fn(Sample) -> f64,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let all = || series.iter().flat_map(|s| s.points.iter());
    let hours = all().map(|p| p.0).fold(0.0, f64::max).max(1e-3);
    let (lo, hi) = all()
        .map(|p| value(p.1))
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let pad = ((hi - lo) * 0.08).max(0.5);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..hours, (lo - pad)..(hi + pad))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("hours")
        .y_desc(what)
        .draw()
        .map_err(e)?;
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (p.0, value(p.1))),
                c.stroke_width(1),
            ))
            .map_err(e)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        let events = chart
            .draw_series(
                s.events
                    .iter()
                    .map(|p| Circle::new((p.0, value(p.1)), 4, EVENT.filled())),
            )
            .map_err(e)?;
        if i == 0 {
            events
                .label("real-time (event)")
                .legend(|(x, y)| Circle::new((x + 10, y), 4, EVENT.filled()));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)
}
