//! Every rppal call lives here: rppal is no longer maintained upstream, so
//! replacing it (with a gpio-cdev backend, say) touches this file only.
//!
//! # Troubleshooting
//!
//! - "Permission denied" opening `/dev/gpiomem`: the user is not in group
//!   `gpio` (`sudo usermod -aG gpio $USER`, then log in again). The systemd
//!   unit runs the agent in that group.
//! - On a Raspberry Pi 5 (BCM2712) the pins belong to the RP1 I/O chip, and
//!   rppal maps its registers from `/dev/gpiomem0` (not `/dev/gpiomem`);
//!   "Permission denied" there has the same fix. See [`GpioPath`].
//! - "not a Raspberry Pi": rppal identifies the board from
//!   `/proc/device-tree/compatible` and `/proc/cpuinfo`; on other machines
//!   use `kind = "sim"`, or the kernel driver where one exists.

use std::time::{Duration, Instant};

use embedded_hal::delay::DelayNs;
use rppal::gpio::{Bias, Gpio, IoPin, Mode};

use super::dht22::LinePin;

/// A GPIO line driven as open drain: output-low to pull, input with the
/// pull-up to release.
pub struct RppalLine {
    pin: IoPin,
}

impl LinePin for RppalLine {
    fn drive_low(&mut self) {
        // Latch low first, then switch to output: no glitch high.
        self.pin.set_low();
        self.pin.set_mode(Mode::Output);
    }

    fn release(&mut self) {
        self.pin.set_mode(Mode::Input);
    }

    fn is_high(&mut self) -> bool {
        self.pin.is_high()
    }
}

/// How rppal 0.22 reaches the GPIO pins on this board (read from its
/// source: `gpio.rs` picks the register block by `SoC`, `gpio/gpiomem/rp1.rs`
/// and `bcm.rs` map it, `gpio/ioctl.rs` finds the gpiochip for interrupts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpioPath {
    /// Pi 1 to 4, Zero, Zero 2 W: the `SoC`'s own GPIO block, memory-mapped
    /// from `/dev/gpiomem` (`/dev/mem` as a fallback for root), with the
    /// gpiochip labelled `pinctrl-bcm2835` or `pinctrl-bcm2711`.
    Bcm {
        /// The `SoC` as rppal names it, e.g. `BCM2711`.
        soc: &'static str,
    },
    /// Pi 5, Pi 500, CM5 (BCM2712): the pins belong to the RP1 I/O chip on
    /// `PCIe`; rppal maps RP1's `IO_BANK0`, `SYS_RIO0` and `PADS_BANK0` registers
    /// from `/dev/gpiomem0` (no `/dev/mem` fallback) and opens the gpiochip
    /// labelled `pinctrl-rp1`. Each pin access is a `PCIe` transaction.
    Rp1,
}

impl GpioPath {
    /// The device file rppal maps the GPIO registers from.
    pub fn device(self) -> &'static str {
        match self {
            GpioPath::Bcm { .. } => "/dev/gpiomem",
            GpioPath::Rp1 => "/dev/gpiomem0",
        }
    }

    /// One line for `doctor`: the chip, the device file, the gpiochip.
    pub fn describe(self) -> String {
        match self {
            GpioPath::Bcm { soc } => format!(
                "GPIO through the {soc}'s own GPIO registers, memory-mapped from /dev/gpiomem \
                 (gpiochip pinctrl-bcm2835/pinctrl-bcm2711)"
            ),
            GpioPath::Rp1 => "GPIO through the RP1 I/O chip (Raspberry Pi 5 family): rppal maps \
                 RP1's IO_BANK0/SYS_RIO0/PADS_BANK0 registers from /dev/gpiomem0 and uses the \
                 gpiochip labelled pinctrl-rp1; every pin access crosses PCIe"
                .to_string(),
        }
    }
}

/// The GPIO path of this board, `None` off a Raspberry Pi.
pub fn gpio_path() -> Option<GpioPath> {
    use rppal::system::SoC;
    let soc = rppal::system::DeviceInfo::new().ok()?.soc();
    Some(match soc {
        SoC::Bcm2712 => GpioPath::Rp1,
        SoC::Bcm2835 => GpioPath::Bcm { soc: "BCM2835" },
        SoC::Bcm2836 => GpioPath::Bcm { soc: "BCM2836" },
        SoC::Bcm2837A1 => GpioPath::Bcm { soc: "BCM2837A1" },
        SoC::Bcm2837B0 => GpioPath::Bcm { soc: "BCM2837B0" },
        SoC::Bcm2711 => GpioPath::Bcm { soc: "BCM2711" },
        // rppal may add SoCs; until this file knows one, say so plainly.
        _ => GpioPath::Bcm { soc: "unknown SoC" },
    })
}

/// Why a GPIO line could not be opened, phrased with the fix.
pub fn describe_gpio_error(pin: u8, e: &rppal::gpio::Error) -> String {
    use rppal::gpio::Error;
    match e {
        // On the RP1 rppal passes the open's I/O error through unnamed.
        Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => format!(
            "permission denied opening {}: add the user to group gpio \
             (sudo usermod -aG gpio $USER, then log in again) or run as the edgeprio service",
            gpio_path().map_or("the GPIO device", GpioPath::device)
        ),
        Error::UnknownModel => format!(
            "this machine is not a Raspberry Pi that rppal recognises, so GPIO BCM {pin} cannot \
             be opened: run on the Pi, or use kind = \"sim\" (or \"iio\" with the kernel driver)"
        ),
        Error::PermissionDenied(path) => format!(
            "permission denied opening {path}: add the user to group gpio \
             (sudo usermod -aG gpio $USER, then log in again) or run as the edgeprio service"
        ),
        Error::PinNotAvailable(p) => format!(
            "GPIO BCM {p} does not exist on this board: use a BCM number from the header \
             (BCM 4 is physical pin 7)"
        ),
        Error::PinUsed(p) => format!("GPIO BCM {p} is already in use by this process"),
        other => format!("cannot open GPIO BCM {pin}: {other}"),
    }
}

/// Opens BCM `pin` as an open-drain line with the internal pull-up on (the
/// external 10 kOhm one still matters: the internal ~50 kOhm is weak).
pub fn open_line(pin: u8) -> Result<RppalLine, String> {
    let gpio = Gpio::new().map_err(|e| describe_gpio_error(pin, &e))?;
    let pin_handle = gpio.get(pin).map_err(|e| describe_gpio_error(pin, &e))?;
    let mut io = pin_handle.into_io(Mode::Input);
    io.set_bias(Bias::PullUp);
    Ok(RppalLine { pin: io })
}

/// The board as rppal sees it, e.g. `Raspberry Pi 4 B`.
pub fn board() -> Result<String, String> {
    rppal::system::DeviceInfo::new()
        .map(|info| info.model().to_string())
        .map_err(|e| e.to_string())
}

/// Microsecond delays for bit-banging: `thread::sleep` overshoots by tens
/// of microseconds, so short delays spin on the monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpinDelay;

impl DelayNs for SpinDelay {
    fn delay_ns(&mut self, ns: u32) {
        let until = Instant::now() + Duration::from_nanos(u64::from(ns));
        if ns >= 500_000 {
            // Long enough to give the core away; a little late is fine for
            // the start pulse (>= 1 ms is what the sensor wants).
            std::thread::sleep(Duration::from_nanos(u64::from(ns)));
            return;
        }
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rp1_paths_are_the_ones_rppal_0_22_opens() {
        assert_eq!(GpioPath::Rp1.device(), "/dev/gpiomem0");
        assert_eq!(GpioPath::Bcm { soc: "BCM2835" }.device(), "/dev/gpiomem");
        let d = GpioPath::Rp1.describe();
        assert!(d.contains("RP1") && d.contains("/dev/gpiomem0") && d.contains("pinctrl-rp1"));
    }

    /// On the RP1 rppal reports a refused `/dev/gpiomem0` as a bare I/O
    /// error: it still gets the group fix.
    #[test]
    fn a_bare_permission_error_gets_the_group_fix() {
        let e = rppal::gpio::Error::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        let msg = describe_gpio_error(4, &e);
        assert!(
            msg.starts_with("permission denied opening ") && msg.contains("group gpio"),
            "{msg}"
        );
    }
}
