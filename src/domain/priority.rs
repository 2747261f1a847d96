//! The paper's change-based weight priority, made exact (DESIGN.md,
//! "The weight-priority algorithm").

use std::time::Duration;

use serde::Deserialize;

use super::reading::{PerChannel, Route, Sample};

/// How the two channel weights become one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// The larger of the two weights (the paper's reading of its example).
    Max,
    /// Both weights added: a change on both channels counts twice.
    Sum,
}

/// The algorithm's parameters; the defaults are DESIGN.md's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorityParams {
    /// Relative change that earns the first weight point (0.05 = 5 %).
    pub threshold: f64,
    /// Extra relative change for each further point.
    pub step: f64,
    /// Upper bound on a channel's weight; also what makes the loop finish.
    pub max_weight: u32,
    /// Lowest priority that takes the real-time route.
    pub realtime_at: u32,
    /// How channel weights combine into the priority.
    pub combine: Combine,
    /// Absolute changes below this are sensor noise and weigh nothing
    /// (the DHT22's accuracy: ±0.5 °C, ±2 %RH).
    pub deadband: PerChannel<f64>,
    /// Smallest divisor for the relative change, so values near zero do not
    /// turn tiny changes into huge ratios.
    pub floor: PerChannel<f64>,
}

impl Default for PriorityParams {
    fn default() -> Self {
        Self {
            threshold: 0.05,
            step: 0.05,
            max_weight: 10,
            realtime_at: 1,
            combine: Combine::Max,
            deadband: PerChannel {
                temperature: 0.5,
                humidity: 2.0,
            },
            floor: PerChannel {
                temperature: 1.0,
                humidity: 1.0,
            },
        }
    }
}

/// The weight of one channel's change from `prev` to `x` (steps 1-3 of the
/// algorithm). `None` for `prev` means this is the channel's first value.
pub fn channel_weight(
    prev: Option<f64>,
    x: f64,
    deadband: f64,
    floor: f64,
    params: &PriorityParams,
) -> u32 {
    let Some(prev) = prev else { return 0 };
    let d = (x - prev).abs();
    // A NaN change weighs nothing instead of slipping through to the loop.
    if d.is_nan() || d < deadband {
        return 0;
    }
    let fin = d / prev.abs().max(floor);
    let mut r = params.threshold;
    let mut w = 0;
    while fin >= r && w < params.max_weight {
        w += 1;
        r += params.step;
    }
    w
}

/// The outcome of scoring one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    /// Weight per channel.
    pub weights: PerChannel<u32>,
    /// The combined weight.
    pub priority: u32,
    /// Where the priority sends the reading.
    pub route: Route,
}

/// Per-sensor scoring state: the last accepted value of each channel.
#[derive(Debug, Clone)]
pub struct Scorer {
    params: PriorityParams,
    /// `prev_c` of the algorithm; `None` until the first accepted reading.
    prev: Option<Sample>,
    /// When `prev` was read (Unix ms), for the gap rule; `None` when not
    /// known (a scorer fed without time).
    prev_ts_ms: Option<i64>,
    /// The gap rule: a `prev` older than this (ms) at the time of a new
    /// reading counts as none. `None`: a `prev` never goes stale.
    stale_after_ms: Option<i64>,
}

impl Scorer {
    /// A scorer whose history is `prev` (restored from the log, or `None`
    /// for a sensor that never reported), without the gap rule.
    pub fn new(params: PriorityParams, prev: Option<Sample>) -> Self {
        Self {
            params,
            prev,
            prev_ts_ms: None,
            stale_after_ms: None,
        }
    }

    /// Turns the gap rule on: scored with [`Scorer::score_at`], a reading
    /// taken more than `stale_after` after `prev` (read at `prev_ts_ms`)
    /// is scored like a sensor's first reading. After a power cut of hours
    /// the change since the last value says nothing about an event.
    #[must_use]
    pub fn with_gap_rule(mut self, stale_after: Duration, prev_ts_ms: Option<i64>) -> Self {
        self.stale_after_ms = Some(i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX));
        self.prev_ts_ms = prev_ts_ms;
        self
    }

    /// The last accepted sample, if any (stale or not: validation still
    /// compares against it).
    pub fn prev(&self) -> Option<Sample> {
        self.prev
    }

    /// Whether `prev` is too far from a reading taken at `now_ms` to score
    /// it against: more than `stale_after` before it, or, on a clock that
    /// went back (a Pi without a real-time clock boots at the time
    /// fake-hwclock saved, before the last reading), more than `stale_after`
    /// after it. Either way the gap in between is unknown.
    pub fn is_stale(&self, now_ms: i64) -> bool {
        match (self.prev_ts_ms, self.stale_after_ms) {
            (Some(ts), Some(limit)) => now_ms.abs_diff(ts) > limit.unsigned_abs(),
            _ => false,
        }
    }

    /// Scores an accepted sample and makes it the new `prev` (steps 1-6).
    pub fn score(&mut self, x: Sample) -> Score {
        let score = self.weigh(x, self.prev);
        self.prev = Some(x);
        score
    }

    /// What [`Scorer::score_at`] would say, without changing any state:
    /// how the cycle decides whether a reading needs confirming.
    pub fn peek_at(&self, x: Sample, now_ms: i64) -> Score {
        self.weigh(x, self.prev.filter(|_| !self.is_stale(now_ms)))
    }

    /// [`Scorer::score`] for a sample read at `now_ms`, with the gap rule:
    /// a stale `prev` counts as none (priority 0, batch), and `x` becomes
    /// the new `prev` either way.
    pub fn score_at(&mut self, x: Sample, now_ms: i64) -> Score {
        let score = self.peek_at(x, now_ms);
        self.prev = Some(x);
        self.prev_ts_ms = Some(now_ms);
        score
    }

    fn weigh(&self, x: Sample, prev: Option<Sample>) -> Score {
        let p = &self.params;
        let weights = x.map(|c, v| {
            channel_weight(
                prev.map(|prev| prev.get(c)),
                v,
                p.deadband.get(c),
                p.floor.get(c),
                p,
            )
        });
        let priority = match p.combine {
            Combine::Max => weights.temperature.max(weights.humidity),
            Combine::Sum => weights.temperature.saturating_add(weights.humidity),
        };
        let route = if priority >= p.realtime_at {
            Route::Realtime
        } else {
            Route::Batch
        };
        Score {
            weights,
            priority,
            route,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn defaults() -> PriorityParams {
        PriorityParams::default()
    }

    #[test]
    fn papers_worked_example() {
        let mut s = Scorer::new(defaults(), None);
        let first = s.score(Sample::new(25.0, 56.0));
        assert_eq!(first.priority, 0, "a sensor's first reading has priority 0");
        assert_eq!(first.route, Route::Batch);

        let second = s.score(Sample::new(28.0, 48.0));
        assert_eq!(
            second.weights,
            PerChannel {
                temperature: 2,
                humidity: 2
            },
            "12 % and 14.3 % changes weigh 2 each"
        );
        assert_eq!(second.priority, 2);
        assert_eq!(second.route, Route::Realtime);
    }

    #[test]
    fn papers_experiment_start_has_priority_zero() {
        let mut s = Scorer::new(defaults(), None);
        assert_eq!(s.score(Sample::new(22.0, 61.0)).priority, 0);
    }

    #[test]
    fn deadband_absorbs_sensor_noise() {
        let mut s = Scorer::new(defaults(), Some(Sample::new(2.0, 10.0)));
        // 0.4 °C on 2 °C is 20 %, but below the DHT22's ±0.5 °C accuracy.
        let score = s.score(Sample::new(2.4, 11.9));
        assert_eq!(score.weights.temperature, 0);
        assert_eq!(score.weights.humidity, 0);
        assert_eq!(score.route, Route::Batch);
    }

    #[test]
    fn floor_bounds_the_ratio_near_zero() {
        let mut s = Scorer::new(defaults(), Some(Sample::new(0.0, 50.0)));
        // 0.9 °C from 0 °C: divided by the 1.0 floor, 90 % -> capped at max_weight.
        let score = s.score(Sample::new(0.9, 50.0));
        assert_eq!(score.weights.temperature, 10);
        let mut s = Scorer::new(defaults(), Some(Sample::new(0.0, 50.0)));
        // With a floor of 10, fin = 0.5 / 10 = 5 % -> weight 1.
        let params = PriorityParams {
            floor: PerChannel {
                temperature: 10.0,
                humidity: 1.0,
            },
            ..defaults()
        };
        s.params = params;
        assert_eq!(s.score(Sample::new(0.5, 50.0)).weights.temperature, 1);
    }

    #[test]
    fn combine_sum_adds_channel_weights() {
        let params = PriorityParams {
            combine: Combine::Sum,
            ..defaults()
        };
        let mut s = Scorer::new(params, Some(Sample::new(25.0, 56.0)));
        assert_eq!(s.score(Sample::new(28.0, 48.0)).priority, 4);
    }

    #[test]
    fn realtime_at_sets_the_route_boundary() {
        let params = PriorityParams {
            realtime_at: 3,
            ..defaults()
        };
        let mut s = Scorer::new(params, Some(Sample::new(25.0, 56.0)));
        let score = s.score(Sample::new(28.0, 48.0));
        assert_eq!(score.priority, 2);
        assert_eq!(score.route, Route::Batch);
    }

    #[test]
    fn exact_threshold_earns_a_point() {
        // 1.5 °C on 30 °C is exactly 5 %: fin >= r holds at equality.
        assert_eq!(channel_weight(Some(30.0), 31.5, 0.5, 1.0, &defaults()), 1);
    }

    #[test]
    fn nan_change_weighs_nothing() {
        assert_eq!(
            channel_weight(Some(20.0), f64::NAN, 0.5, 1.0, &defaults()),
            0
        );
    }

    #[test]
    fn a_stale_prev_counts_as_none_and_is_replaced() {
        let hour = 3_600_000;
        let mut s = Scorer::new(defaults(), Some(Sample::new(25.0, 56.0)))
            .with_gap_rule(Duration::from_secs(150), Some(0));
        // Two hours after the last reading: the paper's event is no event.
        assert!(s.is_stale(2 * hour));
        let first = s.score_at(Sample::new(28.0, 48.0), 2 * hour);
        assert_eq!((first.priority, first.route), (0, Route::Batch));
        assert_eq!(s.prev(), Some(Sample::new(28.0, 48.0)));
        // It became the new prev, fresh: the next change counts again
        // (10.7 % and 16.7 % back: weights 2 and 3).
        let next = s.score_at(Sample::new(25.0, 56.0), 2 * hour + 15_000);
        assert_eq!(next.priority, 3);
        assert_eq!(next.route, Route::Realtime);
    }

    #[test]
    fn a_prev_inside_the_gap_limit_scores_as_always() {
        let mut s = Scorer::new(defaults(), Some(Sample::new(25.0, 56.0)))
            .with_gap_rule(Duration::from_secs(150), Some(1_000));
        // Exactly at the limit is not stale yet.
        assert!(!s.is_stale(151_000));
        assert!(s.is_stale(151_001));
        let peek = s.peek_at(Sample::new(28.0, 48.0), 151_000);
        assert_eq!(
            s.prev(),
            Some(Sample::new(25.0, 56.0)),
            "peek changes nothing"
        );
        assert_eq!(s.score_at(Sample::new(28.0, 48.0), 151_000), peek);
        assert_eq!(peek.priority, 2);
    }

    #[test]
    fn a_clock_that_went_back_past_the_limit_makes_prev_stale() {
        let s = Scorer::new(defaults(), Some(Sample::new(25.0, 56.0)))
            .with_gap_rule(Duration::from_secs(150), Some(1_000_000));
        // A small step back (an NTP correction) scores as usual...
        assert!(!s.is_stale(999_000));
        assert!(!s.is_stale(850_000));
        // ...a boot at an older saved time does not.
        assert!(s.is_stale(849_999));
        assert!(s.is_stale(0));
    }

    #[test]
    fn without_a_timestamp_or_a_rule_prev_never_goes_stale() {
        let s = Scorer::new(defaults(), Some(Sample::new(25.0, 56.0)));
        assert!(!s.is_stale(i64::MAX));
        let s = s.with_gap_rule(Duration::from_secs(150), None);
        assert!(!s.is_stale(i64::MAX), "a prev of unknown age is kept");
    }

    proptest! {
        #[test]
        fn weight_never_decreases_as_change_grows(
            prev in -40.0f64..80.0,
            d1 in 0.0f64..200.0,
            extra in 0.0f64..200.0,
            up in any::<bool>(),
        ) {
            let sign = if up { 1.0 } else { -1.0 };
            let p = defaults();
            let small = channel_weight(Some(prev), prev + sign * d1, 0.5, 1.0, &p);
            let large = channel_weight(Some(prev), prev + sign * (d1 + extra), 0.5, 1.0, &p);
            prop_assert!(large >= small, "{small} -> {large}");
        }

        #[test]
        fn weight_is_bounded_and_reaches_max_weight(
            prev in -40.0f64..80.0,
            max_weight in 0u32..50,
            threshold in 0.0f64..1.0,
            step in -1.0f64..1.0,
        ) {
            let p = PriorityParams { threshold, step, max_weight, ..defaults() };
            let w = channel_weight(Some(prev), prev + 1e9, 0.5, 1.0, &p);
            // A change of 1e9 passes every threshold below 1: the loop stops at max_weight.
            prop_assert_eq!(w, max_weight);
        }

        #[test]
        fn change_inside_deadband_never_raises_priority(
            t in -40.0f64..80.0, h in 0.0f64..100.0,
            dt in -0.4999f64..0.4999, dh in -1.999f64..1.999,
        ) {
            let mut s = Scorer::new(defaults(), Some(Sample::new(t, h)));
            let score = s.score(Sample::new(t + dt, h + dh));
            prop_assert_eq!(score.priority, 0);
            prop_assert_eq!(score.route, Route::Batch);
        }

        #[test]
        fn first_reading_is_always_priority_zero(t in -40.0f64..80.0, h in 0.0f64..100.0) {
            let mut s = Scorer::new(defaults(), None);
            prop_assert_eq!(s.score(Sample::new(t, h)).priority, 0);
        }
    }
}
