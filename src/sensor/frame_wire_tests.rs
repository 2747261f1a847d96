//! Every frame a DHT22, a clone or a DHT11 sends, through the real backend:
//! the open-drain adapter, dht-sensor's reader, `frame_bytes` and our
//! decoder, over the virtual-time wire simulator; and the agent counting
//! what is not a reading.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dht22::{Dht22, NoRealtime};
use super::frame::{Encoding, Model, Negative};
use super::wire_sim::{SimDelay, SimLine, SimPart, WireConfig, WireSim};
use super::{ReadError, Sensor};
use crate::agent::Station;
use crate::clock::Clock as _;
use crate::config::Config;
use crate::domain::{ErrorKind, Sample};

/// A wire without preemptions: every read decodes, so each test is about
/// the frame, not the scheduler.
fn wire(part: SimPart, truth: Sample) -> WireSim {
    let mut cfg = WireConfig::linux(17);
    cfg.part = part;
    cfg.preempt_per_s = 0.0;
    WireSim::new(cfg, truth)
}

fn sensor(sim: &WireSim, model: Model, negative: Negative) -> Dht22<SimLine, SimDelay> {
    Dht22::new(
        "sim BCM 4",
        sim.line(),
        sim.delay(),
        sim.clock(),
        Box::new(NoRealtime),
    )
    .with_model(model)
    .with_negative(negative)
}

const COLD: [f64; 3] = [-0.1, -10.0, -39.9];

#[test]
fn negative_temperatures_decode_in_both_encodings_auto_and_forced() {
    for (part, encoding) in [
        (SimPart::Dht22, Encoding::SignMagnitude),
        (SimPart::Dht22Clone, Encoding::TwosComplement),
    ] {
        for negative in [Negative::Auto, encoding.setting()] {
            let sim = wire(part, Sample::new(20.0, 50.0));
            let mut s = sensor(&sim, Model::Dht22, negative);
            for t in COLD {
                sim.set_truth(Sample::new(t, 81.5));
                assert_eq!(
                    s.read(),
                    Ok(Sample::new(t, 81.5)),
                    "{part:?} {negative:?} {t}"
                );
            }
            assert_eq!(s.seen_encoding(), Some(encoding), "{part:?} {negative:?}");
        }
    }
}

#[test]
fn a_forced_encoding_that_does_not_match_names_the_one_that_would() {
    for (part, forced, fits) in [
        (
            SimPart::Dht22Clone,
            Negative::SignMagnitude,
            "negative = \"twos-complement\"",
        ),
        (
            SimPart::Dht22,
            Negative::TwosComplement,
            "negative = \"sign-magnitude\"",
        ),
    ] {
        let sim = wire(part, Sample::new(-10.0, 50.0));
        let mut s = sensor(&sim, Model::Dht22, forced);
        let e = s.read().unwrap_err();
        assert!(matches!(e, ReadError::Range(_)), "{e}");
        assert_eq!(e.kind(), ErrorKind::Range);
        assert!(
            e.detail().contains(fits) && e.detail().contains("-10.0 °C"),
            "{part:?}: {e}"
        );
        assert!(e.detail().contains("sim BCM 4"), "names the line: {e}");
        // Positive values still read: only negative frames differ.
        sim.set_truth(Sample::new(12.5, 50.0));
        assert_eq!(s.read(), Ok(Sample::new(12.5, 50.0)));
    }
}

/// Log lines written while `f` runs, at info and above.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn auto_says_once_which_encoding_it_detected() {
    let sim = wire(SimPart::Dht22Clone, Sample::new(-10.0, 50.0));
    let mut s = sensor(&sim, Model::Dht22, Negative::Auto);
    let log = logged(|| {
        for _ in 0..3 {
            assert_eq!(s.read(), Ok(Sample::new(-10.0, 50.0)));
        }
    });
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("two's complement"))
        .collect();
    assert_eq!(lines.len(), 1, "once per sensor: {log}");
    assert!(
        lines[0].contains("INFO")
            && lines[0].contains("sim BCM 4")
            && lines[0].contains("0xFF9C")
            && lines[0].contains("negative = \"auto\""),
        "{log}"
    );
}

#[test]
fn an_encoding_change_is_warned_about() {
    // One sensor object whose wire changes part mid-life (a replaced
    // sensor, or a frame corrupted into the other encoding's range).
    let clone = wire(SimPart::Dht22Clone, Sample::new(-5.0, 50.0));
    let mut s = sensor(&clone, Model::Dht22, Negative::Auto);
    let log = logged(|| {
        assert_eq!(s.read(), Ok(Sample::new(-5.0, 50.0)));
        clone.set_part(SimPart::Dht22);
        assert_eq!(s.read(), Ok(Sample::new(-5.0, 50.0)));
        assert_eq!(s.read(), Ok(Sample::new(-5.0, 50.0)));
    });
    let warns: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warns.len(), 1, "{log}");
    assert!(
        warns[0].contains("sign-magnitude")
            && warns[0].contains("after earlier ones as two's complement"),
        "{log}"
    );
    assert_eq!(s.seen_encoding(), Some(Encoding::SignMagnitude));
}

fn config(dir: &std::path::Path, kind: &str, interval: &str) -> Config {
    let text = format!(
        "node = \"pi\"\ninterval = \"{interval}\"\ndb = {:?}\n[[sensor]]\nid = \"out\"\nkind = \"{kind}\"\npin = 4\n",
        dir.join("e.db").display().to_string()
    );
    Config::parse(&text, None).unwrap()
}

fn station(dir: &std::path::Path, cfg: &Config, sim: &WireSim, model: Model) -> Station {
    Station::open_with(cfg, cfg.interval, sim.clock(), |_, _| {
        Ok(Box::new(sensor(sim, model, Negative::Auto)) as Box<dyn Sensor>)
    })
    .map_err(|e| format!("{e:#} in {}", dir.display()))
    .unwrap()
}

fn logged_errors(dir: &std::path::Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(dir.join("e.db")).unwrap();
    let mut q = db
        .prepare("SELECT kind, detail FROM sensor_errors ORDER BY ts_ms")
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn an_all_zero_frame_is_a_counted_failed_read_never_a_reading() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "dht22", "15s");
    let sim = wire(SimPart::Dht22, Sample::new(21.0, 40.0));
    sim.set_all_zero(1.0);
    let mut st = station(dir.path(), &cfg, &sim, Model::Dht22);
    let report = st.cycle(None);
    assert!(report.readings.is_empty(), "{:?}", report.readings);
    assert!(!report.errors.is_empty());
    assert!(
        report
            .errors
            .iter()
            .all(|e| e.kind == ErrorKind::Checksum && e.detail.contains("all-zero frame"))
    );
    assert!(sim.frames().iter().filter(|f| f.answered).all(|f| f.zeroed));
    // The log has them too, and no reading.
    let errors = logged_errors(dir.path());
    assert_eq!(errors.len(), report.errors.len());
    assert!(
        errors
            .iter()
            .all(|(k, d)| k == "checksum" && d.contains("pull-up")),
        "{errors:?}"
    );
    let db = rusqlite::Connection::open(dir.path().join("e.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    // Once the sensor recovers, the agent reads it again.
    sim.set_all_zero(0.0);
    sim.sleep(Duration::from_secs(15));
    let report = st.cycle(None);
    assert_eq!(report.readings.len(), 1);
    assert_eq!(report.readings[0].sample, Sample::new(21.0, 40.0));
}

#[test]
fn zero_degrees_is_still_a_reading() {
    let sim = wire(SimPart::Dht22, Sample::new(0.0, 45.0));
    let mut s = sensor(&sim, Model::Dht22, Negative::Auto);
    assert_eq!(s.read(), Ok(Sample::new(0.0, 45.0)));
}

#[test]
fn a_dht11_reads_with_its_long_start_pulse_and_1_s_spacing() {
    let sim = wire(SimPart::Dht11, Sample::new(23.4, 55.0));
    let mut s = sensor(&sim, Model::Dht11, Negative::Auto);
    assert_eq!(s.min_interval(), Duration::from_secs(1));
    for t in [23.4, 24.0, 0.0, 50.0] {
        sim.set_truth(Sample::new(t, 55.0));
        assert_eq!(s.read(), Ok(Sample::new(t, 55.0)));
    }
    let frames = sim.frames();
    assert!(
        frames
            .iter()
            .all(|f| f.answered && f.pulse >= Duration::from_millis(18)),
        "{frames:?}"
    );
    for w in frames.windows(2) {
        let gap = w[1].start.saturating_sub(w[0].start);
        assert!(
            gap >= Duration::from_secs(1) && gap < Duration::from_millis(1_100),
            "{gap:?}"
        );
    }
    assert_eq!(s.describe(), "dht11 on sim BCM 4");
    assert_eq!(s.range(), crate::domain::SensorRange::DHT11);
    // Below 0 °C the DHT11 decodes right and validation rejects it: the
    // part cannot measure there.
    sim.set_truth(Sample::new(-2.3, 60.0));
    let got = s.read().unwrap();
    assert_eq!(got, Sample::new(-2.3, 60.0));
    assert!(s.range().check(got).is_err());
}

#[test]
fn the_wrong_kind_is_a_clear_failure_not_a_wrong_value() {
    // A DHT11 read as a DHT22: a 1 ms pulse is too short for it.
    let sim = wire(SimPart::Dht11, Sample::new(23.0, 55.0));
    let e = sensor(&sim, Model::Dht22, Negative::Auto)
        .read()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        e.detail()
            .contains("a DHT11 configured as kind = \"dht22\""),
        "{e}"
    );
    // A DHT22 read as a DHT11: it answers, but its bytes are no DHT11's.
    let sim = wire(SimPart::Dht22, Sample::new(23.3, 55.5));
    let e = sensor(&sim, Model::Dht11, Negative::Auto)
        .read()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Range, "{e}");
    assert!(e.detail().contains("kind = \"dht11\""), "{e}");
}

#[test]
fn the_agent_reads_a_dht11_at_its_own_spacing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "dht11", "1s");
    let sim = wire(SimPart::Dht11, Sample::new(22.0, 48.0));
    let clock = sim.clock();
    let mut st = station(dir.path(), &cfg, &sim, Model::Dht11);
    for _ in 0..3 {
        let start = clock.monotonic();
        let report = st.cycle(None);
        assert_eq!(report.readings.len(), 1, "{:?}", report.errors);
        assert_eq!(report.readings[0].sample, Sample::new(22.0, 48.0));
        // Well inside the 1 s interval: one read, no retry needed.
        let took = clock.monotonic().saturating_sub(start);
        assert!(took < Duration::from_secs(1), "{took:?}");
        clock.sleep(Duration::from_secs(1).saturating_sub(took));
    }
}

#[test]
fn a_frame_plausible_in_neither_encoding_is_counted_never_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "dht22", "15s");
    // -100.0 °C: 0x83E8 from a datasheet part, 0xFC18 from a clone; in
    // range in neither encoding (a corrupted frame that kept its checksum).
    for part in [SimPart::Dht22, SimPart::Dht22Clone] {
        let sim = wire(part, Sample::new(-100.0, 50.0));
        let mut st = station(dir.path(), &cfg, &sim, Model::Dht22);
        let report = st.cycle(None);
        assert!(
            report.readings.is_empty(),
            "{part:?}: {:?}",
            report.readings
        );
        assert!(!report.errors.is_empty());
        for e in &report.errors {
            assert_eq!(e.kind, ErrorKind::Range, "{e:?}");
            assert!(
                e.detail.contains("either way") && e.detail.contains("-100.0 °C"),
                "{part:?}: {}",
                e.detail
            );
        }
        drop(st);
    }
    assert!(logged_errors(dir.path()).iter().all(|(k, _)| k == "range"));
}
