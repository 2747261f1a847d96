//! The query layer: builds a [`State`] from one [`Snapshot`] of the log
//! (the queries themselves live with the schema, in `store`). `now` is an
//! argument, so the same database gives the same state in tests; everything
//! held is bounded (history downsampled to [`MAX_POINTS`], tables capped at
//! [`MAX_ROWS`], a panel per (node, sensor) pair of the log).

use crate::domain::Route;
use crate::store::{AgentStatus, BrokerState, Snapshot, Store, StoreError, StoredReading};

/// The most history points the chart keeps, whatever the window.
pub const MAX_POINTS: usize = 600;
/// The most rows the readings table and the errors pane keep.
pub const MAX_ROWS: usize = 200;
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
    /// The node picker: 0 shows every node, `k` only the `k`-th of
    /// [`State::nodes`] (wrapped into range by [`load`]). An index, not a
    /// name, so the view stays `Copy`; the terminal loop follows a node
    /// whose index moved.
    pub node: usize,
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
            node: 0,
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
    /// Without a status row (a raw node named by `--node`, a log no agent
    /// wrote): the age of the node's newest reading (ms), which tells a
    /// live node from a silent one where "no agent" cannot.
    pub last_reading_age_ms: Option<i64>,
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
    /// The log file was deleted or replaced while the agent ran (within
    /// the last week): what the agent found and did.
    pub log_replaced: Option<String>,
}

/// How a node picked alone is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The node runs its own agent: its status row says how it is.
    Agent(AgentState),
    /// No status row: a raw node behind a gateway, known only by its
    /// readings. The age of its newest one (ms), if it has any.
    LastReading(Option<i64>),
}

/// The one node the picker shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickedNode {
    /// Its name.
    pub name: String,
    /// Its place in [`State::nodes`], from 1, for "2/3" in the header.
    pub position: usize,
    /// Whether it is alive, as far as the log tells.
    pub liveness: Liveness,
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
    /// Whether the kernel said the clock was synchronized when it was taken
    /// (`Some(false)`: its age is doubtful); `None` when unknown.
    pub clock_synced: Option<bool>,
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

/// One sensor panel: one per (node, sensor) pair shown.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorPanel {
    /// The node, when the log holds readings of nodes other than the
    /// header's (a gateway's log): the title reads `node/sensor`. `None` in
    /// an agent's log, where every panel is the header's node.
    pub node: Option<String>,
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
    /// The running agent reads it at the `[priority] burst` interval now
    /// (its status row's `burst`).
    pub burst: bool,
}

impl SensorPanel {
    /// The panel's name: `sensor`, or `node/sensor` when the log holds
    /// several nodes.
    pub fn label(&self) -> String {
        label(self.node.as_deref(), &self.sensor)
    }

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

/// `sensor`, or `node/sensor` when a node is to be named.
pub fn label(node: Option<&str>, sensor: &str) -> String {
    match node {
        Some(n) => format!("{n}/{sensor}"),
        None => sensor.to_owned(),
    }
}

/// One row of the recent readings table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Unix ms.
    pub ts_ms: i64,
    /// The node, named as in [`SensorPanel::node`].
    pub node: Option<String>,
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
    /// The node, named as in [`SensorPanel::node`].
    pub node: Option<String>,
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
    /// Header line: the log owner's status (the agent's, or the
    /// gateway's).
    pub header: Header,
    /// Every node of the log (with a reading, or a failed read within the
    /// window), by name: what the picker cycles through after "all".
    pub nodes: Vec<String>,
    /// The node shown when only one is (picked, or the log's only one).
    pub picked: Option<PickedNode>,
    /// One panel per (node, sensor) shown, by node, then sensor.
    pub sensors: Vec<SensorPanel>,
    /// Index of the selected sensor in `sensors` (0 when there are none).
    pub selected: usize,
    /// Chart points of the selected sensor, oldest first, at most
    /// [`MAX_POINTS`].
    pub history: Vec<Point>,
    /// Routing over the window, all sensors shown.
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

    /// Whether the log holds readings of nodes other than the header's (a
    /// gateway's log): panels are named `node/sensor` and the header says
    /// which nodes are shown.
    pub fn names_nodes(&self) -> bool {
        names_nodes(&self.nodes, &self.header.node)
    }

    /// Whether there is a node to pick: more than one.
    pub fn can_pick(&self) -> bool {
        self.nodes.len() > 1
    }

    /// The node the picker shows alone, if one was picked (not the only
    /// node of the log, which shows alone whatever the picker says).
    pub fn chosen_node(&self) -> Option<&str> {
        self.picked
            .as_ref()
            .filter(|_| self.can_pick())
            .map(|p| p.name.as_str())
    }

    /// The [`View::node`] that shows `name` alone, if the log has it.
    pub fn pick_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == name).map(|i| i + 1)
    }
}

/// Whether panels and rows name their node: when `nodes` holds any but the
/// header's `owner`.
fn names_nodes(nodes: &[String], owner: &str) -> bool {
    nodes.iter().any(|n| n != owner)
}

fn row(s: StoredReading, named: bool) -> Row {
    let r = s.reading;
    Row {
        node: named.then_some(r.node),
        ts_ms: r.ts_ms,
        sensor: r.sensor,
        temperature: r.sample.temperature,
        humidity: r.sample.humidity,
        weights: (r.weights.temperature, r.weights.humidity),
        priority: r.priority,
        route: r.route,
        published: s.published_ms.is_some(),
    }
}

/// Builds the state at `now_ms` from one snapshot of the log: the header
/// of `owner` (default: the node whose agent or gateway beat last), and a
/// panel per (node, sensor) of the node [`View::node`] picks (every node
/// at first). Its cost does not grow with the log: the window's counts and
/// long charts come from per-minute totals, and the pairs from one index
/// seek each.
pub fn load(
    store: &Store,
    owner: Option<&str>,
    now_ms: i64,
    view: View,
) -> Result<State, StoreError> {
    let snap = store.snapshot()?;
    let since = now_ms - view.window.millis();
    let owner = match owner {
        Some(n) => n.to_owned(),
        None => match snap.latest_node()? {
            Some(n) => n,
            None => return Ok(empty(view)),
        },
    };
    let nodes = node_list(&snap, since)?;
    let named = names_nodes(&nodes, &owner);
    let pick = if nodes.len() > 1 {
        view.node % (nodes.len() + 1)
    } else {
        0
    };
    let shown: &[String] = match pick {
        0 => &nodes,
        k => &nodes[k - 1..k],
    };
    let mut header = header(&snap, &owner, now_ms)?;
    let mut sensors = Vec::new();
    for node in shown {
        sensors.extend(sensor_panels(&snap, node, named, now_ms, since)?);
    }
    if header.agent == AgentState::Unknown {
        header.last_reading_age_ms = newest_age(
            sensors
                .iter()
                .filter(|p| p.node.as_deref().is_none_or(|n| n == owner)),
        );
    }
    let picked = match shown {
        [one] => Some(picked_node(&snap, one, pick.max(1), &sensors, now_ms)?),
        _ => None,
    };
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
        Some(s) => snap
            .history(
                s.node.as_deref().unwrap_or(&owner),
                &s.sensor,
                since,
                now_ms,
                MAX_POINTS,
            )?
            .into_iter()
            .map(|b| Point {
                offset_ms: b.last_ts_ms - now_ms,
                temperature: b.temperature,
                humidity: b.humidity,
                priority: b.priority,
                realtime: b.realtime,
            })
            .collect(),
        None => Vec::new(),
    };
    // One node shown: its readings and errors; several: everyone's.
    let one = match shown {
        [one] => Some(one.as_str()),
        [] => Some(owner.as_str()),
        _ => None,
    };
    let (recent, errors) = tables(&snap, one, named, since)?;
    Ok(State {
        view,
        header,
        nodes,
        picked,
        selected,
        history,
        total,
        recent,
        errors,
        sensors,
        error: None,
    })
}

/// Every node of the log: with a reading, or a failed read at or after
/// `since` (a node whose sensors only failed), by name.
fn node_list(snap: &Snapshot<'_>, since: i64) -> Result<Vec<String>, StoreError> {
    let mut nodes = snap.nodes()?;
    for n in snap.error_nodes(since)? {
        if !nodes.contains(&n) {
            nodes.push(n);
        }
    }
    nodes.sort();
    Ok(nodes)
}

/// The readings table and the errors pane: of `node`, or of every node
/// for `None`, naming the node in each row if `named`.
fn tables(
    snap: &Snapshot<'_>,
    node: Option<&str>,
    named: bool,
    since: i64,
) -> Result<(Vec<Row>, Vec<ErrorRow>), StoreError> {
    let recent = match node {
        Some(n) => snap.recent(n, MAX_ROWS)?,
        None => snap.recent_all(MAX_ROWS)?,
    };
    let recent = recent.into_iter().map(|r| row(r, named)).collect();
    let errors = snap
        .errors(node, None, since, MAX_ROWS)?
        .into_iter()
        .map(|e| ErrorRow {
            node: named.then_some(e.node),
            ts_ms: e.error.ts_ms,
            sensor: e.error.sensor,
            kind: e.error.kind.as_str().to_owned(),
            detail: e.error.detail,
        })
        .collect();
    Ok((recent, errors))
}

/// The liveness of `node` shown alone: its own status row's (an agent),
/// else the age of its newest reading among `panels` (a raw node behind a
/// gateway has no agent that could be "stopped").
fn picked_node(
    snap: &Snapshot<'_>,
    node: &str,
    position: usize,
    panels: &[SensorPanel],
    now_ms: i64,
) -> Result<PickedNode, StoreError> {
    let liveness = match snap.status(node)? {
        Some((agent, _)) => Liveness::Agent(agent_state(&agent, now_ms)),
        None => Liveness::LastReading(newest_age(panels.iter())),
    };
    Ok(PickedNode {
        name: node.to_owned(),
        position,
        liveness,
    })
}

/// The age of the newest reading among `panels`.
fn newest_age<'a>(panels: impl Iterator<Item = &'a SensorPanel>) -> Option<i64> {
    panels
        .filter_map(|p| p.latest.as_ref().map(|l| l.age_ms))
        .min()
}

/// An agent's liveness from its status row at `now_ms`.
fn agent_state(agent: &AgentStatus, now_ms: i64) -> AgentState {
    let age = now_ms - agent.heartbeat_ms;
    if !agent.running {
        AgentState::Stopped
    } else if age > STALE_INTERVALS * agent.interval_ms.max(1) {
        AgentState::Stale
    } else {
        AgentState::Running
    }
}

impl Header {
    /// A header for `node` before anything is known of its agent.
    fn unknown(node: String, outbox: u64) -> Self {
        Self {
            node,
            agent: AgentState::Unknown,
            heartbeat_age_ms: None,
            last_reading_age_ms: None,
            interval_ms: None,
            uptime_ms: None,
            broker: None,
            broker_error: None,
            broker_for_ms: None,
            outbox,
            log_replaced: None,
        }
    }
}

fn empty(view: View) -> State {
    State {
        view,
        header: Header::unknown(String::new(), 0),
        nodes: Vec::new(),
        picked: None,
        sensors: Vec::new(),
        selected: 0,
        history: Vec::new(),
        total: Split::default(),
        recent: Vec::new(),
        errors: Vec::new(),
        error: None,
    }
}

fn header(snap: &Snapshot<'_>, node: &str, now_ms: i64) -> Result<Header, StoreError> {
    // Every node's: a gateway publishes the readings of many; an agent's
    // log holds its own node's only.
    let mut h = Header::unknown(node.to_owned(), snap.outbox_depth_all()?);
    if let Some((agent, broker)) = snap.status(node)? {
        h.agent = agent_state(&agent, now_ms);
        h.heartbeat_age_ms = Some(now_ms - agent.heartbeat_ms);
        h.interval_ms = Some(agent.interval_ms);
        h.uptime_ms = (h.agent == AgentState::Running).then_some(now_ms - agent.started_ms);
        h.broker = Some(broker.state);
        h.broker_error = broker.error;
        h.broker_for_ms = broker.since_ms.map(|s| now_ms - s);
    }
    h.log_replaced = snap
        .log_identity()?
        .recent_replacement(now_ms)
        .map(str::to_owned);
    Ok(h)
}

/// The panels of `node`'s sensors, naming the node if `qualify`.
fn sensor_panels(
    snap: &Snapshot<'_>,
    node: &str,
    qualify: bool,
    now_ms: i64,
    since: i64,
) -> Result<Vec<SensorPanel>, StoreError> {
    let mut names = snap.sensors(node)?;
    // Sensors that only failed within the window still get a panel.
    let failing = snap.error_counts(node, since)?;
    for (s, _) in &failing {
        if !names.contains(s) {
            names.push(s.clone());
        }
    }
    names.sort();
    let unpublished = snap.unpublished_since(node, since)?;
    let count_of = |list: &[(String, u64)], sensor: &str| {
        list.iter()
            .find(|(s, _)| s == sensor)
            .map_or(0, |(_, n)| *n)
    };
    let bursting = snap
        .status(node)?
        .filter(|(agent, _)| agent.running)
        .map(|(agent, _)| agent.burst)
        .unwrap_or_default();
    let mut panels = Vec::with_capacity(names.len());
    for sensor in names {
        let latest = snap.latest(node, &sensor)?.map(|s| {
            let r = s.reading;
            Latest {
                temperature: r.sample.temperature,
                humidity: r.sample.humidity,
                age_ms: now_ms - r.ts_ms,
                weights: (r.weights.temperature, r.weights.humidity),
                priority: r.priority,
                route: r.route,
                clock_synced: r.clock_synced,
            }
        });
        let last_error = snap
            .errors(Some(node), Some(&sensor), since, 1)?
            .into_iter()
            .next()
            .map(|e| LastError {
                kind: e.error.kind.as_str().to_owned(),
                detail: e.error.detail,
                age_ms: now_ms - e.error.ts_ms,
            });
        let counts = snap.route_counts(node, &sensor, since)?;
        let split = Split {
            realtime: counts.realtime,
            batch: counts.batch,
            unpublished: count_of(&unpublished, &sensor),
        };
        panels.push(SensorPanel {
            node: qualify.then(|| node.to_owned()),
            errors: count_of(&failing, &sensor),
            burst: bursting.contains(&sensor),
            sensor,
            latest,
            split,
            last_error,
        });
    }
    Ok(panels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::fixtures::{
        GATEWAY, INTERVAL, NODE, NOW, RAW_NODES, RAW_SENSORS, SILENT_MS, Scenario, build,
        build_gateway,
    };

    fn state_of(scenario: Scenario, view: View) -> State {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build(dir.path(), scenario);
        load(&reader(&path), None, NOW, view).expect("state loads")
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
        assert_eq!(s.recent.len(), MAX_ROWS);
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
        let s = load(&reader(&path), None, NOW, View::default()).expect("state");
        assert_eq!(s.header.agent, AgentState::Stopped);
    }

    #[test]
    fn a_log_replaced_under_the_agent_shows_for_a_week() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build(dir.path(), Scenario::Live);
        assert_eq!(
            state_of(Scenario::Live, View::default())
                .header
                .log_replaced,
            None
        );
        let note = |at: i64| {
            rusqlite::Connection::open(&path)
                .expect("open")
                .execute(
                    "UPDATE log_identity SET replaced_ms = ?1, replaced = 'the log file was deleted'",
                    [at],
                )
                .expect("update");
            load(&reader(&path), None, NOW, View::default())
                .expect("state")
                .header
                .log_replaced
        };
        assert_eq!(
            note(NOW - 1_000).as_deref(),
            Some("the log file was deleted")
        );
        assert_eq!(note(NOW - crate::store::REPLACED_SHOWN_MS), None);
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
        assert!(day.history.len() <= MAX_POINTS);
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
                clock_synced: None,
            })
            .collect();
        store.insert_readings(&readings).expect("insert");
        let s = load(&reader(&path), None, NOW, View::default()).expect("state");
        assert_eq!(s.history.len(), 600);
        assert_eq!(s.header.agent, AgentState::Unknown);
        assert_eq!(s.header.node, NODE, "node taken from the readings");
    }

    /// The window's counts, from the per-minute totals plus the partial
    /// first minute, equal a plain count of the readings, wherever the
    /// window starts within a minute and after readings are deleted.
    #[test]
    fn window_counts_match_a_plain_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build(dir.path(), Scenario::Live);
        let plain = |since: i64| -> (u64, u64) {
            let c = rusqlite::Connection::open(&path).expect("open");
            let (rt, b): (i64, i64) = c
                .query_row(
                    "SELECT sum(route = 'realtime'), sum(route = 'batch') FROM readings
                     WHERE ts_ms >= ?1",
                    [since],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("count");
            (rt.try_into().expect("count"), b.try_into().expect("count"))
        };
        let check = |now: i64| {
            let s = load(&reader(&path), None, now, View::default()).expect("state");
            let want = plain(now - Window::Hour1.millis());
            assert_eq!((s.total.realtime, s.total.batch), want, "at {now}");
        };
        for offset in [0, 1, 7_499, 15_000, 29_999, 59_999, 60_000, 61_234] {
            check(NOW - offset);
        }
        // Retention-like deletes: the per-minute totals follow.
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute(
                "DELETE FROM readings WHERE ts_ms < ?1 OR (sensor = 'lab' AND seq % 3 = 0)",
                [NOW - 40 * 60_000],
            )
            .expect("delete");
        for offset in [0, 12_345, 45_000] {
            check(NOW - offset);
        }
        let minutes: i64 = rusqlite::Connection::open(&path)
            .expect("open")
            .query_row(
                "SELECT count(*) FROM readings_minute WHERE minute < ?1",
                [(NOW - 40 * 60_000) / 60_000],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(minutes, 0, "emptied minutes go");
    }

    /// The gateway's fixture log loaded with the picker on `node`.
    fn gateway(node: usize) -> State {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build_gateway(dir.path());
        let view = View {
            node,
            ..View::default()
        };
        load(&reader(&path), None, NOW, view).expect("state loads")
    }

    fn labels(s: &State) -> Vec<String> {
        s.sensors.iter().map(SensorPanel::label).collect()
    }

    #[test]
    fn an_agents_log_has_one_node_and_nothing_to_pick() {
        let s = state_of(Scenario::Live, View::default());
        assert_eq!(s.nodes, [NODE]);
        assert!(!s.names_nodes() && !s.can_pick());
        assert!(s.sensors.iter().all(|p| p.node.is_none()));
        assert!(s.recent.iter().all(|r| r.node.is_none()));
        assert_eq!(labels(&s), ["attic", "cellar", "lab"]);
        assert_eq!(
            s.picked,
            Some(PickedNode {
                name: NODE.to_owned(),
                position: 1,
                liveness: Liveness::Agent(AgentState::Running),
            })
        );
        assert_eq!(s.chosen_node(), None, "the only node, not a choice");
        // The picker has nothing to pick: any index shows the one node.
        let picked = state_of(
            Scenario::Live,
            View {
                node: 1,
                ..View::default()
            },
        );
        assert_eq!(
            State {
                view: s.view,
                ..picked
            },
            s
        );
    }

    #[test]
    fn a_gateways_log_has_a_panel_per_node_and_sensor() {
        let s = gateway(0);
        assert_eq!(s.header.node, GATEWAY, "the owner's status heads it");
        assert_eq!(s.header.agent, AgentState::Running);
        assert_eq!(s.header.heartbeat_age_ms, Some(2_000));
        assert_eq!(s.header.broker, Some(BrokerState::Connected));
        assert_eq!(s.nodes, RAW_NODES);
        assert!(s.names_nodes() && s.can_pick());
        assert_eq!(s.picked, None, "all nodes");
        let mut want = Vec::new();
        for n in RAW_NODES {
            for sensor in RAW_SENSORS {
                want.push(format!("{n}/{sensor}"));
            }
        }
        assert_eq!(labels(&s), want);
        // The last hour: 240 cycles of the live nodes' sensors, 201 (its
        // newest one 50 minutes in, the hour's first one 0 s in) of the
        // node silent for the last 10 minutes.
        assert_eq!(s.total.total(), 2 * (2 * 240 + 201));
        // Everything published but the live nodes' newest cycle, counted
        // over every node (the gateway publishes them all).
        assert_eq!(s.header.outbox, 4);
        assert_eq!(s.total.unpublished, 4);
        // Every node's readings, each row naming its node: the newest 200
        // (50 cycles of four) reach back past the silent node's last.
        let nodes: std::collections::BTreeSet<_> =
            s.recent.iter().filter_map(|r| r.node.as_deref()).collect();
        assert_eq!(nodes.into_iter().collect::<Vec<_>>(), RAW_NODES);
        assert!(s.recent.iter().all(|r| r.node.is_some()));
        assert_eq!(s.recent.len(), MAX_ROWS);
        // The chart is the selected pair's.
        assert_eq!(
            s.selected_sensor().map(SensorPanel::label).as_deref(),
            Some("esp-hall/lab")
        );
        assert_eq!(s.history.len(), 240);
    }

    #[test]
    fn the_picker_shows_one_node_and_wraps_to_all() {
        for (k, name) in RAW_NODES.into_iter().enumerate() {
            let s = gateway(k + 1);
            let picked = s.picked.as_ref().expect("one node shown");
            assert_eq!((picked.name.as_str(), picked.position), (name, k + 1));
            assert_eq!(s.chosen_node(), Some(name));
            assert_eq!(s.pick_of(name), Some(k + 1));
            assert_eq!(
                labels(&s),
                RAW_SENSORS.map(|sensor| format!("{name}/{sensor}"))
            );
            assert!(
                s.recent.iter().all(|r| r.node.as_deref() == Some(name)),
                "only {name}'s readings in the table"
            );
            let per_sensor = if k == 2 { 201 } else { 240 };
            assert_eq!(s.total.total(), 2 * per_sensor);
            assert_eq!(s.header.node, GATEWAY, "the header stays the owner's");
        }
        assert_eq!(
            gateway(RAW_NODES.len() + 1),
            State {
                view: gateway(RAW_NODES.len() + 1).view,
                ..gateway(0)
            }
        );
    }

    #[test]
    fn a_raw_node_shows_its_last_readings_age() {
        let live = gateway(1).picked.expect("esp-hall");
        assert_eq!(live.liveness, Liveness::LastReading(Some(5_000)));
        let silent = gateway(3).picked.expect("esp-shed");
        assert_eq!(silent.liveness, Liveness::LastReading(Some(SILENT_MS)));
    }

    #[test]
    fn a_picked_node_with_its_own_agent_shows_that_agent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build_gateway(dir.path());
        let mut store = Store::open(&path, crate::store::Access::Writer).expect("writer");
        let porch = AgentStatus {
            node: RAW_NODES[1].to_owned(),
            running: true,
            pid: 7,
            version: "0.1.0".to_owned(),
            started_ms: NOW - 3_600_000,
            heartbeat_ms: NOW - 60_000,
            interval_ms: INTERVAL,
            burst: Vec::new(),
        };
        store.commit_cycle(&[], &[], &porch).expect("status");
        store.mark_stopped(&porch).expect("stop");
        drop(store);
        let view = View {
            node: 2,
            ..View::default()
        };
        let s = load(&reader(&path), None, NOW, view).expect("state");
        assert_eq!(
            s.header.node, GATEWAY,
            "the newest heartbeat is the gateway's"
        );
        let picked = s.picked.expect("esp-porch");
        assert_eq!(picked.liveness, Liveness::Agent(AgentState::Stopped));
    }

    #[test]
    fn an_owner_without_a_status_row_shows_its_last_readings_age() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build_gateway(dir.path());
        let s = load(&reader(&path), Some(RAW_NODES[2]), NOW, View::default()).expect("state");
        assert_eq!(s.header.agent, AgentState::Unknown);
        assert_eq!(s.header.last_reading_age_ms, Some(SILENT_MS));
        // The gateway, with its status row, has none to show.
        assert_eq!(gateway(0).header.last_reading_age_ms, None);
    }

    fn reader(path: &std::path::Path) -> Store {
        Store::open(path, crate::store::Access::ReadOnly).expect("read-only open")
    }

    #[test]
    fn no_color_theme() {
        use std::ffi::OsStr;
        assert!(Theme::from_no_color(None).color);
        assert!(Theme::from_no_color(Some(OsStr::new(""))).color);
        assert!(!Theme::from_no_color(Some(OsStr::new("1"))).color);
    }
}
