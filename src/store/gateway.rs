//! What a gateway writes to its log: the readings it scored for the nodes
//! that send raw ones, with what it had to fill in, the rejections of
//! those nodes' readings, and its own heartbeat, in one transaction per
//! batch of messages.

use rusqlite::{OptionalExtension as _, params};

use super::{AgentStatus, Depth, Store, StoreError, classify, insert_rows, write_status};
use crate::domain::{Reading, SensorError};

/// What the gateway filled in for a raw reading (column
/// `readings.assigned`): a consumer sees the same payload either way, the
/// log says where each value came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assigned {
    /// The sender gave no seq; the gateway numbered it.
    pub seq: bool,
    /// The sender gave no time; `ts_ms` is when the gateway received it.
    pub ts: bool,
    /// The sender's seq was behind what the log already has for it (the
    /// node restarted its count) and the reading is not a redelivery: the
    /// gateway numbered it after the log's last.
    pub renumbered: bool,
}

impl Assigned {
    /// The column's value: `NULL` when nothing was assigned, otherwise the
    /// fields, comma-separated: `seq`, `ts_ms`, `renumbered`.
    pub fn column(self) -> Option<String> {
        let parts: Vec<&str> = [
            (self.seq, "seq"),
            (self.ts, "ts_ms"),
            (self.renumbered, "renumbered"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

/// One reading the gateway logs.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRow {
    /// The reading, scored (or routed as its sender scored it).
    pub reading: Reading,
    /// What the gateway filled in.
    pub assigned: Assigned,
}

impl Store {
    /// Commits one batch of a gateway's work in one transaction: `rows`,
    /// the `rejected` readings of known nodes as sensor errors (node,
    /// error), and the gateway's `status` heartbeat. Returns the outbox
    /// depth afterwards.
    pub fn commit_gateway(
        &mut self,
        rows: &[GatewayRow],
        rejected: &[(String, SensorError)],
        status: &AgentStatus,
    ) -> Result<u64, StoreError> {
        let _turn = self.turn();
        let space = self.space().ok();
        let path = self.path.clone();
        let assigned: Vec<Option<String>> = rows.iter().map(|r| r.assigned.column()).collect();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        insert_rows(
            &tx,
            rows.iter()
                .zip(&assigned)
                .map(|(r, a)| (&r.reading, a.as_deref())),
        )
        .map_err(|e| classify(&path, e))?;
        {
            let mut error = tx
                .prepare_cached(
                    "INSERT INTO sensor_errors (ts_ms, node, sensor, kind, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| classify(&path, e))?;
            for (node, e) in rejected {
                error
                    .execute(params![e.ts_ms, node, e.sensor, e.kind.as_str(), e.detail])
                    .map_err(|e| classify(&path, e))?;
            }
        }
        // Rows added, not counted: a gateway commits many times a second;
        // its heartbeat ([`Store::write_heartbeat`]) counts.
        let depth = write_status(&tx, status, space.as_ref(), Depth::Added(rows.len()))
            .map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))?;
        self.committed(rows.iter().map(|r| &r.reading));
        Ok(depth)
    }

    /// Writes `status` alone, with the outbox depth counted (what
    /// [`Store::commit_gateway`] added up is corrected here); returns it.
    pub fn write_heartbeat(&mut self, status: &AgentStatus) -> Result<u64, StoreError> {
        let _turn = self.turn();
        let space = self.space().ok();
        self.write_counted(status, space.as_ref())
    }

    /// The time and values of reading `seq` of (node, sensor), if the log
    /// has it: how the gateway tells a redelivered raw reading from one
    /// of a node that restarted its count.
    pub fn reading_at(
        &self,
        node: &str,
        sensor: &str,
        seq: u64,
    ) -> Result<Option<(i64, f64, f64)>, StoreError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        self.conn
            .prepare_cached(
                "SELECT ts_ms, temperature_c, humidity_pct FROM readings
                 WHERE node = ?1 AND sensor = ?2 AND seq = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![node, sensor, seq], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })
            .map_err(|e| self.sqlite(e))
    }

    /// What the gateway assigned for reading `seq` of (node, sensor).
    pub fn assigned(
        &self,
        node: &str,
        sensor: &str,
        seq: u64,
    ) -> Result<Option<String>, StoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(
                "SELECT assigned FROM readings WHERE node = ?1 AND sensor = ?2 AND seq = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![node, sensor, seq], |r| r.get(0))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(|e| self.sqlite(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_names_what_was_assigned() {
        assert_eq!(Assigned::default().column(), None);
        let both = Assigned {
            seq: true,
            ts: true,
            renumbered: false,
        };
        assert_eq!(both.column().as_deref(), Some("seq,ts_ms"));
        let renumbered = Assigned {
            renumbered: true,
            ..Assigned::default()
        };
        assert_eq!(renumbered.column().as_deref(), Some("renumbered"));
    }
}
