//! The plain relay, the ceiling of the broker path in `edgeprio bench`:
//! the gateway's consumer ([`crate::consume`]) on the raw topics, each
//! message republished as it is on `<prefix>/<node>/relayed`, with no
//! scoring and no database. What the gateway does beyond it is what it
//! costs to score, log and route.
//!
//! It runs as its own process (`edgeprio bench-relay`, hidden: the bench
//! starts it) so that its CPU and memory are measured as the gateway's
//! are.

use std::future::Future;

use rumqttc::{AsyncClient, QoS};

use crate::config::MqttConfig;
use crate::consume::{
    BatchLimits, Consumer, ConsumerOptions, Handled, Handler, HandlerError, Incoming,
};
use crate::domain::Topics;
use crate::publish::connection::client_options;
use crate::store::BrokerState;

/// The suffix of the relayed topics.
pub const RELAYED: &str = "relayed";

/// Relays `<prefix>/+/raw` to `<prefix>/<node>/relayed` until `shutdown`;
/// `ready` is called once the consumer is subscribed.
pub async fn relay(
    mqtt: &MqttConfig,
    client_id: &str,
    max_batch: u16,
    ready: impl FnOnce() + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let mut options = client_options(mqtt, &format!("{client_id}-out"), None)?;
    options.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 8192);
    let driver = tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                tracing::warn!("the relay's publisher: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    });
    let consumer = Consumer::new(
        mqtt,
        ConsumerOptions {
            client_id: client_id.to_owned(),
            filters: vec![Topics::every_node(&mqtt.topic_prefix, Topics::RAW)],
            limits: BatchLimits {
                max_messages: usize::from(max_batch),
                ..BatchLimits::MOSQUITTO_DEFAULT
            },
            last_will: None,
            online: None,
            once: false,
        },
    );
    let mut status = consumer.status();
    tokio::spawn(async move {
        while status.borrow_and_update().state != BrokerState::Connected {
            if status.changed().await.is_err() {
                return;
            }
        }
        ready();
    });
    let handler = Relay {
        client,
        prefix: mqtt.topic_prefix.clone(),
    };
    consumer.run(handler, shutdown).await;
    driver.abort();
    Ok(())
}

/// The consumer's handler: each message published again, unchanged.
struct Relay {
    /// The publishing connection.
    client: AsyncClient,
    /// `<prefix>` of both topics.
    prefix: String,
}

impl Handler for Relay {
    async fn handle(&mut self, batch: &[Incoming]) -> Result<Handled, HandlerError> {
        let mut handled = Handled::all(batch);
        for (i, m) in batch.iter().enumerate() {
            match crate::gateway::node_of(m.topic()) {
                Ok(node) => {
                    let topic = format!("{}/{node}/{RELAYED}", self.prefix);
                    self.client
                        .publish(topic, QoS::AtLeastOnce, false, m.payload().to_vec())
                        .await
                        .map_err(HandlerError::new)?;
                }
                Err(e) => handled.reject(i, e.kind(), e.to_string()),
            }
        }
        Ok(handled)
    }
}
