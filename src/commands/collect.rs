//! `edgeprio collect --route realtime|batch`: the paper's processing
//! servers. Consumes one route with the committing consumer
//! ([`crate::consume`]), optionally as a member of a shared subscription,
//! into a `SQLite` file or `PostgreSQL` ([`crate::collect`]), and
//! acknowledges each message once what it carried is committed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{CollectArgs, RouteArg};
use crate::collect::postgres::PostgresSink;
use crate::collect::sqlite::SqliteSink;
use crate::collect::{Collector, Hook, HookSpec, Sink};
use crate::config::Config;
use crate::consume::{BatchLimits, Consumer, ConsumerOptions, shared_filter};
use crate::domain::{Route, Topics};
use crate::metrics::{Endpoint, Metrics, ServerRole, ServerSeries};

/// Runs a collector with the `[mqtt]` of the configuration at
/// `config_path` until SIGTERM or SIGINT.
pub fn run(config_path: &Path, args: &CollectArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    config.check_files()?;
    super::runtime()?.block_on(collect(config, args))?;
    Ok(ExitCode::SUCCESS)
}

/// Whether `--db` names a `PostgreSQL` database rather than a file.
fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
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
    let consumer = Consumer::new(
        &mqtt,
        ConsumerOptions {
            client_id: client_id(&config, args),
            filters: vec![filter.clone()],
            limits,
            last_will: None,
        },
    );
    let metrics = Metrics::new(&config);
    let endpoint = match &config.metrics {
        Some(m) => Some(Endpoint::start(m.listen, metrics.clone()).await?),
        None => None,
    };
    let server = Server {
        consumer,
        prefix: &mqtt.topic_prefix,
        route,
        hook,
        filter: &filter,
        metrics: &metrics,
    };
    if is_postgres(&args.db) {
        let sink = PostgresSink::connect(&args.db).await?;
        server.serve(sink, shutdown).await;
    } else {
        let sink = SqliteSink::open(&args.db)
            .await
            .with_context(|| format!("cannot open the collector's database {}", args.db))?;
        server.serve(sink, shutdown).await;
    }
    if let Some(e) = endpoint {
        e.stop().await;
    }
    Ok(())
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
            ServerRole::Collect(self.route, counts.clone()),
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
