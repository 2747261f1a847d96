//! The log's identity, the file it belongs to, and the writer lock.

use super::*;
use crate::domain::PerChannel;
use std::os::unix::fs::PermissionsExt as _;

fn reading(sensor: &str, seq: u64) -> Reading {
    Reading {
        node: "pi".into(),
        sensor: sensor.into(),
        seq,
        ts_ms: 1_000 * i64::try_from(seq).unwrap(),
        sample: Sample::new(20.0, 50.0),
        weights: PerChannel {
            temperature: 0,
            humidity: 0,
        },
        priority: 0,
        route: Route::Batch,
        clock_synced: None,
    }
}

#[test]
fn a_log_keeps_its_identity_across_opens_and_a_move() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let id = Store::open(&path, Access::Writer)
        .unwrap()
        .log_id()
        .unwrap();
    assert_eq!(id.to_string().len(), 16);
    assert_eq!(
        Store::open(&path, Access::Writer)
            .unwrap()
            .log_id()
            .unwrap(),
        id
    );
    let moved = dir.path().join("moved.db");
    std::fs::rename(&path, &moved).unwrap();
    assert_eq!(
        Store::open(&moved, Access::Writer)
            .unwrap()
            .log_id()
            .unwrap(),
        id
    );
    assert_eq!(
        Store::open(&moved, Access::ReadOnly)
            .unwrap()
            .log_id()
            .unwrap(),
        id
    );
    // Two new logs never share one.
    let other = Store::open(&dir.path().join("o.db"), Access::Writer).unwrap();
    assert_ne!(other.log_id().unwrap(), id);
}

#[test]
fn a_copy_opened_as_a_log_gets_an_identity_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let mut s = Store::open(&path, Access::Writer).unwrap();
    s.insert_readings(&[reading("a", 0)]).unwrap();
    let id = s.log_id().unwrap();
    drop(s);
    let backup = dir.path().join("backup.db");
    std::fs::copy(&path, &backup).unwrap();
    // Restored over the original (a new file at the same path).
    std::fs::remove_file(&path).unwrap();
    std::fs::copy(&backup, &path).unwrap();
    let restored = Store::open(&path, Access::Writer).unwrap();
    let new = restored.log_id().unwrap();
    assert_ne!(
        new, id,
        "a restored copy must not hand out the original's seqs again"
    );
    assert_eq!(restored.history("pi").unwrap()["a"].last_seq, 0);
    drop(restored);
    assert_eq!(
        Store::open(&path, Access::Writer)
            .unwrap()
            .log_id()
            .unwrap(),
        new,
        "and keeps it from then on"
    );
}

#[test]
fn logs_of_schema_four_get_an_identity_when_the_agent_migrates_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    drop(log_at_version(&path, 4));
    let old = Store::open(&path, Access::ReadOnly).unwrap();
    let e = old.log_id().unwrap_err();
    assert!(matches!(e, StoreError::TooOld { found: 4, .. }), "{e}");
    drop(old);
    let s = Store::open(&path, Access::Writer).unwrap();
    let id = s.log_identity().unwrap();
    assert_eq!(id.replaced, None);
    assert_eq!(Some(id.log), s.log.as_ref().copied());
}

#[test]
fn a_writer_follows_its_deleted_file_and_carries_the_outbox_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let mut s = Store::open(&path, Access::Writer).unwrap();
    s.insert_readings(&[reading("a", 0), reading("a", 1), reading("b", 0)])
        .unwrap();
    let mut pending = Vec::new();
    assert_eq!(s.follow_path("pi", 5, &mut pending).unwrap(), None);
    s.mark_published(
        "pi",
        &[Acked {
            route: Route::Batch,
            ids: vec![1],
            late: 0,
            at_ms: 2,
        }],
    )
    .unwrap();
    let old = s.log_id().unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut pending = vec![reading("a", 2)];
    let sw = s.follow_path("pi", 7, &mut pending).unwrap().unwrap();
    assert_eq!((sw.from, sw.carried), (old, 2));
    assert_ne!(sw.to, old);
    assert_eq!(s.log_id().unwrap(), sw.to);
    // Unpublished a/1 and b/0 first, then the cycle's reading: seqs of the
    // new log.
    let keys: Vec<(&str, u64)> = pending.iter().map(|r| (r.sensor.as_str(), r.seq)).collect();
    assert_eq!(keys, [("a", 0), ("b", 0), ("a", 1)]);
    assert_eq!((sw.next_seq["a"], sw.next_seq["b"]), (2, 1));
    s.insert_readings(&pending).unwrap();
    let id = s.log_identity().unwrap();
    let (at, note) = id.replaced.unwrap();
    assert_eq!(at, 7);
    assert!(
        note.contains("deleted") && note.contains(&old.to_string()),
        "{note}"
    );
    // The new file is a sound log at the path, and the writer still holds
    // the lock.
    drop(s);
    let r = Store::open(&path, Access::ReadOnly).unwrap();
    assert_eq!(r.readings(&ReadingFilter::default()).unwrap().len(), 3);
    assert_eq!(r.log_id().unwrap(), sw.to);
}

#[test]
fn the_lock_file_is_private_and_a_wide_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let lock = lock_path(&path);
    // What an older edgeprio left under UMask=0027, held by someone who
    // could open it.
    std::fs::write(&lock, b"").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o640)).unwrap();
    let squatter = std::fs::File::open(&lock).unwrap();
    squatter.try_lock().unwrap();
    let s = Store::open(&path, Access::Writer).unwrap();
    let mode = std::fs::metadata(&lock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // A second writer is still refused: the lock is real.
    let e = Store::open(&path, Access::Writer).unwrap_err();
    assert!(matches!(e, StoreError::Busy { .. }), "{e}");
    drop(s);
    drop(squatter);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".lock."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn rows_the_publisher_marked_are_not_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let mut s = Store::open(&path, Access::Writer).unwrap();
    s.insert_readings(&[reading("a", 0), reading("a", 1), reading("b", 0)])
        .unwrap();
    let mut pending = Vec::new();
    assert_eq!(s.follow_path("pi", 5, &mut pending).unwrap(), None);
    let mut o = Store::open(&path, Access::Outbox).unwrap();
    o.mark_published(
        "pi",
        &[Acked {
            route: Route::Batch,
            ids: vec![1, 2],
            late: 0,
            at_ms: 2,
        }],
    )
    .unwrap();
    s.insert_readings(&[reading("a", 2)]).unwrap();
    assert_eq!(s.follow_path("pi", 5, &mut pending).unwrap(), None);
    let kept = dir.path().join("kept.db");
    std::fs::hard_link(&path, &kept).unwrap();
    std::fs::remove_file(&path).unwrap();
    let sw = s.follow_path("pi", 7, &mut pending).unwrap().unwrap();
    assert_eq!(sw.carried, 2, "{pending:?}");
    s.insert_readings(&pending).unwrap();
    // The publisher's connection to the old file closes last: it must not
    // checkpoint and delete "e.db-wal", which is the new log's WAL now
    // (SQLite checks that a file is still at its path before it does).
    drop(o);
    let r = Store::open(&path, Access::ReadOnly).unwrap();
    assert_eq!(r.readings(&ReadingFilter::default()).unwrap().len(), 2);
    drop(r);
    drop(s);
    let k = Store::open(&kept, Access::ReadOnly).unwrap();
    assert_eq!(k.readings(&ReadingFilter::default()).unwrap().len(), 4);
}

#[test]
fn a_foreign_file_at_the_path_is_refused_and_the_old_file_kept_until_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let mut s = Store::open(&path, Access::Writer).unwrap();
    s.insert_readings(&[reading("a", 0)]).unwrap();
    assert_eq!(s.follow_path("pi", 1, &mut Vec::new()).unwrap(), None);
    let old = s.log_id().unwrap();
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    std::fs::rename(&other, &path).unwrap();
    let mut pending = vec![reading("a", 1)];
    let e = s.follow_path("pi", 2, &mut pending).unwrap_err();
    assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
    // Still on the old file, which takes the cycle's readings.
    assert_eq!(s.log_id().unwrap(), old);
    s.insert_readings(&pending).unwrap();
    // The other program's file is untouched.
    let n: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    // Once it is gone, the agent moves to a new log with everything.
    std::fs::remove_file(&path).unwrap();
    let mut pending = Vec::new();
    let sw = s.follow_path("pi", 3, &mut pending).unwrap().unwrap();
    assert_eq!(sw.carried, 2);
    let (at, _) = s.log_identity().unwrap().replaced.unwrap();
    assert_eq!(at, 2, "since when the path did not name the agent's file");
}

/// The high-water record in the lock file of `path`, if it is one.
fn high_water_of(path: &Path) -> Option<high_water::Record> {
    high_water::Record::read(&std::fs::File::open(lock_path(path)).unwrap())
}

/// Deletes, behind the agent's back, the rows `filter` names (what a
/// restored backup lacks).
fn delete_rows(path: &Path, filter: &str) {
    Connection::open(path)
        .unwrap()
        .execute(&format!("DELETE FROM readings WHERE {filter}"), [])
        .unwrap();
}

#[test]
fn a_log_rolled_back_in_place_gets_a_new_identity_and_the_record_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let mut s = Store::open(&path, Access::Writer).unwrap();
    let old = s.log_id().unwrap();
    s.insert_readings(&[reading("a", 0), reading("a", 1), reading("b", 0)])
        .unwrap();
    let status = AgentStatus {
        node: "pi".into(),
        running: true,
        pid: 1,
        version: "test".into(),
        started_ms: 0,
        heartbeat_ms: 5,
        interval_ms: 15_000,
        burst: Vec::new(),
    };
    s.commit_cycle(&[reading("a", 2)], &[], &status).unwrap();
    let hw = high_water_of(&path).unwrap();
    assert_eq!(hw.log, old.to_string());
    assert_eq!(hw.seqs["pi"]["a"], 2, "commit_cycle raises it too");
    assert_eq!(hw.seqs["pi"]["b"], 0);
    drop(s);
    // Reopened as it is, the log keeps its identity.
    assert_eq!(
        Store::open(&path, Access::Writer)
            .unwrap()
            .log_id()
            .unwrap(),
        old
    );
    // Rolled back in place: the same inode, without the newest reading.
    delete_rows(&path, "sensor = 'a' AND seq = 2");
    let s = Store::open(&path, Access::Writer).unwrap();
    let new = s.log_id().unwrap();
    assert_ne!(new, old);
    // The record restarts for the new identity...
    let hw = high_water_of(&path).unwrap();
    assert_eq!((hw.log, hw.seqs.len()), (new.to_string(), 0));
    drop(s);
    // ...so the next open keeps it, and seqs go on after the log's.
    let mut s = Store::open(&path, Access::Writer).unwrap();
    assert_eq!(s.log_id().unwrap(), new);
    assert_eq!(s.history("pi").unwrap()["a"].next_seq(), Some(2));
    s.insert_readings(&[reading("a", 2), reading("b", 1)])
        .unwrap();
    drop(s);
    // A sensor left with no row at all (a backup from before it was
    // added, or every row deleted) counts as rolled back too.
    delete_rows(&path, "sensor = 'b'");
    let s = Store::open(&path, Access::Writer).unwrap();
    assert_ne!(s.log_id().unwrap(), new);
}

#[test]
fn a_missing_unreadable_or_foreign_record_decides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let mut s = Store::open(&path, Access::Writer).unwrap();
    let id = s.log_id().unwrap();
    s.insert_readings(&[reading("a", 0), reading("a", 1)])
        .unwrap();
    drop(s);
    delete_rows(&path, "seq = 1");
    let lock = lock_path(&path);
    let long_other = high_water::Record {
        log: "0123456789abcdef".into(),
        seqs: [("pi".into(), [("a".into(), 99), ("z".repeat(200), 7)].into())].into(),
    };
    for (what, bytes) in [
        ("missing", None),
        ("empty", Some(Vec::new())),
        ("torn", Some(b"{\"log\":\"".to_vec())),
        (
            "another log's",
            Some(serde_json::to_vec(&long_other).unwrap()),
        ),
    ] {
        match bytes {
            None => std::fs::remove_file(&lock).unwrap(),
            Some(b) => std::fs::write(&lock, b).unwrap(),
        }
        let s = Store::open(&path, Access::Writer).unwrap();
        assert_eq!(s.log_id().unwrap(), id, "a {what} record");
        // Written over: a record of this log, even over a longer one.
        let hw = high_water_of(&path).unwrap_or_else(|| panic!("after a {what} record"));
        assert_eq!((hw.log, hw.seqs.len()), (id.to_string(), 0), "{what}");
    }
}

#[test]
fn a_hand_edit_that_lowers_the_highest_integer_seq_draws_a_new_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let mut s = Store::open(&path, Access::Writer).unwrap();
    let old = s.log_id().unwrap();
    s.insert_readings(&[reading("a", 0), reading("a", 1)])
        .unwrap();
    drop(s);
    // A text seq sorts above every integer: the check must not take it for
    // the highest seq.
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE readings SET seq = 'x' WHERE seq = 1", [])
        .unwrap();
    let s = Store::open(&path, Access::Writer).unwrap();
    assert_ne!(s.log_id().unwrap(), old);
    assert_eq!(s.history("pi").unwrap()["a"].next_seq(), Some(1));
}

#[test]
fn the_record_follows_the_writer_to_the_log_at_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let mut s = Store::open(&path, Access::Writer).unwrap();
    s.insert_readings(&[reading("a", 0), reading("a", 1), reading("a", 2)])
        .unwrap();
    assert_eq!(s.follow_path("pi", 1, &mut Vec::new()).unwrap(), None);
    std::fs::remove_file(&path).unwrap();
    let mut pending = vec![reading("a", 3)];
    let sw = s.follow_path("pi", 2, &mut pending).unwrap().unwrap();
    s.insert_readings(&pending).unwrap();
    // The record names the new log now, with what was committed into it
    // (the three carried over, renumbered 0..2, then the cycle's 3).
    let hw = high_water_of(&path).unwrap();
    assert_eq!(hw.log, sw.to.to_string());
    assert_eq!(hw.seqs["pi"]["a"], 3);
    drop(s);
    assert_eq!(
        Store::open(&path, Access::Writer)
            .unwrap()
            .log_id()
            .unwrap(),
        sw.to
    );
}
