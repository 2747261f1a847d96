//! The agent against a secured Mosquitto: TLS with the broker's CA in
//! `ca_file`, a client certificate for a `require_certificate` listener,
//! an unknown CA, and password logins from `password_file` and from
//! `EDGEPRIO_MQTT_PASSWORD`, right and wrong. Certificates are made per
//! test with rcgen. A refused connection must leave a clear reason in the
//! status row and on stderr, never the password, while the agent goes on
//! logging locally.
//!
//! Needs `mosquitto` and `mosquitto_sub`/`mosquitto_pub`: a missing broker
//! fails the tests (scripts/test installs them).

mod common;
mod mosquitto;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{readings, wait_for};
use mosquitto::{
    Agent, AgentFiles, Broker, BrokerRow, Sensor, Spec, Sub, TlsFiles, agent_config,
    assert_gapless, assert_outbox_drained, assert_seen_is_the_log, broker_row, progress,
    seen_readings, wait_all_seen, wait_progress,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of a test PKI.
struct Pki {
    /// The CA that signed the broker's and the client's certificates.
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing the broker uses.
    other_ca: PathBuf,
}

/// Writes `text` to `dir/name`.
fn write_pem(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path
}

/// Writes a private key readable by its owner only, as the agent asks of
/// secrets.
fn write_key(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = write_pem(dir, name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A self-signed CA named `name`: its certificate (PEM) and its issuer.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate for `names` with `usage`, signed by `issuer`: its
/// certificate and key (PEM).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A CA, a server certificate for 127.0.0.1 and localhost, a client
/// certificate, and an unrelated CA, written into `dir`.
fn pki(dir: &Path) -> Pki {
    let (ca_pem, issuer) = ca("edgeprio test CA");
    let (server_cert, server_key) = leaf(
        &issuer,
        "localhost",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        &issuer,
        "edgeprio-agent",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (other_ca, _) = ca("someone else's CA");
    Pki {
        ca: write_pem(dir, "ca.pem", &ca_pem),
        server_cert: write_pem(dir, "server.pem", &server_cert),
        server_key: write_key(dir, "server.key", &server_key),
        client_cert: write_pem(dir, "client.pem", &client_cert),
        client_key: write_key(dir, "client.key", &client_key),
        other_ca: write_pem(dir, "other-ca.pem", &other_ca),
    }
}

/// A broker with a plain listener (for the test's subscriber) and a TLS
/// listener (for the agent) using `pki`.
fn tls_broker(dir: &Path, pki: &Pki, require_certificate: bool) -> Broker {
    Broker::start(
        dir,
        &Spec {
            tls: Some(TlsFiles {
                ca: pki.ca.clone(),
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
                require_certificate,
            }),
            ..Spec::default()
        },
    )
}

/// A one-sensor agent (heater replay, 100 ms) named `node`.
fn agent_files(dir: &Path, node: &str, mqtt: &str) -> AgentFiles {
    agent_config(dir, node, "100ms", &[Sensor::Heater("lab")], mqtt)
}

/// Runs the agent until 10 readings are acknowledged, stops it, and checks
/// that the subscriber saw every logged reading and the outbox drained.
fn assert_delivers(files: &AgentFiles, env: &[(&str, &str)], sub: &Sub) -> String {
    let mut agent = Agent::start(files, env);
    wait_progress(&mut agent, &files.db, &["lab"], 10, 10);
    let status = broker_row(&files.db, &files.node).expect("status row");
    assert_eq!(
        (status.state.as_str(), status.error.as_deref()),
        ("connected", None),
        "the status row of an agent whose readings are being acknowledged: {status:?}"
    );
    let stderr = agent.stop();
    let rows = readings(&files.db);
    assert_gapless(&rows);
    let status = broker_row(&files.db, &files.node).expect("status row");
    assert_outbox_drained(&rows, &status);
    let base = files.base();
    wait_all_seen(sub, &base, &rows, Duration::from_secs(10));
    assert_seen_is_the_log(&seen_readings(&sub.messages(), &base), &rows, &base);
    stderr
}

/// Waits until the agent has given up a connection attempt (state
/// `disconnected` with a reason), then checks that it goes on logging:
/// `more` readings after that, none acknowledged. Returns the status row.
fn assert_refused_but_logging(agent: &mut Agent, files: &AgentFiles, more: i64) -> BrokerRow {
    wait_for(
        Duration::from_secs(15),
        "the refused connection in the status row",
        || {
            broker_row(&files.db, &files.node)
                .is_some_and(|b| b.state == "disconnected" && b.error.is_some())
        },
    );
    let status = broker_row(&files.db, &files.node).unwrap();
    let logged = progress(&files.db).get("lab").map_or(0, |p| p.0);
    wait_progress(agent, &files.db, &["lab"], logged + more, 0);
    let p = progress(&files.db);
    assert_eq!(p["lab"].1, 0, "nothing can have been acknowledged: {p:?}");
    status
}

/// `mqtts://` with the broker's CA as `ca_file`: the agent verifies the
/// broker (certificate for 127.0.0.1) and every reading arrives.
#[test]
fn tls_with_the_brokers_ca_delivers_every_reading() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = tls_broker(dir.path(), &pki, false);
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let files = agent_files(
        dir.path(),
        "tls",
        &format!(
            "url = \"{}\"\nca_file = {:?}\nbatch_interval = \"1s\"",
            broker.tls_url(),
            pki.ca.display().to_string()
        ),
    );
    assert_delivers(&files, &[], &sub);
}

/// A listener with `require_certificate true`: the agent with
/// `client_cert`/`client_key` signed by the broker's CA gets in and
/// delivers every reading; the same agent without them is refused and
/// keeps its readings in the log.
#[test]
fn tls_client_certificate_is_required_and_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = tls_broker(dir.path(), &pki, true);
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let ca_line = format!(
        "url = \"{}\"\nca_file = {:?}\nbatch_interval = \"1s\"\n",
        broker.tls_url(),
        pki.ca.display().to_string()
    );
    let without = agent_files(dir.path(), "nocert", &ca_line);
    let mut refused = Agent::start(&without, &[]);
    let with = agent_files(
        dir.path(),
        "cert",
        &format!(
            "{ca_line}client_cert = {:?}\nclient_key = {:?}",
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string()
        ),
    );
    assert_delivers(&with, &[], &sub);
    let status = assert_refused_but_logging(&mut refused, &without, 3);
    let error = status.error.unwrap();
    assert!(
        error.to_lowercase().contains("certificate"),
        "the reason names the missing certificate: {error}"
    );
    refused.stop();
}

/// `ca_file` naming a CA that did not sign the broker's certificate: the
/// connection is refused with a reason that names the certificate problem
/// and `ca_file`, in the status row and on stderr; the agent goes on
/// logging locally and exits cleanly.
#[test]
fn tls_with_an_unknown_ca_is_a_clear_error_and_logging_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = tls_broker(dir.path(), &pki, false);
    let files = agent_files(
        dir.path(),
        "badca",
        &format!(
            "url = \"{}\"\nca_file = {:?}",
            broker.tls_url(),
            pki.other_ca.display().to_string()
        ),
    );
    let mut agent = Agent::start(&files, &[]);
    let status = assert_refused_but_logging(&mut agent, &files, 5);
    let error = status.error.unwrap();
    assert!(
        error.contains("certificate") && error.contains("ca_file"),
        "the reason names the certificate and ca_file: {error}"
    );
    assert!(error.contains(&broker.tls_url()), "{error}");
    let stderr = agent.stop();
    assert!(stderr.contains(&error), "stderr logs the reason:\n{stderr}");
}

/// The broker's user and a password no test writes anywhere else.
const USER: &str = "edgeprio-node";
const PASSWORD: &str = "pw-Vq3x9Lr7Tk";

/// A broker that only lets `USER` with `PASSWORD` in.
fn password_broker(dir: &Path) -> Broker {
    Broker::start(
        dir,
        &Spec {
            user: Some((USER.to_owned(), PASSWORD.to_owned())),
            ..Spec::default()
        },
    )
}

/// Writes a password file (owner-only, with the trailing newline an editor
/// leaves) and returns its path.
fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `username` with `password_file` holding the right password: the agent
/// logs in and every reading arrives; the password is not on stderr.
#[test]
fn password_file_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let broker = password_broker(dir.path());
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let file = password_file(dir.path(), "mqtt.pass", PASSWORD);
    let files = agent_files(
        dir.path(),
        "pwfile",
        &format!(
            "url = \"{}\"\nusername = \"{USER}\"\npassword_file = {:?}\nbatch_interval = \"1s\"",
            broker.url(),
            file.display().to_string()
        ),
    );
    let stderr = assert_delivers(&files, &[], &sub);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

/// `EDGEPRIO_MQTT_PASSWORD` supplies the password and wins over a
/// `password_file` that holds a wrong one.
#[test]
fn password_from_the_environment_logs_in_and_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let broker = password_broker(dir.path());
    let sub = Sub::start(&broker, &["edgeprio/#"], None);
    let stale = password_file(dir.path(), "old.pass", "pw-stale-one");
    let files = agent_files(
        dir.path(),
        "pwenv",
        &format!(
            "url = \"{}\"\nusername = \"{USER}\"\npassword_file = {:?}\nbatch_interval = \"1s\"",
            broker.url(),
            stale.display().to_string()
        ),
    );
    let stderr = assert_delivers(&files, &[("EDGEPRIO_MQTT_PASSWORD", PASSWORD)], &sub);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

/// A wrong password (here written in the config itself): the broker
/// refuses the login; the status row says `disconnected` with a reason that
/// points at the user name or password; stderr logs it; the agent goes on
/// logging locally; the password shows neither on stderr nor in
/// `check-config`'s echo of the config.
#[test]
fn wrong_password_is_a_clear_error_that_never_shows_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let broker = password_broker(dir.path());
    let wrong = "pw-Wrong-8hZ2";
    let files = agent_files(
        dir.path(),
        "pwbad",
        &format!(
            "url = \"{}\"\nusername = \"{USER}\"\npassword = \"{wrong}\"",
            broker.url()
        ),
    );
    let mut agent = Agent::start(&files, &[]);
    let status = assert_refused_but_logging(&mut agent, &files, 5);
    let stderr = agent.stop();
    let error = status.error.unwrap();
    assert!(
        error.to_lowercase().contains("password"),
        "the reason must point at the user name or password: {error}"
    );
    assert!(stderr.contains(&error), "stderr logs the reason:\n{stderr}");
    for (what, text) in [("the status row", error.as_str()), ("stderr", &stderr)] {
        assert!(!text.contains(wrong), "{what} shows the password: {text}");
    }
    let out = common::edgeprio(dir.path())
        .arg("--config")
        .arg(&files.config)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let echo = common::text(&out.stdout) + &common::text(&out.stderr);
    assert!(
        !echo.contains(wrong),
        "check-config shows the password: {echo}"
    );
}
