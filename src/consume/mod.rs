//! The committing MQTT consumer `edgeprio gateway` and `edgeprio collect`
//! share: at least once, end to end.
//!
//! - a persistent session (clean session off, a stable client id) and `QoS` 1,
//!   so the broker keeps what this consumer has not acknowledged, also while
//!   it is away; the filters are subscribed again at every connection, in
//!   case the broker lost the session;
//! - manual acknowledgements, sent only once the [`Handler`] has committed
//!   what a message carried, in receive order (MQTT 3.1.1, 4.6): after a
//!   crash (`kill -9`) the broker delivers the unacknowledged messages again
//!   (with the dup flag), so the handler must be idempotent, as the sinks
//!   and the gateway's log are on the reading's key;
//! - messages are handed over in batches ([`batch`], a pure policy), bounded
//!   by the broker's in-flight limit; a handler failure (the database is
//!   down) acknowledges nothing, and the batch is retried with backoff on
//!   the same connection: the broker stops sending past its in-flight limit,
//!   which is the back-pressure wanted, and the consumer stops reading past
//!   its own read-ahead bound ([`Intake`], 1,024 messages or two batches)
//!   for a broker that does not stop;
//! - a malformed message is acknowledged too, once the handler says so
//!   ([`Verdict::Rejected`]): it will never become valid, and holding it
//!   would stall the stream;
//! - connection problems are log lines and [`ConnectionStatus`], never a
//!   crash; reconnects back off like the publisher's.
//!
//! # What rumqttc and Mosquitto do (measured, tests/consume.rs)
//!
//! With Mosquitto 2.0.11 (Debian 12) and rumqttc 0.25's v4 client:
//!
//! - a handler that keeps failing gets exactly 20 messages (Mosquitto's
//!   default `max_inflight_messages`) and then nothing more: nothing was
//!   acknowledged, and the broker waits;
//! - once acknowledgements flow, it does not hold that limit: with
//!   `max_inflight_messages 1000`, 52,000 messages were in flight to a
//!   flooded gateway (measured in `cargo bench --bench gateway`), hence the
//!   consumer's own bound ([`Intake`]);
//! - a consumer dropped then (the connection just closes) and started again
//!   under the same client id gets those 20 again at once, flagged dup, then
//!   the rest of the queue, in publish order;
//! - an acknowledgement only means something on the connection the message
//!   came on (rumqttc keeps no record of incoming packet ids with manual
//!   acknowledgements): every connection here starts from a fresh client,
//!   and messages of a lost connection are still committed but not
//!   acknowledged; the broker delivers them again on the next connection;
//! - a clean stop must wait for the broker to close the connection after
//!   the DISCONNECT (see `close`), or the last acknowledgements can be lost
//!   to a quick restart under the same client id.
//!
//! # Troubleshooting
//!
//! - The connection drops again and again with "payload size limit
//!   exceeded" in the log: rumqttc closes the connection on a packet over
//!   the client's 4 MiB limit ([`connection::client_options`]) before it
//!   can be acknowledged, so the broker delivers it again at every
//!   reconnect (read in rumqttc 0.25's source, not measured). Cap the
//!   broker's `message_size_limit` below that.
//! - Two consumers that disconnect each other ("already connected, closing
//!   old connection" in Mosquitto's log): they share a client id; every
//!   consumer, also in a shared group, needs its own.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};

use crate::agent::now_ms;
use crate::config::MqttConfig;
use crate::publish::connection::{self, Backoff, Ended, Intake, describe, drive};
use crate::store::BrokerState;

pub mod batch;

pub use batch::{BatchLimits, Batcher};

/// Backoff between attempts to hand a failed batch over again.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

/// How long a clean stop waits for the DISCONNECT (and the acknowledgements
/// queued before it) to reach the wire.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Requests (acknowledgements, the subscription) queued for the event loop.
const REQUESTS: usize = 256;

/// The fewest messages a consumer reads ahead of its acknowledgements
/// ([`Intake`]): twice its batch, so the next batch fills while one
/// commits, and at least this many.
const READ_AHEAD: usize = 1024;

/// One message received, handed to the [`Handler`].
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The packet as received: its topic and payload, and the packet id and
    /// `QoS` its acknowledgement needs.
    publish: Publish,
    /// When it was received (Unix ms).
    received_ms: i64,
    /// Which connection it came on: an acknowledgement is sent only on that
    /// one.
    connection: u64,
}

impl Incoming {
    /// The topic it was published on (never a filter, also for a shared
    /// subscription).
    pub fn topic(&self) -> &str {
        &self.publish.topic
    }

    /// The payload, as received.
    pub fn payload(&self) -> &[u8] {
        &self.publish.payload
    }

    /// When it was received (Unix ms).
    pub fn received_ms(&self) -> i64 {
        self.received_ms
    }

    /// Whether the broker flagged it as a redelivery (dup): it may be
    /// committed already.
    pub fn redelivered(&self) -> bool {
        self.publish.dup
    }
}

/// What the handler made of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Committed.
    Accepted,
    /// Malformed: never committed, acknowledged all the same (it will never
    /// become valid). The reason is logged with the topic, at most once per
    /// [`Throttle::EVERY`] per kind (a stable label such as `json`), with
    /// how many went unsaid.
    Rejected {
        /// The stable label of what was wrong, for the throttle and the
        /// metrics.
        kind: &'static str,
        /// What was wrong, in words.
        reason: String,
    },
}

/// What a [`Handler::handle`] call did, one [`Verdict`] per message of the
/// batch, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Index `i` is the verdict on the batch's message `i`.
    verdicts: Vec<Verdict>,
}

impl Handled {
    /// Every message of `batch` accepted; [`Handled::reject`] marks the
    /// malformed ones.
    pub fn all(batch: &[Incoming]) -> Self {
        Self {
            verdicts: vec![Verdict::Accepted; batch.len()],
        }
    }

    /// Marks message `index` of the batch as rejected, for `reason`, of
    /// kind `kind` (a stable label: `json`, `range`...).
    pub fn reject(&mut self, index: usize, kind: &'static str, reason: impl Into<String>) {
        if let Some(v) = self.verdicts.get_mut(index) {
            *v = Verdict::Rejected {
                kind,
                reason: reason.into(),
            };
        }
    }

    /// The verdicts, in the batch's order.
    pub fn verdicts(&self) -> &[Verdict] {
        &self.verdicts
    }
}

/// Why a handler could not commit a batch (the database is down, full,
/// refuses): nothing of the batch is acknowledged, and it is handed over
/// again after a backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(String);

impl HandlerError {
    /// An error saying `what` went wrong.
    pub fn new(what: impl fmt::Display) -> Self {
        Self(what.to_string())
    }
}

impl From<crate::collect::SinkError> for HandlerError {
    fn from(e: crate::collect::SinkError) -> Self {
        Self::new(e)
    }
}

impl From<crate::store::StoreError> for HandlerError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::new(e)
    }
}

/// What a command does with the messages it consumes: commit them.
pub trait Handler: Send {
    /// Commits what `batch` carries (in receive order) and says, per
    /// message, whether it was accepted or rejected as malformed. `Ok`
    /// means every accepted message is durable: the batch is acknowledged
    /// then. `Err` acknowledges nothing; the same batch comes again later,
    /// so a handler may see a message twice (and redeliveries after a
    /// crash anyway): commit idempotently.
    fn handle(
        &mut self,
        batch: &[Incoming],
    ) -> impl Future<Output = Result<Handled, HandlerError>> + Send;

    /// How many readings `message` carries, for
    /// [`BatchLimits::max_readings`]; one unless the handler knows better
    /// (a batch-route message is an array).
    fn readings(&self, message: &Incoming) -> usize {
        let _ = message;
        1
    }
}

/// What the consumer subscribes to, and how.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The MQTT client id: the broker keeps the persistent session under
    /// it, so it must be the same at every start, and different from every
    /// other client's (the command's publisher, the other members of a
    /// shared group), or the broker disconnects one for the other.
    pub client_id: String,
    /// Topic filters, e.g. `edgeprio/+/raw` or `$share/g/edgeprio/+/batch`
    /// ([`shared_filter`]).
    pub filters: Vec<String>,
    /// When batches are handed over; `max_messages` at or below the
    /// broker's in-flight limit for this client (Mosquitto's
    /// `max_inflight_messages`, 20 by default), [`BatchLimits::EACH_MESSAGE`]
    /// for a real-time collector.
    pub limits: BatchLimits,
    /// Published by the broker if the connection is lost without a
    /// DISCONNECT.
    pub last_will: Option<LastWill>,
    /// Published (retained, `QoS` 1) once the subscription is in place: the
    /// counterpart of the Last Will, e.g. a group member's `online`.
    pub online: Option<(String, String)>,
    /// One connection only: once it ends the consumer stops instead of
    /// connecting again (a takeover of another client's session, which
    /// hands it back when that client returns and takes its id).
    pub once: bool,
}

/// Says refused messages at most once per `every` per kind, with how many
/// were not said: a flood of bad payloads must not flood the journal.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Per kind: when it was last said (monotonic), and how many since.
    said: HashMap<&'static str, (Duration, u64)>,
}

impl Throttle {
    /// How often one kind is said.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// Whether to say one more refusal of `kind` at `now` (monotonic), and
    /// how many of that kind went unsaid since the last one said.
    pub fn say(&mut self, kind: &'static str, now: Duration) -> Option<u64> {
        match self.said.get_mut(kind) {
            Some((at, unsaid)) if now.saturating_sub(*at) < Self::EVERY => {
                *unsaid += 1;
                None
            }
            Some((at, unsaid)) => {
                let n = *unsaid;
                *at = now;
                *unsaid = 0;
                Some(n)
            }
            None => {
                self.said.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

/// A malformed shared-subscription group name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the group name {0:?} is not allowed: it must be non-empty and without '/', '+' or '#' \
     (e.g. `collectors`)"
)]
pub struct BadGroup(pub String);

/// `filter` as a member of the shared subscription `group`
/// (`$share/<group>/<filter>`; Mosquitto has it for MQTT 3.1.1 clients):
/// the broker gives each message to one member of the group.
pub fn shared_filter(group: &str, filter: &str) -> Result<String, BadGroup> {
    if group.is_empty() || group.contains(['/', '+', '#']) {
        return Err(BadGroup(group.to_owned()));
    }
    Ok(format!("$share/{group}/{filter}"))
}

/// The consumer's connection, as it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// Connecting, connected (subscribed), or disconnected.
    pub state: BrokerState,
    /// Why the last connection failed or ended.
    pub error: Option<String>,
    /// When `state` was entered (Unix ms).
    pub since_ms: i64,
}

/// The consumer's counters, as a snapshot for the status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages received (redeliveries included).
    pub received: u64,
    /// Messages the handler accepted and committed.
    pub committed: u64,
    /// Messages the handler rejected as malformed (acknowledged, never
    /// committed).
    pub rejected: u64,
    /// Messages the broker flagged as redelivered (dup).
    pub redelivered: u64,
    /// Handler calls that failed (each retry counts).
    pub handler_failures: u64,
    /// Acknowledgements written to the broker.
    pub acked: u64,
}

/// The live counters behind [`Counts`].
/// Atomics, so that a status or metrics task reads them while the
/// consumer runs; each is the [`Counts`] field of the same name.
#[derive(Debug, Default)]
struct Counters {
    /// See [`Counts::received`].
    received: AtomicU64,
    /// See [`Counts::committed`].
    committed: AtomicU64,
    /// See [`Counts::rejected`].
    rejected: AtomicU64,
    /// See [`Counts::redelivered`].
    redelivered: AtomicU64,
    /// See [`Counts::handler_failures`].
    handler_failures: AtomicU64,
    /// See [`Counts::acked`].
    acked: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            received: get(&self.received),
            committed: get(&self.committed),
            rejected: get(&self.rejected),
            redelivered: get(&self.redelivered),
            handler_failures: get(&self.handler_failures),
            acked: get(&self.acked),
        }
    }
}

/// A handle on a running consumer's counters.
#[derive(Debug, Clone)]
pub struct Stats(Arc<Counters>);

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> Counts {
        self.0.snapshot()
    }
}

/// The committing consumer; see the module docs. Built with
/// [`Consumer::new`], watched through [`Consumer::stats`] and
/// [`Consumer::status`], run with [`Consumer::run`].
pub struct Consumer {
    /// The broker, credentials and TLS.
    mqtt: MqttConfig,
    /// The subscription and batching.
    options: ConsumerOptions,
    /// Shared with every [`Stats`] handed out.
    counters: Arc<Counters>,
    /// Where the connection state is reported.
    status: watch::Sender<ConnectionStatus>,
}

impl Consumer {
    /// A consumer of `options.filters` on the broker of `mqtt`; nothing
    /// connects before [`Consumer::run`].
    pub fn new(mqtt: &MqttConfig, options: ConsumerOptions) -> Self {
        let (status, _) = watch::channel(ConnectionStatus {
            state: BrokerState::Connecting,
            error: None,
            since_ms: now_ms(),
        });
        Self {
            mqtt: mqtt.clone(),
            options,
            counters: Arc::default(),
            status,
        }
    }

    /// The counters, live.
    pub fn stats(&self) -> Stats {
        Stats(self.counters.clone())
    }

    /// The connection state, as it changes.
    pub fn status(&self) -> watch::Receiver<ConnectionStatus> {
        self.status.subscribe()
    }

    /// Consumes until `shutdown` resolves, then hands over what it holds,
    /// acknowledges what the handler committed and disconnects. Returns the
    /// final counters. Dropping the future instead (a crash, in tests)
    /// acknowledges nothing more: the broker delivers the rest again.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Counts {
        tokio::pin!(shutdown);
        let mut run = Run {
            consumer: &self,
            handler,
            held: Batcher::new(self.options.limits),
            in_hand: None,
            connection: 0,
            stop: Stop {
                shutdown,
                fired: false,
            },
            throttle: Throttle::default(),
            started: std::time::Instant::now(),
            intake: None,
        };
        let mut backoff = Backoff::new();
        loop {
            self.report(BrokerState::Connecting, None);
            let pause = match run.session().await {
                Ended::Closed => break,
                Ended::Lost {
                    error,
                    was_connected,
                } => {
                    let pause = backoff.after(was_connected);
                    tracing::warn!(
                        broker = %self.mqtt.url,
                        client_id = %self.options.client_id,
                        retry_in = %humantime::format_duration(pause),
                        "MQTT consumer: {error}; unacknowledged messages stay with the broker"
                    );
                    self.report(BrokerState::Disconnected, Some(error));
                    if self.options.once {
                        break;
                    }
                    pause
                }
            };
            // Meanwhile what the lost connection delivered is committed:
            // its acknowledgements died with it, so the broker sends it
            // again and the handler's idempotence absorbs the second copy;
            // should the broker have lost the session, it is not lost here.
            if run.pause(pause).await == Delivery::Stopped {
                break;
            }
        }
        self.report(BrokerState::Disconnected, Some("consumer stopped".into()));
        self.counters.snapshot()
    }

    fn report(&self, state: BrokerState, error: Option<String>) {
        self.status.send_replace(ConnectionStatus {
            state,
            error,
            since_ms: now_ms(),
        });
    }

    /// The connection options: a persistent session with manual
    /// acknowledgements.
    fn options(&self) -> Result<MqttOptions, String> {
        let mut o = connection::client_options(
            &self.mqtt,
            &self.options.client_id,
            self.options.last_will.clone(),
        )?;
        o.set_clean_session(false);
        o.set_manual_acks(true);
        Ok(o)
    }
}

/// The shutdown future, polled until it fires and never after.
struct Stop<'a, F> {
    /// The caller's shutdown future, pinned on `run`'s stack.
    shutdown: Pin<&'a mut F>,
    /// Whether it has resolved.
    fired: bool,
}

impl<F: Future<Output = ()>> Stop<'_, F> {
    /// Resolves when shutdown is asked for (at once if it already was).
    async fn wait(&mut self) {
        if !self.fired {
            self.shutdown.as_mut().await;
            self.fired = true;
        }
    }
}

/// Whether the consumer goes on.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    /// It does.
    Going,
    /// Shutdown came: it stops.
    Stopped,
}

/// The batch handed to the handler and not committed yet (it failed).
struct InHand {
    /// The messages, in receive order.
    batch: Vec<Incoming>,
    /// Failed attempts so far: the first is logged, the others counted.
    failures: u64,
    /// When to try again.
    retry_at: tokio::time::Instant,
    /// The pause after the next failure.
    delay: Duration,
}

/// One run's state, kept across connections.
struct Run<'a, H, F> {
    /// The settings, counters and status sender.
    consumer: &'a Consumer,
    /// The command's commit.
    handler: H,
    /// Received, not yet handed over.
    held: Batcher<Incoming>,
    /// A batch the handler failed to commit, retried before anything else
    /// (acknowledgements go in receive order).
    in_hand: Option<InHand>,
    /// Numbers the connections, so that an acknowledgement goes only on the
    /// connection its message came on.
    connection: u64,
    /// Shutdown: checked between handler calls, never during one.
    stop: Stop<'a, F>,
    /// Says rejected messages without flooding the journal.
    throttle: Throttle,
    /// The throttle's monotonic origin.
    started: std::time::Instant,
    /// The current connection's bound on what is read ahead of the
    /// acknowledgements.
    intake: Option<Arc<Intake>>,
}

impl<H: Handler, F: Future<Output = ()>> Run<'_, H, F> {
    /// When there is work for the handler: a retry, or a due batch.
    fn wake_at(&self) -> Option<tokio::time::Instant> {
        match &self.in_hand {
            Some(h) => Some(h.retry_at),
            None => self.held.deadline().map(tokio::time::Instant::from_std),
        }
    }

    /// One connection, from CONNACK to its loss or the shutdown. Events are
    /// read all along, also while the handler fails: the state stays
    /// current and a lost connection is seen.
    async fn session(&mut self) -> Ended {
        let lost = |error: String, was_connected| Ended::Lost {
            error,
            was_connected,
        };
        let c = self.consumer;
        let opts = match c.options() {
            Ok(o) => o,
            Err(e) => return lost(e, false),
        };
        let (client, eventloop) = AsyncClient::new(opts, REQUESTS);
        let intake = Intake::new(READ_AHEAD.max(c.options.limits.max_messages.saturating_mul(2)));
        self.intake = Some(intake.clone());
        let (mut events, _driver) = drive(eventloop, Some(intake.clone()));
        self.connection += 1;
        let session_present = loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => break ack.session_present,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return lost(describe(&e, &c.mqtt), false),
                    None => return lost("the MQTT event loop stopped".into(), false),
                },
                () = self.stop.wait(), if !self.stop.fired => {
                    self.finish(None).await;
                    return Ended::Closed;
                }
            }
        };
        tracing::info!(
            broker = %c.mqtt.url,
            client_id = %c.options.client_id,
            session_present,
            "MQTT consumer connected"
        );
        if !session_present {
            tracing::info!(
                client_id = %c.options.client_id,
                "the broker holds no session for this client id (a first start, or it lost \
                 it): messages published before this subscription were not kept for it"
            );
        }
        let filters = c
            .options
            .filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        if let Err(e) = client.subscribe_many(filters).await {
            return lost(format!("cannot subscribe: {e}"), true);
        }
        if let Some((topic, payload)) = &c.options.online
            && let Err(e) = client
                .publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone())
                .await
        {
            return lost(format!("cannot announce {topic}: {e}"), true);
        }
        loop {
            let wake = self.wake_at();
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Ok(ev)) => {
                        if let Err(e) = self.on_event(ev) {
                            // Not a connection that worked: back off fully.
                            return lost(e, false);
                        }
                    }
                    Some(Err(e)) => return lost(describe(&e, &c.mqtt), true),
                    None => return lost("the MQTT event loop stopped".into(), true),
                },
                () = sleep_until(wake), if wake.is_some() => {}
                () = self.stop.wait(), if !self.stop.fired => {
                    self.finish(Some(&client)).await;
                    intake.open();
                    close(c, &client, &mut events).await;
                    return Ended::Closed;
                }
            }
            self.work(Some(&client)).await;
        }
    }

    /// The pause between connections; what is held is committed meanwhile.
    async fn pause(&mut self, backoff: Duration) -> Delivery {
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            let wake = self.wake_at();
            tokio::select! {
                () = &mut pause => return Delivery::Going,
                () = sleep_until(wake), if wake.is_some() => self.work(None).await,
                () = self.stop.wait(), if !self.stop.fired => {
                    self.finish(None).await;
                    return Delivery::Stopped;
                }
            }
        }
    }

    /// Holds a message, counts an acknowledgement; `Err` when the broker
    /// refused the subscription.
    fn on_event(&mut self, ev: Event) -> Result<(), String> {
        let c = self.consumer;
        match ev {
            Event::Incoming(Packet::Publish(publish)) => {
                Counters::add(&c.counters.received, 1);
                if publish.dup {
                    Counters::add(&c.counters.redelivered, 1);
                }
                let msg = Incoming {
                    publish,
                    received_ms: now_ms(),
                    connection: self.connection,
                };
                let readings = self.handler.readings(&msg);
                self.held.push(msg, readings, std::time::Instant::now());
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused: Vec<&str> = c
                    .options
                    .filters
                    .iter()
                    .zip(&ack.return_codes)
                    .filter(|(_, code)| **code == SubscribeReasonCode::Failure)
                    .map(|(f, _)| f.as_str())
                    .collect();
                if !refused.is_empty() {
                    return Err(format!(
                        "the broker refused the subscription to {refused:?} (its ACL, or a \
                         filter it does not support)"
                    ));
                }
                tracing::info!(filters = ?c.options.filters, "MQTT consumer subscribed");
                c.report(BrokerState::Connected, None);
            }
            Event::Outgoing(Outgoing::PubAck(_)) => Counters::add(&c.counters.acked, 1),
            _ => {}
        }
        Ok(())
    }

    /// Hands over what is due: the failed batch once its retry is due, then
    /// every due batch, until the handler fails or nothing is due.
    async fn work(&mut self, client: Option<&AsyncClient>) {
        loop {
            let now = tokio::time::Instant::now();
            let in_hand = match self.in_hand.take() {
                Some(h) if h.retry_at > now => {
                    self.in_hand = Some(h);
                    return;
                }
                Some(h) => h,
                None if self.held.is_due(now.into_std()) => InHand {
                    batch: self.held.take(),
                    failures: 0,
                    retry_at: now,
                    delay: RETRY.0,
                },
                None => return,
            };
            if let Err(mut failed) = self.attempt(in_hand, client).await {
                failed.retry_at = tokio::time::Instant::now() + failed.delay;
                failed.delay = (failed.delay * 2).min(RETRY.1);
                self.in_hand = Some(failed);
                return;
            }
        }
    }

    /// At shutdown: one last attempt at the failed batch and everything
    /// held; what still fails is not acknowledged.
    async fn finish(&mut self, client: Option<&AsyncClient>) {
        let mut left = 0;
        if let Some(h) = self.in_hand.take()
            && let Err(h) = self.attempt(h, client).await
        {
            left += h.batch.len();
        }
        while left == 0 && !self.held.is_empty() {
            let batch = InHand {
                batch: self.held.take(),
                failures: 0,
                retry_at: tokio::time::Instant::now(),
                delay: RETRY.0,
            };
            if let Err(h) = self.attempt(batch, client).await {
                left += h.batch.len();
            }
        }
        left += self.held.len();
        if left > 0 {
            tracing::warn!(
                messages = left,
                "stopping with uncommitted messages: they are not acknowledged, and the broker \
                 delivers them again"
            );
        }
    }

    /// One handler call on `h`'s batch; on success the batch is counted and
    /// acknowledged, in receive order, on `client` (the messages that came
    /// on it). `Err` gives the batch back, its failure counted and, the
    /// first time, logged.
    async fn attempt(&mut self, mut h: InHand, client: Option<&AsyncClient>) -> Result<(), InHand> {
        let c = self.consumer;
        let handled = match self.handler.handle(&h.batch).await {
            Ok(handled) => handled,
            Err(e) => {
                Counters::add(&c.counters.handler_failures, 1);
                if let Some(intake) = &self.intake {
                    intake.holding(true);
                }
                h.failures += 1;
                if h.failures == 1 {
                    tracing::error!(
                        messages = h.batch.len(),
                        "cannot commit received messages, none is acknowledged; retrying with \
                         backoff up to {} (said once): {e}",
                        humantime::format_duration(RETRY.1)
                    );
                }
                return Err(h);
            }
        };
        if let Some(intake) = &self.intake {
            intake.holding(false);
        }
        if h.failures > 0 {
            tracing::info!(
                failures = h.failures,
                messages = h.batch.len(),
                "the handler commits again; the held messages are committed"
            );
        }
        let mut committed = 0;
        for (msg, verdict) in h.batch.iter().zip(handled.verdicts()) {
            match verdict {
                Verdict::Accepted => committed += 1,
                Verdict::Rejected { kind, reason } => {
                    Counters::add(&c.counters.rejected, 1);
                    let now = self.started.elapsed();
                    if let Some(unsaid) = self.throttle.say(kind, now) {
                        let more = if unsaid > 0 {
                            format!(" ({unsaid} more of this kind since the last one said)")
                        } else {
                            String::new()
                        };
                        tracing::warn!(topic = %msg.topic(), kind, "rejected a message: {reason}{more}");
                    }
                }
            }
        }
        // A handler that returned fewer verdicts still committed the batch.
        committed += h.batch.len().saturating_sub(handled.verdicts().len());
        Counters::add(&c.counters.committed, committed as u64);
        if let Some(client) = client {
            let ours = |m: &&Incoming| m.connection == self.connection;
            if let Some(intake) = &self.intake {
                intake.acking(h.batch.iter().filter(ours).count());
            }
            for msg in h.batch.iter().filter(ours) {
                if let Err(e) = client.ack(&msg.publish).await {
                    // The connection is gone: the broker sends the rest again.
                    tracing::debug!("acknowledgement not sent: {e}");
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Disconnects cleanly: sends DISCONNECT after the acknowledgements queued
/// before it, then waits for the broker to close the connection, which it
/// does once it has read them all. Returning as soon as the DISCONNECT was
/// written is not enough (measured with Mosquitto 2.0.11): a consumer
/// started right after under the same client id can reach the broker
/// before it has read the old connection; the broker then logs "already
/// connected, closing old connection" and drops what it had not read, the
/// last acknowledgements with it, and delivers that batch again (one run in
/// four of tests/consume.rs's failing-handler test).
async fn close(
    c: &Consumer,
    client: &AsyncClient,
    events: &mut mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
) {
    if client.disconnect().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Ok(Event::Outgoing(Outgoing::PubAck(_))))) => {
                Counters::add(&c.counters.acked, 1);
            }
            // Messages arriving now are not handed over: the broker keeps
            // them for the next start.
            Ok(Some(Ok(_))) => {}
            // The broker closed the connection (or the grace is over).
            _ => break,
        }
    }
}

/// Sleeps until `at`; never resolves for `None` (the branch is disabled
/// then anyway).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_says_each_kind_once_per_period_with_the_count_unsaid() {
        let mut t = Throttle::default();
        let s = Duration::from_secs;
        assert_eq!(t.say("json", s(0)), Some(0));
        assert_eq!(t.say("json", s(1)), None);
        assert_eq!(t.say("range", s(1)), Some(0));
        assert_eq!(t.say("json", s(2)), None);
        assert_eq!(t.say("json", s(10)), Some(2));
        assert_eq!(t.say("json", s(11)), None);
    }

    fn incoming(topic: &str, payload: &[u8]) -> Incoming {
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        publish.pkid = 7;
        Incoming {
            publish,
            received_ms: 1_000,
            connection: 1,
        }
    }

    #[test]
    fn a_shared_filter_names_its_group() {
        assert_eq!(
            shared_filter("collectors", "edgeprio/+/batch"),
            Ok("$share/collectors/edgeprio/+/batch".to_owned())
        );
        for bad in ["", "a/b", "a+", "#"] {
            assert_eq!(
                shared_filter(bad, "edgeprio/+/batch"),
                Err(BadGroup(bad.to_owned()))
            );
        }
    }

    #[test]
    fn handled_starts_all_accepted_and_rejects_by_index() {
        let batch = [
            incoming("edgeprio/a/raw", b"{}"),
            incoming("edgeprio/b/raw", b"x"),
        ];
        let mut handled = Handled::all(&batch);
        assert_eq!(handled.verdicts(), [Verdict::Accepted, Verdict::Accepted]);
        handled.reject(1, "json", "bad JSON");
        // An index past the batch names no message: nothing to mark.
        handled.reject(5, "json", "ignored");
        assert_eq!(
            handled.verdicts(),
            [
                Verdict::Accepted,
                Verdict::Rejected {
                    kind: "json",
                    reason: "bad JSON".into()
                }
            ]
        );
    }

    #[test]
    fn incoming_shows_what_was_received() {
        let mut m = incoming("edgeprio/a/raw", b"{\"sensor\":\"s\"}");
        assert_eq!(m.topic(), "edgeprio/a/raw");
        assert_eq!(m.payload(), b"{\"sensor\":\"s\"}");
        assert_eq!(m.received_ms(), 1_000);
        assert!(!m.redelivered());
        m.publish.dup = true;
        assert!(m.redelivered());
    }

    #[test]
    fn the_connection_is_a_persistent_session_with_manual_acks() {
        let mqtt = MqttConfig::local(
            std::net::SocketAddr::from(([127, 0, 0, 1], 1883)),
            "n1",
            Duration::from_secs(15),
        );
        let consumer = Consumer::new(
            &mqtt,
            ConsumerOptions {
                client_id: "edgeprio-gateway-n1".into(),
                filters: vec!["edgeprio/+/raw".into()],
                limits: BatchLimits::default(),
                last_will: None,
                online: None,
                once: false,
            },
        );
        let o = consumer.options().expect("no credentials to read");
        assert!(!o.clean_session());
        assert!(o.manual_acks());
        assert_eq!(o.client_id(), "edgeprio-gateway-n1");
        assert_eq!(consumer.stats().snapshot(), Counts::default());
        assert_eq!(consumer.status().borrow().state, BrokerState::Connecting);
    }
}
