//! The service manager's side of the agent (systemd `Type=notify`):
//! `READY=1` once the log is open and the sensors are initialised,
//! `STATUS=` after each cycle, `RELOADING=1` and `STOPPING=1`, and watchdog
//! keep-alives that are sent only while read cycles keep completing.
//!
//! A cycle completes when every sensor's read has returned and the commit
//! has returned (a failed commit, e.g. a full disk, still counts: restarting
//! would not fix it, and the readings wait in memory). A read that hangs in
//! the kernel or a commit stuck on a dying SD card stops the cycles, so
//! [`Watchdog`] stops the keep-alives and systemd restarts the agent once
//! `WatchdogSec` has passed.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call is a no-op.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Sends `states` to the service manager, if there is one. A failure is
/// logged, never fatal: the agent's job is the readings.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// The log is open, the sensors are initialised: the agent is running.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line status for `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// The configuration is being reloaded; [`ready`] follows.
pub fn reloading() {
    let now = sd_notify::NotifyState::monotonic_usec_now();
    match now {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// The agent is shutting down (finishing the cycle in flight).
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// When the last read cycle completed, shared by the loop and [`Watchdog`].
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last completed cycle.
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// A cycle completed: reads returned and the commit returned.
    pub fn cycle_done(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the last cycle completed (or the agent started).
    pub fn since_last(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Feeds systemd's watchdog while the cycles keep completing.
#[derive(Debug)]
pub struct Watchdog {
    /// Time between keep-alives: half of `WatchdogSec`.
    pub every: Duration,
    /// Longer than this without a completed cycle is a stall: two periods
    /// (a cycle may retry for most of one) plus slack for a slow commit.
    pub stall_after: Duration,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC` for this pid), for
    /// cycles every `period`; `None` when there is none.
    pub fn from_env(period: Duration) -> Option<Watchdog> {
        sd_notify::watchdog_enabled().map(|timeout| Watchdog::new(timeout, period))
    }

    /// A watchdog of `timeout` for cycles every `period`.
    pub fn new(timeout: Duration, period: Duration) -> Watchdog {
        let stall_after = period
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(5));
        if timeout <= period {
            tracing::warn!(
                watchdog = %humantime::format_duration(timeout),
                interval = %humantime::format_duration(period),
                "WatchdogSec is not longer than the interval: systemd will restart a healthy \
                 agent; raise WatchdogSec (a drop-in: systemctl edit edgeprio)"
            );
        }
        Watchdog {
            every: timeout / 2,
            stall_after,
        }
    }

    /// Whether a keep-alive may be sent now; logs once when a stall starts
    /// and once when it ends.
    fn healthy(&self, progress: &Progress, stalled: &mut bool) -> bool {
        let since = progress.since_last();
        let ok = since <= self.stall_after;
        if !ok && !*stalled {
            tracing::error!(
                since = %humantime::format_duration(Duration::from_secs(since.as_secs())),
                "no read cycle has completed (a sensor read or the database commit hangs); \
                 withholding the watchdog keep-alive so systemd restarts the agent"
            );
        } else if ok && *stalled {
            tracing::warn!("read cycles complete again; watchdog keep-alives resume");
        }
        *stalled = !ok;
        ok
    }

    /// Sends `WATCHDOG=1` every [`Watchdog::every`] while `progress` is
    /// fresh, forever (abort the task to stop it).
    pub async fn run(self, progress: Arc<Progress>) {
        let mut tick = tokio::time::interval(self.every);
        let mut stalled = false;
        loop {
            tick.tick().await;
            if self.healthy(&progress, &mut stalled) {
                notify(&[NotifyState::Watchdog]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_stop_when_cycles_stop_and_resume() {
        let dog = Watchdog {
            every: Duration::from_millis(5),
            stall_after: Duration::from_millis(40),
        };
        let progress = Progress::default();
        let mut stalled = false;
        progress.cycle_done();
        assert!(dog.healthy(&progress, &mut stalled));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!dog.healthy(&progress, &mut stalled));
        assert!(stalled);
        progress.cycle_done();
        assert!(dog.healthy(&progress, &mut stalled));
        assert!(!stalled);
    }

    #[test]
    fn stall_limit_allows_two_periods_and_a_slow_commit() {
        let dog = Watchdog::new(Duration::from_mins(2), Duration::from_secs(15));
        assert_eq!(dog.every, Duration::from_mins(1));
        assert_eq!(dog.stall_after, Duration::from_secs(35));
    }
}
