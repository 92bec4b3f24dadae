//! The only SQL of `intake`: PBX events and calls.

use chrono::{DateTime, Utc};
use hotline_kit::{
    bus::outbox::{self, envelope},
    time::timestamp,
};
use hotline_proto::events::v1::{self as ev, event_envelope::Payload};
use sqlx::{PgConnection, PgPool};

use crate::{
    cti::{Call, Direction, Event, Fields},
    phone,
};

#[derive(sqlx::FromRow)]
struct CallRow {
    call_id: String,
    direction: String,
    customer: String,
    started_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    agent: Option<String>,
    ended_at: Option<DateTime<Utc>>,
    cause: Option<String>,
}

impl From<CallRow> for Call {
    fn from(row: CallRow) -> Self {
        Self {
            call_id: row.call_id,
            direction: if row.direction == "out" {
                Direction::Out
            } else {
                Direction::In
            },
            customer: row.customer,
            started_at: row.started_at,
            answered_at: row.answered_at,
            agent: row.agent,
            ended_at: row.ended_at,
            cause: row.cause,
        }
    }
}

/// What recording an event did.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// New: the call moved on (and, when it ended, its outcome is queued
    /// for tickets).
    Applied,
    /// Heard before: nothing changed.
    Duplicate,
}

/// Records a PBX event durably, moves its call on, and — when the call
/// ended with an outcome — queues `intake.call_ended` in the same
/// transaction.
pub async fn record(
    pool: &PgPool,
    event: &Event,
    fields: &Fields,
    at: DateTime<Utc>,
    country_code: &str,
) -> anyhow::Result<Recorded> {
    let mut tx = pool.begin().await?;
    let first = sqlx::query(
        "INSERT INTO cti_events (call_id, event, fields, received_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(&event.call_id)
    .bind(event.kind.as_str())
    .bind(serde_json::to_value(fields)?)
    .bind(at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !first {
        return Ok(Recorded::Duplicate);
    }
    let mut call = lock_call(&mut tx, &event.call_id)
        .await?
        .unwrap_or_else(|| Call::begin(event, at));
    let outcome = call.apply(event, at);
    save_call(&mut tx, &call, outcome).await?;
    if let Some(outcome) = outcome {
        let customer =
            phone::normalise(&call.customer, country_code).unwrap_or_else(|| call.customer.clone());
        let ended = envelope(
            "intake.call_ended",
            None,
            at,
            Payload::IntakeCallEnded(ev::CallEnded {
                call_id: call.call_id.clone(),
                direction: call.direction.as_str().into(),
                outcome: outcome.into(),
                customer,
                agent: call.agent.clone().unwrap_or_default(),
                cause: call.cause.clone().unwrap_or_default(),
                started_at: Some(timestamp(call.started_at)),
                ended_at: call.ended_at.map(timestamp),
            }),
        );
        outbox::enqueue(&mut tx, &[ended]).await?;
    }
    tx.commit().await?;
    Ok(Recorded::Applied)
}

async fn lock_call(conn: &mut PgConnection, call_id: &str) -> sqlx::Result<Option<Call>> {
    let row: Option<CallRow> = sqlx::query_as(
        "SELECT call_id, direction, customer, started_at, answered_at, agent, ended_at, cause
         FROM calls WHERE call_id = $1 FOR UPDATE",
    )
    .bind(call_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Call::from))
}

async fn save_call(
    conn: &mut PgConnection,
    call: &Call,
    outcome: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO calls (call_id, direction, customer, started_at, answered_at, agent,
             ended_at, cause, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (call_id) DO UPDATE SET customer = EXCLUDED.customer,
             answered_at = EXCLUDED.answered_at, agent = EXCLUDED.agent,
             ended_at = EXCLUDED.ended_at, cause = EXCLUDED.cause,
             outcome = COALESCE(EXCLUDED.outcome, calls.outcome)",
    )
    .bind(&call.call_id)
    .bind(call.direction.as_str())
    .bind(&call.customer)
    .bind(call.started_at)
    .bind(call.answered_at)
    .bind(&call.agent)
    .bind(call.ended_at)
    .bind(&call.cause)
    .bind(outcome)
    .execute(conn)
    .await?;
    Ok(())
}

/// Notes where tickets recorded a call (empty: nowhere to record it).
pub async fn forwarded(conn: &mut PgConnection, call_id: &str, ticket: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE calls SET ticket_number = $2, forwarded_at = now() WHERE call_id = $1")
        .bind(call_id)
        .bind(ticket)
        .execute(conn)
        .await?;
    Ok(())
}
