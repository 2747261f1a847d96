//! A full disk under a running agent, through the real binary on a real,
//! small file system (a tmpfs mounted by the test: root here and in CI).
//! The log fills up during `run`; readings that cannot be written must
//! survive SIGTERM (spilled to the runtime directory, committed at the next
//! start) and SIGHUP (carried into the reloaded agent), and what cannot be
//! kept is recorded as a count and seq range per sensor.

mod common;
mod mosquitto;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{RunAgent as Agent, open_ro, readings, send_signal, wait_for};
use mosquitto::{Broker, Spec, Sub, wait_all_seen};

/// A tmpfs of `size` mounted on `dir` for the life of the value.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed ({status}): these tests run as root"
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Takes every free byte with a filler file; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        // A partial block may be left: a few bytes more.
        while f.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// A test's files: the log on a small tmpfs, the runtime directory (the
/// spill) beside it on the ordinary disk unless a test says otherwise.
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    disk: Tmpfs,
    db: PathBuf,
    config: PathBuf,
    runtime: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let disk = Tmpfs::mount(&dir.join("disk"), "1m");
    let db = disk.dir.join("e.db");
    let config = dir.join("e.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"t\"\ninterval = \"50ms\"\ndb = \"{}\"\n[store]\nmin_free = \"0\"\n\
             [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n\
             [[sensor]]\nid = \"attic\"\nkind = \"sim\"\nprofile = \"random\"\nseed = 7\n\
             failure_rate = 0.0\n",
            db.display()
        ),
    )
    .unwrap();
    let runtime = dir.join("run");
    Setup {
        _tmp: tmp,
        dir,
        disk,
        db,
        config,
        runtime,
    }
}

/// The agent on the setup's config, its stderr in `<name>.err`.
fn start(s: &Setup, name: &str) -> Agent {
    Agent::start(&s.dir, &s.config, &s.runtime, name)
}

/// The seqs logged per sensor.
fn seqs(db: &Path) -> BTreeMap<String, Vec<i64>> {
    common::seqs_by_sensor(&readings(db))
}

/// Every sensor's seqs are exactly 0..n: nothing lost, nothing twice.
fn assert_gapless(db: &Path, context: &str) -> BTreeMap<String, Vec<i64>> {
    let seqs = seqs(db);
    assert_eq!(seqs.len(), 2, "{seqs:?}\n{context}");
    for (sensor, got) in &seqs {
        let want: Vec<i64> = (0..i64::try_from(got.len()).unwrap()).collect();
        if got != &want {
            let missing: Vec<i64> = want.iter().filter(|s| !got.contains(s)).copied().collect();
            panic!(
                "sensor {sensor}: {} readings logged, seqs missing: {} ({:?}..)\n{context}",
                got.len(),
                missing.len(),
                missing.first()
            );
        }
    }
    seqs
}

/// The number in "spilled N readings" of a message.
fn spilled_count(stderr: &str) -> Option<u64> {
    stderr.match_indices("spilled ").find_map(|(at, _)| {
        let mut words = stderr[at + "spilled ".len()..].split_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next() == Some("readings")).then_some(n)
    })
}

/// Fills the disk under a running agent and waits until commits fail and a
/// backlog has built up.
fn fill_until_held(s: &Setup, agent: &mut Agent) -> PathBuf {
    agent.wait_line(&["agent running"], Duration::from_secs(30));
    wait_for(Duration::from_secs(30), "readings in the log", || {
        readings(&s.db).len() >= 10
    });
    let filler = s.disk.fill();
    agent.wait_line(&["ERROR", "cannot commit"], Duration::from_secs(30));
    // Let the backlog grow for a few dozen cycles (they run on the agent's
    // own timer).
    std::thread::sleep(Duration::from_secs(1));
    filler
}

#[test]
fn sigterm_with_the_disk_full_spills_and_the_next_start_commits_it() {
    let s = setup();
    let mut agent = start(&s, "first");
    let filler = fill_until_held(&s, &mut agent);
    let before = readings(&s.db).len();
    let (status, stderr) = agent.stop();
    let spilled = spilled_count(&stderr);
    assert!(
        status.success() && spilled.is_some_and(|n| n >= 10),
        "SIGTERM with the disk full: {status}, spilled {spilled:?}:\n{stderr}"
    );
    assert!(!stderr.contains("lost"), "{stderr}");
    let spilled = spilled.unwrap();
    let spill_files: Vec<_> = std::fs::read_dir(&s.runtime).unwrap().collect();
    assert_eq!(spill_files.len(), 1, "one spill file in {:?}", s.runtime);

    // Restarted while the disk is still full (a read-only remount that
    // recovery needs a restart for looks the same): the agent runs and
    // holds what it has.
    let mut agent = start(&s, "second");
    agent.wait_line(&["read", "spill"], Duration::from_secs(30));
    agent.wait_line(&["ERROR", "cannot commit"], Duration::from_secs(30));
    std::fs::remove_file(&filler).unwrap();
    agent.wait_line(&["INFO", "accepts writes again"], Duration::from_secs(30));
    wait_for(Duration::from_secs(30), "the spill removed", || {
        std::fs::read_dir(&s.runtime).unwrap().next().is_none()
    });
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{status}: {stderr}");
    let seqs = assert_gapless(&s.db, &stderr);
    let logged: usize = seqs.values().map(Vec::len).sum();
    assert!(
        logged >= before + usize::try_from(spilled).unwrap(),
        "{logged} logged, {before} before the fill and {spilled} spilled"
    );
}

/// The same with a broker: a subscriber sees every seq of every sensor,
/// the spilled readings included, once the restarted agent wrote them.
#[test]
fn with_a_broker_every_spilled_reading_is_published_after_the_restart() {
    let s = setup();
    let broker = Broker::start(&s.dir, &Spec::default());
    let config = std::fs::read_to_string(&s.config).unwrap();
    let mqtt = format!(
        "[mqtt]\nurl = \"{}\"\nbatch_interval = \"200ms\"\n",
        broker.url()
    );
    std::fs::write(&s.config, config + &mqtt).unwrap();
    let sub = Sub::start(&broker, &["edgeprio/t/#"], None);
    let mut agent = start(&s, "first");
    let filler = fill_until_held(&s, &mut agent);
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(spilled_count(&stderr).is_some(), "{stderr}");
    std::fs::remove_file(&filler).unwrap();
    let mut agent = start(&s, "second");
    agent.wait_line(&["accepts writes again"], Duration::from_secs(30));
    wait_for(Duration::from_secs(30), "the spill removed", || {
        std::fs::read_dir(&s.runtime).unwrap().next().is_none()
    });
    let rows = readings(&s.db);
    wait_all_seen(&sub, "edgeprio/t", &rows, Duration::from_secs(30));
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert_gapless(&s.db, &stderr);
}

#[test]
fn sighup_with_the_disk_full_keeps_running_and_loses_nothing() {
    let s = setup();
    let mut agent = start(&s, "agent");
    let filler = fill_until_held(&s, &mut agent);
    send_signal(agent.child.id(), "HUP");
    agent.wait_line(&["SIGHUP", "restarting the agent"], Duration::from_secs(30));
    // The reloaded agent is running (a second "agent running" line) and
    // still holds the readings.
    wait_for(Duration::from_secs(30), "the reloaded agent", || {
        if let Some(status) = agent.child.child.try_wait().unwrap() {
            panic!(
                "SIGHUP with the disk full ended the agent ({status}):\n{}",
                agent.stderr()
            );
        }
        agent.stderr().matches("agent running").count() == 2
    });
    assert!(
        agent.stderr().contains("carried"),
        "the reload says it carries the readings:\n{}",
        agent.stderr()
    );
    std::fs::remove_file(&filler).unwrap();
    agent.wait_line(&["INFO", "accepts writes again"], Duration::from_secs(30));
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("lost"), "{stderr}");
    assert_gapless(&s.db, &stderr);
}

/// `kill -9` with the disk full: every cycle's held readings were already
/// appended to the spill, so the next start writes them all.
#[test]
fn a_crash_with_the_disk_full_loses_nothing() {
    let s = setup();
    let mut agent = start(&s, "first");
    let filler = fill_until_held(&s, &mut agent);
    agent.child.child.kill().unwrap();
    agent.child.child.wait().unwrap();
    let spilled = spilled_readings(&s.runtime);
    assert!(
        spilled.len() >= 10,
        "{} readings in the spill",
        spilled.len()
    );
    std::fs::remove_file(&filler).unwrap();
    let mut agent = start(&s, "second");
    agent.wait_line(&["read", "spill"], Duration::from_secs(30));
    agent.wait_line(&["accepts writes again"], Duration::from_secs(30));
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert_gapless(&s.db, &stderr);
    // Each one in the log as it was taken: same seq, same time.
    let logged: std::collections::BTreeSet<(String, i64, i64)> = readings(&s.db)
        .into_iter()
        .map(|r| (r.sensor, r.seq, r.ts_ms))
        .collect();
    let missing: Vec<_> = spilled.iter().filter(|r| !logged.contains(r)).collect();
    assert!(missing.is_empty(), "spilled but not logged: {missing:?}");
}

/// (sensor, seq, `ts_ms`) of every intact reading record in the spill
/// files of `dir` (`<checksum> <JSON>` lines). Only `*.spill`, as the
/// agent reads them: a `.spill.tmp` left by a kill during a rewrite was
/// never renamed into place.
fn spilled_readings(dir: &Path) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "spill") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            // A line torn by the kill is no record (the agent drops it too).
            let Some((_, json)) = line.split_once(' ') else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
                continue;
            };
            if v["k"] == "reading" {
                out.push((
                    v["sensor"].as_str().unwrap().to_owned(),
                    v["seq"].as_i64().unwrap(),
                    v["ts_ms"].as_i64().unwrap(),
                ));
            }
        }
    }
    out
}

/// The full disk is said once at ERROR, not once per cycle.
#[test]
fn a_full_disk_is_logged_once_not_every_cycle() {
    let s = setup();
    let mut agent = start(&s, "agent");
    let filler = fill_until_held(&s, &mut agent);
    std::fs::remove_file(&filler).unwrap();
    agent.wait_line(&["INFO", "accepts writes again"], Duration::from_secs(30));
    let (_, stderr) = agent.stop();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot commit"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("is full"), "{}", errors[0]);
    let back: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("accepts writes again"))
        .collect();
    assert_eq!(back.len(), 1, "{stderr}");
    assert!(back[0].contains("wrote"), "{}", back[0]);
}

/// A runtime directory too small for the backlog: the spill stays inside
/// its bound, and what did not fit is recorded per sensor with its seq
/// range, in the messages and, at the next start, in the log.
#[test]
fn what_the_spill_cannot_hold_is_recorded_as_lost_with_its_seq_range() {
    let s = setup();
    let run = Tmpfs::mount(&s.runtime, "16k");
    let mut agent = start(&s, "first");
    let filler = fill_until_held(&s, &mut agent);
    // Enough cycles for more than the spill may take.
    std::thread::sleep(Duration::from_secs(2));
    let (status, stderr) = agent.stop();
    assert!(!status.success(), "losing readings is a failure: {stderr}");
    let lost: Vec<&str> = stderr.lines().filter(|l| l.contains("lost ")).collect();
    assert!(!lost.is_empty(), "{stderr}");
    assert!(
        lost.iter()
            .any(|l| l.contains("of sensor") && l.contains("seq ")),
        "{lost:?}"
    );
    let spill: u64 = std::fs::read_dir(&run.dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(spill > 0 && spill <= 16 * 1024, "spill of {spill} bytes");

    std::fs::remove_file(&filler).unwrap();
    let mut agent = start(&s, "second");
    agent.wait_line(&["INFO", "accepts writes again"], Duration::from_secs(30));
    wait_for(Duration::from_secs(30), "the spill removed", || {
        std::fs::read_dir(&run.dir).unwrap().next().is_none()
    });
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{status}: {stderr}");
    // The log's readings and its recorded losses cover every seq once.
    let conn = open_ro(&s.db);
    let mut stmt = conn
        .prepare("SELECT sensor, first_seq, last_seq, count FROM lost_readings")
        .unwrap();
    let losses: Vec<(String, i64, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!losses.is_empty(), "no loss recorded in the log");
    let mut seqs = seqs(&s.db);
    for (sensor, first, last, count) in &losses {
        assert_eq!(last - first + 1, *count);
        seqs.get_mut(sensor).unwrap().extend(*first..=*last);
    }
    for (sensor, got) in &mut seqs {
        got.sort_unstable();
        let want: Vec<i64> = (0..i64::try_from(got.len()).unwrap()).collect();
        assert_eq!(
            got, &want,
            "sensor {sensor}: logged + lost, losses {losses:?}"
        );
    }
}
