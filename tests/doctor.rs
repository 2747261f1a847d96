//! `edgeprio doctor` run as a user runs it, on this machine (not a
//! Raspberry Pi): it must say so clearly and still check what it can.

mod common;

use std::path::Path;

use common::{assert_no_panic, edgeprio, fixture, text};

fn doctor(dir: &Path, config: &Path) -> (Option<i32>, String) {
    let out = edgeprio(dir)
        .arg("--config")
        .arg(config)
        .args(["doctor", "--reads", "2"])
        .output()
        .unwrap();
    assert_no_panic(&text(&out.stderr));
    (out.status.code(), text(&out.stdout))
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("edgeprio.toml");
    std::fs::write(&path, format!("node = \"pi\"\ndb = \"e.db\"\n{body}")).unwrap();
    path
}

#[test]
fn off_a_pi_a_dht22_config_is_diagnosed_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = doctor(dir.path(), &fixture("good/dht22.toml"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ok    config"), "{out}");
    let board = out
        .lines()
        .find(|l| l.starts_with("FAIL  board"))
        .expect(&out);
    assert!(
        board.contains("not a Raspberry Pi") && board.contains("bench"),
        "{out}"
    );
    assert!(out.contains("fix: run edgeprio on the Pi"), "{out}");
    assert!(
        out.contains("sensor bench") && out.contains("not tested"),
        "{out}"
    );
    assert!(out.contains("problem(s) found"), "{out}");
}

#[test]
fn simulated_sensors_and_a_fresh_database_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n",
    );
    let (code, out) = doctor(dir.path(), &config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("info  board") && out.contains("no dht22 or dht11 sensor is configured"),
        "{out}"
    );
    assert!(
        out.contains("ok    sensor lab") && out.contains("2/2 reads succeeded"),
        "{out}"
    );
    assert!(out.contains("will be created on the first run"), "{out}");
    assert!(out.contains("no problems found"), "{out}");
    assert!(
        !dir.path().join("e.db").exists(),
        "doctor must not create the log"
    );
}

#[test]
fn an_existing_log_reports_the_agent_and_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[sensor]]\nid = \"lab\"\nkind = \"sim\"\nprofile = \"heater\"\n",
    );
    // The demo writes node "demo"; run it under this config's node instead.
    let out = edgeprio(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["demo", "--speed", "1000", "--count", "3", "--db"])
        .arg(dir.path().join("e.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, out) = doctor(dir.path(), &config);
    assert_eq!(code, Some(0), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("ok    database"))
        .expect(&out);
    // The demo published everything to its embedded broker.
    assert!(
        line.contains("agent stopped") && line.contains("outbox 0"),
        "{line}"
    );
}

#[test]
fn a_missing_iio_device_names_the_overlay_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[sensor]]\nid = \"shelf\"\nkind = \"iio\"\nname = \"dht11@11\"\n",
    );
    let (code, out) = doctor(dir.path(), &config);
    assert_eq!(code, Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL  sensor shelf"))
        .expect(&out);
    assert!(line.contains("dtoverlay=dht11,gpiopin="), "{line}");
}

#[test]
fn an_invalid_config_is_the_first_and_only_finding() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = doctor(dir.path(), &fixture("bad_config/dht22_pin_40.toml"));
    assert_eq!(code, Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL  config"))
        .expect(&out);
    assert!(
        line.contains("sensor[0].pin") && line.contains("40"),
        "{line}"
    );
    assert!(!out.contains("board"), "{out}");
}

#[test]
fn an_unwritable_database_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgeprio.toml");
    std::fs::write(
        &path,
        "db = \"/proc/edgeprio/e.db\"\n[[sensor]]\nid = \"lab\"\nkind = \"sim\"\n",
    )
    .unwrap();
    let (code, out) = doctor(dir.path(), &path);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL  database"), "{out}");
}

/// A DHT11 is a GPIO sensor too: off a Pi doctor says it cannot be tested
/// here, naming its kind and pin, next to a DHT22 with its `negative`.
#[test]
fn off_a_pi_a_dht11_is_named_with_its_kind_and_pin() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "interval = \"2s\"\n[[sensor]]\nid = \"porch\"\nkind = \"dht11\"\npin = 17\n\
         [[sensor]]\nid = \"shed\"\nkind = \"dht22\"\npin = 4\nnegative = \"twos-complement\"\n",
    );
    let (code, out) = doctor(dir.path(), &config);
    assert_eq!(code, Some(1), "{out}");
    let board = out
        .lines()
        .find(|l| l.starts_with("FAIL  board"))
        .expect(&out);
    assert!(board.contains("porch, shed"), "{out}");
    assert!(
        out.contains("sensor porch") && out.contains("dht11 on BCM 17: not tested"),
        "{out}"
    );
    assert!(out.contains("dht22 on BCM 4: not tested"), "{out}");
}
