//! The agent's command line end to end: the real `hotline` binary against a
//! running fleet.

use std::process::Output;

use hotline_kit::testing::{TestApp, TestEnv};
use serde_json::Value;

struct Shell {
    env: TestEnv,
    app: TestApp,
}

impl Shell {
    async fn start() -> Self {
        let env = TestEnv::new().await.unwrap();
        let app = env.start(&hotline::fleet::modules()).await.unwrap();
        Self { env, app }
    }

    /// Runs `hotline args...` with `token` as HOTLINE_TOKEN (none if empty).
    async fn run(&self, token: &str, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"));
        command
            .args(args)
            .env("HOTLINE_SERVER", format!("http://{}", self.app.grpc_addr))
            .env("HOTLINE_AUTH__SECRET", self.env.config.auth.secret.expose())
            .env_remove("HOTLINE_TOKEN");
        if !token.is_empty() {
            command.env("HOTLINE_TOKEN", token);
        }
        command.output().await.unwrap()
    }

    /// Runs with `--json` and expects success and one JSON value.
    async fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let output = self.run(token, &args).await;
        assert!(
            output.status.success(),
            "hotline {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON only on stdout")
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&[]).await.unwrap();
    }
}

#[tokio::test]
async fn an_agent_works_a_ticket_from_the_shell() {
    let shell = Shell::start().await;
    let issued = shell
        .json(
            "",
            &["token", "issue", "--role", "agent", "--subject", "ada"],
        )
        .await;
    let token = issued["token"].as_str().unwrap().to_owned();

    let created = shell
        .json(
            &token,
            &[
                "tickets",
                "create",
                "--subject",
                "Camera 3 offline",
                "--body",
                "No picture since 02:00",
                "--contact",
                "ops@acme.example",
                "--priority",
                "high",
            ],
        )
        .await;
    let number = created["number"].as_str().unwrap().to_owned();
    assert_eq!(number, "HL-10001");
    for field in [
        "id",
        "status",
        "priority",
        "channel",
        "subject",
        "awaiting_since",
        "assignee",
        "created_at",
    ] {
        assert!(
            created.get(field).is_some(),
            "ticket JSON has {field}: {created}"
        );
    }
    assert_eq!(created["status"], "new");
    assert_eq!(created["priority"], "high");
    assert_eq!(created["awaiting_response"], true);

    let awaiting = shell.json(&token, &["tickets", "list", "--awaiting"]).await;
    assert_eq!(awaiting.as_array().unwrap().len(), 1);

    shell
        .json(
            &token,
            &[
                "tickets",
                "note",
                &number,
                "--message",
                "Checked the switch",
            ],
        )
        .await;
    let still = shell.json(&token, &["tickets", "show", &number]).await;
    assert_eq!(still["awaiting_response"], true, "a note is no response");

    let responded = shell
        .json(
            &token,
            &[
                "tickets",
                "respond",
                &number,
                "--message",
                "A technician is on the way",
            ],
        )
        .await;
    assert_eq!(responded["awaiting_response"], false);
    assert_eq!(responded["status"], "open");
    let awaiting = shell.json(&token, &["tickets", "list", "--awaiting"]).await;
    assert!(awaiting.as_array().unwrap().is_empty());

    let shown = shell.json(&token, &["tickets", "show", &number]).await;
    let kinds: Vec<&str> = shown["articles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["customer_message", "internal_note", "agent_reply"]);
    assert_eq!(shown["articles"][2]["body"], "A technician is on the way");

    let id = created["id"].as_str().unwrap();
    assert_eq!(
        shell.json(&token, &["tickets", "resolve", id]).await["status"],
        "resolved"
    );
    assert_eq!(
        shell.json(&token, &["tickets", "close", &number]).await["status"],
        "closed"
    );
    assert_eq!(
        shell.json(&token, &["tickets", "reopen", &number]).await["status"],
        "open"
    );
    let open = shell
        .json(&token, &["tickets", "list", "--status", "open"])
        .await;
    assert_eq!(open.as_array().unwrap().len(), 1);

    let human = shell.run(&token, &["tickets", "list"]).await;
    assert!(String::from_utf8_lossy(&human.stdout).contains("HL-10001"));
    shell.stop().await;
}

#[tokio::test]
async fn retrying_a_create_with_its_key_returns_the_same_ticket() {
    let shell = Shell::start().await;
    let token = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let args = [
        "tickets",
        "create",
        "--subject",
        "Missed call",
        "--body",
        "-",
        "--idempotency-key",
        "pbx-42",
    ];
    let first = shell.json(&token, &args).await;
    let again = shell.json(&token, &args).await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(
        shell
            .json(&token, &["tickets", "list"])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    shell.stop().await;
}

#[tokio::test]
async fn an_agent_saves_a_customers_attachment_from_the_shell() {
    use hotline_proto::tickets::v1 as pb;
    let shell = Shell::start().await;
    let token = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let content: Vec<u8> = (0..=255).cycle().take(5 * 1024 * 1024).collect();
    let ticket = pb::ticket_service_client::TicketServiceClient::new(
        shell
            .app
            .channel(&shell.env.token("intake", hotline_kit::auth::Role::Bridge)),
    )
    .max_encoding_message_size(hotline_kit::grpc::MAX_MESSAGE_BYTES)
    .create_ticket(pb::CreateTicketRequest {
        subject: "Recorder dump".into(),
        body: "Dump attached.".into(),
        attachments: vec![pb::NewAttachment {
            name: "nvr.dump".into(),
            content_type: "application/octet-stream".into(),
            content: content.clone(),
        }],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .ticket
    .unwrap();
    let shown = shell
        .json(&token, &["tickets", "show", &ticket.number])
        .await;
    let file = &shown["articles"][0]["attachments"][0];
    assert_eq!(file["name"], "nvr.dump");
    assert_eq!(file["size"], 5 * 1024 * 1024);
    let target = std::env::temp_dir().join(format!("nvr-{}.dump", uuid::Uuid::new_v4()));
    let saved = shell
        .json(
            &token,
            &[
                "tickets",
                "attachment",
                file["id"].as_str().unwrap(),
                "--output",
                target.to_str().unwrap(),
            ],
        )
        .await;
    assert_eq!(saved["attachment"]["name"], "nvr.dump");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        content,
        "5 MiB, byte for byte"
    );
    std::fs::remove_file(&target).unwrap();
    shell.stop().await;
}

#[tokio::test]
async fn failures_are_clear_and_exit_non_zero() {
    let shell = Shell::start().await;
    let missing = shell.run("", &["tickets", "list"]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("HOTLINE_TOKEN is not set"));

    let bad = shell
        .run("not-a-token", &["tickets", "list", "--json"])
        .await;
    assert!(!bad.status.success());
    let error: Value = serde_json::from_slice(&bad.stdout).expect("--json failures are JSON too");
    assert_eq!(error["code"], "Unauthenticated");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("refused the token")
    );

    let token = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let created = shell
        .json(
            &token,
            &["tickets", "create", "--subject", "Fan", "--body", "noise"],
        )
        .await;
    let number = created["number"].as_str().unwrap();
    let refused = shell.run(&token, &["tickets", "close", number]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("resolve it before you close it"));

    let unknown = shell.run(&token, &["tickets", "show", "HL-424242"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("does not exist"));

    let bad_role = shell
        .run(
            "",
            &["token", "issue", "--role", "wizard", "--subject", "x"],
        )
        .await;
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role"));
    shell.stop().await;
}

#[tokio::test]
async fn a_manager_records_the_installed_base_and_an_agent_finds_the_caller() {
    let shell = Shell::start().await;
    let manager = shell.env.token("mia", hotline_kit::auth::Role::Manager);
    let customer = shell
        .json(&manager, &["customers", "add", "--name", "Acme"])
        .await;
    assert_eq!(customer["name"], "Acme");
    assert!(customer["id"].is_string());
    let steps: [&[&str]; 5] = [
        &[
            "branches",
            "add",
            "--customer",
            "Acme",
            "--name",
            "Berlin",
            "--email",
            "berlin@acme.example",
            "--timezone",
            "Europe/Berlin",
            "--region",
            "north",
        ],
        &[
            "contacts",
            "add",
            "--customer",
            "Acme",
            "--branch",
            "Berlin",
            "--name",
            "Ann Lee",
            "--email",
            "ann@acme.example",
            "--phone",
            "+49 30 1234567",
        ],
        &[
            "projects",
            "add",
            "--customer",
            "Acme",
            "--branch",
            "Berlin",
            "--name",
            "HQ",
            "--accepted",
            "2023-08-31",
            "--warranty-months",
            "6",
            "--lat",
            "52.5",
            "--lng",
            "-13.4",
        ],
        &[
            "assets",
            "add",
            "--project",
            "HQ",
            "--model",
            "DS-2CD2143",
            "--family",
            "camera",
            "--serial",
            "CAM-1",
            "--price",
            "6000",
            "--currency",
            "EUR",
        ],
        &[
            "assets",
            "add",
            "--project",
            "HQ",
            "--model",
            "DS-7608",
            "--family",
            "nvr",
            "--serial",
            "NVR-1",
            "--price",
            "4000.00",
            "--currency",
            "EUR",
            "--firmware",
            "4.1",
        ],
    ];
    for step in steps {
        shell.json(&manager, step).await;
    }
    let project = &shell.json(&manager, &["customers", "show", "acme"]).await["projects"][0];
    assert_eq!(project["accepted_on"], "2023-08-31");
    assert_eq!(
        project["warranty_until"], "2024-02-29",
        "31 Aug + 6 months: end of February"
    );

    let over = shell
        .run(
            &manager,
            &[
                "contracts",
                "add",
                "--customer",
                "Acme",
                "--projects",
                "HQ",
                "--start",
                "2024-03-01",
                "--end",
                "2025-02-28",
                "--annual-fee",
                "600.00",
                "--currency",
                "EUR",
                "--json",
            ],
        )
        .await;
    assert!(!over.status.success());
    let error: Value = serde_json::from_slice(&over.stdout).unwrap();
    assert_eq!(error["code"], "FailedPrecondition");
    assert_eq!(
        error["error"],
        "the annual fee 600.00 EUR exceeds 5% of the covered products' price (10000.00 EUR): at most 500.00 EUR"
    );
    let contract = shell
        .json(
            &manager,
            &[
                "contracts",
                "add",
                "--customer",
                "Acme",
                "--assets",
                "CAM-1,NVR-1",
                "--start",
                "2024-03-01",
                "--end",
                "2025-02-28",
                "--annual-fee",
                "500",
                "--currency",
                "EUR",
            ],
        )
        .await;
    assert_eq!(contract["fee"], "500.00");
    assert_eq!(contract["assets"], serde_json::json!(["CAM-1", "NVR-1"]));

    let agent = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let refused = shell
        .run(&agent, &["customers", "add", "--name", "Globex"])
        .await;
    assert!(!refused.status.success(), "agents read, managers write");
    let caller = shell
        .json(
            &agent,
            &[
                "entitlement",
                "--phone",
                "0049 30 1234567",
                "--on",
                "2024-06-01",
            ],
        )
        .await;
    assert_eq!(caller["match"], "found");
    assert_eq!(caller["customer"]["name"], "Acme");
    assert_eq!(caller["branch"]["name"], "Berlin");
    assert_eq!(caller["project"]["name"], "HQ");
    assert_eq!(caller["coverage"], "contract");
    assert_eq!(caller["covered_until"], "2025-02-28");
    assert_eq!(caller["assets"].as_array().unwrap().len(), 2);
    let asset = shell
        .json(&agent, &["assets", "show", "nvr-1", "--on", "2025-03-01"])
        .await;
    assert_eq!(asset["serial"], "NVR-1");
    assert_eq!(asset["price"], "4000.00");
    assert_eq!(asset["currency"], "EUR");
    assert_eq!(asset["warranty_until"], "2024-02-29");
    assert_eq!(asset["coverage"], "none");
    assert_eq!(asset["covered_until"], Value::Null);
    let expiring = shell
        .json(
            &agent,
            &[
                "contracts",
                "list",
                "--customer",
                "Acme",
                "--expiring",
                "60d",
            ],
        )
        .await;
    assert_eq!(expiring, serde_json::json!([]), "it ended long ago");
    shell.stop().await;
}
