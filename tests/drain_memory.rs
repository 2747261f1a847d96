//! After a large outbox drain the agent gives its memory back (issue 12,
//! item 9): the real `edgeprio run` drains a backlog to a real Mosquitto,
//! and once the outbox is empty its heap must be back near that of an idle
//! agent: `RssAnon` (the resident set without the binary's own pages, which
//! a debug build has many more of) at most 3 MiB above idle. The full
//! 1,000,000-reading measurement with the release build is `cargo bench
//! --bench drain_rss` (README, "Tests and benchmarks"). Needs `mosquitto`.

#[path = "../benches/support/drain_rss.rs"]
mod drain_rss;

use std::path::Path;
use std::time::Duration;

use drain_rss::{MIB, measure};

/// Measured on the debug build, 100,000 readings: before the fix `RssAnon`
/// idle 2.7 MiB, 9.1 MiB after the drain (+6.4); with it 2.5 and 4.1 MiB
/// (+1.6: the drain's extra threads, whose stacks go a few seconds later).
#[test]
fn memory_comes_back_after_a_large_drain() {
    let f = measure(
        Path::new(env!("CARGO_BIN_EXE_edgeprio")),
        100_000,
        Duration::from_secs(3),
    );
    #[expect(clippy::cast_precision_loss, reason = "figures in MiB")]
    let mib = |b: u64| b as f64 / MIB;
    let bound = mib(f.idle_anon) + 3.0;
    eprintln!(
        "RssAnon: idle {:.1} MiB, after the drain {:.1} MiB (bound {bound:.1}); VmRSS idle \
         {:.1}, drain peak {:.1}, after {:.1} MiB; drain {:.1} s",
        mib(f.idle_anon),
        mib(f.after_anon),
        mib(f.idle),
        mib(f.drain_peak),
        mib(f.after),
        f.drain_s
    );
    assert!(f.idle_anon > 0 && f.after_anon > 0, "{f:?}");
    assert!(
        mib(f.after_anon) <= bound,
        "after the drain the agent's heap holds {:.1} MiB, idle {:.1} MiB: more than \
         idle + 3 MiB = {bound:.1} MiB ({f:?})",
        mib(f.after_anon),
        mib(f.idle_anon)
    );
}
