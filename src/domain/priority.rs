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

/// What a reading's change is measured against (`[priority] baseline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// The reading before (the paper's rule): each step is weighed alone,
    /// so a slow drift whose every step is inside the dead band never
    /// counts.
    Previous,
    /// The last reading that went real-time (send-on-delta, as industrial
    /// telemetry does): a drift accumulates until it counts, once, and the
    /// baseline moves on to that reading. A stream's first reading (and the
    /// first after a gap, see [`Scorer::with_gap_rule`]) sets it too.
    Reported,
}

impl Baseline {
    /// The name the config and `tune` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Baseline::Previous => "previous",
            Baseline::Reported => "reported",
        }
    }
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
    /// What the change is measured against.
    pub baseline: Baseline,
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
            baseline: Baseline::Previous,
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

/// `Scorer::prev_ts_ms` of a `prev` whose time is not known.
const UNKNOWN_TS: i64 = i64::MIN;
/// `Scorer::stale_after_ms` without the gap rule.
const NO_GAP_RULE: u64 = u64::MAX;

/// Per-sensor scoring state: the last accepted value of each channel, and
/// with [`Baseline::Reported`] the value changes are measured against.
#[derive(Debug, Clone)]
pub struct Scorer {
    params: PriorityParams,
    /// The last accepted sample: `prev_c` of the algorithm with
    /// [`Baseline::Previous`], what validation compares a new frame with
    /// either way; `None` until the first accepted reading.
    prev: Option<Sample>,
    /// `prev_c` with [`Baseline::Reported`]: the sample of the last reading
    /// that went real-time (or began the stream, or followed a gap). Unused
    /// with [`Baseline::Previous`].
    reported: Option<Sample>,
    /// When `prev` was read (Unix ms), for the gap rule; [`UNKNOWN_TS`]
    /// when not known (a scorer fed without time). Plain integers with a
    /// sentinel, not `Option`s: a gateway keeps a scorer per stream.
    prev_ts_ms: i64,
    /// The gap rule: a `prev` more than this (ms) from a new reading counts
    /// as none. [`NO_GAP_RULE`]: a `prev` never goes stale.
    stale_after_ms: u64,
}

impl Scorer {
    /// A scorer whose history is `prev` (restored from the log, or `None`
    /// for a sensor that never reported), without the gap rule.
    pub fn new(params: PriorityParams, prev: Option<Sample>) -> Self {
        Self {
            params,
            prev,
            reported: prev,
            prev_ts_ms: UNKNOWN_TS,
            stale_after_ms: NO_GAP_RULE,
        }
    }

    /// With [`Baseline::Reported`], measures changes against `reported`
    /// (restored from the log: see `Store::fill_baselines`) instead of
    /// `prev`; `None` keeps `prev`.
    #[must_use]
    pub fn with_reported(mut self, reported: Option<Sample>) -> Self {
        if reported.is_some() {
            self.reported = reported;
        }
        self
    }

    /// Turns the gap rule on: scored with [`Scorer::score_at`], a reading
    /// taken more than `stale_after` after `prev` (read at `prev_ts_ms`)
    /// is scored like a sensor's first reading. After a power cut of hours
    /// the change since the last value says nothing about an event.
    #[must_use]
    pub fn with_gap_rule(mut self, stale_after: Duration, prev_ts_ms: Option<i64>) -> Self {
        self.stale_after_ms = u64::try_from(stale_after.as_millis())
            .unwrap_or(NO_GAP_RULE)
            .min(NO_GAP_RULE - 1);
        self.prev_ts_ms = prev_ts_ms.unwrap_or(UNKNOWN_TS);
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
        self.prev_ts_ms != UNKNOWN_TS
            && self.stale_after_ms != NO_GAP_RULE
            && now_ms.abs_diff(self.prev_ts_ms) > self.stale_after_ms
    }

    /// The value the next change is measured against: `prev`, or with
    /// [`Baseline::Reported`] the last reported sample.
    pub fn baseline(&self) -> Option<Sample> {
        match self.params.baseline {
            Baseline::Previous => self.prev,
            Baseline::Reported => self.reported,
        }
    }

    /// The parameters it scores with.
    pub fn params(&self) -> &PriorityParams {
        &self.params
    }

    /// Scores an accepted sample and makes it the new `prev` (steps 1-6).
    pub fn score(&mut self, x: Sample) -> Score {
        let against = self.prev.and(self.baseline());
        let score = self.weigh(x, against);
        self.moved(x, against.is_none(), score.route);
        score
    }

    /// What [`Scorer::score_at`] would say, without changing any state:
    /// how the cycle decides whether a reading needs confirming.
    pub fn peek_at(&self, x: Sample, now_ms: i64) -> Score {
        self.weigh(x, self.against_at(now_ms))
    }

    /// [`Scorer::score`] for a sample read at `now_ms`, with the gap rule:
    /// a stale `prev` counts as none (priority 0, batch), and `x` becomes
    /// the new `prev` either way.
    pub fn score_at(&mut self, x: Sample, now_ms: i64) -> Score {
        let against = self.against_at(now_ms);
        let score = self.weigh(x, against);
        self.moved(x, against.is_none(), score.route);
        self.prev_ts_ms = now_ms;
        score
    }

    /// Takes a reading scored elsewhere (`route` is what its scorer said: a
    /// node that scores for itself, or a row of the log replayed) as if
    /// this scorer had scored it: `prev` moves to it, and the reported
    /// baseline too when it went real-time or began the stream again.
    pub fn record_at(&mut self, x: Sample, now_ms: i64, route: Route) {
        let fresh = self.against_at(now_ms).is_none();
        self.moved(x, fresh, route);
        self.prev_ts_ms = now_ms;
    }

    /// What a reading taken at `now_ms` is measured against: nothing for a
    /// stream's first reading or after a gap.
    fn against_at(&self, now_ms: i64) -> Option<Sample> {
        if self.prev.is_none() || self.is_stale(now_ms) {
            return None;
        }
        self.baseline()
    }

    /// Step 4: `x` is the new `prev`; with [`Baseline::Reported`] it is the
    /// new baseline too if it began the stream (`fresh`) or went real-time.
    fn moved(&mut self, x: Sample, fresh: bool, route: Route) {
        self.prev = Some(x);
        if fresh || route == Route::Realtime {
            self.reported = Some(x);
        }
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

    fn reported() -> PriorityParams {
        PriorityParams {
            baseline: Baseline::Reported,
            ..defaults()
        }
    }

    /// The routes of `values` (temperature; humidity held) scored one
    /// after the other, 60 s apart.
    fn routes(params: PriorityParams, values: &[f64]) -> Vec<Route> {
        let mut s = Scorer::new(params, None).with_gap_rule(Duration::from_secs(150), None);
        (0i64..)
            .zip(values)
            .map(|(i, &t)| s.score_at(Sample::new(t, 50.0), i * 60_000).route)
            .collect()
    }

    #[test]
    fn a_slow_ramp_is_missed_by_previous_and_caught_by_reported() {
        // 2.4 °C over 80 minutes at a 1-minute cadence, from 20 °C: every
        // step (0.03 °C) is far inside the dead band.
        let ramp: Vec<f64> = (0..=80).map(|i| 20.0 + 0.03 * f64::from(i)).collect();
        let events = |r: &[Route]| r.iter().filter(|&&r| r == Route::Realtime).count();
        assert_eq!(events(&routes(defaults(), &ramp)), 0);
        let r = routes(reported(), &ramp);
        // 5 % of 20 °C is 1.0 °C: caught at 21.02 °C (step 34); then 5 % of
        // 21.02 is 1.051 °C: caught at 22.10 °C (step 70). Two events.
        let at: Vec<usize> = (0..r.len()).filter(|&i| r[i] == Route::Realtime).collect();
        assert_eq!(at, vec![34, 70], "{r:?}");
    }

    #[test]
    fn reported_measures_against_the_last_real_time_reading() {
        let mut s = Scorer::new(reported(), None);
        assert_eq!(s.score(Sample::new(20.0, 50.0)).priority, 0);
        assert_eq!(
            s.baseline(),
            Some(Sample::new(20.0, 50.0)),
            "the first sets it"
        );
        // 0.4 °C steps: each inside the dead band, the sum is not.
        assert_eq!(s.score(Sample::new(20.4, 50.0)).priority, 0);
        assert_eq!(s.baseline(), Some(Sample::new(20.0, 50.0)));
        assert_eq!(
            s.score(Sample::new(20.8, 50.0)).priority,
            0,
            "0.8 °C is 4 %"
        );
        let event = s.score(Sample::new(21.2, 50.0));
        assert_eq!(
            (event.priority, event.route),
            (1, Route::Realtime),
            "1.2 °C is 6 %"
        );
        assert_eq!(s.baseline(), Some(Sample::new(21.2, 50.0)), "and moves on");
        assert_eq!(s.prev(), Some(Sample::new(21.2, 50.0)));
        assert_eq!(s.score(Sample::new(21.6, 50.0)).priority, 0);
    }

    #[test]
    fn the_papers_example_holds_with_either_baseline() {
        let mut s = Scorer::new(reported(), None);
        assert_eq!(s.score(Sample::new(25.0, 56.0)).priority, 0);
        assert_eq!(s.score(Sample::new(28.0, 48.0)).priority, 2);
    }

    #[test]
    fn a_gap_sets_the_reported_baseline_again() {
        let mut s = Scorer::new(reported(), None).with_gap_rule(Duration::from_secs(150), None);
        s.score_at(Sample::new(20.0, 50.0), 0);
        s.score_at(Sample::new(20.8, 50.0), 60_000);
        // An hour off: scored like a first reading, and the new baseline.
        let after = s.score_at(Sample::new(21.2, 50.0), 3_600_000);
        assert_eq!((after.priority, after.route), (0, Route::Batch));
        assert_eq!(s.baseline(), Some(Sample::new(21.2, 50.0)));
        assert_eq!(s.score_at(Sample::new(21.9, 50.0), 3_660_000).priority, 0);
    }

    #[test]
    fn a_recorded_reading_moves_the_baseline_only_when_it_went_real_time() {
        let mut s = Scorer::new(reported(), Some(Sample::new(20.0, 50.0)));
        s.record_at(Sample::new(20.4, 50.0), 0, Route::Batch);
        assert_eq!(s.prev(), Some(Sample::new(20.4, 50.0)));
        assert_eq!(s.baseline(), Some(Sample::new(20.0, 50.0)));
        s.record_at(Sample::new(20.6, 50.0), 0, Route::Realtime);
        assert_eq!(s.baseline(), Some(Sample::new(20.6, 50.0)));
        let restored = Scorer::new(reported(), Some(Sample::new(20.4, 50.0)))
            .with_reported(Some(Sample::new(20.0, 50.0)));
        assert_eq!(restored.baseline(), Some(Sample::new(20.0, 50.0)));
        assert_eq!(restored.prev(), Some(Sample::new(20.4, 50.0)));
    }

    /// The paper's rule as it was before baselines: each reading against
    /// the one before, with the gap rule.
    fn previous_reference(values: &[(f64, f64, i64)], stale_ms: i64) -> Vec<Score> {
        let p = defaults();
        let mut prev: Option<(Sample, i64)> = None;
        values
            .iter()
            .map(|&(t, h, ts)| {
                let x = Sample::new(t, h);
                let against = prev.filter(|&(_, pts)| ts.abs_diff(pts) <= stale_ms.unsigned_abs());
                let weights = x.map(|c, v| {
                    channel_weight(
                        against.map(|a| a.0.get(c)),
                        v,
                        p.deadband.get(c),
                        p.floor.get(c),
                        &p,
                    )
                });
                let priority = weights.temperature.max(weights.humidity);
                prev = Some((x, ts));
                Score {
                    weights,
                    priority,
                    route: if priority >= 1 {
                        Route::Realtime
                    } else {
                        Route::Batch
                    },
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn previous_scores_as_the_papers_rule_always_did(
            steps in proptest::collection::vec((-3.0f64..3.0, -8.0f64..8.0, 1i64..400_000), 1..60),
        ) {
            let mut values = Vec::new();
            let (mut t, mut h, mut ts) = (22.0f64, 50.0f64, 0i64);
            for (dt, dh, dts) in steps {
                t = (t + dt).clamp(-40.0, 80.0);
                h = (h + dh).clamp(0.0, 100.0);
                ts += dts;
                values.push((t, h, ts));
            }
            let mut s = Scorer::new(defaults(), None).with_gap_rule(Duration::from_secs(150), None);
            let ours: Vec<Score> = values.iter().map(|&(t, h, ts)| s.score_at(Sample::new(t, h), ts)).collect();
            prop_assert_eq!(ours, previous_reference(&values, 150_000));
        }

        #[test]
        fn noise_inside_the_deadband_never_accumulates_into_an_event(
            centre in -30.0f64..70.0,
            hum in 10.0f64..90.0,
            noise in proptest::collection::vec((-0.2499f64..0.2499, -0.999f64..0.999), 1..300),
        ) {
            // Around a fixed value, every reading is within half the dead
            // band of it, so within the dead band of any baseline it set.
            let mut s = Scorer::new(reported(), None);
            for (dt, dh) in noise {
                let score = s.score(Sample::new(centre + dt, hum + dh));
                prop_assert_eq!(score.route, Route::Batch);
            }
        }

        #[test]
        fn a_ramp_is_caught_once_per_threshold_crossing(
            start in 5.0f64..40.0,
            step in 0.001f64..0.45,
            n in 2usize..2000,
            up in any::<bool>(),
        ) {
            let sign = if up { 1.0 } else { -1.0 };
            let mut s = Scorer::new(reported(), None);
            let mut base = start;
            let mut last = start;
            s.score(Sample::new(start, 50.0));
            for i in 1..n {
                #[allow(clippy::cast_precision_loss)]
                let x = start + sign * step * i as f64;
                let d = (x - base).abs();
                let needed = defaults().threshold * base.abs().max(1.0);
                let crosses = d >= 0.5 && d / base.abs().max(1.0) >= defaults().threshold;
                let score = s.score(Sample::new(x, 50.0));
                // Real-time exactly when the drift since the last event
                // reaches the threshold, and then once: the baseline
                // moves to it, so the next reading is back inside.
                prop_assert_eq!(score.route == Route::Realtime, crosses, "at {} from {}", x, base);
                if crosses {
                    prop_assert!(d < needed.max(0.5) + step + 1e-9);
                    base = x;
                }
                last = x;
            }
            prop_assert_eq!(s.prev(), Some(Sample::new(last, 50.0)));
        }

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
