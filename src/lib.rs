//! edgeprio: a Raspberry Pi agent for DHT22 sensors that implements the
//! paper "A Study on the Improvement of Availability of Distributed
//! Processing Systems Using Edge Computing": every reading gets a
//! change-based weight priority at the edge, high-priority readings take a
//! real-time path and the rest a batch path, so central servers are not
//! flooded.
//!
//! # Layout
//!
//! - [`domain`]: the pure core (readings, validation, the weight-priority
//!   algorithm, routing, payload shapes). No I/O, no clock.
//! - [`sensor`]: sensor backends behind the [`sensor::Sensor`] trait: DHT22
//!   over GPIO (rppal), the kernel's IIO driver, and simulations.
//! - [`store`]: the `SQLite` log, which is also the MQTT outbox. Owns the schema.
//! - [`stream`]: the state of one (node, sensor) stream (scorer, next seq,
//!   restored from the log), shared by the agent and the gateway.
//! - [`agent`]: the read cycle and the timer loop that drives it, with
//!   shutdown passed in; readings the log refuses are held, carried over a
//!   reload and spilled to the runtime directory ([`agent::Held`]).
//! - [`clock`]: monotonic time, wall time and sleeping, real or virtual;
//!   wall-clock jumps and how long readings waited, on the monotonic clock.
//! - [`publish`]: MQTT publishing from the log's outbox, acknowledged row by
//!   row, and the connection every command that talks MQTT shares
//!   ([`publish::connection`]); [`broker`]: the embedded broker.
//! - [`collect`]: the processing servers, consuming a route into a
//!   database through a [`collect::Sink`].
//! - [`consume`]: the committing MQTT consumer `gateway` and `collect`
//!   share: a persistent session, batches handed to a [`consume::Handler`],
//!   acknowledgements only after the commit.
//! - [`metrics`]: the optional Prometheus endpoint (`GET /metrics`).
//! - [`config`]: the TOML configuration and its validation.
//! - [`dashboard`]: the ratatui dashboard: a query layer building `State`
//!   from the log, rendering that takes `&State`, keys mapped to actions.
//! - [`doctor`]: diagnoses of the board, GPIO access, sensors and the log.
//! - [`service`]: systemd notify: READY, STATUS, STOPPING and a watchdog fed
//!   only while read cycles complete.
//! - [`cli`]: the `edgeprio` command line: the clap definitions and the
//!   dispatch; `main.rs` only calls it.
//! - [`commands`]: one module per subcommand with its runner (`run`,
//!   `demo`, `query`, `read-once`, `check-config`, `dashboard`, `doctor`),
//!   and what several share: the async runtime and the stop signals.
//! - [`logging`]: tracing on stderr, in journald's format under systemd,
//!   held back while a dashboard owns the terminal.
//!
//! Data flows sensor -> validate -> score -> route -> commit to `SQLite` ->
//! publish; see DESIGN.md for the contracts.

pub mod agent;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod commands;
pub mod config;
pub mod consume;
pub mod dashboard;
pub mod doctor;
pub mod domain;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod plot;
pub mod publish;
pub mod sensor;
pub mod service;
pub mod store;
pub mod stream;
pub mod tune;
