//! Redis: hot state that can always be rebuilt from PostgreSQL. Every key is
//! under the namespace prefix, so tests and tenants can share one Redis.

use anyhow::Context;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::config::Secret;

pub struct Redis {
    client: redis::Client,
    /// `<namespace>:`, the start of every key this process writes.
    prefix: String,
    /// Connected on first use, then shared (it reconnects by itself).
    connection: OnceCell<ConnectionManager>,
}

impl Redis {
    pub fn new(url: &Secret, namespace: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url.expose()).context("invalid redis_url")?,
            prefix: format!("{namespace}:"),
            connection: OnceCell::new(),
        })
    }

    /// The full key for `name` under this namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub async fn connection(&self) -> anyhow::Result<ConnectionManager> {
        self.connection
            .get_or_try_init(|| async {
                ConnectionManager::new(self.client.clone())
                    .await
                    .context("connecting to Redis")
            })
            .await
            .cloned()
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut connection = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .context("Redis did not answer PING")?;
        Ok(())
    }
}
