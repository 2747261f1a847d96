//! The writer's high-water record: per (node, sensor), the highest seq it
//! has committed under the log's identity, kept *outside* the log, in the
//! private lock file `<db>.lock` the writer already holds.
//!
//! It catches a log rolled back in place: `sqlite3 e.db ".restore
//! backup.db"` and `cp backup.db e.db` write into the log's own inode, so
//! device, inode and birth time (what [`super::FileId`] compares) stay the
//! same, and the file would keep its identity while it hands out again the
//! seqs after the backup's, which consumers already hold with other
//! readings. If the record names this log's identity and a sensor's
//! highest logged seq is below what the record says was committed, the
//! file is not the one the record was kept for: the log gets a new
//! identity, as a copy does.
//!
//! Cheap on purpose: after each successful commit one small `pwrite`, no
//! fsync. A record that lags behind the log after a crash only weakens the
//! check; one that is missing or unreadable (first run, an upgrade, a lock
//! file replaced) decides nothing; a false alarm costs a new identity,
//! never a reading.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt as _;

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use crate::domain::{LogId, Reading};

/// The record as it is in the file: JSON, padded with spaces to the length
/// it had before (so a shorter record needs no truncate).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    /// The identity the seqs were committed under.
    pub log: String,
    /// node -> sensor -> highest committed seq.
    pub seqs: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Where the log is behind the record: the first (node, sensor) whose
/// highest logged seq is below the highest one committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Behind {
    pub node: String,
    pub sensor: String,
    /// The highest integer seq the log holds for it (`None`: no row).
    pub logged: Option<u64>,
    /// The highest seq the writer committed for it.
    pub committed: u64,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let logged = self
            .logged
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        write!(
            f,
            "sensor {:?} of node {:?} had committed seq {} but the log's highest is {logged}",
            self.sensor, self.node, self.committed
        )
    }
}

impl Record {
    /// Whether the seqs were committed under `log`.
    pub fn names(&self, log: LogId) -> bool {
        LogId::parse(&self.log) == Some(log)
    }

    /// The record in `file`; `None` if it is empty or not one (decides
    /// nothing).
    pub fn read(file: &std::fs::File) -> Option<Record> {
        let mut buf = vec![0; 64 * 1024];
        let mut len = 0;
        loop {
            match file.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len == buf.len() {
                        // Far beyond any real record: not one.
                        return None;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        serde_json::from_slice(&buf[..len]).ok()
    }

    /// Whether the log on `conn` is behind this record: some (node,
    /// sensor) with a highest logged seq below the committed one.
    pub fn behind(&self, conn: &Connection) -> rusqlite::Result<Option<Behind>> {
        // Backwards through UNIQUE(node, sensor, seq): one index probe per
        // sensor (text seqs of hand edits sort above integers, skipped).
        let mut top = conn.prepare_cached(
            "SELECT seq FROM readings
             WHERE node = ?1 AND sensor = ?2 AND typeof(seq) = 'integer'
             ORDER BY seq DESC LIMIT 1",
        )?;
        for (node, sensors) in &self.seqs {
            for (sensor, &committed) in sensors {
                let logged: Option<i64> = top
                    .query_row(params![node, sensor], |r| r.get(0))
                    .optional()?;
                let logged = logged.map(|s| u64::try_from(s).unwrap_or(0));
                if logged.is_none_or(|l| l < committed) {
                    return Ok(Some(Behind {
                        node: node.clone(),
                        sensor: sensor.clone(),
                        logged,
                        committed,
                    }));
                }
            }
        }
        Ok(None)
    }
}

/// The writer's record, as it keeps it in memory and in the lock file.
#[derive(Debug)]
pub(super) struct HighWater {
    record: Record,
    /// How many bytes the record last written to the file took.
    written: usize,
}

impl HighWater {
    /// The record for `log`: `found` goes on if it names `log` (the check
    /// at open passed), otherwise the record starts again, empty. `file`
    /// is where it is kept: what it holds now is written over.
    pub fn start(log: LogId, found: Option<Record>, file: &std::fs::File) -> HighWater {
        let record = found.filter(|r| r.names(log)).unwrap_or(Record {
            log: log.to_string(),
            seqs: BTreeMap::new(),
        });
        let written = file
            .metadata()
            .map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX));
        HighWater { record, written }
    }

    /// Raises the record to the seqs of `readings`, just committed;
    /// whether it changed.
    pub fn raise<'r>(&mut self, readings: impl IntoIterator<Item = &'r Reading>) -> bool {
        let mut changed = false;
        for r in readings {
            // Looked up before anything is cloned: a bulk load of a
            // million readings names a handful of sensors.
            if !self.record.seqs.contains_key(&r.node) {
                self.record.seqs.insert(r.node.clone(), BTreeMap::new());
            }
            let sensors = self
                .record
                .seqs
                .get_mut(&r.node)
                .expect("inserted just above");
            match sensors.get_mut(&r.sensor) {
                Some(top) if *top >= r.seq => continue,
                Some(top) => *top = r.seq,
                None => {
                    sensors.insert(r.sensor.clone(), r.seq);
                }
            }
            changed = true;
        }
        changed
    }

    /// Writes the record to `file` from its start, over the one before.
    /// Best effort: a record not written decides less, nothing worse.
    pub fn write(&mut self, file: &std::fs::File) {
        let mut bytes = serde_json::to_vec(&self.record).expect("a map of strings and numbers");
        if bytes.len() < self.written {
            bytes.resize(self.written, b' ');
        }
        match file.write_all_at(&bytes, 0) {
            Ok(()) => self.written = bytes.len(),
            Err(e) => tracing::debug!("cannot write the seq high-water record: {e}"),
        }
    }
}
