//! The only SQL of `pager`: breaches, deliveries and their attempts, the
//! directory's people (copies) and the legacy ones, schedules and the level
//! map.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hotline_kit::{
    db::column, queue, telemetry::TraceContext, ticket_ref::TicketRef, time::from_timestamp,
};
use hotline_proto::events::v1 as ev;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    deliver,
    people::{Directory, Person},
    schedule::{Override, Rotation, parse_local},
};

/// A breach as the pager knows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Breach {
    pub ticket_id: Uuid,
    pub breach: i32,
    pub number: String,
    pub subject: String,
    pub contact: String,
    pub channel: i32,
    pub priority: i32,
    pub awaiting_since: Option<DateTime<Utc>>,
    pub due: Option<DateTime<Utc>>,
    pub level: i32,
    pub cleared_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

const BREACH_COLUMNS: &str = "ticket_id, breach, number, subject, contact, channel, priority,
    awaiting_since, due, level, cleared_at, acknowledged_at, acknowledged_by";

/// Records (or refreshes) a breach at `level`, locked; returns it.
pub async fn upsert_breach(
    conn: &mut PgConnection,
    ticket_id: Uuid,
    breach: &ev::Breach,
    level: i32,
) -> sqlx::Result<Breach> {
    sqlx::query_as(&format!(
        "INSERT INTO breaches (ticket_id, breach, number, subject, contact, channel, priority,
             awaiting_since, due, level)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (ticket_id, breach) DO UPDATE
             SET level = CASE
                 WHEN breaches.acknowledged_at IS NULL AND breaches.cleared_at IS NULL
                 THEN GREATEST(breaches.level, EXCLUDED.level)
                 ELSE breaches.level
             END
         RETURNING {BREACH_COLUMNS}"
    ))
    .bind(ticket_id)
    .bind(breach.breach)
    .bind(&breach.number)
    .bind(&breach.subject)
    .bind(&breach.contact)
    .bind(breach.channel)
    .bind(breach.priority)
    .bind(breach.awaiting_since.as_ref().and_then(from_timestamp))
    .bind(breach.due.as_ref().and_then(from_timestamp))
    .bind(level)
    .fetch_one(conn)
    .await
}

/// Marks a breach cleared; `false` if it already was.
pub async fn clear(
    conn: &mut PgConnection,
    ticket_id: Uuid,
    breach: i32,
    at: DateTime<Utc>,
    reason: &str,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "UPDATE breaches SET cleared_at = $3, cleared_reason = $4
         WHERE ticket_id = $1 AND breach = $2 AND cleared_at IS NULL",
    )
    .bind(ticket_id)
    .bind(breach)
    .bind(at)
    .bind(reason)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

/// Pending triggers of a breach that was cleared or acknowledged, not tried
/// yet, will never be sent: nobody else needs waking.
pub async fn cancel_triggers(
    conn: &mut PgConnection,
    ticket_id: Uuid,
    breach: i32,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "UPDATE deliveries SET state = 'cancelled', lease_until = NULL
         WHERE ticket_id = $1 AND breach = $2 AND action = 'trigger' AND state = 'pending'
           AND attempts = 0",
    )
    .bind(ticket_id)
    .bind(breach)
    .execute(conn)
    .await?
    .rows_affected())
}

/// A target a breach's trigger reached (or may have reached): it gets the
/// acknowledgement and the resolution too. A trigger cancelled at its turn
/// counts that turn as an attempt, so one cancelled after a real try has
/// more than one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reached {
    pub channel: String,
    pub target: String,
    pub destination: String,
    pub dedup_key: String,
}

pub async fn reached(
    conn: &mut PgConnection,
    ticket_id: Uuid,
    breach: i32,
) -> sqlx::Result<Vec<Reached>> {
    sqlx::query_as(
        "SELECT DISTINCT channel, target, destination, dedup_key FROM deliveries
         WHERE ticket_id = $1 AND breach = $2 AND action = 'trigger'
           AND attempts > 0 AND (state <> 'cancelled' OR attempts > 1)",
    )
    .bind(ticket_id)
    .bind(breach)
    .fetch_all(conn)
    .await
}

/// A delivery to make.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub ticket_id: Uuid,
    pub breach: i32,
    pub step: i32,
    pub level: i32,
    pub action: &'static str,
    pub channel: &'static str,
    pub target: String,
    pub destination: String,
    pub dedup_key: String,
    pub body: String,
    /// For a trigger: when sla fired the step it pages for.
    pub escalated_at: Option<DateTime<Utc>>,
}

/// Queues deliveries, with the trace of the current span (the event or
/// call that asked for them), which their sending continues; one already
/// queued (a redelivered event) is kept.
pub async fn queue(conn: &mut PgConnection, deliveries: &[NewDelivery]) -> sqlx::Result<u64> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let trace = TraceContext::current();
    let queued = sqlx::query(
        "INSERT INTO deliveries (ticket_id, breach, step, level, action, channel, target,
             destination, dedup_key, body, escalated_at, traceparent, tracestate)
         SELECT *, $12, $13 FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
         ON CONFLICT DO NOTHING",
    )
    .bind(column(deliveries, |d| d.ticket_id))
    .bind(column(deliveries, |d| d.breach))
    .bind(column(deliveries, |d| d.step))
    .bind(column(deliveries, |d| d.level))
    .bind(column(deliveries, |d| d.action))
    .bind(column(deliveries, |d| d.channel))
    .bind(column(deliveries, |d| d.target.clone()))
    .bind(column(deliveries, |d| d.destination.clone()))
    .bind(column(deliveries, |d| d.dedup_key.clone()))
    .bind(column(deliveries, |d| d.body.clone()))
    .bind(column(deliveries, |d| d.escalated_at))
    .bind(&trace.traceparent)
    .bind(&trace.tracestate)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    queue::wake(conn, deliver::CHANNEL).await?;
    Ok(queued)
}

/// Records the acknowledgement of a breach; `false` if it already was.
pub async fn acknowledge(
    conn: &mut PgConnection,
    ticket_id: Uuid,
    breach: i32,
    by: &str,
    via: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "UPDATE breaches SET acknowledged_at = $3, acknowledged_by = $4, acknowledged_via = $5
         WHERE ticket_id = $1 AND breach = $2 AND acknowledged_at IS NULL",
    )
    .bind(ticket_id)
    .bind(breach)
    .bind(at)
    .bind(by)
    .bind(via)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// One breach of a ticket, locked.
pub async fn breach(
    conn: &mut PgConnection,
    ticket_id: Uuid,
    breach: i32,
) -> sqlx::Result<Option<Breach>> {
    sqlx::query_as(&format!(
        "SELECT {BREACH_COLUMNS} FROM breaches WHERE ticket_id = $1 AND breach = $2 FOR UPDATE"
    ))
    .bind(ticket_id)
    .bind(breach)
    .fetch_optional(conn)
    .await
}

/// The latest breach of a ticket (by id or number), locked.
pub async fn latest_breach(conn: &mut PgConnection, ticket: &str) -> sqlx::Result<Option<Breach>> {
    let (id, number) = TicketRef::parse(ticket).columns();
    sqlx::query_as(&format!(
        "SELECT {BREACH_COLUMNS} FROM breaches
         WHERE ticket_id = $1 OR number = $2
         ORDER BY breach DESC LIMIT 1 FOR UPDATE"
    ))
    .bind(id)
    .bind(number)
    .fetch_optional(conn)
    .await
}

/// A delivery taken for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub action: String,
    pub channel: String,
    pub destination: String,
    pub body: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// For a trigger: when sla fired the step it pages for.
    pub escalated_at: Option<DateTime<Utc>>,
    /// The breach was cleared or acknowledged: a trigger is no longer
    /// wanted.
    pub unwanted: bool,
    /// The trace of what queued it, which its sending continues.
    #[sqlx(flatten)]
    pub trace: TraceContext,
    /// For a follow-up (a resolve): the `traceparent` of the trigger it
    /// follows up, the fault's trace, which its sending links to.
    pub fault_traceparent: Option<String>,
}

/// Leases up to `limit` deliveries due now, for `lease`; a sender that dies
/// lets its lease run out and another takes over (a sender that comes back
/// late cannot settle what the other now holds: `settle` checks the
/// attempt). A follow-up (resolve, acknowledge) waits while its trigger is
/// being sent, so it never overtakes it.
pub async fn claim(pool: &PgPool, limit: i64, lease: Duration) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as(
        "UPDATE deliveries d SET lease_until = now() + $2::bigint * interval '1 millisecond',
             attempts = d.attempts + 1
         FROM (SELECT id FROM deliveries
               WHERE state = 'pending' AND next_attempt_at <= now()
                 AND (lease_until IS NULL OR lease_until < now())
                 AND NOT (action <> 'trigger' AND EXISTS (
                     SELECT 1 FROM deliveries t
                     WHERE t.ticket_id = deliveries.ticket_id AND t.breach = deliveries.breach
                       AND t.channel = deliveries.channel AND t.target = deliveries.target
                       AND t.action = 'trigger' AND t.state = 'pending'
                       AND t.lease_until > now()))
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
         WHERE d.id = due.id
         RETURNING d.id, d.action, d.channel, d.destination, d.body, d.attempts, d.created_at,
             d.escalated_at,
             EXISTS (SELECT 1 FROM breaches b WHERE b.ticket_id = d.ticket_id
                     AND b.breach = d.breach
                     AND (b.cleared_at IS NOT NULL OR b.acknowledged_at IS NOT NULL))
                 AS unwanted,
             d.traceparent, d.tracestate,
             (SELECT t.traceparent FROM deliveries t
              WHERE d.action <> 'trigger' AND t.ticket_id = d.ticket_id
                AND t.breach = d.breach AND t.action = 'trigger'
                AND t.channel = d.channel AND t.target = d.target
              ORDER BY t.step LIMIT 1) AS fault_traceparent",
    )
    .bind(limit)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
}

/// What became of one attempt.
pub enum Settled {
    Delivered,
    /// Try again at this moment.
    Retry(DateTime<Utc>),
    Failed,
    Cancelled,
}

#[allow(clippy::too_many_arguments)] // one row of the attempts log
pub async fn settle(
    pool: &PgPool,
    id: i64,
    attempt: i32,
    at: DateTime<Utc>,
    status: i32,
    error: Option<&str>,
    latency: Duration,
    settled: Settled,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    if !matches!(settled, Settled::Cancelled) {
        sqlx::query(
            "INSERT INTO attempts (delivery_id, at, status, error, latency_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(at)
        .bind(status)
        .bind(error)
        .bind(i32::try_from(latency.as_millis()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
    }
    let (state, next) = match settled {
        Settled::Delivered => ("delivered", None),
        Settled::Retry(next) => ("pending", Some(next)),
        Settled::Failed => ("failed", None),
        Settled::Cancelled => ("cancelled", None),
    };
    sqlx::query(
        "UPDATE deliveries SET state = $2, lease_until = NULL,
             next_attempt_at = COALESCE($3, next_attempt_at),
             last_error = COALESCE($4, last_error),
             delivered_at = CASE WHEN $2 = 'delivered' THEN $5 ELSE delivered_at END
         WHERE id = $1 AND attempts = $6 AND state = 'pending'",
    )
    .bind(id)
    .bind(state)
    .bind(next)
    .bind(error)
    .bind(at)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// When the next pending delivery is due (or its lease runs out).
pub async fn next_due(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(GREATEST(next_attempt_at, COALESCE(lease_until, next_attempt_at)))
         FROM deliveries WHERE state = 'pending'",
    )
    .fetch_one(pool)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PageRow {
    pub id: i64,
    pub ticket_id: Uuid,
    pub number: String,
    pub breach: i32,
    pub level: i32,
    pub action: String,
    pub channel: String,
    pub target: String,
    pub dedup_key: String,
    pub state: String,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: i64,
    pub at: DateTime<Utc>,
    pub status: i32,
    pub error: Option<String>,
    pub latency_ms: i32,
}

/// Deliveries, newest first, of one ticket when `ticket` is set; with
/// their attempts.
pub async fn pages(
    pool: &PgPool,
    ticket: Option<&str>,
    limit: i64,
) -> sqlx::Result<(Vec<PageRow>, Vec<AttemptRow>)> {
    let (id, number) = ticket
        .map(|ticket| TicketRef::parse(ticket).columns())
        .unwrap_or_default();
    let rows: Vec<PageRow> = sqlx::query_as(
        "SELECT d.id, d.ticket_id, b.number, d.breach, d.level, d.action, d.channel, d.target,
             d.dedup_key, d.state, d.last_error, d.created_at, d.delivered_at
         FROM deliveries d JOIN breaches b USING (ticket_id, breach)
         WHERE ($1::uuid IS NULL AND $2::text IS NULL) OR d.ticket_id = $1 OR b.number = $2
         ORDER BY d.id DESC LIMIT $3",
    )
    .bind(id)
    .bind(number)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let attempts = sqlx::query_as(
        "SELECT delivery_id, at, status, error, latency_ms FROM attempts
         WHERE delivery_id = ANY($1) ORDER BY at",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok((rows, attempts))
}

/// Everyone the pager can name: the directory's people and the legacy ones.
pub async fn directory(conn: &mut PgConnection) -> sqlx::Result<Directory> {
    let people = sqlx::query_as(
        "SELECT id, name, email, phone, active, webhook_url FROM people ORDER BY name, email",
    )
    .fetch_all(&mut *conn)
    .await?;
    let legacy = sqlx::query_as(
        "SELECT name, email, webhook_url, adopted_by FROM legacy_people ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Directory { people, legacy })
}

/// Keeps the copy of `person` as of `updated_at`, unless a newer one is
/// kept already (events of one person may arrive out of order); the
/// pager's webhook setting stays. Returns the email the copy had before
/// when this changed it, so what names the old one can follow.
pub async fn keep_person(
    conn: &mut PgConnection,
    person: &Person,
    updated_at: DateTime<Utc>,
) -> sqlx::Result<Option<Option<String>>> {
    sqlx::query_scalar(
        "WITH before AS (SELECT email FROM people WHERE id = $1)
         INSERT INTO people (id, name, email, phone, active, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,
             phone = EXCLUDED.phone, active = EXCLUDED.active, updated_at = EXCLUDED.updated_at
         WHERE people.updated_at <= EXCLUDED.updated_at
         RETURNING (SELECT email FROM before)",
    )
    .bind(person.id)
    .bind(&person.name)
    .bind(&person.email)
    .bind(&person.phone)
    .bind(person.active)
    .bind(updated_at)
    .fetch_optional(conn)
    .await
}

/// Links the legacy people with `person`'s email to them: their webhook
/// becomes `person`'s unless they have one, and every schedule, override
/// and level naming them by their old name names them by email.
pub async fn adopt_legacy(conn: &mut PgConnection, person: &Person) -> sqlx::Result<Vec<String>> {
    let adopted: Vec<(String, String)> = sqlx::query_as(
        "UPDATE legacy_people SET adopted_by = $1
         WHERE lower(trim(email)) = $2 AND adopted_by IS NULL
         RETURNING name, webhook_url",
    )
    .bind(person.id)
    .bind(&person.email)
    .fetch_all(&mut *conn)
    .await?;
    for (name, webhook_url) in &adopted {
        sqlx::query("UPDATE people SET webhook_url = $2 WHERE id = $1 AND webhook_url = ''")
            .bind(person.id)
            .bind(webhook_url)
            .execute(&mut *conn)
            .await?;
        rename(conn, name, &person.email).await?;
    }
    Ok(adopted.into_iter().map(|(name, _)| name).collect())
}

/// Whatever names `old` (a legacy name, an email that changed) names `new`.
pub async fn rename(conn: &mut PgConnection, old: &str, new: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE schedules SET participants = array_replace(participants, $1, $2)
         WHERE $1 = ANY(participants)",
    )
    .bind(old)
    .bind(new)
    .execute(&mut *conn)
    .await?;
    for table in ["overrides", "level_targets"] {
        sqlx::query(&format!("UPDATE {table} SET person = $2 WHERE person = $1"))
            .bind(old)
            .bind(new)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Sets where `id`'s webhook pages go; `false` when the pager has no such
/// person.
pub async fn set_webhook(pool: &PgPool, id: Uuid, webhook_url: &str) -> sqlx::Result<bool> {
    Ok(
        sqlx::query("UPDATE people SET webhook_url = $2 WHERE id = $1")
            .bind(id)
            .bind(webhook_url)
            .execute(pool)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Those of `names` that name no schedule, in the order given.
pub async fn unknown_schedules(pool: &PgPool, names: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT n FROM unnest($1::text[]) WITH ORDINALITY AS given (n, i)
         WHERE NOT EXISTS (SELECT 1 FROM schedules WHERE name = n) ORDER BY i",
    )
    .bind(names)
    .fetch_all(pool)
    .await
}

/// A schedule as stored: its name, and the rotation.
pub struct Schedule {
    pub name: String,
    pub rotation: Rotation,
    pub overrides: Vec<Override>,
}

pub async fn put_schedule(pool: &PgPool, name: &str, rotation: &Rotation) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO schedules (name, time_zone, participants, shift_seconds, starts)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE SET time_zone = EXCLUDED.time_zone,
             participants = EXCLUDED.participants, shift_seconds = EXCLUDED.shift_seconds,
             starts = EXCLUDED.starts",
    )
    .bind(name)
    .bind(rotation.time_zone.name())
    .bind(&rotation.participants)
    .bind(i64::try_from(rotation.shift.as_secs()).unwrap_or(i64::MAX))
    .bind(rotation.starts)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every schedule with its overrides (oldest first).
pub async fn schedules(conn: &mut PgConnection) -> anyhow::Result<Vec<Schedule>> {
    let rows: Vec<(String, String, Vec<String>, i64, chrono::NaiveDateTime)> = sqlx::query_as(
        "SELECT name, time_zone, participants, shift_seconds, starts FROM schedules ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let overrides: Vec<(String, String, DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT schedule, person, starts_at, ends_at FROM overrides ORDER BY id")
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter()
        .map(|(name, zone, participants, shift, starts)| {
            let time_zone = zone
                .parse()
                .map_err(|_| anyhow::anyhow!("schedule {name} has an unknown time zone {zone}"))?;
            let overrides = overrides
                .iter()
                .filter(|(schedule, ..)| *schedule == name)
                .map(|(_, person, starts_at, ends_at)| Override {
                    person: person.clone(),
                    starts_at: *starts_at,
                    ends_at: *ends_at,
                })
                .collect();
            Ok(Schedule {
                name,
                rotation: Rotation {
                    time_zone,
                    participants,
                    shift: Duration::from_secs(u64::try_from(shift).unwrap_or(0)),
                    starts,
                },
                overrides,
            })
        })
        .collect()
}

/// `false` when the schedule does not exist.
pub async fn add_override(pool: &PgPool, schedule: &str, taken: &Override) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO overrides (schedule, person, starts_at, ends_at)
         SELECT name, $2, $3, $4 FROM schedules WHERE name = $1",
    )
    .bind(schedule)
    .bind(&taken.person)
    .bind(taken.starts_at)
    .bind(taken.ends_at)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// A target of a level: a schedule or a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Schedule(String),
    Person(String),
}

pub async fn set_level_targets(pool: &PgPool, level: i32, targets: &[Target]) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM level_targets WHERE level = $1")
        .bind(level)
        .execute(&mut *tx)
        .await?;
    for (position, target) in targets.iter().enumerate() {
        let (schedule, person) = match target {
            Target::Schedule(name) => (Some(name), None),
            Target::Person(name) => (None, Some(name)),
        };
        sqlx::query(
            "INSERT INTO level_targets (level, position, schedule, person) VALUES ($1, $2, $3, $4)",
        )
        .bind(level)
        .bind(i32::try_from(position).unwrap_or(i32::MAX))
        .bind(schedule)
        .bind(person)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Every level's targets, by level then position.
pub async fn level_targets(conn: &mut PgConnection) -> sqlx::Result<Vec<(i32, Target)>> {
    let rows: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT level, schedule, person FROM level_targets ORDER BY level, position",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(level, schedule, person)| match (schedule, person) {
            (Some(schedule), _) => Some((level, Target::Schedule(schedule))),
            (None, Some(person)) => Some((level, Target::Person(person))),
            (None, None) => None,
        })
        .collect())
}

/// Reads a schedule as the API gives it.
pub fn rotation(
    time_zone: &str,
    participants: Vec<String>,
    shift: Duration,
    starts: &str,
) -> Result<Rotation, String> {
    Ok(Rotation {
        time_zone: time_zone
            .parse()
            .map_err(|_| format!("{time_zone:?} is not an IANA time zone"))?,
        participants,
        shift,
        starts: parse_local(starts)?,
    })
}
