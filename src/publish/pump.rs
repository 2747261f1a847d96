//! The outbox pump: turns unpublished rows into the messages that carry
//! them, each on the topics of the row's own node (an agent's log holds
//! only its node's readings; a gateway's, the readings of many).
//!
//! A row read from the outbox that is still fresh (it has waited at most
//! `realtime_max_age`) updates its sensor's retained state topic, at most
//! once a second per (node, sensor): a newer reading within the second
//! replaces the one held back, which goes out at the end of the second
//! (or at a stop), so the retained state is always the last fresh reading,
//! at most a second behind. An agent reading every 15 s sends every state;
//! a gateway taking 27,000 readings a second does not add as many retained
//! messages for the broker to store (they were 30 % of the CPU the gateway
//! and Mosquitto spent per reading in `cargo bench --bench gateway`). A fresh
//! real-time row goes out at once on its node's real-time topic; a late
//! real-time row is sent on the batch topic with `"late": true` (the
//! real-time path carries fresh events only); batch rows wait in their
//! node's batch buffer until it holds `batch_max` readings or its oldest
//! has waited `batch_interval`.
//!
//! No I/O: the session reads the rows and sends what [`Pump::take`] and
//! [`Pump::flush`] return. How long a row has waited is asked of
//! [`TakenAt`], whose clock tests set by hand.

use std::collections::BTreeMap;
use std::time::Duration;

/// How often the session flushes what is due ([`Flush::Due`]): the clock
/// of the batch buffers' ages and of the state topics.
pub const TICK: Duration = Duration::from_millis(200);

/// Ticks between two state messages of one (node, sensor): a second.
const STATE_TICKS: u64 = 5;

use crate::clock::{TakenAt, Waited};
use crate::config::MqttConfig;
use crate::domain::{LogId, Route, Topics, WireReading};
use crate::store::{Acked, StoredReading};

use super::ledger::Msg;

/// One message to publish (at least once).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Where it goes.
    pub topic: String,
    /// The JSON it carries.
    pub payload: Vec<u8>,
    /// Whether the broker keeps it for later subscribers (state topics).
    pub retain: bool,
    /// The rows its PUBACK marks, for the ledger.
    pub msg: Msg,
}

/// What the pump does with the log a read came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// The log the pump has been reading (or its first).
    Same,
    /// Another log (the agent followed its path to a new file): the
    /// pump forgot its rows; the caller forgets the ledger's, and reads
    /// again from the new log's start.
    Changed,
}

/// What [`Pump::flush`] sends of the batch buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Only full buffers (`batch_max` readings): after each read of the
    /// outbox. A backlog read a few rows at a time (as acknowledgements
    /// free the window) then still goes out in full messages, instead of
    /// a message per row once every row is older than `batch_interval`.
    Full,
    /// Full buffers and those whose oldest reading has waited
    /// `batch_interval`, and the states held back for a second: on the
    /// session's [`TICK`], which this counts.
    Due,
    /// Everything: a stop.
    All,
}

/// The outbox pump's state for one session; see the module docs.
#[derive(Debug)]
pub struct Pump {
    /// First topic level; the node level comes from each row.
    prefix: String,
    /// A real-time row older than this goes on the batch topic, late.
    realtime_max_age: Duration,
    /// Most readings in one batch message.
    batch_max: usize,
    /// Longest the oldest reading of a batch buffer waits.
    batch_interval: Duration,
    /// When each reading was taken: how long it has waited.
    taken: TakenAt,
    /// The last row id read from the outbox in this session.
    sent_upto: i64,
    /// The log the rows were read from: row ids and the wire's log id mean
    /// something only in it.
    log: Option<LogId>,
    /// Per node, batch rows waiting for their flush, with their late flag:
    /// a batch message holds the readings of one node, on its topic.
    batches: BTreeMap<String, Vec<(StoredReading, bool)>>,
    /// [`Flush::Due`] calls so far.
    ticks: u64,
    /// Per node and sensor, of those whose state went out in the last
    /// [`STATE_TICKS`]: when, and the newer state held back since.
    states: BTreeMap<String, BTreeMap<String, StateSlot>>,
}

/// One (node, sensor)'s state topic, while it is held to one message per
/// [`STATE_TICKS`].
#[derive(Debug)]
struct StateSlot {
    /// The tick its last state message went out.
    sent: u64,
    /// The newest state since, not sent yet.
    held: Option<Message>,
}

impl Pump {
    /// A pump for `mqtt`'s topics and batching, aging rows on `taken`.
    pub fn new(mqtt: &MqttConfig, taken: TakenAt) -> Self {
        Self {
            prefix: mqtt.topic_prefix.clone(),
            realtime_max_age: mqtt.realtime_max_age,
            batch_max: mqtt.batch_max,
            batch_interval: mqtt.batch_interval,
            taken,
            sent_upto: 0,
            log: None,
            batches: BTreeMap::new(),
            ticks: 0,
            states: BTreeMap::new(),
        }
    }

    /// Where the next outbox read starts: after this row id.
    pub fn after(&self) -> i64 {
        self.sent_upto
    }

    /// The log the rows in flight came from, once one was read.
    pub fn log(&self) -> Option<LogId> {
        self.log
    }

    /// A read came from `log`.
    pub fn follow(&mut self, log: LogId) -> Followed {
        let before = self.log.replace(log);
        if before.is_some_and(|l| l != log) {
            self.forget_log();
            Followed::Changed
        } else {
            Followed::Same
        }
    }

    /// Rows in the batch buffers.
    pub fn buffered(&self) -> usize {
        self.batches.values().map(Vec::len).sum()
    }

    /// Routes `rows`, read from the outbox up to row id `last_id` (rows
    /// that do not decode included): fresh real-time rows into `out` at
    /// once, each fresh row's state update before it, the rest into their
    /// node's batch buffer. Call [`Pump::follow`] with the log first.
    pub fn take(
        &mut self,
        last_id: i64,
        rows: Vec<StoredReading>,
        out: &mut Vec<Message>,
    ) -> Result<(), serde_json::Error> {
        let log = self.log.expect("Pump::follow is called before Pump::take");
        self.sent_upto = self.sent_upto.max(last_id);
        for row in rows {
            // A reading of unknown age (stamped in the future) is late.
            let fresh = waited(&self.taken, &row).within(self.realtime_max_age);
            let r = &row.reading;
            let topics = Topics::new(&self.prefix, &r.node);
            if fresh {
                let state = Message {
                    topic: topics.state(&r.sensor),
                    payload: serde_json::to_vec(&WireReading::new(r, log))?,
                    retain: true,
                    msg: Msg { rows: None },
                };
                self.state(&r.node, &r.sensor, state, out);
            }
            match (r.route, fresh) {
                (Route::Realtime, true) => out.push(Message {
                    topic: topics.route(Route::Realtime),
                    payload: serde_json::to_vec(&WireReading::new(r, log))?,
                    retain: false,
                    msg: carrying(Route::Realtime, vec![row.id], 0),
                }),
                (Route::Realtime, false) => self.buffer(row, true),
                (Route::Batch, _) => self.buffer(row, false),
            }
        }
        Ok(())
    }

    /// Sends each node's batch buffer in messages of at most `batch_max`
    /// readings, as `what` says: full buffers only, or also those whose
    /// oldest reading has waited `batch_interval`, or all (a stop).
    pub fn flush(&mut self, what: Flush, out: &mut Vec<Message>) -> Result<(), serde_json::Error> {
        let all = what == Flush::All;
        if what == Flush::Due {
            self.ticks += 1;
        }
        self.flush_states(all, out);
        if self.batches.is_empty() {
            return Ok(());
        }
        let log = self
            .log
            .expect("batch rows were read from the outbox, with their log");
        let mut emptied = Vec::new();
        for (node, batch) in &mut self.batches {
            let topic = Topics::new(&self.prefix, node).route(Route::Batch);
            while let Some((oldest, _)) = batch.first() {
                let due = all
                    || batch.len() >= self.batch_max
                    || (what == Flush::Due
                        && waited(&self.taken, oldest).at_least >= self.batch_interval);
                if !due {
                    break;
                }
                let take = batch.len().min(self.batch_max);
                let chunk: Vec<(StoredReading, bool)> = batch.drain(..take).collect();
                let wire: Vec<WireReading<'_>> = chunk
                    .iter()
                    .map(|(r, late)| WireReading {
                        late: *late,
                        ..WireReading::new(&r.reading, log)
                    })
                    .collect();
                out.push(Message {
                    topic: topic.clone(),
                    payload: serde_json::to_vec(&wire)?,
                    retain: false,
                    msg: carrying(
                        Route::Batch,
                        chunk.iter().map(|(r, _)| r.id).collect(),
                        chunk.iter().filter(|(_, late)| *late).count(),
                    ),
                });
            }
            if batch.is_empty() {
                emptied.push(node.clone());
            }
        }
        // A node that stopped sending leaves no buffer behind.
        for node in emptied {
            self.batches.remove(&node);
        }
        Ok(())
    }

    /// The record rows are aged on.
    pub fn taken(&self) -> &TakenAt {
        &self.taken
    }

    /// Gives back the memory a drained backlog grew.
    pub fn shrink_to_fit(&mut self) {
        for batch in self.batches.values_mut() {
            batch.shrink_to_fit();
        }
    }

    /// The rows read belong to a log the agent has left: the new log's
    /// outbox is read from its start.
    fn forget_log(&mut self) {
        self.batches.clear();
        self.states.clear();
        self.sent_upto = 0;
    }

    /// Sends `state`, the newest of `node`'s `sensor`, now or once its
    /// second is over.
    fn state(&mut self, node: &str, sensor: &str, state: Message, out: &mut Vec<Message>) {
        let ticks = self.ticks;
        let Some(slot) = self.states.get_mut(node).and_then(|s| s.get_mut(sensor)) else {
            self.states.entry(node.to_owned()).or_default().insert(
                sensor.to_owned(),
                StateSlot {
                    sent: ticks,
                    held: None,
                },
            );
            out.push(state);
            return;
        };
        if slot.held.is_none() && ticks >= slot.sent + STATE_TICKS {
            slot.sent = ticks;
            out.push(state);
        } else {
            slot.held = Some(state);
        }
    }

    /// Sends the held states whose second is over (`all`: every one), and
    /// forgets the slots that have nothing held and no second running.
    fn flush_states(&mut self, all: bool, out: &mut Vec<Message>) {
        let ticks = self.ticks;
        for sensors in self.states.values_mut() {
            sensors.retain(|_, slot| {
                let over = ticks >= slot.sent + STATE_TICKS;
                if (all || over)
                    && let Some(state) = slot.held.take()
                {
                    slot.sent = ticks;
                    out.push(state);
                    return true;
                }
                slot.held.is_some() || !over
            });
        }
        self.states.retain(|_, sensors| !sensors.is_empty());
    }

    fn buffer(&mut self, row: StoredReading, late: bool) {
        self.batches
            .entry(row.reading.node.clone())
            .or_default()
            .push((row, late));
    }
}

/// How long `row` has waited since it was taken.
fn waited(taken: &TakenAt, row: &StoredReading) -> Waited {
    let r = &row.reading;
    taken.waited(&r.node, &r.sensor, r.seq, r.ts_ms)
}

/// A message carrying rows `ids` on `route`, `late` of them real-time rows
/// sent late.
fn carrying(route: Route, ids: Vec<i64>, late: usize) -> Msg {
    Msg {
        rows: Some(Acked {
            route,
            ids,
            late,
            // Set when the PUBACK arrives.
            at_ms: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock, SystemClock};
    use crate::domain::{PerChannel, Reading, Sample};

    const LOG: u64 = 0xab;

    /// Real-time rows fresh for 30 s, batches of at most 3 sent after a
    /// minute; ages are set by the rows' timestamps, far from both limits.
    fn pump() -> Pump {
        let mut mqtt = MqttConfig::local(
            "127.0.0.1:1883".parse().unwrap(),
            "home",
            Duration::from_secs(15),
        );
        mqtt.realtime_max_age = Duration::from_secs(30);
        mqtt.batch_max = 3;
        mqtt.batch_interval = Duration::from_mins(1);
        let mut p = Pump::new(&mqtt, TakenAt::new(Arc::new(SystemClock::new())));
        assert_eq!(p.follow(LogId::new(LOG)), Followed::Same);
        p
    }

    /// Row `id` of `node`'s sensor s1, taken `age_s` seconds ago.
    fn row(id: i64, node: &str, route: Route, age_s: i64) -> StoredReading {
        StoredReading {
            id,
            reading: Reading {
                node: node.into(),
                sensor: "s1".into(),
                seq: id.unsigned_abs(),
                ts_ms: SystemClock::new().wall_ms() - age_s * 1_000,
                sample: Sample::new(21.5, 40.0),
                weights: PerChannel {
                    temperature: 1,
                    humidity: 0,
                },
                priority: 1,
                route,
                clock_synced: None,
            },
            published_ms: None,
        }
    }

    /// A message's topic and the ids (and late count) it carries.
    type Summary = (String, Option<(Vec<i64>, usize)>);

    fn summary(out: &[Message]) -> Vec<Summary> {
        out.iter()
            .map(|m| {
                let rows = m.msg.rows.as_ref().map(|a| (a.ids.clone(), a.late));
                (m.topic.clone(), rows)
            })
            .collect()
    }

    fn json(m: &Message) -> serde_json::Value {
        serde_json::from_slice(&m.payload).unwrap()
    }

    #[test]
    fn each_row_goes_out_on_its_own_nodes_topics() {
        let mut p = pump();
        let mut out = Vec::new();
        let rows = vec![
            row(1, "a", Route::Realtime, 1),
            row(2, "b", Route::Realtime, 1),
            row(3, "a", Route::Batch, 1),
            row(4, "b", Route::Batch, 1),
        ];
        p.take(4, rows, &mut out).unwrap();
        assert_eq!(
            summary(&out),
            vec![
                ("edgeprio/a/s1/state".into(), None),
                ("edgeprio/a/realtime".into(), Some((vec![1], 0))),
                ("edgeprio/b/s1/state".into(), None),
                ("edgeprio/b/realtime".into(), Some((vec![2], 0))),
            ]
        );
        assert!(out[0].retain && !out[1].retain);
        let realtime = json(&out[3]);
        assert_eq!(realtime["node"], "b");
        assert_eq!(realtime["seq"], 2);
        assert_eq!(p.after(), 4);
        // The batch rows wait, one buffer per node.
        assert_eq!(p.buffered(), 2);
        out.clear();
        p.flush(Flush::Due, &mut out).unwrap();
        assert!(
            out.is_empty(),
            "neither buffer is full or old, and the states of rows 3 and 4 wait for their second"
        );
        p.flush(Flush::All, &mut out).unwrap();
        assert_eq!(
            summary(&out),
            vec![
                ("edgeprio/a/s1/state".into(), None),
                ("edgeprio/b/s1/state".into(), None),
                ("edgeprio/a/batch".into(), Some((vec![3], 0))),
                ("edgeprio/b/batch".into(), Some((vec![4], 0))),
            ]
        );
        assert_eq!(json(&out[0])["seq"], 3, "the newest state");
        let batch = json(&out[3]);
        assert_eq!(batch[0]["node"], "b");
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn a_sensors_state_goes_out_at_most_once_a_second_and_the_newest_always_does() {
        let mut p = pump();
        let mut out = Vec::new();
        let states = |out: &mut Vec<Message>| -> Vec<u64> {
            let seqs = out
                .iter()
                .filter(|m| m.retain)
                .map(|m| json(m)["seq"].as_u64().unwrap())
                .collect();
            out.clear();
            seqs
        };
        // The first state goes at once; two more within the second wait,
        // and only the newer of them goes, once the second is over.
        p.take(1, vec![row(1, "a", Route::Batch, 1)], &mut out)
            .unwrap();
        assert_eq!(states(&mut out), [1]);
        p.take(
            3,
            vec![row(2, "a", Route::Batch, 1), row(3, "a", Route::Batch, 1)],
            &mut out,
        )
        .unwrap();
        assert_eq!(states(&mut out), Vec::<u64>::new());
        for _ in 0..STATE_TICKS - 1 {
            p.flush(Flush::Due, &mut out).unwrap();
            assert_eq!(states(&mut out), Vec::<u64>::new());
        }
        p.flush(Flush::Due, &mut out).unwrap();
        assert_eq!(
            states(&mut out),
            [3],
            "the newest, a second after the first"
        );
        // Another node's sensor has its own second.
        p.take(4, vec![row(4, "b", Route::Batch, 1)], &mut out)
            .unwrap();
        assert_eq!(states(&mut out), [4]);
        // A second with nothing held forgets the sensor: the next state
        // after a quiet second goes at once.
        for _ in 0..STATE_TICKS {
            p.flush(Flush::Due, &mut out).unwrap();
        }
        assert_eq!(states(&mut out), Vec::<u64>::new());
        assert!(!p.states.contains_key("a"), "{:?}", p.states);
        p.take(5, vec![row(5, "a", Route::Batch, 1)], &mut out)
            .unwrap();
        assert_eq!(states(&mut out), [5]);
        // A stop sends what is held.
        p.take(6, vec![row(6, "a", Route::Batch, 1)], &mut out)
            .unwrap();
        assert_eq!(states(&mut out), Vec::<u64>::new());
        p.flush(Flush::All, &mut out).unwrap();
        assert_eq!(states(&mut out), [6]);
    }

    #[test]
    fn a_late_real_time_row_goes_on_the_batch_topic_marked_late() {
        let mut p = pump();
        let mut out = Vec::new();
        p.take(1, vec![row(1, "a", Route::Realtime, 40)], &mut out)
            .unwrap();
        assert!(out.is_empty(), "no real-time message, no state update");
        p.flush(Flush::All, &mut out).unwrap();
        assert_eq!(
            summary(&out),
            vec![("edgeprio/a/batch".into(), Some((vec![1], 1)))]
        );
        assert_eq!(json(&out[0])[0]["late"], true);
    }

    #[test]
    fn a_full_buffer_flushes_only_its_node() {
        let mut p = pump();
        let mut out = Vec::new();
        let rows = (1..=7)
            .map(|id| row(id, if id <= 4 { "a" } else { "b" }, Route::Batch, 1))
            .collect();
        p.take(7, rows, &mut out).unwrap();
        out.clear();
        p.flush(Flush::Due, &mut out).unwrap();
        // Node a holds 4 (one message of batch_max = 3, one row left);
        // node b holds 3: full too.
        assert_eq!(
            summary(&out),
            vec![
                ("edgeprio/a/batch".into(), Some((vec![1, 2, 3], 0))),
                ("edgeprio/b/batch".into(), Some((vec![5, 6, 7], 0))),
            ]
        );
        assert_eq!(p.buffered(), 1);
    }

    #[test]
    fn after_a_read_only_full_buffers_go_whatever_their_age() {
        let mut p = pump();
        let mut out = Vec::new();
        // Two old rows (a backlog read as the window frees): not a message
        // each, but one full message later.
        p.take(1, vec![row(1, "a", Route::Batch, 61)], &mut out)
            .unwrap();
        p.flush(Flush::Full, &mut out).unwrap();
        assert!(
            out.is_empty(),
            "an old but partial buffer waits for the tick"
        );
        p.take(
            3,
            vec![row(2, "a", Route::Batch, 61), row(3, "a", Route::Batch, 61)],
            &mut out,
        )
        .unwrap();
        p.flush(Flush::Full, &mut out).unwrap();
        assert_eq!(
            summary(&out),
            vec![("edgeprio/a/batch".into(), Some((vec![1, 2, 3], 0)))]
        );
    }

    #[test]
    fn a_buffer_whose_oldest_waited_the_interval_is_flushed() {
        let mut p = pump();
        let mut out = Vec::new();
        let rows = vec![row(1, "a", Route::Batch, 61), row(2, "b", Route::Batch, 5)];
        p.take(2, rows, &mut out).unwrap();
        out.clear();
        p.flush(Flush::Due, &mut out).unwrap();
        assert_eq!(
            summary(&out),
            vec![("edgeprio/a/batch".into(), Some((vec![1], 0)))]
        );
        assert_eq!(p.buffered(), 1, "node b's reading is recent");
    }

    #[test]
    fn another_log_forgets_the_buffers_and_reads_from_its_start() {
        let mut p = pump();
        let mut out = Vec::new();
        // Rows that do not decode still move the read on.
        p.take(9, vec![row(3, "a", Route::Batch, 1)], &mut out)
            .unwrap();
        assert_eq!((p.after(), p.buffered()), (9, 1));
        assert_eq!(p.follow(LogId::new(LOG)), Followed::Same);
        assert_eq!(p.follow(LogId::new(LOG + 1)), Followed::Changed);
        assert_eq!((p.after(), p.buffered()), (0, 0));
        assert_eq!(p.log(), Some(LogId::new(LOG + 1)));
    }
}
