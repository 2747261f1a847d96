//! `[priority] burst` on the real agent: `run` on the heater replay reads
//! the sensor at the burst interval after each event and goes back to its
//! interval once it has been quiet for `hold`; the status row names the
//! sensor while it is in burst, and a sensor without events keeps its
//! cadence.

mod common;

use std::path::Path;
use std::time::Duration;

fn config(dir: &Path, db: &Path) -> std::path::PathBuf {
    let path = dir.join("edgeprio.toml");
    std::fs::write(
        &path,
        format!(
            "node = \"b\"\ninterval = \"600ms\"\ndb = {:?}\n\n[priority]\nconfirm = false\n\
             burst = {{ interval = \"200ms\", hold = \"400ms\" }}\n\n\
             [[sensor]]\nid = \"heater\"\nkind = \"sim\"\nprofile = \"heater\"\n\n\
             [[sensor]]\nid = \"still\"\nkind = \"sim\"\nprofile = \"trace\"\ntrace = {:?}\n",
            db.display().to_string(),
            dir.join("still.csv").display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("still.csv"),
        "temperature_c,humidity_pct\n21.0,50.0\n21.1,50.0\n",
    )
    .unwrap();
    path
}

#[test]
fn a_sensor_with_events_is_read_faster_and_one_without_keeps_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let cfg = config(dir.path(), &db);
    let runtime = dir.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut agent = common::RunAgent::start(dir.path(), &cfg, &runtime, "agent");
    agent.wait_line(&["agent running"], Duration::from_secs(30));
    // The status row names the heater while it is in burst.
    let mut seen_burst = None;
    common::wait_for(Duration::from_mins(1), "the heater in burst", || {
        if !db.exists() {
            return false;
        }
        seen_burst = common::open_ro(&db)
            .query_row("SELECT burst FROM agent_status WHERE node = 'b'", [], |r| {
                r.get::<_, Option<String>>(0)
            })
            .ok()
            .flatten();
        seen_burst.is_some()
    });
    assert_eq!(seen_burst.as_deref(), Some("heater"));
    common::wait_for(Duration::from_mins(1), "a replay of the heater", || {
        common::readings(&db)
            .iter()
            .filter(|r| r.sensor == "heater")
            .count()
            >= 20
    });
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("burst: an event"), "{stderr}");
    assert!(stderr.contains("burst over"), "{stderr}");

    let rows = common::readings(&db);
    let gaps = |sensor: &str| -> Vec<(i64, String)> {
        let own: Vec<_> = rows.iter().filter(|r| r.sensor == sensor).collect();
        own.windows(2)
            .map(|w| (w[1].ts_ms - w[0].ts_ms, w[0].route.clone()))
            .collect()
    };
    let heater = gaps("heater");
    // After a real-time reading the next one comes at the burst interval
    // (200 ms, well under the 600 ms interval)...
    let after_event: Vec<i64> = heater
        .iter()
        .filter(|(_, route)| route == "realtime")
        .map(|(gap, _)| *gap)
        .collect();
    assert!(!after_event.is_empty(), "the heater replay has events");
    assert!(
        after_event.iter().all(|&g| g < 450),
        "gaps after events: {after_event:?}"
    );
    // ...and in the quiet stretches at the interval again.
    assert!(
        heater.iter().any(|(g, _)| *g >= 550),
        "the heater's burst ends: {heater:?}"
    );
    // The still sensor is never in burst: always the whole interval.
    let still = gaps("still");
    assert!(still.len() >= 5, "{still:?}");
    assert!(
        still.iter().all(|(g, _)| *g >= 550),
        "the still sensor kept its cadence: {still:?}"
    );
}
