//! The Home Assistant harness: a real Home Assistant Core from a cached venv
//! (made by `scripts/ha-venv`), started headless on a free loopback port
//! with its own config directory, onboarded and given an MQTT config entry
//! through its REST API, and stopped by a guard even when the test fails.
//! HTTP is plain HTTP/1.1 over `TcpStream`: a handful of JSON requests to
//! 127.0.0.1 do not need a client library.
//!
//! A test file includes it with `mod common; mod hass;`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where `scripts/ha-venv` puts the venvs unless `EDGEPRIO_HA_CACHE` says
/// otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/edgeprio/ha";

/// How long Home Assistant may take to answer HTTP after a start (it takes
/// 5 to 10 s on an idle 2-core machine).
const START_LIMIT: Duration = Duration::from_secs(90);

/// How long a SIGTERM may take before the guard kills.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// A Home Assistant version installed in a venv with a pyenv Python.
#[derive(Debug, Clone)]
pub struct Venv {
    /// Home Assistant's version, e.g. `2025.4.4`.
    pub ha: &'static str,
    /// The Python it runs on, e.g. `3.13.0`.
    pub python: &'static str,
    /// `<cache>/<ha>-py<python>`.
    pub dir: PathBuf,
}

impl Venv {
    /// The venv for `ha` on `python`; panics, saying how to make it, when it
    /// is missing or incomplete. Never skips: a test that cannot run fails.
    pub fn require(ha: &'static str, python: &'static str) -> Venv {
        let cache = std::env::var_os("EDGEPRIO_HA_CACHE")
            .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
        let dir = cache.join(format!("{ha}-py{python}"));
        let make = format!("run `scripts/ha-venv {ha} {python}` (scripts/test does)");
        let pyenv = std::env::var_os("PYENV_ROOT").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv"),
            PathBuf::from,
        );
        let interpreter = pyenv.join("versions").join(python).join("bin/python");
        if !dir.join(".complete").exists() {
            assert!(
                interpreter.exists(),
                "Home Assistant {ha} needs Python {python}, which is missing (no {}): \
                 `pyenv install {python}`, then {make}",
                interpreter.display()
            );
            panic!(
                "Home Assistant {ha} on Python {python} is not installed: no {}/.complete; {make}",
                dir.display()
            );
        }
        assert!(
            dir.join(".integration-requirements").exists(),
            "the venv {} lacks the MQTT integration's requirements (no \
             .integration-requirements); {make}",
            dir.display()
        );
        let venv = Venv { ha, python, dir };
        assert!(
            venv.python_bin().exists(),
            "{} is missing: the venv is broken; delete {} and {make}",
            venv.python_bin().display(),
            venv.dir.display()
        );
        venv
    }

    /// The venv's Python.
    pub fn python_bin(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// Runs `script` with the venv's Python, `stdin` on its standard input;
    /// returns stdout, panics with stderr when it fails.
    pub fn run_python(&self, script: &str, stdin: &str) -> String {
        let mut child = Command::new(self.python_bin())
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the venv's python");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes())
            .expect("write to python");
        let out = child.wait_with_output().expect("wait for python");
        assert!(
            out.status.success(),
            "python ({}) failed: {}\n{}",
            self.ha,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, decoded from chunks if it came chunked.
    pub body: String,
}

impl Response {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.body))
    }
}

/// Sends one request to `127.0.0.1:port` and reads the whole response
/// (`Connection: close`).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Accept: application/json\r\n"
    );
    if let Some(token) = token {
        let _ = write!(req, "Authorization: Bearer {token}\r\n");
    }
    let (content_type, content) = body.unwrap_or(("text/plain", ""));
    if body.is_some() {
        let _ = write!(
            req,
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            content.len()
        );
    }
    req.push_str("\r\n");
    req.push_str(content);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let bad = |what: &str| std::io::Error::other(format!("{what} in the response: {raw}"));
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("a bad chunk"))?
    } else {
        rest.to_owned()
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body.
fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        s = rest.get(size + 2..)?;
    }
}

/// `application/x-www-form-urlencoded` for a few ASCII fields.
fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A Home Assistant process with its config directory; stopped (SIGTERM,
/// then SIGKILL of its process group) on drop.
pub struct Hass {
    /// The installation it runs.
    pub venv: Venv,
    /// Its config directory (`-c`).
    pub config_dir: PathBuf,
    /// The HTTP port on 127.0.0.1.
    pub port: u16,
    /// `--log-file` of each start in turn: Home Assistant empties its log
    /// file when it starts, so every start gets its own.
    pub logs: Vec<PathBuf>,
    /// The access token, once onboarded.
    pub token: Option<String>,
    child: Option<Child>,
}

impl Hass {
    /// Writes a `configuration.yaml` into `dir/hass` and starts Home
    /// Assistant on `port`; returns once it answers HTTP.
    pub fn start(venv: Venv, dir: &Path, port: u16) -> Hass {
        let config_dir = dir.join("hass");
        std::fs::create_dir_all(&config_dir).expect("create the config directory");
        // Only what the test needs: the REST API, onboarding and config
        // entries over HTTP on loopback; no default_config (nothing that
        // reaches the network or scans the LAN).
        let yaml = format!(
            "homeassistant:\n  name: edgeprio test\n  latitude: 0\n  longitude: 0\n  \
             elevation: 0\n  unit_system: metric\n  time_zone: UTC\n\
             http:\n  server_host: 127.0.0.1\n  server_port: {port}\n\
             api:\nonboarding:\nconfig:\n"
        );
        std::fs::write(config_dir.join("configuration.yaml"), yaml).expect("write the config");
        let mut hass = Hass {
            venv,
            logs: Vec::new(),
            config_dir,
            port,
            token: None,
            child: None,
        };
        hass.spawn();
        hass
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "Home Assistant is already running");
        let log = self
            .config_dir
            .join(format!("test-{}.log", self.logs.len() + 1));
        self.logs.push(log.clone());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config_dir.join("stdout.log"))
            .expect("open Home Assistant's stdout file");
        let err = out.try_clone().expect("clone the stdout file");
        let child = Command::new(self.venv.dir.join("bin/hass"))
            .arg("-c")
            .arg(&self.config_dir)
            .arg("--log-file")
            .arg(&log)
            // scripts/ha-venv installed every requirement: nothing is
            // fetched from the network at test time.
            .arg("--skip-pip")
            .env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, so the guard can stop anything it
            // spawned as well.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}/bin/hass: {e}", self.venv.dir.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(r) = http(self.port, "GET", "/api/onboarding", None, None)
                && r.status == 200
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "Home Assistant {} exited at start ({status}); its log:\n{}",
                    self.venv.ha,
                    self.log_text()
                );
            }
            // An integration the test needs failed (a missing requirement:
            // the venv is incomplete); waiting longer would not help.
            let log = self.log_text();
            assert!(
                !log.contains("Setup failed for '"),
                "Home Assistant {} could not set up an integration (is the venv complete? \
                 scripts/ha-venv makes it); its log:\n{log}",
                self.venv.ha
            );
            assert!(
                Instant::now() < deadline,
                "Home Assistant {} did not answer on 127.0.0.1:{} within {START_LIMIT:?}; its \
                 log:\n{}",
                self.venv.ha,
                self.port,
                self.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its log so far, every start's in order (so an offset into it stays
    /// valid across restarts).
    pub fn log_text(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect()
    }

    /// SIGTERM, and waits for the exit (SIGKILL after `STOP_LIMIT`).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let kill = |signal: &str| {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        kill("-TERM");
        let deadline = Instant::now() + STOP_LIMIT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of the group (nothing, normally).
        kill("-KILL");
        let _ = child.wait();
    }

    /// Stops and starts it again with the same config directory and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A request with the access token; panics on a transport error.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(Value::to_string);
        http(
            self.port,
            method,
            path,
            self.token.as_deref(),
            body.as_deref().map(|b| ("application/json", b)),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Hass::call`], and the status must be 200; returns the JSON.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self.call(method, path, body);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        r.json()
    }

    /// Creates the owner account (the onboarding's first step) and logs in.
    pub fn onboard(&mut self) {
        let client_id = format!("http://127.0.0.1:{}/", self.port);
        let user = self.ok(
            "POST",
            "/api/onboarding/users",
            Some(&serde_json::json!({
                "client_id": client_id,
                "name": "Test",
                "username": "test",
                "password": "edgeprio-test-password",
                "language": "en",
            })),
        );
        let code = user["auth_code"].as_str().expect("auth_code").to_owned();
        let body = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
        ]);
        let r = http(
            self.port,
            "POST",
            "/auth/token",
            None,
            Some(("application/x-www-form-urlencoded", &body)),
        )
        .expect("POST /auth/token");
        assert_eq!(r.status, 200, "POST /auth/token: {}", r.body);
        self.token = Some(
            r.json()["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
        );
    }

    /// Adds the MQTT integration for the broker on `127.0.0.1:port`, and
    /// deletes any weather entry onboarding made (it would reach the
    /// internet).
    pub fn add_mqtt(&self, broker_port: u16) {
        let flow = self.ok(
            "POST",
            "/api/config/config_entries/flow",
            Some(&serde_json::json!({"handler": "mqtt"})),
        );
        let id = flow["flow_id"].as_str().expect("flow_id");
        let done = self.ok(
            "POST",
            &format!("/api/config/config_entries/flow/{id}"),
            Some(&serde_json::json!({"broker": "127.0.0.1", "port": broker_port})),
        );
        assert_eq!(done["type"], "create_entry", "the MQTT flow: {done}");
        let entries = self.ok("GET", "/api/config/config_entries/entry", None);
        for e in entries.as_array().into_iter().flatten() {
            if e["domain"] == "met" {
                let id = e["entry_id"].as_str().expect("entry_id");
                self.ok(
                    "DELETE",
                    &format!("/api/config/config_entries/entry/{id}"),
                    None,
                );
            }
        }
    }

    /// Every entity state (`GET /api/states`), by entity id.
    pub fn states(&self) -> std::collections::BTreeMap<String, Value> {
        let states = self.ok("GET", "/api/states", None);
        states
            .as_array()
            .expect("an array of states")
            .iter()
            .map(|s| {
                (
                    s["entity_id"].as_str().unwrap_or_default().to_owned(),
                    s.clone(),
                )
            })
            .collect()
    }

    /// Polls the states until `done` holds for them; panics with `what`, the
    /// last states of `entities` and the log after `limit`. Returns how long
    /// it took.
    pub fn wait_states(
        &self,
        limit: Duration,
        what: &str,
        entities: &[String],
        mut done: impl FnMut(&std::collections::BTreeMap<String, Value>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let states = self.states();
            if done(&states) {
                return start.elapsed();
            }
            if start.elapsed() >= limit {
                let ours: Vec<Option<&Value>> = entities.iter().map(|e| states.get(e)).collect();
                panic!(
                    "Home Assistant {}: timed out after {limit:?} waiting for {what}; our \
                     entities: {ours:#?}\nits log:\n{}",
                    self.venv.ha,
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Hass {
    fn drop(&mut self) {
        self.stop();
    }
}
