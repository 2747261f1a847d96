//! A real `PostgreSQL` for the tests (and `benches/postgres_sink.rs`): a
//! cluster made by `initdb` in a temporary directory, its server started on
//! a free port on 127.0.0.1 with its socket in that directory, stopped
//! (`pg_ctl stop -m immediate`) and removed on drop, even when the test
//! fails.
//!
//! The server runs as an unprivileged user: `PostgreSQL` refuses to run as
//! root, and tests run as root in CI, so as root every server command runs
//! under `runuser -u postgres` (the Debian package's user) in a directory
//! owned by it. Missing binaries fail the test with what to install: these
//! tests are never skipped silently.
//!
//! Self-contained (no `crate::common`), so that a bench can include it with
//! `#[path]`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What missing server binaries tell the person running the tests.
pub const INSTALL_HINT: &str = "scripts/test installs them (apt-get install postgresql)";

/// The role the tests connect as (the cluster's superuser).
pub const USER: &str = "edgeprio";

/// Its password: the cluster asks for it (scram-sha-256), so the URLs the
/// tests use carry one, as a real deployment's do.
pub const PASSWORD: &str = "pg-test-Secret-4711";

/// The database the sinks store into.
pub const DB: &str = "edgeprio";

/// The settings [`Postgres::start`] gives a test server: durability off,
/// since a test's cluster dies with it anyway.
pub const FAST: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
];

/// A `PostgreSQL` server of its own, stopped and removed on drop.
pub struct Postgres {
    /// Holds the cluster, its socket, its log and the password file;
    /// removed on drop.
    dir: tempfile::TempDir,
    /// The server binaries (`initdb`, `pg_ctl`, `createdb`).
    bin: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    /// A server with [`FAST`] settings.
    pub fn start() -> Postgres {
        Postgres::start_with(FAST)
    }

    /// A server with `settings` (`name=value`, as `postgres -c` takes
    /// them); `&[]` keeps `PostgreSQL`'s defaults (what a bench measures).
    pub fn start_with(settings: &[&str]) -> Postgres {
        let bin = bindir();
        let dir = tempfile::Builder::new()
            .prefix("edgeprio-pg")
            .tempdir()
            .expect("create the cluster's temporary directory");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write the password file");
        if running_as_root() {
            // PostgreSQL refuses root: the server's files belong to `postgres`.
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown -R postgres: {} failed ({status}): the Debian `postgres` user comes with \
                 the postgresql package; {INSTALL_HINT}",
                dir.path().display()
            );
        }
        let data = dir.path().join("data");
        let out = server_cmd(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        check("initdb", &out);
        let port = free_port();
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.path().display()
        );
        for s in settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        let log = dir.path().join("server.log");
        let out = server_cmd(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl start");
        let server = Postgres { dir, bin, port };
        assert!(
            out.status.success(),
            "pg_ctl start failed ({}):\n{}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        let out = Command::new(server.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER, DB])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run createdb");
        check("createdb", &out);
        server
    }

    /// `postgres://edgeprio:PASSWORD@127.0.0.1:PORT/edgeprio`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The directory of the cluster's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: nothing of a test's cluster needs to survive it.
        let _ = server_cmd(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The server binaries: the highest `/usr/lib/postgresql/<version>/bin`
/// (Debian's layout), else `pg_config --bindir`.
pub fn bindir() -> PathBuf {
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    if let Some(bin) = debian {
        return bin;
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file());
    from_pg_config.unwrap_or_else(|| {
        panic!(
            "the PostgreSQL server binaries (initdb, pg_ctl) are not installed: looked in \
             /usr/lib/postgresql/*/bin and `pg_config --bindir`; {INSTALL_HINT}"
        )
    })
}

/// `program`, run as `postgres` when the tests run as root.
fn server_cmd(program: &Path) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
