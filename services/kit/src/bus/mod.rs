//! The event bus on RabbitMQ (ARCHITECTURE §5–§6).
//!
//! - [`Bus`] owns one AMQP connection: it connects, declares the exchanges,
//!   reconnects with backoff after a broker restart, and tells readiness
//!   whether it is connected. A process has two, one to publish and one to
//!   consume, as RabbitMQ advises: a publisher blocked by a broker alarm must
//!   not stall the acknowledgements that let queues drain.
//! - [`outbox`]: services write events in their own transaction; the
//!   [`outbox::Relay`] publishes them with confirms.
//! - [`consumer`]: a service's durable queue, deduplicated through the inbox,
//!   ordered by ticket version, acknowledged after commit, dead-lettered with
//!   its error after bounded retries.
//! - [`dead_letters`]: the events a consumer gave up on, rows in its
//!   service's schema, listed and replayed by an admin.
//!
//! Names under namespace `ns`: exchange `ns.events` (topic, routing key =
//! event type), queue `ns.<service>` (quorum). The broker's own safety net,
//! a message delivered [`BROKER_DELIVERY_LIMIT`] times, goes to the
//! dead-letter exchange `ns.dead` (direct, routing key = service) and the
//! queue `ns.<service>.dead`; the consumer's dead letters do not.

pub mod consumer;
pub mod dead_letters;
pub mod outbox;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::{
    Channel, Connection, ConnectionProperties, Event, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;

/// The process's connection to RabbitMQ, re-established whenever it drops.
pub struct Bus {
    /// Prefix of every exchange and queue name.
    namespace: String,
    /// What this connection is for (`publish`, `consume`): its name on the
    /// broker's side.
    purpose: &'static str,
    url: Secret,
    /// The live connection, `None` while disconnected. Publishers and
    /// consumers wait on it and start over when it changes.
    connection: watch::Sender<Option<Arc<Connection>>>,
}

impl Bus {
    pub fn new(url: Secret, namespace: impl Into<String>, purpose: &'static str) -> Arc<Self> {
        Arc::new(Self {
            namespace: namespace.into(),
            purpose,
            url,
            connection: watch::Sender::new(None),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The topic exchange every event is published to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// Where the broker puts a message past its delivery limit, routed by
    /// the consuming service's name.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    pub fn queue(&self, service: &str) -> String {
        format!("{}.{service}", self.namespace)
    }

    pub fn dead_queue(&self, service: &str) -> String {
        format!("{}.{service}.dead", self.namespace)
    }

    pub fn is_connected(&self) -> bool {
        self.connection
            .borrow()
            .as_ref()
            .is_some_and(|connection| connection.status().connected())
    }

    /// Waits for a live connection; `None` once `cancel` fires.
    pub async fn connection(&self, cancel: &CancellationToken) -> Option<Arc<Connection>> {
        let mut receiver = self.connection.subscribe();
        tokio::select! {
            _ = cancel.cancelled() => None,
            connection = receiver.wait_for(|c| c.as_ref().is_some_and(|c| c.status().connected())) => {
                connection.ok().and_then(|c| c.clone())
            }
        }
    }

    /// Resolves once `connection` is no longer the live connection of this
    /// bus: it failed (and the bus is reconnecting) or the bus stopped. A
    /// consumer's delivery stream does not always end when its connection
    /// dies; this does.
    pub async fn lost(&self, connection: &Arc<Connection>) {
        let mut receiver = self.connection.subscribe();
        let _ = receiver
            .wait_for(|current| !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, connection)))
            .await;
    }

    /// Keeps the connection up until `cancel`: connects, declares the
    /// exchanges, and starts over with backoff whenever the connection fails.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let attempt = tokio::select! {
                _ = cancel.cancelled() => break,
                // A broker that accepts TCP but never finishes the handshake
                // must not stall reconnection.
                attempt = tokio::time::timeout(Duration::from_secs(10), self.connect()) => {
                    attempt.unwrap_or_else(|_| Err(anyhow::anyhow!("the AMQP handshake timed out")))
                }
            };
            let connection = match attempt {
                Ok(connection) => Arc::new(connection),
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error = format!("{error:#}"),
                        ?delay,
                        "cannot reach RabbitMQ; retrying"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let mut events = Box::pin(connection.events_listener());
            if !connection.status().connected() {
                // It died before we listened: its error event is gone.
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            backoff.reset();
            tracing::info!(namespace = %self.namespace, purpose = self.purpose, "connected to RabbitMQ");
            self.connection.send_replace(Some(connection.clone()));
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => {
                        self.connection.send_replace(None);
                        let close = connection.close(200, "shutting down".into());
                        let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
                        return Ok(());
                    }
                    event = events.next() => match event {
                        Some(Event::Error(error)) if !connection.status().connected() => {
                            tracing::warn!(%error, "lost the RabbitMQ connection");
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            self.connection.send_replace(None);
        }
        self.connection.send_replace(None);
        Ok(())
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("hotline:{}:{}", self.namespace, self.purpose).into());
        let connection = Connection::connect(self.url.expose(), properties).await?;
        let channel = connection.create_channel().await?;
        self.declare_exchanges(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(connection)
    }

    async fn declare_exchanges(&self, channel: &Channel) -> anyhow::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.events_exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Declares the exchanges and each `(service, bindings)` queue, so events
    /// published before a consumer first starts wait in its queue. Run by
    /// `hotline migrate`; consumers declare the same again when they start.
    pub async fn declare_topology(&self, queues: &[(&str, &[&str])]) -> anyhow::Result<()> {
        let connection = Connection::connect(self.url.expose(), ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ to declare the topology")?;
        let channel = connection.create_channel().await?;
        self.declare_exchanges(&channel).await?;
        for (service, bindings) in queues {
            declare_queue(&channel, self, service, bindings).await?;
        }
        let _ = connection.close(200, "declared".into()).await;
        Ok(())
    }
}

/// RabbitMQ's own limit on deliveries of one message, a safety net for a
/// message that crashes the process before the consumer can dead-letter it.
/// Fixed, because a queue cannot be redeclared with other arguments.
const BROKER_DELIVERY_LIMIT: i32 = 20;

/// Declares `service`'s quorum queue bound to `bindings` on the events
/// exchange, and its dead-letter queue. Idempotent.
async fn declare_queue(
    channel: &Channel,
    bus: &Bus,
    service: &str,
    bindings: &[&str],
) -> anyhow::Result<()> {
    let queue = bus.queue(service);
    let dead_queue = bus.dead_queue(service);
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            dead_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            quorum.clone(),
        )
        .await?;
    channel
        .queue_bind(
            dead_queue.as_str().into(),
            bus.dead_exchange().into(),
            service.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut arguments = quorum;
    arguments
        .insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(bus.dead_exchange().into()),
        )
        .insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(service.into()),
        )
        .insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(BROKER_DELIVERY_LIMIT),
        );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await?;
    for binding in bindings {
        channel
            .queue_bind(
                queue.as_str().into(),
                bus.events_exchange().into(),
                (*binding).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// A publisher-confirm channel on a [`Bus`], opened on first use and again
/// after a failure.
pub struct ConfirmChannel {
    bus: Arc<Bus>,
    slot: tokio::sync::Mutex<Option<Channel>>,
}

impl ConfirmChannel {
    pub fn new(bus: Arc<Bus>) -> Self {
        Self {
            bus,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The open channel, waiting for the broker if need be; `Err` once
    /// `cancel` fires first.
    pub async fn get(&self, cancel: &CancellationToken) -> anyhow::Result<Channel> {
        let mut slot = self.slot.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let connection = self.bus.connection(cancel).await.context("shutting down")?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Forgets the channel after a failure: the next [`ConfirmChannel::get`]
    /// opens a fresh one.
    pub async fn reset(&self) {
        *self.slot.lock().await = None;
    }
}

/// Exponential backoff between `min` and `max`.
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The wait after failed attempt `attempt` (from 1) of a job retried
    /// with doubling backoff: `first`, then twice that, and so on, at most
    /// `max`.
    pub fn after_attempt(first: Duration, max: Duration, attempt: i64) -> Duration {
        let exponent = u32::try_from(attempt - 1).unwrap_or(0).min(16);
        (first * 2u32.pow(exponent)).min(max)
    }
}

/// Reads a string header of an AMQP message.
pub fn header_str(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(value) => {
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    }
}

/// Reads an integer header of an AMQP message, whatever its width.
pub fn header_int(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    match headers?.inner().get(key)? {
        AMQPValue::LongLongInt(value) => Some(*value),
        AMQPValue::LongInt(value) => Some(i64::from(*value)),
        AMQPValue::LongUInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortUInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortShortInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortShortUInt(value) => Some(i64::from(*value)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_the_cap() {
        let (first, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let waits: Vec<u64> = [0, 1, 2, 3, 7, 1000]
            .into_iter()
            .map(|attempt| Backoff::after_attempt(first, max, attempt).as_secs())
            .collect();
        assert_eq!(waits, vec![5, 5, 10, 20, 300, 300]);
    }
}
