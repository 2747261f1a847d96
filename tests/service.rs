//! The agent under a service manager, black-box: the real binary with
//! `NOTIFY_SOCKET` pointing at a datagram socket this test reads, as
//! systemd's would be.
//!
//! - READY=1 once running, WATCHDOG=1 keep-alives at half `WATCHDOG_USEC`,
//!   STOPPING=1 on SIGTERM, then a clean exit;
//! - a sensor read that hangs (an IIO sysfs file replaced by a FIFO nobody
//!   writes: the read blocks in the kernel like a wedged driver) stops the
//!   keep-alives;
//! - SIGHUP with a valid file reloads it (RELOADING=1, READY=1 and no
//!   STOPPING=1, the new sensor appears, seq continues); with an invalid one the agent logs the
//!   error naming the key and carries on with the old configuration;
//! - SIGTERM during a reload stops the agent.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, readings, send_signal, std_cmd, stderr_file, wait_for};

/// A fake service manager: the socket the agent notifies.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every message received, with when it arrived.
    log: Vec<(Instant, String)>,
}

impl Manager {
    fn new(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Manager {
            socket,
            path,
            log: Vec::new(),
        }
    }

    /// Receives for up to `limit`, until a message has a line `line`.
    fn until(&mut self, line: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == line);
                self.log.push((Instant::now(), msg));
                if hit {
                    return true;
                }
            }
        }
        false
    }

    /// Receives everything for `span`.
    fn drain(&mut self, span: Duration) {
        self.until("\0never", span);
    }

    fn times_of(&self, line: &str) -> Vec<Instant> {
        self.log
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == line))
            .map(|(t, _)| *t)
            .collect()
    }

    fn transcript(&self) -> String {
        self.log
            .iter()
            .map(|(_, m)| m.trim_end().replace('\n', " | "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

const SIM: &str = "[[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n";

fn write_config(dir: &Path, sensors: &str) -> PathBuf {
    let path = dir.join("edgeprio.toml");
    std::fs::write(
        &path,
        format!("node = \"pi\"\ninterval = \"2s\"\ndb = \"log.db\"\n{sensors}"),
    )
    .expect("write config");
    path
}

fn agent(dir: &Path, config: &Path, manager: &Manager, watchdog: Duration) -> ChildGuard {
    let mut cmd = std_cmd(dir);
    cmd.arg("--config")
        .arg(config)
        .arg("run")
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(stderr_file(&dir.join("stderr.txt")));
    ChildGuard::spawn(cmd)
}

/// An agent on the `SIM` sensor (watchdog 2 s) that has sent READY=1.
fn ready_sim_agent() -> (tempfile::TempDir, Manager, PathBuf, ChildGuard) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut manager = Manager::new(dir.path());
    let config = write_config(dir.path(), SIM);
    let child = agent(dir.path(), &config, &manager, Duration::from_secs(2));
    assert!(
        manager.until("READY=1", Duration::from_secs(30)),
        "no READY=1:\n{}\n{}",
        manager.transcript(),
        stderr(dir.path())
    );
    (dir, manager, config, child)
}

fn stderr(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default()
}

#[test]
fn ready_keep_alives_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut manager = Manager::new(dir.path());
    let config = write_config(dir.path(), SIM);
    let mut child = agent(dir.path(), &config, &manager, Duration::from_secs(1));
    assert!(
        manager.until("READY=1", Duration::from_secs(30)),
        "no READY=1; got:\n{}\nstderr:\n{}",
        manager.transcript(),
        stderr(dir.path())
    );
    // The log is open when READY comes.
    assert!(dir.path().join("log.db").exists());
    manager.drain(Duration::from_secs(3));
    let pings = manager.times_of("WATCHDOG=1");
    assert!(
        (4..=9).contains(&pings.len()),
        "expected a keep-alive every 0.5 s for 3 s, got {}:\n{}",
        pings.len(),
        manager.transcript()
    );
    assert!(
        manager.log.iter().any(|(_, m)| m.contains("STATUS=cycle ")),
        "a STATUS line per cycle:\n{}",
        manager.transcript()
    );
    send_signal(child.id(), "TERM");
    assert!(
        manager.until("STOPPING=1", Duration::from_secs(10)),
        "no STOPPING=1:\n{}",
        manager.transcript()
    );
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("the agent stops after SIGTERM");
    assert!(status.success(), "{status}\n{}", stderr(dir.path()));
}

#[test]
fn a_hung_read_stops_the_keep_alives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = dir.path().join("iio:device0");
    std::fs::create_dir(&device).expect("device dir");
    std::fs::write(device.join("name"), "dht11@4\n").expect("name");
    let temperature = device.join("in_temp_input");
    std::fs::write(&temperature, "21500\n").expect("temperature");
    std::fs::write(device.join("in_humidityrelative_input"), "48200\n").expect("humidity");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sensor]]\nid = \"porch\"\nkind = \"iio\"\ndevice = {:?}\n",
            device.display().to_string()
        ),
    );
    let mut manager = Manager::new(dir.path());
    let mut child = agent(dir.path(), &config, &manager, Duration::from_secs(1));
    assert!(
        manager.until("READY=1", Duration::from_secs(30)),
        "no READY=1:\n{}\n{}",
        manager.transcript(),
        stderr(dir.path())
    );
    manager.drain(Duration::from_secs(2));
    assert!(!manager.times_of("WATCHDOG=1").is_empty(), "healthy: pings");

    // The next read opens a FIFO with no writer: it blocks in the kernel.
    std::fs::remove_file(&temperature).expect("remove");
    let made = Command::new("mkfifo")
        .arg(&temperature)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let hung_at = Instant::now();
    // Stall limit: two 2 s periods + 5 s; then 3 s of silence.
    manager.drain(Duration::from_secs(15));
    let pings = manager.times_of("WATCHDOG=1");
    let last = *pings.last().expect("pings");
    assert!(
        last.duration_since(hung_at) <= Duration::from_secs(11),
        "keep-alives went on {:?} after the read hung:\n{}",
        last.duration_since(hung_at),
        manager.transcript()
    );
    assert!(
        Instant::now().duration_since(last) >= Duration::from_secs(3),
        "keep-alives still coming"
    );
    assert!(
        stderr(dir.path()).contains("withholding the watchdog keep-alive"),
        "the stall is logged:\n{}",
        stderr(dir.path())
    );
    // Unblock the read (a writer appears), then the agent recovers.
    std::fs::write(&temperature, "22000\n").expect("feed the FIFO");
    assert!(
        manager.until("WATCHDOG=1", Duration::from_secs(10)),
        "keep-alives resume once the read returns:\n{}",
        manager.transcript()
    );
    send_signal(child.id(), "TERM");
    child.wait_timeout(Duration::from_secs(20));
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_otherwise() {
    let (dir, mut manager, config, mut child) = ready_sim_agent();
    let db = dir.path().join("log.db");
    wait_for(Duration::from_secs(20), "two lab readings", || {
        readings(&db).len() >= 2
    });

    // A bad file: logged with its key, the agent carries on.
    std::fs::write(
        &config,
        format!("node = \"pi\"\ninterval = \"soon\"\ndb = \"log.db\"\n{SIM}"),
    )
    .expect("write");
    send_signal(child.id(), "HUP");
    wait_for(Duration::from_secs(10), "the reload error", || {
        stderr(dir.path()).contains("keeping the configuration in use")
    });
    let err = stderr(dir.path());
    assert!(
        err.contains("interval") && err.contains("soon"),
        "names key and value:\n{err}"
    );
    let before = readings(&db).len();
    wait_for(Duration::from_secs(20), "readings go on", || {
        readings(&db).len() >= before + 2
    });
    assert!(child.child.try_wait().expect("try_wait").is_none(), "alive");

    // A good file with a second sensor: restart with it.
    write_config(
        dir.path(),
        &format!(
            "{SIM}[[sensor]]\nid = \"attic\"\nkind = \"sim\"\nprofile = \"random\"\nseed = 3\n"
        ),
    );
    manager.log.clear();
    send_signal(child.id(), "HUP");
    assert!(
        manager.until("RELOADING=1", Duration::from_secs(10)),
        "RELOADING=1:\n{}",
        manager.transcript()
    );
    assert!(
        manager.until("READY=1", Duration::from_secs(30)),
        "READY=1 again:\n{}\n{}",
        manager.transcript(),
        stderr(dir.path())
    );
    // STOPPING=1 during a reload would make systemd stop the service.
    assert!(
        manager.times_of("STOPPING=1").is_empty(),
        "no STOPPING=1 on a reload:\n{}",
        manager.transcript()
    );
    wait_for(Duration::from_secs(20), "an attic reading", || {
        readings(&db).iter().any(|r| r.sensor == "attic")
    });
    let lab: Vec<i64> = readings(&db)
        .iter()
        .filter(|r| r.sensor == "lab")
        .map(|r| r.seq)
        .collect();
    assert!(
        lab.windows(2).all(|w| w[1] == w[0] + 1),
        "lab's seq continues across the reload: {lab:?}"
    );
    send_signal(child.id(), "TERM");
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("stops after SIGTERM");
    assert!(status.success(), "{status}\n{}", stderr(dir.path()));
}

/// SIGTERM while a reload is still stopping the old agent: the service
/// stops, rather than the stop being lost in the restart.
#[test]
fn sigterm_during_a_reload_stops_the_agent() {
    let (dir, mut manager, _, mut child) = ready_sim_agent();
    send_signal(child.id(), "HUP");
    send_signal(child.id(), "TERM");
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no stop within 20 s:\n{}", stderr(dir.path())));
    assert!(status.success(), "{status}\n{}", stderr(dir.path()));
    assert!(
        manager.until("STOPPING=1", Duration::from_secs(1))
            || !manager.times_of("STOPPING=1").is_empty(),
        "STOPPING=1 on SIGTERM:\n{}",
        manager.transcript()
    );
}
