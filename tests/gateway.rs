//! `edgeprio gateway` end to end (issue 13): the real binary against a real
//! Mosquitto, fed with `mosquitto_pub` on `edgeprio/<node>/raw` and watched
//! with `mosquitto_sub` on the routes it publishes (DESIGN.md, "MQTT
//! contract"). Each test has its own broker, port and tempdir.

mod collect_support;
mod common;
mod mosquitto;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use edgeprio::domain::{MAX_RAW_PAYLOAD, Received, parse_readings};

use common::{ChildGuard, Row};
use mosquitto::{Agent, Broker, Sensor, Spec, Sub, agent_config, seen_readings};

/// The raw topic of the node every test here plays (tests/fixtures/raw
/// is written for it).
const RAW: &str = "edgeprio/esp-1/raw";

/// The base of the topics the gateway publishes that node's readings on.
const BASE: &str = "edgeprio/esp-1";

/// The routes, as a subscriber of both sees them.
const ROUTES: [&str; 2] = ["edgeprio/+/realtime", "edgeprio/+/batch"];

/// Writes `<dir>/gw.toml`: node `gw`, its log `<dir>/gw.db`, the broker
/// with a 1 s batch interval. Returns (config, log).
fn gateway_config(dir: &Path, broker: &Broker) -> (PathBuf, PathBuf) {
    let db = dir.join("gw.db");
    let config = dir.join("gw.toml");
    let text = format!(
        "node = \"gw\"\ndb = {:?}\n[mqtt]\nurl = \"{}\"\nbatch_interval = \"1s\"\n",
        db.display().to_string(),
        broker.url()
    );
    std::fs::write(&config, text).expect("write gw.toml");
    (config, db)
}

/// `edgeprio --config gw.toml gateway`, at log level info, its stderr in a
/// file; killed on drop.
struct Gateway {
    /// The process.
    child: ChildGuard,
    /// Its stderr: what it logged.
    err: PathBuf,
}

impl Gateway {
    /// Starts the gateway and waits until its raw subscription is in place
    /// (a first start has no session yet: what is published before that is
    /// not kept for it).
    fn start(dir: &Path, config: &Path, name: &str) -> Gateway {
        let err = dir.join(format!("{name}.err"));
        let mut cmd = common::std_cmd(dir);
        cmd.arg("--config")
            .arg(config)
            .arg("gateway")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(common::stderr_file(&err));
        let mut gw = Gateway {
            child: ChildGuard::spawn(cmd),
            err,
        };
        gw.wait_line(&["MQTT consumer subscribed"], Duration::from_secs(15));
        gw
    }

    /// Its stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Panics (with its stderr) if the gateway has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.child.try_wait() {
            panic!("the gateway exited ({status}):\n{}", self.stderr());
        }
    }

    /// Waits until stderr has a line with every one of `words`.
    fn wait_line(&mut self, words: &[&str], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_running();
            if self
                .stderr()
                .lines()
                .any(|l| words.iter().all(|w| l.contains(w)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {words:?} from the gateway within {limit:?}:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit (within 30 s) and stderr, which shows no
    /// panic.
    fn stop(mut self) -> (ExitStatus, String) {
        common::send_signal(self.child.id(), "TERM");
        let status = self.child.wait_timeout(Duration::from_secs(30));
        let stderr = self.stderr();
        let status =
            status.unwrap_or_else(|| panic!("the gateway ran on 30 s after SIGTERM:\n{stderr}"));
        common::assert_no_panic(&stderr);
        (status, stderr)
    }

    /// SIGKILL (a crash: no commit, no acknowledgement, no goodbye) and
    /// reap.
    fn crash(&mut self) {
        common::send_signal(self.child.id(), "KILL");
        self.child
            .wait_timeout(Duration::from_secs(10))
            .expect("SIGKILL ends the gateway");
    }
}

/// The gateway's log, or nothing while it does not exist yet.
fn rows_if_any(db: &Path) -> Vec<Row> {
    if db.exists() {
        common::readings(db)
    } else {
        Vec::new()
    }
}

/// Waits until the gateway's log holds `n` rows, every one published.
fn wait_published(gw: &mut Gateway, db: &Path, n: usize, limit: Duration) -> Vec<Row> {
    let deadline = Instant::now() + limit;
    loop {
        gw.assert_running();
        let rows = rows_if_any(db);
        let published = rows.iter().filter(|r| r.published_ms.is_some()).count();
        if rows.len() >= n && published == rows.len() {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?} the gateway's log holds {} rows ({published} published), want {n} \
             all published; gateway stderr:\n{}",
            rows.len(),
            gw.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A raw reading, one line of JSON.
fn raw(sensor: &str, temperature: f64, humidity: f64, seq: Option<u64>) -> String {
    let mut line = format!(
        "{{\"sensor\":\"{sensor}\",\"temperature_c\":{temperature:?},\"humidity_pct\":{humidity:?}"
    );
    if let Some(seq) = seq {
        let _ = write!(line, ",\"seq\":{seq}");
    }
    line.push('}');
    line
}

/// Writes `lines` to `<dir>/<name>` for `mosquitto_pub -l`.
fn lines_file(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("write the lines to publish");
    path
}

/// The paper's worked example on one sensor (25 °C/56 % then 28 °C/48 %:
/// weights 2 and 2, priority 2, real-time) and a quiet series on another
/// (changes inside the DHT22's deadbands, sent without seq: the gateway
/// numbers them; every one priority 0, batch). A subscriber of both routes
/// gets exactly the one real-time reading on `realtime` and the rest in
/// arrays on `batch`, each as the log has it.
#[test]
fn raw_readings_are_scored_and_go_out_on_their_routes_with_the_papers_weights() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let sub = Sub::start(&broker, &ROUTES, None);
    let (config, db) = gateway_config(dir.path(), &broker);
    let mut gw = Gateway::start(dir.path(), &config, "gw");

    let quiet = [
        (21.0, 40.0),
        (21.2, 40.5),
        (21.1, 41.0),
        (21.3, 40.2),
        (21.2, 40.8),
    ];
    let mut lines = vec![
        raw("lab", 25.0, 56.0, Some(0)),
        raw("lab", 28.0, 48.0, Some(1)),
    ];
    lines.extend(quiet.iter().map(|&(t, h)| raw("quiet", t, h, None)));
    broker.publish_lines(RAW, &lines_file(dir.path(), "raw.txt", &lines));

    let rows = wait_published(&mut gw, &db, lines.len(), Duration::from_secs(15));
    assert_eq!(
        rows.len(),
        lines.len(),
        "one row per raw reading: {rows:#?}"
    );
    mosquitto::wait_all_seen(&sub, BASE, &rows, Duration::from_secs(10));

    let by_key: BTreeMap<(&str, i64), &Row> = rows
        .iter()
        .map(|r| ((r.sensor.as_str(), r.seq), r))
        .collect();
    let lab1 = by_key[&("lab", 1)];
    assert_eq!(
        (
            lab1.weight_temperature,
            lab1.weight_humidity,
            lab1.priority,
            lab1.route.as_str()
        ),
        (2, 2, 2, "realtime"),
        "the paper's example: {lab1:?}"
    );
    for r in &rows {
        assert_eq!(r.node, "esp-1", "the node is the topic's: {r:?}");
        if r.sensor == "lab" && r.seq == 1 {
            continue;
        }
        assert_eq!(
            (
                r.weight_temperature,
                r.weight_humidity,
                r.priority,
                r.route.as_str()
            ),
            (0, 0, 0, "batch"),
            "a first reading, or a change inside the deadband: {r:?}"
        );
    }
    let quiet_rows: Vec<(i64, f64, f64)> = rows
        .iter()
        .filter(|r| r.sensor == "quiet")
        .map(|r| (r.seq, r.temperature_c, r.humidity_pct))
        .collect();
    let want: Vec<(i64, f64, f64)> = (0..).zip(quiet).map(|(s, (t, h))| (s, t, h)).collect();
    assert_eq!(quiet_rows, want, "readings without seq are numbered from 0");

    // Give a stray duplicate or a late extra message the time to show.
    thread::sleep(Duration::from_millis(1500));
    let seen = seen_readings(&sub.messages(), BASE);
    let by_seen = mosquitto::assert_seen_is_the_log(&seen, &rows, BASE);
    let realtime: Vec<(String, i64)> = seen
        .iter()
        .filter(|s| s.topic == format!("{BASE}/realtime"))
        .map(mosquitto::Seen::key)
        .collect();
    assert_eq!(realtime, [("lab".to_owned(), 1)], "the real-time route");
    for (key, copies) in &by_seen {
        assert_eq!(copies.len(), 1, "{key:?} arrived once, nothing failed");
    }
    let (status, stderr) = gw.stop();
    assert!(status.success(), "exit {status} after SIGTERM:\n{stderr}");
}

/// The shape of a compact JSON text, byte for byte: keys in their order,
/// values replaced by their type (`str`, `int`, `float`, `bool`, `null`),
/// objects and arrays kept. Panics on whitespace: both senders write
/// compact JSON.
fn shape(bytes: &[u8]) -> String {
    let mut scan = Scan {
        bytes,
        at: 0,
        out: String::new(),
    };
    scan.value();
    assert_eq!(
        scan.at,
        bytes.len(),
        "trailing bytes after the JSON value: {:?}",
        String::from_utf8_lossy(bytes)
    );
    scan.out
}

/// The cursor of [`shape`].
struct Scan<'a> {
    /// The text.
    bytes: &'a [u8],
    /// The next byte to read.
    at: usize,
    /// The shape so far.
    out: String,
}

impl Scan<'_> {
    fn peek(&self) -> u8 {
        *self.bytes.get(self.at).unwrap_or_else(|| {
            panic!(
                "the JSON ends early: {:?}",
                String::from_utf8_lossy(self.bytes)
            )
        })
    }

    fn expect(&mut self, b: u8) {
        assert_eq!(
            self.peek() as char,
            b as char,
            "at byte {} of {:?}",
            self.at,
            String::from_utf8_lossy(self.bytes)
        );
        self.at += 1;
        self.out.push(b as char);
    }

    /// A string, returned with its quotes as written.
    fn string(&mut self) -> String {
        let start = self.at;
        assert_eq!(self.peek(), b'"', "a string at byte {start}");
        self.at += 1;
        loop {
            match self.peek() {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    break;
                }
                _ => self.at += 1,
            }
        }
        String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned()
    }

    fn value(&mut self) {
        match self.peek() {
            b'{' => self.members(b'{', b'}', true),
            b'[' => self.members(b'[', b']', false),
            b'"' => {
                self.string();
                self.out.push_str("str");
            }
            b't' | b'f' | b'n' => {
                let rest = &self.bytes[self.at..];
                let (word, tag) = if rest.starts_with(b"true") {
                    ("true", "bool")
                } else if rest.starts_with(b"false") {
                    ("false", "bool")
                } else if rest.starts_with(b"null") {
                    ("null", "null")
                } else {
                    panic!("a bad literal at byte {}", self.at)
                };
                self.at += word.len();
                self.out.push_str(tag);
            }
            _ => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| b"-+.eE0123456789".contains(b))
                {
                    self.at += 1;
                }
                let number = &self.bytes[start..self.at];
                assert!(!number.is_empty(), "a value at byte {start}");
                let float = number.iter().any(|b| b".eE".contains(b));
                self.out.push_str(if float { "float" } else { "int" });
            }
        }
    }

    fn members(&mut self, open: u8, close: u8, keyed: bool) {
        self.expect(open);
        if self.peek() == close {
            self.expect(close);
            return;
        }
        loop {
            if keyed {
                let key = self.string();
                self.out.push_str(&key);
                self.expect(b':');
            }
            self.value();
            if self.peek() == b',' {
                self.expect(b',');
            } else {
                self.expect(close);
                return;
            }
        }
    }
}

/// The shape of one reading on the wire as the contract has it
/// (DESIGN.md, "MQTT contract"), keys in the agent's order.
const READING_SHAPE: &str = "{\"node\":str,\"sensor\":str,\"log\":str,\"seq\":int,\"ts_ms\":int,\
                             \"ts\":str,\"temperature_c\":float,\"humidity_pct\":float,\
                             \"weight\":{\"temperature\":int,\"humidity\":int},\"priority\":int,\
                             \"route\":str}";

/// Parses `payload` with the consumers' parser and writes it again: the
/// bytes must come back exactly (same keys, same order, same numbers).
fn assert_round_trips(topic: &str, payload: &str) {
    let parsed = parse_readings(payload.as_bytes())
        .unwrap_or_else(|e| panic!("{topic}: the consumers' parser refuses {payload}: {e}"));
    let again = if payload.starts_with('[') {
        serde_json::to_string(&parsed.iter().map(Received::wire).collect::<Vec<_>>())
    } else {
        assert_eq!(parsed.len(), 1, "{topic}: {payload}");
        serde_json::to_string(&parsed[0].wire())
    }
    .expect("serialise");
    assert_eq!(again, payload, "{topic}: parse and write again");
}

/// A real agent (`edgeprio run`, simulated sensors) and the gateway publish
/// readings of the very same shape: the same keys in the same order, the
/// same value types (a temperature is always written as a float), batch
/// arrays of such objects, compact; and each payload of either parses and
/// writes back to exactly its own bytes.
#[test]
fn the_gateway_publishes_readings_byte_for_byte_in_the_agents_shape() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let sub = Sub::start(&broker, &ROUTES, None);
    let files = agent_config(
        dir.path(),
        "t-agent",
        "200ms",
        &[Sensor::Alternating("alt"), Sensor::Heater("lab")],
        &format!("url = \"{}\"\nbatch_interval = \"1s\"\n", broker.url()),
    );
    let mut agent = Agent::start(&files, &[]);
    let (config, _db) = gateway_config(dir.path(), &broker);
    let mut gw = Gateway::start(dir.path(), &config, "gw");
    let lines = [
        raw("lab", 25.0, 56.0, Some(0)),
        raw("lab", 28.0, 48.0, Some(1)),
        raw("lab", 28.1, 48.3, Some(2)),
    ];
    broker.publish_lines(RAW, &lines_file(dir.path(), "raw.txt", &lines));

    let topics = [
        "edgeprio/t-agent/realtime",
        "edgeprio/t-agent/batch",
        "edgeprio/esp-1/realtime",
        "edgeprio/esp-1/batch",
    ];
    sub.wait(
        Duration::from_secs(15),
        "a real-time and a batch message of the agent and of the gateway",
        |msgs| topics.iter().all(|t| msgs.iter().any(|m| m.topic == *t)),
    );
    agent.assert_running();
    gw.assert_running();
    let msgs = sub.messages();
    let mut shapes: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for m in msgs.iter().filter(|m| topics.contains(&m.topic.as_str())) {
        assert_round_trips(&m.topic, &m.payload);
        let s = shape(m.payload.as_bytes());
        let t = topics.iter().find(|t| **t == m.topic).expect("one of them");
        if t.ends_with("/realtime") {
            assert_eq!(s, READING_SHAPE, "{t}: {}", m.payload);
        } else {
            let n = parse_readings(m.payload.as_bytes()).unwrap().len();
            assert!(n > 0, "{t}: an empty batch");
            let want = format!("[{}]", vec![READING_SHAPE; n].join(","));
            assert_eq!(s, want, "{t}: an array of readings: {}", m.payload);
        }
        shapes.entry(t).or_default().insert(s);
    }
    // Both senders were seen on both routes, and every payload had the
    // one shape above: agent and gateway agree, key order included.
    assert_eq!(shapes.len(), topics.len(), "{shapes:#?}");
    agent.stop();
    let (status, stderr) = gw.stop();
    assert!(status.success(), "exit {status} after SIGTERM:\n{stderr}");
}

/// The gateway is killed with SIGKILL while a stream of 2,000 raw readings
/// (two sensors, seq 0..1000 each) goes in, and started again on the same
/// log and client id while the rest is published. Its persistent session
/// keeps what it had not acknowledged; what it had committed but not
/// acknowledged comes again and is recognised. At the end the log holds
/// every seq of each sensor exactly once, every row is published, and a
/// subscriber there from the start has seen each on its route's topic.
#[test]
fn a_gateway_killed_mid_stream_loses_nothing_and_logs_nothing_twice() {
    const PER_SENSOR: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    // While the gateway is down its session queues the rest of the stream
    // (about 1,000 messages and those in flight); Mosquitto's default
    // max_queued_messages of 1000 would drop QoS 1 messages past it.
    let broker = Broker::start(
        dir.path(),
        &Spec {
            max_queued_messages: Some(100_000),
            ..Spec::default()
        },
    );
    let sub = Sub::start(&broker, &ROUTES, Some("edgeprio-test-gateway-kill"));
    let (config, db) = gateway_config(dir.path(), &broker);
    let mut gw = Gateway::start(dir.path(), &config, "gw-1");

    // Every tenth reading jumps 3 °C (and the next one back): real-time
    // readings among the batch ones. A reading's values depend on its seq
    // alone, so a redelivery has the values of the logged row.
    let line = |sensor: &str, seq: u64| {
        let t = if seq % 10 == 5 { 23.0 } else { 20.0 };
        raw(sensor, t, 50.0, Some(seq))
    };
    let half = |seqs: std::ops::Range<u64>| -> Vec<String> {
        seqs.flat_map(|s| [line("a", s), line("b", s)]).collect()
    };
    let first = lines_file(dir.path(), "first.txt", &half(0..PER_SENSOR / 2));
    let second = lines_file(dir.path(), "second.txt", &half(PER_SENSOR / 2..PER_SENSOR));

    // The first half goes in from another thread, so the gateway is killed
    // while messages still arrive.
    thread::scope(|scope| {
        let publisher = scope.spawn(|| broker.publish_lines(RAW, &first));
        common::wait_for(
            Duration::from_secs(15),
            "the gateway to log 100 readings",
            || rows_if_any(&db).len() >= 100,
        );
        gw.crash();
        publisher.join().expect("the publisher thread");
    });
    let at_kill = rows_if_any(&db).len();
    assert!(
        (100..usize::try_from(2 * PER_SENSOR).unwrap()).contains(&at_kill),
        "killed part-way: {at_kill} rows logged"
    );
    broker.publish_lines(RAW, &second);
    let mut gw = Gateway::start(dir.path(), &config, "gw-2");

    let total = usize::try_from(2 * PER_SENSOR).expect("fits");
    let rows = wait_published(&mut gw, &db, total, Duration::from_secs(20));
    assert_eq!(
        rows.len(),
        total,
        "every seq of each sensor logged once: no duplicate"
    );
    let seqs = common::seqs_by_sensor(&rows);
    let want: Vec<i64> = (0..i64::try_from(PER_SENSOR).unwrap()).collect();
    assert_eq!(
        seqs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"]
    );
    for (sensor, got) in &seqs {
        assert_eq!(got, &want, "the seqs of {sensor}, in log order");
    }
    let routes: BTreeSet<&str> = rows.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(routes, BTreeSet::from(["batch", "realtime"]), "both routes");
    for r in &rows {
        let t = if r.seq % 10 == 5 { 23.0 } else { 20.0 };
        assert_eq!(
            (r.temperature_c, r.humidity_pct),
            (t, 50.0),
            "values of {r:?}"
        );
    }
    mosquitto::wait_all_seen(&sub, BASE, &rows, Duration::from_secs(20));
    mosquitto::assert_seen_is_the_log(&seen_readings(&sub.messages(), BASE), &rows, BASE);
    let stderr1 = std::fs::read_to_string(dir.path().join("gw-1.err")).unwrap_or_default();
    common::assert_no_panic(&stderr1);
    let (status, stderr) = gw.stop();
    assert!(status.success(), "exit {status} after SIGTERM:\n{stderr}");
    assert!(
        stderr.contains("session_present=true"),
        "the restarted gateway found its session:\n{stderr}"
    );
    let stopped = stop_counts(&stderr);
    assert_eq!(
        stopped["realtime"] + stopped["batch"],
        total - at_kill,
        "the second gateway logged what the first had not, nothing again: {stopped:?}"
    );
}

/// The counts of the gateway's "gateway stopped" line (`received`,
/// `realtime`, `batch`, `duplicates`, `rejected`).
fn stop_counts(stderr: &str) -> BTreeMap<String, usize> {
    let line = stderr
        .lines()
        .find(|l| l.contains("gateway stopped"))
        .unwrap_or_else(|| panic!("no \"gateway stopped\" line:\n{stderr}"));
    let counts: BTreeMap<String, usize> = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect();
    for field in ["received", "realtime", "batch", "duplicates", "rejected"] {
        assert!(counts.contains_key(field), "no {field}=N in {line:?}");
    }
    counts
}

/// A payload the tests build rather than commit (tests/fixtures/raw
/// README): `n` bytes.
fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write a payload");
    path
}

/// The files of `dir`, sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Whether a log line carries the field `kind` with this value (tracing
/// writes a string field quoted).
fn has_kind(line: &str, kind: &str) -> bool {
    line.contains(&format!("kind={kind:?}"))
        || line.split_whitespace().any(|w| w == format!("kind={kind}"))
}

/// The messages the gateway must refuse, as (topic, payload file, the
/// kind it is refused with): a 1 MB blob and a valid reading padded past
/// [`MAX_RAW_PAYLOAD`] (written into `dir`), every file of
/// `<corpus>/bad/<kind>/`, and a good payload on each publishable topic of
/// `<corpus>/topics.txt`.
fn bad_corpus(dir: &Path, corpus: &Path) -> Vec<(String, PathBuf, String)> {
    // (topic, payload file, the kind it must be refused with).
    let mut bad: Vec<(String, PathBuf, String)> = Vec::new();
    let mut padded = br#"{"sensor":"padded","temperature_c":21.0,"humidity_pct":40.0}"#.to_vec();
    padded.resize(MAX_RAW_PAYLOAD + 1, b' ');
    bad.push((
        RAW.into(),
        write_bytes(dir, "blob.bin", &vec![b'x'; 1 << 20]),
        "too_large".into(),
    ));
    bad.push((
        RAW.into(),
        write_bytes(dir, "padded.json", &padded),
        "too_large".into(),
    ));
    let mut kind_dirs: Vec<PathBuf> = std::fs::read_dir(corpus.join("bad"))
        .expect("read bad/")
        .map(|e| e.expect("an entry").path())
        .collect();
    kind_dirs.sort();
    for kind_dir in kind_dirs {
        let kind = kind_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a kind")
            .to_owned();
        for f in files_in(&kind_dir) {
            bad.push((RAW.into(), f, kind.clone()));
        }
    }
    // A good payload on each topic whose node the gateway refuses. The
    // file lists only topics `+/raw` receives (no wildcards, which no
    // broker accepts in a published topic: those are tested on the parser
    // in src/domain/payload/topics.rs). A topic with a control character
    // (the tab) is skipped: Mosquitto refuses it as malformed UTF-8
    // (MQTT 3.1.1, 1.5.3: U+0001..U+001F), mosquitto_pub before sending
    // and the broker by closing the connection, so no gateway behind it
    // ever receives one.
    let on_bad_topic = write_bytes(
        dir,
        "on-bad-topic.json",
        br#"{"sensor":"on-bad-topic","temperature_c":21.0,"humidity_pct":40.0}"#,
    );
    let topics = std::fs::read_to_string(corpus.join("topics.txt")).expect("read topics.txt");
    for line in topics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (kind, topic) = line.split_once('\t').expect("<kind>\\t<topic>");
        assert!(
            !topic.contains(['+', '#']),
            "a topic with a wildcard cannot be published: {topic:?}"
        );
        if topic.chars().any(char::is_control) {
            continue;
        }
        bad.push((topic.into(), on_bad_topic.clone(), kind.into()));
    }
    assert!(
        bad.iter().any(|(t, _, _)| t != RAW),
        "topics.txt gave no topic to publish on"
    );
    bad
}

/// `stderr` has a "rejected a message" line for each of `kinds`, at most
/// once per kind per 10 s of the `elapsed` run (the consumer's throttle),
/// and none for another kind.
fn assert_refusals_said(stderr: &str, kinds: &BTreeSet<String>, elapsed: Duration) {
    let rejected: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rejected a message"))
        .collect();
    let windows = usize::try_from(elapsed.as_secs() / 10).expect("a short test") + 1;
    for kind in kinds {
        let said = rejected.iter().filter(|l| has_kind(l, kind)).count();
        assert!(
            said >= 1,
            "no \"rejected a message\" line with kind={kind}:\n{}",
            rejected.join("\n")
        );
        assert!(
            said <= windows,
            "kind={kind} said {said} times in {elapsed:?} (at most once per 10 s):\n{}",
            rejected.join("\n")
        );
    }
    for line in &rejected {
        assert!(
            kinds.iter().any(|k| has_kind(line, k)),
            "a refusal of a kind the corpus does not have: {line}"
        );
    }
}

/// The malformed corpus through the real broker: a 1 MB blob and a valid
/// reading padded past the size limit, every file of
/// tests/fixtures/raw/bad/<kind>/, and a good reading on every topic of
/// topics.txt, interleaved with the good files. Every good file is logged
/// (one row for its sensor), nothing else is; the gateway stays up; its
/// stderr says "rejected a message" with the kind of each, once per kind
/// in a 10 s window; and the blobs do not hold up the readings after them.
#[test]
fn the_malformed_corpus_is_refused_by_kind_and_the_good_readings_flow() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let (config, db) = gateway_config(dir.path(), &broker);
    let mut gw = Gateway::start(dir.path(), &config, "gw");
    let corpus = common::fixture("raw");

    let good = files_in(&corpus.join("good"));
    let good_sensors: BTreeSet<String> = good
        .iter()
        .map(|f| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f).expect("read a good file"))
                    .expect("a good file is JSON");
            v["sensor"].as_str().expect("a sensor").to_owned()
        })
        .collect();
    assert_eq!(good_sensors.len(), good.len(), "a sensor per good file");

    let bad = bad_corpus(dir.path(), &corpus);
    let kinds: BTreeSet<String> = bad.iter().map(|(_, _, k)| k.clone()).collect();

    // Two blobs first, then the bad ones, with a good file after every
    // few: the last message is a good one.
    let started = Instant::now();
    let every = bad.len().div_ceil(good.len());
    let mut good_left = good.iter();
    for (i, (topic, file, _)) in bad.iter().enumerate() {
        broker.publish_file(topic, file);
        if (i + 1) % every == 0
            && let Some(g) = good_left.next()
        {
            broker.publish_file(RAW, g);
        }
    }
    for g in good_left {
        broker.publish_file(RAW, g);
    }
    let published = started.elapsed();

    let rows = wait_published(&mut gw, &db, good.len(), Duration::from_secs(10));
    let logged_at = started.elapsed();
    let sensors: Vec<&str> = rows.iter().map(|r| r.sensor.as_str()).collect();
    assert_eq!(
        sensors.iter().copied().collect::<BTreeSet<_>>(),
        good_sensors.iter().map(String::as_str).collect(),
        "exactly the good files are logged"
    );
    assert_eq!(
        sensors.len(),
        good.len(),
        "one row per good file: {rows:#?}"
    );
    assert!(
        logged_at < published + Duration::from_secs(5),
        "the good readings waited behind the refused ones: logged {logged_at:?} after the \
         start, the last was published at {published:?}"
    );
    for r in &rows {
        assert_eq!(r.node, "esp-1", "{r:?}");
    }
    gw.assert_running();

    assert_refusals_said(&gw.stderr(), &kinds, logged_at);
    let (status, stderr) = gw.stop();
    assert!(status.success(), "exit {status} after SIGTERM:\n{stderr}");
    // The throttled log names each kind once; the counts at the stop say
    // every single message was refused (the topics of topics.txt too).
    let stopped = stop_counts(&stderr);
    let count = |field: &str| stopped[field];
    assert_eq!(count("rejected"), bad.len(), "{stopped:?}");
    assert_eq!(
        count("realtime") + count("batch"),
        good.len(),
        "{stopped:?}"
    );
    assert_eq!(count("duplicates"), 0, "{stopped:?}");
}

/// SIGTERM ends the gateway cleanly: exit 0, and its status row (node
/// `gw`) says stopped.
#[test]
fn sigterm_stops_the_gateway_with_exit_0_and_its_status_row_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let (config, db) = gateway_config(dir.path(), &broker);
    let mut gw = Gateway::start(dir.path(), &config, "gw");
    broker.publish(RAW, &raw("lab", 21.0, 40.0, Some(0)), false);
    wait_published(&mut gw, &db, 1, Duration::from_secs(10));
    let running = common::agent_status(&db);
    assert!(
        running
            .iter()
            .any(|s| s.node == "gw" && s.state == "running"),
        "while it runs: {running:?}"
    );
    let pid = gw.child.id();
    let (status, stderr) = gw.stop();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM:\n{stderr}");
    let status_rows = common::agent_status(&db);
    let gw_row = status_rows
        .iter()
        .find(|s| s.node == "gw")
        .unwrap_or_else(|| panic!("no status row of node gw: {status_rows:?}"));
    assert_eq!(gw_row.state, "stopped", "{gw_row:?}");
    assert_eq!(gw_row.pid, i64::from(pid), "{gw_row:?}");
}

/// The value of the sample line `series` (labels included) in a scrape.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// With `[metrics]`, the gateway's endpoint counts what it did: readings
/// by route, redeliveries, refusals by kind, the streams, the consumer's
/// messages and connection.
#[test]
fn the_gateways_metrics_count_routes_duplicates_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let (config, db) = gateway_config(dir.path(), &broker);
    let port = mosquitto::free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    write!(text, "[metrics]\nlisten = \"127.0.0.1:{port}\"\n").unwrap();
    std::fs::write(&config, text).unwrap();
    let mut gw = Gateway::start(dir.path(), &config, "gw");
    broker.publish(RAW, &raw("lab", 25.0, 56.0, Some(0)), false);
    broker.publish(RAW, &raw("lab", 28.0, 48.0, Some(1)), false);
    // The same seq 1 again: a redelivery, not a new reading.
    broker.publish(RAW, &raw("lab", 28.0, 48.0, Some(1)), false);
    broker.publish(RAW, "{not json", false);
    broker.publish(RAW, &raw("attic", 120.0, 48.0, None), false);
    wait_published(&mut gw, &db, 2, Duration::from_secs(10));
    let node = "node=\"gw\"";
    let mut body = String::new();
    common::wait_for(Duration::from_secs(10), "the refusals counted", || {
        body = common::scrape_metrics(port);
        sample(
            &body,
            &format!("edgeprio_gateway_rejected_total{{{node},kind=\"range\"}}"),
        ) == Some(1.0)
    });
    let want = [
        (
            format!("edgeprio_gateway_readings_total{{{node},route=\"realtime\"}}"),
            1.0,
        ),
        (
            format!("edgeprio_gateway_readings_total{{{node},route=\"batch\"}}"),
            1.0,
        ),
        (format!("edgeprio_gateway_duplicates_total{{{node}}}"), 1.0),
        (
            format!("edgeprio_gateway_rejected_total{{{node},kind=\"json\"}}"),
            1.0,
        ),
        (
            format!("edgeprio_gateway_rejected_total{{{node},kind=\"range\"}}"),
            1.0,
        ),
        (
            format!("edgeprio_gateway_rejected_total{{{node},kind=\"type\"}}"),
            0.0,
        ),
        // The out-of-range reading is refused before its stream is opened.
        (format!("edgeprio_gateway_streams{{{node}}}"), 1.0),
        (
            format!("edgeprio_consumer_messages_total{{{node},result=\"committed\"}}"),
            3.0,
        ),
        (
            format!("edgeprio_consumer_messages_total{{{node},result=\"rejected\"}}"),
            2.0,
        ),
        (format!("edgeprio_consumer_connected{{{node}}}"), 1.0),
        (format!("edgeprio_broker_connected{{{node}}}"), 1.0),
    ];
    for (series, value) in want {
        assert_eq!(sample(&body, &series), Some(value), "{series} in\n{body}");
    }
    let (status, stderr) = gw.stop();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// The gateway answers resend requests for what it logged, as an agent
/// does: with the batch collector stopped while 6,000 raw readings flow
/// through the gateway (in messages of two, six times Mosquitto's default
/// queue), the collectors lack most of them, at the end of a stream that
/// then stops; once the batch collector is back, the sensor's retained
/// state shows the stream's newest seq, they ask the gateway on
/// `edgeprio/esp-1/resend`, and every reading of the gateway's log is
/// stored once, most of them resent.
#[test]
fn the_gateway_resends_what_it_logged_when_a_collector_asks() {
    const N: u64 = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let db = dir.path().join("gw.db");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"gw\"\ndb = {:?}\n[mqtt]\nurl = \"{}\"\nbatch_interval = \"200ms\"\n\
             batch_max = 2\nresend_rate = 5000\n",
            db.display().to_string(),
            broker.url()
        ),
    )
    .unwrap();
    let mut gw = Gateway::start(dir.path(), &config, "gw");
    let collected = dir.path().join("collected.db");
    let collect_toml = collect_support::collect_config(dir.path(), &broker);
    let cdb = collected.to_str().unwrap();
    let args = |id: &'static str| ["--client-id", id, "--repair-after", "2s"];
    let rt =
        collect_support::Collect::start(dir.path(), &collect_toml, "realtime", cdb, &args("c-rt"));
    let batch =
        collect_support::Collect::start(dir.path(), &collect_toml, "batch", cdb, &args("c-b"));

    common::send_signal(batch.pid(), "STOP");
    let lines: Vec<String> = (0..N)
        .map(|s| raw("lab", 20.0 + (s % 3) as f64 * 0.1, 50.0, Some(s)))
        .collect();
    // In chunks the gateway takes one at a time: a flood would overrun the
    // gateway's own queue at the broker (what the gateway cannot ask a raw
    // sender for yet).
    for (i, chunk) in lines.chunks(500).enumerate() {
        broker.publish_lines(RAW, &lines_file(dir.path(), "raw.txt", chunk));
        wait_published(&mut gw, &db, (i + 1) * 500, Duration::from_mins(1));
    }
    thread::sleep(Duration::from_secs(1));
    common::send_signal(batch.pid(), "CONT");
    // The stream has stopped: no later seq shows the hole at its end. The
    // batch collector restarts (a crash, an upgrade) and its subscription
    // brings the sensor's retained state, the stream's newest reading:
    // the seqs below it that the database lacks are asked for.
    thread::sleep(Duration::from_secs(2));
    batch.stop();
    let batch =
        collect_support::Collect::start(dir.path(), &collect_toml, "batch", cdb, &args("c-b"));

    let want = collect_support::log_rows(&db, |_| true);
    assert_eq!(want.len(), usize::try_from(N).unwrap());
    let stored = || -> BTreeMap<collect_support::Key, bool> {
        let conn = common::open_ro(&collected);
        let mut stmt = conn
            .prepare("SELECT node, sensor, log, seq, resent FROM readings")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                r.get::<_, i64>(4)? == 1,
            ))
        })
        .and_then(Iterator::collect)
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let got = stored();
        let lacking = want.keys().filter(|k| !got.contains_key(*k)).count();
        if lacking == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collectors still lack {lacking} of the gateway's {N} readings; gateway:\n{}",
            gw.stderr()
        );
        thread::sleep(Duration::from_millis(500));
    }
    let got = stored();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    let resent = got.values().filter(|r| **r).count();
    assert!(resent >= 3_000, "only {resent} readings came resent");
    let (status, _) = gw.stop();
    assert!(status.success(), "{status}");
    rt.stop();
    batch.stop();
}
