//! Black-box tests of `edgeprio` on bad input: invalid configs, unusable
//! database paths and files, broken traces. Every failure must be a clear
//! message naming what is wrong, with a non-zero exit and never a panic, and
//! must never cost a row already in the log.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use common::{
    ChildGuard, DEMO_SENSORS, assert_no_panic, demo, edgeprio, fixture, readings, running_as_root,
    seqs_by_sensor, std_cmd, text,
};
use rusqlite::Connection;

/// The exit status for an invalid configuration (sysexits' `EX_CONFIG`).
const EXIT_CONFIG: i32 = 78;

/// One bad config fixture and what its error must name.
struct BadConfig {
    /// File name under `tests/fixtures/bad_config`.
    file: &'static str,
    /// The key the error must name (printed as ``key `<key>` ``).
    key: &'static str,
    /// Texts that show the bad value (and, where useful, what is allowed).
    value: &'static [&'static str],
    /// The 1-based line the error must point at, where it is known.
    line: Option<usize>,
}

const BAD_CONFIGS: &[BadConfig] = &[
    BadConfig {
        file: "unknown_top_level_key.toml",
        key: "nodes",
        value: &["`nodes`", "`node`"],
        line: Some(2),
    },
    BadConfig {
        file: "unknown_priority_key.toml",
        key: "priority.threshhold",
        value: &["`threshhold`", "`threshold`"],
        line: Some(2),
    },
    BadConfig {
        file: "unknown_deadband_channel.toml",
        key: "priority.deadband.humidty",
        value: &["`humidty`", "`humidity`"],
        line: Some(2),
    },
    BadConfig {
        file: "sensor_key_typo.toml",
        key: "sensor[0].pn",
        value: &["`pn`", "`pin`"],
        line: Some(4),
    },
    BadConfig {
        file: "interval_integer.toml",
        key: "interval",
        value: &["15", "\"15s\""],
        line: Some(1),
    },
    BadConfig {
        file: "interval_bad_duration.toml",
        key: "interval",
        value: &["\"15 sex\""],
        line: Some(1),
    },
    BadConfig {
        file: "dht22_interval_too_short.toml",
        key: "interval",
        value: &["\"1s\"", "2s"],
        line: None,
    },
    BadConfig {
        file: "dht22_pin_40.toml",
        key: "sensor[0].pin",
        value: &["pin = 40", "0 to 27"],
        line: None,
    },
    BadConfig {
        file: "duplicate_sensor_id.toml",
        key: "sensor[1].id",
        value: &["\"lab\"", "unique"],
        line: None,
    },
    BadConfig {
        file: "two_dht22_one_pin.toml",
        key: "sensor[1].pin",
        value: &["pin = 4", "sensor[0]"],
        line: None,
    },
    BadConfig {
        file: "combine_avg.toml",
        key: "priority.combine",
        value: &["avg", "max", "sum"],
        line: Some(2),
    },
    BadConfig {
        file: "negative_threshold.toml",
        key: "priority.threshold",
        value: &["-0.05", "greater than 0"],
        line: None,
    },
    BadConfig {
        file: "max_weight_zero.toml",
        key: "priority.max_weight",
        value: &["max_weight = 0", "1 and 1000"],
        line: None,
    },
    BadConfig {
        file: "floor_zero.toml",
        key: "priority.floor.temperature",
        value: &["temperature = 0", "greater than 0"],
        line: None,
    },
    BadConfig {
        file: "failure_rate_above_one.toml",
        key: "sensor[0].failure_rate",
        value: &["1.5", "between 0 and 1"],
        line: None,
    },
    BadConfig {
        file: "sim_with_pin.toml",
        key: "sensor[0].pin",
        value: &["kind = \"sim\"", "\"dht22\""],
        line: None,
    },
    BadConfig {
        file: "unknown_sensor_kind.toml",
        key: "sensor[0].kind",
        value: &["`ds18b20`", "`dht22`", "`dht11`", "`sim`"],
        line: Some(3),
    },
    BadConfig {
        file: "sensor_id_with_space.toml",
        key: "sensor[0].id",
        value: &["\"lab 1\""],
        line: None,
    },
    BadConfig {
        file: "node_with_slash.toml",
        key: "node",
        value: &["\"pi/lab\""],
        line: None,
    },
    BadConfig {
        file: "no_sensor.toml",
        key: "sensor",
        value: &["[[sensor]]"],
        line: None,
    },
    BadConfig {
        file: "trace_without_file.toml",
        key: "sensor[0].trace",
        value: &["profile = \"trace\""],
        line: None,
    },
    // Line 1 is `node = "pi-lab` (unterminated string). The contract says
    // every error names the key and the bad value, so the message must show
    // the offending `node` line, not only "invalid basic string".
    BadConfig {
        file: "toml_syntax_error.toml",
        key: "node",
        value: &["\"pi-lab"],
        line: Some(1),
    },
];

/// Every fixture in `tests/fixtures/bad_config` has a row in the table and
/// every row has a fixture, so neither can rot silently.
#[test]
fn bad_config_table_covers_every_fixture() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture("bad_config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "toml"))
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = BAD_CONFIGS.iter().map(|c| c.file.to_string()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
    assert!(in_table.len() >= 12);
}

/// `check-config` on each bad fixture exits 78 and names the file, the key
/// and the bad value (and the line where known), without panicking. All
/// fixtures are checked before failing, so one run reports every gap.
#[test]
fn check_config_rejects_each_bad_config_naming_file_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in BAD_CONFIGS {
        let path = fixture("bad_config").join(case.file);
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        let mut problems = Vec::new();
        if out.status.code() != Some(EXIT_CONFIG) {
            problems.push(format!("exit {:?}, want {EXIT_CONFIG}", out.status.code()));
        }
        if !stderr.contains(case.file) {
            problems.push(format!("does not name the file {}", case.file));
        }
        if !stderr.contains(&format!("key `{}`", case.key)) {
            problems.push(format!("does not name the key `{}`", case.key));
        }
        for v in case.value {
            if !stderr.contains(v) {
                problems.push(format!("does not show {v:?}"));
            }
        }
        if let Some(line) = case.line
            && !stderr.contains(&format!("line {line}"))
        {
            problems.push(format!("does not point at line {line}"));
        }
        for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
            if stderr.contains(bad) {
                problems.push(format!("contains {bad:?}"));
            }
        }
        if !out.stdout.is_empty() && text(&out.stdout).contains("is valid") {
            problems.push("stdout claims the file is valid".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                case.file,
                problems.join("; "),
                stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad configs are not reported as the contract says:\n{}",
        failures.len(),
        BAD_CONFIGS.len(),
        failures.join("\n")
    );
}

/// The bad configs are refused by every command that loads a config, not
/// only by check-config: `run` and `read-once` exit 78 too, and `run` creates
/// no database.
#[test]
fn run_and_read_once_refuse_a_bad_config_with_78() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    for file in [
        "negative_threshold.toml",
        "dht22_pin_40.toml",
        "sensor_key_typo.toml",
    ] {
        let path = fixture("bad_config").join(file);
        for sub in [&["run", "--db"][..], &["read-once"][..]] {
            let mut cmd = edgeprio(dir.path());
            cmd.arg("--config").arg(&path).args(sub);
            if sub[0] == "run" {
                cmd.arg(&db);
            }
            let out = cmd.output().unwrap();
            let stderr = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(EXIT_CONFIG),
                "{file} {sub:?}: {stderr}"
            );
            assert!(stderr.contains(file), "{file} {sub:?}: {stderr}");
            assert_no_panic(&stderr);
        }
    }
    assert!(!db.exists(), "a refused config must not create the log");
}

/// The good fixture (every key, every sim profile) passes check-config and
/// the summary shows what was configured; so do the shipped example and demo
/// configs.
#[test]
fn check_config_accepts_good_configs() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("good/sim.toml");
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&good)
        .arg("check-config")
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{} is valid", good.display())),
        "{stdout}"
    );
    for want in [
        "test-node",
        "50ms",
        "edgeprio-test.db",
        "combine max",
        "baseline previous",
        "lab (sim, heater replay)",
        "walk (sim, random walk (seed 11",
        "rec (sim, trace",
        "trace.csv",
    ] {
        assert!(stdout.contains(want), "summary lacks {want:?}:\n{stdout}");
    }
    assert_no_panic(&text(&out.stderr));

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        fixture("good/dht22.toml"),
        root.join("assets/edgeprio.example.toml"),
        root.join("assets/demo.toml"),
    ] {
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&file)
            .arg("check-config")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("is valid"));
    }
}

/// A config file that does not exist: a non-zero exit and a message that
/// names the file and says it cannot be read, for every command.
#[test]
fn missing_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/edgeprio.toml");
    for sub in [&["check-config"][..], &["read-once"][..], &["run"][..]] {
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&missing)
            .args(sub)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{sub:?} succeeded without a config");
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{sub:?}: {stderr}");
        assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
        assert!(stderr.contains("cannot read"), "{stderr}");
        assert!(stderr.contains("No such file"), "{stderr}");
        assert_no_panic(&stderr);
    }
}

/// `--db` in a directory that does not exist: the error names the
/// directory and how to create it, and nothing is created.
#[test]
fn db_in_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("x/missing/dir");
    let db = missing_dir.join("e.db");
    let out = edgeprio(dir.path())
        .args(["demo", "--speed", "1000", "--count", "1", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "directory {} does not exist",
            missing_dir.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("mkdir -p"), "{stderr}");
    assert_no_panic(&stderr);
    assert!(
        !dir.path().join("x").exists(),
        "the missing directory was created"
    );
    assert!(
        text(&out.stdout).lines().all(|l| !l.contains(" seq ")),
        "readings were printed although none can be logged"
    );
}

/// `--db` in a directory the agent cannot write. File modes do not stop
/// root, so the check that always runs uses a directory nobody can create
/// files in (procfs); the chmod variant runs in addition when it is
/// meaningful (not root).
#[test]
fn db_in_read_only_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();

    // Always: a directory where file creation fails even for root.
    let db = Path::new("/proc/edgeprio-test-readonly.db");
    let out = edgeprio(dir.path())
        .args(["demo", "--speed", "1000", "--count", "1", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write the log"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(stderr.contains("write access"), "{stderr}");
    assert_no_panic(&stderr);
    assert!(!db.exists());

    // Also with `run`.
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(fixture("good/sim.toml"))
        .args(["run", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write the log"), "{stderr}");
    assert_no_panic(&stderr);

    // A chmod 555 directory, where that stops writes (not as root).
    if running_as_root() {
        eprintln!("running as root: chmod does not stop writes, /proc check only");
        return;
    }
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let db = ro.join("e.db");
    let out = edgeprio(dir.path())
        .args(["demo", "--speed", "1000", "--count", "1", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write the log"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert_no_panic(&stderr);
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A `SQLite` file of another program: demo, run and query refuse it with a
/// message saying it belongs to another program and naming its tables; the
/// file is byte-for-byte untouched and no -wal/-shm appear beside it.
#[test]
fn foreign_sqlite_file_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("recipes.db");
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE recipes (name TEXT, minutes INTEGER);
             INSERT INTO recipes VALUES ('soup', 40), ('bread', 180);",
        )
        .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let listing = dir_listing(dir.path());

    let runs: [Vec<std::ffi::OsString>; 3] = [
        vec![
            "demo".into(),
            "--speed".into(),
            "1000".into(),
            "--count".into(),
            "2".into(),
        ],
        vec![
            "--config".into(),
            fixture("good/sim.toml").into(),
            "run".into(),
        ],
        vec!["query".into()],
    ];
    for args in runs {
        let out = edgeprio(dir.path())
            .args(&args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(&db.display().to_string()), "{stderr}");
        assert!(stderr.contains("another program"), "{args:?}: {stderr}");
        assert!(stderr.contains("recipes"), "the tables are named: {stderr}");
        assert!(stderr.contains("will not touch it"), "{stderr}");
        assert_no_panic(&stderr);
        assert_eq!(
            std::fs::read(&db).unwrap(),
            before,
            "{args:?} changed the file"
        );
        assert_eq!(
            dir_listing(dir.path()),
            listing,
            "{args:?} left files behind"
        );
    }
    let n: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM recipes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

/// A file that is not `SQLite` at all: refused by demo, run and query with
/// "not a usable `SQLite` database", and left untouched.
#[test]
fn non_sqlite_file_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    let content = "These are my notes, not a database. ".repeat(40);
    std::fs::write(&db, &content).unwrap();
    let listing = dir_listing(dir.path());
    let runs: [Vec<std::ffi::OsString>; 3] = [
        vec![
            "demo".into(),
            "--speed".into(),
            "1000".into(),
            "--count".into(),
            "2".into(),
        ],
        vec![
            "--config".into(),
            fixture("good/sim.toml").into(),
            "run".into(),
        ],
        vec!["query".into(), "--format".into(), "json".into()],
    ];
    for args in runs {
        let out = edgeprio(dir.path())
            .args(&args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(&db.display().to_string()), "{stderr}");
        assert!(
            stderr.contains("is not a usable SQLite database"),
            "{args:?}: {stderr}"
        );
        assert_no_panic(&stderr);
        assert!(out.stdout.is_empty() || !text(&out.stdout).contains(" seq "));
        assert_eq!(std::fs::read_to_string(&db).unwrap(), content);
        assert_eq!(
            dir_listing(dir.path()),
            listing,
            "{args:?} left files behind"
        );
    }
}

/// `query` on a log that does not exist says so (and creates nothing).
#[test]
fn query_on_missing_db_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never-written.db");
    let out = edgeprio(dir.path())
        .args(["query", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no log at"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert_no_panic(&stderr);
    assert!(!db.exists(), "query created the log");
}

/// A log written by a newer edgeprio (higher `user_version`) is refused with
/// a message to upgrade, and not modified.
#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 1);
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let rows = readings(&db);
    let out = edgeprio(dir.path())
        .args(["demo", "--speed", "1000", "--count", "1", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("schema version 99"), "{stderr}");
    assert!(stderr.contains("upgrade"), "{stderr}");
    assert_no_panic(&stderr);
    assert_eq!(readings(&db), rows);
}

/// A trace CSV with a bad row: read-once, run and demo fail with a message
/// that names the file, the line and the bad value.
#[test]
fn trace_with_bad_row_names_file_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture("trace_bad_row/edgeprio.toml");
    let csv = fixture("trace_bad_row/readings.csv");
    let db = dir.path().join("e.db");
    let runs: [Vec<std::ffi::OsString>; 3] = [
        vec!["read-once".into()],
        vec!["run".into(), "--db".into(), db.clone().into()],
        vec![
            "demo".into(),
            "--speed".into(),
            "1000".into(),
            "--count".into(),
            "2".into(),
            "--db".into(),
            db.clone().into(),
        ],
    ];
    for args in runs {
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&config)
            .args(&args)
            .output()
            .unwrap();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !out.status.success(),
            "{args:?} succeeded on a bad trace:\n{all}"
        );
        assert!(all.contains(&csv.display().to_string()), "{args:?}: {all}");
        assert!(all.contains("line 5"), "{args:?}: {all}");
        assert!(all.contains("humidity_pct"), "{args:?}: {all}");
        assert!(all.contains("\"fifty\""), "{args:?}: {all}");
        assert!(
            all.contains("\"rec\"") || all.contains("rec "),
            "sensor: {all}"
        );
        assert_no_panic(&all);
        if db.exists() {
            assert!(readings(&db).is_empty(), "{args:?} logged readings");
        }
    }
}

/// A trace path that does not exist is a config error (issue 12, item 3:
/// `check-config` passed it and `run` died at start-up): `check-config`,
/// `run` and `read-once` exit 78 naming the key and the path.
#[test]
fn missing_trace_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("gone.csv");
    let config = dir.path().join("edgeprio.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"50ms\"\n[[sensor]]\nid = \"rec\"\nkind = \"sim\"\nprofile = \"trace\"\ntrace = {:?}\n",
            csv.display().to_string()
        ),
    )
    .unwrap();
    let db = dir.path().join("e.db");
    for sub in [
        &["check-config"][..],
        &["run", "--db"][..],
        &["read-once"][..],
    ] {
        let mut cmd = edgeprio(dir.path());
        cmd.arg("--config").arg(&config).args(sub);
        if sub[0] == "run" {
            cmd.arg(&db);
        }
        let out = cmd.output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{sub:?}: {stderr}");
        assert!(
            stderr.contains("key `sensor[0].trace`"),
            "{sub:?}: {stderr}"
        );
        assert!(stderr.contains(&csv.display().to_string()), "{stderr}");
        assert!(stderr.contains("does not exist"), "{stderr}");
        assert_no_panic(&stderr);
    }
    assert!(!db.exists(), "a refused config must not create the log");
}

/// Bad command-line values are usage errors (exit 2) that say what is
/// allowed.
#[test]
fn bad_command_line_values_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["demo", "--speed", "0"], "greater than 0"),
        (
            &["query", "--db", "x.db", "--since", "yesterday"],
            "RFC 3339",
        ),
        (&["query", "--db", "x.db", "--route", "fast"], "realtime"),
        (&["query", "--db", "x.db", "--format", "xml"], "json"),
    ];
    for (args, want) in cases {
        let out = edgeprio(dir.path()).args(args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_no_panic(&stderr);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The demo refuses a config with hardware sensors, and read-once on one
/// says the hardware backend is missing and exits 1.
#[test]
fn hardware_config_off_a_pi_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture("good/dht22.toml");
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["demo", "--speed", "1000", "--count", "1", "--db"])
        .arg(dir.path().join("e.db"))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("simulated sensors only"), "{stderr}");
    assert_no_panic(&stderr);

    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("read-once")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("bench"), "{stdout}");
    // Off a Pi the real GPIO backend says so, naming the sensor.
    assert!(stdout.contains("not a Raspberry Pi"), "{stdout}");
    assert_no_panic(&text(&out.stderr));
}

/// "Never loses rows": a demo fills a log; then runs with a broken config and
/// with a broken trace are attempted on the same file. Every earlier row
/// (and error and status row) is still there, unchanged, and the log still
/// works: the next demo continues each sensor's seq.
#[test]
fn failed_starts_never_lose_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    demo(dir.path(), &db, 5);
    let rows = readings(&db);
    let errors = common::sensor_errors(&db);
    let status = common::agent_status(&db);
    assert_eq!(rows.len(), 20);

    let attempts: [(std::path::PathBuf, Vec<&str>); 5] = [
        (
            fixture("bad_config/negative_threshold.toml"),
            vec!["run", "--db"],
        ),
        (
            fixture("bad_config/toml_syntax_error.toml"),
            vec!["run", "--db"],
        ),
        (fixture("trace_bad_row/edgeprio.toml"), vec!["run", "--db"]),
        (
            fixture("trace_bad_row/edgeprio.toml"),
            vec!["demo", "--speed", "1000", "--count", "3", "--db"],
        ),
        (
            fixture("bad_config/combine_avg.toml"),
            vec!["demo", "--speed", "1000", "--count", "3", "--db"],
        ),
    ];
    for (config, args) in attempts {
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&config)
            .args(&args)
            .arg(&db)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{config:?} {args:?} succeeded: {stderr}"
        );
        assert_no_panic(&stderr);
        assert_eq!(
            readings(&db),
            rows,
            "{config:?} {args:?} changed the readings"
        );
        assert_eq!(common::sensor_errors(&db), errors);
        assert_eq!(common::agent_status(&db), status);
    }
    let ok: String = Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");

    demo(dir.path(), &db, 1);
    let after = readings(&db);
    assert_eq!(&after[..rows.len()], &rows[..]);
    let seqs = seqs_by_sensor(&after);
    for s in DEMO_SENSORS {
        assert_eq!(seqs[s], (0..6).collect::<Vec<_>>(), "{s}");
    }
}

/// A `run` agent killed by SIGKILL mid-run (a crash or power cut) loses no
/// committed row: every row seen before the kill is still there and the next
/// start continues the seqs.
#[test]
fn crash_keeps_committed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let mut cmd = std_cmd(dir.path());
    cmd.arg("--config")
        .arg(fixture("good/sim.toml"))
        .args(["run", "--db"])
        .arg(&db)
        .stdout(std::process::Stdio::null())
        .stderr(common::stderr_file(&dir.path().join("run.err")));
    let mut child = ChildGuard::spawn(cmd);
    common::wait_for(Duration::from_secs(30), "6 readings", || {
        db.exists()
            && Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row("SELECT count(*) FROM readings", [], |r| r.get::<_, i64>(0))
                })
                .is_ok_and(|n| n >= 6)
    });
    let seen = readings(&db);
    child.child.kill().unwrap();
    child
        .wait_timeout(Duration::from_secs(20))
        .expect("SIGKILL ends the agent");
    let after = readings(&db);
    assert!(after.len() >= seen.len());
    assert_eq!(&after[..seen.len()], &seen[..]);
    let status = common::agent_status(&db);
    assert_eq!(status.len(), 1);
    assert_eq!(
        status[0].state, "running",
        "a crashed agent cannot mark itself stopped"
    );

    // The next start continues.
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(fixture("good/sim.toml"))
        .args(["demo", "--speed", "1", "--count", "1", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seqs = seqs_by_sensor(&readings(&db));
    for (sensor, s) in &seqs {
        let want: Vec<i64> = (0..i64::try_from(s.len()).unwrap()).collect();
        assert_eq!(s, &want, "{sensor}: seqs must stay gapless across a crash");
    }
}

/// Max seq of `sensor` in the log, if the log and a row exist yet.
fn max_seq(db: &Path, sensor: &str) -> Option<i64> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row(
        "SELECT max(seq) FROM readings WHERE sensor = ?1",
        [sensor],
        |r| r.get::<_, Option<i64>>(0),
    )
    .ok()
    .flatten()
}

/// A second `run` started by mistake on the log (and node) of a running
/// agent must not cost readings: it either refuses to start with a clear
/// message (and the first agent carries on), or both agents log without
/// conflicts. Either way the first agent stops cleanly (exit 0) on SIGTERM,
/// no commit fails, and every sensor's seqs stay gapless.
#[test]
fn second_agent_on_the_same_log_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let spawn = |name: &str| {
        let mut cmd = std_cmd(dir.path());
        cmd.arg("--config")
            .arg(fixture("good/sim.toml"))
            .args(["run", "--db"])
            .arg(&db)
            .stdout(std::process::Stdio::null())
            .stderr(common::stderr_file(&dir.path().join(name)));
        ChildGuard::spawn(cmd)
    };
    let mut first = spawn("first.err");
    common::wait_for(Duration::from_secs(30), "the first agent's rows", || {
        db.exists() && max_seq(&db, "lab").is_some_and(|s| s >= 2)
    });
    let mut second = spawn("second.err");
    // Let it get past its start-up (it refuses, or says it runs) before the
    // ten cycles are counted: under an emulator (scripts/cross-test) starting
    // takes longer than ten 50 ms cycles.
    let second_err_path = dir.path().join("second.err");
    common::wait_for(
        Duration::from_secs(30),
        "the second agent to start or refuse",
        || {
            second.child.try_wait().unwrap().is_some()
                || std::fs::read_to_string(&second_err_path)
                    .is_ok_and(|e| e.contains("agent running"))
        },
    );
    let from = max_seq(&db, "lab").unwrap();
    // Ten more cycles of the log, or the second agent gives up.
    common::wait_for(Duration::from_secs(30), "10 more cycles", || {
        second.child.try_wait().unwrap().is_some()
            || max_seq(&db, "lab").is_some_and(|s| s >= from + 10)
    });
    let second_refused = second.child.try_wait().unwrap();

    common::send_signal(first.id(), "TERM");
    if second_refused.is_none() {
        common::send_signal(second.id(), "TERM");
    }
    let first_status = first
        .wait_timeout(Duration::from_secs(20))
        .expect("the first agent stops on SIGTERM");
    let second_status = second
        .wait_timeout(Duration::from_secs(20))
        .expect("the second agent stops on SIGTERM");
    let first_err = std::fs::read_to_string(dir.path().join("first.err")).unwrap();
    let second_err = std::fs::read_to_string(dir.path().join("second.err")).unwrap();
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(3)..].join("\n")
    };

    assert_no_panic(&first_err);
    assert_no_panic(&second_err);
    let mut problems = Vec::new();
    if first_status.code() != Some(0) {
        problems.push(format!(
            "first agent exited {first_status} after SIGTERM:\n{}",
            tail(&first_err)
        ));
    }
    let refused = second_refused.is_some_and(|s| !s.success());
    if refused && !second_err.contains(&db.display().to_string()) {
        problems.push(format!(
            "second agent refused without naming the log:\n{}",
            tail(&second_err)
        ));
    } else if !refused && second_status.code() != Some(0) {
        problems.push(format!(
            "second agent exited {second_status} after SIGTERM:\n{}",
            tail(&second_err)
        ));
    }
    for (who, err) in [("first", &first_err), ("second", &second_err)] {
        if err.contains("cannot commit") || err.contains("UNIQUE constraint failed") {
            let line = err
                .lines()
                .find(|l| l.contains("UNIQUE") || l.contains("cannot commit"))
                .unwrap_or_default();
            problems.push(format!("{who} agent's commits failed: {line}"));
        }
    }
    let seqs = seqs_by_sensor(&readings(&db));
    for (sensor, s) in &seqs {
        let want: Vec<i64> = (0..i64::try_from(s.len()).unwrap()).collect();
        if s != &want {
            problems.push(format!("{sensor}: seqs not gapless: {s:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "two agents on one log lost readings:\n{}",
        problems.join("\n")
    );
}

/// A full disk, made real with a file-size limit (`ulimit -f`, SIGXFSZ
/// ignored so writes fail with EFBIG like ENOSPC would; 200 KiB: the WAL
/// of the migrations and a few cycles, about 15 readings): the agent keeps
/// reading and scoring, says what to check, never corrupts the file, and
/// keeps what it had committed. The limit caps the spill too: what it
/// holds is written at the next start, what it could not take is reported
/// lost per sensor and seq range.
#[test]
fn full_disk_keeps_the_agent_running_and_the_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let runtime = dir.path().join("run");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -f 200; trap "" XFSZ; exec "$@""#)
        .arg("bash")
        .args(common::bin_argv())
        .args(["demo", "--db"])
        .arg(&db)
        .args(["--speed", "1000", "--count", "300"])
        .env("NO_COLOR", "1")
        .env("RUNTIME_DIRECTORY", &runtime)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_no_panic(&stderr);
    // Every cycle still ran: the last sensor reached seq 299.
    assert!(stdout.contains("seq 299"), "{stdout}");
    assert!(
        stdout.contains("readings held (and spilled) until the log takes them")
            && stdout.contains("the disk may be full or failing"),
        "{stdout}"
    );
    // At the stop the readings the limited spill could not take are
    // reported lost, per sensor: "lost N readings of sensor X, seq A..299".
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("spilled "), "{stderr}");
    let mut first_lost = std::collections::BTreeMap::new();
    for line in stderr.lines().filter(|l| l.contains("ERROR lost ")) {
        let rest = &line[line.find(" of sensor ").unwrap() + " of sensor ".len()..];
        let (sensor, rest) = rest.split_once(", seq ").unwrap();
        let (first, rest) = rest.split_once("..").unwrap();
        assert!(rest.starts_with("299 "), "{line}");
        first_lost.insert(sensor.to_string(), first.parse::<i64>().unwrap());
    }
    assert_eq!(first_lost.len(), 4, "a loss line per sensor:\n{stderr}");
    let conn = Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let seqs = common::seqs_by_sensor(&common::readings(&db));
    assert!(!seqs.is_empty(), "the first cycles were committed");
    for (sensor, seqs) in seqs {
        let expected: Vec<i64> = (0..i64::try_from(seqs.len()).unwrap()).collect();
        assert_eq!(seqs, expected, "{sensor}: committed rows are gapless");
    }
    // With space again, the next start writes the spill: every seq before
    // the lost ones is in the log (and the lost ones, never published, are
    // handed out again).
    let out = edgeprio(dir.path())
        .args(["demo", "--speed", "1000", "--count", "1", "--db"])
        .arg(&db)
        .env("RUNTIME_DIRECTORY", &runtime)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("read "), "{}", text(&out.stderr));
    for (sensor, seqs) in common::seqs_by_sensor(&common::readings(&db)) {
        let expected: Vec<i64> = (0..=first_lost[&sensor]).collect();
        assert_eq!(seqs, expected, "{sensor}: spilled rows written, gapless");
    }
    assert!(std::fs::read_dir(&runtime).unwrap().next().is_none());
}

// ---------------------------------------------------------------------------
// Issue 11, DHT frames: the `dht11` kind and the `negative` setting. Frames
// that decode plausibly in no encoding cannot be sent from outside the
// binary; they are covered through the real backend over the wire
// simulator (src/sensor/frame_wire_tests.rs) and in src/sensor/frame.rs.
// ---------------------------------------------------------------------------

/// One bad `[[sensor]]` setting, written inline, and what its error names.
struct BadDhtConfig {
    /// What the case is about, for failure messages.
    what: &'static str,
    /// The config file's text.
    body: &'static str,
    /// The key the error must name.
    key: &'static str,
    /// Texts that show the bad value and what is allowed.
    value: &'static [&'static str],
}

const BAD_DHT_CONFIGS: &[BadDhtConfig] = &[
    BadDhtConfig {
        what: "a DHT11 read faster than its 1 s spacing",
        body: "interval = \"500ms\"\n[[sensor]]\nid = \"porch\"\nkind = \"dht11\"\npin = 17\n",
        key: "interval",
        value: &["\"500ms\"", "1s", "\"porch\"", "DHT11", "kind = \"dht11\""],
    },
    BadDhtConfig {
        what: "a DHT22 next to a DHT11: the slower part's spacing decides",
        body: "interval = \"1s\"\n[[sensor]]\nid = \"porch\"\nkind = \"dht11\"\npin = 17\n\
               [[sensor]]\nid = \"shed\"\nkind = \"dht22\"\npin = 4\n",
        key: "interval",
        value: &["\"1s\"", "2s", "\"shed\"", "DHT22"],
    },
    BadDhtConfig {
        what: "an unknown negative encoding",
        body: "[[sensor]]\nid = \"shed\"\nkind = \"dht22\"\npin = 4\nnegative = \"twos\"\n",
        key: "sensor[0].negative",
        value: &["`twos`", "`auto`", "`sign-magnitude`", "`twos-complement`"],
    },
    BadDhtConfig {
        what: "negative on a DHT11, whose sign bit leaves nothing to choose",
        body: "[[sensor]]\nid = \"porch\"\nkind = \"dht11\"\npin = 17\nnegative = \"auto\"\n",
        key: "sensor[0].negative",
        value: &["`negative`", "kind = \"dht22\"", "kind = \"dht11\""],
    },
    BadDhtConfig {
        what: "negative on a simulated sensor",
        body: "[[sensor]]\nid = \"lab\"\nkind = \"sim\"\nnegative = \"sign-magnitude\"\n",
        key: "sensor[0].negative",
        value: &["`negative`", "kind = \"sim\""],
    },
    BadDhtConfig {
        what: "a DHT11 without a pin",
        body: "[[sensor]]\nid = \"porch\"\nkind = \"dht11\"\n",
        key: "sensor[0].pin",
        value: &["dht11", "pin = 4"],
    },
    BadDhtConfig {
        what: "a DHT11 and a DHT22 on one pin",
        body: "[[sensor]]\nid = \"porch\"\nkind = \"dht11\"\npin = 4\n\
               [[sensor]]\nid = \"shed\"\nkind = \"dht22\"\npin = 4\n",
        key: "sensor[1].pin",
        value: &["pin = 4", "sensor[0]"],
    },
];

/// Runs `sub` on the config at `path` and lists what is wrong with how it
/// refuses it: exit 78, the file named, ``key `KEY` ``, and each of `shows`
/// in the message (which ends the list when anything is wrong). Empty when
/// the refusal is right.
fn config_error_problems(
    dir: &Path,
    path: &Path,
    sub: &str,
    key: &str,
    shows: &[&str],
) -> Vec<String> {
    let out = edgeprio(dir)
        .arg("--config")
        .arg(path)
        .arg(sub)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_no_panic(&stderr);
    let mut problems = Vec::new();
    if out.status.code() != Some(EXIT_CONFIG) {
        problems.push(format!("exit {:?}, want {EXIT_CONFIG}", out.status.code()));
    }
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let key = format!("key `{key}`");
    for want in [file.as_str(), key.as_str()]
        .into_iter()
        .chain(shows.iter().copied())
    {
        if !stderr.contains(want) {
            problems.push(format!("does not show {want:?}"));
        }
    }
    if !problems.is_empty() {
        problems.push(format!("stderr: {}", stderr.trim()));
    }
    problems
}

/// `check-config` and `read-once` refuse each bad DHT setting with exit 78,
/// naming the file, the key and the bad value, and what is allowed.
#[test]
fn bad_dht_settings_are_config_errors_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, case) in BAD_DHT_CONFIGS.iter().enumerate() {
        let file = format!("bad_dht_{i}.toml");
        let path = dir.path().join(&file);
        std::fs::write(&path, case.body).unwrap();
        for sub in ["check-config", "read-once"] {
            let problems = config_error_problems(dir.path(), &path, sub, case.key, case.value);
            if !problems.is_empty() {
                failures.push(format!("{} ({sub}): {}", case.what, problems.join("; ")));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The new settings are accepted where they apply, and the summary shows
/// them: a DHT11 at its 1 s spacing, each `negative` value on a DHT22.
#[test]
fn good_dht_settings_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dht.toml");
    std::fs::write(
        &path,
        "interval = \"1s\"\n[[sensor]]\nid = \"porch\"\nkind = \"dht11\"\npin = 17\n",
    )
    .unwrap();
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("porch (dht11 on BCM 17)"), "{stdout}");
    for negative in ["auto", "sign-magnitude", "twos-complement"] {
        std::fs::write(
            &path,
            format!(
                "[[sensor]]\nid = \"shed\"\nkind = \"dht22\"\npin = 4\nnegative = \"{negative}\"\n"
            ),
        )
        .unwrap();
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .unwrap();
        assert!(out.status.success(), "{negative}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(&format!("shed (dht22 on BCM 4, negative {negative})")),
            "{stdout}"
        );
    }
}

/// `read-once` on a DHT11 off a Pi: the GPIO backend cannot open, said
/// plainly with the fix, exit 1, no panic.
#[test]
fn a_dht11_off_a_pi_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dht11.toml");
    std::fs::write(
        &path,
        "[[sensor]]\nid = \"porch\"\nkind = \"dht11\"\npin = 17\n",
    )
    .unwrap();
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&path)
        .arg("read-once")
        .output()
        .unwrap();
    assert_no_panic(&text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("porch")
            && stdout.contains("cannot open")
            && stdout.contains("GPIO BCM 17"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------
// Calibration offsets, event confirmation and the gap rule (issue 11): the
// new keys' bad values, a trace row no DHT22 reports, and an offset that
// pushes a value out of range.
// ---------------------------------------------------------------------------

/// Writes `dir/<name>`: node `bench`, `head` at the top (top-level keys and
/// `[priority]`), then one sim sensor with `sensor` lines.
fn write_sim_config(dir: &Path, name: &str, head: &str, sensor: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("node = \"bench\"\n{head}\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\n{sensor}\n"),
    )
    .unwrap();
    path
}

#[test]
fn bad_offset_confirm_and_stale_after_name_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    // (top of the file, sensor lines, key, texts the message must show)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "",
            "offset = { temperature = 12.5 }",
            "sensor[0].offset.temperature",
            &["temperature = 12.5", "-10 to 10 °C"],
        ),
        (
            "",
            "offset = { humidity = -40.0 }",
            "sensor[0].offset.humidity",
            &["humidity = -40", "-20 to 20 %RH"],
        ),
        (
            "",
            "offset = { temperature = nan }",
            "sensor[0].offset.temperature",
            &["temperature = NaN", "-10 to 10"],
        ),
        (
            "",
            "offset = { temperature = \"-0.4\" }",
            "sensor[0].offset.temperature",
            &["\"-0.4\""],
        ),
        (
            "",
            "offset = { humidty = 2.0 }",
            "sensor[0].offset.humidty",
            &["`humidty`", "`humidity`"],
        ),
        ("", "offset = -0.4", "sensor[0].offset", &["-0.4"]),
        (
            "[priority]\nconfirm = \"yes\"",
            "",
            "priority.confirm",
            &["\"yes\"", "bool"],
        ),
        (
            "[priority]\nstale_after = \"10s\"",
            "",
            "priority.stale_after",
            &["\"10s\"", "\"15s\"", "\"0s\""],
        ),
        (
            // Between one and two intervals: the gap between two readings
            // is often a little more than one interval.
            "[priority]\nstale_after = \"20s\"",
            "",
            "priority.stale_after",
            &["\"20s\"", "\"15s\"", "\"30s\""],
        ),
        (
            "[priority]\nstale_after = 600",
            "",
            "priority.stale_after",
            &["600", "\"15s\""],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (head, sensor, key, shows)) in cases.iter().enumerate() {
        let path = write_sim_config(dir.path(), &format!("bad{i}.toml"), head, sensor);
        let problems = config_error_problems(dir.path(), &path, "check-config", key, shows);
        if !problems.is_empty() {
            failures.push(format!("{head} {sensor}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A trace row is replayed as one reading, so a row no DHT22 could report
/// is refused at start-up, naming the file, the line and the value.
#[test]
fn trace_row_out_of_range_is_refused_naming_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rec.csv");
    std::fs::write(
        &csv,
        "temperature_c,humidity_pct\n21.0,50.0\n-3276.7,50.0\n",
    )
    .unwrap();
    let config = write_sim_config(dir.path(), "c.toml", "", "trace = \"rec.csv\"");
    let db = dir.path().join("e.db");
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&config)
        .args([
            "demo",
            "--speed",
            "1000",
            "--count",
            "2",
            "--no-dashboard",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    for want in [&csv.display().to_string(), "line 3", "-3276.7", "-40..80"] {
        assert!(all.contains(want), "no {want:?} in {all}");
    }
    assert_no_panic(&all);
    if db.exists() {
        assert!(readings(&db).is_empty(), "logged readings from a bad trace");
    }
}

/// A trace row that the sensor's offset pushes out of range: `read-once`,
/// `run` and `demo` refuse to start, naming the row, the calibrated value
/// and the `offset` (replayed, the row could only be a failed read, and the
/// rows after it would be logged against the wrong seq).
#[test]
fn offset_pushing_a_trace_row_out_of_range_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rec.csv"),
        "temperature_c,humidity_pct\n21.0,60.0\n21.0,95.0\n",
    )
    .unwrap();
    let config = write_sim_config(
        dir.path(),
        "c.toml",
        "",
        "trace = \"rec.csv\"\noffset = { temperature = -0.4, humidity = 10.0 }",
    );
    let db = dir.path().join("e.db");
    for args in [
        &["read-once"][..],
        &["run", "--db"][..],
        &[
            "demo",
            "--speed",
            "1000",
            "--count",
            "3",
            "--no-dashboard",
            "--db",
        ][..],
    ] {
        let mut cmd = edgeprio(dir.path());
        cmd.arg("--config").arg(&config).args(args);
        if args.last() == Some(&"--db") {
            cmd.arg(&db);
        }
        let out = cmd.output().unwrap();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{args:?} started:\n{all}");
        assert_no_panic(&all);
        assert!(all.contains("rec.csv data row 2"), "{args:?}: {all}");
        assert!(all.contains("humidity 105 %RH"), "{args:?}: {all}");
        assert!(all.contains("`offset`"), "{args:?}: {all}");
        if db.exists() {
            assert!(readings(&db).is_empty(), "{args:?} logged readings");
        }
    }
}

/// An offset that pushes a live value out of range (a kernel driver's
/// sysfs files here) is a failed read that names the raw value, the offset
/// and the range, never a wrong value.
#[test]
fn offset_pushing_a_value_out_of_range_is_a_failed_read_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("iio:device0");
    std::fs::create_dir(&device).unwrap();
    std::fs::write(device.join("in_temp_input"), "21000\n").unwrap();
    std::fs::write(device.join("in_humidityrelative_input"), "95000\n").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[[sensor]]\nid = \"lab\"\nkind = \"iio\"\ndevice = {:?}\n\
             offset = {{ temperature = -0.4, humidity = 10.0 }}\n",
            device.display().to_string()
        ),
    )
    .unwrap();
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("read-once")
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert_no_panic(&all);
    assert!(
        all.contains(
            "humidity 95 %RH read, 105 %RH with the offset +10: outside the DHT22 range 0..100"
        ),
        "{all}"
    );
    assert!(
        !all.contains("20.6"),
        "no calibrated value is shown as a reading: {all}"
    );
    // In range, the same device reads calibrated.
    std::fs::write(device.join("in_humidityrelative_input"), "60000\n").unwrap();
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("read-once")
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("20.6") && all.contains("70"), "{all}");
}

// ---------------------------------------------------------------------------
// The kernel driver (`kind = "iio"`) decodes negative temperatures as
// sign-magnitude only, so `negative` applies to it as to a DHT22; the
// decoding itself is tested through the backend's fake sysfs
// (src/sensor/iio.rs).
// ---------------------------------------------------------------------------

/// `negative` is accepted on an iio sensor and `check-config` shows it,
/// `auto` when not set.
#[test]
fn negative_on_iio_passes_check_config_and_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iio.toml");
    let sensor = "[[sensor]]\nid = \"shed\"\nkind = \"iio\"\nname = \"dht11@4\"\n";
    let cases = [
        (String::new(), "auto"),
        ("negative = \"auto\"\n".to_string(), "auto"),
        (
            "negative = \"sign-magnitude\"\n".to_string(),
            "sign-magnitude",
        ),
        (
            "negative = \"twos-complement\"\n".to_string(),
            "twos-complement",
        ),
    ];
    for (line, shown) in cases {
        // interval = "2s": the part's floor stays 2 s on the kernel driver.
        std::fs::write(&path, format!("interval = \"2s\"\n{sensor}{line}")).unwrap();
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .unwrap();
        assert!(out.status.success(), "{line:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(&format!("shed (iio named dht11@4, negative {shown})")),
            "{line:?}: {stdout}"
        );
    }
    // A bad value is refused naming key and value, as on a DHT22.
    std::fs::write(&path, format!("{sensor}negative = \"twos\"\n")).unwrap();
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains("key `sensor[0].negative`"), "{stderr}");
    assert!(stderr.contains("`twos`"), "{stderr}");
}

/// Where `negative` is still refused (a DHT11, a simulation), the error
/// names both kinds it is for.
#[test]
fn negative_refused_elsewhere_names_dht22_and_iio() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    for (kind, extra) in [("dht11", "pin = 17\n"), ("sim", "")] {
        std::fs::write(
            &path,
            format!("[[sensor]]\nid = \"x\"\nkind = \"{kind}\"\n{extra}negative = \"auto\"\n"),
        )
        .unwrap();
        let out = edgeprio(dir.path())
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{kind}: {stderr}");
        assert!(
            stderr.contains("key `sensor[0].negative`"),
            "{kind}: {stderr}"
        );
        assert!(
            stderr.contains("kind = \"dht22\" or kind = \"iio\"")
                && stderr.contains(&format!("this one is kind = \"{kind}\"")),
            "{kind}: {stderr}"
        );
    }
}
