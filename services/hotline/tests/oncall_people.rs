//! The pager's people are the directory's, end to end: the real `hotline`
//! binary against the whole fleet. A person added with `hotline people
//! add` is put on a schedule by email and paged at the breach; `hotline
//! people adopt-pager` moves the pager's people from before the directory
//! into it, and says who it could not.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hotline_kit::{
    auth::Role,
    testing::{TestApp, TestEnv},
};
use hotline_proto::tickets::v1::{
    Channel, CreateTicketRequest, Priority, ticket_service_client::TicketServiceClient,
};
use serde_json::{Value, json};

mod common;

struct Shell {
    env: TestEnv,
    app: TestApp,
    manager: String,
}

impl Shell {
    /// The fleet with a 3 s response target, paging by email through
    /// `relay` only.
    async fn start(relay: &str) -> Self {
        let mut env = TestEnv::new().await.unwrap();
        env.config.set("sla", "response_target", "3s");
        env.config.set("sla", "level_delays", "1h");
        env.config.set("sla", "repeat_every", "1h");
        env.config.set("pager", "pagerduty_routing_key", "");
        env.config.set("pager", "smtp_relay", relay);
        env.config
            .set("pager", "email_from", "Hotline <hotline@vendor.example>");
        let app = env.start(&hotline::fleet::modules()).await.unwrap();
        let manager = env.token("mia@vendor.example", Role::Manager);
        Self { env, app, manager }
    }

    /// Runs `hotline args... --json` as `token`: whether it succeeded, and
    /// its JSON.
    async fn run(&self, token: &str, args: &[&str]) -> (bool, Value) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
            .args(args)
            .arg("--json")
            .env("HOTLINE_SERVER", format!("http://{}", self.app.grpc_addr))
            .env("HOTLINE_AUTH__SECRET", self.env.config.auth.secret.expose())
            .env("HOTLINE_TOKEN", token)
            .output()
            .await
            .unwrap();
        let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!(
                "hotline {args:?} printed no JSON: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.success(), value)
    }

    async fn ok(&self, args: &[&str]) -> Value {
        let (ok, value) = self.run(&self.manager, args).await;
        assert!(ok, "hotline {args:?}: {value}");
        value
    }

    /// `hotline args...` until `done` holds of its JSON (the pager hears of
    /// the directory through events).
    async fn until(&self, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.ok(args).await;
            if done(&value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hotline {args:?} never got there: {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&[]).await.unwrap();
    }
}

/// The mails to `address`.
fn to(mails: &Arc<Mutex<Vec<String>>>, address: &str) -> Vec<String> {
    mails
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.contains(&format!("To: {address}")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_person_added_from_the_shell_is_put_on_call_and_paged_at_the_breach() {
    let (mails, relay) = common::smtp_sink().await;
    let shell = Shell::start(&format!("smtp://{relay}")).await;
    let added = shell
        .ok(&[
            "people",
            "add",
            "--name",
            "Ana Lima",
            "--email",
            "Ana@Vendor.example",
            "--role",
            "technician",
            "--home-lat",
            "52.52",
            "--home-lng",
            "13.40",
            "--timezone",
            "Europe/Berlin",
        ])
        .await;
    let id = added["id"].as_str().unwrap().to_owned();
    shell
        .until(&["oncall", "contact", "list"], |people| {
            people
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["id"] == id.as_str()))
        })
        .await;
    let schedule = shell
        .ok(&[
            "oncall",
            "schedule",
            "add",
            "--name",
            "night",
            "--timezone",
            "UTC",
            "--people",
            &id,
            "--shift",
            "7d",
            "--starts",
            "2026-01-05T09:00",
        ])
        .await;
    assert_eq!(
        schedule["people"],
        json!(["ana@vendor.example"]),
        "by email"
    );
    shell
        .ok(&[
            "oncall",
            "levels",
            "set",
            "--level",
            "1",
            "--targets",
            "schedule:night",
        ])
        .await;
    let now = shell.ok(&["oncall", "now"]).await;
    assert_eq!(now[0]["person"], "ana@vendor.example");

    let agent = shell.env.token("bo@vendor.example", Role::Agent);
    let ticket = TicketServiceClient::new(shell.app.channel(&agent))
        .create_ticket(CreateTicketRequest {
            subject: "Recorder offline".into(),
            body: "No picture since 02:00".into(),
            contact: "ops@customer.example".into(),
            priority: Priority::Normal as i32,
            channel: Channel::Email as i32,
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while to(&mails, "ana@vendor.example").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Ana was never paged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(to(&mails, "ana@vendor.example")[0].contains(&format!("[{}]", ticket.number)));
    let pages = shell.ok(&["pages", "list", &ticket.number]).await;
    assert_eq!(pages[0]["target"], "ana@vendor.example");
    assert_eq!(pages[0]["channel"], "email");

    // Deactivated, she is on call no more, and a schedule cannot take her.
    shell.ok(&["people", "deactivate", &id]).await;
    shell
        .until(&["oncall", "now"], |now| now[0]["person"].is_null())
        .await;
    let (ok, refused) = shell
        .run(
            &shell.manager,
            &[
                "oncall",
                "override",
                "add",
                "--schedule",
                "night",
                "--person",
                "ana@vendor.example",
                "--from",
                "2030-01-01T08:00",
                "--to",
                "2030-01-01T20:00",
            ],
        )
        .await;
    assert!(!ok);
    assert_eq!(refused["code"], "FailedPrecondition", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("Ana Lima <ana@vendor.example> is deactivated in the directory"),
        "{refused}"
    );
    shell.stop().await;
}

#[tokio::test]
async fn adopt_pager_puts_the_pagers_people_in_the_directory_and_says_who_it_could_not() {
    let (_mails, relay) = common::smtp_sink().await;
    let shell = Shell::start(&format!("smtp://{relay}")).await;
    // Bo was in the directory already; the pager had its own people,
    // and a schedule of them, from before the directory.
    shell
        .ok(&[
            "people",
            "add",
            "--name",
            "Bo Berg",
            "--email",
            "bo@vendor.example",
            "--role",
            "dispatcher",
        ])
        .await;
    shell
        .until(&["oncall", "contact", "list"], |people| {
            people[0]["email"] == "bo@vendor.example"
        })
        .await;
    let pool = shell.env.pool("pager").unwrap();
    sqlx::query(
        "INSERT INTO legacy_people (name, email, webhook_url) VALUES
             ('ana', 'Ana@Vendor.example', 'https://hooks.example/ana'),
             ('bobby', 'bo@vendor.example', ''),
             ('dee', '', 'https://hooks.example/dee'),
             ('eve', 'not an address', '')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO schedules (name, time_zone, participants, shift_seconds, starts)
         VALUES ('night', 'UTC', ARRAY['ana', 'dee'], 604800, '2026-01-05T09:00')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let agent = shell.env.token("cy@vendor.example", Role::Agent);
    let (ok, refused) = shell.run(&agent, &["people", "adopt-pager"]).await;
    assert!(!ok);
    assert_eq!(refused["code"], "PermissionDenied", "{refused}");

    let report = shell.ok(&["people", "adopt-pager"]).await;
    let outcomes: Vec<(&str, &str)> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["outcome"].as_str().unwrap()))
        .collect();
    // bobby is not tried: Bo has his email, so the pager pages Bo for him
    // already.
    assert_eq!(
        outcomes,
        [("ana", "added"), ("dee", "not_added"), ("eve", "not_added")]
    );
    assert!(report[1]["reason"].as_str().unwrap().contains("no email"));
    assert!(
        report[2]["reason"].as_str().unwrap().contains("email"),
        "the directory's refusal: {report}"
    );
    let ana = shell.ok(&["people", "show", "ana@vendor.example"]).await;
    assert_eq!(
        (ana["name"].clone(), ana["roles"].clone()),
        (json!("ana"), json!(["agent"]))
    );

    // The pager links Ana when it hears of her: the schedule names her by
    // email, her webhook came along; dee and eve are left, paged as before.
    shell
        .until(&["oncall", "schedule", "list"], |schedules| {
            schedules[0]["people"] == json!(["ana@vendor.example", "dee"])
        })
        .await;
    let contacts = shell.ok(&["oncall", "contact", "list"]).await;
    let ana_contact = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["email"] == "ana@vendor.example")
        .unwrap();
    assert_eq!(ana_contact["webhook"], "https://hooks.example/ana");
    let legacy: Vec<&str> = contacts
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["legacy"] == true)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(legacy, ["dee", "eve"]);
    // Again: only those it could not add are tried, and nobody twice.
    let again = shell.ok(&["people", "adopt-pager"]).await;
    assert_eq!(again.as_array().map(Vec::len), Some(2), "{again}");
    let everyone = shell.ok(&["people", "list", "--all"]).await;
    assert_eq!(everyone.as_array().map(Vec::len), Some(2), "{everyone}");
    shell.stop().await;
}
