//! `edgeprio bench` end to end (issue 14): short runs of the real command,
//! with its own Mosquitto, gateway, relay and collectors, that check the
//! accounting, not the speed: every mode ran, no reading was lost or
//! stored twice (checked again here, in the collectors' databases the run
//! kept), and the CSV, JSON and plot are written and well-formed.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

use common::postgres::Postgres;

fn bench(args: &[&str]) -> Output {
    Command::cargo_bin("edgeprio")
        .expect("the edgeprio binary")
        .arg("bench")
        .args(args)
        .env_remove("EDGEPRIO_CONFIG")
        .env_remove("EDGEPRIO_MAX_BATCH")
        .timeout(std::time::Duration::from_mins(5))
        .output()
        .expect("run edgeprio bench")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "edgeprio bench failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the JSON report");
    serde_json::from_str(&text).expect("the JSON report parses")
}

fn mode<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .find(|m| m["mode"] == name)
        .unwrap_or_else(|| panic!("mode {name} is not in the report"))
}

fn int(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count: {v}"))
}

/// Every (node, sensor, seq) in a kept collector database.
fn keys(db: &Path, filter: &str) -> Vec<(String, String, i64)> {
    let conn = rusqlite::Connection::open(db).expect("open a collector database");
    let mut stmt = conn
        .prepare(&format!("SELECT node, sensor, seq FROM readings {filter}"))
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The stored keys, checked here and not by the bench: each once, every
/// stream contiguous from seq 1 (nothing missing in between), as many as
/// the report says were published.
fn check_stored(rows: &[(String, String, i64)], published: u64, streams: usize) {
    let unique: HashSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "a reading stored twice");
    let mut top: HashMap<(&str, &str), i64> = HashMap::new();
    for (n, s, seq) in rows {
        let t = top.entry((n, s)).or_default();
        *t = (*t).max(*seq);
    }
    assert_eq!(top.len(), streams, "streams stored: {top:?}");
    let contiguous: i64 = top.values().sum();
    assert_eq!(
        u64::try_from(contiguous).expect("positive"),
        published,
        "highest seqs do not add up to the readings published"
    );
    assert_eq!(rows.len() as u64, published);
}

#[test]
fn a_short_bench_accounts_for_every_reading_in_every_mode_and_writes_its_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (csv, js, png, keep) = (
        dir.path().join("b.csv"),
        dir.path().join("b.json"),
        dir.path().join("b.png"),
        dir.path().join("kept"),
    );
    let out = bench(&[
        "--duration",
        "2s",
        "--nodes",
        "3",
        "--sensors",
        "2",
        "--csv",
        csv.to_str().expect("utf-8"),
        "--json",
        js.to_str().expect("utf-8"),
        "--plot",
        png.to_str().expect("utf-8"),
        "--keep",
        keep.to_str().expect("utf-8"),
    ]);
    let table = ok(&out);
    for m in ["relay", "centralized", "priority"] {
        assert!(table.contains(m), "the table has no {m} row:\n{table}");
    }
    assert!(table.contains("priority / centralized"), "{table}");

    let report = json(&js);
    assert_eq!(report["nodes"], 3);
    for name in ["relay", "centralized", "priority"] {
        let m = mode(&report, name);
        let published = int(m, "published");
        assert!(published > 0, "{name} published nothing");
        assert_eq!(int(m, "stored"), published, "{name}: {m}");
        for k in ["lost", "twice", "unexpected"] {
            assert_eq!(int(&m["audit"], k), 0, "{name}: {k} in {m}");
        }
        let samples = m["per_second"].as_array().expect("per-second samples");
        assert!(!samples.is_empty(), "{name}: no samples");
        let in_samples: u64 = samples.iter().map(|s| s.as_u64().expect("a count")).sum();
        assert!(
            in_samples <= published,
            "{name}: samples {in_samples} > {published}"
        );
        let names: Vec<&str> = m["usage"]
            .as_array()
            .expect("usage")
            .iter()
            .map(|u| u["name"].as_str().expect("a name"))
            .collect();
        let expected: &[&str] = if name == "relay" {
            &["relay", "mosquitto"]
        } else {
            &["gateway", "collect realtime", "collect batch", "mosquitto"]
        };
        for e in expected {
            assert!(names.contains(e), "{name}: no usage of {e}: {names:?}");
        }
    }
    // The routing split: everything real-time in the baseline, the steps
    // only (3 % of the load) with the priority.
    let central = mode(&report, "centralized");
    assert_eq!(central["realtime_share"], 1.0);
    assert!(central["audit"]["latency"]["n"].as_u64() == Some(int(central, "stored")));
    let prio = mode(&report, "priority");
    let share = prio["realtime_share"].as_f64().expect("a share");
    assert!(
        (0.005..0.1).contains(&share),
        "priority real-time share {share}"
    );
    assert!(
        report["ratios"]["priority_over_centralized"]
            .as_f64()
            .is_some()
    );
    assert!(report["ratios"]["gateway_over_relay"].as_f64().is_some());

    // The collectors' own database, read here: what the report claims.
    for name in ["centralized", "priority"] {
        let db = keep.join(name).join("collected.db");
        let rows = keys(&db, "");
        check_stored(&rows, int(mode(&report, name), "published"), 6);
        let realtime = keys(&db, "WHERE route = 'realtime'").len() as u64;
        assert_eq!(realtime, int(&mode(&report, name)["audit"], "realtime"));
        let resent = keys(&db, "WHERE resent").len() as u64;
        let audit = &mode(&report, name)["audit"];
        assert_eq!(int(audit, "repaired"), resent, "{name}: {audit}");
        assert_eq!(
            int(audit, "dropped"),
            resent,
            "{name}: nothing lost: {audit}"
        );
    }
    assert!(
        mode(&report, "relay")["audit"]["dropped"].is_null(),
        "the relay repairs nothing"
    );

    check_csv(&csv, &report);
    check_png(&png);
}

/// CSV: a row per mode, the same figures as the JSON.
fn check_csv(csv: &Path, report: &Value) {
    let mut reader = csv::Reader::from_path(csv).expect("the CSV");
    let header = reader.headers().expect("a header").clone();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| h == n)
            .unwrap_or_else(|| panic!("no {n} column"))
    };
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a row")).collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let m = mode(report, &r[col("mode")]);
        assert_eq!(
            r[col("published")].parse::<u64>().expect("a count"),
            int(m, "published")
        );
        assert_eq!(&r[col("lost")], "0");
        let audit = &m["audit"];
        for k in ["dropped", "repaired"] {
            let want = audit[k].as_u64().map(|n| n.to_string()).unwrap_or_default();
            assert_eq!(r[col(k)], want, "{k}");
        }
    }
}

/// PNG: the signature, an IHDR of the figure's size, and an IEND.
fn check_png(png: &Path) {
    let bytes = std::fs::read(png).expect("the plot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((dim(16), dim(20)), (1400, 600));
    assert_eq!(
        &bytes[bytes.len() - 8..bytes.len() - 4],
        b"IEND",
        "truncated PNG"
    );
    assert!(
        bytes.len() > 20_000,
        "an empty picture: {} bytes",
        bytes.len()
    );
}

#[test]
fn the_collectors_store_into_postgresql_with_sink() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (js, svg) = (dir.path().join("b.json"), dir.path().join("b.svg"));
    let out = bench(&[
        "--duration",
        "2s",
        "--nodes",
        "2",
        "--sensors",
        "2",
        "--modes",
        "priority,centralized",
        "--sink",
        &pg.url(),
        "--keep",
        dir.path().join("kept").to_str().expect("utf-8"),
        "--json",
        js.to_str().expect("utf-8"),
        "--plot",
        svg.to_str().expect("utf-8"),
    ]);
    let table = ok(&out);
    assert!(table.contains("PostgreSQL"), "{table}");
    assert!(
        !table.contains(common::postgres::PASSWORD),
        "the password is shown:\n{table}"
    );
    let report = json(&js);
    assert_eq!(report["modes"].as_array().map(Vec::len), Some(2));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for name in ["priority", "centralized"] {
        let m = mode(&report, name);
        assert_eq!(int(&m["audit"], "lost"), 0, "{m}");
        let rows: Vec<(String, String, i64)> = runtime.block_on(async {
            let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client
                .query(
                    &format!("SELECT node, sensor, seq FROM edgeprio_bench_{name}.readings"),
                    &[],
                )
                .await
                .expect("the kept schema")
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        });
        check_stored(&rows, int(m, "published"), 4);
    }
    let svg = std::fs::read_to_string(&svg).expect("the SVG plot");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "not an SVG"
    );
    assert!(svg.contains("priority"), "the SVG has no legend");
}

#[test]
fn a_sink_that_is_not_postgresql_is_refused_naming_the_flag() {
    let out = bench(&[
        "--duration",
        "1s",
        "--nodes",
        "1",
        "--modes",
        "priority",
        "--sink",
        "mysql://x/y",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--sink") && err.contains("mysql://x/y"),
        "{err}"
    );
    let out = bench(&["--duration", "0s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--duration") && err.contains("1s..1h"),
        "{err}"
    );
}
