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
//! - [`server`]: the [`crate::consume::Handler`] that parses a batch of
//!   messages and stores it; [`hook`]: `--on-priority N --exec CMD`.
//!
//! The subscription, batching and acknowledgements are
//! [`crate::consume`]'s; the command's runner is `commands::collect`.

use std::future::Future;

pub mod group;
pub mod hook;
pub mod postgres;
pub mod server;
pub mod sqlite;

pub use hook::{Hook, HookSpec};
pub use postgres::PostgresSink;
pub use server::{CollectCounts, Collector};
pub use sqlite::SqliteSink;

use crate::domain::Received;

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

    /// Where it stores, for logs and the status (never with a password).
    fn describe(&self) -> String;
}

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

    fn describe(&self) -> String {
        match self {
            AnySink::Sqlite(s) => s.describe(),
            AnySink::Postgres(s) => s.describe(),
        }
    }
}
