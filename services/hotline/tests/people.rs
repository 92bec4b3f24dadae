//! The directory of people and presence end to end: the real `hotline`
//! binary against the whole fleet — a manager adds the desk's people, an
//! agent whose token names her email says she is online, and her presence
//! lapses when her heartbeats stop.

use std::{process::Output, time::Duration};

use hotline_kit::testing::{TestApp, TestEnv};
use serde_json::{Value, json};

struct Shell {
    env: TestEnv,
    app: TestApp,
}

impl Shell {
    async fn start() -> Self {
        let mut env = TestEnv::new().await.unwrap();
        env.config.set("dispatch", "heartbeat_ttl", "1s");
        let app = env.start(&hotline::fleet::modules()).await.unwrap();
        Self { env, app }
    }

    async fn run(&self, token: &str, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
            .args(args)
            .arg("--json")
            .env("HOTLINE_SERVER", format!("http://{}", self.app.grpc_addr))
            .env("HOTLINE_AUTH__SECRET", self.env.config.auth.secret.expose())
            .env("HOTLINE_TOKEN", token)
            .output()
            .await
            .unwrap()
    }

    /// Runs `hotline args... --json`: whether it succeeded, and its JSON.
    async fn json(&self, token: &str, args: &[&str]) -> (bool, Value) {
        let output = self.run(token, args).await;
        let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!(
                "hotline {args:?} printed no JSON: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.success(), value)
    }

    async fn ok(&self, token: &str, args: &[&str]) -> Value {
        let (ok, value) = self.json(token, args).await;
        assert!(ok, "hotline {args:?}: {value}");
        value
    }

    async fn token(&self, subject: &str, role: &str) -> String {
        let issued = self
            .ok(
                "",
                &["token", "issue", "--role", role, "--subject", subject],
            )
            .await;
        issued["token"].as_str().unwrap().to_owned()
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&[]).await.unwrap();
    }
}

#[tokio::test]
async fn a_manager_builds_the_directory_and_an_agent_comes_online_from_the_shell() {
    let shell = Shell::start().await;
    let manager = shell.token("mia@desk.example", "manager").await;
    let ana = shell
        .ok(
            &manager,
            &[
                "people",
                "add",
                "--name",
                "Ana Díaz",
                "--email",
                "Ana@Desk.example",
                "--role",
                "agent",
                "--role",
                "dispatcher",
                "--team",
                "first line",
                "--skills",
                "nvr:3,lang:de",
                "--regions",
                "north,South",
                "--capacity",
                "5",
            ],
        )
        .await;
    assert_eq!(ana["name"], "Ana Díaz");
    assert_eq!(ana["email"], "ana@desk.example");
    assert_eq!(ana["roles"], json!(["agent", "dispatcher"]));
    assert_eq!(ana["team"], "first line");
    assert_eq!(ana["skills"], json!({ "lang:de": 1, "nvr": 3 }));
    assert_eq!(ana["regions"], json!(["north", "south"]));
    assert_eq!(ana["capacity"], 5);
    assert_eq!(ana["presence"], "offline");
    let tom = shell
        .ok(
            &manager,
            &[
                "people",
                "add",
                "--name",
                "Tom",
                "--email",
                "tom@desk.example",
                "--role",
                "technician",
                "--skills",
                "ptz:4",
                "--home-lat",
                "52.52",
                "--home-lng",
                "-13.40",
                "--timezone",
                "Europe/Berlin",
            ],
        )
        .await;
    assert_eq!(tom["home"], json!({ "lat": 52.52, "lng": -13.40 }));
    assert_eq!(tom["capacity"], 10, "the default");

    let agent = shell.token("ana@desk.example", "agent").await;
    let (ok, refused) = shell
        .json(
            &agent,
            &[
                "people",
                "add",
                "--name",
                "Eve",
                "--email",
                "eve@desk.example",
                "--role",
                "agent",
            ],
        )
        .await;
    assert!(!ok);
    assert_eq!(refused["code"], "PermissionDenied", "{refused}");
    let (ok, refused) = shell
        .json(
            &manager,
            &[
                "people",
                "add",
                "--name",
                "Eve",
                "--email",
                "eve@desk.example",
                "--role",
                "agent",
                "--skills",
                "nvr=3",
            ],
        )
        .await;
    assert!(!ok);
    assert_eq!(refused["code"], "InvalidArgument");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("write name or name:level"),
        "{refused}"
    );

    let online = shell.ok(&agent, &["presence", "set", "online"]).await;
    assert_eq!(online["email"], "ana@desk.example", "the token's subject");
    assert_eq!(online["presence"], "online");
    let listed = shell.ok(&agent, &["people", "list", "--online"]).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["Ana Díaz"]);
    let technicians = shell
        .ok(&agent, &["people", "list", "--role", "technician"])
        .await;
    assert_eq!(technicians[0]["email"], "tom@desk.example");

    // Her heartbeat stops: within the 1 s TTL she reads offline, though
    // she still says online.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let shown = shell
            .ok(&manager, &["people", "show", "ANA@desk.example"])
            .await;
        if shown["presence"] == "offline" {
            assert_eq!(shown["stated_presence"], "online");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = shell.ok(&agent, &["presence", "heartbeat"]).await;
    assert_eq!(back["presence"], "online");

    let updated = shell
        .ok(
            &manager,
            &[
                "people",
                "update",
                ana["id"].as_str().unwrap(),
                "--capacity",
                "8",
                "--team",
                "",
            ],
        )
        .await;
    assert_eq!(updated["capacity"], 8);
    assert_eq!(updated["team"], Value::Null);
    assert_eq!(updated["skills"], ana["skills"], "what was not named stays");
    let gone = shell
        .ok(&manager, &["people", "deactivate", "tom@desk.example"])
        .await;
    assert_eq!(gone["active"], false);
    let active = shell.ok(&manager, &["people", "list"]).await;
    assert_eq!(active.as_array().unwrap().len(), 1);
    let everyone = shell.ok(&manager, &["people", "list", "--all"]).await;
    assert_eq!(everyone.as_array().unwrap().len(), 2);
    shell.stop().await;
}
