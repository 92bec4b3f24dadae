//! The only SQL of `dispatch`: the directory of people, their skills and
//! their stated presence; and routing's view of tickets (from their
//! events), their entitlements and the last decision on each. Every write
//! of the directory locks the person's row, commits the change with its
//! event (the outbox) in one transaction, and publishes nothing when
//! nothing changed.

use chrono::{DateTime, Utc};
use hotline_kit::{auth::Role, bus::outbox};
use hotline_proto::events::v1::EventEnvelope;
use sqlx::{PgConnection, PgPool, postgres::PgDatabaseError};
use uuid::Uuid;

use crate::{
    domain::{self, Change, Presence, Profile, Skill},
    events,
    routing::{Priority, Targets},
};

/// Why the store did not do what was asked; the api maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No person has that id or email.
    #[error("{0}")]
    NotFound(String),
    /// The email is already someone's.
    #[error("{0}")]
    Clash(String),
    /// The change breaks a rule of the directory (a technician without a
    /// home base).
    #[error("{0}")]
    Invalid(String),
    /// The person cannot do this now (deactivated).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The write's events could not be written with it: nothing was.
    #[error(transparent)]
    Outbox(anyhow::Error),
}

type Result<T> = std::result::Result<T, StoreError>;

/// A person of the directory, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: Uuid,
    pub profile: Profile,
    /// Deactivated people stay (tickets and schedules name them) but state
    /// no presence and are not routed to.
    pub active: bool,
    /// What they said; whether it holds is Redis's (`presence`).
    pub presence: Presence,
    pub presence_at: DateTime<Utc>,
    pub last_assigned_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct PersonRow {
    id: Uuid,
    name: String,
    email: String,
    phone: Option<String>,
    roles: Vec<String>,
    team: Option<String>,
    regions: Vec<String>,
    capacity: i32,
    home_lat: Option<f64>,
    home_lng: Option<f64>,
    time_zone: Option<String>,
    active: bool,
    presence: String,
    presence_at: DateTime<Utc>,
    last_assigned_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    skill_names: Vec<String>,
    skill_levels: Vec<i16>,
}

impl From<PersonRow> for Person {
    fn from(row: PersonRow) -> Self {
        // The table's CHECK constraints admit only known roles, presences,
        // levels and capacities: nothing here is dropped.
        Person {
            id: row.id,
            profile: Profile {
                name: row.name,
                email: row.email,
                phone: row.phone,
                roles: row
                    .roles
                    .iter()
                    .filter_map(|r| domain::role(r).ok())
                    .collect(),
                team: row.team,
                skills: row
                    .skill_names
                    .into_iter()
                    .zip(row.skill_levels)
                    .map(|(name, level)| Skill {
                        name,
                        level: u8::try_from(level).unwrap_or(1),
                    })
                    .collect(),
                regions: row.regions,
                capacity: u32::try_from(row.capacity).unwrap_or(0),
                home: row.home_lat.zip(row.home_lng),
                time_zone: row.time_zone,
            },
            active: row.active,
            presence: row.presence.parse().unwrap_or(Presence::Offline),
            presence_at: row.presence_at,
            last_assigned_at: row.last_assigned_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// People with their skills (as two arrays in name order): one query,
/// however many people.
const PERSON: &str = "SELECT p.id, p.name, p.email, p.phone, p.roles, p.team, p.regions,
        p.capacity, p.home_lat, p.home_lng, p.time_zone, p.active, p.presence,
        p.presence_at, p.last_assigned_at, p.created_at, p.updated_at,
        s.skill_names, s.skill_levels
    FROM people p
    CROSS JOIN LATERAL (
        SELECT COALESCE(array_agg(k.skill ORDER BY k.skill), '{}') AS skill_names,
               COALESCE(array_agg(k.level ORDER BY k.skill), '{}') AS skill_levels
        FROM person_skills k WHERE k.person_id = p.id
    ) s";

/// The person named by `reference`: an id, or an email in any case.
pub async fn person(conn: &mut PgConnection, reference: &str) -> Result<Person> {
    find(conn, reference, false).await
}

async fn find(conn: &mut PgConnection, reference: &str, lock: bool) -> Result<Person> {
    let reference = reference.trim();
    let lock = if lock { " FOR UPDATE OF p" } else { "" };
    let row: Option<PersonRow> = match Uuid::parse_str(reference) {
        Ok(id) => {
            sqlx::query_as(&format!("{PERSON} WHERE p.id = $1{lock}"))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        }
        Err(_) => {
            sqlx::query_as(&format!("{PERSON} WHERE lower(p.email) = lower($1){lock}"))
                .bind(reference)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    row.map(Person::from).ok_or_else(|| {
        StoreError::NotFound(format!(
            "no person has the id or email {reference:?}: see hotline people list"
        ))
    })
}

/// Which people a list shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub role: Option<Role>,
    /// Only those who stated this presence.
    pub stated: Option<Presence>,
    pub include_inactive: bool,
    pub limit: Option<u32>,
}

/// People by name (then id).
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<Person>> {
    let rows: Vec<PersonRow> = sqlx::query_as(&format!(
        "{PERSON}
         WHERE ($1::text IS NULL OR p.roles @> ARRAY[$1::text])
           AND ($2::text IS NULL OR p.presence = $2)
           AND ($3 OR p.active)
         ORDER BY lower(p.name), p.id
         LIMIT $4"
    ))
    .bind(filter.role.map(Role::as_str))
    .bind(filter.stated.map(Presence::as_str))
    .bind(filter.include_inactive)
    .bind(filter.limit.map(i64::from))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Person::from).collect())
}

/// Someone else's hold on `email`, in words, if anyone has it.
async fn email_holder(conn: &mut PgConnection, email: &str, except: Option<Uuid>) -> Result<()> {
    let holder: Option<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT id, name, active FROM people
         WHERE lower(email) = lower($1) AND id IS DISTINCT FROM $2",
    )
    .bind(email)
    .bind(except)
    .fetch_optional(&mut *conn)
    .await?;
    match holder {
        None => Ok(()),
        Some((id, name, active)) => Err(StoreError::Clash(format!(
            "{email} is already the email of {name} ({id}{}): one person, one entry",
            if active { "" } else { ", deactivated" }
        ))),
    }
}

/// A unique violation on the email (two adds racing) as a clash.
fn email_clash(error: sqlx::Error, email: &str) -> StoreError {
    let broken = error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
        .and_then(|e| e.constraint().map(str::to_owned));
    if broken.as_deref() == Some("people_email_key") {
        StoreError::Clash(format!("{email} is already someone's email"))
    } else {
        StoreError::Database(error)
    }
}

async fn publish(conn: &mut PgConnection, events: &[EventEnvelope]) -> Result<()> {
    outbox::enqueue(conn, events)
        .await
        .map_err(StoreError::Outbox)
}

async fn write_skills(conn: &mut PgConnection, id: Uuid, skills: &[Skill]) -> Result<()> {
    sqlx::query("DELETE FROM person_skills WHERE person_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let names: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
    let levels: Vec<i16> = skills.iter().map(|s| i16::from(s.level)).collect();
    sqlx::query(
        "INSERT INTO person_skills (person_id, skill, level)
         SELECT $1, skill, level FROM unnest($2::text[], $3::smallint[]) AS s (skill, level)",
    )
    .bind(id)
    .bind(&names)
    .bind(&levels)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn roles(profile: &Profile) -> Vec<&'static str> {
    profile.roles.iter().map(|r| r.as_str()).collect()
}

/// Adds a person, offline, with `person.added`.
pub async fn add(pool: &PgPool, profile: &Profile) -> Result<Person> {
    profile.check().map_err(StoreError::Invalid)?;
    let mut tx = pool.begin().await?;
    email_holder(&mut tx, &profile.email, None).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO people (id, name, email, phone, roles, team, regions, capacity,
             home_lat, home_lng, time_zone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(&profile.name)
    .bind(&profile.email)
    .bind(&profile.phone)
    .bind(roles(profile))
    .bind(&profile.team)
    .bind(&profile.regions)
    .bind(i32::try_from(profile.capacity).unwrap_or(i32::MAX))
    .bind(profile.home.map(|h| h.0))
    .bind(profile.home.map(|h| h.1))
    .bind(&profile.time_zone)
    .execute(&mut *tx)
    .await
    .map_err(|e| email_clash(e, &profile.email))?;
    write_skills(&mut tx, id, &profile.skills).await?;
    let person = find(&mut tx, &id.to_string(), false).await?;
    publish(&mut tx, &[events::person_added(&person)]).await?;
    tx.commit().await?;
    Ok(person)
}

/// Applies `change` to the person named by `reference`; `alive` tells the
/// event whether their stated presence holds. Nothing is written, and no
/// event published, when nothing changes.
pub async fn update(
    pool: &PgPool,
    reference: &str,
    change: Change,
    alive: impl AsyncFnOnce(Uuid) -> bool,
) -> Result<Person> {
    let mut tx = pool.begin().await?;
    let before = find(&mut tx, reference, true).await?;
    let profile = change.apply(&before.profile).map_err(StoreError::Invalid)?;
    if profile == before.profile {
        return Ok(before);
    }
    if profile.email != before.profile.email {
        email_holder(&mut tx, &profile.email, Some(before.id)).await?;
    }
    sqlx::query(
        "UPDATE people SET name = $2, email = $3, phone = $4, roles = $5, team = $6,
             regions = $7, capacity = $8, home_lat = $9, home_lng = $10, time_zone = $11,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(before.id)
    .bind(&profile.name)
    .bind(&profile.email)
    .bind(&profile.phone)
    .bind(roles(&profile))
    .bind(&profile.team)
    .bind(&profile.regions)
    .bind(i32::try_from(profile.capacity).unwrap_or(i32::MAX))
    .bind(profile.home.map(|h| h.0))
    .bind(profile.home.map(|h| h.1))
    .bind(&profile.time_zone)
    .execute(&mut *tx)
    .await
    .map_err(|e| email_clash(e, &profile.email))?;
    if profile.skills != before.profile.skills {
        write_skills(&mut tx, before.id, &profile.skills).await?;
    }
    let person = find(&mut tx, &before.id.to_string(), false).await?;
    let alive = alive(person.id).await;
    publish(&mut tx, &[events::person_updated(&person, alive)]).await?;
    tx.commit().await?;
    Ok(person)
}

/// Deactivates the person named by `reference`: offline, kept. With
/// `false` when they already were (nothing written).
pub async fn deactivate(pool: &PgPool, reference: &str) -> Result<(Person, bool)> {
    let mut tx = pool.begin().await?;
    let before = find(&mut tx, reference, true).await?;
    if !before.active {
        return Ok((before, false));
    }
    sqlx::query(
        "UPDATE people SET active = false, presence = 'offline', presence_at = now(),
             updated_at = now()
         WHERE id = $1",
    )
    .bind(before.id)
    .execute(&mut *tx)
    .await?;
    let person = find(&mut tx, &before.id.to_string(), false).await?;
    publish(&mut tx, &[events::person_deactivated(&person)]).await?;
    tx.commit().await?;
    Ok((person, true))
}

/// Records the presence `id` stated, with `presence.changed` when it
/// differs from the last; returns the person and what they stated before.
/// Call after their heartbeat is kept (or ended, for offline): the event
/// says the new presence holds.
pub async fn set_presence(
    pool: &PgPool,
    id: Uuid,
    presence: Presence,
) -> Result<(Person, Presence)> {
    let mut tx = pool.begin().await?;
    let before = find(&mut tx, &id.to_string(), true).await?;
    if !before.active {
        return Err(StoreError::Refused(format!(
            "{} is deactivated: a deactivated person has no presence",
            before.profile.email
        )));
    }
    if before.presence == presence {
        return Ok((before.clone(), before.presence));
    }
    sqlx::query(
        "UPDATE people SET presence = $2, presence_at = now(), lapsed_at = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(presence.as_str())
    .execute(&mut *tx)
    .await?;
    let person = find(&mut tx, &id.to_string(), false).await?;
    publish(
        &mut tx,
        &[events::presence_changed(&person, before.presence)],
    )
    .await?;
    tx.commit().await?;
    Ok((person, before.presence))
}

// ---------------------------------------------------------------------------
// Routing: tickets as the events tell them, the queue, decisions.

/// A ticket as its last event tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketView {
    pub id: Uuid,
    pub number: String,
    pub priority: Priority,
    pub created_at: DateTime<Utc>,
    pub awaiting_since: Option<DateTime<Utc>>,
    /// Lower-case.
    pub assignee: Option<String>,
    /// Resolved or closed: routing forgets it.
    pub done: bool,
}

/// Records `ticket` as its last event tells it (the consumer orders
/// events by version). A ticket that becomes waiting is queued from `now`;
/// an assignment (routing's or a person's) ends a decision on its way.
pub async fn apply_ticket(
    conn: &mut PgConnection,
    ticket: &TicketView,
    now: DateTime<Utc>,
) -> Result<()> {
    if ticket.done {
        sqlx::query("DELETE FROM tickets WHERE id = $1")
            .bind(ticket.id)
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tickets AS t (id, number, priority, created_at, awaiting_since, assignee,
             assigned_at, queued_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6::text IS NOT NULL THEN $7::timestamptz END,
             CASE WHEN $5::timestamptz IS NOT NULL AND $6::text IS NULL THEN $7::timestamptz END)
         ON CONFLICT (id) DO UPDATE SET
             number = EXCLUDED.number,
             priority = EXCLUDED.priority,
             awaiting_since = EXCLUDED.awaiting_since,
             assignee = EXCLUDED.assignee,
             assigned_at = CASE WHEN EXCLUDED.assignee IS DISTINCT FROM t.assignee
                 THEN EXCLUDED.assigned_at ELSE t.assigned_at END,
             queued_at = CASE
                 WHEN EXCLUDED.queued_at IS NULL THEN NULL
                 ELSE COALESCE(t.queued_at, EXCLUDED.queued_at) END,
             assigning_to = CASE
                 WHEN EXCLUDED.awaiting_since IS NULL
                   OR EXCLUDED.assignee IS DISTINCT FROM t.assignee THEN NULL
                 ELSE t.assigning_to END,
             assigning_at = CASE
                 WHEN EXCLUDED.awaiting_since IS NULL
                   OR EXCLUDED.assignee IS DISTINCT FROM t.assignee THEN NULL
                 ELSE t.assigning_at END,
             reason = CASE
                 WHEN EXCLUDED.awaiting_since IS NULL
                   OR EXCLUDED.assignee IS DISTINCT FROM t.assignee THEN NULL
                 ELSE t.reason END",
    )
    .bind(ticket.id)
    .bind(&ticket.number)
    .bind(ticket.priority.as_str())
    .bind(ticket.created_at)
    .bind(ticket.awaiting_since)
    .bind(&ticket.assignee)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What contracts resolved for a ticket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entitlement {
    pub region: Option<String>,
    pub family: Option<String>,
    pub customer: Option<String>,
}

/// Records `ticket`'s entitlement (a later resolution replaces it).
pub async fn entitle(conn: &mut PgConnection, ticket: Uuid, e: &Entitlement) -> Result<()> {
    sqlx::query(
        "INSERT INTO entitlements (ticket_id, region, family, customer, resolved_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (ticket_id) DO UPDATE SET region = EXCLUDED.region,
             family = EXCLUDED.family, customer = EXCLUDED.customer,
             resolved_at = EXCLUDED.resolved_at",
    )
    .bind(ticket)
    .bind(&e.region)
    .bind(&e.family)
    .bind(&e.customer)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One router at a time, in every process, until the transaction ends:
/// decisions are made on counts nobody else is changing.
pub async fn lock_router(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('hotline.dispatch.router'))")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A person who said they are online, with what routing weighs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Online {
    pub id: Uuid,
    pub email: String,
    pub team: Option<String>,
    pub regions: Vec<String>,
    pub capacity: i32,
    pub last_assigned_at: Option<DateTime<Utc>>,
    /// Skill names (any level counts).
    pub skills: Vec<String>,
}

/// People who said they are online, with their skills: the router's
/// candidates before Redis is asked whether it holds. Only what routing
/// weighs, skills grouped once (every round reads it).
pub async fn stated_online(conn: &mut PgConnection) -> Result<Vec<Online>> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.email, p.team, p.regions, p.capacity, p.last_assigned_at,
                COALESCE(s.skills, '{}') AS skills
         FROM people p
         LEFT JOIN (SELECT person_id, array_agg(skill) AS skills
                    FROM person_skills GROUP BY person_id) s ON s.person_id = p.id
         WHERE p.active AND p.presence = 'online'",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Awaiting tickets per person (lower-case email), decisions on their way
/// counted for whom they go to.
pub async fn assigned_counts(
    conn: &mut PgConnection,
) -> Result<std::collections::HashMap<String, u32>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT COALESCE(assigning_to, assignee), count(*) FROM tickets
         WHERE awaiting_since IS NOT NULL AND COALESCE(assigning_to, assignee) IS NOT NULL
         GROUP BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(who, n)| (who, u32::try_from(n).unwrap_or(u32::MAX)))
        .collect())
}

/// Awaiting tickets of each of `emails` (lower-case), in their order.
pub async fn assigned_to(pool: &PgPool, emails: &[String]) -> Result<Vec<u32>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT assignee, count(*) FROM tickets
         WHERE awaiting_since IS NOT NULL AND assignee = ANY($1) GROUP BY 1",
    )
    .bind(emails)
    .fetch_all(pool)
    .await?;
    Ok(emails
        .iter()
        .map(|e| {
            rows.iter()
                .find(|(who, _)| who == e)
                .map_or(0, |(_, n)| u32::try_from(*n).unwrap_or(u32::MAX))
        })
        .collect())
}

/// The response targets as SQL's order of the queue needs them: seconds
/// for low, normal, high, urgent.
fn target_seconds(targets: &Targets) -> [f64; 4] {
    Priority::ALL.map(|p| targets.target(p).num_milliseconds() as f64 / 1000.0)
}

/// `awaiting_since + target` in SQL, the targets bound at $1..$4.
const DUE: &str = "t.awaiting_since + make_interval(secs => CASE t.priority
        WHEN 'low' THEN $1::float8 WHEN 'normal' THEN $2::float8
        WHEN 'high' THEN $3::float8 ELSE $4::float8 END)";

/// A ticket routing has to place.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Work {
    pub id: Uuid,
    pub number: String,
    pub priority: String,
    pub created_at: DateTime<Utc>,
    pub awaiting_since: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    /// Set: the ticket is being moved from this person, who left.
    pub assignee: Option<String>,
    /// Set: a decision sent to tickets and not confirmed in time (resent).
    pub assigning_to: Option<String>,
    pub reason: Option<String>,
    pub entitled: bool,
    pub region: Option<String>,
    pub family: Option<String>,
}

/// The tickets whose assignee left them, as an SQL array of ids: their
/// assignee is away, offline, deactivated or lapsed since after it was
/// given to them, for the grace (seconds, bound at `grace`) at the instant
/// bound at `now`, and no decision is on its way. A ticket given by hand to
/// someone already away stays theirs. Found from the people who left (few)
/// through the assignee index, never by looking at every assigned ticket;
/// an `ARRAY(...)` is computed once, so the outer query can use its index.
fn moved(now: &str, grace: &str) -> String {
    format!(
        "ARRAY(SELECT m.id FROM people p
         CROSS JOIN LATERAL (SELECT CASE WHEN NOT p.active OR p.presence <> 'online'
             THEN p.presence_at ELSE p.lapsed_at END AS since) gone
         JOIN tickets m ON m.assignee = lower(p.email)
         WHERE gone.since <= {now}::timestamptz - make_interval(secs => {grace}::float8)
           AND m.awaiting_since IS NOT NULL AND m.assigning_to IS NULL
           AND gone.since > COALESCE(m.assigned_at, '-infinity'))"
    )
}

/// The work of one round, locked (rows another transaction holds are
/// left to the round its commit wakes): tickets waiting for someone,
/// tickets of people gone past the grace, and decisions sent before
/// `resend_before` and never confirmed. In the queue's order, at most
/// `limit`.
pub async fn work(
    conn: &mut PgConnection,
    targets: &Targets,
    now: DateTime<Utc>,
    grace: std::time::Duration,
    resend_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Work>> {
    let [low, normal, high, urgent] = target_seconds(targets);
    let rows: Vec<Work> = sqlx::query_as(&format!(
        "SELECT t.id, t.number, t.priority, t.created_at, t.awaiting_since, t.queued_at,
                t.assignee, t.assigning_to, t.reason, e.ticket_id IS NOT NULL AS entitled,
                e.region, e.family
         FROM tickets t LEFT JOIN entitlements e ON e.ticket_id = t.id
         WHERE t.awaiting_since IS NOT NULL AND (
             (t.assignee IS NULL AND t.assigning_to IS NULL
              AND (t.assigning_at IS NULL OR t.assigning_at <= $7))
             OR (t.id = ANY({moved}) AND (t.assigning_at IS NULL OR t.assigning_at <= $7))
             OR (t.assigning_to IS NOT NULL AND t.assigning_at <= $7))
         ORDER BY {DUE}, t.priority DESC, t.created_at, t.id
         LIMIT $8
         FOR UPDATE OF t SKIP LOCKED",
        moved = moved("$5", "$6")
    ))
    .bind(low)
    .bind(normal)
    .bind(high)
    .bind(urgent)
    .bind(now)
    .bind(grace.as_secs_f64())
    .bind(resend_before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// When a round should next run for time alone: a ticket's entitlement
/// wait ending, a ticket reaching overflow, a grace period ending, a
/// decision to send again.
pub async fn next_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    entitlement_wait: std::time::Duration,
    overflow_after: Option<std::time::Duration>,
    grace: std::time::Duration,
    resend: std::time::Duration,
) -> Result<Option<DateTime<Utc>>> {
    let next: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(at) FROM (
             SELECT min(t.queued_at) + make_interval(secs => $2) AS at
             FROM tickets t WHERE t.awaiting_since IS NOT NULL AND t.assignee IS NULL
               AND t.queued_at > $1 - make_interval(secs => $2)
               AND NOT EXISTS (SELECT 1 FROM entitlements e WHERE e.ticket_id = t.id)
             UNION ALL
             SELECT min(t.queued_at) + make_interval(secs => $3)
             FROM tickets t WHERE $3 IS NOT NULL AND t.awaiting_since IS NOT NULL
               AND t.assignee IS NULL AND t.reason IS NOT NULL
               AND t.queued_at > $1 - make_interval(secs => $3)
             UNION ALL
             SELECT min(CASE WHEN NOT p.active OR p.presence <> 'online'
                             THEN p.presence_at ELSE p.lapsed_at END) + make_interval(secs => $4)
             FROM people p
             WHERE CASE WHEN NOT p.active OR p.presence <> 'online'
                        THEN p.presence_at ELSE p.lapsed_at END > $1 - make_interval(secs => $4)
               AND EXISTS (SELECT 1 FROM tickets t
                           WHERE t.assignee = lower(p.email) AND t.awaiting_since IS NOT NULL)
             UNION ALL
             SELECT min(t.assigning_at) + make_interval(secs => $5)
             FROM tickets t WHERE t.awaiting_since IS NOT NULL
               AND t.assigning_at > $1 - make_interval(secs => $5)
         ) due",
    )
    .bind(now)
    .bind(entitlement_wait.as_secs_f64())
    .bind(overflow_after.map(|d| d.as_secs_f64()))
    .bind(grace.as_secs_f64())
    .bind(resend.as_secs_f64())
    .fetch_one(&mut *conn)
    .await?;
    Ok(next)
}

/// What a round decided about one ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub ticket_id: Uuid,
    pub number: String,
    /// Lower-case email; `None`: nobody could take it.
    pub assignee: Option<String>,
    pub reason: String,
    pub skills: Vec<String>,
    pub region: Option<String>,
    pub moved_from: Option<String>,
    pub overflow: bool,
}

/// Records a round's decisions before tickets is called: a ticket given
/// to someone is counted against them from now (`assigning_to`), their
/// `last_assigned_at` is `now`; a ticket nobody could take keeps why.
/// The last decision per ticket is kept for `dispatch explain` (one that
/// only repeats the last reason is not written again).
pub async fn decide(
    conn: &mut PgConnection,
    decisions: &[Decision],
    now: DateTime<Utc>,
) -> Result<()> {
    if decisions.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = decisions.iter().map(|d| d.ticket_id).collect();
    let numbers: Vec<&str> = decisions.iter().map(|d| d.number.as_str()).collect();
    let assignees: Vec<Option<&str>> = decisions.iter().map(|d| d.assignee.as_deref()).collect();
    let reasons: Vec<&str> = decisions.iter().map(|d| d.reason.as_str()).collect();
    let skills: Vec<String> = decisions.iter().map(|d| d.skills.join(",")).collect();
    let regions: Vec<Option<&str>> = decisions.iter().map(|d| d.region.as_deref()).collect();
    let moved: Vec<Option<&str>> = decisions.iter().map(|d| d.moved_from.as_deref()).collect();
    let overflow: Vec<bool> = decisions.iter().map(|d| d.overflow).collect();
    sqlx::query(
        "WITH d AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])
                    AS d (id, assignee, reason))
         UPDATE tickets t SET
             assigning_to = d.assignee,
             assigning_at = CASE WHEN d.assignee IS NULL THEN NULL ELSE $4 END,
             reason = CASE WHEN d.assignee IS NULL THEN d.reason END
         FROM d WHERE t.id = d.id",
    )
    .bind(&ids)
    .bind(&assignees)
    .bind(&reasons)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let mut given: Vec<&str> = assignees.iter().flatten().copied().collect();
    given.sort_unstable();
    given.dedup();
    sqlx::query("UPDATE people SET last_assigned_at = $2 WHERE lower(email) = ANY($1)")
        .bind(&given)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO decisions AS k (ticket_id, number, decided_at, assignee, reason, skills,
             region, moved_from, overflow)
         SELECT id, number, $3, assignee, reason,
                COALESCE(string_to_array(NULLIF(skills, ''), ','), '{}'), region, moved_from,
                overflow
         FROM unnest($1::uuid[], $2::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::bool[])
              AS d (id, number, assignee, reason, skills, region, moved_from, overflow)
         ON CONFLICT (ticket_id) DO UPDATE SET number = EXCLUDED.number,
             decided_at = EXCLUDED.decided_at, assignee = EXCLUDED.assignee,
             reason = EXCLUDED.reason, skills = EXCLUDED.skills, region = EXCLUDED.region,
             moved_from = EXCLUDED.moved_from, overflow = EXCLUDED.overflow
         WHERE k.reason IS DISTINCT FROM EXCLUDED.reason
            OR k.assignee IS DISTINCT FROM EXCLUDED.assignee",
    )
    .bind(&ids)
    .bind(&numbers)
    .bind(now)
    .bind(&assignees)
    .bind(&reasons)
    .bind(&skills)
    .bind(&regions)
    .bind(&moved)
    .bind(&overflow)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Tickets refused a decision (someone assigned it meanwhile, it closed):
/// the decision is dropped, `why` kept as the last one, and the ticket is
/// left alone for a resend's delay from `now` (its event will say what
/// became of it) before it is routed again.
pub async fn refused(
    pool: &PgPool,
    ticket: Uuid,
    to: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let reason = format!("not given to {to}: {why}");
    let dropped = sqlx::query(
        "UPDATE tickets SET assigning_to = NULL, assigning_at = $3, reason = $4
         WHERE id = $1 AND assigning_to = $2",
    )
    .bind(ticket)
    .bind(to)
    .bind(now)
    .bind(&reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if dropped > 0 {
        sqlx::query("UPDATE decisions SET reason = $2, assignee = NULL WHERE ticket_id = $1")
            .bind(ticket)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Notes who stopped beating (`lapsed`, stated online or away with no
/// heartbeat) at `now`, keeping an earlier note; clears the note of
/// those alive again.
pub async fn note_lapses(
    pool: &PgPool,
    lapsed: &[Uuid],
    alive: &[Uuid],
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE people SET lapsed_at = CASE WHEN id = ANY($1) THEN COALESCE(lapsed_at, $3) END
         WHERE (id = ANY($1) AND lapsed_at IS NULL) OR (id = ANY($2) AND lapsed_at IS NOT NULL)",
    )
    .bind(lapsed)
    .bind(alive)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// People who said they are online or away: the sweep asks Redis whether
/// they still beat.
pub async fn stated_present(pool: &PgPool) -> Result<Vec<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM people WHERE active AND presence IN ('online', 'away')")
            .fetch_all(pool)
            .await?,
    )
}

/// Forgets decisions and entitlements older than `before`.
pub async fn forget(pool: &PgPool, before: DateTime<Utc>) -> Result<()> {
    sqlx::query("DELETE FROM decisions WHERE decided_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    sqlx::query(
        "DELETE FROM entitlements e WHERE resolved_at < $1
         AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.id = e.ticket_id)",
    )
    .bind(before)
    .execute(pool)
    .await?;
    Ok(())
}

/// A ticket of the queue as `dispatch queue` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Queued {
    pub id: Uuid,
    pub number: String,
    pub priority: String,
    pub created_at: DateTime<Utc>,
    pub awaiting_since: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    /// Set: being moved from this person.
    pub assignee: Option<String>,
    pub assigning_to: Option<String>,
    pub reason: Option<String>,
    pub entitled: bool,
    pub region: Option<String>,
    pub family: Option<String>,
}

/// Tickets waiting for someone (and those being moved from someone gone
/// past `grace` at `now`), in the queue's order, at most `limit`; with how
/// many wait in all.
pub async fn queue(
    pool: &PgPool,
    targets: &Targets,
    now: DateTime<Utc>,
    grace: std::time::Duration,
    limit: i64,
) -> Result<(Vec<Queued>, u64)> {
    let [low, normal, high, urgent] = target_seconds(targets);
    let waiting = |now: &str, grace: &str| {
        format!(
            "FROM tickets t LEFT JOIN entitlements e ON e.ticket_id = t.id
             WHERE t.awaiting_since IS NOT NULL
               AND (t.assignee IS NULL OR t.id = ANY({}))",
            moved(now, grace)
        )
    };
    let rows: Vec<Queued> = sqlx::query_as(&format!(
        "SELECT t.id, t.number, t.priority, t.created_at, t.awaiting_since, t.queued_at,
                t.assignee, t.assigning_to, t.reason, e.ticket_id IS NOT NULL AS entitled,
                e.region, e.family
         {}
         ORDER BY {DUE}, t.priority DESC, t.created_at, t.id
         LIMIT $7",
        waiting("$5", "$6")
    ))
    .bind(low)
    .bind(normal)
    .bind(high)
    .bind(urgent)
    .bind(now)
    .bind(grace.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) {}", waiting("$1", "$2")))
        .bind(now)
        .bind(grace.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}

/// The last decision on the ticket named by `reference` (its id, or its
/// number as `HL-10001` or `10001`), and whether it still waits.
pub async fn decision(pool: &PgPool, reference: &str) -> Result<(Decision, DateTime<Utc>, bool)> {
    let reference = reference.trim();
    let number = match reference.parse::<u64>() {
        Ok(n) => format!("HL-{n}"),
        Err(_) => reference.to_uppercase(),
    };
    let id = Uuid::parse_str(reference).ok();
    #[derive(sqlx::FromRow)]
    struct Row {
        ticket_id: Uuid,
        number: String,
        decided_at: DateTime<Utc>,
        assignee: Option<String>,
        reason: String,
        skills: Vec<String>,
        region: Option<String>,
        moved_from: Option<String>,
        overflow: bool,
        waiting: bool,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT d.*, EXISTS (SELECT 1 FROM tickets t WHERE t.id = d.ticket_id
                   AND t.awaiting_since IS NOT NULL AND t.assignee IS NULL) AS waiting
         FROM decisions d WHERE d.ticket_id = $1 OR d.number = $2
         ORDER BY d.decided_at DESC LIMIT 1",
    )
    .bind(id)
    .bind(&number)
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or_else(|| {
        StoreError::NotFound(format!(
            "routing has decided nothing about {reference:?}: a ticket is routed once it \
             awaits a response with nobody assigned (see hotline dispatch queue)"
        ))
    })?;
    Ok((
        Decision {
            ticket_id: row.ticket_id,
            number: row.number,
            assignee: row.assignee,
            reason: row.reason,
            skills: row.skills,
            region: row.region,
            moved_from: row.moved_from,
            overflow: row.overflow,
        },
        row.decided_at,
        row.waiting,
    ))
}

/// Clears `id`'s lapse (their heartbeat is back); whether there was one.
pub async fn back(pool: &PgPool, id: Uuid) -> Result<bool> {
    let cleared =
        sqlx::query("UPDATE people SET lapsed_at = NULL WHERE id = $1 AND lapsed_at IS NOT NULL")
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected();
    Ok(cleared > 0)
}
