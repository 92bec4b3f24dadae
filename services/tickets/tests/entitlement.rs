//! `tickets` records what `contracts` resolved for a ticket
//! (`entitlement.resolved`) as a new version, announced as
//! `ticket.entitled`; `ListTickets` filters by customer. Real gRPC,
//! PostgreSQL and RabbitMQ; the resolutions are published "as `contracts`
//! would": written to an outbox (here tickets' own) and sent by its relay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hotline_kit::{
    auth::Role,
    bus::outbox::{self, envelope},
    testing::{EventTap, TestApp, TestEnv},
};
use hotline_proto::{
    contracts::v1 as contracts,
    events::v1::{self as ev, EventEnvelope, event_envelope::Payload},
    tickets::v1::{self as pb, ticket_service_client::TicketServiceClient},
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

type Client = TicketServiceClient<InterceptedService<Channel, hotline_kit::grpc::BearerToken>>;

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    async fn start() -> Self {
        let env = TestEnv::new().await.unwrap();
        let app = env.start(&[hotline_tickets::module()]).await.unwrap();
        Self { env, app }
    }

    fn agent(&self) -> Client {
        TicketServiceClient::new(self.app.channel(&self.env.token("ada", Role::Agent)))
    }

    async fn open(&self, subject: &str) -> pb::Ticket {
        self.agent()
            .create_ticket(pb::CreateTicketRequest {
                subject: subject.into(),
                body: "No picture since 02:00".into(),
                contact: "ann@acme.example".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap()
    }

    async fn publish(&self, events: &[EventEnvelope]) {
        let pool = self.env.pool("tickets").unwrap();
        let mut conn = pool.acquire().await.unwrap();
        outbox::enqueue(&mut conn, events).await.unwrap();
    }

    async fn show(&self, ticket: &str) -> pb::Ticket {
        self.agent()
            .get_ticket(pb::GetTicketRequest {
                ticket: ticket.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap()
    }

    /// `ticket` once it is at `version` (10 s at most).
    async fn at_version(&self, ticket: &str, version: i64) -> pb::Ticket {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let shown = self.show(ticket).await;
            if shown.version >= version {
                return shown;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{ticket} stayed at version {}",
                shown.version
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn list(&self, customer: &str) -> Vec<String> {
        self.agent()
            .list_tickets(pb::ListTicketsRequest {
                customer: customer.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tickets
            .into_iter()
            .map(|t| t.number)
            .collect()
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["tickets"]).await.unwrap();
    }
}

/// What `contracts` would publish for `ticket`: Acme's HQ camera in
/// warranty, resolved at `at`.
fn resolved(ticket: &pb::Ticket, customer: (Uuid, &str), at: DateTime<Utc>) -> EventEnvelope {
    let id = Uuid::parse_str(&ticket.id).unwrap();
    envelope(
        "entitlement.resolved",
        Some((id, 1)),
        at,
        Payload::EntitlementResolved(ev::EntitlementResolved {
            ticket_id: ticket.id.clone(),
            r#match: contracts::Match::Found as i32,
            customer: Some(ev::CustomerRef {
                id: customer.0.to_string(),
                name: customer.1.into(),
            }),
            project: Some(ev::ProjectRef {
                id: Uuid::from_u128(7).to_string(),
                name: "HQ cameras".into(),
            }),
            asset: Some(ev::AssetRef {
                serial: "CAM-1".into(),
                model: "DS-2CD2143".into(),
                family: "camera".into(),
                ..Default::default()
            }),
            coverage: contracts::Coverage::Warranty as i32,
            covered_until: "2025-03-14".into(),
            reason: "serial CAM-1 (DS-2CD2143) named in the ticket: in warranty until 2025-03-14"
                .into(),
            ..Default::default()
        }),
    )
}

#[tokio::test]
async fn an_entitlement_becomes_a_new_version_of_its_ticket_once() {
    let desk = Desk::start().await;
    let mut tap = EventTap::bound(&desk.env.config, "ticket.entitled")
        .await
        .unwrap();
    let ticket = desk.open("CAM-1 offline").await;
    assert_eq!(ticket.entitlement, None, "not resolved yet");
    let acme = (Uuid::now_v7(), "Acme");
    let first = resolved(&ticket, acme, Utc::now());
    desk.publish(std::slice::from_ref(&first)).await;

    let entitled = desk.at_version(&ticket.number, 2).await;
    assert_eq!(
        entitled.entitlement,
        Some(pb::Entitlement {
            customer_id: acme.0.to_string(),
            customer: "Acme".into(),
            project_id: Uuid::from_u128(7).to_string(),
            project: "HQ cameras".into(),
            asset: "CAM-1".into(),
            coverage: pb::Coverage::Warranty as i32,
            covered_until: "2025-03-14".into(),
            reason: "serial CAM-1 (DS-2CD2143) named in the ticket: in warranty until 2025-03-14"
                .into(),
        })
    );
    assert_eq!(entitled.status, ticket.status, "nothing else changes");
    assert_eq!(entitled.awaiting_since, ticket.awaiting_since);
    let (event, _) = tap.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.r#type, "ticket.entitled");
    assert_eq!(
        (event.ticket_id.as_str(), event.ticket_version),
        (ticket.id.as_str(), 2)
    );
    let Some(Payload::TicketEntitled(announced)) = event.payload else {
        panic!("{event:?}")
    };
    assert_eq!(
        announced.ticket.as_ref(),
        Some(&entitled),
        "the ticket as it stands"
    );

    // Delivered again; resolved again alike; an older answer arriving
    // late: nothing changes, nothing is announced.
    let mut older = resolved(
        &ticket,
        (Uuid::now_v7(), "Globex"),
        Utc::now() - chrono::Duration::hours(1),
    );
    older.id = Uuid::now_v7().to_string();
    let alike = resolved(&ticket, acme, Utc::now());
    desk.publish(&[first.clone(), alike, older]).await;
    assert!(
        tap.next(Duration::from_secs(3)).await.is_none(),
        "no second ticket.entitled"
    );
    assert_eq!(desk.show(&ticket.number).await, entitled);

    // A later answer that differs: the next version.
    let mut unknown = resolved(&ticket, acme, Utc::now());
    if let Some(Payload::EntitlementResolved(r)) = &mut unknown.payload {
        r.r#match = contracts::Match::Unknown as i32;
        r.customer = None;
        r.project = None;
        r.asset = None;
        r.coverage = contracts::Coverage::None as i32;
        r.covered_until = String::new();
        r.reason = "unknown sender".into();
    }
    desk.publish(&[unknown]).await;
    let again = desk.at_version(&ticket.number, 3).await;
    let recorded = again.entitlement.unwrap();
    assert_eq!(recorded.coverage, pb::Coverage::None as i32);
    assert_eq!(recorded.reason, "unknown sender");
    assert_eq!(
        (recorded.customer.as_str(), recorded.customer_id.as_str()),
        ("", "")
    );
    desk.stop().await;
}

#[tokio::test]
async fn tickets_are_listed_by_customer_id_or_whole_name() {
    let desk = Desk::start().await;
    let acme = (Uuid::now_v7(), "Acme");
    let globex = (Uuid::now_v7(), "Globex GmbH");
    let first = desk.open("CAM-1 offline").await;
    let second = desk.open("NVR-1 beeps").await;
    let other = desk.open("Depot dark").await;
    let unresolved = desk.open("Who is this").await;
    desk.publish(&[
        resolved(&first, acme, Utc::now()),
        resolved(&second, acme, Utc::now()),
        resolved(&other, globex, Utc::now()),
    ])
    .await;
    for ticket in [&first, &second, &other] {
        desk.at_version(&ticket.number, 2).await;
    }
    let newest_first = vec![second.number.clone(), first.number.clone()];
    assert_eq!(desk.list(&acme.0.to_string()).await, newest_first);
    assert_eq!(desk.list("acme").await, newest_first, "any case");
    assert_eq!(desk.list("  ACME ").await, newest_first);
    assert_eq!(
        desk.list("globex gmbh").await,
        std::slice::from_ref(&other.number)
    );
    assert!(desk.list("Acm").await.is_empty(), "the whole name");
    assert!(desk.list(&Uuid::now_v7().to_string()).await.is_empty());
    let all = desk.list("").await;
    assert!(all.contains(&unresolved.number) && all.len() == 4);
    let refused = desk
        .agent()
        .list_tickets(pb::ListTicketsRequest {
            customer: "Acme\n\u{1b}[2J".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("customer"), "{refused:?}");
    desk.stop().await;
}

#[tokio::test]
async fn a_malformed_resolution_is_dead_lettered_not_applied() {
    let mut env = TestEnv::new().await.unwrap();
    env.config.bus.max_attempts = 1;
    let app = env.start(&[hotline_tickets::module()]).await.unwrap();
    let desk = Desk { env, app };
    let ticket = desk.open("CAM-1 offline").await;
    let mut bad = resolved(&ticket, (Uuid::now_v7(), "Acme"), Utc::now());
    if let Some(Payload::EntitlementResolved(r)) = &mut bad.payload {
        r.coverage = 0;
    }
    desk.publish(&[bad]).await;
    let pool = desk.env.pool("tickets").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let error: String = loop {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT error FROM dead_letters WHERE event_type = 'entitlement.resolved'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(error) = found {
            break error;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("without a coverage"), "{error}");
    assert_eq!(
        desk.show(&ticket.number).await,
        ticket,
        "the ticket is untouched"
    );
    desk.stop().await;
}
