//! `edgeprio run`: the agent as a service. Reads the sensors every
//! interval until SIGTERM or SIGINT, reloads its configuration on SIGHUP,
//! and runs the embedded broker and the metrics endpoint when configured.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::agent::{self, RunOptions};
use crate::cli::RunArgs;
use crate::config::{self, Config, ConfigError};
use crate::publish::AnyPublisher;

/// Runs the agent with the configuration at `config_path` (its `db`
/// replaced by `--db`) until SIGTERM or SIGINT.
pub fn run(config_path: &Path, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let load = || -> Result<Config, ConfigError> {
        let mut config = Config::load(config_path)?;
        config.require_sensors()?;
        if let Some(db) = &args.db {
            config.db.clone_from(db);
        }
        config.check_files()?;
        Ok(config)
    };
    let config = load()?;
    warn_world_readable_secrets(&config);
    if let Some(b) = &config.broker {
        crate::broker::start(b.listen).map_err(anyhow::Error::msg)?;
        tracing::info!(listen = %b.listen, "embedded MQTT broker running");
    }
    super::runtime()?.block_on(run_agent(config, load))?;
    Ok(ExitCode::SUCCESS)
}

/// Says loudly when a file holding the broker password or TLS key can be
/// read by every user on the machine.
fn warn_world_readable_secrets(config: &Config) {
    for path in config::world_readable_secrets(config) {
        tracing::warn!(
            file = %path.display(),
            "this file holds a secret (MQTT password or TLS key) and is readable by every user: \
             chmod 640 it (and chgrp it to the agent's group)"
        );
    }
}

/// Runs the agent until SIGTERM or SIGINT. SIGHUP reloads the
/// configuration through `load`: a valid file stops the agent cleanly (the
/// cycle in flight committed, the broker told `offline`) and starts it
/// again with the new one, carrying over the readings the log refused (a
/// full disk); an invalid file is logged and the agent carries on with the
/// old one.
async fn run_agent(
    mut config: Config,
    load: impl Fn() -> Result<Config, ConfigError>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut held = None;
    loop {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut stop_tx = Some(stop_tx);
        let mut stop = move || {
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(());
            }
        };
        let mut next = None;
        {
            // Per configuration: its sensors label the series.
            let metrics = crate::metrics::Metrics::new(&config);
            let endpoint = match &config.metrics {
                Some(m) => Some(crate::metrics::Endpoint::start(m.listen, metrics.clone()).await?),
                None => None,
            };
            let publisher = AnyPublisher::for_config(&config).with_metrics(&metrics);
            let agent = agent::run_carrying(
                &config,
                RunOptions::from_config(&config),
                publisher,
                |r| metrics.record_cycle(r),
                async {
                    let _ = stop_rx.await;
                },
                held.take(),
            );
            tokio::pin!(agent);
            loop {
                tokio::select! {
                    done = &mut agent => {
                        held = done?.1;
                        break;
                    }
                    // STOPPING=1 only here: during a reload systemd would
                    // take it for the service stopping.
                    // A stop wins over a reload still in progress.
                    _ = term.recv() => {
                        crate::service::stopping();
                        next = None;
                        stop();
                    }
                    _ = int.recv() => {
                        crate::service::stopping();
                        next = None;
                        stop();
                    }
                    _ = hup.recv() => match load() {
                        Ok(new) => {
                            tracing::info!("SIGHUP: configuration valid; restarting the agent with it");
                            if new.broker != config.broker {
                                tracing::warn!(
                                    "the embedded broker ([broker]) keeps its old settings until \
                                     the agent restarts"
                                );
                            }
                            crate::service::reloading();
                            next = Some(new);
                            stop();
                        }
                        Err(e) => tracing::error!(
                            "SIGHUP: {e}; keeping the configuration in use"
                        ),
                    },
                }
            }
            if let Some(endpoint) = endpoint {
                // Closed before the next configuration binds its address.
                endpoint.stop().await;
            }
        }
        match (next, held.take()) {
            (Some(new), carried) => {
                config = new;
                held = carried;
            }
            (None, Some(last)) => return agent::settle(last).await,
            (None, None) => return Ok(()),
        }
    }
}
