//! The malformed-payload corpus of the raw topic (tests/fixtures/raw, its
//! README says the layout): every bad file is refused with the kind its
//! directory names, every good file parses, and the topics of topics.txt
//! name no node. The gateway's end-to-end test publishes the same files.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use edgeprio::domain::{MAX_RAW_PAYLOAD, PayloadError, RawMessage, Topics, parse_raw};

mod common;

/// The node whose raw topic every corpus payload is meant for.
const NODE: &str = "esp-1";

fn corpus() -> PathBuf {
    common::fixture("raw")
}

/// The files of `dir`, sorted, so failures come in a stable order.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// `(kind, file)` for every bad payload.
fn bad_payloads() -> Vec<(String, PathBuf)> {
    files(&corpus().join("bad"))
        .into_iter()
        .flat_map(|dir| {
            let kind = dir.file_name().unwrap().to_str().unwrap().to_owned();
            files(&dir).into_iter().map(move |f| (kind.clone(), f))
        })
        .collect()
}

/// Error lines quote what was wrong, cut short: a hostile payload never
/// makes a log line of its own size.
const LONGEST_MESSAGE: usize = 600;

#[test]
fn every_bad_payload_is_refused_with_the_kind_of_its_directory() {
    let bad = bad_payloads();
    assert!(bad.len() >= 60, "the corpus is there: {} files", bad.len());
    let mut wrong = Vec::new();
    for (kind, file) in &bad {
        let payload = fs::read(file).unwrap();
        match parse_raw(NODE, &payload) {
            Ok(m) => wrong.push(format!("{}: accepted as {m:?}", file.display())),
            Err(e) if e.kind() != kind => wrong.push(format!(
                "{}: kind {}, not {kind}: {e}",
                file.display(),
                e.kind()
            )),
            Err(e) if e.to_string().len() > LONGEST_MESSAGE => {
                wrong.push(format!(
                    "{}: a message of {} bytes",
                    file.display(),
                    e.to_string().len()
                ));
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_corpus_has_every_kind_a_raw_payload_can_be_refused_for() {
    let mut kinds: BTreeSet<String> = bad_payloads().into_iter().map(|(k, _)| k).collect();
    for kind in &kinds {
        assert!(
            PayloadError::KINDS.contains(&kind.as_str()),
            "bad/{kind}: no such kind"
        );
    }
    // Generated below rather than committed.
    kinds.insert("too_large".to_owned());
    // Only a topic can be refused as one (topics.txt, and the unit tests
    // of Topics::node_of for wildcards).
    let want: BTreeSet<String> = PayloadError::KINDS
        .iter()
        .filter(|&&k| k != "topic")
        .map(|&k| k.to_owned())
        .collect();
    assert_eq!(kinds, want);
}

#[test]
fn a_large_payload_is_refused_before_it_is_parsed() {
    let blob = vec![b'x'; 1_000_000];
    let e = parse_raw(NODE, &blob).unwrap_err();
    assert_eq!(e.kind(), "too_large", "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "the payload is 1000000 bytes, more than the {MAX_RAW_PAYLOAD} bytes a raw reading may have"
        )
    );
    // Valid JSON one byte over the cap: the size decides, not the content.
    let mut padded = fs::read(corpus().join("good/minimal.json")).unwrap();
    padded.resize(MAX_RAW_PAYLOAD + 1, b' ');
    assert_eq!(parse_raw(NODE, &padded).unwrap_err().kind(), "too_large");
    padded.truncate(MAX_RAW_PAYLOAD);
    assert!(parse_raw(NODE, &padded).is_ok(), "at the cap it parses");
}

#[test]
fn every_good_payload_parses_each_with_a_sensor_of_its_own() {
    let good = files(&corpus().join("good"));
    assert!(good.len() >= 8, "{good:?}");
    let mut sensors = BTreeSet::new();
    for file in &good {
        let name = file.file_name().unwrap().to_str().unwrap();
        let payload = fs::read(file).unwrap();
        let sensor = match parse_raw(NODE, &payload) {
            Ok(RawMessage::Scored(r)) if name.starts_with("scored") => {
                assert_eq!(r.reading.node, NODE, "{name}");
                r.reading.sensor
            }
            Ok(RawMessage::Unscored(r)) if !name.starts_with("scored") => {
                assert!(
                    r.temperature_c.is_finite() && r.humidity_pct.is_finite(),
                    "{name}"
                );
                r.sensor
            }
            other => panic!("{name}: {other:?}"),
        };
        assert!(
            sensors.insert(sensor.clone()),
            "{name}: sensor {sensor:?} again"
        );
    }
}

#[test]
fn the_good_payloads_say_what_they_hold() {
    let read = |name: &str| parse_raw(NODE, &fs::read(corpus().join("good").join(name)).unwrap());
    let Ok(RawMessage::Unscored(r)) = read("with-ts-and-seq.json") else {
        panic!()
    };
    assert_eq!((r.ts_ms, r.seq), (Some(1_764_028_800_000), Some(0)));
    let Ok(RawMessage::Unscored(r)) = read("exponent.json") else {
        panic!()
    };
    assert_eq!((r.temperature_c, r.humidity_pct), (21.5, 40.0));
    let Ok(RawMessage::Unscored(r)) = read("unicode-escape.json") else {
        panic!()
    };
    assert_eq!(r.sensor, "escaped");
    let Ok(RawMessage::Scored(r)) = read("scored-batch-flags.json") else {
        panic!()
    };
    assert!(r.late && r.resent, "{r:?}");
    assert_eq!(r.reading.clock_synced, Some(false));
}

#[test]
fn the_topics_of_topics_txt_name_no_node() {
    let text = fs::read_to_string(corpus().join("topics.txt")).unwrap();
    let mut n = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (kind, topic) = line.split_once('\t').unwrap_or_else(|| panic!("{line:?}"));
        let e = Topics::node_of("edgeprio", topic, Topics::RAW).unwrap_err();
        assert_eq!(e.kind(), kind, "{topic:?}: {e}");
        n += 1;
    }
    assert!(n >= 4, "{n} topics");
    assert_eq!(
        Topics::node_of("edgeprio", "edgeprio/esp-1/raw", Topics::RAW),
        Ok(NODE)
    );
}
