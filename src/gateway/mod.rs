//! The paper's Gateway (`edgeprio gateway`): readings that arrive without a
//! priority, from nodes too small to run the agent, are validated and
//! scored here with the agent's own algorithm and per-(node, sensor) state
//! ([`crate::stream`]), logged to the gateway's `SQLite` log, and published
//! from it on each node's real-time and batch topics exactly as an agent
//! would publish them ([`crate::publish`]). Readings that already carry a
//! priority are routed as they are.
//!
//! This module is the blocking half: it owns the log and the streams and
//! turns one batch of raw messages into one transaction. The MQTT side
//! (the persistent session, acknowledgements only after the commit) is
//! [`crate::consume`]'s; the command's runner joins the two.
//!
//! # What the gateway assigns
//!
//! A raw reading without `ts_ms` is stamped with the time it arrived; one
//! without `seq` gets its stream's next seq; the `assigned` column says
//! which. A `seq` at or below the stream's last is a redelivery when the
//! log has that seq with the same values (and time, when the sender gave
//! one): it is acknowledged and not logged again. Otherwise the node
//! restarted its count, and the reading is numbered after the log's last
//! (`assigned = 'renumbered'`). A raw reading with neither seq nor time
//! cannot be told from its redelivery: after a gateway crash between its
//! commit and the acknowledgement it may be logged twice; a node that
//! sends a `seq` never is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::{
    PayloadError, RawMessage, RawReading, Reading, Route, SensorError, SensorRange, Topics,
    parse_raw,
};
use crate::store::{AgentStatus, Assigned, GatewayRow, Store, StoreError};
use crate::stream::{SeqOutcome, Streams};

/// One message as received on a raw topic.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The topic it arrived on: `<prefix>/<node>/raw`.
    pub topic: &'a str,
    /// The payload, unparsed.
    pub payload: &'a [u8],
    /// When it arrived (Unix ms): the time of a reading that has none.
    pub received_ms: i64,
}

/// What the gateway made of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Logged, on this route.
    Logged(Route),
    /// A redelivery of a reading the log already has.
    Duplicate,
    /// Refused: `kind` is a stable label (a [`PayloadError::kind`],
    /// `range`, or `seq_exhausted`), `detail` says why in words.
    Rejected {
        /// The label, for the metrics.
        kind: &'static str,
        /// The reason, for the log.
        detail: String,
    },
}

/// The kinds a gateway refuses a message for beyond the payload's
/// ([`PayloadError::KINDS`]): the stream's.
pub const STREAM_KINDS: [&str; 2] = ["seq_exhausted", "seq_behind"];

/// How many refusal kinds there are: the metrics' `kind` labels, fixed at
/// start-up ([`reject_kinds`]).
pub const REJECT_KIND_COUNT: usize = PayloadError::KINDS.len() + STREAM_KINDS.len();

/// Every refusal kind, in the order of [`GatewayCounters::rejected`].
pub fn reject_kinds() -> impl Iterator<Item = &'static str> {
    PayloadError::KINDS.into_iter().chain(STREAM_KINDS)
}

/// What the gateway did, in atomics a metrics scrape reads while it works.
#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// Readings logged for the real-time route.
    pub realtime: AtomicU64,
    /// Readings logged for the batch route.
    pub batch: AtomicU64,
    /// Redeliveries recognised.
    pub duplicates: AtomicU64,
    /// Refusals, indexed like [`reject_kinds`].
    pub rejected: [AtomicU64; REJECT_KIND_COUNT],
    /// (node, sensor) streams open.
    pub streams: AtomicU64,
}

impl GatewayCounters {
    /// Every refused message.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts one committed batch's verdicts.
    pub fn record(&self, verdicts: &[Verdict]) {
        for v in verdicts {
            let counter = match v {
                Verdict::Logged(Route::Realtime) => &self.realtime,
                Verdict::Logged(Route::Batch) => &self.batch,
                Verdict::Duplicate => &self.duplicates,
                Verdict::Rejected { kind, .. } => {
                    let i = reject_kinds().position(|k| k == *kind);
                    // A kind missing from the list is a bug the unit test
                    // catches; counted as the last one meanwhile.
                    &self.rejected[i.unwrap_or(REJECT_KIND_COUNT - 1)]
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The node of a topic received on a raw filter: the level before the
/// last (`<prefix>/<node>/<suffix>`), checked as the agent's config checks
/// its own `node`.
pub fn node_of(topic: &str) -> Result<&str, PayloadError> {
    let mut levels = topic.rsplitn(3, '/');
    let suffix = levels.next().unwrap_or_default();
    let _node = levels.next();
    let prefix = levels.next().unwrap_or_default();
    Topics::node_of(prefix, topic, suffix)
}

/// The blocking half of the gateway: its log and the streams it scores.
pub struct Gateway {
    /// The gateway's log (the writer), which is also its outbox.
    store: Store,
    /// The state of every (node, sensor) seen, restored from the log on
    /// first sight.
    streams: Streams,
    /// The range a raw reading must be in (`[gateway] range`).
    range: SensorRange,
    /// The gateway's own status row, its heartbeat.
    status: AgentStatus,
    /// What it did since start, read by the metrics while it works.
    counters: Arc<GatewayCounters>,
    /// The outbox depth after the last commit.
    outbox_depth: u64,
}

impl Gateway {
    /// A gateway on `store` (opened as the writer), scoring with
    /// `streams`' rules, its status under `status.node`.
    pub fn new(store: Store, streams: Streams, range: SensorRange, status: AgentStatus) -> Self {
        Self {
            store,
            streams,
            range,
            status,
            counters: Arc::default(),
            outbox_depth: 0,
        }
    }

    /// What it did since start (shared with the metrics).
    pub fn counters(&self) -> &Arc<GatewayCounters> {
        &self.counters
    }

    /// The outbox depth after the last commit.
    pub fn outbox_depth(&self) -> u64 {
        self.outbox_depth
    }

    /// The log.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Validates, scores and logs one batch of messages in one
    /// transaction, with the heartbeat at `now_ms`; one verdict per
    /// message, in order. On `Err` nothing of the batch is logged (and the
    /// streams it touched are restored from the log when next seen): the
    /// caller acknowledges nothing and tries again.
    pub fn handle(
        &mut self,
        batch: &[Message<'_>],
        now_ms: i64,
    ) -> Result<Vec<Verdict>, StoreError> {
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut rows: Vec<GatewayRow> = Vec::new();
        let mut rejected: Vec<(String, SensorError)> = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        let result = batch.iter().try_for_each(|m| {
            let v = self.one(m, &mut rows, &mut rejected, &mut touched)?;
            verdicts.push(v);
            Ok::<(), StoreError>(())
        });
        let committed = result.and_then(|()| {
            self.status.heartbeat_ms = now_ms;
            self.store.commit_gateway(&rows, &rejected, &self.status)
        });
        match committed {
            Ok(depth) => self.outbox_depth = depth,
            Err(e) => {
                for node in &touched {
                    self.streams.forget_node(node);
                }
                return Err(e);
            }
        }
        self.counters.record(&verdicts);
        self.counters
            .streams
            .store(self.streams.len() as u64, Ordering::Relaxed);
        Ok(verdicts)
    }

    /// Writes the heartbeat alone (no message for a while); returns the
    /// outbox depth.
    pub fn heartbeat(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        self.status.heartbeat_ms = now_ms;
        self.outbox_depth = self.store.write_heartbeat(&self.status)?;
        Ok(self.outbox_depth)
    }

    /// Marks the gateway stopped in its log.
    pub fn stop(&mut self, now_ms: i64) -> Result<(), StoreError> {
        self.status.heartbeat_ms = now_ms;
        self.store.mark_stopped(&self.status)
    }

    /// One message: its verdict, and what goes into the transaction.
    fn one(
        &mut self,
        m: &Message<'_>,
        rows: &mut Vec<GatewayRow>,
        rejected: &mut Vec<(String, SensorError)>,
        touched: &mut Vec<String>,
    ) -> Result<Verdict, StoreError> {
        let refuse = |e: &PayloadError| Verdict::Rejected {
            kind: e.kind(),
            detail: e.to_string(),
        };
        let node = match node_of(m.topic) {
            Ok(node) => node,
            Err(e) => return Ok(refuse(&e)),
        };
        let message = match parse_raw(node, m.payload) {
            Ok(message) => message,
            Err(e) => return Ok(refuse(&e)),
        };
        if !touched.iter().any(|t| t == node) {
            touched.push(node.to_owned());
        }
        match message {
            RawMessage::Unscored(raw) => self.unscored(node, &raw, m.received_ms, rows, rejected),
            RawMessage::Scored(received) => self.scored(node, &received.reading, rows),
        }
    }

    /// A raw reading without a priority: validated, scored, numbered.
    fn unscored(
        &mut self,
        node: &str,
        raw: &RawReading,
        received_ms: i64,
        rows: &mut Vec<GatewayRow>,
        rejected: &mut Vec<(String, SensorError)>,
    ) -> Result<Verdict, StoreError> {
        let ts_ms = raw.ts_ms.unwrap_or(received_ms);
        let sample = match self.range.check(raw.sample()) {
            Ok(sample) => sample,
            Err(why) => {
                let detail = why.to_string();
                rejected.push((
                    node.to_owned(),
                    SensorError {
                        ts_ms,
                        sensor: raw.sensor.clone(),
                        kind: why.kind(),
                        detail: detail.clone(),
                    },
                ));
                return Ok(Verdict::Rejected {
                    kind: "range",
                    detail: format!("sensor {:?}: {detail}", raw.sensor),
                });
            }
        };
        let mut assigned = Assigned {
            seq: raw.seq.is_none(),
            ts: raw.ts_ms.is_none(),
            renumbered: false,
        };
        let stream = self.streams.get_or_open(&self.store, node, &raw.sensor)?;
        let outcome = match raw.seq {
            None => stream
                .accept(sample, ts_ms, None)
                .map_or(SeqOutcome::Exhausted, SeqOutcome::Accepted),
            Some(seq) => stream.accept_seq(sample, ts_ms, None, seq),
        };
        let reading = match outcome {
            SeqOutcome::Accepted(r) => r,
            SeqOutcome::Behind { seq, .. } => {
                let same = |t: i64, temperature: f64, humidity: f64| {
                    raw.ts_ms.is_none_or(|ts| ts == t)
                        && temperature.to_bits() == sample.temperature.to_bits()
                        && humidity.to_bits() == sample.humidity.to_bits()
                };
                if self.already(node, &raw.sensor, seq, rows, same)? {
                    return Ok(Verdict::Duplicate);
                }
                assigned.renumbered = true;
                let stream = self.streams.get_or_open(&self.store, node, &raw.sensor)?;
                match stream.accept(sample, ts_ms, None) {
                    Ok(r) => r,
                    Err(_) => return Ok(exhausted(node, &raw.sensor)),
                }
            }
            SeqOutcome::OutOfRange { .. } | SeqOutcome::Exhausted => {
                return Ok(exhausted(node, &raw.sensor));
            }
        };
        let route = reading.route;
        rows.push(GatewayRow { reading, assigned });
        Ok(Verdict::Logged(route))
    }

    /// A reading its node scored: routed as it is.
    fn scored(
        &mut self,
        node: &str,
        r: &Reading,
        rows: &mut Vec<GatewayRow>,
    ) -> Result<Verdict, StoreError> {
        let stream = self.streams.get_or_open(&self.store, node, &r.sensor)?;
        match stream.accept_scored(r.clone()) {
            SeqOutcome::Accepted(reading) => {
                let route = reading.route;
                rows.push(GatewayRow {
                    reading,
                    assigned: Assigned::default(),
                });
                Ok(Verdict::Logged(route))
            }
            SeqOutcome::Behind { seq, .. } => {
                let same = |t: i64, temperature: f64, humidity: f64| {
                    t == r.ts_ms
                        && temperature.to_bits() == r.sample.temperature.to_bits()
                        && humidity.to_bits() == r.sample.humidity.to_bits()
                };
                if self.already(node, &r.sensor, seq, rows, same)? {
                    return Ok(Verdict::Duplicate);
                }
                Ok(Verdict::Rejected {
                    kind: "seq_behind",
                    detail: format!(
                        "scored reading {node}/{} seq {seq} is behind the gateway's log for \
                         that sensor and is not a redelivery; a node that scores for itself \
                         keeps its seqs increasing",
                        r.sensor
                    ),
                })
            }
            SeqOutcome::OutOfRange { .. } | SeqOutcome::Exhausted => Ok(exhausted(node, &r.sensor)),
        }
    }

    /// Whether reading `seq` of (node, sensor) is already logged (or in
    /// this batch) with values that `same` recognises.
    fn already(
        &self,
        node: &str,
        sensor: &str,
        seq: u64,
        batch: &[GatewayRow],
        same: impl Fn(i64, f64, f64) -> bool,
    ) -> Result<bool, StoreError> {
        if let Some(row) = batch.iter().find(|row| {
            let r = &row.reading;
            r.seq == seq && r.sensor == sensor && r.node == node
        }) {
            let r = &row.reading;
            return Ok(same(r.ts_ms, r.sample.temperature, r.sample.humidity));
        }
        Ok(self
            .store
            .reading_at(node, sensor, seq)?
            .is_some_and(|(t, temperature, humidity)| same(t, temperature, humidity)))
    }
}

/// The verdict for a stream with no seq left.
fn exhausted(node: &str, sensor: &str) -> Verdict {
    Verdict::Rejected {
        kind: "seq_exhausted",
        detail: format!(
            "{node}/{sensor} has no seq left in the gateway's log (its last seq is the largest \
             the log holds); its readings are refused until that row is fixed"
        ),
    }
}

#[cfg(test)]
mod tests;
