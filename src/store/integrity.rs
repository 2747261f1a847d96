//! What `doctor` asks of the file itself: `SQLite`'s integrity check, and
//! the rows the agent had to leave aside (see [`super::BadRow`]).

use std::time::{Duration, Instant};

use super::{MAX_SEQ, SKIPPED_MS, Store, StoreError};

/// Above this size the check is `quick_check`: `integrity_check` also
/// compares every index with its table, which took 5.3 s for a 1M-reading
/// (95 MB) log on the 2-core build machine (`quick_check`: 1.6 s), and a
/// Pi is several times slower.
pub const FULL_CHECK_UP_TO: u64 = 64 << 20;

/// The outcome of [`Store::check_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// `integrity_check` or `quick_check`.
    pub pragma: &'static str,
    /// What it found: empty when the file is sound (at most 10 lines).
    pub problems: Vec<String>,
    /// How long it took.
    pub took: Duration,
    /// Rows taken out of the outbox because they do not decode.
    pub skipped_rows: Vec<i64>,
    /// (sensor, row id) of sensors whose seq reached [`MAX_SEQ`].
    pub exhausted: Vec<(String, i64)>,
}

impl Store {
    /// Runs `PRAGMA integrity_check` (`quick_check` for a log larger than
    /// [`FULL_CHECK_UP_TO`]) and lists the rows the agent left aside. A
    /// read transaction: it never blocks the agent.
    pub fn check_file(&self) -> Result<FileCheck, StoreError> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let pragma = if size <= FULL_CHECK_UP_TO {
            "integrity_check"
        } else {
            "quick_check"
        };
        let start = Instant::now();
        let lines: Vec<String> = match self
            .conn
            .prepare(&format!("PRAGMA {pragma}(10)"))
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        {
            Ok(lines) => lines,
            // Damage the check cannot walk past is its finding.
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
                vec![e.to_string()]
            }
            Err(e) => return Err(self.sqlite(e)),
        };
        let took = start.elapsed();
        let problems = if lines == ["ok"] { Vec::new() } else { lines };
        let mut check = FileCheck {
            pragma,
            problems,
            took,
            skipped_rows: Vec::new(),
            exhausted: Vec::new(),
        };
        if !check.problems.is_empty() {
            // The queries below may read the damaged pages.
            return Ok(check);
        }
        check.skipped_rows = self
            .conn
            .prepare("SELECT id FROM readings WHERE published_ms = ?1 ORDER BY id")
            .and_then(|mut s| s.query_map([SKIPPED_MS], |r| r.get(0))?.collect())
            .map_err(|e| self.sqlite(e))?;
        check.exhausted = self
            .conn
            .prepare("SELECT sensor, id FROM readings WHERE seq = ?1 ORDER BY id")
            .and_then(|mut s| {
                s.query_map([i64::try_from(MAX_SEQ).unwrap_or(i64::MAX)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(|e| self.sqlite(e))?;
        Ok(check)
    }
}
