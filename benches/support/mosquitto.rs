//! A throwaway Mosquitto for the benches: a free loopback port, queues
//! without limit (or the limits a bench chooses), killed and reaped on
//! drop. Needs `mosquitto`.

#![allow(dead_code, reason = "each includer uses part of it")]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process killed and reaped on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A broker's per-client limits (`mosquitto.conf`); 0 is "no limit".
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `max_inflight_messages`: `QoS` 1 messages sent to one client and not
    /// yet acknowledged (20 in a stock Mosquitto).
    pub inflight: u32,
    /// `max_queued_messages`: messages queued for one client past its
    /// in-flight ones (1000 in a stock Mosquitto; the rest are dropped).
    pub queued: u32,
}

impl Limits {
    /// Neither limit.
    pub const UNLIMITED: Limits = Limits {
        inflight: 0,
        queued: 0,
    };
}

/// A Mosquitto on a free loopback port that queues without limit (a
/// persistent subscriber is not the point here).
pub fn mosquitto(dir: &Path) -> (Killed, u16) {
    mosquitto_with(dir, Limits::UNLIMITED)
}

/// A Mosquitto on a free loopback port with `limits`.
pub fn mosquitto_with(dir: &Path, limits: Limits) -> (Killed, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages {}\nmax_queued_messages {}\n",
            limits.inflight, limits.queued
        ),
    )
    .expect("write mosquitto.conf");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is missing: scripts/test installs it (apt-get install mosquitto)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Killed(child), port)
}
