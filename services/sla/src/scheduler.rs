//! Fires clocks when they come due: sleeps until the earliest entry of the
//! due-index, takes what is due, and fires it under the row lock.
//!
//! Exactly once per step, with any number of `sla` processes: a clock is
//! fired only while its row is locked (others skip it) and only if its
//! `next_at` has come, and the step is recorded in the same transaction as
//! the new `next_at` and the events. A crash before the commit fires
//! nothing; after it, the step is done.
//!
//! Never late by more than the outage: at start, overdue clocks fire from
//! PostgreSQL before anything else; a safety net looks in PostgreSQL for
//! clocks the index missed; while Redis is unreachable, PostgreSQL is
//! polled instead.
//!
//! Each clock fired is a span, `sla.fire`, continuing the trace of the event
//! that armed the clock: its `sla.breached` and `sla.escalated` carry the
//! fault's trace on to the pager.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use hotline_kit::{
    bus::{
        Backoff,
        outbox::{self, OutboxSignal},
    },
    telemetry,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    domain::{Effect, Ladder},
    events,
    index::DueIndex,
    store::{self, Fired},
};

/// Clocks fired in one transaction.
const BATCH: usize = 1_000;
/// The longest sleep without looking at the index: bounds how long a flush
/// or another process's earlier entry goes unnoticed.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// How overdue a clock must be for the safety net to take it: less than
/// that, the index is about to fire it.
const NET_GRACE: chrono::Duration = chrono::Duration::milliseconds(250);
/// How often PostgreSQL is polled while Redis is unreachable.
const FALLBACK_POLL: Duration = Duration::from_millis(200);

pub struct Scheduler {
    pub pool: PgPool,
    pub index: Arc<DueIndex>,
    pub ladder: Ladder,
    pub relay: OutboxSignal,
    /// How often PostgreSQL is asked for clocks the index missed.
    pub safety_net: Duration,
    /// Index entries found without a clock once.
    pub absent_once: std::sync::Mutex<HashSet<Uuid>>,
}

impl Scheduler {
    pub async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut caught_up = false;
        let mut net = tokio::time::Instant::now() + self.safety_net;
        let mut backoff = Backoff::new(FALLBACK_POLL, Duration::from_secs(5));
        while !cancel.is_cancelled() {
            match self.round(&cancel, &mut caught_up, &mut net).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error = format!("{error:#}"),
                        ?delay,
                        "cannot fire clocks; retrying"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        Ok(())
    }

    async fn round(
        &self,
        cancel: &CancellationToken,
        caught_up: &mut bool,
        net: &mut tokio::time::Instant,
    ) -> anyhow::Result<()> {
        if !*caught_up {
            // Whatever came due while no scheduler ran, before anything else.
            let fired = self.fire_overdue(Utc::now()).await?;
            tracing::info!(fired, "caught up with overdue clocks");
            *caught_up = true;
        }
        if let Err(error) = self.index_round(cancel).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "due-index unavailable; firing from PostgreSQL"
            );
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(FALLBACK_POLL) => {}
            }
            self.fire_overdue(Utc::now()).await?;
        }
        if tokio::time::Instant::now() >= *net {
            // Anything due a little while ago that the index did not fire.
            let missed = self.fire_overdue(Utc::now() - NET_GRACE).await?;
            if missed > 0 {
                tracing::warn!(missed, "safety net fired clocks the due-index missed");
            }
            *net = tokio::time::Instant::now() + self.safety_net;
        }
        Ok(())
    }

    /// One round through Redis: rebuild if needed, sleep until the head is
    /// due, fire what is due.
    async fn index_round(&self, cancel: &CancellationToken) -> anyhow::Result<()> {
        if self.index.needs_rebuild().await? {
            let started = std::time::Instant::now();
            let clocks = self.index.rebuild(&self.pool).await?;
            tracing::info!(clocks, elapsed = ?started.elapsed(), "due-index rebuilt from PostgreSQL");
        }
        let sleep = match self.index.head().await? {
            Some(head) => (head - Utc::now()).to_std().unwrap_or_default(),
            None => MAX_SLEEP,
        };
        if !sleep.is_zero() {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.index.changed(sleep.min(MAX_SLEEP)) => {}
            }
        }
        loop {
            let due = self.index.due(Utc::now(), BATCH).await?;
            if due.is_empty() {
                return Ok(());
            }
            let (fired, skipped) = self.fire(&due).await?;
            if fired == 0 && skipped > 0 {
                // Another process holds them: let it finish.
                tokio::time::sleep(Duration::from_millis(5)).await;
                return Ok(());
            }
            if due.len() < BATCH {
                return Ok(());
            }
        }
    }

    /// Fires every clock overdue at `before`, from PostgreSQL.
    async fn fire_overdue(&self, before: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let due = store::overdue(&self.pool, before, BATCH as i64).await?;
            if due.is_empty() {
                return Ok(total);
            }
            let (fired, skipped) = self.fire(&due).await?;
            total += fired;
            if fired == 0 {
                // All held by another process (or not due after all).
                if skipped > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                return Ok(total);
            }
        }
    }

    /// Fires those of `ids` that are due, in one transaction, and puts the
    /// truth of each in the index. Returns (fired, held by another process).
    pub async fn fire(&self, ids: &[Uuid]) -> anyhow::Result<(usize, usize)> {
        let mut tx = self.pool.begin().await?;
        let mut clocks = store::lock_free(&mut tx, ids).await?;
        let now = Utc::now();
        let mut fired = Vec::new();
        let mut events = Vec::new();
        let mut changed = HashSet::new();
        // One span per clock fired, continuing the trace that armed it: its
        // events carry it on, and it ends once the step is committed.
        let mut spans = HashMap::new();
        for clock in &mut clocks {
            let before = clock.clone();
            let Some(effects) = clock.fire(now, &self.ladder) else {
                continue;
            };
            let span = tracing::info_span!(
                "sla.fire",
                ticket = %clock.number,
                breach = clock.breaches,
                step = clock.step
            );
            clock.trace.adopt(&span);
            let scheduled = before.next_at.unwrap_or(now);
            for effect in &effects {
                if let Effect::Escalated { level, step, at } = effect {
                    if *step == 1 {
                        let lag = (now - scheduled).to_std().unwrap_or_default();
                        metrics::histogram!("hotline_sla_breach_lag_seconds")
                            .record(lag.as_secs_f64());
                    }
                    fired.push(Fired {
                        ticket_id: clock.ticket_id,
                        breach: clock.breaches,
                        step: *step,
                        level: *level,
                        due: scheduled,
                        fired_at: *at,
                    });
                }
            }
            events.extend(span.in_scope(|| events::published(clock, &before, &effects)));
            spans.insert(clock.ticket_id, span);
            changed.insert(clock.ticket_id);
        }
        let changed_clocks: Vec<_> = clocks
            .iter()
            .filter(|c| changed.contains(&c.ticket_id))
            .collect();
        if !changed_clocks.is_empty() {
            store::save_fired(&mut tx, &changed_clocks, &fired).await?;
            outbox::enqueue(&mut tx, &events).await?;
        }
        // The truth of every clock looked at, under its lock.
        let truth: Vec<_> = clocks.iter().map(|c| (c.ticket_id, c.next_at)).collect();
        self.index.set_many(&truth).await;
        if let Err(error) = tx.commit().await {
            // Rolled back: the clocks are still due; say so to the index.
            let due: Vec<_> = clocks.iter().map(|c| (c.ticket_id, Some(now))).collect();
            self.index.set_many(&due).await;
            for span in spans.values() {
                telemetry::failed(span, format_args!("not committed: {error}"));
            }
            return Err(error.into());
        }
        for step in &fired {
            let number = clocks
                .iter()
                .find(|c| c.ticket_id == step.ticket_id)
                .map_or("", |c| c.number.as_str());
            let _in_its_trace = spans.get(&step.ticket_id).map(tracing::Span::enter);
            tracing::info!(
                ticket = number,
                breach = step.breach,
                level = step.level,
                step = step.step,
                "{}",
                if step.step == 1 {
                    "breached: no response in time"
                } else {
                    "escalated"
                }
            );
        }
        if !events.is_empty() {
            self.relay.committed();
            metrics::counter!("hotline_sla_escalations_total").increment(fired.len() as u64);
        }
        let seen: HashSet<Uuid> = clocks.iter().map(|c| c.ticket_id).collect();
        let unseen: Vec<Uuid> = ids
            .iter()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        let mut skipped = unseen.len();
        if !unseen.is_empty() {
            let absent = store::absent(&self.pool, &unseen).await?;
            skipped -= absent.len();
            self.forget(absent).await;
        }
        Ok((changed_clocks.len(), skipped))
    }

    /// Entries without a clock: one whose clock is being created right now
    /// (indexed before its commit) is looked at again shortly; one still
    /// without a clock on the second look is removed.
    async fn forget(&self, absent: Vec<Uuid>) {
        let mut entries = Vec::with_capacity(absent.len());
        {
            let mut once = self.absent_once.lock().unwrap_or_else(|e| e.into_inner());
            let again = Utc::now() + chrono::Duration::milliseconds(100);
            for id in absent {
                if once.remove(&id) {
                    entries.push((id, None));
                } else {
                    once.insert(id);
                    entries.push((id, Some(again)));
                }
            }
        }
        self.index.set_many(&entries).await;
    }
}
