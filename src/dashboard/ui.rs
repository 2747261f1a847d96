//! Drawing: [`render`] takes a [`State`] and a `Frame` and nothing else (no
//! queries, no clock, no locks). Below 100 columns or 32 rows the layout
//! condenses: shorter sensor panels (the last error's kind only) and a
//! shorter readings table. The errors pane always sits beside the table,
//! which keeps its natural width; on taller terminals the table grows.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::{self, Marker};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Cell, Chart, Clear, Dataset, GraphType, LineGauge, Paragraph, Row, Scrollbar,
    ScrollbarOrientation, ScrollbarState, StatefulWidget, Table, Widget,
};

use super::keys::{HELP, NODE_HELP};
use super::state::{AgentState, Liveness, Point, SensorPanel, Split, State, Theme, label};
use crate::domain::Route;
use crate::store::BrokerState;

/// Below this width the layout condenses.
const WIDE: u16 = 100;
/// Secondary text: faint, not a color, so it follows `NO_COLOR` too.
const DIM: Style = Style::new().add_modifier(Modifier::DIM);
/// Below this height the layout condenses.
const TALL: u16 = 32;
/// The readings table's columns: time, sensor, °C, %RH, weights, priority,
/// route, sent.
const COLUMNS: [u16; 8] = [8, 10, 5, 5, 3, 2, 8, 4];
/// The same when the log holds several nodes: the sensor column has room
/// for `node/sensor`.
const NODE_COLUMNS: [u16; 8] = [8, 16, 5, 5, 3, 2, 8, 4];
/// An agent's readings table's width, as the widget tests draw it.
#[cfg(test)]
const TABLE_WIDTH: u16 = width_of(&COLUMNS);

/// A table's width: its `columns`, a space between each, borders.
#[expect(
    clippy::cast_possible_truncation,
    reason = "eight columns: the count fits a u16"
)]
const fn width_of(columns: &[u16; 8]) -> u16 {
    let mut w = 2 + (columns.len() as u16 - 1);
    let mut i = 0;
    while i < columns.len() {
        w += columns[i];
        i += 1;
    }
    w
}

/// The readings table's columns when nodes are `named` or not.
fn columns(named: bool) -> &'static [u16; 8] {
    if named { &NODE_COLUMNS } else { &COLUMNS }
}
/// Sensor panels are never narrower than this: where more than fit, the
/// row shows them a page at a time.
const PANEL_MIN: u16 = 12;
/// The errors pane is never narrower than this, so the newest error's
/// time, sensor and kind fit on its first line.
const ERRORS_MIN: u16 = 24;

impl Theme {
    fn fg(self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    /// Healthy: running, connected, a read that succeeded.
    fn good(self) -> Style {
        self.fg(Color::Green)
    }

    /// Needs a look: stale, connecting.
    fn warn(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    /// Broken: stopped, disconnected, an error. Bold so it stands out
    /// without color too.
    fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Titles and labels.
    fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn route(self, route: Route) -> Style {
        match route {
            Route::Realtime => self.fg(Color::Magenta).add_modifier(Modifier::BOLD),
            Route::Batch => self.fg(Color::Blue),
        }
    }

    fn temperature(self) -> Style {
        self.fg(Color::Red)
    }

    fn humidity(self) -> Style {
        self.fg(Color::Blue)
    }
}

/// A duration in its largest unit: `42s`, `5m`, `3h`, `2d`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The agent's cycle period: `15s`, or `1s 500ms` and `15ms` under
/// `demo --speed`.
fn interval(ms: i64) -> String {
    let ms = u64::try_from(ms.max(0)).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// The UTC time of day of a Unix ms timestamp, `HH:MM:SS`.
pub fn time_of_day(ts_ms: i64) -> String {
    let s = ts_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}

/// Where each pane goes.
struct Panes {
    /// Whether the terminal is large enough for the full layout.
    wide: bool,
    header: Rect,
    sensors: Rect,
    chart: Rect,
    routing: Rect,
    table: Rect,
    errors: Rect,
}

impl Panes {
    /// The layout for a terminal of `area`, nodes `named` (a gateway's log:
    /// a third header line, a wider sensor column) or not: the one place
    /// that decides it, for drawing and for [`table_rows`] alike.
    fn of(area: Rect, named: bool) -> Panes {
        let wide = area.width >= WIDE && area.height >= TALL;
        let header_height = header_height(named);
        let table_width = width_of(columns(named));
        let panel_height = if wide { 7 } else { 5 };
        // The chart takes what the table leaves: on a tall terminal the
        // table grows too, so a page of it is worth paging through.
        let table_height = if wide {
            let rest = area.height.saturating_sub(header_height + panel_height);
            (rest * 2 / 5).max(14)
        } else {
            7
        };
        let [header, sensors, middle, bottom] = Layout::vertical([
            Constraint::Length(header_height),
            Constraint::Length(panel_height),
            Constraint::Min(6),
            Constraint::Length(table_height),
        ])
        .areas(area);
        let [chart, routing] = Layout::horizontal([
            Constraint::Fill(1),
            Constraint::Length(if wide { 44 } else { 34 }),
        ])
        .areas(middle);
        let [table, errors] =
            Layout::horizontal([Constraint::Max(table_width), Constraint::Min(ERRORS_MIN)])
                .areas(bottom);
        Panes {
            wide,
            header,
            sensors,
            chart,
            routing,
            table,
            errors,
        }
    }
}

/// How many readings the table shows on a terminal of `area` under an
/// agent's header: a page.
pub fn table_rows(area: Rect) -> usize {
    table_body(Panes::of(area, false).table)
}

/// How many readings the table of `state` shows on a terminal of `area`.
pub fn page_of(state: &State, area: Rect) -> usize {
    table_body(Panes::of(area, state.names_nodes()).table)
}

/// The header's lines: the owner's status and the broker's, and a third
/// for the node picker when the log holds several nodes.
fn header_height(names_nodes: bool) -> u16 {
    if names_nodes { 3 } else { 2 }
}

/// Rows of a table drawn in `area` left for readings: not the borders,
/// not the column titles.
fn table_body(area: Rect) -> usize {
    usize::from(area.height.saturating_sub(3))
}

/// Draws the whole dashboard.
pub fn render(frame: &mut Frame, state: &State) {
    let area = frame.area();
    let panes = Panes::of(area, state.names_nodes());
    render_header(frame.buffer_mut(), panes.header, state);
    render_sensors(frame.buffer_mut(), panes.sensors, state, panes.wide);
    render_chart(frame, panes.chart, state);
    RoutingSplit(state).render(panes.routing, frame.buffer_mut());
    render_table(frame.buffer_mut(), panes.table, state);
    render_errors(frame.buffer_mut(), panes.errors, state);
    if state.view.help {
        render_help(frame.buffer_mut(), area, state.view.theme, state.can_pick());
    }
}

fn render_header(buf: &mut Buffer, area: Rect, state: &State) {
    let t = state.view.theme;
    let h = &state.header;
    let agent_style = agent_style(h.agent, t);
    let mut first = vec![
        Span::styled("edgeprio ", t.title()),
        Span::raw(if h.node.is_empty() { "-" } else { &h.node }),
    ];
    match h.last_reading_age_ms {
        // No agent, but readings: how long the node has been silent.
        Some(a) if h.agent == AgentState::Unknown => {
            first.push(Span::raw(format!("  last reading {} ago", age(a))));
        }
        _ => {
            first.push(Span::raw("  agent "));
            first.push(Span::styled(h.agent.as_str(), agent_style));
        }
    }
    if let Some(hb) = h.heartbeat_age_ms {
        first.push(Span::raw(format!(" (beat {} ago)", age(hb))));
    }
    if let Some(i) = h.interval_ms {
        first.push(Span::raw(format!("  every {}", interval(i))));
    }
    if let Some(up) = h.uptime_ms {
        first.push(Span::raw(format!("  up {}", age(up))));
    }
    if h.log_replaced.is_some() {
        first.push(Span::styled(
            "  log file deleted or replaced under the agent: see edgeprio doctor",
            t.bad(),
        ));
    }
    let mut second = vec![Span::raw("broker ")];
    let mut error_at = None;
    match h.broker {
        Some(b) => {
            let style = match b {
                BrokerState::Connected => t.good(),
                BrokerState::Connecting => t.warn(),
                BrokerState::Disconnected => t.bad(),
                BrokerState::Disabled => Style::new(),
            };
            second.push(Span::styled(b.as_str(), style));
            if let Some(f) = h.broker_for_ms {
                second.push(Span::raw(format!(" {}", age(f))));
            }
            if h.broker_error.is_some() {
                // Inserted once the rest of the line is known (below).
                error_at = Some(second.len());
            }
            if h.agent != AgentState::Running {
                // Nobody updates it while the agent is down.
                second.push(Span::styled(" (last known)", DIM));
            }
        }
        None => second.push(Span::raw("-")),
    }
    second.push(Span::raw("  outbox "));
    let outbox_style = if h.outbox > 0 && h.broker != Some(BrokerState::Connected) {
        t.warn()
    } else {
        Style::new()
    };
    second.push(Span::styled(h.outbox.to_string(), outbox_style));
    second.push(Span::raw(format!("  window {}", state.view.window.label())));
    if state.view.paused {
        second.push(Span::styled("  PAUSED", t.warn()));
    }
    if let Some(e) = &state.error {
        second.push(Span::styled(format!("  {e}"), t.bad()));
    }
    second.push(Span::styled("  ? help", DIM));
    // The broker's error is shortened to what the line leaves, so the
    // outbox, the window and the help hint always show.
    if let (Some(at), Some(e)) = (error_at, &h.broker_error) {
        let rest: usize = second.iter().map(Span::width).sum();
        if let Some(text) = fit(
            &format!(" ({e})"),
            usize::from(area.width).saturating_sub(rest),
        ) {
            second.insert(at, Span::styled(text, t.bad()));
        }
    }
    let mut lines = vec![Line::from(first), Line::from(second)];
    if state.names_nodes() {
        lines.push(node_line(state));
    }
    Paragraph::new(lines).render(area, buf);
}

/// Which nodes are shown, of how many, and how the one shown alone is:
/// `nodes all 3  n next node` or `node esp-2 2/3  last reading 5s ago`.
fn node_line(state: &State) -> Line<'static> {
    let t = state.view.theme;
    let count = state.nodes.len();
    let mut spans = match &state.picked {
        Some(p) => {
            let mut spans = vec![
                Span::raw("node "),
                Span::styled(p.name.clone(), t.title()),
                Span::raw(format!(" {}/{count}", p.position)),
            ];
            match p.liveness {
                Liveness::Agent(a) => {
                    spans.push(Span::raw("  agent "));
                    spans.push(Span::styled(a.as_str(), agent_style(a, t)));
                }
                Liveness::LastReading(Some(a)) => {
                    spans.push(Span::raw(format!("  last reading {} ago", age(a))));
                }
                Liveness::LastReading(None) => {
                    spans.push(Span::styled("  no reading", t.warn()));
                }
            }
            spans
        }
        None => vec![Span::raw(format!("nodes all {count}"))],
    };
    if state.can_pick() {
        spans.push(Span::styled("  n next node", DIM));
    }
    Line::from(spans)
}

/// How an agent's liveness is drawn.
fn agent_style(agent: AgentState, t: Theme) -> Style {
    match agent {
        AgentState::Running => t.good(),
        AgentState::Stale | AgentState::Unknown => t.warn(),
        AgentState::Stopped => t.bad(),
    }
}

/// `text` in at most `room` columns: whole, or cut with `…)` (it is in
/// parentheses), or nothing when too little of it would be left to read.
fn fit(text: &str, room: usize) -> Option<String> {
    /// Fewer columns than this of an error say nothing.
    const MIN: usize = 8;
    if text.chars().count() <= room {
        return Some(text.to_owned());
    }
    if room < MIN {
        return None;
    }
    let mut cut: String = text.chars().take(room - 2).collect();
    cut.push_str("…)");
    Some(cut)
}

fn render_sensors(buf: &mut Buffer, area: Rect, state: &State, wide: bool) {
    if state.sensors.is_empty() {
        let text = "No readings in this log yet: is the agent running against this file?";
        Paragraph::new(text)
            .block(Block::bordered().title(Span::styled(" sensors ", state.view.theme.title())))
            .render(area, buf);
        return;
    }
    // A gateway's log may hold hundreds of pairs: the row shows the page
    // of those that fit which holds the selected one.
    let fit = usize::from((area.width / PANEL_MIN).max(1));
    let first = state.selected / fit * fit;
    let page = &state.sensors[first.min(state.sensors.len())..];
    let page = &page[..page.len().min(fit)];
    let n = u32::try_from(page.len()).unwrap_or(u32::MAX);
    let areas = Layout::horizontal((0..n).map(|_| Constraint::Ratio(1, n))).split(area);
    for (i, (sensor, rect)) in page.iter().zip(areas.iter()).enumerate() {
        SensorWidget {
            panel: sensor,
            selected: first + i == state.selected,
            theme: state.view.theme,
            wide,
        }
        .render(*rect, buf);
    }
}

/// One sensor's panel: latest values and age, weights, priority, route,
/// success rate and last error.
pub struct SensorWidget<'a> {
    /// The sensor.
    pub panel: &'a SensorPanel,
    /// Whether it is the one the chart shows.
    pub selected: bool,
    /// Colors.
    pub theme: Theme,
    /// Five lines (last error on two) rather than three.
    pub wide: bool,
}

impl Widget for SensorWidget<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let t = self.theme;
        let p = self.panel;
        let title_style = if self.selected {
            t.title().add_modifier(Modifier::REVERSED)
        } else {
            t.title()
        };
        let marker = if self.selected { "▶" } else { " " };
        let mut title = vec![Span::styled(format!("{marker}{} ", p.label()), title_style)];
        if p.burst {
            // Read at the burst interval while its readings go real-time.
            title.push(Span::styled("burst ", t.warn()));
        }
        let block = Block::bordered().title(Line::from(title));
        let mut lines = Vec::new();
        if let Some(l) = &p.latest {
            lines.push(Line::from(vec![
                Span::styled(format!("{:.1}°C", l.temperature), t.temperature()),
                Span::raw(" "),
                Span::styled(format!("{:.1}%", l.humidity), t.humidity()),
                Span::styled(format!(" {}", age(l.age_ms)), DIM),
                // Taken on a clock the kernel said was not synchronized:
                // the age is only as good as that clock.
                Span::styled(
                    if l.clock_synced == Some(false) {
                        "?"
                    } else {
                        ""
                    },
                    t.warn(),
                ),
            ]));
            lines.push(Line::from(vec![
                Span::raw(format!(
                    "w {}/{} p{} ",
                    l.weights.0, l.weights.1, l.priority
                )),
                Span::styled(l.route.as_str(), t.route(l.route)),
            ]));
        } else {
            lines.push(Line::styled("no reading", t.bad()));
            lines.push(Line::raw(""));
        }
        let rate = match p.success_rate() {
            Some(r) if r < 0.95 => Span::styled(format!("ok {}", percent(r)), t.bad()),
            Some(r) => Span::styled(format!("ok {}", percent(r)), t.good()),
            None => Span::raw("ok -"),
        };
        let mut third = vec![rate];
        if p.errors > 0 {
            third.push(Span::raw(format!(" {} err", p.errors)));
        }
        match &p.last_error {
            Some(e) if self.wide => {
                lines.push(Line::from(third));
                lines.push(Line::from(vec![
                    Span::styled(e.kind.clone(), t.bad()),
                    Span::raw(format!(" {} ago", age(e.age_ms))),
                ]));
                lines.push(Line::styled(e.detail.clone(), DIM));
            }
            Some(e) => {
                third.push(Span::styled(format!(" {}", e.kind), t.bad()));
                lines.push(Line::from(third));
            }
            None => {
                lines.push(Line::from(third));
                if self.wide {
                    lines.push(Line::styled("no errors", DIM));
                }
            }
        }
        Paragraph::new(lines).block(block).render(area, buf);
    }
}

fn render_chart(frame: &mut Frame, area: Rect, state: &State) {
    let t = state.view.theme;
    let window = state.view.window;
    let name = state
        .selected_sensor()
        .map_or_else(|| "-".to_owned(), SensorPanel::label);
    let block = Block::bordered().title(Line::from(vec![
        Span::styled(format!(" {name} "), t.title()),
        Span::styled("°C", t.temperature()),
        Span::raw(" "),
        Span::styled("%RH", t.humidity()),
        Span::raw(format!(" over {}, ", window.label())),
        Span::styled("●", t.route(Route::Realtime)),
        Span::raw(" real-time "),
    ]));
    if state.history.is_empty() {
        let text = format!("no readings in the last {}", window.label());
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let temperature: Vec<(f64, f64)> = state
        .history
        .iter()
        .map(|p| (secs(p.offset_ms), p.temperature))
        .collect();
    let humidity: Vec<(f64, f64)> = state
        .history
        .iter()
        .map(|p| (secs(p.offset_ms), p.humidity))
        .collect();
    // Temperature and humidity differ in scale: one chart each, stacked,
    // sharing the time axis drawn under the lower one.
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [upper, lower] = Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(inner);
    let rt = |f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
        state
            .history
            .iter()
            .filter(|p| p.realtime)
            .map(|p| (secs(p.offset_ms), f(p)))
            .collect()
    };
    let rt_temperature = rt(|p| p.temperature);
    let rt_humidity = rt(|p| p.humidity);
    let x_lo = -secs(window.millis());
    let x_labels = [Line::raw(format!("-{}", window.label())), Line::raw("now")];
    frame.render_widget(
        series_chart(
            &temperature,
            &rt_temperature,
            t.temperature(),
            t,
            x_lo,
            None,
        ),
        upper,
    );
    frame.render_widget(
        series_chart(
            &humidity,
            &rt_humidity,
            t.humidity(),
            t,
            x_lo,
            Some(x_labels),
        ),
        lower,
    );
}

/// One channel's line, its real-time readings as dots on it, and a y axis
/// fitted to its values.
fn series_chart<'a>(
    line: &'a [(f64, f64)],
    realtime: &'a [(f64, f64)],
    style: Style,
    t: Theme,
    x_lo: f64,
    x_labels: Option<[Line<'a>; 2]>,
) -> Chart<'a> {
    let (lo, hi) = line.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &(_, y)| {
        (lo.min(y), hi.max(y))
    });
    let (lo, hi) = ((lo - 0.5).floor(), (hi + 0.5).ceil());
    let datasets = vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(style)
            .data(line),
        Dataset::default()
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(t.route(Route::Realtime))
            .data(realtime),
    ];
    let mut x_axis = Axis::default().bounds([x_lo, 0.0]);
    if let Some(labels) = x_labels {
        x_axis = x_axis.labels(labels);
    }
    Chart::new(datasets)
        .x_axis(x_axis)
        .y_axis(Axis::default().bounds([lo, hi]).labels([
            Line::raw(format!("{lo:>4.0}")),
            Line::raw(format!("{hi:>4.0}")),
        ]))
}

/// The routing split over the window: real-time share per sensor and in
/// total, and published against still in the outbox.
pub struct RoutingSplit<'a>(pub &'a State);

/// The name column of the routing pane: a sensor's name, or more where
/// panels are named `node/sensor` (see [`name_width`]).
const NAME: usize = 7;

/// The routing pane's name column for `state` in a pane `inner` columns
/// wide: [`NAME`], or for `node/sensor` names the longest, within what
/// leaves the counts (16 columns) and a gauge (8) their room.
fn name_width(state: &State, inner: u16) -> usize {
    if !state.names_nodes() {
        return NAME;
    }
    let longest = state
        .sensors
        .iter()
        .map(|s| s.label().chars().count())
        .max()
        .unwrap_or(NAME);
    longest.min(usize::from(inner).saturating_sub(24)).max(NAME)
}

fn split_gauge(buf: &mut Buffer, area: Rect, (name, width): (&str, usize), split: Split, t: Theme) {
    let label = format!(
        "{name:<width$.width$}{:>5}/{:<6}{:>4}",
        split.realtime,
        split.total(),
        percent(split.realtime_ratio())
    );
    LineGauge::default()
        .ratio(split.realtime_ratio().clamp(0.0, 1.0))
        .label(label)
        .filled_symbol(symbols::line::THICK_HORIZONTAL)
        .unfilled_symbol(symbols::line::HORIZONTAL)
        .filled_style(t.route(Route::Realtime))
        .unfilled_style(DIM)
        .render(area, buf);
}

impl Widget for RoutingSplit<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let t = state.view.theme;
        let block = Block::bordered().title(Span::styled(
            format!(" real-time/all {} ", state.view.window.label()),
            t.title(),
        ));
        let inner = block.inner(area);
        block.render(area, buf);
        // The last two rows are kept for the total and the outbox.
        let all: Vec<Rect> = inner.rows().collect();
        let width = name_width(state, inner.width);
        let shown = state.sensors.len().min(all.len().saturating_sub(2));
        for (s, r) in state.sensors.iter().zip(&all[..shown]) {
            split_gauge(buf, *r, (&s.label(), width), s.split, t);
        }
        let mut rows = all[shown..].iter().copied();
        if let Some(r) = rows.next() {
            split_gauge(buf, r, ("total", width), state.total, t);
        }
        if let Some(r) = rows.next() {
            let total = state.total.total();
            let ratio = match total {
                0 => 0.0,
                n => state.total.published() as f64 / n as f64,
            };
            let style = if state.total.unpublished > 0 {
                t.warn()
            } else {
                t.good()
            };
            LineGauge::default()
                .ratio(ratio.clamp(0.0, 1.0))
                .label(format!(
                    "sent {:>5} outbox {:>5}",
                    state.total.published(),
                    state.total.unpublished
                ))
                .filled_symbol(symbols::line::THICK_HORIZONTAL)
                .unfilled_symbol(symbols::line::HORIZONTAL)
                .filled_style(style)
                .unfilled_style(DIM)
                .render(r, buf);
        }
    }
}

fn render_table(buf: &mut Buffer, area: Rect, state: &State) {
    let t = state.view.theme;
    let header =
        Row::new(["time", "sensor", "°C", "%RH", "w", "p", "route", "sent"]).style(t.title());
    let visible = table_body(area);
    let total = state.recent.len();
    // The offset counts from the newest row; the last page is a full one.
    let start = state.view.scroll.min(total.saturating_sub(visible));
    let shown = &state.recent[start..total.min(start + visible)];
    let rows = shown.iter().map(|r| {
        Row::new([
            Cell::from(time_of_day(r.ts_ms)),
            Cell::from(label(r.node.as_deref(), &r.sensor)),
            Cell::from(format!("{:5.1}", r.temperature)),
            Cell::from(format!("{:5.1}", r.humidity)),
            Cell::from(format!("{}/{}", r.weights.0, r.weights.1)),
            Cell::from(r.priority.to_string()),
            Cell::from(Span::styled(r.route.as_str(), t.route(r.route))),
            Cell::from(if r.published { "yes" } else { "no" }),
        ])
    });
    let title = if shown.is_empty() {
        " recent readings ".to_owned()
    } else {
        format!(
            " recent readings {}-{} of {total} ",
            start + 1,
            start + shown.len()
        )
    };
    Widget::render(
        Table::new(rows, columns(state.names_nodes()).map(Constraint::Length))
            .header(header)
            .block(Block::bordered().title(Span::styled(title, t.title()))),
        area,
        buf,
    );
    if total > visible && visible > 0 {
        // On the right border, beside the readings.
        let track = Rect {
            x: area.right().saturating_sub(1),
            y: area.y + 2,
            width: 1,
            height: area.height.saturating_sub(3),
        };
        // Positions run over the offsets, 0..=total - visible.
        let mut position = ScrollbarState::new(total - visible + 1)
            .position(start)
            .viewport_content_length(visible);
        Scrollbar::new(ScrollbarOrientation::VerticalRight)
            .begin_symbol(None)
            .end_symbol(None)
            .track_symbol(Some(symbols::line::VERTICAL))
            .thumb_symbol(symbols::line::THICK_VERTICAL)
            .thumb_style(t.title())
            .render(track, buf, &mut position);
    }
}

/// `text` broken at spaces into lines at most `width` columns wide (a
/// longer word gets a line of its own, cut where it is drawn).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && Line::raw(format!("{line} {word}")).width() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn render_errors(buf: &mut Buffer, area: Rect, state: &State) {
    let t = state.view.theme;
    let block = Block::bordered().title(Span::styled(
        format!(" sensor errors {} ", state.view.window.label()),
        t.title(),
    ));
    let inner = block.inner(area);
    block.render(area, buf);
    let width = usize::from(inner.width);
    let height = usize::from(inner.height);
    let mut lines: Vec<Line> = Vec::new();
    if state.errors.is_empty() {
        lines.push(Line::styled("none", t.good()));
    }
    for (i, e) in state.errors.iter().enumerate() {
        if lines.len() >= height {
            break;
        }
        let mut line = Line::from(vec![
            Span::raw(format!(
                "{} {} ",
                time_of_day(e.ts_ms),
                label(e.node.as_deref(), &e.sensor)
            )),
            Span::styled(e.kind.clone(), t.bad()),
        ]);
        let detail = Span::styled(format!(" {}", e.detail), DIM);
        if line.width() + detail.width() <= width {
            line.push_span(detail);
            lines.push(line);
        } else if i == 0 {
            // The newest error whole, its detail on lines of its own;
            // older ones go without: a cut detail misleads more than none.
            lines.push(line);
            lines.extend(
                wrap(&e.detail, width)
                    .into_iter()
                    .map(|l| Line::styled(l, DIM)),
            );
        } else {
            lines.push(line);
        }
    }
    Paragraph::new(lines).render(inner, buf);
}

/// The key list; the node picker's keys too when there are `nodes` to
/// pick from.
fn render_help(buf: &mut Buffer, area: Rect, t: Theme, nodes: bool) {
    let picker = nodes.then_some(&NODE_HELP);
    let keys: Vec<&(&str, &str)> = HELP.iter().chain(picker).collect();
    let height = u16::try_from(keys.len()).unwrap_or(u16::MAX) + 2;
    let popup = area.centered(Constraint::Length(40), Constraint::Length(height));
    Clear.render(popup, buf);
    let lines: Vec<Line> = keys
        .into_iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<13}"), t.title()),
                Span::raw(*what),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(Block::bordered().title(Span::styled(" keys ", t.title())))
        .render(popup, buf);
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::dashboard::fixtures::{
        NOW, RAW_NODES, RAW_SENSORS, SILENT_MS, Scenario, build, build_gateway,
    };
    use crate::dashboard::state::{LastError, Latest, View, load};

    fn state_of(scenario: Scenario, selected: usize) -> State {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build(dir.path(), scenario);
        let store = crate::store::Store::open(&path, crate::store::Access::ReadOnly)
            .expect("read-only open");
        let view = View {
            selected,
            ..View::default()
        };
        load(&store, None, NOW, view).expect("state loads")
    }

    fn screen(state: &State, width: u16, height: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        terminal.draw(|frame| render(frame, state)).expect("draws");
        terminal
    }

    fn snapshots(name: &str, state: &State) {
        for (w, h) in [(80, 24), (120, 40)] {
            insta::assert_snapshot!(format!("{name}_{w}x{h}"), screen(state, w, h).backend());
        }
    }

    #[test]
    fn live_agent() {
        snapshots("live", &state_of(Scenario::Live, 2));
    }

    #[test]
    fn stale_agent() {
        snapshots("stale", &state_of(Scenario::Stale, 2));
    }

    #[test]
    fn broker_outage() {
        snapshots("outage", &state_of(Scenario::Outage, 2));
    }

    #[test]
    fn sensor_with_errors() {
        snapshots("errors", &state_of(Scenario::Errors, 0));
    }

    #[test]
    fn empty_database() {
        snapshots("empty", &state_of(Scenario::Empty, 0));
    }

    /// `NO_COLOR`: not one cell has a color. With color: accents on the
    /// terminal's own background, never a background of ours (so it reads
    /// on dark and light terminals alike).
    #[test]
    fn colors_follow_no_color_and_never_set_a_background() {
        use ratatui::style::Color;
        for scenario in [
            Scenario::Live,
            Scenario::Stale,
            Scenario::Outage,
            Scenario::Errors,
            Scenario::Empty,
        ] {
            for (help, color) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut state = state_of(scenario, 0);
                state.view.theme = Theme { color };
                state.view.help = help;
                for (w, h) in [(80, 24), (120, 40)] {
                    let terminal = screen(&state, w, h);
                    let cells = &terminal.backend().buffer().content;
                    let what = format!("{scenario:?} {w}x{h}, help {help}, color {color}");
                    assert!(
                        cells.iter().all(|c| c.bg == Color::Reset),
                        "{what}: a cell has a background"
                    );
                    let colored = cells.iter().filter(|c| c.fg != Color::Reset).count();
                    if color {
                        assert!(colored > 0, "{what}: no accent at all");
                    } else {
                        assert_eq!(colored, 0, "{what}: a cell has a color");
                    }
                }
            }
        }
    }

    #[test]
    fn a_log_replaced_under_the_agent_is_said_in_the_header() {
        let mut state = state_of(Scenario::Live, 2);
        let line = |state: &State| {
            let terminal = screen(state, 120, 40);
            let buf = terminal.backend().buffer();
            (0..120)
                .map(|x| buf[(x, 0)].symbol().to_owned())
                .collect::<String>()
        };
        assert!(!line(&state).contains("replaced"), "{}", line(&state));
        state.header.log_replaced = Some("the log file was deleted while the agent ran".into());
        assert!(
            line(&state).contains("log file deleted or replaced under the agent"),
            "{}",
            line(&state)
        );
    }

    /// The gateway's fixture log with the picker on `node`.
    fn gateway(node: usize) -> State {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build_gateway(dir.path());
        let store = crate::store::Store::open(&path, crate::store::Access::ReadOnly)
            .expect("read-only open");
        let view = View {
            node,
            theme: Theme { color: false },
            ..View::default()
        };
        load(&store, None, NOW, view).expect("state loads")
    }

    /// The screen's text, one string per row.
    fn screen_text(state: &State, width: u16, height: u16) -> Vec<String> {
        text(screen(state, width, height).backend().buffer())
    }

    #[test]
    fn gateway_all_nodes() {
        snapshots("gateway_all", &gateway(0));
    }

    #[test]
    fn gateway_one_node() {
        snapshots("gateway_one", &gateway(3));
    }

    #[test]
    fn a_gateways_header_says_which_nodes_are_shown() {
        let all = screen_text(&gateway(0), 120, 40);
        assert!(
            all[0].starts_with("edgeprio gw-1  agent running (beat 2s ago)"),
            "{}",
            all[0]
        );
        assert_eq!(all[2].trim_end(), "nodes all 3  n next node");
        let hall = screen_text(&gateway(1), 120, 40);
        assert_eq!(
            hall[2].trim_end(),
            "node esp-hall 1/3  last reading 5s ago  n next node"
        );
        let shed = screen_text(&gateway(3), 120, 40);
        assert_eq!(
            shed[2].trim_end(),
            "node esp-shed 3/3  last reading 10m ago  n next node"
        );
        // An agent's header keeps its two lines.
        let agent = screen_text(&state_of(Scenario::Live, 2), 120, 40);
        assert!(agent[2].starts_with('┌'), "{}", agent[2]);
    }

    #[test]
    fn panels_are_named_node_slash_sensor_and_filtered_by_the_picker() {
        let all = screen_text(&gateway(0), 120, 40).join("\n");
        for node in RAW_NODES {
            for sensor in RAW_SENSORS {
                assert!(
                    all.contains(&format!("{node}/{sensor} ")),
                    "{node}/{sensor}:\n{all}"
                );
            }
        }
        let porch = screen_text(&gateway(2), 120, 40).join("\n");
        assert!(
            porch.contains("┌▶esp-porch/lab ") && porch.contains("┌ esp-porch/yard "),
            "{porch}"
        );
        for other in [RAW_NODES[0], RAW_NODES[2]] {
            assert!(
                !porch.contains(other),
                "{other} shown while esp-porch is picked:\n{porch}"
            );
        }
    }

    #[test]
    fn an_owner_without_an_agent_shows_its_last_readings_age() {
        let mut state = gateway(0);
        state.header = crate::dashboard::state::Header {
            node: "esp-shed".to_owned(),
            agent: AgentState::Unknown,
            heartbeat_age_ms: None,
            last_reading_age_ms: Some(SILENT_MS),
            interval_ms: None,
            uptime_ms: None,
            broker: None,
            broker_error: None,
            broker_for_ms: None,
            outbox: 0,
            log_replaced: None,
        };
        let rows = screen_text(&state, 120, 40);
        assert_eq!(
            rows[0].trim_end(),
            "edgeprio esp-shed  last reading 10m ago"
        );
    }

    #[test]
    fn help_lists_the_node_keys_only_with_nodes_to_pick() {
        let mut state = gateway(0);
        state.view.help = true;
        let picker = format!("{:<13}{}", NODE_HELP.0, NODE_HELP.1);
        let shown = screen_text(&state, 80, 24).join("\n");
        assert!(shown.contains(&picker), "{shown}");
        let mut agent = state_of(Scenario::Live, 2);
        agent.view.help = true;
        let shown = screen_text(&agent, 80, 24).join("\n");
        assert!(!shown.contains(NODE_HELP.1), "{shown}");
    }

    #[test]
    fn panels_that_do_not_fit_are_shown_a_page_at_a_time() {
        let mut state = gateway(0);
        let six = state.sensors.clone();
        state.sensors = (0..4).flat_map(|_| six.clone()).collect();
        let area = Rect::new(0, 0, 80, 5);
        let titles = |state: &State| {
            let mut buf = Buffer::empty(area);
            render_sensors(&mut buf, area, state, false);
            text(&buf)[0].matches('┌').count()
        };
        // 24 panels, 6 to a page of 80 columns.
        state.selected = 0;
        assert_eq!(titles(&state), 6);
        state.selected = 23;
        let mut buf = Buffer::empty(area);
        render_sensors(&mut buf, area, &state, false);
        let top = &text(&buf)[0];
        assert_eq!(top.matches('┌').count(), 6);
        assert!(
            top.ends_with("┌▶esp-shed/y┐"),
            "the selected one is on the page: {top}"
        );
    }

    #[test]
    fn help_overlay() {
        let mut state = state_of(Scenario::Live, 2);
        state.view.help = true;
        insta::assert_snapshot!("help_80x24", screen(&state, 80, 24).backend());
    }

    #[test]
    fn scrolled_table() {
        let mut state = state_of(Scenario::Errors, 0);
        state.view.scroll = 20;
        insta::assert_snapshot!("scrolled_120x40", screen(&state, 120, 40).backend());
    }

    #[test]
    fn scroll_indicator_shows_the_rows_in_view() {
        let mut state = state_of(Scenario::Live, 2);
        state.view.theme = Theme { color: false };
        // 14 rows tall: borders and column titles leave 11 readings.
        let area = Rect::new(0, 0, TABLE_WIDTH, 14);
        let top_border = |state: &State| {
            let mut buf = Buffer::empty(area);
            render_table(&mut buf, area, state);
            text(&buf)[0].trim_end_matches(['─', '┐']).to_owned()
        };
        assert_eq!(top_border(&state), "┌ recent readings 1-11 of 200 ");
        state.view.scroll = 20;
        assert_eq!(top_border(&state), "┌ recent readings 21-31 of 200 ");
        // Past the end: the last page, full.
        state.view.scroll = 500;
        assert_eq!(top_border(&state), "┌ recent readings 190-200 of 200 ");
        state.recent.truncate(5);
        assert_eq!(top_border(&state), "┌ recent readings 1-5 of 5 ");
        state.recent.clear();
        assert_eq!(top_border(&state), "┌ recent readings ");
    }

    #[test]
    fn scrolled_table_starts_at_the_offset() {
        let mut state = state_of(Scenario::Live, 2);
        state.view.scroll = 20;
        let area = Rect::new(0, 0, TABLE_WIDTH, 7);
        let mut buf = Buffer::empty(area);
        render_table(&mut buf, area, &state);
        let rows = text(&buf);
        assert!(
            rows[2].starts_with(&format!("│{} ", time_of_day(state.recent[20].ts_ms))),
            "{rows:#?}"
        );
        // The thumb sits on the right border, a tenth of the way down.
        let bar: String = rows[2..6]
            .iter()
            .map(|r| r.chars().last().expect("a border"))
            .collect();
        assert_eq!(bar, "┃│││");
        state.view.scroll = 196;
        let mut buf = Buffer::empty(area);
        render_table(&mut buf, area, &state);
        let bar: String = text(&buf)[2..6]
            .iter()
            .map(|r| r.chars().last().expect("a border"))
            .collect();
        assert_eq!(bar, "│││┃");
    }

    #[test]
    fn page_is_the_rows_the_table_shows() {
        assert_eq!(table_rows(Rect::new(0, 0, 80, 24)), 4);
        assert_eq!(table_rows(Rect::new(0, 0, 120, 40)), 11);
        assert!(table_rows(Rect::new(0, 0, 160, 60)) > 11, "grows when tall");
    }

    #[test]
    fn newest_error_is_shown_whole_in_a_narrow_pane() {
        let state = state_of(Scenario::Errors, 0);
        let area = Rect::new(0, 0, ERRORS_MIN + 2, 7);
        let mut buf = Buffer::empty(area);
        render_errors(&mut buf, area, &state);
        assert_eq!(
            text(&buf),
            [
                "┌ sensor errors 1h ──────┐",
                "│01:26:05 attic checksum │",
                "│checksum 0x3c, expected │",
                "│0x3d                    │",
                "│01:25:20 attic timeout  │",
                "│01:24:35 attic checksum │",
                "└────────────────────────┘",
            ]
        );
    }

    #[test]
    fn words_wrap_at_spaces() {
        assert_eq!(
            wrap("no answer from the sensor on BCM 17", 16),
            ["no answer from", "the sensor on", "BCM 17"]
        );
        assert_eq!(wrap("unbreakable-word x", 5), ["unbreakable-word", "x"]);
        assert!(wrap("", 5).is_empty());
    }

    #[test]
    fn tiny_terminal_does_not_panic() {
        let state = state_of(Scenario::Live, 2);
        for (w, h) in [(1, 1), (20, 5), (40, 12), (80, 10)] {
            screen(&state, w, h);
        }
    }

    /// The text of each row of `buf`.
    fn text(buf: &Buffer) -> Vec<String> {
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn panel() -> SensorPanel {
        SensorPanel {
            node: None,
            sensor: "lab".to_owned(),
            latest: Some(Latest {
                temperature: 28.0,
                humidity: 48.0,
                age_ms: 12_000,
                weights: (2, 2),
                priority: 2,
                route: Route::Realtime,
                clock_synced: None,
            }),
            split: Split {
                realtime: 9,
                batch: 1,
                unpublished: 0,
            },
            errors: 10,
            last_error: Some(LastError {
                kind: "timeout".to_owned(),
                detail: "no answer".to_owned(),
                age_ms: 125_000,
            }),
            burst: false,
        }
    }

    #[test]
    fn a_sensor_in_burst_says_so_in_its_title() {
        let p = SensorPanel {
            burst: true,
            ..panel()
        };
        let mut buf = Buffer::empty(Rect::new(0, 0, 22, 7));
        SensorWidget {
            panel: &p,
            selected: false,
            theme: Theme { color: false },
            wide: true,
        }
        .render(buf.area, &mut buf);
        assert_eq!(text(&buf)[0], "┌ lab burst ─────────┐");
    }

    #[test]
    fn a_reading_on_an_unsynchronized_clock_has_a_doubtful_age() {
        let mut p = panel();
        let first = |p: &SensorPanel| {
            let mut buf = Buffer::empty(Rect::new(0, 0, 22, 7));
            SensorWidget {
                panel: p,
                selected: true,
                theme: Theme { color: false },
                wide: true,
            }
            .render(buf.area, &mut buf);
            text(&buf)[1].clone()
        };
        assert_eq!(first(&p), "│28.0°C 48.0% 12s    │");
        p.latest.as_mut().unwrap().clock_synced = Some(false);
        assert_eq!(first(&p), "│28.0°C 48.0% 12s?   │");
        p.latest.as_mut().unwrap().clock_synced = Some(true);
        assert_eq!(first(&p), "│28.0°C 48.0% 12s    │");
    }

    #[test]
    fn sensor_panel_widget() {
        let p = panel();
        let mut buf = Buffer::empty(Rect::new(0, 0, 22, 7));
        SensorWidget {
            panel: &p,
            selected: true,
            theme: Theme { color: false },
            wide: true,
        }
        .render(buf.area, &mut buf);
        assert_eq!(
            text(&buf),
            [
                "┌▶lab ───────────────┐",
                "│28.0°C 48.0% 12s    │",
                "│w 2/2 p2 realtime   │",
                "│ok 50% 10 err       │",
                "│timeout 2m ago      │",
                "│no answer           │",
                "└────────────────────┘",
            ]
        );
        let mut buf = Buffer::empty(Rect::new(0, 0, 22, 5));
        SensorWidget {
            panel: &p,
            selected: false,
            theme: Theme { color: false },
            wide: false,
        }
        .render(buf.area, &mut buf);
        assert_eq!(text(&buf)[3], "│ok 50% 10 err timeou│");
    }

    #[test]
    fn routing_split_widget() {
        let mut state = state_of(Scenario::Empty, 0);
        state.sensors = vec![panel()];
        state.total = Split {
            realtime: 9,
            batch: 1,
            unpublished: 4,
        };
        let mut buf = Buffer::empty(Rect::new(0, 0, 44, 5));
        RoutingSplit(&state).render(buf.area, &mut buf);
        assert_eq!(
            text(&buf),
            [
                "┌ real-time/all 1h ────────────────────────┐",
                "│lab        9/10     90% ━━━━━━━━━━━━━━━━──│",
                "│total      9/10     90% ━━━━━━━━━━━━━━━━──│",
                "│sent     6 outbox     4 ━━━━━━━━━━────────│",
                "└──────────────────────────────────────────┘",
            ]
        );
    }

    #[test]
    fn ages_and_times() {
        assert_eq!(age(-5), "0s");
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(60_000), "1m");
        assert_eq!(age(7_200_000), "2h");
        assert_eq!(age(3 * 86_400_000), "3d");
        assert_eq!(time_of_day(NOW), "01:26:40");
        assert_eq!(interval(15_000), "15s");
        assert_eq!(interval(1_500), "1s 500ms");
        assert_eq!(interval(15), "15ms");
        assert_eq!(fit(" (refused)", 10).as_deref(), Some(" (refused)"));
        assert_eq!(
            fit(" (connection refused)", 12).as_deref(),
            Some(" (connecti…)")
        );
        assert_eq!(fit(" (connection refused)", 7), None);
    }
}
