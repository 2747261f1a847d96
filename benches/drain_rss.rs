//! The agent's memory after a large outbox drain (issue 12, item 9): the
//! real `edgeprio run` drains 1,000,000 unpublished readings to a real
//! Mosquitto; its resident set once the outbox is empty must come back near
//! that of an idle agent. `cargo bench --bench drain_rss` prints the
//! figures (README, "Tests and benchmarks"); under `cargo test --benches`
//! a drain of 20,000 keeps the code working. `tests/drain_memory.rs`
//! checks a bound on every test run. Needs `mosquitto`.

#[path = "support/drain_rss.rs"]
mod drain_rss;

use std::path::Path;
use std::time::Duration;

use drain_rss::{MIB, measure};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rows, settle) = if full {
        (1_000_000, Duration::from_secs(5))
    } else {
        (20_000, Duration::from_secs(2))
    };
    let f = measure(Path::new(env!("CARGO_BIN_EXE_edgeprio")), rows, settle);
    #[expect(clippy::cast_precision_loss, reason = "figures in MiB")]
    let mib = |b: u64| b as f64 / MIB;
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = rows as f64 / f.drain_s;
    println!(
        "drain_rss: idle agent VmRSS {:.1} MiB (RssAnon {:.1}); draining {rows} readings took \
         {:.1} s ({rate:.0}/s), peak {:.1} MiB; {:.0} s after the drain: VmRSS {:.1} MiB \
         (RssAnon {:.1})",
        mib(f.idle),
        mib(f.idle_anon),
        f.drain_s,
        mib(f.drain_peak),
        settle.as_secs_f64(),
        mib(f.after),
        mib(f.after_anon),
    );
}
