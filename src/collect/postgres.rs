//! The `PostgreSQL` sink (`edgeprio collect --db postgres://...`): the
//! database a fleet's collectors share, and that Grafana, R or Kibana read.
//!
//! # Schema
//!
//! Created on first use and migrated forward by the first collector to
//! connect after an upgrade; a collector that finds a newer schema than it
//! knows refuses to write. `edgeprio_schema` has one row per migration
//! applied (`version`, `applied_at`). Collectors that start at once take
//! the advisory lock [`SCHEMA_LOCK`] around the migration, so the schema is
//! created once.
//!
//! Table `readings` has the agent's column names (DESIGN.md, "`SQLite`
//! log"): `node`, `sensor`, `seq`, `ts_ms` (BIGINT, Unix ms),
//! `temperature_c`, `humidity_pct`, `weight_temperature`,
//! `weight_humidity`, `priority`, `route`, `clock_synced` (NULL when
//! unknown), plus `log` (the log identity, 16 hex digits, part of the key),
//! `late`, `resent`, `received_ms` (when the collector stored it), and `ts`,
//! the same instant as `ts_ms` as a `timestamptz` (a stored generated
//! column, indexed). Each reading is stored once per
//! `UNIQUE (node, sensor, log, seq)`.
//!
//! # Grafana
//!
//! View `readings_grafana`: `time` (timestamptz), `metric` (`node/sensor`),
//! `temperature_c`, `humidity_pct`, `priority`, `route`, `node`, `sensor`.
//! A time-series panel on a `PostgreSQL` data source, query format "Time
//! series", with this query shows one line per sensor:
//!
//! ```sql
//! SELECT time, metric, temperature_c
//! FROM readings_grafana
//! WHERE $__timeFilter(time)
//! ORDER BY time
//! ```
//!
//! (`humidity_pct` or `priority` in place of `temperature_c` for the other
//! channels; `AND route = 'realtime'` for one route.)
//!
//! # Writes
//!
//! One reading (the real-time route) is one `INSERT ... ON CONFLICT DO
//! NOTHING`. More are sent with `COPY ... FROM STDIN BINARY` into a
//! temporary table, then moved with one `INSERT ... SELECT ... ORDER BY
//! key ON CONFLICT DO NOTHING`, all in one transaction: no parameter limit
//! to chunk around, and the key order makes two collectors inserting
//! overlapping batches wait for each other instead of deadlocking.
//!
//! # Connection
//!
//! Plain TCP or a Unix socket: the TLS feature of tokio-postgres is not
//! enabled yet, so `sslmode=require` fails to connect. After a failed call the
//! next one opens a new session. The password is never logged nor put
//! in an error: [`Sink::describe`] shows `postgres://user@host:port/db`.
//!
//! # Troubleshooting
//!
//! - "password authentication failed": the URL's user or password is
//!   wrong, or `pg_hba.conf` asks for another method.
//! - "Connection refused": nothing listens at that host and port; check
//!   `listen_addresses` and `port` in `postgresql.conf`.
//! - "schema version N, this edgeprio knows up to M": a newer edgeprio
//!   migrated the database; upgrade this collector.

use std::fmt::Write as _;
use std::pin::pin;
use std::str::FromStr as _;
use std::time::Duration;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::Host;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::gaps::{Gap, RepairPolicy, StreamKey, StreamState, Streams};
use super::{
    MEMBER_SEEN_MS, Member, Repair, SCAN_ROWS, Sink, SinkError, Stored, asking, policy_for,
};
use crate::domain::{LogId, Received, ResendReply};

/// The key of the advisory lock held while the schema is created or
/// migrated: "edgeprio" in ASCII.
pub const SCHEMA_LOCK: i64 = 0x6564_6765_7072_696f;

/// Forward migrations; `MIGRATIONS[i]` takes the schema from version i to
/// i+1.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema. No range checks on the values: the sensor's
    // node (or the gateway) validated them, and a reading the database
    // refused would be redelivered forever.
    "CREATE TABLE readings (
        id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        node               text    NOT NULL,
        sensor             text    NOT NULL,
        log                text    NOT NULL CHECK (log ~ '^[0-9a-f]{16}$'),
        seq                bigint  NOT NULL CHECK (seq >= 0),
        ts_ms              bigint  NOT NULL,
        ts                 timestamptz GENERATED ALWAYS AS (to_timestamp(ts_ms / 1000.0)) STORED,
        temperature_c      double precision NOT NULL,
        humidity_pct       double precision NOT NULL,
        weight_temperature integer NOT NULL,
        weight_humidity    integer NOT NULL,
        priority           integer NOT NULL,
        route              text    NOT NULL CHECK (route IN ('realtime', 'batch')),
        clock_synced       boolean,
        late               boolean NOT NULL,
        resent             boolean NOT NULL,
        received_ms        bigint  NOT NULL,
        UNIQUE (node, sensor, log, seq)
    );
    CREATE INDEX readings_ts ON readings (ts);
    CREATE VIEW readings_grafana AS
        SELECT ts AS \"time\", node || '/' || sensor AS metric, temperature_c, humidity_pct,
               priority, route, node, sensor
        FROM readings;",
    // 2: gap tracking (`collect::gaps`), as in the SQLite sink.
    "CREATE TABLE streams (
        node     text   NOT NULL,
        sensor   text   NOT NULL,
        log      text   NOT NULL,
        highest  bigint NOT NULL,
        repaired bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (node, sensor, log)
    );
    CREATE TABLE gaps (
        node      text    NOT NULL,
        sensor    text    NOT NULL,
        log       text    NOT NULL,
        first_seq bigint  NOT NULL,
        last_seq  bigint  NOT NULL CHECK (last_seq >= first_seq),
        found_ms  bigint  NOT NULL,
        asked_ms  bigint,
        asks      integer NOT NULL DEFAULT 0,
        gone_ms   bigint,
        PRIMARY KEY (node, sensor, log, first_seq)
    );
    CREATE TABLE collectors (
        client_id text    PRIMARY KEY,
        route     text    NOT NULL,
        seen_ms   bigint NOT NULL
    );
    CREATE TABLE gap_scan (last_id bigint NOT NULL);
    INSERT INTO gap_scan VALUES (0);",
];

/// The schema version this build writes.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "a handful of migrations"
)]
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// How long connecting may take when the URL does not say
/// (`connect_timeout`): an unreachable host must fail, not hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The columns a call writes, in the order of [`COPY_TYPES`].
const COLUMNS: &str = "node, sensor, log, seq, ts_ms, temperature_c, humidity_pct, \
                       weight_temperature, weight_humidity, priority, route, clock_synced, \
                       late, resent, received_ms";

/// The types of [`COLUMNS`], for the binary COPY.
const COPY_TYPES: [Type; 15] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::TEXT,
    Type::BOOL,
    Type::BOOL,
    Type::BOOL,
    Type::INT8,
];

/// A collector's `PostgreSQL` database.
pub struct PostgresSink {
    /// The parsed URL, kept to open the session again after it broke.
    config: Config,
    /// [`Sink::describe`]: the URL without its password.
    target: String,
    /// The open session, `None` after a failed call (the next call
    /// reconnects).
    session: Option<Session>,
}

/// One connection with what the sink prepared on it.
struct Session {
    /// The connection (its I/O runs on a task of its own).
    client: Client,
    /// `INSERT` of one reading, for the real-time route.
    insert_one: Statement,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("target", &self.target)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl PostgresSink {
    /// Connects to the database at `url` (`postgres://user:password@host:
    /// port/db` or the `key=value` form) and creates or migrates its
    /// schema.
    pub async fn connect(url: &str) -> Result<PostgresSink, SinkError> {
        let mut config = Config::from_str(url).map_err(|e| SinkError::Connect {
            target: "the PostgreSQL URL".into(),
            detail: format!("it does not parse: {e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("edgeprio collect");
        }
        let target = describe(&config);
        let session = open_session(&config, &target).await?;
        Ok(PostgresSink {
            config,
            target,
            session: Some(session),
        })
    }

    /// The session, opened again if the last one broke.
    async fn session(&mut self) -> Result<&mut Session, SinkError> {
        if self.session.as_ref().is_none_or(|s| s.client.is_closed()) {
            self.session = None;
            let session = open_session(&self.config, &self.target).await?;
            self.session = Some(session);
        }
        Ok(self.session.as_mut().expect("the session was just opened"))
    }
}

impl Sink for PostgresSink {
    async fn store(
        &mut self,
        readings: &[Received],
        received_ms: i64,
    ) -> Result<Stored, SinkError> {
        if readings.is_empty() {
            return Ok(Stored::default());
        }
        let target = self.target.clone();
        let write = |detail: String| SinkError::Write {
            target: target.clone(),
            readings: readings.len(),
            detail,
        };
        let rows = readings
            .iter()
            .map(|r| Row::of(r, received_ms))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&write)?;
        let session = self.session().await?;
        let outcome = if let [row] = rows.as_slice() {
            session
                .client
                .execute(&session.insert_one, &row.params())
                .await
        } else {
            insert_many(&mut session.client, &rows).await
        };
        match outcome {
            Ok(inserted) => Ok(Stored {
                inserted,
                duplicates: readings.len() as u64 - inserted,
            }),
            Err(e) => {
                // The next call starts on a new session: after a failure
                // this one may be closing (the server shutting it down
                // says so before the socket closes), and a reconnect costs
                // a few milliseconds of a rare event.
                self.session = None;
                Err(write(error_text(&e)))
            }
        }
    }

    async fn repair(
        &mut self,
        now_ms: i64,
        policy: RepairPolicy,
        me: &Member,
    ) -> Result<Repair, SinkError> {
        let target = self.target.clone();
        let session = self.session().await?;
        match repair(&mut session.client, now_ms, policy, me).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.session = None;
                Err(SinkError::Gaps {
                    target,
                    detail: error_text(&e),
                })
            }
        }
    }

    async fn observe(&mut self, seen: &[(StreamKey, u64)], now_ms: i64) -> Result<(), SinkError> {
        let target = self.target.clone();
        let session = self.session().await?;
        match observe(&mut session.client, seen, now_ms).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.session = None;
                Err(SinkError::Gaps {
                    target,
                    detail: error_text(&e),
                })
            }
        }
    }

    async fn answer(
        &mut self,
        node: &str,
        reply: &ResendReply,
        now_ms: i64,
    ) -> Result<(), SinkError> {
        let target = self.target.clone();
        let session = self.session().await?;
        match take_answer(&mut session.client, node, reply, now_ms).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.session = None;
                Err(SinkError::Gaps {
                    target,
                    detail: error_text(&e),
                })
            }
        }
    }

    fn describe(&self) -> String {
        self.target.clone()
    }
}

/// One [`Sink::repair`], in one transaction. `gap_scan`'s row, locked,
/// serialises the collectors' scans and replies; the SHARE lock on
/// `readings` waits for every transaction inserting into it to end (and
/// holds new ones back until the scan commits), so no row with an id
/// below one the scan reads can commit after it: the ids a scan skips are
/// never seen later.
async fn repair(
    client: &mut Client,
    now_ms: i64,
    policy: RepairPolicy,
    me: &Member,
) -> Result<Repair, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let last_id: i64 = tx
        .query_one("SELECT last_id FROM gap_scan FOR UPDATE", &[])
        .await?
        .get(0);
    tx.execute(
        "INSERT INTO collectors (client_id, route, seen_ms) VALUES ($1, $2, $3)
         ON CONFLICT (client_id) DO UPDATE SET route = excluded.route, seen_ms = excluded.seen_ms",
        &[&me.client_id, &me.route.as_str(), &now_ms],
    )
    .await?;
    let routes: Vec<(String, i64)> = tx
        .query(
            "SELECT route, max(seen_ms) FROM collectors WHERE seen_ms >= $1
             GROUP BY route ORDER BY route",
            &[&(now_ms - MEMBER_SEEN_MS)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let asking = asking(&routes, now_ms);
    let policy = &policy_for(policy, asking);
    tx.batch_execute("LOCK TABLE readings IN SHARE MODE")
        .await?;
    let limit = i64::from(SCAN_ROWS);
    let new = tx
        .query(
            "SELECT id, node, sensor, log, seq FROM readings WHERE id > $1 ORDER BY id LIMIT $2",
            &[&last_id, &limit],
        )
        .await?;
    let upto = new.last().map_or(last_id, |r| r.get::<_, i64>(0));
    let rows: Vec<(StreamKey, u64)> = new
        .iter()
        .map(|r| {
            let log: &str = r.get(3);
            let seq: i64 = r.get(4);
            (
                StreamKey {
                    node: r.get(1),
                    sensor: r.get(2),
                    log: LogId::parse(log).unwrap_or(LogId::new(0)),
                },
                u64::try_from(seq).unwrap_or(0),
            )
        })
        .collect();
    let scanned = rows.len() as u64;
    let mut streams = load(&tx).await?;
    let (changed, asks) = streams.scan(rows, now_ms, policy);
    for key in &changed {
        save(&tx, key, &streams.0[key]).await?;
    }
    tx.execute("UPDATE gap_scan SET last_id = $1", &[&upto])
        .await?;
    tx.commit().await?;
    Ok(Repair {
        asks,
        nodes: streams.by_node(now_ms, policy),
        scanned,
        more: scanned >= u64::from(SCAN_ROWS),
        routes,
        asking,
    })
}

/// Takes the nodes' states' highest seqs into their streams, under
/// `gap_scan`'s lock as a scan.
async fn observe(
    client: &mut Client,
    seen: &[(StreamKey, u64)],
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT last_id FROM gap_scan FOR UPDATE", &[])
        .await?;
    for (key, seq) in seen {
        if let Some(mut state) = load_one(&tx, key).await?
            && state.saw_highest(*seq, now_ms)
        {
            save(&tx, key, &state).await?;
        }
    }
    tx.commit().await
}

/// Takes a node's reply into the stream it is about.
async fn take_answer(
    client: &mut Client,
    node: &str,
    reply: &ResendReply,
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT last_id FROM gap_scan FOR UPDATE", &[])
        .await?;
    let key = StreamKey {
        node: node.to_owned(),
        sensor: reply.sensor.clone(),
        log: reply.log,
    };
    if let Some(mut state) = load_one(&tx, &key).await?
        && state.answered(reply, now_ms)
    {
        save(&tx, &key, &state).await?;
    }
    tx.commit().await
}

/// One stream's state, if the database has the stream.
async fn load_one(
    tx: &tokio_postgres::Transaction<'_>,
    key: &StreamKey,
) -> Result<Option<StreamState>, tokio_postgres::Error> {
    let log = key.log.to_string();
    let Some(row) = tx
        .query_opt(
            "SELECT highest, repaired FROM streams WHERE node = $1 AND sensor = $2 AND log = $3",
            &[&key.node, &key.sensor, &log],
        )
        .await?
    else {
        return Ok(None);
    };
    let gaps = tx
        .query(
            "SELECT first_seq, last_seq, found_ms, asked_ms, asks, gone_ms FROM gaps
             WHERE node = $1 AND sensor = $2 AND log = $3 ORDER BY first_seq",
            &[&key.node, &key.sensor, &log],
        )
        .await?
        .iter()
        .map(|r| Gap {
            first: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            last: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            found_ms: r.get(2),
            asked_ms: r.get(3),
            asks: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
            gone_ms: r.get(5),
        })
        .collect();
    Ok(Some(StreamState {
        highest: u64::try_from(row.get::<_, i64>(0)).ok(),
        repaired: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        gaps,
    }))
}

/// Every stream's state.
async fn load(tx: &tokio_postgres::Transaction<'_>) -> Result<Streams, tokio_postgres::Error> {
    let key = |r: &tokio_postgres::Row| StreamKey {
        node: r.get(0),
        sensor: r.get(1),
        log: LogId::parse(r.get(2)).unwrap_or(LogId::new(0)),
    };
    let mut streams = Streams::default();
    for r in tx
        .query(
            "SELECT node, sensor, log, highest, repaired FROM streams",
            &[],
        )
        .await?
    {
        streams.0.insert(
            key(&r),
            StreamState {
                highest: u64::try_from(r.get::<_, i64>(3)).ok(),
                repaired: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
                gaps: Vec::new(),
            },
        );
    }
    for r in tx
        .query(
            "SELECT node, sensor, log, first_seq, last_seq, found_ms, asked_ms, asks, gone_ms
             FROM gaps ORDER BY node, sensor, log, first_seq",
            &[],
        )
        .await?
    {
        let gap = Gap {
            first: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            last: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            found_ms: r.get(5),
            asked_ms: r.get(6),
            asks: u32::try_from(r.get::<_, i32>(7)).unwrap_or(0),
            gone_ms: r.get(8),
        };
        streams.0.entry(key(&r)).or_default().gaps.push(gap);
    }
    Ok(streams)
}

/// Writes one stream's state over what the database has of it.
async fn save(
    tx: &tokio_postgres::Transaction<'_>,
    key: &StreamKey,
    state: &StreamState,
) -> Result<(), tokio_postgres::Error> {
    let log = key.log.to_string();
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO streams (node, sensor, log, highest, repaired) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (node, sensor, log) DO UPDATE SET highest = excluded.highest,
             repaired = excluded.repaired",
        &[
            &key.node,
            &key.sensor,
            &log,
            &state.highest.map_or(-1, int),
            &int(state.repaired),
        ],
    )
    .await?;
    tx.execute(
        "DELETE FROM gaps WHERE node = $1 AND sensor = $2 AND log = $3",
        &[&key.node, &key.sensor, &log],
    )
    .await?;
    for g in &state.gaps {
        let asks = i32::try_from(g.asks).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO gaps (node, sensor, log, first_seq, last_seq, found_ms, asked_ms, asks,
                 gone_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &key.node,
                &key.sensor,
                &log,
                &int(g.first),
                &int(g.last),
                &g.found_ms,
                &g.asked_ms,
                &asks,
                &g.gone_ms,
            ],
        )
        .await?;
    }
    Ok(())
}

/// One reading as the columns take it (the database has no unsigned
/// types).
struct Row<'a> {
    /// The reading.
    r: &'a Received,
    /// Its log identity, as stored.
    log: String,
    /// `seq` as BIGINT.
    seq: i64,
    /// `weight_temperature`, `weight_humidity`, `priority` as INTEGER.
    weights: [i32; 3],
    /// `route` as stored.
    route: &'static str,
    /// When it was received.
    received_ms: i64,
}

impl<'a> Row<'a> {
    fn of(r: &'a Received, received_ms: i64) -> Result<Row<'a>, String> {
        let reading = &r.reading;
        let too_big = |what: &str, v: u64| {
            format!(
                "{what} {v} of {}/{} seq {} is out of the database's range",
                reading.node, reading.sensor, reading.seq
            )
        };
        let int = |what: &str, v: u32| i32::try_from(v).map_err(|_| too_big(what, v.into()));
        Ok(Row {
            r,
            log: r.log.to_string(),
            seq: i64::try_from(reading.seq).map_err(|_| too_big("seq", reading.seq))?,
            weights: [
                int("weight_temperature", reading.weights.temperature)?,
                int("weight_humidity", reading.weights.humidity)?,
                int("priority", reading.priority)?,
            ],
            route: reading.route.as_str(),
            received_ms,
        })
    }

    /// The values of [`COLUMNS`].
    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        let reading = &self.r.reading;
        [
            &reading.node,
            &reading.sensor,
            &self.log,
            &self.seq,
            &reading.ts_ms,
            &reading.sample.temperature,
            &reading.sample.humidity,
            &self.weights[0],
            &self.weights[1],
            &self.weights[2],
            &self.route,
            &reading.clock_synced,
            &self.r.late,
            &self.r.resent,
            &self.received_ms,
        ]
    }
}

/// COPY into the session's temporary table, then one INSERT ... SELECT in
/// key order, in one transaction; returns how many rows were new.
async fn insert_many(client: &mut Client, rows: &[Row<'_>]) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let sink = tx
        .copy_in(&format!("COPY readings_in ({COLUMNS}) FROM STDIN BINARY"))
        .await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &COPY_TYPES));
    for row in rows {
        writer.as_mut().write(&row.params()).await?;
    }
    writer.finish().await?;
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO readings ({COLUMNS}) SELECT {COLUMNS} FROM readings_in
                 ORDER BY node, sensor, log, seq ON CONFLICT DO NOTHING"
            ),
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(inserted)
}

/// Connects, migrates the schema, and prepares what the writes use.
async fn open_session(config: &Config, target: &str) -> Result<Session, SinkError> {
    let (mut client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| SinkError::Connect {
            target: target.to_owned(),
            detail: error_text(&e),
        })?;
    let task_target = target.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(db = %task_target, "the PostgreSQL connection ended: {}", error_text(&e));
        }
    });
    let schema = |e: tokio_postgres::Error| SinkError::Schema {
        target: target.to_owned(),
        detail: error_text(&e),
    };
    migrate(&mut client, target).await?;
    // ON COMMIT DELETE ROWS: each call starts with it empty, and a failed
    // call leaves nothing behind (its rows go with the rollback).
    client
        .batch_execute(&format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS readings_in (
                node text, sensor text, log text, seq bigint, ts_ms bigint,
                temperature_c double precision, humidity_pct double precision,
                weight_temperature integer, weight_humidity integer, priority integer,
                route text, clock_synced boolean, late boolean, resent boolean,
                received_ms bigint
             ) ON COMMIT DELETE ROWS;
             -- the columns must be in the order of COLUMNS: {COLUMNS}"
        ))
        .await
        .map_err(schema)?;
    let insert_one = client
        .prepare(&format!(
            "INSERT INTO readings ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT DO NOTHING"
        ))
        .await
        .map_err(schema)?;
    Ok(Session { client, insert_one })
}

/// Creates or migrates the schema under [`SCHEMA_LOCK`], in one
/// transaction: another collector sees the old schema or the new one.
async fn migrate(client: &mut Client, target: &str) -> Result<(), SinkError> {
    let schema = |detail: String| SinkError::Schema {
        target: target.to_owned(),
        detail,
    };
    let db = |e: tokio_postgres::Error| schema(error_text(&e));
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TABLE IF NOT EXISTS edgeprio_schema (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(db)?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM edgeprio_schema", &[])
        .await
        .map_err(db)?
        .get(0);
    if version > SCHEMA_VERSION {
        return Err(schema(format!(
            "its schema version is {version}, this edgeprio knows up to {SCHEMA_VERSION}: \
             a newer edgeprio migrated it; upgrade this collector"
        )));
    }
    for (to, migration) in
        (version + 1..).zip(MIGRATIONS.iter().skip(version.unsigned_abs() as usize))
    {
        tx.batch_execute(migration).await.map_err(db)?;
        tx.execute("INSERT INTO edgeprio_schema (version) VALUES ($1)", &[&to])
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    if version < SCHEMA_VERSION {
        tracing::info!(db = %target, from = version, to = SCHEMA_VERSION, "migrated the PostgreSQL schema");
    }
    Ok(())
}

/// `postgres://user@host:port/db`: where `config` points, without the
/// password.
fn describe(config: &Config) -> String {
    let mut out = String::from("postgres://");
    if let Some(user) = config.get_user() {
        let _ = write!(out, "{user}@");
    }
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(dir) => dir.display().to_string(),
            };
            // One port for all hosts, or one per host.
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    out.push_str(&hosts.join(","));
    if let Some(db) = config.get_dbname() {
        let _ = write!(out, "/{db}");
    }
    out
}

/// What the driver said, with the server's message when there is one (the
/// driver's own text is only "db error").
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            let _ = write!(text, " ({detail})");
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            let _ = write!(text, ": {more}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_leaves_the_password_out() {
        let config = Config::from_str("postgres://ed:hunter2@db.example:5433/fleet").unwrap();
        assert_eq!(describe(&config), "postgres://ed@db.example:5433/fleet");
        let config =
            Config::from_str("host=/run/postgresql user=ed password=hunter2 dbname=fleet").unwrap();
        assert_eq!(describe(&config), "postgres://ed@/run/postgresql/fleet");
        let config = Config::from_str("postgres://ed:pw@a:1,b:2/x").unwrap();
        assert_eq!(describe(&config), "postgres://ed@a:1,b:2/x");
    }
}
