//! The MQTT test harness: a real Mosquitto started per test on a free port
//! (and stopped by a guard, even when the test fails), `mosquitto_sub`
//! subscribers that record every message, the agent run as the real binary
//! against a written config, and the checks that tie what a subscriber saw
//! to the `SQLite` log (DESIGN.md, "MQTT contract" and "Data flow").
//!
//! A test file includes it with `mod common; mod mosquitto;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::common::{self, ChildGuard, Row};

/// What a missing broker tells the person running the tests.
pub const INSTALL_HINT: &str =
    "scripts/test installs it (apt-get install mosquitto mosquitto-clients)";

/// The keys of a reading on the wire (DESIGN.md, "MQTT contract"); a
/// reading sent late on the batch topic has `"late": true` as well.
pub const READING_KEYS: [&str; 11] = [
    "node",
    "sensor",
    "log",
    "seq",
    "ts_ms",
    "ts",
    "temperature_c",
    "humidity_pct",
    "weight",
    "priority",
    "route",
];

/// Finds a Mosquitto program: on `PATH`, or in the sbin directories Debian
/// installs the broker into (not on a normal user's `PATH`). A missing tool
/// fails the test: these tests are never skipped silently.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` is not installed (looked on PATH and in the sbin directories): {INSTALL_HINT}")
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A TLS listener's files (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server certificate, and client certificates.
    pub ca: PathBuf,
    /// The broker's certificate.
    pub cert: PathBuf,
    /// The broker's private key.
    pub key: PathBuf,
    /// Whether clients must present a certificate signed by `ca`.
    pub require_certificate: bool,
}

/// How a test wants its broker.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// `(user, password)`: anonymous clients are refused and this user is
    /// the only one (the tests' own clients log in as it too).
    pub user: Option<(String, String)>,
    /// A second listener with TLS, for the agent.
    pub tls: Option<TlsFiles>,
    /// Keep sessions and retained messages on disk, so that a persistent
    /// subscriber's queue survives a broker restart.
    pub persistence: bool,
    /// Mosquitto's `max_queued_messages` (1000 by default): past it the
    /// broker drops `QoS` 1 messages queued for a disconnected persistent
    /// client. A test whose consumer is down while more than that is
    /// published raises it.
    pub max_queued_messages: Option<u32>,
    /// Mosquitto's `max_inflight_messages` (20 by default; 0 is no limit):
    /// `QoS` 1 messages sent to one client and not acknowledged.
    pub max_inflight_messages: Option<u32>,
}

/// The config lines after the listeners: authentication and persistence.
fn settings(dir: &Path, spec: &Spec) -> String {
    // `user root` keeps a broker started by root from dropping to the
    // `mosquitto` user, which could not read the test's tempdir; for any
    // other user the setting has no effect.
    let mut conf = String::from("user root\nlog_dest stderr\n");
    if let Some((user, password)) = &spec.user {
        let file = dir.join("passwd");
        let status = Command::new(tool("mosquitto_passwd"))
            .arg("-b")
            .arg("-c")
            .arg(&file)
            .args([user, password])
            .status()
            .expect("run mosquitto_passwd");
        assert!(status.success(), "mosquitto_passwd failed: {status}");
        let _ = write!(
            conf,
            "allow_anonymous false\npassword_file {}\n",
            file.display()
        );
    } else {
        conf.push_str("allow_anonymous true\n");
    }
    if spec.persistence {
        let _ = write!(
            conf,
            "persistence true\npersistence_location {}/\nautosave_interval 0\n",
            dir.display()
        );
    } else {
        conf.push_str("persistence false\n");
    }
    if let Some(n) = spec.max_queued_messages {
        let _ = writeln!(conf, "max_queued_messages {n}");
    }
    if let Some(n) = spec.max_inflight_messages {
        let _ = writeln!(conf, "max_inflight_messages {n}");
    }
    conf
}

/// A Mosquitto process in the foreground, killed and reaped on drop.
pub struct Broker {
    dir: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    /// The plain listener.
    pub port: u16,
    /// The TLS listener, if asked for.
    pub tls_port: Option<u16>,
    user: Option<(String, String)>,
    child: Option<Child>,
}

impl Broker {
    /// Writes a config into `dir` (which must outlive the broker) and
    /// starts Mosquitto on free ports; returns once it accepts connections.
    pub fn start(dir: &Path, spec: &Spec) -> Broker {
        // Fail with the install hint before writing anything.
        tool("mosquitto");
        let dir = dir.join(format!("mosquitto-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("create the broker's directory");
        let settings = settings(&dir, spec);
        // A port found free can be taken by another process before the
        // broker binds it: then try other ports.
        for _ in 0..3 {
            let port = free_port();
            let tls_port = spec.tls.as_ref().map(|_| free_port());
            let mut conf = format!("{settings}listener {port} 127.0.0.1\n");
            if let (Some(tls), Some(tls_port)) = (&spec.tls, tls_port) {
                let _ = write!(
                    conf,
                    "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
                     require_certificate {}\n",
                    tls.ca.display(),
                    tls.cert.display(),
                    tls.key.display(),
                    tls.require_certificate
                );
            }
            let conf_path = dir.join("mosquitto.conf");
            std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
            let mut broker = Broker {
                log: dir.join("mosquitto.log"),
                dir: dir.clone(),
                conf: conf_path,
                port,
                tls_port,
                user: spec.user.clone(),
                child: None,
            };
            match broker.spawn() {
                Ok(()) => return broker,
                Err(log) if log.contains("Address already in use") => {}
                Err(log) => panic!("mosquitto exited at start; its log:\n{log}"),
            }
        }
        panic!(
            "mosquitto found no free port in 3 attempts; its log:\n{}",
            std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
        )
    }

    /// Starts the process and waits until every listener accepts
    /// connections; `Err(log)` if it exited instead.
    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the broker is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the broker log");
        let err = log.try_clone().expect("clone the broker log handle");
        let mut child = Command::new(tool("mosquitto"))
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in std::iter::once(self.port).chain(self.tls_port) {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(_)) = child.try_wait() {
                    return Err(self.log());
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mosquitto did not listen on {addr} within 10 s; its log:\n{}",
                        self.log()
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:<tls port>`.
    pub fn tls_url(&self) -> String {
        format!(
            "mqtts://127.0.0.1:{}",
            self.tls_port.expect("the broker has a TLS listener")
        )
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes the in-memory database (sessions, queued and retained
    /// messages) to disk, as Mosquitto does on SIGUSR1, and waits until it is
    /// there. Needs `persistence`.
    pub fn save(&self) {
        let db = self.dir.join("mosquitto.db");
        let _ = std::fs::remove_file(&db);
        let pid = self.child.as_ref().expect("the broker is running").id();
        common::send_signal(pid, "USR1");
        // Mosquitto writes a temporary file and renames it: once the name
        // exists, the snapshot is complete.
        common::wait_for(Duration::from_secs(10), "mosquitto's SIGUSR1 save", || {
            db.exists()
        });
    }

    /// Freezes the broker (SIGSTOP): connections stay open and the kernel
    /// still takes the clients' bytes, but nothing is acknowledged.
    pub fn freeze(&self) {
        common::send_signal(self.child.as_ref().expect("running").id(), "STOP");
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw(&self) {
        common::send_signal(self.child.as_ref().expect("running").id(), "CONT");
    }

    /// Kills the broker with SIGKILL (a crash or power loss: no goodbye to
    /// anyone) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again with the same config and ports.
    pub fn restart(&mut self) {
        if let Err(log) = self.spawn() {
            panic!("mosquitto did not start again; its log:\n{log}");
        }
    }

    /// `-h -p` (and `-u -P`) for the command-line clients.
    fn client_args(&self, cmd: &mut Command) {
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some((user, password)) = &self.user {
            cmd.args(["-u", user, "-P", password]);
        }
    }

    /// Publishes one message with `mosquitto_pub` (`QoS` 1).
    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        let mut cmd = Command::new(tool("mosquitto_pub"));
        self.client_args(&mut cmd);
        cmd.args(["-q", "1", "-t", topic, "-m", payload]);
        if retain {
            cmd.arg("-r");
        }
        let out = cmd.output().expect("run mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub -t {topic} failed: {}",
            common::text(&out.stderr)
        );
    }

    /// The message retained on `topic` right now, if any, as a new
    /// subscriber gets it.
    pub fn retained(&self, topic: &str) -> Option<String> {
        let mut cmd = Command::new(tool("mosquitto_sub"));
        self.client_args(&mut cmd);
        // Without a retained message the client waits out -W and exits 27.
        cmd.args([
            "-q",
            "1",
            "-t",
            topic,
            "--retained-only",
            "-C",
            "1",
            "-W",
            "2",
            "-F",
            "%p",
        ]);
        let out = cmd.output().expect("run mosquitto_sub");
        out.status
            .success()
            .then(|| common::text(&out.stdout).trim_end_matches('\n').to_owned())
    }

    /// Waits until `topic` retains `want`; panics with what it held.
    pub fn wait_retained(&self, topic: &str, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.retained(topic);
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic} retains {got:?} after {limit:?}, want {want:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The topic a subscriber's readiness probe goes to (left out of its
/// messages).
const PROBE: &str = "edgeprio-test/probe";

/// One message a subscriber received.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload as text.
    pub payload: String,
    /// The retain flag as delivered: set for a retained message sent on
    /// subscribing, clear for live messages.
    pub retain: bool,
    /// When the test received it (Unix ms).
    pub at_ms: i64,
}

/// A `mosquitto_sub` process recording every message it receives; killed
/// on drop.
pub struct Sub {
    child: Child,
    msgs: Arc<Mutex<Vec<Msg>>>,
    probes: Arc<AtomicUsize>,
    err: PathBuf,
}

impl Sub {
    /// Subscribes to `filters` at `QoS` 1 and returns once the subscription is
    /// in place. With `session`, the client uses that id and a persistent
    /// session: the broker queues its messages while it is away (and across
    /// a broker restart with `persistence`), and `mosquitto_sub` reconnects
    /// by itself when the connection drops.
    pub fn start(broker: &Broker, filters: &[&str], session: Option<&str>) -> Sub {
        let mut cmd = Command::new(tool("mosquitto_sub"));
        broker.client_args(&mut cmd);
        cmd.args(["-q", "1", "-F", "%j", "-t", PROBE]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        if let Some(id) = session {
            cmd.args(["-c", "-i", id]);
        }
        let err = broker.dir.join(format!("sub-{}.err", free_port()));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(common::stderr_file(&err));
        let mut child = cmd.spawn().expect("spawn mosquitto_sub");
        let stdout = child.stdout.take().expect("stdout is piped");
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let probes = Arc::new(AtomicUsize::new(0));
        let (m, p) = (msgs.clone(), probes.clone());
        thread::spawn(move || {
            // mosquitto_sub flushes stdout after each message.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(msg) = parse_sub_line(&line) else {
                    continue;
                };
                if msg.topic == PROBE {
                    p.fetch_add(1, Ordering::SeqCst);
                } else {
                    m.lock().unwrap_or_else(PoisonError::into_inner).push(msg);
                }
            }
        });
        let mut sub = Sub {
            child,
            msgs,
            probes,
            err,
        };
        // The subscription is in place once a probe published after it
        // comes back; probes sent before it are simply lost.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sub.probes.load(Ordering::SeqCst) == 0 {
            if let Ok(Some(status)) = sub.child.try_wait() {
                panic!("mosquitto_sub exited ({status}): {}", sub.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub did not receive its probe within 10 s: {}\nbroker log:\n{}",
                sub.stderr(),
                broker.log()
            );
            broker.publish(PROBE, "probe", false);
            thread::sleep(Duration::from_millis(50));
        }
        sub
    }

    /// `mosquitto_sub`'s stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Everything received so far, in arrival order.
    pub fn messages(&self) -> Vec<Msg> {
        self.msgs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `done` holds for the messages received so far; panics
    /// with a summary of them after `limit`.
    pub fn wait(&self, limit: Duration, what: &str, mut done: impl FnMut(&[Msg]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let msgs = self.messages();
            if done(&msgs) {
                return;
            }
            if Instant::now() >= deadline {
                let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
                for m in &msgs {
                    *topics.entry(m.topic.as_str()).or_default() += 1;
                }
                panic!(
                    "timed out after {limit:?} waiting for {what}; messages per topic: \
                     {topics:?}\nmosquitto_sub stderr: {}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `-F %j` line: `{"tst":..,"topic":..,"retain":0|1,"payload":".."}`;
/// an empty message (which deletes a retained one) has `"payload":null`.
fn parse_sub_line(line: &str) -> Option<Msg> {
    if !line.starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let payload = match &v["payload"] {
        Value::Null => "",
        p => p.as_str()?,
    };
    Some(Msg {
        topic: v["topic"].as_str()?.to_owned(),
        payload: payload.to_owned(),
        retain: v["retain"].as_i64()? != 0,
        at_ms: common::now_ms(),
    })
}

/// A simulated sensor of an agent config.
#[derive(Debug, Clone, Copy)]
pub enum Sensor<'a> {
    /// The paper's heater replay: only seq % 26 == 8 is real-time.
    Heater(&'a str),
    /// A random walk with this seed and no read failures.
    Random(&'a str, u64),
    /// A trace that alternates 20 °C and 22 °C: every reading after the
    /// first changes by about 10 %, so every one but seq 0 is real-time.
    Alternating(&'a str),
}

/// An agent's config file and the log it writes.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    /// The TOML file.
    pub config: PathBuf,
    /// The `SQLite` log.
    pub db: PathBuf,
    /// The node name.
    pub node: String,
}

impl AgentFiles {
    /// `<prefix>/<node>` with the default prefix: the base of the node's
    /// topics.
    pub fn base(&self) -> String {
        format!("edgeprio/{}", self.node)
    }
}

/// Writes `<dir>/<node>.toml`: the node, its interval, its log
/// `<dir>/<node>.db`, the sensors, and `[mqtt]` with the lines given.
pub fn agent_config(
    dir: &Path,
    node: &str,
    interval: &str,
    sensors: &[Sensor<'_>],
    mqtt: &str,
) -> AgentFiles {
    let db = dir.join(format!("{node}.db"));
    let mut text = format!(
        "node = \"{node}\"\ninterval = \"{interval}\"\ndb = {:?}\n",
        db.display().to_string()
    );
    for s in sensors {
        match s {
            Sensor::Heater(id) => {
                let _ = write!(
                    text,
                    "[[sensor]]\nid = \"{id}\"\nkind = \"sim\"\nprofile = \"heater\"\n"
                );
            }
            Sensor::Random(id, seed) => {
                let _ = write!(
                    text,
                    "[[sensor]]\nid = \"{id}\"\nkind = \"sim\"\nprofile = \"random\"\n\
                     seed = {seed}\nfailure_rate = 0.0\n"
                );
            }
            Sensor::Alternating(id) => {
                let trace = dir.join("alternating.csv");
                std::fs::write(&trace, "temperature_c,humidity_pct\n20.0,50.0\n22.0,50.0\n")
                    .expect("write the alternating trace");
                let _ = write!(
                    text,
                    "[[sensor]]\nid = \"{id}\"\nkind = \"sim\"\nprofile = \"trace\"\n\
                     trace = {:?}\n",
                    trace.display().to_string()
                );
            }
        }
    }
    let _ = write!(text, "[mqtt]\n{mqtt}\n");
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(&config, text).expect("write the agent config");
    AgentFiles {
        config,
        db,
        node: node.to_owned(),
    }
}

/// `edgeprio --config FILE run`, its stderr in a file; killed on drop.
pub struct Agent {
    child: ChildGuard,
    err: PathBuf,
}

impl Agent {
    /// Starts the agent on `files` with the extra environment `env` (set
    /// after the helper cleared every `EDGEPRIO_*` variable).
    pub fn start(files: &AgentFiles, env: &[(&str, &str)]) -> Agent {
        let dir = files.config.parent().expect("the config is in a directory");
        let err = dir.join(format!("{}-{}.err", files.node, free_port()));
        let mut cmd = common::std_cmd(dir);
        cmd.arg("--config")
            .arg(&files.config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(common::stderr_file(&err));
        for (key, value) in env {
            cmd.env(key, value);
        }
        Agent {
            child: ChildGuard::spawn(cmd),
            err,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Panics (with its stderr) if the agent has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.child.try_wait() {
            panic!("the agent exited ({status}):\n{}", self.stderr());
        }
    }

    /// SIGTERM, then waits for the exit: it must be 0, within 30 s, without
    /// a panic. Returns stderr.
    pub fn stop(mut self) -> String {
        common::send_signal(self.pid(), "TERM");
        let status = self.child.wait_timeout(Duration::from_secs(30));
        let stderr = self.stderr();
        let Some(status) = status else {
            panic!("the agent did not stop within 30 s of SIGTERM:\n{stderr}")
        };
        assert_eq!(
            status.code(),
            Some(0),
            "exit {status} after SIGTERM:\n{stderr}"
        );
        common::assert_no_panic(&stderr);
        stderr
    }

    /// SIGKILL (a crash or power loss) and reap.
    pub fn crash(&mut self) -> ExitStatus {
        common::send_signal(self.pid(), "KILL");
        self.child
            .wait_timeout(Duration::from_secs(10))
            .expect("SIGKILL ends the agent")
    }
}

/// The publisher's columns of `agent_status` (schema v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRow {
    /// `disabled`, `connecting`, `connected` or `disconnected`.
    pub state: String,
    /// Why the last connection failed or ended.
    pub error: Option<String>,
    /// When `state` was entered.
    pub since_ms: Option<i64>,
    /// When the last acknowledgement was recorded.
    pub last_ack_ms: Option<i64>,
    /// Readings acknowledged on the real-time topic.
    pub published_realtime: i64,
    /// Readings acknowledged on the batch topic (late ones included).
    pub published_batch: i64,
    /// Real-time readings that went out late, on the batch topic.
    pub published_late: i64,
    /// Readings waiting for an acknowledgement.
    pub outbox_depth: i64,
}

fn open_if_there(db: &Path) -> Option<Connection> {
    if !db.exists() {
        return None;
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    Some(conn)
}

/// The node's broker status, once the agent has written its status row.
pub fn broker_row(db: &Path, node: &str) -> Option<BrokerRow> {
    open_if_there(db)?
        .query_row(
            "SELECT broker_state, broker_error, broker_since_ms, last_ack_ms,
                    published_realtime, published_batch, published_late, outbox_depth
             FROM agent_status WHERE node = ?1",
            [node],
            |r| {
                Ok(BrokerRow {
                    state: r.get(0)?,
                    error: r.get(1)?,
                    since_ms: r.get(2)?,
                    last_ack_ms: r.get(3)?,
                    published_realtime: r.get(4)?,
                    published_batch: r.get(5)?,
                    published_late: r.get(6)?,
                    outbox_depth: r.get(7)?,
                })
            },
        )
        .ok()
}

/// Per sensor: (rows logged, rows acknowledged); empty until the log
/// exists.
pub fn progress(db: &Path) -> BTreeMap<String, (i64, i64)> {
    let Some(conn) = open_if_there(db) else {
        return BTreeMap::new();
    };
    let Ok(mut stmt) =
        conn.prepare("SELECT sensor, count(*), count(published_ms) FROM readings GROUP BY sensor")
    else {
        return BTreeMap::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .and_then(Iterator::collect)
        .unwrap_or_default()
}

/// Waits until every one of `sensors` has logged at least `logged` rows and
/// the node has `acked` acknowledged rows in all, checking that the agent
/// still runs.
pub fn wait_progress(agent: &mut Agent, db: &Path, sensors: &[&str], logged: i64, acked: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        agent.assert_running();
        let p = progress(db);
        let enough = sensors
            .iter()
            .all(|s| p.get(*s).is_some_and(|(n, _)| *n >= logged));
        if enough && p.values().map(|(_, a)| a).sum::<i64>() >= acked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s the log holds {p:?} (logged, acknowledged) per sensor; want {logged} \
             logged per sensor and {acked} acknowledged; agent stderr:\n{}",
            agent.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One reading as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The topic it came on.
    pub topic: String,
    /// The reading's JSON object.
    pub reading: Value,
    /// When the test received it (Unix ms).
    pub at_ms: i64,
}

impl Seen {
    /// `(sensor, seq)`: with the node and the log (one per test run here),
    /// the deduplication key.
    pub fn key(&self) -> (String, i64) {
        (
            self.reading["sensor"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            self.reading["seq"].as_i64().unwrap_or(-1),
        )
    }

    /// Whether it carries `"late": true`.
    pub fn late(&self) -> bool {
        self.reading.get("late") == Some(&Value::Bool(true))
    }
}

/// The readings under `base` (`<prefix>/<node>`): one per real-time
/// message, every element of each batch message. Panics on a payload that
/// is not the contract's shape for its topic.
pub fn seen_readings(msgs: &[Msg], base: &str) -> Vec<Seen> {
    let (realtime, batch) = (format!("{base}/realtime"), format!("{base}/batch"));
    let mut out = Vec::new();
    for m in msgs {
        if m.topic != realtime && m.topic != batch {
            continue;
        }
        let v: Value = serde_json::from_str(&m.payload)
            .unwrap_or_else(|e| panic!("{}: payload is not JSON ({e}): {}", m.topic, m.payload));
        let items = if m.topic == realtime {
            assert!(v.is_object(), "{realtime} carries one reading: {v}");
            vec![v]
        } else {
            let Value::Array(items) = v else {
                panic!("{batch} carries a JSON array of readings: {}", m.payload)
            };
            assert!(!items.is_empty(), "an empty batch was published");
            items
        };
        out.extend(items.into_iter().map(|reading| Seen {
            topic: m.topic.clone(),
            reading,
            at_ms: m.at_ms,
        }));
    }
    out
}

/// The `(sensor, seq)` pairs of the log that no subscriber saw.
pub fn missing(seen: &[Seen], rows: &[Row]) -> Vec<(String, i64)> {
    let seen: BTreeSet<(String, i64)> = seen.iter().map(Seen::key).collect();
    rows.iter()
        .map(|r| (r.sensor.clone(), r.seq))
        .filter(|k| !seen.contains(k))
        .collect()
}

/// Waits until `sub` has seen every reading of `rows` under `base`.
pub fn wait_all_seen(sub: &Sub, base: &str, rows: &[Row], limit: Duration) {
    let deadline = Instant::now() + limit;
    let left = loop {
        let left = missing(&seen_readings(&sub.messages(), base), rows);
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        left.is_empty(),
        "after {limit:?} the subscriber still misses {} of {} logged readings: {:?}",
        left.len(),
        rows.len(),
        &left[..left.len().min(40)]
    );
}

/// Checks a reading's JSON against the contract and against its row in the
/// log: exactly the contract's keys (plus `late`, only ever `true`), the
/// logged values, `ts` in RFC 3339 UTC with milliseconds.
pub fn assert_reading_is_row(v: &Value, row: &Row) {
    let obj = v.as_object().expect("a reading is a JSON object");
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let mut want: BTreeSet<&str> = READING_KEYS.into_iter().collect();
    if let Some(late) = obj.get("late") {
        assert_eq!(late, &Value::Bool(true), "`late` is only ever true: {v}");
        want.insert("late");
    }
    assert_eq!(keys, want, "keys of {v}");
    let weight_keys: BTreeSet<&str> = v["weight"]
        .as_object()
        .map(|w| w.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        weight_keys,
        BTreeSet::from(["temperature", "humidity"]),
        "weight of {v}"
    );
    let ctx = || format!("wire {v} vs log {row:?}");
    assert_eq!(v["node"], row.node, "{}", ctx());
    assert_eq!(v["sensor"], row.sensor, "{}", ctx());
    assert_eq!(v["seq"], row.seq, "{}", ctx());
    assert_eq!(v["ts_ms"], row.ts_ms, "{}", ctx());
    assert_eq!(
        v["temperature_c"].as_f64(),
        Some(row.temperature_c),
        "{}",
        ctx()
    );
    assert_eq!(
        v["humidity_pct"].as_f64(),
        Some(row.humidity_pct),
        "{}",
        ctx()
    );
    assert_eq!(
        v["weight"]["temperature"],
        row.weight_temperature,
        "{}",
        ctx()
    );
    assert_eq!(v["weight"]["humidity"], row.weight_humidity, "{}", ctx());
    assert_eq!(v["priority"], row.priority, "{}", ctx());
    assert_eq!(
        v["route"],
        row.route,
        "the payload's route is the log's: {}",
        ctx()
    );
    let ts = v["ts"].as_str().expect("ts is a string");
    let shape_ok = ts.len() == 24
        && ts.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            19 => c == '.',
            23 => c == 'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "ts {ts:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    let parsed = humantime::parse_rfc3339(ts).expect("ts parses as RFC 3339");
    let ms = parsed
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    assert_eq!(i64::try_from(ms).ok(), Some(row.ts_ms), "ts {ts} vs ts_ms");
}

/// Checks a reading seen on the wire (see [`assert_reading_is_row`]) and
/// its topic: the one its route names, or the batch topic for a late
/// real-time row (and only a real-time row can be late).
pub fn assert_matches_log(seen: &Seen, row: &Row, base: &str) {
    assert_reading_is_row(&seen.reading, row);
    let topic = if seen.late() {
        assert_eq!(
            row.route, "realtime",
            "only real-time rows can be late: {} vs {row:?}",
            seen.reading
        );
        format!("{base}/batch")
    } else {
        format!("{base}/{}", row.route)
    };
    assert_eq!(seen.topic, topic, "{} vs {row:?}", seen.reading);
}

/// Every reading seen matches its row (see [`assert_matches_log`]), none is
/// unknown to the log, and every row was seen. Returns the readings by key.
pub fn assert_seen_is_the_log(
    seen: &[Seen],
    rows: &[Row],
    base: &str,
) -> BTreeMap<(String, i64), Vec<Seen>> {
    let by_key: BTreeMap<(String, i64), &Row> = rows
        .iter()
        .map(|r| ((r.sensor.clone(), r.seq), r))
        .collect();
    let mut out: BTreeMap<(String, i64), Vec<Seen>> = BTreeMap::new();
    for s in seen {
        let key = s.key();
        let row = by_key
            .get(&key)
            .unwrap_or_else(|| panic!("the subscriber saw a reading the log lacks: {}", s.reading));
        assert_matches_log(s, row, base);
        out.entry(key).or_default().push(s.clone());
    }
    let left = missing(seen, rows);
    assert!(left.is_empty(), "never seen: {left:?}");
    out
}

/// Per sensor, the logged seqs are 0, 1, 2, … without a gap.
pub fn assert_gapless(rows: &[Row]) {
    for (sensor, seqs) in common::seqs_by_sensor(rows) {
        let want: Vec<i64> = (0..).take(seqs.len()).collect();
        assert_eq!(seqs, want, "seqs of {sensor}");
    }
}

/// Every row carries `published_ms`, and the status row says the outbox is
/// empty.
pub fn assert_outbox_drained(rows: &[Row], status: &BrokerRow) {
    let unpublished: Vec<&Row> = rows.iter().filter(|r| r.published_ms.is_none()).collect();
    assert!(
        unpublished.is_empty(),
        "{} rows were never acknowledged, e.g. {:?}",
        unpublished.len(),
        unpublished.first()
    );
    for r in rows {
        assert!(
            r.published_ms >= Some(r.ts_ms),
            "acknowledged before it was read: {r:?}"
        );
    }
    assert_eq!(status.outbox_depth, 0, "{status:?}");
}

/// The status row's counters agree with the log: real-time rows count as
/// real-time unless they went out late (then as batch), batch rows as
/// batch, and each row once.
pub fn assert_counters_match(rows: &[Row], status: &BrokerRow) {
    let count = |route: &str| {
        i64::try_from(rows.iter().filter(|r| r.route == route).count()).expect("fits")
    };
    let (realtime, batch) = (count("realtime"), count("batch"));
    assert_eq!(
        (status.published_realtime, status.published_batch),
        (
            realtime - status.published_late,
            batch + status.published_late
        ),
        "agent_status counters vs the log's {realtime} real-time and {batch} batch rows \
         ({} late): {status:?}",
        status.published_late
    );
}

// ---------------------------------------------------------------------
// Helpers of tests/gateway.rs (the gateway's end-to-end tests): publishing
// payloads that `-m` cannot carry (bytes that are not UTF-8, empty, over
// the argument size limit) and many messages in one client.
// ---------------------------------------------------------------------

impl Broker {
    /// Publishes the bytes of `file`, exactly, as one message on `topic`
    /// (`mosquitto_pub -f`, `QoS` 1).
    pub fn publish_file(&self, topic: &str, file: &Path) {
        let mut cmd = Command::new(tool("mosquitto_pub"));
        self.client_args(&mut cmd);
        cmd.args(["-q", "1", "-t", topic, "-f"]).arg(file);
        let out = cmd.output().expect("run mosquitto_pub -f");
        assert!(
            out.status.success(),
            "mosquitto_pub -t {topic:?} -f {} failed: {}",
            file.display(),
            common::text(&out.stderr)
        );
    }

    /// Publishes every line of `file` as one message on `topic`, in order,
    /// from one client (`mosquitto_pub -l`, `QoS` 1); returns once the
    /// broker has acknowledged them all.
    pub fn publish_lines(&self, topic: &str, file: &Path) {
        let mut cmd = Command::new(tool("mosquitto_pub"));
        self.client_args(&mut cmd);
        cmd.args(["-q", "1", "-t", topic, "-l"])
            .stdin(std::fs::File::open(file).expect("open the lines to publish"));
        let out = cmd.output().expect("run mosquitto_pub -l");
        assert!(
            out.status.success(),
            "mosquitto_pub -t {topic:?} -l < {} failed: {}",
            file.display(),
            common::text(&out.stderr)
        );
    }
}
