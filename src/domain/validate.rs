//! Validation before scoring (DESIGN.md, "Readings are validated before
//! scoring"): the sensor model's range, non-numbers, and the plausibility
//! re-read that keeps a corrupted frame from becoming a high-priority event.

use std::fmt;

use super::reading::{Channel, ErrorKind, PerChannel, Sample};

/// What a sensor model can measure: a value outside it is not a reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SensorRange {
    /// The model, as rejection messages name it (`DHT22`).
    pub model: &'static str,
    /// Inclusive limits per channel.
    pub limits: PerChannel<(f64, f64)>,
}

impl SensorRange {
    /// The DHT22 (AM2302) datasheet range; also used for the kernel driver
    /// and simulated sensors, which report DHT22-class values.
    pub const DHT22: SensorRange = SensorRange {
        model: "DHT22",
        limits: PerChannel {
            temperature: (-40.0, 80.0),
            humidity: (0.0, 100.0),
        },
    };

    /// The DHT11 datasheet range (DESIGN.md): a narrower part.
    pub const DHT11: SensorRange = SensorRange {
        model: "DHT11",
        limits: PerChannel {
            temperature: (0.0, 50.0),
            humidity: (20.0, 90.0),
        },
    };

    /// Whether `value` is a finite number inside this range on `channel`.
    pub fn contains(&self, channel: Channel, value: f64) -> bool {
        let (lo, hi) = self.limits.get(channel);
        value.is_finite() && (lo..=hi).contains(&value)
    }

    /// Accepts `s` when both channels are finite and inside this range.
    pub fn check(&self, s: Sample) -> Result<Sample, Rejection> {
        for channel in Channel::ALL {
            let value = s.get(channel);
            if !value.is_finite() {
                return Err(Rejection::NotFinite { channel });
            }
            if !self.contains(channel, value) {
                return Err(Rejection::OutOfRange {
                    channel,
                    value,
                    range: *self,
                });
            }
        }
        Ok(s)
    }
}

/// Why a sample was rejected outright.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rejection {
    /// NaN or infinite: the frame decoded to no number at all.
    NotFinite {
        /// The channel that carried it.
        channel: Channel,
    },
    /// A number outside what the sensor model can measure.
    OutOfRange {
        /// The channel that carried it.
        channel: Channel,
        /// The value reported.
        value: f64,
        /// The range it missed, named in the message.
        range: SensorRange,
    },
}

impl Rejection {
    /// The `sensor_errors.kind` this rejection is logged as.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Range
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rejection::NotFinite { channel } => write!(f, "{} is not a number", channel.name()),
            Rejection::OutOfRange {
                channel,
                value,
                range,
            } => {
                let (lo, hi) = range.limits.get(channel);
                write!(
                    f,
                    "{} {value} {} is outside the {} range {lo}..{hi}",
                    channel.name(),
                    channel.unit(),
                    range.model
                )
            }
        }
    }
}

/// Accepts `s` when both channels are finite and inside the DHT22's range
/// (`SensorRange::DHT22.check`); a sensor's own range is `Sensor::range`.
pub fn check_range(s: Sample) -> Result<Sample, Rejection> {
    SensorRange::DHT22.check(s)
}

/// The largest change between consecutive reads that is believed without a
/// confirming re-read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plausibility(pub PerChannel<f64>);

impl Default for Plausibility {
    fn default() -> Self {
        Self(PerChannel {
            temperature: 15.0,
            humidity: 30.0,
        })
    }
}

impl Plausibility {
    /// Whether going from `a` to `b` is believable without a re-read.
    pub fn allows(&self, a: Sample, b: Sample) -> bool {
        Channel::ALL
            .into_iter()
            .all(|c| (b.get(c) - a.get(c)).abs() <= self.0.get(c))
    }
}

/// What to make of a suspicious jump once it has been re-read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpikeVerdict {
    /// The re-read agrees with the jump: it is real; accept the re-read.
    Confirmed(Sample),
    /// The re-read agrees with the history: the first read was a corrupted
    /// frame; reject it and accept the re-read.
    Glitch(Sample),
    /// Nothing agrees (or the re-read failed): accept nothing this cycle.
    Unconfirmed,
}

/// Decides a jump from `prev` to `first` that `bound` did not allow, given
/// the re-read `second` (`None` if the re-read failed).
pub fn resolve_spike(
    prev: Sample,
    first: Sample,
    second: Option<Sample>,
    bound: &Plausibility,
) -> SpikeVerdict {
    match second {
        Some(second) if bound.allows(first, second) => SpikeVerdict::Confirmed(second),
        Some(second) if bound.allows(prev, second) => SpikeVerdict::Glitch(second),
        _ => SpikeVerdict::Unconfirmed,
    }
}

/// Why a frame is read a second time before it is believed. One re-read
/// answers both doubts when both apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doubt {
    /// The change from `prev` is beyond the plausibility bound.
    pub jump: bool,
    /// The frame would take the real-time route, and `[priority] confirm`
    /// says events are confirmed first.
    pub event: bool,
}

impl Doubt {
    /// The doubts about `first` (read after `prev`, scoring real-time when
    /// `first_is_event`), or `None` when it is believed as it is. A sensor's
    /// first reading is never doubted: there is nothing to compare it with.
    pub fn of(
        prev: Option<Sample>,
        first: Sample,
        first_is_event: bool,
        bound: &Plausibility,
        confirm: bool,
    ) -> Option<Doubt> {
        let prev = prev?;
        let doubt = Doubt {
            jump: !bound.allows(prev, first),
            event: confirm && first_is_event,
        };
        (doubt.jump || doubt.event).then_some(doubt)
    }
}

/// Decides a doubted frame `first` (after `prev`) given its re-read
/// `second`: `None` if the re-read failed, else the sample and whether it
/// too scores real-time against the same `prev`.
///
/// The jump is judged as [`resolve_spike`] does. On top of that, with
/// `confirm` on, an event is only believed when two frames agree on it: a
/// re-read that is itself real-time must be within the plausibility bound
/// of `first` ([`SpikeVerdict::Confirmed`]), or nothing is accepted; a
/// re-read that is not real-time replaces an event frame
/// ([`SpikeVerdict::Glitch`]), so the event is counted as not confirmed and
/// the reading is still logged, on the batch route.
pub fn resolve_reread(
    prev: Sample,
    first: Sample,
    second: Option<(Sample, bool)>,
    doubt: Doubt,
    bound: &Plausibility,
    confirm: bool,
) -> SpikeVerdict {
    let verdict = resolve_spike(prev, first, second.map(|(s, _)| s), bound);
    let Some((_, second_is_event)) = second else {
        return verdict;
    };
    match verdict {
        SpikeVerdict::Confirmed(s) if doubt.event && !second_is_event => SpikeVerdict::Glitch(s),
        SpikeVerdict::Glitch(_) if confirm && second_is_event => SpikeVerdict::Unconfirmed,
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn range_limits_are_inclusive() {
        assert!(check_range(Sample::new(-40.0, 0.0)).is_ok());
        assert!(check_range(Sample::new(80.0, 100.0)).is_ok());
        assert_eq!(
            check_range(Sample::new(80.1, 50.0)),
            Err(Rejection::OutOfRange {
                channel: Channel::Temperature,
                value: 80.1,
                range: SensorRange::DHT22,
            })
        );
        assert_eq!(
            check_range(Sample::new(20.0, 100.5)),
            Err(Rejection::OutOfRange {
                channel: Channel::Humidity,
                value: 100.5,
                range: SensorRange::DHT22,
            })
        );
    }

    #[test]
    fn non_numbers_are_rejected() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(check_range(Sample::new(bad, 50.0)).is_err());
            assert!(check_range(Sample::new(20.0, bad)).is_err());
        }
    }

    #[test]
    fn rejection_messages_name_channel_and_value() {
        let r = check_range(Sample::new(-3276.7, 50.0)).unwrap_err();
        assert_eq!(
            r.to_string(),
            "temperature -3276.7 °C is outside the DHT22 range -40..80"
        );
    }

    #[test]
    fn the_dht11_has_its_own_narrower_range() {
        let r = SensorRange::DHT11;
        assert!(r.check(Sample::new(0.0, 20.0)).is_ok());
        assert!(r.check(Sample::new(50.0, 90.0)).is_ok());
        // Fine for a DHT22, impossible for a DHT11: rejected, and said so.
        let e = r.check(Sample::new(-0.1, 50.0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "temperature -0.1 °C is outside the DHT11 range 0..50"
        );
        let e = r.check(Sample::new(25.0, 95.0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "humidity 95 %RH is outside the DHT11 range 20..90"
        );
        assert!(r.check(Sample::new(f64::NAN, 50.0)).is_err());
        // The DHT22 check is unchanged by the DHT11's existence.
        assert!(check_range(Sample::new(-0.1, 95.0)).is_ok());
    }

    #[test]
    fn spike_confirmed_by_reread_is_accepted() {
        let b = Plausibility::default();
        let prev = Sample::new(20.0, 50.0);
        let v = resolve_spike(
            prev,
            Sample::new(40.0, 50.0),
            Some(Sample::new(40.2, 50.0)),
            &b,
        );
        assert_eq!(v, SpikeVerdict::Confirmed(Sample::new(40.2, 50.0)));
    }

    #[test]
    fn corrupted_frame_is_replaced_by_reread() {
        let b = Plausibility::default();
        let prev = Sample::new(20.0, 50.0);
        // bit 8 of the temperature word flipped: +25.6 °C, checksum can still match.
        let v = resolve_spike(
            prev,
            Sample::new(45.6, 50.0),
            Some(Sample::new(20.1, 50.0)),
            &b,
        );
        assert_eq!(v, SpikeVerdict::Glitch(Sample::new(20.1, 50.0)));
    }

    #[test]
    fn failed_reread_confirms_nothing() {
        let b = Plausibility::default();
        let v = resolve_spike(Sample::new(20.0, 50.0), Sample::new(45.6, 50.0), None, &b);
        assert_eq!(v, SpikeVerdict::Unconfirmed);
    }

    const PREV: Sample = Sample {
        temperature: 22.0,
        humidity: 72.5,
    };

    fn doubt(jump: bool, event: bool) -> Doubt {
        Doubt { jump, event }
    }

    #[test]
    fn doubts_need_a_prev_and_a_reason() {
        let b = Plausibility::default();
        let first = Sample::new(22.0, 99.9);
        assert_eq!(Doubt::of(None, first, true, &b, true), None);
        assert_eq!(
            Doubt::of(Some(PREV), first, true, &b, true),
            Some(doubt(false, true))
        );
        assert_eq!(Doubt::of(Some(PREV), first, true, &b, false), None);
        assert_eq!(Doubt::of(Some(PREV), first, false, &b, true), None);
        let jump = Sample::new(47.6, 72.5);
        assert_eq!(
            Doubt::of(Some(PREV), jump, true, &b, true),
            Some(doubt(true, true))
        );
        assert_eq!(
            Doubt::of(Some(PREV), jump, true, &b, false),
            Some(doubt(true, false))
        );
    }

    #[test]
    fn an_event_frame_under_the_bound_is_replaced_by_a_quiet_reread() {
        // 99.9 %RH after 72.5 %RH: under the 30 %RH bound, but the re-read
        // says the room did not change.
        let b = Plausibility::default();
        let v = resolve_reread(
            PREV,
            Sample::new(22.0, 99.9),
            Some((Sample::new(22.0, 72.6), false)),
            doubt(false, true),
            &b,
            true,
        );
        assert_eq!(v, SpikeVerdict::Glitch(Sample::new(22.0, 72.6)));
    }

    #[test]
    fn an_event_both_frames_show_is_confirmed_with_the_reread() {
        let b = Plausibility::default();
        let v = resolve_reread(
            PREV,
            Sample::new(25.0, 60.0),
            Some((Sample::new(25.1, 59.0), true)),
            doubt(false, true),
            &b,
            true,
        );
        assert_eq!(v, SpikeVerdict::Confirmed(Sample::new(25.1, 59.0)));
    }

    #[test]
    fn two_frames_that_disagree_on_an_event_accept_nothing() {
        let b = Plausibility::default();
        // A corrupted jump, then a re-read that is an event of its own:
        // neither frame confirms the other.
        let v = resolve_reread(
            PREV,
            Sample::new(47.6, 72.5),
            Some((Sample::new(24.0, 72.5), true)),
            doubt(true, true),
            &b,
            true,
        );
        assert_eq!(v, SpikeVerdict::Unconfirmed);
        // The same frames with confirm off: the re-read agrees with the
        // history, as resolve_spike has it.
        let v = resolve_reread(
            PREV,
            Sample::new(47.6, 72.5),
            Some((Sample::new(24.0, 72.5), true)),
            doubt(true, false),
            &b,
            false,
        );
        assert_eq!(v, SpikeVerdict::Glitch(Sample::new(24.0, 72.5)));
        // And a failed re-read confirms nothing, whatever the doubt.
        for d in [doubt(true, true), doubt(false, true), doubt(true, false)] {
            let v = resolve_reread(PREV, Sample::new(22.0, 99.9), None, d, &b, true);
            assert_eq!(v, SpikeVerdict::Unconfirmed);
        }
    }

    proptest! {
        /// With confirm off, a re-read is judged exactly as before the
        /// confirmation existed.
        #[test]
        fn without_confirm_a_reread_is_judged_as_a_spike(
            p in (-40.0f64..80.0, 0.0f64..100.0),
            f in (-40.0f64..80.0, 0.0f64..100.0),
            s in proptest::option::of((-40.0f64..80.0, 0.0f64..100.0, any::<bool>())),
        ) {
            let b = Plausibility::default();
            let (prev, first) = (Sample::new(p.0, p.1), Sample::new(f.0, f.1));
            let second = s.map(|(t, h, e)| (Sample::new(t, h), e));
            prop_assert_eq!(
                resolve_reread(prev, first, second, doubt(true, false), &b, false),
                resolve_spike(prev, first, second.map(|(s, _)| s), &b)
            );
        }

        #[test]
        fn accepted_samples_are_always_finite_and_in_range(
            t in prop_oneof![any::<f64>(), -50.0f64..90.0],
            h in prop_oneof![any::<f64>(), -10.0f64..110.0],
        ) {
            if let Ok(s) = check_range(Sample::new(t, h)) {
                prop_assert!(s.temperature.is_finite() && s.humidity.is_finite());
                prop_assert!((-40.0..=80.0).contains(&s.temperature));
                prop_assert!((0.0..=100.0).contains(&s.humidity));
            }
        }
    }
}
