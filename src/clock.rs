//! Time for the adapters: a monotonic clock for spacing reads and retry
//! budgets, the wall clock for timestamps, and sleeping. The real clock
//! reads the OS; the DHT22 wire simulator provides a virtual one, so the
//! same retry and spacing code runs in tests without waiting.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time that can also wait.
pub trait Clock: Send + Sync {
    /// Monotonic time since an arbitrary origin.
    fn monotonic(&self) -> Duration;
    /// Unix time in milliseconds, UTC.
    fn wall_ms(&self) -> i64;
    /// Blocks for `d` (virtual clocks just advance).
    fn sleep(&self, d: Duration);

    /// Blocks until `monotonic() >= t`.
    fn sleep_until(&self, t: Duration) {
        if let Some(d) = t.checked_sub(self.monotonic())
            && !d.is_zero()
        {
            self.sleep(d);
        }
    }
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}
