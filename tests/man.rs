//! The man pages in `debian/man/` are generated from the clap definitions
//! (`edgeprio::cli::Cli`) by `clap_mangen`, and committed: this test renders
//! them again and fails when a committed page is stale, missing or left over.
//! The package (`[package.metadata.deb]` in Cargo.toml) installs the
//! committed pages, so a cross build needs no host build step to make them,
//! and a change of `--help` text shows up as a diff of its page.
//!
//! After changing a command or an option, regenerate them with
//!
//! ```sh
//! EDGEPRIO_UPDATE_MAN=1 cargo test --test man
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use edgeprio::cli::Cli;

/// Where the committed pages live (installed to `usr/share/man/man1/`).
fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/man")
}

/// Every page, file name to roff text: `edgeprio.1` and one
/// `edgeprio-<command>.1` per visible subcommand, as `clap_mangen::generate_to`
/// names them (no `help` subcommand: `--help` is an option of each page).
fn render_all() -> BTreeMap<String, String> {
    fn render(cmd: clap::Command, pages: &mut BTreeMap<String, String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            render(sub, pages);
        }
        // The footer names the program and its version on every page
        // (clap_mangen's default would say `run 0.1.0` on edgeprio-run.1).
        let man = clap_mangen::Man::new(cmd)
            .source(concat!("edgeprio ", env!("CARGO_PKG_VERSION")))
            .manual("edgeprio manual");
        let mut text = Vec::new();
        man.render(&mut text)
            .expect("rendering into a Vec cannot fail");
        let text = String::from_utf8(text).expect("clap_mangen writes UTF-8");
        pages.insert(man.get_filename(), text);
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = BTreeMap::new();
    render(cmd, &mut pages);
    pages
}

/// The committed pages, file name to text.
fn committed() -> BTreeMap<String, String> {
    let Ok(entries) = fs::read_dir(man_dir()) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("reading debian/man"))
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (
                name,
                fs::read_to_string(e.path()).expect("reading a man page"),
            )
        })
        .collect()
}

#[test]
fn one_page_for_edgeprio_and_one_per_subcommand() {
    let pages = render_all();
    let mut expected: Vec<String> = Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("edgeprio-{}.1", s.get_name()))
        .collect();
    expected.push("edgeprio.1".to_owned());
    expected.sort();
    let names: Vec<&String> = pages.keys().collect();
    assert_eq!(names, expected.iter().collect::<Vec<_>>());
    // Each subcommand's page names it and shows the global options it
    // inherits (clap propagates them when the command is built).
    let run = &pages["edgeprio-run.1"];
    assert!(run.contains(".TH edgeprio-run 1"), "{run}");
    assert!(run.contains("\\-\\-config"), "{run}");
    assert!(run.contains("EDGEPRIO_CONFIG"), "{run}");
}

#[test]
fn committed_man_pages_are_fresh() {
    let fresh = render_all();
    if std::env::var_os("EDGEPRIO_UPDATE_MAN").is_some() {
        let dir = man_dir();
        fs::create_dir_all(&dir).expect("creating debian/man");
        for name in committed().keys().filter(|n| !fresh.contains_key(*n)) {
            fs::remove_file(dir.join(name)).expect("removing a page of a gone command");
        }
        for (name, text) in &fresh {
            fs::write(dir.join(name), text).expect("writing a man page");
        }
    }
    let committed = committed();
    let stale: Vec<&String> = fresh
        .iter()
        .filter(|(name, text)| committed.get(*name) != Some(*text))
        .map(|(name, _)| name)
        .chain(committed.keys().filter(|n| !fresh.contains_key(*n)))
        .collect();
    assert!(
        stale.is_empty(),
        "debian/man/ is stale ({stale:?} differ, are missing or belong to no command): \
         run `EDGEPRIO_UPDATE_MAN=1 cargo test --test man` and commit debian/man/"
    );
}
