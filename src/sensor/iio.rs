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
//! result for about 2 s, so the humidity read that follows comes from the
//! same frame). A bad frame fails the read with `EIO`, a silent sensor with
//! `ETIMEDOUT`. One [`Sensor::read`] is one attempt: the caller retries.
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

use thiserror::Error;

use super::{ReadError, Sensor};
use crate::domain::Sample;

/// Where the kernel lists IIO devices.
pub const SYSFS_ROOT: &str = "/sys/bus/iio/devices";

/// Milli-degrees Celsius.
const TEMPERATURE_FILE: &str = "in_temp_input";
/// Milli-percent relative humidity.
const HUMIDITY_FILE: &str = "in_humidityrelative_input";
/// What the dht11 driver's device names start with (`dht11@4`).
const DHT_NAME_PREFIX: &str = "dht11";

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
}

impl fmt::Debug for IioSensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IioSensor")
            .field("dir", &self.dir)
            .field("name", &self.name)
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

    /// Reads one milli-unit attribute and scales it to units.
    fn read_milli(&self, path: &Path) -> Result<f64, ReadError> {
        let text = self.attr.read(path).map_err(|e| read_error(path, &e))?;
        let milli: i64 = text.trim().parse().map_err(|_| {
            ReadError::Io(format!(
                "{} holds {:?}, not an integer in milli-units; check that `device` or `name` \
                 in the config points at the dht11 IIO device (`grep . /sys/bus/iio/devices/*/name`)",
                path.display(),
                text.trim()
            ))
        })?;
        Ok(milli as f64 / 1000.0)
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
        Ok(Sample::new(temperature, humidity))
    }

    fn describe(&self) -> String {
        format!("iio {} at {}", self.name, self.dir.display())
    }

    /// The driver triggers a new frame on a read after a failure too, and
    /// the DHT22 still needs its 2 s of rest between frames.
    fn min_interval(&self) -> std::time::Duration {
        super::dht22::MIN_SPACING
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

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

    #[test]
    fn eio_forever_stays_an_error_on_every_call() {
        let mut s = injected(EIO);
        for _ in 0..1000 {
            assert_eq!(s.read().unwrap_err().kind(), ErrorKind::Checksum);
        }
    }
}
