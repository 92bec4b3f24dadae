//! Routing over real gRPC, PostgreSQL, RabbitMQ and Redis: tickets from
//! `tickets` (running in the same process), entitlements as contracts
//! publishes them, people online by their own tokens. What a desk would
//! notice: who gets each ticket, in which order, how fast, why a ticket
//! waits, and that nothing is assigned twice.
//!
//! Grace periods and overflow are reached by running a round at a later
//! instant (`Router::sweep(now + 3m)`), never by sleeping.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use hotline_kit::{
    auth::{Authority, Role},
    bus::outbox::{self, OutboxSignal, envelope},
    cache::Redis,
    grpc::BearerToken,
    testing::{EventTap, TestApp, TestEnv},
};
use hotline_proto::{
    dispatch::v1::{self as pb, dispatch_service_client::DispatchServiceClient},
    events::v1::{self as ev, event_envelope::Payload},
    sla::v1::{self as sla, sla_service_client::SlaServiceClient},
    tickets::v1::{self as tk, ticket_service_client::TicketServiceClient},
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

type Dispatch = DispatchServiceClient<InterceptedService<Channel, BearerToken>>;
type Tickets = TicketServiceClient<InterceptedService<Channel, BearerToken>>;

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    /// tickets, sla and dispatch in one process; `settings` on `[dispatch]`.
    async fn start(settings: &[(&str, &str)]) -> Self {
        let mut env = TestEnv::new().await.unwrap();
        for (key, value) in settings {
            env.config.set("dispatch", key, value);
        }
        let app = env
            .start(&[
                hotline_tickets::module(),
                hotline_sla::module(),
                hotline_dispatch::module(),
            ])
            .await
            .unwrap();
        Self { env, app }
    }

    fn dispatch(&self, subject: &str, role: Role) -> Dispatch {
        DispatchServiceClient::new(self.app.channel(&self.env.token(subject, role)))
    }

    fn manager(&self) -> Dispatch {
        self.dispatch("mia@desk.example", Role::Manager)
    }

    fn tickets(&self) -> Tickets {
        TicketServiceClient::new(
            self.app
                .channel(&self.env.token("ivy@desk.example", Role::Agent)),
        )
    }

    /// A router of this desk's database, to run rounds at chosen instants
    /// (the process's own router runs beside it, at the real time).
    fn router(&self) -> hotline_dispatch::router::Router {
        let mut config = self.env.config.clone();
        let own = format!("http://{}", self.app.grpc_addr);
        config.endpoints.insert("tickets".into(), own.clone());
        config.endpoints.insert("sla".into(), own);
        let redis = Redis::new(&config.redis_url, &config.namespace).unwrap();
        hotline_dispatch::router(
            &config,
            Arc::new(Authority::new(&config.auth.secret).unwrap()),
            self.env.pool("dispatch").unwrap(),
            Arc::new(redis),
            OutboxSignal::default(),
        )
        .unwrap()
    }

    /// Adds an agent and brings them online (by their own token).
    async fn agent(&self, email: &str, skills: &[&str], regions: &[&str], capacity: u32) {
        self.person(email, skills, regions, capacity, "").await;
        self.presence(email, pb::Presence::Online).await;
    }

    async fn person(
        &self,
        email: &str,
        skills: &[&str],
        regions: &[&str],
        capacity: u32,
        team: &str,
    ) {
        self.manager()
            .add_person(pb::AddPersonRequest {
                name: email.split('@').next().unwrap().into(),
                email: email.into(),
                roles: vec!["agent".into()],
                skills: skills.iter().map(|s| (*s).to_owned()).collect(),
                regions: regions.iter().map(|s| (*s).to_owned()).collect(),
                capacity: Some(capacity),
                team: team.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn presence(&self, email: &str, presence: pb::Presence) {
        self.dispatch(email, Role::Agent)
            .set_presence(pb::SetPresenceRequest {
                presence: presence as i32,
                person: String::new(),
            })
            .await
            .unwrap();
    }

    /// A customer's new ticket, awaiting a response.
    async fn open(&self, subject: &str, priority: tk::Priority) -> tk::Ticket {
        self.tickets()
            .create_ticket(tk::CreateTicketRequest {
                subject: subject.into(),
                body: "It stopped working.".into(),
                contact: "kim@customer.example".into(),
                priority: priority as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap()
    }

    /// `ticket`'s entitlement as contracts publishes it: its branch's
    /// region and its asset's model family.
    async fn entitle(&self, ticket: &tk::Ticket, region: &str, family: &str) {
        let id: Uuid = ticket.id.parse().unwrap();
        let event = envelope(
            "entitlement.resolved",
            Some((id, 1)),
            Utc::now(),
            Payload::EntitlementResolved(ev::EntitlementResolved {
                ticket_id: ticket.id.clone(),
                customer: Some(ev::CustomerRef {
                    id: Uuid::now_v7().to_string(),
                    name: "Acme".into(),
                }),
                branch: Some(ev::BranchRef {
                    id: Uuid::now_v7().to_string(),
                    name: "Acme North".into(),
                    region: region.into(),
                }),
                asset: Some(ev::AssetRef {
                    id: Uuid::now_v7().to_string(),
                    serial: "SN-1".into(),
                    model: "X1".into(),
                    family: family.into(),
                }),
                ..Default::default()
            }),
        );
        let pool = self.env.pool("dispatch").unwrap();
        let mut conn = pool.acquire().await.unwrap();
        outbox::enqueue(&mut conn, &[event]).await.unwrap();
    }

    async fn ticket(&self, ticket: &tk::Ticket) -> tk::Ticket {
        self.tickets()
            .get_ticket(tk::GetTicketRequest {
                ticket: ticket.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap()
    }

    /// Whom `ticket` is assigned to once someone is (within `within`).
    async fn assignee(&self, ticket: &tk::Ticket, within: Duration) -> String {
        let until = tokio::time::Instant::now() + within;
        loop {
            let now = self.ticket(ticket).await;
            if !now.assignee.is_empty() {
                return now.assignee;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{} not assigned within {within:?}; queue: {:?}",
                ticket.number,
                self.queue().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until routing has seen `ticket` as `check` says.
    async fn routed(
        &self,
        ticket: &tk::Ticket,
        check: impl Fn(&pb::Decision) -> bool,
    ) -> pb::Decision {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(decision) = self
                .manager()
                .explain_ticket(pb::ExplainTicketRequest {
                    ticket: ticket.number.clone(),
                })
                .await
                && check(decision.get_ref())
            {
                return decision.into_inner();
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{} never decided as expected",
                ticket.number
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn queue(&self) -> Vec<pb::QueuedTicket> {
        self.manager()
            .list_queue(pb::ListQueueRequest { limit: 0 })
            .await
            .unwrap()
            .into_inner()
            .tickets
    }

    /// The queue once `holds` (10 s at most: routing sees tickets' events
    /// a moment after tickets answers).
    async fn queue_when(
        &self,
        holds: impl Fn(&[pb::QueuedTicket]) -> bool,
    ) -> Vec<pb::QueuedTicket> {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let queue = self.queue().await;
            if holds(&queue) {
                return queue;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the queue stayed {queue:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `email` has `count` awaiting tickets (10 s at most).
    async fn assigned_is(&self, email: &str, count: u32) {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.assigned(email).await;
            if now == count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{email} has {now}, not {count}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn respond(&self, ticket: &tk::Ticket) {
        self.tickets()
            .add_article(tk::AddArticleRequest {
                ticket: ticket.id.clone(),
                kind: tk::ArticleKind::AgentReply as i32,
                body: "We are on it.".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn assigned(&self, email: &str) -> u32 {
        self.manager()
            .get_person(pb::GetPersonRequest {
                person: email.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .assigned
    }

    /// Deletes every Redis key of this test's namespace: a `FLUSHALL` as
    /// this test sees it.
    async fn flush_redis(&self) {
        let client = redis::Client::open(self.env.config.redis_url.expose()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.env.config.namespace))
            .query_async(&mut connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&[]).await.unwrap();
    }
}

#[tokio::test]
async fn a_ticket_goes_to_the_one_with_its_skill_in_its_region_within_a_second() {
    let desk = Desk::start(&[("family_skills", "network video recorder=nvr")]).await;
    desk.agent("ana@desk.example", &["nvr:3"], &["north"], 10)
        .await;
    desk.agent("bo@desk.example", &["nvr:1"], &["south"], 10)
        .await;
    desk.agent("cy@desk.example", &["camera"], &["north"], 10)
        .await;
    desk.agent("di@desk.example", &["ptz"], &[], 10).await;

    let nvr = desk.open("Recorder down", tk::Priority::Normal).await;
    let entitled = tokio::time::Instant::now();
    desk.entitle(&nvr, "North", "Network Video Recorder").await;
    assert_eq!(
        desk.assignee(&nvr, Duration::from_secs(3)).await,
        "ana@desk.example"
    );
    // The outbox relay polls (up to its poll interval) before the event
    // is even on the bus; routing itself is well under a second.
    assert!(
        entitled.elapsed() < Duration::from_secs(2),
        "{:?}",
        entitled.elapsed()
    );
    let camera = desk.open("Camera dark", tk::Priority::Normal).await;
    desk.entitle(&camera, "north", "Camera").await;
    assert_eq!(
        desk.assignee(&camera, Duration::from_secs(3)).await,
        "cy@desk.example"
    );
    let ptz = desk.open("PTZ stuck", tk::Priority::Normal).await;
    desk.entitle(&ptz, "east", "PTZ").await;
    assert_eq!(
        desk.assignee(&ptz, Duration::from_secs(3)).await,
        "di@desk.example",
        "no regions serve every region"
    );

    let why = desk.routed(&nvr, |d| !d.assignee.is_empty()).await;
    assert_eq!(why.assignee, "ana@desk.example");
    assert_eq!(why.skills, ["nvr"]);
    assert_eq!(why.region, "north");
    assert!(
        why.reason.contains("with skill nvr in region north"),
        "{}",
        why.reason
    );
    desk.assigned_is("ana@desk.example", 1).await;
    assert_eq!(desk.assigned("bo@desk.example").await, 0);
    desk.stop().await;
}

#[tokio::test]
async fn a_ticket_nobody_can_take_says_why_and_goes_the_moment_someone_can() {
    let desk = Desk::start(&[]).await;
    desk.agent("bo@desk.example", &["camera"], &["north"], 10)
        .await;
    let ticket = desk.open("Recorder down", tk::Priority::High).await;
    desk.entitle(&ticket, "north", "nvr").await;
    let why = desk
        .routed(&ticket, |d| d.reason.starts_with("no one"))
        .await;
    assert_eq!(why.reason, "no one online with skill nvr in region north");
    assert!(why.assignee.is_empty() && why.waiting);
    let queue = desk.queue().await;
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].number, ticket.number);
    assert_eq!(
        queue[0].reason,
        "no one online with skill nvr in region north"
    );
    assert_eq!(queue[0].priority, "high");

    desk.person("ana@desk.example", &["nvr"], &["north", "south"], 10, "")
        .await;
    let online = tokio::time::Instant::now();
    desk.presence("ana@desk.example", pb::Presence::Online)
        .await;
    assert_eq!(
        desk.assignee(&ticket, Duration::from_secs(1)).await,
        "ana@desk.example"
    );
    assert!(online.elapsed() < Duration::from_secs(1));
    desk.queue_when(|q| q.is_empty()).await;
    desk.stop().await;
}

#[tokio::test]
async fn near_breach_goes_first_and_an_agent_at_capacity_gets_no_more() {
    let desk = Desk::start(&[("sweep", "1s")]).await;
    let sla_client = SlaServiceClient::new(
        desk.app
            .channel(&desk.env.token("mia@desk.example", Role::Manager)),
    );
    sla_client
        .clone()
        .set_policy(sla::SetPolicyRequest {
            priority: tk::Priority::Urgent as i32,
            target: Some(prost_types::Duration {
                seconds: 1800,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    // The router reads sla's targets at its sweeps.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    desk.person("ana@desk.example", &[], &[], 2, "").await;
    let old_normal = desk.open("Old, normal", tk::Priority::Normal).await;
    let new_urgent = desk.open("New, urgent", tk::Priority::Urgent).await;
    let newer_normal = desk.open("Newer, normal", tk::Priority::Normal).await;
    for ticket in [&old_normal, &new_urgent, &newer_normal] {
        desk.entitle(ticket, "", "").await;
    }
    // All three known with their entitlements: a ticket still waiting for
    // its own is not placed yet, and the others would take the capacity.
    let queue = desk
        .queue_when(|q| {
            q.len() == 3
                && q.iter()
                    .all(|t| !t.reason.starts_with("waiting for its entitlement"))
        })
        .await;
    let order: Vec<&str> = queue.iter().map(|q| q.number.as_str()).collect();
    assert_eq!(
        order,
        [&new_urgent.number, &old_normal.number, &newer_normal.number],
        "due soonest first: 30 minutes beats 2 hours"
    );

    desk.presence("ana@desk.example", pb::Presence::Online)
        .await;
    assert_eq!(
        desk.assignee(&new_urgent, Duration::from_secs(3)).await,
        "ana@desk.example"
    );
    assert_eq!(
        desk.assignee(&old_normal, Duration::from_secs(3)).await,
        "ana@desk.example"
    );
    let full = desk
        .routed(&newer_normal, |d| d.reason.contains("capacity"))
        .await;
    assert_eq!(full.reason, "everyone at capacity");
    assert!(desk.ticket(&newer_normal).await.assignee.is_empty());
    desk.assigned_is("ana@desk.example", 2).await;

    // A response frees capacity: the next one goes at once.
    desk.respond(&new_urgent).await;
    assert_eq!(
        desk.assignee(&newer_normal, Duration::from_secs(3)).await,
        "ana@desk.example"
    );
    desk.stop().await;
}

#[tokio::test]
async fn an_agent_who_leaves_has_their_tickets_moved_after_the_grace_unless_back_first() {
    let desk = Desk::start(&[]).await;
    desk.agent("ana@desk.example", &[], &[], 10).await;
    let first = desk.open("First", tk::Priority::Normal).await;
    let second = desk.open("Second", tk::Priority::Normal).await;
    for ticket in [&first, &second] {
        desk.entitle(ticket, "", "").await;
        assert_eq!(
            desk.assignee(ticket, Duration::from_secs(3)).await,
            "ana@desk.example"
        );
    }
    desk.respond(&second).await;
    desk.agent("bo@desk.example", &[], &[], 10).await;
    desk.presence("ana@desk.example", pb::Presence::Away).await;
    let router = desk.router();
    let left = Utc::now();

    router
        .sweep(left + chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(
        desk.ticket(&first).await.assignee,
        "ana@desk.example",
        "within the grace"
    );
    router
        .sweep(left + chrono::Duration::seconds(130))
        .await
        .unwrap();
    let moved = desk.ticket(&first).await;
    assert_eq!(moved.assignee, "bo@desk.example", "moved after the grace");
    assert_eq!(
        desk.ticket(&second).await.assignee,
        "ana@desk.example",
        "an answered ticket stays"
    );
    let why = desk
        .routed(&first, |d| d.assignee == "bo@desk.example")
        .await;
    assert_eq!(why.moved_from, "ana@desk.example");
    assert!(
        why.reason
            .starts_with("moved from ana@desk.example, who left"),
        "{}",
        why.reason
    );

    // Bo steps away and comes back within the grace: nothing moves.
    desk.agent("cy@desk.example", &[], &[], 10).await;
    desk.presence("bo@desk.example", pb::Presence::Away).await;
    desk.presence("bo@desk.example", pb::Presence::Online).await;
    router
        .sweep(Utc::now() + chrono::Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(desk.ticket(&first).await.assignee, "bo@desk.example");
    desk.stop().await;
}

#[tokio::test]
async fn a_lost_heartbeat_moves_work_after_the_grace_and_a_flushall_loses_nothing_but_presence() {
    let desk = Desk::start(&[]).await;
    desk.agent("ana@desk.example", &["nvr"], &["north"], 10)
        .await;
    let ticket = desk.open("Recorder down", tk::Priority::Normal).await;
    desk.entitle(&ticket, "north", "nvr").await;
    assert_eq!(
        desk.assignee(&ticket, Duration::from_secs(3)).await,
        "ana@desk.example"
    );

    desk.assigned_is("ana@desk.example", 1).await;
    desk.flush_redis().await;
    // Everything but presence stands: the person, their ticket, the decision.
    let ana = desk
        .manager()
        .get_person(pb::GetPersonRequest {
            person: "ana@desk.example".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ana.presence, pb::Presence::Offline as i32);
    assert_eq!(ana.stated_presence, pb::Presence::Online as i32);
    assert_eq!(ana.assigned, 1);
    assert_eq!(
        desk.routed(&ticket, |_| true).await.assignee,
        "ana@desk.example"
    );

    desk.person("bo@desk.example", &["nvr"], &["north"], 10, "")
        .await;
    desk.presence("bo@desk.example", pb::Presence::Online).await;
    let router = desk.router();
    let noticed = Utc::now();
    router.sweep(noticed).await.unwrap();
    router
        .sweep(noticed + chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(
        desk.ticket(&ticket).await.assignee,
        "ana@desk.example",
        "within the grace"
    );
    router
        .sweep(noticed + chrono::Duration::seconds(121))
        .await
        .unwrap();
    assert_eq!(desk.ticket(&ticket).await.assignee, "bo@desk.example");
    desk.stop().await;
}

#[tokio::test]
async fn a_ticket_nobody_skilled_can_take_overflows_to_the_team_after_the_delay() {
    let desk = Desk::start(&[("overflow_team", "Backstop"), ("overflow_after", "10m")]).await;
    desk.person("fay@desk.example", &[], &["north"], 10, "backstop")
        .await;
    desk.presence("fay@desk.example", pb::Presence::Online)
        .await;
    let ticket = desk.open("Recorder down", tk::Priority::Normal).await;
    desk.entitle(&ticket, "north", "nvr").await;
    let why = desk
        .routed(&ticket, |d| d.reason.starts_with("no one"))
        .await;
    assert!(
        why.reason
            .starts_with("no one online with skill nvr in region north"),
        "{}",
        why.reason
    );

    desk.router()
        .route(Utc::now() + chrono::Duration::minutes(11))
        .await
        .unwrap();
    assert_eq!(desk.ticket(&ticket).await.assignee, "fay@desk.example");
    let why = desk.routed(&ticket, |d| d.overflow).await;
    assert!(
        why.reason.starts_with("overflow to team backstop"),
        "{}",
        why.reason
    );
    desk.stop().await;
}

#[tokio::test]
async fn a_manual_assignment_wins_and_counts_against_capacity() {
    let desk = Desk::start(&[]).await;
    desk.person("ana@desk.example", &[], &[], 1, "").await;
    let ticket = desk.open("Taken by hand", tk::Priority::Normal).await;
    desk.tickets()
        .assign_ticket(tk::AssignTicketRequest {
            ticket: ticket.id.clone(),
            assignee: "Ana@Desk.example".into(),
            expected_assignee: None,
        })
        .await
        .unwrap();
    desk.entitle(&ticket, "", "").await;
    let other = desk.open("Waits", tk::Priority::Normal).await;
    desk.entitle(&other, "", "").await;
    desk.presence("ana@desk.example", pb::Presence::Online)
        .await;
    let full = desk.routed(&other, |d| d.reason.contains("capacity")).await;
    assert_eq!(full.reason, "everyone at capacity");
    assert_eq!(desk.assigned("ana@desk.example").await, 1);

    // A router's decision never overrides a person's made meanwhile.
    let refused = desk
        .tickets()
        .assign_ticket(tk::AssignTicketRequest {
            ticket: other.id.clone(),
            assignee: "bo@desk.example".into(),
            expected_assignee: Some("cy@desk.example".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("unassigned"),
        "{}",
        refused.message()
    );

    // Given by hand to someone away: theirs, on purpose, past any grace.
    desk.person("bo@desk.example", &[], &[], 10, "").await;
    let kept = desk.open("For Bo tomorrow", tk::Priority::Normal).await;
    desk.tickets()
        .assign_ticket(tk::AssignTicketRequest {
            ticket: kept.id.clone(),
            assignee: "bo@desk.example".into(),
            expected_assignee: None,
        })
        .await
        .unwrap();
    desk.entitle(&kept, "", "").await;
    desk.assigned_is("bo@desk.example", 1).await;
    // Someone who could take it is online: still, it stays.
    desk.agent("cy@desk.example", &[], &[], 10).await;
    desk.router()
        .sweep(Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(desk.ticket(&kept).await.assignee, "bo@desk.example");
    desk.stop().await;
}

#[tokio::test]
async fn two_dispatch_processes_assign_each_ticket_once() {
    let mut desk = Desk::start(&[]).await;
    // A second process of dispatch alone, calling the first for tickets.
    let first = format!("http://{}", desk.app.grpc_addr);
    desk.env
        .config
        .endpoints
        .insert("tickets".into(), first.clone());
    desk.env.config.endpoints.insert("sla".into(), first);
    let second = desk.env.start(&[hotline_dispatch::module()]).await.unwrap();
    let mut tap = EventTap::bound(&desk.env.config, "ticket.assigned")
        .await
        .unwrap();
    let people = ["ana@desk.example", "bo@desk.example", "cy@desk.example"];
    for email in people {
        desk.agent(email, &[], &[], 20).await;
    }
    let mut tickets = Vec::new();
    for i in 0..45 {
        let ticket = desk
            .open(&format!("Ticket {i}"), tk::Priority::Normal)
            .await;
        desk.entitle(&ticket, "", "").await;
        tickets.push(ticket);
    }
    let mut per_person: HashMap<String, u32> = HashMap::new();
    for ticket in &tickets {
        *per_person
            .entry(desk.assignee(ticket, Duration::from_secs(10)).await)
            .or_default() += 1;
    }
    let mut assignments: HashMap<String, u32> = HashMap::new();
    while let Some((event, _)) = tap.next(Duration::from_secs(2)).await {
        if let Some(Payload::TicketAssigned(_)) = event.payload {
            *assignments.entry(event.ticket_id).or_default() += 1;
        }
    }
    assert_eq!(assignments.len(), tickets.len());
    assert!(
        assignments.values().all(|n| *n == 1),
        "a ticket assigned more than once: {assignments:?}"
    );
    // Most spare capacity first: the load is spread evenly.
    assert_eq!(per_person.len(), 3, "{per_person:?}");
    let (most, least) = (
        per_person.values().max().unwrap(),
        per_person.values().min().unwrap(),
    );
    assert!(most - least <= 1, "spread: {per_person:?}");
    second.stop().await.unwrap();
    desk.stop().await;
}

#[tokio::test]
async fn a_late_copy_of_an_old_event_never_routes_an_answered_ticket_again() {
    let desk = Desk::start(&[]).await;
    desk.agent("ana@desk.example", &[], &[], 10).await;
    let opened = desk.open("Answered", tk::Priority::Normal).await;
    desk.entitle(&opened, "", "").await;
    assert_eq!(
        desk.assignee(&opened, Duration::from_secs(3)).await,
        "ana@desk.example"
    );
    desk.respond(&opened).await;
    desk.tickets()
        .assign_ticket(tk::AssignTicketRequest {
            ticket: opened.id.clone(),
            assignee: String::new(),
            expected_assignee: None,
        })
        .await
        .unwrap();
    // The ticket as it was opened (awaiting, nobody's), delivered again
    // under a new event id, as a redelivery from another path would be.
    let id: Uuid = opened.id.parse().unwrap();
    let stale = envelope(
        "ticket.awaiting_response",
        Some((id, opened.version)),
        Utc::now(),
        Payload::TicketAwaitingResponse(ev::AwaitingResponse {
            ticket: Some(opened.clone()),
            awaiting_since: opened.awaiting_since,
        }),
    );
    let pool = desk.env.pool("dispatch").unwrap();
    outbox::enqueue(&mut pool.acquire().await.unwrap(), &[stale])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    desk.router().sweep(Utc::now()).await.unwrap();
    let now = desk.ticket(&opened).await;
    assert!(!now.awaiting_response);
    assert_eq!(
        now.assignee, "",
        "answered, unassigned by hand, and left so"
    );
    desk.queue_when(|q| q.is_empty()).await;
    desk.assigned_is("ana@desk.example", 0).await;
    desk.stop().await;
}

#[tokio::test]
async fn the_queue_and_explain_refuse_bad_input_saying_what_to_change() {
    let desk = Desk::start(&[]).await;
    let manager = desk.manager();
    for (bad, says) in [
        ("", "give the ticket"),
        ("HL-1\0", "ticket"),
        ("HL-1\u{1b}[2J", "ticket"),
    ] {
        let refused = manager
            .clone()
            .explain_ticket(pb::ExplainTicketRequest { ticket: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert!(
            refused.message().contains(says),
            "{bad:?}: {}",
            refused.message()
        );
    }
    let huge = manager
        .clone()
        .explain_ticket(pb::ExplainTicketRequest {
            ticket: "9".repeat(100_000),
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::InvalidArgument);
    for unknown in [
        "HL-99999",
        "99999",
        "Ünïcode ☃",
        &Uuid::now_v7().to_string(),
    ] {
        let missing = manager
            .clone()
            .explain_ticket(pb::ExplainTicketRequest {
                ticket: unknown.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound, "{unknown}");
        assert!(
            missing.message().contains("hotline dispatch queue"),
            "{}",
            missing.message()
        );
    }
    let too_many = manager
        .clone()
        .list_queue(pb::ListQueueRequest { limit: 10_001 })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    assert!(too_many.message().contains("at most 10000"));
    let anonymous = DispatchServiceClient::new(desk.app.channel("not-a-token"))
        .list_queue(pb::ListQueueRequest { limit: 0 })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    desk.stop().await;
}
