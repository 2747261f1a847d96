//! The gateway's figures against a real Mosquitto (issue 13, "Performance"):
//!
//! - throughput: raw readings over many (node, sensor) streams, each with
//!   its seq, published at `QoS` 1 by one `mosquitto_pub -l` per node, into
//!   the real `edgeprio gateway`; timed from the first publish to the last
//!   row committed in the gateway's log (in), and to the last reading the
//!   gateway published on `edgeprio/+/realtime|batch` received by a
//!   `mosquitto_sub` (out). Zero loss is checked, not assumed: every
//!   (node, sensor, seq) must be in the gateway's log exactly once, and
//!   every one must come out;
//! - the broker's own ceiling in the same run: the same publishers relayed
//!   to a `mosquitto_sub` at `QoS` 1, without the gateway;
//! - the CPU time the gateway and the broker used meanwhile
//!   (`/proc/<pid>/stat`): what a reading costs each;
//! - the gateway's resident set (`/proc/<pid>/status`): its peak, and what
//!   it holds once every stream has been seen.
//!
//! The broker is not a stock one: `max_queued_messages` is raised to the
//! whole run, because the publishers are faster than the gateway and a
//! stock Mosquitto drops what is queued past 1,000 for one client, after
//! acknowledging it to the publisher (FIELD-NOTES.md): that would be the
//! broker's loss, not the gateway's. `max_inflight_messages` is raised to
//! twice the gateway's `--max-batch`: the gateway acknowledges a message
//! only after its transaction commits, so a broker that sends 20
//! unacknowledged messages at a time (its default) caps every transaction
//! at 20 readings and the gateway at 20 readings per commit round trip;
//! twice the batch lets the next batch arrive while one commits. (Mosquitto 2.0.11
//! does not hold that limit while acknowledgements flow: the gateway's own
//! read-ahead bound, `publish::connection::Intake`, is what keeps it from
//! reading the whole flood into memory while it commits.)
//!
//! `cargo bench --bench gateway` runs 200,000 readings over 1,000 streams
//! (50 nodes of 20 sensors); under `cargo test --benches` a smoke run of
//! 2,000 over 100 keeps the code working. Options after `--`:
//! `--readings N`, `--nodes N`, `--sensors N`, `--max-batch N` (the
//! gateway's, default 4000: with 1,000 streams a batch dirties about one
//! index page per stream, so larger batches cost less per reading),
//! `--inflight N` (the broker's, default twice the max batch), `--batch-max N` (the gateway's `[mqtt] batch_max`, readings
//! per batch message, default 20; a partial batch goes after 5 s, not the
//! default minute: the out figure is timed to the last full message, when
//! at most a partial batch per node is left, and the tail follows within
//! 5 s; a shorter interval would send every row that waited longer in the
//! outbox alone, one message per reading),
//! `--no-ceiling`, `--keep DIR` (copies
//! the gateway's log and stderr there, for a profile). Needs `mosquitto`
//! and `mosquitto-clients`.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

// The resident-set reader and the broker, one copy of each.
#[path = "support/drain_rss.rs"]
mod drain_rss;

use drain_rss::mosquitto::{Killed, Limits, mosquitto_with};
use drain_rss::{MIB, cpu, rss};

/// What one run measures, from the command line.
#[derive(Debug, Clone)]
struct Plan {
    /// Raw readings published in all.
    readings: u64,
    /// Nodes, one publisher each.
    nodes: u64,
    /// Sensors per node: `nodes * sensors` streams.
    sensors: u64,
    /// The gateway's `--max-batch`.
    max_batch: u32,
    /// The broker's `max_inflight_messages`.
    inflight: u32,
    /// The gateway's `[mqtt] batch_max`.
    batch_max: u32,
    /// Whether to measure the broker's relay alone first.
    ceiling: bool,
    /// Where to keep the gateway's log and stderr.
    keep: Option<PathBuf>,
}

impl Plan {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench");
        let value = |name: &str| -> Option<String> {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let number = |name: &str, default: u64| -> u64 {
            value(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} {v:?}: not a number"))
            })
        };
        let (readings, nodes, sensors) = if full {
            (200_000, 50, 20)
        } else {
            (2_000, 10, 10)
        };
        let small = |name: &str, default: u32| -> u32 {
            u32::try_from(number(name, u64::from(default)))
                .unwrap_or_else(|_| panic!("{name}: too large"))
        };
        let max_batch = small("--max-batch", 4000);
        Plan {
            readings: number("--readings", readings),
            nodes: number("--nodes", nodes),
            sensors: number("--sensors", sensors),
            max_batch,
            inflight: small("--inflight", max_batch.saturating_mul(2)),
            batch_max: small("--batch-max", 20),
            ceiling: !args.iter().any(|a| a == "--no-ceiling"),
            keep: value("--keep").map(PathBuf::from),
        }
    }

    fn streams(&self) -> u64 {
        self.nodes * self.sensors
    }

    /// Readings per stream (the run is rounded down to whole rounds).
    fn per_stream(&self) -> u64 {
        self.readings / self.streams()
    }

    fn total(&self) -> u64 {
        self.per_stream() * self.streams()
    }
}

fn node(n: u64) -> String {
    format!("n{n:03}")
}

fn sensor(s: u64) -> String {
    format!("s{s:02}")
}

/// Writes one file per node: its raw readings, one JSON object a line, the
/// streams interleaved, each with its seq from 1 and no time (a node
/// without a clock: the gateway stamps the arrival). Temperatures wander
/// within the dead band, with a jump of 3 °C every 20th reading, so that
/// about one reading in ten goes real-time (the jump and the way back).
fn payloads(dir: &Path, plan: &Plan) -> Vec<PathBuf> {
    (0..plan.nodes)
        .map(|n| {
            let path = dir.join(format!("{}.jsonl", node(n)));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
            for i in 0..plan.per_stream() {
                for s in 0..plan.sensors {
                    #[expect(clippy::cast_precision_loss, reason = "small test values")]
                    let base = 18.0 + ((n * plan.sensors + s) % 10) as f64;
                    #[expect(clippy::cast_precision_loss, reason = "small test values")]
                    let wander = (i % 4) as f64 * 0.1;
                    let jump = if i % 20 == 19 { 3.0 } else { 0.0 };
                    writeln!(
                        out,
                        r#"{{"sensor":"{}","temperature_c":{:.1},"humidity_pct":{:.1},"seq":{}}}"#,
                        sensor(s),
                        base + wander + jump,
                        50.0 + wander,
                        i + 1
                    )
                    .expect("write payloads");
                }
            }
            out.flush().expect("write payloads");
            path
        })
        .collect()
}

/// Starts one `mosquitto_pub -l` per payload file, to `<prefix>/<node>/raw`.
fn publish(port: u16, prefix: &str, files: &[PathBuf]) -> Vec<Killed> {
    files
        .iter()
        .enumerate()
        .map(|(n, file)| {
            let stdin = std::fs::File::open(file).expect("open payloads");
            Killed(
                Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-l"])
                    .args(["-i", &format!("bench-pub-{prefix}-{n}")])
                    .args(["-t", &format!("{prefix}/{}/raw", node(n as u64))])
                    .stdin(stdin)
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("mosquitto_pub is missing: apt-get install mosquitto-clients"),
            )
        })
        .collect()
}

/// Waits for every publisher; when the last one was done.
fn finished(publishers: &mut [Killed]) -> Option<Instant> {
    for p in publishers.iter_mut() {
        match p.0.try_wait().expect("wait for mosquitto_pub") {
            Some(status) => assert!(status.success(), "mosquitto_pub failed: {status}"),
            None => return None,
        }
    }
    Some(Instant::now())
}

/// What a subscriber has seen.
#[derive(Debug, Default)]
struct Tally {
    /// Whether the probe came through: the subscription is in place.
    probed: bool,
    /// Messages, the probe's aside.
    messages: u64,
    /// Readings (a batch message carries many).
    readings: u64,
    /// Every (node, sensor, seq) seen, when counting readings.
    seen: HashSet<(String, String, u64)>,
    /// When the last message came.
    last: Option<Instant>,
    /// Distinct readings after which at most a partial batch per node is
    /// left, and when they were reached.
    bulk: (usize, Option<Instant>),
}

/// A `mosquitto_sub -v` at `QoS` 1 on `filters`, tallied by a thread.
struct Subscriber {
    /// The process, killed on drop.
    _child: Killed,
    /// Filled by the reader thread.
    tally: Arc<Mutex<Tally>>,
}

impl Subscriber {
    /// Subscribes; `readings` parses payloads as the gateway's (one reading
    /// or an array of them) instead of counting messages only.
    fn start(port: u16, filters: &[&str], readings: bool, bulk: usize) -> Self {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v"]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto_sub is missing: apt-get install mosquitto-clients");
        let stdout = child.stdout.take().expect("piped");
        let tally = Arc::new(Mutex::new(Tally {
            bulk: (bulk, None),
            ..Tally::default()
        }));
        let t = tally.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
                let mut t = t.lock().unwrap_or_else(PoisonError::into_inner);
                if topic.split('/').nth(1) == Some("probe") {
                    t.probed = true;
                    continue;
                }
                t.messages += 1;
                t.last = Some(Instant::now());
                if readings {
                    for key in keys(payload) {
                        t.readings += 1;
                        t.seen.insert(key);
                    }
                    if t.bulk.1.is_none() && t.seen.len() >= t.bulk.0 {
                        t.bulk.1 = t.last;
                    }
                }
            }
        });
        let s = Subscriber {
            _child: Killed(child),
            tally,
        };
        s.probe(port, filters[0]);
        s
    }

    /// Publishes a probe under `filter` until the subscriber sees it.
    fn probe(&self, port: u16, filter: &str) {
        let topic = filter.replacen('+', "probe", 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.with(|t| t.probed) {
            assert!(Instant::now() < deadline, "mosquitto_sub did not subscribe");
            let status = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
                .args(["-t", &topic, "-m", "probe"])
                .status()
                .expect("mosquitto_pub");
            assert!(status.success(), "mosquitto_pub probe: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Tally) -> T) -> T {
        f(&self.tally.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The (node, sensor, seq) of each reading in a payload of the gateway.
fn keys(payload: &str) -> Vec<(String, String, u64)> {
    let value: serde_json::Value = serde_json::from_str(payload)
        .unwrap_or_else(|e| panic!("the gateway published {payload:?}: {e}"));
    let one = |r: &serde_json::Value| {
        let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        (text("node"), text("sensor"), r["seq"].as_u64().unwrap_or(0))
    };
    match &value {
        serde_json::Value::Array(rs) => rs.iter().map(one).collect(),
        r => vec![one(r)],
    }
}

/// The broker relaying the same publishers to one subscriber, alone:
/// messages per second from the first publish to the last received.
fn ceiling(port: u16, files: &[PathBuf], total: u64) -> f64 {
    let sub = Subscriber::start(port, &["ceiling/+/raw"], false, 0);
    let began = Instant::now();
    let mut publishers = publish(port, "ceiling", files);
    let deadline = began + Duration::from_mins(10);
    while sub.with(|t| t.messages) < total {
        assert!(
            Instant::now() < deadline,
            "the broker relayed {} of {total}",
            sub.with(|t| t.messages)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_all(&mut publishers);
    let last = sub.with(|t| t.last).expect("messages came");
    rate(total, last - began)
}

fn wait_all(publishers: &mut [Killed]) {
    for p in publishers.iter_mut() {
        let status = p.0.wait().expect("wait for mosquitto_pub");
        assert!(status.success(), "mosquitto_pub failed: {status}");
    }
}

#[expect(clippy::cast_precision_loss, reason = "a rate")]
fn rate(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

/// The running gateway, its stderr copied to a file.
struct Gateway {
    /// The process, killed on drop.
    child: Killed,
    /// Set once its consumer subscribed the raw topics.
    subscribed: Arc<Mutex<bool>>,
}

fn start_gateway(dir: &Path, port: u16, plan: &Plan) -> (Gateway, PathBuf) {
    let db = dir.join("gw.db");
    let conf = dir.join("gw.toml");
    std::fs::write(
        &conf,
        format!(
            "node = \"gw\"\ndb = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
             client_id = \"bench-gw\"\nbatch_max = {}\nbatch_interval = \"5s\"\n",
            db.display().to_string(),
            plan.batch_max
        ),
    )
    .expect("write the gateway's config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeprio"))
        .arg("--config")
        .arg(&conf)
        .args(["gateway", "--max-batch", &plan.max_batch.to_string()])
        .env_remove("EDGEPRIO_CONFIG")
        .env_remove("EDGEPRIO_DB")
        .env_remove("JOURNAL_STREAM")
        // `EDGEPRIO_BENCH_LOG=edgeprio=debug` for a closer look (`--keep`).
        .env(
            "EDGEPRIO_LOG",
            std::env::var("EDGEPRIO_BENCH_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gateway");
    let stderr = child.stderr.take().expect("piped");
    let subscribed = Arc::new(Mutex::new(false));
    let flag = subscribed.clone();
    let log = dir.join("gw.log");
    let mut file = std::fs::File::create(&log).expect("create the gateway's log file");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("MQTT consumer subscribed") {
                *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
            }
            let _ = writeln!(file, "{line}");
        }
    });
    let gw = Gateway {
        child: Killed(child),
        subscribed,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !*gw.subscribed.lock().unwrap_or_else(PoisonError::into_inner) {
        assert!(
            Instant::now() < deadline,
            "the gateway did not subscribe: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (gw, db)
}

/// What the gateway run measured.
#[derive(Debug)]
struct Figures {
    /// From the first publish to the last publisher done.
    published: Duration,
    /// From the first publish to the last row committed.
    committed: Duration,
    /// From the first publish to the last reading received from the gateway.
    out: Duration,
    /// From the first publish to the last full message received from it,
    /// and the distinct readings received by then.
    out_bulk: Duration,
    bulk: usize,
    /// Messages and readings received from the gateway, and the distinct
    /// (node, sensor, seq) among them.
    out_messages: u64,
    out_readings: u64,
    out_distinct: usize,
    /// `VmHWM`, and `VmRSS`/`RssAnon` settled after the run, in bytes.
    peak: u64,
    steady: u64,
    steady_anon: u64,
    /// The largest `VmRSS` sampled during the run.
    sampled_max: u64,
    /// CPU time (user and system) used from the first publish to the
    /// last reading out: by the gateway, and by the broker.
    gateway_cpu: Duration,
    broker_cpu: Duration,
}

/// Rows committed in the gateway's log (its ids grow by one per row).
fn committed_rows(log: &Connection) -> u64 {
    log.query_row("SELECT coalesce(max(id), 0) FROM readings", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

fn run_gateway(dir: &Path, broker: u32, port: u16, files: &[PathBuf], plan: &Plan) -> Figures {
    let total = plan.total();
    let partial = usize::try_from(plan.nodes * u64::from(plan.batch_max.saturating_sub(1)))
        .unwrap_or(usize::MAX);
    let bulk = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .saturating_sub(partial);
    let out = Subscriber::start(
        port,
        &["edgeprio/+/realtime", "edgeprio/+/batch"],
        true,
        bulk,
    );
    let (gw, db) = start_gateway(dir, port, plan);
    let pid = gw.child.0.id();
    let log = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the gateway's log");
    let began = Instant::now();
    let cpu_at_start = (cpu(pid), cpu(broker));
    let mut publishers = publish(port, "edgeprio", files);
    let mut published = None;
    let mut committed = None;
    let mut sampled_max = 0;
    let mut progress = (0, Instant::now());
    loop {
        let now = Instant::now();
        if published.is_none() {
            published = finished(&mut publishers);
        }
        if committed.is_none() && committed_rows(&log) >= total {
            committed = Some(now);
        }
        sampled_max = sampled_max.max(rss(pid).0);
        let readings = out.with(|t| t.seen.len());
        if committed.is_some() && readings as u64 >= total {
            break;
        }
        let rows = committed_rows(&log);
        let done = rows + readings as u64;
        if done > progress.0 {
            progress = (done, now);
        }
        assert!(
            now - progress.1 < Duration::from_secs(30),
            "no progress for 30 s: {rows} of {total} committed, {readings} received; still in \
             the outbox: {}; the gateway's log: {}",
            unpublished(&log),
            tail(&dir.join("gw.log"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let published = published.map_or_else(
        || {
            wait_all(&mut publishers);
            began.elapsed()
        },
        |t| t - began,
    );
    let (gateway_cpu, broker_cpu) = (
        cpu(pid).saturating_sub(cpu_at_start.0),
        cpu(broker).saturating_sub(cpu_at_start.1),
    );
    let committed = committed.expect("checked") - began;
    let out_last = out.with(|t| t.last).expect("readings came");
    let out_bulk = out.with(|t| t.bulk.1).unwrap_or(out_last);
    std::thread::sleep(Duration::from_secs(2));
    let (steady, peak, steady_anon) = rss(pid);
    if let Some(keep) = &plan.keep {
        std::fs::create_dir_all(keep).expect("create --keep");
        std::fs::copy(dir.join("gw.log"), keep.join("gw.log")).expect("keep the log");
    }
    let (out_messages, out_readings, out_distinct) =
        out.with(|t| (t.messages, t.readings, t.seen.len()));
    Figures {
        published,
        committed,
        out: out_last - began,
        out_bulk: out_bulk - began,
        bulk,
        out_messages,
        out_readings,
        out_distinct,
        peak,
        steady,
        steady_anon,
        sampled_max,
        gateway_cpu,
        broker_cpu,
    }
}

/// The gateway's outbox by route, for a stalled run's message.
fn unpublished(log: &Connection) -> String {
    log.prepare("SELECT route, count(*) FROM readings WHERE published_ms IS NULL GROUP BY route")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(format!(
                    "{} {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        })
        .map_or_else(|e| e.to_string(), |v| v.join(", "))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Zero loss, checked: every (node, sensor, seq) published is in the log
/// exactly once, none renumbered, nothing else in it. Returns the rows.
fn check_log(db: &Path, plan: &Plan) -> u64 {
    let log = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the gateway's log");
    let mut rows = log
        .prepare("SELECT node, sensor, seq, coalesce(assigned, '') FROM readings")
        .expect("query");
    let mut seen = HashSet::new();
    let mut twice = 0;
    let mut renumbered = 0;
    for row in rows
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .expect("query")
    {
        let (node, sensor, seq, assigned) = row.expect("row");
        if assigned.contains("renumbered") {
            renumbered += 1;
        }
        if !seen.insert((node, sensor, seq)) {
            twice += 1;
        }
    }
    let mut missing = 0;
    for n in 0..plan.nodes {
        for s in 0..plan.sensors {
            for seq in 1..=plan.per_stream() {
                let key = (node(n), sensor(s), i64::try_from(seq).unwrap_or(0));
                if !seen.contains(&key) {
                    missing += 1;
                }
            }
        }
    }
    let total = plan.total();
    assert_eq!(
        (missing, twice, renumbered, seen.len() as u64),
        (0, 0, 0, total),
        "loss: (missing, logged twice, renumbered, distinct) of {total} published"
    );
    total
}

fn main() {
    let plan = Plan::from_args();
    let total = plan.total();
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        inflight: plan.inflight,
        queued: u32::try_from(total).unwrap_or(u32::MAX),
    };
    let (broker, port) = mosquitto_with(dir.path(), limits);
    let files = payloads(dir.path(), &plan);
    println!(
        "gateway: {total} raw readings over {} streams ({} nodes x {} sensors), QoS 1; \
         broker max_inflight_messages {}, max_queued_messages {}; gateway --max-batch {}, \
         batch_max {}",
        plan.streams(),
        plan.nodes,
        plan.sensors,
        limits.inflight,
        limits.queued,
        plan.max_batch,
        plan.batch_max
    );
    if plan.ceiling {
        println!(
            "gateway/ceiling: mosquitto_pub -> mosquitto_sub relay, QoS 1, no gateway: {:.0} msg/s",
            ceiling(port, &files, total)
        );
    }
    let f = run_gateway(dir.path(), broker.0.id(), port, &files, &plan);
    let logged = check_log(&dir.path().join("gw.db"), &plan);
    if let Some(keep) = &plan.keep {
        std::fs::copy(dir.path().join("gw.db"), keep.join("gw.db")).expect("keep the db");
    }
    let missing_out = total - f.out_distinct as u64;
    assert_eq!(missing_out, 0, "readings never published by the gateway");
    #[expect(clippy::cast_precision_loss, reason = "figures in MiB")]
    let mib = |b: u64| b as f64 / MIB;
    println!(
        "gateway/in: {total} published in {:.2} s ({:.0}/s into the broker); committed to the \
         gateway's log in {:.2} s: {:.0} raw readings/s",
        f.published.as_secs_f64(),
        rate(total, f.published),
        f.committed.as_secs_f64(),
        rate(total, f.committed)
    );
    println!(
        "gateway/out: {} readings in {} messages received from the gateway; all but the \
         partial batches after {:.2} s: {:.0} readings/s; the last after {:.2} s",
        f.out_readings,
        f.out_messages,
        f.out_bulk.as_secs_f64(),
        rate(f.bulk as u64, f.out_bulk),
        f.out.as_secs_f64(),
    );
    println!(
        "gateway/loss: 0 ({logged} of {total} (node, sensor, seq) in the log, each once, none \
         renumbered; all {} published, {} sent twice)",
        f.out_distinct,
        f.out_readings - f.out_distinct as u64
    );
    #[expect(clippy::cast_precision_loss, reason = "a figure")]
    let per_reading = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    println!(
        "gateway/cpu: from the first publish to the last reading out: gateway {:.2} s ({:.1} us \
         per reading), mosquitto {:.2} s ({:.1} us per reading), on {} cores",
        f.gateway_cpu.as_secs_f64(),
        per_reading(f.gateway_cpu),
        f.broker_cpu.as_secs_f64(),
        per_reading(f.broker_cpu),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    println!(
        "gateway/rss: {} streams: peak VmHWM {:.1} MiB (largest sample {:.1}); 2 s after: \
         VmRSS {:.1} MiB (RssAnon {:.1})",
        plan.streams(),
        mib(f.peak),
        mib(f.sampled_max),
        mib(f.steady),
        mib(f.steady_anon)
    );
}
