//! The response clocks under load: `clocks`, `burst` and `restart`.
//!
//! Clocks are armed in bulk straight into the `sla` schema (a million
//! tickets through the whole fleet would take the run's hours), then the
//! due-index marker is deleted so the running `sla` rebuilds its index from
//! PostgreSQL — its own start-up path. Every fired step is recorded by `sla`
//! in `escalations` with its due time and fire time; the figures come from
//! there. Each run's clocks are numbered `LG-<run>-<n>`.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use hotline_kit::{config::Config, db};
use serde_json::{Value, json};
use sqlx::PgPool;

pub struct Bench {
    pool: PgPool,
    config: Config,
    run: String,
}

impl Bench {
    pub async fn connect() -> anyhow::Result<Self> {
        let config = Config::load(None)?;
        let pool = db::pool(&config, "sla")?;
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        Ok(Self { pool, config, run })
    }

    /// Arms `count` clocks, the first due at `first`, one every `spacing`.
    async fn arm(&self, count: i64, first: DateTime<Utc>, spacing: Duration) -> anyhow::Result<()> {
        let chunk = 100_000;
        let spacing = i64::try_from(spacing.as_micros()).unwrap_or(i64::MAX);
        let mut done = 0;
        while done < count {
            let upto = (done + chunk).min(count);
            sqlx::query(
                "INSERT INTO clocks (ticket_id, ticket_version, number, subject, contact,
                     channel, priority, awaiting_since, target_ms, due, next_at)
                 SELECT gen_random_uuid(), 1, $4 || i, 'load', '', 1, 2,
                     d - interval '2 hours', 7200000, d, d
                 FROM (SELECT i, $1::timestamptz + (i * $2::bigint) * interval '1 microsecond' AS d
                       FROM generate_series($3::bigint, $5::bigint - 1) AS i) AS s",
            )
            .bind(first)
            .bind(spacing)
            .bind(done)
            .bind(format!("LG-{}-", self.run))
            .bind(upto)
            .execute(&self.pool)
            .await
            .context("arming clocks")?;
            done = upto;
        }
        Ok(())
    }

    /// Makes the running `sla` rebuild its due-index from PostgreSQL.
    async fn rebuild_index(&self) -> anyhow::Result<()> {
        let redis = redis::Client::open(self.config.redis_url.expose())?;
        let mut connection = redis.get_multiplexed_async_connection().await?;
        let marker = format!("{}:sla:due:built", self.config.namespace);
        let _: () = redis::cmd("DEL")
            .arg(marker)
            .query_async(&mut connection)
            .await?;
        Ok(())
    }

    /// Bytes of Redis per armed clock, from the due-index's own size.
    async fn redis_bytes_per_clock(&self) -> anyhow::Result<Value> {
        let redis = redis::Client::open(self.config.redis_url.expose())?;
        let mut connection = redis.get_multiplexed_async_connection().await?;
        let key = format!("{}:sla:due", self.config.namespace);
        let bytes: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut connection)
            .await?;
        let entries: i64 = redis::cmd("ZCARD")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        Ok(json!({
            "index_entries": entries,
            "index_bytes": bytes,
            "bytes_per_clock": bytes.map(|b| b as f64 / entries.max(1) as f64),
        }))
    }

    async fn postgres_bytes_per_clock(&self) -> anyhow::Result<f64> {
        let (bytes, rows): (i64, i64) = sqlx::query_as(
            "SELECT pg_total_relation_size('clocks'), (SELECT count(*) FROM clocks)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes as f64 / rows.max(1) as f64)
    }

    /// Breach lag of this run's clocks fired so far (seconds).
    async fn lag(&self) -> anyhow::Result<Value> {
        let row: (i64, Option<Vec<f64>>, Option<f64>, i64) = sqlx::query_as(
            "SELECT count(*),
                 percentile_cont(ARRAY[0.5, 0.99, 0.999]) WITHIN GROUP
                     (ORDER BY extract(epoch FROM e.fired_at - e.due)),
                 max(extract(epoch FROM e.fired_at - e.due))::float8,
                 count(*) FILTER (WHERE e.fired_at < e.due)
             FROM escalations e JOIN clocks c USING (ticket_id)
             WHERE e.step = 1 AND c.number LIKE $1",
        )
        .bind(format!("LG-{}-%", self.run))
        .fetch_one(&self.pool)
        .await?;
        let percentiles = row.1.unwrap_or_default();
        let ms = |s: Option<&f64>| s.map(|s| (s * 1000.0 * 10.0).round() / 10.0);
        Ok(json!({
            "fired": row.0,
            "lag_ms_p50": ms(percentiles.first()),
            "lag_ms_p99": ms(percentiles.get(1)),
            "lag_ms_p999": ms(percentiles.get(2)),
            "lag_ms_max": ms(row.2.as_ref()),
            "fired_early": row.3,
        }))
    }

    /// Clocks of this run due before `before` that have not fired yet.
    async fn unfired(&self, before: DateTime<Utc>) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM clocks WHERE number LIKE $1 AND due < $2 AND step = 0",
        )
        .bind(format!("LG-{}-%", self.run))
        .bind(before)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Waits until every clock due before `before` has fired; the time it
    /// took from `from`.
    async fn until_fired(&self, before: DateTime<Utc>, from: Instant) -> anyhow::Result<Duration> {
        loop {
            if self.unfired(before).await? == 0 {
                return Ok(from.elapsed());
            }
            anyhow::ensure!(
                from.elapsed() < Duration::from_secs(600),
                "clocks still unfired after 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn at(offset: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(offset).unwrap_or_default()
}

/// `clocks`: `armed` clocks, `rate` per second coming due from `lead` on;
/// lag measured over `window`.
pub async fn clocks(armed: i64, rate: u32, lead: Duration, window: Duration) -> anyhow::Result<()> {
    let bench = Bench::connect().await?;
    let started = Instant::now();
    let first = at(lead);
    bench
        .arm(armed, first, Duration::from_secs(1) / rate.max(1))
        .await?;
    let armed_in = started.elapsed();
    bench.rebuild_index().await?;
    let end = first + chrono::Duration::from_std(window).unwrap_or_default();
    tokio::time::sleep((end - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(2))
        .await;
    let lag = bench.lag().await?;
    println!(
        "{}",
        json!({
            "scenario": "clocks",
            "armed": armed,
            "due_per_second": rate,
            "window_s": window.as_secs(),
            "arm_s": armed_in.as_secs_f64(),
            "breach": lag,
            "redis": bench.redis_bytes_per_clock().await?,
            "postgres_bytes_per_clock": bench.postgres_bytes_per_clock().await?,
        })
    );
    Ok(())
}

/// `burst`: `count` clocks due within the same second.
pub async fn burst(count: i64, lead: Duration) -> anyhow::Result<()> {
    let bench = Bench::connect().await?;
    let first = at(lead);
    bench
        .arm(
            count,
            first,
            Duration::from_secs(1) / u32::try_from(count.max(1)).unwrap_or(1),
        )
        .await?;
    bench.rebuild_index().await?;
    tokio::time::sleep((first - Utc::now()).to_std().unwrap_or_default()).await;
    let from = Instant::now();
    let everything = first + chrono::Duration::seconds(1);
    let took = bench.until_fired(everything, from).await?;
    println!(
        "{}",
        json!({
            "scenario": "burst",
            "clocks": count,
            "all_escalated_s": took.as_secs_f64(),
            "breach": bench.lag().await?,
        })
    );
    Ok(())
}

/// Starts `hotline serve --target sla` and waits until it is ready.
async fn start_sla(binary: &str, config: &Config) -> anyhow::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(binary)
        .args(["serve", "--target", "sla"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let ready = format!("http://{}/readyz", config.http_addr);
    for _ in 0..600 {
        let status = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &ready])
            .output()
            .await?;
        if status.stdout == b"200" {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{binary} did not become ready")
}

/// `restart`: `armed` clocks coming due at `rate`/s; `sla` is killed
/// (SIGKILL) for `down` and started again: how long from its start until
/// every overdue clock has fired.
pub async fn restart(
    binary: &str,
    armed: i64,
    rate: u32,
    lead: Duration,
    down: Duration,
) -> anyhow::Result<()> {
    let bench = Bench::connect().await?;
    let mut sla = start_sla(binary, &bench.config).await?;
    let first = at(lead);
    bench
        .arm(armed, first, Duration::from_secs(1) / rate.max(1))
        .await?;
    bench.rebuild_index().await?;
    tokio::time::sleep((first - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(3))
        .await;
    sla.start_kill()?;
    sla.wait().await?;
    tokio::time::sleep(down).await;
    let overdue_at_start = Utc::now();
    let overdue = bench.unfired(overdue_at_start).await?;
    let from = Instant::now();
    let mut sla = start_sla(binary, &bench.config).await?;
    let ready = from.elapsed();
    let took = bench.until_fired(overdue_at_start, from).await?;
    sla.start_kill()?;
    sla.wait().await?;
    println!(
        "{}",
        json!({
            "scenario": "restart",
            "armed": armed,
            "down_s": down.as_secs_f64(),
            "overdue_at_start": overdue,
            "ready_s": ready.as_secs_f64(),
            "all_overdue_fired_s": took.as_secs_f64(),
        })
    );
    Ok(())
}
