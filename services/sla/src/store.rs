//! The only SQL of `sla`: clocks, the escalations fired, and policies.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{Stream, TryStreamExt};
use hotline_kit::{db::column, telemetry::TraceContext, ticket_ref::TicketRef};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::Clock;

#[derive(sqlx::FromRow)]
struct ClockRow {
    ticket_id: Uuid,
    ticket_version: i64,
    number: String,
    subject: String,
    contact: String,
    channel: i32,
    priority: i32,
    awaiting_since: Option<DateTime<Utc>>,
    target_ms: i64,
    due: Option<DateTime<Utc>>,
    breaches: i32,
    breached_at: Option<DateTime<Utc>>,
    step: i32,
    acknowledged_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<String>,
    next_at: Option<DateTime<Utc>>,
    last_outcome: Option<String>,
    last_stopped_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    trace: TraceContext,
}

impl From<ClockRow> for Clock {
    fn from(row: ClockRow) -> Self {
        Self {
            ticket_id: row.ticket_id,
            ticket_version: row.ticket_version,
            number: row.number,
            subject: row.subject,
            contact: row.contact,
            channel: row.channel,
            priority: row.priority,
            awaiting_since: row.awaiting_since,
            target: Duration::from_millis(u64::try_from(row.target_ms).unwrap_or(0)),
            due: row.due,
            breaches: row.breaches,
            breached_at: row.breached_at,
            step: row.step,
            acknowledged_at: row.acknowledged_at,
            acknowledged_by: row.acknowledged_by,
            next_at: row.next_at,
            last_outcome: row.last_outcome,
            last_stopped_at: row.last_stopped_at,
            trace: row.trace,
        }
    }
}

const COLUMNS: &str = "ticket_id, ticket_version, number, subject, contact, channel, priority,
    awaiting_since, target_ms, due, breaches, breached_at, step, acknowledged_at,
    acknowledged_by, next_at, last_outcome, last_stopped_at, traceparent, tracestate";

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The clock of `ticket_id`, locked until the transaction ends.
pub async fn lock(conn: &mut PgConnection, ticket_id: Uuid) -> sqlx::Result<Option<Clock>> {
    let row: Option<ClockRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM clocks WHERE ticket_id = $1 FOR UPDATE"
    ))
    .bind(ticket_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Clock::from))
}

/// Writes the whole clock.
pub async fn save(conn: &mut PgConnection, clock: &Clock) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO clocks (ticket_id, ticket_version, number, subject, contact, channel,
             priority, awaiting_since, target_ms, due, breaches, breached_at, step,
             acknowledged_at, acknowledged_by, next_at, last_outcome, last_stopped_at,
             traceparent, tracestate)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
             $19, $20)
         ON CONFLICT (ticket_id) DO UPDATE SET
             ticket_version = EXCLUDED.ticket_version, number = EXCLUDED.number,
             subject = EXCLUDED.subject, contact = EXCLUDED.contact,
             channel = EXCLUDED.channel, priority = EXCLUDED.priority,
             awaiting_since = EXCLUDED.awaiting_since, target_ms = EXCLUDED.target_ms,
             due = EXCLUDED.due, breaches = EXCLUDED.breaches,
             breached_at = EXCLUDED.breached_at, step = EXCLUDED.step,
             acknowledged_at = EXCLUDED.acknowledged_at,
             acknowledged_by = EXCLUDED.acknowledged_by, next_at = EXCLUDED.next_at,
             last_outcome = EXCLUDED.last_outcome,
             last_stopped_at = EXCLUDED.last_stopped_at, traceparent = EXCLUDED.traceparent,
             tracestate = EXCLUDED.tracestate, updated_at = now()",
    )
    .bind(clock.ticket_id)
    .bind(clock.ticket_version)
    .bind(&clock.number)
    .bind(&clock.subject)
    .bind(&clock.contact)
    .bind(clock.channel)
    .bind(clock.priority)
    .bind(clock.awaiting_since)
    .bind(millis(clock.target))
    .bind(clock.due)
    .bind(clock.breaches)
    .bind(clock.breached_at)
    .bind(clock.step)
    .bind(clock.acknowledged_at)
    .bind(&clock.acknowledged_by)
    .bind(clock.next_at)
    .bind(&clock.last_outcome)
    .bind(clock.last_stopped_at)
    .bind(&clock.trace.traceparent)
    .bind(&clock.trace.tracestate)
    .execute(conn)
    .await?;
    Ok(())
}

/// Of `ids`, the clocks nobody else holds, locked; those another process
/// is firing right now are skipped.
pub async fn lock_free(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Clock>> {
    let rows: Vec<ClockRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM clocks WHERE ticket_id = ANY($1) FOR UPDATE SKIP LOCKED"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Clock::from).collect())
}

/// Of `ids`, those with no clock at all.
pub async fn absent(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM unnest($1::uuid[]) AS id
         WHERE NOT EXISTS (SELECT 1 FROM clocks WHERE ticket_id = id)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Clocks whose next action is at or before `before`, soonest first.
pub async fn overdue(pool: &PgPool, before: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("SELECT ticket_id FROM clocks WHERE next_at <= $1 ORDER BY next_at LIMIT $2")
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Every clock with something to do, and when: what the due-index mirrors.
pub fn armed(pool: &PgPool) -> impl Stream<Item = sqlx::Result<(Uuid, DateTime<Utc>)>> + '_ {
    sqlx::query_as("SELECT ticket_id, next_at FROM clocks WHERE next_at IS NOT NULL")
        .fetch(pool)
        .map_ok(|(id, at): (Uuid, DateTime<Utc>)| (id, at))
}

/// One escalation step, as it is recorded.
pub struct Fired {
    pub ticket_id: Uuid,
    pub breach: i32,
    pub step: i32,
    pub level: i32,
    pub due: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
}

/// Writes the ladder state of fired clocks and their steps, in one round
/// trip each. A step recorded before is refused: it fires once.
pub async fn save_fired(
    conn: &mut PgConnection,
    clocks: &[&Clock],
    fired: &[Fired],
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = clocks.iter().map(|c| c.ticket_id).collect();
    let breaches: Vec<i32> = clocks.iter().map(|c| c.breaches).collect();
    let breached_at: Vec<Option<DateTime<Utc>>> = clocks.iter().map(|c| c.breached_at).collect();
    let steps: Vec<i32> = clocks.iter().map(|c| c.step).collect();
    let next_at: Vec<Option<DateTime<Utc>>> = clocks.iter().map(|c| c.next_at).collect();
    sqlx::query(
        "UPDATE clocks SET breaches = u.breaches, breached_at = u.breached_at, step = u.step,
             next_at = u.next_at, updated_at = now()
         FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::timestamptz[])
             AS u(ticket_id, breaches, breached_at, step, next_at)
         WHERE clocks.ticket_id = u.ticket_id",
    )
    .bind(&ids)
    .bind(&breaches)
    .bind(&breached_at)
    .bind(&steps)
    .bind(&next_at)
    .execute(&mut *conn)
    .await?;
    let recorded = sqlx::query(
        "INSERT INTO escalations (ticket_id, breach, step, level, due, fired_at)
         SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[],
             $5::timestamptz[], $6::timestamptz[])
         ON CONFLICT DO NOTHING",
    )
    .bind(column(fired, |f| f.ticket_id))
    .bind(column(fired, |f| f.breach))
    .bind(column(fired, |f| f.step))
    .bind(column(fired, |f| f.level))
    .bind(column(fired, |f| f.due))
    .bind(column(fired, |f| f.fired_at))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    anyhow::ensure!(
        recorded == fired.len() as u64,
        "an escalation step was already recorded; refusing to fire it twice"
    );
    Ok(())
}

/// A ticket's clock by id or number (`HL-10001` or `10001`).
pub async fn find(pool: &PgPool, ticket: &str) -> sqlx::Result<Option<Clock>> {
    let (id, number) = TicketRef::parse(ticket).columns();
    let row: Option<ClockRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM clocks WHERE ticket_id = $1 OR number = $2"
    ))
    .bind(id)
    .bind(number)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Clock::from))
}

/// Running clocks due by `until`, soonest first.
pub async fn at_risk(pool: &PgPool, until: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<Clock>> {
    let rows: Vec<ClockRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM clocks
         WHERE awaiting_since IS NOT NULL AND breached_at IS NULL AND due <= $1
         ORDER BY due LIMIT $2"
    ))
    .bind(until)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Clock::from).collect())
}

/// Breached clocks still awaiting a response, longest overdue first.
pub async fn breached(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Clock>> {
    let rows: Vec<ClockRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM clocks
         WHERE awaiting_since IS NOT NULL AND breached_at IS NOT NULL
         ORDER BY due LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Clock::from).collect())
}

/// How many tickets await a response, and how many of them are breached.
pub async fn waiting(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE breached_at IS NOT NULL)
         FROM clocks WHERE awaiting_since IS NOT NULL",
    )
    .fetch_one(pool)
    .await
}

/// The response target of each priority: its policy, else the warranty's.
pub struct Targets {
    policies: Vec<(i32, Duration)>,
    warranty: Duration,
}

impl Targets {
    /// Every policy, in one query (there are a handful).
    pub async fn read(conn: &mut PgConnection, warranty: Duration) -> sqlx::Result<Self> {
        Ok(Self {
            policies: policies(conn).await?,
            warranty,
        })
    }

    pub fn of(&self, priority: i32) -> Duration {
        self.policies
            .iter()
            .find(|(p, _)| *p == priority)
            .map_or(self.warranty, |(_, target)| *target)
    }
}

/// Policies set, by priority.
pub async fn policies<'e>(conn: impl sqlx::PgExecutor<'e>) -> sqlx::Result<Vec<(i32, Duration)>> {
    let rows: Vec<(i32, i64)> =
        sqlx::query_as("SELECT priority, target_ms FROM policies ORDER BY priority")
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(priority, ms)| {
            (
                priority,
                Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
            )
        })
        .collect())
}

pub async fn set_policy(
    pool: &PgPool,
    priority: i32,
    target: Duration,
    by: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO policies (priority, target_ms, updated_by) VALUES ($1, $2, $3)
         ON CONFLICT (priority) DO UPDATE SET target_ms = EXCLUDED.target_ms,
             updated_by = EXCLUDED.updated_by, updated_at = now()",
    )
    .bind(priority)
    .bind(millis(target))
    .bind(by)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn delete_policy(pool: &PgPool, priority: i32) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM policies WHERE priority = $1")
        .bind(priority)
        .execute(pool)
        .await?;
    Ok(())
}
