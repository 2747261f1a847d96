//! A backup restored in place over the log (issue 12, item 5, found by
//! review): `sqlite3 e.db ".restore backup.db"` and `cp backup.db e.db`
//! write into the log's own inode, so device, inode and birth time stay
//! the same and the file looked like the log it was. It kept its identity
//! and handed out again the seqs after the backup's, which consumers
//! already held with other readings. Through the real binary and the real
//! `sqlite3` CLI: after a restore the log has a new identity and no
//! (sensor, log, seq) names two readings; a plain restart keeps it.
//!
//! Needs the `sqlite3` CLI (scripts/test installs it).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    ChildGuard, assert_no_panic, open_ro, send_signal, std_cmd, stderr_file, text, wait_for,
};

/// Readings a run adds before it is stopped: several cycles of both
/// sensors.
const PER_RUN: i64 = 8;

struct Log {
    dir: PathBuf,
    db: PathBuf,
    config: PathBuf,
}

impl Log {
    fn new(dir: &Path) -> Log {
        let db = dir.join("e.db");
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "node = \"test-node\"\ninterval = \"50ms\"\ndb = \"{}\"\n\
                 [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n\
                 [[sensor]]\nid = \"attic\"\nkind = \"sim\"\nprofile = \"random\"\nseed = 3\n",
                db.display()
            ),
        )
        .unwrap();
        Log {
            dir: dir.to_path_buf(),
            db,
            config,
        }
    }

    fn count(&self) -> i64 {
        if !self.db.exists() {
            return 0;
        }
        open_ro(&self.db)
            .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
            .unwrap_or(0)
    }

    fn log_id(&self) -> String {
        open_ro(&self.db)
            .query_row("SELECT log_id FROM log_identity", [], |r| r.get(0))
            .unwrap()
    }

    /// (sensor, log, seq) -> `ts_ms` of every reading in the log, keyed by
    /// the identity the log has now: what a consumer holds of it.
    fn keys(&self) -> BTreeMap<(String, String, i64), i64> {
        let log = self.log_id();
        let conn = open_ro(&self.db);
        let mut stmt = conn
            .prepare("SELECT sensor, seq, ts_ms FROM readings")
            .unwrap();
        stmt.query_map([], |r| Ok(((r.get(0)?, log.clone(), r.get(1)?), r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Runs the agent; `meanwhile` is called once the log holds at least
    /// `PER_RUN` more readings, then the agent runs until `PER_RUN` more
    /// again and is stopped with SIGTERM. Returns its stderr.
    fn run(&self, name: &str, meanwhile: impl FnOnce()) -> String {
        let err_path = self.dir.join(format!("{name}.err"));
        let mut cmd = std_cmd(&self.dir);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(stderr_file(&err_path));
        let mut child = ChildGuard::spawn(cmd);
        let mut grow = |what: &str| {
            let target = self.count() + PER_RUN;
            wait_for(Duration::from_secs(30), what, || {
                if let Some(status) = child.child.try_wait().unwrap() {
                    panic!(
                        "{name}: run exited early ({status}): {}",
                        std::fs::read_to_string(&err_path).unwrap_or_default()
                    );
                }
                self.count() >= target
            });
        };
        grow("readings before");
        meanwhile();
        grow("readings after");
        send_signal(child.id(), "TERM");
        let status = child
            .wait_timeout(Duration::from_secs(20))
            .expect("run stops within 20 s of SIGTERM");
        let stderr = std::fs::read_to_string(&err_path).unwrap();
        assert!(status.success(), "{name}: {status}: {stderr}");
        assert_no_panic(&stderr);
        stderr
    }
}

fn sqlite3(db: &Path, command: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(command)
        .output()
        .expect("run sqlite3 (scripts/test installs it)");
    assert!(
        out.status.success(),
        "sqlite3 {command}: {}",
        text(&out.stderr)
    );
}

/// Keys of `held` that `now` gives another reading (another `ts_ms`).
fn clashes(
    held: &BTreeMap<(String, String, i64), i64>,
    now: &BTreeMap<(String, String, i64), i64>,
) -> Vec<String> {
    now.iter()
        .filter_map(|(k, ts)| {
            let old = held.get(k)?;
            (old != ts).then(|| format!("{k:?}: ts_ms {old} and {ts}"))
        })
        .collect()
}

/// Backs the log up while the agent runs, lets it run on, stops it,
/// restores the backup with `restore`, and runs the agent again.
fn restored_backup(restore: impl FnOnce(&Path, &Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::new(tmp.path());
    let backup = tmp.path().join("backup.db");
    log.run("first", || {
        sqlite3(&log.db, &format!(".backup {}", backup.display()));
    });
    // What consumers hold: every reading the log had, under its identity.
    let held = log.keys();
    let old = log.log_id();
    restore(&log.db, &backup);
    assert_eq!(
        log.log_id(),
        old,
        "the restored backup holds the old identity"
    );
    assert!(log.keys().len() < held.len(), "the backup is older");

    let stderr = log.run("restored", || {});
    let new = log.log_id();
    assert_ne!(
        new, old,
        "a restored backup kept the log's identity, so it hands out seqs again:\n{stderr}"
    );
    let clash = clashes(&held, &log.keys());
    assert!(
        clash.is_empty(),
        "keys that name two readings: {clash:?}\n{stderr}"
    );
    // Said, with both identities and why.
    let warn = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&new))
        .unwrap_or_else(|| panic!("no WARN names the new identity:\n{stderr}"));
    assert!(warn.contains(&old), "{warn}");
    assert!(warn.contains("rolled back"), "{warn}");
    // The record restarts for the new identity: a plain restart keeps it.
    log.run("again", || {});
    assert_eq!(log.log_id(), new);
}

#[test]
fn a_backup_restored_with_sqlite3_gets_a_new_identity() {
    restored_backup(|db, backup| sqlite3(db, &format!(".restore {}", backup.display())));
}

#[test]
fn a_backup_copied_over_the_log_gets_a_new_identity() {
    restored_backup(|db, backup| {
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = ino(db);
        // `cp` writes into the existing file: the same inode.
        let ok = Command::new("cp").arg(backup).arg(db).status().unwrap();
        assert!(ok.success());
        assert_eq!(ino(db), before);
    });
}

#[test]
fn a_plain_restart_keeps_the_identity_and_goes_on_counting() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::new(tmp.path());
    log.run("first", || {});
    let held = log.keys();
    let id = log.log_id();
    let stderr = log.run("second", || {});
    assert_eq!(log.log_id(), id, "{stderr}");
    assert!(!stderr.contains("new identity"), "{stderr}");
    let now = log.keys();
    assert!(now.len() > held.len());
    assert!(clashes(&held, &now).is_empty());
}
