//! The MQTT topics of a node (DESIGN.md, "MQTT contract"): building them
//! to publish, and reading the node back out of one received.

use super::PayloadError;
use super::json::quote;
use super::names::check_node;
use crate::domain::Route;

/// The MQTT topics of one node (DESIGN.md, "MQTT contract").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `<prefix>/<node>`, built once: every topic of the node starts so.
    base: String,
}

impl Topics {
    /// Topics under `<prefix>/<node>/`.
    pub fn new(prefix: &str, node: &str) -> Self {
        Self {
            base: format!("{prefix}/{node}"),
        }
    }

    /// The last level of the real-time topic.
    pub const REALTIME: &'static str = "realtime";

    /// The last level of the batch topic.
    pub const BATCH: &'static str = "batch";

    /// The last level of the raw topic.
    pub const RAW: &'static str = "raw";

    /// One reading per message, sent at once.
    pub fn realtime(&self) -> String {
        format!("{}/{}", self.base, Self::REALTIME)
    }

    /// JSON arrays of readings.
    pub fn batch(&self) -> String {
        format!("{}/{}", self.base, Self::BATCH)
    }

    /// The topic a route publishes on.
    pub fn route(&self, route: Route) -> String {
        match route {
            Route::Realtime => self.realtime(),
            Route::Batch => self.batch(),
        }
    }

    /// Latest reading of a sensor, retained.
    pub fn state(&self, sensor: &str) -> String {
        format!("{}/{sensor}/state", self.base)
    }

    /// The filter of every node's every sensor's state topic:
    /// `<prefix>/+/+/state`.
    pub fn every_state(prefix: &str) -> String {
        format!("{prefix}/+/+/state")
    }

    /// The node and sensor of a topic received on
    /// `<prefix>/<node>/<sensor>/state`; the node checked as
    /// [`Topics::node_of`] checks one.
    pub fn state_of<'t>(prefix: &str, topic: &'t str) -> Result<(&'t str, &'t str), PayloadError> {
        let wrong = || PayloadError::Topic {
            topic: quote(topic),
            expected: format!("\"{prefix}/<node>/<sensor>/state\""),
        };
        if topic.contains(['+', '#']) {
            return Err(wrong());
        }
        let rest = topic
            .strip_prefix(prefix)
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_suffix("/state"))
            .ok_or_else(wrong)?;
        let (node, sensor) = rest.split_once('/').ok_or_else(wrong)?;
        if sensor.is_empty() || sensor.contains('/') {
            return Err(wrong());
        }
        check_node(node).map_err(|why| PayloadError::Node {
            node: quote(node),
            why,
        })?;
        Ok((node, sensor))
    }

    /// `online` / `offline` (the Last Will), retained.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// The last levels of the resend topic.
    pub const RESEND: &'static str = "resend";

    /// The last levels of the resend reply topic.
    pub const RESEND_REPLY: &'static str = "resend/reply";

    /// Where consumers ask the node for missing seqs.
    pub fn resend(&self) -> String {
        format!("{}/{}", self.base, Self::RESEND)
    }

    /// Where the node says what it cannot send again.
    pub fn resend_reply(&self) -> String {
        format!("{}/{}", self.base, Self::RESEND_REPLY)
    }

    /// Readings without priority, for a gateway that scores them.
    pub fn raw(&self) -> String {
        format!("{}/{}", self.base, Self::RAW)
    }

    /// The filter that matches one kind of topic of every node:
    /// `<prefix>/+/<suffix>` (the gateway subscribes to `suffix` =
    /// [`Topics::RAW`], a collector to its route's).
    pub fn every_node(prefix: &str, suffix: &str) -> String {
        format!("{prefix}/+/{suffix}")
    }

    /// The node of a topic received on `<prefix>/<node>/<suffix>`. Refused
    /// ([`PayloadError::Topic`]): a topic of another shape, or with a
    /// wildcard anywhere (a broker never delivers one; a hostile client
    /// may try); refused ([`PayloadError::Node`]): an empty node, one of
    /// several levels (`a/b`), or any name the agent's config would refuse
    /// for its own `node` ([`crate::domain::check_node`]), so every reading a
    /// gateway logs carries a node an agent could have.
    pub fn node_of<'t>(
        prefix: &str,
        topic: &'t str,
        suffix: &str,
    ) -> Result<&'t str, PayloadError> {
        let wrong = || PayloadError::Topic {
            topic: quote(topic),
            expected: format!("\"{prefix}/<node>/{suffix}\""),
        };
        if topic.contains(['+', '#']) {
            return Err(wrong());
        }
        let node = topic
            .strip_prefix(prefix)
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_suffix(suffix))
            .and_then(|t| t.strip_suffix('/'))
            .ok_or_else(wrong)?;
        check_node(node).map_err(|why| PayloadError::Node {
            node: quote(node),
            why,
        })?;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_topic_names_its_node_and_sensor() {
        assert_eq!(
            Topics::state_of("edgeprio", "edgeprio/pi/lab/state"),
            Ok(("pi", "lab"))
        );
        assert_eq!(
            Topics::state_of("edgeprio", &Topics::new("edgeprio", "pi").state("lab")),
            Ok(("pi", "lab"))
        );
        for bad in [
            "edgeprio/pi/state",
            "edgeprio/pi/a/b/state",
            "edgeprio/+/lab/state",
            "other/pi/lab/state",
            "edgeprio/pi//state",
            "edgeprio/pi/lab/status",
        ] {
            assert!(Topics::state_of("edgeprio", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topics_follow_the_contract() {
        let t = Topics::new("edgeprio", "pi");
        assert_eq!(t.realtime(), "edgeprio/pi/realtime");
        assert_eq!(t.batch(), "edgeprio/pi/batch");
        assert_eq!(t.state("lab"), "edgeprio/pi/lab/state");
        assert_eq!(t.status(), "edgeprio/pi/status");
        assert_eq!(t.raw(), "edgeprio/pi/raw");
    }

    #[test]
    fn the_node_of_a_raw_topic_is_its_middle_level() {
        assert_eq!(
            Topics::node_of("edgeprio", "edgeprio/pi/raw", "raw"),
            Ok("pi")
        );
        assert_eq!(
            Topics::node_of("site/a", "site/a/pi-4.lan/raw", Topics::RAW),
            Ok("pi-4.lan"),
            "a prefix of several levels"
        );
        let t = Topics::new("edgeprio", "esp-1");
        assert_eq!(
            Topics::node_of("edgeprio", &t.raw(), Topics::RAW),
            Ok("esp-1")
        );
        assert_eq!(
            Topics::node_of("edgeprio", &t.batch(), Topics::BATCH),
            Ok("esp-1")
        );
        assert_eq!(
            Topics::every_node("edgeprio", Topics::RAW),
            "edgeprio/+/raw"
        );
    }

    #[test]
    fn topics_of_another_shape_or_with_wildcards_name_no_node() {
        for (topic, kind) in [
            ("edgeprio/+/raw", "topic"),
            ("edgeprio/#", "topic"),
            ("edgeprio/pi+/raw", "topic"),
            ("edgeprio/pi/raw/#", "topic"),
            ("other/pi/raw", "topic"),
            ("edgeprio/pi/batch", "topic"),
            ("edgeprio/pi/rawer", "topic"),
            ("edgeprioX/pi/raw", "topic"),
            ("edgeprio/raw", "topic"),
            ("edgeprio", "topic"),
            ("", "topic"),
            ("edgeprio//raw", "node"),
            ("edgeprio/a/b/raw", "node"),
            ("edgeprio/a b/raw", "node"),
            ("edgeprio/a\u{7}/raw", "node"),
        ] {
            let e = Topics::node_of("edgeprio", topic, "raw").unwrap_err();
            assert_eq!(e.kind(), kind, "{topic:?}: {e}");
        }
        let long = format!("edgeprio/{}/raw", "n".repeat(65));
        assert_eq!(
            Topics::node_of("edgeprio", &long, "raw")
                .unwrap_err()
                .kind(),
            "node"
        );
    }

    #[test]
    fn topic_errors_say_what_is_allowed() {
        let e = Topics::node_of("edgeprio", "edgeprio/+/raw", "raw").unwrap_err();
        assert_eq!(
            e.to_string(),
            "topic \"edgeprio/+/raw\" is not \"edgeprio/<node>/raw\""
        );
        let e = Topics::node_of("edgeprio", "edgeprio/a/b/raw", "raw").unwrap_err();
        assert_eq!(
            e.to_string(),
            "node \"a/b\" may not contain spaces, '/', '+' or '#' (it becomes an MQTT topic level)"
        );
    }
}
