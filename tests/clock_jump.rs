//! Wall-clock jumps under the real agent (issue 12, item 7): `edgeprio run`
//! with libfaketime preloaded, its wall clock set by the test while it runs
//! (through `FAKETIME_TIMESTAMP_FILE`; the monotonic clock is left alone),
//! publishing to a real Mosquitto. A Pi has no real-time clock: it boots
//! with an old time and NTP sets it forward, years at once; an operator or a
//! bad time source can set it back. Neither may delete readings, hold up
//! retention, or make a reading that waited look fresh, and each jump is
//! logged.
//!
//! Needs libfaketime (Debian package `libfaketime`) and Mosquitto: a missing
//! one fails the tests (scripts/test installs them).

mod common;
mod mosquitto;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ChildGuard, Row, now_ms, open_ro, readings, send_signal, std_cmd, wait_for};
use mosquitto::{
    Agent, Broker, Sensor, Spec, Sub, agent_config, broker_row, seen_readings, wait_all_seen,
    wait_progress,
};

/// 2021-01-01T00:00:00Z: readings stamped before it were taken while the
/// faked clock said 2020.
const Y2021_MS: i64 = 1_609_459_200_000;

/// libfaketime's "y": 365 days.
const YEAR_MS: i64 = 365 * 86_400_000;

/// The wall clock of the agents a test starts, set by writing a file.
struct FakeClock {
    /// What libfaketime reads at every clock call (`FAKETIME_NO_CACHE`).
    file: PathBuf,
    /// The preloaded library.
    lib: String,
}

impl FakeClock {
    /// A clock that starts as `spec` says (libfaketime's `FAKETIME` syntax).
    fn new(dir: &Path, spec: &str) -> FakeClock {
        let lib = format!(
            "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
            std::env::consts::ARCH
        );
        assert!(
            Path::new(&lib).exists(),
            "{lib} is missing: install Debian's libfaketime (scripts/test does)"
        );
        let clock = FakeClock {
            file: dir.join("faketime.rc"),
            lib,
        };
        clock.set(spec);
        clock
    }

    /// Sets the clock: written aside and renamed, so the library never
    /// reads half a line.
    fn set(&self, spec: &str) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{spec}\n")).expect("write the faketime file");
        std::fs::rename(&tmp, &self.file).expect("replace the faketime file");
    }

    /// The environment that puts an agent on this clock: the wall clock
    /// only (the monotonic one is the machine's, as it is when NTP steps
    /// a real clock).
    fn env(&self) -> Vec<(&str, String)> {
        vec![
            ("LD_PRELOAD", self.lib.clone()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
            ("DONT_FAKE_MONOTONIC", "1".into()),
            // The agent starts no child, but a reset would restart "@" times.
            ("FAKETIME_DONT_RESET", "1".into()),
        ]
    }
}

fn start(files: &mosquitto::AgentFiles, clock: &FakeClock) -> Agent {
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Agent::start(files, &env)
}

/// The metrics endpoint's exposition.
fn scrape(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("an answer");
    out
}

/// Whether `stderr` has a WARN line saying the clock jumped `direction`.
fn logs_jump(stderr: &str, direction: &str) -> bool {
    let needle = format!("system clock jumped {direction} by");
    stderr
        .lines()
        .any(|l| l.contains("WARN") && l.contains(&needle))
}

/// Boots in 2020, publishes, then NTP sets the clock to today. Before the
/// fix the next retention pass was due at once (an hour after 2020) and
/// expired every published reading stamped 2020: seconds old, deleted as
/// six years old.
#[test]
fn ntp_setting_the_clock_forward_from_2020_deletes_no_published_reading() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let metrics = mosquitto::free_port();
    let files = agent_config(
        dir.path(),
        "fwd",
        "200ms",
        &[Sensor::Heater("lab")],
        &format!(
            "url = \"{}\"\nbatch_interval = \"1s\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            broker.url()
        ),
    );
    let clock = FakeClock::new(dir.path(), "@2020-01-01 00:00:00");
    let mut agent = start(&files, &clock);
    wait_progress(&mut agent, &files.db, &["lab"], 10, 10);
    let published: Vec<Row> = readings(&files.db)
        .into_iter()
        .filter(|r| r.published_ms.is_some())
        .collect();
    assert!(
        published.iter().all(|r| r.ts_ms < Y2021_MS),
        "the faked clock says 2020: {published:?}"
    );

    clock.set("+0");
    wait_for(
        Duration::from_secs(30),
        "five readings stamped today",
        || {
            agent.assert_running();
            let today = now_ms() - 86_400_000;
            readings(&files.db)
                .iter()
                .filter(|r| r.ts_ms > today)
                .count()
                >= 5
        },
    );
    let assert_kept = |when: &str| {
        let left: Vec<i64> = readings(&files.db).iter().map(|r| r.id).collect();
        let gone: Vec<&Row> = published.iter().filter(|r| !left.contains(&r.id)).collect();
        assert!(
            gone.is_empty(),
            "{} of {} published readings stamped 2020 (seconds old) were deleted {when}: \
             {gone:?}",
            gone.len(),
            published.len()
        );
    };
    assert_kept("after the clock was set forward");
    let jumps = scrape(metrics);
    assert!(
        jumps.contains("edgeprio_clock_jumps_total{node=\"fwd\",direction=\"forward\"} 1\n"),
        "{jumps}"
    );
    // A reload restarts the agent, and its first retention pass runs at
    // once: the same process, it still knows how young those rows are.
    let jumped_ms = now_ms();
    common::send_signal(agent.pid(), "HUP");
    wait_for(
        Duration::from_secs(30),
        "a retention pass after the reload",
        || {
            agent.assert_running();
            last_prune_ms(&files.db, "fwd").is_some_and(|t| t >= jumped_ms)
        },
    );
    assert_kept("by the first retention pass after a reload");
    let pruned: i64 = common::open_ro(&files.db)
        .query_row(
            "SELECT pruned_readings FROM agent_status WHERE node = 'fwd'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pruned, 0);
    let stderr = agent.stop();
    assert!(logs_jump(&stderr, "forward"), "{stderr}");
}

/// A real-time reading taken during a broker outage waits for the broker,
/// then the clock is set back three years before the broker returns: by
/// the new clock the reading was taken in the future. Before the fix its
/// age came out negative, counted as fresh, and it went out on the
/// real-time topic without `late` after waiting seconds past
/// `realtime_max_age`.
#[test]
fn a_reading_held_through_an_outage_and_a_clock_set_back_goes_out_late() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(
        dir.path(),
        &Spec {
            persistence: true,
            ..Spec::default()
        },
    );
    let files = agent_config(
        dir.path(),
        "back",
        "200ms",
        &[Sensor::Alternating("alt")],
        &format!(
            "url = \"{}\"\nbatch_interval = \"1s\"\nrealtime_max_age = \"4s\"\n",
            broker.url()
        ),
    );
    let base = files.base();
    let sub = Sub::start(&broker, &["edgeprio/#"], Some("edgeprio-test-clock"));
    let clock = FakeClock::new(dir.path(), "+0");
    let mut agent = start(&files, &clock);
    wait_progress(&mut agent, &files.db, &["alt"], 5, 5);
    broker.save();
    broker.kill();
    wait_for(
        Duration::from_secs(10),
        "the agent to lose the broker",
        || broker_row(&files.db, "back").is_some_and(|b| b.state == "disconnected"),
    );
    let down_ms = now_ms();
    wait_for(
        Duration::from_secs(10),
        "readings logged in the outage",
        || {
            agent.assert_running();
            readings(&files.db)
                .iter()
                .filter(|r| r.ts_ms > down_ms && r.route == "realtime")
                .count()
                >= 3
        },
    );
    clock.set("-3y");
    wait_for(
        Duration::from_secs(10),
        "readings stamped three years ago",
        || {
            agent.assert_running();
            readings(&files.db)
                .iter()
                .any(|r| r.ts_ms < down_ms - 2 * YEAR_MS)
        },
    );
    let held: Vec<Row> = readings(&files.db)
        .into_iter()
        .filter(|r| r.ts_ms > down_ms && r.route == "realtime")
        .collect();
    assert!(held.iter().all(|r| r.published_ms.is_none()), "{held:?}");
    // Held past realtime_max_age by any clock that runs forward.
    wait_for(Duration::from_secs(20), "the outage to last 6 s", || {
        agent.assert_running();
        now_ms() >= down_ms + 6_000
    });
    broker.restart();
    wait_all_seen(&sub, &base, &held, Duration::from_secs(30));

    let seen = seen_readings(&sub.messages(), &base);
    for row in &held {
        let key = (row.sensor.clone(), row.seq);
        for s in seen.iter().filter(|s| s.key() == key) {
            assert!(
                s.late() && s.topic == format!("{base}/batch"),
                "seq {} waited over 6 s (realtime_max_age 4 s) but arrived as fresh on {}: {}",
                row.seq,
                s.topic,
                s.reading
            );
        }
    }
    let stderr = agent.stop();
    assert!(logs_jump(&stderr, "backward"), "{stderr}");
}

/// The wall time of the node's last retention pass, once there is one.
fn last_prune_ms(db: &Path, node: &str) -> Option<i64> {
    if !db.exists() {
        return None;
    }
    open_ro(db)
        .query_row(
            "SELECT last_prune_ms FROM agent_status WHERE node = ?1",
            [node],
            |r| r.get(0),
        )
        .ok()
        .flatten()
}

/// The clock is set back a year while the agent runs, its retention
/// passes a second apart (`prune_every`). Before the fix the next pass was
/// due a second after the old time, that is a year later by the new clock:
/// no pass ran again (76 minutes without one in the issue, with the hourly
/// default).
#[test]
fn retention_passes_go_on_after_the_clock_is_set_back_a_year() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ret.db");
    let config = dir.path().join("ret.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"ret\"\ninterval = \"200ms\"\ndb = {:?}\n[store]\nprune_every = \"1s\"\n\
             [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    let clock = FakeClock::new(dir.path(), "+0");
    let err = dir.path().join("ret.err");
    let mut cmd = std_cmd(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(common::stderr_file(&err));
    for (key, value) in clock.env() {
        cmd.env(key, value);
    }
    let mut agent = ChildGuard::spawn(cmd);
    let stderr = || std::fs::read_to_string(&err).unwrap_or_default();
    let mut running = || {
        if let Some(status) = agent.child.try_wait().unwrap() {
            panic!("run exited ({status}): {}", stderr());
        }
    };
    wait_for(Duration::from_secs(30), "the first retention pass", || {
        running();
        last_prune_ms(&db, "ret").is_some()
    });
    clock.set("-1y");
    let jumped_ms = now_ms();
    wait_for(
        Duration::from_secs(20),
        "a retention pass after the jump",
        || {
            running();
            last_prune_ms(&db, "ret").is_some_and(|t| t < jumped_ms - YEAR_MS / 2)
        },
    );
    send_signal(agent.id(), "TERM");
    let status = agent
        .wait_timeout(Duration::from_secs(20))
        .expect("run stops within 20 s of SIGTERM");
    assert!(status.success(), "{status}: {}", stderr());
    assert!(logs_jump(&stderr(), "backward"), "{}", stderr());
}
