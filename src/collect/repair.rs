//! The collector's repairer: every few seconds a scan of its database
//! ([`Sink::repair`], see [`super::gaps`]), and the requests it picks sent
//! on the nodes' resend topics. The replies come back through the
//! collector's own subscription ([`super::Collector`]).
//!
//! It runs on a connection to the database of its own, so a scan never
//! waits behind a batch being stored, and publishes its requests on an
//! MQTT connection of its own (`<client_id>-repair`, a clean session):
//! a request lost with a connection is asked again at the next period.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::gaps::{NodeGaps, RepairPolicy};
use super::{Member, Sink};
use crate::config::MqttConfig;
use crate::domain::{ResendRequest, Topics};
use crate::publish::connection::{Backoff, publish_once};

/// What the repairer knows, for the metrics and the log.
#[derive(Debug, Default)]
pub struct RepairCounts {
    /// Per node, as of the last scan.
    nodes: Mutex<BTreeMap<String, NodeGaps>>,
    /// Requests sent (and acknowledged by the broker) since start.
    pub requests: AtomicU64,
    /// Seqs those requests asked for.
    pub asked: AtomicU64,
    /// Whether the database's collectors consume both routes and a batch
    /// collector runs (only then is anything asked for:
    /// [`super::asking`]).
    pub asking: AtomicBool,
}

impl RepairCounts {
    /// Per node, as of the last scan.
    pub fn nodes(&self) -> BTreeMap<String, NodeGaps> {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A collector's repairer.
pub struct Repairer<S: Sink> {
    /// Its own connection to the collector's database.
    pub sink: S,
    /// The broker the requests go to.
    pub mqtt: MqttConfig,
    /// The collector, as the database records it.
    pub me: Member,
    /// When to ask.
    pub policy: RepairPolicy,
    /// Shared with the metrics.
    pub counts: Arc<RepairCounts>,
}

impl<S: Sink> Repairer<S> {
    /// How often it scans: a quarter of the grace period, within 1 to 15
    /// seconds.
    pub fn every(&self) -> Duration {
        (self.policy.after / 4).clamp(Duration::from_secs(1), Duration::from_secs(15))
    }

    /// Scans and asks until the task is dropped.
    pub async fn run(mut self) {
        let every = self.every();
        let mut backoff = Backoff::new();
        let mut said_waiting = false;
        loop {
            let pause = match self.once().await {
                Ok(more) => {
                    backoff = Backoff::new();
                    if more { Duration::ZERO } else { every }
                }
                Err(e) => {
                    let pause = backoff.after(false).max(every);
                    tracing::warn!(
                        retry_in = %humantime::format_duration(pause),
                        "gap repair: {e}"
                    );
                    pause
                }
            };
            let asking = self.counts.asking.load(Relaxed);
            if !asking && !said_waiting {
                said_waiting = true;
                tracing::info!(
                    route = self.me.route.as_str(),
                    "gap repair waits for collectors of both routes on this database, the batch \
                     one running: a database that receives one route has a hole for every \
                     reading of the other, and readings are resent on the batch route"
                );
            }
            if asking && said_waiting {
                said_waiting = false;
                tracing::info!("gap repair: both routes arrive here; asking for missing readings");
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// One scan, and its requests sent; `Ok(true)` when rows are left.
    async fn once(&mut self) -> Result<bool, String> {
        let repair = self
            .sink
            .repair(crate::agent::now_ms(), self.policy, &self.me)
            .await
            .map_err(|e| e.to_string())?;
        self.counts.asking.store(repair.asking, Relaxed);
        *self
            .counts
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = repair.nodes;
        if repair.asks.is_empty() {
            return Ok(repair.more);
        }
        let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
        let messages: Vec<(String, Vec<u8>, bool)> = repair
            .asks
            .iter()
            .map(|a| {
                *per_node.entry(a.key.node.as_str()).or_default() += a.last - a.first + 1;
                let request = ResendRequest {
                    sensor: a.key.sensor.clone(),
                    log: a.key.log,
                    from: a.first,
                    to: a.last,
                };
                let payload = serde_json::to_vec(&request).expect("a request serialises");
                (
                    Topics::new(&self.mqtt.topic_prefix, &a.key.node).resend(),
                    payload,
                    false,
                )
            })
            .collect();
        for (node, seqs) in &per_node {
            tracing::info!(node, seqs, "asking for missing readings again");
        }
        let sent = messages.len();
        let acked = publish_once(
            &self.mqtt,
            &format!("{}-repair", self.me.client_id),
            messages,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| format!("cannot send {sent} resend requests: {e}"))?;
        self.counts.requests.fetch_add(acked as u64, Relaxed);
        self.counts
            .asked
            .fetch_add(per_node.values().sum::<u64>(), Relaxed);
        Ok(repair.more)
    }
}
