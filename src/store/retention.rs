//! Retention: the log keeps `store.retention` of what it has published and
//! leaves the disk some room (DESIGN.md, `[store]`).
//!
//! Once an hour (of monotonic time: setting the clock neither hurries nor
//! delays it) the agent runs a *pass*, a little at a time at the end of
//! its cycles ([`Retention::run`]). Each batch is one short transaction, so
//! a pass never holds the write lock for long nor delays a read cycle by
//! more than the budget the agent gives it:
//!
//! 1. **Expire**: published readings and sensor errors older than the
//!    cutoff go, oldest first. Unpublished readings are the outbox:
//!    retention never deletes them, however old. Nor does it delete what
//!    this process wrote less than `store.retention` ago by the monotonic
//!    clock, whatever their timestamps say: a Pi boots with an old time
//!    and NTP sets it forward, years at once, and rows stamped before
//!    that are seconds old, not years ([`Watermark`]).
//! 2. **Shed**, only when the disk is nearly full (its free space plus the
//!    free pages inside the log below `store.min_free`): an error is logged,
//!    and the oldest published readings (with the errors logged before
//!    them) go until there is room again, at most a tenth of the log per
//!    pass. The newest readings stay, and so does the outbox.
//! 3. **Vacuum**: free pages beyond a small slack go back to the file system
//!    (`PRAGMA incremental_vacuum`) on logs created with
//!    `auto_vacuum = INCREMENTAL`, which every log made since schema 4 is.
//!    Older logs keep their size and reuse the freed pages: they stop
//!    growing but do not shrink (converting them takes a `VACUUM`, which
//!    rewrites the whole file: the README says how).
//!
//! Every delete is a transaction: a crash or a full disk mid-pass leaves
//! the log as it was before that batch, never half-written.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{OptionalExtension as _, TransactionBehavior, params};

use super::{Store, StoreError, classify};
use crate::clock::Now;
use crate::domain::LogId;

/// Readings examined (and at most deleted) per transaction.
const BATCH_ROWS: usize = 1_000;

/// Time between two passes, on the monotonic clock, unless
/// `store.prune_every` says otherwise.
const PASS_EVERY: Duration = Duration::from_hours(1);

/// `PRAGMA auto_vacuum`'s value for `INCREMENTAL`.
const AUTO_VACUUM_INCREMENTAL: u64 = 2;

/// Pages one vacuum step gives back (1 MiB with 4 KiB pages).
const VACUUM_STEP_PAGES: u32 = 256;

/// Free pages a vacuum leaves in the file: the next hour's rows fill them
/// again, and moving pages out only to grow the file back wears an SD
/// card for nothing.
const VACUUM_SLACK_BYTES: u64 = 1 << 20;

/// A shedding pass deletes at most 1/`SHED_SHARE` of the log: a disk
/// filled by something else costs the log a tenth of its history an hour,
/// not all of it at once, while someone reacts to the error.
const SHED_SHARE: u64 = 10;

/// The space the log takes and the room left for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// The log on disk: the database file and its WAL.
    pub db_bytes: u64,
    /// Free pages inside the file: room for new rows without growing it.
    pub db_free_bytes: u64,
    /// Free space on the file system that holds the log, as the agent's
    /// user may use it (`df`'s "Avail"); `None` where the OS cannot tell.
    pub disk_free_bytes: Option<u64>,
}

impl Space {
    /// How much more the log can take before a write fails: the free disk
    /// plus the free pages in the file.
    pub fn headroom(&self) -> Option<u64> {
        self.disk_free_bytes
            .map(|d| d.saturating_add(self.db_free_bytes))
    }
}

/// Retention's columns of the status row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Housekeeping {
    /// The space at the last heartbeat; `None` before the first one.
    pub space: Option<Space>,
    /// When the last retention pass finished (Unix ms).
    pub last_prune_ms: Option<i64>,
    /// Published readings retention deleted for being older than
    /// `store.retention`, over the log's life.
    pub pruned_readings: u64,
    /// Published readings deleted early because the disk was nearly full,
    /// over the log's life.
    pub shed_readings: u64,
}

/// Why a batch deletes: decides the status counter it adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Older than `store.retention`.
    Expired,
    /// The disk is nearly full.
    Shed,
}

/// Where a pass's scan of `readings` stands, in `(ts_ms, id)` order (the
/// order of the `readings_ts` index): rows before it were examined already,
/// so old unpublished rows are stepped over once per pass, not per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    ts_ms: i64,
    id: i64,
}

impl Cursor {
    const START: Cursor = Cursor {
        ts_ms: i64::MIN,
        id: i64::MIN,
    };
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    /// Readings examined.
    examined: usize,
    /// Readings deleted (the published ones among those examined).
    readings: u64,
    /// Sensor errors deleted.
    errors: u64,
    /// Whether the scan reached the cutoff: nothing older is left to look at.
    through: bool,
}

/// The store's side of retention: each call one transaction or one step.
impl Store {
    /// The space the log takes and the room it has left: a few `stat`s and
    /// two header reads, cheap enough for every heartbeat.
    pub fn space(&self) -> Result<Space, StoreError> {
        let pragma = |name: &str| {
            self.conn
                .pragma_query_value(None, name, |r| r.get::<_, i64>(0))
                .map_err(|e| self.sqlite(e))
                .map(|n| u64::try_from(n).unwrap_or(0))
        };
        let page_size = pragma("page_size")?;
        let free_pages = pragma("freelist_count")?;
        let file = std::fs::metadata(&self.path).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let wal = std::fs::metadata(wal_path(&self.path)).map_or(0, |m| m.len());
        let disk_free_bytes = rustix::fs::statvfs(&self.path)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
        Ok(Space {
            db_bytes: file.len() + wal,
            db_free_bytes: free_pages * page_size,
            disk_free_bytes,
        })
    }

    /// The newest row ids of the log: rows written from now on are newer.
    fn watermark(&self) -> Result<Watermark, StoreError> {
        let max = |table: &str| {
            self.conn
                .query_row(
                    &format!("SELECT coalesce(max(id), 0) FROM {table}"),
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(|e| self.sqlite(e))
        };
        Ok(Watermark {
            reading: max("readings")?,
            error: max("sensor_errors")?,
        })
    }

    /// Retention's status columns of `node`; `None` if no agent of this
    /// version has written them.
    pub fn housekeeping(&self, node: &str) -> Result<Option<Housekeeping>, StoreError> {
        if self.identity()?.0 < 4 {
            return Ok(None);
        }
        let to_u64 = |n: Option<i64>| n.map(|n| u64::try_from(n).unwrap_or(0));
        self.conn
            .prepare_cached(
                "SELECT db_bytes, db_free_bytes, disk_free_bytes, last_prune_ms,
                        pruned_readings, shed_readings
                 FROM agent_status WHERE node = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([node], |r| {
                    let db_free_bytes = to_u64(r.get(1)?).unwrap_or(0);
                    let disk_free_bytes = to_u64(r.get(2)?);
                    Ok(Housekeeping {
                        space: to_u64(r.get(0)?).map(|db_bytes| Space {
                            db_bytes,
                            db_free_bytes,
                            disk_free_bytes,
                        }),
                        last_prune_ms: r.get(3)?,
                        pruned_readings: to_u64(r.get(4)?).unwrap_or(0),
                        shed_readings: to_u64(r.get(5)?).unwrap_or(0),
                    })
                })
                .optional()
            })
            .map_err(|e| self.sqlite(e))
    }

    /// One batch, one transaction: examines up to `rows` readings after
    /// `cursor` and older than `cutoff_ms`, oldest first, and deletes the
    /// published ones; then up to `rows` sensor errors logged before the
    /// point the scan reached (before `cutoff_ms` once it is through).
    /// Rows written after `upto` are not deleted.
    /// Counts the deleted readings in `node`'s status row, in the same
    /// transaction. Deleted readings leave `readings_minute` through its
    /// trigger.
    fn delete_batch(
        &mut self,
        node: &str,
        why: Why,
        cursor: &mut Cursor,
        cutoff_ms: i64,
        upto: Watermark,
        rows: usize,
    ) -> Result<Batch, StoreError> {
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        // Immediate: the batch reads before it writes, and a deferred
        // transaction could not upgrade after the publisher's commits.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let limit = i64::try_from(rows).unwrap_or(i64::MAX);
        // (id, ts_ms, deletable)
        let examined: Vec<(i64, i64, bool)> = tx
            .prepare_cached(
                // Rows after `upto` are examined (and stepped over once a
                // pass, like the outbox), not deleted.
                "SELECT id, ts_ms, published_ms IS NOT NULL AND id <= ?5 FROM readings
                 WHERE (ts_ms, id) > (?1, ?2) AND ts_ms < ?3
                 ORDER BY ts_ms, id LIMIT ?4",
            )
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![cursor.ts_ms, cursor.id, cutoff_ms, limit, upto.reading],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?
                .collect()
            })
            .map_err(err)?;
        let mut readings = 0u64;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM readings WHERE id = ?1")
                .map_err(err)?;
            for &(id, _, deletable) in &examined {
                if deletable {
                    readings += delete.execute([id]).map_err(err)? as u64;
                }
            }
        }
        let through = examined.len() < rows;
        if let Some(&(id, ts_ms, _)) = examined.last() {
            *cursor = Cursor { ts_ms, id };
        }
        let horizon = if through { cutoff_ms } else { cursor.ts_ms };
        let errors = tx
            .execute(
                "DELETE FROM sensor_errors WHERE id IN (
                   SELECT id FROM sensor_errors WHERE ts_ms < ?1 AND id <= ?3
                   ORDER BY ts_ms LIMIT ?2)",
                params![horizon, limit, upto.error],
            )
            .map_err(err)? as u64;
        let count = match why {
            Why::Expired => {
                "UPDATE agent_status SET pruned_readings = pruned_readings + ?2 WHERE node = ?1"
            }
            Why::Shed => {
                "UPDATE agent_status SET shed_readings = shed_readings + ?2 WHERE node = ?1"
            }
        };
        tx.execute(count, params![node, i64::try_from(readings).unwrap_or(0)])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Batch {
            examined: examined.len(),
            readings,
            errors,
            through,
        })
    }

    /// Gives up to `pages` of the file's free pages back to the file
    /// system, keeping `slack` bytes of them; returns the bytes given back
    /// (0 on a log without incremental auto-vacuum, or nothing to give).
    /// The file shrinks at the next checkpoint.
    fn vacuum_step(&self, pages: u32, slack: u64) -> Result<u64, StoreError> {
        let pragma = |name: &str| {
            self.conn
                .pragma_query_value(None, name, |r| r.get::<_, i64>(0))
                .map_err(|e| self.sqlite(e))
                .map(|n| u64::try_from(n).unwrap_or(0))
        };
        if pragma("auto_vacuum")? != AUTO_VACUUM_INCREMENTAL {
            return Ok(0);
        }
        let page_size = pragma("page_size")?.max(1);
        let free = pragma("freelist_count")?;
        let surplus = free.saturating_sub(slack / page_size);
        let n = surplus.min(u64::from(pages));
        if n == 0 {
            return Ok(0);
        }
        // The pragma frees one page per step of its statement: it must be
        // stepped to the end (`execute_batch` would free just one).
        let mut stmt = self
            .conn
            .prepare(&format!("PRAGMA incremental_vacuum({n})"))
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sqlite(e))?;
        while rows.next().map_err(|e| self.sqlite(e))?.is_some() {}
        Ok(free.saturating_sub(pragma("freelist_count")?) * page_size)
    }

    /// Copies the WAL into the file as far as readers allow, without
    /// waiting for them: how a vacuumed file actually shrinks.
    fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.sqlite(e))
    }

    /// Records the end of a pass in `node`'s status row.
    fn record_pass(&self, node: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE agent_status SET last_prune_ms = ?2 WHERE node = ?1",
                params![node, now_ms],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    /// About how many readings the log holds (the span of their ids, which
    /// `SQLite` finds in two index lookups where `count(*)` reads them all).
    fn readings_span(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce((SELECT max(id) FROM readings) - (SELECT min(id) FROM readings) + 1, 0)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.sqlite(e))
    }
}

fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// What a finished pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Published readings deleted for being older than the retention.
    pub expired: u64,
    /// Published readings deleted early because the disk was nearly full.
    pub shed: u64,
    /// Sensor errors deleted.
    pub errors: u64,
    /// Bytes of free pages given back to the file system.
    pub vacuumed: u64,
    /// Transactions and vacuum steps the pass took.
    pub steps: u32,
}

/// Where a pass is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Expire,
    /// Deleting the oldest published readings, at most `left` more.
    Shed {
        left: u64,
    },
    Vacuum,
    /// Vacuumed: the WAL goes into the file, which shrinks.
    Checkpoint,
}

/// A pass in progress.
#[derive(Debug, Clone, Copy)]
struct Pass {
    /// When it started (Unix ms): shedding never reaches past it.
    started_ms: i64,
    /// Published rows older than this expire (a whole minute, so that
    /// `readings_minute` loses whole minutes).
    cutoff_ms: i64,
    /// Rows newer than this are younger than the retention by the
    /// monotonic clock: expiry leaves them alone.
    upto: Watermark,
    cursor: Cursor,
    phase: Phase,
    report: PassReport,
}

/// The newest row ids at some moment: rows with larger ids were written
/// after it. Ids only grow (`readings` and `sensor_errors` are rowid
/// tables whose rows are only ever deleted oldest first), so "written
/// before the monotonic time t" is "id at most the watermark taken at t",
/// whatever the rows' timestamps say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watermark {
    /// The newest `readings.id`.
    reading: i64,
    /// The newest `sensor_errors.id`.
    error: i64,
}

/// What a process knows of a log's rows on the monotonic clock.
#[derive(Debug, Clone)]
struct Ledger {
    /// The log's newest rows when this process first opened it: rows up
    /// to it are judged by their timestamps alone (nothing else is known
    /// of them).
    start: Watermark,
    /// The watermark at the start of passes, oldest first, with its
    /// monotonic time: rows up to one taken `keep` ago are old enough to
    /// expire on both clocks.
    marks: VecDeque<(Duration, Watermark)>,
}

/// Each log's ledger, by the log's identity, for the life of the process:
/// a reload opens the log again, and what the process wrote before it is
/// no older for that; another file at the same path (a log followed to a
/// new file) is another log, with row ids of its own.
static LEDGERS: LazyLock<Mutex<HashMap<LogId, Ledger>>> = LazyLock::new(Mutex::default);

/// A pass notes a new watermark once the last is 1/`MARKS_PER_KEEP` of
/// the retention old: at most that many (plus one) are kept whatever the
/// retention, and a row is expired at most that share of it late.
const MARKS_PER_KEEP: u32 = 64;

impl Watermark {
    /// Every row there will ever be.
    const ALL: Watermark = Watermark {
        reading: i64::MAX,
        error: i64::MAX,
    };
}

/// The agent's retention: when passes run, and how far the current one
/// has got. Reads no clock: the time comes in as an argument.
#[derive(Debug)]
pub struct Retention {
    /// How long published rows are kept (ms).
    keep_ms: i64,
    /// [`Retention::keep_ms`] on the monotonic clock.
    keep: Duration,
    /// The headroom below which the disk counts as nearly full; 0 = never.
    min_free: u64,
    /// When the next pass is due (monotonic); `None`: at once.
    next_pass: Option<Duration>,
    /// Time between two passes.
    every: Duration,
    /// What this process knows of the log's rows on the monotonic clock;
    /// `None` until [`Retention::begin`].
    ledger: Option<Ledger>,
    pass: Option<Pass>,
    /// Whether the last pass found the disk nearly full. A new shortage
    /// starts a pass at once; a known one waits for the next hour, so the
    /// error is logged once an hour, not every cycle.
    short: bool,
}

impl Retention {
    /// Retention keeping `keep` of published data and `min_free` bytes of
    /// headroom; the first pass runs at the first [`Retention::run`].
    pub fn new(keep: std::time::Duration, min_free: u64) -> Self {
        Self {
            keep_ms: i64::try_from(keep.as_millis()).unwrap_or(i64::MAX),
            keep,
            min_free,
            next_pass: None,
            every: PASS_EVERY,
            ledger: None,
            pass: None,
            short: false,
        }
    }

    /// Retention whose passes are `every` apart instead of an hour.
    #[must_use]
    pub fn every(self, every: Duration) -> Self {
        Self { every, ..self }
    }

    /// Notes where the log stands as this process starts: what it writes
    /// from here on expires only once it is `store.retention` old by the
    /// monotonic clock. The first [`Retention::run`] does it if this was
    /// not called.
    /// A reload (SIGHUP) builds a new `Retention` on the same log in the
    /// same process, which picks up the ledger where the last one left it.
    pub fn begin(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.ledger.is_none() {
            let mut ledgers = LEDGERS.lock().unwrap_or_else(PoisonError::into_inner);
            let key = store.log_id()?;
            let ledger = if let Some(known) = ledgers.get(&key) {
                known.clone()
            } else {
                let new = Ledger {
                    start: store.watermark()?,
                    marks: VecDeque::new(),
                };
                ledgers.insert(key, new.clone());
                new
            };
            self.ledger = Some(ledger);
        }
        Ok(())
    }

    /// Starts over on the log the agent followed its path to (see
    /// `Store::follow_path`): the ledger's row ids were the old file's, so
    /// the new log's rows so far count as written before this process, and
    /// what the agent commits from here on is protected as in
    /// [`Retention::begin`]. Any pass under way was the old file's.
    pub fn restart(&mut self, store: &Store) -> Result<(), StoreError> {
        self.ledger = None;
        self.pass = None;
        self.begin(store)
    }

    /// The rows a pass starting at `mono` may expire: those written
    /// before this process, and those written `keep` ago or more.
    fn expirable(&mut self, store: &Store, mono: Duration) -> Result<Watermark, StoreError> {
        self.begin(store)?;
        let (keep, step) = (self.keep, self.keep / MARKS_PER_KEEP);
        let ledger = self.ledger.as_mut().expect("begin sets it");
        if ledger
            .marks
            .back()
            .is_none_or(|&(at, _)| at.saturating_add(step) <= mono)
        {
            ledger.marks.push_back((mono, store.watermark()?));
        }
        // Keep the newest mark that is old enough, and every newer one.
        while ledger.marks.len() > 1 && ledger.marks[1].0.saturating_add(keep) <= mono {
            ledger.marks.pop_front();
        }
        let upto = match ledger.marks.front() {
            Some(&(at, mark)) if at.saturating_add(keep) <= mono => mark,
            _ => ledger.start,
        };
        LEDGERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(store.log_id()?, ledger.clone());
        Ok(upto)
    }

    fn is_short(&self, space: &Space) -> bool {
        self.min_free > 0 && space.headroom().is_some_and(|h| h < self.min_free)
    }

    /// Moves retention on at `now`: starts a pass when one is due (or
    /// when the disk has just become nearly full), then works on it one
    /// step at a time for as long as `more` says the cycle's budget allows,
    /// and at least one step. Returns the report of a pass that finished.
    /// On an error the pass is dropped and the next one is tried in an
    /// hour; nothing is half-deleted. Passes are scheduled on `now.mono`;
    /// `now.wall_ms` only sets the cutoff.
    pub fn run(
        &mut self,
        store: &mut Store,
        node: &str,
        now: Now,
        more: impl FnMut() -> bool,
    ) -> Result<Option<PassReport>, StoreError> {
        let now_ms = now.wall_ms;
        if self.pass.is_none() {
            let due = self.next_pass.is_none_or(|t| now.mono >= t);
            // A failed measurement is no shortage: the hourly pass will
            // say what is wrong, not every cycle.
            let newly_short = !self.short && store.space().is_ok_and(|space| self.is_short(&space));
            if !due && !newly_short {
                return Ok(None);
            }
            self.next_pass = Some(now.mono.saturating_add(self.every));
            let upto = self.expirable(store, now.mono)?;
            let cutoff_ms = now_ms.saturating_sub(self.keep_ms);
            self.pass = Some(Pass {
                started_ms: now_ms,
                cutoff_ms: cutoff_ms - cutoff_ms.rem_euclid(super::MINUTE_MS),
                upto,
                cursor: Cursor::START,
                phase: Phase::Expire,
                report: PassReport::default(),
            });
        }
        let result = self.work(store, node, now_ms, more);
        if result.is_err() {
            self.pass = None;
        }
        result
    }

    fn work(
        &mut self,
        store: &mut Store,
        node: &str,
        now_ms: i64,
        mut more: impl FnMut() -> bool,
    ) -> Result<Option<PassReport>, StoreError> {
        loop {
            let mut pass = self.pass.expect("work runs on a started pass");
            pass.report.steps += 1;
            match pass.phase {
                Phase::Expire => {
                    let b = store.delete_batch(
                        node,
                        Why::Expired,
                        &mut pass.cursor,
                        pass.cutoff_ms,
                        pass.upto,
                        BATCH_ROWS,
                    )?;
                    pass.report.expired += b.readings;
                    pass.report.errors += b.errors;
                    if b.through && b.errors < BATCH_ROWS as u64 {
                        pass.phase = self.after_expiry(store)?;
                    }
                }
                Phase::Shed { left } => {
                    let rows = usize::try_from(left).map_or(BATCH_ROWS, |l| l.min(BATCH_ROWS));
                    // A nearly full disk needs room whatever the rows' age.
                    let b = store.delete_batch(
                        node,
                        Why::Shed,
                        &mut pass.cursor,
                        pass.started_ms,
                        Watermark::ALL,
                        rows,
                    )?;
                    pass.report.shed += b.readings;
                    pass.report.errors += b.errors;
                    let left = left.saturating_sub(b.readings);
                    pass.phase = if b.through || left == 0 {
                        Phase::Vacuum
                    } else if self.is_short(&store.space()?) {
                        Phase::Shed { left }
                    } else {
                        Phase::Vacuum
                    };
                    if pass.phase == Phase::Vacuum {
                        self.log_shed(store, &pass.report);
                    }
                }
                Phase::Vacuum => {
                    let freed = store.vacuum_step(VACUUM_STEP_PAGES, VACUUM_SLACK_BYTES)?;
                    pass.report.vacuumed += freed;
                    if freed == 0 {
                        pass.phase = Phase::Checkpoint;
                    }
                }
                Phase::Checkpoint => {
                    if pass.report.vacuumed > 0 {
                        store.checkpoint()?;
                    }
                    store.record_pass(node, now_ms)?;
                    self.pass = None;
                    let r = pass.report;
                    if r.expired + r.shed + r.errors + r.vacuumed > 0 {
                        tracing::info!(
                            db = %store.path().display(),
                            expired = r.expired,
                            shed = r.shed,
                            errors = r.errors,
                            vacuumed = %bytes(r.vacuumed),
                            steps = r.steps,
                            "retention pass done"
                        );
                    }
                    return Ok(Some(r));
                }
            }
            self.pass = Some(pass);
            if !more() {
                return Ok(None);
            }
        }
    }

    /// Checks the disk once expiry is through: shed if it is nearly full.
    fn after_expiry(&mut self, store: &Store) -> Result<Phase, StoreError> {
        let space = store.space()?;
        let short = self.is_short(&space);
        let was_short = std::mem::replace(&mut self.short, short);
        if !self.short {
            if was_short {
                tracing::info!(
                    db = %store.path().display(),
                    headroom = %space.headroom().map_or_else(|| "?".into(), bytes),
                    "the disk holding the log has room again"
                );
            }
            return Ok(Phase::Vacuum);
        }
        let left = store.readings_span()?.div_ceil(SHED_SHARE);
        if left == 0 {
            tracing::error!(
                db = %store.path().display(),
                disk_free = %space.disk_free_bytes.map_or_else(|| "?".into(), bytes),
                min_free = %bytes(self.min_free),
                "the disk holding the log is nearly full, and the log holds no reading to \
                 delete: free some space or move `db` to a bigger disk"
            );
            return Ok(Phase::Vacuum);
        }
        tracing::error!(
            db = %store.path().display(),
            disk_free = %space.disk_free_bytes.map_or_else(|| "?".into(), bytes),
            free_in_log = %bytes(space.db_free_bytes),
            min_free = %bytes(self.min_free),
            "the disk holding the log is nearly full: deleting the oldest published readings \
             early (at most {left} this hour) so the newest can still be written; unpublished \
             readings are kept. Free some space, lower [store] retention or move `db` to a \
             bigger disk"
        );
        Ok(Phase::Shed { left })
    }

    /// Says how shedding left the disk, if it is still nearly full.
    fn log_shed(&self, store: &Store, r: &PassReport) {
        let headroom = store.space().ok().and_then(|s| s.headroom());
        if headroom.is_none_or(|h| h >= self.min_free) {
            return;
        }
        let headroom = headroom.map_or_else(|| "?".into(), bytes);
        if r.shed == 0 {
            tracing::warn!(
                db = %store.path().display(),
                %headroom,
                "no published reading was left to delete: what remains is the outbox, which \
                 is never deleted; reconnect the broker or free some space"
            );
        } else {
            tracing::warn!(
                db = %store.path().display(),
                shed = r.shed,
                %headroom,
                "the disk is still nearly full after deleting the {} oldest published \
                 readings; more go in an hour",
                r.shed
            );
        }
    }
}

/// `1.5 MiB`: sizes for people reading logs.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PerChannel, Reading, Route, Sample};
    use crate::store::{Access, AgentStatus, MINUTE_MS};
    use std::time::Duration;

    const HOUR_MS: i64 = 3_600_000;
    const DAY_MS: i64 = 24 * HOUR_MS;
    const THIRTY_DAYS: Duration = Duration::from_hours(24 * 30);

    fn reading(sensor: &str, seq: u64, ts_ms: i64, route: Route) -> Reading {
        Reading {
            node: "pi".into(),
            sensor: sensor.into(),
            seq,
            ts_ms,
            // Whole degrees: `readings_minute` sums stay exact.
            sample: Sample::new(f64::from(u32::try_from(seq % 30).unwrap()), 50.0),
            weights: PerChannel {
                temperature: 0,
                humidity: 0,
            },
            priority: u32::from(route == Route::Realtime),
            route,
            clock_synced: None,
        }
    }

    fn status(heartbeat_ms: i64) -> AgentStatus {
        AgentStatus {
            node: "pi".into(),
            running: true,
            pid: 1,
            version: "test".into(),
            started_ms: 0,
            heartbeat_ms,
            interval_ms: 15_000,
            burst: Vec::new(),
        }
    }

    /// A log with `n` readings of sensor "a" every `step_ms` from
    /// `first_ms`, and one sensor error per reading; `published(i)` says
    /// which of them the broker acknowledged.
    fn log(
        dir: &Path,
        n: u64,
        first_ms: i64,
        step_ms: i64,
        published: impl Fn(u64) -> bool,
    ) -> Store {
        let mut s = Store::open(&dir.join("e.db"), Access::Writer).unwrap();
        let rows: Vec<Reading> = (0..n)
            .map(|i| {
                let route = if i % 5 == 0 {
                    Route::Realtime
                } else {
                    Route::Batch
                };
                reading(
                    "a",
                    i,
                    first_ms + i64::try_from(i).unwrap() * step_ms,
                    route,
                )
            })
            .collect();
        let errors: Vec<_> = rows
            .iter()
            .map(|r| crate::domain::SensorError {
                ts_ms: r.ts_ms,
                sensor: "a".into(),
                kind: crate::domain::ErrorKind::Timeout,
                detail: "no answer".into(),
            })
            .collect();
        s.commit_cycle(&rows, &errors, &status(first_ms)).unwrap();
        let tx = s.conn.transaction().unwrap();
        for i in (0..n).filter(|&i| published(i)) {
            // A fresh log: row ids count from 1 in seq order.
            tx.execute(
                "UPDATE readings SET published_ms = ts_ms + 1 WHERE id = ?1",
                [i64::try_from(i).unwrap() + 1],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        s
    }

    /// (seq, published) of every reading left, in seq order.
    fn left(s: &Store) -> Vec<(u64, bool)> {
        s.conn
            .prepare("SELECT seq, published_ms IS NOT NULL FROM readings ORDER BY seq")
            .unwrap()
            .query_map([], |r| {
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap(), r.get(1)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn count(s: &Store, sql: &str) -> i64 {
        s.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// `now_ms` on both clocks: a machine whose clock was never set since
    /// the Unix epoch (the tests' logs start there).
    fn at(now_ms: i64) -> Now {
        Now {
            mono: Duration::from_millis(u64::try_from(now_ms).unwrap()),
            wall_ms: now_ms,
        }
    }

    /// Runs a whole pass at `now_ms`, as fast as it goes.
    fn pass(r: &mut Retention, s: &mut Store, now_ms: i64) -> PassReport {
        pass_at(r, s, at(now_ms))
    }

    /// Runs a whole pass at `now`, as fast as it goes.
    fn pass_at(r: &mut Retention, s: &mut Store, now: Now) -> PassReport {
        r.run(s, "pi", now, || true)
            .unwrap()
            .expect("a pass was due")
    }

    /// `readings_minute` must equal what `readings` adds up to (the
    /// counts and sums; maxima may stay high after a partial minute).
    fn assert_minutes_match(s: &Store) {
        let q = |sql: &str| -> Vec<(String, i64, i64, i64, f64)> {
            s.conn
                .prepare(sql)
                .unwrap()
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let kept = q("SELECT sensor, minute, realtime, batch, sum_temperature
                      FROM readings_minute ORDER BY sensor, minute");
        let actual = q("SELECT sensor, ts_ms / 60000, sum(route = 'realtime'),
                               sum(route = 'batch'), sum(temperature_c)
                        FROM readings GROUP BY sensor, ts_ms / 60000 ORDER BY 1, 2");
        assert_eq!(kept, actual);
    }

    #[test]
    fn retention_deletes_only_published_rows_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        // 100 days, one reading an hour. The first 1,500 (62 days) are an
        // outage's backlog: never acknowledged. After that, every 7th
        // reading is still in the outbox.
        let mut s = log(dir.path(), 2_400, 0, HOUR_MS, |i| i >= 1_500 && i % 7 != 0);
        let now = 2_400 * HOUR_MS;
        let cutoff = now - 30 * DAY_MS;
        let mut r = Retention::new(THIRTY_DAYS, 0);
        let report = pass(&mut r, &mut s, now);

        let old = |i: u64| i64::try_from(i).unwrap() * HOUR_MS < cutoff;
        let expired = (0..2_400)
            .filter(|&i| old(i) && i >= 1_500 && i % 7 != 0)
            .count();
        assert_eq!(report.expired, expired as u64);
        assert_eq!(report.shed, 0);
        let want: Vec<(u64, bool)> = (0..2_400)
            .filter(|&i| !old(i) || i < 1_500 || i % 7 == 0)
            .map(|i| (i, i >= 1_500 && i % 7 != 0))
            .collect();
        assert_eq!(left(&s), want);
        // Every unpublished reading is still there, however old.
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM readings WHERE published_ms IS NULL"
            ),
            1_500 + i64::try_from((1_500..2_400).filter(|i| i % 7 == 0).count()).unwrap()
        );
        // Sensor errors have no outbox: all the old ones go.
        assert_eq!(count(&s, "SELECT min(ts_ms) FROM sensor_errors"), cutoff);
        assert_eq!(report.errors, 2_400 - 720);
        assert_minutes_match(&s);
        let h = s.housekeeping("pi").unwrap().unwrap();
        assert_eq!(h.pruned_readings, report.expired);
        assert_eq!(h.last_prune_ms, Some(now));

        // Not again within the hour; then only what has aged since: seq
        // 1,680 (unpublished, kept) and 1,681.
        assert_eq!(
            r.run(&mut s, "pi", at(now + HOUR_MS - 1), || true).unwrap(),
            None
        );
        let next = pass(&mut r, &mut s, now + 2 * HOUR_MS);
        assert_eq!(next.expired, 1, "{next:?}");
        assert_eq!(
            s.housekeeping("pi").unwrap().unwrap().pruned_readings,
            report.expired + 1
        );
    }

    /// 2020-01-01T00:00:00Z: what a Pi without a real-time clock boots with.
    const Y2020: i64 = 1_577_836_800_000;
    const YEAR_MS: i64 = 365 * DAY_MS;

    #[test]
    fn a_forward_jump_expires_nothing_this_process_wrote() {
        let dir = tempfile::tempdir().unwrap();
        // A log from before this process: 20 days old by its stamps.
        let mut s = log(dir.path(), 10, Y2020 - 20 * DAY_MS, MINUTE_MS, |_| true);
        let mut r = Retention::new(THIRTY_DAYS, 0);
        let boot = Now {
            mono: Duration::from_secs(5),
            wall_ms: Y2020,
        };
        r.begin(&s).unwrap();
        // This process logs and publishes 100 readings in 2020, a second apart.
        let rows: Vec<Reading> = (10..110)
            .map(|i| {
                reading(
                    "a",
                    i,
                    Y2020 + i64::try_from(i).unwrap() * 1_000,
                    Route::Batch,
                )
            })
            .collect();
        s.insert_readings(&rows).unwrap();
        s.conn
            .execute("UPDATE readings SET published_ms = ts_ms + 1", [])
            .unwrap();
        assert_eq!(pass_at(&mut r, &mut s, boot).expired, 0);
        // NTP sets the clock six years forward, two minutes later; a pass
        // is due an hour later.
        let after = |mono: Duration| Now {
            mono,
            wall_ms: Y2020 + 6 * YEAR_MS + i64::try_from(mono.as_millis()).unwrap(),
        };
        let due = boot.mono + Duration::from_hours(1);
        assert_eq!(
            r.run(
                &mut s,
                "pi",
                after(due.saturating_sub(Duration::from_millis(1))),
                || true
            )
            .unwrap(),
            None,
            "the jump does not hurry the next pass"
        );
        let report = pass_at(&mut r, &mut s, after(due));
        // Only the rows from before this process, judged by their stamps
        // alone: nothing else is known of them.
        assert_eq!(report.expired, 10);
        assert_eq!(left(&s), (10..110).map(|i| (i, true)).collect::<Vec<_>>());
        // A reload (SIGHUP) starts a new retention in the same process: it
        // knows what the process wrote.
        let mut r = Retention::new(THIRTY_DAYS, 0);
        r.begin(&s).unwrap();
        assert_eq!(pass_at(&mut r, &mut s, after(due)).expired, 0);
        // Once they are 30 days old by the monotonic clock, they go.
        let month = boot.mono + THIRTY_DAYS;
        let mut mono = due;
        while mono < month + Duration::from_hours(12) {
            mono += Duration::from_hours(1);
            let _ = r.run(&mut s, "pi", after(mono), || true).unwrap();
            if mono < month {
                assert_eq!(count(&s, "SELECT count(*) FROM readings"), 100, "{mono:?}");
            }
        }
        assert_eq!(count(&s, "SELECT count(*) FROM readings"), 0);
    }

    #[test]
    fn a_backward_jump_does_not_delay_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let now = Y2020 + YEAR_MS;
        let mut s = log(dir.path(), 100, now - 40 * DAY_MS, MINUTE_MS, |i| i < 50);
        let mut r = Retention::new(THIRTY_DAYS, 0);
        let start = Now {
            mono: Duration::from_secs(1),
            wall_ms: now,
        };
        assert_eq!(pass_at(&mut r, &mut s, start).expired, 50);
        // The clock is set back a year; rows published since are 41 days
        // old by the new clock an hour later.
        s.conn
            .execute("UPDATE readings SET published_ms = ts_ms + 1", [])
            .unwrap();
        let hour = Now {
            mono: start.mono + Duration::from_hours(1),
            wall_ms: now - YEAR_MS + HOUR_MS,
        };
        let report = pass_at(&mut r, &mut s, hour);
        assert_eq!(report.steps, 3, "a pass ran on time: {report:?}");
        // Their stamps are now in the future: they are kept, not expired.
        assert_eq!(report.expired, 0);
        assert_eq!(
            s.housekeeping("pi").unwrap().unwrap().last_prune_ms,
            Some(hour.wall_ms)
        );
    }

    #[test]
    fn batches_are_bounded_and_a_pass_spreads_over_cycles() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = log(dir.path(), 5_500, 0, 1_000, |_| true);
        let now = 40 * DAY_MS;
        let mut cursor = Cursor::START;
        let b = s
            .delete_batch(
                "pi",
                Why::Expired,
                &mut cursor,
                now,
                Watermark::ALL,
                BATCH_ROWS,
            )
            .unwrap();
        assert_eq!((b.examined, b.readings, b.through), (1_000, 1_000, false));
        assert_eq!(count(&s, "SELECT count(*) FROM readings"), 4_500);

        // A cycle whose budget is spent still does one step: five more
        // batches, the vacuum and the checkpoint, one per cycle.
        let mut r = Retention::new(THIRTY_DAYS, 0);
        let mut cycles = 1;
        let report = loop {
            if let Some(report) = r.run(&mut s, "pi", at(now), || false).unwrap() {
                break report;
            }
            cycles += 1;
            assert!(cycles < 100, "the pass never ends");
        };
        assert_eq!(report.expired, 4_500);
        assert!(cycles >= 6, "{cycles} cycles for five batches and the tail");
        assert_eq!(u32::try_from(cycles).unwrap(), report.steps);
        assert_eq!(count(&s, "SELECT count(*) FROM readings"), 0);
        assert_eq!(count(&s, "SELECT count(*) FROM readings_minute"), 0);
    }

    /// Bytes of the main database file.
    fn file_len(s: &Store) -> u64 {
        std::fs::metadata(&s.path).unwrap().len()
    }

    #[test]
    fn new_logs_give_freed_pages_back_to_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = log(dir.path(), 60_000, 0, 1_000, |_| true);
        assert_eq!(count(&s, "PRAGMA auto_vacuum"), 2, "incremental");
        s.checkpoint().unwrap();
        let before = file_len(&s);
        assert!(before > 8 << 20, "{before}");
        let report = pass(&mut Retention::new(THIRTY_DAYS, 0), &mut s, 40 * DAY_MS);
        assert_eq!(report.expired, 60_000);
        let after = file_len(&s);
        assert!(after < 2 << 20, "{before} -> {after}");
        assert!(report.vacuumed >= before - after - (1 << 20), "{report:?}");
        // What is left free is the slack for the next hour's rows.
        let free = u64::try_from(count(&s, "PRAGMA freelist_count")).unwrap() * 4096;
        assert!(free <= VACUUM_SLACK_BYTES, "{free}");
        let space = s.space().unwrap();
        assert_eq!(space.db_free_bytes, free);
        assert!(space.disk_free_bytes.is_some());
    }

    #[test]
    fn older_logs_reuse_freed_pages_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        // A log created before auto-vacuum was chosen: schema 3.
        drop(super::super::log_at_version(&path, 3));
        let mut s = log(dir.path(), 30_000, 0, 1_000, |_| true);
        assert_eq!(count(&s, "PRAGMA auto_vacuum"), 0, "none");
        let pages = count(&s, "PRAGMA page_count");
        let report = pass(&mut Retention::new(THIRTY_DAYS, 0), &mut s, 40 * DAY_MS);
        assert_eq!((report.expired, report.vacuumed), (30_000, 0));
        assert!(count(&s, "PRAGMA freelist_count") > pages / 2);
        // As many new rows fit in the freed pages: the file does not grow.
        let rows: Vec<_> = (30_000..60_000)
            .map(|i| {
                reading(
                    "a",
                    i,
                    40 * DAY_MS + i64::try_from(i).unwrap(),
                    Route::Batch,
                )
            })
            .collect();
        s.insert_readings(&rows).unwrap();
        assert!(count(&s, "PRAGMA page_count") <= pages);
    }

    #[test]
    fn nearly_full_disk_sheds_the_oldest_published_readings_first() {
        let dir = tempfile::tempdir().unwrap();
        // Ten days, a reading a minute, all inside the retention; the
        // oldest 500 and every 4th after are unpublished.
        let n = 14_400;
        let mut s = log(dir.path(), n, 0, MINUTE_MS, |i| i >= 500 && i % 4 != 0);
        let now = i64::try_from(n).unwrap() * MINUTE_MS;
        // No disk has this much free: it is always "nearly full".
        let mut r = Retention::new(THIRTY_DAYS, u64::MAX);
        let report = pass(&mut r, &mut s, now);
        assert_eq!(report.expired, 0);
        // At most a tenth of the log per pass.
        assert_eq!(report.shed, n / 10);
        let published = |i: &u64| *i >= 500 && !i.is_multiple_of(4);
        let shed: Vec<u64> = (0..n).filter(published).take(1_440).collect();
        let want: Vec<(u64, bool)> = (0..n)
            .filter(|i| !shed.contains(i))
            .map(|i| (i, published(&i)))
            .collect();
        assert_eq!(left(&s), want, "the oldest published go first");
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM readings WHERE published_ms IS NULL"
            ),
            500 + i64::try_from((500..n).filter(|i| i.is_multiple_of(4)).count()).unwrap(),
            "unpublished readings are never shed"
        );
        // The errors logged before the newest shed reading go with them.
        let horizon = i64::try_from(*shed.last().unwrap()).unwrap() * MINUTE_MS;
        assert_eq!(count(&s, "SELECT min(ts_ms) FROM sensor_errors"), horizon);
        assert_minutes_match(&s);
        assert_eq!(s.housekeeping("pi").unwrap().unwrap().shed_readings, n / 10);

        // A known shortage waits for the next hour: one error an hour.
        assert_eq!(
            r.run(&mut s, "pi", at(now + MINUTE_MS), || true).unwrap(),
            None
        );
        let again = pass(&mut r, &mut s, now + HOUR_MS);
        assert_eq!(again.shed, n / 10);
    }

    #[test]
    fn a_new_shortage_starts_a_pass_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = log(dir.path(), 100, 0, MINUTE_MS, |_| true);
        let now = 100 * MINUTE_MS;
        let mut r = Retention::new(THIRTY_DAYS, u64::MAX);
        // The last pass, ten minutes ago, found room.
        r.next_pass = Some(at(now + 50 * MINUTE_MS).mono);
        assert!(!r.short);
        let report = r.run(&mut s, "pi", at(now), || true).unwrap().unwrap();
        assert_eq!(report.shed, 10);
        assert!(r.short);
        assert_eq!(r.next_pass, Some(at(now + HOUR_MS).mono));
    }

    #[test]
    fn shedding_makes_room_in_a_full_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = log(dir.path(), 20_000, 0, 1_000, |_| true);
        s.checkpoint().unwrap();
        // The file may not grow: the "disk" is full. Fill it up.
        s.set_max_pages(count(&s, "PRAGMA page_count"));
        let chunk = |from: u64| -> Vec<Reading> {
            (from..from + 500)
                .map(|i| reading("a", i, i64::try_from(i).unwrap() * 1_000, Route::Batch))
                .collect()
        };
        let mut next = 20_000;
        let e = loop {
            match s.insert_readings(&chunk(next)) {
                Ok(()) => next += 500,
                Err(e) => break e,
            }
            assert!(next < 30_000, "the cap never bit");
        };
        assert!(matches!(e, StoreError::Full { .. }), "{e}");
        let report = pass(&mut Retention::new(THIRTY_DAYS, u64::MAX), &mut s, DAY_MS);
        assert_eq!(report.shed, next.div_ceil(10));
        // The shed rows' pages take the new rows; the log is intact.
        s.insert_readings(&chunk(next)).unwrap();
        let check: String = s
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn guard_off_or_disk_unknown_never_sheds() {
        let space = Space {
            db_bytes: 1,
            db_free_bytes: 10,
            disk_free_bytes: Some(5),
        };
        assert_eq!(space.headroom(), Some(15));
        assert!(Retention::new(THIRTY_DAYS, 16).is_short(&space));
        assert!(!Retention::new(THIRTY_DAYS, 15).is_short(&space));
        assert!(!Retention::new(THIRTY_DAYS, 0).is_short(&space));
        let unknown = Space {
            disk_free_bytes: None,
            ..space
        };
        assert!(!Retention::new(THIRTY_DAYS, u64::MAX).is_short(&unknown));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
