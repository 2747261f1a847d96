//! The Prometheus endpoint of the real agent under a flood of idle
//! connections (issue 12, item 9): 200 clients connect to `[metrics]
//! listen` and send nothing. Before the fix the endpoint served 8
//! connections at a time and left the rest in the listen backlog, so a
//! scrape waited behind them (5 s header timeout each: minutes), and 65 of
//! 145 were still held 35 s later.

mod common;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ChildGuard, std_cmd, stderr_file, wait_for};

/// Idle connections the test holds.
const IDLE: usize = 200;

/// The endpoint's header timeout (src/metrics.rs): an idle connection is
/// closed this long after it opened.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// What a scrape may take on a loaded test machine: the endpoint answers
/// in milliseconds.
const SCRAPE_TIME: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A scrape: the status line and how long the answer took, or why none
/// came within `limit`.
fn scrape(port: u16, limit: Duration) -> Result<(String, Duration), String> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("no answer after {:?}: {e}", start.elapsed()))?;
    let status = out.lines().next().unwrap_or_default().to_owned();
    Ok((status, start.elapsed()))
}

/// Whether the server has closed `s` (EOF or reset) by `deadline`.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .expect("set a read timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        // An answer (408, say) is the server talking before it closes.
        Ok(_) => closed_by(s, deadline),
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn idle_connections_neither_starve_scrapes_nor_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("edgeprio.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"pi\"\ninterval = \"2s\"\ndb = \"log.db\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n"
        ),
    )
    .unwrap();
    let err = dir.path().join("stderr.txt");
    let mut cmd = std_cmd(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(stderr_file(&err));
    let mut child = ChildGuard::spawn(cmd);
    wait_for(Duration::from_secs(30), "the endpoint to answer", || {
        assert!(
            child.child.try_wait().unwrap().is_none(),
            "run exited: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        scrape(port, SCRAPE_TIME).is_ok()
    });

    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    let opened = Instant::now();
    let (status, took) = scrape(port, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("a scrape behind {IDLE} idle connections failed: {e}"));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        took < SCRAPE_TIME,
        "a scrape behind {IDLE} idle connections took {took:?}"
    );

    // Every idle connection is closed once the header timeout has passed
    // (the early ones sooner, to make room), with two seconds of slack for
    // a loaded machine (the server accepts the last ones a moment after
    // they connect).
    let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(2);
    let held = idle
        .iter_mut()
        .filter_map(|s| (!closed_by(s, deadline)).then_some(()))
        .count();
    assert_eq!(
        held,
        0,
        "{held} of {IDLE} idle connections still open {:?} after they were opened",
        opened.elapsed()
    );
    // And the endpoint still answers.
    let (status, _) = scrape(port, Duration::from_secs(10)).expect("a scrape after the flood");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}
