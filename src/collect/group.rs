//! A shared-subscription group that survives the loss of a member.
//!
//! Measured with Mosquitto 2.0.11 (tests/collect.rs): a member of
//! `$share/<group>/...` with a persistent session that dies keeps its
//! share of the route: the broker queues every n-th new message for the
//! dead member's session, and none goes to the survivors in its place.
//! (A clean session would not help: the messages in flight to a member
//! whose session ends are dropped, MQTT 5 §4.8.2.) So the members carry
//! each other's sessions:
//!
//! - every member announces itself retained on
//!   `<prefix>/collectors/<group>/<client_id>`: `online` once subscribed,
//!   `offline` as its Last Will (and on a clean stop);
//! - every member watches those topics; for each member that is offline,
//!   the online member whose client id sorts first connects under the
//!   dead member's client id (its persistent session, with what the broker
//!   queued for it) and stores what it gets into the same database;
//! - when the dead member returns, its connection takes the session back
//!   (the broker closes the carrier's), and the carrier stops: one
//!   connection per takeover, never a reconnect.
//!
//! The database stores each reading once whoever stores it, so a message
//! committed by a carrier and delivered again to the returning member
//! costs a duplicate, nothing else. [`Membership`] is the decision, pure.

use std::collections::BTreeMap;

/// The retained status topic of `client_id` in `group`.
pub fn status_topic(prefix: &str, group: &str, client_id: &str) -> String {
    format!("{prefix}/collectors/{group}/{client_id}")
}

/// The filter every member of `group` watches.
pub fn status_filter(prefix: &str, group: &str) -> String {
    format!("{prefix}/collectors/{group}/+")
}

/// Why a client id cannot be a group member's: it is a topic level of
/// the status topic.
pub fn check_member_id(client_id: &str) -> Result<(), String> {
    if client_id.is_empty() || client_id.contains(['/', '+', '#']) {
        return Err(format!(
            "the client id {client_id:?} cannot name a member of a group: it is a topic level \
             of the group's status topics, so it must be non-empty and without '/', '+' or '#' \
             (set --client-id)"
        ));
    }
    Ok(())
}

/// What one member knows of its group, from the retained status topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// This member's client id, online whatever its topic says.
    me: String,
    /// Every other member seen, and whether it said `online`.
    peers: BTreeMap<String, bool>,
}

impl Membership {
    /// A member `me` that has seen no other yet.
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            peers: BTreeMap::new(),
        }
    }

    /// `id`'s status topic said `payload` (`online`, `offline`; an empty
    /// retained message clears it: a member that left for good).
    pub fn saw(&mut self, id: &str, payload: &[u8]) {
        if id == self.me {
            return;
        }
        match payload {
            b"online" => {
                self.peers.insert(id.to_owned(), true);
            }
            b"offline" => {
                self.peers.insert(id.to_owned(), false);
            }
            _ => {
                self.peers.remove(id);
            }
        }
    }

    /// The members whose sessions this one carries: every offline member,
    /// if this one sorts first among the online ones (itself included),
    /// otherwise none: exactly one carrier per dead member.
    pub fn to_carry(&self) -> Vec<String> {
        let first_online = self
            .peers
            .iter()
            .filter(|(_, online)| **online)
            .map(|(id, _)| id.as_str())
            .chain(std::iter::once(self.me.as_str()))
            .min();
        if first_online != Some(self.me.as_str()) {
            return Vec::new();
        }
        self.peers
            .iter()
            .filter(|(_, online)| !**online)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_online_member_carries_every_dead_one() {
        let mut b = Membership::new("b");
        let mut a = Membership::new("a");
        for m in [&mut a, &mut b] {
            m.saw("a", b"online");
            m.saw("b", b"online");
            m.saw("c", b"offline");
        }
        assert_eq!(a.to_carry(), ["c"]);
        assert!(b.to_carry().is_empty());
        // a dies: b is the first online member now, and carries a and c.
        b.saw("a", b"offline");
        assert_eq!(b.to_carry(), ["a", "c"]);
        // a is back: b hands it back, and c goes to a again.
        b.saw("a", b"online");
        assert!(b.to_carry().is_empty());
        // c left for good (its retained status cleared).
        a.saw("c", b"");
        assert!(a.to_carry().is_empty());
        // A member's own topic never makes it carry itself.
        a.saw("a", b"offline");
        assert!(a.to_carry().is_empty());
    }

    #[test]
    fn member_ids_are_single_topic_levels() {
        assert!(check_member_id("collect-rt-1").is_ok());
        for bad in ["", "a/b", "a+", "#"] {
            assert!(check_member_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            status_topic("edgeprio", "g", "c1"),
            "edgeprio/collectors/g/c1"
        );
        assert_eq!(status_filter("edgeprio", "g"), "edgeprio/collectors/g/+");
    }
}
