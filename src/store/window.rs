//! The read side over a time window: what the dashboard shows, from one
//! consistent snapshot of the log.
//!
//! Routing counts and long charts come from `readings_minute` (one row per
//! sensor and minute, see migration 3), so a 24 h window costs at most 1,440
//! small rows per sensor however dense the log; only the window's first,
//! partial minute and short charts read `readings` itself.

use rusqlite::{OptionalExtension as _, Transaction, params};

use super::{
    AgentStatus, BrokerStatus, LogIdentity, MINUTE_MS, SCHEMA_VERSION, Store, StoreError,
    StoredReading, broker_row, classify, log_identity_row, rows, status_row,
};
use crate::domain::{ErrorKind, SensorError};

/// The oldest schema with `readings_minute`.
const WINDOW_SCHEMA: i64 = 3;

/// Real-time and batch counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCounts {
    /// Readings routed real-time.
    pub realtime: u64,
    /// Readings routed batch.
    pub batch: u64,
}

/// One chart point: the readings of one bucket of the window, averaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The newest reading's time in the bucket (Unix ms).
    pub last_ts_ms: i64,
    /// Mean temperature (°C).
    pub temperature: f64,
    /// Mean humidity (%).
    pub humidity: f64,
    /// Highest priority.
    pub priority: u32,
    /// Whether a reading in it went real-time.
    pub realtime: bool,
}

/// A sensor error with its row id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredError {
    /// Row id: insertion order.
    pub id: i64,
    /// The node whose sensor failed: a gateway's log holds many.
    pub node: String,
    /// The error.
    pub error: SensorError,
}

/// One read transaction on the log: every query sees the same state, and
/// in WAL mode it never blocks the writer (nor the writer it).
pub struct Snapshot<'a> {
    tx: Transaction<'a>,
    store: &'a Store,
}

impl Store {
    /// Starts a [`Snapshot`]. Needs schema 3 (`readings_minute`); a reader
    /// of an older log is told to let the agent migrate it.
    pub fn snapshot(&self) -> Result<Snapshot<'_>, StoreError> {
        let (version, _) = self.identity()?;
        if version < WINDOW_SCHEMA {
            return Err(StoreError::TooOld {
                path: self.path.clone(),
                found: version,
                needed: SCHEMA_VERSION,
            });
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.sqlite(e))?;
        Ok(Snapshot { tx, store: self })
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Snapshot<'_> {
    fn err(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.store.path, e)
    }

    /// The node whose agent beat last, else the node of the newest reading.
    pub fn latest_node(&self) -> Result<Option<String>, StoreError> {
        let agent = self
            .tx
            .query_row(
                "SELECT node FROM agent_status ORDER BY heartbeat_ms DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if agent.is_some() {
            return Ok(agent);
        }
        self.tx
            .query_row(
                "SELECT node FROM readings ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every node that ever logged a reading, by name: the agent's one, or
    /// the many behind a gateway.
    pub fn nodes(&self) -> Result<Vec<String>, StoreError> {
        // A skip-scan of UNIQUE(node, sensor, seq), as in `sensors`: one
        // index seek per node.
        self.tx
            .prepare_cached(
                "WITH RECURSIVE n(node) AS (
                   SELECT (SELECT min(node) FROM readings)
                   UNION ALL
                   SELECT (SELECT min(node) FROM readings WHERE node > n.node)
                   FROM n WHERE n.node IS NOT NULL)
                 SELECT node FROM n WHERE node IS NOT NULL",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }

    /// The nodes with a failed read at or after `since_ms`, by name (a
    /// node whose sensors only failed has no readings to be found by).
    pub fn error_nodes(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        self.tx
            .prepare_cached(
                "SELECT DISTINCT node FROM sensor_errors WHERE ts_ms >= ?1 ORDER BY node",
            )
            .and_then(|mut s| s.query_map([since_ms], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }

    /// The log's identity record (what the agent last found at its path).
    pub fn log_identity(&self) -> Result<LogIdentity, StoreError> {
        log_identity_row(&self.tx, &self.store.path)
    }

    /// The status row of `node`: the agent's and the publisher's parts.
    pub fn status(&self, node: &str) -> Result<Option<(AgentStatus, BrokerStatus)>, StoreError> {
        let agent = status_row(&self.tx, node).map_err(|e| self.err(e))?;
        let broker = broker_row(&self.tx, node).map_err(|e| self.err(e))?;
        Ok(agent.zip(broker))
    }

    /// Readings of `node` not yet acknowledged, counted now (not the
    /// agent's copy in the status row).
    pub fn outbox_depth(&self, node: &str) -> Result<u64, StoreError> {
        super::outbox_depth(&self.tx, Some(node)).map_err(|e| self.err(e))
    }

    /// Readings of every node not yet acknowledged: the outbox of a
    /// gateway, which publishes the readings of many nodes.
    pub fn outbox_depth_all(&self) -> Result<u64, StoreError> {
        // Through the partial index `readings_outbox`.
        self.tx
            .query_row(
                "SELECT count(*) FROM readings WHERE published_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .map(to_u64)
            .map_err(|e| self.err(e))
    }

    /// The sensors that ever logged a reading for `node`, by name.
    pub fn sensors(&self, node: &str) -> Result<Vec<String>, StoreError> {
        // A skip-scan of UNIQUE(node, sensor, seq): one index seek per
        // sensor instead of a walk over every reading.
        self.tx
            .prepare_cached(
                "WITH RECURSIVE s(sensor) AS (
                   SELECT (SELECT min(sensor) FROM readings WHERE node = ?1)
                   UNION ALL
                   SELECT (SELECT min(sensor) FROM readings WHERE node = ?1 AND sensor > s.sensor)
                   FROM s WHERE s.sensor IS NOT NULL)
                 SELECT sensor FROM s WHERE sensor IS NOT NULL",
            )
            .and_then(|mut s| s.query_map([node], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }

    /// A sensor's readings at or after `since_ms`, by route: whole minutes
    /// from `readings_minute`, the first (partial) minute from `readings`.
    pub fn route_counts(
        &self,
        node: &str,
        sensor: &str,
        since_ms: i64,
    ) -> Result<RouteCounts, StoreError> {
        let first_minute = since_ms / MINUTE_MS;
        let whole: (i64, i64) = self
            .tx
            .prepare_cached(
                "SELECT coalesce(sum(realtime), 0), coalesce(sum(batch), 0) FROM readings_minute
                 WHERE node = ?1 AND sensor = ?2 AND minute > ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![node, sensor, first_minute], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .map_err(|e| self.err(e))?;
        // The first minute's rows from `since_ms` on: found through
        // readings_ts, at most a minute of readings.
        let edge: (i64, i64) = self
            .tx
            .prepare_cached(
                "SELECT coalesce(sum(route = 'realtime'), 0), coalesce(sum(route = 'batch'), 0)
                 FROM readings
                 WHERE ts_ms >= ?3 AND ts_ms < ?4 AND +node = ?1 AND +sensor = ?2",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![node, sensor, since_ms, (first_minute + 1) * MINUTE_MS],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .map_err(|e| self.err(e))?;
        Ok(RouteCounts {
            realtime: to_u64(whole.0 + edge.0),
            batch: to_u64(whole.1 + edge.1),
        })
    }

    /// Unacknowledged readings at or after `since_ms`, per sensor: through
    /// the outbox index, so cheap unless the broker has long been away.
    pub fn unpublished_since(
        &self,
        node: &str,
        since_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.per_sensor(
            // Named: without statistics SQLite prefers UNIQUE(node, ...)
            // and walks every reading of the node (0.8 s at 1M rows).
            "SELECT sensor, count(*) FROM readings INDEXED BY readings_outbox
             WHERE node = ?1 AND published_ms IS NULL AND ts_ms >= ?2 GROUP BY sensor",
            node,
            since_ms,
        )
    }

    /// Failed reads at or after `since_ms`, per sensor.
    pub fn error_counts(
        &self,
        node: &str,
        since_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.per_sensor(
            "SELECT sensor, count(*) FROM sensor_errors
             WHERE ts_ms >= ?2 AND node = ?1 GROUP BY sensor ORDER BY sensor",
            node,
            since_ms,
        )
    }

    /// Runs `sql` (`?1` node, `?2` since) for `(sensor, count)` rows.
    fn per_sensor(
        &self,
        sql: &str,
        node: &str,
        since_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.tx
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_map(params![node, since_ms], |r| {
                    Ok((r.get(0)?, to_u64(r.get(1)?)))
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// A sensor's newest reading (that decodes: see [`super::BadRow`]).
    pub fn latest(&self, node: &str, sensor: &str) -> Result<Option<StoredReading>, StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached(&format!(
                "SELECT {} FROM readings WHERE node = ?1 AND sensor = ?2 ORDER BY seq DESC",
                rows::READING_COLUMNS
            ))
            .map_err(|e| self.err(e))?;
        let mut found = stmt.query(params![node, sensor]).map_err(|e| self.err(e))?;
        // A text seq sorts after every number: the newest good row follows.
        let mut bad = Vec::new();
        let latest = loop {
            match found.next().map_err(|e| self.err(e))? {
                None => break None,
                Some(r) => match rows::decode_reading(r).map_err(|e| self.err(e))? {
                    Ok(row) => break Some(row),
                    Err(b) => bad.push(b),
                },
            }
        };
        self.store.reported.warn(&bad, |_| "it is left out".into());
        Ok(latest)
    }

    /// The newest `limit` readings of `node` that decode, newest first.
    pub fn recent(&self, node: &str, limit: usize) -> Result<Vec<StoredReading>, StoreError> {
        self.recent_of(Some(node), limit)
    }

    /// The newest `limit` readings of every node that decode, newest first.
    pub fn recent_all(&self, limit: usize) -> Result<Vec<StoredReading>, StoreError> {
        self.recent_of(None, limit)
    }

    /// The newest `limit` readings of `node` (of every node for `None`).
    fn recent_of(
        &self,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (rows, bad) = self
            .tx
            .prepare_cached(&format!(
                // `+node`: walked newest id first, whichever node.
                "SELECT {} FROM readings WHERE (?1 IS NULL OR +node = ?1)
                 ORDER BY id DESC LIMIT ?2",
                rows::READING_COLUMNS
            ))
            .and_then(|mut s| rows::decode_all(s.query(params![node, limit])?))
            .map_err(|e| self.err(e))?;
        self.store.reported.warn(&bad, |_| "it is left out".into());
        Ok(rows)
    }

    /// The newest `limit` sensor errors of `node` (of every node for
    /// `None`) at or after `since_ms` (of one sensor, if given), newest
    /// first.
    pub fn errors(
        &self,
        node: Option<&str>,
        sensor: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredError>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.tx
            .prepare_cached(
                "SELECT id, ts_ms, sensor, kind, detail, node FROM sensor_errors
                 WHERE ts_ms >= ?2 AND (?1 IS NULL OR node = ?1) AND (?3 IS NULL OR sensor = ?3)
                 ORDER BY ts_ms DESC, id DESC LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![node, since_ms, sensor, limit], |r| {
                    let kind: String = r.get(3)?;
                    Ok(StoredError {
                        id: r.get(0)?,
                        node: r.get(5)?,
                        error: SensorError {
                            ts_ms: r.get(1)?,
                            sensor: r.get(2)?,
                            kind: ErrorKind::parse(&kind)
                                .ok_or_else(|| super::bad_text(3, &kind))?,
                            detail: r.get(4)?,
                        },
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// A sensor's readings from `since_ms` to `until_ms` in at most
    /// `max_points` buckets of equal length, oldest first. Buckets of a
    /// minute or more are summed from `readings_minute` (whole minutes
    /// after `since_ms`'s); shorter ones from the readings themselves.
    pub fn history(
        &self,
        node: &str,
        sensor: &str,
        since_ms: i64,
        until_ms: i64,
        max_points: usize,
    ) -> Result<Vec<Bucket>, StoreError> {
        let points = i64::try_from(max_points.max(1)).unwrap_or(i64::MAX);
        let span = (until_ms - since_ms).max(1);
        let bucket_ms = ((span + points - 1) / points).max(1);
        let row = |r: &rusqlite::Row<'_>| {
            Ok(Bucket {
                last_ts_ms: r.get(0)?,
                temperature: r.get(1)?,
                humidity: r.get(2)?,
                priority: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                realtime: r.get(4)?,
            })
        };
        if bucket_ms >= MINUTE_MS {
            let minutes = (bucket_ms + MINUTE_MS - 1) / MINUTE_MS;
            let first_minute = since_ms / MINUTE_MS;
            return self
                .tx
                .prepare_cached(
                    "SELECT max(last_ts_ms), sum(sum_temperature) / sum(realtime + batch),
                            sum(sum_humidity) / sum(realtime + batch), max(max_priority),
                            max(realtime > 0)
                     FROM readings_minute
                     WHERE node = ?1 AND sensor = ?2 AND minute > ?3 AND minute <= ?4
                     GROUP BY (minute - ?3) / ?5 ORDER BY 1",
                )
                .and_then(|mut s| {
                    s.query_map(
                        params![node, sensor, first_minute, until_ms / MINUTE_MS, minutes],
                        row,
                    )?
                    .collect()
                })
                .map_err(|e| self.err(e));
        }
        // The sensor's first seq in the window, found through readings_ts
        // (a few rows in: sensors interleave); from there UNIQUE(node,
        // sensor, seq) walks this sensor's rows only, as seq grows with time.
        // A hand-edited text seq is no place to start from.
        let first: Option<i64> = self
            .tx
            .prepare_cached(
                "SELECT seq FROM readings WHERE ts_ms >= ?3 AND +node = ?1 AND +sensor = ?2
                   AND typeof(seq) = 'integer'
                 ORDER BY ts_ms LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![node, sensor, since_ms], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        self.tx
            .prepare_cached(
                "SELECT max(ts_ms), avg(temperature_c), avg(humidity_pct), max(priority),
                        max(route = 'realtime')
                 FROM readings
                 WHERE node = ?1 AND sensor = ?2 AND seq >= ?5 AND ts_ms >= ?3 AND ts_ms <= ?6
                 GROUP BY (ts_ms - ?3) / ?4 ORDER BY 1",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![node, sensor, since_ms, bucket_ms, first, until_ms],
                    row,
                )?
                .collect()
            })
            .map_err(|e| self.err(e))
    }
}
