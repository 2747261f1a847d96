//! Reading rows back: every column is checked for the type it must hold.
//!
//! Users edit the log with `sqlite3`, and neither type affinity nor the
//! CHECK constraints stop every surprise: `UPDATE readings SET ts_ms =
//! 'soon'` stores text in an INTEGER column (there is no CHECK on it), and
//! text passes `CHECK (seq >= 0)` because `SQLite` orders text after every
//! number. Such a row is a [`BadRow`]: it is skipped and reported once with
//! its id, table, column and value, and it never stops the rows after it.
//! In the outbox it is also marked ([`SKIPPED_MS`]) so that it leaves the
//! outbox for good instead of being read again at every reconnect.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write as _;

use rusqlite::types::ValueRef;

use super::StoredReading;
use crate::domain::{PerChannel, Reading, Route, Sample};

/// The columns [`decode_reading`] reads, in its order.
pub(crate) const READING_COLUMNS: &str = "id, node, sensor, seq, ts_ms, temperature_c, \
     humidity_pct, weight_temperature, weight_humidity, priority, route, published_ms, clock_synced";

/// The `published_ms` of an outbox row that cannot be decoded: not NULL, so
/// it leaves the outbox (`published_ms IS NULL`) and its index, and
/// negative, so it cannot be taken for the time of a PUBACK. Setting it
/// back to NULL (after fixing the row) puts the row back in the outbox.
pub const SKIPPED_MS: i64 = -1;

/// The largest seq the log can hold (`SQLite`'s INTEGER is an i64): a
/// sensor whose last seq is this one has no next seq.
pub const MAX_SEQ: u64 = i64::MAX.unsigned_abs();

/// The seq after `seq`, if the log can hold it.
pub fn next_seq(seq: u64) -> Option<u64> {
    seq.checked_add(1).filter(|&n| n <= MAX_SEQ)
}

/// A row edgeprio cannot read back: one of its columns holds a value of
/// the wrong type or out of range (a hand edit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The table it is in.
    pub table: &'static str,
    /// Its row id, for the `UPDATE` or `DELETE` that fixes it.
    pub id: i64,
    /// The first column that does not decode.
    pub column: &'static str,
    /// The value as SQL writes it (`'soon'`, `NULL`, `1.5e+30`),
    /// shortened: it came from a user and may be long.
    pub value: String,
    /// What the column must hold.
    pub expected: &'static str,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "row id {} of table {}: column {} holds {}, but it must hold {}",
            self.id, self.table, self.column, self.value, self.expected
        )
    }
}

/// Renders a value as SQL would write it, at most about 40 characters.
fn render(v: ValueRef<'_>) -> String {
    const MAX: usize = 40;
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => format!("{x:e}"),
        ValueRef::Text(t) => {
            let t = String::from_utf8_lossy(t);
            let mut s: String = t.chars().take(MAX).collect();
            if t.chars().count() > MAX {
                s.push_str("...");
            }
            format!("'{}' (text)", s.replace('\'', "''"))
        }
        ValueRef::Blob(b) => {
            let mut s = String::from("x'");
            for byte in b.iter().take(MAX / 2) {
                let _ = write!(s, "{byte:02x}");
            }
            s.push('\'');
            if b.len() > MAX / 2 {
                s.push_str("...");
            }
            s + " (blob)"
        }
    }
}

/// One row's columns, checked one by one.
struct Columns<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    table: &'static str,
    id: i64,
}

impl Columns<'_, '_> {
    fn bad(&self, i: usize, column: &'static str, expected: &'static str) -> BadRow {
        BadRow {
            table: self.table,
            id: self.id,
            column,
            value: self.row.get_ref(i).map_or_else(|e| e.to_string(), render),
            expected,
        }
    }

    fn int(&self, i: usize, column: &'static str) -> Result<i64, BadRow> {
        match self.row.get_ref(i) {
            Ok(ValueRef::Integer(n)) => Ok(n),
            _ => Err(self.bad(i, column, "an integer")),
        }
    }

    fn count<T: TryFrom<i64>>(&self, i: usize, column: &'static str) -> Result<T, BadRow> {
        match self.row.get_ref(i) {
            Ok(ValueRef::Integer(n)) => {
                T::try_from(n).map_err(|_| self.bad(i, column, "a non-negative integer"))
            }
            _ => Err(self.bad(i, column, "a non-negative integer")),
        }
    }

    fn text(&self, i: usize, column: &'static str) -> Result<String, BadRow> {
        match self.row.get_ref(i) {
            Ok(ValueRef::Text(t)) => {
                String::from_utf8(t.to_vec()).map_err(|_| self.bad(i, column, "UTF-8 text"))
            }
            _ => Err(self.bad(i, column, "text")),
        }
    }

    fn real(&self, i: usize, column: &'static str) -> Result<f64, BadRow> {
        #[expect(clippy::cast_precision_loss, reason = "an integer the user typed")]
        let x = match self.row.get_ref(i) {
            Ok(ValueRef::Real(x)) => x,
            Ok(ValueRef::Integer(n)) => n as f64,
            _ => return Err(self.bad(i, column, "a number")),
        };
        if x.is_finite() {
            Ok(x)
        } else {
            Err(self.bad(i, column, "a finite number"))
        }
    }
}

/// Decodes a row selected with [`READING_COLUMNS`]. The outer error is
/// `SQLite`'s (the row could not be read at all); the inner one is a row
/// whose values are not a reading.
pub(crate) fn decode_reading(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<StoredReading, BadRow>> {
    // An INTEGER PRIMARY KEY is always an integer.
    let id: i64 = r.get(0)?;
    let c = Columns {
        row: r,
        table: "readings",
        id,
    };
    let decoded = (|| {
        let route = c.text(10, "route")?;
        let clock_synced = match r.get_ref(12) {
            Ok(ValueRef::Null) => None,
            Ok(ValueRef::Integer(0)) => Some(false),
            Ok(ValueRef::Integer(1)) => Some(true),
            _ => return Err(c.bad(12, "clock_synced", "NULL, 0 or 1")),
        };
        Ok(StoredReading {
            id,
            reading: Reading {
                node: c.text(1, "node")?,
                sensor: c.text(2, "sensor")?,
                seq: c.count(3, "seq")?,
                ts_ms: c.int(4, "ts_ms")?,
                sample: Sample::new(c.real(5, "temperature_c")?, c.real(6, "humidity_pct")?),
                weights: PerChannel {
                    temperature: c.count(7, "weight_temperature")?,
                    humidity: c.count(8, "weight_humidity")?,
                },
                priority: c.count(9, "priority")?,
                route: Route::parse(&route)
                    .ok_or_else(|| c.bad(10, "route", "'realtime' or 'batch'"))?,
                clock_synced,
            },
            published_ms: match r.get_ref(11) {
                Ok(ValueRef::Null) => None,
                Ok(ValueRef::Integer(n)) => Some(n),
                _ => return Err(c.bad(11, "published_ms", "NULL or an integer")),
            },
        })
    })();
    Ok(decoded)
}

/// The rows of `rows` that decode, and those that do not.
pub(crate) fn decode_all(
    mut rows: rusqlite::Rows<'_>,
) -> rusqlite::Result<(Vec<StoredReading>, Vec<BadRow>)> {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while let Some(r) = rows.next()? {
        match decode_reading(r)? {
            Ok(row) => good.push(row),
            Err(b) => bad.push(b),
        }
    }
    Ok((good, bad))
}

/// The bad rows a store has reported: each is said once per process, however
/// often a reader (`query --follow`, the dashboard) meets it again.
#[derive(Debug, Default)]
pub(crate) struct Reported(RefCell<BTreeSet<(&'static str, i64)>>);

impl Reported {
    /// Logs each row of `bad` not reported before, with what `then`
    /// says happens to it.
    pub(crate) fn warn(&self, bad: &[BadRow], then: impl Fn(&BadRow) -> String) {
        let mut seen = self.0.borrow_mut();
        for b in bad {
            if seen.insert((b.table, b.id)) {
                tracing::warn!(
                    table = b.table,
                    id = b.id,
                    column = b.column,
                    value = %b.value,
                    "skipped a row that cannot be decoded: {b}; {}",
                    then(b)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_as_sql_writes_them_and_shortened() {
        assert_eq!(render(ValueRef::Null), "NULL");
        assert_eq!(render(ValueRef::Text(b"it's")), "'it''s' (text)");
        assert_eq!(render(ValueRef::Real(1.5e30)), "1.5e30");
        let long = "x".repeat(100);
        let shown = render(ValueRef::Text(long.as_bytes()));
        assert!(shown.len() < 60 && shown.contains("..."), "{shown}");
        assert_eq!(render(ValueRef::Blob(&[0xde, 0xad])), "x'dead' (blob)");
    }

    #[test]
    fn the_seq_after_the_largest_is_none() {
        assert_eq!(next_seq(0), Some(1));
        assert_eq!(next_seq(MAX_SEQ - 1), Some(MAX_SEQ));
        assert_eq!(next_seq(MAX_SEQ), None);
        assert_eq!(next_seq(u64::MAX), None);
    }
}
