//! Sensor backends behind one trait, so the agent, `read-once` and the tests
//! run the same code whatever is on the other end of the wire.
//!
//! - `sim`: simulated sensors (the paper's heater replay, a random walk,
//!   a user's trace); also what the demo and the tests use.
//! - `dht22` (GPIO) and `iio` (kernel driver): the hardware backends.

mod sim;

use thiserror::Error;

pub use sim::{SimSensor, TraceError, heater_trace, load_trace};

use crate::config::{SensorConfig, SensorKind};
use crate::domain::{ErrorKind, Sample};

/// A source of temperature/humidity samples.
///
/// `read` may block (a DHT22 frame takes ~5 ms, a retry up to seconds): call
/// it from a blocking thread, never from an async task.
pub trait Sensor: Send {
    /// Takes one reading. Range and plausibility checks happen later, in
    /// the domain; a backend only reports what the wire said.
    fn read(&mut self) -> Result<Sample, ReadError>;

    /// A short description for logs and `read-once`, e.g. `sim heater replay`.
    fn describe(&self) -> String;
}

/// A read that produced no sample.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadError {
    /// The sensor did not answer, or a pulse of the frame never came.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The frame arrived but its checksum did not match.
    #[error("checksum mismatch: {0}")]
    Checksum(String),
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
            ReadError::Io(_) => ErrorKind::Io,
        }
    }

    /// The explanation without the kind, for the `detail` column.
    pub fn detail(&self) -> &str {
        match self {
            ReadError::Timeout(d) | ReadError::Checksum(d) | ReadError::Io(d) => d,
        }
    }
}

/// Why a configured sensor could not be set up.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The simulated sensor's trace file is unusable.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The backend is not part of this build yet.
    #[error(
        "sensor {id:?}: kind = \"{kind}\" needs the hardware backend, which this build of \
         edgeprio does not have yet; use kind = \"sim\" to run without hardware"
    )]
    Unsupported {
        /// The sensor id.
        id: String,
        /// The configured kind.
        kind: &'static str,
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

/// Opens the backend for `cfg`.
pub fn open(cfg: &SensorConfig, resume: Resume) -> Result<Box<dyn Sensor>, OpenError> {
    match &cfg.kind {
        SensorKind::Sim(sim) => Ok(Box::new(SimSensor::open(sim, resume)?)),
        kind @ (SensorKind::Dht22 { .. } | SensorKind::Iio { .. }) => Err(OpenError::Unsupported {
            id: cfg.id.clone(),
            kind: kind.name(),
        }),
    }
}
