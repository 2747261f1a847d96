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
//!
//! The same backend reads a DHT11 (`Model::Dht11`): it holds the start
//! pulse for the DHT11's 18 ms before handing over to dht-sensor's DHT22
//! read, and spaces reads 1 s apart. dht-sensor checks the checksum and
//! decodes into `f32`s; [`frame_bytes`] gives back the exact four data
//! bytes, and [`super::frame`] decodes them the way this sensor needs
//! (two's-complement clones, DHT11 tenths, the all-zero frame), so the
//! decoding is ours and tested exhaustively while dht-sensor keeps the wire.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dht_sensor::DhtError;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{ErrorType, InputPin, OutputPin};

use super::frame::{self, Encoding, EncodingTracker, FrameError, Model, Negative};
use super::{ReadError, Sensor};
use crate::clock::Clock;
use crate::domain::{ErrorKind, Sample, SensorRange};

/// The DHT22 needs this long between two reads.
pub const MIN_SPACING: Duration = Model::Dht22.min_spacing();

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

/// A DHT22 (or DHT11) read through dht-sensor over an [`OpenDrain`] line.
pub struct Dht22<L, D> {
    /// Names the line in messages (`GPIO BCM 4`).
    label: String,
    /// The line, with open-drain semantics.
    pin: OpenDrain<L>,
    /// Microsecond delays for dht-sensor's bit timing.
    delay: D,
    /// Paces reads to the part's spacing.
    clock: Arc<dyn Clock>,
    /// Raises the thread for the frame.
    realtime: Box<dyn Realtime>,
    /// The part on the wire: frame format, start pulse, spacing, range.
    model: Model,
    /// The configured `negative` setting.
    negative: Negative,
    /// The encoding negative frames arrived in so far: logged once when
    /// detected, warned about when it changes, reported by `doctor`.
    seen: EncodingTracker,
}

impl<L: LinePin, D: DelayNs + Send> Dht22<L, D> {
    /// A DHT22 on `line`, decoding negative temperatures with
    /// `negative = "auto"`; `label` names it in messages (e.g. `GPIO BCM 4`).
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
            model: Model::Dht22,
            negative: Negative::Auto,
            seen: EncodingTracker::default(),
        }
    }

    /// Reads `model` instead of a DHT22.
    #[must_use]
    pub fn with_model(mut self, model: Model) -> Self {
        self.model = model;
        self
    }

    /// Decodes negative temperatures as `negative` says.
    #[must_use]
    pub fn with_negative(mut self, negative: Negative) -> Self {
        self.negative = negative;
        self
    }

    /// The part this reads.
    pub fn model(&self) -> Model {
        self.model
    }

    /// The configured `negative` setting.
    pub fn negative(&self) -> Negative {
        self.negative
    }

    /// The encoding of the last negative temperature read, if any was.
    pub fn seen_encoding(&self) -> Option<Encoding> {
        self.seen.last()
    }

    fn start_pulse_us(&self) -> u32 {
        u32::try_from(self.model.start_pulse().as_micros()).unwrap_or(u32::MAX)
    }

    /// Waits out the part's rest since the last start pulse.
    fn rest(&self) {
        if let Some(last) = self.pin.last_pulled {
            self.clock.sleep_until(last + self.model.min_spacing());
        }
    }

    /// Pulls one raw frame off the wire by polling it as fast as the CPU
    /// allows and timestamping every edge: the true pulse widths, for
    /// `doctor`'s histogram. (dht-sensor's own polling sleeps 35 us after
    /// each rising edge, so widths seen through it are not the wire's.)
    pub fn capture(&mut self) -> Trace {
        self.rest();
        let _fifo = self.realtime.raise();
        self.pin.record();
        let _ = self.pin.set_low();
        self.delay.delay_us(self.start_pulse_us() + 100);
        let _ = self.pin.set_high();
        let start = self.clock.monotonic();
        // A frame is ~4.5 ms after the response; 8 ms covers a slow sensor.
        while self.clock.monotonic().saturating_sub(start) < Duration::from_millis(8) {
            let _ = self.pin.is_high();
        }
        self.pin.take_trace().unwrap_or_default()
    }

    /// Decodes a frame that passed its checksum, saying in the log what a
    /// negative frame told about the sensor's encoding.
    fn decode(&mut self, bytes: [u8; 4]) -> Result<Sample, ReadError> {
        let d = frame::decode(self.model, self.negative, bytes).map_err(|e| self.frame_error(e))?;
        if let Some(e) = d.negative {
            let who = format!("{} on {}", self.model.kind(), self.label);
            let frame = || format!("word 0x{:04X} = {:.1} °C", d.word, d.sample.temperature);
            self.seen.note(e, self.negative, &who, &frame);
        }
        Ok(d.sample)
    }

    fn frame_error(&self, e: FrameError) -> ReadError {
        let detail = format!("frame from {}: {e}", self.label);
        match e.kind() {
            ErrorKind::Checksum => ReadError::Checksum(detail),
            _ => ReadError::Range(detail),
        }
    }
}

impl<L: LinePin, D: DelayNs + Send> Sensor for Dht22<L, D> {
    fn read(&mut self) -> Result<Sample, ReadError> {
        self.rest();
        let result = {
            let _fifo = self.realtime.raise();
            if self.model == Model::Dht11 {
                // dht-sensor's DHT22 read holds the line 1 ms; a DHT11
                // wants 18 ms. Hold it here first: the read's own pull-low
                // then extends this pulse rather than starting another.
                let _ = self.pin.set_low();
                self.delay.delay_us(self.start_pulse_us());
            }
            dht_sensor::dht22::blocking::read(&mut self.delay, &mut self.pin)
        };
        // Leave the line released whatever happened.
        let _ = self.pin.set_high();
        match result {
            Ok(r) => self.decode(frame_bytes(r)),
            Err(DhtError::Timeout) => Err(ReadError::Timeout(format!(
                "no edge from the sensor on {} within 100 us (unplugged, no pull-up, wrong pin, \
                 {}or the read thread was preempted mid-frame)",
                self.label,
                // A DHT11 ignores the DHT22's 1 ms start pulse.
                if self.model == Model::Dht22 {
                    "a DHT11 configured as kind = \"dht22\", "
                } else {
                    ""
                }
            ))),
            Err(DhtError::ChecksumMismatch) => Err(ReadError::Checksum(format!(
                "frame from {} failed its checksum (a missed or extra bit)",
                self.label
            ))),
            Err(DhtError::PinError(never)) => match never {},
        }
    }

    fn describe(&self) -> String {
        format!("{} on {}", self.model.kind(), self.label)
    }

    fn min_interval(&self) -> Duration {
        self.model.min_spacing()
    }

    fn range(&self) -> SensorRange {
        self.model.range()
    }
}

/// The four data bytes dht-sensor decoded `r` from.
///
/// dht-sensor reads humidity as `u16 / 10` and temperature as sign-magnitude
/// into `f32`, and keeps the bytes to itself. Both are invertible: every
/// `u16` divided by 10 in `f32` rounds back to itself times 10, and the
/// temperature's sign survives in the `f32`'s sign bit even for 0x8000
/// (-0.0). Proven for all 65,536 words of each in the tests below.
pub fn frame_bytes(r: dht_sensor::dht22::Reading) -> [u8; 4] {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "dht-sensor built these from u16 words; the round trip is proven exact"
    )]
    let word = |v: f32| (f64::from(v).abs() * 10.0).round() as u16;
    let [h1, h0] = word(r.relative_humidity).to_be_bytes();
    let sign = if r.temperature.is_sign_negative() {
        0x8000
    } else {
        0
    };
    let [t1, t0] = (word(r.temperature) | sign).to_be_bytes();
    [h1, h0, t1, t0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line that replays one frame to dht-sensor's reader without any
    /// timing: its polling loops see each level they wait for at once, and
    /// the sample 35 us after each rising edge is the bit. This drives the
    /// crate's real decoder, fast enough for every 16-bit word.
    struct Replay {
        bits: [bool; 40],
        highs: usize,
    }

    impl ErrorType for Replay {
        type Error = Infallible;
    }

    impl OutputPin for Replay {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.highs = 0;
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    impl InputPin for Replay {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            // The response's high, then per bit: its rising edge, its sample.
            let n = self.highs;
            self.highs += 1;
            Ok(n == 0 || (n - 1).is_multiple_of(2) || self.bits[(n - 1) / 2])
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            Ok(true)
        }
    }

    struct NoDelay;

    impl DelayNs for NoDelay {
        fn delay_ns(&mut self, _: u32) {}
    }

    fn through_dht_sensor(bytes: [u8; 4]) -> dht_sensor::dht22::Reading {
        let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let mut bits = [false; 40];
        for (i, byte) in bytes.iter().chain([&sum]).enumerate() {
            for j in 0..8 {
                bits[i * 8 + j] = byte & (0x80 >> j) != 0;
            }
        }
        let mut pin = Replay { bits, highs: 0 };
        dht_sensor::dht22::blocking::read(&mut NoDelay, &mut pin).expect("a clean frame")
    }

    /// All 65,536 humidity words and all 65,536 temperature words survive
    /// dht-sensor's `f32` decoding: the bytes are recovered exactly.
    #[test]
    fn frame_bytes_invert_dht_sensor_for_every_word() {
        for w in 0..=u16::MAX {
            let [hi, lo] = w.to_be_bytes();
            let bytes = [hi, lo, hi, lo];
            let r = through_dht_sensor(bytes);
            assert_eq!(frame_bytes(r), bytes, "word 0x{w:04X} read as {r:?}");
        }
        // The replay really went through the decoder: the datasheet example.
        let r = through_dht_sensor([0x02, 0x8C, 0x01, 0x5F]);
        assert!((r.temperature - 35.1).abs() < 1e-4 && (r.relative_humidity - 65.2).abs() < 1e-4);
        assert!(
            through_dht_sensor([0, 1, 0x80, 0])
                .temperature
                .is_sign_negative()
        );
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
