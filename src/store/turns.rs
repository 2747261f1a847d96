//! Write turns between the connections one process has to one log.
//!
//! `SQLite` lets one connection write at a time and makes the others wait
//! in its busy handler, which sleeps and polls. A gateway writes its log
//! from two connections: its consumer commits batch after batch, its
//! publisher marks what the broker acknowledged. The busy handler of the
//! publisher's connection kept missing the moment between two of the
//! consumer's transactions: measured in `benches/gateway.rs`, the
//! publisher marked nothing for seconds while the raw readings poured in,
//! so its window stayed full and nothing went out until the intake ended.
//! [`Turns`] hands the write lock over in the order it was asked for
//! (a ticket lock): with two writers, they alternate.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// A first-come, first-served turn at writing, shared by the stores of
/// one log in one process ([`super::Store::take_turns_with`]).
#[derive(Debug, Default)]
pub struct Turns {
    /// The next ticket to hand out, and the ticket whose turn it is.
    tickets: Mutex<(u64, u64)>,
    /// Woken when a turn ends.
    next: Condvar,
}

/// A turn at writing, held until dropped.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<Turns>,
}

impl Turns {
    /// A new set of turns, to share.
    pub fn new() -> Arc<Turns> {
        Arc::default()
    }

    /// Waits for this caller's turn: every caller that asked before it
    /// has had its own.
    pub fn take(self: &Arc<Self>) -> Turn {
        let mut t = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = t.0;
        t.0 += 1;
        while t.1 != mine {
            t = self.next.wait(t).unwrap_or_else(PoisonError::into_inner);
        }
        Turn {
            turns: self.clone(),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut t = self
            .turns
            .tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        t.1 += 1;
        self.turns.next.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn turns_go_in_the_order_they_were_asked_for() {
        let turns = Turns::new();
        let first = turns.take();
        let (tx, rx) = mpsc::channel();
        let mut waiting = Vec::new();
        for who in 0..3 {
            let (mine, tx) = (turns.clone(), tx.clone());
            waiting.push(std::thread::spawn(move || {
                let _turn = mine.take();
                tx.send(who).unwrap();
            }));
            // Each asks only once the one before it is waiting.
            while turns.tickets.lock().unwrap().0 < who + 2 {
                std::thread::yield_now();
            }
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "nobody writes while a turn is held"
        );
        drop(first);
        let order: Vec<u64> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(order, [0, 1, 2]);
        for w in waiting {
            w.join().unwrap();
        }
    }

    #[test]
    fn a_writer_asking_again_waits_behind_the_other() {
        // The gateway's consumer commits back to back; the publisher,
        // asking in between, goes next instead of waiting for a gap.
        let turns = Turns::new();
        let consumer = turns.take();
        let publisher = {
            let turns = turns.clone();
            std::thread::spawn(move || {
                let _t = turns.take();
                std::time::Instant::now()
            })
        };
        while turns.tickets.lock().unwrap().0 < 2 {
            std::thread::yield_now();
        }
        drop(consumer);
        let _again = turns.take();
        let asked_again = std::time::Instant::now();
        assert!(publisher.join().unwrap() <= asked_again);
    }
}
