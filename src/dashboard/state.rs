//! The query layer: builds a [`State`] from the log with a handful of
//! aggregate queries. `now` is an argument, so the same database gives the
//! same state in tests; everything held is bounded (history downsampled to
//! [`MAX_POINTS`], tables capped at [`MAX_ROWS`]).
//!
//! These queries read the schema that `store` owns; they live here until
//! they move into `store`.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::Route;
use crate::store::BrokerState;

/// The most history points the chart keeps, whatever the window.
pub const MAX_POINTS: i64 = 600;
/// The most rows the readings table and the errors pane keep.
pub const MAX_ROWS: i64 = 200;
/// A heartbeat older than this many intervals means the agent is stale.
pub const STALE_INTERVALS: i64 = 3;

/// The span of history the dashboard shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last 15 minutes.
    Min15,
    /// The last hour.
    Hour1,
    /// The last 6 hours.
    Hour6,
    /// The last 24 hours.
    Hour24,
}

impl Window {
    /// The window's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Window::Min15 => 15 * 60_000,
            Window::Hour1 => 3_600_000,
            Window::Hour6 => 6 * 3_600_000,
            Window::Hour24 => 24 * 3_600_000,
        }
    }

    /// A short label ("15m", "1h", ...).
    pub fn label(self) -> &'static str {
        match self {
            Window::Min15 => "15m",
            Window::Hour1 => "1h",
            Window::Hour6 => "6h",
            Window::Hour24 => "24h",
        }
    }
}

/// Colors in use; plain styles when `NO_COLOR` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// Whether accent colors may be used. Text otherwise keeps the
    /// terminal's own foreground and background, so it reads on dark and
    /// light backgrounds alike.
    pub color: bool,
}

impl Theme {
    /// The theme for an environment: colorless when `NO_COLOR` is set to
    /// anything non-empty (<https://no-color.org>).
    pub fn from_no_color(no_color: Option<&std::ffi::OsStr>) -> Theme {
        Theme {
            color: no_color.is_none_or(std::ffi::OsStr::is_empty),
        }
    }
}

/// What the user chose: kept across reloads by the terminal loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The history window.
    pub window: Window,
    /// Index of the selected sensor (wrapped into range by [`load`]).
    pub selected: usize,
    /// Whether reloading is paused (shown in the header).
    pub paused: bool,
    /// Whether the help overlay is shown.
    pub help: bool,
    /// Rows scrolled down from the newest in the readings table.
    pub scroll: usize,
    /// Colors.
    pub theme: Theme,
}

impl Default for View {
    fn default() -> Self {
        View {
            window: Window::Hour1,
            selected: 0,
            paused: false,
            help: false,
            scroll: 0,
            theme: Theme { color: true },
        }
    }
}

/// The agent's liveness as judged from its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Heartbeat within [`STALE_INTERVALS`] intervals.
    Running,
    /// Marked running, but the heartbeat is older than [`STALE_INTERVALS`]
    /// intervals: the agent died or hangs.
    Stale,
    /// Stopped cleanly.
    Stopped,
    /// No status row: the agent never ran against this log.
    Unknown,
}

impl AgentState {
    /// The word shown in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Running => "running",
            AgentState::Stale => "stale",
            AgentState::Stopped => "stopped",
            AgentState::Unknown => "no agent",
        }
    }
}

/// The agent and broker line of the header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Node name shown (empty when the log has none).
    pub node: String,
    /// Liveness from the heartbeat.
    pub agent: AgentState,
    /// Age of the last heartbeat (ms), if any.
    pub heartbeat_age_ms: Option<i64>,
    /// The configured interval (ms), if the agent ran.
    pub interval_ms: Option<i64>,
    /// How long the agent has been up (ms), while it runs.
    pub uptime_ms: Option<i64>,
    /// The publisher's connection state, if the agent ran.
    pub broker: Option<BrokerState>,
    /// The last broker error.
    pub broker_error: Option<String>,
    /// How long the broker state has held (ms).
    pub broker_for_ms: Option<i64>,
    /// Readings not yet acknowledged (counted now, not the agent's copy).
    pub outbox: u64,
}

/// The latest reading of a sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// Temperature (°C).
    pub temperature: f64,
    /// Relative humidity (%).
    pub humidity: f64,
    /// Age of the reading (ms).
    pub age_ms: i64,
    /// Channel weights (temperature, humidity).
    pub weights: (u32, u32),
    /// Combined priority.
    pub priority: u32,
    /// The route it took.
    pub route: Route,
}

/// Real-time and batch counts over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    /// Readings routed real-time.
    pub realtime: u64,
    /// Readings routed batch.
    pub batch: u64,
    /// Of those, how many still wait in the outbox.
    pub unpublished: u64,
}

impl Split {
    /// All readings counted.
    pub fn total(&self) -> u64 {
        self.realtime + self.batch
    }

    /// The real-time share in 0..=1 (0 when empty).
    pub fn realtime_ratio(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            t => self.realtime as f64 / t as f64,
        }
    }

    /// Readings acknowledged by the broker.
    pub fn published(&self) -> u64 {
        self.total().saturating_sub(self.unpublished)
    }
}

/// A sensor's last error.
#[derive(Debug, Clone, PartialEq)]
pub struct LastError {
    /// The error class (`timeout`, `checksum`, ...).
    pub kind: String,
    /// What happened.
    pub detail: String,
    /// Age (ms).
    pub age_ms: i64,
}

/// One sensor panel.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorPanel {
    /// Sensor id.
    pub sensor: String,
    /// The newest reading ever logged, if any.
    pub latest: Option<Latest>,
    /// Routing over the window.
    pub split: Split,
    /// Failed reads over the window.
    pub errors: u64,
    /// The newest error within the window.
    pub last_error: Option<LastError>,
}

impl SensorPanel {
    /// Read success rate over the window, readings / (readings + errors);
    /// `None` when nothing was attempted.
    pub fn success_rate(&self) -> Option<f64> {
        let attempts = self.split.total() + self.errors;
        (attempts > 0).then(|| self.split.total() as f64 / attempts as f64)
    }
}

/// One chart point: a bucket of the window, averaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Milliseconds before `now` (negative).
    pub offset_ms: i64,
    /// Mean temperature (°C).
    pub temperature: f64,
    /// Mean humidity (%).
    pub humidity: f64,
    /// Highest priority in the bucket.
    pub priority: u32,
    /// Whether the bucket holds a real-time reading.
    pub realtime: bool,
}

/// One row of the recent readings table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Unix ms.
    pub ts_ms: i64,
    /// Sensor id.
    pub sensor: String,
    /// Temperature (°C).
    pub temperature: f64,
    /// Humidity (%).
    pub humidity: f64,
    /// Channel weights (temperature, humidity).
    pub weights: (u32, u32),
    /// Priority.
    pub priority: u32,
    /// Route.
    pub route: Route,
    /// Whether the broker acknowledged it.
    pub published: bool,
}

/// One row of the errors pane.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRow {
    /// Unix ms.
    pub ts_ms: i64,
    /// Sensor id.
    pub sensor: String,
    /// The error class.
    pub kind: String,
    /// What happened.
    pub detail: String,
}

/// Everything one frame shows; built by [`load`], drawn by
/// [`super::ui::render`].
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The user's choices this state was built for.
    pub view: View,
    /// Header line.
    pub header: Header,
    /// One panel per sensor, by name.
    pub sensors: Vec<SensorPanel>,
    /// Index of the selected sensor in `sensors` (0 when there are none).
    pub selected: usize,
    /// Chart points of the selected sensor, oldest first, at most
    /// [`MAX_POINTS`].
    pub history: Vec<Point>,
    /// Routing over the window, all sensors.
    pub total: Split,
    /// Newest readings first, at most [`MAX_ROWS`].
    pub recent: Vec<Row>,
    /// Newest errors first, at most [`MAX_ROWS`], within the window.
    pub errors: Vec<ErrorRow>,
    /// Why the last reload failed, if it did (the terminal loop keeps the
    /// previous state and sets this, so a busy or vanished file is shown,
    /// not a crash).
    pub error: Option<String>,
}

impl State {
    /// The selected sensor's panel.
    pub fn selected_sensor(&self) -> Option<&SensorPanel> {
        self.sensors.get(self.selected)
    }
}

/// The window's routing counts per sensor, carried between reloads.
///
/// Invariant: `by` counts the rows with `id <= last_id` and
/// `ts_ms >= since`. A reload adds the rows inserted since (a rowid range)
/// and takes away those that slid out of the window (a `readings_ts`
/// range), so it never recounts the window. Rows are never deleted from the
/// log; if retention ever deletes some, reset with `Counts::default()`.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// The node counted; another node starts over.
    node: String,
    /// The window's start at the last update.
    since: i64,
    /// The newest row counted.
    last_id: i64,
    /// Real-time and batch counts per sensor: two numbers per sensor, so
    /// bounded.
    by: BTreeMap<String, (u64, u64)>,
    /// Whether `by` holds anything valid.
    valid: bool,
}

impl Counts {
    fn apply(&mut self, rows: &[(String, String, i64)], add: bool) {
        for (sensor, r, n) in rows {
            let entry = self.by.entry(sensor.clone()).or_default();
            let slot = match route(r) {
                Route::Realtime => &mut entry.0,
                Route::Batch => &mut entry.1,
            };
            *slot = if add {
                *slot + to_u64(*n)
            } else {
                slot.saturating_sub(to_u64(*n))
            };
        }
    }

    /// Brings the counts to the window starting at `since`, and returns
    /// the split per sensor (with the window's unpublished rows, counted
    /// through the outbox index).
    fn update(
        &mut self,
        conn: &Connection,
        node: &str,
        since: i64,
    ) -> rusqlite::Result<BTreeMap<String, Split>> {
        let group = |sql: &str,
                     args: &[&dyn rusqlite::ToSql]|
         -> rusqlite::Result<Vec<(String, String, i64)>> {
            conn.prepare_cached(sql)?
                .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        };
        let last_id: i64 = conn
            .prepare_cached("SELECT coalesce(max(id), 0) FROM readings")?
            .query_row([], |r| r.get(0))?;
        if !self.valid || self.node != node || since < self.since {
            // `+node`: without statistics SQLite would walk every row of
            // the node through UNIQUE(node, sensor, seq) instead of the
            // window's rows through readings_ts.
            let rows = group(
                "SELECT sensor, route, count(*) FROM readings
                 WHERE ts_ms >= ?2 AND +node = ?1 AND +id <= ?3 GROUP BY sensor, route",
                &[&node, &since, &last_id],
            )?;
            self.by.clear();
            self.apply(&rows, true);
            node.clone_into(&mut self.node);
            self.valid = true;
        } else {
            let entered = group(
                "SELECT sensor, route, count(*) FROM readings
                 WHERE id > ?3 AND id <= ?4 AND +ts_ms >= ?2 AND +node = ?1
                 GROUP BY sensor, route",
                &[&node, &since, &self.last_id, &last_id],
            )?;
            let left = group(
                "SELECT sensor, route, count(*) FROM readings
                 WHERE ts_ms >= ?2 AND ts_ms < ?3 AND +id <= ?4 AND +node = ?1
                 GROUP BY sensor, route",
                &[&node, &self.since, &since, &self.last_id],
            )?;
            self.apply(&entered, true);
            self.apply(&left, false);
        }
        self.since = since;
        self.last_id = last_id;
        // The outbox is small unless the broker is away; its partial index
        // holds only unpublished rows.
        let unpublished = group(
            "SELECT sensor, '', count(*) FROM readings
             WHERE node = ?1 AND published_ms IS NULL AND +ts_ms >= ?2 AND id <= ?3
             GROUP BY sensor",
            &[&node, &since, &last_id],
        )?;
        let mut splits: BTreeMap<String, Split> = self
            .by
            .iter()
            .map(|(s, &(realtime, batch))| {
                (
                    s.clone(),
                    Split {
                        realtime,
                        batch,
                        unpublished: 0,
                    },
                )
            })
            .collect();
        for (sensor, _, n) in unpublished {
            splits.entry(sensor).or_default().unpublished = to_u64(n);
        }
        Ok(splits)
    }
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn route(s: &str) -> Route {
    Route::parse(s).unwrap_or(Route::Batch)
}

/// The node to show: `node` if given, else the agent with the newest
/// heartbeat, else the node of the newest reading.
fn pick_node(conn: &Connection, node: Option<&str>) -> rusqlite::Result<Option<String>> {
    if let Some(n) = node {
        return Ok(Some(n.to_owned()));
    }
    let agent = conn
        .query_row(
            "SELECT node FROM agent_status ORDER BY heartbeat_ms DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if agent.is_some() {
        return Ok(agent);
    }
    conn.query_row(
        "SELECT node FROM readings ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// Builds the state of `node` (or the most recent node) at `now_ms`,
/// counting the whole window afresh. See [`load_with`] for repeated loads.
pub fn load(
    conn: &Connection,
    node: Option<&str>,
    now_ms: i64,
    view: View,
) -> rusqlite::Result<State> {
    load_with(conn, node, now_ms, view, &mut Counts::default())
}

/// [`load`] for one reload of many: `counts` carries the window's routing
/// counts from the previous call, so only rows that entered or left the
/// window since then are counted (milliseconds, whatever the window holds).
pub fn load_with(
    conn: &Connection,
    node: Option<&str>,
    now_ms: i64,
    view: View,
    counts: &mut Counts,
) -> rusqlite::Result<State> {
    // One read transaction: every query sees the same snapshot of the log,
    // and in WAL mode it never blocks the writer.
    let tx = conn.unchecked_transaction()?;
    let conn: &Connection = &tx;
    let since = now_ms - view.window.millis();
    let Some(node) = pick_node(conn, node)? else {
        return Ok(empty(view));
    };
    let header = header(conn, &node, now_ms)?;
    let splits = counts.update(conn, &node, since)?;
    let mut sensors = sensor_panels(conn, &node, now_ms, since, &splits)?;
    sensors.sort_by(|a, b| a.sensor.cmp(&b.sensor));
    let selected = match sensors.len() {
        0 => 0,
        n => view.selected % n,
    };
    let total = sensors.iter().fold(Split::default(), |acc, s| Split {
        realtime: acc.realtime + s.split.realtime,
        batch: acc.batch + s.split.batch,
        unpublished: acc.unpublished + s.split.unpublished,
    });
    let history = match sensors.get(selected) {
        Some(s) => history(conn, &node, &s.sensor, now_ms, since)?,
        None => Vec::new(),
    };
    Ok(State {
        view,
        header,
        selected,
        history,
        total,
        recent: recent(conn, &node)?,
        errors: errors(conn, &node, since)?,
        sensors,
        error: None,
    })
}

impl Header {
    /// A header for `node` before anything is known of its agent.
    fn unknown(node: String, outbox: u64) -> Self {
        Self {
            node,
            agent: AgentState::Unknown,
            heartbeat_age_ms: None,
            interval_ms: None,
            uptime_ms: None,
            broker: None,
            broker_error: None,
            broker_for_ms: None,
            outbox,
        }
    }
}

fn empty(view: View) -> State {
    State {
        view,
        header: Header::unknown(String::new(), 0),
        sensors: Vec::new(),
        selected: 0,
        history: Vec::new(),
        total: Split::default(),
        recent: Vec::new(),
        errors: Vec::new(),
        error: None,
    }
}

fn header(conn: &Connection, node: &str, now_ms: i64) -> rusqlite::Result<Header> {
    // The partial index readings_outbox makes this a count over the outbox only.
    let outbox: i64 = conn
        .prepare_cached("SELECT count(*) FROM readings WHERE node = ?1 AND published_ms IS NULL")?
        .query_row([node], |r| r.get(0))?;
    let row = conn
        .prepare_cached(
            "SELECT state, started_ms, heartbeat_ms, interval_ms,
                    broker_state, broker_error, broker_since_ms
             FROM agent_status WHERE node = ?1",
        )?
        .query_row([node], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })
        .optional()?;
    let mut h = Header::unknown(node.to_owned(), to_u64(outbox));
    if let Some((state, started, heartbeat, interval, broker, error, since)) = row {
        let age = now_ms - heartbeat;
        h.agent = if state != "running" {
            AgentState::Stopped
        } else if age > STALE_INTERVALS * interval.max(1) {
            AgentState::Stale
        } else {
            AgentState::Running
        };
        h.heartbeat_age_ms = Some(age);
        h.interval_ms = Some(interval);
        h.uptime_ms = (h.agent == AgentState::Running).then_some(now_ms - started);
        h.broker = BrokerState::parse(&broker);
        h.broker_error = error;
        h.broker_for_ms = since.map(|s| now_ms - s);
    }
    Ok(h)
}

fn sensor_panels(
    conn: &Connection,
    node: &str,
    now_ms: i64,
    since: i64,
    splits: &BTreeMap<String, Split>,
) -> rusqlite::Result<Vec<SensorPanel>> {
    // Distinct sensors by skip-scan of UNIQUE(node, sensor, seq): one index
    // seek per sensor instead of a scan of every reading.
    let mut names: Vec<String> = conn
        .prepare_cached(
            "WITH RECURSIVE s(sensor) AS (
               SELECT (SELECT min(sensor) FROM readings WHERE node = ?1)
               UNION ALL
               SELECT (SELECT min(sensor) FROM readings WHERE node = ?1 AND sensor > s.sensor)
               FROM s WHERE s.sensor IS NOT NULL)
             SELECT sensor FROM s WHERE sensor IS NOT NULL",
        )?
        .query_map([node], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Sensors that only failed within the window still get a panel.
    let failing: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT sensor, count(*) FROM sensor_errors
             WHERE ts_ms >= ?2 AND node = ?1 GROUP BY sensor",
        )?
        .query_map(params![node, since], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (s, _) in &failing {
        if !names.contains(s) {
            names.push(s.clone());
        }
    }
    let mut latest = conn.prepare_cached(
        "SELECT ts_ms, temperature_c, humidity_pct, weight_temperature, weight_humidity,
                priority, route
         FROM readings WHERE node = ?1 AND sensor = ?2 ORDER BY seq DESC LIMIT 1",
    )?;
    let mut last_error = conn.prepare_cached(
        "SELECT kind, detail, ts_ms FROM sensor_errors
         WHERE ts_ms >= ?3 AND node = ?1 AND sensor = ?2 ORDER BY ts_ms DESC, id DESC LIMIT 1",
    )?;
    let mut panels = Vec::with_capacity(names.len());
    for sensor in names {
        let latest = latest
            .query_row(params![node, sensor], |r| {
                Ok(Latest {
                    age_ms: now_ms - r.get::<_, i64>(0)?,
                    temperature: r.get(1)?,
                    humidity: r.get(2)?,
                    weights: (to_u32(r.get(3)?), to_u32(r.get(4)?)),
                    priority: to_u32(r.get(5)?),
                    route: route(&r.get::<_, String>(6)?),
                })
            })
            .optional()?;
        let last_error = last_error
            .query_row(params![node, sensor, since], |r| {
                Ok(LastError {
                    kind: r.get(0)?,
                    detail: r.get(1)?,
                    age_ms: now_ms - r.get::<_, i64>(2)?,
                })
            })
            .optional()?;
        let split = splits.get(&sensor).copied().unwrap_or_default();
        let errors = failing
            .iter()
            .find(|(s, _)| *s == sensor)
            .map_or(0, |(_, n)| to_u64(*n));
        panels.push(SensorPanel {
            sensor,
            latest,
            split,
            errors,
            last_error,
        });
    }
    Ok(panels)
}

fn history(
    conn: &Connection,
    node: &str,
    sensor: &str,
    now_ms: i64,
    since: i64,
) -> rusqlite::Result<Vec<Point>> {
    // The sensor's first seq in the window, found through readings_ts (a
    // few rows in: sensors interleave); from there UNIQUE(node, sensor, seq)
    // walks this sensor's rows only, as seq grows with time.
    let first: Option<i64> = conn
        .prepare_cached(
            "SELECT seq FROM readings WHERE ts_ms >= ?3 AND +node = ?1 AND +sensor = ?2
             ORDER BY ts_ms LIMIT 1",
        )?
        .query_row(params![node, sensor, since], |r| r.get(0))
        .optional()?;
    let Some(first) = first else {
        return Ok(Vec::new());
    };
    // Averaged per bucket in SQL: never more than MAX_POINTS rows come back.
    let bucket = ((now_ms - since) / MAX_POINTS).max(1);
    conn.prepare_cached(
        "SELECT (ts_ms - ?3) / ?4 AS b, avg(temperature_c), avg(humidity_pct), max(priority),
                max(route = 'realtime'), max(ts_ms)
         FROM readings WHERE node = ?1 AND sensor = ?2 AND seq >= ?5 AND ts_ms >= ?3
         GROUP BY b ORDER BY b",
    )?
    .query_map(params![node, sensor, since, bucket, first], |r| {
        Ok(Point {
            offset_ms: r.get::<_, i64>(5)? - now_ms,
            temperature: r.get(1)?,
            humidity: r.get(2)?,
            priority: to_u32(r.get(3)?),
            realtime: r.get::<_, i64>(4)? != 0,
        })
    })?
    .collect()
}

fn recent(conn: &Connection, node: &str) -> rusqlite::Result<Vec<Row>> {
    conn.prepare_cached(
        "SELECT ts_ms, sensor, temperature_c, humidity_pct, weight_temperature,
                weight_humidity, priority, route, published_ms IS NOT NULL
         FROM readings WHERE +node = ?1 ORDER BY id DESC LIMIT ?2",
    )?
    .query_map(params![node, MAX_ROWS], |r| {
        Ok(Row {
            ts_ms: r.get(0)?,
            sensor: r.get(1)?,
            temperature: r.get(2)?,
            humidity: r.get(3)?,
            weights: (to_u32(r.get(4)?), to_u32(r.get(5)?)),
            priority: to_u32(r.get(6)?),
            route: route(&r.get::<_, String>(7)?),
            published: r.get(8)?,
        })
    })?
    .collect()
}

fn errors(conn: &Connection, node: &str, since: i64) -> rusqlite::Result<Vec<ErrorRow>> {
    conn.prepare_cached(
        "SELECT ts_ms, sensor, kind, detail FROM sensor_errors
         WHERE ts_ms >= ?2 AND node = ?1 ORDER BY ts_ms DESC, id DESC LIMIT ?3",
    )?
    .query_map(params![node, since, MAX_ROWS], |r| {
        Ok(ErrorRow {
            ts_ms: r.get(0)?,
            sensor: r.get(1)?,
            kind: r.get(2)?,
            detail: r.get(3)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::fixtures::{INTERVAL, NODE, NOW, Scenario, build};

    fn state_of(scenario: Scenario, view: View) -> State {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build(dir.path(), scenario);
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("read-only open");
        load(&conn, None, NOW, view).expect("state loads")
    }

    #[test]
    fn live_agent_is_running_with_all_sensors() {
        let s = state_of(Scenario::Live, View::default());
        assert_eq!(s.header.node, NODE);
        assert_eq!(s.header.agent, AgentState::Running);
        assert_eq!(s.header.heartbeat_age_ms, Some(5_000));
        assert_eq!(s.header.interval_ms, Some(INTERVAL));
        assert_eq!(s.header.broker, Some(BrokerState::Connected));
        let names: Vec<&str> = s.sensors.iter().map(|p| p.sensor.as_str()).collect();
        assert_eq!(names, ["attic", "cellar", "lab"]);
        // One hour at 15 s: 240 readings per sensor; only the newest cycle unsent.
        assert_eq!(s.total.total(), 3 * 240);
        assert_eq!(s.total.unpublished, 3);
        assert_eq!(s.header.outbox, 3);
        let lab = &s.sensors[2];
        let latest = lab.latest.as_ref().expect("lab has readings");
        assert_eq!(latest.age_ms, 5_000);
        assert_eq!(lab.success_rate(), Some(1.0));
        assert!(lab.split.realtime > 0, "the heater jump went real-time");
        assert_eq!(s.recent.len(), usize::try_from(MAX_ROWS).expect("small"));
        assert!(s.recent[0].ts_ms >= s.recent[1].ts_ms, "newest first");
    }

    #[test]
    fn heartbeat_older_than_three_intervals_is_stale() {
        let s = state_of(Scenario::Stale, View::default());
        assert_eq!(s.header.agent, AgentState::Stale);
        assert_eq!(s.header.uptime_ms, None);
    }

    #[test]
    fn outage_counts_the_outbox_from_the_log() {
        let s = state_of(Scenario::Outage, View::default());
        assert_eq!(s.header.broker, Some(BrokerState::Disconnected));
        assert_eq!(
            s.header.broker_error.as_deref(),
            Some("connection refused (os error 111)")
        );
        assert_eq!(s.header.broker_for_ms, Some(20 * 60_000));
        // 20 minutes of 3 sensors every 15 s.
        assert_eq!(s.header.outbox, 3 * 80);
        assert_eq!(s.total.unpublished, 3 * 80);
    }

    #[test]
    fn success_rate_counts_errors_in_the_window() {
        let s = state_of(Scenario::Errors, View::default());
        let attic = &s.sensors[0];
        assert_eq!(attic.errors, 80);
        assert_eq!(attic.split.total(), 160);
        let rate = attic.success_rate().expect("attempts");
        assert!((rate - 160.0 / 240.0).abs() < 1e-9, "{rate}");
        let last = attic.last_error.as_ref().expect("an error");
        assert_eq!(s.errors.len(), 80);
        assert_eq!(last.kind, s.errors[0].kind);
    }

    #[test]
    fn empty_log_has_no_agent_and_no_sensors() {
        let s = state_of(Scenario::Empty, View::default());
        assert_eq!(s.header.agent, AgentState::Unknown);
        assert!(s.sensors.is_empty() && s.history.is_empty() && s.recent.is_empty());
    }

    #[test]
    fn stopped_agent_is_stopped_whatever_its_heartbeat() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build(dir.path(), Scenario::Live);
        let mut store =
            crate::store::Store::open(&path, crate::store::Access::Writer).expect("writer");
        let status = store.status(NODE).expect("status").expect("row");
        store.mark_stopped(&status).expect("stop");
        drop(store);
        let conn = Connection::open(&path).expect("open");
        let s = load(&conn, None, NOW, View::default()).expect("state");
        assert_eq!(s.header.agent, AgentState::Stopped);
    }

    #[test]
    fn history_is_bounded_and_selection_wraps() {
        let view = View {
            window: Window::Min15,
            selected: 5,
            ..View::default()
        };
        let s = state_of(Scenario::Live, view);
        assert_eq!(s.selected, 2);
        assert_eq!(s.selected_sensor().map(|p| p.sensor.as_str()), Some("lab"));
        // 15 minutes at 15 s: 60 readings, one per 1.5 s bucket.
        assert_eq!(s.history.len(), 60);
        assert!(s.history.iter().any(|p| p.realtime));
        assert!(
            s.history
                .windows(2)
                .all(|w| w[0].offset_ms < w[1].offset_ms)
        );

        let day = state_of(
            Scenario::Live,
            View {
                window: Window::Hour24,
                ..View::default()
            },
        );
        assert!(day.history.len() <= usize::try_from(MAX_POINTS).expect("small"));
    }

    #[test]
    fn dense_history_is_downsampled_to_max_points() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dense.db");
        let mut store =
            crate::store::Store::open(&path, crate::store::Access::Writer).expect("writer");
        // One reading a second for an hour: 3,600 rows into 600 buckets.
        let readings: Vec<crate::domain::Reading> = (0..3600)
            .map(|i| crate::domain::Reading {
                node: NODE.to_owned(),
                sensor: "fast".to_owned(),
                seq: u64::try_from(i).expect("positive"),
                ts_ms: NOW - 3_600_000 + i * 1000,
                sample: crate::domain::Sample::new(20.0, 50.0),
                weights: crate::domain::PerChannel {
                    temperature: 0,
                    humidity: 0,
                },
                priority: 0,
                route: Route::Batch,
            })
            .collect();
        store.insert_readings(&readings).expect("insert");
        let s = load(&store_conn(&path), None, NOW, View::default()).expect("state");
        assert_eq!(s.history.len(), 600);
        assert_eq!(s.header.agent, AgentState::Unknown);
        assert_eq!(s.header.node, NODE, "node taken from the readings");
    }

    #[test]
    fn incremental_counts_match_a_fresh_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build(dir.path(), Scenario::Live);
        let view = View {
            window: Window::Min15,
            ..View::default()
        };
        let mut counts = Counts::default();
        let conn = store_conn(&path);
        let first = load_with(&conn, None, NOW - 30 * 60_000, view, &mut counts).expect("state");
        assert_eq!(
            first,
            load(&conn, None, NOW - 30 * 60_000, view).expect("state")
        );
        // More rows arrive while the window slides on.
        let mut store =
            crate::store::Store::open(&path, crate::store::Access::Writer).expect("writer");
        let more: Vec<crate::domain::Reading> = (0..40)
            .map(|i| crate::domain::Reading {
                node: NODE.to_owned(),
                sensor: "lab".to_owned(),
                seq: 1000 + i,
                ts_ms: NOW + i64::try_from(i).expect("small") * 1000,
                sample: crate::domain::Sample::new(30.0, 40.0),
                weights: crate::domain::PerChannel {
                    temperature: 1,
                    humidity: 0,
                },
                priority: 1,
                route: Route::Realtime,
            })
            .collect();
        store.insert_readings(&more).expect("insert");
        for later in [NOW - 20 * 60_000, NOW, NOW + 60_000] {
            let carried = load_with(&conn, None, later, view, &mut counts).expect("state");
            let fresh = load(&conn, None, later, view).expect("state");
            assert_eq!(carried.sensors, fresh.sensors, "at {later}");
            assert_eq!(carried.total, fresh.total);
        }
    }

    fn store_conn(path: &std::path::Path) -> Connection {
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("read-only open")
    }

    #[test]
    fn no_color_theme() {
        use std::ffi::OsStr;
        assert!(Theme::from_no_color(None).color);
        assert!(Theme::from_no_color(Some(OsStr::new(""))).color);
        assert!(!Theme::from_no_color(Some(OsStr::new("1"))).color);
    }
}
