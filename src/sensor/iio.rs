//! `kind = "iio"`: a DHT22 read through the Linux kernel's `dht11` IIO
//! driver, which also serves the DHT22.
//!
//! The driver is enabled with `dtoverlay=dht11,gpiopin=N` in
//! `/boot/firmware/config.txt` (N is the BCM pin) and exposes the sensor as
//! a sysfs directory `/sys/bus/iio/devices/iio:deviceN/` holding:
//!
//! - `name`: e.g. `dht11@4`, which is how [`open`] finds the device by name
//!   or on its own;
//! - `in_temp_input`: milli-degrees Celsius, e.g. `23400` (negative allowed);
//! - `in_humidityrelative_input`: milli-percent, e.g. `56100`.
//!
//! Reading `in_temp_input` makes the driver take a frame (it caches the
//! result for 2 s after decoding it, so the humidity read that follows
//! comes from the same frame, and so does any read within those 2 s: see
//! [`REREAD_SPACING`]). A bad frame fails the read with `EIO`, a silent
//! sensor with `ETIMEDOUT`. One [`Sensor::read`] is one attempt: the caller
//! retries.
//!
//! The driver decodes a negative DHT22 temperature as sign-magnitude only
//! (`((temp_int & 0x7f) << 8 | temp_dec) * -100` when bit 15 is set), so a
//! clone that sends two's complement reads as about -3270 °C. What it reports
//! is exact (100 milli-degrees per tenth), so a negative
//! value is turned back into the word and decoded by [`frame`] with the
//! sensor's `negative` setting, like the `dht22` backend does.
//!
//! # Troubleshooting
//!
//! **Which backend?** Prefer this one when reads keep failing with the
//! user-space `dht22` backend: the kernel driver times the pulses in its
//! interrupt handler, so it stays reliable on a busy or single-core Pi, and
//! it needs no GPIO permissions, only read access to sysfs. The `dht22`
//! backend needs access to `/dev/gpiomem` (group `gpio`) but, in exchange,
//! lets `edgeprio doctor` show the pulse timing of a frame. The two cannot
//! share a pin: the kernel driver owns its GPIO.
//!
//! **"no IIO device at ..."**: the driver is not loaded. Add
//! `dtoverlay=dht11,gpiopin=4` (your BCM pin) to `/boot/firmware/config.txt`
//! (`/boot/config.txt` before Bookworm) and reboot; `ls /sys/bus/iio/devices`
//! and `grep . /sys/bus/iio/devices/*/name` then list the devices.
//!
//! **Frequent checksum errors (EIO)**: the driver saw a frame with missing
//! edges or a bad checksum: check the wiring, the pull-up (4.7-10 kΩ to
//! 3.3 V) and the cable length. An occasional one is normal; the agent
//! retries within the interval.
//!
//! **Timeouts (ETIMEDOUT)**: the sensor did not answer: check power, ground
//! and that `gpiopin` names the pin the data line is on.
//!
//! **The device number changed**: `iio:deviceN` numbers follow the order in
//! which drivers load. Configure the sensor by `name` (e.g.
//! `name = "dht11@4"`) rather than by `device` if you have other IIO devices.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::frame::{self, EncodingTracker, Negative};
use super::{ReadError, Sensor};
use crate::domain::{ErrorKind, Sample};

/// Where the kernel lists IIO devices.
pub const SYSFS_ROOT: &str = "/sys/bus/iio/devices";

/// Milli-degrees Celsius.
const TEMPERATURE_FILE: &str = "in_temp_input";
/// Milli-percent relative humidity.
const HUMIDITY_FILE: &str = "in_humidityrelative_input";
/// What the dht11 driver's device names start with (`dht11@4`).
const DHT_NAME_PREFIX: &str = "dht11";

/// The least time from the start of one read to the start of the next.
///
/// Linux `drivers/iio/humidity/dht11.c` takes a new frame only once
/// `dht11->timestamp + DHT11_DATA_VALID_TIME` (2 s) has passed, and sets
/// `timestamp` in `dht11_decode`, after the 18-20 ms start signal and the
/// ~5 ms frame: about 25 ms after our read began. Waiting only the DHT22's
/// 2 s would hand a re-read (event confirmation, plausibility) the cached
/// frame, which always agrees. 200 ms covers the decode time many times
/// over, also on a loaded Pi where the driver's `usleep_range` or the
/// interrupt runs late. The config's `interval` floor stays at the part's
/// 2 s: at `interval = "2s"` a read waits the extra 200 ms instead of
/// being served the previous frame.
pub const REREAD_SPACING: Duration = DRIVER_CACHE.saturating_add(DECODE_MARGIN);

/// `DHT11_DATA_VALID_TIME` in the driver: how long it serves a decoded
/// frame from its cache.
const DRIVER_CACHE: Duration = Duration::from_secs(2);

/// How late after the start of a read the driver may decode the frame.
const DECODE_MARGIN: Duration = Duration::from_millis(200);

/// Milli-degrees per tenth of a degree: the driver multiplies the DHT22's
/// tenths by exactly this.
const MILLI_PER_TENTH: i64 = 100;

// Linux errno values as the kernel driver returns them. They are the same on
// every architecture a Raspberry Pi runs (arm, aarch64) and on x86, so they
// are spelled out here instead of pulling in the libc crate for two numbers.
/// `EIO`: the driver received a bad frame (checksum or missing edges).
const EIO: i32 = 5;
/// `ETIMEDOUT`: the sensor did not answer the start signal.
const ETIMEDOUT: i32 = 110;

/// Why an IIO sensor could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IioError {
    /// The device directory (or the IIO device list itself) does not exist:
    /// the kernel driver is not loaded.
    #[error(
        "no IIO device at {}: is the kernel driver loaded? Add `dtoverlay=dht11,gpiopin=4` \
         to /boot/firmware/config.txt (use your BCM pin) and reboot; \
         `ls /sys/bus/iio/devices` lists the devices",
        path.display()
    )]
    NoDevice {
        /// The directory that is missing.
        path: PathBuf,
    },
    /// The directory exists but is not a temperature/humidity IIO device.
    #[error(
        "{} is not a DHT IIO device: it has no {missing} file; set `device` to the \
         iio:deviceN directory whose `name` starts with dht11 \
         (`grep . /sys/bus/iio/devices/*/name` lists them)",
        path.display()
    )]
    NotDht {
        /// The device directory.
        path: PathBuf,
        /// The input file it lacks.
        missing: &'static str,
    },
    /// sysfs refused to show a directory or file.
    #[error(
        "cannot read {}: {reason}; run edgeprio as a user that can read \
         /sys/bus/iio/devices (it is world-readable on Raspberry Pi OS)",
        path.display()
    )]
    Unreadable {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// No device has the configured `name`.
    #[error(
        "no IIO device named {name:?} in {}; {}; set `name` to one of them",
        root.display(),
        listing(found)
    )]
    NameNotFound {
        /// The configured name.
        name: String,
        /// The directory that was searched.
        root: PathBuf,
        /// The devices that exist, each as `name (iio:deviceN)`.
        found: Vec<String>,
    },
    /// Neither `device` nor `name` was given and no device is a DHT.
    #[error(
        "no DHT IIO device (name starting with dht11) in {}; {}; \
         is the kernel driver loaded? Add `dtoverlay=dht11,gpiopin=4` to \
         /boot/firmware/config.txt (use your BCM pin) and reboot",
        root.display(),
        listing(found)
    )]
    NoDht {
        /// The directory that was searched.
        root: PathBuf,
        /// The devices that exist, each as `name (iio:deviceN)`.
        found: Vec<String>,
    },
    /// Neither `device` nor `name` was given and several devices are DHTs.
    #[error(
        "several DHT IIO devices in {}: {}; say which one this sensor is with \
         `name = \"...\"` (or `device`), one [[sensor]] entry per device",
        root.display(),
        found.join(", ")
    )]
    Ambiguous {
        /// The directory that was searched.
        root: PathBuf,
        /// The DHT devices, each as `name (iio:deviceN)`.
        found: Vec<String>,
    },
}

/// `found` for a message: the devices, or a note that there are none.
fn listing(found: &[String]) -> String {
    if found.is_empty() {
        "there are no IIO devices at all".to_string()
    } else {
        format!("the devices there are: {}", found.join(", "))
    }
}

/// Reads one sysfs attribute. Behind a trait so tests can make the driver
/// fail the way it does on real hardware (EIO, ETIMEDOUT).
trait Attr: Send {
    fn read(&self, path: &Path) -> io::Result<String>;
}

/// The real sysfs.
struct Sysfs;

impl Attr for Sysfs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// A DHT22 behind the kernel's dht11 IIO driver.
pub struct IioSensor {
    /// The device directory, kept as found (the `iio:deviceN` link) because
    /// that is the path users see with `ls` and every error names it.
    dir: PathBuf,
    /// The driver's device name (`dht11@4`), which tells sensors apart in
    /// logs better than the device number.
    name: String,
    /// `dir/in_temp_input`, built once.
    temperature: PathBuf,
    /// `dir/in_humidityrelative_input`, built once.
    humidity: PathBuf,
    /// Sysfs, or a fake in tests.
    attr: Box<dyn Attr>,
    /// The configured `negative` setting: the driver's sign-magnitude
    /// reading of a clone's word is undone and redone with it.
    negative: Negative,
    /// The encoding negative frames arrived in so far: logged once when
    /// detected, warned about when it changes.
    seen: EncodingTracker,
}

impl fmt::Debug for IioSensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IioSensor")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("negative", &self.negative)
            .finish_non_exhaustive()
    }
}

/// Opens the sensor under [`SYSFS_ROOT`]; see [`open_in`].
pub fn open(device: Option<&Path>, name: Option<&str>) -> Result<IioSensor, IioError> {
    open_in(Path::new(SYSFS_ROOT), device, name)
}

/// Opens the sensor, looking for devices under `root`:
///
/// - with `device`: that directory, which must hold both input files
///   (`root` is not used);
/// - with `name`: the `iio:device*` entry of `root` whose `name` file says
///   so;
/// - with neither: the only device whose name starts with `dht11`.
///
/// `device` wins if both are given (the config rejects that combination).
/// Opening reads no sample: a sensor that is merely flaky must not stop the
/// agent from starting.
pub fn open_in(
    root: &Path,
    device: Option<&Path>,
    name: Option<&str>,
) -> Result<IioSensor, IioError> {
    let (dir, found_name) = match (device, name) {
        (Some(dir), _) => (dir.to_path_buf(), None),
        (None, Some(wanted)) => {
            let devices = scan(root)?;
            let dir = devices
                .iter()
                .find(|d| d.name == wanted)
                .map(|d| d.dir.clone())
                .ok_or_else(|| IioError::NameNotFound {
                    name: wanted.to_string(),
                    root: root.to_path_buf(),
                    found: devices.iter().map(Device::label).collect(),
                })?;
            (dir, Some(wanted.to_string()))
        }
        (None, None) => {
            let devices = scan(root)?;
            let dhts: Vec<&Device> = devices
                .iter()
                .filter(|d| d.name.starts_with(DHT_NAME_PREFIX))
                .collect();
            match dhts.as_slice() {
                [one] => (one.dir.clone(), Some(one.name.clone())),
                [] => {
                    return Err(IioError::NoDht {
                        root: root.to_path_buf(),
                        found: devices.iter().map(Device::label).collect(),
                    });
                }
                several => {
                    return Err(IioError::Ambiguous {
                        root: root.to_path_buf(),
                        found: several.iter().map(|d| d.label()).collect(),
                    });
                }
            }
        }
    };
    check_device(&dir)?;
    let name = match found_name {
        Some(name) => name,
        // A directory given by path: its name is only for `describe`, so a
        // missing `name` file is no reason to refuse it.
        None => std::fs::read_to_string(dir.join("name"))
            .map_or_else(|_| dir_label(&dir), |n| n.trim().to_string()),
    };
    Ok(IioSensor {
        temperature: dir.join(TEMPERATURE_FILE),
        humidity: dir.join(HUMIDITY_FILE),
        dir,
        name,
        attr: Box::new(Sysfs),
        negative: Negative::Auto,
        seen: EncodingTracker::default(),
    })
}

/// One `iio:device*` entry of the device list.
struct Device {
    dir: PathBuf,
    /// Trimmed content of its `name` file, `?` when unreadable.
    name: String,
}

impl Device {
    /// `dht11@4 (iio:device0)`, for error messages.
    fn label(&self) -> String {
        format!("{} ({})", self.name, dir_label(&self.dir))
    }
}

/// The last component of a device directory, e.g. `iio:device0`.
fn dir_label(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The `iio:device*` entries of `root`, in device-number order so messages
/// are stable. Triggers and other entries are skipped.
fn scan(root: &Path) -> Result<Vec<Device>, IioError> {
    let entries = std::fs::read_dir(root).map_err(|e| fs_error(root, &e))?;
    let mut devices = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| fs_error(root, &e))?;
        let file_name = entry.file_name();
        let Some(number) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix("iio:device"))
        else {
            continue;
        };
        let number = number.parse::<u32>().unwrap_or(u32::MAX);
        let dir = entry.path();
        let name = std::fs::read_to_string(dir.join("name"))
            .map_or_else(|_| "?".to_string(), |n| n.trim().to_string());
        devices.push((number, Device { dir, name }));
    }
    devices.sort_by(|(a, da), (b, db)| a.cmp(b).then_with(|| da.dir.cmp(&db.dir)));
    Ok(devices.into_iter().map(|(_, d)| d).collect())
}

/// Checks that `dir` is a device with both input files.
fn check_device(dir: &Path) -> Result<(), IioError> {
    std::fs::metadata(dir).map_err(|e| fs_error(dir, &e))?;
    for file in [TEMPERATURE_FILE, HUMIDITY_FILE] {
        let path = dir.join(file);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(IioError::NotDht {
                    path: dir.to_path_buf(),
                    missing: file,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IioError::NotDht {
                    path: dir.to_path_buf(),
                    missing: file,
                });
            }
            Err(e) => return Err(fs_error(&path, &e)),
        }
    }
    Ok(())
}

/// A missing path means no driver; anything else is an access problem.
fn fs_error(path: &Path, e: &io::Error) -> IioError {
    if e.kind() == io::ErrorKind::NotFound {
        IioError::NoDevice {
            path: path.to_path_buf(),
        }
    } else {
        IioError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

impl IioSensor {
    /// The device directory, e.g. `/sys/bus/iio/devices/iio:device0`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The driver's device name, e.g. `dht11@4`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decodes negative temperatures as `negative` says (`auto` when not
    /// called).
    #[must_use]
    pub fn with_negative(mut self, negative: Negative) -> Self {
        self.negative = negative;
        self
    }

    /// The configured `negative` setting.
    pub fn negative(&self) -> Negative {
        self.negative
    }

    /// Reads one milli-unit attribute.
    fn read_milli(&self, path: &Path) -> Result<i64, ReadError> {
        let text = self.attr.read(path).map_err(|e| read_error(path, &e))?;
        text.trim().parse().map_err(|_| {
            ReadError::Io(format!(
                "{} holds {:?}, not an integer in milli-units; check that `device` or `name` \
                 in the config points at the dht11 IIO device (`grep . /sys/bus/iio/devices/*/name`)",
                path.display(),
                text.trim()
            ))
        })
    }

    /// The temperature in °C from the driver's milli-degrees. A negative
    /// value is the driver's sign-magnitude reading of the word; the word
    /// is rebuilt and decoded with the `negative` setting, so a clone's
    /// two's complement reads right and a word plausible in neither
    /// encoding is a failed read, as on the GPIO backend.
    fn temperature(&mut self, milli: i64) -> Result<f64, ReadError> {
        if milli >= 0 {
            return Ok(milli as f64 / 1000.0);
        }
        let word = u16::try_from(milli.unsigned_abs() / MILLI_PER_TENTH.unsigned_abs())
            .ok()
            .filter(|tenths| milli % MILLI_PER_TENTH == 0 && *tenths <= 0x7FFF)
            .map(|tenths| 0x8000 | tenths)
            .ok_or_else(|| {
                ReadError::Io(format!(
                    "{} holds {milli}, which is no DHT22 temperature word as the dht11 driver \
                     reports it (whole tenths of at most 3276.7 °C); check that `device` or \
                     `name` points at the dht11 IIO device",
                    self.temperature.display()
                ))
            })?;
        let (celsius, encoding) = frame::dht22_temperature(self.negative, word).map_err(|e| {
            let detail = format!("{} reported {milli} m°C: {e}", self.temperature.display());
            match e.kind() {
                ErrorKind::Checksum => ReadError::Checksum(detail),
                _ => ReadError::Range(detail),
            }
        })?;
        if let Some(e) = encoding {
            let who = format!("iio {}", self.name);
            let frame = || format!("word 0x{word:04X} = {celsius:.1} °C, driver said {milli}");
            self.seen.note(e, self.negative, &who, &frame);
        }
        Ok(celsius)
    }
}

/// Maps what the driver or the OS said to the agent's error kinds.
fn read_error(path: &Path, e: &io::Error) -> ReadError {
    let path = path.display();
    match e.raw_os_error() {
        Some(ETIMEDOUT) => ReadError::Timeout(format!(
            "{path}: the kernel driver reported ETIMEDOUT: the sensor did not answer; \
             check power, ground and that `gpiopin` in the dtoverlay is the data pin"
        )),
        Some(EIO) => ReadError::Checksum(format!(
            "{path}: the kernel driver reported EIO: a bad frame (checksum mismatch or \
             missing edges); an occasional one is normal, if it persists check the wiring, \
             the pull-up and the cable length"
        )),
        _ => match e.kind() {
            io::ErrorKind::NotFound => ReadError::Io(format!(
                "{path} is gone: the IIO device vanished (driver unloaded or device renumbered?); \
                 `grep . /sys/bus/iio/devices/*/name` shows what exists now, then restart edgeprio"
            )),
            io::ErrorKind::PermissionDenied => ReadError::Io(format!(
                "cannot read {path}: permission denied; run edgeprio as a user that can \
                 read sysfs (the file is world-readable unless a udev rule changed it)"
            )),
            _ => ReadError::Io(format!(
                "cannot read {path}: {e}; check that the IIO device still exists \
                 (`ls /sys/bus/iio/devices`)"
            )),
        },
    }
}

impl Sensor for IioSensor {
    fn read(&mut self) -> Result<Sample, ReadError> {
        // Temperature first: that read triggers the frame, and the humidity
        // read is then served from the driver's cache of the same frame.
        let temperature = self.read_milli(&self.temperature)?;
        let humidity = self.read_milli(&self.humidity)?;
        let temperature = self.temperature(temperature)?;
        Ok(Sample::new(temperature, humidity as f64 / 1000.0))
    }

    fn describe(&self) -> String {
        format!("iio {} at {}", self.name, self.dir.display())
    }

    /// The DHT22's 2 s of rest plus the time the driver takes to decode,
    /// so that a re-read gets a new frame, not the driver's cached one
    /// ([`REREAD_SPACING`]).
    fn min_interval(&self) -> Duration {
        REREAD_SPACING
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::{Arc, Mutex};

    use tempfile::TempDir;

    use super::*;
    use crate::domain::ErrorKind;

    /// A fake `/sys/bus/iio/devices` with a trigger entry that must be
    /// skipped.
    fn sysfs() -> TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("trigger0")).unwrap();
        fs::write(root.path().join("trigger0/name"), "sysfstrig0\n").unwrap();
        root
    }

    /// Adds `iio:device{n}` named `name`; `values` are the two input files'
    /// contents, `None` for a device without them.
    fn add(root: &TempDir, n: u32, name: &str, values: Option<(&str, &str)>) -> PathBuf {
        let dir = root.path().join(format!("iio:device{n}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        if let Some((t, h)) = values {
            fs::write(dir.join(TEMPERATURE_FILE), t).unwrap();
            fs::write(dir.join(HUMIDITY_FILE), h).unwrap();
        }
        dir
    }

    fn dht(root: &TempDir, n: u32, name: &str) -> PathBuf {
        add(root, n, name, Some(("23400\n", "56100\n")))
    }

    /// Makes the sensor read through `f` instead of the tempdir.
    struct Fake<F>(F);

    impl<F: Fn(&Path) -> io::Result<String> + Send> Attr for Fake<F> {
        fn read(&self, path: &Path) -> io::Result<String> {
            (self.0)(path)
        }
    }

    fn inject(
        sensor: IioSensor,
        f: impl Fn(&Path) -> io::Result<String> + Send + 'static,
    ) -> IioSensor {
        IioSensor {
            attr: Box::new(Fake(f)),
            ..sensor
        }
    }

    fn sample(t: &str, h: &str) -> Result<Sample, ReadError> {
        let root = sysfs();
        let dir = add(&root, 0, "dht11@4", Some((t, h)));
        open_in(root.path(), Some(&dir), None).unwrap().read()
    }

    #[test]
    fn reads_milli_units() {
        assert_eq!(sample("23400\n", "56100\n"), Ok(Sample::new(23.4, 56.1)));
        assert_eq!(sample("-5300\n", "100000\n"), Ok(Sample::new(-5.3, 100.0)));
        assert_eq!(sample("0", "0"), Ok(Sample::new(0.0, 0.0)));
    }

    #[test]
    fn opens_by_device() {
        let root = sysfs();
        dht(&root, 0, "dht11@4");
        let dir = dht(&root, 1, "dht11@17");
        let s = open_in(root.path(), Some(&dir), None).unwrap();
        assert_eq!(s.name(), "dht11@17");
        assert_eq!(s.dir(), dir);
        assert_eq!(s.describe(), format!("iio dht11@17 at {}", dir.display()));
    }

    #[test]
    fn device_without_name_file_is_described_by_its_directory() {
        let root = sysfs();
        let dir = dht(&root, 3, "dht11@4");
        fs::remove_file(dir.join("name")).unwrap();
        let s = open_in(root.path(), Some(&dir), None).unwrap();
        assert_eq!(s.name(), "iio:device3");
    }

    #[test]
    fn opens_by_name() {
        let root = sysfs();
        dht(&root, 0, "dht11@4");
        let dir = dht(&root, 1, "dht11@17");
        let s = open_in(root.path(), None, Some("dht11@17")).unwrap();
        assert_eq!(s.dir(), dir);
        assert_eq!(s.name(), "dht11@17");
    }

    #[test]
    fn auto_detects_the_only_dht() {
        let root = sysfs();
        add(&root, 0, "mcp3008", None);
        let dir = dht(&root, 1, "dht11@0");
        let s = open_in(root.path(), None, None).unwrap();
        assert_eq!(s.dir(), dir);
        assert_eq!(s.describe(), format!("iio dht11@0 at {}", dir.display()));
    }

    #[test]
    fn missing_device_says_how_to_load_the_driver() {
        let root = sysfs();
        let dir = root.path().join("iio:device7");
        let e = open_in(root.path(), Some(&dir), None).unwrap_err();
        assert_eq!(e, IioError::NoDevice { path: dir.clone() });
        let msg = e.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("dtoverlay=dht11,gpiopin=4"), "{msg}");
    }

    #[test]
    fn missing_root_says_how_to_load_the_driver() {
        let root = sysfs();
        let gone = root.path().join("no-iio");
        for name in [Some("dht11@4"), None] {
            let e = open_in(&gone, None, name).unwrap_err();
            assert_eq!(e, IioError::NoDevice { path: gone.clone() });
        }
    }

    #[test]
    fn directory_without_inputs_is_not_a_dht() {
        let root = sysfs();
        let dir = add(&root, 0, "mcp3008", None);
        let e = open_in(root.path(), Some(&dir), None).unwrap_err();
        assert_eq!(
            e,
            IioError::NotDht {
                path: dir,
                missing: TEMPERATURE_FILE
            }
        );
        // A device found by name is checked the same way.
        let e = open_in(root.path(), None, Some("mcp3008")).unwrap_err();
        assert!(matches!(e, IioError::NotDht { .. }), "{e}");
    }

    #[test]
    fn unknown_name_lists_the_existing_names() {
        let root = sysfs();
        dht(&root, 0, "dht11@4");
        add(&root, 1, "mcp3008", None);
        let e = open_in(root.path(), None, Some("dht11@5")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"dht11@5\""), "{msg}");
        assert!(
            msg.contains("dht11@4 (iio:device0), mcp3008 (iio:device1)"),
            "{msg}"
        );
        assert!(
            !msg.contains("sysfstrig0"),
            "triggers are not devices: {msg}"
        );
    }

    #[test]
    fn unknown_name_with_no_devices_says_so() {
        let root = sysfs();
        let msg = open_in(root.path(), None, Some("dht11@4"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no IIO devices at all"), "{msg}");
    }

    #[test]
    fn auto_detect_without_a_dht_lists_what_exists() {
        let root = sysfs();
        add(&root, 0, "mcp3008", None);
        let e = open_in(root.path(), None, None).unwrap_err();
        assert!(matches!(e, IioError::NoDht { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("mcp3008 (iio:device0)"), "{msg}");
        assert!(msg.contains("dtoverlay=dht11"), "{msg}");
    }

    #[test]
    fn auto_detect_with_two_dhts_is_an_error_listing_both() {
        let root = sysfs();
        // Device 10 sorts after device 2: the listing is in number order.
        dht(&root, 10, "dht11@17");
        dht(&root, 2, "dht11@4");
        let e = open_in(root.path(), None, None).unwrap_err();
        assert_eq!(
            e,
            IioError::Ambiguous {
                root: root.path().to_path_buf(),
                found: vec![
                    "dht11@4 (iio:device2)".to_string(),
                    "dht11@17 (iio:device10)".to_string()
                ],
            }
        );
        assert!(e.to_string().contains("name = "), "{e}");
    }

    #[test]
    fn garbage_content_is_an_io_error_naming_the_file() {
        let root = sysfs();
        let dir = add(&root, 0, "dht11@4", Some(("23400\n", "wet\n")));
        let err = open_in(root.path(), Some(&dir), None)
            .unwrap()
            .read()
            .unwrap_err();
        let ReadError::Io(detail) = err else {
            panic!("expected Io, got {err:?}");
        };
        let path = dir.join(HUMIDITY_FILE);
        assert!(detail.contains(&path.display().to_string()), "{detail}");
        assert!(detail.contains("\"wet\""), "{detail}");
        assert_eq!(sample("23.4", "50000").unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(sample("", "50000").unwrap_err().kind(), ErrorKind::Io);
    }

    #[test]
    fn vanished_device_is_an_io_error_naming_the_path() {
        let root = sysfs();
        let dir = dht(&root, 0, "dht11@4");
        let mut s = open_in(root.path(), None, None).unwrap();
        assert!(s.read().is_ok());
        fs::remove_dir_all(&dir).unwrap();
        let err = s.read().unwrap_err();
        let ReadError::Io(detail) = &err else {
            panic!("expected Io, got {err:?}");
        };
        let path = dir.join(TEMPERATURE_FILE);
        assert!(detail.contains(&path.display().to_string()), "{detail}");
        assert!(detail.contains("vanished"), "{detail}");
    }

    fn injected(errno: i32) -> IioSensor {
        let root = sysfs();
        let dir = dht(&root, 0, "dht11@4");
        let s = open_in(root.path(), Some(&dir), None).unwrap();
        inject(s, move |_| Err(io::Error::from_raw_os_error(errno)))
    }

    #[test]
    fn eio_is_a_checksum_error() {
        let mut s = injected(EIO);
        let err = s.read().unwrap_err();
        let ReadError::Checksum(detail) = &err else {
            panic!("expected Checksum, got {err:?}");
        };
        assert!(
            detail.contains("EIO") && detail.contains("bad frame"),
            "{detail}"
        );
        let path = s.dir().join(TEMPERATURE_FILE);
        assert!(detail.contains(&path.display().to_string()), "{detail}");
    }

    #[test]
    fn etimedout_is_a_timeout() {
        let mut s = injected(ETIMEDOUT);
        let err = s.read().unwrap_err();
        assert!(matches!(err, ReadError::Timeout(_)), "{err:?}");
        let path = s.dir().join(TEMPERATURE_FILE);
        assert!(err.detail().contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn other_os_errors_are_io_errors() {
        const EACCES: i32 = 13;
        let err = injected(EACCES).read().unwrap_err();
        assert!(
            matches!(&err, ReadError::Io(d) if d.contains("permission denied")),
            "{err:?}"
        );
    }

    #[test]
    fn error_on_humidity_names_the_humidity_file() {
        let root = sysfs();
        let dir = dht(&root, 0, "dht11@4");
        let s = open_in(root.path(), Some(&dir), None).unwrap();
        let mut s = inject(s, |p| {
            if p.ends_with(HUMIDITY_FILE) {
                Err(io::Error::from_raw_os_error(EIO))
            } else {
                Ok("21000\n".to_string())
            }
        });
        let err = s.read().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Checksum);
        let path = dir.join(HUMIDITY_FILE);
        assert!(err.detail().contains(&path.display().to_string()), "{err}");
    }

    /// Reads through a fake driver that caches like dht11.c: a read takes
    /// a new frame (numbered from 1 in the humidity, decoded
    /// `decode_after` after the read starts) only once 2 s have passed
    /// since the last decode. The clock is the test's to advance.
    fn caching_driver(decode_after: Duration) -> (IioSensor, Arc<Mutex<Duration>>) {
        #[derive(Default)]
        struct Driver {
            decoded_at: Option<Duration>,
            frames: u32,
        }
        let now = Arc::new(Mutex::new(Duration::ZERO));
        let driver = Mutex::new(Driver::default());
        let clock = now.clone();
        let root = sysfs();
        let dir = dht(&root, 0, "dht11@4");
        let s = open_in(root.path(), Some(&dir), None).unwrap();
        let s = inject(s, move |path| {
            let now = *clock.lock().unwrap();
            let mut d = driver.lock().unwrap();
            // `timestamp + DHT11_DATA_VALID_TIME < now` starts a frame.
            if d.decoded_at.is_none_or(|at| at + DRIVER_CACHE < now) {
                d.decoded_at = Some(now + decode_after);
                d.frames += 1;
            }
            Ok(if path.ends_with(TEMPERATURE_FILE) {
                "21000\n".to_string()
            } else {
                format!("{}\n", d.frames * 1000)
            })
        });
        (s, now)
    }

    #[test]
    fn a_reread_after_min_interval_gets_a_new_frame_from_the_caching_driver() {
        // 25 ms is the driver's usual decode time, 150 ms a badly loaded Pi.
        for decode_after in [Duration::from_millis(25), Duration::from_millis(150)] {
            let (mut s, now) = caching_driver(decode_after);
            let first = s.read().unwrap();
            assert_eq!(
                first,
                Sample::new(21.0, 1.0),
                "temperature and humidity share a frame"
            );
            // The DHT22's own 2 s are too early: the driver still serves the
            // first frame, which is what the old min_interval re-read got.
            *now.lock().unwrap() = super::super::dht22::MIN_SPACING;
            assert_eq!(
                s.read().unwrap(),
                first,
                "{decode_after:?}: the fake caches"
            );
            *now.lock().unwrap() = s.min_interval();
            assert_eq!(
                s.read().unwrap(),
                Sample::new(21.0, 2.0),
                "{decode_after:?}: a re-read after min_interval is a new frame"
            );
        }
    }

    /// The kernel's milli-degrees for a DHT22 temperature word: the driver
    /// reads every word as sign-magnitude.
    fn kernel_milli(word: u16) -> i64 {
        let magnitude = i64::from(word & 0x7FFF) * 100;
        if word & 0x8000 == 0 {
            magnitude
        } else {
            -magnitude
        }
    }

    fn reading(negative: Negative, milli: i64) -> Result<Sample, ReadError> {
        let root = sysfs();
        let t = format!("{milli}\n");
        let dir = add(&root, 0, "dht11@4", Some((&t, "56100\n")));
        open_in(root.path(), Some(&dir), None)
            .unwrap()
            .with_negative(negative)
            .read()
    }

    #[test]
    fn the_kernels_reading_of_a_clone_word_matches_the_driver() {
        // -10.0 °C from a clone is 0xFF9C, which the driver reports as
        // -3266.8 °C.
        assert_eq!(kernel_milli(0xFF9C), -3_266_800);
        assert_eq!(kernel_milli(0x8064), -10_000);
    }

    #[test]
    fn negative_temperatures_decode_in_both_encodings() {
        for tenths in [1u16, 100, 399] {
            let want = -f64::from(tenths) / 10.0;
            let sm = kernel_milli(0x8000 | tenths);
            let tc = kernel_milli(0u16.wrapping_sub(tenths));
            for (milli, encoding, other) in [
                (sm, Negative::SignMagnitude, Negative::TwosComplement),
                (tc, Negative::TwosComplement, Negative::SignMagnitude),
            ] {
                for negative in [Negative::Auto, encoding] {
                    assert_eq!(
                        reading(negative, milli),
                        Ok(Sample::new(want, 56.1)),
                        "{milli} m°C with {negative:?}"
                    );
                }
                // Forced to the other encoding, the word is out of range:
                // a failed read saying which setting would read it.
                let err = reading(other, milli).unwrap_err();
                assert_eq!(
                    err.kind(),
                    ErrorKind::Range,
                    "{milli} with {other:?}: {err}"
                );
                assert!(
                    err.detail().contains(encoding.name()),
                    "{milli} with {other:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn auto_detection_is_remembered() {
        let root = sysfs();
        let dir = add(&root, 0, "dht11@4", Some(("-3266800\n", "56100\n")));
        let mut s = open_in(root.path(), Some(&dir), None).unwrap();
        assert_eq!(s.negative(), Negative::Auto);
        assert_eq!(s.read(), Ok(Sample::new(-10.0, 56.1)));
        assert_eq!(
            s.seen.last(),
            Some(frame::Encoding::TwosComplement),
            "auto detected the clone"
        );
    }

    #[test]
    fn positive_values_are_unchanged_by_the_setting() {
        for negative in Negative::ALL {
            assert_eq!(reading(negative, 23_400), Ok(Sample::new(23.4, 56.1)));
            assert_eq!(reading(negative, 0), Ok(Sample::new(0.0, 56.1)));
        }
    }

    #[test]
    fn a_word_plausible_in_neither_encoding_is_a_range_error() {
        // Word 0xF530: -3000.0 °C as sign-magnitude, -276.8 °C as two's
        // complement.
        let milli = kernel_milli(0xF530);
        for negative in Negative::ALL {
            let err = reading(negative, milli).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Range, "{negative:?}: {err}");
            assert!(err.detail().contains("0xF530"), "{err}");
            assert!(err.detail().contains(&milli.to_string()), "{err}");
            assert!(err.detail().contains(TEMPERATURE_FILE), "{err}");
        }
    }

    #[test]
    fn a_negative_value_no_driver_reports_is_an_io_error() {
        for milli in [-150, -3_276_800, i64::MIN] {
            let err = reading(Negative::Auto, milli).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io, "{milli}: {err}");
            assert!(err.detail().contains(&milli.to_string()), "{err}");
        }
    }

    #[test]
    fn eio_forever_stays_an_error_on_every_call() {
        let mut s = injected(EIO);
        for _ in 0..1000 {
            assert_eq!(s.read().unwrap_err().kind(), ErrorKind::Checksum);
        }
    }
}
