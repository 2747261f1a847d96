//! When the messages a consumer holds go to its handler: a pure policy, with
//! `now` passed in, so it is tested without a broker or a runtime.
//!
//! A broker sends a client at most its in-flight limit of unacknowledged
//! `QoS` 1 messages (Mosquitto's `max_inflight_messages`, 20 by default) and
//! then waits for acknowledgements, which the consumer sends only after the
//! handler committed. A batch that waited for more messages than that would
//! wait for ever, so besides the size limits a batch also goes when its
//! oldest message has waited `max_wait`, or when nothing arrived for `idle`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a batch is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most messages in one batch. At or below the broker's in-flight limit
    /// for this client, or a full batch is never reached and every batch
    /// waits for `idle` or `max_wait` instead.
    pub max_messages: usize,
    /// Most readings in one batch (a batch-route message carries many): a
    /// bound on the size of one transaction. A single message with more
    /// readings goes alone.
    pub max_readings: usize,
    /// Longest the oldest message of a batch waits: the latency bound while
    /// messages trickle in just faster than `idle`.
    pub max_wait: Duration,
    /// A batch goes once no message arrived for this long: the broker has
    /// sent what it had (or all its in-flight limit allows).
    pub idle: Duration,
}

impl BatchLimits {
    /// Real-time mode: every message is handed over, and committed, on its
    /// own as soon as it arrives.
    pub const EACH_MESSAGE: BatchLimits = BatchLimits {
        max_messages: 1,
        max_readings: usize::MAX,
        max_wait: Duration::ZERO,
        idle: Duration::ZERO,
    };

    /// Batches for a stock Mosquitto: its default in-flight limit of 20
    /// messages, at most 10,000 readings in one transaction, no reading
    /// held back more than half a second, and a batch goes after 20 ms
    /// without a message.
    pub const MOSQUITTO_DEFAULT: BatchLimits = BatchLimits {
        max_messages: 20,
        max_readings: 10_000,
        max_wait: Duration::from_millis(500),
        idle: Duration::from_millis(20),
    };
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits::MOSQUITTO_DEFAULT
    }
}

/// One held message.
#[derive(Debug)]
struct Held<T> {
    item: T,
    /// How many readings it carries, for `max_readings`.
    readings: usize,
    /// When it arrived, for `max_wait`; kept per message because a batch cut
    /// by a size limit leaves the rest behind with their own age.
    at: Instant,
}

/// The messages received and not yet handed over, in receive order (the
/// order their acknowledgements must go in).
#[derive(Debug)]
pub struct Batcher<T> {
    /// The policy.
    limits: BatchLimits,
    /// What is held, oldest first.
    held: VecDeque<Held<T>>,
    /// The sum of `held`'s readings.
    readings: usize,
    /// When the last message arrived, for `idle`.
    last_at: Option<Instant>,
}

impl<T> Batcher<T> {
    /// An empty batcher with `limits`.
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            held: VecDeque::new(),
            readings: 0,
            last_at: None,
        }
    }

    /// Holds `item`, which carries `readings` readings and arrived `now`.
    pub fn push(&mut self, item: T, readings: usize, now: Instant) {
        self.readings = self.readings.saturating_add(readings);
        self.held.push_back(Held {
            item,
            readings,
            at: now,
        });
        self.last_at = Some(now);
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether a batch should be handed over `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|at| at <= now)
    }

    /// When the held messages become due if nothing else arrives: `None`
    /// while nothing is held; a full batch is due from its oldest message's
    /// arrival on, i.e. at once.
    pub fn deadline(&self) -> Option<Instant> {
        let oldest = self.held.front()?.at;
        if self.held.len() >= self.limits.max_messages || self.readings >= self.limits.max_readings
        {
            return Some(oldest);
        }
        let last = self.last_at.unwrap_or(oldest);
        let by_age = oldest.checked_add(self.limits.max_wait);
        let by_idle = last.checked_add(self.limits.idle);
        // An instant too far to represent is never reached.
        match (by_age, by_idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next batch, oldest first: at most `max_messages` messages and
    /// `max_readings` readings, but at least one message while any is held.
    /// The rest stays, with its own arrival times.
    pub fn take(&mut self) -> Vec<T> {
        let mut batch = Vec::new();
        let mut readings = 0usize;
        while let Some(next) = self.held.front() {
            let full = batch.len() >= self.limits.max_messages
                || (!batch.is_empty()
                    && readings.saturating_add(next.readings) > self.limits.max_readings);
            if full {
                break;
            }
            let held = self.held.pop_front().expect("front() was Some");
            readings = readings.saturating_add(held.readings);
            self.readings = self.readings.saturating_sub(held.readings);
            batch.push(held.item);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> BatchLimits {
        BatchLimits {
            max_messages: 4,
            max_readings: 100,
            max_wait: 50 * MS,
            idle: 10 * MS,
        }
    }

    #[test]
    fn nothing_held_is_never_due() {
        let b: Batcher<u32> = Batcher::new(limits());
        let t0 = Instant::now();
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
        assert!(!b.is_due(t0 + Duration::from_hours(1)));
    }

    #[test]
    fn each_message_mode_hands_over_every_message_at_once() {
        let mut b = Batcher::new(BatchLimits::EACH_MESSAGE);
        let t0 = Instant::now();
        b.push(1, 500, t0);
        assert!(b.is_due(t0));
        assert_eq!(b.take(), vec![1]);
        b.push(2, 1, t0);
        b.push(3, 1, t0);
        assert_eq!(b.take(), vec![2], "one message per batch");
        assert_eq!(b.take(), vec![3]);
        assert!(b.take().is_empty());
    }

    #[test]
    fn max_messages_makes_a_batch_due_at_once() {
        let mut b = Batcher::new(limits());
        let t0 = Instant::now();
        for i in 0..3 {
            b.push(i, 1, t0);
        }
        assert!(!b.is_due(t0), "3 of 4 messages, no time passed");
        b.push(3, 1, t0);
        assert!(b.is_due(t0));
        assert_eq!(b.take(), vec![0, 1, 2, 3]);
        assert!(b.is_empty());
    }

    #[test]
    fn take_cuts_at_max_messages_and_keeps_the_rest_in_order() {
        let mut b = Batcher::new(limits());
        let t0 = Instant::now();
        for i in 0..6 {
            b.push(i, 1, t0 + i * MS);
        }
        assert_eq!(b.take(), vec![0, 1, 2, 3]);
        assert_eq!(b.len(), 2);
        // What is left keeps its own arrival time: 4 arrived at t0 + 4 ms.
        assert_eq!(b.deadline(), Some(t0 + 5 * MS + 10 * MS));
        assert_eq!(b.take(), vec![4, 5]);
    }

    #[test]
    fn max_readings_bounds_a_batch_and_a_big_message_goes_alone() {
        let mut b = Batcher::new(limits());
        let t0 = Instant::now();
        b.push("a", 60, t0);
        assert!(!b.is_due(t0));
        b.push("b", 50, t0);
        assert!(b.is_due(t0), "110 readings held, limit 100");
        assert_eq!(b.take(), vec!["a"], "a + b would exceed 100 readings");
        assert_eq!(b.take(), vec!["b"]);
        b.push("huge", 1_000, t0);
        assert!(b.is_due(t0));
        assert_eq!(
            b.take(),
            vec!["huge"],
            "never stuck on an oversized message"
        );
    }

    #[test]
    fn idle_hands_over_what_the_broker_sent() {
        let mut b = Batcher::new(limits());
        let t0 = Instant::now();
        b.push(1, 1, t0);
        b.push(2, 1, t0 + 5 * MS);
        assert_eq!(b.deadline(), Some(t0 + 15 * MS), "10 ms after the last");
        assert!(!b.is_due(t0 + 14 * MS));
        assert!(b.is_due(t0 + 15 * MS));
        assert_eq!(b.take(), vec![1, 2]);
    }

    #[test]
    fn max_wait_bounds_latency_while_messages_trickle_in() {
        let mut b = Batcher::new(BatchLimits {
            max_messages: 1_000,
            ..limits()
        });
        let t0 = Instant::now();
        // One message every 8 ms: never 10 ms idle.
        let mut t = t0;
        let mut i = 0;
        while !b.is_due(t) {
            b.push(i, 1, t);
            i += 1;
            t += 8 * MS;
        }
        assert!(t >= t0 + 50 * MS, "due only once the oldest waited 50 ms");
        assert!(
            t < t0 + 60 * MS,
            "and not later than the next arrival after that"
        );
        assert_eq!(b.deadline(), Some(t0 + 50 * MS));
        assert_eq!(b.take().len(), i);
    }

    #[test]
    fn a_stock_broker_never_leaves_a_batch_waiting_for_more_than_it_sends() {
        // Mosquitto sends 20 unacknowledged messages, then waits: those 20
        // are a full batch, and fewer go after `idle`.
        let limits = BatchLimits::MOSQUITTO_DEFAULT;
        let mut b = Batcher::new(limits);
        let t0 = Instant::now();
        for i in 0..20 {
            b.push(i, 1, t0);
        }
        assert!(b.is_due(t0));
        assert_eq!(b.take().len(), 20);
        b.push(20, 1, t0);
        assert!(b.is_due(t0 + limits.idle));
    }
}
