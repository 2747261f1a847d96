//! A virtual-time DHT22 on a simulated open-drain line: test support that
//! lives in the crate so tests, benchmarks and `doctor`'s own tests can use
//! it.
//!
//! It models the wire protocol: the host holds the line low for >= 1 ms and
//! releases it; 20-40 us later the sensor answers with 80 us low and 80 us
//! high, then sends 40 bits, each 50 us low followed by 26-28 us high ("0")
//! or 70 us high ("1"): humidity x10, temperature x10 in sign-magnitude, and
//! a checksum byte; then it releases the line. It ignores a start pulse less
//! than 2 s after the last frame it answered, like the real part.
//!
//! It can be another part ([`SimPart`]): a DHT22 clone that sends negative
//! temperatures in two's complement, or a DHT11 (an 18 ms start pulse, the
//! DHT11 byte format with tenths and a sign bit, 1 s between reads).
//!
//! And it models what Linux does to a user-space reader: every pin access
//! and every delay costs a little more than asked (microsecond jitter), and
//! now and then the thread is preempted for 50-500 us (a Poisson process).
//! Faults can be injected: a sensor that does not answer, a flipped bit, an
//! all-zero frame (a wedged sensor, or a missing pull-up).
//!
//! Nothing here sleeps: time is a shared counter that pin accesses and
//! delays advance, so 1,000 reads 2 s apart take milliseconds.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use embedded_hal::delay::DelayNs;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dht22::LinePin;
use super::frame::Model;
use crate::clock::Clock;
use crate::domain::Sample;

/// Which part the simulated sensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimPart {
    /// A datasheet DHT22: sign-magnitude negative temperatures.
    Dht22,
    /// A DHT22 clone: negative temperatures in two's complement.
    Dht22Clone,
    /// A DHT11: 18 ms start pulse, integer-and-tenth bytes, 1 s spacing.
    Dht11,
}

impl SimPart {
    /// The model whose timing rules the part follows.
    pub fn model(self) -> Model {
        match self {
            SimPart::Dht22 | SimPart::Dht22Clone => Model::Dht22,
            SimPart::Dht11 => Model::Dht11,
        }
    }
}

/// How the simulated sensor and the simulated Linux host behave. Times are
/// in nanoseconds, ranges are uniform and inclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct WireConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// The part on the wire: its frame format and timing rules.
    pub part: SimPart,
    /// Cost of one pin access (a GPIO register read or mode change).
    pub access_ns: (u64, u64),
    /// How much longer than asked a delay takes.
    pub overshoot_ns: (u64, u64),
    /// Mean preemptions of the reading thread per second.
    pub preempt_per_s: f64,
    /// How long a preemption lasts.
    pub preempt_ns: (u64, u64),
    /// Probability that the sensor ignores a valid start pulse.
    pub no_answer: f64,
    /// Probability that one bit of an answered frame is flipped.
    pub bit_flip: f64,
    /// Probability that an answered frame is all zeros (checksum 0 too).
    pub all_zero: f64,
    /// Sensor's delay between the host's release and its answer.
    pub response_ns: (u64, u64),
    /// Low time before each bit.
    pub bit_low_ns: (u64, u64),
    /// High time of a "0".
    pub zero_ns: (u64, u64),
    /// High time of a "1".
    pub one_ns: (u64, u64),
}

impl WireConfig {
    /// A user-space reader on an ordinary Linux box: jitter on every access
    /// and delay, a preemption every two seconds on average.
    pub fn linux(seed: u64) -> Self {
        Self {
            seed,
            part: SimPart::Dht22,
            access_ns: (150, 1_500),
            overshoot_ns: (50, 2_000),
            preempt_per_s: 0.5,
            preempt_ns: (50_000, 500_000),
            no_answer: 0.0,
            bit_flip: 0.0,
            all_zero: 0.0,
            response_ns: (20_000, 40_000),
            bit_low_ns: (48_000, 55_000),
            zero_ns: (26_000, 28_000),
            one_ns: (68_000, 72_000),
        }
    }
}

/// One start pulse the host sent, as the sensor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// When the host started pulling low.
    pub start: Duration,
    /// How long it held the line low.
    pub pulse: Duration,
    /// Whether the sensor answered.
    pub answered: bool,
    /// The bit the sensor flipped in its answer, if any.
    pub flipped: Option<usize>,
    /// Whether the answer was an all-zero frame.
    pub zeroed: bool,
}

#[derive(Debug)]
struct Wire {
    cfg: WireConfig,
    rng: ChaCha8Rng,
    now_ns: u64,
    wall_base_ms: i64,
    truth: Sample,
    host_low_since: Option<u64>,
    /// Times at which the sensor toggles the line, starting from high.
    edges: Vec<u64>,
    last_answer: Option<u64>,
    frames: Vec<Frame>,
    preemptions: u64,
    /// A preemption to happen this long into the next answered frame.
    planned: Option<(u64, u64)>,
    /// When that planned preemption is due (absolute), once a frame started.
    due: Option<(u64, u64)>,
}

impl Wire {
    fn pick(&mut self, (lo, hi): (u64, u64)) -> u64 {
        if lo >= hi {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        }
    }

    /// Advances time by `ns` as the reading thread experiences it: maybe
    /// preempted on the way.
    fn run_for(&mut self, ns: u64) {
        let mut d = ns;
        if let Some((at, len)) = self.due
            && self.now_ns + d >= at
        {
            d += len;
            self.due = None;
            self.preemptions += 1;
        }
        let p = 1.0 - (-self.cfg.preempt_per_s * ns as f64 / 1e9).exp();
        if p > 0.0 && self.rng.random_bool(p.min(1.0)) {
            d += self.pick(self.cfg.preempt_ns);
            self.preemptions += 1;
        }
        self.now_ns += d;
    }

    fn access(&mut self) {
        let ns = self.pick(self.cfg.access_ns);
        self.run_for(ns);
    }

    fn level(&self) -> bool {
        if self.host_low_since.is_some() {
            return false;
        }
        let passed = self.edges.partition_point(|&t| t <= self.now_ns);
        passed % 2 == 0
    }

    fn drive_low(&mut self) {
        self.access();
        if self.host_low_since.is_none() {
            self.host_low_since = Some(self.now_ns);
            // Pulling the line low tramples whatever the sensor was sending.
            self.edges.clear();
        }
    }

    fn release(&mut self) {
        self.access();
        let Some(since) = self.host_low_since.take() else {
            return;
        };
        let pulse = self.now_ns - since;
        let model = self.cfg.part.model();
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let rested = self
            .last_answer
            .is_none_or(|last| since - last >= ns(model.min_spacing()));
        let answers =
            pulse >= ns(model.start_pulse()) && rested && !self.rng.random_bool(self.cfg.no_answer);
        let mut flipped = None;
        let mut zeroed = false;
        if answers {
            // Drawn only when asked for, so seeded runs without this fault
            // see the same random stream as before it existed.
            zeroed = self.cfg.all_zero > 0.0 && self.rng.random_bool(self.cfg.all_zero);
            let data = if zeroed {
                [0; 4]
            } else {
                data_bytes(self.cfg.part, self.truth)
            };
            let mut bits = bits_of(data);
            if self.rng.random_bool(self.cfg.bit_flip) {
                let i = self.rng.random_range(0..40);
                bits[i] = !bits[i];
                flipped = Some(i);
            }
            self.edges = self.waveform(&bits);
            self.last_answer = Some(since);
            if let Some((after, len)) = self.planned.take() {
                self.due = Some((self.now_ns + after, len));
            }
        }
        self.frames.push(Frame {
            start: Duration::from_nanos(since),
            pulse: Duration::from_nanos(pulse),
            answered: answers,
            flipped,
            zeroed,
        });
    }

    fn waveform(&mut self, bits: &[bool; 40]) -> Vec<u64> {
        let mut edges = Vec::with_capacity(84);
        let mut t = self.now_ns + self.pick(self.cfg.response_ns);
        edges.push(t); // answer: low
        t += 80_000;
        edges.push(t); // high
        t += 80_000;
        edges.push(t); // low before bit 0
        for &bit in bits {
            t += self.pick(self.cfg.bit_low_ns);
            edges.push(t); // high: the bit
            t += self.pick(if bit {
                self.cfg.one_ns
            } else {
                self.cfg.zero_ns
            });
            edges.push(t); // low
        }
        t += self.pick(self.cfg.bit_low_ns);
        edges.push(t); // released: high
        edges
    }
}

/// The 40 bits a datasheet DHT22 sends for `s`, most significant first.
pub fn encode(s: Sample) -> [bool; 40] {
    bits_of(data_bytes(SimPart::Dht22, s))
}

/// The four data bytes `part` sends for `s`.
pub fn data_bytes(part: SimPart, s: Sample) -> [u8; 4] {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "simulated values are DHT-sized: at most 15 bits of tenths"
    )]
    let tenths = |v: f64| (v.abs() * 10.0).round() as u16;
    let negative = s.temperature < 0.0;
    match part {
        SimPart::Dht22 | SimPart::Dht22Clone => {
            let rh = tenths(s.humidity).to_be_bytes();
            let magnitude = tenths(s.temperature);
            let word = match (negative, part) {
                (false, _) => magnitude,
                (true, SimPart::Dht22Clone) => magnitude.wrapping_neg(),
                (true, _) => magnitude | 0x8000,
            };
            let t = word.to_be_bytes();
            [rh[0], rh[1], t[0], t[1]]
        }
        SimPart::Dht11 => {
            let split = |v: f64| {
                let t = tenths(v);
                (
                    u8::try_from(t / 10).unwrap_or(u8::MAX),
                    u8::try_from(t % 10).unwrap_or(0),
                )
            };
            let (h, h_tenth) = split(s.humidity);
            let (t, t_tenth) = split(s.temperature);
            [h, h_tenth, t, t_tenth | if negative { 0x80 } else { 0 }]
        }
    }
}

/// The 40 bits of a frame carrying `bytes` and their checksum.
fn bits_of(bytes: [u8; 4]) -> [bool; 40] {
    let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let mut bits = [false; 40];
    for (i, byte) in bytes.iter().chain([&sum]).enumerate() {
        for j in 0..8 {
            bits[i * 8 + j] = byte & (0x80 >> j) != 0;
        }
    }
    bits
}

/// The simulated sensor and host. Clone handles freely: they share one wire.
#[derive(Debug, Clone)]
pub struct WireSim(Arc<Mutex<Wire>>);

impl WireSim {
    /// A sensor that measures `truth`, read by a host behaving as `cfg`.
    pub fn new(cfg: WireConfig, truth: Sample) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Self(Arc::new(Mutex::new(Wire {
            cfg,
            rng,
            // Start well past the power-up second the part needs.
            now_ns: 5_000_000_000,
            wall_base_ms: 1_764_028_800_000,
            truth,
            host_low_since: None,
            edges: Vec::new(),
            last_answer: None,
            frames: Vec::new(),
            preemptions: 0,
            planned: None,
            due: None,
        })))
    }

    fn wire(&self) -> MutexGuard<'_, Wire> {
        // A panic elsewhere cannot leave the counter in a torn state.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the sensor will measure from now on.
    pub fn set_truth(&self, s: Sample) {
        self.wire().truth = s;
    }

    /// Changes the fault injection.
    pub fn set_faults(&self, no_answer: f64, bit_flip: f64) {
        let mut w = self.wire();
        w.cfg.no_answer = no_answer;
        w.cfg.bit_flip = bit_flip;
    }

    /// Swaps the part on the wire (a replaced sensor).
    pub fn set_part(&self, part: SimPart) {
        self.wire().cfg.part = part;
    }

    /// Makes this share of answered frames all zeros.
    pub fn set_all_zero(&self, p: f64) {
        self.wire().cfg.all_zero = p;
    }

    /// Preempts the reader for `len`, `after` into the next frame the
    /// sensor answers (a deterministic preemption, for tests).
    pub fn preempt_next_frame(&self, after: Duration, len: Duration) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.wire().planned = Some((ns(after), ns(len)));
    }

    /// Every start pulse so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.wire().frames.clone()
    }

    /// How many times the reader was preempted.
    pub fn preemptions(&self) -> u64 {
        self.wire().preemptions
    }

    /// The line, for an [`super::dht22::OpenDrain`] adapter.
    pub fn line(&self) -> SimLine {
        SimLine(self.clone())
    }

    /// The delay provider sharing this wire's time.
    pub fn delay(&self) -> SimDelay {
        SimDelay(self.clone())
    }

    /// The clock sharing this wire's time.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }
}

impl Clock for WireSim {
    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.wire().now_ns)
    }

    fn wall_ms(&self) -> i64 {
        let w = self.wire();
        w.wall_base_ms + i64::try_from(w.now_ns / 1_000_000).unwrap_or(i64::MAX)
    }

    fn sleep(&self, d: Duration) {
        // Sleeping between reads is not the frame: no preemption matters.
        self.wire().now_ns += u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    }
}

/// The simulated GPIO line.
#[derive(Debug, Clone)]
pub struct SimLine(WireSim);

impl LinePin for SimLine {
    fn drive_low(&mut self) {
        self.0.wire().drive_low();
    }

    fn release(&mut self) {
        self.0.wire().release();
    }

    fn is_high(&mut self) -> bool {
        let mut w = self.0.wire();
        w.access();
        w.level()
    }
}

/// Delays on the simulated clock, with the overshoot of a real one.
#[derive(Debug, Clone)]
pub struct SimDelay(WireSim);

impl DelayNs for SimDelay {
    fn delay_ns(&mut self, ns: u32) {
        let mut w = self.0.wire();
        let range = w.cfg.overshoot_ns;
        let over = w.pick(range);
        w.run_for(u64::from(ns) + over);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_the_datasheet_example() {
        // Datasheet: 65.2 %RH, 35.1 °C -> 0x02 0x8C 0x01 0x5F, checksum 0xEE.
        let bits = encode(Sample::new(35.1, 65.2));
        let bytes: Vec<u8> = bits
            .chunks(8)
            .map(|c| c.iter().fold(0u8, |b, &bit| (b << 1) | u8::from(bit)))
            .collect();
        assert_eq!(bytes, vec![0x02, 0x8C, 0x01, 0x5F, 0xEE]);
        // -10.1 °C: sign bit set, magnitude 101.
        let bits = encode(Sample::new(-10.1, 0.0));
        assert!(bits[16], "sign bit");
        let t: u16 = bits[17..32]
            .iter()
            .fold(0, |b, &bit| (b << 1) | u16::from(bit));
        assert_eq!(t, 101);
    }

    #[test]
    fn clone_and_dht11_bytes() {
        // A clone's -10.0 °C is the i16 -100; the datasheet's is 0x8064.
        assert_eq!(
            data_bytes(SimPart::Dht22Clone, Sample::new(-10.0, 52.5)),
            [0x02, 0x0D, 0xFF, 0x9C]
        );
        assert_eq!(
            data_bytes(SimPart::Dht22, Sample::new(-10.0, 52.5)),
            [0x02, 0x0D, 0x80, 0x64]
        );
        // Positive values are the same in both.
        assert_eq!(
            data_bytes(SimPart::Dht22Clone, Sample::new(35.1, 65.2)),
            data_bytes(SimPart::Dht22, Sample::new(35.1, 65.2))
        );
        assert_eq!(
            data_bytes(SimPart::Dht11, Sample::new(23.4, 55.0)),
            [55, 0, 23, 4]
        );
        assert_eq!(
            data_bytes(SimPart::Dht11, Sample::new(-2.3, 60.0)),
            [60, 0, 2, 0x83]
        );
    }

    #[test]
    fn a_dht11_wants_18_ms_and_rests_1_s() {
        let mut cfg = WireConfig::linux(1);
        cfg.part = SimPart::Dht11;
        let sim = WireSim::new(cfg, Sample::new(20.0, 50.0));
        let mut line = sim.line();
        let pulse = |ms: u64| {
            let mut line = sim.line();
            line.drive_low();
            sim.sleep(Duration::from_millis(ms));
            line.release();
        };
        pulse(1); // a DHT22's pulse: ignored
        pulse(18); // answered
        sim.sleep(Duration::from_millis(500));
        pulse(18); // too soon
        sim.sleep(Duration::from_secs(1));
        pulse(18); // rested
        line.release();
        let answered: Vec<bool> = sim.frames().iter().map(|f| f.answered).collect();
        assert_eq!(answered, vec![false, true, false, true]);
    }

    #[test]
    fn the_sensor_ignores_short_pulses_and_fast_polling() {
        let sim = WireSim::new(WireConfig::linux(1), Sample::new(20.0, 50.0));
        let mut line = sim.line();
        line.drive_low();
        sim.sleep(Duration::from_micros(500));
        line.release();
        line.drive_low();
        sim.sleep(Duration::from_millis(1));
        line.release();
        sim.sleep(Duration::from_secs(1));
        line.drive_low();
        sim.sleep(Duration::from_millis(1));
        line.release();
        let answered: Vec<bool> = sim.frames().iter().map(|f| f.answered).collect();
        assert_eq!(answered, vec![false, true, false]);
    }
}
