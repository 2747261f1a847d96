//! Helpers of tests/collect.rs: the `edgeprio collect` process, and what a
//! test reads back from its `PostgreSQL` with the `psql` client (the
//! machine's, as a user checks a database).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::postgres::Postgres;
use crate::common::{self, ChildGuard, Row};
use crate::mosquitto::Broker;

/// (node, sensor, log, seq): the key every store keeps a reading once under.
pub type Key = (String, String, String, i64);

/// Writes `<dir>/collect.toml`: only `[mqtt]`, the broker's URL.
pub fn collect_config(dir: &Path, broker: &Broker) -> PathBuf {
    let path = dir.join("collect.toml");
    std::fs::write(&path, format!("[mqtt]\nurl = \"{}\"\n", broker.url()))
        .expect("write the collector's config");
    path
}

/// What a collector logged at SIGTERM ("collector stopped").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Messages the consumer received.
    pub received: u64,
    /// Readings newly stored.
    pub inserted: u64,
    /// Readings the database had already.
    pub duplicates: u64,
    /// Messages refused as malformed.
    pub rejected: u64,
}

/// A running `edgeprio --config C collect ...`, its stderr in a file;
/// killed on drop.
pub struct Collect {
    /// The process.
    child: ChildGuard,
    /// Its stderr, at log level info.
    err: PathBuf,
}

impl Collect {
    /// Starts `collect --route ROUTE --db DB ARGS...` in `dir` and waits
    /// until its subscription is acknowledged (a message published after
    /// that is the collector's, even before it is delivered).
    pub fn start(dir: &Path, config: &Path, route: &str, db: &str, args: &[&str]) -> Collect {
        let err = dir.join(format!(
            "collect-{route}-{}.err",
            common::postgres::free_port()
        ));
        let mut cmd = common::std_cmd(dir);
        cmd.arg("--config")
            .arg(config)
            .args(["collect", "--route", route, "--db", db])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(common::stderr_file(&err));
        let mut c = Collect {
            child: ChildGuard::spawn(cmd),
            err,
        };
        c.wait_line("MQTT consumer subscribed", Duration::from_secs(20));
        c
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until stderr has a line containing `words`, failing at once
    /// if the collector exits.
    pub fn wait_line(&mut self, words: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.child.try_wait().unwrap() {
                panic!(
                    "the collector exited ({status}) while waiting for {words:?}:\n{}",
                    self.stderr()
                );
            }
            if self.stderr().contains(words) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {words:?} from the collector after {limit:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with its stderr) if the collector has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.child.try_wait() {
            panic!("the collector exited ({status}):\n{}", self.stderr());
        }
    }

    /// SIGTERM: it must exit 0 within 30 s without a panic; its totals.
    pub fn stop(mut self) -> (Totals, String) {
        common::send_signal(self.child.id(), "TERM");
        let status = self.child.wait_timeout(Duration::from_secs(30));
        let stderr = self.stderr();
        let Some(status) = status else {
            panic!("the collector did not stop within 30 s of SIGTERM:\n{stderr}")
        };
        assert_eq!(
            status.code(),
            Some(0),
            "exit {status} after SIGTERM:\n{stderr}"
        );
        common::assert_no_panic(&stderr);
        (totals(&stderr), stderr)
    }

    /// SIGKILL (the machine or the process dies: no DISCONNECT, no
    /// acknowledgement of what it holds) and reap.
    pub fn kill9(&mut self) -> ExitStatus {
        common::send_signal(self.child.id(), "KILL");
        self.child
            .wait_timeout(Duration::from_secs(10))
            .expect("SIGKILL ends the collector")
    }
}

/// The counts of the "collector stopped" line of `stderr`.
pub fn totals(stderr: &str) -> Totals {
    let line = stderr
        .lines()
        .find(|l| l.contains("collector stopped"))
        .unwrap_or_else(|| panic!("no \"collector stopped\" line:\n{stderr}"));
    let field = |name: &str| -> u64 {
        let at = line
            .find(&format!(" {name}="))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"));
        line[at + name.len() + 2..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|e| panic!("{name}= in {line:?}: {e}"))
    };
    Totals {
        received: field("received"),
        inserted: field("inserted"),
        duplicates: field("duplicates"),
        rejected: field("rejected"),
    }
}

/// The rows of `sql` by `psql` (unaligned, tab-separated, no header);
/// panics with psql's error.
pub fn psql(pg: &Postgres, sql: &str) -> Vec<Vec<String>> {
    let out = Command::new("psql")
        .arg(pg.url())
        .args([
            "-X",
            "-A",
            "-t",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql (apt-get install postgresql-client)");
    assert!(
        out.status.success(),
        "psql -c {sql:?} failed ({}):\n{}",
        out.status,
        common::text(&out.stderr)
    );
    common::text(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// The one value `sql` selects, as an integer.
pub fn psql_i64(pg: &Postgres, sql: &str) -> i64 {
    let rows = psql(pg, sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0][0]
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {rows:?}: {e}"))
}

/// Rows in `readings`.
pub fn pg_count(pg: &Postgres) -> i64 {
    psql_i64(pg, "SELECT count(*) FROM readings")
}

/// Waits until `readings` holds `n` rows (never more: more is a failure
/// at once).
pub fn wait_pg_count(pg: &Postgres, n: usize, limit: Duration, what: &str) {
    let want = i64::try_from(n).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let got = pg_count(pg);
        assert!(
            got <= want,
            "{what}: PostgreSQL holds {got} readings, want {want}"
        );
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: PostgreSQL holds {got} readings after {limit:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One row of `readings` in `PostgreSQL`: what the agent's log has of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PgRow {
    /// `ts_ms`.
    pub ts_ms: i64,
    /// `temperature_c`.
    pub temperature_c: f64,
    /// `humidity_pct`.
    pub humidity_pct: f64,
    /// `weight_temperature`.
    pub weight_temperature: i64,
    /// `weight_humidity`.
    pub weight_humidity: i64,
    /// `priority`.
    pub priority: i64,
    /// `route`.
    pub route: String,
    /// `late`.
    pub late: bool,
    /// `resent`.
    pub resent: bool,
}

/// Every row of `readings` by key; asserts first that no key is stored
/// twice (`count(*) = count(DISTINCT key)`).
pub fn pg_rows(pg: &Postgres) -> BTreeMap<Key, PgRow> {
    let dup = psql(
        pg,
        "SELECT count(*), count(DISTINCT (node, sensor, log, seq)) FROM readings",
    );
    assert_eq!(dup[0][0], dup[0][1], "a key is stored twice: {dup:?}");
    let rows = psql(
        pg,
        "SELECT node, sensor, log, seq, ts_ms, temperature_c, humidity_pct, weight_temperature,
                weight_humidity, priority, route, late, resent
         FROM readings ORDER BY id",
    );
    let n = rows.len();
    let map: BTreeMap<Key, PgRow> = rows
        .into_iter()
        .map(|r| {
            let int = |i: usize| r[i].parse::<i64>().unwrap();
            let float = |i: usize| r[i].parse::<f64>().unwrap();
            (
                (r[0].clone(), r[1].clone(), r[2].clone(), int(3)),
                PgRow {
                    ts_ms: int(4),
                    temperature_c: float(5),
                    humidity_pct: float(6),
                    weight_temperature: int(7),
                    weight_humidity: int(8),
                    priority: int(9),
                    route: r[10].clone(),
                    late: r[11] == "t",
                    resent: r[12] == "t",
                },
            )
        })
        .collect();
    assert_eq!(map.len(), n, "a key is stored twice");
    map
}

/// The log's identity (`log_identity.log_id`), part of every key.
pub fn log_id(db: &Path) -> String {
    common::open_ro(db)
        .query_row("SELECT log_id FROM log_identity", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("no log identity in {}: {e}", db.display()))
}

/// The rows of an agent's log at `db` that `keep` selects, by key.
pub fn log_rows(db: &Path, keep: impl Fn(&Row) -> bool) -> BTreeMap<Key, Row> {
    let log = log_id(db);
    common::readings(db)
        .into_iter()
        .filter(|r| keep(r))
        .map(|r| ((r.node.clone(), r.sensor.clone(), log.clone(), r.seq), r))
        .collect()
}

/// `PostgreSQL` holds exactly the readings `want` (the agents' logs), each
/// once, with the logged values and route, none late nor resent.
pub fn assert_stored_exactly(pg: &Postgres, want: &BTreeMap<Key, Row>) {
    let got = pg_rows(pg);
    let missing: Vec<&Key> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&Key> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "PostgreSQL misses {} logged readings (e.g. {:?}) and has {} never logged (e.g. {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
    for (key, row) in want {
        let stored = &got[key];
        let logged = PgRow {
            ts_ms: row.ts_ms,
            temperature_c: row.temperature_c,
            humidity_pct: row.humidity_pct,
            weight_temperature: row.weight_temperature,
            weight_humidity: row.weight_humidity,
            priority: row.priority,
            route: row.route.clone(),
            late: false,
            resent: false,
        };
        assert_eq!(stored, &logged, "{key:?}: stored vs logged");
    }
}

/// One row of `readings_grafana` as compared: (metric, time in Unix ms,
/// temperature and humidity as bits (exact), "priority/route/node/sensor").
type ViewRow = (String, i64, u64, u64, String);

/// The Grafana view has one row per reading of `want`, at its instant,
/// named `node/sensor`, with its values, priority and route.
pub fn assert_grafana_view(pg: &Postgres, want: &BTreeMap<Key, Row>) {
    let mut view: Vec<ViewRow> = psql(
        pg,
        "SELECT metric, round(extract(epoch FROM time) * 1000)::bigint, temperature_c,
                humidity_pct, priority || '/' || route || '/' || node || '/' || sensor
         FROM readings_grafana",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].clone(),
            r[1].parse().unwrap(),
            r[2].parse::<f64>().unwrap().to_bits(),
            r[3].parse::<f64>().unwrap().to_bits(),
            r[4].clone(),
        )
    })
    .collect();
    view.sort();
    let mut logged: Vec<ViewRow> = want
        .values()
        .map(|r| {
            (
                format!("{}/{}", r.node, r.sensor),
                r.ts_ms,
                r.temperature_c.to_bits(),
                r.humidity_pct.to_bits(),
                format!("{}/{}/{}/{}", r.priority, r.route, r.node, r.sensor),
            )
        })
        .collect();
    logged.sort();
    assert_eq!(view.len(), logged.len(), "rows of readings_grafana");
    for (v, l) in view.iter().zip(&logged) {
        assert_eq!(v, l, "readings_grafana vs the log");
    }
}
