//! The agent's command line end to end: the real `hotline` binary against a
//! running fleet.

mod common;

use std::process::Output;

use hotline_kit::testing::{TestApp, TestEnv};
use serde_json::Value;

struct Shell {
    env: TestEnv,
    app: TestApp,
}

impl Shell {
    async fn start() -> Self {
        Self::start_with(TestEnv::new().await.unwrap()).await
    }

    async fn start_with(env: TestEnv) -> Self {
        let app = env.start(&hotline::fleet::modules()).await.unwrap();
        Self { env, app }
    }

    /// Runs `hotline args...` with `token` as HOTLINE_TOKEN (none if empty).
    async fn run(&self, token: &str, args: &[&str]) -> Output {
        self.run_with(token, args, &[]).await
    }

    /// [`Shell::run`] with more environment, `settings`.
    async fn run_with(&self, token: &str, args: &[&str], settings: &[(&str, &str)]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"));
        command
            .args(args)
            .env("HOTLINE_SERVER", format!("http://{}", self.app.grpc_addr))
            .env("HOTLINE_AUTH__SECRET", self.env.config.auth.secret.expose())
            .env_remove("HOTLINE_TOKEN")
            .envs(settings.iter().copied());
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

    let id = file["id"].as_str().unwrap();
    let piped = shell
        .run(&token, &["tickets", "attachment", id, "--output", "-"])
        .await;
    assert!(piped.status.success(), "{piped:?}");
    assert!(
        piped.stdout == content,
        "standard output is the file, nothing else"
    );
    assert!(!std::path::Path::new("-").exists(), "no file named -");
    let both = shell
        .run(
            &token,
            &["tickets", "attachment", id, "--output", "-", "--json"],
        )
        .await;
    assert!(!both.status.success());
    let error: Value = serde_json::from_slice(&both.stdout).unwrap();
    assert_eq!(error["code"], "InvalidArgument");
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

/// The characters a sender could use to drive the agent's terminal: an OSC
/// that retitles it, a screen clear, a bare CR that overwrites the line, a
/// C1 CSI, a BEL.
const HOSTILE_SUBJECT: &str = "Camera \u{1b}]0;pwned\u{7} down\u{1b}[2J\rOK \u{9b}31m";
const HOSTILE_BODY: &str = "Hello,\n\tcamera 3 is down.\u{1b}]0;pwned\u{7}\r\n\u{1b}[2Jbye\u{9b}";

/// Any character that drives a terminal: C0 (but LF and TAB), DEL, C1.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\t'))
        .collect()
}

#[tokio::test]
async fn a_senders_control_characters_never_reach_the_terminal_raw() {
    let shell = Shell::start().await;
    let token = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let created = shell
        .json(
            &token,
            &[
                "tickets",
                "create",
                "--subject",
                HOSTILE_SUBJECT,
                "--body",
                HOSTILE_BODY,
                "--contact",
                "evil\u{1b}[8m@example.com",
            ],
        )
        .await;
    let number = created["number"].as_str().unwrap().to_owned();

    // JSON escapes by JSON's rules, and gives back the exact text.
    let shown = shell
        .run(&token, &["tickets", "show", &number, "--json"])
        .await;
    assert!(shown.status.success());
    for byte in [0x1b, 0x07, b'\r'] {
        assert!(!shown.stdout.contains(&byte), "JSON escapes {byte:#x}");
    }
    let value: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(value["subject"], HOSTILE_SUBJECT);
    assert_eq!(value["articles"][0]["body"], HOSTILE_BODY);
    assert_eq!(value["contact"], "evil\u{1b}[8m@example.com");

    // Human output shows them, escaped, and keeps the body's lines.
    let listed = shell.run(&token, &["tickets", "list"]).await;
    let shown = shell.run(&token, &["tickets", "show", &number]).await;
    for output in [&listed, &shown] {
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout.clone()).unwrap();
        assert_eq!(raw_controls(&text), Vec::<char>::new(), "{text}");
        assert!(
            text.contains("Camera \\u{1b}]0;pwned\\u{7} down\\u{1b}[2J\\u{d}OK \\u{9b}31m"),
            "{text}"
        );
    }
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(
        shown.contains(
            "Hello,\n\tcamera 3 is down.\\u{1b}]0;pwned\\u{7}\\u{d}\n\\u{1b}[2Jbye\\u{9b}"
        ),
        "{shown}"
    );
    assert!(shown.contains("by evil\\u{1b}[8m@example.com"), "{shown}");

    // The clock carries the subject too; it comes once the sla heard of
    // the ticket.
    let mut clock = shell.run(&token, &["sla", "show", &number]).await;
    for _ in 0..100 {
        if clock.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        clock = shell.run(&token, &["sla", "show", &number]).await;
    }
    assert!(clock.status.success(), "{clock:?}");
    let text = String::from_utf8(clock.stdout).unwrap();
    assert_eq!(raw_controls(&text), Vec::<char>::new(), "{text}");
    assert!(text.contains("\\u{1b}]0;pwned\\u{7}"), "{text}");

    // A server's refusal quoting what was typed is shown the same way.
    let refused = shell
        .run(&token, &["tickets", "show", "HL-\u{1b}[2J"])
        .await;
    assert!(!refused.status.success());
    let text = String::from_utf8(refused.stderr).unwrap();
    assert_eq!(raw_controls(&text), Vec::<char>::new(), "{text}");
    shell.stop().await;
}

#[tokio::test]
async fn with_json_even_a_mistyped_command_answers_in_json() {
    let shell = Shell::start().await;
    for args in [
        &[
            "--json",
            "tickets",
            "create",
            "--priority",
            "bogus",
            "--subject",
            "a",
            "--body",
            "b",
        ][..],
        &["tickets", "create", "--subject", "a", "--json"],
        &["tickets", "frobnicate", "--json"],
        &["tickets", "assign", "HL-10001", "--to", " ", "--json"],
    ] {
        let output = shell.run("", args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stderr.is_empty(), "{args:?}: {output:?}");
        let error: Value = serde_json::from_slice(&output.stdout).expect("JSON only");
        assert_eq!(error["code"], "InvalidArgument", "{args:?}");
        assert!(!error["error"].as_str().unwrap().is_empty());
    }
    let text = shell
        .run(
            "",
            &[
                "tickets",
                "create",
                "--priority",
                "bogus",
                "--subject",
                "a",
                "--body",
                "b",
            ],
        )
        .await;
    assert_eq!(text.status.code(), Some(2));
    assert!(text.stdout.is_empty());
    assert!(String::from_utf8_lossy(&text.stderr).contains("unknown priority"));

    // Help is help, --json or not.
    let help = shell.run("", &["--help", "--json"]).await;
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("HOTLINE_SERVER") && help.contains("HOTLINE_TOKEN"),
        "{help}"
    );

    // A failure here, not the server's, has a code too.
    let missing = shell.run("", &["tickets", "list", "--json"]).await;
    assert!(!missing.status.success());
    let error: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(error["code"], "Unauthenticated");
    let token = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let bad_server = shell
        .run_with(
            &token,
            &["tickets", "list", "--json"],
            &[("HOTLINE_SERVER", "http://[::1")],
        )
        .await;
    assert!(!bad_server.status.success());
    let error: Value = serde_json::from_slice(&bad_server.stdout).unwrap();
    assert_eq!(error["code"], "InvalidArgument");
    assert!(
        error["error"].as_str().unwrap().contains("HOTLINE_SERVER"),
        "{error}"
    );

    // host:port, as people write it, is enough.
    let bare = shell
        .run_with(
            &token,
            &["tickets", "list", "--json"],
            &[("HOTLINE_SERVER", &shell.app.grpc_addr.to_string())],
        )
        .await;
    assert!(bare.status.success(), "{bare:?}");
    shell.stop().await;
}

#[tokio::test]
async fn empty_replies_notes_assignees_and_subjects_are_refused() {
    let shell = Shell::start().await;
    let token = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let created = shell
        .json(
            &token,
            &["tickets", "create", "--subject", "Fan", "--body", "noise"],
        )
        .await;
    let number = created["number"].as_str().unwrap();
    for args in [
        ["tickets", "respond", number, "--message", ""],
        ["tickets", "respond", number, "--message", "  \n "],
        ["tickets", "note", number, "--message", ""],
    ] {
        let refused = shell.run(&token, &args).await;
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("needs a message"),
            "{refused:?}"
        );
    }
    let json = shell
        .run(
            &token,
            &["tickets", "respond", number, "--message", "", "--json"],
        )
        .await;
    let error: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(error["code"], "InvalidArgument");
    let shown = shell.json(&token, &["tickets", "show", number]).await;
    assert_eq!(shown["awaiting_response"], true, "the clock still runs");
    assert_eq!(shown["articles"].as_array().unwrap().len(), 1);

    let refused = shell
        .run(&token, &["tickets", "assign", number, "--to", ""])
        .await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("must not be empty"));
    let assigned = shell
        .run(&token, &["tickets", "assign", number, "--to", "bea"])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&assigned.stdout).trim(),
        format!("{number} assigned to bea")
    );
    let unassigned = shell.run(&token, &["tickets", "unassign", number]).await;
    assert_eq!(
        String::from_utf8_lossy(&unassigned.stdout).trim(),
        format!("{number} unassigned")
    );
    assert_eq!(
        shell.json(&token, &["tickets", "show", number]).await["assignee"],
        Value::Null
    );

    let raised = shell
        .run(&token, &["tickets", "priority", number, "urgent"])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&raised.stdout).trim(),
        format!("{number} is now urgent priority")
    );
    assert_eq!(
        shell.json(&token, &["tickets", "show", number]).await["priority"],
        "urgent"
    );

    let nameless = shell
        .run(
            "",
            &["token", "issue", "--role", "agent", "--subject", "  "],
        )
        .await;
    assert!(!nameless.status.success());
    assert!(nameless.stdout.is_empty(), "no token for nobody");
    shell.stop().await;
}

#[tokio::test]
async fn acknowledging_a_ticket_that_does_not_exist_says_so() {
    let shell = Shell::start().await;
    let token = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let unknown = shell.run(&token, &["pages", "ack", "HL-424242"]).await;
    assert!(!unknown.status.success());
    let text = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        text.contains("does not exist") && !text.contains("breach"),
        "{text}"
    );
    let json = shell
        .run(&token, &["pages", "ack", "HL-424242", "--json"])
        .await;
    let error: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(error["code"], "NotFound");

    let created = shell
        .json(
            &token,
            &["tickets", "create", "--subject", "Fan", "--body", "noise"],
        )
        .await;
    let number = created["number"].as_str().unwrap();
    let json = shell.run(&token, &["pages", "ack", number, "--json"]).await;
    let error: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(error["code"], "FailedPrecondition", "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("has no breach"),
        "{error}"
    );
    shell.stop().await;
}

#[tokio::test]
async fn a_manager_sets_and_removes_response_targets_from_the_shell() {
    let shell = Shell::start().await;
    let manager = shell.env.token("mia", hotline_kit::auth::Role::Manager);
    let agent = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let set = shell
        .json(
            &manager,
            &[
                "sla",
                "policy",
                "set",
                "--priority",
                "high",
                "--target",
                "1h",
            ],
        )
        .await;
    assert_eq!(set["priority"], "high");
    assert_eq!(set["target_seconds"], 3600);
    assert_eq!(set["custom"], true);

    let listed = shell.run(&agent, &["sla", "policy", "list"]).await;
    let text = String::from_utf8(listed.stdout).unwrap();
    let high = text.lines().find(|l| l.starts_with("high")).unwrap();
    assert!(high.contains("1h") && high.contains("policy"), "{text}");
    let low = text.lines().find(|l| l.starts_with("low")).unwrap();
    assert!(low.contains("2h") && low.contains("warranty"), "{text}");

    let refused = shell
        .run(
            &agent,
            &[
                "sla",
                "policy",
                "set",
                "--priority",
                "low",
                "--target",
                "1h",
                "--json",
            ],
        )
        .await;
    let error: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(error["code"], "PermissionDenied");
    let weaker = shell
        .run(
            &manager,
            &[
                "sla",
                "policy",
                "set",
                "--priority",
                "low",
                "--target",
                "3h",
            ],
        )
        .await;
    assert!(!weaker.status.success());
    assert!(String::from_utf8_lossy(&weaker.stderr).contains("warranty"));

    let deleted = shell
        .json(&manager, &["sla", "policy", "delete", "--priority", "high"])
        .await;
    let high = deleted
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["priority"] == "high")
        .unwrap();
    assert_eq!(high["custom"], false);
    assert_eq!(high["target_seconds"], 7200);
    shell.stop().await;
}

#[tokio::test]
async fn a_clean_shutdown_logs_no_error() {
    let env = TestEnv::new().await.unwrap();
    env.migrate(&hotline::fleet::modules()).await.unwrap();
    let (grpc, http) = (common::free_port(), common::free_port());
    let log_path = std::env::temp_dir().join(format!("hotline-{}.log", uuid::Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    // As it runs by default, not with the tests' quieter filter.
    let filter = hotline_kit::config::LogConfig::default().filter;
    let mut desk = common::serve_logging_to(
        &env,
        grpc,
        http,
        &[("HOTLINE_LOG__FILTER", &filter)],
        log.into(),
    )
    .await;
    // Work in flight for every module: a ticket, its events, its clock.
    let created = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["tickets", "create", "--subject", "Fan", "--body", "noise"])
        .env("HOTLINE_SERVER", grpc.to_string())
        .env(
            "HOTLINE_TOKEN",
            env.token("ada", hotline_kit::auth::Role::Agent),
        )
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let pid = desk.id().unwrap().to_string();
    let signalled = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(signalled.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), desk.wait())
        .await
        .expect("it stops within 30 s")
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).unwrap();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("stopping"), "{log}");
    assert!(!log.contains(" ERROR "), "{log}");
    env.cleanup_bus(&[]).await.unwrap();
}

/// An event `sla` cannot apply (its ticket id is no UUID), published as
/// `tickets` would publish it.
async fn publish_poison(env: &TestEnv) -> hotline_proto::events::v1::EventEnvelope {
    use hotline_proto::events::v1::{TicketCreated, event_envelope::Payload};
    let mut event = hotline_kit::bus::outbox::envelope(
        "ticket.created",
        None,
        chrono::Utc::now(),
        Payload::TicketCreated(TicketCreated::default()),
    );
    event.ticket_id = "not-a-ticket".into();
    let pool = env.pool("tickets").unwrap();
    let mut tx = pool.begin().await.unwrap();
    hotline_kit::bus::outbox::enqueue(&mut tx, std::slice::from_ref(&event))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    event
}

impl Shell {
    /// `deadletters list --json ...` once it lists `count` dead letters.
    async fn await_dead_letters(&self, token: &str, args: &[&str], count: usize) -> Vec<Value> {
        let mut command = vec!["deadletters", "list"];
        command.extend_from_slice(args);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let listed = self.json(token, &command).await;
            let letters = listed.as_array().unwrap().clone();
            if letters.len() >= count {
                return letters;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} dead letters listed: {listed}",
                letters.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn an_admin_lists_and_replays_dead_letters_from_the_shell() {
    let mut env = TestEnv::new().await.unwrap();
    env.config.bus.max_attempts = 1;
    let shell = Shell::start_with(env).await;
    let admin = shell.env.token("root", hotline_kit::auth::Role::Admin);
    let poison = publish_poison(&shell.env).await;

    // sla, contracts and dispatch consume it: each gives up on it on its own.
    let each = shell.await_dead_letters(&admin, &[], 3).await;
    let mut services: Vec<&str> = each
        .iter()
        .map(|l| l["service"].as_str().unwrap())
        .collect();
    services.sort_unstable();
    assert_eq!(services, ["contracts", "dispatch", "sla"], "{each:?}");
    let letters = shell
        .await_dead_letters(&admin, &["--service", "sla"], 1)
        .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["service"], "sla");
    assert_eq!(letter["event_id"], poison.id.as_str());
    assert_eq!(letter["event_type"], "ticket.created");
    assert_eq!(letter["ticket_id"], "not-a-ticket");
    assert_eq!(letter["attempts"], 1);
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .contains("ticket id is not a UUID"),
        "{letter}"
    );
    assert!(letter["dead_lettered_at"].is_string() && letter["replayed_at"].is_null());
    let id = letter["id"].as_i64().unwrap().to_string();

    let human = shell.run(&admin, &["deadletters", "list"]).await;
    let table = String::from_utf8_lossy(&human.stdout);
    assert!(
        table.starts_with("ID")
            && table.contains("not-a-ticket")
            && table.contains("ticket id is not a UUID"),
        "{table}"
    );

    let agent = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let refused = shell.run(&agent, &["deadletters", "list", "--json"]).await;
    assert!(!refused.status.success());
    let error: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(error["code"], "PermissionDenied");

    let replayed = shell
        .json(&admin, &["deadletters", "replay", &id, "--service", "sla"])
        .await;
    assert_eq!(replayed["replayed"][0]["event_id"], poison.id.as_str());
    assert!(replayed["replayed"][0]["replayed_at"].is_string());
    // Nothing fixed the cause: sla alone gets it again, and gives up afresh.
    let again = shell
        .await_dead_letters(&admin, &["--service", "sla"], 1)
        .await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["service"], "sla");
    assert_eq!(again[0]["event_id"], poison.id.as_str());
    assert_eq!(again[0]["attempts"], 1, "attempts count afresh");
    assert_ne!(again[0]["id"], letter["id"]);
    let everything = shell
        .json(
            &admin,
            &["deadletters", "list", "--all", "--service", "sla"],
        )
        .await;
    let replayed_by: Vec<&Value> = everything
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["replayed_by"])
        .collect();
    assert_eq!(
        replayed_by,
        [&Value::Null, &Value::from("root")],
        "newest first"
    );

    let twice = shell
        .json(&admin, &["deadletters", "replay", &id, "--service", "sla"])
        .await;
    assert_eq!(
        twice["replayed"],
        Value::Array(vec![]),
        "replayed once only"
    );
    assert_eq!(twice["already_replayed"][0]["id"], letter["id"]);

    let all = shell
        .json(
            &admin,
            &["deadletters", "replay", "--all", "--service", "sla"],
        )
        .await;
    assert_eq!(all["replayed"].as_array().unwrap().len(), 1);
    assert_eq!(all["replayed"][0]["id"], again[0]["id"]);
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

#[tokio::test]
async fn an_agent_sees_whom_a_ticket_is_for_and_lists_a_customers_tickets() {
    let shell = Shell::start().await;
    let manager = shell.env.token("mia", hotline_kit::auth::Role::Manager);
    let accepted = (chrono::Utc::now().date_naive() - chrono::Months::new(1)).to_string();
    let steps: [&[&str]; 5] = [
        &["customers", "add", "--name", "Acme"],
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
            &accepted,
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
    ];
    for step in steps {
        shell.json(&manager, step).await;
    }
    let agent = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let mut numbers = Vec::new();
    for (contact, subject) in [
        ("ann@acme.example", "No picture"),
        ("stranger@nowhere.example", "Help please"),
    ] {
        let created = shell
            .json(
                &agent,
                &[
                    "tickets",
                    "create",
                    "--subject",
                    subject,
                    "--body",
                    "Since 02:00",
                    "--contact",
                    contact,
                ],
            )
            .await;
        numbers.push(created["number"].as_str().unwrap().to_owned());
    }
    // The entitlement arrives as the tickets' next version.
    let shown = |number: String| {
        let shell = &shell;
        let agent = agent.clone();
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let shown = shell.json(&agent, &["tickets", "show", &number]).await;
                if !shown["coverage"].is_null() {
                    return shown;
                }
                assert!(tokio::time::Instant::now() < deadline, "{shown}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let ann = shown(numbers[0].clone()).await;
    assert_eq!(ann["customer"]["name"], "Acme");
    assert!(ann["customer"]["id"].is_string());
    assert_eq!(ann["project"]["name"], "HQ");
    assert_eq!(ann["asset"], "CAM-1", "the contact's only asset");
    assert_eq!(ann["coverage"], "warranty");
    assert!(ann["covered_until"].is_string());
    assert_eq!(ann["version"], 2);
    let stranger = shown(numbers[1].clone()).await;
    assert_eq!(stranger["customer"], Value::Null);
    assert_eq!(stranger["project"], Value::Null);
    assert_eq!(stranger["coverage"], "none");
    assert_eq!(stranger["coverage_reason"], "unknown sender");

    let text = shell.run(&agent, &["tickets", "show", &numbers[0]]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("customer Acme, project HQ, asset CAM-1\ncoverage warranty until "),
        "{text}"
    );
    let text = shell.run(&agent, &["tickets", "show", &numbers[1]]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("customer -, project -, asset -\ncoverage none: unknown sender"),
        "{text}"
    );

    let by_name = shell
        .json(&agent, &["tickets", "list", "--customer", "acme"])
        .await;
    let listed: Vec<&str> = by_name
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["number"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [numbers[0].as_str()]);
    let id = ann["customer"]["id"].as_str().unwrap();
    let by_id = shell
        .json(&agent, &["tickets", "list", "--customer", id])
        .await;
    assert_eq!(by_id, by_name);
    let nobody = shell
        .json(&agent, &["tickets", "list", "--customer", "Globex"])
        .await;
    assert_eq!(nobody, serde_json::json!([]));
    shell.stop().await;
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("hotline-{}.csv", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn a_manager_imports_the_installed_base_from_a_csv_file_once() {
    let shell = Shell::start().await;
    let manager = shell.env.token("mia", hotline_kit::auth::Role::Manager);
    let agent = shell.env.token("ada", hotline_kit::auth::Role::Agent);
    let base = TempFile::new(
        "customer,branch,branch_email,branch_timezone,region,contact_name,contact_email,contact_phone,project,accepted_on,lat,lng,model,family,serial,price,currency,firmware\n\
         Acme,Berlin,berlin@acme.example,Europe/Berlin,north,Ann Lee,ann@acme.example,+49 30 1234567,HQ,2024-01-15,52.52,13.405,DS-2CD2143,camera,CAM-1,6000,EUR,5.7.3\n\
         Acme,Berlin,berlin@acme.example,Europe/Berlin,north,Ann Lee,ann@acme.example,+49 30 1234567,HQ,2024-01-15,52.52,13.405,DS-7608,nvr,NVR-1,4000.00,EUR,4.1\n"
            .as_bytes(),
    );
    let args = ["import", "installed-base", "--file", base.path()];

    let refused = shell.run(&agent, &args).await;
    assert!(!refused.status.success(), "agents read, managers import");

    let imported = shell.json(&manager, &args).await;
    assert_eq!(imported["rows"], 2);
    assert_eq!(imported["changed"], true);
    assert_eq!(
        imported["assets"],
        serde_json::json!({"created": 2, "updated": 0, "unchanged": 0})
    );
    assert_eq!(imported["customers"]["created"], 1);
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
    assert_eq!(caller["customer"]["name"], "Acme", "{caller}");
    assert_eq!(caller["coverage"], "warranty");

    let again = shell.run(&manager, &args).await;
    assert!(again.status.success());
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        said.contains("all 2 rows are recorded already; nothing changed"),
        "{said}"
    );
    assert!(
        said.contains("assets: 0 created, 0 updated, 2 unchanged"),
        "{said}"
    );

    // A refused file: every fault by line, on stderr or in the JSON error;
    // exit non-zero, nothing written.
    let bad = TempFile::new(
        "customer,branch,branch_email,branch_timezone,region,contact_name,contact_email,contact_phone,project,accepted_on,lat,lng,model,family,serial,price,currency,firmware\n\
         Globex,Main,main@globex.example,Europe/Berlin,,,,,Plant,2024-01-01,,,DS-7608,,CAM-1,100,EUR,\n\
         Globex,Main,main@globex.example,Europe/Berlin,,,,,Plant,2024-01-01,,,DS-7608,,G-1,12\x1b[2J,EUR,\n"
            .as_bytes(),
    );
    let bad_args = ["import", "installed-base", "--file", bad.path()];
    let human = shell.run(&manager, &bad_args).await;
    assert!(!human.status.success());
    let told = String::from_utf8_lossy(&human.stderr);
    assert!(
        told.contains("was refused, nothing was written: 2 faults"),
        "{told}"
    );
    assert!(
        told.contains("line 2: serial \"CAM-1\" is already recorded in project \"HQ\" of \"Acme\""),
        "{told}"
    );
    assert!(told.contains("line 3: price"), "{told}");
    assert!(!told.contains('\x1b'), "escaped, never obeyed: {told}");
    let mut json_args = bad_args.to_vec();
    json_args.push("--json");
    let json = shell.run(&manager, &json_args).await;
    assert!(!json.status.success());
    let error: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(error["code"], "InvalidArgument");
    assert_eq!(error["error_count"], 2);
    assert_eq!(error["errors"][0]["line"], 2);
    assert_eq!(error["errors"][1]["line"], 3);
    let listed = shell.json(&agent, &["customers", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "no Globex: {listed}");

    let missing = shell
        .run(
            &manager,
            &[
                "import",
                "installed-base",
                "--file",
                "/nonexistent/base.csv",
                "--json",
            ],
        )
        .await;
    assert!(!missing.status.success());
    let error: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(error["code"], "InvalidArgument");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("cannot read /nonexistent/base.csv"),
        "{error}"
    );
    shell.stop().await;
}
