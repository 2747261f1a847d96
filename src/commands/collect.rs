//! `edgeprio collect --route realtime|batch`: the paper's processing
//! servers. Consumes one route with the committing consumer
//! ([`crate::consume`]), optionally as a member of a shared subscription,
//! into a `SQLite` file or `PostgreSQL` ([`crate::collect`]), and
//! acknowledges each message once what it carried is committed.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{CollectArgs, RouteArg};
use crate::collect::AnySink;
use crate::collect::gaps::RepairPolicy;
use crate::collect::group::{Membership, check_member_id, status_filter, status_topic};
use crate::collect::repair::{RepairCounts, Repairer};
use crate::collect::{Collector, Hook, HookSpec, Member, Sink};
use crate::config::{Config, MqttConfig};
use crate::consume::{BatchLimits, Consumer, ConsumerOptions, shared_filter};
use crate::domain::{Route, Topics};
use crate::metrics::{Endpoint, Metrics, ServerRole, ServerSeries};
use crate::publish::connection::AbortOnDrop;
use crate::publish::connection::{self, Backoff, describe, drive};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Runs a collector with the `[mqtt]` of the configuration at
/// `config_path` until SIGTERM or SIGINT.
pub fn run(config_path: &Path, args: &CollectArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    config.check_files()?;
    super::runtime()?.block_on(collect(config, args))?;
    Ok(ExitCode::SUCCESS)
}

/// The route `--route` names.
fn route(arg: RouteArg) -> Route {
    match arg {
        RouteArg::Realtime => Route::Realtime,
        RouteArg::Batch => Route::Batch,
    }
}

/// The consumer's client id: `--client-id`, or one made from the config's
/// so that a collector per route (and group) on one machine each keep a
/// session of their own.
fn client_id(config: &Config, args: &CollectArgs) -> String {
    if let Some(id) = &args.client_id {
        return id.clone();
    }
    let base = config.mqtt.as_ref().map_or_else(
        || format!("edgeprio-{}", config.node),
        |m| m.client_id.clone(),
    );
    let route = route(args.route).as_str();
    match &args.group {
        Some(g) => format!("{base}-collect-{route}-{g}"),
        None => format!("{base}-collect-{route}"),
    }
}

async fn collect(config: Config, args: &CollectArgs) -> anyhow::Result<()> {
    let mqtt = config.require_broker()?.clone();
    let route = route(args.route);
    let filter = Topics::every_node(&mqtt.topic_prefix, route.as_str());
    let filter = match &args.group {
        Some(g) => shared_filter(g, &filter)?,
        None => filter,
    };
    let shutdown = super::signals::shutdown_signal()?;
    let hook = match (args.on_priority, &args.exec) {
        (Some(min_priority), Some(command)) => Some(Hook::start(HookSpec {
            min_priority,
            command: command.clone(),
            timeout: args.exec_timeout,
        })),
        _ => None,
    };
    let limits = match route {
        Route::Realtime => BatchLimits::EACH_MESSAGE,
        Route::Batch => BatchLimits {
            max_messages: usize::from(args.max_batch),
            ..BatchLimits::MOSQUITTO_DEFAULT
        },
    };
    let client_id = client_id(&config, args);
    let group = match &args.group {
        Some(g) => {
            check_member_id(&client_id).map_err(anyhow::Error::msg)?;
            Some(Group {
                name: g.clone(),
                status: status_topic(&mqtt.topic_prefix, g, &client_id),
            })
        }
        None => None,
    };
    let mut filters = vec![
        filter.clone(),
        Topics::every_node(&mqtt.topic_prefix, Topics::RESEND_REPLY),
    ];
    // The batch collector also reads every sensor's retained state (its
    // newest reading) for the stream's highest seq, so that a hole at the
    // end of a stream that stopped shows too (a group shares it like the
    // route).
    if route == Route::Batch {
        let states = Topics::every_state(&mqtt.topic_prefix);
        filters.push(match &args.group {
            Some(g) => shared_filter(g, &states)?,
            None => states,
        });
    }
    let options = ConsumerOptions {
        client_id: client_id.clone(),
        filters,
        limits,
        last_will: group
            .as_ref()
            .map(|g| LastWill::new(g.status.clone(), "offline", QoS::AtLeastOnce, true)),
        online: group.as_ref().map(|g| (g.status.clone(), "online".into())),
        once: false,
    };
    let consumer = Consumer::new(&mqtt, options.clone());
    let metrics = Metrics::new(&config);
    let endpoint = match &config.metrics {
        Some(m) => Some(Endpoint::start(m.listen, metrics.clone()).await?),
        None => None,
    };
    let sink = AnySink::open(&args.db).await?;
    let repair_counts = Arc::new(RepairCounts::default());
    let repairer = repairer(&mqtt, args, &client_id, route, repair_counts.clone()).await?;
    let repairing = AbortOnDrop(tokio::spawn(repairer.run()));
    let carrier = group.as_ref().map(|g| {
        tokio::spawn(carry_the_dead(Carry {
            mqtt: mqtt.clone(),
            watch: status_filter(&mqtt.topic_prefix, &g.name),
            me: client_id.clone(),
            options: options.clone(),
            db: args.db.clone(),
            prefix: mqtt.topic_prefix.clone(),
            route,
        }))
    });
    let server = Server {
        consumer,
        prefix: &mqtt.topic_prefix,
        route,
        hook,
        filter: &filter,
        metrics: &metrics,
        repair: repair_counts,
    };
    server.serve(sink, shutdown).await;
    drop(repairing);
    if let Some(c) = carrier {
        c.abort();
    }
    if let Some(g) = &group {
        say_offline(&mqtt, &client_id, &g.status).await;
    }
    if let Some(e) = endpoint {
        e.stop().await;
    }
    Ok(())
}

/// The collector's repairer, on a database connection of its own.
async fn repairer(
    mqtt: &MqttConfig,
    args: &CollectArgs,
    client_id: &str,
    route: Route,
    counts: Arc<RepairCounts>,
) -> anyhow::Result<Repairer<AnySink>> {
    let repairer = Repairer {
        sink: AnySink::open(&args.db).await?,
        mqtt: mqtt.clone(),
        me: Member {
            client_id: client_id.to_owned(),
            route,
        },
        policy: RepairPolicy::after(
            args.repair_after
                .unwrap_or_else(|| mqtt.batch_interval.saturating_mul(3)),
        ),
        counts,
    };
    tracing::info!(
        repair_after = %humantime::format_duration(repairer.policy.after),
        scan_every = %humantime::format_duration(repairer.every()),
        "gap repair on"
    );
    Ok(repairer)
}

/// This collector's shared group.
struct Group {
    /// `--group`.
    name: String,
    /// Its retained status topic in the group.
    status: String,
}

/// What the task that carries dead members' sessions needs.
struct Carry {
    /// The broker.
    mqtt: MqttConfig,
    /// The group's status filter.
    watch: String,
    /// This member's client id.
    me: String,
    /// This member's consumer options: a carrier uses the same, under the
    /// dead member's id.
    options: ConsumerOptions,
    /// `--db`: each carrier opens its own connection.
    db: String,
    /// The topic prefix.
    prefix: String,
    /// The route.
    route: Route,
}

/// Watches the group's status topics and carries the session of every
/// member that is offline while this one is the first online
/// ([`Membership::to_carry`]), until it is back (see
/// [`crate::collect::group`]).
async fn carry_the_dead(carry: Carry) {
    let mut membership = Membership::new(&carry.me);
    let mut carried: BTreeMap<String, (oneshot::Sender<()>, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    let mut backoff = Backoff::new();
    loop {
        let opts =
            match connection::client_options(&carry.mqtt, &format!("{}-watch", carry.me), None) {
                Ok(mut o) => {
                    o.set_clean_session(true);
                    o
                }
                Err(e) => {
                    tracing::warn!("group watch: {e}");
                    tokio::time::sleep(backoff.after(false)).await;
                    continue;
                }
            };
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let (mut events, _driver) = drive(eventloop, None);
        if client
            .subscribe(carry.watch.clone(), QoS::AtLeastOnce)
            .await
            .is_err()
        {
            tokio::time::sleep(backoff.after(false)).await;
            continue;
        }
        let mut connected = false;
        while let Some(ev) = events.recv().await {
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => connected = true,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let id = p.topic.rsplit('/').next().unwrap_or_default();
                    membership.saw(id, &p.payload);
                    reconcile(&carry, &membership, &mut carried);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("group watch: {}", describe(&e, &carry.mqtt));
                    break;
                }
            }
        }
        tokio::time::sleep(backoff.after(connected)).await;
    }
}

/// Starts a carrier for each member to carry that has none running, and
/// stops those no longer to carry.
fn reconcile(
    carry: &Carry,
    membership: &Membership,
    carried: &mut BTreeMap<String, (oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
) {
    let want = membership.to_carry();
    let gone: Vec<String> = carried
        .keys()
        .filter(|id| !want.contains(id))
        .cloned()
        .collect();
    for id in gone {
        if let Some((stop, _)) = carried.remove(&id) {
            tracing::info!(member = %id, "the member is back: handing its session back");
            let _ = stop.send(());
        }
    }
    // A carrier whose connection ended (the broker gave the session to
    // someone else) is started again while its member is still offline.
    carried.retain(|_, (_, task)| !task.is_finished());
    for id in want {
        if carried.contains_key(&id) {
            continue;
        }
        tracing::warn!(
            member = %id,
            "a member of the group is offline: carrying its session (what the broker queued \
             for it) until it is back"
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ConsumerOptions {
            client_id: id.clone(),
            last_will: None,
            online: None,
            once: true,
            ..carry.options.clone()
        };
        let (mqtt, db, prefix, route) = (
            carry.mqtt.clone(),
            carry.db.clone(),
            carry.prefix.clone(),
            carry.route,
        );
        let task = tokio::spawn(async move {
            let sink = match AnySink::open(&db).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot carry {}: {e}", options.client_id);
                    return;
                }
            };
            let consumer = Consumer::new(&mqtt, options);
            let collector = Collector::new(sink, &prefix, route, None);
            consumer
                .run(collector, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        carried.insert(id, (stop, task));
    }
}

/// Publishes `offline` retained on a clean stop (the Last Will only goes
/// out when the connection is lost).
async fn say_offline(mqtt: &MqttConfig, client_id: &str, topic: &str) {
    let said = connection::publish_once(
        mqtt,
        &format!("{client_id}-bye"),
        vec![(topic.to_owned(), b"offline".to_vec(), true)],
        std::time::Duration::from_secs(3),
    )
    .await;
    if let Err(e) = said {
        tracing::debug!("could not say offline on {topic}: {e}");
    }
}

/// A collector about to run, whichever its sink.
struct Server<'a> {
    /// The route's consumer.
    consumer: Consumer,
    /// The topic prefix: a message's node is its topic's.
    prefix: &'a str,
    /// The route consumed.
    route: Route,
    /// `--exec`, if asked for.
    hook: Option<Hook>,
    /// The subscription, for the log.
    filter: &'a str,
    /// Where its series go.
    metrics: &'a Metrics,
    /// What its repairer counts.
    repair: Arc<RepairCounts>,
}

impl Server<'_> {
    async fn serve<S: Sink>(self, sink: S, shutdown: impl Future<Output = ()> + Send) {
        tracing::info!(
            route = self.route.as_str(),
            subscribe = self.filter,
            db = %sink.describe(),
            "collector running"
        );
        let collector = Collector::new(sink, self.prefix, self.route, self.hook);
        let counts = collector.counts();
        self.metrics.serve_as(ServerSeries::new(
            &self.consumer,
            ServerRole::Collect(self.route, counts.clone(), self.repair.clone()),
        ));
        let totals = self.consumer.run(collector, shutdown).await;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            received = totals.received,
            inserted = load(&counts.inserted),
            duplicates = load(&counts.duplicates),
            rejected = load(&counts.rejected),
            "collector stopped"
        );
    }
}
