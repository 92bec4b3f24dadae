//! A service's durable queue and the loop that applies its events.
//!
//! Each delivery is applied in one PostgreSQL transaction that also records
//! the event id in the inbox (a duplicate does nothing) and the ticket's
//! version (an older fact is ignored), and is acknowledged only after that
//! transaction commits. A delivery that fails is retried with backoff; at
//! its last attempt it is published to the dead-letter exchange with its
//! error and only then acknowledged, so it is never silently dropped and
//! never blocks the queue.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use futures_util::StreamExt;
use hotline_proto::events::v1::EventEnvelope;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{BROKER_DELIVERY_LIMIT, Bus, header_int, header_str};
use crate::{config::BusConfig, telemetry};

/// What a service does with one event, inside the consumer's transaction.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(
        &self,
        conn: &mut PgConnection,
        event: &EventEnvelope,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What became of a delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler ran and its effect is committed.
    Applied,
    /// The event id was already in the inbox: nothing done.
    Duplicate,
    /// The ticket has moved past this version: nothing done.
    Stale,
}

pub struct Consumer<H> {
    /// The consuming service: names the queue and its dead letters.
    service: String,
    /// Routing keys (event types, `*`/`#` patterns allowed) to receive.
    bindings: Vec<String>,
    pool: PgPool,
    bus: Arc<Bus>,
    handler: H,
    config: BusConfig,
}

impl<H: EventHandler> Consumer<H> {
    pub fn new(
        service: &str,
        bindings: &[&str],
        pool: PgPool,
        bus: Arc<Bus>,
        handler: H,
        config: BusConfig,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..BROKER_DELIVERY_LIMIT as u32).contains(&config.max_attempts),
            "bus.max_attempts must be between 1 and {}",
            BROKER_DELIVERY_LIMIT - 1
        );
        Ok(Self {
            service: service.to_owned(),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            pool,
            bus,
            handler,
            config,
        })
    }

    /// Applies one event exactly once: the single step the loop runs.
    pub async fn apply(&self, event: &EventEnvelope) -> anyhow::Result<Outcome> {
        let event_id = Uuid::parse_str(&event.id).context("event id is not a UUID")?;
        let mut tx = self.pool.begin().await?;
        let first = sqlx::query(
            "INSERT INTO inbox (event_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(&event.r#type)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first {
            return Ok(Outcome::Duplicate);
        }
        if !event.ticket_id.is_empty() {
            let ticket_id = Uuid::parse_str(&event.ticket_id).context("ticket id is not a UUID")?;
            let current = sqlx::query(
                "INSERT INTO applied_versions (ticket_id, version) VALUES ($1, $2)
                 ON CONFLICT (ticket_id) DO UPDATE SET version = EXCLUDED.version
                 WHERE applied_versions.version <= EXCLUDED.version",
            )
            .bind(ticket_id)
            .bind(event.ticket_version)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !current {
                tx.commit().await?;
                return Ok(Outcome::Stale);
            }
        }
        self.handler.handle(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Outcome::Applied)
    }

    /// Declares the service's queue and bindings (idempotent).
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        let bindings: Vec<&str> = self.bindings.iter().map(String::as_str).collect();
        super::declare_queue(channel, &self.bus, &self.service, &bindings).await
    }

    /// Consumes until `cancel`, starting over after every broker outage; on
    /// cancel, stops taking deliveries and finishes those in flight.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        while let Some(connection) = self.bus.connection(&cancel).await {
            match self.clone().consume(&connection, &cancel).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(
                        service = %self.service,
                        error = format!("{error:#}"),
                        "consumer interrupted; resuming when the broker is back"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
        Ok(())
    }

    async fn consume(
        self: Arc<Self>,
        connection: &Connection,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.declare(&channel).await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let mut deliveries = channel
            .basic_consume(
                self.bus.queue(&self.service).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut in_flight = JoinSet::new();
        let result = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = channel.basic_cancel(deliveries.tag(), BasicCancelOptions::default()).await;
                    break Ok(());
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        in_flight.spawn(self.clone().deliver(channel.clone(), delivery));
                    }
                    Some(Err(error)) => break Err(error.into()),
                    None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
                },
            }
        };
        while in_flight.join_next().await.is_some() {}
        result
    }

    async fn deliver(self: Arc<Self>, channel: Channel, delivery: Delivery) {
        let headers = delivery.properties.headers().as_ref();
        let attempt = header_int(headers, "x-delivery-count").unwrap_or(0) + 1;
        let span = tracing::info_span!(
            "consume",
            service = %self.service,
            event_type = %delivery.routing_key,
            attempt
        );
        telemetry::set_parent(
            &span,
            header_str(headers, "traceparent").as_deref(),
            header_str(headers, "tracestate").as_deref(),
        );
        async {
            let applied = match EventEnvelope::decode(delivery.data.as_slice()) {
                Ok(event) => self.apply(&event).await,
                Err(error) => {
                    self.dead_letter(&channel, &delivery, &format!("undecodable event: {error}"), attempt)
                        .await;
                    return;
                }
            };
            match applied {
                Ok(outcome) => {
                    tracing::debug!(?outcome, "event applied");
                    metrics::counter!("hotline_events_consumed_total", "service" => self.service.clone())
                        .increment(1);
                    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                        tracing::warn!(%error, "ack failed; the broker will redeliver");
                    }
                }
                Err(error) if attempt >= i64::from(self.config.max_attempts) => {
                    self.dead_letter(&channel, &delivery, &format!("{error:#}"), attempt).await;
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "event failed; will retry");
                    metrics::counter!("hotline_consumer_redeliveries_total", "service" => self.service.clone())
                        .increment(1);
                    let exponent = u32::try_from(attempt - 1).unwrap_or(0).min(6);
                    tokio::time::sleep(self.config.retry_backoff * 2u32.pow(exponent)).await;
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    };
                    if let Err(error) = delivery.nack(requeue).await {
                        tracing::warn!(%error, "nack failed; the broker will redeliver");
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Moves a delivery to the service's dead-letter queue with its error,
    /// then acknowledges it. If the dead letter is not confirmed the delivery
    /// is requeued instead: it is never dropped.
    async fn dead_letter(&self, channel: &Channel, delivery: &Delivery, error: &str, attempt: i64) {
        tracing::error!(%error, attempt, "event dead-lettered");
        metrics::counter!("hotline_dead_letters_total", "service" => self.service.clone())
            .increment(1);
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers
            .insert(
                "x-hotline-error".into(),
                AMQPValue::LongString(error.into()),
            )
            .insert(
                "x-hotline-routing-key".into(),
                AMQPValue::LongString(delivery.routing_key.as_str().into()),
            )
            .insert("x-hotline-attempts".into(), AMQPValue::LongLongInt(attempt));
        let properties: BasicProperties = delivery.properties.clone().with_headers(headers);
        let published = async {
            let confirm = channel
                .basic_publish(
                    self.bus.dead_exchange().into(),
                    self.service.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &delivery.data,
                    properties,
                )
                .await?
                .await?;
            match confirm {
                Confirmation::Ack(None) => anyhow::Ok(()),
                other => anyhow::bail!("dead letter not confirmed: {other:?}"),
            }
        }
        .await;
        let acknowledged = match published {
            Ok(()) => delivery.ack(BasicAckOptions::default()).await,
            Err(publish_error) => {
                tracing::error!(
                    error = format!("{publish_error:#}"),
                    "cannot dead-letter; requeueing"
                );
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            }
        };
        if let Err(error) = acknowledged {
            tracing::warn!(%error, "settling a dead letter failed; the broker will redeliver");
        }
    }
}
