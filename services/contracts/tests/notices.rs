//! Notices ahead of coverage ends, over real gRPC and PostgreSQL, with the
//! scan driven by an injected moment: once per asset and end date, again
//! when the date moves, one mail per branch listing its assets, only
//! coverage that lapses, quotes at the 5% cap; the mails leave as
//! `contracts.notice` events on the real bus.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hotline_contracts::{
    domain::EndKind,
    notices::{Notice, Notices},
};
use hotline_kit::{
    auth::Role,
    bus::outbox::OutboxSignal,
    testing::{EventTap, TestApp, TestEnv},
};
use hotline_proto::{
    contracts::v1::{self as pb, contracts_service_client::ContractsServiceClient},
    events::v1::event_envelope::Payload,
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

type Client = ContractsServiceClient<InterceptedService<Channel, hotline_kit::grpc::BearerToken>>;

struct Desk {
    env: TestEnv,
    app: TestApp,
    client: Client,
    /// Sees every `contracts.notice` the relay publishes.
    tap: EventTap,
}

impl Desk {
    async fn start() -> Self {
        let env = TestEnv::new().await.unwrap();
        let tap = EventTap::bound(&env.config, "contracts.notice")
            .await
            .unwrap();
        let app = env.start(&[hotline_contracts::module()]).await.unwrap();
        let client = ContractsServiceClient::new(app.channel(&env.token("mia", Role::Manager)));
        Self {
            env,
            app,
            client,
            tap,
        }
    }

    /// A scanner of this desk's base, 60 days ahead (another process's, as
    /// far as the running app is concerned).
    fn notices(&self) -> Notices {
        Notices {
            pool: self.env.pool("contracts").unwrap(),
            relay: OutboxSignal::default(),
            ahead_days: 60,
            every: Duration::from_secs(3600),
        }
    }

    async fn scan(&self, at: &str) -> Vec<Notice> {
        self.notices().scan(moment(at)).await.unwrap()
    }

    async fn customer(&mut self, name: &str) {
        self.client
            .create_customer(pb::CreateCustomerRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn branch(&mut self, customer: &str, name: &str, email: &str, time_zone: &str) {
        self.client
            .add_branch(pb::AddBranchRequest {
                customer: customer.into(),
                name: name.into(),
                time_zone: time_zone.into(),
                notice_email: email.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// A project of `customer` at `branch` with assets (serial, price,
    /// currency).
    async fn project(
        &mut self,
        customer: &str,
        branch: &str,
        name: &str,
        accepted_on: &str,
        assets: &[(&str, &str, &str)],
    ) {
        let project = self
            .client
            .add_project(pb::AddProjectRequest {
                customer: customer.into(),
                branch: branch.into(),
                name: name.into(),
                accepted_on: accepted_on.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for (serial, price, currency) in assets {
            self.client
                .add_asset(pb::AddAssetRequest {
                    project: project.id.clone(),
                    model: "DS-2CD2143".into(),
                    family: "camera".into(),
                    serial: (*serial).into(),
                    price: (*price).into(),
                    currency: (*currency).into(),
                    firmware: String::new(),
                })
                .await
                .unwrap();
        }
    }

    /// Acme's Berlin branch (`berlin@acme.example`) and project HQ, accepted
    /// 2034-03-15 (warranty to 2035-03-14): CAM-1 at 6000.00 EUR, NVR-1 at
    /// 4000.00 EUR.
    async fn acme(&mut self) {
        self.customer("Acme").await;
        self.branch("Acme", "Berlin", "berlin@acme.example", "Europe/Berlin")
            .await;
        self.project(
            "Acme",
            "Berlin",
            "HQ",
            "2034-03-15",
            &[("CAM-1", "6000", "EUR"), ("NVR-1", "4000.00", "EUR")],
        )
        .await;
    }

    /// The `contracts.notice` events published until none comes for 3 s.
    async fn published(&mut self) -> Vec<(String, hotline_proto::events::v1::CoverageNotice)> {
        self.tap
            .drain(Duration::from_secs(3))
            .await
            .into_iter()
            .filter_map(|event| match event.payload {
                Some(Payload::ContractsNotice(notice)) => Some((event.id, notice)),
                _ => None,
            })
            .collect()
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&[]).await.unwrap();
    }
}

fn moment(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// (serial, kind, last day) of each asset a notice lists.
fn listed(notice: &Notice) -> Vec<(String, EndKind, String)> {
    notice
        .ends
        .iter()
        .map(|e| (e.serial.clone(), e.kind, e.ends_on.to_string()))
        .collect()
}

fn end(serial: &str, kind: EndKind, on: &str) -> (String, EndKind, String) {
    (serial.into(), kind, on.into())
}

#[tokio::test]
async fn an_end_is_announced_once_and_again_when_the_acceptance_moves() {
    let mut desk = Desk::start().await;
    desk.acme().await;

    // 23:30 in Berlin on 12 January: 61 days before the end, not yet.
    assert!(desk.scan("2035-01-12T22:30:00Z").await.is_empty());
    // 00:30 in Berlin on 13 January (still the 12th in UTC): 60 days.
    let first = desk.scan("2035-01-12T23:30:00Z").await;
    assert_eq!(first.len(), 1, "one mail for the branch");
    let notice = &first[0];
    assert_eq!(notice.recipient, "berlin@acme.example");
    assert_eq!(
        listed(notice),
        [
            end("CAM-1", EndKind::Warranty, "2035-03-14"),
            end("NVR-1", EndKind::Warranty, "2035-03-14"),
        ]
    );
    assert_eq!(
        notice.subject,
        "Acme, Berlin: coverage of 2 assets ends on 2035-03-14"
    );
    assert!(
        notice.body.contains(
            "- 2035-03-15 to 2036-03-14: 500.00 EUR\n  for the 2 assets ending 2035-03-14 (products 10000.00 EUR)"
        ),
        "{}",
        notice.body
    );

    // Scanning again, later in the window, or on the last day: nothing new.
    assert!(desk.scan("2035-01-12T23:30:00Z").await.is_empty());
    assert!(desk.scan("2035-02-20T08:00:00Z").await.is_empty());
    assert!(desk.scan("2035-03-14T08:00:00Z").await.is_empty());

    // The acceptance moves: the warranty's end moves, and is announced anew.
    desk.client
        .accept_project(pb::AcceptProjectRequest {
            project: "HQ".into(),
            accepted_on: "2034-04-01".into(),
        })
        .await
        .unwrap();
    let moved = desk.scan("2035-02-01T08:00:00Z").await;
    assert_eq!(moved.len(), 1);
    assert_eq!(
        listed(&moved[0]),
        [
            end("CAM-1", EndKind::Warranty, "2035-03-31"),
            end("NVR-1", EndKind::Warranty, "2035-03-31"),
        ]
    );
    assert!(desk.scan("2035-02-02T08:00:00Z").await.is_empty());

    // Exactly the two mails went out on the bus, each as its notice says.
    let published = desk.published().await;
    assert_eq!(published.len(), 2, "{published:?}");
    for (sent, (id, event)) in [&first[0], &moved[0]].into_iter().zip(&published) {
        assert_eq!(*id, sent.event_id.to_string());
        assert_eq!(event.recipient, "berlin@acme.example");
        assert_eq!(event.subject, sent.subject);
        assert_eq!(event.body, sent.body);
        assert_eq!(event.ends.len(), 2);
        assert_eq!(event.ends[0].serial, "CAM-1");
        assert_eq!(event.ends[0].kind, "warranty");
    }
    assert_eq!(published[1].1.ends[0].ends_on, "2035-03-31");
    desk.stop().await;
}

#[tokio::test]
async fn only_coverage_that_lapses_is_announced_and_a_contracts_end_is_too() {
    let mut desk = Desk::start().await;
    desk.acme().await;
    // CAM-1 is under contract from the day after its warranty.
    desk.client
        .create_contract(pb::CreateContractRequest {
            customer: "Acme".into(),
            serials: vec!["CAM-1".into()],
            start: "2035-03-15".into(),
            end: "2036-03-14".into(),
            fee: "300.00".into(),
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let warranty = desk.scan("2035-02-01T08:00:00Z").await;
    assert_eq!(warranty.len(), 1);
    assert_eq!(
        listed(&warranty[0]),
        [end("NVR-1", EndKind::Warranty, "2035-03-14")],
        "CAM-1 stays covered"
    );
    assert!(
        warranty[0].body.contains(
            "- 2035-03-15 to 2036-03-14: 200.00 EUR\n  for the asset ending 2035-03-14 (products 4000.00 EUR)"
        ),
        "{}",
        warranty[0].body
    );

    // A year on, the contract's end is announced with its own quote.
    let contract = desk.scan("2036-02-01T08:00:00Z").await;
    assert_eq!(contract.len(), 1);
    assert_eq!(
        listed(&contract[0]),
        [end("CAM-1", EndKind::Contract, "2036-03-14")]
    );
    assert!(
        contract[0].body.contains(
            "- 2036-03-15 to 2037-03-14: 300.00 EUR\n  for the asset ending 2036-03-14 (products 6000.00 EUR)"
        ),
        "{}",
        contract[0].body
    );
    assert!(desk.scan("2036-03-01T08:00:00Z").await.is_empty());
    desk.stop().await;
}

#[tokio::test]
async fn each_branch_gets_one_mail_listing_its_assets_with_a_quote_per_currency() {
    let mut desk = Desk::start().await;
    desk.acme().await;
    // A second Berlin project, ending five days later, priced in USD
    // (5% of 1000.10 is 50.005: the quote is floored to 50.00).
    desk.project(
        "Acme",
        "Berlin",
        "Depot",
        "2034-03-20",
        &[("PTZ-1", "1000.10", "USD")],
    )
    .await;
    desk.branch("Acme", "Munich", "munich@acme.example", "Europe/Berlin")
        .await;
    desk.project(
        "Acme",
        "Munich",
        "Plant",
        "2034-03-15",
        &[("CAM-2", "2000", "EUR")],
    )
    .await;
    // Another customer's branch whose warranty is far off: no mail.
    desk.customer("Globex").await;
    desk.branch(
        "Globex",
        "Potsdam",
        "potsdam@globex.example",
        "Europe/Berlin",
    )
    .await;
    desk.project(
        "Globex",
        "Potsdam",
        "Gate",
        "2034-09-01",
        &[("CAM-9", "100", "EUR")],
    )
    .await;

    let mut notices = desk.scan("2035-02-01T08:00:00Z").await;
    notices.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    assert_eq!(notices.len(), 2, "one mail per branch concerned");
    let (berlin, munich) = (&notices[0], &notices[1]);
    assert_eq!(berlin.recipient, "berlin@acme.example");
    assert_eq!(
        listed(berlin),
        [
            end("CAM-1", EndKind::Warranty, "2035-03-14"),
            end("NVR-1", EndKind::Warranty, "2035-03-14"),
            end("PTZ-1", EndKind::Warranty, "2035-03-19"),
        ]
    );
    assert_eq!(
        berlin.subject,
        "Acme, Berlin: coverage of 3 assets ends from 2035-03-14 to 2035-03-19"
    );
    assert!(
        berlin.body.contains(
            "- 2035-03-15 to 2036-03-14: 500.00 EUR\n  for the 2 assets ending 2035-03-14 (products 10000.00 EUR)\n\
             - 2035-03-20 to 2036-03-19: 50.00 USD\n  for the asset ending 2035-03-19 (products 1000.10 USD)\n"
        ),
        "{}",
        berlin.body
    );
    assert!(
        berlin
            .body
            .contains("PTZ-1   DS-2CD2143  Depot    warranty  2035-03-19\n"),
        "{}",
        berlin.body
    );
    assert_eq!(munich.recipient, "munich@acme.example");
    assert_eq!(
        listed(munich),
        [end("CAM-2", EndKind::Warranty, "2035-03-14")]
    );
    assert!(
        munich
            .body
            .contains(": 100.00 EUR\n  for the asset ending 2035-03-14 (products 2000.00 EUR)"),
        "{}",
        munich.body
    );
    assert_eq!(desk.published().await.len(), 2);
    desk.stop().await;
}

#[tokio::test]
async fn ends_already_past_are_not_announced_and_an_end_today_is() {
    let mut desk = Desk::start().await;
    desk.customer("Acme").await;
    desk.branch("Acme", "Berlin", "berlin@acme.example", "Europe/Berlin")
        .await;
    // Imported with a warranty that ended long ago, and one ending today.
    desk.project(
        "Acme",
        "Berlin",
        "Old",
        "2020-01-01",
        &[("OLD-1", "100", "EUR")],
    )
    .await;
    desk.project(
        "Acme",
        "Berlin",
        "Today",
        "2034-02-01",
        &[("NOW-1", "100", "EUR")],
    )
    .await;
    // One whose warranty ended yesterday.
    desk.project(
        "Acme",
        "Berlin",
        "Gone",
        "2034-01-31",
        &[("YDAY-1", "100", "EUR")],
    )
    .await;
    let notices = desk.scan("2035-01-31T12:00:00Z").await;
    assert_eq!(notices.len(), 1);
    assert_eq!(
        listed(&notices[0]),
        [end("NOW-1", EndKind::Warranty, "2035-01-31")]
    );
    assert!(desk.scan("2035-02-01T12:00:00Z").await.is_empty());
    desk.stop().await;
}

#[tokio::test]
async fn two_scans_at_once_send_one_mail() {
    let mut desk = Desk::start().await;
    desk.acme().await;
    let (one, two) = (desk.notices(), desk.notices());
    let now = moment("2035-02-01T08:00:00Z");
    let (a, b) = tokio::join!(one.scan(now), two.scan(now));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 1, "{a:?} {b:?}");
    assert_eq!(desk.published().await.len(), 1);
    desk.stop().await;
}
