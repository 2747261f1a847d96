//! `edgeprio read-once`: one read of each configured sensor, printed, for
//! checking the wiring.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::sensor::{self, Resume};

/// Reads each sensor of the configuration at `config_path` once and prints
/// the result; fails when any sensor cannot be opened or read.
pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load_checked(config_path)?;
    config.require_sensors()?;
    Ok(read_once(&config))
}

fn read_once(config: &Config) -> ExitCode {
    let mut failed = 0;
    let clock: std::sync::Arc<dyn crate::clock::Clock> =
        std::sync::Arc::new(crate::clock::SystemClock::new());
    for sc in &config.sensors {
        let mut sensor = match sensor::open(sc, Resume::default(), &clock) {
            Ok(s) => s,
            Err(e) => {
                println!("{:<12} cannot open: {e}", sc.id);
                failed += 1;
                continue;
            }
        };
        match sensor::checked(sensor.range(), sensor.read()) {
            Ok(s) => println!(
                "{:<12} {:>6.1} °C {:>6.1} %RH   ({})",
                sc.id,
                s.temperature,
                s.humidity,
                sensor.describe()
            ),
            Err(e) => {
                println!("{:<12} failed: {e}   ({})", sc.id, sensor.describe());
                failed += 1;
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
