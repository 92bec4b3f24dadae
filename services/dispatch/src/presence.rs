//! Liveness: one Redis key per person with a time-to-live, set by each
//! heartbeat. The stated presence is PostgreSQL's; this only says whether
//! it still holds. A key that expired, or a Redis that lost everything
//! (`FLUSHALL`), makes the person offline until their next heartbeat, and
//! nothing else is lost.
//!
//! Redis tells nobody when a key expires (keyspace notifications are not
//! guaranteed to be delivered), so a person whose heartbeat stopped is found
//! by looking: [`Liveness::alive`] over the people who said they are online
//! or away.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use hotline_kit::cache::Redis;
use uuid::Uuid;

/// How long one Redis command may take before presence counts as unknown.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Liveness {
    redis: Arc<Redis>,
    /// How long a heartbeat keeps a person's presence: `dispatch.heartbeat_ttl`.
    ttl: Duration,
}

impl Liveness {
    pub fn new(redis: Arc<Redis>, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, person: Uuid) -> String {
        self.redis.key(&format!("dispatch:alive:{person}"))
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> anyhow::Result<T> {
        tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut connection = self.redis.connection().await?;
            command
                .query_async(&mut connection)
                .await
                .context("Redis refused a presence command")
        })
        .await
        .context("Redis did not answer in time")?
    }

    /// Keeps `person`'s presence for another TTL.
    pub async fn beat(&self, person: Uuid) -> anyhow::Result<()> {
        let millis = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut command = redis::cmd("SET");
        command.arg(self.key(person)).arg(1).arg("PX").arg(millis);
        self.run::<()>(command).await
    }

    /// Ends `person`'s liveness at once (they went offline).
    pub async fn end(&self, person: Uuid) -> anyhow::Result<()> {
        let mut command = redis::cmd("DEL");
        command.arg(self.key(person));
        self.run::<()>(command).await
    }

    /// Whether each of `people` has a live heartbeat, in one round trip.
    pub async fn alive(&self, people: &[Uuid]) -> anyhow::Result<Vec<bool>> {
        if people.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("MGET");
        for person in people {
            command.arg(self.key(*person));
        }
        let values: Vec<Option<String>> = self.run(command).await?;
        Ok(values.iter().map(Option::is_some).collect())
    }

    /// [`Liveness::alive`] for a read that must answer: with Redis away,
    /// nobody's heartbeat can be seen, so everyone reads offline (logged).
    pub async fn alive_or_offline(&self, people: &[Uuid]) -> Vec<bool> {
        match self.alive(people).await {
            Ok(alive) => alive,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "presence unknown: Redis unreachable; people read as offline"
                );
                vec![false; people.len()]
            }
        }
    }
}
