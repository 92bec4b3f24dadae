//! Dead letters: the events a consumer gave up on, recorded in its service's
//! own schema (`dead_letters`) before the delivery is acknowledged, listed
//! and replayed by an admin (`hotline deadletters`, served by
//! [`crate::admin`]), and counted while they wait by the gauge
//! `hotline_dead_letters{service}`.
//!
//! A replay marks the row and writes its envelope to the service's outbox in
//! the same transaction, addressed to that service alone; the relay then
//! publishes it to the service's queue, where it goes through the inbox like
//! any delivery: an event applied meanwhile does nothing, and its attempts
//! count afresh. A row is replayed once: the mark is taken under its lock.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A delivery the consumer gives up on, as it is recorded.
pub struct NewDeadLetter<'a> {
    pub event_id: Option<Uuid>,
    pub event_type: &'a str,
    pub ticket_id: Option<&'a str>,
    pub envelope: &'a [u8],
    pub error: &'a str,
    pub attempts: i64,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// A recorded dead letter.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub event_id: Option<Uuid>,
    pub event_type: String,
    pub ticket_id: Option<String>,
    pub error: String,
    pub attempts: i32,
    pub dead_lettered_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replayed_by: Option<String>,
}

const COLUMNS: &str = "id, event_id, event_type, ticket_id, error, attempts, dead_lettered_at, \
                       replayed_at, replayed_by";

/// Records `letter`; its id.
pub async fn record(pool: &PgPool, letter: &NewDeadLetter<'_>) -> anyhow::Result<i64> {
    let id = sqlx::query_scalar(
        "INSERT INTO dead_letters (event_id, event_type, ticket_id, envelope, error, attempts,
                                   traceparent, tracestate)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(letter.event_id)
    .bind(letter.event_type)
    .bind(letter.ticket_id)
    .bind(letter.envelope)
    .bind(letter.error)
    .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
    .bind(&letter.traceparent)
    .bind(&letter.tracestate)
    .fetch_one(pool)
    .await
    .context("recording a dead letter")?;
    Ok(id)
}

/// Sets the gauge of `service` to the dead letters waiting in `pool`'s
/// schema, and returns their number. Counting, rather than adding and
/// subtracting, keeps it right whichever process replayed them.
pub async fn refresh_gauge(pool: &PgPool, service: &str) -> anyhow::Result<i64> {
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .fetch_one(pool)
            .await
            .context("counting dead letters")?;
    gauge(service).set(waiting as f64);
    Ok(waiting)
}

/// `hotline_dead_letters{service}`: dead letters not yet replayed.
pub fn gauge(service: &str) -> metrics::Gauge {
    metrics::describe_gauge!(
        "hotline_dead_letters",
        "Dead letters waiting for `hotline deadletters replay`."
    );
    metrics::gauge!("hotline_dead_letters", "service" => service.to_owned())
}

/// Dead letters, newest first; replayed ones too if asked.
pub async fn list(
    pool: &PgPool,
    include_replayed: bool,
    limit: i64,
) -> anyhow::Result<Vec<DeadLetter>> {
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE $1 OR replayed_at IS NULL
         ORDER BY id DESC LIMIT $2"
    ))
    .bind(include_replayed)
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("listing dead letters")?;
    Ok(rows)
}

/// Which dead letters of a service to replay.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    One(i64),
    /// Every one not yet replayed.
    All,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Marked replayed and queued for the service now.
    pub replayed: Vec<DeadLetter>,
    /// Asked for by id, but replayed before: left alone.
    pub already: Vec<DeadLetter>,
}

/// Replays `which` dead letters of `service` (whose schema `pool` sees),
/// as `by`: marks each and writes it to the outbox for `service` alone, in
/// one transaction. `None` when asked for an id that does not exist.
pub async fn replay(
    pool: &PgPool,
    service: &str,
    which: Which,
    by: &str,
) -> anyhow::Result<Option<Replayed>> {
    let id = match which {
        Which::One(id) => Some(id),
        Which::All => None,
    };
    let mut tx = pool.begin().await?;
    // Taken under the rows' locks: a concurrent replay of the same row
    // waits, then finds it marked and skips it.
    let replayed: Vec<DeadLetter> = sqlx::query_as(&format!(
        "WITH chosen AS (
             UPDATE dead_letters SET replayed_at = now(), replayed_by = $3
             WHERE replayed_at IS NULL AND ($1::bigint IS NULL OR id = $1)
             RETURNING *
         ), queued AS (
             INSERT INTO outbox (event_id, routing_key, envelope, traceparent, tracestate, service)
             SELECT coalesce(event_id, gen_random_uuid()), event_type, envelope,
                    traceparent, tracestate, $2
             FROM chosen ORDER BY id
         )
         SELECT {COLUMNS} FROM chosen ORDER BY id"
    ))
    .bind(id)
    .bind(service)
    .bind(by)
    .fetch_all(&mut *tx)
    .await
    .context("replaying dead letters")?;
    tx.commit().await.context("replaying dead letters")?;
    let mut outcome = Replayed {
        replayed,
        already: Vec::new(),
    };
    if let Some(id) = id.filter(|_| outcome.replayed.is_empty()) {
        let before: Option<DeadLetter> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
                .context("reading a dead letter")?;
        match before {
            Some(letter) => outcome.already.push(letter),
            None => return Ok(None),
        }
    }
    Ok(Some(outcome))
}

/// Whether dead letter `id` exists in `pool`'s schema, replayed or not.
pub async fn exists(pool: &PgPool, id: i64) -> anyhow::Result<bool> {
    let found = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM dead_letters WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
        .context("looking for a dead letter")?;
    Ok(found)
}
