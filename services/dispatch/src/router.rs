//! The router: places every ticket awaiting a response with nobody on it,
//! and moves the tickets of people who left, through `tickets`'
//! `AssignTicket` (so `ticket.assigned` is the one record).
//!
//! A round ([`Router::route`]) runs when the consumer commits (a ticket
//! waits, capacity frees, an entitlement arrives), when someone states a
//! presence or beats, when a deadline comes (an entitlement's wait, an
//! overflow, a grace period) and at each sweep ([`Router::sweep`], which
//! also refreshes `sla`'s targets and notices heartbeats that stopped).
//! Time is a parameter of both, so tests run them at any instant.
//!
//! Exactly once, with any number of processes: a round holds a
//! transaction-scoped advisory lock (one round at a time, everywhere), so
//! it decides on counts nobody else changes; it records each decision (the
//! ticket counted against its person) before calling tickets, and tickets
//! assigns only if the assignee is still the one the decision saw — so a
//! person's assignment made meanwhile wins and nothing is assigned twice.
//! A decision tickets never confirmed is sent again, to the same person.

use std::{sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use hotline_kit::{bus::outbox::OutboxSignal, grpc::ServiceToken};
use hotline_proto::{
    sla::v1::{ListPoliciesRequest, sla_service_client::SlaServiceClient},
    tickets::v1::{self as tk, ticket_service_client::TicketServiceClient},
};
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

use crate::{
    presence::Liveness,
    routing::{self, Candidate, FamilySkills, Needs, Place, Priority, Targets},
    store::{self, Decision, Work},
};

/// How long a new ticket waits for its entitlement (region, asset) before
/// it is routed without: contracts answers in milliseconds when it runs.
pub const ENTITLEMENT_WAIT: Duration = Duration::from_secs(2);
/// A decision tickets has not confirmed (by `ticket.assigned`) after this
/// long is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(5);
/// Tickets one round places at most; a full round runs again at once.
const ROUND_LIMIT: i64 = 1000;
/// Calls to tickets in flight at once.
const CALLS: usize = 32;
/// Rounds whose calls are under way at once: the next round waits.
const SENDING: usize = 4;
/// How long decisions (and entitlements of settled tickets) are kept.
const KEPT: chrono::Duration = chrono::Duration::days(30);

pub type TicketsClient = TicketServiceClient<InterceptedService<Channel, ServiceToken>>;
pub type SlaClient = SlaServiceClient<InterceptedService<Channel, ServiceToken>>;

/// How the router decides, from `[dispatch]` (and `sla`'s warranty target).
#[derive(Debug, Clone)]
pub struct Settings {
    pub family_skills: FamilySkills,
    /// How long a person may be away before their tickets move.
    pub grace: Duration,
    /// After how long waiting a ticket may go to the overflow team.
    pub overflow_after: Duration,
    /// Lower-case; `None`: no overflow.
    pub overflow_team: Option<String>,
    /// How often the sweep runs.
    pub sweep: Duration,
    /// `sla.response_target`: every priority's target until `sla` says.
    pub warranty: Duration,
}

pub struct Router {
    pool: PgPool,
    liveness: Arc<Liveness>,
    tickets: TicketsClient,
    sla: SlaClient,
    pub settings: Settings,
    /// `sla`'s response targets, refreshed at each sweep.
    targets: Mutex<Targets>,
    /// Woken by commits that may give the router work.
    wake: OutboxSignal,
    /// Calls to tickets in flight at once, over every round sending.
    calls: tokio::sync::Semaphore,
}

/// What a round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    /// Decisions sent to tickets (and accepted).
    pub assigned: usize,
    /// Tickets nobody could take.
    pub waiting: usize,
    /// The round stopped at its limit: run again at once.
    pub full: bool,
    /// When time alone gives the next round work.
    pub next: Option<DateTime<Utc>>,
}

/// A decision to send to tickets.
struct Call {
    ticket: Uuid,
    number: String,
    to: String,
    /// The assignee it must still have (`None`: nobody).
    from: Option<String>,
}

impl Router {
    pub fn new(
        pool: PgPool,
        liveness: Arc<Liveness>,
        tickets: TicketsClient,
        sla: SlaClient,
        settings: Settings,
        wake: OutboxSignal,
    ) -> Self {
        let warranty = chrono::Duration::from_std(settings.warranty)
            .unwrap_or_else(|_| chrono::Duration::hours(2));
        Self {
            pool,
            liveness,
            tickets,
            sla,
            settings,
            targets: Mutex::new(Targets::warranty(warranty)),
            wake,
            calls: tokio::sync::Semaphore::new(CALLS),
        }
    }

    /// Asks for a round soon (someone came online).
    pub fn wake(&self) {
        self.wake.committed();
    }

    pub fn targets(&self) -> Targets {
        self.targets
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Rounds until `cancel`: when woken, when a deadline comes, at each
    /// sweep (the first at once). A round's calls to tickets go on while
    /// the next round decides (its decisions are recorded, so no round
    /// decides a ticket twice); at most [`SENDING`] rounds send at once.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut next_sweep = tokio::time::Instant::now();
        let mut sending = tokio::task::JoinSet::new();
        loop {
            while sending.try_join_next().is_some() {}
            while sending.len() >= SENDING {
                sending.join_next().await;
            }
            let now = Utc::now();
            let sweeping = tokio::time::Instant::now() >= next_sweep;
            let done = if sweeping {
                next_sweep = tokio::time::Instant::now() + self.settings.sweep;
                match self.chores(now).await {
                    Ok(()) => self.plan(now).await,
                    Err(error) => Err(error),
                }
            } else {
                self.plan(now).await
            };
            let until = match done {
                Ok((round, calls)) => {
                    if !calls.is_empty() || round.waiting > 0 {
                        tracing::debug!(
                            decided = calls.len(),
                            waiting = round.waiting,
                            "routing round"
                        );
                    }
                    if !calls.is_empty() {
                        let router = self.clone();
                        sending.spawn(async move {
                            let decided = calls.len();
                            let assigned = router.send_all(calls, now).await;
                            tracing::debug!(decided, assigned, "routing round sent");
                        });
                    }
                    if round.full {
                        tokio::time::Instant::now()
                    } else {
                        round
                            .next
                            .and_then(|at| (at - Utc::now()).to_std().ok())
                            .map(|wait| tokio::time::Instant::now() + wait)
                            .map_or(next_sweep, |at| at.min(next_sweep))
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "routing round failed; retrying"
                    );
                    tokio::time::Instant::now() + Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        // Calls under way finish (each is bounded by the client's timeout).
        while sending.join_next().await.is_some() {}
        Ok(())
    }

    /// The periodic work, then a round: `sla`'s targets, heartbeats that
    /// stopped, old decisions forgotten.
    pub async fn sweep(&self, now: DateTime<Utc>) -> anyhow::Result<Round> {
        self.chores(now).await?;
        self.route(now).await
    }

    /// A sweep's work before its round.
    async fn chores(&self, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.refresh_targets().await;
        self.notice_lapses(now).await?;
        store::forget(&self.pool, now - KEPT).await?;
        Ok(())
    }

    async fn refresh_targets(&self) {
        match self.sla.clone().list_policies(ListPoliciesRequest {}).await {
            Ok(answer) => {
                let mut targets = self.targets();
                for policy in answer.into_inner().policies {
                    let priority = match tk::Priority::try_from(policy.priority) {
                        Ok(tk::Priority::Low) => Priority::Low,
                        Ok(tk::Priority::Normal) => Priority::Normal,
                        Ok(tk::Priority::High) => Priority::High,
                        Ok(tk::Priority::Urgent) => Priority::Urgent,
                        _ => continue,
                    };
                    if let Some(target) = policy.target.and_then(|t| {
                        chrono::Duration::try_seconds(t.seconds)
                            .filter(|d| *d > chrono::Duration::zero())
                    }) {
                        targets = targets.with(priority, target);
                    }
                }
                if let Ok(mut kept) = self.targets.lock() {
                    *kept = targets;
                }
            }
            Err(status) => tracing::debug!(
                error = %status,
                "sla's targets unknown; the last known (or the warranty target) stand"
            ),
        }
    }

    /// People stated online or away whose heartbeat is gone are noted as
    /// lapsed from `now` (their tickets move after the grace); those
    /// alive again are cleared. With Redis unreachable nobody is noted:
    /// an outage is not everyone leaving.
    async fn notice_lapses(&self, now: DateTime<Utc>) -> anyhow::Result<()> {
        let present = store::stated_present(&self.pool).await?;
        let alive = match self.liveness.alive(&present).await {
            Ok(alive) => alive,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "heartbeats unknown: Redis unreachable; no lapse noted"
                );
                return Ok(());
            }
        };
        let (live, lapsed): (Vec<_>, Vec<_>) = present.iter().zip(alive).partition(|(_, a)| *a);
        let live: Vec<Uuid> = live.into_iter().map(|(id, _)| *id).collect();
        let lapsed: Vec<Uuid> = lapsed.into_iter().map(|(id, _)| *id).collect();
        store::note_lapses(&self.pool, &lapsed, &live, now).await?;
        Ok(())
    }

    /// People online now, as routing weighs them.
    async fn candidates(&self, conn: &mut sqlx::PgConnection) -> anyhow::Result<Vec<Candidate>> {
        let people = store::stated_online(conn).await?;
        let ids: Vec<Uuid> = people.iter().map(|p| p.id).collect();
        let alive = self.liveness.alive_or_offline(&ids).await;
        let counts = store::assigned_counts(conn).await?;
        Ok(people
            .into_iter()
            .zip(alive)
            .filter(|(_, alive)| *alive)
            .map(|(person, _)| {
                let email = person.email.to_lowercase();
                Candidate {
                    assigned: counts.get(&email).copied().unwrap_or(0),
                    email,
                    skills: person.skills,
                    regions: person.regions,
                    team: person.team.map(|t| t.to_lowercase()),
                    capacity: u32::try_from(person.capacity).unwrap_or(0),
                    last_assigned_at: person.last_assigned_at,
                }
            })
            .collect())
    }

    /// One round at `now`: decides, records, then calls tickets.
    pub async fn route(&self, now: DateTime<Utc>) -> anyhow::Result<Round> {
        let (mut round, calls) = self.plan(now).await?;
        round.assigned = self.send_all(calls, now).await;
        Ok(round)
    }

    /// A round's decisions, recorded (committed), with the calls to make:
    /// `assigned` is left at 0 until they are sent.
    async fn plan(&self, now: DateTime<Utc>) -> anyhow::Result<(Round, Vec<Call>)> {
        let targets = self.targets();
        let settings = &self.settings;
        let mut tx = self.pool.begin().await?;
        store::lock_router(&mut tx).await?;
        let resend_before = now - chrono::Duration::from_std(RESEND_AFTER)?;
        let mut work = store::work(
            &mut tx,
            &targets,
            now,
            settings.grace,
            resend_before,
            ROUND_LIMIT,
        )
        .await?;
        let full = work.len() as i64 >= ROUND_LIMIT;
        work.sort_by(|a, b| routing::order(&place(a), &place(b), &targets));
        let mut candidates = self.candidates(&mut tx).await?;
        let mut decisions = Vec::new();
        let mut calls = Vec::new();
        let mut waiting = 0;
        for ticket in work {
            if let Some(to) = ticket.assigning_to.clone() {
                calls.push(Call {
                    ticket: ticket.id,
                    number: ticket.number.clone(),
                    to,
                    from: ticket.assignee.clone(),
                });
                continue;
            }
            let (decided, awaiting_entitlement) = self.decide(&ticket, &mut candidates, now);
            match &decided.assignee {
                Some(to) => calls.push(Call {
                    ticket: ticket.id,
                    number: ticket.number.clone(),
                    to: to.clone(),
                    from: ticket.assignee.clone(),
                }),
                None => waiting += 1,
            }
            // A reason only repeated is not written again, nor the wait for
            // an entitlement (a few milliseconds, usually: the queue shows it
            // from the missing entitlement).
            if decided.assignee.is_some()
                || (!awaiting_entitlement && ticket.reason.as_deref() != Some(&decided.reason))
            {
                decisions.push(decided);
            }
        }
        store::decide(&mut tx, &decisions, now).await?;
        let overflow_after = settings
            .overflow_team
            .as_ref()
            .map(|_| settings.overflow_after);
        let next = store::next_due(
            &mut tx,
            now,
            ENTITLEMENT_WAIT,
            overflow_after,
            settings.grace,
            RESEND_AFTER,
        )
        .await?;
        tx.commit().await?;
        let round = Round {
            assigned: 0,
            waiting,
            full,
            next,
        };
        Ok((round, calls))
    }

    /// Sends a round's decisions; how many hold.
    async fn send_all(&self, calls: Vec<Call>, now: DateTime<Utc>) -> usize {
        stream::iter(calls)
            .map(|call| async move {
                // Never closed: a permit is always given.
                let _permit = self.calls.acquire().await.ok();
                self.send(call, now).await
            })
            .buffer_unordered(CALLS)
            .filter(|sent| std::future::ready(*sent))
            .count()
            .await
    }

    /// Whom `ticket` goes to, or why nobody; the one picked is counted.
    /// With `true` when the ticket waits for its entitlement.
    fn decide(
        &self,
        ticket: &Work,
        candidates: &mut [Candidate],
        now: DateTime<Utc>,
    ) -> (Decision, bool) {
        let settings = &self.settings;
        let needs = Needs::of(
            ticket.family.as_deref(),
            ticket.region.as_deref(),
            &settings.family_skills,
        );
        let mut decision = Decision {
            ticket_id: ticket.id,
            number: ticket.number.clone(),
            assignee: None,
            reason: String::new(),
            skills: needs.skills.clone(),
            region: needs.region.clone(),
            moved_from: ticket.assignee.clone(),
            overflow: false,
        };
        let queued = ticket.queued_at.unwrap_or(ticket.awaiting_since);
        let waited = (now - queued).to_std().unwrap_or_default();
        if !ticket.entitled && ticket.assignee.is_none() && waited < ENTITLEMENT_WAIT {
            decision.reason = routing::awaiting_entitlement(ENTITLEMENT_WAIT);
            return (decision, true);
        }
        let overflow = settings
            .overflow_team
            .as_deref()
            .filter(|_| ticket.assignee.is_none() && waited >= settings.overflow_after);
        match routing::pick(candidates, &needs, ticket.assignee.as_deref(), overflow) {
            Ok(picked) => {
                let chosen = &mut candidates[picked.index];
                chosen.assigned += 1;
                chosen.last_assigned_at = Some(now);
                decision.assignee = Some(chosen.email.clone());
                decision.overflow = picked.overflow;
                decision.reason = match &ticket.assignee {
                    Some(from) => format!("moved from {from}, who left: {}", picked.reason),
                    None => picked.reason,
                };
            }
            Err(why) => {
                decision.reason = match &ticket.assignee {
                    Some(from) => {
                        format!("stays with {from}, who left, until someone can take it: {why}")
                    }
                    None => why,
                };
            }
        }
        (decision, false)
    }

    /// Sends one decision to tickets; whether it holds. Refused (someone
    /// assigned it meanwhile, it closed), the decision is dropped; a
    /// failure that passes leaves it to be sent again.
    async fn send(&self, call: Call, now: DateTime<Utc>) -> bool {
        let request = tk::AssignTicketRequest {
            ticket: call.ticket.to_string(),
            assignee: call.to.clone(),
            expected_assignee: Some(call.from.clone().unwrap_or_default()),
        };
        match self.tickets.clone().assign_ticket(request).await {
            Ok(_) => {
                tracing::info!(ticket = %call.number, to = %call.to, "routed");
                true
            }
            // Sent again after a lost answer: the first one took.
            Err(status)
                if status.code() == Code::FailedPrecondition
                    && status
                        .message()
                        .to_lowercase()
                        .ends_with(&format!("now assigned to {}", call.to)) =>
            {
                true
            }
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                tracing::info!(ticket = %call.number, to = %call.to, why = %status.message(), "not routed");
                if let Err(error) =
                    store::refused(&self.pool, call.ticket, &call.to, status.message(), now).await
                {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "refused decision kept; sent again later"
                    );
                }
                false
            }
            Err(status) => {
                tracing::warn!(
                    ticket = %call.number,
                    to = %call.to,
                    error = %status,
                    "tickets did not take the assignment; sending it again in {}s",
                    RESEND_AFTER.as_secs()
                );
                false
            }
        }
    }
}

fn place(work: &Work) -> Place {
    Place {
        priority: work.priority.parse().unwrap_or(Priority::Normal),
        awaiting_since: work.awaiting_since,
        created_at: work.created_at,
    }
}
