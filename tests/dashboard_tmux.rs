//! The dashboard end to end, in a real terminal: tmux runs `edgeprio demo`
//! in a pane of a fixed size, the test reads the screen with
//! `capture-pane`, checks that readings, weights and both routes appear and
//! change, drives the keys (`p`, `4`, `j`, `g`, `?`), presses `q`, and
//! checks that the process exited 0 and gave the terminal back as it found
//! it: the normal screen with its earlier text, the cursor shown, the tty
//! out of raw mode. SIGTERM must give it back the same way, and a terminal
//! that goes away must stop the demo cleanly.
//!
//! Each test has its own tmux server (a socket in its tempdir), killed by a
//! guard even when the test panics. The demo is not typed into an
//! interactive shell but run by a small `sh` script, because an interactive
//! shell repairs the tty after every command and would hide a dashboard that
//! forgot to leave raw mode. The script records `stty` before and after the
//! demo and the demo's exit status in files, then keeps the pane open so its
//! screen can still be read (tmux's `remain-on-exit` would too, but tmux may
//! mark a pane dead before it has read the last output or the status).
//!
//! One more case runs `edgeprio dashboard` itself on a gateway's log of
//! three nodes, written with the store API by the test, and drives the node
//! picker (`n`): the screen shows one node's panels, then the next's.
//!
//! tmux is required: without it these tests fail, they never skip
//! (scripts/test installs it). scripts/cross-test does not run this file.

mod common;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use edgeprio::dashboard::keys::{HELP, NODE_HELP};
use edgeprio::domain::{PerChannel, Reading, Route, Sample};
use edgeprio::store::{Access, AgentStatus, Store};
use tempfile::TempDir;

/// Upper bound for any one thing the test waits for on screen.
const LIMIT: Duration = Duration::from_secs(30);
/// Upper bound for seeing a real-time reading on screen. The seeded demo
/// sensors first route one to real-time in their 8th and 10th cycles (12
/// and 15 s in at `SPEED`), the next ones from the 33rd (50 s in); this
/// covers both.
const ROUTES_LIMIT: Duration = Duration::from_mins(1);
/// How often the screen is read while waiting.
const POLL: Duration = Duration::from_millis(200);
/// The demo's speed-up: its 15 s interval becomes 1.5 s. Slower than the
/// dashboard's reload (once a second), so every cycle's readings are on
/// screen at least once: a reading that takes the real-time route is seen
/// even where the table has room for one cycle only (80x24).
const SPEED: &str = "10";
/// The tmux session (and so window and pane) the demo runs in.
const SESSION: &str = "demo";
/// Printed by the script just before the demo starts: it must be on screen
/// again once the dashboard has left the alternate screen.
const BEFORE: &str = "edgeprio-tmux-test: starting the demo";
/// Printed by the script after the demo exited, followed by its status.
const AFTER: &str = "edgeprio-tmux-test: the demo exited with status";
/// Variables of the test's environment kept from the tmux server and so
/// from the pane, besides every `EDGEPRIO_*`: the pane is not nested in any
/// tmux the tests may run in, and the dashboard draws in color as it does
/// for a user.
const UNSET: [&str; 5] = [
    "TMUX",
    "TMUX_PANE",
    "NO_COLOR",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
];

#[test]
fn dashboard_at_120x40_shows_live_readings_and_restores_the_terminal() {
    dashboard_session(120, 40);
}

#[test]
fn dashboard_at_80x24_shows_live_readings_and_restores_the_terminal() {
    dashboard_session(80, 24);
}

/// SIGTERM (a shutdown, `kill`) restores the terminal as `q` does.
#[test]
fn sigterm_restores_the_terminal() {
    let mut pane = Pane::start(100, 30);
    live_readings(&mut pane);
    quit_restores_the_terminal(&mut pane, Stop::Term);
}

/// The whole session at one terminal size: see the module docs.
/// The terminal goes away under the dashboard (an SSH session drops; here
/// the tmux server is killed, which hangs up the pane's tty): the demo
/// stops within seconds, its agent shut down cleanly (`stopped` in the
/// log), instead of spinning on a dead terminal.
#[test]
fn a_dropped_terminal_stops_the_demo_cleanly() {
    let mut pane = Pane::start(100, 30);
    live_readings(&mut pane);
    let pid = pane.demo_pid().expect("the demo's pid");
    let _ = pane.command().arg("kill-server").output();
    let deadline = Instant::now() + Duration::from_secs(15);
    while running(pid) {
        assert!(
            Instant::now() < deadline,
            "the demo still runs 15 s after its terminal went away"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let db = pane.path("demo.db");
    let states: Vec<String> = common::agent_status(&db)
        .into_iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(states, ["stopped"], "the agent recorded a clean stop");
}

/// The gateway of [`gateway_log`] and the raw nodes behind it.
const GATEWAY: &str = "gw-test";
const RAW_NODES: [&str; 3] = ["esp-a", "esp-b", "esp-c"];
const RAW_SENSORS: [&str; 2] = ["lab", "yard"];

/// A gateway's log at `path`, as `edgeprio gateway` writes it: ten
/// cycles of [`RAW_NODES`] x [`RAW_SENSORS`] up to now, and the gateway's
/// own status row, running (a long interval: nobody beats while the test
/// runs, and it must not turn stale).
fn gateway_log(path: &Path) {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits");
    let mut store = Store::open(path, Access::Writer).expect("create the log");
    let mut readings = Vec::new();
    for cycle in 0..10_u32 {
        for (n, node) in RAW_NODES.into_iter().enumerate() {
            for (s, sensor) in RAW_SENSORS.into_iter().enumerate() {
                readings.push(Reading {
                    node: node.to_owned(),
                    sensor: sensor.to_owned(),
                    seq: u64::from(cycle),
                    ts_ms: now - i64::from(9 - cycle) * 15_000,
                    sample: Sample::new(20.0 + f64::from(cycle) / 10.0 + n as f64, 50.0 + s as f64),
                    weights: PerChannel {
                        temperature: 0,
                        humidity: 0,
                    },
                    priority: 0,
                    route: Route::Batch,
                    clock_synced: None,
                });
            }
        }
    }
    store.insert_readings(&readings).expect("the readings");
    let status = AgentStatus {
        node: GATEWAY.to_owned(),
        running: true,
        pid: std::process::id(),
        version: "test".to_owned(),
        started_ms: now - 600_000,
        heartbeat_ms: now,
        interval_ms: 3_600_000,
        burst: Vec::new(),
    };
    store
        .commit_cycle(&[], &[], &status)
        .expect("the status row");
}

/// `edgeprio dashboard` on a gateway's log: a panel per (node, sensor),
/// named `node/sensor`; `n` shows the first node's panels only, `n` again
/// the next node's; `?` lists the picker's keys; `q` quits with 0.
#[test]
fn the_node_picker_shows_one_nodes_panels() {
    let log = tempfile::tempdir().expect("a tempdir");
    let db = log.path().join("gateway.db");
    gateway_log(&db);
    let db = db.to_string_lossy().into_owned();
    let mut pane = Pane::start_with(120, 40, &["dashboard", "--db", &db]);
    let all: Vec<String> = RAW_NODES
        .iter()
        .flat_map(|n| RAW_SENSORS.map(|s| format!("{n}/{s}")))
        .collect();
    pane.wait("a panel per (node, sensor), all nodes", LIMIT, |s| {
        let owner = s
            .lines
            .first()?
            .starts_with(&format!("edgeprio {GATEWAY}  agent running"));
        let picker = s.lines.get(2)?.starts_with("nodes all 3");
        (owner && picker && s.panel_titles() == all).then_some(())
    });
    for (k, node) in RAW_NODES.into_iter().take(2).enumerate() {
        pane.send("n");
        // tmux can capture a frame half drawn (the header already says the
        // new node, lower rows still hold the last frame), so the whole
        // screen is waited for: the picker line, the panels, and no other
        // node anywhere. A dashboard that leaves another node on screen
        // times out here with the last screen printed.
        pane.wait(
            &format!("{node}'s panels only, no other node on screen"),
            LIMIT,
            |s| {
                let line = format!("node {node} {}/3  last reading", k + 1);
                let titles = RAW_SENSORS.map(|sensor| format!("{node}/{sensor}"));
                let others = RAW_NODES.into_iter().any(|o| o != node && s.contains(o));
                (s.lines.get(2)?.starts_with(&line) && s.panel_titles() == titles && !others)
                    .then_some(())
            },
        );
    }
    pane.send("?");
    pane.wait("the picker's keys in the help", LIMIT, |s| {
        (s.contains("┌ keys ") && s.contains(NODE_HELP.0) && s.contains(NODE_HELP.1)).then_some(())
    });
    let status = pane.quit(Stop::Key);
    assert_eq!(
        status,
        "0",
        "the dashboard exited with {status}:\n{}",
        pane.capture()
    );
}

/// A collector's database at `path`, as `edgeprio collect` writes it:
/// node `pi` stored seqs 0-2 and 10 of its sensor, so 3-9 are missing, and
/// its collectors of both routes have scanned, the later scan past the
/// grace period (so the hole was asked for).
fn collector_db(path: &Path) {
    use edgeprio::collect::gaps::RepairPolicy;
    use edgeprio::collect::{Member, Sink, SqliteSink};
    use edgeprio::domain::{LogId, Received};
    let now = common::now_ms();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let mut sink = SqliteSink::open(path).await.expect("a collector database");
        let readings: Vec<Received> = [0_u64, 1, 2, 10]
            .iter()
            .map(|&seq| Received {
                reading: Reading {
                    node: "pi".to_owned(),
                    sensor: "lab".to_owned(),
                    seq,
                    ts_ms: now - 120_000,
                    sample: Sample::new(21.0, 50.0),
                    weights: PerChannel {
                        temperature: 0,
                        humidity: 0,
                    },
                    priority: 0,
                    route: Route::Batch,
                    clock_synced: None,
                },
                log: LogId::new(0x3f9c_2a71_d04b_e815),
                late: false,
                resent: false,
            })
            .collect();
        sink.store(&readings, now - 120_000).await.expect("stored");
        let policy = RepairPolicy::after(Duration::from_mins(1));
        for (at, route, id) in [
            (now - 120_000, Route::Realtime, "c-rt"),
            (now - 120_000, Route::Batch, "c-b"),
            (now - 30_000, Route::Batch, "c-b"),
        ] {
            let me = Member {
                client_id: id.to_owned(),
                route,
            };
            sink.repair(at, policy, &me).await.expect("a scan");
        }
    });
}

/// `edgeprio dashboard --db` on a collector's database: its repairs per
/// node (node pi: 7 missing) and its collectors; `q` quits with 0.
#[test]
fn a_collector_database_shows_its_repairs_per_node() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let db = dir.path().join("collected.db");
    collector_db(&db);
    let db = db.to_string_lossy().into_owned();
    let mut pane = Pane::start_with(80, 24, &["dashboard", "--db", &db]);
    pane.wait("node pi with 7 readings missing", LIMIT, |s| {
        let row = s.lines.iter().any(|l| {
            let cells: Vec<&str> = l.split([' ', '│']).filter(|c| !c.is_empty()).collect();
            cells.starts_with(&["pi", "1", "7", "0", "0", "0"])
        });
        (s.contains("edgeprio collector database")
            && s.contains("1 node, 7 readings missing")
            && s.contains("c-rt")
            && row)
            .then_some(())
    });
    let status = pane.quit(Stop::Key);
    assert_eq!(
        status,
        "0",
        "the dashboard exited with {status}:\n{}",
        pane.capture()
    );
}

fn dashboard_session(width: u16, height: u16) {
    let mut pane = Pane::start(width, height);
    assert_eq!(
        pane.format("#{pane_width}x#{pane_height}"),
        format!("{width}x{height}"),
        "the pane does not have the size asked for"
    );
    live_readings(&mut pane);
    pause_holds_the_screen(&mut pane);
    keys_change_the_view(&mut pane);
    pane.wait(
        "both routes and a non-zero weight among the readings shown",
        ROUTES_LIMIT,
        |s| {
            let live = s.live()?;
            let seen = s.seen.realtime && s.seen.batch && s.seen.nonzero_weight;
            (seen && live.realtime > 0 && live.total > live.realtime).then_some(())
        },
    );
    quit_restores_the_terminal(&mut pane, Stop::Key);
}

/// Readings from every sensor, on the alternate screen, and new ones
/// arriving: more of them in the window, a newer top row in the table.
fn live_readings(pane: &mut Pane) {
    let first = pane.wait(
        "the dashboard with a reading from every demo sensor",
        LIMIT,
        Screen::live,
    );
    assert_eq!(
        pane.format("#{alternate_on} #{cursor_flag}"),
        "1 0",
        "while the dashboard runs it should be on the alternate screen with the cursor hidden \
         (#{{alternate_on}} #{{cursor_flag}})"
    );
    assert!(
        first.screen.lines[1].contains("window 1h"),
        "the dashboard should start on the 1h window:\n{}",
        first.screen
    );
    assert!(
        first.screen.lines[0].contains("every 1s 500ms"),
        "the header should give the demo's cycle period at speed x{SPEED} (15 s / {SPEED}):\n{}",
        first.screen
    );
    pane.wait("newer readings than on the first screen", LIMIT, |s| {
        let now = s.live()?;
        (now.total > first.total && now.newest != first.newest).then_some(())
    });
}

/// `p`: the screen holds still while the agent keeps logging; `p` again
/// and it moves on.
fn pause_holds_the_screen(pane: &mut Pane) {
    pane.send("p");
    pane.wait("PAUSED in the header", LIMIT, |s| {
        s.lines[1].contains("PAUSED").then_some(())
    });
    // The frame drawn right after the key may still be on its way.
    thread::sleep(Duration::from_secs(1));
    let paused = pane.capture();
    // Over two reloads and two of the demo's cycles.
    thread::sleep(Duration::from_millis(3500));
    let later = pane.capture();
    assert_eq!(
        paused.lines, later.lines,
        "the screen changed while paused:\n{paused}\n--- 3.5 s later ---\n{later}"
    );
    let paused = paused
        .live()
        .unwrap_or_else(|| panic!("the paused screen lost its readings:\n{paused}"));
    pane.send("p");
    pane.wait("readings moving again after resuming", LIMIT, |s| {
        let now = s.live()?;
        let resumed = !s.lines[1].contains("PAUSED");
        (resumed && now.total > paused.total && now.newest != paused.newest).then_some(())
    });
}

/// `4` shows the 24h window; `j` scrolls the table down a row and `g` back
/// to the newest; `?` shows the help overlay and hides it again.
fn keys_change_the_view(pane: &mut Pane) {
    pane.send("4");
    pane.wait(
        "the 24h window in the header and the routing pane",
        LIMIT,
        |s| (s.lines[1].contains("window 24h") && s.contains("real-time/all 24h")).then_some(()),
    );
    pane.send("j");
    pane.wait("the table scrolled down a row", LIMIT, |s| {
        s.contains("┌ recent readings 2-").then_some(())
    });
    pane.send("g");
    pane.wait("the table back at the newest row", LIMIT, |s| {
        s.contains("┌ recent readings 1-").then_some(())
    });
    pane.send("?");
    pane.wait("the help overlay with every key", LIMIT, |s| {
        let every = HELP
            .iter()
            .all(|(keys, what)| s.contains(keys) && s.contains(what));
        (s.contains("┌ keys ") && every).then_some(())
    });
    pane.send("?");
    pane.wait("the help overlay gone again", LIMIT, |s| {
        (!s.contains("┌ keys ") && s.live().is_some()).then_some(())
    });
}

/// How the test ends the demo.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The `q` key.
    Key,
    /// SIGTERM (`kill`, a shutdown).
    Term,
}

/// `q` or SIGTERM: the demo exits 0, the tty settings are as they were, the
/// normal screen is back with what was on it before, and the cursor is
/// shown.
fn quit_restores_the_terminal(pane: &mut Pane, by: Stop) {
    let status = pane.quit(by);
    assert_eq!(
        status,
        "0",
        "the demo exited with status {status}; screen:\n{}",
        pane.capture()
    );
    // Before the screen: a tty left raw garbles the script's later lines.
    let modes = pane.read("stty-a-after");
    let words: Vec<&str> = modes
        .split(|c: char| c.is_whitespace() || c == ';')
        .collect();
    for mode in ["icanon", "echo", "isig", "icrnl", "opost"] {
        assert!(
            words.contains(&mode),
            "the tty is still in raw mode after the demo ({mode} is off):\n{modes}"
        );
    }
    assert_eq!(
        pane.read("stty-before"),
        pane.read("stty-after"),
        "the tty settings (stty -g) differ after the demo; stty -a now:\n{modes}"
    );
    // The script's line comes after everything the demo wrote.
    let after = pane.wait("the script's line after the demo", LIMIT, |s| {
        s.contains(AFTER).then(|| s.clone())
    });
    assert_eq!(
        pane.format("#{alternate_on} #{cursor_flag}"),
        "0 1",
        "after quitting the terminal should be back on the normal screen with the cursor shown \
         (#{{alternate_on}} #{{cursor_flag}}); screen:\n{after}"
    );
    for expected in [BEFORE, "edgeprio demo: node \"demo\"", "demo stopped after"] {
        assert!(
            after.contains(expected),
            "{expected:?} is not on the normal screen after quitting:\n{after}"
        );
    }
    for gone in ["recent readings", "real-time/all", "panicked"] {
        assert!(
            !after.contains(gone),
            "{gone:?} is still on screen after quitting:\n{after}"
        );
    }
}

/// Which routes and weights the test has seen on any screen so far.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    realtime: bool,
    batch: bool,
    nonzero_weight: bool,
}

impl Seen {
    /// What `screen` shows in its sensor panels and readings table.
    fn on(screen: &Screen) -> Seen {
        let mut seen = Seen::default();
        for p in screen.panels().unwrap_or_default() {
            seen.add(&p.route, p.weights);
        }
        for r in screen.table_rows() {
            seen.add(&r.route, r.weights);
        }
        seen
    }

    fn merge(self, other: Seen) -> Seen {
        Seen {
            realtime: self.realtime || other.realtime,
            batch: self.batch || other.batch,
            nonzero_weight: self.nonzero_weight || other.nonzero_weight,
        }
    }

    fn add(&mut self, route: &str, weights: (u32, u32)) {
        match route {
            "realtime" => self.realtime = true,
            "batch" => self.batch = true,
            _ => {}
        }
        self.nonzero_weight |= weights != (0, 0);
    }
}

/// A tmux server of its own, one session running the demo script in a pane
/// of a fixed size. Dropping it kills the server and the demo.
struct Pane {
    /// The tempdir: socket, tmux config, script, the demo's log, and the
    /// files the script leaves (status, stty, the demo's pid).
    dir: TempDir,
    /// Every route and weight seen on screen by any capture, so a reading
    /// that was on screen for a second between two checks still counts.
    seen: Seen,
    /// Whether `q` was pressed: before that the demo must not exit.
    quitting: bool,
}

impl Pane {
    /// Starts the server and the session; the script starts the demo.
    fn start(width: u16, height: u16) -> Pane {
        let dir = tempfile::Builder::new()
            .prefix("edgeprio-tmux")
            .tempdir()
            .expect("create a tempdir");
        let db = dir.path().join("demo.db").to_string_lossy().into_owned();
        Pane::start_in(dir, width, height, &["demo", "--db", &db, "--speed", SPEED])
    }

    /// Starts the server and the session; the script runs edgeprio with
    /// `args`.
    fn start_with(width: u16, height: u16, args: &[&str]) -> Pane {
        let dir = tempfile::Builder::new()
            .prefix("edgeprio-tmux")
            .tempdir()
            .expect("create a tempdir");
        Pane::start_in(dir, width, height, args)
    }

    /// Starts the server and the session in `dir`; the script runs
    /// edgeprio with `args`.
    fn start_in(dir: TempDir, width: u16, height: u16, args: &[&str]) -> Pane {
        match Command::new("tmux").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "tmux -V failed ({}): {}; scripts/test installs tmux",
                out.status,
                common::text(&out.stderr)
            ),
            Err(e) => panic!("tmux is missing; scripts/test installs it ({e})"),
        }
        // No status line: the pane gets the whole window. xterm-256color:
        // the TERM of a typical terminal (or SSH session) on a desktop.
        fs::write(
            dir.path().join("tmux.conf"),
            "set-option -g status off\n\
             set-option -g default-terminal xterm-256color\n",
        )
        .expect("write tmux.conf");
        fs::write(dir.path().join("run.sh"), script(dir.path(), args)).expect("write run.sh");
        let pane = Pane {
            dir,
            seen: Seen::default(),
            quitting: false,
        };
        let mut start = pane.command();
        start
            .arg("-f")
            .arg(pane.path("tmux.conf"))
            .args(["new-session", "-d", "-s", SESSION])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg("-c")
            .arg(pane.dir.path())
            .arg("sh")
            .arg(pane.path("run.sh"));
        run(start);
        pane
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `tmux -S <socket> ...` in an environment cleaned like
    /// `common::std_cmd`'s: the server, and so the pane, inherits it.
    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(self.path("tmux.sock"));
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("EDGEPRIO_") || UNSET.contains(&k.as_ref()) {
                cmd.env_remove(&key);
            }
        }
        cmd
    }

    /// Runs a tmux command against this server; panics if it fails.
    fn tmux(&self, args: &[&str]) -> String {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd)
    }

    /// A tmux format expanded for the demo's pane, e.g. `#{alternate_on}`.
    fn format(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", SESSION, format])
            .trim_end()
            .to_owned()
    }

    /// Types `keys` into the pane, literally.
    fn send(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", SESSION, "-l", keys]);
    }

    /// The pane's visible screen; what it shows is added to `seen`.
    fn capture(&mut self) -> Screen {
        let text = self.tmux(&["capture-pane", "-p", "-t", SESSION]);
        let mut screen = Screen {
            lines: text.lines().map(str::to_owned).collect(),
            seen: Seen::default(),
        };
        self.seen = self.seen.merge(Seen::on(&screen));
        screen.seen = self.seen;
        screen
    }

    /// Reads the screen every `POLL` until `check` returns a value, for at
    /// most `limit`; panics with the last screen on timeout, or at once if
    /// the demo exited before `q`.
    fn wait<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Screen) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.capture();
            if let Some(found) = check(&screen) {
                return found;
            }
            assert!(
                self.quitting || !self.path("rc").exists(),
                "the demo exited (status {}) while the test waited for {what}; the screen:\n{screen}",
                self.read("rc").trim()
            );
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; seen so far: {:?}; \
                 the last screen:\n{screen}",
                self.seen
            );
            thread::sleep(POLL);
        }
    }

    /// Presses `q` and returns the demo's exit status, once the script
    /// has written it.
    fn quit(&mut self, by: Stop) -> String {
        self.quitting = true;
        match by {
            Stop::Key => self.send("q"),
            Stop::Term => common::send_signal(self.demo_pid().expect("the demo's pid"), "TERM"),
        }
        let rc = self.path("rc");
        let deadline = Instant::now() + LIMIT;
        while !rc.exists() {
            if Instant::now() >= deadline {
                let screen = self.capture();
                panic!("the demo did not exit within {LIMIT:?} of {by:?}; the screen:\n{screen}");
            }
            thread::sleep(POLL);
        }
        self.read("rc").trim().to_owned()
    }

    /// A file the script wrote.
    fn read(&self, name: &str) -> String {
        let path = self.path(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The demo's pid, once it started.
    fn demo_pid(&self) -> Option<u32> {
        fs::read_to_string(self.path("demo.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        // Closing the pane's tty hangs up on the script and the demo; the
        // demo takes SIGHUP as a request to stop. One that has not stopped
        // within 10 s is killed (crossterm's event::poll spins on a tty
        // that is gone, crossterm-rs/crossterm#793, so it may never look).
        let _ = self.command().arg("kill-server").output();
        let Some(pid) = self.demo_pid() else { return };
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(pid) {
            if Instant::now() >= deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a tmux command; panics if it fails, else returns its stdout.
fn run(mut tmux: Command) -> String {
    let out = tmux.output().expect("run tmux (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{tmux:?} failed ({}): {}",
        out.status,
        common::text(&out.stderr)
    );
    common::text(&out.stdout)
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// `s` as one word for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script the pane runs: records the tty settings, runs edgeprio with
/// `args` (the demo, mostly; the inner `sh` writes its pid, then becomes
/// edgeprio), records the status and the tty settings again, and keeps the
/// pane open.
fn script(dir: &Path, args: &[&str]) -> String {
    let file = |name: &str| sh_quote(&dir.join(name).to_string_lossy());
    let demo: Vec<String> = common::bin_argv()
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .map(sh_quote)
        .collect();
    format!(
        "stty -g > {stty_before}\n\
         printf '%s\\n' {before}\n\
         sh -c 'echo $$ > \"$0\" && exec \"$@\"' {pid} {demo}\n\
         rc=$?\n\
         stty -g > {stty_after}\n\
         stty -a > {stty_a_after}\n\
         printf '%s %s\\n' {after} \"$rc\"\n\
         printf '%s\\n' \"$rc\" > {rc_part} && mv {rc_part} {rc}\n\
         exec sleep 600\n",
        stty_before = file("stty-before"),
        before = sh_quote(BEFORE),
        pid = file("demo.pid"),
        demo = demo.join(" "),
        stty_after = file("stty-after"),
        stty_a_after = file("stty-a-after"),
        after = sh_quote(AFTER),
        rc_part = file("rc.part"),
        rc = file("rc"),
    )
}

/// One `capture-pane` of the pane.
#[derive(Debug, Clone)]
struct Screen {
    /// Its lines, as text (no colors).
    lines: Vec<String>,
    /// Every route and weight seen on this screen and the earlier ones.
    seen: Seen,
}

impl fmt::Display for Screen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines.join("\n"))
    }
}

/// One sensor panel: `┌ name ─┐`, `21.3°C 45.0% 0s`, `w 1/2 p2 realtime`.
#[derive(Debug)]
struct Panel {
    sensor: String,
    weights: (u32, u32),
    route: String,
}

/// One row of the recent readings table:
/// `03:21:30 attic 24.6 37.0 1/2 2 realtime no`.
#[derive(Debug, PartialEq)]
struct TableRow {
    /// The row's words, to tell one reading from another.
    text: String,
    weights: (u32, u32),
    route: String,
}

/// What a dashboard with data shows, as far as this test checks it.
#[derive(Debug)]
struct Live {
    screen: Screen,
    /// The table's top row: the newest reading.
    newest: TableRow,
    /// Readings in the window, from the routing pane's `total r/n` line.
    total: u64,
    /// Of which real-time.
    realtime: u64,
}

impl Screen {
    fn contains(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.contains(text))
    }

    /// The screen of a running demo with a reading from every sensor:
    /// header, four panels with numbers and weights, a readings table and
    /// the routing totals. `None` until all of that is there.
    fn live(&self) -> Option<Live> {
        let header = self.lines.first()?;
        if !header.starts_with("edgeprio demo  agent running") {
            return None;
        }
        if !self.lines.get(1)?.starts_with("broker connected") {
            return None;
        }
        let mut names: Vec<String> = self.panels()?.into_iter().map(|p| p.sensor).collect();
        names.sort();
        let mut expected: Vec<&str> = common::DEMO_SENSORS.to_vec();
        expected.sort_unstable();
        if names != expected {
            return None;
        }
        let newest = self.table_rows().into_iter().next()?;
        let (realtime, total) = self.routing_total()?;
        Some(Live {
            screen: self.clone(),
            newest,
            total,
            realtime,
        })
    }

    /// The sensor panels' titles (`lab`, or `node/sensor` on a gateway's
    /// log): the first box row's.
    fn panel_titles(&self) -> Vec<String> {
        let Some(top) = self.lines.iter().position(|l| l.starts_with('┌')) else {
            return Vec::new();
        };
        self.lines[top]
            .split('┌')
            .skip(1)
            .map(|t| {
                t.trim_start_matches(['▶', ' '])
                    .split([' ', '─'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// The sensor panels, if every one shows a reading: the first box row
    /// holds the titles, the next two the values and the weights.
    fn panels(&self) -> Option<Vec<Panel>> {
        let top = self.lines.iter().position(|l| l.starts_with('┌'))?;
        let titles = self.panel_titles();
        let cells = |line: &str| -> Vec<String> {
            line.split('│')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let values = cells(self.lines.get(top + 1)?);
        let weights = cells(self.lines.get(top + 2)?);
        if titles.is_empty() || values.len() != titles.len() || weights.len() != titles.len() {
            return None;
        }
        titles
            .iter()
            .zip(values.iter().zip(&weights))
            .map(|(name, (value, weight))| {
                // `24.6°C 37.0% 0s`, or `0s?` for a reading taken while the
                // kernel said the clock was not synchronized (as on a
                // machine without NTP, like the build machines).
                let mut v = value.split_whitespace();
                temperature(v.next()?.strip_suffix("°C")?)?;
                humidity(v.next()?.strip_suffix('%')?)?;
                let age = v.next()?;
                age.strip_suffix('?').unwrap_or(age).strip_suffix('s')?;
                // `w 1/2 p2 realtime`
                let mut w = weight.split_whitespace();
                (w.next()? == "w").then_some(())?;
                let weights = weight_pair(w.next()?)?;
                w.next()?.strip_prefix('p')?.parse::<u32>().ok()?;
                let route = route(w.next()?)?;
                Some(Panel {
                    sensor: name.clone(),
                    weights,
                    route,
                })
            })
            .collect()
    }

    /// The rows of the recent readings table, newest first; stops at the
    /// first row that is not a complete reading.
    fn table_rows(&self) -> Vec<TableRow> {
        let Some(title) = self
            .lines
            .iter()
            .position(|l| l.contains("┌ recent readings "))
        else {
            return Vec::new();
        };
        self.lines
            .iter()
            .skip(title + 2)
            // The table is the first box on its lines (the errors pane
            // follows it); its right border may be the scrollbar's thumb.
            .map_while(|l| table_row(l.split(['│', '┃']).nth(1)?))
            .collect()
    }

    /// `(realtime, all)` of the routing pane's `total` line.
    fn routing_total(&self) -> Option<(u64, u64)> {
        self.lines.iter().find_map(|l| {
            l.split('│').find_map(|cell| {
                let mut words = cell.split_whitespace();
                (words.next()? == "total").then_some(())?;
                let (r, n) = words.next()?.split_once('/')?;
                Some((r.parse().ok()?, n.parse().ok()?))
            })
        })
    }
}

fn table_row(cell: &str) -> Option<TableRow> {
    let words: Vec<&str> = cell.split_whitespace().collect();
    let [time, sensor, temp, hum, weights, priority, label, sent] = words[..] else {
        return None;
    };
    let clock = time.len() == 8
        && time.char_indices().all(|(i, c)| {
            if i == 2 || i == 5 {
                c == ':'
            } else {
                c.is_ascii_digit()
            }
        });
    if !clock || !common::DEMO_SENSORS.contains(&sensor) || !["yes", "no"].contains(&sent) {
        return None;
    }
    temperature(temp)?;
    humidity(hum)?;
    priority.parse::<u32>().ok()?;
    Some(TableRow {
        text: words.join(" "),
        weights: weight_pair(weights)?,
        route: route(label)?,
    })
}

/// A temperature in a DHT22's range.
fn temperature(s: &str) -> Option<f64> {
    s.parse().ok().filter(|t| (-40.0..=80.0).contains(t))
}

/// A relative humidity.
fn humidity(s: &str) -> Option<f64> {
    s.parse().ok().filter(|h| (0.0..=100.0).contains(h))
}

/// `1/2`: the temperature and humidity weights.
fn weight_pair(s: &str) -> Option<(u32, u32)> {
    let (t, h) = s.split_once('/')?;
    Some((t.parse().ok()?, h.parse().ok()?))
}

/// One of the two routes, as the dashboard labels them.
fn route(s: &str) -> Option<String> {
    ["realtime", "batch"].contains(&s).then(|| s.to_owned())
}
