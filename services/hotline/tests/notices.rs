//! Notices end to end: the whole fleet with the real clock, a local SMTP
//! relay; a branch whose warranty ends within 60 days receives exactly one
//! mail listing its assets and the renewal quote, however often the scan
//! runs, and one more when the acceptance date moves.

mod common;

use std::time::Duration;

use chrono::{Days, Months, Utc};
use hotline_contracts::domain;
use hotline_kit::{auth::Role, testing::TestEnv};
use hotline_proto::contracts::v1::{self as pb, contracts_service_client::ContractsServiceClient};

/// Waits until the relay holds `count` messages (20 s at most).
async fn relayed(mails: &std::sync::Mutex<Vec<String>>, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held = mails.lock().unwrap().clone();
        if held.len() >= count || tokio::time::Instant::now() > deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `mail` has the header line `line` (case-blind name).
fn has_header(mail: &str, line: &str) -> bool {
    let (name, value) = line.split_once(": ").unwrap();
    mail.lines().take_while(|l| !l.is_empty()).any(|l| {
        l.split_once(": ")
            .is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    })
}

#[tokio::test]
async fn the_branch_receives_one_mail_with_its_assets_and_the_quote() {
    let (mails, sink) = common::smtp_sink().await;
    let mut env = TestEnv::new().await.unwrap();
    env.config.set("intake", "relay", &format!("smtp://{sink}"));
    env.config
        .set("intake", "from", "Hotline <desk@support.example>");
    // The scan runs every second here (hourly by default), so a repeat
    // would show within the test.
    env.config.set("contracts", "notice_every", "1s");
    let app = env.start(&hotline::fleet::modules()).await.unwrap();
    let mut contracts = ContractsServiceClient::new(app.channel(&env.token("mia", Role::Manager)));

    // Accepted a year ago less 30 days: the warranty ends within 60 days.
    let today = domain::today_at(Utc::now(), "Europe/Berlin");
    let accepted = today - Months::new(12) + Days::new(30);
    let until = domain::warranty_until(accepted, 12).unwrap();
    contracts
        .create_customer(pb::CreateCustomerRequest {
            name: "Acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    contracts
        .add_branch(pb::AddBranchRequest {
            customer: "Acme".into(),
            name: "Berlin".into(),
            time_zone: "Europe/Berlin".into(),
            notice_email: "berlin@acme.example".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let project = contracts
        .add_project(pb::AddProjectRequest {
            customer: "Acme".into(),
            branch: "Berlin".into(),
            name: "HQ cameras".into(),
            accepted_on: accepted.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for (serial, model, price) in [
        ("CAM-1", "DS-2CD2143", "6000"),
        ("NVR-1", "DS-7608", "4000"),
    ] {
        contracts
            .add_asset(pb::AddAssetRequest {
                project: project.id.clone(),
                model: model.into(),
                family: "camera".into(),
                serial: serial.into(),
                price: price.into(),
                currency: "EUR".into(),
                firmware: String::new(),
            })
            .await
            .unwrap();
    }

    let first = relayed(&mails, 1).await;
    assert_eq!(first.len(), 1, "the notice reached the relay");
    // Several more scans run meanwhile: none sends it again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = mails.lock().unwrap().clone();
    assert_eq!(held.len(), 1, "one mail, once: {held:#?}");
    let mail = &held[0];
    assert!(has_header(mail, "To: berlin@acme.example"), "{mail}");
    assert!(
        has_header(
            mail,
            &format!("Subject: Acme, Berlin: coverage of 2 assets ends on {until}")
        ),
        "{mail}"
    );
    assert!(has_header(mail, "Auto-Submitted: auto-generated"), "{mail}");
    assert!(
        has_header(mail, "Content-Transfer-Encoding: 7bit"),
        "plain lines, sent as they read: {mail}"
    );
    for row in [
        format!("CAM-1   DS-2CD2143  HQ cameras  warranty  {until}"),
        format!("NVR-1   DS-7608     HQ cameras  warranty  {until}"),
    ] {
        assert!(mail.contains(&row), "{row:?} in {mail}");
    }
    let start = until + Days::new(1);
    let quote = format!(
        "- {start} to {}: 500.00 EUR\n  for the 2 assets ending {until} (products 10000.00 EUR)\n",
        domain::last_day(start, 12).unwrap()
    );
    assert!(mail.contains(&quote), "{quote:?} in {mail}");

    // The acceptance moves a week: a new end, a new notice; then no more.
    contracts
        .accept_project(pb::AcceptProjectRequest {
            project: "HQ cameras".into(),
            accepted_on: (accepted + Days::new(7)).to_string(),
        })
        .await
        .unwrap();
    let moved = domain::warranty_until(accepted + Days::new(7), 12).unwrap();
    let both = relayed(&mails, 2).await;
    assert_eq!(both.len(), 2, "the moved end is announced");
    assert!(
        has_header(
            &both[1],
            &format!("Subject: Acme, Berlin: coverage of 2 assets ends on {moved}")
        ),
        "{}",
        both[1]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mails.lock().unwrap().len(), 2);

    app.stop().await.unwrap();
    env.cleanup_bus(&["sla", "pager", "intake"]).await.unwrap();
}

/// `notice` as `contracts` publishes it, under the event id `id` (a fresh
/// one when `None`); the id.
async fn publish_notice(
    env: &TestEnv,
    id: Option<&str>,
    notice: hotline_proto::events::v1::CoverageNotice,
) -> String {
    use hotline_proto::events::v1::event_envelope::Payload;
    let mut event = hotline_kit::bus::outbox::envelope(
        "contracts.notice",
        None,
        Utc::now(),
        Payload::ContractsNotice(notice),
    );
    if let Some(id) = id {
        event.id = id.into();
    }
    let pool = env.pool("contracts").unwrap();
    let mut tx = pool.begin().await.unwrap();
    hotline_kit::bus::outbox::enqueue(&mut tx, std::slice::from_ref(&event))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    event.id
}

#[tokio::test]
async fn intake_sends_a_notice_once_per_event_with_a_clean_subject() {
    use hotline_proto::events::v1::CoverageNotice;
    let (mails, sink) = common::smtp_sink().await;
    let mut env = TestEnv::new().await.unwrap();
    env.config.set("intake", "relay", &format!("smtp://{sink}"));
    let app = env
        .start(&[
            hotline_tickets::module(),
            hotline_intake::module(),
            hotline_contracts::module(),
        ])
        .await
        .unwrap();
    // An address the relay refuses for good: logged, never retried, and
    // the queue goes on.
    publish_notice(
        &env,
        None,
        CoverageNotice {
            recipient: "refused@acme.example".into(),
            subject: "Refused".into(),
            body: "x\n".into(),
            ..Default::default()
        },
    )
    .await;
    let hostile = CoverageNotice {
        recipient: "berlin@acme.example".into(),
        subject: "Coverage ends\r\nBcc: victim@elsewhere.example\u{1b}]0;pwn\u{7}".into(),
        body: "CAM-1 warranty 2035-03-14\n".into(),
        ..Default::default()
    };
    let id = publish_notice(&env, None, hostile.clone()).await;
    let sent = relayed(&mails, 1).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    // The same event again (a redelivery, a replay): no second mail.
    publish_notice(&env, Some(&id), hostile).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = mails.lock().unwrap().clone();
    assert_eq!(held.len(), 1, "once per event: {held:#?}");
    let mail = &held[0];
    assert!(has_header(mail, "To: berlin@acme.example"), "{mail}");
    let headers: Vec<&str> = mail.lines().take_while(|l| !l.is_empty()).collect();
    assert!(
        !headers
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{mail}"
    );
    assert_eq!(
        headers.iter().filter(|l| l.starts_with("Subject:")).count(),
        1,
        "{mail}"
    );
    assert!(
        has_header(
            mail,
            "Subject: Coverage ends Bcc: victim@elsewhere.example ]0;pwn"
        ),
        "{mail}"
    );
    assert!(
        !mail.contains('\u{1b}') && !mail.contains('\u{7}'),
        "{mail}"
    );
    app.stop().await.unwrap();
    env.cleanup_bus(&["intake"]).await.unwrap();
}
