//! The due-index: a Redis sorted set of clocks by the millisecond of their
//! next action, so the scheduler sleeps until exactly the next one.
//!
//! PostgreSQL is the truth; the index only says when to look. It is safe
//! because:
//! - every write of a clock's entry is made while its row is locked, before
//!   the commit, with the value being committed: writes to one entry happen
//!   in the order of the transactions;
//! - an entry earlier than the truth costs one look (the scheduler reads the
//!   row, finds nothing due, and puts the truth back); an entry later than
//!   the truth would be late, so a rebuild only ever lowers entries;
//! - a marker key is set before every rebuild: a `FLUSHALL` removes it, and
//!   the scheduler rebuilds whenever it is missing. A write that failed
//!   (Redis unreachable) marks the index for a rebuild too.
//!
//! Entries are the 16 bytes of the ticket id, to keep an armed clock small.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use hotline_kit::cache::Redis;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store;

/// How long one Redis command may take before the index counts as down.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Entries per write while rebuilding.
const REBUILD_CHUNK: usize = 10_000;

pub struct DueIndex {
    redis: Arc<Redis>,
    key: String,
    marker: String,
    /// A write failed: rebuild once Redis answers.
    stale: AtomicBool,
    /// Wakes this process's scheduler when an entry moved earlier.
    wake: Notify,
}

/// The score of a moment: its millisecond, rounded up, so an entry never
/// comes due before its clock.
fn score(at: DateTime<Utc>) -> i64 {
    let millis = at.timestamp_millis();
    if at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        millis
    } else {
        millis + 1
    }
}

impl DueIndex {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            key: redis.key("sla:due"),
            marker: redis.key("sla:due:built"),
            redis,
            stale: AtomicBool::new(true),
            wake: Notify::new(),
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> anyhow::Result<T> {
        tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut connection = self.redis.connection().await?;
            command
                .query_async(&mut connection)
                .await
                .context("Redis refused a due-index command")
        })
        .await
        .context("Redis did not answer in time")?
    }

    /// Puts the truth of one clock in the index: `Some(at)` arms it, `None`
    /// removes it. Call with the clock's row locked, before the commit. A
    /// failure is not the caller's: the index is marked for a rebuild.
    pub async fn set(&self, ticket_id: Uuid, next_at: Option<DateTime<Utc>>) {
        self.set_many(&[(ticket_id, next_at)]).await;
    }

    pub async fn set_many(&self, entries: &[(Uuid, Option<DateTime<Utc>>)]) {
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let mut earliest = None::<i64>;
        for (ticket_id, next_at) in entries {
            let member = ticket_id.as_bytes().as_slice();
            match next_at {
                Some(at) => {
                    let at = score(*at);
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    pipe.zadd(&self.key, member, at).ignore();
                }
                None => {
                    pipe.zrem(&self.key, member).ignore();
                }
            }
        }
        let written = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut connection = self.redis.connection().await?;
            pipe.query_async::<()>(&mut connection)
                .await
                .context("Redis refused a due-index write")
        })
        .await
        .context("Redis did not answer in time")
        .and_then(|written| written);
        if let Err(error) = written {
            self.mark_stale(&error);
        }
        if earliest.is_some() {
            self.wake.notify_one();
        }
    }

    fn mark_stale(&self, error: &anyhow::Error) {
        if !self.stale.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                error = format!("{error:#}"),
                "due-index write failed; it will be rebuilt from PostgreSQL"
            );
        }
    }

    /// Whether the index must be rebuilt: a write failed, or it is gone.
    pub async fn needs_rebuild(&self) -> anyhow::Result<bool> {
        if self.stale.load(Ordering::SeqCst) {
            return Ok(true);
        }
        let built: bool = self.run(redis::cmd("EXISTS").arg(&self.marker)).await?;
        Ok(!built)
    }

    /// Rebuilds the index from PostgreSQL, only ever lowering entries (a
    /// concurrent writer's newer, earlier entry stands). Returns the clocks
    /// indexed.
    pub async fn rebuild(&self, pool: &PgPool) -> anyhow::Result<usize> {
        self.stale.store(false, Ordering::SeqCst);
        // The marker first: a flush during the rebuild removes it again.
        let rebuilt = async {
            self.run::<()>(redis::cmd("SET").arg(&self.marker).arg(1))
                .await?;
            let mut armed = store::armed(pool);
            let mut chunk: Vec<(i64, [u8; 16])> = Vec::with_capacity(REBUILD_CHUNK);
            let mut total = 0;
            loop {
                let next = armed.try_next().await?;
                if let Some((id, at)) = next {
                    chunk.push((score(at), *id.as_bytes()));
                }
                if chunk.len() == REBUILD_CHUNK || (next.is_none() && !chunk.is_empty()) {
                    let mut command = redis::cmd("ZADD");
                    command.arg(&self.key).arg("LT");
                    for (at, member) in &chunk {
                        command.arg(*at).arg(member.as_slice());
                    }
                    self.run::<()>(&command).await?;
                    total += chunk.len();
                    chunk.clear();
                }
                if next.is_none() {
                    break;
                }
            }
            anyhow::Ok(total)
        }
        .await;
        match rebuilt {
            Ok(total) => {
                self.wake.notify_one();
                Ok(total)
            }
            Err(error) => {
                self.stale.store(true, Ordering::SeqCst);
                Err(error)
            }
        }
    }

    /// The earliest entry's moment, if any.
    pub async fn head(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let head: Vec<(Vec<u8>, i64)> = self
            .run(
                redis::cmd("ZRANGE")
                    .arg(&self.key)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES"),
            )
            .await?;
        Ok(head
            .first()
            .and_then(|(_, at)| DateTime::from_timestamp_millis(*at)))
    }

    /// Up to `limit` clocks whose entry is at or before `now`.
    pub async fn due(&self, now: DateTime<Utc>, limit: usize) -> anyhow::Result<Vec<Uuid>> {
        let members: Vec<Vec<u8>> = self
            .run(
                redis::cmd("ZRANGE")
                    .arg(&self.key)
                    .arg("-inf")
                    .arg(now.timestamp_millis())
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        Ok(members
            .iter()
            .filter_map(|member| Uuid::from_slice(member).ok())
            .collect())
    }

    /// Waits until an entry may have moved earlier, or `timeout`.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_score_never_comes_before_its_moment() {
        let exact = DateTime::from_timestamp_millis(1_790_000_000_123).unwrap_or_default();
        assert_eq!(score(exact), 1_790_000_000_123);
        let later = exact + chrono::Duration::microseconds(1);
        assert_eq!(score(later), 1_790_000_000_124);
    }
}
