//! The writer lock through the real binary (issue 12, item 8): only the
//! agent's user can hold it. Dashboard users join the log's group to read
//! the log; being in that group must not let them `flock` the lock file
//! and keep the agent from starting.
//!
//! Runs as root (as CI does): it creates a system user in a group of its
//! own, makes that group the log directory's (as the unit's
//! `StateDirectory` with `UMask=0027` does for group `edgeprio`), and has
//! that user try. Skipped, with a note, when not root.

mod common;

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ChildGuard, bin_argv, send_signal, stderr_file, text, wait_for};

/// The group member of these tests.
const MEMBER: &str = "edgeprio-locktest";

/// Creates [`MEMBER`] (and its group) once. The tests of this file run in
/// parallel: on a machine that has no such user yet, two `useradd` at once
/// race over `/etc/passwd` and `/etc/group`, so one test creates it while
/// the others wait.
fn member() -> String {
    static CREATED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CREATED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let exists = Command::new("id")
        .arg(MEMBER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", MEMBER])
            .output()
            .expect("run useradd");
        // A parallel test may have just created it.
        let again = Command::new("id")
            .arg(MEMBER)
            .output()
            .unwrap()
            .status
            .success();
        assert!(again, "useradd {MEMBER}: {}", text(&out.stderr));
    }
    MEMBER.to_owned()
}

/// `<tmp>/state`, owned by root and the member's group, mode 2750: what
/// the unit's state directory is to group `edgeprio` (files made in it
/// belong to the group, as the agent's files belong to group `edgeprio`
/// under the unit).
fn state_dir(tmp: &Path) -> PathBuf {
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.join("state");
    std::fs::create_dir(&dir).unwrap();
    let ok = Command::new("chown")
        .arg(format!("root:{}", member()))
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown the state directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2750)).unwrap();
    dir
}

fn config(tmp: &Path, db: &Path) -> PathBuf {
    let path = tmp.join("edgeprio.toml");
    std::fs::write(
        &path,
        format!(
            "node = \"locktest\"\ninterval = \"2s\"\ndb = {:?}\n\
             [[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// `edgeprio --config CONFIG run` under the unit's `UMask=0027`.
fn start_agent(tmp: &Path, config: &Path, name: &str) -> (ChildGuard, PathBuf) {
    let err = tmp.join(format!("{name}.err"));
    let mut argv = bin_argv();
    argv.extend([
        "--config".into(),
        config.display().to_string(),
        "run".into(),
    ]);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 0027 && exec \"$@\"", "sh"])
        .args(&argv)
        .current_dir(tmp)
        .env_remove("EDGEPRIO_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file(&err));
    (ChildGuard::spawn(cmd), err)
}

/// Waits until the agent `child` records itself running in `db`; panics
/// with its stderr if it exits first.
fn wait_running(child: &mut ChildGuard, err: &Path, db: &Path) {
    let pid = i64::from(child.id());
    wait_for(Duration::from_secs(30), "the agent's status row", || {
        if let Ok(Some(status)) = child.child.try_wait() {
            panic!(
                "the agent exited ({status}):\n{}",
                std::fs::read_to_string(err).unwrap_or_default()
            );
        }
        running_pid(db) == Some(pid)
    });
}

/// The pid of the agent the log says is running, once it says so.
fn running_pid(db: &Path) -> Option<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row(
        "SELECT pid FROM agent_status WHERE state = 'running'",
        [],
        |r| r.get(0),
    )
    .ok()
}

fn stop(mut child: ChildGuard) {
    send_signal(child.id(), "TERM");
    let status = child.wait_timeout(Duration::from_secs(30)).expect("stops");
    assert!(status.success(), "{status}");
}

/// `flock -w 5 -x LOCK sleep 120` as the group member: `Ok(holder)` once it
/// holds the lock, `Err(stderr)` if it could not take it. (It waits a
/// little: the probe below holds the lock for an instant.)
fn member_flock(lock: &Path) -> Result<ChildGuard, String> {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", &member(), "--", "flock", "-w", "5", "-x"])
        .arg(lock)
        .args(["sleep", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut holder = ChildGuard::spawn(cmd);
    // Held once root cannot take it either; an exit means it failed.
    let mut result = None;
    wait_for(Duration::from_secs(10), "the member's flock", || {
        if let Ok(Some(_)) = holder.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = holder.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            result = Some(Err(err));
            return true;
        }
        let free = Command::new("flock")
            .args(["-n", "-s"])
            .arg(lock)
            .arg("true")
            .status()
            .unwrap()
            .success();
        !free
    });
    result.unwrap_or(Ok(holder))
}

fn skip_unless_root() -> bool {
    if common::running_as_root() {
        return false;
    }
    eprintln!("skipped: needs root to create the group member (CI runs as root)");
    true
}

#[test]
fn a_group_member_cannot_keep_the_agent_from_starting() {
    if skip_unless_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = state_dir(tmp.path());
    let db = dir.join("e.db");
    let cfg = config(tmp.path(), &db);
    let (mut agent, err) = start_agent(tmp.path(), &cfg, "first");
    wait_running(&mut agent, &err, &db);
    stop(agent);

    // Between two runs of the agent (a restart, a reboot), a member of the
    // group tries to take the lock, and the agent starts again.
    let lock = edgeprio::store::lock_path(&db);
    let held = member_flock(&lock);
    let (mut again, err) = start_agent(tmp.path(), &cfg, "second");
    wait_running(&mut again, &err, &db);
    match held {
        Err(e) => assert!(e.contains("Permission denied"), "{e}"),
        Ok(_) => panic!(
            "a member of the log's group holds the writer lock {}",
            lock.display()
        ),
    }
    let meta = std::fs::metadata(&lock).unwrap();
    assert_eq!(
        meta.mode() & 0o777,
        0o600,
        "the lock file is the agent user's alone, whatever the umask: {:o}",
        meta.mode()
    );
    // The log itself stays readable by the group: that is what dashboard
    // users join it for.
    assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o040, 0o040);
    stop(again);
}

#[test]
fn a_lock_file_an_older_agent_left_open_to_the_group_is_replaced() {
    if skip_unless_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = state_dir(tmp.path());
    let db = dir.join("e.db");
    let cfg = config(tmp.path(), &db);
    let (mut agent, err) = start_agent(tmp.path(), &cfg, "first");
    wait_running(&mut agent, &err, &db);
    stop(agent);
    // What edgeprio 0.1 left under UMask=0027: 0640, group edgeprio.
    let lock = edgeprio::store::lock_path(&db);
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o640)).unwrap();
    let ok = Command::new("chgrp")
        .arg(member())
        .arg(&lock)
        .status()
        .unwrap();
    assert!(ok.success());
    let _holder = member_flock(&lock).unwrap_or_else(|e| {
        let ls = Command::new("ls")
            .arg("-lnd")
            .arg(&dir)
            .arg(&lock)
            .output()
            .unwrap();
        let id = Command::new("id").arg(member()).output().unwrap();
        panic!(
            "the member cannot lock a group-readable lock file: {e}\n{}{}",
            text(&ls.stdout),
            text(&id.stdout)
        )
    });

    let (mut agent, err) = start_agent(tmp.path(), &cfg, "upgraded");
    wait_running(&mut agent, &err, &db);
    let meta = std::fs::metadata(&lock).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "{:o}", meta.mode());
    assert_eq!(meta.uid(), 0);
    // The agent's lock is real: a second agent is refused.
    let (mut second, err2) = start_agent(tmp.path(), &cfg, "second");
    let status = second.wait_timeout(Duration::from_secs(30)).expect("exits");
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&err2).unwrap();
    assert!(stderr.contains("already writing"), "{stderr}");
    stop(agent);
}
