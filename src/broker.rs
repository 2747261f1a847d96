//! The embedded MQTT broker (rumqttd): `[broker] enabled = true` makes a
//! single Pi its own gateway, and `edgeprio demo` runs the whole pipeline
//! on one machine with it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Starts a broker listening on `listen` on its own thread and returns
/// once it accepts connections.
pub fn start(listen: SocketAddr) -> Result<(), String> {
    let config = format!(
        r#"
id = 0
[router]
max_connections = 64
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "edgeprio"
listen = "{listen}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 500
dynamic_filters = true
"#
    );
    let config: rumqttd::Config =
        toml::from_str(&config).map_err(|e| format!("embedded broker config: {e}"))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("the embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|e| format!("cannot start the embedded broker thread: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let probe = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "the embedded broker did not start listening on {listen} (is the port in use?)"
    ))
}

/// A free loopback port for the demo's broker.
pub fn free_loopback_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))
}
