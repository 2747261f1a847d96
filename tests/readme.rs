//! The README's `sqlite3` queries are part of the product: run each one
//! with the real `sqlite3` shell against a log the real demo wrote.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{demo, text};

/// The bodies of the README's fenced `sql` blocks.
fn readme_sql_blocks() -> Vec<String> {
    let readme = include_str!("../README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(body), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Runs `sql` in the `sqlite3` shell on `db`, the SQL on stdin as a person
/// would paste it.
fn sqlite3(db: &Path, args: &[&str], sql: &str) -> Output {
    let mut child = Command::new("sqlite3")
        .args(args)
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sqlite3");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(sql.as_bytes())
        .expect("write the query");
    child.wait_with_output().expect("wait for sqlite3")
}

#[test]
fn readme_queries_run_against_a_real_log() {
    let blocks = readme_sql_blocks();
    assert_eq!(blocks.len(), 6, "the README promises six sqlite3 queries");

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let out = demo(dir.path(), &db, 30);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let shell = Command::new("sqlite3").arg("-version").output();
    assert!(
        shell.is_ok_and(|o| o.status.success()),
        "the sqlite3 shell is missing: scripts/test installs it (apt-get install sqlite3)"
    );
    for sql in &blocks {
        let out = sqlite3(&db, &["-bail", "-header", "-csv"], sql);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{sql}\n{}", text(&out.stderr));
        let mut lines = stdout.lines();
        let header = lines.next().unwrap_or_default();
        assert!(!header.is_empty(), "no result header for\n{sql}");
        assert!(lines.next().is_some(), "no result rows for\n{sql}");
    }

    // Spot-check the answers against what the demo is known to write.
    let run = |sql: &str| text(&sqlite3(&db, &["-bail"], sql).stdout);
    let split = run(&blocks[3]);
    let lab = split.lines().find(|l| l.starts_with("lab|")).unwrap();
    // 30 heater readings: only seq 8 (the paper's record 9) is real-time.
    assert_eq!(lab, "lab|1|29|3.3", "{split}");
    let latest = run(&blocks[1]);
    assert_eq!(latest.lines().count(), 4, "{latest}");
    assert!(latest.lines().all(|l| l.contains("|29|")), "{latest}");
    let outbox = run(&blocks[5]);
    // The demo's embedded broker acknowledged all 120 readings.
    assert!(outbox.starts_with("0|"), "{outbox}");
    // The gateway's `assigned` query: an agent assigns nothing after the
    // fact, so the column is empty on every row of its log.
    let assigned = run(&blocks[0]);
    assert_eq!(assigned.lines().count(), 10, "{assigned}");
    assert!(assigned.lines().all(|l| l.ends_with('|')), "{assigned}");
}
