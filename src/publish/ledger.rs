//! Which rows each packet id carries: the bookkeeping that lets a PUBACK
//! mark exactly the rows of its message, and nothing else.
//!
//! rumqttc does not return packet ids from `publish`, but it sends requests
//! in the order they were made: every message handed to the client is
//! queued here ([`Ledger::handed`]), and each `Outgoing::Publish(pkid)`
//! event takes the front of that queue ([`Ledger::sent`]). A PUBACK for
//! that pkid ([`Ledger::acked`]) then yields the message's rows, to be
//! marked published in the log. The window bounds how many rows are read
//! from the log and not yet acknowledged, so a long outage's backlog goes
//! out at the pace the broker takes it.
//!
//! Plain state: no broker, no clock (`now_ms` is passed in), no tokio.

use std::collections::{HashMap, VecDeque};

use crate::store::Acked;

/// What one published message carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The rows to mark when it is acknowledged; `None` for control
    /// messages (status, state, discovery), whose PUBACK marks nothing.
    pub rows: Option<Acked>,
}

/// `Outgoing::Publish` for a message that was never handed to the client:
/// the ledger and rumqttc disagree on what was sent, so no later pkid can
/// be trusted to name the right rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rumqttc sent a publish (packet id {pkid}) this session did not queue")]
pub struct Unqueued {
    /// The packet id rumqttc sent it with.
    pub pkid: u16,
}

/// What a PUBACK acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// A message with rows: this many left the window.
    Rows(usize),
    /// A control message: nothing to mark.
    Control,
    /// No message in flight has this pkid (a duplicate PUBACK, or one for a
    /// message of a log the agent has left): nothing to mark.
    Unknown,
}

/// One connection's packet-id-to-rows bookkeeping; see the module docs.
#[derive(Debug)]
pub struct Ledger {
    /// Most rows read from the log and not yet acknowledged.
    window_max: usize,
    /// Handed to the client, waiting for their `Outgoing::Publish(pkid)`.
    queued: VecDeque<Msg>,
    /// Sent with a packet id, waiting for the PUBACK.
    inflight: HashMap<u16, Msg>,
    /// Acknowledged rows not yet marked in the log.
    acks: Vec<Acked>,
    /// Rows read from the log and not yet acknowledged: queued, in flight,
    /// or waiting in a batch buffer (bounded by `window_max`).
    window: usize,
}

impl Ledger {
    /// An empty ledger that lets at most `window_max` rows be unacknowledged.
    pub fn new(window_max: usize) -> Self {
        Self {
            window_max,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            acks: Vec::new(),
            window: 0,
        }
    }

    /// How many more rows may be read from the log now.
    pub fn room(&self) -> usize {
        self.window_max.saturating_sub(self.window)
    }

    /// How many rows to read from the log now: the room, once it is a
    /// quarter of the window or more, or whatever room there is when no
    /// acknowledgement is awaited (none would come to free more). A
    /// backlog is then read a thousand rows a query instead of one
    /// message's worth after every PUBACK: one query, and one trip to
    /// the blocking pool, per fifty messages instead of per message.
    pub fn to_read(&self) -> usize {
        let room = self.room();
        if room >= self.window_max.div_ceil(4) || self.settled() {
            room
        } else {
            0
        }
    }

    /// Rows unacknowledged: queued, in flight or in a batch buffer.
    pub fn window(&self) -> usize {
        self.window
    }

    /// `n` rows were read from the log: they count against the window
    /// until their message is acknowledged.
    pub fn reserve(&mut self, n: usize) {
        self.window += n;
    }

    /// A message was handed to the client (in the order the client sends).
    pub fn handed(&mut self, msg: Msg) {
        self.queued.push_back(msg);
    }

    /// rumqttc sent the oldest handed message with `pkid`.
    pub fn sent(&mut self, pkid: u16) -> Result<(), Unqueued> {
        let msg = self.queued.pop_front().ok_or(Unqueued { pkid })?;
        self.inflight.insert(pkid, msg);
        Ok(())
    }

    /// The broker acknowledged `pkid` at `now_ms`: its rows leave the
    /// window and wait in [`Ledger::take_acks`] to be marked; the pkid is
    /// free for a later message.
    pub fn acked(&mut self, pkid: u16, now_ms: i64) -> Ack {
        match self.inflight.remove(&pkid) {
            None => Ack::Unknown,
            Some(Msg { rows: None }) => Ack::Control,
            Some(Msg {
                rows: Some(mut rows),
            }) => {
                rows.at_ms = now_ms;
                let n = rows.ids.len();
                self.window = self.window.saturating_sub(n);
                self.acks.push(rows);
                Ack::Rows(n)
            }
        }
    }

    /// Acknowledged messages whose rows are not yet marked in the log.
    pub fn pending_acks(&self) -> usize {
        self.acks.len()
    }

    /// The acknowledged rows to mark in the log, oldest first; the ledger
    /// forgets them.
    pub fn take_acks(&mut self) -> Vec<Acked> {
        std::mem::take(&mut self.acks)
    }

    /// Whether every handed message was acknowledged: what a stop waits for.
    pub fn settled(&self) -> bool {
        self.queued.is_empty() && self.inflight.is_empty()
    }

    /// The agent moved to another log file: the rows in flight belong to
    /// the old one, whose unpublished rows the new one holds now. Their
    /// messages stay (their packet ids still get PUBACKs) but mark nothing,
    /// and the window starts empty.
    pub fn forget_log(&mut self) {
        for msg in self.queued.iter_mut().chain(self.inflight.values_mut()) {
            msg.rows = None;
        }
        self.acks.clear();
        self.window = 0;
    }

    /// Gives back the memory a drained backlog grew.
    pub fn shrink_to_fit(&mut self) {
        self.queued.shrink_to_fit();
        self.inflight.shrink_to_fit();
        self.acks.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Route;

    fn rows(route: Route, ids: &[i64]) -> Msg {
        Msg {
            rows: Some(Acked {
                route,
                ids: ids.to_vec(),
                late: 0,
                at_ms: 0,
            }),
        }
    }

    fn control() -> Msg {
        Msg { rows: None }
    }

    fn ids(acks: &[Acked]) -> Vec<Vec<i64>> {
        acks.iter().map(|a| a.ids.clone()).collect()
    }

    #[test]
    fn packet_ids_go_to_messages_in_the_order_they_were_handed() {
        let mut l = Ledger::new(100);
        l.reserve(3);
        l.handed(rows(Route::Realtime, &[1]));
        l.handed(control());
        l.handed(rows(Route::Batch, &[2, 3]));
        l.sent(7).unwrap();
        l.sent(8).unwrap();
        l.sent(9).unwrap();
        // Acknowledged out of order: each PUBACK names its own message.
        assert_eq!(l.acked(9, 500), Ack::Rows(2));
        assert_eq!(l.acked(8, 501), Ack::Control);
        assert_eq!(l.acked(7, 502), Ack::Rows(1));
        let acks = l.take_acks();
        assert_eq!(ids(&acks), vec![vec![2, 3], vec![1]]);
        assert_eq!(
            acks.iter().map(|a| (a.route, a.at_ms)).collect::<Vec<_>>(),
            vec![(Route::Batch, 500), (Route::Realtime, 502)]
        );
        assert!(l.settled());
        assert!(l.take_acks().is_empty(), "taken once");
    }

    #[test]
    fn a_puback_marks_exactly_the_rows_of_its_message() {
        let mut l = Ledger::new(100);
        l.reserve(4);
        l.handed(rows(Route::Batch, &[10, 11]));
        l.handed(rows(Route::Batch, &[12, 13]));
        l.sent(1).unwrap();
        l.sent(2).unwrap();
        assert_eq!(l.acked(1, 5), Ack::Rows(2));
        assert_eq!(ids(&l.take_acks()), vec![vec![10, 11]]);
        // Rows 12 and 13 wait for their own PUBACK.
        assert!(!l.settled());
        assert_eq!(l.window(), 2);
    }

    #[test]
    fn an_unknown_or_repeated_pkid_marks_nothing() {
        let mut l = Ledger::new(100);
        l.reserve(1);
        l.handed(rows(Route::Realtime, &[1]));
        l.sent(4).unwrap();
        assert_eq!(l.acked(5, 1), Ack::Unknown);
        assert_eq!(l.acked(4, 2), Ack::Rows(1));
        assert_eq!(l.acked(4, 3), Ack::Unknown, "a duplicate PUBACK");
        assert_eq!(ids(&l.take_acks()), vec![vec![1]]);
        assert_eq!(l.window(), 0);
    }

    #[test]
    fn the_log_is_read_in_quarters_of_the_window_while_acks_are_awaited() {
        let mut l = Ledger::new(100);
        assert_eq!(l.to_read(), 100, "an empty window: read it all");
        l.reserve(80);
        for id in 0..4 {
            l.handed(rows(Route::Batch, &[id; 20]));
            l.sent(u16::try_from(id + 1).unwrap()).unwrap();
        }
        assert_eq!(l.room(), 20);
        assert_eq!(l.to_read(), 0, "a fifth of the window free, acks to come");
        assert_eq!(l.acked(1, 0), Ack::Rows(20));
        assert_eq!(l.to_read(), 40, "a quarter or more: read");
        assert_eq!(l.acked(2, 0), Ack::Rows(20));
        assert_eq!(l.acked(3, 0), Ack::Rows(20));
        assert_eq!(l.acked(4, 0), Ack::Rows(20));
        // Rows held in a batch buffer, nothing in flight: no PUBACK would
        // come to free the window, so whatever room there is is read.
        l.reserve(90);
        assert!(l.settled());
        assert_eq!(l.to_read(), 10);
    }

    #[test]
    fn a_publish_that_was_never_handed_is_an_error() {
        let mut l = Ledger::new(100);
        assert_eq!(l.sent(3), Err(Unqueued { pkid: 3 }));
        l.handed(control());
        l.sent(3).unwrap();
        assert_eq!(l.sent(4), Err(Unqueued { pkid: 4 }));
    }

    #[test]
    fn a_pkid_is_reused_once_acknowledged() {
        let mut l = Ledger::new(100);
        l.reserve(2);
        l.handed(rows(Route::Realtime, &[1]));
        l.sent(1).unwrap();
        assert_eq!(l.acked(1, 10), Ack::Rows(1));
        // rumqttc hands out pkid 1 again: it now names the new message.
        l.handed(rows(Route::Realtime, &[2]));
        l.sent(1).unwrap();
        assert_eq!(l.acked(1, 20), Ack::Rows(1));
        let acks = l.take_acks();
        assert_eq!(ids(&acks), vec![vec![1], vec![2]]);
        assert_eq!(acks[1].at_ms, 20);
    }

    #[test]
    fn control_messages_take_no_room_and_mark_nothing() {
        let mut l = Ledger::new(2);
        l.handed(control());
        l.handed(control());
        assert_eq!(l.room(), 2);
        l.sent(1).unwrap();
        l.sent(2).unwrap();
        assert_eq!(l.acked(1, 1), Ack::Control);
        assert_eq!(l.acked(2, 1), Ack::Control);
        assert_eq!(l.pending_acks(), 0);
        assert!(l.settled());
    }

    #[test]
    fn the_window_counts_rows_until_their_puback() {
        let mut l = Ledger::new(5);
        assert_eq!(l.room(), 5);
        l.reserve(3);
        assert_eq!(l.room(), 2);
        // Rows still in a batch buffer count too: nothing handed yet.
        l.reserve(2);
        assert_eq!(l.room(), 0);
        l.handed(rows(Route::Batch, &[1, 2, 3, 4]));
        l.sent(1).unwrap();
        assert_eq!(l.room(), 0, "sent is not acknowledged");
        assert_eq!(l.acked(1, 1), Ack::Rows(4));
        assert_eq!((l.window(), l.room()), (1, 4));
        // Never below zero, never more room than the window.
        l.handed(rows(Route::Batch, &[5, 6]));
        l.sent(2).unwrap();
        l.acked(2, 2);
        assert_eq!((l.window(), l.room()), (0, 5));
    }

    #[test]
    fn forgetting_the_log_keeps_the_pkids_but_marks_nothing() {
        let mut l = Ledger::new(10);
        l.reserve(3);
        l.handed(rows(Route::Realtime, &[1]));
        l.handed(rows(Route::Batch, &[2]));
        l.handed(rows(Route::Batch, &[3]));
        l.sent(1).unwrap();
        l.sent(2).unwrap();
        assert_eq!(l.acked(1, 1), Ack::Rows(1));
        l.forget_log();
        assert_eq!((l.window(), l.pending_acks()), (0, 0));
        // The old messages still take their pkids in order...
        l.sent(3).unwrap();
        l.reserve(1);
        l.handed(rows(Route::Realtime, &[1]));
        l.sent(4).unwrap();
        // ...and their PUBACKs mark nothing: ids 2 and 3 name other rows now.
        assert_eq!(l.acked(2, 2), Ack::Control);
        assert_eq!(l.acked(3, 3), Ack::Control);
        assert_eq!(l.acked(4, 4), Ack::Rows(1));
        let acks = l.take_acks();
        assert_eq!(ids(&acks), vec![vec![1]]);
        assert_eq!(acks[0].at_ms, 4, "the new log's row 1");
        assert!(l.settled());
    }

    #[test]
    fn a_stop_drains_until_every_message_is_acknowledged() {
        let mut l = Ledger::new(10);
        l.reserve(2);
        l.handed(rows(Route::Batch, &[1, 2]));
        // The stop's `offline`, handed last.
        l.handed(control());
        assert!(!l.settled());
        l.sent(1).unwrap();
        assert!(!l.settled(), "one still queued");
        l.sent(2).unwrap();
        assert_eq!(l.acked(2, 7), Ack::Control);
        assert!(!l.settled(), "the batch is in flight");
        assert_eq!(l.acked(1, 8), Ack::Rows(2));
        assert!(l.settled());
        assert_eq!(ids(&l.take_acks()), vec![vec![1, 2]]);
    }
}
