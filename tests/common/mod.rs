//! Helpers shared by the black-box tests: run the real `edgeprio` binary in a
//! clean environment, inspect its `SQLite` log with rusqlite, and manage child
//! processes with bounded waits.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

pub mod postgres;

/// The binary under test, as built by cargo for this integration test.
pub const BIN: &str = env!("CARGO_BIN_EXE_edgeprio");

/// The variable naming the program that runs `BIN` when this machine cannot
/// exec it itself: `scripts/cross-test` sets it to
/// `qemu-aarch64 -cpu cortex-a53` for the static aarch64 build (cargo's
/// runner only runs the test binaries; the binaries they spawn need it too).
/// Words are split on whitespace; unset or blank means `BIN` runs directly.
pub const RUNNER_VAR: &str = "EDGEPRIO_TEST_RUNNER";

/// The words that launch the binary under test: the runner's words (if
/// `EDGEPRIO_TEST_RUNNER` is set) followed by `BIN`. The first word is the
/// program to exec. With qemu-user the runner's process is the emulated
/// process (same pid, it gets the signals), so spawned children can be
/// signalled and waited for as if they were `BIN` itself.
pub fn bin_argv() -> Vec<String> {
    let mut argv: Vec<String> = std::env::var(RUNNER_VAR)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    argv.push(BIN.to_owned());
    argv
}

/// Upper bound for any single invocation of the binary.
pub const TIMEOUT: Duration = Duration::from_mins(1);

/// The built-in demo's sensors (assets/demo.toml), in config order.
pub const DEMO_SENSORS: [&str; 4] = ["lab", "greenhouse", "cellar", "attic"];

/// The CSV header of `query --format csv` (DESIGN.md, column names of the log).
pub const CSV_HEADER: &str = "id,node,sensor,seq,ts_ms,ts,temperature_c,humidity_pct,\
                              weight_temperature,weight_humidity,priority,route,published_ms,clock_synced";

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

/// A `std::process::Command` for the binary (through the runner, if any:
/// see [`bin_argv`]), run in `dir`, with every `EDGEPRIO_*` variable of the
/// test's own environment removed so that nothing but the arguments decides
/// what it does.
pub fn std_cmd(dir: &Path) -> std::process::Command {
    let argv = bin_argv();
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EDGEPRIO_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("RUST_BACKTRACE");
    cmd.env_remove("RUST_LIB_BACKTRACE");
    cmd.env("NO_COLOR", "1");
    // A readings spill (a test's full disk) goes to a directory of the test
    // run's, never to the machine's /run/edgeprio; a test that wants its
    // own sets RUNTIME_DIRECTORY again.
    cmd.env("RUNTIME_DIRECTORY", test_runtime_dir());
    // The kernel's answer to "is the clock synchronized?" differs between
    // machines (a container often says no): tests see a synchronized clock
    // unless they set the (debug-build) hook again (tests/clock_sync.rs).
    cmd.env("EDGEPRIO_TEST_CLOCK_SYNC", "synced");
    cmd
}

/// The runtime directory of the tests' agents (see [`std_cmd`]), in the
/// build's own temporary directory. Spill files are named after their
/// log's path, so tests running at once never share one.
fn test_runtime_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtime");
        std::fs::create_dir_all(&dir).expect("cannot make the tests' runtime directory");
        dir
    })
}

/// An `assert_cmd::Command` for the binary, run in `dir`, with a timeout.
pub fn edgeprio(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::from_std(std_cmd(dir));
    cmd.timeout(TIMEOUT);
    cmd
}

/// Lossy UTF-8 of a captured stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An error message must be one paragraph for people, never a crash dump.
pub fn assert_no_panic(stderr: &str) {
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(
            !stderr.contains(bad),
            "stderr contains {bad:?}, i.e. the binary crashed instead of reporting an error:\n{stderr}"
        );
    }
}

/// Runs `demo --db <db> --speed 1000 --count <count>` in `dir` and asserts it
/// exits 0. Returns the output.
pub fn demo(dir: &Path, db: &Path, count: u64) -> Output {
    let out = edgeprio(dir)
        .args(["demo", "--db"])
        .arg(db)
        .args(["--speed", "1000", "--count", &count.to_string()])
        .output()
        .expect("run edgeprio demo");
    assert!(
        out.status.success(),
        "demo --count {count} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_no_panic(&text(&out.stderr));
    out
}

/// One row of the `readings` table, every contract column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub node: String,
    pub sensor: String,
    pub seq: i64,
    pub ts_ms: i64,
    pub temperature_c: f64,
    pub humidity_pct: f64,
    pub weight_temperature: i64,
    pub weight_humidity: i64,
    pub priority: i64,
    pub route: String,
    pub published_ms: Option<i64>,
}

/// One row of `sensor_errors`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRow {
    pub id: i64,
    pub ts_ms: i64,
    pub node: String,
    pub sensor: String,
    pub kind: String,
    pub detail: String,
}

/// One row of `agent_status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub node: String,
    pub state: String,
    pub pid: i64,
    pub version: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    pub interval_ms: i64,
    pub outbox_depth: i64,
}

/// Opens the log read-only, as a user's `sqlite3` would.
pub fn open_ro(db: &Path) -> Connection {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Every row of `readings`, in id order.
pub fn readings(db: &Path) -> Vec<Row> {
    let conn = open_ro(db);
    let mut stmt = conn
        .prepare(
            "SELECT id, node, sensor, seq, ts_ms, temperature_c, humidity_pct,
                    weight_temperature, weight_humidity, priority, route, published_ms
             FROM readings ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            id: r.get(0)?,
            node: r.get(1)?,
            sensor: r.get(2)?,
            seq: r.get(3)?,
            ts_ms: r.get(4)?,
            temperature_c: r.get(5)?,
            humidity_pct: r.get(6)?,
            weight_temperature: r.get(7)?,
            weight_humidity: r.get(8)?,
            priority: r.get(9)?,
            route: r.get(10)?,
            published_ms: r.get(11)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Every row of `sensor_errors`, in id order.
pub fn sensor_errors(db: &Path) -> Vec<ErrorRow> {
    let conn = open_ro(db);
    let mut stmt = conn
        .prepare("SELECT id, ts_ms, node, sensor, kind, detail FROM sensor_errors ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(ErrorRow {
            id: r.get(0)?,
            ts_ms: r.get(1)?,
            node: r.get(2)?,
            sensor: r.get(3)?,
            kind: r.get(4)?,
            detail: r.get(5)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Every row of `agent_status`, by node.
pub fn agent_status(db: &Path) -> Vec<StatusRow> {
    let conn = open_ro(db);
    let mut stmt = conn
        .prepare(
            "SELECT node, state, pid, version, started_ms, heartbeat_ms, interval_ms, outbox_depth
             FROM agent_status ORDER BY node",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(StatusRow {
            node: r.get(0)?,
            state: r.get(1)?,
            pid: r.get(2)?,
            version: r.get(3)?,
            started_ms: r.get(4)?,
            heartbeat_ms: r.get(5)?,
            interval_ms: r.get(6)?,
            outbox_depth: r.get(7)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The seqs logged per sensor, in id order.
pub fn seqs_by_sensor(rows: &[Row]) -> BTreeMap<String, Vec<i64>> {
    let mut map: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in rows {
        map.entry(r.sensor.clone()).or_default().push(r.seq);
    }
    map
}

/// Unix time in ms, from the test's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .try_into()
        .unwrap()
}

/// Whether the tests run as root (then file modes do not stop writes).
pub fn running_as_root() -> bool {
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("run `id -u`");
    assert!(out.status.success(), "`id -u` failed");
    text(&out.stdout).trim() == "0"
}

/// Sends `signal` (e.g. "TERM") to `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// A child process that is killed and reaped when dropped, so a failing
/// test never leaves a binary running.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    /// Spawns `cmd`.
    pub fn spawn(mut cmd: std::process::Command) -> ChildGuard {
        let child = cmd.spawn().expect("spawn edgeprio");
        ChildGuard { child }
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the child to exit; `None` if it did not.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Takes stdout and forwards it line by line on a channel (read on a
    /// thread, so the test can wait with a deadline).
    pub fn stdout_lines(&mut self) -> Receiver<String> {
        let stdout: ChildStdout = self.child.stdout.take().expect("stdout was piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Receives lines until `done` says so or `limit` passes; panics with what
/// was received on timeout.
pub fn recv_until(
    rx: &Receiver<String>,
    limit: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while !done(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "timed out after {limit:?}; received so far:\n{}",
                    lines.join("\n")
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "the child closed stdout; received so far:\n{}",
                    lines.join("\n")
                )
            }
        }
    }
    lines
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `stdio` for a child's stderr: a file in the test's tempdir, so a failure
/// can show it and a chatty child never blocks on a full pipe.
pub fn stderr_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("create stderr file"))
}

/// `GET /metrics` from an agent's endpoint on 127.0.0.1:`port`: the whole
/// HTTP answer, headers included.
pub fn scrape_metrics(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("an answer");
    out
}

/// The agent `run` on a config, with its stderr in a file (`<name>.err` in
/// `dir`) and its spill in `runtime`: for the tests that watch what it says
/// and signal it.
pub struct RunAgent {
    pub child: ChildGuard,
    err: PathBuf,
}

impl RunAgent {
    /// Starts `edgeprio --config config run` in `dir`, at log level info.
    pub fn start(dir: &Path, config: &Path, runtime: &Path, name: &str) -> RunAgent {
        let err = dir.join(format!("{name}.err"));
        let mut cmd = std_cmd(dir);
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .env("RUNTIME_DIRECTORY", runtime)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr_file(&err));
        RunAgent {
            child: ChildGuard::spawn(cmd),
            err,
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until stderr has a line containing every one of `words`,
    /// failing at once if the agent exits.
    pub fn wait_line(&mut self, words: &[&str], limit: Duration) {
        let err = self.err.clone();
        let child = &mut self.child.child;
        wait_for(limit, &format!("a line with {words:?}"), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the agent exited ({status}) while waiting for {words:?}:\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&err)
                .unwrap_or_default()
                .lines()
                .any(|l| words.iter().all(|w| l.contains(w)))
        });
    }

    /// Sends `signal` and waits (at most 30 s) for the exit; its status
    /// and stderr, which must show no panic.
    pub fn signal_and_wait(mut self, signal: &str) -> (ExitStatus, String) {
        send_signal(self.child.id(), signal);
        let status = self
            .child
            .wait_timeout(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the agent exits within 30 s of SIG{signal}"));
        let stderr = self.stderr();
        assert_no_panic(&stderr);
        (status, stderr)
    }

    /// SIGTERM, as [`RunAgent::signal_and_wait`].
    pub fn stop(self) -> (ExitStatus, String) {
        self.signal_and_wait("TERM")
    }
}
