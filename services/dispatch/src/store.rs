//! The only SQL of `dispatch`: the directory of people, their skills and
//! their stated presence. Every write locks the person's row, commits the
//! change with its event (the outbox) in one transaction, and publishes
//! nothing when nothing changed.

use chrono::{DateTime, Utc};
use hotline_kit::{auth::Role, bus::outbox};
use hotline_proto::events::v1::EventEnvelope;
use sqlx::{PgConnection, PgPool, postgres::PgDatabaseError};
use uuid::Uuid;

use crate::{
    domain::{self, Change, Presence, Profile, Skill},
    events,
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
    sqlx::query("UPDATE people SET presence = $2, presence_at = now() WHERE id = $1")
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
