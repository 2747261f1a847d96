//! Per-sensor calibration offsets (`[[sensor]] offset`): added to what the
//! backend reports, before validation and scoring, whatever the backend.
//! Wrapping the sensor instead of touching each backend keeps the offset in
//! one place for `run`, `demo` and `read-once` alike.

use std::time::Duration;

use super::{ReadError, Resume, Sensor};
use crate::domain::{PerChannel, Sample, SensorRange};

/// A sensor whose samples are shifted by a calibration offset.
pub struct Calibrated {
    /// The backend that reads the wire (or the simulation).
    inner: Box<dyn Sensor>,
    /// Added to each channel of every sample `inner` reports.
    offset: PerChannel<f64>,
}

impl Calibrated {
    fn apply(&self, raw: Sample) -> Sample {
        raw.map(|c, v| v + self.offset.get(c))
    }
}

impl Sensor for Calibrated {
    fn read(&mut self) -> Result<Sample, ReadError> {
        let raw = self.inner.read()?;
        Ok(self.apply(raw))
    }

    fn reread(&mut self) -> Result<Sample, ReadError> {
        let raw = self.inner.reread()?;
        Ok(self.apply(raw))
    }

    fn describe(&self) -> String {
        format!(
            "{}, offset {:+} °C / {:+} %RH",
            self.inner.describe(),
            self.offset.temperature,
            self.offset.humidity
        )
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
    if offset.temperature == 0.0 && offset.humidity == 0.0 {
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
