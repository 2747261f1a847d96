//! The hostile corpus (issue 12, items 1 to 3 and the start-up part of 9):
//! config and command-line mutations a hostile tester tried, each run
//! against the real binary. For every one: no panic (exit 101), the secret
//! never in stdout or stderr, and either `check-config` *and* `run` refuse
//! it naming the key, or it is valid and `run` logs readings and stops on
//! SIGTERM: `check-config` catches what `run` would die on.
//!
//! The MQTT limits the config enforces are proven on a real Mosquitto: the
//! longest accepted client id and topic prefix connect and publish, and what
//! is refused (a `$` prefix, deeper topics) is what the broker drops.

mod common;
mod mosquitto;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{ChildGuard, edgeprio, send_signal, std_cmd, text, wait_for};
use mosquitto::{Broker, Spec, Sub, free_port};

/// The password of every case: it must never show up.
const SECRET: &str = "S3cr3t-Hostile-q9Z";
/// A password written as a TOML integer: serde quotes such values.
const NUMERIC_SECRET: &str = "9081726354";
/// sysexits' `EX_CONFIG`.
const EXIT_CONFIG: i32 = 78;
/// What a panicking Rust program exits with.
const EXIT_PANIC: i32 = 101;
/// The most a refused config may take to be refused (a FIFO used to hang).
const REFUSE_WITHIN: Duration = Duration::from_secs(10);

/// The files a case's config can point at.
struct Fixture {
    dir: PathBuf,
    db: PathBuf,
    /// A broker URL nothing listens on: valid cases run without one.
    url: String,
}

impl Fixture {
    fn new(dir: &Path) -> Fixture {
        std::fs::write(dir.join("pw"), format!("{SECRET}\n")).unwrap();
        std::fs::write(dir.join("empty-pw"), "\n").unwrap();
        std::fs::write(dir.join("long-pw"), "x".repeat(70_000)).unwrap();
        std::fs::write(
            dir.join("trace.csv"),
            "temperature_c,humidity_pct\n21,50\n22,51\n",
        )
        .unwrap();
        std::fs::create_dir(dir.join("a-dir")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            dir.join("fifo.csv"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        Fixture {
            dir: dir.to_path_buf(),
            db: dir.join("e.db"),
            url: format!("mqtt://127.0.0.1:{}", free_port()),
        }
    }

    /// `name` in the fixture's directory, as a TOML string.
    fn path(&self, name: &str) -> String {
        format!("{:?}", self.dir.join(name).display().to_string())
    }
}

/// A config: `top` lines, one sensor `s` with `sensor` lines, then `rest`;
/// `interval = "100ms"`, the fixture's `db` and `kind = "sim"` unless given.
fn cfg(f: &Fixture, top: &str, sensor: &str, rest: &str) -> String {
    let mut t = format!("node = \"hostile\"\n{top}");
    if !top.contains("interval =") {
        t.push_str("interval = \"100ms\"\n");
    }
    if !top.contains("db =") {
        let _ = writeln!(t, "db = {:?}", f.db.display().to_string());
    }
    t.push_str("[[sensor]]\nid = \"s\"\n");
    if !sensor.contains("kind =") {
        t.push_str("kind = \"sim\"\n");
    }
    t.push_str(sensor);
    t.push_str(rest);
    t
}

/// `[mqtt]` with the fixture's URL and `lines`.
fn mqtt(f: &Fixture, lines: &str) -> String {
    format!("[mqtt]\nurl = {:?}\n{lines}", f.url)
}

/// What a case must do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// `check-config` and `run` exit 78 naming this key, printing each of
    /// `says` exactly once.
    Key(&'static str, &'static [&'static str]),
    /// Not TOML of this program at all (a password file given as
    /// `--config`): exit 78, and not one byte of it quoted.
    NotAConfig,
    /// Valid: `check-config` passes, `run` logs readings and stops on
    /// SIGTERM with 0.
    Runs,
}

struct Case {
    name: &'static str,
    toml: fn(&Fixture) -> String,
    want: Want,
}

use Want::{Key, NotAConfig, Runs};

#[expect(clippy::too_many_lines, reason = "a table, one entry per corpus case")]
fn cases() -> Vec<Case> {
    let case = |name, toml, want| Case { name, toml, want };
    vec![
        // Item 2: extreme durations and factors.
        case(
            "interval u64::MAX seconds",
            |f| {
                cfg(
                    f,
                    "interval = \"18446744073709551615s\"\n",
                    "",
                    &mqtt(f, ""),
                )
            },
            Key("interval", &["too long"]),
        ),
        case(
            "interval 99999999999999d",
            |f| cfg(f, "interval = \"99999999999999d\"\n", "", &mqtt(f, "")),
            Key("interval", &["too long"]),
        ),
        case(
            "interval 1ns",
            |f| cfg(f, "interval = \"1ns\"\n", "", ""),
            Key("interval", &["too short"]),
        ),
        case(
            "interval 0s",
            |f| cfg(f, "interval = \"0s\"\n", "", ""),
            Key("interval", &[]),
        ),
        case(
            "interval 1d, the longest",
            |f| cfg(f, "interval = \"1d\"\n", "", &mqtt(f, "")),
            Runs,
        ),
        case(
            "interval beyond u64 seconds",
            |f| cfg(f, "interval = \"99999999999999999999999s\"\n", "", ""),
            Key("interval", &[]),
        ),
        case(
            "stale_after u64::MAX seconds",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    "[priority]\nstale_after = \"18446744073709551615s\"\n",
                )
            },
            Key("priority.stale_after", &["too long"]),
        ),
        case(
            "retention 99999999999999d",
            |f| cfg(f, "", "", "[store]\nretention = \"99999999999999d\"\n"),
            Key("store.retention", &["too long"]),
        ),
        case(
            "retention 3650d, the longest",
            |f| cfg(f, "", "", "[store]\nretention = \"3650d\"\n"),
            Runs,
        ),
        case(
            "batch_interval u64::MAX seconds",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(f, "batch_interval = \"18446744073709551615s\"\n"),
                )
            },
            Key("mqtt.batch_interval", &["too long"]),
        ),
        case(
            "realtime_max_age 99999999999999d",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(f, "realtime_max_age = \"99999999999999d\"\n"),
                )
            },
            Key("mqtt.realtime_max_age", &["too long"]),
        ),
        case(
            "threshold 1e308",
            |f| cfg(f, "", "", "[priority]\nthreshold = 1e308\n"),
            Key("priority.threshold", &["1e308"]),
        ),
        case(
            "step 1e-300 (tiny but valid)",
            |f| cfg(f, "", "", "[priority]\nstep = 1e-300\n"),
            Runs,
        ),
        case(
            "floor 1e-300 (tiny but valid)",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    "[priority]\nfloor = { temperature = 1e-300, humidity = 1e-300 }\n",
                )
            },
            Runs,
        ),
        case(
            "max_weight u32::MAX",
            |f| cfg(f, "", "", "[priority]\nmax_weight = 4294967295\n"),
            Key("priority.max_weight", &[]),
        ),
        case(
            "seed u64::MAX (valid)",
            |f| cfg(f, "", "seed = 18446744073709551615\n", ""),
            Runs,
        ),
        case(
            "seed beyond u64",
            |f| cfg(f, "", "seed = 18446744073709551616\n", ""),
            Key("sensor[0].seed", &[]),
        ),
        case(
            "offset 1e308",
            |f| cfg(f, "", "offset = { temperature = 1e308 }\n", ""),
            Key("sensor[0].offset.temperature", &[]),
        ),
        // Item 3: MQTT limits.
        case(
            "topic_prefix $SYS",
            |f| cfg(f, "", "", &mqtt(f, "topic_prefix = \"$SYS\"\n")),
            Key("mqtt.topic_prefix", &["starts with '$'"]),
        ),
        case(
            "topic_prefix $share/x",
            |f| cfg(f, "", "", &mqtt(f, "topic_prefix = \"$share/x\"\n")),
            Key("mqtt.topic_prefix", &["starts with '$'"]),
        ),
        case(
            "topic_prefix of 70,000 characters",
            |f| {
                let prefix = "p".repeat(70_000);
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(f, &format!("topic_prefix = \"{prefix}\"\n")),
                )
            },
            Key("mqtt.topic_prefix", &["65535 bytes"]),
        ),
        case(
            "topic_prefix of 198 levels",
            |f| {
                let prefix = vec!["l"; 198].join("/");
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(f, &format!("topic_prefix = \"{prefix}\"\n")),
                )
            },
            Key("mqtt.topic_prefix", &["has 198 levels"]),
        ),
        case(
            "topic_prefix with a NUL",
            |f| cfg(f, "", "", &mqtt(f, "topic_prefix = \"a\\u0000b\"\n")),
            Key("mqtt.topic_prefix", &["control character"]),
        ),
        case(
            "topic_prefix with a wildcard",
            |f| cfg(f, "", "", &mqtt(f, "topic_prefix = \"a/+\"\n")),
            Key("mqtt.topic_prefix", &["wildcard"]),
        ),
        case(
            "client_id of 100,000 characters",
            |f| {
                let id = "c".repeat(100_000);
                cfg(f, "", "", &mqtt(f, &format!("client_id = \"{id}\"\n")))
            },
            Key("mqtt.client_id", &["100000 bytes"]),
        ),
        case(
            "client_id empty",
            |f| cfg(f, "", "", &mqtt(f, "client_id = \"\"\n")),
            Key("mqtt.client_id", &[]),
        ),
        case(
            "client_id of 65,535 bytes, the longest",
            |f| {
                let id = "c".repeat(65_535);
                cfg(f, "", "", &mqtt(f, &format!("client_id = \"{id}\"\n")))
            },
            Runs,
        ),
        // Bad URLs.
        case(
            "url mqtt://[::1",
            |f| cfg(f, "", "", "[mqtt]\nurl = \"mqtt://[::1\"\n"),
            Key("mqtt.url", &["unclosed '['"]),
        ),
        case(
            "url mqtt:// host",
            |f| cfg(f, "", "", "[mqtt]\nurl = \"mqtt:// host\"\n"),
            Key("mqtt.url", &[]),
        ),
        case(
            "url with no host",
            |f| cfg(f, "", "", "[mqtt]\nurl = \"mqtt://:1883\"\n"),
            Key("mqtt.url", &["no host"]),
        ),
        case(
            "url with port 65536",
            |f| cfg(f, "", "", "[mqtt]\nurl = \"mqtt://h:65536\"\n"),
            Key("mqtt.url", &["\"65536\""]),
        ),
        case(
            "url with text after [v6]",
            |f| cfg(f, "", "", "[mqtt]\nurl = \"mqtt://[::1]junk\"\n"),
            Key("mqtt.url", &[]),
        ),
        // Item 1: secrets.
        case(
            "password in the URL",
            |f| {
                let url = format!("mqtt://user:{SECRET}@127.0.0.1:1883");
                cfg(f, "", "", &format!("[mqtt]\nurl = \"{url}\"\n"))
            },
            Key("mqtt.url", &["username", "password_file"]),
        ),
        case(
            "password in the URL with a bad port",
            |f| {
                let url = format!("mqtt://user:{SECRET}@127.0.0.1:x");
                cfg(f, "", "", &format!("[mqtt]\nurl = \"{url}\"\n"))
            },
            Key("mqtt.url", &["password_file"]),
        ),
        case(
            "password with '/' in the URL",
            |f| {
                let url = format!("mqtt://user:a/{SECRET}@127.0.0.1");
                cfg(f, "", "", &format!("[mqtt]\nurl = \"{url}\"\n"))
            },
            Key("mqtt.url", &["password_file"]),
        ),
        case(
            "syntax error on a URL with user-info",
            |f| {
                let url = format!("mqtt://user:{SECRET}@127.0.0.1");
                cfg(f, "", "", &format!("[mqtt]\nurl = \"{url}\n"))
            },
            Key("mqtt.url", &[]),
        ),
        case(
            "syntax error on the password line",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(f, &format!("username = \"u\"\npassword = \"{SECRET}\n")),
                )
            },
            Key("mqtt.password", &["not shown"]),
        ),
        case(
            "duplicated password key",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(
                        f,
                        &format!(
                            "username = \"u\"\npassword = \"{SECRET}\"\npassword = \"{SECRET}\"\n"
                        ),
                    ),
                )
            },
            Key("mqtt.password", &["duplicate key"]),
        ),
        case(
            "password as an integer",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(
                        f,
                        &format!("username = \"u\"\npassword = {NUMERIC_SECRET}\n"),
                    ),
                )
            },
            Key("mqtt.password", &["expected a string"]),
        ),
        case(
            "empty password_file",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(
                        f,
                        &format!("username = \"u\"\npassword_file = {}\n", f.path("empty-pw")),
                    ),
                )
            },
            Key("mqtt.password_file", &["an empty password"]),
        ),
        case(
            "password_file longer than MQTT can send",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(
                        f,
                        &format!("username = \"u\"\npassword_file = {}\n", f.path("long-pw")),
                    ),
                )
            },
            Key("mqtt.password_file", &["65535 bytes"]),
        ),
        case(
            "password without username",
            |f| cfg(f, "", "", &mqtt(f, &format!("password = \"{SECRET}\"\n"))),
            Key("mqtt.username", &[]),
        ),
        case(
            "password_file without username",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(f, &format!("password_file = {}\n", f.path("pw"))),
                )
            },
            Key("mqtt.username", &[]),
        ),
        case(
            "username and password_file (the right way)",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(
                        f,
                        &format!("username = \"u\"\npassword_file = {}\n", f.path("pw")),
                    ),
                )
            },
            Runs,
        ),
        // Item 3: files that are not there, or not files.
        case(
            "password_file missing",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(
                        f,
                        &format!("username = \"u\"\npassword_file = {}\n", f.path("gone")),
                    ),
                )
            },
            Key("mqtt.password_file", &["does not exist"]),
        ),
        case(
            "password_file a directory",
            |f| {
                cfg(
                    f,
                    "",
                    "",
                    &mqtt(
                        f,
                        &format!("username = \"u\"\npassword_file = {}\n", f.path("a-dir")),
                    ),
                )
            },
            Key("mqtt.password_file", &["not a regular file (a directory)"]),
        ),
        case(
            "ca_file missing",
            |f| {
                let url = f.url.replace("mqtt://", "mqtts://");
                cfg(
                    f,
                    "",
                    "",
                    &format!("[mqtt]\nurl = {url:?}\nca_file = {}\n", f.path("gone.pem")),
                )
            },
            Key("mqtt.ca_file", &["does not exist"]),
        ),
        case(
            "client_cert missing",
            |f| {
                let url = f.url.replace("mqtt://", "mqtts://");
                cfg(
                    f,
                    "",
                    "",
                    &format!(
                        "[mqtt]\nurl = {url:?}\nclient_cert = {}\nclient_key = {}\n",
                        f.path("gone.pem"),
                        f.path("pw")
                    ),
                )
            },
            Key("mqtt.client_cert", &["does not exist"]),
        ),
        case(
            "client_key missing",
            |f| {
                let url = f.url.replace("mqtt://", "mqtts://");
                cfg(
                    f,
                    "",
                    "",
                    &format!(
                        "[mqtt]\nurl = {url:?}\nclient_cert = {}\nclient_key = {}\n",
                        f.path("pw"),
                        f.path("gone.key")
                    ),
                )
            },
            Key("mqtt.client_key", &["does not exist"]),
        ),
        case(
            "trace missing",
            |f| cfg(f, "", &format!("trace = {}\n", f.path("gone.csv")), ""),
            Key("sensor[0].trace", &["does not exist"]),
        ),
        case(
            "trace a FIFO",
            |f| cfg(f, "", &format!("trace = {}\n", f.path("fifo.csv")), ""),
            Key("sensor[0].trace", &["not a regular file (a FIFO)"]),
        ),
        case(
            "trace a directory",
            |f| cfg(f, "", &format!("trace = {}\n", f.path("a-dir")), ""),
            Key("sensor[0].trace", &["not a regular file (a directory)"]),
        ),
        case(
            "trace that exists",
            |f| cfg(f, "", &format!("trace = {}\n", f.path("trace.csv")), ""),
            Runs,
        ),
        case(
            "iio device missing",
            |f| {
                cfg(
                    f,
                    "interval = \"2s\"\n",
                    &format!("kind = \"iio\"\ndevice = {}\n", f.path("iio:device9")),
                    "",
                )
            },
            Key("sensor[0].device", &["does not exist"]),
        ),
        // Item 9: db paths.
        case(
            "db /dev/null",
            |f| cfg(f, "db = \"/dev/null\"\n", "", ""),
            Key("db", &["not a regular file (a character device)"]),
        ),
        case(
            "db a directory",
            |f| cfg(f, &format!("db = {}\n", f.path("a-dir")), "", ""),
            Key("db", &["is a directory"]),
        ),
        case(
            "db with a NUL byte",
            |f| cfg(f, "db = \"e\\u0000.db\"\n", "", ""),
            Key("db", &["NUL byte"]),
        ),
        // A file that is no config: a password file given as --config.
        case(
            "the password file as --config",
            |_| SECRET.to_string(),
            NotAConfig,
        ),
        case(
            "a TLS key as --config",
            |_| format!("-----BEGIN PRIVATE KEY-----\nMIIEv{SECRET}\n-----END PRIVATE KEY-----\n"),
            NotAConfig,
        ),
        case(
            "a password file holding '='",
            |_| format!("pw={SECRET}\n"),
            NotAConfig,
        ),
    ]
}

/// Whether `out` shows a secret.
fn leaks(out: &str) -> bool {
    out.contains(SECRET) || out.contains(NUMERIC_SECRET)
}

/// The problems of one run of the binary: a panic, a leak, a wrong exit.
fn problems_of(what: &str, code: Option<i32>, out: &str, want: Want) -> Vec<String> {
    let mut p = Vec::new();
    if code == Some(EXIT_PANIC) || out.contains("panicked") {
        p.push(format!("{what}: panicked"));
    }
    if leaks(out) {
        p.push(format!("{what}: shows the secret"));
    }
    match want {
        Key(key, says) => {
            if code != Some(EXIT_CONFIG) {
                p.push(format!("{what}: exit {code:?}, want {EXIT_CONFIG}"));
            }
            if !out.contains(&format!("key `{key}`")) {
                p.push(format!("{what}: does not name key `{key}`"));
            }
            for s in says {
                let n = out.matches(s).count();
                if n != 1 {
                    p.push(format!("{what}: says {s:?} {n} times, want once"));
                }
            }
            if out.lines().filter(|l| !l.trim().is_empty()).count() != 1 {
                p.push(format!("{what}: more than one line"));
            }
        }
        NotAConfig => {
            if code != Some(EXIT_CONFIG) {
                p.push(format!("{what}: exit {code:?}, want {EXIT_CONFIG}"));
            }
            if out.contains("BEGIN") || out.contains("MIIEv") {
                p.push(format!("{what}: quotes the file"));
            }
        }
        Runs => {
            if code != Some(0) {
                p.push(format!("{what}: exit {code:?}, want 0"));
            }
        }
    }
    p
}

/// Rows in the log's `readings`, 0 while there is no log or no table yet.
fn logged_rows(db: &Path) -> i64 {
    if !db.is_file() {
        return 0;
    }
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM readings", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// `run` on `config`: a refused config must exit within
/// [`REFUSE_WITHIN`]; a valid one must log a reading, then stop on SIGTERM.
fn run_problems(f: &Fixture, config: &Path, want: Want) -> Vec<String> {
    let _ = std::fs::remove_file(&f.db);
    let err = f.dir.join("run.err");
    let mut cmd = std_cmd(&f.dir);
    cmd.arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(common::stderr_file(&err));
    let mut child = ChildGuard::spawn(cmd);
    let stderr = || std::fs::read_to_string(&err).unwrap_or_default();
    let code = if want == Runs {
        let mut logged = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if logged_rows(&f.db) > 0 {
                logged = true;
                break;
            }
            if let Ok(Some(_)) = child.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !logged {
            return vec![format!("run: logged no reading in 20 s:\n{}", stderr())];
        }
        send_signal(child.id(), "TERM");
        match child.wait_timeout(Duration::from_secs(10)) {
            Some(status) => status.code(),
            None => return vec!["run: did not stop within 10 s of SIGTERM".into()],
        }
    } else {
        let Some(status) = child.wait_timeout(REFUSE_WITHIN) else {
            // Hanging at start-up: does SIGTERM at least end it?
            send_signal(child.id(), "TERM");
            let after = child.wait_timeout(Duration::from_secs(3));
            return vec![format!(
                "run: still running after {REFUSE_WITHIN:?} ({}):\n{}",
                if after.is_some() {
                    "SIGTERM ended it"
                } else {
                    "and ignores SIGTERM"
                },
                stderr()
            )];
        };
        status.code()
    };
    let out = stderr();
    let mut p = problems_of("run", code, &out, want);
    if want == Runs {
        // Only the panic and the leak count in a log; the exit is checked.
        p.retain(|m| !m.contains("more than one line"));
    }
    p
}

/// Every corpus entry, through `check-config` and `run`: see the module
/// docs. All entries run before the test fails, so one run lists every gap.
#[test]
fn every_hostile_config_is_refused_naming_its_key_or_runs_without_leaking() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path());
    let mut failures = Vec::new();
    for case in cases() {
        let config = f.dir.join("case.toml");
        std::fs::write(&config, (case.toml)(&f)).unwrap();
        let out = edgeprio(&f.dir)
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .output()
            .unwrap();
        let mut p = problems_of(
            "check-config",
            out.status.code(),
            &text(&out.stderr),
            case.want,
        );
        if leaks(&text(&out.stdout)) {
            p.push("check-config: stdout shows the secret".into());
        }
        p.extend(run_problems(&f, &config, case.want));
        if !p.is_empty() {
            failures.push(format!("{}:\n    {}", case.name, p.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus entries misbehave:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Command-line mutations: extreme `--speed` and `--refresh`, credentials
/// in `--broker`, a device or a directory as `--db`, and `doctor` on a URL
/// with a password. Each: no panic, no secret, the exit and the text it
/// must have.
#[test]
#[expect(clippy::too_many_lines, reason = "a table, one entry per command line")]
fn hostile_command_lines_are_refused_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path());
    let good = f.dir.join("good.toml");
    std::fs::write(&good, cfg(&f, "", "", "")).unwrap();
    let creds = f.dir.join("creds.toml");
    std::fs::write(
        &creds,
        cfg(
            &f,
            "",
            "",
            &format!("[mqtt]\nurl = \"mqtt://u:{SECRET}@127.0.0.1:1\"\n"),
        ),
    )
    .unwrap();
    let db = f.db.display().to_string();
    let a_dir = f.dir.join("a-dir").display().to_string();
    let broker = format!("mqtt://u:{SECRET}@127.0.0.1:1");
    let good_s = good.display().to_string();
    let creds_s = creds.display().to_string();
    let demo = ["demo", "--no-dashboard", "--count", "1", "--db", &db];
    let cases: Vec<(Vec<&str>, i32, &[&str])> = vec![
        (vec!["demo", "--speed", "1e308"], 2, &["--speed", "1000000"]),
        (vec!["demo", "--speed", "1e-300"], 2, &["--speed", "0.001"]),
        (vec!["demo", "--speed", "inf"], 2, &["--speed"]),
        (vec!["demo", "--speed", "NaN"], 2, &["--speed"]),
        (vec!["demo", "--speed=-1"], 2, &["--speed"]),
        ([&demo[..], &["--speed", "1000000"]].concat(), 0, &[]),
        ([&demo[..], &["--speed", "0.001"]].concat(), 0, &[]),
        (
            [&demo[..], &["--speed", "1000", "--broker", &broker]].concat(),
            EXIT_CONFIG,
            &["key `mqtt.url`", "password_file"],
        ),
        (
            vec![
                "dashboard",
                "--db",
                &db,
                "--refresh",
                "18446744073709551615s",
            ],
            2,
            &["--refresh"],
        ),
        (
            vec!["--config", &good_s, "run", "--db", "/dev/null"],
            EXIT_CONFIG,
            &["key `db`", "not a regular file"],
        ),
        (
            vec!["--config", &good_s, "run", "--db", &a_dir],
            EXIT_CONFIG,
            &["key `db`", "is a directory"],
        ),
        (
            [&demo[..4], &["--speed", "1000", "--db", "/dev/null"]].concat(),
            EXIT_CONFIG,
            &["key `db`", "not a regular file"],
        ),
        (
            vec!["query", "--db", "/dev/null"],
            1,
            &["/dev/null", "not a regular file"],
        ),
        (vec!["query", "--db", &a_dir], 1, &["is a directory"]),
        (
            vec!["--config", &creds_s, "doctor", "--reads", "1"],
            1,
            &["key `mqtt.url`"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, code, says) in &cases {
        let _ = std::fs::remove_file(&f.db);
        let out = edgeprio(&f.dir).args(args).output().unwrap();
        let all = text(&out.stdout) + &text(&out.stderr);
        let mut p = Vec::new();
        if out.status.code() == Some(EXIT_PANIC) || all.contains("panicked") {
            p.push("panicked".to_string());
        }
        if leaks(&all) {
            p.push("shows the secret".into());
        }
        if out.status.code() != Some(*code) {
            p.push(format!("exit {:?}, want {code}", out.status.code()));
        }
        for s in *says {
            if !all.contains(s) {
                p.push(format!("does not say {s:?}"));
            }
        }
        if !p.is_empty() {
            failures.push(format!("{args:?}: {}\n    {}", p.join("; "), all.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} command lines misbehave:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An agent config for the broker tests: one sim sensor `sensor`, node `n`,
/// `[mqtt]` on `broker` with `lines`.
fn broker_config(dir: &Path, broker: &Broker, lines: &str) -> (PathBuf, PathBuf) {
    let db = dir.join("b.db");
    let _ = std::fs::remove_file(&db);
    let config = dir.join("b.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"n\"\ninterval = \"100ms\"\ndb = {:?}\n[[sensor]]\nid = \"sensor\"\nkind = \"sim\"\n\
             [mqtt]\nurl = {:?}\nbatch_interval = \"100ms\"\n{lines}",
            db.display().to_string(),
            broker.url()
        ),
    )
    .unwrap();
    (config, db)
}

/// Runs the agent on `config` until `sub` has seen a message on `topic`
/// (the sensor's retained state), then stops it; returns its stderr.
fn publishes_on(dir: &Path, config: &Path, sub: &Sub, topic: &str) -> String {
    let check = edgeprio(dir)
        .arg("--config")
        .arg(config)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    let err = dir.join("agent.err");
    let mut cmd = std_cmd(dir);
    cmd.arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(common::stderr_file(&err));
    let mut agent = ChildGuard::spawn(cmd);
    sub.wait(
        Duration::from_secs(20),
        "the agent's state message",
        |msgs| msgs.iter().any(|m| m.topic == topic),
    );
    send_signal(agent.id(), "TERM");
    let status = agent
        .wait_timeout(Duration::from_secs(10))
        .expect("the agent stops on SIGTERM");
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stderr}");
    common::assert_no_panic(&stderr);
    stderr
}

/// check-config on `[mqtt]` `lines` for `broker` exits 78 naming `key`.
fn refused(dir: &Path, broker: &Broker, lines: &str, key: &str) {
    let (config, _) = broker_config(dir, broker, lines);
    let out = edgeprio(dir)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{stderr}");
    assert!(stderr.contains(&format!("key `{key}`")), "{stderr}");
}

/// The longest client id the config accepts (65,535 bytes, MQTT's string
/// limit) connects to Mosquitto and publishes; one byte more is refused.
#[test]
fn the_longest_accepted_client_id_connects_and_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let id = "c".repeat(65_535);
    let (config, _) = broker_config(dir.path(), &broker, &format!("client_id = \"{id}\"\n"));
    let stderr = publishes_on(dir.path(), &config, &sub, "edgeprio/n/sensor/state");
    assert!(stderr.contains("MQTT connected"), "{stderr}");
    refused(
        dir.path(),
        &broker,
        &format!("client_id = \"{id}c\"\n"),
        "mqtt.client_id",
    );
}

/// The longest topic prefix the config accepts makes the state topic
/// exactly 65,535 bytes; the agent publishes on it and a subscriber gets
/// it. One byte more is refused. The deepest accepted prefix (197 levels:
/// state topics of 200) is delivered too, while Mosquitto drops a topic of
/// 202 levels, so the depth limit is needed.
#[test]
fn the_longest_and_deepest_accepted_topic_prefixes_publish() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let sub = Sub::start(&broker, &["#"], None);
    // The state topic is the longest of the node's: `/n/realtime` is
    // shorter.
    let tail = "/n/sensor/state";
    let prefix = "p".repeat(65_535 - tail.len());
    let (config, _) = broker_config(
        dir.path(),
        &broker,
        &format!("topic_prefix = \"{prefix}\"\n"),
    );
    let topic = format!("{prefix}{tail}");
    assert_eq!(topic.len(), 65_535);
    publishes_on(dir.path(), &config, &sub, &topic);
    refused(
        dir.path(),
        &broker,
        &format!("topic_prefix = \"{prefix}p\"\n"),
        "mqtt.topic_prefix",
    );

    let deep = vec!["l"; 197].join("/");
    let (config, _) = broker_config(dir.path(), &broker, &format!("topic_prefix = \"{deep}\"\n"));
    let topic = format!("{deep}{tail}");
    assert_eq!(topic.split('/').count(), 200);
    publishes_on(dir.path(), &config, &sub, &topic);
    refused(
        dir.path(),
        &broker,
        &format!("topic_prefix = \"{deep}/l\"\n"),
        "mqtt.topic_prefix",
    );

    // What the limit guards against: Mosquitto hangs up on a client that
    // publishes a deeper topic, and delivers nothing.
    let too_deep = vec!["d"; 202].join("/");
    let port = broker.url().rsplit(':').next().unwrap().to_string();
    let out = std::process::Command::new(mosquitto::tool("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            &too_deep,
            "-m",
            "x",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out.stderr).contains("connection was lost"),
        "Mosquitto took a 202-level topic: {}",
        text(&out.stderr)
    );
    broker.publish("marker/deep", "after", false);
    sub.wait(Duration::from_secs(10), "the marker", |msgs| {
        msgs.iter().any(|m| m.topic == "marker/deep")
    });
    assert!(
        !sub.messages().iter().any(|m| m.topic == too_deep),
        "Mosquitto delivered a 202-level topic: the depth limit could be raised"
    );
}

/// Why a `$` prefix is refused, on a real Mosquitto: what a client
/// publishes under `$SYS` is dropped, and under any other `$` prefix it is
/// invisible to `#` (MQTT 3.1.1, 4.7.2), the subscription a consumer or a
/// gateway starts with.
#[test]
fn dollar_topics_are_dropped_or_unseen_so_a_dollar_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let sub = Sub::start(&broker, &["#", "$SYS/n/#", "$x/#"], None);
    broker.publish("$SYS/n/realtime", "sys", false);
    broker.publish("$x/n/realtime", "dollar", false);
    broker.publish("marker/dollar", "after", false);
    sub.wait(Duration::from_secs(10), "the marker", |msgs| {
        msgs.iter().any(|m| m.topic == "marker/dollar")
    });
    // `$x/#` got its message (so it was published) ...
    wait_for(Duration::from_secs(5), "the $x message", || {
        sub.messages().iter().any(|m| m.topic == "$x/n/realtime")
    });
    let msgs = sub.messages();
    assert_eq!(
        msgs.iter().filter(|m| m.topic == "$x/n/realtime").count(),
        1,
        "`#` must not match a `$` topic: only `$x/#` gets it: {msgs:?}"
    );
    // ... while the `$SYS` one went nowhere.
    assert!(
        !msgs.iter().any(|m| m.topic == "$SYS/n/realtime"),
        "{msgs:?}"
    );
    for prefix in ["$SYS", "$x"] {
        refused(
            dir.path(),
            &broker,
            &format!("topic_prefix = \"{prefix}\"\n"),
            "mqtt.topic_prefix",
        );
    }
}

/// A trace replaced by a FIFO under a running agent, then SIGHUP: the
/// reload refuses the file by key and path and the agent goes on with the
/// configuration it has; SIGTERM then stops it at once. (Before: the reload
/// opened the FIFO, blocked with no writer, and the agent ignored SIGTERM.)
#[test]
fn a_trace_turned_fifo_is_refused_at_reload_and_sigterm_still_stops_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path());
    let trace = f.dir.join("trace.csv");
    let config = f.dir.join("reload.toml");
    std::fs::write(
        &config,
        cfg(&f, "", &format!("trace = {}\n", f.path("trace.csv")), ""),
    )
    .unwrap();
    let err = f.dir.join("reload.err");
    let mut cmd = std_cmd(&f.dir);
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(common::stderr_file(&err));
    let mut agent = ChildGuard::spawn(cmd);
    let stderr = || std::fs::read_to_string(&err).unwrap_or_default();
    wait_for(Duration::from_secs(20), "the first readings", || {
        logged_rows(&f.db) > 0
    });
    std::fs::remove_file(&trace).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &trace,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    send_signal(agent.id(), "HUP");
    wait_for(Duration::from_secs(10), "the reload to be refused", || {
        stderr().contains("keeping the configuration in use")
    });
    let log = stderr();
    assert!(
        log.contains("key `sensor[0].trace`") && log.contains("not a regular file (a FIFO)"),
        "{log}"
    );
    // Still logging with the old configuration.
    let before = logged_rows(&f.db);
    wait_for(Duration::from_secs(10), "more readings", || {
        logged_rows(&f.db) > before
    });
    send_signal(agent.id(), "TERM");
    let status = agent.wait_timeout(Duration::from_secs(10));
    let log = stderr();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "no clean exit within 10 s of SIGTERM:\n{log}"
    );
    common::assert_no_panic(&log);
}

/// A password from the environment without a user name: refused by
/// `check-config` and `run` naming `mqtt.username` and the variable (it
/// used to pass, then `run` retried "until the broker is back" forever,
/// a broker that would never get a password without a user name).
#[test]
fn a_password_from_the_environment_without_a_username_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path());
    let config = f.dir.join("env.toml");
    std::fs::write(&config, cfg(&f, "", "", &mqtt(&f, ""))).unwrap();
    let mut failures = Vec::new();
    for command in ["check-config", "run"] {
        let out = edgeprio(&f.dir)
            .env("EDGEPRIO_MQTT_PASSWORD", SECRET)
            .arg("--config")
            .arg(&config)
            .arg(command)
            .timeout(REFUSE_WITHIN)
            .output()
            .unwrap();
        failures.extend(problems_of(
            command,
            out.status.code(),
            &format!("{}{}", text(&out.stderr), text(&out.stdout)),
            Key(
                "mqtt.username",
                &["EDGEPRIO_MQTT_PASSWORD gives a password"],
            ),
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
