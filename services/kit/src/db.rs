//! PostgreSQL: one pool per service schema, and the migrations that build it.
//!
//! Every service owns one schema (`tickets`, `sla`, ...) and connects with
//! its `search_path` set to it, so its SQL names its own tables only. Each
//! schema also holds the bus tables (outbox, inbox, applied versions), from
//! the kit's own migrations, applied before the service's.

use std::str::FromStr;

use anyhow::Context;
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Config;

/// The bus tables every service schema carries.
static BUS_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Checks a schema name before it is spliced into SQL and connection options.
fn checked_schema(schema: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(
        !schema.is_empty()
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "invalid schema name {schema:?}"
    );
    Ok(schema)
}

/// A pool whose connections see only `schema`. Connects lazily: a database
/// that is down makes the service not ready, not dead.
///
/// Connections are not pinged before each use (sqlx's default): that ping
/// is a round trip per query or transaction, as many as the work itself on
/// the hot paths. A connection the server dropped fails its next statement
/// with an I/O error instead, which every caller already treats as passing
/// trouble (a held event, `451`, `503`, `UNAVAILABLE`), and is discarded.
pub fn pool(config: &Config, schema: &str) -> anyhow::Result<PgPool> {
    let schema = checked_schema(schema)?;
    let options = PgConnectOptions::from_str(config.database_url.expose())
        .context("invalid database_url")?
        .options([("search_path", schema)])
        .application_name(&format!("hotline-{schema}"));
    Ok(PgPoolOptions::new()
        .max_connections(config.db.max_connections)
        .acquire_timeout(config.db.acquire_timeout)
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Creates `schema` if needed, then applies the bus migrations and the
/// service's own. Safe to run concurrently and repeatedly.
pub async fn migrate(pool: &PgPool, schema: &str, service: &Migrator) -> anyhow::Result<()> {
    let schema = checked_schema(schema)?;
    // Two migrators racing on `CREATE SCHEMA IF NOT EXISTS` can still
    // collide; a transaction-scoped advisory lock serialises them.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('hotline.create_schema'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("creating schema {schema}"))?;
    tx.commit().await?;
    // Both migrators share the schema's `_sqlx_migrations` table, with
    // disjoint versions: each ignores the other's rows.
    for migrator in [&BUS_MIGRATIONS, service] {
        let mut migrator = Migrator {
            ignore_missing: true,
            ..clone_migrator(migrator)
        };
        migrator.set_locking(true);
        migrator
            .run(pool)
            .await
            .with_context(|| format!("migrating schema {schema}"))?;
    }
    Ok(())
}

fn clone_migrator(migrator: &Migrator) -> Migrator {
    Migrator {
        migrations: migrator.migrations.clone(),
        ignore_missing: migrator.ignore_missing,
        locking: migrator.locking,
        no_tx: migrator.no_tx,
    }
}

/// One column of `rows`, to bind as an array (`UNNEST($1::text[], ...)`):
/// one statement writes many rows.
pub fn column<'a, T, U>(rows: &'a [T], field: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(field).collect()
}
