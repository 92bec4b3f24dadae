//! A service's durable queue and the loop that applies its events.
//!
//! Each delivery is applied in one PostgreSQL transaction that also records
//! the event id in the inbox (a duplicate does nothing) and the ticket's
//! version (an older fact is ignored, unless the handler wants every fact of
//! that type), and is acknowledged only after that transaction commits.
//!
//! Deliveries are spread over [`LANES`] lanes (or as many as the handler
//! asks for) by ticket: the events of one ticket are applied one after
//! another in delivery order, those of different tickets in parallel.
//!
//! Failures:
//! - the database unreachable: the delivery is held and retried until the
//!   database is back — an outage never dead-letters good events;
//! - the handler fails or panics: retried with doubling backoff; at its last
//!   attempt recorded as a dead letter with its error (see [`super::dead_letters`])
//!   and only then acknowledged, so it is never silently dropped and never
//!   blocks the queue;
//! - undecodable: dead-lettered at once.

use std::{
    collections::HashSet,
    future::Future,
    hash::{Hash, Hasher},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use futures_util::{FutureExt, StreamExt};
use hotline_proto::events::v1::EventEnvelope;
use lapin::{
    Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::FieldTable,
};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    BROKER_DELIVERY_LIMIT, Backoff, Bus,
    dead_letters::{self, NewDeadLetter},
    header_int, header_str,
    outbox::OutboxSignal,
};
use crate::{
    config::BusConfig,
    telemetry::{self, counter_from_zero},
};

/// Parallel lanes of one consumer; a ticket's events share a lane.
pub const LANES: usize = 16;

/// What a service does with one event, inside the consumer's transaction.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(
        &self,
        conn: &mut PgConnection,
        event: &EventEnvelope,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Whether `event` is a fact superseded by newer versions of its ticket
    /// (then an older one arriving late is ignored). A handler that must see
    /// every event of a type — an article to send — answers `false`.
    fn ordered(&self, _event: &EventEnvelope) -> bool {
        true
    }

    /// Whether the handler reads only the ticket an event carries, never
    /// which event it is. Every event of one ticket version carries the same
    /// ticket, so for such a handler the first one applied stands for the
    /// others of that version, which are then skipped as stale.
    fn snapshots(&self) -> bool {
        false
    }

    /// Applies events that waited together, in one transaction, each in
    /// its own span (only for a [`EventHandler::batched`] handler, and a
    /// single event is a batch of one). By default one after another; a
    /// handler may do better: one statement for all, peers called at once.
    fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[(&EventEnvelope, tracing::Span)],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            for (event, span) in events {
                self.handle(conn, event).instrument(span.clone()).await?;
            }
            Ok(())
        }
    }

    /// How many lanes apply events in parallel. A handler that takes its
    /// batches whole may want fewer and larger batches: fewer commits.
    fn lanes(&self) -> usize {
        LANES
    }

    /// Whether events waiting together may be applied in one transaction.
    /// Only for a handler whose every effect is in the transaction, or
    /// harmless to repeat: a batch that fails is applied again event by
    /// event. A handler that sends mail or calls a peer without a key
    /// answers `false`.
    fn batched(&self) -> bool {
        false
    }
}

/// How long an ack, nack or reject may take to be handed to the broker.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most events one transaction applies.
const MAX_BATCH: usize = 32;

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
    /// The connection it consumes on.
    bus: Arc<Bus>,
    handler: H,
    config: BusConfig,
    /// Woken after each commit, when the handler writes events of its own.
    outbox: Option<OutboxSignal>,
}

impl<H: EventHandler> Consumer<H> {
    pub fn new(
        service: &str,
        bindings: &[&str],
        pool: PgPool,
        subscriber: Arc<Bus>,
        handler: H,
        config: BusConfig,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..BROKER_DELIVERY_LIMIT as u32).contains(&config.max_attempts),
            "bus.max_attempts must be between 1 and {}",
            BROKER_DELIVERY_LIMIT - 1
        );
        // Shown at 0 from the start, so an alert on them has a series to watch.
        dead_letters::gauge(service).set(0.0);
        let labels: &[&[(&str, &str)]] = &[&[("service", service)]];
        counter_from_zero(
            "hotline_events_consumed_total",
            "Events a consumer applied (or found applied before) and acknowledged.",
            labels,
        );
        counter_from_zero(
            "hotline_consumer_redeliveries_total",
            "Deliveries a consumer failed and gave back to retry.",
            labels,
        );
        counter_from_zero(
            "hotline_dead_letters_total",
            "Events a consumer gave up on and recorded as dead letters.",
            labels,
        );
        Ok(Self {
            service: service.to_owned(),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            pool,
            bus: subscriber,
            handler,
            config,
            outbox: None,
        })
    }

    /// For a handler that enqueues events: wakes the relay after each commit.
    pub fn waking(mut self, relay: OutboxSignal) -> Self {
        self.outbox = Some(relay);
        self
    }

    /// Applies one event exactly once: the single step the loop runs.
    pub async fn apply(&self, event: &EventEnvelope) -> anyhow::Result<Outcome> {
        let outcomes = self
            .apply_batch(&[(event, tracing::Span::current())])
            .await?;
        outcomes
            .first()
            .copied()
            .context("no outcome for the event")
    }

    /// Applies events waiting together in one transaction: one inbox
    /// statement and one commit for all of them, each applied as
    /// [`Consumer::apply`] would, in order, in its own span.
    async fn apply_batch(
        &self,
        events: &[(&EventEnvelope, tracing::Span)],
    ) -> anyhow::Result<Vec<Outcome>> {
        let ids = events
            .iter()
            .map(|(event, _)| Uuid::parse_str(&event.id).context("event id is not a UUID"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let types: Vec<&str> = events
            .iter()
            .map(|(event, _)| event.r#type.as_str())
            .collect();
        let mut tx = self.pool.begin().await?;
        let mut fresh: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO inbox (event_id, event_type)
             SELECT * FROM UNNEST($1::uuid[], $2::text[])
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(&ids)
        .bind(&types)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut outcomes = Vec::with_capacity(events.len());
        let mut due = Vec::with_capacity(events.len());
        for ((event, span), id) in events.iter().zip(&ids) {
            // `remove`: the same event twice in one batch applies once.
            let outcome = if !fresh.remove(id) {
                Outcome::Duplicate
            } else if self.current(&mut tx, event).await? {
                due.push((*event, span.clone()));
                Outcome::Applied
            } else {
                Outcome::Stale
            };
            outcomes.push(outcome);
        }
        if !due.is_empty() {
            self.handler.handle_batch(&mut tx, &due).await?;
        }
        tx.commit().await?;
        if outcomes.contains(&Outcome::Applied)
            && let Some(relay) = &self.outbox
        {
            relay.committed();
        }
        Ok(outcomes)
    }

    /// Whether an event not applied before is still current: its ticket has
    /// not moved past it (recorded as applied if so).
    async fn current(
        &self,
        conn: &mut PgConnection,
        event: &EventEnvelope,
    ) -> anyhow::Result<bool> {
        if event.ticket_id.is_empty() || !self.handler.ordered(event) {
            return Ok(true);
        }
        let ticket_id = Uuid::parse_str(&event.ticket_id).context("ticket id is not a UUID")?;
        let current = sqlx::query(if self.handler.snapshots() {
            "INSERT INTO applied_versions (ticket_id, version) VALUES ($1, $2)
             ON CONFLICT (ticket_id) DO UPDATE SET version = EXCLUDED.version
             WHERE applied_versions.version < EXCLUDED.version"
        } else {
            "INSERT INTO applied_versions (ticket_id, version) VALUES ($1, $2)
             ON CONFLICT (ticket_id) DO UPDATE SET version = EXCLUDED.version
             WHERE applied_versions.version <= EXCLUDED.version"
        })
        .bind(ticket_id)
        .bind(event.ticket_version)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        Ok(current)
    }

    /// Declares the service's queue and bindings (idempotent).
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        let bindings: Vec<&str> = self.bindings.iter().map(String::as_str).collect();
        super::declare_queue(channel, &self.bus, &self.service, &bindings).await
    }

    /// Consumes until `cancel`, starting over after every broker outage; on
    /// cancel, stops taking deliveries and finishes those in flight.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let purge = tokio::spawn(forget_old_events(
            self.pool.clone(),
            self.config.inbox_retention,
            cancel.clone(),
        ));
        let watch = tokio::spawn(watch_dead_letters(
            self.pool.clone(),
            self.service.clone(),
            cancel.clone(),
        ));
        let consumed = self.consume_until(cancel).await;
        purge.abort();
        watch.abort();
        consumed
    }

    async fn consume_until(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        // Grows while subscriptions keep failing at once (a broker shutting
        // down cancels consumers over and over), so deliveries are not
        // bounced towards the broker's delivery limit.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        while let Some(connection) = self.bus.connection(&cancel).await {
            let started = tokio::time::Instant::now();
            match self.clone().consume(&connection, &cancel).await {
                Ok(()) => break,
                Err(error) => {
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        service = %self.service,
                        error = format!("{error:#}"),
                        ?delay,
                        "consumer interrupted; resuming when the broker is back"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        Ok(())
    }

    async fn consume(
        self: Arc<Self>,
        connection: &Arc<Connection>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = connection.create_channel().await?;
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
        let parked = channel
            .basic_consume(
                self.bus.dead_queue(&self.service).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Ends with this subscription (a stop, or the channel failing): lane
        // workers then give back what they hold instead of working on it.
        let session = cancel.child_token();
        // Ends with this subscription in every case: nothing waits on the
        // parked messages.
        let parking = session.child_token();
        // Set when the broker ends the parked subscription on a live
        // channel: the whole subscription starts again, so parked messages
        // never wait unseen.
        let parked_gone = CancellationToken::new();
        let count = self.handler.lanes().max(1);
        let mut lanes = Vec::with_capacity(count);
        let mut workers = JoinSet::new();
        workers.spawn(
            self.clone()
                .record_parked(parked, parking.clone(), parked_gone.clone()),
        );
        for _ in 0..count {
            let (sender, mut receiver) = mpsc::unbounded_channel::<(Delivery, Decoded)>();
            lanes.push(sender);
            let (consumer, session) = (self.clone(), session.clone());
            workers.spawn(async move {
                while let Some(delivery) = receiver.recv().await {
                    let mut batch = vec![delivery];
                    while consumer.handler.batched() && batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    consumer.deliver_batch(batch, &session).await;
                }
            });
        }
        let result = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = channel.basic_cancel(deliveries.tag(), BasicCancelOptions::default()).await;
                    break Ok(());
                }
                // Seen once in ~30 broker restarts: the connection died and
                // the delivery stream never ended, so the consumer waited on
                // a dead channel with its queue filling up.
                _ = parked_gone.cancelled() => {
                    break Err(anyhow::anyhow!("the broker ended the dead-letter subscription"));
                }
                _ = self.bus.lost(connection) => {
                    session.cancel();
                    break Err(anyhow::anyhow!("the connection to RabbitMQ was lost"));
                }
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let event = EventEnvelope::decode(delivery.data.as_slice());
                        let lane = lane_of(&event, count);
                        if lanes[lane].send((delivery, event)).is_err() {
                            break Err(anyhow::anyhow!("a consumer lane stopped"));
                        }
                    }
                    Some(Err(error)) => break Err(error.into()),
                    None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
                },
            }
        };
        // On a dead channel (or when stopping: `session` is a child of
        // `cancel`) what the lanes still hold goes back to the broker,
        // unacknowledged; what they are applying now finishes. On a live one
        // (the broker only cancelled the consumer) they finish and ack it all,
        // so no delivery is returned for nothing.
        if !channel.status().connected() {
            session.cancel();
        }
        parking.cancel();
        drop(lanes);
        while workers.join_next().await.is_some() {}
        result
    }

    /// Deliveries that waited together in a lane: applied in one
    /// transaction and acknowledged after its commit. Anything amiss (one
    /// undecodable, a handler failing, the database away) and each is
    /// delivered on its own instead, with the retries and dead letters
    /// that brings.
    async fn deliver_batch(&self, batch: Vec<(Delivery, Decoded)>, session: &CancellationToken) {
        if batch.len() > 1 && !session.is_cancelled() {
            let events: Option<Vec<_>> = batch
                .iter()
                .map(|(delivery, event)| {
                    event
                        .as_ref()
                        .ok()
                        .map(|event| (event, self.span(delivery)))
                })
                .collect();
            if let Some(events) = events {
                let applied = AssertUnwindSafe(self.apply_batch(&events))
                    .catch_unwind()
                    .await;
                match applied {
                    Ok(Ok(outcomes)) => {
                        tracing::debug!(?outcomes, "events applied together");
                        metrics::counter!("hotline_events_consumed_total", "service" => self.service.clone())
                            .increment(batch.len() as u64);
                        for (delivery, _) in &batch {
                            // A channel that took none in time takes no more:
                            // the broker redelivers the rest, the inbox skips them.
                            if !settle(delivery.ack(BasicAckOptions::default()), "ack").await {
                                break;
                            }
                        }
                        return;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(error = format!("{error:#}"), "batch failed; one by one");
                    }
                    Err(_) => tracing::debug!("batch panicked; one by one"),
                }
            }
        }
        for (delivery, event) in batch {
            self.deliver(delivery, event, session).await;
        }
    }

    /// A delivery's span, a child of the trace that published it, named
    /// after the event (`consume ticket.created`).
    fn span(&self, delivery: &Delivery) -> tracing::Span {
        let headers = delivery.properties.headers().as_ref();
        let event_type = event_type_of(delivery);
        let span = tracing::info_span!(
            "consume",
            otel.name = %format_args!("consume {event_type}"),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            service = %self.service,
            event_type = %event_type,
            attempt = attempt_of(delivery)
        );
        telemetry::set_parent(
            &span,
            header_str(headers, "traceparent").as_deref(),
            header_str(headers, "tracestate").as_deref(),
        );
        span
    }

    async fn deliver(&self, delivery: Delivery, event: Decoded, session: &CancellationToken) {
        if session.is_cancelled() {
            return;
        }
        let attempt = attempt_of(&delivery);
        let span = self.span(&delivery);
        async {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    let error = format!("undecodable event: {error}");
                    telemetry::failed(&tracing::Span::current(), &error);
                    self.dead_letter(&delivery, None, &error, attempt).await;
                    return;
                }
            };
            let mut outage = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            let applied = loop {
                match self.apply_guarded(&event).await {
                    Err(error) if is_outage(&error) && !session.is_cancelled() => {
                        let delay = outage.next_delay();
                        tracing::warn!(error = format!("{error:#}"), ?delay, "database unreachable; holding the event");
                        tokio::select! {
                            _ = session.cancelled() => {}
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                    other => break other,
                }
            };
            match applied {
                Ok(outcome) => {
                    tracing::debug!(?outcome, "event applied");
                    metrics::counter!("hotline_events_consumed_total", "service" => self.service.clone())
                        .increment(1);
                    settle(delivery.ack(BasicAckOptions::default()), "ack").await;
                }
                Err(error) if is_outage(&error) => {
                    // Stopping during an outage: give it back untouched.
                    telemetry::failed(&tracing::Span::current(), format_args!("{error:#}"));
                    settle(delivery.nack(requeue()), "nack").await;
                }
                Err(error) if attempt >= i64::from(self.config.max_attempts) => {
                    telemetry::failed(&tracing::Span::current(), format_args!("{error:#}"));
                    self.dead_letter(&delivery, Some(&event), &format!("{error:#}"), attempt)
                        .await;
                }
                Err(error) => {
                    telemetry::failed(&tracing::Span::current(), format_args!("{error:#}"));
                    tracing::warn!(error = format!("{error:#}"), "event failed; will retry");
                    metrics::counter!("hotline_consumer_redeliveries_total", "service" => self.service.clone())
                        .increment(1);
                    let first = self.config.retry_backoff;
                    let delay = Backoff::after_attempt(first, first * 64, attempt);
                    tokio::select! {
                        _ = session.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    // `reject` (not `nack`): the return that counts as a
                    // failed delivery on every RabbitMQ version.
                    let retry = BasicRejectOptions { requeue: true };
                    settle(delivery.reject(retry), "reject").await;
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// [`Consumer::apply`], with a panicking handler turned into an error.
    async fn apply_guarded(&self, event: &EventEnvelope) -> anyhow::Result<Outcome> {
        match AssertUnwindSafe(self.apply(event)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                Err(anyhow::anyhow!("the handler panicked: {message}"))
            }
        }
    }

    /// Records what the broker parked in the service's dead-letter queue
    /// as dead letters, until `parking` ends: a message past the broker's
    /// delivery limit (the process died applying it, over and over), or one
    /// a consumer of an earlier version dead-lettered there (with its error
    /// and attempts in headers). So the table stays the one record. If the
    /// broker ends the subscription first, says so through `gone`.
    async fn record_parked(
        self: Arc<Self>,
        mut parked: lapin::Consumer,
        parking: CancellationToken,
        gone: CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let delivery = tokio::select! {
                _ = parking.cancelled() => return,
                delivery = parked.next() => match delivery {
                    Some(Ok(delivery)) => delivery,
                    _ => {
                        gone.cancel();
                        return;
                    }
                },
            };
            let headers = delivery.properties.headers().as_ref();
            let error = header_str(headers, "x-hotline-error").unwrap_or_else(|| {
                format!(
                    "RabbitMQ gave up after {BROKER_DELIVERY_LIMIT} deliveries: \
                     the process stopped each time while applying it"
                )
            });
            let attempts = header_int(headers, "x-hotline-attempts")
                .unwrap_or(i64::from(BROKER_DELIVERY_LIMIT));
            let event = EventEnvelope::decode(delivery.data.as_slice()).ok();
            let span = self.span(&delivery);
            let recorded = self
                .dead_letter(&delivery, event.as_ref(), &error, attempts)
                .instrument(span)
                .await;
            if recorded {
                backoff.reset();
            } else {
                // Requeued at the head of the queue: it would come straight back.
                tokio::select! {
                    _ = parking.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }

    /// Records a delivery as a dead letter with its error, then
    /// acknowledges it. If the row cannot be written the delivery is
    /// requeued instead: it is never dropped. Whether it was recorded.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        event: Option<&EventEnvelope>,
        error: &str,
        attempt: i64,
    ) -> bool {
        let headers = delivery.properties.headers().as_ref();
        let event_type = event.map_or_else(|| event_type_of(delivery), |e| e.r#type.as_str());
        let event_id = event.and_then(|e| Uuid::parse_str(&e.id).ok());
        let ticket_id = event
            .map(|e| e.ticket_id.as_str())
            .filter(|t| !t.is_empty());
        let letter = NewDeadLetter {
            event_id,
            event_type,
            ticket_id,
            envelope: &delivery.data,
            error,
            attempts: attempt,
            traceparent: header_str(headers, "traceparent"),
            tracestate: header_str(headers, "tracestate"),
        };
        let recorded = tokio::time::timeout(
            Duration::from_secs(10),
            dead_letters::record(&self.pool, &letter),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("not recorded within 10s")));
        match recorded {
            Ok(id) => {
                tracing::error!(
                    service = %self.service,
                    event_type,
                    ticket = ticket_id.unwrap_or("none"),
                    event_id = event_id.map(|id| id.to_string()).unwrap_or_default(),
                    dead_letter = id,
                    %error,
                    attempts = attempt,
                    "event dead-lettered: `hotline deadletters list --service {}`",
                    self.service
                );
                metrics::counter!("hotline_dead_letters_total", "service" => self.service.clone())
                    .increment(1);
                if let Err(error) = dead_letters::refresh_gauge(&self.pool, &self.service).await {
                    tracing::warn!(error = format!("{error:#}"), "dead letters not counted");
                }
                settle(delivery.ack(BasicAckOptions::default()), "ack").await;
                true
            }
            Err(record_error) => {
                tracing::error!(
                    error = format!("{record_error:#}"),
                    failure = %error,
                    "cannot record the dead letter; requeueing"
                );
                settle(delivery.nack(requeue()), "nack").await;
                false
            }
        }
    }
}

/// How often the dead-letter gauge is counted again, for the replays other
/// processes made.
const DEAD_LETTERS_RECOUNT: Duration = Duration::from_secs(60);

/// Keeps the gauge of `service`'s dead letters current, and says at start
/// (at the first count that succeeds) that some are waiting.
async fn watch_dead_letters(pool: PgPool, service: String, cancel: CancellationToken) {
    let mut announced = false;
    loop {
        match dead_letters::refresh_gauge(&pool, &service).await {
            Ok(waiting) if !announced => {
                announced = true;
                if waiting > 0 {
                    tracing::warn!(
                        service = %service,
                        waiting,
                        "{waiting} dead letters waiting in {service}: `hotline deadletters list`"
                    );
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "dead letters not counted"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(DEAD_LETTERS_RECOUNT) => {}
        }
    }
}

/// How often a consumer forgets events older than its retention.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Forgets, every [`PURGE_EVERY`], the applied events older than
/// `retention`. A failed round is logged and tried again next time.
async fn forget_old_events(pool: PgPool, retention: Duration, cancel: CancellationToken) {
    loop {
        match forget_events_before(&pool, chrono::Utc::now() - retention).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, "old events forgotten from the inbox"),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "inbox purge failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}

/// Deletes the inbox rows of events applied before `before`, a few thousand
/// per statement so no long lock is held; how many. Event ids are UUIDv7,
/// ordered by time: the range is read off the primary key, and the receipt
/// time confirms each row.
pub async fn forget_events_before(
    pool: &PgPool,
    before: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<u64> {
    let millis = u64::try_from(before.timestamp_millis()).unwrap_or(0);
    let bound = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1000,
        u32::try_from(millis % 1000).unwrap_or(0) * 1_000_000,
    ));
    let mut forgotten = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM inbox WHERE event_id IN (
                 SELECT event_id FROM inbox WHERE event_id < $1 AND received_at < $2
                 LIMIT 5000 FOR UPDATE SKIP LOCKED)",
        )
        .bind(bound)
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected();
        forgotten += deleted;
        if deleted < 5000 {
            return Ok(forgotten);
        }
    }
}

/// The event type of a delivery: its `type` property, which the relay sets
/// (a replay comes through the default exchange, routed by queue name), or
/// else its routing key.
fn event_type_of(delivery: &Delivery) -> &str {
    delivery
        .properties
        .kind()
        .as_ref()
        .map_or(delivery.routing_key.as_str(), |kind| kind.as_str())
}

/// Which delivery of its message this is, from 1.
fn attempt_of(delivery: &Delivery) -> i64 {
    header_int(delivery.properties.headers().as_ref(), "x-delivery-count").unwrap_or(0) + 1
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..Default::default()
    }
}

/// Sends an ack, nack or reject, and logs one that did not reach the
/// broker; it will redeliver. Bounded: on a channel whose connection just
/// died the send may never complete, and the lane must not wait forever.
/// Whether it was handed to the broker.
async fn settle(send: impl Future<Output = lapin::Result<bool>>, what: &str) -> bool {
    match tokio::time::timeout(SETTLE_TIMEOUT, send).await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => {
            tracing::warn!("{what} not sent: the channel closed; the broker will redeliver");
            false
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "{what} failed; the broker will redeliver");
            false
        }
        Err(_) => {
            tracing::warn!("{what} not sent within {SETTLE_TIMEOUT:?}; the broker will redeliver");
            false
        }
    }
}

/// A delivery's event, decoded once when it arrives.
type Decoded = Result<EventEnvelope, prost::DecodeError>;

/// The lane of a delivery: by ticket, so one ticket's events stay in order.
fn lane_of(event: &Decoded, lanes: usize) -> usize {
    let key = match event {
        Ok(event) if event.ticket_id.is_empty() => event.id.as_str(),
        Ok(event) => event.ticket_id.as_str(),
        Err(_) => "",
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes as u64).unwrap_or(0)
}

/// Whether `error` is passing trouble — the database unreachable, failing
/// over or in a serialization conflict, another service unavailable —
/// rather than the event or the handler being wrong: such an event is held
/// and retried, never dead-lettered.
fn is_outage(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        // Another service down, timing out or shedding load: it passes too.
        let downstream = cause.downcast_ref::<tonic::Status>().is_some_and(|status| {
            matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
            )
        });
        downstream
            || cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(|e| match e {
                    sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed => true,
                    sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                        // Connection exceptions (a protocol violation is a bug,
                        // though), shutdown, cannot connect now, a read-only
                        // standby during failover, serialization failures and
                        // deadlocks: all pass.
                        (code.starts_with("08") && code != "08P01")
                            || matches!(
                                &*code,
                                "57P01" | "57P02" | "57P03" | "25006" | "40001" | "40P01"
                            )
                    }),
                    _ => false,
                })
    })
}
