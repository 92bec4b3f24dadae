//! Entitlement end to end, the whole fleet in one process: the installed
//! base recorded over gRPC, then faults arriving by real SMTP (Python's
//! smtplib) and by PBX webhooks (curl); every ticket shows whom it is for
//! and what covers it once `contracts` has resolved it and `tickets` has
//! recorded it.

use std::{net::SocketAddr, time::Duration};

use chrono::{Months, Utc};
use hotline_kit::{
    auth::Role,
    testing::{TestApp, TestEnv},
};
use hotline_proto::{
    contracts::v1::{self as contracts, contracts_service_client::ContractsServiceClient},
    tickets::v1::{
        Coverage, Entitlement, GetTicketRequest, ListTicketsRequest, Ticket,
        ticket_service_client::TicketServiceClient,
    },
};

mod common;

const CTI_TOKEN: &str = "pbx-e2e-token";

struct Desk {
    env: TestEnv,
    app: TestApp,
    smtp: SocketAddr,
}

impl Desk {
    async fn start() -> Self {
        let mut env = TestEnv::new().await.unwrap();
        let smtp = common::free_port();
        env.config.set("intake", "smtp_addr", &smtp.to_string());
        env.config.set("intake", "domains", "support.example");
        env.config.set("intake", "cti_token", CTI_TOKEN);
        env.config.set("intake", "country_code", "49");
        let app = env.start(&hotline::fleet::modules()).await.unwrap();
        Self { env, app, smtp }
    }

    fn tickets(
        &self,
    ) -> TicketServiceClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            hotline_kit::grpc::BearerToken,
        >,
    > {
        TicketServiceClient::new(self.app.channel(&self.env.token("ana", Role::Agent)))
    }

    async fn mail(&self, from: &str, subject: &str, body: &str) {
        let message = format!(
            "From: {from}\r\nTo: help@support.example\r\nSubject: {subject}\r\n\r\n{body}\r\n"
        );
        let (code, text) =
            common::send_mail(self.smtp, from, "help@support.example", &message).await;
        assert_eq!(code, 250, "{text}");
    }

    /// A missed call from `from` (as the PBX writes it).
    async fn missed_call(&self, id: &str, from: &str) {
        let url = self.app.http_url(&format!("/api/v1/cti/{CTI_TOKEN}"));
        for event in ["event=newCall", "event=hangup&cause=noAnswer"] {
            let form = format!("{event}&callId={id}&direction=in&from={from}&to=200");
            let (status, body) = common::post(&url, &["--data", &form]).await;
            assert_eq!(status, 200, "{form}: {body}");
        }
    }

    /// The ticket of `contact` once its entitlement is recorded (20 s at most).
    async fn entitled(&self, contact: &str) -> (Ticket, Entitlement) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let listed = self
                .tickets()
                .list_tickets(ListTicketsRequest {
                    contact: contact.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .tickets;
            if let [ticket] = listed.as_slice()
                && let Some(entitlement) = &ticket.entitlement
            {
                return (ticket.clone(), entitlement.clone());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{contact}: no entitlement recorded: {listed:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env
            .cleanup_bus(&["intake", "sla", "pager", "tickets", "contracts"])
            .await
            .unwrap();
    }
}

/// Acme: branch Berlin, contact Ann Lee (ann@acme.example, +49 30
/// 1234567), project HQ accepted a month ago (in warranty) with CAM-1 and
/// NVR-1. Globex: contact Bob Roe, project Depot accepted in 2020 (the
/// warranty long over, no contract) with CAM-9.
async fn installed_base(desk: &Desk) {
    let mut client =
        ContractsServiceClient::new(desk.app.channel(&desk.env.token("mia", Role::Manager)));
    let a_month_ago = (Utc::now().date_naive() - Months::new(1)).to_string();
    for (customer, branch, contact, email, phone, project, accepted) in [
        (
            "Acme",
            "Berlin",
            "Ann Lee",
            "ann@acme.example",
            "+49 30 1234567",
            "HQ",
            a_month_ago.as_str(),
        ),
        (
            "Globex",
            "Potsdam",
            "Bob Roe",
            "bob@globex.example",
            "+49 331 7654321",
            "Depot",
            "2020-01-01",
        ),
    ] {
        client
            .create_customer(contracts::CreateCustomerRequest {
                name: customer.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .add_branch(contracts::AddBranchRequest {
                customer: customer.into(),
                name: branch.into(),
                time_zone: "Europe/Berlin".into(),
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
            .add_contact(contracts::AddContactRequest {
                customer: customer.into(),
                branch: branch.into(),
                name: contact.into(),
                email: email.into(),
                phone: phone.into(),
            })
            .await
            .unwrap();
        client
            .add_project(contracts::AddProjectRequest {
                customer: customer.into(),
                branch: branch.into(),
                name: project.into(),
                accepted_on: accepted.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for (project, serial, model, family) in [
        ("HQ", "CAM-1", "DS-2CD2143", "camera"),
        ("HQ", "NVR-1", "DS-7608", "nvr"),
        ("Depot", "CAM-9", "DS-2CD2143", "camera"),
    ] {
        client
            .add_asset(contracts::AddAssetRequest {
                project: project.into(),
                model: model.into(),
                family: family.into(),
                serial: serial.into(),
                price: "1000".into(),
                currency: "EUR".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn mails_and_calls_show_their_customer_project_and_coverage() {
    let desk = Desk::start().await;
    installed_base(&desk).await;
    let accepted = Utc::now().date_naive() - Months::new(1);
    let warranty_until = hotline_contracts::domain::warranty_until(accepted, 12).unwrap();

    // Ann mails in, then calls in: both tickets are Acme's HQ, in warranty.
    desk.mail(
        "Ann Lee <ann@acme.example>",
        "No picture on the recorder",
        "Since 02:00 all channels are black.",
    )
    .await;
    desk.missed_call("e2e-1", "030%201234567").await;
    for contact in ["ann@acme.example", "+49301234567"] {
        let (ticket, entitlement) = desk.entitled(contact).await;
        assert_eq!(entitlement.customer, "Acme", "{contact}");
        assert_eq!(entitlement.project, "HQ", "{contact}");
        assert_eq!(entitlement.asset, "", "two assets: neither is named");
        assert_eq!(entitlement.coverage, Coverage::Warranty as i32);
        assert_eq!(entitlement.covered_until, warranty_until.to_string());
        assert_eq!(ticket.version, 2, "recorded as the ticket's next version");
        assert!(ticket.awaiting_response, "and the clock runs on");
    }

    // A stranger quoting a serial: that asset, its project and customer.
    desk.mail(
        "facility@elsewhere.example",
        "Camera down",
        "Good morning,\r\nthe camera S/N nvr-1. in the lobby is dead.",
    )
    .await;
    let (_, quoted) = desk.entitled("facility@elsewhere.example").await;
    assert_eq!(quoted.customer, "Acme");
    assert_eq!(quoted.project, "HQ");
    assert_eq!(quoted.asset, "NVR-1");
    assert_eq!(quoted.coverage, Coverage::Warranty as i32);
    assert!(
        quoted
            .reason
            .contains("the sender facility@elsewhere.example is not known"),
        "{}",
        quoted.reason
    );

    // Bob's warranty ended in 2020 and no contract followed.
    desk.mail("bob@globex.example", "CAM-9 offline", "Please help.")
        .await;
    let (_, expired) = desk.entitled("bob@globex.example").await;
    assert_eq!(expired.customer, "Globex");
    assert_eq!(expired.asset, "CAM-9");
    assert_eq!(expired.coverage, Coverage::None as i32);
    assert_eq!(expired.covered_until, "");
    assert!(
        expired.reason.contains("warranty ended 2020-12-31"),
        "{}",
        expired.reason
    );

    // Nobody known: still a ticket, covered by nothing.
    desk.missed_call("e2e-2", "%2B1%20555%200100%20999").await;
    let (unknown, nobody) = desk.entitled("+15550100999").await;
    assert_eq!(nobody.customer, "");
    assert_eq!(nobody.coverage, Coverage::None as i32);
    assert_eq!(nobody.reason, "unknown sender");

    // Acme's tickets, by name: the two of Ann and the stranger's.
    let acme: Vec<String> = desk
        .tickets()
        .list_tickets(ListTicketsRequest {
            customer: "ACME".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets
        .into_iter()
        .map(|t| t.contact)
        .collect();
    assert_eq!(
        acme,
        [
            "facility@elsewhere.example",
            "+49301234567",
            "ann@acme.example"
        ],
        "newest first"
    );
    let shown = desk
        .tickets()
        .get_ticket(GetTicketRequest {
            ticket: unknown.number.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.articles.len(), 1, "the entitlement adds no article");
    desk.stop().await;
}
