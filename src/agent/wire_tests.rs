//! The DHT22 path end to end without a Pi: the real open-drain adapter,
//! dht-sensor's decoder, the agent's retry rounds and the log, over the
//! virtual-time wire simulator.

use std::fmt::Write as _;
use std::time::Duration;

use super::cycle::Station;
use crate::config::Config;
use crate::domain::{ErrorKind, Sample};
use crate::sensor::dht22::{Dht22, NoRealtime};
use crate::sensor::wire_sim::{WireConfig, WireSim};
use crate::sensor::{ReadError, Sensor};

fn dht22(
    sim: &WireSim,
) -> Dht22<crate::sensor::wire_sim::SimLine, crate::sensor::wire_sim::SimDelay> {
    Dht22::new(
        "sim BCM 4",
        sim.line(),
        sim.delay(),
        sim.clock(),
        Box::new(NoRealtime),
    )
}

/// Values across the whole range, the edges included.
const TRUTHS: [(f64, f64); 8] = [
    (-40.0, 0.0),
    (-12.3, 0.1),
    (-0.1, 99.9),
    (0.0, 100.0),
    (21.7, 55.5),
    (35.1, 65.2),
    (79.9, 12.3),
    (80.0, 100.0),
];

/// Every start pulse is at least 2 s after the previous one.
fn assert_spacing(sim: &WireSim) {
    let frames = sim.frames();
    for w in frames.windows(2) {
        let gap = w[1].start.saturating_sub(w[0].start);
        assert!(gap >= Duration::from_secs(2), "reads {gap:?} apart: {w:?}");
    }
}

#[test]
fn decodes_exact_values_under_linux_jitter_first_time() {
    let sim = WireSim::new(WireConfig::linux(42), Sample::new(20.0, 50.0));
    let mut sensor = dht22(&sim);
    let mut ok = 0;
    for i in 0..1000 {
        let (t, h) = TRUTHS[i % TRUTHS.len()];
        sim.set_truth(Sample::new(t, h));
        match sensor.read() {
            Ok(s) => {
                assert_eq!(s, Sample::new(t, h), "read {i} decoded a wrong value");
                ok += 1;
            }
            Err(e) => assert!(
                matches!(e, ReadError::Timeout(_) | ReadError::Checksum(_)),
                "{e}"
            ),
        }
    }
    assert!(ok >= 990, "first-try success {ok}/1000 under jitter");
    assert_spacing(&sim);
}

#[test]
fn corrupted_frames_are_never_accepted() {
    let sim = WireSim::new(WireConfig::linux(7), Sample::new(23.4, 45.6));
    sim.set_faults(0.0, 1.0);
    let mut sensor = dht22(&sim);
    for _ in 0..300 {
        let r = sensor.read();
        assert!(r.is_err(), "a frame with a flipped bit became {r:?}");
    }
    assert!(
        sim.frames()
            .iter()
            .all(|f| f.answered && f.flipped.is_some())
    );
    // With some frames corrupted, whatever is accepted is the truth.
    sim.set_faults(0.0, 0.3);
    let mut accepted = 0;
    for _ in 0..300 {
        if let Ok(s) = sensor.read() {
            assert_eq!(s, Sample::new(23.4, 45.6));
            accepted += 1;
        }
    }
    assert!(accepted > 150, "{accepted}");
    assert_spacing(&sim);
}

fn config(dir: &std::path::Path, sensors: &[&str]) -> Config {
    let mut text = format!(
        "node = \"pi\"\ndb = {:?}\n",
        dir.join("e.db").display().to_string()
    );
    for (i, id) in sensors.iter().enumerate() {
        let _ = writeln!(
            text,
            "[[sensor]]\nid = \"{id}\"\nkind = \"dht22\"\npin = {}",
            4 + i
        );
    }
    Config::parse(&text, None).unwrap()
}

/// A station whose sensors are DHT22s on simulated wires sharing one clock.
fn station(dir: &std::path::Path, sims: &[(&str, &WireSim)]) -> Station {
    let ids: Vec<&str> = sims.iter().map(|(id, _)| *id).collect();
    let cfg = config(dir, &ids);
    let clock = sims[0].1.clock();
    Station::open_with(&cfg, cfg.interval, clock, |sc, _| {
        let sim = sims.iter().find(|(id, _)| *id == sc.id).unwrap().1;
        Ok(Box::new(dht22(sim)) as Box<dyn Sensor>)
    })
    .unwrap()
}

#[test]
fn a_preempted_read_is_retried_and_recovered_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WireConfig::linux(3);
    cfg.preempt_per_s = 0.0;
    let sim = WireSim::new(cfg, Sample::new(21.5, 40.0));
    let clock = sim.clock();
    let mut st = station(dir.path(), &[("shelf", &sim)]);
    // 1 ms into the frame the thread loses the CPU for 300 us: bits are lost.
    sim.preempt_next_frame(Duration::from_millis(1), Duration::from_micros(300));
    let start = clock.monotonic();
    let report = st.cycle(None);
    let took = clock.monotonic().saturating_sub(start);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(matches!(
        report.errors[0].kind,
        ErrorKind::Timeout | ErrorKind::Checksum
    ));
    assert_eq!(report.readings.len(), 1, "recovered by a retry");
    assert_eq!(report.readings[0].sample, Sample::new(21.5, 40.0));
    assert!(report.commit_error.is_none());
    // The retry waited the sensor's 2 s, and the cycle fit its 15 s interval.
    assert!(report.readings[0].ts_ms - report.errors[0].ts_ms >= 2000);
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_spacing(&sim);
}

#[test]
fn a_dead_sensor_is_retried_within_the_budget_and_the_others_keep_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let good = WireSim::new(WireConfig::linux(5), Sample::new(19.0, 70.0));
    let dead = WireSim::new(WireConfig::linux(6), Sample::new(19.0, 70.0));
    dead.set_faults(1.0, 0.0);
    // Both sensors on one clock: the station sleeps on the first one's.
    let shared = good.clock();
    let mut st = station(dir.path(), &[("ok", &good), ("gone", &dead)]);
    for cycle in 0..3 {
        let start = shared.monotonic();
        let report = st.cycle(None);
        assert_eq!(report.readings.len(), 1, "cycle {cycle}");
        assert_eq!(report.readings[0].sensor, "ok");
        assert!(
            report
                .errors
                .iter()
                .all(|e| e.sensor == "gone" && e.kind == ErrorKind::Timeout)
        );
        assert!(report.errors.len() >= 2, "retried: {:?}", report.errors);
        let took = shared.monotonic().saturating_sub(start);
        assert!(
            took <= Duration::from_secs(13),
            "cycle {cycle} took {took:?}"
        );
        // The agent sleeps out the rest of the interval between cycles.
        shared.sleep(Duration::from_secs(15).saturating_sub(took));
    }
    assert_spacing(&dead);
}

#[test]
fn an_event_on_the_wire_is_confirmed_by_a_second_frame_two_seconds_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WireConfig::linux(9);
    cfg.preempt_per_s = 0.0;
    let sim = WireSim::new(cfg, Sample::new(20.0, 50.0));
    let clock = sim.clock();
    let mut st = station(dir.path(), &[("shelf", &sim)]);
    let quiet = st.cycle(None);
    assert_eq!(quiet.readings[0].route, crate::domain::Route::Batch);
    assert_eq!(sim.frames().len(), 1, "a first reading is read once");
    clock.sleep(Duration::from_secs(15));
    // A heater starts: +3 °C is an event, read twice before it goes out.
    sim.set_truth(Sample::new(23.0, 50.0));
    let start = clock.monotonic();
    let report = st.cycle(None);
    let took = clock.monotonic().saturating_sub(start);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let r = &report.readings[0];
    assert_eq!(
        (r.sample, r.route),
        (Sample::new(23.0, 50.0), crate::domain::Route::Realtime)
    );
    let frames = sim.frames();
    assert_eq!(frames.len(), 3, "the event took one confirming frame");
    let gap = frames[2].start.saturating_sub(frames[1].start);
    assert!(
        (Duration::from_secs(2)..Duration::from_millis(2100)).contains(&gap),
        "{gap:?}"
    );
    // The price of the confirmation: the reading is committed one DHT22 rest
    // after its first frame.
    assert!(
        (Duration::from_secs(2)..Duration::from_millis(2100)).contains(&took),
        "{took:?}"
    );
    assert_spacing(&sim);
}
