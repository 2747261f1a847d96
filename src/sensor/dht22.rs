//! The DHT22 on a GPIO pin, bit-banged from user space with dht-sensor.
//!
//! The DHT22's data line is open drain: the host pulls it low for the start
//! pulse and then *releases* it, and the 10 kOhm pull-up (or the sensor)
//! sets the level. rppal's `OutputPin` reports the level it last wrote, not
//! the wire, and its `IoPin::set_high` drives the line high, so neither
//! works with dht-sensor as is. [`OpenDrain`] adapts any [`LinePin`] (the
//! three operations below) to embedded-hal's `InputPin + OutputPin` with the
//! right semantics; `rpi` provides the real line, `wire_sim` a simulated one,
//! and everything above the line is the same code on the Pi and in tests.
//!
//! One frame is ~5 ms of 26-28 us ("0") and 70 us ("1") pulses: a thread
//! preempted for 100 us loses it. Reads therefore run on the agent's
//! blocking thread, raised to `SCHED_FIFO` for the frame when permitted,
//! and a failed read is retried by the agent as long as the interval allows.
//! The sensor needs 2 s between reads; [`Dht22`] enforces it itself.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dht_sensor::DhtError;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{ErrorType, InputPin, OutputPin};

use super::{ReadError, Sensor};
use crate::clock::Clock;
use crate::domain::Sample;

/// The DHT22 needs this long between two reads.
pub const MIN_SPACING: Duration = Duration::from_secs(2);

/// The few operations the open-drain adapter needs from a GPIO line.
pub trait LinePin: Send {
    /// Drive the line low (output, level low).
    fn drive_low(&mut self);
    /// Stop driving: input with pull-up, so the line floats high unless the
    /// sensor pulls it low.
    fn release(&mut self);
    /// Sample the level on the wire.
    fn is_high(&mut self) -> bool;
}

/// Edges seen by the adapter while reading: the raw material of `doctor`'s
/// pulse-width histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// `(time since the frame started, level)` at every observed change.
    pub edges: Vec<(Duration, bool)>,
}

impl Trace {
    /// Durations of the high pulses after the sensor's response (the data
    /// bits: ~27 us for "0", ~70 us for "1").
    pub fn high_pulses(&self) -> Vec<Duration> {
        let mut pulses: Vec<Duration> = self
            .edges
            .windows(2)
            .filter(|w| w[0].1 && !w[1].1)
            .map(|w| w[1].0.saturating_sub(w[0].0))
            .collect();
        // The first high pulses are the release and the 80 us response.
        let skip = pulses.len().saturating_sub(40);
        pulses.drain(..skip);
        pulses
    }
}

/// embedded-hal `InputPin + OutputPin` with open-drain semantics over a
/// [`LinePin`]: `set_low` drives low, `set_high` releases, reads sample the
/// wire. Optionally records the edges it observes.
pub struct OpenDrain<L> {
    line: L,
    clock: Arc<dyn Clock>,
    /// When the line was last pulled low: the start of the last start
    /// pulse, which the sensor's 2 s rest is counted from.
    last_pulled: Option<Duration>,
    trace: Option<(Duration, Trace, Option<bool>)>,
}

impl<L: LinePin> OpenDrain<L> {
    /// Wraps `line`; `clock` timestamps the recorded edges.
    pub fn new(line: L, clock: Arc<dyn Clock>) -> Self {
        Self {
            line,
            clock,
            last_pulled: None,
            trace: None,
        }
    }

    /// Starts recording edges (until [`OpenDrain::take_trace`]).
    pub fn record(&mut self) {
        self.trace = Some((self.clock.monotonic(), Trace::default(), None));
    }

    /// Stops recording and returns what was seen.
    pub fn take_trace(&mut self) -> Option<Trace> {
        self.trace.take().map(|(_, t, _)| t)
    }

    fn observe(&mut self, level: bool) {
        if let Some((start, trace, last)) = &mut self.trace
            && *last != Some(level)
        {
            *last = Some(level);
            trace
                .edges
                .push((self.clock.monotonic().saturating_sub(*start), level));
        }
    }
}

impl<L> ErrorType for OpenDrain<L> {
    type Error = Infallible;
}

impl<L: LinePin> OutputPin for OpenDrain<L> {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.line.drive_low();
        // Read the clock after the access: never earlier than the edge.
        self.last_pulled = Some(self.clock.monotonic());
        self.observe(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.line.release();
        Ok(())
    }
}

impl<L: LinePin> InputPin for OpenDrain<L> {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        let level = self.line.is_high();
        self.observe(level);
        Ok(level)
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        self.is_high().map(|h| !h)
    }
}

/// Raises the calling thread to real-time scheduling for a frame.
pub trait Realtime: Send {
    /// Raises the thread; dropping the guard drops it back.
    fn raise(&self) -> RealtimeGuard;
}

/// Restores the thread's scheduling when dropped.
#[must_use = "the thread drops back when the guard is dropped"]
pub struct RealtimeGuard(
    Option<(
        thread_priority::ThreadSchedulePolicy,
        thread_priority::ThreadPriority,
    )>,
);

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        if let Some((policy, priority)) = self.0.take()
            && let Err(e) = thread_priority::set_thread_priority_and_policy(
                thread_priority::thread_native_id(),
                priority,
                policy,
            )
        {
            tracing::warn!("cannot drop the read thread back from SCHED_FIFO: {e:?}");
        }
    }
}

/// No scheduling changes (simulations, or when not wanted).
#[derive(Debug, Default)]
pub struct NoRealtime;

impl Realtime for NoRealtime {
    fn raise(&self) -> RealtimeGuard {
        RealtimeGuard(None)
    }
}

/// `SCHED_FIFO` while a frame is read, when the process is permitted
/// (root, `CAP_SYS_NICE`, or an `RLIMIT_RTPRIO` of at least 10, which the
/// systemd unit sets); says once in the log when it is not.
#[derive(Debug, Default)]
pub struct FifoWhileReading {
    warned: AtomicBool,
}

impl Realtime for FifoWhileReading {
    fn raise(&self) -> RealtimeGuard {
        use thread_priority::{RealtimeThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let Some(before) = current_scheduling() else {
            return RealtimeGuard(None);
        };
        let fifo = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
        // A low real-time priority is enough to win over every normal
        // thread, and leaves the kernel's own real-time threads alone.
        let priority = ThreadPriority::Crossplatform(
            10u8.try_into()
                .expect("10 is a valid cross-platform priority"),
        );
        match thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            priority,
            fifo,
        ) {
            Ok(()) => RealtimeGuard(Some(before)),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "reading DHT22 frames without real-time scheduling (not permitted: {e:?}); \
                         reads may fail more often on a busy system: allow real-time priority 10 \
                         (LimitRTPRIO=10, as the systemd unit sets) or use the kernel driver \
                         (kind = \"iio\")"
                    );
                }
                RealtimeGuard(None)
            }
        }
    }
}

/// The calling thread's policy and priority, in the form
/// `set_thread_priority_and_policy` takes back.
///
/// thread-priority reads a normal thread's priority as its static priority
/// (always 0) but writes a normal priority as a nice value, mapping 0 to
/// nice 19: restoring what it read would leave the thread at nice 19, and an
/// unprivileged thread cannot lower its nice again. So for a normal thread
/// this finds the priority that thread-priority maps to the thread's own
/// nice value (every nice value from -20 to 19 has one).
fn current_scheduling() -> Option<(
    thread_priority::ThreadSchedulePolicy,
    thread_priority::ThreadPriority,
)> {
    use thread_priority::{ThreadPriority, ThreadSchedulePolicy};
    let policy = thread_priority::thread_schedule_policy().ok()?;
    let priority = match policy {
        ThreadSchedulePolicy::Normal(_) => {
            // On Linux, PRIO_PROCESS with no pid is the calling thread.
            let nice = rustix::process::getpriority_process(None).ok()?;
            (0..=99u8)
                .filter_map(|p| p.try_into().ok().map(ThreadPriority::Crossplatform))
                .find(|p| p.to_posix(policy).ok() == Some(nice))?
        }
        ThreadSchedulePolicy::Realtime(_) => thread_priority::get_current_thread_priority().ok()?,
    };
    Some((policy, priority))
}

/// A DHT22 read through dht-sensor over an [`OpenDrain`] line.
pub struct Dht22<L, D> {
    label: String,
    pin: OpenDrain<L>,
    delay: D,
    clock: Arc<dyn Clock>,
    realtime: Box<dyn Realtime>,
}

impl<L: LinePin, D: DelayNs + Send> Dht22<L, D> {
    /// A DHT22 on `line`; `label` names it in messages (e.g. `GPIO BCM 4`).
    pub fn new(
        label: impl Into<String>,
        line: L,
        delay: D,
        clock: Arc<dyn Clock>,
        realtime: Box<dyn Realtime>,
    ) -> Self {
        let mut pin = OpenDrain::new(line, clock.clone());
        // Idle state: released, so the first start pulse is a clean edge.
        let _ = pin.set_high();
        Self {
            label: label.into(),
            pin,
            delay,
            clock,
            realtime,
        }
    }

    /// Pulls one raw frame off the wire by polling it as fast as the CPU
    /// allows and timestamping every edge: the true pulse widths, for
    /// `doctor`'s histogram. (dht-sensor's own polling sleeps 35 us after
    /// each rising edge, so widths seen through it are not the wire's.)
    pub fn capture(&mut self) -> Trace {
        if let Some(last) = self.pin.last_pulled {
            self.clock.sleep_until(last + MIN_SPACING);
        }
        let _fifo = self.realtime.raise();
        self.pin.record();
        let _ = self.pin.set_low();
        self.delay.delay_us(1_100);
        let _ = self.pin.set_high();
        let start = self.clock.monotonic();
        // A frame is ~4.5 ms after the response; 8 ms covers a slow sensor.
        while self.clock.monotonic().saturating_sub(start) < Duration::from_millis(8) {
            let _ = self.pin.is_high();
        }
        self.pin.take_trace().unwrap_or_default()
    }
}

impl<L: LinePin, D: DelayNs + Send> Sensor for Dht22<L, D> {
    fn read(&mut self) -> Result<Sample, ReadError> {
        if let Some(last) = self.pin.last_pulled {
            self.clock.sleep_until(last + MIN_SPACING);
        }
        let result = {
            let _fifo = self.realtime.raise();
            dht_sensor::dht22::blocking::read(&mut self.delay, &mut self.pin)
        };
        // Leave the line released whatever happened.
        let _ = self.pin.set_high();
        match result {
            Ok(r) => Ok(Sample::new(
                tenths(r.temperature),
                tenths(r.relative_humidity),
            )),
            Err(DhtError::Timeout) => Err(ReadError::Timeout(format!(
                "no edge from the sensor on {} within 100 us (unplugged, no pull-up, wrong pin, \
                 or the read thread was preempted mid-frame)",
                self.label
            ))),
            Err(DhtError::ChecksumMismatch) => Err(ReadError::Checksum(format!(
                "frame from {} failed its checksum (a missed or extra bit)",
                self.label
            ))),
            Err(DhtError::PinError(never)) => match never {},
        }
    }

    fn describe(&self) -> String {
        format!("dht22 on {}", self.label)
    }

    fn min_interval(&self) -> Duration {
        MIN_SPACING
    }
}

/// dht-sensor decodes tenths into `f32`; give back the exact tenth as `f64`
/// (23.4f32 is 23.399999618530273 as f64).
fn tenths(v: f32) -> f64 {
    (f64::from(v) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(clippy::float_cmp, reason = "exactness is what is tested")]
    fn tenths_are_exact() {
        assert_eq!(tenths(23.4), 23.4);
        assert_eq!(tenths(-0.1), -0.1);
        assert_eq!(tenths(100.0), 100.0);
    }

    /// Runs `f` on a fresh thread at `nice`, so no test thread keeps it.
    fn on_thread_at_nice<T: Send + 'static>(
        nice: i32,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            rustix::process::setpriority_process(None, nice)
                .expect("raising nice is always allowed");
            f()
        })
        .join()
        .expect("the thread does not panic")
    }

    #[test]
    fn a_frame_leaves_the_thread_as_it_found_it() {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        for nice in [0, 5, 19] {
            let (during, after, nice_after) = on_thread_at_nice(nice, || {
                let realtime = FifoWhileReading::default();
                let guard = realtime.raise();
                let during = thread_priority::thread_schedule_policy().unwrap();
                drop(guard);
                let after = thread_priority::thread_schedule_policy().unwrap();
                (
                    during,
                    after,
                    rustix::process::getpriority_process(None).unwrap(),
                )
            });
            if rustix::process::getuid().is_root() {
                // Root may use SCHED_FIFO, so the frame really ran raised.
                assert!(
                    matches!(during, ThreadSchedulePolicy::Realtime(_)),
                    "nice {nice}: {during:?}"
                );
            }
            assert_eq!(
                after,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
                "nice {nice}"
            );
            assert_eq!(nice_after, nice, "the thread's nice value is restored");
        }
    }

    #[test]
    fn high_pulses_keep_the_last_forty() {
        let mut t = Trace::default();
        let mut at = 0;
        for i in 0..43u64 {
            t.edges.push((Duration::from_micros(at), true));
            at += if i % 2 == 0 { 27 } else { 70 };
            t.edges.push((Duration::from_micros(at), false));
            at += 50;
        }
        let p = t.high_pulses();
        assert_eq!(p.len(), 40);
        assert_eq!(p[0], Duration::from_micros(70));
    }
}
