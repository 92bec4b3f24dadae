//! The only SQL of `intake`: PBX events and calls.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use hotline_kit::{
    batch::Batches,
    bus::outbox::{self, OutboxRows, envelope},
    db::column,
    phone, queue,
    telemetry::TraceContext,
    time::timestamp,
};
use hotline_proto::events::v1::{self as ev, EventEnvelope, event_envelope::Payload};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    cti::{Call, Direction, Event, Fields},
    forward::Forwarded,
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
    blocked: bool,
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
            blocked: row.blocked,
        }
    }
}

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// New: the call moved on (and, when it ended, its outcome is queued
    /// for tickets).
    Applied,
    /// Heard before: nothing changed.
    Duplicate,
}

/// A PBX event to record: as parsed, as sent, when it came, and whether
/// its caller is blocked.
pub struct Incoming {
    pub event: Event,
    pub fields: Fields,
    pub at: DateTime<Utc>,
    pub blocked: bool,
    /// The request's span (`cti.event`): the call's `intake.call_ended`
    /// carries its trace, though the recorder writes it in its own task.
    pub span: tracing::Span,
}

/// An event, and where its writer answers.
pub type Pending = (Incoming, oneshot::Sender<anyhow::Result<Recorded>>);

/// Most PBX events one transaction records.
const MAX_BATCH: usize = 64;

/// Records PBX events in batches ([`hotline_kit::batch`]): the events
/// waiting when it is free share one transaction of two statements.
pub struct Recorder {
    pool: PgPool,
    country_code: String,
    waiting: Batches<Pending>,
}

impl Recorder {
    /// The recorder, and where to send it events.
    pub fn new(pool: PgPool, country_code: String) -> (mpsc::Sender<Pending>, Self) {
        let (sender, waiting) = mpsc::channel(1024);
        let recorder = Self {
            pool,
            country_code,
            waiting: Batches::new(waiting, MAX_BATCH),
        };
        (sender, recorder)
    }

    /// Records until `cancel`; then what is already waiting.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        while let Some(batch) = self.waiting.next(&cancel).await {
            self.write(batch).await;
        }
        Ok(())
    }

    /// Records `batch` and answers each event. A batch the database refuses
    /// for what it holds is recorded again one event at a time, so each gets
    /// its own answer;
    /// any other failure (the database away, the commit's fate unknown) is
    /// every caller's, and each PBX retries.
    async fn write(&self, batch: Vec<Pending>) {
        let (incoming, replies): (Vec<Incoming>, Vec<_>) = batch.into_iter().unzip();
        match record(&self.pool, &incoming, &self.country_code).await {
            Ok(recorded) => {
                for (reply, recorded) in replies.into_iter().zip(recorded) {
                    // A PBX that went away needs no answer.
                    let _ = reply.send(Ok(recorded));
                }
            }
            Err(error) if incoming.len() > 1 && refused(&error) => {
                tracing::debug!(error = format!("{error:#}"), "batch refused; one by one");
                for (one, reply) in incoming.iter().zip(replies) {
                    let recorded =
                        record(&self.pool, std::slice::from_ref(one), &self.country_code)
                            .await
                            .and_then(|recorded| {
                                recorded.first().copied().context("no answer for the event")
                            });
                    let _ = reply.send(recorded);
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(anyhow::anyhow!("{error:#}")));
                }
            }
        }
    }
}

/// Whether the database refused a batch for what it holds — a value out of
/// range, a constraint, a deadlock — rather than being away or shutting
/// down: then each event alone may well pass.
fn refused(error: &anyhow::Error) -> bool {
    let Some(sqlx::Error::Database(error)) = error.downcast_ref() else {
        return false;
    };
    error.code().is_some_and(|code| {
        code.starts_with("22") || code.starts_with("23") || code.starts_with("40")
    })
}

/// Records PBX events durably in one transaction, moves their calls on, and
/// queues `intake.call_ended` for each call that ended with an outcome.
/// Two statements: the events with their calls, locked (a call begun by its
/// first event), then the calls moved on with their outcomes. An event
/// heard before (or twice in the batch) is a duplicate.
async fn record(
    pool: &PgPool,
    incoming: &[Incoming],
    country_code: &str,
) -> anyhow::Result<Vec<Recorded>> {
    let mut tx = pool.begin().await?;
    let mut fresh = vec![false; incoming.len()];
    let mut calls: HashMap<String, Call> = HashMap::new();
    for (call, ords) in begin_or_lock(&mut tx, incoming).await? {
        for ord in ords {
            if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| fresh.get_mut(i)) {
                *slot = true;
            }
        }
        calls.insert(call.call_id.clone(), call);
    }
    let mut outcomes: HashMap<String, &'static str> = HashMap::new();
    let mut ended = Vec::new();
    for (one, _) in incoming.iter().zip(&fresh).filter(|(_, fresh)| **fresh) {
        let call = calls
            .get_mut(&one.event.call_id)
            .with_context(|| format!("call {} was not locked", one.event.call_id))?;
        call.blocked |= one.blocked;
        let Some(outcome) = call.apply(&one.event, one.at) else {
            continue;
        };
        outcomes.insert(call.call_id.clone(), outcome);
        // Only a number that matches a customer: never a raw or empty one,
        // which would match every ticket or the wrong one.
        let customer = phone::normalise(&call.customer, country_code).unwrap_or_default();
        ended.push(one.span.in_scope(|| {
            envelope(
                "intake.call_ended",
                None,
                one.at,
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
            )
        }));
    }
    if !calls.is_empty() {
        save_calls(&mut tx, &calls, &outcomes, &ended).await?;
    }
    tx.commit().await?;
    Ok(fresh
        .into_iter()
        .map(|fresh| {
            if fresh {
                Recorded::Applied
            } else {
                Recorded::Duplicate
            }
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct LockedCall {
    #[sqlx(flatten)]
    call: CallRow,
    /// The positions (from 1) of the batch's events new to this call.
    fresh: Vec<i64>,
}

/// Stores the events not heard before, and returns the calls they concern
/// locked, each with its new events: as stored, or begun from its first
/// event. Two first events of one call at once: the second waits for the
/// first's row and reads it. Calls are locked in the order of their ids, so
/// two batches sharing calls wait rather than deadlock.
async fn begin_or_lock(
    conn: &mut PgConnection,
    incoming: &[Incoming],
) -> anyhow::Result<Vec<(Call, Vec<i64>)>> {
    let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut begun = (Vec::new(), Vec::new());
    for one in incoming {
        let call = Call::begin(&one.event, one.at);
        columns.0.push(one.event.call_id.as_str());
        columns.1.push(one.event.kind.as_str());
        columns.2.push(serde_json::to_value(&one.fields)?);
        columns.3.push(one.at);
        begun.0.push(call.direction.as_str());
        begun.1.push(call.customer);
    }
    let rows: Vec<LockedCall> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[],
                 $5::text[], $6::text[])
                 WITH ORDINALITY AS i(call_id, event, fields, at, direction, customer, ord)
         ), stored AS (
             INSERT INTO cti_events (call_id, event, fields, received_at)
             -- In key order, so two batches never deadlock on the same events;
             -- the first copy of an event sent twice is the one kept.
             SELECT call_id, event, fields, at FROM input ORDER BY call_id, event, ord
             ON CONFLICT DO NOTHING
             RETURNING call_id, event
         ), fresh AS (
             SELECT DISTINCT ON (i.call_id, i.event) i.*
             FROM input i JOIN stored s ON s.call_id = i.call_id AND s.event = i.event
             ORDER BY i.call_id, i.event, i.ord
         ), locked AS (
             INSERT INTO calls (call_id, direction, customer, started_at)
             SELECT DISTINCT ON (call_id) call_id, direction, customer, at
             FROM fresh ORDER BY call_id, ord
             ON CONFLICT (call_id) DO UPDATE SET call_id = EXCLUDED.call_id
             RETURNING call_id, direction, customer, started_at, answered_at, agent, ended_at,
                 cause, blocked
         )
         SELECT locked.*,
             ARRAY(SELECT ord FROM fresh WHERE fresh.call_id = locked.call_id ORDER BY ord)
                 AS fresh
         FROM locked",
    )
    .bind(columns.0)
    .bind(columns.1)
    .bind(columns.2)
    .bind(columns.3)
    .bind(begun.0)
    .bind(begun.1)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (Call::from(row.call), row.fresh))
        .collect())
}

/// Writes the calls as they now stand, and `ended` to the outbox.
async fn save_calls(
    conn: &mut PgConnection,
    calls: &HashMap<String, Call>,
    outcomes: &HashMap<String, &'static str>,
    ended: &[EventEnvelope],
) -> anyhow::Result<()> {
    // In the order `begin_or_lock` locked them.
    let mut calls: Vec<&Call> = calls.values().collect();
    calls.sort_by(|a, b| a.call_id.cmp(&b.call_id));
    let sql = format!(
        "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                 $5::timestamptz[], $6::text[], $7::bool[], $8::text[])
                 AS u(call_id, customer, answered_at, agent, ended_at, cause, blocked, outcome)
         ), call AS (
             UPDATE calls SET customer = u.customer, answered_at = u.answered_at,
                 agent = u.agent, ended_at = u.ended_at, cause = u.cause, blocked = u.blocked,
                 outcome = COALESCE(u.outcome, calls.outcome)
             -- `= ANY`: the primary key, even in a plan made while the table
             -- was small (a hash join on a scan of every call, otherwise).
             FROM input u WHERE calls.call_id = ANY($1) AND calls.call_id = u.call_id
         ), events AS ({})
         SELECT 1",
        OutboxRows::insert_sql(9, None)
    );
    let query = sqlx::query(&sql)
        .bind(column(&calls, |c| c.call_id.as_str()))
        .bind(column(&calls, |c| c.customer.as_str()))
        .bind(column(&calls, |c| c.answered_at))
        .bind(column(&calls, |c| c.agent.as_deref()))
        .bind(column(&calls, |c| c.ended_at))
        .bind(column(&calls, |c| c.cause.as_deref()))
        .bind(column(&calls, |c| c.blocked))
        .bind(column(&calls, |c| outcomes.get(&c.call_id).copied()));
    OutboxRows::new(ended)?
        .bind(query)
        .execute(conn)
        .await
        .context("saving the calls")?;
    Ok(())
}

/// Takes the callers' locks until the transaction ends, all at once and
/// in one order, so two transactions locking some of the same callers wait
/// for each other rather than deadlock.
pub async fn lock_callers(conn: &mut PgConnection, customers: &[&str]) -> sqlx::Result<()> {
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(key)
         FROM (SELECT DISTINCT hashtext(c) AS key FROM UNNEST($1::text[]) AS c ORDER BY 1) AS keys",
    )
    .bind(customers)
    .execute(conn)
    .await?;
    Ok(())
}

/// Notes where tickets recorded each call (empty: nowhere to record it).
pub async fn forwarded(conn: &mut PgConnection, calls: &[(String, String)]) -> sqlx::Result<()> {
    let (ids, tickets): (Vec<&str>, Vec<&str>) = calls
        .iter()
        .map(|(call, ticket)| (call.as_str(), ticket.as_str()))
        .unzip();
    sqlx::query(
        "UPDATE calls SET ticket_number = f.ticket, forwarded_at = now()
         FROM UNNEST($1::text[], $2::text[]) AS f(call_id, ticket)
         WHERE calls.call_id = ANY($1) AND calls.call_id = f.call_id",
    )
    .bind(ids)
    .bind(tickets)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores an accepted message with `intake.mail_received`; its id. A
/// message from a mailbox names its `origin` (mailbox, UIDVALIDITY, UID):
/// one stored under that origin already is not stored again.
pub async fn record_mail(
    pool: &PgPool,
    from: &str,
    to: &[String],
    raw: &[u8],
    origin: Option<&str>,
) -> anyhow::Result<i64> {
    let mut tx = pool.begin().await?;
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO mails (mail_from, rcpt_to, raw, origin) VALUES ($1, $2, $3, $4)
         ON CONFLICT (origin) DO NOTHING RETURNING id",
    )
    .bind(from)
    .bind(to)
    .bind(raw)
    .bind(origin)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = inserted else {
        return Ok(sqlx::query_scalar("SELECT id FROM mails WHERE origin = $1")
            .bind(origin)
            .fetch_one(&mut *tx)
            .await?);
    };
    let received = envelope(
        "intake.mail_received",
        None,
        Utc::now(),
        Payload::IntakeMailReceived(ev::MailReceived { mail_id: id }),
    );
    outbox::enqueue(&mut tx, &[received]).await?;
    tx.commit().await?;
    Ok(id)
}

/// Stored messages: id, envelope sender and raw bytes.
pub async fn mails(
    conn: &mut PgConnection,
    ids: &[i64],
) -> sqlx::Result<Vec<(i64, String, Vec<u8>)>> {
    sqlx::query_as("SELECT id, mail_from, raw FROM mails WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(conn)
        .await
}

/// Notes what became of each message (the ticket it went on, or why none),
/// and remembers the Message-ID of each that went on a ticket.
pub async fn mails_forwarded(conn: &mut PgConnection, mails: &[Forwarded]) -> sqlx::Result<()> {
    let ids: Vec<i64> = mails.iter().map(|m| m.id).collect();
    let tickets: Vec<Option<&str>> = mails.iter().map(|m| m.ticket.as_deref()).collect();
    let ignored: Vec<Option<&str>> = mails.iter().map(|m| m.ignored).collect();
    let message_ids: Vec<Option<&str>> = mails.iter().map(|m| m.message_id.as_deref()).collect();
    sqlx::query(
        "WITH done AS (
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])
                 AS d(id, ticket, ignored, message_id)
         ), remembered AS (
             INSERT INTO message_ids (message_id, ticket_number)
             SELECT DISTINCT ON (message_id) message_id, ticket FROM done
             WHERE message_id IS NOT NULL AND ticket IS NOT NULL AND ignored IS NULL
             ON CONFLICT (message_id) DO NOTHING
         )
         UPDATE mails SET ticket_number = done.ticket, ignored = done.ignored,
             forwarded_at = now()
         FROM done WHERE mails.id = ANY($1) AND mails.id = done.id",
    )
    .bind(ids)
    .bind(tickets)
    .bind(ignored)
    .bind(message_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// The ticket of the first of `message_ids` Hotline has seen.
pub async fn thread(
    conn: &mut PgConnection,
    message_ids: &[String],
) -> sqlx::Result<Option<String>> {
    if message_ids.is_empty() {
        return Ok(None);
    }
    sqlx::query_scalar(
        "SELECT ticket_number FROM message_ids WHERE message_id = ANY($1)
         ORDER BY seen_at DESC LIMIT 1",
    )
    .bind(message_ids)
    .fetch_optional(conn)
    .await
}

/// The channel that wakes mail senders ([`hotline_kit::queue`]).
pub const MAIL_QUEUE: &str = "intake_outgoing";

/// A mail to send: who to, what, in which thread.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Mail {
    /// `reply:<article>`, `ack:<ticket>` or `notice:<event>`: one mail per
    /// key, ever.
    pub key: String,
    /// `reply`, `ack` or `notice`.
    pub kind: String,
    /// Empty for a notice, which belongs to no ticket.
    pub ticket_number: String,
    pub recipient: String,
    /// Without angle brackets.
    pub message_id: String,
    pub subject: String,
    pub body: String,
    pub automatic: bool,
}

/// Queues `mail` unless its key was queued before, with the trace of the
/// current span (its sending continues it), and wakes the senders once
/// this transaction commits.
pub async fn queue_mail(conn: &mut PgConnection, mail: &Mail) -> sqlx::Result<()> {
    let trace = TraceContext::current();
    let queued = sqlx::query(
        "INSERT INTO outgoing (key, kind, ticket_number, recipient, message_id, subject, body,
             automatic, state, traceparent, tracestate)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&mail.key)
    .bind(&mail.kind)
    .bind(&mail.ticket_number)
    .bind(&mail.recipient)
    .bind(&mail.message_id)
    .bind(&mail.subject)
    .bind(&mail.body)
    .bind(mail.automatic)
    .bind(&trace.traceparent)
    .bind(&trace.tracestate)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if queued > 0 {
        queue::wake(conn, MAIL_QUEUE).await?;
    }
    Ok(())
}

/// A queued mail leased for one attempt.
#[derive(Debug, sqlx::FromRow)]
pub struct Leased {
    #[sqlx(flatten)]
    pub mail: Mail,
    /// This attempt's number, from 1.
    pub attempts: i32,
    /// Refused for good already: only the note on the ticket is left.
    pub refused: Option<String>,
    /// The trace of what queued it, which its sending continues.
    #[sqlx(flatten)]
    pub trace: TraceContext,
}

/// Leases up to `limit` mails due now, for `lease`; a sender that dies lets
/// its lease run out and another takes over.
pub async fn lease_mails(pool: &PgPool, limit: i64, lease: Duration) -> sqlx::Result<Vec<Leased>> {
    sqlx::query_as(
        "UPDATE outgoing o SET lease_until = now() + $2::bigint * interval '1 millisecond',
             attempts = o.attempts + 1
         FROM (SELECT key FROM outgoing
               WHERE state = 'pending' AND next_attempt_at <= now()
                 AND (lease_until IS NULL OR lease_until < now())
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
         WHERE o.key = due.key
         RETURNING o.key, o.kind, o.ticket_number, o.recipient, o.message_id, o.subject, o.body,
             o.automatic, o.attempts, o.refused, o.traceparent, o.tracestate",
    )
    .bind(limit)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
}

/// When the next queued mail falls due (or its lease runs out).
pub async fn next_mail_due(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(GREATEST(next_attempt_at, COALESCE(lease_until, next_attempt_at)))
         FROM outgoing WHERE state = 'pending'",
    )
    .fetch_one(pool)
    .await
}

/// What became of one attempt to send a mail.
pub enum Sent {
    /// The relay took it: its Message-ID now threads replies and bounces
    /// back to the ticket.
    Yes,
    /// Passing trouble: try again at this moment.
    Retry(DateTime<Utc>, String),
    /// Refused for good; the ticket is still to be told (at this moment).
    Refused(DateTime<Utc>, String),
    /// Refused for good, and nothing more to do.
    Failed(String),
}

/// Records attempt `attempt` of `mail`; nothing if another sender has
/// leased it since.
pub async fn settle_mail(
    pool: &PgPool,
    mail: &Mail,
    attempt: i32,
    sent: &Sent,
) -> sqlx::Result<()> {
    let (state, next, error) = match sent {
        Sent::Yes => ("sent", None, None),
        Sent::Retry(at, why) => ("pending", Some(*at), Some(why.as_str())),
        Sent::Refused(at, why) => ("pending", Some(*at), Some(why.as_str())),
        Sent::Failed(why) => ("failed", None, Some(why.as_str())),
    };
    let refused = matches!(sent, Sent::Refused(..));
    sqlx::query(
        "WITH settled AS (
             UPDATE outgoing SET state = $3, lease_until = NULL,
                 next_attempt_at = COALESCE($4, next_attempt_at), error = $5,
                 refused = CASE WHEN $6 THEN $5 ELSE refused END,
                 at = CASE WHEN $3 = 'pending' THEN at ELSE now() END
             WHERE key = $1 AND attempts = $2 AND state = 'pending'
             RETURNING ticket_number, message_id, state
         )
         INSERT INTO message_ids (message_id, ticket_number)
         SELECT message_id, ticket_number FROM settled
         WHERE state = 'sent' AND ticket_number <> ''
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&mail.key)
    .bind(attempt)
    .bind(state)
    .bind(next)
    .bind(error)
    .bind(refused)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether `recipient` got an acknowledgement in the last ten minutes, or
/// has one still waiting to be sent.
pub async fn acknowledged_lately(conn: &mut PgConnection, recipient: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar::<_, i32>(
        "SELECT 1 FROM outgoing WHERE kind = 'ack' AND recipient = $1
           AND (state = 'pending' OR (state = 'sent' AND at > now() - interval '10 minutes'))
         LIMIT 1",
    )
    .bind(recipient)
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// The Message-IDs of a ticket's conversation, oldest first (at most 20).
pub async fn conversation(conn: &mut PgConnection, ticket: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT message_id FROM (SELECT message_id, seen_at FROM message_ids
             WHERE ticket_number = $1 ORDER BY seen_at DESC LIMIT 20) AS latest
         ORDER BY seen_at",
    )
    .bind(ticket)
    .fetch_all(conn)
    .await
}
