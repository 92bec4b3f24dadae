//! The transactional outbox: events are rows written in the same transaction
//! as the change they describe; the [`Relay`] publishes them with publisher
//! confirms and deletes them only once RabbitMQ has confirmed.
//!
//! Writers wake their process's relay through an [`OutboxSignal`] right
//! after they commit; a poll is the safety net for rows a crashed process
//! left behind. (A `NOTIFY` per transaction was measured to cost 40% of the
//! write throughput, and every relay drains every row anyway: see
//! docs/decisions.md.)
//!
//! The relay takes rows by presence (`ORDER BY id ... FOR UPDATE SKIP
//! LOCKED`), never after a remembered id, so a row whose transaction commits
//! after a higher id's is still published. A crash between the confirm and
//! the delete publishes a row twice; consumers deduplicate on the event id.
//!
//! A row naming a `service` (a replayed dead letter) goes to that service's
//! queue alone, through the default exchange.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use hotline_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Backoff, Bus, ConfirmChannel};
use crate::{
    config::BusConfig,
    telemetry::{self, counter_from_zero},
    time::timestamp,
};

/// A new event stamped with a fresh UUIDv7, the time, and the current trace.
pub fn envelope(
    event_type: &str,
    ticket: Option<(Uuid, i64)>,
    occurred_at: DateTime<Utc>,
    payload: Payload,
) -> EventEnvelope {
    let (traceparent, tracestate) = telemetry::current_trace_context();
    let (ticket_id, ticket_version) = ticket
        .map(|(id, version)| (id.to_string(), version))
        .unwrap_or_default();
    EventEnvelope {
        id: Uuid::now_v7().to_string(),
        r#type: event_type.to_owned(),
        occurred_at: Some(timestamp(occurred_at)),
        ticket_id,
        ticket_version,
        traceparent,
        tracestate,
        payload: Some(payload),
    }
}

/// Events ready to be written as outbox rows, as the five arrays the
/// insert binds. Lets a writer put its events into the same statement as
/// its change (see [`OutboxRows::insert_sql`]).
pub struct OutboxRows {
    ids: Vec<Uuid>,
    keys: Vec<String>,
    bodies: Vec<Vec<u8>>,
    parents: Vec<Option<String>>,
    states: Vec<Option<String>>,
}

impl OutboxRows {
    pub fn new(events: &[EventEnvelope]) -> anyhow::Result<Self> {
        let mut rows = Self {
            ids: Vec::with_capacity(events.len()),
            keys: Vec::with_capacity(events.len()),
            bodies: Vec::with_capacity(events.len()),
            parents: Vec::with_capacity(events.len()),
            states: Vec::with_capacity(events.len()),
        };
        for event in events {
            rows.ids
                .push(Uuid::parse_str(&event.id).context("event id is not a UUID")?);
            rows.keys.push(event.r#type.clone());
            rows.bodies.push(event.encode_to_vec());
            rows.parents
                .push(Some(event.traceparent.clone()).filter(|t| !t.is_empty()));
            rows.states
                .push(Some(event.tracestate.clone()).filter(|t| !t.is_empty()));
        }
        Ok(rows)
    }

    /// The insert, reading its five arrays from parameters `$first` to
    /// `$first + 4`, in array order; with `when`, only the rows for which
    /// that SQL condition holds (for use inside a `WITH` statement whose
    /// change may turn out to be a no-op; `ord` is a row's position, from 1).
    pub fn insert_sql(first: usize, when: Option<&str>) -> String {
        let p = |i: usize| first + i;
        format!(
            "INSERT INTO outbox (event_id, routing_key, envelope, traceparent, tracestate)
             SELECT event_id, routing_key, envelope, traceparent, tracestate
             FROM UNNEST(${}::uuid[], ${}::text[], ${}::bytea[], ${}::text[], ${}::text[])
                 WITH ORDINALITY AS e(event_id, routing_key, envelope, traceparent, tracestate, ord)
             {}
             ORDER BY ord",
            p(0),
            p(1),
            p(2),
            p(3),
            p(4),
            when.map(|w| format!("WHERE {w}")).unwrap_or_default()
        )
    }

    /// Binds the arrays, in the order [`OutboxRows::insert_sql`] reads them.
    pub fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.ids)
            .bind(self.keys)
            .bind(self.bodies)
            .bind(self.parents)
            .bind(self.states)
    }
}

/// Writes `events` to the outbox inside the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, events: &[EventEnvelope]) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = OutboxRows::insert_sql(1, None);
    OutboxRows::new(events)?
        .bind(sqlx::query(&sql))
        .execute(conn)
        .await
        .context("writing events to the outbox")?;
    Ok(())
}

/// How long the relay waits for RabbitMQ to confirm a batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Wakes the relay of this process once a writer has committed events.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Call after the transaction that enqueued events has committed.
    pub fn committed(&self) {
        // Stores a permit when the relay is busy, so no wake-up is lost.
        self.0.notify_one();
    }

    /// Waits for the next commit (or the one stored while nobody waited):
    /// for a task other than the relay that acts on what consumers commit,
    /// like dispatch's router.
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}

/// Publishes one schema's outbox.
pub struct Relay {
    pool: PgPool,
    signal: OutboxSignal,
    batch: i64,
    poll: Duration,
    /// How long the relay lets writers add rows after a wake-up, so one
    /// round publishes many rows rather than one.
    linger: Duration,
    /// Where it publishes, with confirms.
    channel: ConfirmChannel,
    /// `hotline_events_published_total{service}`.
    published: metrics::Counter,
    /// `hotline_outbox_lag_seconds{service}`.
    lag: metrics::Histogram,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    routing_key: String,
    envelope: Vec<u8>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    created_at: DateTime<Utc>,
    /// Set for a replayed dead letter: only this service's queue gets it.
    service: Option<String>,
}

impl Relay {
    /// The relay of `service`'s outbox, in `pool`'s schema.
    pub fn new(
        service: &str,
        pool: PgPool,
        signal: OutboxSignal,
        bus: Arc<Bus>,
        config: &BusConfig,
    ) -> Self {
        counter_from_zero(
            "hotline_events_published_total",
            "Events a service's relay published and RabbitMQ confirmed.",
            &[&[("service", service)]],
        );
        metrics::describe_histogram!(
            "hotline_outbox_lag_seconds",
            metrics::Unit::Seconds,
            "From an event's commit to RabbitMQ's confirm of it."
        );
        let labels = [("service", service.to_owned())];
        Self {
            published: metrics::counter!("hotline_events_published_total", &labels),
            lag: metrics::histogram!("hotline_outbox_lag_seconds", &labels),
            pool,
            signal,
            batch: config.relay_batch,
            poll: config.relay_poll,
            linger: config.relay_linger,
            channel: ConfirmChannel::new(bus),
        }
    }

    /// Publishes up to one batch of pending rows and deletes them once
    /// confirmed. Returns how many were published.
    pub async fn try_publish_batch(&self, cancel: &CancellationToken) -> anyhow::Result<usize> {
        let channel = self.channel.get(cancel).await?;
        let result = self.publish_batch(&channel).await;
        if result.is_err() {
            // The channel may be broken; the next round opens a fresh one.
            self.channel.reset().await;
        }
        result
    }

    async fn publish_batch(&self, channel: &Channel) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, event_id, routing_key, envelope, traceparent, tracestate, created_at, service
             FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.batch)
        .fetch_all(&mut *tx)
        .await
        .context("reading the outbox")?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Row locks are held meanwhile: a broker that blocks publishers (an
        // alarm) or never confirms must not hold them forever.
        let confirmations = tokio::time::timeout(CONFIRM_TIMEOUT, self.publish(channel, &rows))
            .await
            .context("RabbitMQ did not take and confirm the batch within 10s")??;
        // Only confirmed rows leave the outbox; a refused one stays, to be
        // published again, without holding back the rest.
        let now = Utc::now();
        let mut confirmed = Vec::with_capacity(rows.len());
        let mut refused = 0;
        for (row, confirmation) in rows.iter().zip(confirmations) {
            match confirmation {
                Ok(Confirmation::Ack(_)) => {
                    confirmed.push(row.id);
                    let lag = (now - row.created_at).to_std().unwrap_or_default();
                    self.lag.record(lag.as_secs_f64());
                }
                Ok(other) => {
                    refused += 1;
                    tracing::warn!(event_type = %row.routing_key, ?other, "RabbitMQ refused an event");
                }
                Err(error) => {
                    refused += 1;
                    tracing::warn!(%error, "lost the confirm of an event");
                }
            }
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&confirmed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await.context("marking events sent")?;
        self.published.increment(confirmed.len() as u64);
        anyhow::ensure!(
            refused == 0,
            "{refused} events were not confirmed; they stay in the outbox"
        );
        Ok(confirmed.len())
    }

    /// Publishes `rows` and awaits every confirm, in row order.
    async fn publish(
        &self,
        channel: &Channel,
        rows: &[OutboxRow],
    ) -> anyhow::Result<Vec<lapin::Result<Confirmation>>> {
        let bus = self.channel.bus();
        let events = bus.events_exchange();
        let mut confirms = Vec::with_capacity(rows.len());
        for row in rows {
            let mut headers = FieldTable::default();
            if let Some(traceparent) = &row.traceparent {
                headers.insert(
                    "traceparent".into(),
                    AMQPValue::LongString(traceparent.as_str().into()),
                );
            }
            if let Some(tracestate) = &row.tracestate {
                headers.insert(
                    "tracestate".into(),
                    AMQPValue::LongString(tracestate.as_str().into()),
                );
            }
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/x-protobuf".into())
                .with_message_id(row.event_id.to_string().into())
                .with_type(row.routing_key.as_str().into())
                .with_timestamp(u64::try_from(row.created_at.timestamp()).unwrap_or_default())
                .with_headers(headers);
            // The default exchange routes by queue name: to one service.
            let queue;
            let (exchange, routing_key) = match &row.service {
                Some(service) => {
                    queue = bus.queue(service);
                    ("", queue.as_str())
                }
                None => (events.as_str(), row.routing_key.as_str()),
            };
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    &row.envelope,
                    properties,
                )
                .await
                .context("publishing an event")?;
            confirms.push(confirm);
        }
        Ok(futures_util::future::join_all(confirms).await)
    }

    /// Publishes until `cancel`, woken by writers and by the poll; on
    /// cancel, publishes what is already committed, then returns.
    pub async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let pause = match self.drain(&cancel).await {
                Ok(()) => {
                    backoff.reset();
                    self.poll
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbox relay failed; retrying"
                    );
                    backoff.next_delay()
                }
            };
            if cancel.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = self.signal.0.notified() => tokio::time::sleep(self.linger).await,
            }
        }
        // Publish what writers committed before the stop, if the broker lets us.
        let flush = async {
            let fresh = CancellationToken::new();
            while self.try_publish_batch(&fresh).await? > 0 {}
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(5), flush).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(
                error = format!("{error:#}"),
                "outbox left for the next start"
            ),
            Err(_) => tracing::warn!("outbox flush timed out; rows stay for the next start"),
        }
        Ok(())
    }

    async fn drain(&self, cancel: &CancellationToken) -> anyhow::Result<()> {
        loop {
            let published = self.try_publish_batch(cancel).await?;
            if published < usize::try_from(self.batch).unwrap_or(usize::MAX)
                || cancel.is_cancelled()
            {
                return Ok(());
            }
        }
    }
}
