//! Readings the log would not take (a full disk, a read-only remount), held
//! until it does: in memory while the agent runs and across a reload, and
//! in a spill file in the runtime directory (RAM: `/run/edgeprio`, which
//! systemd keeps across restarts of the service with
//! `RuntimeDirectoryPreserve=yes`) so that a stop or a crash does not lose
//! them. The next start reads the spill and commits it once the log
//! accepts writes, with the seqs the readings were given.
//!
//! The spill is append-only: each failed cycle adds its new records, one
//! line each, `<16 hex digits of FNV-1a 64> <JSON>\n`, and syncs the file.
//! A crash mid-append leaves a torn last line, which the checksum tells
//! apart and the next start drops. The file is bounded ([`MAX_SPILL_BYTES`],
//! and half the space free in the runtime directory when it is created):
//! readings beyond it stay in memory only, and what is given up at a stop
//! is recorded as a [`Loss`] (count and seq range per sensor), in the spill
//! and, once it is writable, in the log.
//!
//! # Troubleshooting
//!
//! - "cannot spill to ...": the runtime directory cannot be written; under
//!   systemd it is `RuntimeDirectory=edgeprio`, elsewhere set
//!   `RUNTIME_DIRECTORY` to a directory on a RAM file system the agent's
//!   user may write.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::{ErrorKind, PerChannel, Reading, Route, Sample, SensorError};
use crate::store::Loss;

/// Most readings held in memory (about four days of four sensors at 15 s):
/// a full disk must not lose readings, but memory is finite too. Readings
/// past it are given up and recorded as lost.
pub const MAX_HELD: usize = 100_000;

/// Most bytes a spill takes for readings and errors: it lives in RAM.
/// About 40,000 readings (a record is about 200 bytes): 40 hours of four
/// sensors at 15 s.
pub const MAX_SPILL_BYTES: u64 = 8 << 20;

/// Room kept above the bound for loss records, so that a full spill can
/// still say what it could not hold.
const LOSS_RESERVE: u64 = 2 << 10;

/// The runtime directory: `$RUNTIME_DIRECTORY` (systemd's
/// `RuntimeDirectory=`, the first if it lists several), else
/// `$XDG_RUNTIME_DIR/edgeprio`, else `/run/edgeprio`.
pub fn runtime_dir() -> PathBuf {
    if let Some(dirs) = std::env::var_os("RUNTIME_DIRECTORY")
        && let Some(first) = dirs.to_string_lossy().split(':').find(|d| !d.is_empty())
    {
        return PathBuf::from(first);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("edgeprio"),
        _ => PathBuf::from("/run/edgeprio"),
    }
}

/// The spill of the log at `db`, in `dir`: named after the log's file and a
/// hash of its absolute path, so two logs never share one.
pub fn spill_path(dir: &Path, db: &Path) -> PathBuf {
    let abs = std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf());
    let name = db
        .file_name()
        .map_or_else(|| "log".into(), |n| n.to_string_lossy().into_owned());
    // Truncated on purpose: eight hex digits tell the logs of one machine apart.
    #[expect(clippy::cast_possible_truncation, reason = "a short file-name tag")]
    let tag = fnv1a(abs.as_os_str().as_encoded_bytes()) as u32;
    dir.join(format!("{name}-{tag:08x}.spill"))
}

/// FNV-1a, 64 bits: the per-record checksum (torn writes, not attackers).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One line of the spill.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
enum Record {
    /// The first line: the format and the log the spill belongs to.
    Spill { version: u32, db: String },
    Reading {
        node: String,
        sensor: String,
        seq: u64,
        ts_ms: i64,
        temperature_c: f64,
        humidity_pct: f64,
        weight_temperature: u32,
        weight_humidity: u32,
        priority: u32,
        route: Route,
        /// Absent when unknown (and in spills of older builds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clock_synced: Option<bool>,
    },
    Error {
        ts_ms: i64,
        sensor: String,
        kind: String,
        detail: String,
    },
    Lost {
        node: String,
        sensor: String,
        first_seq: u64,
        last_seq: u64,
        ts_ms: i64,
        reason: String,
    },
}

impl Record {
    fn reading(r: &Reading) -> Record {
        Record::Reading {
            node: r.node.clone(),
            sensor: r.sensor.clone(),
            seq: r.seq,
            ts_ms: r.ts_ms,
            temperature_c: r.sample.temperature,
            humidity_pct: r.sample.humidity,
            weight_temperature: r.weights.temperature,
            weight_humidity: r.weights.humidity,
            priority: r.priority,
            route: r.route,
            clock_synced: r.clock_synced,
        }
    }

    fn error(e: &SensorError) -> Record {
        Record::Error {
            ts_ms: e.ts_ms,
            sensor: e.sensor.clone(),
            kind: e.kind.as_str().into(),
            detail: e.detail.clone(),
        }
    }

    fn lost(l: &Loss) -> Record {
        Record::Lost {
            node: l.node.clone(),
            sensor: l.sensor.clone(),
            first_seq: l.first_seq,
            last_seq: l.last_seq,
            ts_ms: l.ts_ms,
            reason: l.reason.clone(),
        }
    }

    /// The line for the file, newline included.
    fn line(&self) -> String {
        let json = serde_json::to_string(self).expect("a record always serializes");
        format!("{:016x} {json}\n", fnv1a(json.as_bytes()))
    }

    /// The record of one line (without its newline), if it is intact.
    fn parse(line: &str) -> Option<Record> {
        let (sum, json) = line.split_once(' ')?;
        if u64::from_str_radix(sum, 16).ok()? != fnv1a(json.as_bytes()) {
            return None;
        }
        serde_json::from_str(json).ok()
    }
}

/// What is held: readings and errors the log has not taken yet (oldest
/// first) and the losses not recorded in it yet, with the spill that keeps
/// them across a stop. The spill holds a prefix of each list.
#[derive(Debug)]
pub struct Held {
    /// The spill file.
    path: PathBuf,
    /// The log it belongs to, for its header.
    db: PathBuf,
    readings: Vec<Reading>,
    errors: Vec<SensorError>,
    losses: Vec<Loss>,
    /// How many of `readings`, `errors`, `losses` are in the file.
    in_file: (usize, usize, usize),
    /// The file's length: where the next record goes.
    len: u64,
    /// The bound on `len` for readings and errors, fixed when the file is
    /// created.
    limit: Option<u64>,
    /// The file no longer matches the lists (seqs renumbered after a
    /// conflict): rewritten whole at the next [`Held::spill`].
    dirty: bool,
    /// Why the spill cannot take more, once it cannot; said once.
    stuck: Option<String>,
    /// The last write failed (not just the bound): no retry at the stop.
    broken: bool,
}

/// What [`Held::restore`] found in a spill.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Readings read back.
    pub readings: usize,
    /// Bytes of a torn or damaged tail that were dropped.
    pub dropped_bytes: u64,
}

impl Held {
    /// Nothing held yet, spilling to `path` for the log at `db`.
    pub fn new(path: PathBuf, db: &Path) -> Held {
        Held {
            path,
            db: db.to_path_buf(),
            readings: Vec::new(),
            errors: Vec::new(),
            losses: Vec::new(),
            in_file: (0, 0, 0),
            len: 0,
            limit: None,
            dirty: false,
            stuck: None,
            broken: false,
        }
    }

    /// Reads back the spill at `path` (if there is one) for the log at
    /// `db`. A damaged or torn tail is dropped (and cut off the file).
    pub fn restore(path: PathBuf, db: &Path) -> std::io::Result<(Held, Restored)> {
        let mut held = Held::new(path, db);
        let path = held.path.clone();
        let Some((total, good)) = read_records(&path, |r| held.take(r))? else {
            return Ok((held, Restored::default()));
        };
        held.in_file = (held.readings.len(), held.errors.len(), held.losses.len());
        held.len = good;
        held.limit = Some(bound(held.path.parent().unwrap_or(Path::new(".")), good));
        if good == 0 {
            // Nothing usable: the file goes, like a spill the log took.
            std::fs::remove_file(&held.path)?;
        } else if good < total {
            OpenOptions::new()
                .write(true)
                .open(&held.path)?
                .set_len(good)?;
        }
        let restored = Restored {
            readings: held.readings.len(),
            dropped_bytes: total - good,
        };
        Ok((held, restored))
    }

    fn take(&mut self, record: Record) {
        match record {
            Record::Spill { .. } => {}
            Record::Reading {
                node,
                sensor,
                seq,
                ts_ms,
                temperature_c,
                humidity_pct,
                weight_temperature,
                weight_humidity,
                priority,
                route,
                clock_synced,
            } => self.readings.push(Reading {
                node,
                sensor,
                seq,
                ts_ms,
                sample: Sample::new(temperature_c, humidity_pct),
                weights: PerChannel {
                    temperature: weight_temperature,
                    humidity: weight_humidity,
                },
                priority,
                route,
                clock_synced,
            }),
            Record::Error {
                ts_ms,
                sensor,
                kind,
                detail,
            } => {
                if let Some(kind) = ErrorKind::parse(&kind) {
                    self.errors.push(SensorError {
                        ts_ms,
                        sensor,
                        kind,
                        detail,
                    });
                }
            }
            Record::Lost {
                node,
                sensor,
                first_seq,
                last_seq,
                ts_ms,
                reason,
            } => self.losses.push(Loss {
                node,
                sensor,
                first_seq,
                last_seq,
                ts_ms,
                reason,
            }),
        }
    }

    /// This spill with `limit` bytes for readings and errors.
    #[cfg(test)]
    pub(crate) fn with_limit(mut self, limit: u64) -> Held {
        self.limit = Some(limit);
        self
    }

    /// The spill file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Held readings, oldest first.
    pub fn readings(&self) -> &[Reading] {
        &self.readings
    }

    /// Held sensor errors, oldest first.
    pub fn errors(&self) -> &[SensorError] {
        &self.errors
    }

    /// Losses not yet recorded in the log.
    pub fn losses(&self) -> &[Loss] {
        &self.losses
    }

    /// Whether anything waits for the log.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.errors.is_empty() && self.losses.is_empty()
    }

    /// The held readings, to renumber them: the spill is rewritten at the
    /// next [`Held::spill`].
    pub fn readings_mut(&mut self) -> &mut [Reading] {
        self.dirty = true;
        &mut self.readings
    }

    /// Lets `edit` carry other readings in front of the held ones and
    /// renumber them all (a log followed to a new file); when `changed`
    /// says it did, the spill is rewritten at the next [`Held::spill`],
    /// otherwise it is still only appended to.
    pub fn edit_readings<R>(
        &mut self,
        edit: impl FnOnce(&mut Vec<Reading>) -> R,
        changed: impl FnOnce(&R) -> bool,
    ) -> R {
        let result = edit(&mut self.readings);
        if changed(&result) {
            self.dirty = true;
        }
        result
    }

    /// Holds a cycle's readings and errors, up to `MAX_HELD` of each;
    /// readings past it are given up, as losses (at `now_ms`).
    pub fn hold(&mut self, readings: &[Reading], errors: &[SensorError], now_ms: i64) {
        let room = MAX_HELD.saturating_sub(self.readings.len());
        let (kept, over) = readings.split_at(room.min(readings.len()));
        self.readings.extend_from_slice(kept);
        if !over.is_empty() {
            tracing::error!(
                held = self.readings.len(),
                "the held backlog is full ({MAX_HELD} readings): giving up this cycle's {} \
                 readings",
                over.len()
            );
            for r in over {
                self.lose(r, now_ms, "the held backlog was full");
            }
        }
        let room = MAX_HELD.saturating_sub(self.errors.len());
        self.errors
            .extend_from_slice(&errors[..room.min(errors.len())]);
    }

    /// Records `r` as lost, extending the sensor's last loss when it is
    /// the next seq and not in the file yet.
    fn lose(&mut self, r: &Reading, now_ms: i64, reason: &str) {
        let unwritten = self.in_file.2;
        if let Some(last) = self.losses[unwritten..]
            .iter_mut()
            .rev()
            .find(|l| l.node == r.node && l.sensor == r.sensor)
            && last.last_seq + 1 == r.seq
            && last.reason == reason
        {
            last.last_seq = r.seq;
            return;
        }
        self.losses.push(Loss {
            node: r.node.clone(),
            sensor: r.sensor.clone(),
            first_seq: r.seq,
            last_seq: r.seq,
            ts_ms: now_ms,
            reason: reason.into(),
        });
    }

    /// The log took everything: forget it and remove the spill.
    pub fn committed(&mut self) {
        self.readings.clear();
        self.errors.clear();
        self.losses.clear();
        self.in_file = (0, 0, 0);
        self.dirty = false;
        self.stuck = None;
        self.broken = false;
        self.limit = None;
        if self.len > 0 {
            self.len = 0;
            match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    spill = %self.path.display(),
                    "the log has the spilled readings, but the spill cannot be removed: {e}; \
                     remove it by hand, or the next start writes them again (and the log \
                     refuses them as duplicates)"
                ),
            }
        }
    }

    /// The losses are in the log now.
    pub fn losses_recorded(&mut self) {
        if !self.losses.is_empty() {
            self.losses.clear();
            // The file still lists them: rewrite it without.
            self.dirty = self.len > 0;
            self.in_file.2 = 0;
        }
    }

    /// Brings the spill up to date with what is held (as far as its bound
    /// allows), synced to the device. Returns how many held readings are in
    /// it.
    pub fn spill(&mut self) -> usize {
        if self.stuck.is_some() && !self.dirty {
            return self.in_file.0;
        }
        if let Err(e) = self.write() {
            let why = format!("cannot spill to {}: {e}", self.path.display());
            if self.stuck.is_none() {
                tracing::error!(
                    "{why}; readings not in the spill are held in memory only (a stop loses \
                     them): {} so far; set RUNTIME_DIRECTORY to a writable directory on a RAM \
                     file system",
                    self.readings.len() - self.in_file.0
                );
            }
            self.stuck = Some(why);
            self.broken = true;
        }
        self.in_file.0
    }

    fn write(&mut self) -> std::io::Result<()> {
        if self.dirty {
            return self.rewrite();
        }
        if self.in_file == (self.readings.len(), self.errors.len(), self.losses.len()) {
            return Ok(());
        }
        if self.len == 0 {
            return self.rewrite();
        }
        let limit = self.limit.unwrap_or(MAX_SPILL_BYTES);
        let mut out = String::new();
        let counts = self.fill(&mut out, self.len, limit);
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        if let Err(e) = file
            .write_all(out.as_bytes())
            .and_then(|()| file.sync_data())
        {
            // Cut a partial append off: the file stays a clean prefix.
            let _ = file.set_len(self.len);
            return Err(e);
        }
        self.len += out.len() as u64;
        self.in_file = counts;
        self.note_full();
        Ok(())
    }

    /// Appends to `out` the records not in the file, in order, while the
    /// file (at `len`) stays within `limit` (losses within the reserve
    /// above it). Returns the new in-file counts.
    fn fill(&self, out: &mut String, len: u64, limit: u64) -> (usize, usize, usize) {
        let (mut r, mut e, mut l) = self.in_file;
        let fits =
            |out: &String, line: &str, limit: u64| len + (out.len() + line.len()) as u64 <= limit;
        while r < self.readings.len() {
            let line = Record::reading(&self.readings[r]).line();
            if !fits(out, &line, limit) {
                break;
            }
            out.push_str(&line);
            r += 1;
        }
        while e < self.errors.len() {
            let line = Record::error(&self.errors[e]).line();
            if !fits(out, &line, limit) {
                break;
            }
            out.push_str(&line);
            e += 1;
        }
        while l < self.losses.len() {
            let line = Record::lost(&self.losses[l]).line();
            if !fits(out, &line, limit + LOSS_RESERVE) {
                break;
            }
            out.push_str(&line);
            l += 1;
        }
        (r, e, l)
    }

    /// Says once that the bound stops the spill.
    fn note_full(&mut self) {
        if self.in_file.0 < self.readings.len() && self.stuck.is_none() {
            let why = format!(
                "the spill {} is full ({} bytes)",
                self.path.display(),
                self.len
            );
            tracing::error!(
                "{why}; newer readings are held in memory only (a stop loses them): {} so far",
                self.readings.len() - self.in_file.0
            );
            self.stuck = Some(why);
        }
    }

    /// Writes the whole spill anew: a temporary file, synced, renamed over
    /// the old one, and the directory synced.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        // Only the agent's user reads it, like the runtime directory systemd
        // makes (0700).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        if self.limit.is_none() {
            self.limit = Some(bound(dir, 0));
        }
        let limit = self.limit.unwrap_or(MAX_SPILL_BYTES);
        let mut out = Record::Spill {
            version: 1,
            db: self.db.display().to_string(),
        }
        .line();
        let saved = self.in_file;
        self.in_file = (0, 0, 0);
        let counts = self.fill(&mut out, 0, limit);
        self.in_file = saved;
        let tmp = self.path.with_extension("spill.tmp");
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(out.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.len = out.len() as u64;
        self.in_file = counts;
        self.dirty = false;
        self.note_full();
        Ok(())
    }

    /// The final stop, with the log still refusing writes: spills what it
    /// can, records the rest as lost (in the spill, for the next start's
    /// log), and says what happened. Returns the losses of this stop.
    pub fn settle(mut self, now_ms: i64) -> Vec<Loss> {
        self.spill();
        let unspilled: Vec<Reading> = self.readings[self.in_file.0..].to_vec();
        let reason = self.stuck.clone().unwrap_or_else(|| "not spilled".into());
        let before = self.losses.len();
        for r in &unspilled {
            self.lose(r, now_ms, &reason);
        }
        // The unspilled readings are the losses now; the reserve above the
        // bound is for their records.
        self.readings.truncate(self.in_file.0);
        if !self.broken {
            self.stuck = None;
            self.spill();
        }
        let lost: Vec<Loss> = merge(&self.losses[before..]);
        if self.in_file.0 > 0 {
            tracing::warn!(
                "spilled {} readings to {}: the log did not take them; the next start writes \
                 them to the log once it accepts writes",
                self.in_file.0,
                self.path.display()
            );
        }
        let recorded = self.in_file.2 == self.losses.len();
        for l in &lost {
            tracing::error!(
                "{l}; {}",
                if recorded {
                    "the next start records the loss in the log (table lost_readings)"
                } else {
                    "the loss could not be recorded anywhere but here"
                }
            );
        }
        lost
    }
}

/// Reads the intact records of the spill at `path` into `take`, up to the
/// first torn or damaged line. Returns the file's length and how many bytes
/// of it are intact, or `None` if there is no such file.
fn read_records(path: &Path, mut take: impl FnMut(Record)) -> std::io::Result<Option<(u64, u64)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let total = file.metadata()?.len();
    let mut good = 0u64;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(n) => n,
            // Not UTF-8: damaged from here on.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => break,
            Err(e) => return Err(e),
        };
        let Some(body) = line.strip_suffix('\n') else {
            break;
        };
        let Some(record) = Record::parse(body) else {
            break;
        };
        take(record);
        good += n as u64;
    }
    Ok(Some((total, good)))
}

/// A spill in the runtime directory that belongs to another log path than
/// the agent's: only a start with `db` at that path reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    /// The spill file.
    pub path: PathBuf,
    /// The log path its header names (empty if it has no header).
    pub db: String,
    /// Readings in it.
    pub readings: usize,
    /// Per sensor: how many readings, and their lowest and highest seq.
    pub sensors: BTreeMap<String, (usize, u64, u64)>,
    /// Losses it records, not yet in any log.
    pub losses: usize,
}

impl Stray {
    /// What it holds, in one line.
    pub fn summary(&self) -> String {
        let ranges: Vec<String> = self
            .sensors
            .iter()
            .map(|(s, (n, lo, hi))| format!("{s} seq {lo}..{hi} ({n})"))
            .collect();
        format!(
            "the spill {} of another log path ({}) holds {} readings ({}) and {} loss records \
             that are in no log: a spill is read only by a start with db at the path it was \
             made for",
            self.path.display(),
            self.db,
            self.readings,
            if ranges.is_empty() {
                "none".to_owned()
            } else {
                ranges.join(", ")
            },
            self.losses,
        )
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        format!(
            "point db back at {} (the log they came from), start the agent once so that it \
             writes them (the spill goes away), then stop it and move the log; or, if they are \
             not wanted, delete {}",
            self.db,
            self.path.display()
        )
    }
}

/// The spills in `dir` other than `own`, oldest name first; unreadable ones
/// are skipped (said at debug level).
pub fn strays(dir: &Path, own: &Path) -> Vec<Stray> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spill") && p != own)
        .collect();
    paths.sort();
    let mut found = Vec::new();
    for path in paths {
        let mut stray = Stray {
            path: path.clone(),
            db: String::new(),
            readings: 0,
            sensors: BTreeMap::new(),
            losses: 0,
        };
        let read = read_records(&path, |r| match r {
            Record::Spill { db, .. } => stray.db = db,
            Record::Reading { sensor, seq, .. } => {
                stray.readings += 1;
                let e = stray.sensors.entry(sensor).or_insert((0, seq, seq));
                *e = (e.0 + 1, e.1.min(seq), e.2.max(seq));
            }
            Record::Error { .. } => {}
            Record::Lost { .. } => stray.losses += 1,
        });
        match read {
            Ok(Some(_)) if stray.readings + stray.losses > 0 => found.push(stray),
            Ok(_) => {}
            Err(e) => tracing::debug!(spill = %path.display(), "cannot read the spill: {e}"),
        }
    }
    found
}

/// The bound of a spill in `dir` that has `used` bytes: at most
/// [`MAX_SPILL_BYTES`], and never more than half of what the RAM disk has
/// free beyond what it already takes.
fn bound(dir: &Path, used: u64) -> u64 {
    let free =
        rustix::fs::statvfs(dir).map_or(MAX_SPILL_BYTES, |s| s.f_bavail.saturating_mul(s.f_frsize));
    MAX_SPILL_BYTES.min(used + free / 2).max(used)
}

/// Joins adjacent runs of one sensor: one line per sensor and range.
fn merge(losses: &[Loss]) -> Vec<Loss> {
    let mut by: BTreeMap<(&str, &str), Vec<Loss>> = BTreeMap::new();
    for l in losses {
        let runs = by.entry((&l.node, &l.sensor)).or_default();
        match runs.last_mut() {
            Some(last) if last.last_seq + 1 == l.first_seq => last.last_seq = l.last_seq,
            _ => runs.push(l.clone()),
        }
    }
    by.into_values().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(sensor: &str, seq: u64) -> Reading {
        Reading {
            node: "n".into(),
            sensor: sensor.into(),
            seq,
            ts_ms: 1_000 + i64::try_from(seq).unwrap(),
            sample: Sample::new(21.5, 40.25),
            weights: PerChannel {
                temperature: 1,
                humidity: 0,
            },
            priority: 1,
            route: Route::Realtime,
            clock_synced: None,
        }
    }

    fn error() -> SensorError {
        SensorError {
            ts_ms: 5,
            sensor: "a".into(),
            kind: ErrorKind::Timeout,
            detail: "no answer".into(),
        }
    }

    #[test]
    fn a_spill_reads_back_what_was_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = spill_path(dir.path(), Path::new("/var/lib/e.db"));
        let mut held = Held::new(path.clone(), Path::new("/var/lib/e.db"));
        // Readings keep whether the clock was synchronized, unknown too.
        let unsynced = Reading {
            clock_synced: Some(false),
            ..reading("b", 0)
        };
        held.hold(&[reading("a", 0), unsynced], &[error()], 9);
        assert_eq!(held.spill(), 2);
        let synced = Reading {
            clock_synced: Some(true),
            ..reading("a", 1)
        };
        held.hold(&[synced], &[], 9);
        assert_eq!(held.spill(), 3);
        let (back, restored) = Held::restore(path.clone(), Path::new("/var/lib/e.db")).unwrap();
        assert_eq!(restored.readings, 3);
        assert_eq!(restored.dropped_bytes, 0);
        assert_eq!(back.readings(), held.readings());
        assert_eq!(back.errors(), held.errors());
        let mut back = back;
        back.committed();
        assert!(!path.exists());
    }

    #[test]
    fn a_torn_or_damaged_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.spill");
        let mut held = Held::new(path.clone(), Path::new("e.db"));
        held.hold(&[reading("a", 0), reading("a", 1)], &[], 9);
        held.spill();
        let whole = std::fs::read(&path).unwrap();
        // A crash in the middle of the last line.
        std::fs::write(&path, &whole[..whole.len() - 10]).unwrap();
        let (back, restored) = Held::restore(path.clone(), Path::new("e.db")).unwrap();
        assert_eq!(back.readings(), &held.readings()[..1]);
        assert!(restored.dropped_bytes > 0);
        // Cut off: appends continue after the last intact line.
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (whole.len() - 10) as u64 - restored.dropped_bytes
        );
        // A flipped byte inside a line stops the read there.
        let mut bad = whole.clone();
        let at = whole.len() - 20;
        bad[at] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let (back, _) = Held::restore(path, Path::new("e.db")).unwrap();
        assert_eq!(back.readings().len(), 1);
    }

    #[test]
    fn the_bound_keeps_the_spill_small_and_settle_records_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.spill");
        let mut held = Held::new(path.clone(), Path::new("e.db")).with_limit(1_000);
        let readings: Vec<Reading> = (0..40).map(|s| reading("a", s)).collect();
        held.hold(&readings, &[], 9);
        let spilled = held.spill();
        assert!(spilled > 0 && spilled < 40, "{spilled}");
        assert!(std::fs::metadata(&path).unwrap().len() <= 1_000);
        let lost = held.settle(77);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(
            (
                lost[0].sensor.as_str(),
                lost[0].first_seq,
                lost[0].last_seq,
                lost[0].ts_ms
            ),
            ("a", spilled as u64, 39, 77)
        );
        assert!(lost[0].reason.contains("is full"), "{}", lost[0].reason);
        assert!(std::fs::metadata(&path).unwrap().len() <= 1_000 + LOSS_RESERVE);
        let (back, _) = Held::restore(path, Path::new("e.db")).unwrap();
        assert_eq!(back.readings().len(), spilled);
        assert_eq!(back.losses(), lost);
    }

    #[test]
    fn an_unwritable_runtime_dir_loses_only_what_it_must_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be.
        std::fs::write(dir.path().join("run"), "").unwrap();
        let path = dir.path().join("run/e.spill");
        let mut held = Held::new(path, Path::new("e.db"));
        held.hold(&[reading("a", 3), reading("a", 4), reading("b", 9)], &[], 1);
        assert_eq!(held.spill(), 0);
        let lost = held.settle(2);
        let runs: Vec<(String, u64, u64)> = lost
            .iter()
            .map(|l| (l.sensor.clone(), l.first_seq, l.last_seq))
            .collect();
        assert_eq!(runs, vec![("a".into(), 3, 4), ("b".into(), 9, 9)]);
        assert!(
            lost[0]
                .to_string()
                .starts_with("lost 2 readings of sensor a, seq 3..4")
        );
    }

    #[test]
    fn readings_past_the_held_bound_are_recorded_as_one_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = Held::new(dir.path().join("e.spill"), Path::new("e.db"));
        let full: Vec<Reading> = (0..MAX_HELD as u64).map(|s| reading("a", s)).collect();
        held.hold(&full, &[], 1);
        for seq in MAX_HELD as u64..MAX_HELD as u64 + 3 {
            held.hold(&[reading("a", seq)], &[], 1);
        }
        assert_eq!(held.readings().len(), MAX_HELD);
        assert_eq!(held.losses().len(), 1);
        assert_eq!(held.losses()[0].count(), 3);
    }
}
