//! `edgeprio gateway`: the paper's Gateway. Consumes the raw topics with
//! the committing consumer ([`crate::consume`]), scores and logs each batch
//! ([`crate::gateway::Gateway`], on a blocking thread), acknowledges it once
//! committed, and publishes the log's outbox on each node's topics with the
//! agent's publisher ([`crate::publish`]).

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;

use crate::agent::{Publisher as _, now_ms};
use crate::cli::GatewayArgs;
use crate::config::Config;
use crate::consume::{
    BatchLimits, Consumer, ConsumerOptions, Handled, Handler, HandlerError, Incoming,
};
use crate::gateway::{Gateway, Message, Verdict};
use crate::metrics::{Endpoint, Metrics, ServerRole, ServerSeries};
use crate::publish::{AnyPublisher, MqttPublisher, PublisherSpec};
use crate::store::{Access, AgentStatus, Store, Turns};
use crate::stream::{StreamRules, Streams};

/// How often the gateway's status row is written when no message comes:
/// the dashboard tells a live gateway from a dead one by it.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Runs the gateway with the configuration at `config_path` until SIGTERM
/// or SIGINT.
pub fn run(config_path: &Path, args: &GatewayArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(config_path)?;
    if let Some(db) = &args.db {
        config.db.clone_from(db);
    }
    config.check_files()?;
    if let Some(b) = &config.broker {
        crate::broker::start(b.listen).map_err(anyhow::Error::msg)?;
        tracing::info!(listen = %b.listen, "embedded MQTT broker running");
    }
    super::runtime()?.block_on(gateway(config, args))?;
    Ok(ExitCode::SUCCESS)
}

/// The client id of the gateway's consumer: its publisher has the
/// configured one, and the broker keeps the persistent session of the raw
/// topics under this.
pub fn consumer_id(config: &Config, args: &GatewayArgs) -> String {
    args.client_id.clone().unwrap_or_else(|| {
        let base = config.mqtt.as_ref().map_or_else(
            || format!("edgeprio-{}", config.node),
            |m| m.client_id.clone(),
        );
        format!("{base}-raw")
    })
}

async fn gateway(config: Config, args: &GatewayArgs) -> anyhow::Result<()> {
    let mqtt = config.require_broker()?.clone();
    let shutdown = super::signals::shutdown_signal()?;
    let db = config.db.clone();
    let mut store = tokio::task::spawn_blocking(move || Store::open(&db, Access::Writer))
        .await
        .context("the database thread failed")?
        .with_context(|| format!("cannot open the gateway's log {}", config.db.display()))?;
    // The consumer commits batch after batch; the publisher marks what the
    // broker acknowledged in between, in turn.
    let turns = Turns::new();
    store
        .take_turns_with(turns.clone())
        .with_context(|| format!("cannot set up the gateway's log {}", config.db.display()))?;
    let status = AgentStatus {
        node: config.node.clone(),
        running: true,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_ms: now_ms(),
        heartbeat_ms: now_ms(),
        interval_ms: i64::try_from(HEARTBEAT.as_millis()).unwrap_or(i64::MAX),
        burst: Vec::new(),
    };
    let gateway = Gateway::new(
        store,
        Streams::new(StreamRules::from_config(&config)),
        config.gateway.range,
        status,
    );
    let counters = gateway.counters().clone();
    let gateway = Arc::new(Mutex::new(gateway));
    let metrics = Metrics::new(&config);
    let endpoint = match &config.metrics {
        Some(m) => Some(Endpoint::start(m.listen, metrics.clone()).await?),
        None => None,
    };
    let mut publisher = AnyPublisher::Mqtt(Box::new(MqttPublisher::from_spec(
        PublisherSpec::of_gateway(&config, &mqtt, turns),
    )))
    .with_metrics(&metrics);
    publisher.ready();
    let filters = config.gateway.filters(&mqtt.topic_prefix);
    let consumer = Consumer::new(
        &mqtt,
        ConsumerOptions {
            client_id: consumer_id(&config, args),
            filters: filters.clone(),
            limits: BatchLimits {
                max_messages: usize::from(args.max_batch),
                ..BatchLimits::MOSQUITTO_DEFAULT
            },
            last_will: None,
            online: None,
            once: false,
        },
    );
    metrics.serve_as(ServerSeries::new(
        &consumer,
        ServerRole::Gateway(counters.clone()),
    ));
    tracing::info!(
        db = %config.db.display(),
        subscribe = ?filters,
        publish_to = %format!("{}/<node>/realtime|batch", mqtt.topic_prefix),
        "gateway running"
    );
    let beat = heartbeat(gateway.clone(), metrics.clone());
    let handler = Raw {
        gateway: gateway.clone(),
        publisher: &mut publisher,
        metrics: metrics.clone(),
    };
    let counts = consumer.run(handler, shutdown).await;
    beat.abort();
    publisher.close().await;
    if let Some(e) = endpoint {
        e.stop().await;
    }
    let stop = tokio::task::spawn_blocking(move || lock(&gateway).stop(now_ms()))
        .await
        .context("the database thread failed")?;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = stop {
        tracing::warn!("cannot mark the gateway stopped in its log: {e}");
    }
    tracing::info!(
        received = counts.received,
        realtime = load(&counters.realtime),
        batch = load(&counters.batch),
        duplicates = load(&counters.duplicates),
        rejected = counters.rejected_total(),
        "gateway stopped"
    );
    Ok(())
}

/// Writes the gateway's heartbeat every [`HEARTBEAT`], until aborted, and
/// refreshes the outbox depth the metrics show.
fn heartbeat(gateway: Arc<Mutex<Gateway>>, metrics: Metrics) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let gateway = gateway.clone();
            let beat =
                tokio::task::spawn_blocking(move || lock(&gateway).heartbeat(now_ms())).await;
            match beat {
                Ok(Ok(depth)) => metrics.set_outbox_depth(depth),
                Ok(Err(e)) => tracing::warn!("cannot write the gateway's heartbeat: {e}"),
                Err(_) => {}
            }
        }
    })
}

fn lock(g: &Mutex<Gateway>) -> std::sync::MutexGuard<'_, Gateway> {
    g.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The consumer's handler: one batch of raw messages, one transaction.
struct Raw<'p> {
    /// The blocking half, shared with the heartbeat.
    gateway: Arc<Mutex<Gateway>>,
    /// Told after each commit that the outbox has new rows.
    publisher: &'p mut AnyPublisher,
    /// The outbox depth goes here.
    metrics: Metrics,
}

impl Handler for Raw<'_> {
    async fn handle(&mut self, batch: &[Incoming]) -> Result<Handled, HandlerError> {
        // The payloads are shared buffers: the copy for the blocking
        // thread copies topics and counts references, not payloads.
        let owned: Vec<Incoming> = batch.to_vec();
        let gateway = self.gateway.clone();
        let (verdicts, depth) = tokio::task::spawn_blocking(move || {
            let messages: Vec<Message<'_>> = owned
                .iter()
                .map(|m| Message {
                    topic: m.topic(),
                    payload: m.payload(),
                    received_ms: m.received_ms(),
                })
                .collect();
            let mut g = lock(&gateway);
            let verdicts = g.handle(&messages, now_ms())?;
            Ok::<_, crate::store::StoreError>((verdicts, g.outbox_depth()))
        })
        .await
        .map_err(|e| HandlerError::new(format!("the database thread failed: {e}")))??;
        self.metrics.set_outbox_depth(depth);
        let mut handled = Handled::all(batch);
        let mut logged = false;
        for (i, v) in verdicts.iter().enumerate() {
            match v {
                Verdict::Logged(_) => logged = true,
                Verdict::Duplicate => {}
                Verdict::Rejected { kind, detail } => handled.reject(i, kind, detail.clone()),
            }
        }
        if logged {
            self.publisher.committed(&[]);
        }
        Ok(handled)
    }
}
