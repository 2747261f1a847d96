//! `edgeprio check-config`: validates the configuration file and prints a
//! summary of what it configures, secrets hidden.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::{CheckConfigArgs, CheckFor};
use crate::config::{self, Config, SensorKind, SimProfile};
use crate::sensor;

/// Validates the configuration at `config_path` for the command
/// `--for` names and prints its summary; an invalid file is the error
/// (exit 78 from `cli::main`).
pub fn run(config_path: &Path, args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load_checked(config_path)?;
    match args.for_command {
        CheckFor::Run => config.require_sensors()?,
        CheckFor::Gateway | CheckFor::Collect => drop(config.require_broker()?),
    }
    println!("{} is valid", config_path.display());
    print!("{}", describe_config(&config));
    if args.for_command == CheckFor::Gateway
        && let Some(m) = &config.mqtt
    {
        println!(
            "  gateway   subscribes to {}, range {}, publishes on {}/<node>/realtime|batch",
            config.gateway.filters(&m.topic_prefix).join(", "),
            config.gateway.range.model,
            m.topic_prefix
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One sensor of `check-config`'s summary: its backend and calibration.
fn describe_sensor(s: &config::SensorConfig) -> String {
    let what = match &s.kind {
        SensorKind::Dht22 { pin, negative } => {
            format!("dht22 on BCM {pin}, negative {}", negative.name())
        }
        SensorKind::Dht11 { pin } => format!("dht11 on BCM {pin}"),
        SensorKind::Iio {
            device: Some(d),
            negative,
            ..
        } => format!("iio at {}, negative {}", d.display(), negative.name()),
        SensorKind::Iio { name, negative, .. } => {
            format!(
                "iio named {}, negative {}",
                name.as_deref().unwrap_or("(first DHT device)"),
                negative.name()
            )
        }
        SensorKind::Sim(sim) => match &sim.profile {
            SimProfile::Heater => "sim, heater replay".to_string(),
            SimProfile::Random => format!(
                "sim, random walk (seed {}, {} failures)",
                sim.seed, sim.failure_rate
            ),
            SimProfile::Trace(p) => format!("sim, trace {}", p.display()),
        },
    };
    match sensor::offset_text(s.offset) {
        Some(offset) => format!("{what}, {offset}"),
        None => what,
    }
}

fn describe_config(c: &Config) -> String {
    let p = &c.priority;
    let mut out = format!(
        "  node      {}\n  interval  {}\n  db        {}\n  priority  threshold {}, step {}, max_weight {}, \
         realtime_at {}, combine {:?}, baseline {}, deadband {}/{}, floor {}/{}\n",
        c.node,
        humantime::format_duration(c.interval),
        c.db.display(),
        p.threshold,
        p.step,
        p.max_weight,
        p.realtime_at,
        p.combine,
        p.baseline.as_str(),
        p.deadband.temperature,
        p.deadband.humidity,
        p.floor.temperature,
        p.floor.humidity,
    )
    .replace("combine Max", "combine max")
    .replace("combine Sum", "combine sum");
    let _ = writeln!(
        out,
        "  events    {}; {}; {}",
        if c.confirm {
            "confirmed by a re-read before the real-time route"
        } else {
            "not confirmed (confirm = false)"
        },
        c.stale_after.map_or_else(
            || "no gap rule (stale_after = \"0s\")".to_string(),
            |d| format!(
                "a prev older than {} counts as none",
                humantime::format_duration(d)
            ),
        ),
        c.burst.map_or_else(
            || "no burst".to_string(),
            |b| format!(
                "burst: read every {} after an event, until quiet for {}",
                humantime::format_duration(b.interval),
                humantime::format_duration(b.hold)
            ),
        ),
    );
    for s in &c.sensors {
        let _ = writeln!(out, "  sensor    {} ({})", s.id, describe_sensor(s));
    }
    if let Some(m) = &c.mqtt {
        // The password itself is never printed: only where it comes from.
        let password = match &m.password {
            config::PasswordSource::None => "none".to_string(),
            config::PasswordSource::Inline(_) => "set in this file (hidden)".to_string(),
            config::PasswordSource::File(f) => format!("from {}", f.display()),
        };
        let _ = writeln!(
            out,
            "  mqtt      {} as {}, user {}, password {password}{}, topics {}/{}/..., \
             batch every {} or {} readings{}",
            m.url,
            config::quoted_short(&m.client_id),
            m.username.as_deref().unwrap_or("(none)"),
            if std::env::var_os(config::PASSWORD_ENV).is_some() {
                format!(" (overridden by {})", config::PASSWORD_ENV)
            } else {
                String::new()
            },
            // Bare unless it is too long to print whole.
            Some(config::quoted_short(&m.topic_prefix))
                .filter(|q| *q != format!("{:?}", m.topic_prefix))
                .unwrap_or_else(|| m.topic_prefix.clone()),
            c.node,
            humantime::format_duration(m.batch_interval),
            m.batch_max,
            if m.ha_discovery {
                ", Home Assistant discovery"
            } else {
                ""
            },
        );
    } else {
        let _ = writeln!(out, "  mqtt      none: readings stay in the outbox");
    }
    if let Some(b) = &c.broker {
        let _ = writeln!(out, "  broker    embedded, listening on {}", b.listen);
    }
    out
}
