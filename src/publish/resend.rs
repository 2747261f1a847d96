//! Serving repairs: what a consumer asks on `<prefix>/<node>/resend`
//! ([`crate::domain::ResendRequest`]) is queued here, coalesced, and handed
//! to the session in chunks its rate allows; the session reads each chunk
//! from the log and sends it on the node's batch topic, `"resent": true`.
//!
//! Safe against a flood: requests for the same seqs merge into one range
//! (a consumer asking again, several collectors asking for one gap), the
//! queue holds at most [`MAX_QUEUED`] seqs (a request that does not fit is
//! dropped and counted; the consumer asks again), and readings go out at
//! most at `[mqtt] resend_rate` per second, on the session's tick, after
//! the outbox has been pumped: fresh readings never wait behind a repair,
//! and the log is read no faster than the rate. Nothing is written to the
//! log: a resend costs reads only.
//!
//! No I/O here; the session does it ([`super::Session`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{LogId, ResendReply, ResendRequest};

/// The most seqs queued for resending, over all streams: at the default
/// rate, about four minutes of work.
pub const MAX_QUEUED: u64 = 50_000;

/// What became of a request, for the metrics' `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Queued, in part or whole.
    Queued,
    /// Every seq of it was queued already.
    Coalesced,
    /// The queue was full.
    Dropped,
    /// Not a request (refused as malformed).
    Invalid,
    /// For a node or sensor this publisher does not have.
    Unknown,
    /// For a log this publisher does not write; the agent answers that
    /// every seq of it is gone, a gateway leaves it to whoever writes it.
    OtherLog,
}

impl Outcome {
    /// Every outcome, in the order of [`ResendCounts::requests`].
    pub const ALL: [Outcome; 6] = [
        Outcome::Queued,
        Outcome::Coalesced,
        Outcome::Dropped,
        Outcome::Invalid,
        Outcome::Unknown,
        Outcome::OtherLog,
    ];

    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Coalesced => "coalesced",
            Outcome::Dropped => "dropped",
            Outcome::Invalid => "invalid",
            Outcome::Unknown => "unknown",
            Outcome::OtherLog => "other_log",
        }
    }

    fn index(self) -> usize {
        Outcome::ALL
            .iter()
            .position(|o| *o == self)
            .expect("every outcome is in ALL")
    }
}

/// What the publisher counts of repairs, for the metrics.
#[derive(Debug, Default)]
pub struct ResendCounts {
    /// Requests by [`Outcome`], indexed like [`Outcome::ALL`].
    pub requests: [AtomicU64; Outcome::ALL.len()],
    /// Readings sent again.
    pub resent: AtomicU64,
    /// Seqs answered as gone (not in the log).
    pub gone: AtomicU64,
    /// Seqs queued now.
    pub queued: AtomicU64,
}

impl ResendCounts {
    /// Counts one request's outcome.
    pub fn count(&self, outcome: Outcome) {
        self.requests[outcome.index()].fetch_add(1, Relaxed);
    }

    /// Requests with `outcome` so far.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome.index()].load(Relaxed)
    }
}

/// One chunk to serve: `from..=to` of (node, sensor) in `log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The node (a gateway serves many).
    pub node: String,
    /// The sensor.
    pub sensor: String,
    /// The log the request named.
    pub log: LogId,
    /// First seq.
    pub from: u64,
    /// Last seq.
    pub to: u64,
}

impl Chunk {
    /// The reply for this chunk, given the seqs sent again and those the
    /// log has but the broker has not acknowledged; every other seq of it
    /// up to `highest` (the log's highest seq of the sensor) is gone. Seqs
    /// above `highest` are not answered: they have not been logged yet.
    pub fn reply(&self, resent: &[u64], pending: &[u64], highest: Option<u64>) -> ResendReply {
        let top = highest.and_then(|h| (h >= self.from).then_some(h.min(self.to)));
        let gone = top.map_or_else(Vec::new, |top| {
            let mut have: Vec<u64> = resent.iter().chain(pending).copied().collect();
            have.sort_unstable();
            let mut have = have.into_iter().peekable();
            crate::domain::runs((self.from..=top).filter(|s| {
                while have.peek().is_some_and(|h| h < s) {
                    have.next();
                }
                have.peek() != Some(s)
            }))
        });
        ResendReply {
            sensor: self.sensor.clone(),
            log: self.log,
            from: self.from,
            to: self.to,
            resent: resent.len() as u64,
            gone,
            pending: crate::domain::runs(pending.iter().copied()),
        }
    }

    /// A reply that every seq is gone: the request named a log this node
    /// no longer writes.
    pub fn all_gone(&self) -> ResendReply {
        ResendReply {
            gone: vec![[self.from, self.to]],
            ..self.reply(&[], &[], None)
        }
    }
}

/// The key of a queued stream.
type Key = (String, String, LogId);

/// Requests waiting to be served, coalesced per stream, and the rate they
/// are served at.
#[derive(Debug)]
pub struct ResendQueue {
    /// Per stream, disjoint ranges `from -> to`.
    ranges: BTreeMap<Key, BTreeMap<u64, u64>>,
    /// Streams with work, in the order their first request came.
    order: VecDeque<Key>,
    /// Seqs queued in all.
    queued: u64,
    /// Readings per second.
    rate: f64,
    /// Readings that may go now (at most a second's worth).
    tokens: f64,
    /// When `tokens` was last topped up.
    topped: Option<Instant>,
    /// Shared with the metrics.
    counts: std::sync::Arc<ResendCounts>,
}

impl ResendQueue {
    /// An empty queue serving `rate` readings a second.
    pub fn new(rate: u32, counts: std::sync::Arc<ResendCounts>) -> Self {
        counts.queued.store(0, Relaxed);
        Self {
            ranges: BTreeMap::new(),
            order: VecDeque::new(),
            queued: 0,
            rate: f64::from(rate.max(1)),
            tokens: 0.0,
            topped: None,
            counts,
        }
    }

    /// Queues `request` for `node`'s seqs, merged with what is queued.
    pub fn offer(&mut self, node: &str, request: &ResendRequest) -> Outcome {
        let key = (node.to_owned(), request.sensor.clone(), request.log);
        // A stream is in `order` exactly while it has ranges queued.
        let fresh = !self.ranges.contains_key(&key);
        let ranges = self.ranges.entry(key.clone()).or_default();
        let (from, to) = (request.from, request.to);
        // What is queued already of from..=to.
        let covered: u64 = ranges
            .range(..=to)
            .filter(|&(_, &end)| end >= from)
            .map(|(&start, &end)| end.min(to) - start.max(from) + 1)
            .sum();
        let new = to - from + 1 - covered;
        let outcome = if new == 0 {
            Outcome::Coalesced
        } else if self.queued + new > MAX_QUEUED {
            Outcome::Dropped
        } else {
            // Merge every range that touches from..=to into one.
            let touching: Vec<(u64, u64)> = ranges
                .range(..=to.saturating_add(1))
                .filter(|&(_, &end)| end.saturating_add(1) >= from)
                .map(|(&s, &e)| (s, e))
                .collect();
            let (mut lo, mut hi) = (from, to);
            for (s, e) in touching {
                ranges.remove(&s);
                lo = lo.min(s);
                hi = hi.max(e);
            }
            ranges.insert(lo, hi);
            self.queued += new;
            if fresh {
                self.order.push_back(key.clone());
            }
            Outcome::Queued
        };
        if ranges.is_empty() {
            self.ranges.remove(&key);
        }
        self.counts.queued.store(self.queued, Relaxed);
        self.counts.count(outcome);
        outcome
    }

    /// Seqs queued in all.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// The next chunk to serve at `now`, of at most `max` seqs and what the
    /// rate allows: the oldest stream's lowest range first. `None` when
    /// nothing is queued or the rate allows nothing yet.
    pub fn next(&mut self, now: Instant, max: u64) -> Option<Chunk> {
        self.top_up(now);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "tokens are at most a second's worth, a u32 rate; below 1 is none"
        )]
        let allowed = if self.tokens < 1.0 {
            0
        } else {
            (self.tokens.floor() as u64).min(max)
        };
        if allowed == 0 {
            return None;
        }
        let key = self.order.front()?.clone();
        let ranges = self.ranges.get_mut(&key)?;
        let (&from, &end) = ranges.iter().next()?;
        let to = end.min(from + allowed - 1);
        ranges.remove(&from);
        if to < end {
            ranges.insert(to + 1, end);
        } else if ranges.is_empty() {
            self.ranges.remove(&key);
            self.order.pop_front();
        }
        let n = to - from + 1;
        self.queued -= n;
        self.counts.queued.store(self.queued, Relaxed);
        Some(Chunk {
            node: key.0,
            sensor: key.1,
            log: key.2,
            from,
            to,
        })
    }

    /// Charges `readings` sent (and one for the read itself) against the
    /// rate.
    pub fn spent(&mut self, readings: u64) {
        self.tokens -= (readings + 1) as f64;
    }

    /// The rate's tokens as of `now`: at most a second's worth.
    fn top_up(&mut self, now: Instant) {
        let since = self
            .topped
            .map_or(Duration::from_secs(1), |t| now.saturating_duration_since(t));
        self.topped = Some(now);
        self.tokens = (self.tokens + since.as_secs_f64() * self.rate).min(self.rate);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const LOG: LogId = LogId::new(0x3f9c_2a71_d04b_e815);

    fn req(sensor: &str, from: u64, to: u64) -> ResendRequest {
        ResendRequest {
            sensor: sensor.into(),
            log: LOG,
            from,
            to,
        }
    }

    fn queue(rate: u32) -> (ResendQueue, Arc<ResendCounts>) {
        let counts = Arc::new(ResendCounts::default());
        (ResendQueue::new(rate, counts.clone()), counts)
    }

    fn drain(q: &mut ResendQueue, now: Instant) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        while let Some(c) = q.next(now, 1_000) {
            q.spent(c.to - c.from + 1);
            out.push((c.sensor, c.from, c.to));
        }
        out
    }

    #[test]
    fn repeated_and_overlapping_requests_merge_into_one_range() {
        let (mut q, counts) = queue(10_000);
        assert_eq!(q.offer("pi", &req("lab", 10, 19)), Outcome::Queued);
        assert_eq!(q.offer("pi", &req("lab", 10, 19)), Outcome::Coalesced);
        assert_eq!(q.offer("pi", &req("lab", 12, 15)), Outcome::Coalesced);
        assert_eq!(q.offer("pi", &req("lab", 15, 25)), Outcome::Queued);
        assert_eq!(q.offer("pi", &req("lab", 26, 30)), Outcome::Queued);
        assert_eq!(q.offer("pi", &req("lab", 40, 41)), Outcome::Queued);
        assert_eq!(q.queued(), 23);
        assert_eq!(counts.requests(Outcome::Coalesced), 2);
        assert_eq!(counts.queued.load(Relaxed), 23);
        let now = Instant::now();
        assert_eq!(
            drain(&mut q, now),
            vec![("lab".into(), 10, 30), ("lab".into(), 40, 41)]
        );
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn the_queue_refuses_what_does_not_fit() {
        let (mut q, counts) = queue(100);
        let mut from = 0;
        while q.queued() + 1_000 <= MAX_QUEUED {
            assert_eq!(
                q.offer("pi", &req("lab", from, from + 999)),
                Outcome::Queued
            );
            from += 2_000;
        }
        assert_eq!(q.offer("pi", &req("lab", from, from)), Outcome::Dropped);
        assert_eq!(q.queued(), MAX_QUEUED);
        assert_eq!(counts.requests(Outcome::Dropped), 1);
        // Asking again for what is queued is still fine.
        assert_eq!(q.offer("pi", &req("lab", 0, 999)), Outcome::Coalesced);
    }

    #[test]
    fn chunks_follow_the_rate_and_streams_take_turns_in_arrival_order() {
        let (mut q, _) = queue(100);
        q.offer("pi", &req("b", 0, 499));
        q.offer("pi", &req("a", 0, 9));
        let t0 = Instant::now();
        // A second's worth at first, then what time earns.
        let c = q.next(t0, 1_000).expect("a chunk");
        assert_eq!((c.sensor.as_str(), c.from, c.to), ("b", 0, 99));
        q.spent(100);
        assert_eq!(q.next(t0, 1_000), None);
        let c = q
            .next(t0 + Duration::from_millis(500), 1_000)
            .expect("half a second's");
        assert_eq!((c.from, c.to), (100, 148));
        q.spent(49);
        let mut sent = 149;
        let mut t = t0 + Duration::from_millis(500);
        let mut order = Vec::new();
        while q.queued() > 0 {
            t += Duration::from_millis(200);
            while let Some(c) = q.next(t, 1_000) {
                q.spent(c.to - c.from + 1);
                sent += c.to - c.from + 1;
                order.push(c.sensor.clone());
            }
        }
        assert_eq!(sent, 510);
        assert_eq!(order.last().map(String::as_str), Some("a"));
        // 510 readings plus a token per read at 100/s, the first
        // second's worth at once: no faster, and no slower.
        let took = t - t0;
        assert!(
            (Duration::from_secs(4)..=Duration::from_secs(6)).contains(&took),
            "{took:?}"
        );
    }

    #[test]
    fn a_reply_names_what_is_gone_and_what_is_pending() {
        let c = Chunk {
            node: "pi".into(),
            sensor: "lab".into(),
            log: LOG,
            from: 10,
            to: 20,
        };
        let r = c.reply(&[12, 13, 17], &[18], Some(19));
        assert_eq!(r.resent, 3);
        assert_eq!(r.gone, vec![[10, 11], [14, 16], [19, 19]]);
        assert_eq!(r.pending, vec![[18, 18]]);
        // Seqs above the log's highest are not answered.
        assert_eq!(c.reply(&[], &[], Some(5)).gone, Vec::<[u64; 2]>::new());
        assert_eq!(c.reply(&[], &[], None).gone, Vec::<[u64; 2]>::new());
        assert_eq!(c.all_gone().gone, vec![[10, 20]]);
    }
}
