//! The MQTT connection every command that talks to a broker shares: the
//! client options (credentials, read at every attempt, and TLS), errors in
//! words that say what to check, and the task that polls the event loop.
//! What a command does on the connection (publish an outbox, consume a
//! route) lives with that command.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{
    ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};

use crate::config::MqttConfig;

/// How a connection (a session on it) ended, for the loop that connects
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A stop was asked for: no new connection.
    Closed,
    /// The connection failed or was lost.
    Lost {
        /// Why, in words that say what to check.
        error: String,
        /// Whether it had worked: then the backoff starts over.
        was_connected: bool,
    },
}

/// The pause between connection attempts: doubling from 1 s to 1 min, and
/// from 1 s again after a connection that worked. Every MQTT client of
/// edgeprio waits by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The next pause.
    next: Duration,
}

impl Backoff {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_secs(1);
    /// The longest.
    pub const CAP: Duration = Duration::from_mins(1);

    /// Starts at [`Backoff::FIRST`].
    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The pause after a connection that ended; one that `was_connected`
    /// starts the doubling over.
    pub fn after(&mut self, was_connected: bool) -> Duration {
        if was_connected {
            self.next = Self::FIRST;
        }
        let pause = self.next;
        self.next = (pause * 2).min(Self::CAP);
        pause
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// The options every client of `m` starts from: `client_id`, keep-alive,
/// packet size limits, `last_will`, the credentials and TLS. The password
/// and certificates are read here, at every attempt, so a fixed file is
/// picked up without a restart. Session and in-flight settings are the
/// caller's.
pub fn client_options(
    m: &MqttConfig,
    client_id: &str,
    last_will: Option<LastWill>,
) -> Result<MqttOptions, String> {
    let mut o = MqttOptions::new(client_id, m.host.clone(), m.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(4 << 20, 4 << 20);
    if let Some(will) = last_will {
        o.set_last_will(will);
    }
    let password = m.password()?;
    match (&m.username, password) {
        (Some(user), p) => {
            o.set_credentials(user.clone(), p.as_ref().map_or("", |p| p.expose()));
        }
        (None, Some(_)) => {
            return Err("a password is configured but no username: set mqtt.username".into());
        }
        (None, None) => {}
    }
    if m.tls {
        let tls = tls_config(m)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    Ok(o)
}

/// TLS with the configured CA (or the system's roots) and, optionally, a
/// client certificate; rustls on the `ring` provider.
pub fn tls_config(m: &MqttConfig) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &m.ca_file {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {} holds no PEM certificate", ca.display()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        }
    } else {
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            return Err(
                "no CA certificates found on this system (install ca-certificates) \
                 and no mqtt.ca_file configured"
                    .into(),
            );
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots);
    match &m.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| format!("cannot read client_cert {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read client_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
    }
}

/// A connection error in words that say what to check.
pub fn describe(e: &ConnectionError, m: &MqttConfig) -> String {
    use rumqttc::ConnectReturnCode as Code;
    match e {
        ConnectionError::ConnectionRefused(Code::BadUserNamePassword) => format!(
            "the broker at {} refused the user name or password; check mqtt.username and the \
             password (password_file or {})",
            m.url,
            crate::config::PASSWORD_ENV
        ),
        // Mosquitto answers a wrong user name or password with "not
        // authorized" (code 5), not code 4.
        ConnectionError::ConnectionRefused(Code::NotAuthorized) if m.username.is_some() => format!(
            "the broker at {} refused the login (not authorized): check mqtt.username and the \
             password (password_file or {}), and the broker's ACL for this client",
            m.url,
            crate::config::PASSWORD_ENV
        ),
        ConnectionError::ConnectionRefused(Code::NotAuthorized) => format!(
            "the broker at {} refused this client (not authorized): it may require a user name \
             and password (mqtt.username, password_file), or its ACL denies {:?}",
            m.url, m.client_id
        ),
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker at {} refused the connection: {code:?}", m.url)
        }
        ConnectionError::Io(io) => format!("cannot reach the broker at {}: {io}", m.url),
        other => {
            let text = other.to_string();
            let lower = text.to_lowercase();
            if lower.contains("certificate") || lower.contains("tls") {
                format!(
                    "TLS with {} failed: {text}; check mqtt.ca_file (the CA that signed the \
                     broker's certificate), that the URL's host matches the certificate, and \
                     client_cert/client_key if the broker requires a client certificate",
                    m.url
                )
            } else {
                format!("connection to {} failed: {text}", m.url)
            }
        }
    }
}

/// Publishes `messages` (`topic`, payload, retained) at `QoS` 1 on a
/// connection of its own (a clean session under `client_id`), waits up
/// to `wait` for their acknowledgements, and disconnects. Returns how
/// many the broker acknowledged. For the rare message a command sends
/// outside its main connection: a collector's `offline`, its resend
/// requests.
pub async fn publish_once(
    m: &MqttConfig,
    client_id: &str,
    messages: Vec<(String, Vec<u8>, bool)>,
    wait: Duration,
) -> Result<usize, String> {
    let mut opts = client_options(m, client_id, None)?;
    opts.set_clean_session(true);
    let (client, eventloop) = rumqttc::AsyncClient::new(opts, messages.len().clamp(8, 1024));
    let (mut events, _driver) = drive(eventloop, None);
    let total = messages.len();
    let acked = async {
        let mut acked = 0;
        let mut messages = messages.into_iter();
        // Connected first: a request queued before the CONNACK is sent
        // after it anyway, but a refused connection is reported as such.
        loop {
            match events.recv().await {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(describe(&e, m)),
                None => return Err("the MQTT event loop stopped".to_owned()),
            }
        }
        for (topic, payload, retain) in messages.by_ref() {
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| format!("publish failed: {e}"))?;
        }
        while acked < total {
            match events.recv().await {
                Some(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(describe(&e, m)),
                None => break,
            }
        }
        let _ = client.disconnect().await;
        // Let the DISCONNECT reach the wire before the driver is dropped.
        let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
        Ok(acked)
    };
    match tokio::time::timeout(wait, acked).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "the broker did not acknowledge {total} messages within {}",
            humantime::format_duration(wait)
        )),
    }
}

/// Polls the event loop on its own task and forwards everything, so a
/// session can await `publish` (which waits for channel space) without
/// starving the loop that makes that space. With an [`Intake`], the task
/// stops reading the network while the consumer holds its limit of
/// unacknowledged messages (see there).
pub fn drive(
    mut eventloop: EventLoop,
    intake: Option<Arc<Intake>>,
) -> (
    mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    AbortOnDrop,
) {
    if intake.is_some() {
        let mut network = eventloop.network_options();
        network.set_tcp_recv_buffer_size(Intake::RECV_BUFFER);
        eventloop.set_network_options(network);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            if let Some(intake) = &intake {
                intake.room().await;
            }
            let ev = eventloop.poll().await;
            if let (Some(intake), Ok(ev)) = (&intake, &ev) {
                intake.saw(ev);
            }
            let stop = ev.is_err();
            if tx.send(ev).is_err() || stop {
                break;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

/// A consumer's bound on what it reads ahead of its acknowledgements,
/// while its handler fails ([`Intake::holding`]).
///
/// The broker is meant to stop at its in-flight limit (Mosquitto's
/// `max_inflight_messages`), but a stock Mosquitto 2.0.11 does not hold it
/// while acknowledgements flow: measured with a limit of 1,000 and a
/// flooded gateway, 52,000 `QoS` 1 messages were in flight to it, held in
/// its memory (25 MiB). So the client bounds itself, with TCP: once
/// `limit` messages are received and not acknowledged, the event loop is
/// not polled (the socket fills and the broker keeps the rest), except to
/// write the acknowledgements announced with [`Intake::acking`], and one
/// event per [`Intake::TICK`] for the keepalive. The event loop reads the
/// network and takes requests in one poll, so a paused loop sends nothing
/// either: a session announces its acknowledgements, and calls
/// [`Intake::open`] before any other request.
///
/// While the acknowledgements are written the loop reads too, whatever the
/// socket holds: the socket's receive buffer is set to
/// [`Intake::RECV_BUFFER`], or Linux grows it on loopback to megabytes
/// (`net.ipv4.tcp_rmem`), tens of thousands of messages read at once.
#[derive(Debug)]
pub struct Intake {
    /// Most messages received and not acknowledged.
    limit: usize,
    /// Received and not acknowledged (only the event-loop task writes it).
    unacked: AtomicUsize,
    /// Acknowledgements requested and not yet written.
    owed: AtomicUsize,
    /// No limit any more: the session sends other requests, or closes.
    opened: AtomicBool,
    /// The handler fails: the bound applies. While it commits, the loop
    /// reads freely: pausing it then to bound a flood let a paused loop
    /// trickle one batch a second and miss the broker's PINGRESP (a
    /// gateway stalled for 60 s until the keepalive dropped the
    /// connection, in 3 of 20 bench runs), and rumqttc reads on while it
    /// writes acknowledgements anyway.
    holding: AtomicBool,
    /// Wakes a paused event loop.
    wake: Notify,
}

impl Intake {
    /// How often a paused event loop is polled anyway: well within the
    /// 30 s keepalive.
    pub const TICK: Duration = Duration::from_secs(1);

    /// The consumer socket's receive buffer (`SO_RCVBUF`; Linux doubles
    /// it): about a thousand small messages, and a window for 20 ms of
    /// round trip at 6 MB/s.
    pub const RECV_BUFFER: u32 = 64 * 1024;

    /// A bound of `limit` unacknowledged messages (at least one).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            unacked: AtomicUsize::new(0),
            owed: AtomicUsize::new(0),
            opened: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// `n` acknowledgements are about to be requested: the loop runs until
    /// it has written them.
    pub fn acking(&self, n: usize) {
        self.owed.fetch_add(n, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether the handler fails (the bound applies) or commits.
    pub fn holding(&self, failing: bool) {
        self.holding.store(failing, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Lifts the bound for the rest of the connection.
    pub fn open(&self) {
        self.opened.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Messages received and not acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.load(Ordering::SeqCst)
    }

    /// Whether the event loop may be polled now.
    fn may_poll(&self) -> bool {
        !self.holding.load(Ordering::SeqCst)
            || self.unacked() < self.limit
            || self.owed.load(Ordering::SeqCst) > 0
            || self.opened.load(Ordering::SeqCst)
    }

    /// Returns once the event loop may be polled, or a tick has passed.
    async fn room(&self) {
        while !self.may_poll() {
            if tokio::time::timeout(Self::TICK, self.wake.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Counts what the event loop did.
    fn saw(&self, ev: &Event) {
        match ev {
            Event::Incoming(Packet::Publish(p)) if p.qos != QoS::AtMostOnce => {
                self.unacked.fetch_add(1, Ordering::SeqCst);
            }
            Event::Outgoing(Outgoing::PubAck(_)) => {
                let less = |n: usize| Some(n.saturating_sub(1));
                let _ = self
                    .unacked
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less);
                let _ = self
                    .owed
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less);
            }
            _ => {}
        }
    }
}

/// Aborts the event-loop task when the session that owns it ends.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: QoS, pkid: u16) -> Event {
        let mut p = rumqttc::Publish::new("edgeprio/n1/raw", qos, Vec::new());
        p.pkid = pkid;
        Event::Incoming(Packet::Publish(p))
    }

    #[test]
    fn the_intake_stops_at_its_limit_and_reads_on_while_acknowledgements_are_owed() {
        let i = Intake::new(2);
        assert!(i.may_poll());
        i.saw(&publish(QoS::AtLeastOnce, 1));
        i.saw(&publish(QoS::AtLeastOnce, 2));
        assert_eq!(i.unacked(), 2);
        assert!(i.may_poll(), "the handler commits: no bound");
        i.holding(true);
        assert!(
            !i.may_poll(),
            "two held, none acknowledged, the handler fails"
        );
        // `QoS` 0 needs no acknowledgement and is not counted.
        i.saw(&publish(QoS::AtMostOnce, 0));
        assert_eq!(i.unacked(), 2);
        i.acking(1);
        assert!(i.may_poll(), "an acknowledgement to write");
        i.saw(&Event::Outgoing(Outgoing::PubAck(1)));
        assert_eq!(i.unacked(), 1);
        assert!(i.may_poll(), "below the limit again");
        i.saw(&publish(QoS::AtLeastOnce, 3));
        assert!(
            !i.may_poll(),
            "the written acknowledgement is not owed any more"
        );
        i.open();
        assert!(i.may_poll(), "opened for the rest of the connection");
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_intake_lets_one_poll_through_per_tick() {
        let i = Intake::new(1);
        i.holding(true);
        i.saw(&publish(QoS::AtLeastOnce, 1));
        let start = tokio::time::Instant::now();
        i.room().await;
        assert_eq!(start.elapsed(), Intake::TICK);
        // Woken at once by what makes room.
        let waker = i.clone();
        let wait = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            waker.room().await;
            start.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        i.acking(1);
        assert_eq!(wait.await.unwrap(), Duration::from_millis(10));
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_and_starts_over_after_a_connection() {
        let mut b = Backoff::new();
        let s = Duration::from_secs;
        let pauses: Vec<Duration> = (0..8).map(|_| b.after(false)).collect();
        assert_eq!(pauses, [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60)]);
        assert_eq!(b.after(true), s(1));
        assert_eq!(b.after(false), s(2));
    }
}
