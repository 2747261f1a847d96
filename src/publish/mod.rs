//! MQTT publishing that never loses a reading (DESIGN.md, "Data flow").
//!
//! The `SQLite` log is the outbox: a row is committed before it is
//! published, and gets `published_ms` only when the broker's PUBACK for the
//! message that carried it arrives. rumqttc neither returns packet ids from
//! `publish` nor keeps its pending queue across a clean-session reconnect,
//! so this module does not rely on it:
//!
//! - one task owns the connection; every message it publishes is queued
//!   with the rows it carries, and because rumqttc sends requests in order,
//!   each `Outgoing::Publish(pkid)` event is matched to the front of that
//!   queue; a `PubAck(pkid)` then marks exactly those rows ([`ledger`]);
//! - every connection starts from a fresh client: after a reconnect (or a
//!   restart) everything still unpublished is read from the log again and
//!   sent oldest first, at most `WINDOW` rows in flight at a time;
//! - a real-time row older than `realtime_max_age` when it finally goes out
//!   is sent on the batch topic with `"late": true`: the real-time path
//!   carries fresh events only ([`pump`]);
//! - each row goes out on the topics of its own node (`row.node`), so one
//!   publisher drains a log of many nodes (`edgeprio gateway`'s) as the
//!   agent drains its own; the status topic, its Last Will and the status
//!   row are those of the publisher's home node ([`PublisherSpec`]).
//!
//! The sensor loop never waits on any of this: `committed` only nudges the
//! task. Connection problems become the status row's broker state and a
//! log line, and the task retries with capped exponential backoff.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};

use crate::agent::{Publisher, now_ms};
use crate::clock::TakenAt;
use crate::config::{Config, MqttConfig};
use crate::domain::{Topics, WireReading, ha_discovery, ha_legacy_discovery_topic};
use crate::store::{Access, BrokerState, Store, Turns};

pub mod connection;
pub mod ledger;
pub mod pump;
pub mod resend;

pub use connection::tls_config;
use connection::{Backoff, Ended, describe, drive};
use ledger::{Ack, Ledger, Msg};
use pump::{Flush, Followed, Message, Pump};
use resend::{Outcome, ResendCounts, ResendQueue};

/// Most rows handed to the broker and not yet acknowledged (or waiting in
/// the batch buffer). Bounds memory and the resend rate after an outage:
/// new rows are read from the log as acknowledgements free the window.
const WINDOW: usize = 4_000;

/// Rows read from the log per query.
const FETCH: usize = 1_000;

/// How long a clean shutdown waits for outstanding acknowledgements.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The topic Home Assistant announces its restarts on.
const HA_STATUS: &str = "homeassistant/status";

enum Cmd {
    Committed,
    Close(oneshot::Sender<()>),
}

/// The publisher of a log's outbox over MQTT (the agent's, or a gateway's); see
/// the module docs.
pub struct MqttPublisher {
    /// The task's inbox: commits nudge it, a stop closes it.
    tx: mpsc::UnboundedSender<Cmd>,
    /// The task's context and inbox until `ready` starts it.
    pending: Option<(Ctx, mpsc::UnboundedReceiver<Cmd>)>,
    /// The running task, aborted if a stop outlasts its grace.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Shared with the agent, which records into it.
    taken: TakenAt,
    /// Bumped when the agent follows its log to a new file: the task's
    /// connection is then to the old one.
    log_epoch: Arc<AtomicU64>,
}

impl MqttPublisher {
    /// Also exports the broker state to `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        if let Some((ctx, _)) = &mut self.pending {
            ctx.metrics = Some(metrics.clone());
            ctx.resend_counts = metrics.resend_counts();
        }
        self
    }

    /// The agent's publisher for `mqtt`: home node, log and the sensors
    /// announced to Home Assistant from `config`. Its task starts (on the
    /// current tokio runtime) when the agent says the log is ready.
    pub fn new(config: &Config, mqtt: &MqttConfig) -> Self {
        Self::from_spec(PublisherSpec::of_agent(config, mqtt))
    }

    /// A publisher for what `spec` says: the outbox of its log, every
    /// node's rows on that node's topics. Its task starts (on the current
    /// tokio runtime) at [`Publisher::ready`].
    pub fn from_spec(spec: PublisherSpec) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let taken = TakenAt::of_log(&spec.db);
        let ctx = Ctx {
            topics: Topics::new(&spec.mqtt.topic_prefix, &spec.home_node),
            node: spec.home_node,
            mqtt: spec.mqtt,
            db: spec.db,
            sensors: spec.announce,
            expire_after_s: spec.expire_after_s,
            every_node: spec.every_node,
            turns: spec.turns,
            store: Arc::new(Mutex::new(None)),
            log_epoch: Arc::new(AtomicU64::new(0)),
            metrics: None,
            taken: taken.clone(),
            outbox_trouble: OutboxTrouble::default(),
            resend_counts: Arc::default(),
        };
        Self {
            tx,
            log_epoch: ctx.log_epoch.clone(),
            pending: Some((ctx, rx)),
            task: None,
            taken,
        }
    }
}

/// What a publisher needs, spelled out: the agent's comes from its config
/// ([`PublisherSpec::of_agent`]); the gateway, which announces nothing to
/// Home Assistant and logs the readings of many nodes, builds its own.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    /// The node the publisher runs as: its status topic and Last Will, and
    /// the status row its broker state and counters go to. The readings'
    /// topics come from each row's own node.
    pub home_node: String,
    /// The log whose outbox it drains.
    pub db: PathBuf,
    /// The broker, credentials, topic prefix and batching.
    pub mqtt: MqttConfig,
    /// The sensors of the home node announced to Home Assistant (when
    /// `mqtt.ha_discovery`), with the model its device page shows.
    pub announce: Vec<(String, &'static str)>,
    /// How long Home Assistant shows a sensor's value without an update.
    pub expire_after_s: u64,
    /// Drain the outbox of every node in the log (a gateway's), not only
    /// the home node's (an agent's log holds no other: its outbox is read
    /// through the outbox index as it always was).
    pub every_node: bool,
    /// Write turns shared with the process's other writer of the log (the
    /// gateway's consumer, which commits back to back: see
    /// [`crate::store::Turns`]); `None` for the agent, which commits once
    /// a cycle.
    pub turns: Option<Arc<Turns>>,
}

impl PublisherSpec {
    /// A gateway's: every node's outbox, nothing announced to Home
    /// Assistant.
    pub fn of_gateway(config: &Config, mqtt: &MqttConfig, turns: Arc<Turns>) -> Self {
        Self {
            announce: Vec::new(),
            every_node: true,
            turns: Some(turns),
            ..Self::of_agent(config, mqtt)
        }
    }

    /// The agent's: its node, log and configured sensors; values expire
    /// after three intervals, rounded up to whole seconds.
    pub fn of_agent(config: &Config, mqtt: &MqttConfig) -> Self {
        Self {
            home_node: config.node.clone(),
            db: config.db.clone(),
            mqtt: mqtt.clone(),
            announce: config
                .sensors
                .iter()
                .map(|s| (s.id.clone(), s.kind.model()))
                .collect(),
            expire_after_s: config
                .interval
                .saturating_mul(3)
                .as_millis()
                .div_ceil(1000)
                .try_into()
                .unwrap_or(u64::MAX)
                .max(1),
            every_node: false,
            turns: None,
        }
    }
}

impl Publisher for MqttPublisher {
    fn ready(&mut self) {
        if let Some((ctx, rx)) = self.pending.take() {
            self.task = Some(tokio::spawn(run(ctx, rx)));
        }
    }

    fn taken(&self) -> Option<TakenAt> {
        Some(self.taken.clone())
    }

    fn committed(&mut self, _readings: &[crate::domain::Reading]) {
        // The task reads the rows from the log itself: nothing to copy.
        let _ = self.tx.send(Cmd::Committed);
    }

    fn log_reopened(&mut self) {
        self.taken.forget_all();
        self.log_epoch.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(Cmd::Committed);
    }

    async fn close(self) {
        let Some(task) = self.task else { return };
        let (done, wait) = oneshot::channel();
        if self.tx.send(Cmd::Close(done)).is_ok() {
            let _ = tokio::time::timeout(CLOSE_GRACE * 2, wait).await;
        }
        task.abort();
    }
}

/// What the task knows, shared by its sessions.
struct Ctx {
    /// The home node: the status row the broker state goes to, and the
    /// node Home Assistant's devices are announced for.
    node: String,
    /// The home node's topics: `status` and its Last Will, discovery.
    topics: Topics,
    /// The broker and what to publish how.
    mqtt: MqttConfig,
    /// The log whose outbox is drained.
    db: PathBuf,
    /// The sensors announced to Home Assistant, with the model it shows
    /// for each (its device page says what is on the other end).
    sensors: Vec<(String, &'static str)>,
    /// Home Assistant's `expire_after` for the announced sensors.
    expire_after_s: u64,
    /// See [`PublisherSpec::every_node`].
    every_node: bool,
    /// See [`PublisherSpec::turns`].
    turns: Option<Arc<Turns>>,
    /// The outbox connection, opened on first use (the agent creates and
    /// migrates the file before the first commit), with the `log_epoch` it
    /// was opened in.
    store: Arc<Mutex<Option<(Store, u64)>>>,
    /// Bumped by [`MqttPublisher::log_reopened`]; only then is the path
    /// opened again (before, a new file there may not be a log yet).
    log_epoch: Arc<AtomicU64>,
    /// Where the broker state is exported, if metrics are on.
    metrics: Option<crate::metrics::Metrics>,
    /// Why the outbox cannot be read, as last reported.
    outbox_trouble: OutboxTrouble,
    /// When each reading was taken, on the monotonic clock: how long a
    /// row has waited (for `late` and the batch flush) is measured on it.
    taken: TakenAt,
    /// What the resends served count, shared with the metrics.
    resend_counts: Arc<ResendCounts>,
}

/// Reports a failing outbox read once, not at every retry, and says when
/// it reads again: a damaged log fails every read the same way.
#[derive(Default)]
struct OutboxTrouble(Mutex<Option<String>>);

impl OutboxTrouble {
    /// The rows of a successful read; a failed one is logged if its error
    /// is new.
    fn read<T>(&self, read: Result<T, String>) -> Option<T> {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match read {
            Ok(rows) => {
                if last.take().is_some() {
                    tracing::info!("the outbox can be read again; publishing resumes");
                }
                Some(rows)
            }
            Err(e) => {
                if last.as_deref() != Some(e.as_str()) {
                    tracing::error!(
                        "cannot read the outbox, nothing is published until it can be read \
                         (retried every 200 ms, said once): {e}"
                    );
                    *last = Some(e);
                }
                None
            }
        }
    }
}

impl Ctx {
    /// What the publisher subscribes to for resend requests: its node's
    /// topic, or every node's for a gateway.
    fn resend_filter(&self) -> String {
        if self.every_node {
            Topics::every_node(&self.mqtt.topic_prefix, Topics::RESEND)
        } else {
            self.topics.resend()
        }
    }

    /// Whether a message came on a resend topic of the publisher's.
    fn is_resend(&self, topic: &str) -> bool {
        topic.ends_with("/resend")
            && topic
                .strip_prefix(self.mqtt.topic_prefix.as_str())
                .is_some_and(|t| t.starts_with('/'))
    }

    /// Runs `f` on the outbox connection, off the async runtime.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.store.clone();
        let db = self.db.clone();
        let turns = self.turns.clone();
        let epoch = self.log_epoch.load(Ordering::SeqCst);
        tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().unwrap_or_else(PoisonError::into_inner);
            if guard.as_ref().is_none_or(|(_, e)| *e != epoch) {
                // The old connection closes before the path is opened again.
                *guard = None;
                let mut s = Store::open(&db, Access::Outbox).map_err(|e| e.to_string())?;
                if let Some(turns) = turns {
                    s.take_turns_with(turns).map_err(|e| e.to_string())?;
                }
                *guard = Some((s, epoch));
            }
            let (s, _) = guard.as_mut().expect("opened just above");
            f(s).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the database thread failed: {e}"))?
    }

    async fn set_state(&self, state: BrokerState, error: Option<String>) {
        if let Some(m) = &self.metrics {
            m.set_broker(state);
        }
        let node = self.node.clone();
        let since = now_ms();
        if let Err(e) = self
            .with_store(move |s| s.set_broker(&node, state, error.as_deref(), since))
            .await
        {
            tracing::warn!("cannot record the broker state in the log: {e}");
        }
    }
}

async fn run(ctx: Ctx, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut backoff = Backoff::new();
    loop {
        ctx.set_state(BrokerState::Connecting, None).await;
        let pause = match session(&ctx, &mut rx).await {
            Ended::Closed => return,
            Ended::Lost {
                error,
                was_connected,
            } => {
                let pause = backoff.after(was_connected);
                tracing::warn!(
                    broker = %ctx.mqtt.url,
                    retry_in = %humantime::format_duration(pause),
                    "MQTT: {error}; readings stay in the local log and are sent once the broker is back"
                );
                ctx.set_state(BrokerState::Disconnected, Some(error)).await;
                pause
            }
        };
        let pause = tokio::time::sleep(pause);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Committed) => {}
                    Some(Cmd::Close(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }
}

/// The publisher's connection options: a clean session (the log, not the
/// broker, keeps what is unpublished) with the node's Last Will.
fn options(ctx: &Ctx) -> Result<MqttOptions, String> {
    let mut o = connection::client_options(
        &ctx.mqtt,
        &ctx.mqtt.client_id,
        Some(LastWill::new(
            ctx.topics.status(),
            "offline",
            QoS::AtLeastOnce,
            true,
        )),
    )?;
    o.set_clean_session(true);
    o.set_inflight(200);
    Ok(o)
}

/// Waits for the CONNACK. `Ok` carries a stop request that arrived
/// meanwhile (the session then drains and closes); `Err` is how the session
/// ends without a connection.
async fn connack(
    ctx: &Ctx,
    events: &mut mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
) -> Result<Option<oneshot::Sender<()>>, Ended> {
    // Wait for the CONNACK (or the failure). A stop that arrives meanwhile
    // still gets its chance to drain the outbox: it waits (bounded) for the
    // connection, then closes as usual.
    let mut closing: Option<oneshot::Sender<()>> = None;
    let give_up = tokio::time::sleep(CLOSE_GRACE);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(closing),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if let Some(done) = closing.take() {
                        let _ = done.send(());
                        return Err(Ended::Closed);
                    }
                    return Err(Ended::Lost {
                        error: describe(&e, &ctx.mqtt),
                        was_connected: false,
                    });
                }
                None => {
                    return Err(Ended::Lost {
                        error: "the MQTT event loop stopped".into(),
                        was_connected: false,
                    });
                }
            },
            cmd = rx.recv(), if closing.is_none() => match cmd {
                Some(Cmd::Committed) => {}
                Some(Cmd::Close(done)) => {
                    closing = Some(done);
                    give_up.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                None => return Err(Ended::Closed),
            },
            () = &mut give_up, if closing.is_some() => {
                if let Some(done) = closing.take() {
                    let _ = done.send(());
                }
                return Err(Ended::Closed);
            }
        }
    }
}

async fn session(ctx: &Ctx, rx: &mut mpsc::UnboundedReceiver<Cmd>) -> Ended {
    let lost = |error: String, was_connected| Ended::Lost {
        error,
        was_connected,
    };
    let opts = match options(ctx) {
        Ok(o) => o,
        Err(e) => return lost(e, false),
    };
    let (client, eventloop) = AsyncClient::new(opts, 512);
    let (mut events, _driver) = drive(eventloop, None);
    let mut closing = match connack(ctx, &mut events, rx).await {
        Ok(closing) => closing,
        Err(ended) => return ended,
    };
    tracing::info!(broker = %ctx.mqtt.url, "MQTT connected");
    ctx.set_state(BrokerState::Connected, None).await;
    let mut s = Session::new(client, ctx);
    let started = async {
        s.control(&ctx.topics.status(), "online".into(), true)
            .await?;
        s.client
            .subscribe(ctx.resend_filter(), QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
        if ctx.mqtt.ha_discovery {
            // Home Assistant's restarts, and whatever 0.1 left retained at
            // the old device-based topics (cleared on arrival, see
            // `on_event`).
            let legacy = ctx
                .sensors
                .iter()
                .map(|(s, _)| ha_legacy_discovery_topic(&ctx.node, s));
            for topic in std::iter::once(HA_STATUS.to_owned()).chain(legacy) {
                s.client
                    .subscribe(topic, QoS::AtLeastOnce)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            s.announce(ctx).await?;
        }
        s.pump(ctx).await
    };
    if let Err(e) = started.await {
        if let Some(done) = closing.take() {
            let _ = done.send(());
            return Ended::Closed;
        }
        return lost(e, true);
    }
    if let Some(done) = closing.take() {
        s.close(ctx, &mut events).await;
        let _ = done.send(());
        return Ended::Closed;
    }
    let mut tick = tokio::time::interval(pump::TICK);
    loop {
        let step: Result<(), String> = tokio::select! {
            ev = events.recv() => match ev {
                Some(Ok(ev)) => s.on_event(ctx, ev).await,
                Some(Err(e)) => Err(describe(&e, &ctx.mqtt)),
                None => Err("the MQTT event loop stopped".into()),
            },
            cmd = rx.recv() => match cmd {
                Some(Cmd::Committed) => s.pump(ctx).await,
                Some(Cmd::Close(done)) => {
                    s.close(ctx, &mut events).await;
                    let _ = done.send(());
                    return Ended::Closed;
                }
                None => return Ended::Closed,
            },
            _ = tick.tick() => async {
                s.flush_acks(ctx).await;
                s.flush_batch(Flush::Due).await?;
                s.pump(ctx).await?;
                s.serve_resends(ctx).await
            }.await,
        };
        if let Err(e) = step {
            // Acknowledged rows are marked before the session is dropped;
            // the rest are sent again by the next session.
            s.flush_acks(ctx).await;
            // A send fails because the event loop died: its error says why.
            let cause = std::iter::from_fn(|| events.try_recv().ok())
                .find_map(Result::err)
                .map_or(e, |err| describe(&err, &ctx.mqtt));
            return lost(cause, true);
        }
    }
}

/// Whether `topic` is where edgeprio 0.1 announced one of this node's
/// sensors to Home Assistant.
fn is_legacy(ctx: &Ctx, topic: &str) -> bool {
    ctx.sensors
        .iter()
        .any(|(s, _)| ha_legacy_discovery_topic(&ctx.node, s) == topic)
}

/// One connection: moves bytes between the client, the ledger, the pump
/// and the log.
struct Session {
    /// This connection's client: every message goes through it, in order.
    client: AsyncClient,
    /// Which rows each packet id carries.
    ledger: Ledger,
    /// Rows into messages, with the batch buffers.
    pump: Pump,
    /// Rows read from the outbox since memory was last given back.
    read_since_release: u64,
    /// Consumers' resend requests, waiting (they are the broker's again
    /// after a reconnect: consumers ask again).
    resends: ResendQueue,
}

impl Session {
    fn new(client: AsyncClient, ctx: &Ctx) -> Self {
        Self {
            client,
            ledger: Ledger::new(WINDOW),
            pump: Pump::new(&ctx.mqtt, ctx.taken.clone()),
            read_since_release: 0,
            resends: ResendQueue::new(ctx.mqtt.resend_rate, ctx.resend_counts.clone()),
        }
    }

    /// Once a large backlog has drained (the outbox empty, next to nothing
    /// in flight or waiting in a batch buffer), gives back what it grew:
    /// the buffers sized for the window and the outbox connection's page
    /// cache.
    async fn release_after_drain(&mut self, ctx: &Ctx) {
        if self.ledger.window() >= crate::store::DRAINED_BELOW
            || self.read_since_release < crate::store::DRAINED_FROM
        {
            return;
        }
        self.read_since_release = 0;
        self.ledger.shrink_to_fit();
        self.pump.shrink_to_fit();
        let _ = ctx
            .with_store(|s| {
                s.release_memory();
                Ok(())
            })
            .await;
        tracing::debug!("outbox drained: released its memory");
    }

    async fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        msg: Msg,
    ) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|e| format!("publish failed: {e}"))?;
        self.ledger.handed(msg);
        Ok(())
    }

    /// Publishes the pump's messages, in order.
    async fn send(&mut self, out: Vec<Message>) -> Result<(), String> {
        for m in out {
            self.publish(&m.topic, m.payload, m.retain, m.msg).await?;
        }
        Ok(())
    }

    async fn control(&mut self, topic: &str, payload: String, retain: bool) -> Result<(), String> {
        self.publish(topic, payload.into_bytes(), retain, Msg { rows: None })
            .await
    }

    async fn announce(&mut self, ctx: &Ctx) -> Result<(), String> {
        for (sensor, model) in &ctx.sensors {
            let configs = ha_discovery(
                &ctx.topics,
                &ctx.node,
                sensor,
                model,
                ctx.expire_after_s,
                env!("CARGO_PKG_VERSION"),
            );
            for (topic, payload) in configs {
                self.control(&topic, payload.to_string(), true).await?;
            }
        }
        tracing::info!(
            sensors = ctx.sensors.len(),
            "announced the sensors to Home Assistant"
        );
        Ok(())
    }

    async fn on_event(&mut self, ctx: &Ctx, ev: Event) -> Result<(), String> {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.ledger.sent(pkid).map_err(|e| e.to_string())?;
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Ack::Rows(_) = self.ledger.acked(ack.pkid, now_ms()) {
                    if self.ledger.pending_acks() >= 256 {
                        self.flush_acks(ctx).await;
                    }
                    self.pump(ctx).await?;
                }
            }
            Event::Incoming(Packet::Publish(p)) if ctx.is_resend(&p.topic) => {
                self.offer_resend(ctx, &p.topic, &p.payload);
            }
            Event::Incoming(Packet::Publish(p))
                if p.topic == HA_STATUS && p.payload.as_ref() == b"online" =>
            {
                self.announce(ctx).await?;
            }
            // A retained 0.1 device config (the subscription only matches
            // this node's sensors): an empty retained message deletes it
            // from the broker and makes Home Assistant forget it. Our own
            // empty message comes back too and is left alone.
            Event::Incoming(Packet::Publish(p))
                if ctx.mqtt.ha_discovery && !p.payload.is_empty() && is_legacy(ctx, &p.topic) =>
            {
                tracing::info!(topic = %p.topic, "clearing the discovery config of edgeprio 0.1");
                self.control(&p.topic, String::new(), true).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Queues a consumer's resend request (or counts why not).
    fn offer_resend(&mut self, ctx: &Ctx, topic: &str, payload: &[u8]) {
        let node = match Topics::node_of(&ctx.mqtt.topic_prefix, topic, Topics::RESEND) {
            Ok(node) if ctx.every_node || node == ctx.node => node,
            _ => {
                ctx.resend_counts.count(Outcome::Unknown);
                return;
            }
        };
        match crate::domain::parse_resend(payload) {
            // A gateway hears every node's requests: those for another
            // log (an agent's) are not its to serve, nor to queue.
            Ok(request) if ctx.every_node && self.pump.log().is_some_and(|l| l != request.log) => {
                ctx.resend_counts.count(Outcome::OtherLog);
            }
            Ok(request) => {
                self.resends.offer(node, &request);
            }
            Err(e) => {
                ctx.resend_counts.count(Outcome::Invalid);
                tracing::debug!(topic, "refused a resend request: {e}");
            }
        }
    }

    /// Serves what the rate allows of the queued resend requests: each
    /// chunk's published rows again on its node's batch topic, `"resent":
    /// true`, and a reply on its resend reply topic for what is gone or
    /// still in the outbox. Called on the tick, after the outbox.
    async fn serve_resends(&mut self, ctx: &Ctx) -> Result<(), String> {
        let max = crate::domain::RESEND_SPAN.min(ctx.mqtt.batch_max as u64 * 10);
        while let Some(chunk) = self.resends.next(tokio::time::Instant::now(), max) {
            let (node, sensor) = (chunk.node.clone(), chunk.sensor.clone());
            let (from, to) = (chunk.from, chunk.to);
            let read = ctx
                .with_store(move |s| Ok((s.resend_rows(&node, &sensor, from, to)?, s.log_id()?)))
                .await;
            let Some((rows, log)) = ctx.outbox_trouble.read(read) else {
                self.resends.spent(0);
                break;
            };
            let topics = Topics::new(&ctx.mqtt.topic_prefix, &chunk.node);
            let reply = if log != chunk.log {
                self.resends.spent(0);
                ctx.resend_counts.count(Outcome::OtherLog);
                if ctx.every_node {
                    // Another log's seqs, of a node this gateway also
                    // relays for: its own writer answers.
                    continue;
                }
                // The agent is its node's only writer: a log it no longer
                // writes (deleted, replaced, restored) is gone.
                chunk.all_gone()
            } else if rows.highest.is_none() {
                self.resends.spent(0);
                ctx.resend_counts.count(Outcome::Unknown);
                continue;
            } else {
                let (published, pending): (Vec<_>, Vec<_>) =
                    rows.rows.iter().partition(|r| r.published_ms.is_some());
                for part in published.chunks(ctx.mqtt.batch_max.max(1)) {
                    let wire: Vec<WireReading<'_>> = part
                        .iter()
                        .map(|r| WireReading {
                            resent: true,
                            ..WireReading::new(&r.reading, log)
                        })
                        .collect();
                    let payload = serde_json::to_vec(&wire).map_err(|e| e.to_string())?;
                    self.publish(&topics.batch(), payload, false, Msg { rows: None })
                        .await?;
                }
                let resent: Vec<u64> = published.iter().map(|r| r.reading.seq).collect();
                let pending: Vec<u64> = pending.iter().map(|r| r.reading.seq).collect();
                self.resends.spent(resent.len() as u64);
                ctx.resend_counts
                    .resent
                    .fetch_add(resent.len() as u64, Ordering::Relaxed);
                chunk.reply(&resent, &pending, rows.highest)
            };
            if reply.gone.is_empty() && reply.pending.is_empty() {
                continue;
            }
            let gone: u64 = reply.gone.iter().map(|[a, b]| b - a + 1).sum();
            ctx.resend_counts.gone.fetch_add(gone, Ordering::Relaxed);
            let payload = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
            self.publish(&topics.resend_reply(), payload, false, Msg { rows: None })
                .await?;
        }
        Ok(())
    }

    /// Marks acknowledged rows in the log.
    async fn flush_acks(&mut self, ctx: &Ctx) {
        if self.ledger.pending_acks() == 0 {
            return;
        }
        let acks = self.ledger.take_acks();
        let node = ctx.node.clone();
        let log = self.pump.log();
        let taken = self.pump.taken().clone();
        if let Err(e) = ctx
            .with_store(move |s| {
                // Acknowledged rows of a log the agent has left: their ids
                // name other rows in this one.
                if Some(s.log_id()?) != log {
                    return Ok(());
                }
                // No one asks how long a published reading waited: a
                // gateway ages every reading it relays, and would keep
                // thousands per stream otherwise.
                s.mark_published_with(&node, &acks, &mut |node, sensor, seq| {
                    taken.forget(node, sensor, seq);
                })
            })
            .await
        {
            // The rows stay unpublished and are sent again: duplicates,
            // never losses.
            tracing::error!("cannot mark acknowledged readings in the log: {e}");
        }
    }

    /// Reads unpublished rows (of the home node, or of every node) from the log while the
    /// window has room, and sends what the pump makes of them.
    async fn pump(&mut self, ctx: &Ctx) -> Result<(), String> {
        while self.ledger.to_read() > 0 {
            let after = self.pump.after();
            let limit = FETCH.min(self.ledger.to_read());
            let home = (!ctx.every_node).then(|| ctx.node.clone());
            let read = ctx
                .with_store(move |s| {
                    let rows = match &home {
                        Some(node) => s.outbox(node, after, limit)?,
                        None => s.outbox_of_all(after, limit)?,
                    };
                    Ok((rows, s.log_id()?))
                })
                .await;
            // The log's trouble is not the broker's: the session stays up,
            // and the next tick or commit tries again.
            let Some((rows, log)) = ctx.outbox_trouble.read(read) else {
                break;
            };
            if self.pump.follow(log) == Followed::Changed {
                self.ledger.forget_log();
                // Read again from the new log's start.
                continue;
            }
            let Some(last) = rows.last_id else {
                self.release_after_drain(ctx).await;
                break;
            };
            let rows = rows.rows;
            tracing::trace!(
                rows = rows.len(),
                after,
                window = self.ledger.window(),
                "read the outbox"
            );
            self.read_since_release += rows.len() as u64;
            self.ledger.reserve(rows.len());
            let mut out = Vec::new();
            self.pump
                .take(last, rows, &mut out)
                .map_err(|e| e.to_string())?;
            self.pump
                .flush(Flush::Full, &mut out)
                .map_err(|e| e.to_string())?;
            self.send(out).await?;
        }
        Ok(())
    }

    /// Sends what `what` says of the batch buffers.
    async fn flush_batch(&mut self, what: Flush) -> Result<(), String> {
        let mut out = Vec::new();
        self.pump.flush(what, &mut out).map_err(|e| e.to_string())?;
        self.send(out).await
    }

    /// A clean stop: send the batch buffers, wait (briefly) for the broker
    /// to acknowledge what is in flight, mark it, then say `offline`.
    async fn close(
        &mut self,
        ctx: &Ctx,
        events: &mut mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    ) {
        let _ = self.pump(ctx).await;
        let _ = self.flush_batch(Flush::All).await;
        let _ = self
            .control(&ctx.topics.status(), "offline".into(), true)
            .await;
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        while !self.ledger.settled() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Ok(ev))) => {
                    // No new rows during a stop: only bookkeeping.
                    match ev {
                        Event::Outgoing(Outgoing::Publish(pkid)) => {
                            // A publish the ledger did not hand out takes no
                            // rows with it: nothing of it to wait for.
                            let _ = self.ledger.sent(pkid);
                        }
                        Event::Incoming(Packet::PubAck(ack)) => {
                            self.ledger.acked(ack.pkid, now_ms());
                        }
                        _ => {}
                    }
                }
                _ => break,
            }
        }
        self.flush_acks(ctx).await;
        let _ = self.client.disconnect().await;
        // Let the DISCONNECT reach the wire before the driver is dropped.
        let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
        ctx.set_state(BrokerState::Disconnected, Some("agent stopped".into()))
            .await;
    }
}

/// The publisher a config asks for: MQTT when `[mqtt]` (or `[broker]`) is
/// set, otherwise none (rows stay in the outbox).
pub enum AnyPublisher {
    /// Publishing over MQTT.
    Mqtt(Box<MqttPublisher>),
    /// No broker configured.
    Unpublished(crate::agent::Unpublished),
}

impl AnyPublisher {
    /// Starts the publisher `config` asks for (on the current runtime).
    pub fn for_config(config: &Config) -> Self {
        match &config.mqtt {
            Some(m) => AnyPublisher::Mqtt(Box::new(MqttPublisher::new(config, m))),
            None => AnyPublisher::Unpublished(crate::agent::Unpublished),
        }
    }

    /// Also exports the broker state to `metrics`.
    #[must_use]
    pub fn with_metrics(self, metrics: &crate::metrics::Metrics) -> Self {
        match self {
            AnyPublisher::Mqtt(p) => AnyPublisher::Mqtt(Box::new(p.with_metrics(metrics))),
            other @ AnyPublisher::Unpublished(_) => other,
        }
    }
}

impl Publisher for AnyPublisher {
    fn ready(&mut self) {
        match self {
            AnyPublisher::Mqtt(p) => p.ready(),
            AnyPublisher::Unpublished(p) => p.ready(),
        }
    }

    fn taken(&self) -> Option<TakenAt> {
        match self {
            AnyPublisher::Mqtt(p) => p.taken(),
            AnyPublisher::Unpublished(p) => p.taken(),
        }
    }

    fn committed(&mut self, readings: &[crate::domain::Reading]) {
        match self {
            AnyPublisher::Mqtt(p) => p.committed(readings),
            AnyPublisher::Unpublished(p) => p.committed(readings),
        }
    }

    fn log_reopened(&mut self) {
        match self {
            AnyPublisher::Mqtt(p) => p.log_reopened(),
            AnyPublisher::Unpublished(p) => p.log_reopened(),
        }
    }

    async fn close(self) {
        match self {
            AnyPublisher::Mqtt(p) => (*p).close().await,
            AnyPublisher::Unpublished(p) => p.close().await,
        }
    }
}
