//! The processes a bench mode runs: the broker (unless `--broker`), the
//! gateway or the relay, and the collectors, each the real command of this
//! very binary, with its stderr kept in the mode's directory; and what
//! each one cost.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::procfs;

/// A child process, killed and reaped on drop.
#[derive(Debug)]
pub struct Child {
    /// What the report calls it: `gateway`, `collect realtime`...
    pub name: String,
    /// The process.
    process: std::process::Child,
    /// Its stderr, for an error message.
    stderr: PathBuf,
    /// Its `/metrics`, when it serves them.
    pub metrics: Option<SocketAddr>,
    /// Set once it printed "subscribed" on stdout (the relay).
    subscribed: Arc<AtomicBool>,
    /// Its CPU time when the load began.
    cpu_at_start: Duration,
}

/// What one process cost during a mode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    /// The process.
    pub name: String,
    /// CPU seconds (user and system) from the start of the load to the end
    /// of the drain.
    pub cpu_s: f64,
    /// Its peak resident set (`VmHWM`), in MiB.
    pub peak_rss_mib: f64,
}

impl Child {
    /// Starts `program` with `args`, stdout read for "subscribed", stderr
    /// into `<dir>/<file>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        dir: &Path,
        metrics: Option<SocketAddr>,
    ) -> Result<Child, String> {
        let file = name.replace(' ', "-");
        let stderr = dir.join(format!("{file}.log"));
        let log = std::fs::File::create(&stderr)
            .map_err(|e| format!("cannot create {}: {e}", stderr.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .env_remove("EDGEPRIO_CONFIG")
            .env_remove("EDGEPRIO_DB")
            .env_remove("EDGEPRIO_LOG")
            .env_remove("JOURNAL_STREAM")
            .env("NO_COLOR", "1")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {} ({name}): {e}", program.display()))?;
        let subscribed = Arc::new(AtomicBool::new(false));
        if let Some(out) = child.stdout.take() {
            let flag = subscribed.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    match line {
                        Ok(l) if l.trim() == "subscribed" => flag.store(true, Ordering::Release),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
        }
        let pid = child.id();
        Ok(Child {
            name: name.to_owned(),
            process: child,
            stderr,
            metrics,
            subscribed,
            cpu_at_start: procfs::cpu(pid),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// An error naming it and the end of its stderr, if it has exited.
    pub fn check(&mut self) -> Result<(), String> {
        match self.process.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); the end of its log ({}):\n{}",
                self.name,
                self.stderr.display(),
                tail(&self.stderr)
            )),
            Err(e) => Err(format!("cannot wait for {}: {e}", self.name)),
        }
    }

    /// Waits until it is subscribed: its `consumer_connected` gauge is 1,
    /// or (without metrics) it printed "subscribed".
    pub async fn subscribed(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            self.check()?;
            let up = match self.metrics {
                Some(addr) => {
                    scrape(addr)
                        .await
                        .ok()
                        .and_then(|m| sample(&m, "edgeprio_consumer_connected", None))
                        == Some(1.0)
                }
                None => self.subscribed.load(Ordering::Acquire),
            };
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not subscribe within {within:?}; its log ({}):\n{}",
                    self.name,
                    self.stderr.display(),
                    tail(&self.stderr)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts counting its CPU time from now.
    pub fn mark(&mut self) {
        self.cpu_at_start = procfs::cpu(self.pid());
    }

    /// What it cost since [`Child::mark`].
    pub fn usage(&self) -> Usage {
        let pid = self.pid();
        let (_, peak, _) = procfs::rss(pid);
        Usage {
            name: self.name.clone(),
            cpu_s: procfs::cpu(pid)
                .saturating_sub(self.cpu_at_start)
                .as_secs_f64(),
            peak_rss_mib: peak as f64 / (1024.0 * 1024.0),
        }
    }

    /// SIGTERM, then waits for it to exit (10 s at most, then SIGKILL).
    pub fn stop(&mut self) -> Result<(), String> {
        if self.process.try_wait().ok().flatten().is_some() {
            return self.check();
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid().cast_signed()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.process.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "{} failed on SIGTERM ({status}); its log ({}):\n{}",
                        self.name,
                        self.stderr.display(),
                        tail(&self.stderr)
                    ));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.process.kill();
                    let _ = self.process.wait();
                    return Err(format!("{} did not stop within 10 s of SIGTERM", self.name));
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.process.try_wait().ok().flatten().is_none() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A Mosquitto of the bench's own, on a free loopback port: nothing
/// dropped from any queue (`max_queued_messages 0`), and
/// `max_inflight_messages` twice the gateway's batch, so the next batch
/// arrives while one commits.
pub fn mosquitto(dir: &Path, inflight: u32) -> Result<(Child, u16), String> {
    let port = crate::broker::free_loopback_addr()?.port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages {inflight}\nmax_queued_messages 0\n"
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let conf = conf.display().to_string();
    let mut child = Child::spawn(
        "mosquitto",
        Path::new("mosquitto"),
        &["-c", &conf],
        dir,
        None,
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        child.check()?;
        if Instant::now() > deadline {
            return Err("mosquitto did not listen within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, port))
}

/// Whether `mosquitto` is on the PATH.
pub fn have_mosquitto() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("mosquitto").is_file())
            || Path::new("/usr/sbin/mosquitto").is_file()
    })
}

/// `GET /metrics` of the endpoint at `addr`.
pub async fn scrape(addr: SocketAddr) -> Result<String, String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    match tokio::time::timeout(Duration::from_secs(5), fetch).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(format!("cannot read the metrics at {addr}: {e}")),
        Err(_) => Err(format!("the metrics at {addr} did not answer within 5 s")),
    }
}

/// The value of series `name` in an exposition, the first one whose labels
/// contain `label` (`result="inserted"`) when given.
pub fn sample(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| label.is_none_or(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_found_by_name_and_label() {
        let text = "# HELP x\nedgeprio_collect_readings_total{node=\"c\",route=\"batch\",result=\"inserted\"} 42\n\
                    edgeprio_collect_readings_total{node=\"c\",route=\"batch\",result=\"duplicate\"} 3\n\
                    edgeprio_consumer_connected{node=\"c\"} 1\nedgeprio_consumer_connected_x 7\n";
        let total = "edgeprio_collect_readings_total";
        assert_eq!(sample(text, total, Some("result=\"inserted\"")), Some(42.0));
        assert_eq!(sample(text, total, Some("result=\"duplicate\"")), Some(3.0));
        assert_eq!(sample(text, "edgeprio_consumer_connected", None), Some(1.0));
        assert_eq!(sample(text, "edgeprio_missing", None), None);
    }
}
