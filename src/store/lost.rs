//! Readings the agent had to give up (its backlog bound, a spill that was
//! full or could not be written): recorded as a count and seq range per
//! sensor in `lost_readings`, so a consumer that finds a gap can tell a
//! loss at the source from one on the way.

use rusqlite::params;

use super::{Store, StoreError, classify};

/// A run of consecutive seqs of one sensor that never reached the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The node that took the readings.
    pub node: String,
    /// The sensor id.
    pub sensor: String,
    /// The first seq lost.
    pub first_seq: u64,
    /// The last seq lost (inclusive).
    pub last_seq: u64,
    /// When the agent gave them up (Unix ms).
    pub ts_ms: i64,
    /// Why, for people: "the held backlog was full", "the spill ... was full".
    pub reason: String,
}

impl Loss {
    /// How many readings the run covers.
    pub fn count(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lost {} readings of sensor {}, seq {}..{} ({})",
            self.count(),
            self.sensor,
            self.first_seq,
            self.last_seq,
            self.reason
        )
    }
}

impl Store {
    /// The highest seq recorded as lost, per sensor of `node`: a seq given
    /// up is never handed out again.
    pub fn last_lost_seqs(
        &self,
        node: &str,
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sensor, max(last_seq) FROM lost_readings WHERE node = ?1 GROUP BY sensor",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([node], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.sqlite(e))?;
        Ok(rows)
    }

    /// The highest seq recorded as lost of (`node`, `sensor`), if any: one
    /// seek on `lost_readings_stream`, for restoring one stream of a log
    /// that holds many.
    pub fn last_lost_seq(&self, node: &str, sensor: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT max(last_seq) FROM lost_readings WHERE node = ?1 AND sensor = ?2",
            )
            .and_then(|mut s| s.query_row(params![node, sensor], |r| r.get(0)))
            .map_err(|e| self.sqlite(e))?;
        Ok(seq.map(|s| u64::try_from(s).unwrap_or(0)))
    }

    /// Records `losses` in one transaction.
    pub fn record_losses(&mut self, losses: &[Loss]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    // Once only: a stop between this and the readings' commit
                    // reads the same losses back from the spill.
                    "INSERT INTO lost_readings (ts_ms, node, sensor, first_seq, last_seq, count, reason)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                     WHERE NOT EXISTS (SELECT 1 FROM lost_readings
                       WHERE node = ?2 AND sensor = ?3 AND first_seq = ?4 AND last_seq = ?5)",
                )
                .map_err(|e| classify(&path, e))?;
            for l in losses {
                stmt.execute(params![
                    l.ts_ms,
                    l.node,
                    l.sensor,
                    i64::try_from(l.first_seq).unwrap_or(i64::MAX),
                    i64::try_from(l.last_seq).unwrap_or(i64::MAX),
                    i64::try_from(l.count()).unwrap_or(i64::MAX),
                    l.reason
                ])
                .map_err(|e| classify(&path, e))?;
            }
        }
        tx.commit().map_err(|e| classify(&path, e))
    }
}
