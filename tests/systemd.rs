//! The systemd unit and its sysusers.d file, checked offline by
//! `scripts/check-systemd`: `systemd-analyze verify` prints nothing,
//! `systemd-analyze security --offline=true` rates the exposure 2.0 or less,
//! and `systemd-sysusers` creates the unit's user and groups. Broken copies
//! show that each check can fail. Without systemd-analyze these tests fail,
//! they do not skip.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The limit for `systemd-analyze security`.
const MAX_EXPOSURE: f64 = 2.0;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// What one run of the script said.
struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scripts/check-systemd exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Panics, naming the package, unless systemd-analyze runs here.
fn require_systemd_analyze() {
    let hint = "the systemd checks need systemd-analyze from systemd 250 or newer \
                (Debian: apt-get install systemd)";
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`systemd-analyze --version` failed ({}): {hint}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("systemd-analyze cannot be run ({e}): {hint}"),
    }
}

/// `/usr/bin/<name>` or `/bin/<name>`: for runs with a PATH of our own, where
/// a bare name would be looked up in that PATH.
fn system_tool(name: &str) -> PathBuf {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is in neither /usr/bin nor /bin"))
}

fn run_script(args: &[&Path], path: Option<&Path>) -> Checked {
    let mut cmd = Command::new(system_tool("bash"));
    cmd.arg(shipped("scripts/check-systemd")).args(args);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let out = cmd.output().expect("bash runs scripts/check-systemd");
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `scripts/check-systemd [UNIT [SYSUSERS]]`.
fn check_systemd(args: &[&Path]) -> Checked {
    require_systemd_analyze();
    run_script(args, None)
}

/// The overall exposure that `systemd-analyze security` printed.
fn exposure(checked: &Checked) -> f64 {
    let marker = "Overall exposure level for edgeprio.service: ";
    let rest = checked
        .stdout
        .split_once(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the output:\n{checked}"))
        .1;
    let value = rest.split_whitespace().next().unwrap_or_default();
    value
        .parse()
        .unwrap_or_else(|e| panic!("exposure {value:?} is not a number ({e}):\n{checked}"))
}

/// A copy of the shipped unit, under its own name in `dir`, with `edit`
/// applied to its text.
fn unit_copy(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(shipped("systemd/edgeprio.service")).unwrap();
    let path = dir.join("edgeprio.service");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// The shipped unit with the line `from` replaced by `to`.
fn unit_with_line(dir: &Path, from: &str, to: &str) -> PathBuf {
    unit_copy(dir, |text| {
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(&from),
            "the shipped unit has no line {from:?}: update this test"
        );
        let mut out: String = lines
            .iter()
            .map(|l| if *l == from { to } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        out
    })
}

/// The script failed on exactly the `failed` checks (in its summary line).
fn assert_failed(checked: &Checked, failed: &str) {
    assert_eq!(checked.code, Some(1), "{checked}");
    assert!(
        checked
            .stderr
            .contains(&format!("scripts/check-systemd: failed: {failed}\n")),
        "expected only {failed:?} to fail:\n{checked}"
    );
}

#[test]
fn the_shipped_unit_verifies_cleanly_with_an_exposure_of_at_most_two() {
    let checked = check_systemd(&[]);
    assert_eq!(checked.code, Some(0), "{checked}");
    assert!(
        checked
            .stdout
            .contains("ok: systemd-analyze verify printed nothing"),
        "{checked}"
    );
    let exposure = exposure(&checked);
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{checked}"
    );
    assert!(
        checked
            .stdout
            .contains("ok: user edgeprio (group edgeprio), member of gpio"),
        "{checked}"
    );
}

#[test]
fn a_misspelled_directive_is_caught_by_verify() {
    // RestartPreventExitStatus= costs no exposure: only verify can see it go.
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_line(
        dir.path(),
        "RestartPreventExitStatus=78",
        "RestartPreventExitStatu=78",
    );
    let checked = check_systemd(&[&unit]);
    assert_failed(&checked, "verify");
    assert!(
        checked
            .stdout
            .contains("Unknown key 'RestartPreventExitStatu' in section [Service]"),
        "{checked}"
    );
    // verify's messages name the file that was checked, not the scratch copy.
    assert!(
        checked.stdout.contains(&format!("{}:", unit.display())),
        "{checked}"
    );
}

#[test]
fn a_bad_value_is_caught_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_line(dir.path(), "Restart=on-failure", "Restart=on-failures");
    let checked = check_systemd(&[&unit]);
    assert_failed(&checked, "verify");
    assert!(
        checked.stdout.contains("on-failures"),
        "verify should name the bad value:\n{checked}"
    );
}

#[test]
fn a_wrong_executable_path_is_caught_by_verify() {
    // The stand-in /usr/bin/edgeprio must not hide a mistake in the path.
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path(), |text| {
        text.replace(
            "ExecStart=/usr/bin/edgeprio ",
            "ExecStart=/usr/local/bin/edgeprio ",
        )
    });
    let checked = check_systemd(&[&unit]);
    assert_failed(&checked, "verify");
    assert!(
        checked
            .stdout
            .contains("/usr/local/bin/edgeprio is not executable"),
        "{checked}"
    );
}

#[test]
fn weaker_hardening_fails_the_exposure_check() {
    // Valid settings, so verify stays clean: only the score can catch this.
    let dir = tempfile::tempdir().unwrap();
    let dropped = [
        "PrivateUsers=",
        "ProtectSystem=",
        "ProtectProc=",
        "DevicePolicy=",
        "SystemCallFilter=",
        "RestrictNamespaces=",
    ];
    let unit = unit_copy(dir.path(), |text| {
        let mut kept = String::new();
        for line in text.lines() {
            if !dropped.iter().any(|d| line.starts_with(d)) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        kept
    });
    let checked = check_systemd(&[&unit]);
    assert_failed(&checked, "security");
    let exposure = exposure(&checked);
    assert!(exposure > MAX_EXPOSURE, "{checked}");
    assert!(
        checked.stderr.contains(&format!(
            "FAIL security: exposure {exposure:.1} is above 2.0"
        )),
        "{checked}"
    );
}

#[test]
fn a_sysusers_file_that_leaves_the_user_out_of_gpio_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let sysusers = dir.path().join("edgeprio.sysusers");
    std::fs::write(
        &sysusers,
        "g gpio -\nu edgeprio - \"edgeprio sensor agent\" /var/lib/edgeprio\n",
    )
    .unwrap();
    let unit = shipped("systemd/edgeprio.service");
    let checked = check_systemd(&[&unit, &sysusers]);
    assert_failed(&checked, "sysusers");
    assert!(
        checked
            .stderr
            .contains("does not make edgeprio a member of gpio"),
        "{checked}"
    );
}

#[test]
fn a_malformed_sysusers_file_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let sysusers = dir.path().join("edgeprio.sysusers");
    std::fs::write(&sysusers, "u edgeprio - edgeprio sensor agent\n").unwrap();
    let unit = shipped("systemd/edgeprio.service");
    let checked = check_systemd(&[&unit, &sysusers]);
    assert_failed(&checked, "sysusers");
    assert!(
        checked
            .stdout
            .contains("is not a valid home directory field"),
        "{checked}"
    );
}

#[test]
fn without_systemd_analyze_the_script_fails_loudly() {
    // A PATH with the few tools the script needs before its tool check, and
    // no systemd-analyze: exit 2 and a message, never a silent pass.
    let dir = tempfile::tempdir().unwrap();
    for tool in ["dirname", "basename", "realpath"] {
        std::os::unix::fs::symlink(system_tool(tool), dir.path().join(tool)).unwrap();
    }
    let checked = run_script(&[], Some(dir.path()));
    assert_eq!(checked.code, Some(2), "{checked}");
    assert!(
        checked.stderr.contains("systemd-analyze not found"),
        "{checked}"
    );
}
