//! The paper's processing servers (`edgeprio collect`): consume the
//! real-time or the batch route into a database, deduplicating on the
//! reading's key and acknowledging a message only once what it carried is
//! committed.
//!
//! # Layout
//!
//! - this module: the [`Sink`] trait every database implements, and what a
//!   store reports ([`Stored`]);
//! - [`sqlite`], [`postgres`]: the sinks;
//! - [`group`]: members of a shared subscription that carry a dead
//!   member's session;
//! - [`gaps`]: finding the readings the broker dropped; [`repair`]: asking
//!   the nodes for them again;
//! - [`server`]: the [`crate::consume::Handler`] that parses a batch of
//!   messages and stores it; [`hook`]: `--on-priority N --exec CMD`.
//!
//! The subscription, batching and acknowledgements are
//! [`crate::consume`]'s; the command's runner is `commands::collect`.

use std::future::Future;

pub mod gaps;
pub mod group;
pub mod hook;
pub mod postgres;
pub mod repair;
pub mod server;
pub mod sqlite;

pub use hook::{Hook, HookSpec};
pub use postgres::PostgresSink;
pub use server::{CollectCounts, Collector};
pub use sqlite::SqliteSink;

use std::collections::BTreeMap;

use crate::domain::{Received, ResendReply};
use gaps::{Ask, NodeGaps, RepairPolicy};

/// What one [`Sink::store`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Readings that were new and are now committed.
    pub inserted: u64,
    /// Readings the database already had (same key): delivery is at least
    /// once, so these are expected, not errors.
    pub duplicates: u64,
}

/// Why a sink could not store; the readings are not acknowledged and the
/// broker delivers them again.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The database cannot be reached or refused the connection.
    #[error("cannot connect to {target}: {detail}")]
    Connect {
        /// The database, without credentials.
        target: String,
        /// What the driver said.
        detail: String,
    },
    /// Creating or migrating the schema failed.
    #[error("cannot set up the schema in {target}: {detail}")]
    Schema {
        /// The database, without credentials.
        target: String,
        /// What the driver said.
        detail: String,
    },
    /// Tracking gaps (a scan, a node's reply) failed; it is tried again.
    #[error("cannot track the gaps in {target}: {detail}")]
    Gaps {
        /// The database, without credentials.
        target: String,
        /// What the driver said.
        detail: String,
    },
    /// A write failed; nothing of the call is committed.
    #[error("cannot store {readings} readings in {target}: {detail}")]
    Write {
        /// The database, without credentials.
        target: String,
        /// How many readings the failed call carried.
        readings: usize,
        /// What the driver said.
        detail: String,
    },
}

/// A database the collectors store into. Idempotent on the reading's key
/// ([`crate::domain::ReadingKey`]): storing a reading twice stores it once,
/// so redeliveries, two collectors sharing a route and repairs are safe.
pub trait Sink: Send {
    /// Commits `readings` in one transaction, received at `received_ms`
    /// (Unix ms), skipping those already stored. When it returns `Ok`,
    /// every reading of the call is durable.
    fn store(
        &mut self,
        readings: &[Received],
        received_ms: i64,
    ) -> impl Future<Output = Result<Stored, SinkError>> + Send;

    /// Finds the gaps in what the database holds since the last scan (of
    /// any collector writing it) and picks what to ask for under
    /// `policy` at `now_ms` ([`gaps`]), in one transaction.
    /// `me` is the collector scanning: the database records which routes
    /// its collectors consume, and nothing is asked for unless both have
    /// been seen within a day (a database of one route has a hole for
    /// every reading of the other).
    fn repair(
        &mut self,
        now_ms: i64,
        policy: RepairPolicy,
        me: &Member,
    ) -> impl Future<Output = Result<Repair, SinkError>> + Send;

    /// Takes the highest seqs the nodes' retained states name (without
    /// storing those readings): the seqs up to them that the database lacks
    /// are missing ([`gaps::StreamState::saw_highest`]).
    fn observe(
        &mut self,
        seen: &[(gaps::StreamKey, u64)],
        now_ms: i64,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Takes `node`'s reply to a resend request.
    fn answer(
        &mut self,
        node: &str,
        reply: &ResendReply,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Where it stores, for logs and the status (never with a password).
    fn describe(&self) -> String;
}

/// What one [`Sink::repair`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// The requests to send.
    pub asks: Vec<Ask>,
    /// Per node, what is missing, repaired and unrecoverable.
    pub nodes: BTreeMap<String, NodeGaps>,
    /// Rows scanned (new since the last scan).
    pub scanned: u64,
    /// Whether rows are left for the next scan (it read its limit).
    pub more: bool,
    /// The routes the database's collectors consumed within a day, with
    /// when a collector of each last scanned (Unix ms).
    pub routes: Vec<(String, i64)>,
    /// Whether anything may be asked for ([`asking`]).
    pub asking: bool,
}

/// A collector, as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its MQTT client id.
    pub client_id: String,
    /// The route it consumes.
    pub route: crate::domain::Route,
}

/// How long a collector counts as feeding the database after its last
/// scan, for [`Sink::repair`]'s "both routes".
pub const MEMBER_SEEN_MS: i64 = 24 * 3_600_000;

/// How long after its last scan a collector counts as running: four of
/// the longest scan periods.
pub const MEMBER_FRESH_MS: i64 = 60_000;

/// Whether a database fed `routes` (with when a collector of each last
/// scanned) may ask for missing readings at `now_ms`: it must receive both
/// routes (or every batch reading would look missing from a real-time
/// database), and a batch collector must be running, since that is the
/// route resent readings come on (while it is down, requests would only
/// fill its queue at the broker).
pub fn asking(routes: &[(String, i64)], now_ms: i64) -> bool {
    let seen = |route: crate::domain::Route| {
        routes
            .iter()
            .find(|(r, _)| r == route.as_str())
            .map(|(_, at)| *at)
    };
    seen(crate::domain::Route::Realtime).is_some()
        && seen(crate::domain::Route::Batch).is_some_and(|at| at >= now_ms - MEMBER_FRESH_MS)
}

/// `policy`, asking for nothing unless [`asking`].
pub fn policy_for(policy: RepairPolicy, asking: bool) -> RepairPolicy {
    if asking {
        policy
    } else {
        RepairPolicy {
            max_asked: 0,
            ..policy
        }
    }
}

/// The most new rows one scan reads.
pub const SCAN_ROWS: u32 = 100_000;

/// The sink `--db` names: a `PostgreSQL` URL or a `SQLite` file.
pub enum AnySink {
    /// `--db FILE`.
    Sqlite(SqliteSink),
    /// `--db postgres://...` (boxed: its connection state is large).
    Postgres(Box<PostgresSink>),
}

impl AnySink {
    /// Whether `db` names a `PostgreSQL` database rather than a file.
    pub fn is_postgres(db: &str) -> bool {
        db.starts_with("postgres://") || db.starts_with("postgresql://")
    }

    /// Connects to (or opens) what `db` names.
    pub async fn open(db: &str) -> Result<AnySink, SinkError> {
        if Self::is_postgres(db) {
            PostgresSink::connect(db)
                .await
                .map(|s| AnySink::Postgres(Box::new(s)))
        } else {
            SqliteSink::open(db).await.map(AnySink::Sqlite)
        }
    }
}

impl Sink for AnySink {
    async fn store(
        &mut self,
        readings: &[Received],
        received_ms: i64,
    ) -> Result<Stored, SinkError> {
        match self {
            AnySink::Sqlite(s) => s.store(readings, received_ms).await,
            AnySink::Postgres(s) => s.store(readings, received_ms).await,
        }
    }

    async fn repair(
        &mut self,
        now_ms: i64,
        policy: RepairPolicy,
        me: &Member,
    ) -> Result<Repair, SinkError> {
        match self {
            AnySink::Sqlite(s) => s.repair(now_ms, policy, me).await,
            AnySink::Postgres(s) => s.repair(now_ms, policy, me).await,
        }
    }

    async fn answer(
        &mut self,
        node: &str,
        reply: &ResendReply,
        now_ms: i64,
    ) -> Result<(), SinkError> {
        match self {
            AnySink::Sqlite(s) => s.answer(node, reply, now_ms).await,
            AnySink::Postgres(s) => s.answer(node, reply, now_ms).await,
        }
    }

    async fn observe(
        &mut self,
        seen: &[(gaps::StreamKey, u64)],
        now_ms: i64,
    ) -> Result<(), SinkError> {
        match self {
            AnySink::Sqlite(s) => s.observe(seen, now_ms).await,
            AnySink::Postgres(s) => s.observe(seen, now_ms).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            AnySink::Sqlite(s) => s.describe(),
            AnySink::Postgres(s) => s.describe(),
        }
    }
}
