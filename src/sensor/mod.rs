//! Sensor backends behind one trait, so the agent, `read-once` and the tests
//! run the same code whatever is on the other end of the wire.
//!
//! - `sim`: simulated sensors (the paper's heater replay, a random walk,
//!   a user's trace); also what the demo and the tests use.
//! - `dht22` (GPIO, for DHT22s and DHT11s) and `iio` (kernel driver): the
//!   hardware backends; `frame` decodes what a DHT22 or DHT11 sends.
//! - `calibrate`: the `[[sensor]] offset`, wrapped around every backend by
//!   [`open`].

mod calibrate;
pub mod dht22;
pub mod frame;
#[cfg(test)]
mod frame_wire_tests;
pub mod iio;
mod rpi;
mod sim;
pub mod wire_sim;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

pub use calibrate::offset_text;
pub use sim::{SimSensor, TraceError, heater_trace, load_trace};

use crate::clock::Clock;
use crate::config::{DhtSettings, SensorConfig, SensorKind};
use crate::domain::{ErrorKind, Sample, SensorRange};

/// A source of temperature/humidity samples.
///
/// `read` may block (a DHT22 frame takes ~5 ms, a retry up to seconds): call
/// it from a blocking thread, never from an async task.
pub trait Sensor: Send {
    /// Takes one reading. Range and plausibility checks happen later, in
    /// the domain; a backend only reports what the wire said.
    fn read(&mut self) -> Result<Sample, ReadError>;

    /// Reads the same reading again, to confirm a frame the agent doubts.
    /// Hardware takes a new frame; a replayed trace returns the same row,
    /// because a row is one reading.
    fn reread(&mut self) -> Result<Sample, ReadError> {
        self.read()
    }

    /// A short description for logs and `read-once`, e.g. `sim heater replay`.
    fn describe(&self) -> String;

    /// The least time between the starts of two reads (2 s for a DHT22).
    /// The agent waits this long before a retry.
    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// What the part can measure: validation rejects anything outside it
    /// (`SensorRange::check`). DHT22-class unless the backend knows better.
    fn range(&self) -> SensorRange {
        SensorRange::DHT22
    }
}

/// `result` (a read or re-read) held to the sensor's own `range`
/// (`Sensor::range`): the one check every command applies before it
/// believes a sample.
pub fn checked(range: SensorRange, result: Result<Sample, ReadError>) -> Result<Sample, ReadError> {
    result.and_then(|s| range.check(s).map_err(|r| ReadError::Range(r.to_string())))
}

/// A read that produced no sample.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadError {
    /// The sensor did not answer, or a pulse of the frame never came.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The frame arrived but cannot be trusted: its checksum did not
    /// match, or it was all zeros (which every checksum accepts).
    #[error("bad frame: {0}")]
    Checksum(String),
    /// The frame decoded to no value the part can measure: a corrupted
    /// frame, or the wrong `kind` or `negative` setting for this sensor.
    #[error("out of range: {0}")]
    Range(String),
    /// The operating system refused the access.
    #[error("I/O error: {0}")]
    Io(String),
}

impl ReadError {
    /// The `sensor_errors.kind` this failure is logged as.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReadError::Timeout(_) => ErrorKind::Timeout,
            ReadError::Checksum(_) => ErrorKind::Checksum,
            ReadError::Range(_) => ErrorKind::Range,
            ReadError::Io(_) => ErrorKind::Io,
        }
    }

    /// The explanation without the kind, for the `detail` column.
    pub fn detail(&self) -> &str {
        match self {
            ReadError::Timeout(d)
            | ReadError::Checksum(d)
            | ReadError::Range(d)
            | ReadError::Io(d) => d,
        }
    }
}

/// Why a configured sensor could not be set up.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The simulated sensor's trace file is unusable.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The GPIO line of a DHT22 could not be opened.
    #[error("sensor {id:?}: {reason}")]
    Gpio {
        /// The sensor id.
        id: String,
        /// What went wrong and how to fix it.
        reason: String,
    },
    /// The kernel driver's device could not be found.
    #[error("sensor {id:?}: {source}")]
    Iio {
        /// The sensor id.
        id: String,
        /// What went wrong and how to fix it.
        #[source]
        source: iio::IioError,
    },
}

/// Where a sensor's history left off, so a restarted agent continues it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resume {
    /// The seq the next reading will get.
    pub next_seq: u64,
    /// The last accepted sample, if any.
    pub last: Option<Sample>,
}

/// Opens the sensor for `cfg`, with its calibration offset applied; `clock`
/// paces DHT22 reads.
pub fn open(
    cfg: &SensorConfig,
    resume: Resume,
    clock: &Arc<dyn Clock>,
) -> Result<Box<dyn Sensor>, OpenError> {
    let backend = open_backend(cfg, calibrate::raw_resume(resume, cfg.offset), clock)?;
    Ok(calibrate::wrap(backend, cfg.offset))
}

/// Opens the backend for `cfg`; `clock` paces DHT22 reads.
fn open_backend(
    cfg: &SensorConfig,
    resume: Resume,
    clock: &Arc<dyn Clock>,
) -> Result<Box<dyn Sensor>, OpenError> {
    match &cfg.kind {
        SensorKind::Sim(sim) => {
            let sensor = SimSensor::open(sim, resume)?;
            sensor.check_calibrated(sim, |raw| calibrate::calibrated(raw, cfg.offset))?;
            Ok(Box::new(sensor))
        }
        SensorKind::Dht22 { .. } | SensorKind::Dht11 { .. } => {
            let dht = cfg.kind.dht().expect("dht() covers both DHT kinds");
            Ok(Box::new(open_dht(&cfg.id, dht, clock)?))
        }
        SensorKind::Iio {
            device,
            name,
            negative,
        } => iio::open(device.as_deref(), name.as_deref())
            .map(|s| Box::new(s.with_negative(*negative)) as Box<dyn Sensor>)
            .map_err(|source| OpenError::Iio {
                id: cfg.id.clone(),
                source,
            }),
    }
}

/// A DHT22 or DHT11 on a GPIO pin of this Raspberry Pi, read with
/// `SCHED_FIFO` when permitted.
pub fn open_dht(
    id: &str,
    dht: DhtSettings,
    clock: &Arc<dyn Clock>,
) -> Result<dht22::Dht22<rpi::RppalLine, rpi::SpinDelay>, OpenError> {
    let pin = dht.pin;
    let line = rpi::open_line(pin).map_err(|reason| OpenError::Gpio {
        id: id.to_string(),
        reason,
    })?;
    Ok(dht22::Dht22::new(
        format!("GPIO BCM {pin}"),
        line,
        rpi::SpinDelay,
        clock.clone(),
        Box::new(dht22::FifoWhileReading::default()),
    )
    .with_model(dht.model)
    .with_negative(dht.negative))
}

/// The board as the GPIO library sees it (for `doctor`).
pub fn board() -> Result<String, String> {
    rpi::board()
}

pub use rpi::GpioPath;

/// How the GPIO library reaches the pins on this board (for `doctor`).
pub fn gpio_path() -> Option<GpioPath> {
    rpi::gpio_path()
}
