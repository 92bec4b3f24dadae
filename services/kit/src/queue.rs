//! Work kept in a PostgreSQL table and done by whichever process leases it
//! first: pages to deliver, mails to send. The table is the queue; a
//! writer commits a row and wakes the workers with `NOTIFY`; each worker
//! leases what is due (`FOR UPDATE SKIP LOCKED`), does it outside any
//! transaction, and records the outcome. A worker that dies lets its lease
//! run out and another takes the work over.
//!
//! The loop is here, once; what is due, how it is leased and what doing it
//! means belong to each queue.

use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::bus::Backoff;

/// The longest wait without looking at the queue, whatever was heard.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// One table of work.
pub trait Queue: Send + Sync {
    type Job: Send;

    /// The `NOTIFY` channel writers wake workers on.
    fn channel(&self) -> &'static str;

    /// Leases the jobs due now (at most as many as one worker does at once).
    fn claim(&self) -> impl Future<Output = sqlx::Result<Vec<Self::Job>>> + Send;

    /// When the next job falls due (or its lease runs out), if any waits.
    fn next_due(&self) -> impl Future<Output = sqlx::Result<Option<DateTime<Utc>>>> + Send;

    /// Does one leased job and records its outcome. A job whose outcome
    /// cannot be recorded is left to its lease running out.
    fn work(&self, job: Self::Job) -> impl Future<Output = ()> + Send;
}

/// Tells the workers of `channel` that work was queued: inside the writer's
/// transaction, so they hear of it once it is committed.
pub async fn wake(conn: &mut PgConnection, channel: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(conn)
        .await?;
    Ok(())
}

/// Works `queue` until `cancel`: the jobs leased in one round at once, then
/// the next round at once if there were any; otherwise it waits for a
/// wake-up, the next job falling due, or [`MAX_IDLE`].
pub async fn run<Q: Queue>(queue: &Q, pool: &PgPool, cancel: CancellationToken) {
    let mut listener = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !cancel.is_cancelled() {
        if listener.is_none() {
            listener = listen(pool, queue.channel()).await;
        }
        let claimed = match queue.claim().await {
            Ok(claimed) => {
                backoff.reset();
                claimed
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, queue = queue.channel(), "cannot read the queue; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        if !claimed.is_empty() {
            join_all(claimed.into_iter().map(|job| queue.work(job))).await;
            continue;
        }
        let idle = match queue.next_due().await {
            Ok(Some(next)) => (next - Utc::now()).to_std().unwrap_or_default(),
            _ => MAX_IDLE,
        }
        .min(MAX_IDLE);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(idle) => {}
            woken = async {
                match listener.as_mut() {
                    Some(listener) => listener.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if woken.is_err() {
                    listener = None;
                }
            }
        }
    }
}

async fn listen(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}
