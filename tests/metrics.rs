//! The Prometheus endpoint of the real agent: `edgeprio run` with
//! `[metrics]` on a free loopback port, scraped over TCP while it reads a
//! simulated sensor and publishes to its embedded broker; and across
//! reloads (SIGHUP), which rebind the same address.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{ChildGuard, send_signal, std_cmd, stderr_file, wait_for};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The value of the sample line starting with `series ` in `body`.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn config(dir: &Path, metrics: u16, broker: u16) -> std::path::PathBuf {
    let path = dir.join("edgeprio.toml");
    std::fs::write(
        &path,
        format!(
            "node = \"pi\"\ninterval = \"2s\"\ndb = \"log.db\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [broker]\nlisten = \"127.0.0.1:{broker}\"\n\
             [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n"
        ),
    )
    .expect("write config");
    path
}

/// `edgeprio run` on `cfg`, its stderr in `dir/stderr.txt`.
fn run(dir: &Path, cfg: &Path) -> ChildGuard {
    let mut cmd = std_cmd(dir);
    cmd.arg("--config")
        .arg(cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(stderr_file(&dir.join("stderr.txt")));
    ChildGuard::spawn(cmd)
}

#[test]
fn endpoint_serves_the_agents_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = config(dir.path(), port, free_port());
    let mut child = run(dir.path(), &cfg);
    let db = dir.path().join("log.db");
    wait_for(Duration::from_secs(30), "three readings", || {
        // The file exists a moment before its schema does.
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT count(*) FROM readings", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|n| n >= 3)
    });
    let mut body = String::new();
    wait_for(
        Duration::from_secs(15),
        "a scrape with the broker up",
        || {
            body = scrape(port).unwrap_or_default();
            value(&body, "edgeprio_broker_connected{node=\"pi\"}") == Some(1.0)
        },
    );
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let taken = value(
        &body,
        "edgeprio_readings_total{node=\"pi\",sensor=\"lab\",route=\"batch\"}",
    )
    .expect("batch readings series");
    assert!(taken >= 3.0, "{body}");
    assert!(
        value(
            &body,
            "edgeprio_readings_total{node=\"pi\",sensor=\"lab\",route=\"realtime\"}"
        )
        .is_some(),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "edgeprio_read_failures_total{node=\"pi\",sensor=\"lab\",kind=\"timeout\"}"
        ),
        Some(0.0),
        "{body}"
    );
    let age = value(
        &body,
        "edgeprio_last_reading_age_seconds{node=\"pi\",sensor=\"lab\"}",
    )
    .expect("age series");
    assert!((0.0..10.0).contains(&age), "age {age}\n{body}");
    assert!(
        value(&body, "edgeprio_outbox_depth{node=\"pi\"}").is_some(),
        "{body}"
    );
    assert!(body.contains("edgeprio_build_info{"), "{body}");
    send_signal(child.id(), "TERM");
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("stops after SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cfg = config(dir.path(), port, free_port());
    let out = std_cmd(dir.path())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert!(
        err.contains("metrics.listen") && err.contains(&port.to_string()),
        "{err}"
    );
}

/// Each SIGHUP with a valid file restarts the agent and its endpoint on the
/// same address: the old socket must be closed before the new one binds
/// (it once was not, and the second reload failed with "address in use").
#[test]
fn the_endpoint_survives_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = config(dir.path(), port, free_port());
    let mut child = run(dir.path(), &cfg);
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    let up = |body: &str| body.contains("edgeprio_build_info{");
    // Each agent, then its endpoint, is up before the next SIGHUP, so every
    // reload closes a bound socket and binds it again.
    let started = |n: usize| {
        let err = stderr();
        err.matches("agent running").count() >= n
            && err.matches("metrics endpoint listening").count() >= n
    };
    wait_for(Duration::from_secs(30), "the agent running", || started(1));
    for reload in 1..=3 {
        send_signal(child.id(), "HUP");
        wait_for(
            Duration::from_secs(30),
            &format!("the agent running again after reload {reload}"),
            || started(reload + 1),
        );
        wait_for(
            Duration::from_secs(30),
            &format!("a scrape after reload {reload}"),
            || {
                assert!(
                    child.child.try_wait().expect("try_wait").is_none(),
                    "the agent exited on reload {reload}:\n{}",
                    stderr()
                );
                scrape(port).is_some_and(|b| up(&b))
            },
        );
    }
    send_signal(child.id(), "TERM");
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no stop within 20 s of SIGTERM:\n{}", stderr()));
    assert!(status.success(), "{status}\n{}", stderr());
}
