//! The processing server itself: what `collect` does with each batch of
//! messages the consumer hands over ([`crate::consume::Handler`]): parse
//! the readings, store them in the sink in one transaction, then offer the
//! stored ones to the `--exec` hook.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::gaps::StreamKey;
use super::hook::Hook;
use super::{Sink, Stored};
use crate::consume::{Handled, Handler, HandlerError, Incoming};
use crate::domain::{
    PayloadError, Received, ResendReply, Route, Topics, parse_readings, parse_resend_reply,
};

/// What a collector has stored since start, for the status and metrics.
#[derive(Debug, Default)]
pub struct CollectCounts {
    /// Readings committed that the database did not have.
    pub inserted: AtomicU64,
    /// Readings the database had already (redeliveries, a second member of
    /// a group, repairs).
    pub duplicates: AtomicU64,
    /// Messages refused as malformed.
    pub rejected: AtomicU64,
    /// Nodes' replies to resend requests taken.
    pub replies: AtomicU64,
}

/// `collect --route R`: a [`Handler`] that stores what route `R` carries.
pub struct Collector<S: Sink> {
    /// Where readings go.
    sink: S,
    /// `<prefix>` of the topics consumed: a message's node is the topic's.
    prefix: String,
    /// The route consumed: the topic's last level.
    route: Route,
    /// `--on-priority N --exec CMD`, if asked for.
    hook: Option<Hook>,
    /// Shared with the status and metrics.
    counts: Arc<CollectCounts>,
}

impl<S: Sink> Collector<S> {
    /// A collector of `route` under `prefix` into `sink`.
    pub fn new(sink: S, prefix: &str, route: Route, hook: Option<Hook>) -> Self {
        Self {
            sink,
            prefix: prefix.to_owned(),
            route,
            hook,
            counts: Arc::default(),
        }
    }

    /// The counters, live.
    pub fn counts(&self) -> Arc<CollectCounts> {
        self.counts.clone()
    }

    /// The readings of one message, every one of the topic's node.
    fn parse(&self, m: &Incoming) -> Result<Vec<Received>, PayloadError> {
        let node = Topics::node_of(&self.prefix, m.topic(), self.route.as_str())?;
        let readings = parse_readings(m.payload())?;
        if let Some(other) = readings.iter().find(|r| r.reading.node != node) {
            return Err(PayloadError::OtherNode {
                topic: node.to_owned(),
                payload: format!("{:?}", other.reading.node),
            });
        }
        Ok(readings)
    }
}

impl<S: Sink> Collector<S> {
    /// A sensor's retained state (its newest reading) as the stream's
    /// highest seq: the reading itself is not stored (it comes on its
    /// route), but a hole at the end of a stream that stopped after
    /// readings the broker dropped shows.
    fn parse_state(&self, m: &Incoming) -> Result<Vec<(StreamKey, u64)>, PayloadError> {
        let (node, sensor) = Topics::state_of(&self.prefix, m.topic())?;
        parse_readings(m.payload())?
            .into_iter()
            .map(|r| {
                if r.reading.node == node && r.reading.sensor == sensor {
                    Ok((
                        StreamKey {
                            node: r.reading.node,
                            sensor: r.reading.sensor,
                            log: r.log,
                        },
                        r.reading.seq,
                    ))
                } else {
                    Err(PayloadError::OtherNode {
                        topic: format!("{node}/{sensor}"),
                        payload: format!("{}/{}", r.reading.node, r.reading.sensor),
                    })
                }
            })
            .collect()
    }

    /// A node's reply to a resend request, with the topic's node.
    fn parse_reply(&self, m: &Incoming) -> Result<(String, ResendReply), PayloadError> {
        let node = Topics::node_of(&self.prefix, m.topic(), Topics::RESEND_REPLY)?;
        Ok((node.to_owned(), parse_resend_reply(m.payload())?))
    }
}

impl<S: Sink> Handler for Collector<S> {
    async fn handle(&mut self, batch: &[Incoming]) -> Result<Handled, HandlerError> {
        let mut handled = Handled::all(batch);
        let mut readings = Vec::new();
        let mut replies = Vec::new();
        let mut states = Vec::new();
        let mut rejected = 0;
        for (i, m) in batch.iter().enumerate() {
            let parsed = if m.topic().ends_with(Topics::RESEND_REPLY) {
                self.parse_reply(m).map(|r| replies.push(r))
            } else if m.topic().ends_with("/state") {
                self.parse_state(m).map(|s| states.extend(s))
            } else {
                self.parse(m).map(|rs| readings.extend(rs))
            };
            if let Err(e) = parsed {
                rejected += 1;
                handled.reject(i, e.kind(), e.to_string());
            }
        }
        let Stored {
            inserted,
            duplicates,
        } = if readings.is_empty() {
            Stored::default()
        } else {
            self.sink.store(&readings, crate::agent::now_ms()).await?
        };
        self.counts.inserted.fetch_add(inserted, Ordering::Relaxed);
        self.counts
            .duplicates
            .fetch_add(duplicates, Ordering::Relaxed);
        self.counts.rejected.fetch_add(rejected, Ordering::Relaxed);
        // After the readings: a state or a reply about seqs that came in
        // the same batch finds them stored.
        if !states.is_empty() {
            self.sink.observe(&states, crate::agent::now_ms()).await?;
        }
        for (node, reply) in &replies {
            self.sink
                .answer(node, reply, crate::agent::now_ms())
                .await?;
        }
        self.counts
            .replies
            .fetch_add(replies.len() as u64, Ordering::Relaxed);
        if let Some(hook) = &self.hook {
            for r in &readings {
                hook.offer(r.reading.priority, || {
                    serde_json::to_vec(&r.wire()).unwrap_or_default()
                });
            }
        }
        Ok(handled)
    }

    /// A batch message is an array: its readings are counted by their
    /// `"seq"` keys (cheap, and exact for what a node sends), so one
    /// transaction stays within [`crate::consume::BatchLimits::max_readings`].
    fn readings(&self, message: &Incoming) -> usize {
        let p = message.payload();
        let n = p.windows(5).filter(|w| w == b"\"seq\"").count();
        n.max(1)
    }
}
