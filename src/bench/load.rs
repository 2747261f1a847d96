//! The bench's load: what each simulated node publishes, and the
//! publishers that send it.
//!
//! Every (node, sensor) stream is a room: a temperature and a humidity
//! that wander within the DHT22's accuracy (the priority's dead band, so
//! noise alone is never an event), and now and then a step of 3 °C, a
//! heater switching on or off (the `sim` sensor's `heater` profile makes
//! the same kind of change). With the defaults a step is weight 2, routed
//! real-time; everything else goes to the batch route. The series of a
//! stream depends only on its index and the reading's seq, so every mode
//! of one run gets the same load.
//!
//! The publishers are closed-loop, as `JMeter`'s threads are: at most
//! [`Credit`] readings are in flight end to end (published and not yet
//! stored at the end of the pipeline), so the load runs as fast as the
//! pipeline takes it and never piles up in the broker. With a rate, they
//! also keep to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::Semaphore;

use crate::config::MqttConfig;
use crate::domain::Topics;
use crate::publish::connection::client_options;

/// The step of a heater switching, in °C: a weight of 2 at room
/// temperature with the default priority (13 % of 22 °C).
pub const STEP_C: f64 = 3.0;

/// A node's name in the bench.
pub fn node_name(n: usize) -> String {
    format!("node{n:03}")
}

/// A sensor's id in the bench.
pub fn sensor_name(s: usize) -> String {
    format!("s{s}")
}

/// One stream's series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its own random numbers, seeded by the stream's index.
    rng: ChaCha8Rng,
    /// Where the room sits.
    base_t: f64,
    /// Its humidity.
    base_h: f64,
    /// Whether the heater is on.
    heated: bool,
    /// The share of readings that switch the heater.
    events: f64,
}

impl Series {
    /// Stream `index`'s series, `events` of its readings steps.
    pub fn new(index: usize, events: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(0x6265_6e63_6800_0000 ^ index as u64);
        let base_t = 19.0 + rng.random_range(0.0..6.0);
        let base_h = 40.0 + rng.random_range(0.0..20.0);
        Self {
            rng,
            base_t,
            base_h,
            heated: false,
            events,
        }
    }

    /// The next reading's temperature and humidity, rounded as a DHT22
    /// reports them (0.1).
    pub fn reading(&mut self) -> (f64, f64) {
        if self.rng.random_bool(self.events) {
            self.heated = !self.heated;
        }
        let step = if self.heated { STEP_C } else { 0.0 };
        // Within ±0.2 °C and ±0.8 %RH: any two readings differ by less
        // than the dead band (0.5 °C, 2 %RH).
        let t = self.base_t + step + self.rng.random_range(-0.2..0.2);
        let h = self.base_h + self.rng.random_range(-0.8..0.8);
        ((t * 10.0).round() / 10.0, (h * 10.0).round() / 10.0)
    }
}

/// The end-to-end window: a publisher takes a credit for each reading,
/// and the end of the pipeline gives them back as it stores readings.
#[derive(Debug)]
pub struct Credit {
    /// Credits left.
    permits: Semaphore,
    /// Readings stored at the end, as last reported.
    stored: AtomicU64,
}

impl Credit {
    /// A window of `window` readings.
    pub fn new(window: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Semaphore::new(window),
            stored: AtomicU64::new(0),
        })
    }

    /// The end has stored `total` readings in all: what that adds comes
    /// back as credits.
    pub fn stored(&self, total: u64) {
        let before = self.stored.fetch_max(total, Ordering::AcqRel);
        if total > before {
            self.permits
                .add_permits(usize::try_from(total - before).unwrap_or(usize::MAX));
        }
    }

    /// Takes `n` credits, waiting for them at most `within`; whether it
    /// got them.
    async fn take(&self, n: u32, within: Duration) -> bool {
        match tokio::time::timeout(within, self.permits.acquire_many(n)).await {
            Ok(Ok(p)) => {
                p.forget();
                true
            }
            _ => false,
        }
    }
}

/// What the publishers share.
#[derive(Debug)]
pub struct Load {
    /// Nodes, one MQTT connection each.
    pub nodes: usize,
    /// Sensors per node.
    pub sensors: usize,
    /// The share of readings that are steps.
    pub events: f64,
    /// Readings per second in all, or as fast as the window allows.
    pub rate: Option<f64>,
    /// The topic prefix of this mode.
    pub prefix: String,
    /// A client id prefix, unique to the run.
    pub client_prefix: String,
}

/// The running publishers.
#[derive(Debug)]
pub struct Publishers {
    /// Readings handed to the MQTT client, per stream (the highest seq).
    pub sent: Arc<Vec<AtomicU64>>,
    /// Set to stop publishing.
    stop: Arc<AtomicBool>,
    /// The node tasks.
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Publishers {
    /// Starts one publisher per node on `mqtt`'s broker.
    pub fn start(load: &Arc<Load>, mqtt: &MqttConfig, credit: &Arc<Credit>) -> Self {
        let sent: Arc<Vec<AtomicU64>> = Arc::new(
            (0..load.nodes * load.sensors)
                .map(|_| AtomicU64::new(0))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..load.nodes)
            .map(|n| {
                let node = Node {
                    index: n,
                    load: load.clone(),
                    mqtt: mqtt.clone(),
                    credit: credit.clone(),
                    sent: sent.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(node.run())
            })
            .collect();
        Self { sent, stop, tasks }
    }

    /// Readings published so far, in all.
    pub fn total(&self) -> u64 {
        self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    /// Stops publishing and waits until every publish is acknowledged by
    /// the broker (or a publisher failed).
    pub async fn stop(self) -> Result<Vec<u64>, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await
                .map_err(|e| format!("a publisher panicked: {e}"))??;
        }
        Ok(self
            .sent
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect())
    }
}

/// One node's publisher.
struct Node {
    /// Its index: its name and its streams'.
    index: usize,
    /// What to publish.
    load: Arc<Load>,
    /// The broker.
    mqtt: MqttConfig,
    /// The end-to-end window.
    credit: Arc<Credit>,
    /// Per stream, the last seq handed over.
    sent: Arc<Vec<AtomicU64>>,
    /// Set to stop.
    stop: Arc<AtomicBool>,
}

/// Readings a node publishes per credit taken.
const CHUNK: u32 = 8;

impl Node {
    async fn run(self) -> Result<(), String> {
        let name = node_name(self.index);
        let id = format!("{}-{name}", self.load.client_prefix);
        let mut options = client_options(&self.mqtt, &id, None)?;
        options.set_inflight(200);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let unacked = Arc::new(AtomicU64::new(0));
        let acks = unacked.clone();
        let driver = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        acks.fetch_sub(1, Ordering::AcqRel);
                    }
                    Ok(_) => {}
                    Err(e) => return Err::<(), String>(format!("bench publisher {id}: {e}")),
                }
            }
        });
        let topic = Topics::new(&self.load.prefix, &name).raw();
        let sensors = self.load.sensors;
        let first = self.index * sensors;
        let mut series: Vec<Series> = (first..first + sensors)
            .map(|i| Series::new(i, self.load.events))
            .collect();
        let ids: Vec<String> = (0..sensors).map(sensor_name).collect();
        let per_node = self.load.rate.map(|r| r / self.load.nodes as f64);
        let began = tokio::time::Instant::now();
        let mut published = 0u64;
        let mut next = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(r) = per_node {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "a positive count of readings"
                )]
                let due = (began.elapsed().as_secs_f64() * r) as u64;
                if due <= published {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
            if !self.credit.take(CHUNK, Duration::from_millis(100)).await {
                continue;
            }
            for _ in 0..CHUNK {
                let s = next % sensors;
                next += 1;
                let seq = self.sent[first + s].load(Ordering::Relaxed) + 1;
                let (t, h) = series[s].reading();
                let payload = format!(
                    r#"{{"sensor":"{}","seq":{seq},"ts_ms":{},"temperature_c":{t:.1},"humidity_pct":{h:.1}}}"#,
                    ids[s],
                    crate::agent::now_ms()
                );
                unacked.fetch_add(1, Ordering::AcqRel);
                client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
                    .await
                    .map_err(|e| format!("bench publisher {name}: {e}"))?;
                self.sent[first + s].store(seq, Ordering::Relaxed);
                published += 1;
            }
        }
        // Every publish acknowledged before the node disconnects.
        let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
        while unacked.load(Ordering::Acquire) > 0 {
            if driver.is_finished() {
                return match driver.await {
                    Ok(Err(e)) => Err(e),
                    _ => Err(format!("bench publisher {name}: its connection ended")),
                };
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "bench publisher {name}: {} publishes not acknowledged after 60 s",
                    unacked.load(Ordering::Acquire)
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = client.disconnect().await;
        driver.abort();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PriorityParams, Route, Sample, Scorer};

    #[test]
    fn a_stream_is_the_same_in_every_mode() {
        let mut a = Series::new(7, 0.03);
        let mut b = Series::new(7, 0.03);
        let mut c = Series::new(8, 0.03);
        let xs: Vec<_> = (0..100).map(|_| a.reading()).collect();
        let ys: Vec<_> = (0..100).map(|_| b.reading()).collect();
        let zs: Vec<_> = (0..100).map(|_| c.reading()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    /// The load through the real scoring with the default priority: the
    /// steps, and only they, go real-time.
    #[test]
    fn steps_and_only_steps_go_real_time() {
        let mut scorer = Scorer::new(PriorityParams::default(), None);
        let (mut realtime, mut switches, n) = (0u64, 0u64, 20_000u64);
        let mut series = Series::new(3, 0.03);
        let mut heated = false;
        for _ in 0..n {
            let (t, h) = series.reading();
            if series.heated != heated {
                switches += 1;
                heated = series.heated;
            }
            let score = scorer.score(Sample {
                temperature: t,
                humidity: h,
            });
            if score.route == Route::Realtime {
                realtime += 1;
            }
        }
        assert_eq!(realtime, switches, "every step and nothing else");
        let share = realtime as f64 / n as f64;
        assert!((0.02..0.04).contains(&share), "real-time share {share}");
    }
}
