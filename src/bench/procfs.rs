//! What a process costs, read from `/proc`: its CPU time and its resident
//! set. The bench reports them per process, and the benches under
//! `benches/` read them the same way.

use std::time::Duration;

/// `VmRSS`, `VmHWM` (the peak) and `RssAnon` of `pid`, in bytes; zeros
/// when the process is gone. `RssAnon` is the heap and the stacks without
/// the binary's own pages, which a debug build has many more of.
pub fn rss(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"))
}

/// The CPU time `pid` has used so far, user and system
/// (`/proc/<pid>/stat`, fields 14 and 15, in clock ticks); zero when the
/// process is gone.
pub fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count after its ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // USER_HZ: 100 on every Linux architecture, whatever the kernel's
    // own tick (it is the ABI of /proc, what `getconf CLK_TCK` prints).
    Duration::from_millis(ticks * 10)
}

/// The machine, for the report: the CPU's model name and how many CPUs
/// this process may run on.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |k| k.trim().to_owned());
    format!("{cpus} x {model}, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that spins: the bench measures its children, never itself
    /// (and under qemu-user a process's own `/proc/self/stat` is a fake
    /// with zero CPU times; a child's is the kernel's).
    #[test]
    fn a_busy_child_has_a_resident_set_and_spends_cpu() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh runs");
        let pid = child.id();
        let start = std::time::Instant::now();
        let mut spent = Duration::ZERO;
        while spent < Duration::from_millis(50) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            spent = cpu(pid);
        }
        let (now, peak, _) = rss(pid);
        child.kill().expect("kill the child");
        child.wait().expect("reap the child");
        assert!(
            spent >= Duration::from_millis(50),
            "a spinning child spent {spent:?}"
        );
        assert!(now > 0 && peak >= now, "VmRSS {now}, VmHWM {peak}");
    }

    #[test]
    fn a_process_that_is_gone_costs_nothing() {
        assert_eq!(rss(u32::MAX), (0, 0, 0));
        assert_eq!(cpu(u32::MAX), Duration::ZERO);
    }
}
