//! The committing consumer (`edgeprio::consume`) against a real Mosquitto
//! started per test on a free port: with a persistent session nothing
//! published while it was away is lost; a failing handler acknowledges
//! nothing, and a consumer dropped without acknowledging gets the messages
//! again under the same client id; two members of a shared group split a
//! stream and together receive all of it; malformed messages are
//! acknowledged and counted; a broker that lost the session gets the
//! subscription again on reconnect.
//!
//! Needs `mosquitto` and `mosquitto_pub`: a missing broker fails the tests
//! (scripts/test installs them).

mod common;
mod mosquitto;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeprio::config::MqttConfig;
use edgeprio::consume::{
    BatchLimits, Consumer, ConsumerOptions, Counts, Handled, Handler, HandlerError, Incoming,
    Stats, shared_filter,
};
use edgeprio::store::BrokerState;
use mosquitto::{Broker, Spec};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where the tests publish: what `edgeprio gateway` consumes.
const RAW: &str = "edgeprio/n1/raw";

/// The test's handler: records what it committed, rejects the payload
/// `malformed`, and fails its first `fail_first` calls (the database is
/// down).
#[derive(Clone, Default)]
struct Recorder {
    /// Payloads committed, in commit order.
    committed: Arc<Mutex<Vec<String>>>,
    /// Calls so far, failed ones included.
    calls: Arc<AtomicUsize>,
    /// The sizes of the batches it was handed.
    batches: Arc<Mutex<Vec<usize>>>,
    /// How many calls fail before the first that commits.
    fail_first: usize,
    /// While set, every call fails (the database is down until the test
    /// says otherwise).
    down: Arc<AtomicBool>,
}

impl Recorder {
    fn failing_first(n: usize) -> Self {
        Recorder {
            fail_first: n,
            ..Recorder::default()
        }
    }

    fn committed(&self) -> Vec<String> {
        self.committed.lock().unwrap().clone()
    }
}

impl Handler for Recorder {
    fn handle(
        &mut self,
        batch: &[Incoming],
    ) -> impl Future<Output = Result<Handled, HandlerError>> + Send {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.batches.lock().unwrap().push(batch.len());
        let result = if call < self.fail_first || self.down.load(Ordering::SeqCst) {
            Err(HandlerError::new("the test's database is down"))
        } else {
            let mut handled = Handled::all(batch);
            let mut committed = self.committed.lock().unwrap();
            for (i, m) in batch.iter().enumerate() {
                if m.payload() == b"malformed" {
                    handled.reject(i, "json", "not a reading");
                } else {
                    committed.push(common::text(m.payload()));
                }
            }
            Ok(handled)
        };
        std::future::ready(result)
    }
}

/// A consumer running on its own task.
struct Running {
    task: JoinHandle<Counts>,
    stop: oneshot::Sender<()>,
    stats: Stats,
}

impl Running {
    /// Starts a consumer of `filters` under `client_id` and waits until it
    /// is subscribed.
    async fn start(broker: &Broker, client_id: &str, filters: &[String], h: Recorder) -> Running {
        let mqtt = MqttConfig::local(
            SocketAddr::from(([127, 0, 0, 1], broker.port)),
            "consumer",
            Duration::from_secs(15),
        );
        let consumer = Consumer::new(
            &mqtt,
            ConsumerOptions {
                client_id: client_id.into(),
                filters: filters.to_vec(),
                limits: BatchLimits::MOSQUITTO_DEFAULT,
                last_will: None,
                online: None,
                once: false,
            },
        );
        let mut connection = consumer.status();
        let stats = consumer.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(consumer.run(h, async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(
            Duration::from_secs(10),
            connection.wait_for(|s| s.state == BrokerState::Connected),
        )
        .await
        .unwrap_or_else(|_| panic!("{client_id} not subscribed after 10 s:\n{}", broker.log()))
        .expect("the consumer reports its state");
        Running { task, stop, stats }
    }

    /// A clean stop; the final counters.
    async fn stop(self) -> Counts {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the consumer stops within 15 s")
            .expect("the consumer task does not panic")
    }

    /// Drops the consumer mid-stream, as a crash would: nothing more is
    /// acknowledged, the connection just closes.
    async fn crash(self) -> Counts {
        self.task.abort();
        let _ = self.task.await;
        self.stats.snapshot()
    }
}

/// `filter`, subscribed by every test.
fn raw_filter() -> Vec<String> {
    vec!["edgeprio/+/raw".to_owned()]
}

/// Publishes `payloads` to `topic` at `QoS` 1 with one `mosquitto_pub -l`
/// (a line each), which returns once the broker has acknowledged them all.
async fn publish_lines(broker: &Broker, topic: &str, payloads: Vec<String>) {
    let (port, topic) = (broker.port, topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(mosquitto::tool("mosquitto_pub"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-q", "1", "-t", &topic, "-l"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_pub");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        for p in &payloads {
            writeln!(stdin, "{p}").expect("write to mosquitto_pub");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("wait for mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            common::text(&out.stderr)
        );
    })
    .await
    .expect("the publishing thread");
}

/// `n` numbered payloads, from `first`.
fn numbered(first: usize, n: usize) -> Vec<String> {
    (first..first + n).map(|i| format!("m{i:04}")).collect()
}

/// Waits (up to `limit`) until `cond` holds.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a consumer under `client_id`, waits `quiet`, stops it, and
/// returns what it was handed: nothing, if every message was acknowledged
/// before.
async fn leftovers(broker: &Broker, client_id: &str, quiet: Duration) -> (Vec<String>, Counts) {
    let h = Recorder::default();
    let run = Running::start(broker, client_id, &raw_filter(), h.clone()).await;
    tokio::time::sleep(quiet).await;
    let counts = run.stop().await;
    (h.committed(), counts)
}

/// (a) Messages published while the consumer is away are queued by the
/// broker under its persistent session: all 500 arrive, in order, at the
/// next start, are committed and acknowledged (a third start gets none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_away_arrive_once_the_session_exists() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());

    // The session is created (and the subscription recorded in it).
    let first = Running::start(&broker, "gw-a", &raw_filter(), Recorder::default()).await;
    assert_eq!(first.stop().await.received, 0);

    let sent = numbered(0, 500);
    publish_lines(&broker, RAW, sent.clone()).await;

    let h = Recorder::default();
    let run = Running::start(&broker, "gw-a", &raw_filter(), h.clone()).await;
    wait_until(Duration::from_secs(30), "500 messages committed", || {
        h.committed().len() >= 500
    })
    .await;
    let counts = run.stop().await;
    assert_eq!(h.committed(), sent, "every message, once, in order");
    assert_eq!(
        (
            counts.received,
            counts.committed,
            counts.rejected,
            counts.acked
        ),
        (500, 500, 0, 500),
        "{counts:?}"
    );
    assert_eq!(counts.handler_failures, 0, "{counts:?}");
    let batches = h.batches.lock().unwrap().clone();
    assert!(
        batches.iter().all(|&n| n <= 20),
        "no batch holds more than the broker's in-flight limit: {batches:?}"
    );

    let (again, counts) = leftovers(&broker, "gw-a", Duration::from_secs(1)).await;
    assert!(
        again.is_empty(),
        "acknowledged messages came again ({} of them): {counts:?}",
        again.len()
    );
}

/// (b) A failing handler acknowledges nothing: the broker stops at its
/// in-flight limit (20 for a stock Mosquitto), and once the consumer is
/// dropped without acknowledging, a new one with the same client id gets
/// every message again (the first 20 flagged as redelivered); when its
/// handler recovers after 3 failures, all 30 are committed, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_acknowledges_nothing_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let down = Recorder::failing_first(usize::MAX);
    let run = Running::start(&broker, "gw-b", &raw_filter(), down.clone()).await;
    let sent = numbered(0, 30);
    publish_lines(&broker, RAW, sent.clone()).await;
    wait_until(
        Duration::from_secs(10),
        "20 messages and three failed handler calls",
        || {
            let now = run.stats.snapshot();
            now.received >= 20 && now.handler_failures >= 3
        },
    )
    .await;
    // Long enough for the broker to send more, had anything been acked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = run.crash().await;
    assert!(down.committed().is_empty());
    assert_eq!(counts.acked, 0, "{counts:?}");
    assert_eq!(counts.committed, 0, "{counts:?}");
    assert_eq!(
        counts.received, 20,
        "the broker sends 20 unacknowledged messages, then waits: {counts:?}"
    );

    let recovering = Recorder::failing_first(3);
    let run = Running::start(&broker, "gw-b", &raw_filter(), recovering.clone()).await;
    wait_until(Duration::from_secs(20), "30 messages committed", || {
        recovering.committed().len() >= 30
    })
    .await;
    let counts = run.stop().await;
    let got = recovering.committed();
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>(),
        sent.iter().collect::<BTreeSet<_>>(),
        "every message"
    );
    assert_eq!(got, sent, "once each, in order");
    assert_eq!(counts.handler_failures, 3, "{counts:?}");
    assert_eq!(
        counts.redelivered, 20,
        "the 20 in flight at the crash come flagged dup: {counts:?}"
    );
    assert_eq!((counts.committed, counts.acked), (30, 30), "{counts:?}");

    let (again, counts) = leftovers(&broker, "gw-b", Duration::from_secs(1)).await;
    assert!(
        again.is_empty(),
        "{again:?} {counts:?}; broker log:\n{}",
        broker.log()
    );
}

/// (b2) The consumer bounds what it reads ahead of its acknowledgements
/// itself, with TCP (`publish::connection::Intake`): a broker without an
/// in-flight limit (`max_inflight_messages 0`, or a Mosquitto 2.0.11 that
/// loses count of it while acknowledgements flow) sends everything at once,
/// and a consumer whose database is down would hold it all in memory.
/// With the handler failing, it holds its read-ahead (1,024 messages, the
/// socket keeps some more and the broker the rest) and the count stays
/// there; once the handler recovers, all 20,000 are committed, once each,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_no_further_ahead_than_its_bound_whatever_the_broker_sends() {
    const SENT: usize = 20_000;
    const READ_AHEAD: u64 = 1024;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(
        dir.path(),
        &Spec {
            max_inflight_messages: Some(0),
            max_queued_messages: Some(100_000),
            ..Spec::default()
        },
    );
    let h = Recorder::default();
    h.down.store(true, Ordering::SeqCst);
    let run = Running::start(&broker, "gw-bound", &raw_filter(), h.clone()).await;
    let sent = numbered(0, SENT);
    publish_lines(&broker, RAW, sent.clone()).await;
    wait_until(Duration::from_secs(20), "the read-ahead received", || {
        run.stats.snapshot().received >= READ_AHEAD
    })
    .await;
    // The loop is polled once a second while paused (the keepalive): a
    // few more messages, not thousands.
    let held = run.stats.snapshot().received;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = run.stats.snapshot();
    assert!(
        held < READ_AHEAD + 50 && later.received < READ_AHEAD + 50,
        "received {held}, then {} of {SENT} with nothing acknowledged: the consumer read past \
         its bound of {READ_AHEAD}: {later:?}",
        later.received
    );
    assert_eq!((later.acked, later.committed), (0, 0), "{later:?}");

    h.down.store(false, Ordering::SeqCst);
    wait_until(Duration::from_mins(1), "every message committed", || {
        h.committed().len() >= SENT
    })
    .await;
    let counts = run.stop().await;
    assert_eq!(h.committed(), sent, "every message, once, in order");
    assert_eq!(
        (counts.committed, counts.acked),
        (SENT as u64, SENT as u64),
        "{counts:?}"
    );
}

/// (c) Two consumers in one shared group (`$share/g/...`) split the
/// messages between them and together receive every one, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_of_a_shared_group_split_the_stream_and_miss_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let filters = vec![shared_filter("g", "edgeprio/+/raw").unwrap()];
    assert_eq!(filters[0], "$share/g/edgeprio/+/raw");
    let (h1, h2) = (Recorder::default(), Recorder::default());
    let c1 = Running::start(&broker, "col-1", &filters, h1.clone()).await;
    let c2 = Running::start(&broker, "col-2", &filters, h2.clone()).await;
    let sent = numbered(0, 400);
    publish_lines(&broker, RAW, sent.clone()).await;
    wait_until(
        Duration::from_secs(30),
        "400 messages between the two",
        || h1.committed().len() + h2.committed().len() >= 400,
    )
    .await;
    // Any duplicate would arrive now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (n1, n2) = (c1.stop().await, c2.stop().await);
    let (got1, got2) = (h1.committed(), h2.committed());
    assert!(
        !got1.is_empty() && !got2.is_empty(),
        "both members get a share: {} and {}",
        got1.len(),
        got2.len()
    );
    assert_eq!(got1.len() + got2.len(), 400, "each message once");
    let all: BTreeSet<&String> = got1.iter().chain(&got2).collect();
    assert_eq!(all, sent.iter().collect::<BTreeSet<_>>());
    assert_eq!(n1.acked + n2.acked, 400, "{n1:?} {n2:?}");
}

/// A malformed message is rejected, counted and acknowledged (it never
/// comes again), and the good ones around it are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_acknowledged_and_counted_without_stalling() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &Spec::default());
    let h = Recorder::default();
    let run = Running::start(&broker, "gw-m", &raw_filter(), h.clone()).await;
    let mut payloads = numbered(0, 50);
    for i in [0, 7, 25, 49] {
        payloads.insert(i, "malformed".into());
    }
    publish_lines(&broker, RAW, payloads).await;
    wait_until(Duration::from_secs(10), "54 messages handled", || {
        run.stats.snapshot().received >= 54 && h.committed().len() >= 50
    })
    .await;
    let counts = run.stop().await;
    assert_eq!(h.committed(), numbered(0, 50));
    assert_eq!(
        (
            counts.received,
            counts.committed,
            counts.rejected,
            counts.acked
        ),
        (54, 50, 4, 54),
        "{counts:?}"
    );
    let (again, counts) = leftovers(&broker, "gw-m", Duration::from_secs(1)).await;
    assert!(again.is_empty() && counts.received == 0, "{counts:?}");
}

/// A broker restarted without persistence has lost the session: the
/// consumer reconnects by itself and subscribes again, so what is
/// published afterwards arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_the_consumer_subscribes_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), &Spec::default());
    let h = Recorder::default();
    let run = Running::start(&broker, "gw-r", &raw_filter(), h.clone()).await;
    publish_lines(&broker, RAW, numbered(0, 5)).await;
    wait_until(Duration::from_secs(10), "5 before the restart", || {
        h.committed().len() >= 5
    })
    .await;
    broker.kill();
    broker.restart();
    // Published until one arrives: the first attempts may come before the
    // consumer has reconnected (the broker keeps nothing for it then).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 5;
    while h.committed().len() <= 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrives 20 s after the broker restarted:\n{}",
            broker.log()
        );
        publish_lines(&broker, RAW, numbered(n, 1)).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = run.stop().await;
    assert!(counts.acked >= 6, "{counts:?}");
}

/// Messages the handler could not commit yet when the broker restarted
/// without persistence (so it lost the session and them) are still held by
/// the consumer and committed once the handler recovers: the consumer's
/// copy is then the only one. Their acknowledgements died with the old
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_when_the_broker_loses_the_session_are_still_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), &Spec::default());
    let h = Recorder::default();
    h.down.store(true, Ordering::SeqCst);
    let run = Running::start(&broker, "gw-l", &raw_filter(), h.clone()).await;
    let sent = numbered(0, 5);
    publish_lines(&broker, RAW, sent.clone()).await;
    wait_until(Duration::from_secs(10), "5 received, a failed call", || {
        let now = run.stats.snapshot();
        now.received >= 5 && now.handler_failures >= 1
    })
    .await;
    broker.kill();
    broker.restart();
    h.down.store(false, Ordering::SeqCst);
    wait_until(
        Duration::from_secs(40),
        "the held messages committed",
        || h.committed().len() >= 5,
    )
    .await;
    let counts = run.stop().await;
    assert_eq!(h.committed(), sent);
    assert_eq!((counts.committed, counts.acked), (5, 0), "{counts:?}");
}
