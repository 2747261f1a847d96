//! `edgeprio dashboard`: the runner around [`crate::dashboard`], which
//! watches a log until q, SIGTERM, SIGINT or SIGHUP.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use super::signals::stop_flag;
use crate::cli::DashboardArgs;
use crate::config::Config;

/// Shows the dashboard of `--db`, or of the log the configuration at
/// `config_path` names, until the user quits or a signal stops it.
pub fn run(config_path: &Path, args: DashboardArgs) -> anyhow::Result<ExitCode> {
    let db = match args.db {
        Some(db) => db,
        None => Config::load(config_path)?.db,
    };
    let stop = stop_flag()?;
    crate::dashboard::run(&db, args.node.as_deref(), args.refresh, || {
        stop.load(Ordering::Relaxed)
    })?;
    Ok(ExitCode::SUCCESS)
}
