//! Per-sensor calibration offsets (`[[sensor]] offset`): added to what the
//! backend reports, before validation and scoring, whatever the backend.
//! Wrapping the sensor instead of touching each backend keeps the offset in
//! one place for `run`, `demo` and `read-once` alike.

use std::time::Duration;

use super::{ReadError, Resume, Sensor};
use crate::domain::{PerChannel, Rejection, Sample, SensorRange};

/// A sensor whose samples are shifted by a calibration offset.
pub struct Calibrated {
    /// The backend that reads the wire (or the simulation).
    inner: Box<dyn Sensor>,
    /// Added to each channel of every sample `inner` reports.
    offset: PerChannel<f64>,
}

impl Calibrated {
    /// `raw` plus the offset, rounded to hundredths ([`calibrated`]): the
    /// sensors report tenths, and an unrounded sum such as 21.3 - 0.4 would
    /// be logged and published as 20.900000000000002. A value the offset
    /// pushes out of the part's range is a failed read that says so, rather
    /// than a range error about a number the sensor never sent.
    fn apply(&self, raw: Sample) -> Result<Sample, ReadError> {
        let calibrated = calibrated(raw, self.offset);
        match self.inner.range().check(calibrated) {
            Err(Rejection::OutOfRange {
                channel,
                value,
                range,
            }) => {
                let (lo, hi) = range.limits.get(channel);
                Err(ReadError::Range(format!(
                    "{name} {raw} {unit} read, {value} {unit} with the offset {offset:+}: \
                     outside the {model} range {lo}..{hi} (check the sensor's `offset`)",
                    name = channel.name(),
                    raw = raw.get(channel),
                    unit = channel.unit(),
                    offset = self.offset.get(channel),
                    model = range.model,
                )))
            }
            // A non-number stays one: the cycle rejects it as it would
            // without an offset.
            Ok(_) | Err(Rejection::NotFinite { .. }) => Ok(calibrated),
        }
    }
}

/// `raw` plus `offset`, rounded to hundredths (see [`Calibrated`]).
pub(crate) fn calibrated(raw: Sample, offset: PerChannel<f64>) -> Sample {
    raw.map(|c, v| ((v + offset.get(c)) * 100.0).round() / 100.0)
}

/// How `offset` reads in logs and `check-config`, e.g. `offset -0.4 °C /
/// +2 %RH`; `None` for no offset.
pub fn offset_text(offset: PerChannel<f64>) -> Option<String> {
    (offset.temperature != 0.0 || offset.humidity != 0.0).then(|| {
        format!(
            "offset {:+} °C / {:+} %RH",
            offset.temperature, offset.humidity
        )
    })
}

impl Sensor for Calibrated {
    fn read(&mut self) -> Result<Sample, ReadError> {
        let raw = self.inner.read()?;
        self.apply(raw)
    }

    fn reread(&mut self) -> Result<Sample, ReadError> {
        let raw = self.inner.reread()?;
        self.apply(raw)
    }

    fn describe(&self) -> String {
        match offset_text(self.offset) {
            Some(offset) => format!("{}, {offset}", self.inner.describe()),
            None => self.inner.describe(),
        }
    }

    fn min_interval(&self) -> Duration {
        self.inner.min_interval()
    }

    fn range(&self) -> SensorRange {
        self.inner.range()
    }
}

/// `inner` with `offset` applied; as it is when the offset is zero, so an
/// uncalibrated sensor reads exactly as before.
pub fn wrap(inner: Box<dyn Sensor>, offset: PerChannel<f64>) -> Box<dyn Sensor> {
    if offset_text(offset).is_none() {
        inner
    } else {
        Box::new(Calibrated { inner, offset })
    }
}

/// `resume` as the backend sees it: the log holds calibrated values, a
/// simulation continues from the raw one (or it would drift by the offset
/// at every restart).
pub fn raw_resume(resume: Resume, offset: PerChannel<f64>) -> Resume {
    Resume {
        last: resume.last.map(|s| s.map(|c, v| v - offset.get(c))),
        ..resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports a fixed raw sample (or failure) on a read, and the same
    /// with 0.1 °C more on a re-read, so a test sees which one it got.
    struct Fixed(Result<Sample, ReadError>);

    impl Sensor for Fixed {
        fn read(&mut self) -> Result<Sample, ReadError> {
            self.0.clone()
        }
        fn reread(&mut self) -> Result<Sample, ReadError> {
            self.0
                .clone()
                .map(|s| Sample::new(s.temperature + 0.1, s.humidity))
        }
        fn describe(&self) -> String {
            "fixed".into()
        }
        fn min_interval(&self) -> Duration {
            Duration::from_secs(2)
        }
        fn range(&self) -> SensorRange {
            SensorRange::DHT11
        }
    }

    const OFFSET: PerChannel<f64> = PerChannel {
        temperature: -0.5,
        humidity: 2.0,
    };

    #[test]
    fn offsets_shift_reads_and_rereads_and_keep_the_spacing_and_range() {
        let mut s = wrap(Box::new(Fixed(Ok(Sample::new(21.0, 50.0)))), OFFSET);
        assert_eq!(s.read(), Ok(Sample::new(20.5, 52.0)));
        assert_eq!(s.reread(), Ok(Sample::new(20.6, 52.0)));
        assert_eq!(s.min_interval(), Duration::from_secs(2));
        assert_eq!(s.range(), SensorRange::DHT11, "the part's own range");
        assert_eq!(s.describe(), "fixed, offset -0.5 °C / +2 %RH");
    }

    #[test]
    #[expect(clippy::float_cmp, reason = "exactness is what is tested")]
    fn calibrated_values_are_rounded_to_hundredths() {
        let offset = PerChannel {
            temperature: -0.4,
            humidity: 0.35,
        };
        let mut s = wrap(Box::new(Fixed(Ok(Sample::new(21.3, 50.1)))), offset);
        let got = s.read().unwrap();
        // Unrounded: 20.900000000000002 and 50.45 + representation noise.
        assert_eq!(got.temperature, 20.9);
        assert_eq!(got.humidity, 50.45);
        assert_eq!(serde_json::to_string(&got.temperature).unwrap(), "20.9");
    }

    #[test]
    fn a_value_the_offset_pushes_out_of_range_is_a_failed_read_naming_the_offset() {
        let offset = PerChannel {
            temperature: 0.0,
            humidity: 10.0,
        };
        // Fixed plays a DHT11 (0..50 °C, 20..90 %RH).
        let mut s = wrap(Box::new(Fixed(Ok(Sample::new(21.0, 85.0)))), offset);
        assert_eq!(
            s.read(),
            Err(ReadError::Range(
                "humidity 85 %RH read, 95 %RH with the offset +10: outside the DHT11 range \
                 20..90 (check the sensor's `offset`)"
                    .into()
            ))
        );
        assert_eq!(
            s.read().unwrap_err().kind(),
            crate::domain::ErrorKind::Range
        );
    }

    #[test]
    fn failures_pass_through_and_a_zero_offset_changes_nothing() {
        let mut s = wrap(Box::new(Fixed(Err(ReadError::Timeout("t".into())))), OFFSET);
        assert_eq!(s.read(), Err(ReadError::Timeout("t".into())));
        let s = wrap(
            Box::new(Fixed(Ok(Sample::new(21.0, 50.0)))),
            PerChannel {
                temperature: 0.0,
                humidity: 0.0,
            },
        );
        assert_eq!(s.describe(), "fixed", "no wrapper without an offset");
    }

    #[test]
    fn a_simulation_resumes_from_the_raw_value() {
        let logged = Resume {
            next_seq: 9,
            last: Some(Sample::new(20.5, 52.0)),
        };
        assert_eq!(
            raw_resume(logged, OFFSET),
            Resume {
                next_seq: 9,
                last: Some(Sample::new(21.0, 50.0))
            }
        );
    }
}
