//! The DHT22 path on the virtual-time wire simulator: how much CPU one
//! decoded frame costs (adapter + dht-sensor + simulator), and one agent
//! cycle of four DHT22s including validation, scoring and the fsynced
//! commit.

use std::fmt::Write as _;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgeprio::agent::Station;
use edgeprio::config::Config;
use edgeprio::domain::Sample;
use edgeprio::sensor::Sensor;
use edgeprio::sensor::dht22::{Dht22, NoRealtime};
use edgeprio::sensor::wire_sim::{WireConfig, WireSim};

fn decode(c: &mut Criterion) {
    let mut cfg = WireConfig::linux(1);
    cfg.preempt_per_s = 0.0;
    let sim = WireSim::new(cfg, Sample::new(21.7, 55.5));
    let mut sensor = Dht22::new(
        "bench",
        sim.line(),
        sim.delay(),
        sim.clock(),
        Box::new(NoRealtime),
    );
    let mut group = c.benchmark_group("dht22");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_one_frame", |b| {
        b.iter(|| sensor.read().expect("no faults injected"));
    });
    group.finish();
}

fn cycle(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = format!(
        "node = \"bench\"\ndb = {:?}\n",
        dir.path().join("e.db").display().to_string()
    );
    for i in 0..4 {
        let _ = writeln!(
            text,
            "[[sensor]]\nid = \"s{i}\"\nkind = \"dht22\"\npin = {}",
            4 + i
        );
    }
    let config = Config::parse(&text, None).expect("valid");
    let mut cfg = WireConfig::linux(2);
    cfg.preempt_per_s = 0.0;
    let sim = WireSim::new(cfg, Sample::new(21.7, 55.5));
    let clock = sim.clock();
    let mut station = Station::open_with(&config, config.interval, Arc::clone(&clock), |_, _| {
        Ok(Box::new(Dht22::new(
            "bench",
            sim.line(),
            sim.delay(),
            sim.clock(),
            Box::new(NoRealtime),
        )) as Box<dyn Sensor>)
    })
    .expect("open");
    let mut group = c.benchmark_group("dht22");
    group.throughput(Throughput::Elements(4));
    group.bench_function("cycle_of_4_sensors_with_commit", |b| {
        b.iter(|| {
            // The four sensors share one simulated wire: step over their rest.
            clock.sleep(std::time::Duration::from_secs(15));
            let report = station.cycle(None);
            assert!(report.commit_error.is_none());
            report.readings.len()
        });
    });
    group.finish();
}

// No plots: the package's plotters draws text with fonts it is given
// (src/plot.rs registers one), and criterion's charts are given none, so
// they would fail with FontUnavailable. The figures are in the output.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = decode, cycle
}
criterion_main!(benches);
