//! `edgeprio doctor`: one line per problem, each with its fix. It runs on
//! any machine; off a Raspberry Pi it says so instead of failing obscurely.
//!
//! On a Pi it says how the GPIO library reaches the pins (the RP1 chip on a
//! Pi 5), takes test reads of each DHT sensor (within [`READ_BUDGET`],
//! respecting the part's spacing) and recommends the kernel driver when
//! fewer than [`IIO_BELOW`] of them succeed, and says which encoding a
//! DHT22's negative temperatures arrive in once a test read saw one.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use embedded_hal::delay::DelayNs;

use crate::clock::{Clock, ClockSync, KernelSync, SyncProbe as _, SystemClock};
use crate::config::{Config, SensorConfig};
use crate::sensor::dht22::{Dht22, LinePin};
use crate::sensor::frame::{Model, Negative};
use crate::sensor::{self, GpioPath, ReadError, Resume, Sensor};
use crate::store::{Access, Store};

/// The longest the test reads of one sensor may take: `--reads` is capped
/// to what fits, so doctor on a DHT22 finishes in about a minute.
pub const READ_BUDGET: Duration = Duration::from_mins(1);

/// Below this share of successful test reads, the user-space read is not
/// good enough on this machine and the kernel driver is recommended.
pub const IIO_BELOW: f64 = 0.9;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Works.
    Ok,
    /// Worth knowing, nothing to fix.
    Info,
    /// Works, but not well.
    Warn,
    /// Does not work.
    Fail,
}

/// One diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Severity.
    pub level: Level,
    /// What was checked: `config`, `board`, `sensor lab`, ...
    pub subject: String,
    /// What was found, in one line.
    pub message: String,
    /// What to do about it, when something is to be done.
    pub fix: Option<String>,
    /// Extra lines (the pulse-width histogram).
    pub details: Vec<String>,
}

impl Finding {
    fn new(level: Level, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level,
            subject: subject.into(),
            message: message.into(),
            fix: None,
            details: Vec::new(),
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// The finding as printed: a tagged line, then the fix and details.
    pub fn render(&self) -> String {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Info => "info",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let mut s = format!("{tag}  {:<14} {}\n", self.subject, self.message);
        if let Some(fix) = &self.fix {
            let _ = writeln!(s, "      {:<14} fix: {fix}", "");
        }
        for d in &self.details {
            let _ = writeln!(s, "      {:<14} {d}", "");
        }
        s
    }
}

/// Runs every check for the config at `path`, handing each finding to
/// `report` as soon as it is known (sensor checks take seconds).
pub fn run(path: &Path, reads: u32, mut report: impl FnMut(&Finding)) -> Vec<Finding> {
    let mut all = Vec::new();
    let mut emit = |f: Finding| {
        report(&f);
        all.push(f);
    };
    let config = match Config::load_checked(path) {
        Ok(c) => {
            emit(Finding::new(
                Level::Ok,
                "config",
                format!(
                    "{} is valid (node {}, {} sensors, interval {})",
                    path.display(),
                    c.node,
                    c.sensors.len(),
                    humantime::format_duration(c.interval)
                ),
            ));
            c
        }
        Err(e) => {
            emit(
                Finding::new(Level::Fail, "config", e.to_string())
                    .fix("correct the file; `edgeprio --config FILE check-config` re-checks it"),
            );
            return all;
        }
    };
    let gpio_sensors: Vec<&SensorConfig> = config
        .sensors
        .iter()
        .filter(|s| s.kind.dht().is_some())
        .collect();
    let (board_finding, on_pi) = board(&gpio_sensors);
    emit(board_finding);
    if on_pi && !gpio_sensors.is_empty() {
        emit(gpio_access(sensor::gpio_path()));
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    if let Err(e) = config.require_sensors() {
        emit(Finding::new(Level::Fail, "sensors", e.to_string()));
    }
    for sc in &config.sensors {
        let subject = format!("sensor {}", sc.id);
        match sc.kind.dht() {
            Some(dht) if on_pi => match sensor::open_dht(&sc.id, dht, &clock) {
                Ok(mut sensor) => {
                    for f in check_dht(&subject, dht.pin, &mut sensor, reads) {
                        emit(f);
                    }
                }
                Err(e) => emit(Finding::new(Level::Fail, subject, e.to_string())),
            },
            Some(dht) => emit(Finding::new(
                Level::Info,
                subject,
                format!(
                    "{} on BCM {}: not tested (not a Raspberry Pi)",
                    dht.model.kind(),
                    dht.pin
                ),
            )),
            None => match sensor::open(sc, Resume::default(), &clock) {
                Ok(mut s) => emit(check_reads(&subject, s.as_mut(), reads)),
                // The backends' errors already say what to do.
                Err(e) => emit(Finding::new(Level::Fail, subject, e.to_string())),
            },
        }
    }
    emit(database(&config));
    stray_spills(&config.db).into_iter().for_each(&mut emit);
    emit(clock_sync(KernelSync.probe()));
    log_integrity(&config.db).into_iter().for_each(&mut emit);
    all
}

/// Whether this is a Raspberry Pi, and what that means for the GPIO
/// sensors configured.
fn board(gpio_sensors: &[&SensorConfig]) -> (Finding, bool) {
    match sensor::board() {
        Ok(model) => (Finding::new(Level::Ok, "board", model), true),
        Err(why) if gpio_sensors.is_empty() => (
            Finding::new(
                Level::Info,
                "board",
                format!("not a Raspberry Pi ({why}); fine: no dht22 or dht11 sensor is configured"),
            ),
            false,
        ),
        Err(why) => (
            Finding::new(
                Level::Fail,
                "board",
                format!(
                    "not a Raspberry Pi ({why}): the GPIO sensors ({}) can only be read on one",
                    gpio_sensors
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .fix("run edgeprio on the Pi; to try the pipeline here, use kind = \"sim\" sensors"),
            false,
        ),
    }
}

/// Whether the kernel says the system clock is synchronized: readings
/// taken while it is not are marked (README, "Clock jumps").
fn clock_sync(sync: ClockSync) -> Finding {
    match sync {
        ClockSync::Synced => Finding::new(
            Level::Ok,
            "clock",
            "the kernel says the system clock is synchronized",
        ),
        ClockSync::Unsynced => Finding::new(
            Level::Warn,
            "clock",
            "the kernel says the system clock is not synchronized: readings taken now are \
             marked \"clock_synced\": false (their timestamps may be far off)",
        )
        .fix(
            "run an NTP client that can reach a server (systemd-timesyncd, chrony); \
             `timedatectl` shows its state",
        ),
        ClockSync::Unknown => Finding::new(
            Level::Info,
            "clock",
            "the kernel does not say whether the system clock is synchronized (not Linux, or \
             adjtimex failed): readings are not marked",
        ),
    }
}

/// Whether the device file the GPIO library maps is usable.
fn gpio_access(path: Option<GpioPath>) -> Finding {
    let Some(path) = path else {
        return Finding::new(
            Level::Fail,
            "gpio",
            "rppal cannot identify this board's GPIO chip",
        )
        .fix("use Raspberry Pi OS, or the kernel driver (kind = \"iio\")");
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.device())
        .map(drop);
    gpio_finding(path, opened)
}

/// The `gpio` finding for `path`, given what opening its device did.
fn gpio_finding(path: GpioPath, opened: std::io::Result<()>) -> Finding {
    let dev = path.device();
    let mut f = match opened {
        Ok(()) => Finding::new(Level::Ok, "gpio", format!("{dev} is readable and writable")),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Finding::new(Level::Fail, "gpio", format!("no access to {dev} ({e})")).fix(
                "add the user to group gpio: sudo usermod -aG gpio $USER, then log in again \
                 (the systemd service already runs in that group)",
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Finding::new(Level::Fail, "gpio", format!("{dev} does not exist")).fix(
                "use Raspberry Pi OS (its kernel provides the gpiomem device), or the kernel \
                 driver (kind = \"iio\")",
            )
        }
        Err(e) => Finding::new(Level::Fail, "gpio", format!("cannot open {dev}: {e}")),
    };
    f.details.push(path.describe());
    f
}

/// Success rate over `reads` reads of any sensor.
fn check_reads(subject: &str, sensor: &mut dyn Sensor, reads: u32) -> Finding {
    let clock = SystemClock::new();
    let mut ok = 0;
    let mut last_err = None;
    for i in 0..reads {
        if i > 0 {
            clock.sleep(sensor.min_interval());
        }
        match sensor::checked(sensor.range(), sensor.read()) {
            Ok(_) => ok += 1,
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    rate_finding(subject, &sensor.describe(), ok, reads, "", last_err)
}

/// `what: ok/reads reads succeeded{note}; last: error`, at the level the
/// rate deserves.
fn rate_finding(
    subject: &str,
    what: &str,
    ok: u32,
    reads: u32,
    note: &str,
    last_err: Option<String>,
) -> Finding {
    let rate = format!("{ok}/{reads} reads succeeded{note}");
    match (ok, last_err) {
        (_, None) => Finding::new(Level::Ok, subject, format!("{what}: {rate}")),
        (0, Some(e)) => Finding::new(Level::Fail, subject, format!("{what}: {rate}; last: {e}")),
        (_, Some(e)) => Finding::new(Level::Warn, subject, format!("{what}: {rate}; last: {e}")),
    }
}

/// How many of `reads` test reads of `model` fit in [`READ_BUDGET`].
pub fn planned_reads(model: Model, reads: u32) -> u32 {
    let fit = READ_BUDGET.as_millis() / model.min_spacing().as_millis().max(1);
    reads.min(u32::try_from(fit).unwrap_or(u32::MAX)).max(1)
}

/// Test reads of a DHT22 or DHT11 with pulse timing: never answers, flaky,
/// or fine; then what its negative temperatures looked like.
pub fn check_dht<L: LinePin, D: DelayNs + Send>(
    subject: &str,
    pin: u8,
    dht: &mut Dht22<L, D>,
    reads: u32,
) -> Vec<Finding> {
    let model = dht.model();
    let what = format!("{} on BCM {pin}", model.kind());
    let reads = planned_reads(model, reads);
    let mut ok = 0;
    let mut timeouts = 0;
    let mut last_err = None;
    for _ in 0..reads {
        match sensor::checked(dht.range(), dht.read()) {
            Ok(_) => ok += 1,
            Err(e) => {
                if matches!(e, ReadError::Timeout(_)) {
                    timeouts += 1;
                }
                last_err = Some(e.to_string());
            }
        }
    }
    // Pulse widths from raw captures: each costs one rest, three give 120
    // data bits, plenty for a histogram.
    let pulses: Vec<Duration> = (0..reads.min(3))
        .flat_map(|_| dht.capture().high_pulses())
        .collect();
    let share = f64::from(ok) / f64::from(reads);
    let below = share < IIO_BELOW;
    let note = if below && ok > 0 {
        format!(
            " ({:.0} %, below {:.0} %)",
            share * 100.0,
            IIO_BELOW * 100.0
        )
    } else {
        String::new()
    };
    let mut f = rate_finding(subject, &what, ok, reads, &note, last_err);
    if ok == 0 && timeouts == reads {
        f.message = format!("{what} never answered ({reads} reads)");
        f = f.fix(format!(
            "check the wiring: VCC to 3.3 V, data to BCM {pin} (BCM numbering, not the physical \
             pin), ground to ground, and a 10 kOhm pull-up between data and 3.3 V"
        ));
    } else if below {
        f = f.fix(format!(
            "reads are too flaky for the user-space reader on this machine: use the kernel \
             driver, which times the frame in the kernel: add dtoverlay=dht11,gpiopin={pin} to \
             /boot/firmware/config.txt (/boot/config.txt before bookworm; the overlay reads \
             DHT22s too), reboot, and set kind = \"iio\" for this sensor"
        ));
    } else if ok < reads {
        f = f.fix(
            "a flaky read: shorten the cable, check the pull-up, move the agent off a busy core, \
             allow real-time reads (LimitRTPRIO=10, as the systemd unit sets), or use the kernel \
             driver (kind = \"iio\")",
        );
    }
    if !pulses.is_empty() {
        f.details = histogram(&pulses);
    }
    let mut findings = vec![f];
    if model == Model::Dht22 {
        findings.push(negative_finding(
            subject,
            dht.negative(),
            dht.seen_encoding(),
        ));
    }
    findings
}

/// What the test reads told about how negative temperatures arrive.
fn negative_finding(
    subject: &str,
    setting: Negative,
    seen: Option<crate::sensor::frame::Encoding>,
) -> Finding {
    let message = match (seen, setting) {
        (Some(e), Negative::Auto) => format!(
            "negative temperatures arrive as {} (seen in the test reads; negative = \"auto\" \
             decodes them, negative = \"{}\" would refuse the other encoding)",
            e.describe(),
            e.setting().name()
        ),
        (Some(e), forced) => format!(
            "negative temperatures arrive as {}, as negative = \"{}\" expects (seen in the test \
             reads)",
            e.describe(),
            forced.name()
        ),
        (None, Negative::Auto) => "negative temperatures: not seen yet (no test read was below \
             0 °C); negative = \"auto\" will decide from the first frame below 0 °C, \
             sign-magnitude or two's complement, and log which"
            .to_string(),
        (None, forced) => format!(
            "negative temperatures: not seen yet (no test read was below 0 °C); negative = \
             \"{}\" is configured, and a frame in the other encoding will fail naming the \
             setting that decodes it",
            forced.name()
        ),
    };
    Finding::new(Level::Info, subject, message)
}

/// Data-bit high pulses binned against the DHT22's targets: 26-28 us for a
/// "0", 70 us for a "1". Anything else is a bit the reader mis-timed.
pub fn histogram(pulses: &[Duration]) -> Vec<String> {
    const BINS: [(&str, u128, u128); 5] = [
        ("   < 20 us", 0, 20),
        ("20 - 35 us  (\"0\": 26-28)", 20, 35),
        ("35 - 55 us", 35, 55),
        ("55 - 85 us  (\"1\": 70)", 55, 85),
        ("  >= 85 us", 85, u128::MAX),
    ];
    let mut lines = vec![format!(
        "high pulse widths over {} data bits:",
        pulses.len()
    )];
    let max = BINS
        .iter()
        .map(|(_, lo, hi)| count(pulses, *lo, *hi))
        .max()
        .unwrap_or(0)
        .max(1);
    for (label, lo, hi) in BINS {
        let n = count(pulses, lo, hi);
        let bar = "#".repeat((n * 30).div_ceil(max));
        lines.push(format!("{label:<26} {n:>5} {bar}"));
    }
    lines
}

fn count(pulses: &[Duration], lo: u128, hi: u128) -> usize {
    pulses
        .iter()
        .filter(|p| (lo..hi).contains(&p.as_micros()))
        .count()
}

/// Checks the log file itself: `SQLite`'s integrity check (the quick one on
/// a large log), and the rows the agent left aside because they do not
/// decode or leave no seq for their sensor. Nothing when there is no log.
fn log_integrity(db: &Path) -> Vec<Finding> {
    const SUBJECT: &str = "integrity";
    if !db.is_file() {
        return Vec::new();
    }
    let check = match Store::open(db, Access::ReadOnly).and_then(|s| s.check_file()) {
        Ok(c) => c,
        // A corrupt file may fail the check itself: the error says what
        // to do.
        Err(e) => return vec![Finding::new(Level::Fail, SUBJECT, e.to_string())],
    };
    let took = humantime::format_duration(Duration::from_millis(
        u64::try_from(check.took.as_millis()).unwrap_or(u64::MAX),
    ));
    let d = db.display();
    if !check.problems.is_empty() {
        let mut f = Finding::new(
            Level::Fail,
            SUBJECT,
            format!(
                "the log {d} is corrupt: PRAGMA {}: {}",
                check.pragma,
                check.problems.join("; ")
            ),
        )
        .fix(format!(
            "stop the agent (systemctl stop edgeprio), run `sqlite3 {d} 'REINDEX'` (it \
             rebuilds damaged indexes) and `edgeprio doctor` again; if it still fails, move \
             {d} and {d}-wal away (the agent starts a new log) and save what can be read from \
             the moved copy with sqlite3's .recover or .dump"
        ));
        f.details = check.problems;
        return vec![f];
    }
    let mut out = vec![Finding::new(
        Level::Ok,
        SUBJECT,
        format!("PRAGMA {} of {d}: ok ({took})", check.pragma),
    )];
    if !check.skipped_rows.is_empty() {
        let ids: Vec<String> = check.skipped_rows.iter().map(ToString::to_string).collect();
        out.push(
            Finding::new(
                Level::Warn,
                SUBJECT,
                format!(
                    "{} row(s) of readings do not decode and are never published \
                     (published_ms = {}): id {}",
                    ids.len(),
                    crate::store::SKIPPED_MS,
                    ids.join(", ")
                ),
            )
            .fix(format!(
                "see the agent's WARN for each (column and value); fix the value and `sqlite3 \
                 {d} 'UPDATE readings SET published_ms = NULL WHERE id = ID'` to send it, or \
                 delete the row"
            )),
        );
    }
    for (sensor, id) in &check.exhausted {
        out.push(
            Finding::new(
                Level::Fail,
                SUBJECT,
                format!(
                    "sensor {sensor:?} is not read: readings row id {id} has seq {}, the \
                     largest the log can hold",
                    crate::store::MAX_SEQ
                ),
            )
            .fix(format!(
                "fix or delete row {id} (`sqlite3 {d} 'DELETE FROM readings WHERE id = {id}'`), \
                 then restart the agent"
            )),
        );
    }
    out
}

fn database(config: &Config) -> Finding {
    let db = &config.db;
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Finding::new(
            Level::Fail,
            "database",
            format!(
                "directory {} of {} does not exist",
                dir.display(),
                db.display()
            ),
        )
        .fix(format!(
            "mkdir -p {} (the systemd unit's StateDirectory does it)",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".edgeprio-doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"") {
        return Finding::new(
            Level::Fail,
            "database",
            format!("cannot write in {} ({e})", dir.display()),
        )
        .fix("give the agent's user write access to the directory (SQLite adds -wal/-shm files)");
    }
    let _ = std::fs::remove_file(&probe);
    if !db.exists() {
        return Finding::new(
            Level::Ok,
            "database",
            format!("{} will be created on the first run", db.display()),
        );
    }
    match Store::open(db, Access::ReadOnly).and_then(|s| {
        let depth = s.outbox_depth(&config.node)?;
        // A log the agent has not migrated yet has no identity to show.
        let identity = s.log_identity().ok();
        Ok((s.status(&config.node)?, depth, identity))
    }) {
        Ok((status, depth, identity)) => {
            let agent = status.map_or_else(
                || "no agent has run for this node yet".to_string(),
                |s| {
                    format!(
                        "agent {} (pid {}, heartbeat {} ms ago)",
                        if s.running { "running" } else { "stopped" },
                        s.pid,
                        crate::agent::now_ms() - s.heartbeat_ms
                    )
                },
            );
            let log = identity
                .as_ref()
                .map_or_else(String::new, |i| format!("; log {}", i.log));
            let message = format!("{} is writable; {agent}; outbox {depth}{log}", db.display());
            match identity
                .as_ref()
                .and_then(|i| i.recent_replacement(crate::agent::now_ms()))
            {
                Some(what) => replaced_while_running(db, &message, what),
                None => Finding::new(Level::Ok, "database", message),
            }
        }
        Err(e) => Finding::new(Level::Fail, "database", e.to_string()),
    }
}

/// Spills in the runtime directory that a start with this `db` does not
/// read (they were made for another log path): one warning each.
fn stray_spills(db: &Path) -> Vec<Finding> {
    let dir = crate::agent::runtime_dir();
    crate::agent::strays(&dir, &crate::agent::spill_path(&dir, db))
        .iter()
        .map(|s| Finding::new(Level::Warn, "spill", s.summary()).fix(s.fix()))
        .collect()
}

/// The agent found its log file deleted or replaced while it ran
/// (`Store::follow_path`) and moved to the log at the path.
fn replaced_while_running(db: &Path, message: &str, what: &str) -> Finding {
    Finding::new(
        Level::Warn,
        "database",
        format!("{message}; the log file was deleted or replaced while the agent ran: {what}"),
    )
    .fix(format!(
        "find what deleted or replaced {} (a cleanup job, a restore, a hand-run rm or mv) and \
         stop it, or stop the agent first (systemctl stop edgeprio) when you move or restore \
         the log; readings the old file had published stay with consumers under the old log \
         id, the rest were carried over (some may arrive twice, under both ids); this warning \
         goes after 7 days",
        db.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sample;
    use crate::sensor::dht22::NoRealtime;
    use crate::sensor::wire_sim::{WireConfig, WireSim};

    #[test]
    fn the_clock_finding_warns_only_when_the_kernel_says_unsynchronized() {
        assert_eq!(clock_sync(ClockSync::Synced).level, Level::Ok);
        let f = clock_sync(ClockSync::Unsynced);
        assert_eq!(f.level, Level::Warn);
        assert!(f.message.contains("\"clock_synced\": false"), "{f:?}");
        assert!(f.fix.is_some_and(|fix| fix.contains("NTP")));
        assert_eq!(clock_sync(ClockSync::Unknown).level, Level::Info);
    }

    fn dht(
        sim: &WireSim,
    ) -> Dht22<crate::sensor::wire_sim::SimLine, crate::sensor::wire_sim::SimDelay> {
        Dht22::new(
            "sim",
            sim.line(),
            sim.delay(),
            sim.clock(),
            Box::new(NoRealtime),
        )
    }

    #[test]
    fn a_healthy_sensor_has_pulses_on_target() {
        let sim = WireSim::new(WireConfig::linux(9), Sample::new(21.7, 55.5));
        let f = check_dht("sensor a", 4, &mut dht(&sim), 10).remove(0);
        assert_eq!(f.level, Level::Ok, "{}", f.render());
        assert!(f.message.contains("10/10"), "{}", f.render());
        // Three raw captures: 120 data bits, every one in the "0" or the "1" bin.
        let rows = &f.details;
        assert!(rows[0].contains("120 data bits"), "{rows:?}");
        // The count column follows the 26-character label.
        let n = |bin: &str| -> usize {
            let row = rows.iter().find(|r| r.contains(bin)).unwrap();
            row[26..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(n("\"0\"") + n("\"1\""), 120, "{}", f.render());
        assert!(n("\"0\"") > 20 && n("\"1\"") > 20, "{}", f.render());
    }

    #[test]
    fn a_sensor_that_never_answers_points_at_the_wiring() {
        let sim = WireSim::new(WireConfig::linux(9), Sample::new(21.7, 55.5));
        sim.set_faults(1.0, 0.0);
        let f = check_dht("sensor a", 17, &mut dht(&sim), 3).remove(0);
        assert_eq!(f.level, Level::Fail);
        assert!(f.message.contains("never answered"), "{}", f.render());
        let fix = f.fix.unwrap();
        assert!(fix.contains("pull-up") && fix.contains("BCM 17"), "{fix}");
    }

    #[test]
    fn a_flaky_sensor_reports_its_rate_and_pulses() {
        let mut cfg = WireConfig::linux(11);
        cfg.preempt_per_s = 150.0;
        let sim = WireSim::new(cfg, Sample::new(21.7, 55.5));
        let f = check_dht("sensor a", 4, &mut dht(&sim), 20).remove(0);
        assert_eq!(f.level, Level::Warn, "{}", f.render());
        assert!(f.message.contains("/20 reads succeeded"), "{}", f.render());
        assert!(f.fix.as_deref().unwrap().contains("flaky"));
        assert!(f.details.len() == 6, "{}", f.render());
    }

    /// The user-space read below 90 %: the kernel driver is recommended,
    /// with the overlay line for this pin and the kind to set.
    #[test]
    fn under_90_percent_recommends_the_kernel_driver() {
        let sim = WireSim::new(WireConfig::linux(21), Sample::new(21.7, 55.5));
        // A third of the start pulses go unanswered: well under 90 %.
        sim.set_faults(0.35, 0.0);
        let f = check_dht("sensor a", 22, &mut dht(&sim), 20).remove(0);
        assert_eq!(f.level, Level::Warn, "{}", f.render());
        assert!(f.message.contains("below 90 %"), "{}", f.render());
        let fix = f.fix.as_deref().unwrap();
        assert!(
            fix.contains("dtoverlay=dht11,gpiopin=22") && fix.contains("kind = \"iio\""),
            "{fix}"
        );
        // Each of the 20 reads was tried (20 x 2 s fits in the budget).
        let reads = sim.frames().len();
        assert!(reads >= 20, "{reads} start pulses");
    }

    /// Exactly 90 % is good enough: a flaky warning, no kernel-driver
    /// advice; one read fewer is not. (Seeded: the same 7 % of unanswered
    /// start pulses loses 2 reads of 20 with seed 9 and 3 with seed 1.)
    #[test]
    fn the_kernel_driver_is_advised_below_90_percent_only() {
        let run = |seed| {
            let sim = WireSim::new(WireConfig::linux(seed), Sample::new(21.7, 55.5));
            sim.set_faults(0.07, 0.0);
            check_dht("sensor a", 4, &mut dht(&sim), 20).remove(0)
        };
        let at = run(9);
        assert!(
            at.message.contains(": 18/20 reads succeeded;"),
            "{}",
            at.render()
        );
        assert_eq!(at.level, Level::Warn);
        assert!(!at.render().contains("dtoverlay"), "{}", at.render());
        assert!(at.fix.as_deref().unwrap().contains("flaky"));
        let below = run(1);
        assert!(
            below
                .message
                .contains("17/20 reads succeeded (85 %, below 90 %)"),
            "{}",
            below.render()
        );
        assert!(below.render().contains("dtoverlay=dht11,gpiopin=4"));
    }

    #[test]
    fn test_reads_fit_the_budget_and_respect_the_spacing() {
        assert_eq!(planned_reads(Model::Dht22, 20), 20);
        assert_eq!(planned_reads(Model::Dht22, 100), 30);
        assert_eq!(planned_reads(Model::Dht11, 100), 60);
        assert_eq!(planned_reads(Model::Dht22, 0), 1);
        // On the wire: 100 asked, 30 done, each 2 s after the last.
        let sim = WireSim::new(WireConfig::linux(4), Sample::new(21.7, 55.5));
        let clock = sim.clock();
        let start = clock.monotonic();
        let f = check_dht("sensor a", 4, &mut dht(&sim), 100).remove(0);
        assert!(f.message.contains("/30 reads"), "{}", f.render());
        let took = clock.monotonic().saturating_sub(start);
        // 30 reads and 3 captures, 2 s apart.
        assert!(took <= READ_BUDGET + Duration::from_secs(8), "{took:?}");
        for w in sim.frames().windows(2) {
            assert!(w[1].start.saturating_sub(w[0].start) >= Duration::from_secs(2));
        }
    }

    fn clone_dht(
        sim: &WireSim,
        negative: Negative,
    ) -> Dht22<crate::sensor::wire_sim::SimLine, crate::sensor::wire_sim::SimDelay> {
        dht(sim).with_negative(negative)
    }

    #[test]
    fn doctor_says_which_negative_encoding_the_test_reads_saw() {
        use crate::sensor::wire_sim::SimPart;
        let mut cfg = WireConfig::linux(5);
        cfg.part = SimPart::Dht22Clone;
        let sim = WireSim::new(cfg, Sample::new(-7.5, 80.0));
        let fs = check_dht("sensor out", 4, &mut clone_dht(&sim, Negative::Auto), 3);
        assert_eq!(fs.len(), 2);
        let neg = &fs[1];
        assert_eq!(neg.level, Level::Info);
        assert!(
            neg.message.contains("arrive as two's complement")
                && neg.message.contains("negative = \"twos-complement\""),
            "{}",
            neg.render()
        );
        // A datasheet part with the setting forced to match.
        let sim = WireSim::new(WireConfig::linux(5), Sample::new(-7.5, 80.0));
        let fs = check_dht(
            "sensor out",
            4,
            &mut clone_dht(&sim, Negative::SignMagnitude),
            3,
        );
        assert!(
            fs[1].message.contains("arrive as sign-magnitude")
                && fs[1]
                    .message
                    .contains("as negative = \"sign-magnitude\" expects"),
            "{}",
            fs[1].render()
        );
    }

    #[test]
    fn doctor_says_not_seen_yet_and_what_auto_will_do() {
        let sim = WireSim::new(WireConfig::linux(5), Sample::new(21.0, 50.0));
        let fs = check_dht("sensor in", 4, &mut dht(&sim), 2);
        assert!(
            fs[1].message.contains("not seen yet")
                && fs[1].message.contains("negative = \"auto\" will decide"),
            "{}",
            fs[1].render()
        );
        let fs = check_dht(
            "sensor in",
            4,
            &mut clone_dht(&sim, Negative::TwosComplement),
            2,
        );
        assert!(
            fs[1].message.contains("not seen yet")
                && fs[1]
                    .message
                    .contains("negative = \"twos-complement\" is configured"),
            "{}",
            fs[1].render()
        );
    }

    #[test]
    fn a_dht11_is_checked_with_its_own_timing_and_no_encoding_line() {
        use crate::sensor::wire_sim::SimPart;
        let mut cfg = WireConfig::linux(6);
        cfg.part = SimPart::Dht11;
        let sim = WireSim::new(cfg, Sample::new(24.0, 40.0));
        let mut s = dht(&sim).with_model(Model::Dht11);
        let fs = check_dht("sensor porch", 17, &mut s, 5);
        assert_eq!(fs.len(), 1, "a DHT11 has no encoding to choose");
        assert_eq!(fs[0].level, Level::Ok, "{}", fs[0].render());
        assert!(
            fs[0].message.contains("dht11 on BCM 17: 5/5"),
            "{}",
            fs[0].render()
        );
        // Its three captures used the 18 ms pulse too: all answered.
        assert!(
            sim.frames().iter().all(|f| f.answered),
            "{:?}",
            sim.frames()
        );
    }

    #[test]
    fn on_a_pi_5_the_gpio_finding_names_the_rp1_and_its_device() {
        let f = gpio_finding(GpioPath::Rp1, Ok(()));
        assert_eq!(f.level, Level::Ok);
        assert!(f.message.contains("/dev/gpiomem0"), "{}", f.render());
        assert!(
            f.details[0].contains("RP1") && f.details[0].contains("pinctrl-rp1"),
            "{}",
            f.render()
        );
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let f = gpio_finding(GpioPath::Rp1, Err(denied));
        assert_eq!(f.level, Level::Fail);
        assert!(
            f.message.contains("no access to /dev/gpiomem0"),
            "{}",
            f.render()
        );
        assert!(f.fix.as_deref().unwrap().contains("group gpio"));
        // Older Pis: the SoC's own registers through /dev/gpiomem.
        let f = gpio_finding(GpioPath::Bcm { soc: "BCM2711" }, Ok(()));
        assert!(f.message.contains("/dev/gpiomem "), "{}", f.render());
        assert!(f.details[0].contains("BCM2711"), "{}", f.render());
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let f = gpio_finding(GpioPath::Rp1, Err(missing));
        assert!(f.message.contains("does not exist"), "{}", f.render());
    }
}
