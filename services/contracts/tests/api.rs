//! The contracts API over real gRPC, with real PostgreSQL: the directory,
//! warranty derived from acceptance, the 5% cap, one contract per asset at
//! a time, entitlement, and who may change what.

use hotline_kit::{
    auth::Role,
    testing::{TestApp, TestEnv},
};
use hotline_proto::contracts::v1::{
    self as pb, contracts_service_client::ContractsServiceClient, entitlement_request::Key,
};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

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

    fn client(&self, role: Role) -> Client {
        ContractsServiceClient::new(self.app.channel(&self.env.token("mia", role)))
    }

    fn manager(&self) -> Client {
        self.client(Role::Manager)
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["contracts"]).await.unwrap();
    }
}

/// Acme with a Berlin branch, a contact, and a project accepted on
/// `accepted_on` holding a camera (6000.00 EUR) and a recorder (4000.00 EUR).
async fn acme(client: &mut Client, accepted_on: &str) -> pb::Project {
    client
        .create_customer(pb::CreateCustomerRequest {
            name: "Acme".into(),
            email: "office@acme.example".into(),
            phone: "+49 30 999999".into(),
        })
        .await
        .unwrap();
    client
        .add_branch(pb::AddBranchRequest {
            customer: "Acme".into(),
            name: "Berlin".into(),
            address: "Hauptstr. 1".into(),
            time_zone: "Europe/Berlin".into(),
            region: "north".into(),
            notice_email: "Berlin@Acme.example".into(),
        })
        .await
        .unwrap();
    client
        .add_contact(pb::AddContactRequest {
            customer: "acme".into(),
            branch: "Berlin".into(),
            name: "Ann Lee".into(),
            email: "Ann@Acme.Example".into(),
            phone: "030 1234567".into(),
        })
        .await
        .unwrap();
    let project = client
        .add_project(pb::AddProjectRequest {
            customer: "Acme".into(),
            branch: "Berlin".into(),
            name: "HQ cameras".into(),
            lat: Some(52.52),
            lng: Some(13.40),
            accepted_on: accepted_on.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for (serial, model, family, price) in [
        ("CAM-1", "DS-2CD2143", "camera", "6000"),
        ("NVR-1", "DS-7608", "NVR", "4000.00"),
    ] {
        client
            .add_asset(asset(&project.id, serial, model, family, price, "EUR"))
            .await
            .unwrap();
    }
    project
}

fn asset(
    project: &str,
    serial: &str,
    model: &str,
    family: &str,
    price: &str,
    currency: &str,
) -> pb::AddAssetRequest {
    pb::AddAssetRequest {
        project: project.into(),
        model: model.into(),
        family: family.into(),
        serial: serial.into(),
        price: price.into(),
        currency: currency.into(),
        firmware: "5.7.3".into(),
    }
}

fn contract(serials: &[&str], start: &str, end: &str, fee: &str) -> pb::CreateContractRequest {
    pb::CreateContractRequest {
        customer: "Acme".into(),
        serials: serials.iter().map(|s| s.to_string()).collect(),
        start: start.into(),
        end: end.into(),
        fee: fee.into(),
        currency: "EUR".into(),
        ..Default::default()
    }
}

async fn asset_on(client: &mut Client, serial: &str, on: &str) -> pb::Asset {
    client
        .get_asset(pb::GetAssetRequest {
            serial: serial.into(),
            on: on.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn entitlement(client: &mut Client, key: Key, on: &str) -> pb::EntitlementResponse {
    client
        .entitlement(pb::EntitlementRequest {
            key: Some(key),
            on: on.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn the_installed_base_is_recorded_and_its_warranty_follows_acceptance() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    let project = acme(&mut client, "2023-08-31").await;
    assert_eq!(project.warranty_months, 12);
    assert_eq!(
        project.time_zone, "Europe/Berlin",
        "the branch's zone by default"
    );
    assert_eq!(project.warranty_until, "2024-08-30");

    let camera = asset_on(&mut client, "cam-1", "2024-08-30").await;
    assert_eq!(camera.serial, "CAM-1");
    assert_eq!(camera.price, "6000.00");
    assert_eq!(camera.currency, "EUR");
    assert_eq!(camera.family, "camera");
    assert_eq!(camera.customer, "Acme");
    assert_eq!(camera.warranty_until, "2024-08-30");
    assert_eq!(camera.coverage, pb::Coverage::Warranty as i32);
    assert_eq!(camera.covered_until, "2024-08-30");
    let after = asset_on(&mut client, "CAM-1", "2024-08-31").await;
    assert_eq!(after.coverage, pb::Coverage::None as i32);
    assert!(
        after.reason.contains("warranty ended 2024-08-30"),
        "{}",
        after.reason
    );

    // Moving the acceptance moves the warranty with it; a short override
    // into February runs to the month's end.
    let moved = client
        .accept_project(pb::AcceptProjectRequest {
            project: "HQ cameras".into(),
            accepted_on: "2024-01-15".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.accepted_on, "2024-01-15");
    assert_eq!(moved.warranty_until, "2025-01-14");
    let camera = asset_on(&mut client, "CAM-1", "2024-08-31").await;
    assert_eq!(camera.coverage, pb::Coverage::Warranty as i32);
    assert_eq!(camera.warranty_until, "2025-01-14");

    let detail = client
        .get_customer(pb::GetCustomerRequest {
            customer: "ACME".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.branches.len(), 1);
    assert_eq!(detail.branches[0].notice_email, "berlin@acme.example");
    assert_eq!(detail.contacts[0].email, "ann@acme.example");
    assert_eq!(
        detail.contacts[0].phone, "+49301234567",
        "E.164 with the country code"
    );
    assert_eq!(detail.projects[0].warranty_until, "2025-01-14");

    let listed = client
        .list_customers(pb::ListCustomersRequest {
            text: "cm".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.customers.len(), 1);
    desk.stop().await;
}

#[tokio::test]
async fn names_serials_emails_and_phones_clash_by_name() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    let project = acme(&mut client, "2024-01-01").await;
    let again = client
        .create_customer(pb::CreateCustomerRequest {
            name: "ACME".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert!(
        again
            .message()
            .contains("a customer named \"ACME\" already exists"),
        "{again:?}"
    );

    let serial = client
        .add_asset(asset(&project.id, "cam-1", "DS-2CD2143", "", "1", "EUR"))
        .await
        .unwrap_err();
    assert_eq!(serial.code(), Code::AlreadyExists);
    assert!(serial.message().contains("serial cam-1"), "{serial:?}");

    let phone = client
        .add_contact(pb::AddContactRequest {
            customer: "Acme".into(),
            name: "Bob".into(),
            phone: "+49 30 1234567".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(phone.code(), Code::AlreadyExists);
    assert!(phone.message().contains("phone +49301234567"), "{phone:?}");

    let branch = client
        .add_branch(pb::AddBranchRequest {
            customer: "Acme".into(),
            name: "berlin".into(),
            time_zone: "Europe/Berlin".into(),
            notice_email: "x@acme.example".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(branch.code(), Code::AlreadyExists);

    let unknown = client
        .add_project(pb::AddProjectRequest {
            customer: "Globex".into(),
            branch: "Berlin".into(),
            name: "P".into(),
            accepted_on: "2024-01-01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("no customer \"Globex\""),
        "{unknown:?}"
    );

    let model = client
        .add_asset(asset(&project.id, "X-9", "Unknown-Model", "", "1", "EUR"))
        .await
        .unwrap_err();
    assert_eq!(model.code(), Code::NotFound);
    assert!(model.message().contains("give its family"), "{model:?}");
    desk.stop().await;
}

#[tokio::test]
async fn hostile_and_malformed_input_is_refused_saying_what_to_change() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    let project = acme(&mut client, "2024-01-01").await;
    let refused = |request: pb::CreateCustomerRequest| {
        let mut client = client.clone();
        async move { client.create_customer(request).await.unwrap_err() }
    };
    for (name, want) in [
        ("Evil\0Corp", "NUL"),
        ("Evil\nCorp", "control character"),
        (&"x".repeat(201), "longer than 200"),
        ("   ", "give the name"),
    ] {
        let error = refused(pb::CreateCustomerRequest {
            name: name.into(),
            ..Default::default()
        })
        .await;
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().contains(want), "{name:?}: {error:?}");
    }
    let phone = refused(pb::CreateCustomerRequest {
        name: "Initech".into(),
        phone: "call me".into(),
        ..Default::default()
    })
    .await;
    assert!(phone.message().contains("not a phone number"), "{phone:?}");

    for (price, currency, want) in [
        ("1e3", "EUR", "not an amount"),
        ("-5", "EUR", "not an amount"),
        ("1.234", "EUR", "not an amount"),
        ("NaN", "EUR", "not an amount"),
        ("10", "EURO", "ISO 4217"),
    ] {
        let error = client
            .add_asset(asset(&project.id, "NEW-1", "DS-7608", "", price, currency))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{price}");
        assert!(error.message().contains(want), "{price}: {error:?}");
    }
    let zone = client
        .add_branch(pb::AddBranchRequest {
            customer: "Acme".into(),
            name: "Mars".into(),
            time_zone: "Mars/Olympus".into(),
            notice_email: "mars@acme.example".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(zone.message().contains("IANA"), "{zone:?}");
    let date = client
        .accept_project(pb::AcceptProjectRequest {
            project: project.id.clone(),
            accepted_on: "2024-02-30".into(),
        })
        .await
        .unwrap_err();
    assert!(date.message().contains("YYYY-MM-DD"), "{date:?}");
    desk.stop().await;
}

#[tokio::test]
async fn a_contract_over_the_cap_is_refused_with_the_highest_fee_allowed() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    acme(&mut client, "2023-01-01").await;
    let over = client
        .create_contract(contract(
            &["CAM-1", "NVR-1"],
            "2024-01-01",
            "2024-12-31",
            "600.00",
        ))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::FailedPrecondition);
    assert_eq!(
        over.message(),
        "the annual fee 600.00 EUR exceeds 5% of the covered products' price (10000.00 EUR): at most 500.00 EUR"
    );
    let cent = client
        .create_contract(contract(
            &["CAM-1", "NVR-1"],
            "2024-01-01",
            "2024-12-31",
            "500.01",
        ))
        .await
        .unwrap_err();
    assert_eq!(cent.code(), Code::FailedPrecondition);

    let odd = client
        .create_contract(contract(&["CAM-1"], "2024-01-01", "2024-03-15", "1"))
        .await
        .unwrap_err();
    assert_eq!(odd.code(), Code::InvalidArgument);
    assert!(odd.message().contains("whole calendar months"), "{odd:?}");

    let mut usd = contract(&["CAM-1"], "2024-01-01", "2024-12-31", "1");
    usd.currency = "USD".into();
    let usd = client.create_contract(usd).await.unwrap_err();
    assert!(usd.message().contains("priced in EUR"), "{usd:?}");

    // A whole project, at exactly 5%: allowed. Its assets are covered.
    let made = client
        .create_contract(pb::CreateContractRequest {
            projects: vec!["HQ cameras".into()],
            ..contract(&[], "2024-01-01", "2024-12-31", "500.00")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.serials, ["CAM-1", "NVR-1"]);
    assert_eq!(made.term_months, 12);
    assert_eq!(made.covered_price, "10000.00");
    assert_eq!(made.max_fee, "500.00");

    let camera = asset_on(&mut client, "CAM-1", "2024-06-01").await;
    assert_eq!(camera.coverage, pb::Coverage::Contract as i32);
    assert_eq!(camera.covered_until, "2024-12-31");
    assert_eq!(camera.contract_id, made.id);

    // Without the camera, 500.00 a year is 12.5% of the recorder's price.
    let removal = client
        .change_coverage(pb::ChangeCoverageRequest {
            contract: made.id.clone(),
            remove_serials: vec!["CAM-1".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(removal.code(), Code::FailedPrecondition);
    assert!(
        removal
            .message()
            .contains("(4000.00 EUR): at most 200.00 EUR"),
        "{removal:?}"
    );
    let listed = client
        .list_contracts(pb::ListContractsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.contracts[0].serials,
        ["CAM-1", "NVR-1"],
        "nothing changed"
    );

    // A camera installed later is added; then the first camera may go.
    let project = client
        .get_customer(pb::GetCustomerRequest {
            customer: "Acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .projects
        .remove(0);
    client
        .add_asset(asset(&project.id, "CAM-2", "DS-2CD2143", "", "6000", "EUR"))
        .await
        .unwrap();
    let grown = client
        .change_coverage(pb::ChangeCoverageRequest {
            contract: made.id.clone(),
            add_serials: vec!["cam-2".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.serials, ["CAM-1", "CAM-2", "NVR-1"]);
    assert_eq!(grown.max_fee, "800.00");
    let shrunk = client
        .change_coverage(pb::ChangeCoverageRequest {
            contract: made.id.clone(),
            remove_serials: vec!["CAM-1".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shrunk.serials, ["CAM-2", "NVR-1"]);
    let camera = asset_on(&mut client, "CAM-1", "2024-06-01").await;
    assert_eq!(
        camera.coverage,
        pb::Coverage::None as i32,
        "no longer covered"
    );
    desk.stop().await;
}

#[tokio::test]
async fn two_contracts_on_one_asset_at_once_cannot_both_win() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    acme(&mut client, "2023-01-01").await;
    let mut first = client.clone();
    let mut second = client.clone();
    let (a, b) = tokio::join!(
        first.create_contract(contract(&["CAM-1"], "2024-01-01", "2024-12-31", "300")),
        second.create_contract(contract(
            &["CAM-1", "NVR-1"],
            "2024-07-01",
            "2025-06-30",
            "100"
        )),
    );
    let results = [a, b];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(lost.code(), Code::FailedPrecondition);
    assert!(
        lost.message()
            .contains("asset CAM-1 is already covered by contract"),
        "{lost:?}"
    );
    // The day after the first ends, a new one may start.
    let won = results
        .iter()
        .find_map(|r| r.as_ref().ok())
        .unwrap()
        .get_ref();
    let next_start = chrono::NaiveDate::parse_from_str(&won.end, "%Y-%m-%d")
        .unwrap()
        .succ_opt()
        .unwrap();
    let next_end = hotline_contracts::domain::last_day(next_start, 12).unwrap();
    client
        .create_contract(contract(
            &["CAM-1"],
            &next_start.to_string(),
            &next_end.to_string(),
            "300",
        ))
        .await
        .unwrap();
    desk.stop().await;
}

#[tokio::test]
async fn entitlement_answers_by_phone_email_and_serial_and_never_guesses() {
    let desk = Desk::start().await;
    let mut client = desk.manager();
    acme(&mut client, "2024-01-15").await;

    let by_phone = entitlement(
        &mut client,
        Key::Phone("0049 30 1234567".into()),
        "2024-06-01",
    )
    .await;
    assert_eq!(by_phone.r#match, pb::Match::Found as i32);
    assert_eq!(by_phone.customer.as_ref().unwrap().name, "Acme");
    assert_eq!(by_phone.branch.as_ref().unwrap().name, "Berlin");
    assert_eq!(by_phone.contact.as_ref().unwrap().name, "Ann Lee");
    assert_eq!(by_phone.project.as_ref().unwrap().name, "HQ cameras");
    assert_eq!(by_phone.assets.len(), 2);
    assert_eq!(by_phone.coverage, pb::Coverage::Warranty as i32);
    assert_eq!(by_phone.covered_until, "2025-01-14");
    assert!(
        by_phone.reason.contains("2 in warranty"),
        "{}",
        by_phone.reason
    );

    let by_email = entitlement(
        &mut client,
        Key::Email("ANN@acme.example".into()),
        "2025-02-01",
    )
    .await;
    assert_eq!(by_email.r#match, pb::Match::Found as i32);
    assert_eq!(by_email.coverage, pb::Coverage::None as i32);

    let by_serial = entitlement(&mut client, Key::Serial("nvr-1".into()), "2024-06-01").await;
    assert_eq!(by_serial.assets.len(), 1);
    assert_eq!(by_serial.assets[0].serial, "NVR-1");
    assert_eq!(by_serial.branch.as_ref().unwrap().name, "Berlin");
    assert!(
        by_serial
            .reason
            .starts_with("NVR-1 (DS-7608): in warranty until 2025-01-14"),
        "{}",
        by_serial.reason
    );

    for key in [
        Key::Phone("+1 555 0100 999".into()),
        Key::Email("nobody@example.com".into()),
        Key::Serial("NOPE".into()),
    ] {
        let unknown = entitlement(&mut client, key, "").await;
        assert_eq!(unknown.r#match, pb::Match::Unknown as i32);
        assert_eq!(unknown.coverage, pb::Coverage::None as i32);
        assert!(unknown.customer.is_none());
    }

    // Another customer whose branch sends its notices to Ann's address,
    // and who shares Acme's switchboard number.
    client
        .create_customer(pb::CreateCustomerRequest {
            name: "Globex".into(),
            phone: "+49 30 999999".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .add_branch(pb::AddBranchRequest {
            customer: "Globex".into(),
            name: "Potsdam".into(),
            time_zone: "Europe/Berlin".into(),
            notice_email: "ann@acme.example".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let shared = entitlement(&mut client, Key::Email("ann@acme.example".into()), "").await;
    assert_eq!(shared.r#match, pb::Match::Ambiguous as i32);
    assert!(shared.customer.is_none(), "nothing guessed");
    let mut via: Vec<String> = shared
        .candidates
        .iter()
        .map(|c| format!("{}: {}", c.customer, c.via))
        .collect();
    via.sort();
    assert_eq!(
        via,
        [
            "Acme: contact Ann Lee",
            "Globex: branch Potsdam notice email"
        ]
    );
    let switchboard = entitlement(&mut client, Key::Phone("+4930999999".into()), "").await;
    assert_eq!(switchboard.r#match, pb::Match::Ambiguous as i32);
    assert_eq!(switchboard.candidates.len(), 2);
    desk.stop().await;
}

#[tokio::test]
async fn everyone_at_the_desk_reads_and_only_managers_change() {
    let desk = Desk::start().await;
    acme(&mut desk.manager(), "2024-01-01").await;
    for role in [Role::Agent, Role::Dispatcher, Role::Technician] {
        let mut client = desk.client(role);
        let refused = client
            .create_customer(pb::CreateCustomerRequest {
                name: "Initech".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{role}");
        let contract = client
            .create_contract(contract(&["CAM-1"], "2025-01-01", "2025-12-31", "1"))
            .await
            .unwrap_err();
        assert_eq!(contract.code(), Code::PermissionDenied, "{role}");
        assert_eq!(asset_on(&mut client, "CAM-1", "").await.serial, "CAM-1");
    }
    let mut admin = desk.client(Role::Admin);
    admin
        .create_customer(pb::CreateCustomerRequest {
            name: "Initech".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let bridge = desk
        .client(Role::Bridge)
        .list_customers(pb::ListCustomersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bridge.code(), Code::PermissionDenied);
    desk.stop().await;
}
