//! Finding what the broker dropped: per stream (node, sensor, log), the
//! highest seq a collector database holds and the ranges below it that it
//! does not, kept in that database (tables `streams` and `gaps`), so that
//! a restart, or another collector writing the same database, knows them.
//!
//! `QoS` 1 covers one hop: a stock Mosquitto drops what a paused consumer's
//! queue cannot hold (`max_queued_messages`, 1,000 by default) without a
//! word. A stream's seqs count up by one, so a hole below the highest seq
//! held is a reading that was sent and not stored. A hole younger than
//! the grace period ([`RepairPolicy::after`]) is usually a batch reading on
//! its way (the node batches for `batch_interval` while its real-time
//! readings go at once); an older one is asked for on the node's resend
//! topic ([`crate::domain::ResendRequest`], at most
//! [`crate::domain::RESEND_SPAN`] seqs each), again after twice as long
//! each time it stays missing, up to [`RepairPolicy::max_wait`]. A
//! reply that seqs are gone (deleted by retention, or of a log the node no
//! longer writes) makes them unrecoverable: recorded, counted, never asked
//! for again. A reading that fills a hole that was asked for counts as
//! repaired.
//!
//! The first seq a database holds of a stream starts it: what came before
//! (a collector that joined later) is not missing.
//!
//! Which readings are new comes from the table's row ids: a scan reads the
//! rows after the last one it read (`gap_scan.last_id`), whoever inserted
//! them, so collectors of both routes (and members of a group) writing one
//! database track its streams together, each scan under the database's
//! write lock. The database must hold both routes of a stream for its gaps
//! to mean anything: a database fed by the real-time route alone has a
//! hole for every batch reading, so `collect` repairs only where it is
//! told both routes arrive (see the README).
//!
//! No I/O: the sinks load the state, call [`Streams::scan`] or
//! [`Streams::answered`], and write back what changed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::domain::{LogId, RESEND_SPAN, ResendReply};

/// A stream of readings: what seqs count within.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// Node name.
    pub node: String,
    /// Sensor id.
    pub sensor: String,
    /// The log the seqs are of.
    pub log: LogId,
}

/// A range of missing seqs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// First seq missing.
    pub first: u64,
    /// Last seq missing.
    pub last: u64,
    /// When it was found (Unix ms).
    pub found_ms: i64,
    /// When it was last asked for, if it was.
    pub asked_ms: Option<i64>,
    /// How many times it was asked for.
    pub asks: u32,
    /// When the node said these seqs are gone: unrecoverable.
    pub gone_ms: Option<i64>,
}

impl Gap {
    /// How many seqs it spans.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never empty: a gap spans at least one seq.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The part `first..=last` of it, with its history.
    fn part(&self, first: u64, last: u64) -> Gap {
        Gap {
            first,
            last,
            ..self.clone()
        }
    }
}

/// What one stream's state is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The highest seq stored; `None` before the first.
    pub highest: Option<u64>,
    /// Seqs stored that had been asked for (or given up on), so far.
    pub repaired: u64,
    /// Missing ranges, ascending and disjoint.
    pub gaps: Vec<Gap>,
}

/// When holes are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairPolicy {
    /// How long a hole may be missing before it is asked for (a few
    /// `batch_interval`s: younger holes are readings on their way).
    pub after: Duration,
    /// The longest wait between two requests for one hole.
    pub max_wait: Duration,
    /// The most seqs asked for in one scan, over all streams.
    pub max_asked: u64,
}

impl RepairPolicy {
    /// The default longest wait between two requests: an hour.
    pub const MAX_WAIT: Duration = Duration::from_hours(1);

    /// The default cap on seqs asked for per scan.
    pub const MAX_ASKED: u64 = 20_000;

    /// Asks for holes after `after`, with the default caps.
    pub fn after(after: Duration) -> Self {
        Self {
            after,
            max_wait: Self::MAX_WAIT,
            max_asked: Self::MAX_ASKED,
        }
    }

    /// How long to wait after the `asks`-th request before the next:
    /// `after` doubled per request, at most `max_wait`.
    fn wait(&self, asks: u32) -> Duration {
        let doubled = self
            .after
            .saturating_mul(1_u32 << asks.saturating_sub(1).min(16));
        doubled.min(self.max_wait.max(self.after))
    }

    /// Whether `gap` should be asked for at `now_ms`.
    fn is_due(&self, gap: &Gap, now_ms: i64) -> bool {
        if gap.gone_ms.is_some() {
            return false;
        }
        let since = |t: i64| Duration::from_millis(u64::try_from(now_ms - t).unwrap_or(0));
        match gap.asked_ms {
            None => since(gap.found_ms) >= self.after,
            Some(asked) => since(asked) >= self.wait(gap.asks),
        }
    }
}

/// One request to send: `first..=last` of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The stream.
    pub key: StreamKey,
    /// First seq.
    pub first: u64,
    /// Last seq (at most [`RESEND_SPAN`] from `first`).
    pub last: u64,
}

/// What a node's streams add up to, for the status and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeGaps {
    /// Seqs missing past the grace period, still asked for.
    pub missing: u64,
    /// Seqs that came after they were asked for.
    pub repaired: u64,
    /// Seqs the node said are gone.
    pub unrecoverable: u64,
}

/// The streams of a database, as loaded by a sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streams(pub BTreeMap<StreamKey, StreamState>);

impl StreamState {
    /// Takes the seqs `seqs` (ascending, each once) as newly stored at
    /// `now_ms`. Returns whether anything changed.
    pub fn saw(&mut self, seqs: &[u64], now_ms: i64) -> bool {
        let mut changed = false;
        for [a, b] in crate::domain::runs(seqs.iter().copied()) {
            changed |= self.saw_run(a, b, now_ms);
        }
        changed
    }

    /// [`StreamState::saw`] for one run `a..=b`.
    fn saw_run(&mut self, a: u64, b: u64, now_ms: i64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(b);
            return true;
        };
        if a > highest {
            if a > highest + 1 {
                self.gaps.push(Gap {
                    first: highest + 1,
                    last: a - 1,
                    found_ms: now_ms,
                    asked_ms: None,
                    asks: 0,
                    gone_ms: None,
                });
            }
            self.highest = Some(b);
            return true;
        }
        let mut changed = false;
        if b > highest {
            self.highest = Some(b);
            changed = true;
        }
        changed | self.fill(a, b.min(highest))
    }

    /// Takes `a..=b` out of the gaps; counts what had been asked for.
    fn fill(&mut self, a: u64, b: u64) -> bool {
        let mut changed = false;
        let mut kept = Vec::with_capacity(self.gaps.len() + 1);
        for g in self.gaps.drain(..) {
            if g.last < a || g.first > b {
                kept.push(g);
                continue;
            }
            changed = true;
            let (lo, hi) = (g.first.max(a), g.last.min(b));
            if g.asks > 0 || g.gone_ms.is_some() {
                self.repaired += hi - lo + 1;
            }
            if g.first < lo {
                kept.push(g.part(g.first, lo - 1));
            }
            if g.last > hi {
                kept.push(g.part(hi + 1, g.last));
            }
        }
        self.gaps = kept;
        changed
    }

    /// Takes `seq` as a seq the node has logged (its sensor's retained
    /// state said so) without the reading being stored: the seqs above the
    /// highest stored, up to `seq` itself, are missing until they come.
    /// A stream the database has not started is left alone. Returns
    /// whether anything changed.
    pub fn saw_highest(&mut self, seq: u64, now_ms: i64) -> bool {
        match self.highest {
            Some(h) if seq > h => {
                self.gaps.push(Gap {
                    first: h + 1,
                    last: seq,
                    found_ms: now_ms,
                    asked_ms: None,
                    asks: 0,
                    gone_ms: None,
                });
                self.highest = Some(seq);
                true
            }
            _ => false,
        }
    }

    /// Takes a node's reply at `now_ms`: what it says is gone becomes
    /// unrecoverable, what it says is still in its outbox waits a full
    /// period again. Returns whether anything changed.
    pub fn answered(&mut self, reply: &ResendReply, now_ms: i64) -> bool {
        let mut changed = false;
        for &[a, b] in &reply.gone {
            let mut kept = Vec::with_capacity(self.gaps.len() + 2);
            for g in self.gaps.drain(..) {
                if g.last < a || g.first > b || g.gone_ms.is_some() {
                    kept.push(g);
                    continue;
                }
                changed = true;
                let (lo, hi) = (g.first.max(a), g.last.min(b));
                if g.first < lo {
                    kept.push(g.part(g.first, lo - 1));
                }
                kept.push(Gap {
                    gone_ms: Some(now_ms),
                    ..g.part(lo, hi)
                });
                if g.last > hi {
                    kept.push(g.part(hi + 1, g.last));
                }
            }
            self.gaps = kept;
        }
        for &[a, b] in &reply.pending {
            for g in &mut self.gaps {
                if g.last >= a && g.first <= b && g.gone_ms.is_none() {
                    g.asked_ms = Some(now_ms);
                    changed = true;
                }
            }
        }
        changed
    }
}

impl Streams {
    /// Takes newly stored rows (stream, seq, in any order) at `now_ms`,
    /// then picks what to ask for under `policy`, marking it asked.
    /// Returns the streams that changed and the requests to send.
    pub fn scan(
        &mut self,
        rows: Vec<(StreamKey, u64)>,
        now_ms: i64,
        policy: &RepairPolicy,
    ) -> (Vec<StreamKey>, Vec<Ask>) {
        let mut new: BTreeMap<StreamKey, Vec<u64>> = BTreeMap::new();
        for (key, seq) in rows {
            new.entry(key).or_default().push(seq);
        }
        let mut changed = std::collections::BTreeSet::new();
        for (key, mut seqs) in new {
            seqs.sort_unstable();
            seqs.dedup();
            if self.0.entry(key.clone()).or_default().saw(&seqs, now_ms) {
                changed.insert(key);
            }
        }
        let mut asks = Vec::new();
        let mut budget = policy.max_asked;
        for (key, state) in &mut self.0 {
            let mut asked = false;
            for g in &mut state.gaps {
                if budget == 0 || !policy.is_due(g, now_ms) {
                    continue;
                }
                let mut first = g.first;
                while first <= g.last && budget > 0 {
                    let last = g.last.min(first + RESEND_SPAN.min(budget) - 1);
                    asks.push(Ask {
                        key: key.clone(),
                        first,
                        last,
                    });
                    budget = budget.saturating_sub(last - first + 1);
                    first = last + 1;
                }
                g.asked_ms = Some(now_ms);
                g.asks += 1;
                asked = true;
            }
            if asked {
                changed.insert(key.clone());
            }
        }
        (changed.into_iter().collect(), asks)
    }

    /// Per node: what is missing past `policy.after` at `now_ms`, repaired
    /// and unrecoverable.
    pub fn by_node(&self, now_ms: i64, policy: &RepairPolicy) -> BTreeMap<String, NodeGaps> {
        let mut out: BTreeMap<String, NodeGaps> = BTreeMap::new();
        for (key, state) in &self.0 {
            let n = out.entry(key.node.clone()).or_default();
            n.repaired += state.repaired;
            for g in &state.gaps {
                if g.gone_ms.is_some() {
                    n.unrecoverable += g.len();
                } else if g.asked_ms.is_some() || policy.is_due(g, now_ms) {
                    n.missing += g.len();
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    const LOG: LogId = LogId::new(0x3f9c_2a71_d04b_e815);

    fn key(sensor: &str) -> StreamKey {
        StreamKey {
            node: "pi".into(),
            sensor: sensor.into(),
            log: LOG,
        }
    }

    fn ranges(s: &StreamState) -> Vec<(u64, u64)> {
        s.gaps.iter().map(|g| (g.first, g.last)).collect()
    }

    fn policy() -> RepairPolicy {
        RepairPolicy::after(Duration::from_mins(1))
    }

    #[test]
    fn holes_below_the_highest_seq_are_gaps_and_filling_them_splits_them() {
        let mut s = StreamState::default();
        s.saw(&[5, 6, 7], 0);
        assert_eq!((s.highest, ranges(&s)), (Some(7), vec![]));
        s.saw(&[10, 20], 0);
        assert_eq!(ranges(&s), vec![(8, 9), (11, 19)]);
        s.saw(&[8, 12, 13, 19], 0);
        assert_eq!(ranges(&s), vec![(9, 9), (11, 11), (14, 18)]);
        // Not asked for: arriving late is no repair.
        assert_eq!(s.repaired, 0);
        // What came before the first seq is not missing.
        s.saw(&[1, 2], 0);
        assert_eq!(ranges(&s), vec![(9, 9), (11, 11), (14, 18)]);
        // A run across the highest seq.
        s.saw(&[18, 19, 20, 21, 22], 0);
        assert_eq!(
            (s.highest, ranges(&s)),
            (Some(22), vec![(9, 9), (11, 11), (14, 17)])
        );
    }

    #[test]
    fn young_holes_wait_then_are_asked_for_in_spans_with_a_doubling_wait() {
        let mut streams = Streams::default();
        let rows = |seqs: &[u64]| seqs.iter().map(|&s| (key("lab"), s)).collect::<Vec<_>>();
        let p = policy();
        let (_, asks) = streams.scan(rows(&[0, 2_501]), 0, &p);
        assert!(asks.is_empty(), "too young: {asks:?}");
        let (changed, asks) = streams.scan(vec![], 60_000, &p);
        assert_eq!(changed, vec![key("lab")]);
        let spans: Vec<(u64, u64)> = asks.iter().map(|a| (a.first, a.last)).collect();
        assert_eq!(spans, vec![(1, 1_000), (1_001, 2_000), (2_001, 2_500)]);
        // Asked once: the next request waits `after`, then twice that.
        assert!(streams.scan(vec![], 119_999, &p).1.is_empty());
        assert_eq!(streams.scan(vec![], 120_000, &p).1.len(), 3);
        assert!(streams.scan(vec![], 239_999, &p).1.is_empty());
        assert_eq!(streams.scan(vec![], 240_000, &p).1.len(), 3);
        let gaps = streams.by_node(240_000, &p);
        assert_eq!(gaps["pi"].missing, 2_500);
        // The repair comes: counted as repaired, nothing missing.
        let all: Vec<u64> = (1..=2_500).collect();
        streams.scan(rows(&all), 250_000, &p);
        assert_eq!(
            streams.by_node(250_000, &p)["pi"],
            NodeGaps {
                missing: 0,
                repaired: 2_500,
                unrecoverable: 0
            }
        );
    }

    #[test]
    fn the_scan_asks_for_at_most_its_budget() {
        let mut streams = Streams::default();
        let p = RepairPolicy {
            max_asked: 1_500,
            ..policy()
        };
        streams.scan(
            vec![
                (key("a"), 0),
                (key("a"), 5_000),
                (key("b"), 0),
                (key("b"), 9),
            ],
            0,
            &p,
        );
        let (_, asks) = streams.scan(vec![], 60_000, &p);
        let asked: u64 = asks.iter().map(|a| a.last - a.first + 1).sum();
        assert_eq!(asked, 1_500, "{asks:?}");
        // What was not reached is asked for in the next scan.
        let (_, asks) = streams.scan(vec![], 60_001, &p);
        assert!(asks.iter().any(|a| a.key == key("b")), "{asks:?}");
    }

    #[test]
    fn gone_seqs_are_unrecoverable_and_pending_ones_wait_again() {
        let mut s = StreamState::default();
        s.saw(&[0, 100], 0);
        s.gaps[0].asks = 1;
        s.gaps[0].asked_ms = Some(60_000);
        let reply = ResendReply {
            sensor: "lab".into(),
            log: LOG,
            from: 1,
            to: 99,
            resent: 0,
            gone: vec![[1, 40]],
            pending: vec![[90, 99]],
        };
        assert!(s.answered(&reply, 70_000));
        assert_eq!(ranges(&s), vec![(1, 40), (41, 99)]);
        assert_eq!(s.gaps[0].gone_ms, Some(70_000));
        assert_eq!(s.gaps[1].asked_ms, Some(70_000));
        let mut streams = Streams([(key("lab"), s)].into_iter().collect());
        let p = policy();
        // The gone range is never asked for again.
        let (_, asks) = streams.scan(vec![], 10_000_000, &p);
        assert_eq!(
            asks.iter().map(|a| (a.first, a.last)).collect::<Vec<_>>(),
            vec![(41, 99)]
        );
        let n = streams.by_node(10_000_000, &p)["pi"];
        assert_eq!((n.missing, n.unrecoverable), (59, 40));
    }

    #[test]
    fn a_state_beyond_the_stored_seqs_makes_them_missing_until_they_come() {
        let mut streams = Streams::default();
        let p = policy();
        streams.scan(vec![(key("lab"), 0), (key("lab"), 1)], 0, &p);
        // A stream not started is not started by a state; an older state
        // changes nothing.
        assert!(!StreamState::default().saw_highest(9, 0));
        let lab = streams.0.get_mut(&key("lab")).expect("started");
        assert!(!lab.saw_highest(1, 0));
        assert!(lab.saw_highest(5, 0));
        assert_eq!(ranges(lab), vec![(2, 5)]);
        // The stream's own readings fill it as they come.
        streams.scan(vec![(key("lab"), 2), (key("lab"), 3)], 1_000, &p);
        assert_eq!(ranges(&streams.0[&key("lab")]), vec![(4, 5)]);
        let (_, asks) = streams.scan(vec![], 60_000, &p);
        assert_eq!(
            asks.iter().map(|a| (a.first, a.last)).collect::<Vec<_>>(),
            vec![(4, 5)]
        );
    }

    proptest! {
        /// Whatever order the seqs of a stream arrive in, the gaps are
        /// exactly the seqs between the first and the highest that have
        /// not arrived.
        #[test]
        fn gaps_are_what_has_not_arrived(
            arrivals in proptest::collection::vec(proptest::collection::vec(0_u64..300, 0..40), 1..20),
        ) {
            let mut s = StreamState::default();
            let mut seen = BTreeSet::new();
            let mut first: Option<u64> = None;
            for batch in &arrivals {
                let mut batch: Vec<u64> = batch.iter().copied().filter(|x| !seen.contains(x)).collect();
                batch.sort_unstable();
                batch.dedup();
                if first.is_none() {
                    first = batch.first().copied();
                }
                s.saw(&batch, 0);
                seen.extend(batch);
            }
            let missing: BTreeSet<u64> = s.gaps.iter().flat_map(|g| g.first..=g.last).collect();
            let expected: BTreeSet<u64> = match (first, seen.last()) {
                (Some(f), Some(&h)) => (f..=h).filter(|x| !seen.contains(x)).collect(),
                _ => BTreeSet::new(),
            };
            prop_assert_eq!(missing, expected);
            prop_assert!(s.gaps.windows(2).all(|w| w[0].last < w[1].first));
        }
    }
}
