//! `contracts` on the bus, with real PostgreSQL and RabbitMQ: every new
//! ticket's entitlement resolved from its contact and the serials it
//! names (`ticket.created` → `entitlement.resolved`), and the facts of the
//! installed base's writes. Tickets are opened "as `tickets` would": their
//! `ticket.created` is written to an outbox and published by a relay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hotline_kit::{
    auth::Role,
    bus::outbox::{self, envelope},
    testing::{EventTap, TestApp, TestEnv},
    time::timestamp,
};
use hotline_proto::{
    contracts::v1::{self as pb, contracts_service_client::ContractsServiceClient},
    events::v1::{self as ev, EventEnvelope, event_envelope::Payload},
    tickets::v1 as tickets,
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

type Client = ContractsServiceClient<InterceptedService<Channel, hotline_kit::grpc::BearerToken>>;

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    async fn start() -> Self {
        let mut env = TestEnv::new().await.unwrap();
        env.config.set("contracts", "country_code", "49");
        let app = env.start(&[hotline_contracts::module()]).await.unwrap();
        Self { env, app }
    }

    fn manager(&self) -> Client {
        ContractsServiceClient::new(self.app.channel(&self.env.token("mia", Role::Manager)))
    }

    /// Publishes `events` as a service would: through an outbox (here
    /// contracts' own) and its relay.
    async fn publish(&self, events: &[EventEnvelope]) {
        let pool = self.env.pool("contracts").unwrap();
        let mut conn = pool.acquire().await.unwrap();
        outbox::enqueue(&mut conn, events).await.unwrap();
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["contracts"]).await.unwrap();
    }
}

/// A new ticket from `contact`, opened at `at`, as `tickets` announces it.
fn opened(contact: &str, subject: &str, body: &str, at: &str) -> (Uuid, EventEnvelope) {
    let id = Uuid::now_v7();
    let at: DateTime<Utc> = at.parse().unwrap();
    let ticket = tickets::Ticket {
        id: id.to_string(),
        number: "HL-10001".into(),
        subject: subject.into(),
        contact: contact.into(),
        created_at: Some(timestamp(at)),
        updated_at: Some(timestamp(at)),
        version: 1,
        ..Default::default()
    };
    let event = envelope(
        "ticket.created",
        Some((id, 1)),
        at,
        Payload::TicketCreated(ev::TicketCreated {
            ticket: Some(ticket),
            first_article: Some(tickets::Article {
                body: body.into(),
                ..Default::default()
            }),
        }),
    );
    (id, event)
}

/// The next `entitlement.resolved` of `ticket` on `tap` (10 s at most).
async fn resolved(tap: &mut EventTap, ticket: Uuid) -> (EventEnvelope, ev::EntitlementResolved) {
    loop {
        let (event, _) = tap
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no entitlement for ticket {ticket}"));
        if let Some(Payload::EntitlementResolved(resolved)) = &event.payload
            && resolved.ticket_id == ticket.to_string()
        {
            let resolved = resolved.clone();
            return (event, resolved);
        }
    }
}

/// Opens a ticket and waits for its entitlement.
async fn entitle(
    desk: &Desk,
    tap: &mut EventTap,
    contact: &str,
    subject: &str,
    body: &str,
    at: &str,
) -> ev::EntitlementResolved {
    let (id, event) = opened(contact, subject, body, at);
    desk.publish(&[event]).await;
    resolved(tap, id).await.1
}

fn asset(project: &str, serial: &str, model: &str, price: &str) -> pb::AddAssetRequest {
    pb::AddAssetRequest {
        project: project.into(),
        model: model.into(),
        family: "camera".into(),
        serial: serial.into(),
        price: price.into(),
        currency: "EUR".into(),
        firmware: "5.7.3".into(),
    }
}

/// Acme (Berlin, contact Ann Lee, project HQ accepted 2024-03-15 with
/// CAM-1 and NVR-1) and Globex (Potsdam, contact Bob, project Depot
/// accepted 2020-01-01 with CAM-9); both customers' own address is
/// office@shared.example.
async fn two_customers(client: &mut Client) {
    for (customer, branch, contact, email, phone, project, accepted) in [
        (
            "Acme",
            "Berlin",
            "Ann Lee",
            "ann@acme.example",
            "030 1234567",
            "HQ",
            "2024-03-15",
        ),
        (
            "Globex",
            "Potsdam",
            "Bob Roe",
            "bob@globex.example",
            "0331 7654321",
            "Depot",
            "2020-01-01",
        ),
    ] {
        client
            .create_customer(pb::CreateCustomerRequest {
                name: customer.into(),
                email: "office@shared.example".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .add_branch(pb::AddBranchRequest {
                customer: customer.into(),
                name: branch.into(),
                time_zone: "Europe/Berlin".into(),
                region: "north".into(),
                notice_email: format!(
                    "{}@{}.example",
                    branch.to_lowercase(),
                    customer.to_lowercase()
                ),
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .add_contact(pb::AddContactRequest {
                customer: customer.into(),
                branch: branch.into(),
                name: contact.into(),
                email: email.into(),
                phone: phone.into(),
            })
            .await
            .unwrap();
        client
            .add_project(pb::AddProjectRequest {
                customer: customer.into(),
                branch: branch.into(),
                name: project.into(),
                accepted_on: accepted.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for request in [
        asset("HQ", "CAM-1", "DS-2CD2143", "6000"),
        asset("HQ", "NVR-1", "DS-7608", "4000"),
        asset("Depot", "CAM-9", "DS-2CD2143", "500"),
    ] {
        client.add_asset(request).await.unwrap();
    }
}

#[tokio::test]
async fn a_new_tickets_contact_and_serials_say_whom_it_is_for() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    two_customers(&mut client).await;
    let mut tap = EventTap::bound(&desk.env.config, "entitlement.resolved")
        .await
        .unwrap();
    const JUNE: &str = "2024-06-01T10:00:00Z";

    // The contact's email: its branch's assets, all in one project.
    let by_email = entitle(
        &desk,
        &mut tap,
        "Ann@Acme.example",
        "No picture",
        "Since 02:00",
        JUNE,
    )
    .await;
    assert_eq!(by_email.r#match, pb::Match::Found as i32);
    assert_eq!(by_email.customer.as_ref().unwrap().name, "Acme");
    let branch = by_email.branch.as_ref().unwrap();
    assert_eq!(
        (branch.name.as_str(), branch.region.as_str()),
        ("Berlin", "north")
    );
    assert_eq!(by_email.project.as_ref().unwrap().name, "HQ");
    assert!(
        by_email.asset.is_none(),
        "two assets: the ticket names neither"
    );
    assert_eq!(by_email.coverage, pb::Coverage::Warranty as i32);
    assert_eq!(by_email.covered_until, "2025-03-14");
    assert_eq!(
        by_email.reason,
        "ann@acme.example is contact Ann Lee of Acme; Acme Berlin has 2 assets: 2 in warranty, 0 under contract, 0 not covered (CAM-1 warranty until 2025-03-14, NVR-1 warranty until 2025-03-14)"
    );

    // The contact's phone, written nationally as a PBX may send it.
    let by_phone = entitle(&desk, &mut tap, "030 1234567", "Missed call", "", JUNE).await;
    assert_eq!(by_phone.customer, by_email.customer);
    assert_eq!(by_phone.coverage, pb::Coverage::Warranty as i32);

    // A serial in the body from an address nobody knows: its asset.
    let by_serial = entitle(
        &desk,
        &mut tap,
        "stranger@nowhere.example",
        "Camera broken",
        "Hello,\nour camera (S/N: cam-9.) shows nothing.\n-- \nCall 0331 555",
        JUNE,
    )
    .await;
    assert_eq!(by_serial.r#match, pb::Match::Found as i32);
    assert_eq!(by_serial.customer.as_ref().unwrap().name, "Globex");
    assert_eq!(by_serial.project.as_ref().unwrap().name, "Depot");
    let camera = by_serial.asset.as_ref().unwrap();
    assert_eq!(
        (
            camera.serial.as_str(),
            camera.model.as_str(),
            camera.family.as_str()
        ),
        ("CAM-9", "DS-2CD2143", "camera")
    );
    assert_eq!(
        by_serial.coverage,
        pb::Coverage::None as i32,
        "accepted 2020"
    );
    assert_eq!(by_serial.covered_until, "");
    assert_eq!(
        by_serial.reason,
        "serial CAM-9 (DS-2CD2143) named in the ticket: warranty ended 2020-12-31 and no maintenance contract covers 2024-06-01; the sender stranger@nowhere.example is not known"
    );
    assert_eq!(by_serial.serials, ["CAM-9"]);

    // Nobody: a ticket all the same, covered by nothing.
    for contact in [
        "stranger@nowhere.example",
        "",
        "+1 555 0100 999",
        "not a contact\u{1b}[2J",
    ] {
        let unknown = entitle(&desk, &mut tap, contact, "Help", "It is broken", JUNE).await;
        assert_eq!(unknown.r#match, pb::Match::Unknown as i32, "{contact:?}");
        assert_eq!(unknown.coverage, pb::Coverage::None as i32);
        assert_eq!(unknown.reason, "unknown sender");
        assert!(unknown.customer.is_none() && unknown.project.is_none());
    }

    // An address both customers use: nothing guessed...
    let shared = entitle(&desk, &mut tap, "office@shared.example", "Help", "", JUNE).await;
    assert_eq!(shared.r#match, pb::Match::Ambiguous as i32);
    assert!(shared.customer.is_none());
    assert_eq!(shared.coverage, pb::Coverage::None as i32);
    let via: Vec<String> = shared
        .candidates
        .iter()
        .map(|c| format!("{}: {}", c.customer, c.via))
        .collect();
    assert_eq!(via, ["Acme: customer", "Globex: customer"]);
    assert!(
        shared.reason.contains("belongs to 2 customers"),
        "{}",
        shared.reason
    );
    // ...unless a serial of one of them settles it.
    let settled = entitle(
        &desk,
        &mut tap,
        "office@shared.example",
        "NVR-1 beeps",
        "",
        JUNE,
    )
    .await;
    assert_eq!(settled.r#match, pb::Match::Found as i32);
    assert_eq!(settled.customer.as_ref().unwrap().name, "Acme");
    assert_eq!(settled.asset.as_ref().unwrap().serial, "NVR-1");
    assert!(
        settled.reason.contains("the serial settles it"),
        "{}",
        settled.reason
    );

    // Ann naming Globex's camera: she is Acme's; the serial is reported.
    let foreign = entitle(&desk, &mut tap, "ann@acme.example", "CAM-9 down", "", JUNE).await;
    assert_eq!(foreign.customer.as_ref().unwrap().name, "Acme");
    assert!(foreign.asset.is_none());
    assert_eq!(foreign.coverage, pb::Coverage::Warranty as i32);
    assert!(
        foreign
            .reason
            .ends_with("; CAM-9 named in the ticket is Globex's: not taken"),
        "{}",
        foreign.reason
    );
    assert_eq!(foreign.serials, ["CAM-9"]);
    // Naming one of her own as well: hers pins the asset.
    let own = entitle(
        &desk,
        &mut tap,
        "ann@acme.example",
        "CAM-9 and cam-1 down",
        "",
        JUNE,
    )
    .await;
    assert_eq!(own.asset.as_ref().unwrap().serial, "CAM-1");
    assert_eq!(own.serials, ["CAM-9", "CAM-1"], "in the order named");
    assert!(
        own.reason.contains("sent by contact Ann Lee of Acme"),
        "{}",
        own.reason
    );

    // Two serials of one customer: both count, no single asset.
    let two = entitle(&desk, &mut tap, "", "CAM-1, NVR-1", "", JUNE).await;
    assert_eq!(two.customer.as_ref().unwrap().name, "Acme");
    assert_eq!(two.project.as_ref().unwrap().name, "HQ");
    assert!(two.asset.is_none());
    assert!(
        two.reason.starts_with("the ticket names 2 assets"),
        "{}",
        two.reason
    );

    // Coverage is for the day the ticket was opened, at the site: after
    // the warranty, a contract.
    client
        .create_contract(pb::CreateContractRequest {
            customer: "Acme".into(),
            serials: vec!["CAM-1".into()],
            start: "2025-03-15".into(),
            end: "2026-03-14".into(),
            fee: "300".into(),
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let later = entitle(&desk, &mut tap, "", "cam-1", "", "2025-06-01T10:00:00Z").await;
    assert_eq!(later.coverage, pb::Coverage::Contract as i32);
    assert_eq!(later.covered_until, "2026-03-14");
    // 2025-03-14 at 23:30 UTC is the 15th in Berlin: the warranty is over.
    let midnight = entitle(&desk, &mut tap, "", "NVR-1", "", "2025-03-14T23:30:00Z").await;
    assert_eq!(midnight.coverage, pb::Coverage::None as i32);
    desk.stop().await;
}

#[tokio::test]
async fn hostile_bodies_stay_cheap_and_a_ticket_is_resolved_once() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    two_customers(&mut client).await;
    let mut tap = EventTap::bound(&desk.env.config, "entitlement.resolved")
        .await
        .unwrap();
    const JUNE: &str = "2024-06-01T10:00:00Z";

    // A megabyte of serial-like words, NULs and escapes; the real serial
    // past what is read.
    let mut body: String = (0..60_000).map(|i| format!("X{i}\0\u{1b}[2J ")).collect();
    body.truncate(1024 * 1024 - 10);
    body.push_str(" CAM-9");
    let started = std::time::Instant::now();
    let hostile = entitle(
        &desk,
        &mut tap,
        "ann@acme.example",
        "\u{202e}CAM-1\u{202c}",
        &body,
        JUNE,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hostile.customer.as_ref().unwrap().name, "Acme");
    assert_eq!(
        hostile.asset.as_ref().unwrap().serial,
        "CAM-1",
        "the subject is read first"
    );
    assert!(
        !hostile.serials.contains(&"CAM-9".to_owned()),
        "{:?}",
        hostile.serials
    );

    // The same ticket.created delivered twice, and another for the same
    // ticket: one entitlement.
    let (id, event) = opened("ann@acme.example", "No picture", "", JUNE);
    desk.publish(&[event.clone(), event]).await;
    let (first, _) = resolved(&mut tap, id).await;
    assert_eq!(first.ticket_id, id.to_string());
    assert_eq!(first.ticket_version, 1);
    let again = tap.drain(Duration::from_secs(3)).await;
    assert!(
        again.iter().all(|e| e.ticket_id != id.to_string()),
        "a duplicate changes nothing: {again:?}"
    );
    desk.stop().await;
}

/// The next event on `tap` (10 s at most), its type and payload.
async fn next(tap: &mut EventTap) -> (String, Payload) {
    let (event, _) = tap.next(Duration::from_secs(10)).await.expect("an event");
    (event.r#type, event.payload.unwrap())
}

#[tokio::test]
async fn the_installed_bases_changes_are_announced_as_they_commit() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    let mut tap = EventTap::new(&desk.env.config).await.unwrap();
    two_customers(&mut client).await;
    let mut added = Vec::new();
    for _ in 0..5 {
        added.push(next(&mut tap).await);
    }
    let types: Vec<&str> = added.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "project.added",
            "project.added",
            "asset.added",
            "asset.added",
            "asset.added"
        ]
    );
    let Payload::ProjectAdded(hq) = &added[0].1 else {
        panic!("{added:?}")
    };
    assert_eq!(hq.customer.as_ref().unwrap().name, "Acme");
    assert_eq!(hq.branch.as_ref().unwrap().name, "Berlin");
    assert_eq!(hq.project.as_ref().unwrap().name, "HQ");
    assert_eq!(
        (hq.accepted_on.as_str(), hq.warranty_until.as_str()),
        ("2024-03-15", "2025-03-14")
    );
    assert_eq!(hq.time_zone, "Europe/Berlin");
    let Payload::AssetAdded(camera) = &added[2].1 else {
        panic!("{added:?}")
    };
    let installed = camera.asset.as_ref().unwrap();
    assert_eq!(
        (installed.serial.as_str(), installed.family.as_str()),
        ("CAM-1", "camera")
    );
    assert_eq!(
        camera.project.as_ref().unwrap().id,
        hq.project.as_ref().unwrap().id
    );
    assert_eq!(camera.warranty_until, "2025-03-14");

    // Acceptance moved: the warranty moves with it; the same day again is no news.
    for day in ["2024-04-30", "2024-04-30"] {
        client
            .accept_project(pb::AcceptProjectRequest {
                project: "HQ".into(),
                accepted_on: day.into(),
            })
            .await
            .unwrap();
    }
    let (kind, payload) = next(&mut tap).await;
    assert_eq!(kind, "project.accepted");
    let Payload::ProjectAccepted(moved) = payload else {
        panic!()
    };
    assert_eq!(
        (
            moved.previous_accepted_on.as_str(),
            moved.accepted_on.as_str(),
            moved.previous_warranty_until.as_str(),
            moved.warranty_until.as_str()
        ),
        ("2024-03-15", "2024-04-30", "2025-03-14", "2025-04-29")
    );

    // A refused contract announces nothing; an accepted one does.
    let over = pb::CreateContractRequest {
        customer: "Acme".into(),
        projects: vec!["HQ".into()],
        start: "2025-05-01".into(),
        end: "2026-04-30".into(),
        fee: "500.01".into(),
        currency: "EUR".into(),
        ..Default::default()
    };
    assert!(client.create_contract(over.clone()).await.is_err());
    let contract = client
        .create_contract(pb::CreateContractRequest {
            fee: "500".into(),
            ..over
        })
        .await
        .unwrap()
        .into_inner();
    let (kind, payload) = next(&mut tap).await;
    assert_eq!(kind, "contract.created");
    let Payload::ContractCreated(created) = payload else {
        panic!()
    };
    assert_eq!(created.contract_id, contract.id);
    assert_eq!(created.customer.as_ref().unwrap().name, "Acme");
    assert_eq!(
        (created.start.as_str(), created.end.as_str()),
        ("2025-05-01", "2026-04-30")
    );
    assert_eq!(
        (created.fee.as_str(), created.currency.as_str()),
        ("500.00", "EUR")
    );
    assert_eq!(created.serials, ["CAM-1", "NVR-1"]);

    client
        .add_asset(asset("HQ", "PTZ-1", "DS-2DE4425", "4000"))
        .await
        .unwrap();
    assert_eq!(next(&mut tap).await.0, "asset.added");
    client
        .change_coverage(pb::ChangeCoverageRequest {
            contract: contract.id.clone(),
            add_serials: vec!["ptz-1".into()],
            remove_serials: vec!["NVR-1".into()],
        })
        .await
        .unwrap();
    let (kind, payload) = next(&mut tap).await;
    assert_eq!(kind, "contract.coverage_changed");
    let Payload::ContractCoverageChanged(changed) = payload else {
        panic!()
    };
    assert_eq!(changed.added, ["PTZ-1"]);
    assert_eq!(changed.removed, ["NVR-1"]);
    assert_eq!(changed.serials, ["CAM-1", "PTZ-1"]);
    assert!(
        tap.next(Duration::from_secs(2)).await.is_none(),
        "nothing else was announced"
    );
    desk.stop().await;
}
