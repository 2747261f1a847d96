//! The runners behind the subcommands, one module per command; `cli`
//! parses the command line and calls one of them. Each runner takes the
//! config path and its command's options and returns the exit status;
//! errors go up to `cli::main`, which prints them and picks the status.
//!
//! What several commands share lives here rather than in any one of them:
//! the async runtime (`runtime`) and the signals that stop a command
//! (`signals`).
//!
//! A new command is a variant of `cli::Command` with its `Args` struct in
//! `cli`, one arm in `cli::dispatch`, and one module here whose
//! `pub fn run(config_path, args) -> anyhow::Result<ExitCode>`
//! does the work; what it shares with another command goes below both.

pub mod bench;
pub mod check_config;
pub mod collect;
pub mod dashboard;
pub mod demo;
pub mod doctor;
pub mod gateway;
pub mod query;
pub mod read_once;
pub mod run;
mod signals;
pub mod tune;

use anyhow::Context as _;

/// The async runtime a command's tasks run on.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Two workers: the agent's work is on blocking threads, and a Pi Zero 2
    // has four small cores to share with everything else.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
