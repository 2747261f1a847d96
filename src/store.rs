//! The `SQLite` log: the one place that owns the schema (DESIGN.md, "`SQLite`
//! log"). The agent writes it, `query` and the dashboard read it, and later
//! the publisher drains it: the log is also the MQTT outbox.
//!
//! Calls block: use the store from a blocking thread, never from an async
//! task.
//!
//! # Troubleshooting
//!
//! - "is not a `SQLite` database": `db` points at some other file; move it
//!   away or point `db` elsewhere. edgeprio never overwrites it.
//! - "database is locked": another process holds a write transaction longer
//!   than the busy timeout (5 s); usually a `sqlite3` shell left inside
//!   `BEGIN`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior, params};
use thiserror::Error;

use crate::domain::{LogId, Reading, Route, Sample, SensorError};

mod gateway;
mod high_water;
#[cfg(test)]
mod identity_tests;
mod integrity;
mod lost;
mod retention;
mod rows;
mod turns;
mod window;

pub use turns::{Turn, Turns};

pub use gateway::{Assigned, GatewayRow};
pub use integrity::{FULL_CHECK_UP_TO, FileCheck};
pub use lost::Loss;
pub use retention::{Housekeeping, PassReport, Retention, Space};
pub use rows::{BadRow, MAX_SEQ, SKIPPED_MS, next_seq};
pub use window::{Bucket, RouteCounts, Snapshot, StoredError};

/// `PRAGMA application_id` of an edgeprio log ("EDPR"): tells our files
/// from other `SQLite` files.
pub(crate) const APPLICATION_ID: i32 = 0x4544_5052;

/// Forward migrations; `MIGRATIONS[i]` takes `user_version` from i to i+1.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE readings (
        id                 INTEGER PRIMARY KEY,
        node               TEXT    NOT NULL,
        sensor             TEXT    NOT NULL,
        seq                INTEGER NOT NULL CHECK (seq >= 0),
        ts_ms              INTEGER NOT NULL,
        temperature_c      REAL    NOT NULL CHECK (temperature_c BETWEEN -40 AND 80),
        humidity_pct       REAL    NOT NULL CHECK (humidity_pct BETWEEN 0 AND 100),
        weight_temperature INTEGER NOT NULL CHECK (weight_temperature >= 0),
        weight_humidity    INTEGER NOT NULL CHECK (weight_humidity >= 0),
        priority           INTEGER NOT NULL CHECK (priority >= 0),
        route              TEXT    NOT NULL CHECK (route IN ('realtime', 'batch')),
        published_ms       INTEGER,
        UNIQUE (node, sensor, seq)
    );
    CREATE INDEX readings_ts ON readings (ts_ms);
    CREATE INDEX readings_outbox ON readings (node, id) WHERE published_ms IS NULL;
    CREATE TABLE sensor_errors (
        id     INTEGER PRIMARY KEY,
        ts_ms  INTEGER NOT NULL,
        node   TEXT    NOT NULL,
        sensor TEXT    NOT NULL,
        kind   TEXT    NOT NULL CHECK (kind IN ('timeout', 'checksum', 'range', 'spike', 'io')),
        detail TEXT    NOT NULL
    );
    CREATE INDEX sensor_errors_ts ON sensor_errors (ts_ms);
    CREATE TABLE agent_status (
        node         TEXT    PRIMARY KEY,
        state        TEXT    NOT NULL CHECK (state IN ('running', 'stopped')),
        pid          INTEGER NOT NULL,
        version      TEXT    NOT NULL,
        started_ms   INTEGER NOT NULL,
        heartbeat_ms INTEGER NOT NULL,
        interval_ms  INTEGER NOT NULL,
        outbox_depth INTEGER NOT NULL
    );",
    // 2: the publisher's view of the broker, for the dashboard and doctor.
    "ALTER TABLE agent_status ADD COLUMN broker_state TEXT NOT NULL DEFAULT 'disabled'
        CHECK (broker_state IN ('disabled', 'connecting', 'connected', 'disconnected'));
    ALTER TABLE agent_status ADD COLUMN broker_error TEXT;
    ALTER TABLE agent_status ADD COLUMN broker_since_ms INTEGER;
    ALTER TABLE agent_status ADD COLUMN last_ack_ms INTEGER;
    ALTER TABLE agent_status ADD COLUMN published_realtime INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agent_status ADD COLUMN published_batch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agent_status ADD COLUMN published_late INTEGER NOT NULL DEFAULT 0;",
    // 3: per-minute totals of each sensor, so a window's routing split and
    // a long chart read a few thousand small rows instead of every reading
    // (see `window`). `insert_readings` adds to them in the readings'
    // transaction (one upsert per minute of a batch: a trigger's upsert per
    // row halved bulk inserts); a trigger takes a deleted reading back out,
    // and a minute left empty goes. `max_priority` and `last_ts_ms` are not
    // lowered by a delete: deletes take whole old minutes (retention).
    "CREATE TABLE readings_minute (
        node            TEXT    NOT NULL,
        sensor          TEXT    NOT NULL,
        minute          INTEGER NOT NULL,
        realtime        INTEGER NOT NULL,
        batch           INTEGER NOT NULL,
        sum_temperature REAL    NOT NULL,
        sum_humidity    REAL    NOT NULL,
        max_priority    INTEGER NOT NULL,
        last_ts_ms      INTEGER NOT NULL,
        PRIMARY KEY (node, sensor, minute)
    ) WITHOUT ROWID;
    INSERT INTO readings_minute
        SELECT node, sensor, ts_ms / 60000, sum(route = 'realtime'), sum(route = 'batch'),
               sum(temperature_c), sum(humidity_pct), max(priority), max(ts_ms)
        FROM readings GROUP BY node, sensor, ts_ms / 60000;
    CREATE TRIGGER readings_minute_delete AFTER DELETE ON readings BEGIN
        UPDATE readings_minute SET
            realtime = realtime - (OLD.route = 'realtime'),
            batch = batch - (OLD.route = 'batch'),
            sum_temperature = sum_temperature - OLD.temperature_c,
            sum_humidity = sum_humidity - OLD.humidity_pct
        WHERE node = OLD.node AND sensor = OLD.sensor AND minute = OLD.ts_ms / 60000;
        DELETE FROM readings_minute
        WHERE node = OLD.node AND sensor = OLD.sensor AND minute = OLD.ts_ms / 60000
          AND realtime + batch = 0;
    END;",
    // 4: retention and disk space (see `retention`): what the log takes on
    // disk and what is left, written with each heartbeat, and what
    // retention deleted, counted in the deletes' own transactions.
    "ALTER TABLE agent_status ADD COLUMN db_bytes INTEGER;
    ALTER TABLE agent_status ADD COLUMN db_free_bytes INTEGER;
    ALTER TABLE agent_status ADD COLUMN disk_free_bytes INTEGER;
    ALTER TABLE agent_status ADD COLUMN last_prune_ms INTEGER;
    ALTER TABLE agent_status ADD COLUMN pruned_readings INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agent_status ADD COLUMN shed_readings INTEGER NOT NULL DEFAULT 0;",
    // 5: readings the agent had to give up, per sensor and seq range (see
    // `lost`): a consumer's gap with a row here was lost at the source.
    "CREATE TABLE lost_readings (
        id        INTEGER PRIMARY KEY,
        ts_ms     INTEGER NOT NULL,
        node      TEXT    NOT NULL,
        sensor    TEXT    NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq  INTEGER NOT NULL CHECK (last_seq >= first_seq),
        count     INTEGER NOT NULL,
        reason    TEXT    NOT NULL
    );",
    // 6: the log's identity (README, "The log's identity"): a random id
    // drawn once, carried by every reading on the wire, so that the seqs of
    // a new log (which start at 0 again) are never taken for those of an
    // earlier one. `file_*` is the file it was drawn for: a copy (a
    // restored backup) opened at the path gets an id of its own. Only the
    // agent writes it; `replaced_*` says what the agent last found at its
    // path while it ran (the dashboard and doctor show it).
    "CREATE TABLE log_identity (
        one            INTEGER PRIMARY KEY CHECK (one = 1),
        log_id         TEXT    NOT NULL
                       CHECK (length(log_id) = 16 AND NOT log_id GLOB '*[^0-9a-f]*'),
        since_ms       INTEGER NOT NULL,
        file_dev       INTEGER,
        file_ino       INTEGER,
        file_btime_ns  INTEGER,
        replaced_ms    INTEGER,
        replaced       TEXT
    );
    INSERT INTO log_identity (one, log_id, since_ms)
        VALUES (1, lower(hex(randomblob(8))), CAST(unixepoch('subsec') * 1000 AS INTEGER));",
    // 7: whether the kernel said the wall clock was synchronized when the
    // reading was taken (README, "Clock jumps"): 1 or 0, NULL when unknown
    // and for the rows from before.
    "ALTER TABLE readings ADD COLUMN clock_synced INTEGER CHECK (clock_synced IN (0, 1));",
    // 8: the losses of one (node, sensor) found without reading the others'
    // (`last_lost_seq`): a gateway's log holds many nodes.
    "CREATE INDEX lost_readings_stream ON lost_readings (node, sensor, last_seq);",
    // 9: what a gateway filled in for a raw reading (README, "The gateway"):
    // NULL when the sender gave everything (and for every agent row),
    // otherwise the fields the gateway assigned ([`Assigned`]).
    "ALTER TABLE readings ADD COLUMN assigned TEXT;",
    // 10: the sensors in burst (`[priority] burst`), for the dashboard and
    // `agent_status` readers: their ids, comma-separated; NULL for none.
    "ALTER TABLE agent_status ADD COLUMN burst TEXT;",
];

/// The first schema version with the log's identity (`log_identity`).
const LOG_IDENTITY_SCHEMA: i64 = 6;

/// The schema version this build writes.
#[expect(clippy::cast_possible_wrap, reason = "a handful of migrations")]
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The write-ahead log a busy log's connections let grow before they copy
/// it into the database (`PRAGMA wal_autocheckpoint`, 1,000 pages by
/// default): 32 MiB. A gateway's batch of 1,000 readings over 1,000
/// streams dirties about one index page per stream, the same pages batch
/// after batch; checkpointing every 8,192 pages copies each of them once
/// per eight batches instead of once per batch (`cargo bench --bench
/// store`, `gateway_1000_over_1000_streams_commit_and_mark`: about a third
/// less time). The file is cut back to `journal_size_limit` afterwards.
pub const BUSY_CHECKPOINT_PAGES: i64 = 8_192;

/// An outbox at least this deep is a backlog whose drain is worth giving
/// memory back after (see [`Store::release_memory`]).
pub const DRAINED_FROM: u64 = 10_000;

/// ... and it has drained once it is below this.
pub const DRAINED_BELOW: usize = 100;

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the WAL file is cut back to after a checkpoint: a burst (a long
/// outage's backlog, a vacuum) must not leave a large file behind.
const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// Why the log could not be opened or used.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The directory that should hold the file does not exist.
    #[error(
        "cannot create the log {path}: directory {dir} does not exist; create it \
         (mkdir -p {dir}) or set `db` / --db to a file in an existing directory"
    )]
    MissingDir {
        /// The database file.
        path: PathBuf,
        /// Its missing parent.
        dir: PathBuf,
    },
    /// The file or its directory cannot be written.
    #[error(
        "cannot write the log {path}: {reason}; the agent needs write access to the file \
         and to its directory (SQLite keeps -wal and -shm files beside it)"
    )]
    NotWritable {
        /// The database file.
        path: PathBuf,
        /// What `SQLite` said.
        reason: String,
    },
    /// The disk (or the file's size limit) is full.
    #[error(
        "the disk holding {path} is full ({reason}); free some space: the agent holds the \
         readings it cannot write (in memory and in a spill file in its runtime directory) and \
         writes them once it can"
    )]
    Full {
        /// The database file.
        path: PathBuf,
        /// What `SQLite` said.
        reason: String,
    },
    /// The operating system failed a read or write of the file.
    #[error(
        "cannot write {path}: {reason}: the disk may be full or failing (check `df` and \
         `dmesg`); the agent holds the readings it cannot write (in memory and in a spill \
         file in its runtime directory) and writes them once it can"
    )]
    Io {
        /// The database file.
        path: PathBuf,
        /// What `SQLite` said.
        reason: String,
    },
    /// Another agent is writing this log.
    #[error(
        "another edgeprio agent is already writing {path} (it holds {lock}); two writers \
         would hand out the same seq numbers: stop the other agent (systemctl stop edgeprio) \
         or give this one another --db"
    )]
    Busy {
        /// The database file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A reader was pointed at a file that does not exist.
    #[error(
        "no log at {path}: has the agent run with this `db` yet? Point --db (or --config) \
         at the agent's database"
    )]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// `SQLite` found damaged pages in the file (`SQLITE_CORRUPT`): a
    /// broken index, a torn write on a failing SD card.
    #[error(
        "the log {path} is corrupt ({reason}): stop the agent (systemctl stop edgeprio), then \
         `sqlite3 {path} 'REINDEX'` repairs a damaged index; if `edgeprio doctor` (or `sqlite3 \
         {path} 'PRAGMA integrity_check'`) still reports errors, move the log and its -wal file \
         away (the agent starts a new log) and save what can be read from the moved copy with \
         sqlite3's .recover or .dump"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What `SQLite` said.
        reason: String,
    },
    /// The file is not `SQLite` at all.
    #[error(
        "{path} is not a usable SQLite database ({reason}); edgeprio will not touch it: \
         move it away, or point `db` / --db at another file"
    )]
    NotADatabase {
        /// The database file.
        path: PathBuf,
        /// What `SQLite` said.
        reason: String,
    },
    /// A reader met a log of an older schema, which only the agent migrates.
    #[error(
        "{path} has schema version {found}, written by an older edgeprio; this one reads \
         version {needed}: start this edgeprio's agent on it once (it migrates the log as it \
         opens it), then try again"
    )]
    TooOld {
        /// The database file.
        path: PathBuf,
        /// The file's schema version.
        found: i64,
        /// The version this build reads.
        needed: i64,
    },
    /// A `SQLite` database that belongs to something else.
    #[error(
        "{path} is a SQLite database of another program (application_id {application_id:#x}, \
         tables: {tables}); edgeprio will not touch it: point `db` / --db at another file"
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// The file's application id.
        application_id: i32,
        /// The tables it holds.
        tables: String,
    },
    /// The file was written by a newer edgeprio.
    #[error(
        "{path} has schema version {found}, but this edgeprio only knows up to {known}; \
         it was written by a newer edgeprio: upgrade this one"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The file's schema version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// Any other `SQLite` failure.
    #[error("SQLite error on {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether a write clashed with rows already in the log (the same
    /// (node, sensor, seq) written by someone else): only the UNIQUE
    /// constraint on the seq, never a CHECK or NOT NULL failure, which
    /// renumbering cannot fix.
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, msg),
                ..
            } => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    && msg.as_deref().is_some_and(|m| m.contains("readings.seq"))
            }
            _ => false,
        }
    }
}

/// How a process uses the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The agent: creates and migrates the file, `synchronous=FULL`.
    Writer,
    /// The agent's publisher: a second connection inside the process that
    /// holds the writer lock, marking rows published. Never creates or
    /// migrates.
    Outbox,
    /// `query` and the dashboard: never write, never block the writer.
    ReadOnly,
}

/// A reading as stored, with its row id and outbox state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    /// Row id: insertion order.
    pub id: i64,
    /// The reading.
    pub reading: Reading,
    /// When the broker acknowledged it; `None` while it is in the outbox.
    pub published_ms: Option<i64>,
}

/// Filters for [`Store::readings`]; `None` means no filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadingFilter {
    /// Only this node (a gateway's or a collector's log holds many).
    pub node: Option<String>,
    /// Only this sensor.
    pub sensor: Option<String>,
    /// Only readings at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only readings before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// Only this route.
    pub route: Option<Route>,
    /// Only rows with a larger id (for following the log).
    pub after_id: Option<i64>,
    /// Only the newest this many (returned oldest first).
    pub limit: Option<u64>,
}

/// The agent's liveness record, one row per node in `agent_status`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStatus {
    /// Node name.
    pub node: String,
    /// `running` while the loop runs, `stopped` after a clean exit.
    pub running: bool,
    /// The agent's process id.
    pub pid: u32,
    /// edgeprio version.
    pub version: String,
    /// When the agent started (Unix ms).
    pub started_ms: i64,
    /// When the agent last finished a cycle (Unix ms).
    pub heartbeat_ms: i64,
    /// The configured interval, so readers can tell "late" from "dead".
    pub interval_ms: i64,
    /// The sensors read at the `[priority] burst` interval now, in config
    /// order (column `burst`: their ids, comma-separated, NULL for none).
    pub burst: Vec<String>,
}

/// Rows that one acknowledged message carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The route the message took (late real-time rows go as batch).
    pub route: Route,
    /// The row ids.
    pub ids: Vec<i64>,
    /// How many of them were real-time rows sent late, on the batch topic.
    pub late: usize,
    /// When the PUBACK arrived (Unix ms): becomes their `published_ms`.
    pub at_ms: i64,
}

/// The publisher's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// No broker configured: readings stay in the outbox.
    Disabled,
    /// Trying to connect.
    Connecting,
    /// Connected; publishing.
    Connected,
    /// Lost or refused; retrying with backoff.
    Disconnected,
}

impl BrokerState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerState::Disabled => "disabled",
            BrokerState::Connecting => "connecting",
            BrokerState::Connected => "connected",
            BrokerState::Disconnected => "disconnected",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            BrokerState::Disabled,
            BrokerState::Connecting,
            BrokerState::Connected,
            BrokerState::Disconnected,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
    }
}

/// The broker columns of the status row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerStatus {
    /// Connection state.
    pub state: BrokerState,
    /// The last connection error, if any.
    pub error: Option<String>,
    /// Since when the state holds (Unix ms).
    pub since_ms: Option<i64>,
    /// When the broker last acknowledged a reading (Unix ms).
    pub last_ack_ms: Option<i64>,
    /// Readings acknowledged on the real-time topic.
    pub published_realtime: i64,
    /// Readings acknowledged on the batch topic (late ones included).
    pub published_batch: i64,
    /// Real-time readings that went out late on the batch topic.
    pub published_late: i64,
    /// Readings still waiting for an acknowledgement.
    pub outbox_depth: i64,
}

/// Where each sensor's history left off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SensorHistory {
    /// The highest seq logged (of the rows whose seq is an integer: a hand
    /// edit's text seq can never clash with one the agent hands out).
    pub last_seq: u64,
    /// The row that holds it, for the message when no seq is left after it.
    pub last_id: i64,
    /// The values of the newest reading that decodes (normally the one
    /// with `last_seq`).
    pub last: Option<Sample>,
    /// When it was read (Unix ms): how old the restored `prev` is, for the
    /// gap rule.
    pub last_ts_ms: Option<i64>,
    /// With `[priority] baseline = "reported"`, the values the next change
    /// is measured against (see [`Store::fill_baselines`]); `None` when not
    /// asked for, or when no row decodes.
    pub baseline: Option<Sample>,
}

/// The newest row of (`?1` node, `?2` sensor) whose values decode, by seq:
/// the `prev` a restored stream scores against.
const LAST_VALUES: &str = "SELECT temperature_c, humidity_pct, ts_ms FROM readings
     WHERE node = ?1 AND sensor = ?2 AND typeof(seq) = 'integer'
       AND typeof(ts_ms) = 'integer'
       AND typeof(temperature_c) IN ('real', 'integer')
       AND typeof(humidity_pct) IN ('real', 'integer')
     ORDER BY seq DESC LIMIT 1";

/// The reported baseline of (`?1` node, `?2` sensor) with a gap rule of
/// `?3` ms: of the rows from the newest real-time one on (all of them if
/// none went real-time), the newest that went real-time, is the first, or
/// is more than `?3` ms from the row before it. The walk down to the newest
/// real-time row and the window over the rows after it both use
/// `UNIQUE(node, sensor, seq)`.
const REPORTED_BASELINE: &str = "WITH decodable AS (
         SELECT seq, ts_ms, temperature_c, humidity_pct, route FROM readings
         WHERE node = ?1 AND sensor = ?2 AND typeof(seq) = 'integer'
           AND typeof(ts_ms) = 'integer'
           AND typeof(temperature_c) IN ('real', 'integer')
           AND typeof(humidity_pct) IN ('real', 'integer')
     ),
     since AS (
         SELECT coalesce(
             (SELECT seq FROM decodable WHERE route = 'realtime' ORDER BY seq DESC LIMIT 1),
             -1) AS seq
     )
     SELECT temperature_c, humidity_pct FROM (
         SELECT seq, ts_ms, temperature_c, humidity_pct, route,
                lag(ts_ms) OVER (ORDER BY seq) AS before
         FROM decodable WHERE seq >= (SELECT seq FROM since)
     )
     WHERE route = 'realtime' OR before IS NULL OR abs(ts_ms - before) > ?3
     ORDER BY seq DESC LIMIT 1";

impl SensorHistory {
    /// The history whose top row is row `id` with `seq`, and whose newest
    /// decodable values (and their time) are `values`.
    fn of_row(seq: i64, id: i64, values: Option<(Sample, i64)>) -> Self {
        SensorHistory {
            // A negative seq (CHECKs switched off) counts as none.
            last_seq: seq.try_into().unwrap_or(0),
            last_id: id,
            last: values.map(|v| v.0),
            last_ts_ms: values.map(|v| v.1),
            baseline: None,
        }
    }

    /// The seq the sensor's next reading gets; `None` when `last_seq` is
    /// [`MAX_SEQ`] (see [`next_seq`]).
    pub fn next_seq(&self) -> Option<u64> {
        next_seq(self.last_seq)
    }
}

/// Unpublished rows read from the outbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxRows {
    /// The rows that decode, oldest first.
    pub rows: Vec<StoredReading>,
    /// Rows that do not: reported and taken out of the outbox.
    pub skipped: Vec<BadRow>,
    /// The highest row id read, decoded or not: where the next read starts.
    pub last_id: Option<i64>,
}

/// What the log has of a range of one sensor's seqs, for a resend
/// ([`Store::resend_rows`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResendRows {
    /// The rows of the range that decode, by seq, published or not.
    pub rows: Vec<StoredReading>,
    /// The sensor's highest seq in the log, if it has any row.
    pub highest: Option<u64>,
}

/// The log's identity record (table `log_identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogIdentity {
    /// The id every reading of this log carries on the wire.
    pub log: LogId,
    /// When it was drawn (Unix ms): the log's creation, its migration to
    /// schema 6, or the first open of a copy.
    pub since_ms: i64,
    /// When the agent found its file deleted or replaced while it ran,
    /// and what it did about it.
    pub replaced: Option<(i64, String)>,
}

/// What tells a file from a copy of it, from another file put at its path,
/// or from a file restored into the inode number it had: device, inode
/// and, where the file system records one, the birth time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    btime_ns: Option<i64>,
}

impl FileId {
    /// The file `path` names (through symlinks).
    fn of(path: &Path) -> std::io::Result<FileId> {
        Self::statx(rustix::fs::CWD, path, rustix::fs::AtFlags::empty())
    }

    /// The file `path` names, or the symlink itself.
    fn of_link(path: &Path) -> std::io::Result<FileId> {
        Self::statx(rustix::fs::CWD, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
    }

    /// The file `file` has open.
    fn of_file(file: &std::fs::File) -> std::io::Result<FileId> {
        Self::statx(file, "", rustix::fs::AtFlags::EMPTY_PATH)
    }

    fn statx<Fd: std::os::fd::AsFd>(
        dir: Fd,
        path: impl rustix::path::Arg,
        flags: rustix::fs::AtFlags,
    ) -> std::io::Result<FileId> {
        use rustix::fs::StatxFlags;
        let st = rustix::fs::statx(
            dir,
            path,
            flags,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )?;
        let btime_ns = (st.stx_mask & StatxFlags::BTIME.bits() != 0).then(|| {
            st.stx_btime
                .tv_sec
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(st.stx_btime.tv_nsec))
        });
        Ok(FileId {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            btime_ns,
        })
    }

    /// Whether both name the same file (a birth time only one side knows
    /// decides nothing).
    fn same_file(self, other: FileId) -> bool {
        self.dev == other.dev
            && self.ino == other.ino
            && match (self.btime_ns, other.btime_ns) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// How long `doctor` and the dashboard say that the log file was deleted
/// or replaced under the agent: long enough to be seen after a weekend.
pub const REPLACED_SHOWN_MS: i64 = 7 * 86_400_000;

impl LogIdentity {
    /// What the agent found at its path while it ran, if that was less
    /// than [`REPLACED_SHOWN_MS`] before `now_ms`.
    pub fn recent_replacement(&self, now_ms: i64) -> Option<&str> {
        self.replaced
            .as_ref()
            .filter(|(at, _)| now_ms - at < REPLACED_SHOWN_MS)
            .map(|(_, what)| what.as_str())
    }
}

/// Reads `log_identity`.
fn log_identity_row(conn: &Connection, path: &Path) -> Result<LogIdentity, StoreError> {
    let (id, since_ms, replaced_ms, replaced): (String, i64, Option<i64>, Option<String>) = conn
        .query_row(
            "SELECT log_id, since_ms, replaced_ms, replaced FROM log_identity",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(|e| classify(path, e))?;
    let log = LogId::parse(&id).ok_or_else(|| StoreError::NotADatabase {
        path: path.to_path_buf(),
        reason: format!("its log_identity holds {id:?}, not 16 hex digits"),
    })?;
    Ok(LogIdentity {
        log,
        since_ms,
        replaced: replaced_ms.zip(replaced),
    })
}

/// The log a writer followed to its path after the file it had open was
/// deleted or replaced (see [`Store::follow_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// The identity of the file the agent had open.
    pub from: LogId,
    /// The identity of the log now at the path.
    pub to: LogId,
    /// Unpublished readings carried over from the old file.
    pub carried: usize,
    /// Per sensor, the seq the next reading gets in the new log.
    pub next_seq: std::collections::HashMap<String, u64>,
}

/// An open log.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The writer's exclusive lock on `<db>.lock`, held for the store's
    /// lifetime (declared after `conn` so it is released last).
    writer_lock: Option<std::fs::File>,
    /// The identity of the log, read at open; `None` only for a reader of
    /// a log older than schema 6 ([`LOG_IDENTITY_SCHEMA`]).
    log: Option<LogId>,
    /// The schema version the file had when it was opened.
    opened_version: i64,
    /// The file the writer has open: how a file deleted or replaced under
    /// the agent is noticed. (`SQLite` itself keeps a connection to a file
    /// that is no longer at its path from checkpointing on close, which
    /// would delete "<path>-wal", by then another log's, by name.)
    file: Option<FileId>,
    /// The `-wal` and `-shm` files last seen beside it: after the main
    /// file vanished, these (and only these) are taken away from the path
    /// before a new log is opened there, which would otherwise adopt them.
    sidecars: [Option<FileId>; 2],
    /// Since when the path no longer names `file` (Unix ms), until a log
    /// at the path could be opened.
    lost_since: Option<i64>,
    /// The undecodable rows already reported by this store.
    reported: rows::Reported,
    /// The deepest outbox a heartbeat saw since the page cache was last
    /// released: once a large backlog has drained, its pages go.
    outbox_high: u64,
    /// The writer's record of the seqs it committed, kept in the lock
    /// file: how a log rolled back in place is told (see `high_water`).
    high_water: Option<high_water::HighWater>,
    /// Shared with the other stores of this log in this process that
    /// write: each write transaction waits for its turn.
    turns: Option<Arc<Turns>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// From now on each write transaction of this store waits for its turn
    /// among the stores sharing `turns` (the gateway's two connections to
    /// its log: see [`Turns`]), and checkpoints the log as a busy one
    /// ([`BUSY_CHECKPOINT_PAGES`]).
    pub fn take_turns_with(&mut self, turns: Arc<Turns>) -> Result<(), StoreError> {
        self.turns = Some(turns);
        self.conn
            .pragma_update(None, "wal_autocheckpoint", BUSY_CHECKPOINT_PAGES)
            .map_err(|e| self.sqlite(e))
    }

    /// This store's turn at writing, when it shares turns.
    fn turn(&self) -> Option<Turn> {
        self.turns.as_ref().map(Turns::take)
    }

    /// Opens (and for a writer, creates and migrates) the log at `path`.
    pub fn open(path: &Path, access: Access) -> Result<Store, StoreError> {
        Self::open_holding(path, access, &mut None)
    }

    /// [`Store::open`]; a writer that already holds the lock file (it
    /// follows its path to a new file) keeps it.
    fn open_holding(
        path: &Path,
        access: Access,
        held: &mut Option<std::fs::File>,
    ) -> Result<Store, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        check_is_file(path)?;
        let flags = match access {
            Access::Writer => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(StoreError::MissingDir {
                        path: path.to_path_buf(),
                        dir: dir.to_path_buf(),
                    });
                }
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
            }
            Access::Outbox => OpenFlags::SQLITE_OPEN_READ_WRITE,
            Access::ReadOnly => {
                if !path.exists() {
                    return Err(StoreError::Missing {
                        path: path.to_path_buf(),
                    });
                }
                OpenFlags::SQLITE_OPEN_READ_ONLY
            }
        };
        let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        // The query planner stability guarantee: a cached statement keeps
        // its plan whatever is bound to it. Without it SQLite re-prepares a
        // statement at its next step whenever a value that could change
        // the plan is bound anew (the outbox read's `LIMIT ?2`, the
        // `published_ms = ?1` of the marking): parsing the outbox read
        // again at every call was a seventh of a gateway's publishing.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(sqlite)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            writer_lock: None,
            log: None,
            opened_version: 0,
            file: None,
            sidecars: [None; 2],
            lost_since: None,
            reported: rows::Reported::default(),
            outbox_high: 0,
            high_water: None,
            turns: None,
        };
        // The first real read tells a damaged or non-SQLite file apart.
        let (version, app_id) = store.identity()?;
        store.opened_version = version;
        store.check_ours(version, app_id)?;
        match access {
            Access::Writer => {
                // Only a file known to be ours gets a lock file beside it.
                let lock = lock_writer(path, held)?;
                let record = high_water::Record::read(&lock);
                store.writer_lock = Some(lock);
                store.prepare_writer(version)?;
                let file = FileId::of(path).map_err(|e| StoreError::NotWritable {
                    path: path.to_path_buf(),
                    reason: format!("cannot stat it: {e}"),
                })?;
                let log = store.claim_identity(file, record.as_ref())?;
                store.log = Some(log);
                store.file = Some(file);
                if let Some(lock) = &store.writer_lock {
                    let mut hw = high_water::HighWater::start(log, record, lock);
                    hw.write(lock);
                    store.high_water = Some(hw);
                }
            }
            Access::ReadOnly => {
                store.check_reader(version)?;
                if version >= LOG_IDENTITY_SCHEMA {
                    store.log = Some(store.log_identity()?.log);
                }
            }
            Access::Outbox => {
                if version < SCHEMA_VERSION {
                    // The agent opens (and migrates) the log first.
                    return Err(StoreError::Missing {
                        path: path.to_path_buf(),
                    });
                }
                if version > SCHEMA_VERSION {
                    return Err(StoreError::TooNew {
                        path: path.to_path_buf(),
                        found: version,
                        known: SCHEMA_VERSION,
                    });
                }
                store
                    .conn
                    .pragma_update(None, "synchronous", "FULL")
                    .map_err(|e| classify(path, e))?;
                store.log = Some(store.log_identity()?.log);
            }
        }
        Ok(store)
    }

    /// The identity of this log, which every reading of it carries on the
    /// wire. A reader of a log the agent has not migrated yet has none.
    pub fn log_id(&self) -> Result<LogId, StoreError> {
        self.log.ok_or_else(|| StoreError::TooOld {
            path: self.path.clone(),
            found: self.opened_version,
            needed: SCHEMA_VERSION,
        })
    }

    /// The identity record, as the agent last wrote it.
    pub fn log_identity(&self) -> Result<LogIdentity, StoreError> {
        log_identity_row(&self.conn, &self.path)
    }

    /// Keeps the identity if this is the file it was drawn for (or the
    /// first file to claim it: a new or just migrated log), otherwise draws
    /// a new one: a copy may hold seqs that consumers already have from the
    /// original, and the original may go on handing out more of them. So
    /// does a file rolled back in place (a backup restored into its inode):
    /// the writer's high-water `record` of this identity names a seq
    /// committed beyond what the log holds now.
    fn claim_identity(
        &self,
        file: FileId,
        record: Option<&high_water::Record>,
    ) -> Result<LogId, StoreError> {
        // A row deleted by hand is drawn again.
        self.conn
            .execute(
                "INSERT INTO log_identity (one, log_id, since_ms)
                 VALUES (1, lower(hex(randomblob(8))), CAST(unixepoch('subsec') * 1000 AS INTEGER))
                 ON CONFLICT DO NOTHING",
                [],
            )
            .map_err(|e| self.sqlite(e))?;
        let current = self.log_identity();
        let recorded: (Option<i64>, Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT file_dev, file_ino, file_btime_ns FROM log_identity",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| self.sqlite(e))?;
        let (dev, ino) = (file.dev.cast_signed(), file.ino.cast_signed());
        let same = match recorded {
            (Some(d), Some(i), btime) => FileId {
                dev: d.cast_unsigned(),
                ino: i.cast_unsigned(),
                btime_ns: btime,
            }
            .same_file(file),
            _ => true,
        };
        let behind = match (&current, record) {
            (Ok(c), Some(r)) if same && r.names(c.log) => {
                r.behind(&self.conn).map_err(|e| self.sqlite(e))?
            }
            _ => None,
        };
        let fresh = !same || current.is_err() || behind.is_some();
        let id: String = self
            .conn
            .query_row(
                "UPDATE log_identity SET
                    log_id = CASE WHEN ?4 THEN lower(hex(randomblob(8))) ELSE log_id END,
                    since_ms = CASE WHEN ?4 THEN CAST(unixepoch('subsec') * 1000 AS INTEGER)
                               ELSE since_ms END,
                    file_dev = ?1, file_ino = ?2, file_btime_ns = ?3
                 RETURNING log_id",
                params![dev, ino, file.btime_ns, fresh],
                |r| r.get(0),
            )
            .map_err(|e| self.sqlite(e))?;
        let log =
            LogId::parse(&id).expect("the UPDATE just wrote 16 hex digits or kept a checked id");
        if let Some(behind) = behind {
            tracing::warn!(
                db = %self.path.display(),
                old_log = %current.map_or_else(|_| "unreadable".into(), |c| c.log.to_string()),
                new_log = %log,
                "this log file was rolled back (a backup restored or copied over it, or its \
                 newest readings deleted): {behind}, so it gets a new identity; under the old \
                 one its next seqs would name readings consumers already hold"
            );
        } else if fresh {
            tracing::warn!(
                db = %self.path.display(),
                old_log = %current.map_or_else(|_| "unreadable".into(), |c| c.log.to_string()),
                new_log = %log,
                "this log file is a copy (a restored backup, or a file put in place of the \
                 original): it is not the file its identity was drawn for, so it gets a new \
                 identity; consumers tell its readings from the original's by it"
            );
        }
        Ok(log)
    }

    /// The file this store is on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file this store writes is no longer at its path (deleted
    /// or replaced) and no log could be opened there yet
    /// ([`Store::follow_path`]): what is committed now only this process can
    /// reach.
    pub fn lost_path(&self) -> bool {
        self.lost_since.is_some()
    }

    /// Every unpublished reading of `node`, oldest first: what a file about
    /// to be left behind still owes the broker.
    pub fn unpublished(&mut self, node: &str) -> Result<Vec<Reading>, StoreError> {
        Ok(self
            .outbox(node, 0, usize::MAX)?
            .rows
            .into_iter()
            .map(|r| r.reading)
            .collect())
    }

    fn identity(&self) -> Result<(i64, i32), StoreError> {
        let version = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map_err(|e| classify(&self.path, e))?;
        let app_id = self
            .conn
            .pragma_query_value(None, "application_id", |r| r.get::<_, i32>(0))
            .map_err(|e| classify(&self.path, e))?;
        Ok((version, app_id))
    }

    fn tables(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(|e| classify(&self.path, e))?;
        let names = stmt
            .query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| classify(&self.path, e))?;
        Ok(names)
    }

    fn check_ours(&self, version: i64, app_id: i32) -> Result<(), StoreError> {
        let empty = version == 0 && app_id == 0 && self.tables()?.is_empty();
        if app_id == APPLICATION_ID || empty {
            if version > SCHEMA_VERSION {
                return Err(StoreError::TooNew {
                    path: self.path.clone(),
                    found: version,
                    known: SCHEMA_VERSION,
                });
            }
            return Ok(());
        }
        let tables = self.tables()?;
        Err(StoreError::Foreign {
            path: self.path.clone(),
            application_id: app_id,
            tables: if tables.is_empty() {
                "none".into()
            } else {
                tables.join(", ")
            },
        })
    }

    fn prepare_writer(&self, version: i64) -> Result<(), StoreError> {
        let c = &self.conn;
        if version == 0 {
            // Only an empty file can still choose: with the first table
            // the choice is fixed, and setting WAL first fixes it too.
            // Freed pages can then go back to the file system (`retention`).
            c.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(|e| classify(&self.path, e))?;
        }
        let mode: String = c
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| classify(&self.path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWritable {
                path: self.path.clone(),
                reason: format!("SQLite kept journal_mode={mode} instead of WAL"),
            });
        }
        // One commit per interval: durability costs nothing here.
        c.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| classify(&self.path, e))?;
        c.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(|e| classify(&self.path, e))?;
        // Every pending migration in one transaction: a reader (the demo's
        // dashboard, a `query` started with the agent) sees the old schema
        // or the newest, never one in between.
        let pending: Vec<&str> = MIGRATIONS
            .iter()
            .skip(usize::try_from(version).unwrap_or(usize::MAX))
            .copied()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let batch = format!(
            "BEGIN IMMEDIATE; {}; PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
            pending.join(";\n")
        );
        if let Err(e) = c.execute_batch(&batch) {
            let _ = c.execute_batch("ROLLBACK");
            return Err(classify(&self.path, e));
        }
        tracing::info!(
            db = %self.path.display(),
            from = version,
            to = SCHEMA_VERSION,
            "migrated the log schema"
        );
        Ok(())
    }

    fn check_reader(&self, version: i64) -> Result<(), StoreError> {
        if version == 0 {
            // An empty file: nothing to read yet, but nothing wrong either.
            return Err(StoreError::Missing {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        classify(&self.path, source)
    }

    /// Where each sensor of `node` left off: highest seq and its values.
    /// Rows whose seq is not an integer are left out (they cannot clash
    /// with an integer seq), and the values come from the newest row that
    /// decodes, so one bad row never keeps the agent or `query` from
    /// starting.
    pub fn history(
        &self,
        node: &str,
    ) -> Result<std::collections::HashMap<String, SensorHistory>, StoreError> {
        // `id` is the row of max(seq): SQLite's bare column with max().
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sensor, max(seq), id FROM readings
                 WHERE node = ?1 AND typeof(seq) = 'integer' AND typeof(sensor) = 'text'
                 GROUP BY sensor",
            )
            .map_err(|e| self.sqlite(e))?;
        let tops: Vec<(String, i64, i64)> = stmt
            .query_map([node], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.sqlite(e))?;
        let mut last = self.conn.prepare(LAST_VALUES).map_err(|e| self.sqlite(e))?;
        let mut out = std::collections::HashMap::new();
        for (sensor, seq, id) in tops {
            let values = last
                .query_row(params![node, sensor], |r| {
                    Ok((Sample::new(r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?))
                })
                .optional()
                .map_err(|e| self.sqlite(e))?;
            out.insert(sensor, SensorHistory::of_row(seq, id, values));
        }
        Ok(out)
    }

    /// [`Store::history`] of one (node, sensor), `None` if it never logged
    /// a reading: how the gateway restores one stream of a log that holds
    /// many nodes. Two seeks on `UNIQUE(node, sensor, seq)`, whatever the
    /// log's size.
    pub fn stream_history(
        &self,
        node: &str,
        sensor: &str,
    ) -> Result<Option<SensorHistory>, StoreError> {
        // Text seqs (a hand edit) sort after integers: the scan from the top
        // steps over them.
        let top: Option<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT seq, id FROM readings
                 WHERE node = ?1 AND sensor = ?2 AND typeof(seq) = 'integer'
                 ORDER BY seq DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![node, sensor], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.sqlite(e))?;
        let Some((seq, id)) = top else {
            return Ok(None);
        };
        let values = self
            .conn
            .prepare_cached(LAST_VALUES)
            .and_then(|mut s| {
                s.query_row(params![node, sensor], |r| {
                    Ok((Sample::new(r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?))
                })
                .optional()
            })
            .map_err(|e| self.sqlite(e))?;
        Ok(Some(SensorHistory::of_row(seq, id, values)))
    }

    /// Fills in the reported baseline (DESIGN.md, `baseline = "reported"`)
    /// of each of `node`'s sensors in `history`: the values of the newest row
    /// that went real-time, began the stream, or followed a gap of more than
    /// `stale_after` (the gap rule; `None`: no gaps) since the row before.
    /// What a [`crate::domain::Scorer`] that had scored every row of the log
    /// would measure the next change against. Reads the rows since the
    /// newest real-time one of each sensor, so only asked for when that is
    /// the baseline.
    pub fn fill_baselines(
        &self,
        node: &str,
        history: &mut std::collections::HashMap<String, SensorHistory>,
        stale_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        for (sensor, h) in history.iter_mut() {
            h.baseline = self.reported_baseline(node, sensor, stale_after)?;
        }
        Ok(())
    }

    /// [`Store::fill_baselines`] of one (node, sensor).
    pub fn reported_baseline(
        &self,
        node: &str,
        sensor: &str,
        stale_after: Option<Duration>,
    ) -> Result<Option<Sample>, StoreError> {
        let gap_ms = stale_after.map_or(i64::MAX, |d| {
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
        });
        self.conn
            .prepare_cached(REPORTED_BASELINE)
            .and_then(|mut s| {
                s.query_row(params![node, sensor, gap_ms], |r| {
                    Ok(Sample::new(r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .map_err(|e| self.sqlite(e))
    }

    /// Commits one cycle: its readings, its sensor errors and the heartbeat,
    /// in one transaction. Returns the node's outbox depth afterwards.
    pub fn commit_cycle(
        &mut self,
        readings: &[Reading],
        errors: &[SensorError],
        status: &AgentStatus,
    ) -> Result<u64, StoreError> {
        // Best effort: a failed measurement must not cost the readings.
        let space = self.space().ok();
        let path = self.path.clone();
        // Immediate: the outbox count below sees the log the write lands in
        // (see `write_counted`), also when the cycle logged nothing.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, e))?;
        insert_readings(&tx, readings).map_err(|e| classify(&path, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO sensor_errors (ts_ms, node, sensor, kind, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| classify(&path, e))?;
            for e in errors {
                stmt.execute(params![
                    e.ts_ms,
                    status.node,
                    e.sensor,
                    e.kind.as_str(),
                    e.detail
                ])
                .map_err(|e| classify(&path, e))?;
            }
        }
        let depth = write_status(&tx, status, space.as_ref(), Depth::Count)
            .map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))?;
        self.committed(readings);
        // Counting a large outbox every cycle filled the page cache with
        // its index; once it has drained, that memory goes back.
        self.outbox_high = self.outbox_high.max(depth);
        if depth < DRAINED_BELOW as u64 && self.outbox_high >= DRAINED_FROM {
            self.outbox_high = depth;
            self.release_memory();
        }
        Ok(depth)
    }

    /// Whether the log has `r` itself: the same (node, sensor, seq) read at
    /// the same time.
    pub fn contains(&self, r: &Reading) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM readings
                   WHERE node = ?1 AND sensor = ?2 AND seq = ?3 AND ts_ms = ?4)",
                params![
                    r.node,
                    r.sensor,
                    i64::try_from(r.seq).unwrap_or(i64::MAX),
                    r.ts_ms
                ],
                |row| row.get(0),
            )
            .map_err(|e| self.sqlite(e))
    }

    /// Frees this connection's page cache (`PRAGMA shrink_memory`), then
    /// hands the heap's free pages back to the kernel: after a large drain
    /// the cache holds pages nobody reads again, and the buffers of the
    /// drain are free but still resident. Best effort.
    pub fn release_memory(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!("PRAGMA shrink_memory failed: {e}");
        }
        trim_heap();
    }

    /// Inserts readings in one transaction (bulk loads and benchmarks).
    pub fn insert_readings(&mut self, readings: &[Reading]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        insert_readings(&tx, readings).map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))?;
        self.committed(readings);
        Ok(())
    }

    /// Raises the high-water record to `readings`, just committed.
    fn committed<'r>(&mut self, readings: impl IntoIterator<Item = &'r Reading>) {
        if let (Some(hw), Some(lock)) = (&mut self.high_water, &self.writer_lock)
            && hw.raise(readings)
        {
            hw.write(lock);
        }
    }

    /// Records that the agent of `status.node` stopped cleanly.
    pub fn mark_stopped(&mut self, status: &AgentStatus) -> Result<(), StoreError> {
        let _turn = self.turn();
        let stopped = AgentStatus {
            running: false,
            burst: Vec::new(),
            ..status.clone()
        };
        let space = self.space().ok();
        self.write_counted(&stopped, space.as_ref()).map(|_| ())
    }

    /// `status` with the outbox depth counted, in one write transaction:
    /// the count and the write must see the same log, or a publisher's
    /// marks committed between them (their depth taken off the old row)
    /// are overwritten by a count that still held their rows (an agent
    /// stopped with every row acknowledged and a depth of 1, once in a CI
    /// run).
    pub(crate) fn write_counted(
        &mut self,
        status: &AgentStatus,
        space: Option<&Space>,
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, e))?;
        let depth =
            write_status(&tx, status, space, Depth::Count).map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))?;
        Ok(depth)
    }

    /// How long a query waits for a lock before failing with "busy".
    pub fn set_busy_timeout(&self, wait: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(wait).map_err(|e| self.sqlite(e))
    }

    /// The status row of `node`, if the agent ever ran against this log.
    pub fn status(&self, node: &str) -> Result<Option<AgentStatus>, StoreError> {
        status_row(&self.conn, node).map_err(|e| self.sqlite(e))
    }

    /// Readings matching `filter`, oldest first.
    pub fn readings(&self, filter: &ReadingFilter) -> Result<Vec<StoredReading>, StoreError> {
        // The newest `limit` rows, then put back in chronological order.
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT * FROM (
                   SELECT {} FROM readings
                   WHERE (?1 IS NULL OR sensor = ?1)
                     AND (?2 IS NULL OR ts_ms >= ?2)
                     AND (?3 IS NULL OR ts_ms < ?3)
                     AND (?4 IS NULL OR route = ?4)
                     AND id > ?5
                     AND (?7 IS NULL OR node = ?7)
                   ORDER BY id DESC
                   LIMIT ?6
                 ) ORDER BY id",
                rows::READING_COLUMNS
            ))
            .map_err(|e| self.sqlite(e))?;
        let limit = filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let args: [&dyn ToSql; 7] = [
            &filter.sensor,
            &filter.since_ms,
            &filter.until_ms,
            &filter.route.map(Route::as_str),
            &filter.after_id.unwrap_or(0),
            &limit,
            &filter.node,
        ];
        let (rows, bad) = stmt
            .query(args.as_slice())
            .and_then(rows::decode_all)
            .map_err(|e| self.sqlite(e))?;
        self.reported.warn(&bad, |_| "it is left out".into());
        Ok(rows)
    }

    /// Sensor errors since `since_ms` of `node` (`None`: of every node),
    /// oldest first.
    pub fn sensor_errors(
        &self,
        node: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<SensorError>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ts_ms, sensor, kind, detail FROM sensor_errors
                 WHERE ts_ms >= ?1 AND (?2 IS NULL OR node = ?2) ORDER BY id",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params![since_ms, node], |r| {
                let kind: String = r.get(2)?;
                Ok(SensorError {
                    ts_ms: r.get(0)?,
                    sensor: r.get(1)?,
                    kind: crate::domain::ErrorKind::parse(&kind)
                        .ok_or_else(|| bad_text(2, &kind))?,
                    detail: r.get(3)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.sqlite(e))?;
        Ok(rows)
    }

    /// Caps the file at `pages` pages for this connection: how tests make
    /// the disk "full" without filling one.
    #[cfg(test)]
    pub(crate) fn set_max_pages(&self, pages: i64) {
        self.conn
            .pragma_update(None, "max_page_count", pages)
            .expect("max_page_count is settable");
    }

    /// Unpublished readings of `node` after row `after_id`, oldest first,
    /// at most `limit` rows in all. A row that does not decode is reported
    /// and taken out of the outbox ([`SKIPPED_MS`]): it can never be
    /// published, and must not be read again at every reconnect.
    pub fn outbox(
        &mut self,
        node: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<OutboxRows, StoreError> {
        self.outbox_rows(Some(node), after_id, limit)
    }

    /// [`Store::outbox`] of every node in the log, oldest first by row id:
    /// what a publisher drains (a gateway's log holds the readings of many
    /// nodes, an agent's only its own).
    pub fn outbox_of_all(&mut self, after_id: i64, limit: usize) -> Result<OutboxRows, StoreError> {
        self.outbox_rows(None, after_id, limit)
    }

    /// The outbox of `node`, or of every node with `None`.
    fn outbox_rows(
        &mut self,
        node: Option<&str>,
        after_id: i64,
        limit: usize,
    ) -> Result<OutboxRows, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after_id = match node {
            // The scan of every node walks row ids, published or not:
            // from the start of a session it begins at the oldest
            // unpublished row (found in the outbox index), not at the
            // log's first row, and an empty outbox is not scanned at all.
            None if after_id <= 0 => match self.first_unpublished()? {
                Some(first) => first - 1,
                None => return Ok(OutboxRows::default()),
            },
            _ => after_id,
        };
        let (rows, skipped, last_id) = {
            let columns = rows::READING_COLUMNS;
            let of_node = if node.is_some() { "node = ?3 AND" } else { "" };
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {columns} FROM readings
                     WHERE {of_node} published_ms IS NULL AND id > ?1
                     ORDER BY id LIMIT ?2"
                ))
                .map_err(|e| self.sqlite(e))?;
            let query = match node {
                Some(node) => stmt.query(params![after_id, limit, node]),
                None => stmt.query(params![after_id, limit]),
            };
            let (rows, skipped) = query
                .and_then(rows::decode_all)
                .map_err(|e| classify(&self.path, e))?;
            let last_id = rows
                .iter()
                .map(|r| r.id)
                .chain(skipped.iter().map(|b| b.id))
                .max();
            (rows, skipped, last_id)
        };
        if !skipped.is_empty() {
            let mut mark = self
                .conn
                .prepare_cached(
                    "UPDATE readings SET published_ms = ?1 WHERE id = ?2 AND published_ms IS NULL",
                )
                .map_err(|e| self.sqlite(e))?;
            for b in &skipped {
                mark.execute(params![SKIPPED_MS, b.id])
                    .map_err(|e| classify(&self.path, e))?;
            }
            let db = self.path.display();
            self.reported.warn(&skipped, |b| {
                format!(
                    "it is never published: its published_ms is set to {SKIPPED_MS}, which \
                     takes it out of the outbox; fix the value, then `sqlite3 {db} 'UPDATE \
                     readings SET published_ms = NULL WHERE id = {}'` sends it, or delete the row",
                    b.id
                )
            });
        }
        Ok(OutboxRows {
            rows,
            skipped,
            last_id,
        })
    }

    /// The rows of (`node`, `sensor`) with seqs `from..=to`, and the
    /// sensor's highest seq: what a resend request is served from. A row
    /// that does not decode is left out (to the consumer it is gone, as it
    /// was never published either).
    pub fn resend_rows(
        &mut self,
        node: &str,
        sensor: &str,
        from: u64,
        to: u64,
    ) -> Result<ResendRows, StoreError> {
        let seq = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        let rows = {
            let columns = rows::READING_COLUMNS;
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {columns} FROM readings
                     WHERE node = ?1 AND sensor = ?2 AND seq BETWEEN ?3 AND ?4
                     ORDER BY seq"
                ))
                .map_err(|e| self.sqlite(e))?;
            let (rows, _skipped) = stmt
                .query(params![node, sensor, seq(from), seq(to)])
                .and_then(rows::decode_all)
                .map_err(|e| classify(&self.path, e))?;
            rows
        };
        let highest: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(seq) FROM readings WHERE node = ?1 AND sensor = ?2")
            .and_then(|mut q| q.query_row(params![node, sensor], |r| r.get(0)))
            .map_err(|e| self.sqlite(e))?;
        Ok(ResendRows {
            rows,
            highest: highest.and_then(|h| u64::try_from(h).ok()),
        })
    }

    /// The id of the oldest unpublished row, of any node.
    fn first_unpublished(&self) -> Result<Option<i64>, StoreError> {
        // `+id`: a plain min(id) walks the table from its first row id
        // until an unpublished one; this one reads the outbox index,
        // which holds only unpublished rows.
        self.conn
            .prepare_cached("SELECT min(+id) FROM readings WHERE published_ms IS NULL")
            .and_then(|mut q| q.query_row([], |r| r.get(0)))
            .map_err(|e| self.sqlite(e))
    }

    /// Marks acknowledged rows (of any node: row ids are unique in the log)
    /// with the time their PUBACK arrived, and counts them per route taken
    /// in the status row of `home`, the node the publisher runs as, with
    /// the outbox depth of the whole log.
    pub fn mark_published(&mut self, home: &str, acked: &[Acked]) -> Result<(), StoreError> {
        self.mark_published_with(home, acked, &mut |_, _, _| {})
    }

    /// [`Store::mark_published`], calling `marked_row` with the node, sensor
    /// and seq of each row it marked, in its transaction (the publisher
    /// forgets their ages: [`crate::clock::TakenAt::forget`]).
    pub fn mark_published_with(
        &mut self,
        home: &str,
        acked: &[Acked],
        marked_row: &mut dyn FnMut(&str, &str, u64),
    ) -> Result<(), StoreError> {
        let _turn = self.turn();
        let at_ms = acked.iter().map(|a| a.at_ms).max().unwrap_or(0);
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        {
            let mut mark = tx
                .prepare_cached(
                    "UPDATE readings SET published_ms = ?1 WHERE id = ?2 AND published_ms IS NULL
                     RETURNING node, sensor, seq",
                )
                .map_err(|e| classify(&path, e))?;
            let (mut realtime, mut batch, mut late, mut marked) = (0i64, 0i64, 0i64, 0usize);
            for a in acked {
                // The time is bound once per acknowledgement, the id per
                // row, and each UPDATE's changes counted: the outbox depth
                // goes down by what was marked, without a count.
                mark.raw_bind_parameter(1, a.at_ms)
                    .map_err(|e| classify(&path, e))?;
                for id in &a.ids {
                    mark.raw_bind_parameter(2, id)
                        .map_err(|e| classify(&path, e))?;
                    let mut rows = mark.raw_query();
                    while let Some(row) = rows.next().map_err(|e| classify(&path, e))? {
                        marked += 1;
                        let node = row.get_ref(0).ok().and_then(|v| v.as_str().ok());
                        let sensor = row.get_ref(1).ok().and_then(|v| v.as_str().ok());
                        let seq = row
                            .get::<_, i64>(2)
                            .ok()
                            .and_then(|v| u64::try_from(v).ok());
                        // A row that does not decode was never aged.
                        let (Some(node), Some(sensor), Some(seq)) = (node, sensor, seq) else {
                            continue;
                        };
                        marked_row(node, sensor, seq);
                    }
                }
                let n = i64::try_from(a.ids.len()).unwrap_or(i64::MAX);
                match a.route {
                    Route::Realtime => realtime += n,
                    Route::Batch => batch += n,
                }
                late += i64::try_from(a.late).unwrap_or(0);
            }
            tx.execute(
                "UPDATE agent_status SET last_ack_ms = max(coalesce(last_ack_ms, 0), ?2),
                    published_realtime = published_realtime + ?3,
                    published_batch = published_batch + ?4,
                    published_late = published_late + ?5,
                    outbox_depth = max(outbox_depth - ?6, 0)
                 WHERE node = ?1",
                params![
                    home,
                    at_ms,
                    realtime,
                    batch,
                    late,
                    i64::try_from(marked).unwrap_or(i64::MAX)
                ],
            )
            .map_err(|e| classify(&path, e))?;
        }
        tx.commit().map_err(|e| classify(&path, e))
    }

    /// Records the publisher's view of the broker.
    pub fn set_broker(
        &self,
        node: &str,
        state: BrokerState,
        error: Option<&str>,
        since_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE agent_status SET broker_state = ?2, broker_error = ?3, broker_since_ms = ?4
                 WHERE node = ?1",
                params![node, state.as_str(), error, since_ms],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    /// The publisher's view of the broker for `node`, if the agent ran.
    pub fn broker(&self, node: &str) -> Result<Option<BrokerStatus>, StoreError> {
        broker_row(&self.conn, node).map_err(|e| self.sqlite(e))
    }

    /// How many readings of `node` wait for the broker's acknowledgement.
    pub fn outbox_depth(&self, node: &str) -> Result<u64, StoreError> {
        outbox_depth(&self.conn, Some(node)).map_err(|e| self.sqlite(e))
    }

    /// How many readings of every node in the log wait for the broker's
    /// acknowledgement: what its publisher has left to send.
    pub fn outbox_depth_of_all(&self) -> Result<u64, StoreError> {
        outbox_depth(&self.conn, None).map_err(|e| self.sqlite(e))
    }

    /// Checks, once per cycle, that the path still names the file the
    /// writer has open. A file deleted or replaced under the agent is
    /// followed: said loudly (once), then the log now at the path is opened
    /// (a new one, with a new identity, if the path is empty; a replacement
    /// as the log it is, with its own identity), and the old file's
    /// unpublished readings move into `pending`, in front, renumbered with
    /// the rest to follow the new log's seqs. They are still delivered,
    /// under the new identity; the old file is left alone. Until a log can
    /// be opened at the path (it holds another program's file, say), the
    /// agent keeps writing the old file, which only this process can still
    /// reach, and tries again every cycle.
    ///
    /// `Ok(None)`: nothing happened. `Err`: the file is gone and no log can
    /// be opened at the path yet.
    pub fn follow_path(
        &mut self,
        node: &str,
        now_ms: i64,
        pending: &mut Vec<Reading>,
    ) -> Result<Option<Switched>, StoreError> {
        let Some(file) = self.file else {
            return Ok(None);
        };
        let what = match FileId::of(&self.path) {
            Ok(f) if f.same_file(file) => {
                self.note_sidecars();
                return Ok(None);
            }
            Ok(_) => "replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "deleted",
            // Cannot tell (a permission changed): nothing to act on.
            Err(_) => return Ok(None),
        };
        let from = self.log_id()?;
        let first = self.lost_since.is_none();
        if first {
            self.lost_since = Some(now_ms);
            tracing::error!(
                db = %self.path.display(),
                log = %from,
                "the log file was {what} while the agent was writing it: opening the log now \
                 at {} and carrying this file's unpublished readings over to it; do not \
                 delete, move or replace the log of a running agent (stop it first)",
                self.path.display()
            );
            self.release_sidecars();
        }
        let mut held = self.writer_lock.take();
        let opened = Store::open_holding(&self.path, Access::Writer, &mut held);
        // A lock the new store did not take (it locked a new lock file:
        // the old one went with the log) is let go with the old store.
        self.writer_lock = held;
        let mut new = match opened {
            Ok(new) => new,
            Err(e) => {
                if self.writer_lock.is_none() {
                    // Taken, then lost with the store that failed to open.
                    self.writer_lock = lock_writer(&self.path, &mut None).ok();
                }
                if first {
                    tracing::error!(
                        db = %self.path.display(),
                        "cannot open a log at the path of the one that was {what}, so the \
                         agent keeps writing the old file, which only it can still reach (a \
                         stop before this is fixed moves its unpublished readings to the \
                         spill, for the next start), and tries again every cycle: {e}"
                    );
                }
                return Err(e);
            }
        };
        // Everything that can fail comes first: a failed switch is tried
        // again next cycle, from the same state (and the same lock).
        let prepared = (|| {
            let carried = self.unpublished(node)?;
            let next_seq: std::collections::HashMap<String, u64> = new
                .history(node)?
                .into_iter()
                .map(|(sensor, h)| (sensor, h.last_seq.saturating_add(1)))
                .collect();
            let to = new.log_id()?;
            let since = self.lost_since.unwrap_or(now_ms);
            let record = format!(
                "the log file was {what} while the agent ran (noticed at {}); log {from} \
                 became log {to} and {} unpublished readings were carried over to it \
                 with new seqs",
                crate::domain::rfc3339_ms(since),
                carried.len()
            );
            new.conn
                .execute(
                    "UPDATE log_identity SET replaced_ms = ?1, replaced = ?2",
                    params![since, record],
                )
                .map_err(|e| new.sqlite(e))?;
            Ok((carried, next_seq, to, record))
        })();
        let (carried, mut next_seq, to, record) = match prepared {
            Ok(p) => p,
            Err(e) => {
                if let Some(lock) = new.writer_lock.take() {
                    self.writer_lock = Some(lock);
                }
                return Err(e);
            }
        };
        let carried_n = carried.len();
        pending.splice(0..0, carried);
        for r in pending.iter_mut() {
            let next = next_seq.entry(r.sensor.clone()).or_insert(0);
            r.seq = *next;
            *next = next.saturating_add(1);
        }
        tracing::error!(db = %self.path.display(), from = %from, to = %to, carried = carried_n, "{record}");
        // The old connection closes here; SQLite does not checkpoint a file
        // that is no longer at its path.
        std::mem::swap(self, &mut new);
        Ok(Some(Switched {
            from,
            to,
            carried: carried_n,
            next_seq,
        }))
    }

    /// Remembers the `-wal` and `-shm` files beside the log while it is
    /// where it should be.
    fn note_sidecars(&mut self) {
        self.sidecars = ["-wal", "-shm"].map(|s| FileId::of(&sidecar(&self.path, s)).ok());
    }

    /// Writes what the WAL holds into the old file (for whoever keeps it:
    /// a file moved away is whole again; this may wait for readers, up to
    /// the busy timeout, once) and takes its `-wal` and `-shm` off the path: a log opened there
    /// next would take them for its own. Files there that are not the ones
    /// last seen beside the old file belong to the new one and stay.
    fn release_sidecars(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()));
        for (suffix, seen) in ["-wal", "-shm"].into_iter().zip(self.sidecars) {
            let path = sidecar(&self.path, suffix);
            if let (Some(seen), Ok(now)) = (seen, FileId::of(&path))
                && seen.same_file(now)
            {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// `<db><suffix>`: the files `SQLite` keeps beside a log.
fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Returns the free memory of glibc's heaps to the kernel. glibc keeps
/// what a burst freed in its per-thread arenas: after a drain of 1,000,000
/// readings the agent stayed at 23 MiB (idle: 10.9 MiB) until
/// `malloc_trim`, which took it to 12.4 MiB (`benches/drain_rss.rs`). musl's
/// allocator (the Pi builds) gives freed memory back by itself.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim takes no pointer and has no precondition: it
    // only walks glibc's own arenas, under their locks.
    #[expect(
        unsafe_code,
        reason = "glibc's malloc_trim is the only way to return freed heap pages"
    )]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// No-op where the allocator returns freed memory by itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// Refuses a path that cannot be a log file before `SQLite` sees it: it
/// calls /dev/null "disk I/O error" and a directory "unable to open
/// database file", and a NUL byte fails three layers deep. Says what the
/// path is instead, once.
fn check_is_file(path: &Path) -> Result<(), StoreError> {
    let not_a_file = |reason: &str| StoreError::NotADatabase {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).contains(&0) {
        return Err(not_a_file("the path contains a NUL byte"));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(not_a_file("it is a directory")),
        Ok(m) if !m.is_file() => Err(not_a_file(&format!(
            "it is not a regular file but {}",
            crate::config::file_kind(m.file_type())
        ))),
        _ => Ok(()),
    }
}

/// A log as an older build left it: the first `version` migrations, our
/// application id and that `user_version`, for the migration tests.
#[cfg(test)]
fn log_at_version(path: &Path, version: usize) -> Connection {
    let c = Connection::open(path).unwrap();
    for sql in &MIGRATIONS[..version] {
        c.execute_batch(sql).unwrap();
    }
    c.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    c.pragma_update(None, "user_version", i64::try_from(version).unwrap())
        .unwrap();
    c
}

/// The lock file beside a log.
pub fn lock_path(db: &Path) -> PathBuf {
    sidecar(db, ".lock")
}

/// Takes the exclusive writer lock of `db` (an advisory `flock`, released by
/// the kernel when the process dies, so a crash never leaves it stale).
/// `held` is a lock this process already holds: kept if it is still the
/// lock file at the path.
///
/// Anyone who can open the lock file can `flock` it and keep the agent from
/// starting, so only the agent's user may: the file is created with mode
/// 0600, whatever the umask, and one that others can open (made with the
/// umask by an older edgeprio, or owned by another user) is replaced by a
/// private one before it is locked. A descriptor someone opened on the old
/// file then locks nothing. The lock file also holds the writer's
/// high-water record of committed seqs (see `high_water`).
fn lock_writer(db: &Path, held: &mut Option<std::fs::File>) -> Result<std::fs::File, StoreError> {
    let lock = lock_path(db);
    if let Some(h) = held.as_ref()
        && let (Ok(a), Ok(b)) = (FileId::of_file(h), FileId::of(&lock))
        && a.same_file(b)
    {
        return Ok(held.take().expect("checked just above"));
    }
    let not_writable = |what: &str, e: &dyn std::fmt::Display| StoreError::NotWritable {
        path: db.to_path_buf(),
        reason: format!("cannot {what} the lock file {}: {e}", lock.display()),
    };
    let file = private_lock_file(&lock).map_err(|e| not_writable("create", &e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
            path: db.to_path_buf(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(not_writable("lock", &e)),
    }
}

/// Whether a file mode gives the group and others nothing.
#[expect(
    clippy::verbose_bit_mask,
    reason = "the group and other bits read best as the mask `chmod` uses"
)]
fn only_owner(mode: u32) -> bool {
    mode & 0o077 == 0
}

/// Opens the lock file at `lock`, making sure only this user can open it
/// (see [`lock_writer`]).
fn private_lock_file(lock: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let open = |create_new: bool, path: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(!create_new)
            .create_new(create_new)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
            .open(path)
    };
    let private = |f: &std::fs::File| -> std::io::Result<bool> {
        let m = f.metadata()?;
        Ok(m.file_type().is_file()
            && m.uid() == rustix::process::geteuid().as_raw()
            && only_owner(m.mode()))
    };
    match open(false, lock) {
        Ok(f) if private(&f)? => return Ok(f),
        // Not ours to open, or a symlink: replaced below all the same.
        Ok(_) | Err(_) => {}
    }
    // What is there, to tell it from what another agent starting at the
    // same moment may put there meanwhile.
    let seen = FileId::of_link(lock)?;
    let mut tmp = lock.as_os_str().to_owned();
    tmp.push(format!(".{}.new", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let file = open(true, &tmp)?;
    // The umask may have taken bits the mode asked for, never added any;
    // set it exactly all the same.
    rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o600))?;
    let exchange = |a: &Path, b: &Path| {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)
    };
    let placed = match exchange(&tmp, lock) {
        // `tmp` names what was at the lock path: the file seen above, or
        // the private lock file of another agent that replaced it first,
        // which is put back (and then found busy).
        Ok(()) if FileId::of_link(&tmp).is_ok_and(|f| f.same_file(seen)) => Ok(file),
        Ok(()) => exchange(&tmp, lock)
            .map_err(std::io::Error::from)
            .and_then(|()| open(false, lock)),
        // A file system without RENAME_EXCHANGE: replace it outright.
        Err(_) => std::fs::rename(&tmp, lock).map(|()| file),
    };
    let _ = std::fs::remove_file(&tmp);
    placed
}

/// A sensor's readings within one minute, summed for `readings_minute`.
#[derive(Debug, Default)]
struct MinuteTotals {
    realtime: i64,
    batch: i64,
    sum_temperature: f64,
    sum_humidity: f64,
    max_priority: u32,
    last_ts_ms: i64,
}

/// The span of a `readings_minute` row: its `minute` is `ts_ms / MINUTE_MS`,
/// in Rust and in `SQLite` alike (both truncate).
pub(crate) const MINUTE_MS: i64 = 60_000;

fn insert_readings(conn: &Connection, readings: &[Reading]) -> rusqlite::Result<()> {
    insert_rows(conn, readings.iter().map(|r| (r, None)))
}

/// Inserts readings, each with its `assigned` column (what a gateway
/// filled in; `None` for an agent's), and adds them to the per-minute
/// totals.
fn insert_rows<'r>(
    conn: &Connection,
    rows: impl IntoIterator<Item = (&'r Reading, Option<&'r str>)>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO readings (node, sensor, seq, ts_ms, temperature_c, humidity_pct,
                               weight_temperature, weight_humidity, priority, route,
                               clock_synced, assigned)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut minutes: BTreeMap<(&str, &str, i64), MinuteTotals> = BTreeMap::new();
    for (r, assigned) in rows {
        // Never clamped: a clamped seq would clash with the row holding it.
        let seq = i64::try_from(r.seq)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        stmt.execute(params![
            r.node,
            r.sensor,
            seq,
            r.ts_ms,
            r.sample.temperature,
            r.sample.humidity,
            r.weights.temperature,
            r.weights.humidity,
            r.priority,
            r.route.as_str(),
            r.clock_synced,
            assigned,
        ])?;
        let m = minutes
            .entry((&r.node, &r.sensor, r.ts_ms / MINUTE_MS))
            .or_insert_with(|| MinuteTotals {
                last_ts_ms: r.ts_ms,
                ..MinuteTotals::default()
            });
        match r.route {
            Route::Realtime => m.realtime += 1,
            Route::Batch => m.batch += 1,
        }
        m.sum_temperature += r.sample.temperature;
        m.sum_humidity += r.sample.humidity;
        m.max_priority = m.max_priority.max(r.priority);
        m.last_ts_ms = m.last_ts_ms.max(r.ts_ms);
    }
    let mut upsert = conn.prepare_cached(
        "INSERT INTO readings_minute VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (node, sensor, minute) DO UPDATE SET
             realtime = realtime + excluded.realtime,
             batch = batch + excluded.batch,
             sum_temperature = sum_temperature + excluded.sum_temperature,
             sum_humidity = sum_humidity + excluded.sum_humidity,
             max_priority = max(max_priority, excluded.max_priority),
             last_ts_ms = max(last_ts_ms, excluded.last_ts_ms)",
    )?;
    for ((node, sensor, minute), m) in minutes {
        upsert.execute(params![
            node,
            sensor,
            minute,
            m.realtime,
            m.batch,
            m.sum_temperature,
            m.sum_humidity,
            m.max_priority,
            m.last_ts_ms,
        ])?;
    }
    Ok(())
}

/// Unpublished readings of `node`, or of the whole log with `None`.
fn outbox_depth(conn: &Connection, node: Option<&str>) -> rusqlite::Result<u64> {
    let n: i64 = match node {
        Some(node) => conn.query_row(
            "SELECT count(*) FROM readings WHERE published_ms IS NULL AND node = ?1",
            [node],
            |r| r.get(0),
        )?,
        None => conn.query_row(
            "SELECT count(*) FROM readings WHERE published_ms IS NULL",
            [],
            |r| r.get(0),
        )?,
    };
    Ok(n.try_into().unwrap_or(0))
}

/// How a status write learns the outbox depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Counted: the outbox index is walked, exact whatever changed it.
    Count,
    /// The row's depth plus this many rows just inserted (all unpublished):
    /// a gateway commits many times a second, and counting an outbox of
    /// 100,000 rows each time cost a tenth of its work. Its heartbeat
    /// counts, which corrects what retention shed meanwhile.
    Added(usize),
}

/// Writes the heartbeat: the agent's status, the outbox depth and the
/// space the log takes and has left (NULL when it could not be measured).
fn write_status(
    conn: &Connection,
    s: &AgentStatus,
    space: Option<&Space>,
    depth: Depth,
) -> rusqlite::Result<u64> {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let added = match depth {
        Depth::Count => None,
        // No row yet (a first start): counted.
        Depth::Added(n) => conn
            .prepare_cached("SELECT outbox_depth FROM agent_status WHERE node = ?1")?
            .query_row([&s.node], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|d| u64::try_from(d).unwrap_or(0) + n as u64),
    };
    // The whole log's: what the publisher of this status row has to send
    // (an agent's log holds only its own node's readings, a gateway's many).
    let depth = match added {
        Some(depth) => depth,
        None => outbox_depth(conn, None)?,
    };
    conn.prepare_cached(
        "INSERT INTO agent_status
            (node, state, pid, version, started_ms, heartbeat_ms, interval_ms, outbox_depth,
             db_bytes, db_free_bytes, disk_free_bytes, burst)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (node) DO UPDATE SET
            state = excluded.state, pid = excluded.pid, version = excluded.version,
            started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms,
            interval_ms = excluded.interval_ms, outbox_depth = excluded.outbox_depth,
            db_bytes = excluded.db_bytes, db_free_bytes = excluded.db_free_bytes,
            disk_free_bytes = excluded.disk_free_bytes, burst = excluded.burst",
    )?
    .execute(params![
        s.node,
        if s.running { "running" } else { "stopped" },
        s.pid,
        s.version,
        s.started_ms,
        s.heartbeat_ms,
        s.interval_ms,
        int(depth),
        space.map(|s| int(s.db_bytes)),
        space.map(|s| int(s.db_free_bytes)),
        space.and_then(|s| s.disk_free_bytes).map(int),
        (!s.burst.is_empty()).then(|| s.burst.join(",")),
    ])?;
    Ok(depth)
}

fn status_row(conn: &Connection, node: &str) -> rusqlite::Result<Option<AgentStatus>> {
    conn.prepare_cached(
        "SELECT node, state, pid, version, started_ms, heartbeat_ms, interval_ms, burst
         FROM agent_status WHERE node = ?1",
    )?
    .query_row([node], |r| {
        Ok(AgentStatus {
            node: r.get(0)?,
            running: r.get::<_, String>(1)? == "running",
            pid: r.get(2)?,
            version: r.get(3)?,
            started_ms: r.get(4)?,
            heartbeat_ms: r.get(5)?,
            interval_ms: r.get(6)?,
            burst: r
                .get::<_, Option<String>>(7)?
                .map(|b| b.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        })
    })
    .optional()
}

fn broker_row(conn: &Connection, node: &str) -> rusqlite::Result<Option<BrokerStatus>> {
    conn.prepare_cached(
        "SELECT broker_state, broker_error, broker_since_ms, last_ack_ms,
                published_realtime, published_batch, published_late, outbox_depth
         FROM agent_status WHERE node = ?1",
    )?
    .query_row([node], |r| {
        let state: String = r.get(0)?;
        Ok(BrokerStatus {
            state: BrokerState::parse(&state).ok_or_else(|| bad_text(0, &state))?,
            error: r.get(1)?,
            since_ms: r.get(2)?,
            last_ack_ms: r.get(3)?,
            published_realtime: r.get(4)?,
            published_batch: r.get(5)?,
            published_late: r.get(6)?,
            outbox_depth: r.get(7)?,
        })
    })
    .optional()
}

fn bad_text(col: usize, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        format!("unexpected value {value:?}").into(),
    )
}

/// Turns `SQLite`'s error codes into errors that say what to do.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{
        CannotOpen, DatabaseCorrupt, DiskFull, NotADatabase, PermissionDenied, ReadOnly,
        SystemIoFailure,
    };
    let code = e.sqlite_error_code();
    match code {
        Some(DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        Some(NotADatabase) => StoreError::NotADatabase {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        Some(DiskFull) => StoreError::Full {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        Some(SystemIoFailure) => StoreError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        Some(ReadOnly | CannotOpen | PermissionDenied) => StoreError::NotWritable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        _ => StoreError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PerChannel;

    fn reading(sensor: &str, seq: u64, t: f64, route: Route) -> Reading {
        Reading {
            node: "pi".into(),
            sensor: sensor.into(),
            seq,
            ts_ms: 1_000 * i64::try_from(seq).unwrap(),
            sample: Sample::new(t, 50.0),
            weights: PerChannel {
                temperature: 0,
                humidity: 0,
            },
            priority: 0,
            route,
            clock_synced: None,
        }
    }

    fn status() -> AgentStatus {
        AgentStatus {
            node: "pi".into(),
            running: true,
            pid: 1,
            version: "test".into(),
            started_ms: 0,
            heartbeat_ms: 5,
            interval_ms: 15_000,
            burst: Vec::new(),
        }
    }

    #[test]
    fn new_log_gets_the_schema_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let s = Store::open(&path, Access::Writer).unwrap();
        assert_eq!(s.identity().unwrap(), (SCHEMA_VERSION, APPLICATION_ID));
        let mode: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let vacuum: i64 = s
            .conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap();
        assert_eq!(vacuum, 2, "auto_vacuum=INCREMENTAL");
        drop(s);
        // Reopening migrates nothing and keeps data.
        Store::open(&path, Access::Writer).unwrap();
    }

    #[test]
    fn history_restores_last_seq_and_values_per_sensor() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        let rows = [
            reading("a", 0, 20.0, Route::Batch),
            reading("a", 1, 21.0, Route::Batch),
            reading("b", 0, 30.0, Route::Realtime),
        ];
        assert_eq!(s.commit_cycle(&rows, &[], &status()).unwrap(), 3);
        let h = s.history("pi").unwrap();
        assert_eq!(
            h["a"],
            SensorHistory {
                last_seq: 1,
                last_id: 2,
                last: Some(Sample::new(21.0, 50.0)),
                last_ts_ms: Some(1_000),
                baseline: None,
            }
        );
        assert_eq!(h["b"].last_seq, 0);
        assert!(s.history("other").unwrap().is_empty());
    }

    #[test]
    fn the_reported_baseline_is_the_newest_real_time_first_or_after_gap_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        let gap = Some(Duration::from_secs(5));
        let baseline = |s: &Store| {
            s.reported_baseline("pi", "a", gap)
                .unwrap()
                .map(|b| b.temperature)
        };
        assert_eq!(baseline(&s), None, "nothing logged");
        // Rows 1 s apart (`reading` stamps seq x 1000 ms).
        let rows = [
            reading("a", 0, 20.0, Route::Batch),
            reading("a", 1, 20.4, Route::Batch),
        ];
        s.commit_cycle(&rows, &[], &status()).unwrap();
        assert_eq!(baseline(&s), Some(20.0), "the first row sets it");
        let rows = [
            reading("a", 2, 21.2, Route::Realtime),
            reading("a", 3, 21.5, Route::Batch),
            reading("b", 4, 30.0, Route::Realtime),
        ];
        s.commit_cycle(&rows, &[], &status()).unwrap();
        assert_eq!(baseline(&s), Some(21.2), "the newest real-time row");
        // Seq 9 is 6 s after seq 3: a gap, after which row 9 began again.
        let rows = [
            reading("a", 9, 22.0, Route::Batch),
            reading("a", 10, 22.3, Route::Batch),
        ];
        s.commit_cycle(&rows, &[], &status()).unwrap();
        assert_eq!(baseline(&s), Some(22.0));
        assert_eq!(
            s.reported_baseline("pi", "a", None)
                .unwrap()
                .map(|b| b.temperature),
            Some(21.2),
            "without the gap rule a gap is nothing"
        );
        let mut h = s.history("pi").unwrap();
        s.fill_baselines("pi", &mut h, gap).unwrap();
        assert_eq!(h["a"].baseline.map(|b| b.temperature), Some(22.0));
        assert_eq!(h["b"].baseline.map(|b| b.temperature), Some(30.0));
    }

    /// What `EXPLAIN QUERY PLAN` says of `sql`, one line per step.
    fn plan(s: &Store, sql: &str) -> Vec<String> {
        s.conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params!["pi", "a"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn one_streams_history_is_its_part_of_the_nodes_and_is_found_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        let mut rows: Vec<_> = (0..4)
            .map(|i| {
                reading(
                    "a",
                    i,
                    20.0 + f64::from(u32::try_from(i).unwrap()),
                    Route::Batch,
                )
            })
            .collect();
        rows.push(reading("b", 0, 30.0, Route::Batch));
        let mut other = reading("a", 9, 10.0, Route::Batch);
        other.node = "gw".into();
        rows.push(other);
        s.commit_cycle(&rows, &[], &status()).unwrap();
        // A hand edit: a text seq on top, bad values under it.
        s.conn
            .execute_batch(
                "UPDATE readings SET seq = 'x' WHERE id = 4;
                 UPDATE readings SET ts_ms = 'soon' WHERE id = 3;",
            )
            .unwrap();
        let all = s.history("pi").unwrap();
        for sensor in ["a", "b"] {
            assert_eq!(s.stream_history("pi", sensor).unwrap(), Some(all[sensor]));
        }
        let a = s.stream_history("pi", "a").unwrap().unwrap();
        assert_eq!(
            (a.last_seq, a.last_id, a.last),
            (2, 3, Some(Sample::new(21.0, 50.0)))
        );
        assert_eq!(s.stream_history("gw", "a").unwrap().unwrap().last_seq, 9);
        assert_eq!(s.stream_history("pi", "c").unwrap(), None);
        assert_eq!(s.stream_history("other", "a").unwrap(), None);
        for sql in [
            "SELECT seq, id FROM readings
             WHERE node = ?1 AND sensor = ?2 AND typeof(seq) = 'integer'
             ORDER BY seq DESC LIMIT 1",
            LAST_VALUES,
            "SELECT max(last_seq) FROM lost_readings WHERE node = ?1 AND sensor = ?2",
        ] {
            let steps = plan(&s, sql);
            assert!(
                steps
                    .iter()
                    .all(|p| p.starts_with("SEARCH") && p.contains("INDEX")),
                "{sql}: {steps:?}"
            );
        }
    }

    #[test]
    fn one_streams_last_lost_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        let loss = |node: &str, sensor: &str, first_seq, last_seq| Loss {
            node: node.into(),
            sensor: sensor.into(),
            first_seq,
            last_seq,
            ts_ms: 0,
            reason: "test".into(),
        };
        s.record_losses(&[
            loss("pi", "a", 3, 5),
            loss("pi", "a", 8, 9),
            loss("pi", "b", 0, 0),
            loss("gw", "a", 20, 30),
        ])
        .unwrap();
        assert_eq!(s.last_lost_seq("pi", "a").unwrap(), Some(9));
        assert_eq!(s.last_lost_seq("pi", "b").unwrap(), Some(0));
        assert_eq!(s.last_lost_seq("gw", "a").unwrap(), Some(30));
        assert_eq!(s.last_lost_seq("pi", "c").unwrap(), None);
        let per_node = s.last_lost_seqs("pi").unwrap();
        assert_eq!(per_node.len(), 2);
        assert_eq!((per_node["a"], per_node["b"]), (9, 0));
    }

    #[test]
    fn readings_and_sensor_errors_filter_by_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        let error = |sensor: &str| SensorError {
            ts_ms: 5,
            sensor: sensor.into(),
            kind: crate::domain::ErrorKind::Timeout,
            detail: "no answer".into(),
        };
        let mut gw = status();
        gw.node = "gw".into();
        let mut theirs = reading("a", 0, 20.0, Route::Batch);
        theirs.node = "gw".into();
        s.commit_cycle(
            &[reading("a", 0, 20.0, Route::Batch)],
            &[error("a")],
            &status(),
        )
        .unwrap();
        s.commit_cycle(&[theirs], &[error("z")], &gw).unwrap();
        let nodes = |f: ReadingFilter| -> Vec<String> {
            s.readings(&f)
                .unwrap()
                .into_iter()
                .map(|r| r.reading.node)
                .collect()
        };
        assert_eq!(nodes(ReadingFilter::default()), ["pi", "gw"]);
        let only = |node: &str| ReadingFilter {
            node: Some(node.into()),
            ..Default::default()
        };
        assert_eq!(nodes(only("gw")), ["gw"]);
        assert_eq!(nodes(only("pi")), ["pi"]);
        assert!(nodes(only("nobody")).is_empty());
        let sensors = |node: Option<&str>| -> Vec<String> {
            s.sensor_errors(node, 0)
                .unwrap()
                .into_iter()
                .map(|e| e.sensor)
                .collect()
        };
        assert_eq!(sensors(None), ["a", "z"]);
        assert_eq!(sensors(Some("gw")), ["z"]);
        assert_eq!(sensors(Some("pi")), ["a"]);
        assert!(s.sensor_errors(None, 6).unwrap().is_empty());
    }

    #[test]
    fn the_nodes_of_a_log_are_those_with_readings() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        assert!(s.snapshot().unwrap().nodes().unwrap().is_empty());
        let of = |node: &str, sensor: &str| {
            let mut r = reading(sensor, 0, 20.0, Route::Batch);
            r.node = node.into();
            r
        };
        // Status "pi"; readings of "pi", "esp-2" (two sensors) and "esp-1".
        s.commit_cycle(
            &[
                of("pi", "a"),
                of("esp-2", "a"),
                of("esp-2", "b"),
                of("esp-1", "a"),
            ],
            &[],
            &status(),
        )
        .unwrap();
        let mut gw = status();
        gw.node = "gw".into();
        s.commit_cycle(&[], &[], &gw).unwrap();
        // "gw" has a status row and no reading: no panel to pick.
        assert_eq!(
            s.snapshot().unwrap().nodes().unwrap(),
            ["esp-1", "esp-2", "pi"]
        );
    }

    #[test]
    fn duplicate_seq_is_refused_and_nothing_of_the_cycle_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        s.commit_cycle(&[reading("a", 0, 20.0, Route::Batch)], &[], &status())
            .unwrap();
        let again = [
            reading("a", 1, 20.0, Route::Batch),
            reading("a", 0, 20.0, Route::Batch),
        ];
        assert!(s.commit_cycle(&again, &[], &status()).is_err());
        assert_eq!(s.readings(&ReadingFilter::default()).unwrap().len(), 1);
    }

    #[test]
    fn undecodable_rows_leave_the_outbox_and_history_skips_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let mut w = Store::open(&path, Access::Writer).unwrap();
        let rows: Vec<_> = (0..4)
            .map(|i| reading("a", i, 20.0, Route::Batch))
            .collect();
        w.commit_cycle(&rows, &[], &status()).unwrap();
        // Text passes `seq >= 0`; nothing checks ts_ms.
        w.conn
            .execute_batch(
                "UPDATE readings SET ts_ms = 'soon' WHERE id = 2;
                 UPDATE readings SET seq = 'x' WHERE id = 4;",
            )
            .unwrap();
        let h = w.history("pi").unwrap();
        assert_eq!((h["a"].last_seq, h["a"].last_id), (2, 3));
        assert_eq!(h["a"].last_ts_ms, Some(2_000));
        let mut o = Store::open(&path, Access::Outbox).unwrap();
        let got = o.outbox("pi", 0, 100).unwrap();
        assert_eq!(got.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 3]);
        let bad: Vec<_> = got.skipped.iter().map(|b| (b.id, b.column)).collect();
        assert_eq!(bad, [(2, "ts_ms"), (4, "seq")]);
        assert_eq!(got.skipped[0].value, "'soon' (text)");
        assert_eq!(got.last_id, Some(4));
        // Marked: they left the outbox, and its depth.
        assert!(o.outbox("pi", 0, 100).unwrap().skipped.is_empty());
        assert_eq!(o.outbox_depth("pi").unwrap(), 2);
        // Readers skip them too.
        assert_eq!(w.readings(&ReadingFilter::default()).unwrap().len(), 2);
    }

    #[test]
    fn the_dashboards_reads_skip_undecodable_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        let rows: Vec<_> = (0..4)
            .map(|i| reading("a", i, 20.0, Route::Batch))
            .collect();
        s.commit_cycle(&rows, &[], &status()).unwrap();
        // The oldest row's seq is text (it sorts after every number: the
        // newest seq), the newest row's ts_ms.
        s.conn
            .execute_batch(
                "UPDATE readings SET seq = 'x' WHERE id = 1;
                 UPDATE readings SET ts_ms = 'soon' WHERE id = 4;",
            )
            .unwrap();
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.latest("pi", "a").unwrap().map(|r| r.id), Some(3));
        let recent: Vec<i64> = snap
            .recent("pi", 10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(recent, [3, 2]);
        // A short window reads the readings themselves, from the first
        // integer seq in it.
        let chart = snap.history("pi", "a", 0, 10_000, 100).unwrap();
        assert!(!chart.is_empty(), "{chart:?}");
    }

    #[test]
    fn only_a_seq_clash_is_a_conflict_and_no_seq_follows_the_largest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        s.commit_cycle(&[reading("a", 0, 20.0, Route::Batch)], &[], &status())
            .unwrap();
        let clash = s
            .commit_cycle(&[reading("a", 0, 20.0, Route::Batch)], &[], &status())
            .unwrap_err();
        assert!(clash.is_conflict(), "{clash}");
        // A CHECK failure is not fixed by renumbering.
        let hot = s
            .commit_cycle(&[reading("a", 1, 95.0, Route::Batch)], &[], &status())
            .unwrap_err();
        assert!(!hot.is_conflict(), "{hot}");
        // A seq past what SQLite holds is an error, never clamped.
        let at = |seq| Reading {
            seq,
            ..reading("a", 1, 20.0, Route::Batch)
        };
        let e = s
            .commit_cycle(&[at(MAX_SEQ + 1)], &[], &status())
            .unwrap_err();
        assert!(!e.is_conflict(), "{e}");
        s.commit_cycle(&[at(MAX_SEQ)], &[], &status()).unwrap();
        let h = s.history("pi").unwrap();
        assert_eq!(h["a"].last_seq, MAX_SEQ);
        assert_eq!(h["a"].next_seq(), None);
    }

    #[test]
    fn nan_never_reaches_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        let bad = reading("a", 0, f64::NAN, Route::Batch);
        assert!(s.insert_readings(&[bad]).is_err());
        let bad = reading("a", 0, 85.0, Route::Batch);
        assert!(s.insert_readings(&[bad]).is_err());
    }

    #[test]
    fn filters_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        let rows: Vec<_> = (0..10)
            .map(|i| {
                reading(
                    if i % 2 == 0 { "a" } else { "b" },
                    i / 2,
                    20.0,
                    if i == 4 {
                        Route::Realtime
                    } else {
                        Route::Batch
                    },
                )
            })
            .collect();
        s.insert_readings(&rows).unwrap();
        let f = |f: ReadingFilter| {
            s.readings(&f)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            f(ReadingFilter {
                sensor: Some("a".into()),
                ..Default::default()
            }),
            vec![1, 3, 5, 7, 9]
        );
        assert_eq!(
            f(ReadingFilter {
                route: Some(Route::Realtime),
                ..Default::default()
            }),
            vec![5]
        );
        assert_eq!(
            f(ReadingFilter {
                limit: Some(3),
                ..Default::default()
            }),
            vec![8, 9, 10]
        );
        assert_eq!(
            f(ReadingFilter {
                after_id: Some(8),
                ..Default::default()
            }),
            vec![9, 10]
        );
        // ts_ms = 1000 * seq: seqs 1..=2 of both sensors.
        assert_eq!(
            f(ReadingFilter {
                since_ms: Some(1000),
                until_ms: Some(3000),
                ..Default::default()
            }),
            vec![3, 4, 5, 6]
        );
    }

    #[test]
    fn foreign_and_broken_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("other.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let e = Store::open(&foreign, Access::Writer).unwrap_err();
        assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
        assert!(e.to_string().contains("tables: t"), "{e}");
        let n: i64 = Connection::open(&foreign)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);

        let junk = dir.path().join("junk.db");
        std::fs::write(
            &junk,
            b"this is not a database, just some text that is long enough to matter....",
        )
        .unwrap();
        let e = Store::open(&junk, Access::Writer).unwrap_err();
        assert!(matches!(e, StoreError::NotADatabase { .. }), "{e}");
        let e = Store::open(&junk, Access::ReadOnly).unwrap_err();
        assert!(matches!(e, StoreError::NotADatabase { .. }), "{e}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        drop(Store::open(&path, Access::Writer).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = Store::open(&path, Access::Writer).unwrap_err();
        assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e}");
    }

    #[test]
    fn missing_directory_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = Store::open(&dir.path().join("nope/e.db"), Access::Writer).unwrap_err();
        assert!(matches!(e, StoreError::MissingDir { .. }), "{e}");
        let e = Store::open(&dir.path().join("e.db"), Access::ReadOnly).unwrap_err();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    }

    #[test]
    fn only_one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let first = Store::open(&path, Access::Writer).unwrap();
        let e = Store::open(&path, Access::Writer).unwrap_err();
        assert!(matches!(e, StoreError::Busy { .. }), "{e}");
        // Readers are never locked out.
        Store::open(&path, Access::ReadOnly).unwrap();
        drop(first);
        Store::open(&path, Access::Writer).unwrap();
    }

    #[test]
    fn outbox_lists_unpublished_rows_and_acks_count_per_route() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let mut w = Store::open(&path, Access::Writer).unwrap();
        let rows: Vec<_> = (0..5)
            .map(|i| {
                reading(
                    "a",
                    i,
                    20.0,
                    if i == 2 {
                        Route::Realtime
                    } else {
                        Route::Batch
                    },
                )
            })
            .collect();
        w.commit_cycle(&rows, &[], &status()).unwrap();
        let mut o = Store::open(&path, Access::Outbox).unwrap();
        assert_eq!(o.outbox("pi", 0, 100).unwrap().rows.len(), 5);
        assert_eq!(
            o.outbox("pi", 3, 100)
                .unwrap()
                .rows
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![4, 5]
        );
        o.set_broker("pi", BrokerState::Connected, None, 7).unwrap();
        let acked = [
            Acked {
                route: Route::Realtime,
                ids: vec![3],
                late: 0,
                at_ms: 98,
            },
            Acked {
                route: Route::Batch,
                ids: vec![1, 2],
                late: 0,
                at_ms: 99,
            },
        ];
        o.mark_published("pi", &acked).unwrap();
        let left: Vec<i64> = o
            .outbox("pi", 0, 100)
            .unwrap()
            .rows
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, vec![4, 5]);
        let b = o.broker("pi").unwrap().unwrap();
        assert_eq!(b.state, BrokerState::Connected);
        assert_eq!(
            (b.published_realtime, b.published_batch, b.outbox_depth),
            (1, 2, 2)
        );
        assert_eq!(b.last_ack_ms, Some(99));
        // A later heartbeat does not clobber the publisher's columns.
        w.commit_cycle(&[], &[], &status()).unwrap();
        assert_eq!(o.broker("pi").unwrap().unwrap().published_batch, 2);
    }

    #[test]
    fn marking_names_each_reading_it_marked_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let mut w = Store::open(&path, Access::Writer).unwrap();
        let rows: Vec<_> = (0..3)
            .map(|i| reading("a", i, 20.0, Route::Batch))
            .collect();
        w.commit_cycle(&rows, &[], &status()).unwrap();
        let mut o = Store::open(&path, Access::Outbox).unwrap();
        let acked = [Acked {
            route: Route::Batch,
            ids: vec![1, 3],
            late: 0,
            at_ms: 99,
        }];
        let mut marked = Vec::new();
        let mark = |o: &mut Store, marked: &mut Vec<(String, String, u64)>| {
            o.mark_published_with("pi", &acked, &mut |node, sensor, seq| {
                marked.push((node.to_owned(), sensor.to_owned(), seq));
            })
            .unwrap();
        };
        mark(&mut o, &mut marked);
        assert_eq!(
            marked,
            [("pi".into(), "a".into(), 0), ("pi".into(), "a".into(), 2)]
        );
        // A duplicate PUBACK's rows are published already: none is named.
        marked.clear();
        mark(&mut o, &mut marked);
        assert!(marked.is_empty(), "{marked:?}");
        assert_eq!(o.outbox("pi", 0, 10).unwrap().rows.len(), 1);
    }

    #[test]
    fn the_outbox_of_all_nodes_is_read_in_row_order_and_acks_count_at_home() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.db");
        let mut w = Store::open(&path, Access::Writer).unwrap();
        let home = AgentStatus {
            node: "gw".into(),
            ..status()
        };
        let of = |node: &str, seq| Reading {
            node: node.into(),
            ..reading("s1", seq, 20.0, Route::Batch)
        };
        // Rows 1..=6: n1, n2, n1, n2, ... (both with a sensor "s1").
        let rows: Vec<_> = (0..3).flat_map(|i| [of("n1", i), of("n2", i)]).collect();
        w.commit_cycle(&rows, &[], &home).unwrap();
        // The heartbeat counts the whole log's outbox on the home row.
        assert_eq!(w.broker("gw").unwrap().unwrap().outbox_depth, 6);
        let mut o = Store::open(&path, Access::Outbox).unwrap();
        let read = |o: &mut Store, after| -> Vec<(i64, String)> {
            o.outbox_of_all(after, 4)
                .unwrap()
                .rows
                .into_iter()
                .map(|r| (r.id, r.reading.node))
                .collect()
        };
        let node = |id: i64| if id % 2 == 1 { "n1" } else { "n2" }.to_owned();
        assert_eq!(
            read(&mut o, 0),
            (1..=4).map(|i| (i, node(i))).collect::<Vec<_>>()
        );
        assert_eq!(read(&mut o, 4), vec![(5, node(5)), (6, node(6))]);
        // Per node, as before.
        assert_eq!(o.outbox("n2", 0, 100).unwrap().rows.len(), 3);
        o.mark_published(
            "gw",
            &[Acked {
                route: Route::Batch,
                ids: vec![1, 2, 4],
                late: 0,
                at_ms: 50,
            }],
        )
        .unwrap();
        // A new session starts at the oldest unpublished row, whatever its
        // node; the acknowledged rows of both nodes are gone.
        assert_eq!(
            read(&mut o, 0),
            vec![(3, node(3)), (5, node(5)), (6, node(6))]
        );
        assert_eq!(o.outbox_depth_of_all().unwrap(), 3);
        assert_eq!(
            (o.outbox_depth("n1").unwrap(), o.outbox_depth("n2").unwrap()),
            (2, 1)
        );
        let b = o.broker("gw").unwrap().unwrap();
        assert_eq!(
            (b.published_batch, b.outbox_depth, b.last_ack_ms),
            (3, 3, Some(50))
        );
        // The nodes have no status row of their own.
        assert_eq!(o.broker("n1").unwrap(), None);
        // A drained outbox reads empty from the start too.
        o.mark_published(
            "gw",
            &[Acked {
                route: Route::Batch,
                ids: vec![3, 5, 6],
                late: 0,
                at_ms: 60,
            }],
        )
        .unwrap();
        assert_eq!(o.outbox_of_all(0, 4).unwrap(), OutboxRows::default());
        assert_eq!(o.outbox_depth_of_all().unwrap(), 0);
    }

    #[test]
    fn version_one_logs_are_migrated_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                "INSERT INTO agent_status VALUES ('pi', 'stopped', 1, 'old', 0, 0, 15000, 0)",
            )
            .unwrap();
        }
        let s = Store::open(&path, Access::Writer).unwrap();
        assert_eq!(s.identity().unwrap().0, SCHEMA_VERSION);
        assert_eq!(
            s.broker("pi").unwrap().unwrap().state,
            BrokerState::Disabled
        );
    }

    #[test]
    fn minute_totals_are_backfilled_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            // A version 2 log with readings in two minutes.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(MIGRATIONS[1]).unwrap();
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
            c.execute_batch(
                "INSERT INTO readings (node, sensor, seq, ts_ms, temperature_c, humidity_pct,
                   weight_temperature, weight_humidity, priority, route) VALUES
                 ('pi', 'a', 0, 60000, 20, 50, 0, 0, 0, 'batch'),
                 ('pi', 'a', 1, 75000, 22, 52, 1, 0, 1, 'realtime'),
                 ('pi', 'a', 2, 120000, 21, 51, 0, 0, 0, 'batch')",
            )
            .unwrap();
        }
        // Readers cannot migrate: they say who can.
        let old = Store::open(&path, Access::ReadOnly).unwrap();
        let err = old.snapshot().err().unwrap();
        assert!(matches!(err, StoreError::TooOld { found: 2, .. }), "{err}");
        assert!(err.to_string().contains("start this edgeprio's agent"));
        drop(old);
        let mut s = Store::open(&path, Access::Writer).unwrap();
        s.insert_readings(&[reading("a", 3, 23.0, Route::Batch)])
            .unwrap();
        let ts = reading("a", 3, 23.0, Route::Batch).ts_ms;
        let totals = |s: &Store| -> Vec<(i64, i64, i64, f64, i64, i64)> {
            s.conn
                .prepare(
                    "SELECT minute, realtime, batch, sum_temperature, max_priority, last_ts_ms
                     FROM readings_minute ORDER BY minute",
                )
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let mut want = vec![
            (ts / MINUTE_MS, 0, 1, 23.0, 0, ts),
            (1, 1, 1, 42.0, 1, 75_000),
            (2, 0, 1, 21.0, 0, 120_000),
        ];
        assert_eq!(totals(&s), want);
        // A deleted reading is taken back out; an emptied minute goes.
        s.conn
            .execute("DELETE FROM readings WHERE seq IN (1, 2)", [])
            .unwrap();
        want[1] = (1, 0, 1, 20.0, 1, 75_000);
        want.remove(2);
        assert_eq!(totals(&s), want);
    }

    #[test]
    fn status_round_trips_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        s.commit_cycle(&[], &[], &status()).unwrap();
        assert_eq!(s.status("pi").unwrap(), Some(status()));
        s.mark_stopped(&status()).unwrap();
        assert!(!s.status("pi").unwrap().unwrap().running);
    }

    #[test]
    fn heartbeat_records_the_space_the_log_takes_and_has_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("e.db"), Access::Writer).unwrap();
        s.commit_cycle(&[], &[], &status()).unwrap();
        let rows: Vec<_> = (0..2_000)
            .map(|i| reading("a", i, 20.0, Route::Batch))
            .collect();
        s.commit_cycle(&rows, &[], &status()).unwrap();
        // The space is measured before the commit: this heartbeat sees the
        // rows above.
        s.commit_cycle(&[], &[], &status()).unwrap();
        let h = s.housekeeping("pi").unwrap().unwrap();
        let space = h.space.unwrap();
        let on_disk = std::fs::metadata(s.path()).unwrap().len()
            + std::fs::metadata(dir.path().join("e.db-wal")).map_or(0, |m| m.len());
        assert!(space.db_bytes > 50_000, "{space:?}");
        assert!(space.db_bytes <= on_disk, "{space:?} vs {on_disk}");
        assert!(space.disk_free_bytes.is_some_and(|f| f > 0), "{space:?}");
        assert_eq!(space.db_free_bytes, 0);
        assert_eq!((h.pruned_readings, h.shed_readings), (0, 0));
        assert_eq!(h.last_prune_ms, None);
        // The outbox depth sits beside them.
        assert_eq!(s.broker("pi").unwrap().unwrap().outbox_depth, 2_000);
        // Readers see the same.
        let r = Store::open(s.path(), Access::ReadOnly).unwrap();
        assert_eq!(r.housekeeping("pi").unwrap(), Some(h));
        assert_eq!(r.housekeeping("other").unwrap(), None);
    }

    #[test]
    fn version_three_logs_get_the_space_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        {
            let c = log_at_version(&path, 3);
            c.execute_batch(
                "INSERT INTO agent_status (node, state, pid, version, started_ms, heartbeat_ms,
                   interval_ms, outbox_depth, published_batch)
                 VALUES ('pi', 'stopped', 1, 'old', 0, 0, 15000, 0, 7)",
            )
            .unwrap();
        }
        // Before the agent migrates it, readers just find nothing recorded.
        let old = Store::open(&path, Access::ReadOnly).unwrap();
        assert_eq!(old.housekeeping("pi").unwrap(), None);
        drop(old);
        let mut s = Store::open(&path, Access::Writer).unwrap();
        assert_eq!(s.identity().unwrap().0, SCHEMA_VERSION);
        let h = s.housekeeping("pi").unwrap().unwrap();
        assert_eq!(h.space, None);
        assert_eq!((h.pruned_readings, h.shed_readings), (0, 0));
        s.commit_cycle(&[], &[], &status()).unwrap();
        assert!(s.housekeeping("pi").unwrap().unwrap().space.is_some());
        // The old columns are kept; the file keeps the auto-vacuum it had.
        assert_eq!(s.broker("pi").unwrap().unwrap().published_batch, 7);
        let vacuum: i64 = s
            .conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap();
        assert_eq!(vacuum, 0);
    }
}
