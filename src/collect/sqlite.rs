//! The `SQLite` sink: a collector's own database file, the default of
//! `edgeprio collect --db FILE`.
//!
//! Table `readings` has the agent's column names (DESIGN.md, "`SQLite`
//! log") plus what a consumer learns on the wire: `log` (the 16-hex-digit
//! log identity, part of the key), `late`, `resent`, and `received_ms`
//! (when the collector stored it). Each reading is stored once per
//! `UNIQUE (node, sensor, log, seq)`: a duplicate is counted, not stored.
//!
//! rusqlite blocks, so the connection lives on a thread of its own and
//! [`SqliteSink`] talks to it over a channel (STYLE habit 3).
//!
//! # Troubleshooting
//!
//! - "is an edgeprio agent's log": `--db` names the file an agent (or a
//!   gateway) writes. A collector keeps a database of its own; point
//!   `--db` at another file.
//! - "is not a collector database": the file belongs to some other
//!   program; edgeprio never writes into it.
//! - "database is locked": another process holds a write transaction longer
//!   than the busy timeout (5 s); usually a `sqlite3` shell left inside
//!   `BEGIN`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::gaps::{Gap, RepairPolicy, StreamKey, StreamState, Streams};
use super::{
    MEMBER_SEEN_MS, Member, Repair, SCAN_ROWS, Sink, SinkError, Stored, asking, policy_for,
};
use crate::domain::{LogId, Received, ResendReply};

/// `PRAGMA application_id` of a collector's database ("EDCL"): tells it
/// from an agent's log (`store::APPLICATION_ID`, "EDPR") and from other
/// programs' files.
pub const APPLICATION_ID: i32 = 0x4544_434C;

/// Forward migrations; `MIGRATIONS[i]` takes `user_version` from i to i+1.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema. `clock_synced` is 1, 0 or NULL (unknown) as in
    // the agent's log; `late` and `resent` are 0 or 1.
    "CREATE TABLE readings (
        id                 INTEGER PRIMARY KEY,
        node               TEXT    NOT NULL,
        sensor             TEXT    NOT NULL,
        log                TEXT    NOT NULL
                           CHECK (length(log) = 16 AND NOT log GLOB '*[^0-9a-f]*'),
        seq                INTEGER NOT NULL CHECK (seq >= 0),
        ts_ms              INTEGER NOT NULL,
        temperature_c      REAL    NOT NULL,
        humidity_pct       REAL    NOT NULL,
        weight_temperature INTEGER NOT NULL,
        weight_humidity    INTEGER NOT NULL,
        priority           INTEGER NOT NULL,
        route              TEXT    NOT NULL CHECK (route IN ('realtime', 'batch')),
        clock_synced       INTEGER CHECK (clock_synced IN (0, 1)),
        late               INTEGER NOT NULL CHECK (late IN (0, 1)),
        resent             INTEGER NOT NULL CHECK (resent IN (0, 1)),
        received_ms        INTEGER NOT NULL,
        UNIQUE (node, sensor, log, seq)
    );
    CREATE INDEX readings_ts ON readings (ts_ms);",
    // 2: gap tracking (`collect::gaps`): each stream's highest seq and
    // what it has been repaired of, its missing ranges, and the last row
    // id a scan read.
    "CREATE TABLE streams (
        node     TEXT    NOT NULL,
        sensor   TEXT    NOT NULL,
        log      TEXT    NOT NULL,
        highest  INTEGER NOT NULL,
        repaired INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (node, sensor, log)
    ) WITHOUT ROWID;
    CREATE TABLE gaps (
        node     TEXT    NOT NULL,
        sensor   TEXT    NOT NULL,
        log      TEXT    NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq  INTEGER NOT NULL CHECK (last_seq >= first_seq),
        found_ms INTEGER NOT NULL,
        asked_ms INTEGER,
        asks     INTEGER NOT NULL DEFAULT 0,
        gone_ms  INTEGER,
        PRIMARY KEY (node, sensor, log, first_seq)
    ) WITHOUT ROWID;
    CREATE TABLE collectors (
        client_id TEXT    PRIMARY KEY,
        route     TEXT    NOT NULL,
        seen_ms   INTEGER NOT NULL
    );
    CREATE TABLE gap_scan (last_id INTEGER NOT NULL);
    INSERT INTO gap_scan VALUES (0);",
];

/// The schema version this build writes.
#[expect(clippy::cast_possible_wrap, reason = "a handful of migrations")]
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One call of the sink, for the connection's thread; each carries where
/// its outcome goes (a caller that gave up has dropped it).
enum Job {
    /// [`Sink::store`].
    Store {
        /// The readings, owned: the thread outlives the caller's borrow.
        readings: Vec<Received>,
        /// When they were received (Unix ms), stored in `received_ms`.
        received_ms: i64,
        /// The outcome.
        reply: oneshot::Sender<Result<Stored, SinkError>>,
    },
    /// [`Sink::repair`].
    Repair {
        /// Now, Unix ms.
        now_ms: i64,
        /// When to ask.
        policy: RepairPolicy,
        /// Who scans.
        me: Member,
        /// The outcome.
        reply: oneshot::Sender<Result<Repair, SinkError>>,
    },
    /// [`Sink::observe`].
    Observe {
        /// The streams' highest seqs.
        seen: Vec<(StreamKey, u64)>,
        /// Now, Unix ms.
        now_ms: i64,
        /// The outcome.
        reply: oneshot::Sender<Result<(), SinkError>>,
    },
    /// [`Sink::answer`].
    Answer {
        /// The node that answered.
        node: String,
        /// Its reply.
        answer: ResendReply,
        /// Now, Unix ms.
        now_ms: i64,
        /// The outcome.
        reply: oneshot::Sender<Result<(), SinkError>>,
    },
}

/// A collector's `SQLite` database, written from a thread of its own.
#[derive(Debug)]
pub struct SqliteSink {
    /// Calls for the thread that owns the connection; dropping it ends the
    /// thread (and closes the file).
    jobs: mpsc::Sender<Job>,
    /// The file, for [`Sink::describe`] and error messages.
    path: PathBuf,
}

impl SqliteSink {
    /// Opens (creating or migrating) the collector database at `path`, in
    /// WAL mode with a busy timeout. An agent's log, another program's
    /// file, or a database of a newer edgeprio is refused and left as it
    /// is.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteSink, SinkError> {
        let path = path.as_ref().to_path_buf();
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (opened_tx, opened) = oneshot::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("collect-sqlite".into())
            .spawn(move || {
                let mut conn = match open_conn(&thread_path) {
                    Ok(conn) => {
                        let _ = opened_tx.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                for job in inbox {
                    match job {
                        Job::Store {
                            readings,
                            received_ms,
                            reply,
                        } => {
                            let _ =
                                reply.send(insert(&mut conn, &thread_path, &readings, received_ms));
                        }
                        Job::Repair {
                            now_ms,
                            policy,
                            me,
                            reply,
                        } => {
                            let outcome = repair(&mut conn, now_ms, policy, &me)
                                .map_err(|e| gap_error(&thread_path, &e));
                            let _ = reply.send(outcome);
                        }
                        Job::Observe {
                            seen,
                            now_ms,
                            reply,
                        } => {
                            let outcome = observe(&mut conn, &seen, now_ms)
                                .map_err(|e| gap_error(&thread_path, &e));
                            let _ = reply.send(outcome);
                        }
                        Job::Answer {
                            node,
                            answer,
                            now_ms,
                            reply,
                        } => {
                            let outcome = take_answer(&mut conn, &node, &answer, now_ms)
                                .map_err(|e| gap_error(&thread_path, &e));
                            let _ = reply.send(outcome);
                        }
                    }
                }
            })
            .map_err(|e| SinkError::Connect {
                target: path.display().to_string(),
                detail: format!("cannot start its thread: {e}"),
            })?;
        match opened.await {
            Ok(Ok(())) => Ok(SqliteSink { jobs, path }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SinkError::Connect {
                target: path.display().to_string(),
                detail: "its thread ended while opening it".into(),
            }),
        }
    }

    /// The file it stores into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The error of a call whose thread is gone.
    fn ended(&self) -> SinkError {
        gap_error(&self.path, &"the database thread has ended")
    }
}

impl Sink for SqliteSink {
    async fn store(
        &mut self,
        readings: &[Received],
        received_ms: i64,
    ) -> Result<Stored, SinkError> {
        let (reply, outcome) = oneshot::channel();
        let gone = || SinkError::Write {
            target: self.path.display().to_string(),
            readings: readings.len(),
            detail: "the database thread has ended".into(),
        };
        self.jobs
            .send(Job::Store {
                readings: readings.to_vec(),
                received_ms,
                reply,
            })
            .map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }

    async fn repair(
        &mut self,
        now_ms: i64,
        policy: RepairPolicy,
        me: &Member,
    ) -> Result<Repair, SinkError> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send(Job::Repair {
                now_ms,
                policy,
                me: me.clone(),
                reply,
            })
            .map_err(|_| self.ended())?;
        outcome.await.map_err(|_| self.ended())?
    }

    async fn observe(&mut self, seen: &[(StreamKey, u64)], now_ms: i64) -> Result<(), SinkError> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send(Job::Observe {
                seen: seen.to_vec(),
                now_ms,
                reply,
            })
            .map_err(|_| self.ended())?;
        outcome.await.map_err(|_| self.ended())?
    }

    async fn answer(
        &mut self,
        node: &str,
        reply: &ResendReply,
        now_ms: i64,
    ) -> Result<(), SinkError> {
        let (tx, outcome) = oneshot::channel();
        self.jobs
            .send(Job::Answer {
                node: node.to_owned(),
                answer: reply.clone(),
                now_ms,
                reply: tx,
            })
            .map_err(|_| self.ended())?;
        outcome.await.map_err(|_| self.ended())?
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }
}

/// Opens `path`, refuses what is not a collector database, and brings its
/// schema up to [`SCHEMA_VERSION`].
fn open_conn(path: &Path) -> Result<Connection, SinkError> {
    let target = path.display().to_string();
    let connect = |detail: String| SinkError::Connect {
        target: target.clone(),
        detail,
    };
    let schema = |detail: String| SinkError::Schema {
        target: target.clone(),
        detail,
    };
    // A read-write connection checkpoints a write-ahead log into its file
    // (and deletes it) when it closes, even after a refusal: an existing
    // file is judged through a read-only one first, which never writes
    // the file nor its write-ahead log (an agent's log, another
    // program's database).
    if path.exists() {
        let probe = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| connect(e.to_string()))?;
        probe
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| connect(e.to_string()))?;
        refuse_foreign(&probe, &connect, &schema)?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| connect(e.to_string()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| connect(e.to_string()))?;
    // Switching a new file to WAL takes an exclusive lock, and SQLite
    // answers "database is locked" at once, without its busy handler,
    // while another collector opening the same new file holds a lock
    // (one run in four of the two-sinks test here): retried within the
    // busy timeout.
    let mode: String =
        retry_busy(|| conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)))
            .map_err(|e| schema(e.to_string()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(schema(format!(
            "SQLite kept journal_mode={mode} instead of WAL"
        )));
    }
    // `Ok` from `store` promises durability: FULL syncs the WAL per commit.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| schema(e.to_string()))?;
    migrate(conn, &connect, &schema)
}

/// Runs `step` again while it fails with `SQLITE_BUSY`, for at most the
/// busy timeout.
fn retry_busy<T>(mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match step() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Refuses what is not a collector database (an agent's log, another
/// program's file) or has a newer schema than this build knows.
fn refuse_foreign(
    conn: &Connection,
    connect: &impl Fn(String) -> SinkError,
    schema: &impl Fn(String) -> SinkError,
) -> Result<(), SinkError> {
    // The first real read tells a damaged or non-SQLite file apart. Both
    // reads in one query, one snapshot: another collector migrating the
    // new file between two reads showed its tables without its
    // application id, and the file was refused as another program's
    // (seen once in CI).
    let (version, app_id, tables) =
        identity_and_tables(conn).map_err(|e| connect(e.to_string()))?;
    let agents =
        app_id == crate::store::APPLICATION_ID || tables.iter().any(|t| t == "agent_status");
    if agents {
        return Err(schema(
            "it is an edgeprio agent's log (the file `edgeprio run` or `gateway` writes), \
             not a collector database: a collector stores into a database of its own, \
             so point --db at another file"
                .into(),
        ));
    }
    let empty = version == 0 && app_id == 0 && tables.is_empty();
    if app_id != APPLICATION_ID && !empty {
        return Err(schema(format!(
            "it is not a collector database (application_id {app_id:#x}, tables: {}): \
             edgeprio does not write into another program's file; point --db at a new file",
            if tables.is_empty() {
                "none".into()
            } else {
                tables.join(", ")
            }
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(schema(format!(
            "its schema version is {version}, this edgeprio knows up to {SCHEMA_VERSION}: \
             a newer edgeprio made it; upgrade this one"
        )));
    }
    Ok(())
}

/// Applies the pending migrations in one immediate transaction, reading
/// the version again inside it: two collectors opening one new file at
/// once migrate it once.
fn migrate(
    mut conn: Connection,
    connect: &impl Fn(String) -> SinkError,
    schema: &impl Fn(String) -> SinkError,
) -> Result<Connection, SinkError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| schema(e.to_string()))?;
    // Again on the connection that writes, holding the write lock: the
    // file may have been made between the two opens, and another
    // collector migrating it is either done or not started.
    refuse_foreign(&tx, connect, schema)?;
    let (version, _) = identity(&tx).map_err(|e| schema(e.to_string()))?;
    let pending: Vec<&str> = MIGRATIONS
        .iter()
        .skip(usize::try_from(version).unwrap_or(usize::MAX))
        .copied()
        .collect();
    if !pending.is_empty() {
        tx.execute_batch(&format!(
            "{}; PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};",
            pending.join(";\n")
        ))
        .map_err(|e| schema(e.to_string()))?;
    }
    tx.commit().map_err(|e| schema(e.to_string()))?;
    if !pending.is_empty() {
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            "migrated the collector database"
        );
    }
    Ok(conn)
}

/// `(user_version, application_id)`.
fn identity(conn: &Connection) -> rusqlite::Result<(i64, i32)> {
    let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let app_id = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    Ok((version, app_id))
}

/// `(user_version, application_id)` and the file's table names, read in
/// one statement (one snapshot).
fn identity_and_tables(conn: &Connection) -> rusqlite::Result<(i64, i32, Vec<String>)> {
    conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version),
                (SELECT application_id FROM pragma_application_id),
                (SELECT group_concat(name, char(10)) FROM
                    (SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name))",
        [],
        |r| {
            let names: Option<String> = r.get(2)?;
            let tables = names
                .map(|n| n.split('\n').map(str::to_owned).collect())
                .unwrap_or_default();
            Ok((r.get(0)?, r.get(1)?, tables))
        },
    )
}

/// Stores `readings` in one transaction, counting what was new.
fn insert(
    conn: &mut Connection,
    path: &Path,
    readings: &[Received],
    received_ms: i64,
) -> Result<Stored, SinkError> {
    let write = |detail: String| SinkError::Write {
        target: path.display().to_string(),
        readings: readings.len(),
        detail,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| write(e.to_string()))?;
    let mut inserted = 0_u64;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO readings (node, sensor, log, seq, ts_ms, temperature_c,
                     humidity_pct, weight_temperature, weight_humidity, priority, route,
                     clock_synced, late, resent, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT DO NOTHING",
            )
            .map_err(|e| write(e.to_string()))?;
        for r in readings {
            let reading = &r.reading;
            let seq = i64::try_from(reading.seq).map_err(|_| {
                write(format!(
                    "seq {} of {}/{} does not fit a 64-bit signed integer",
                    reading.seq, reading.node, reading.sensor
                ))
            })?;
            let n = stmt
                .execute(params![
                    reading.node,
                    reading.sensor,
                    r.log.to_string(),
                    seq,
                    reading.ts_ms,
                    reading.sample.temperature,
                    reading.sample.humidity,
                    reading.weights.temperature,
                    reading.weights.humidity,
                    reading.priority,
                    reading.route.as_str(),
                    reading.clock_synced,
                    r.late,
                    r.resent,
                    received_ms,
                ])
                .map_err(|e| write(e.to_string()))?;
            inserted += n as u64;
        }
    }
    tx.commit().map_err(|e| write(e.to_string()))?;
    Ok(Stored {
        inserted,
        duplicates: readings.len() as u64 - inserted,
    })
}

/// A failed gap scan or reply, as a sink error.
fn gap_error(path: &Path, e: &dyn std::fmt::Display) -> SinkError {
    SinkError::Gaps {
        target: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// One [`Sink::repair`]: the rows after the last scan, the streams' state,
/// the requests, in one immediate transaction (so collectors writing one
/// file scan it one at a time, and never miss a row being inserted).
fn repair(
    conn: &mut Connection,
    now_ms: i64,
    policy: RepairPolicy,
    me: &Member,
) -> rusqlite::Result<Repair> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO collectors (client_id, route, seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (client_id) DO UPDATE SET route = excluded.route, seen_ms = excluded.seen_ms",
        params![me.client_id, me.route.as_str(), now_ms],
    )?;
    let routes: Vec<(String, i64)> = tx
        .prepare_cached(
            "SELECT route, max(seen_ms) FROM collectors WHERE seen_ms >= ?1
             GROUP BY route ORDER BY route",
        )?
        .query_map([now_ms - MEMBER_SEEN_MS], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let asking = asking(&routes, now_ms);
    let policy = &policy_for(policy, asking);
    let last_id: i64 = tx.query_row("SELECT last_id FROM gap_scan", [], |r| r.get(0))?;
    let mut rows = Vec::new();
    let mut upto = last_id;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, node, sensor, log, seq FROM readings WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut q = stmt.query(params![last_id, i64::from(SCAN_ROWS)])?;
        while let Some(r) = q.next()? {
            upto = r.get(0)?;
            let log: String = r.get(3)?;
            let seq: i64 = r.get(4)?;
            rows.push((
                StreamKey {
                    node: r.get(1)?,
                    sensor: r.get(2)?,
                    log: LogId::parse(&log).unwrap_or(LogId::new(0)),
                },
                u64::try_from(seq).unwrap_or(0),
            ));
        }
    }
    let scanned = rows.len() as u64;
    let mut streams = load(&tx)?;
    let (changed, asks) = streams.scan(rows, now_ms, policy);
    for key in &changed {
        save(&tx, key, &streams.0[key])?;
    }
    tx.execute("UPDATE gap_scan SET last_id = ?1", [upto])?;
    tx.commit()?;
    Ok(Repair {
        asks,
        nodes: streams.by_node(now_ms, policy),
        scanned,
        more: scanned >= u64::from(SCAN_ROWS),
        routes,
        asking,
    })
}

/// Takes the nodes' states' highest seqs into their streams.
fn observe(conn: &mut Connection, seen: &[(StreamKey, u64)], now_ms: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (key, seq) in seen {
        if let Some(mut state) = load_one(&tx, key)?
            && state.saw_highest(*seq, now_ms)
        {
            save(&tx, key, &state)?;
        }
    }
    tx.commit()
}

/// Takes a node's reply into the stream it is about.
fn take_answer(
    conn: &mut Connection,
    node: &str,
    reply: &ResendReply,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = StreamKey {
        node: node.to_owned(),
        sensor: reply.sensor.clone(),
        log: reply.log,
    };
    if let Some(mut state) = load_one(&tx, &key)?
        && state.answered(reply, now_ms)
    {
        save(&tx, &key, &state)?;
    }
    tx.commit()
}

/// One stream's state, if the database has the stream.
fn load_one(conn: &Connection, key: &StreamKey) -> rusqlite::Result<Option<StreamState>> {
    use rusqlite::OptionalExtension as _;
    let log = key.log.to_string();
    let Some((highest, repaired)) = conn
        .prepare_cached(
            "SELECT highest, repaired FROM streams WHERE node = ?1 AND sensor = ?2 AND log = ?3",
        )?
        .query_row(params![key.node, key.sensor, log], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let gaps = conn
        .prepare_cached(
            "SELECT first_seq, last_seq, found_ms, asked_ms, asks, gone_ms FROM gaps
             WHERE node = ?1 AND sensor = ?2 AND log = ?3 ORDER BY first_seq",
        )?
        .query_map(params![key.node, key.sensor, log], |r| {
            Ok(Gap {
                first: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                last: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                found_ms: r.get(2)?,
                asked_ms: r.get(3)?,
                asks: r.get(4)?,
                gone_ms: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(StreamState {
        highest: u64::try_from(highest).ok(),
        repaired: u64::try_from(repaired).unwrap_or(0),
        gaps,
    }))
}

/// Every stream's state.
fn load(conn: &Connection) -> rusqlite::Result<Streams> {
    let key = |r: &rusqlite::Row<'_>| -> rusqlite::Result<StreamKey> {
        let log: String = r.get(2)?;
        Ok(StreamKey {
            node: r.get(0)?,
            sensor: r.get(1)?,
            log: LogId::parse(&log).unwrap_or(LogId::new(0)),
        })
    };
    let mut streams = Streams::default();
    let mut stmt =
        conn.prepare_cached("SELECT node, sensor, log, highest, repaired FROM streams")?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        let highest: i64 = r.get(3)?;
        let repaired: i64 = r.get(4)?;
        streams.0.insert(
            key(r)?,
            StreamState {
                highest: u64::try_from(highest).ok(),
                repaired: u64::try_from(repaired).unwrap_or(0),
                gaps: Vec::new(),
            },
        );
    }
    let mut stmt = conn.prepare_cached(
        "SELECT node, sensor, log, first_seq, last_seq, found_ms, asked_ms, asks, gone_ms
         FROM gaps ORDER BY node, sensor, log, first_seq",
    )?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        let first: i64 = r.get(3)?;
        let last: i64 = r.get(4)?;
        let gap = Gap {
            first: u64::try_from(first).unwrap_or(0),
            last: u64::try_from(last).unwrap_or(0),
            found_ms: r.get(5)?,
            asked_ms: r.get(6)?,
            asks: r.get(7)?,
            gone_ms: r.get(8)?,
        };
        streams.0.entry(key(r)?).or_default().gaps.push(gap);
    }
    Ok(streams)
}

/// Writes one stream's state over what the file has of it.
fn save(conn: &Connection, key: &StreamKey, state: &StreamState) -> rusqlite::Result<()> {
    let log = key.log.to_string();
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO streams (node, sensor, log, highest, repaired) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (node, sensor, log) DO UPDATE SET highest = excluded.highest,
             repaired = excluded.repaired",
    )?
    .execute(params![
        key.node,
        key.sensor,
        log,
        state.highest.map_or(-1, int),
        int(state.repaired)
    ])?;
    conn.prepare_cached("DELETE FROM gaps WHERE node = ?1 AND sensor = ?2 AND log = ?3")?
        .execute(params![key.node, key.sensor, log])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO gaps (node, sensor, log, first_seq, last_seq, found_ms, asked_ms, asks,
             gone_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for g in &state.gaps {
        insert.execute(params![
            key.node,
            key.sensor,
            log,
            int(g.first),
            int(g.last),
            g.found_ms,
            g.asked_ms,
            g.asks,
            g.gone_ms
        ])?;
    }
    Ok(())
}
