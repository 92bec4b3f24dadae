//! Routing end to end: the real `hotline` binary against the whole fleet.
//! A manager imports a customer's installed base and adds the desk's
//! agents; the agents come online by their own tokens; the customer's
//! tickets reach the agent with the asset's skill in the branch's region,
//! and a ticket nobody can take says why until someone who can comes
//! online.

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
        env.config.set("intake", "country_code", "49");
        env.config
            .set("dispatch", "family_skills", "nvr=recorders,camera=camera");
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

    /// Runs `hotline args... --json`, which must succeed: its JSON.
    async fn ok(&self, token: &str, args: &[&str]) -> Value {
        let output = self.run(token, args).await;
        let value: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!(
                "hotline {args:?} printed no JSON: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert!(output.status.success(), "hotline {args:?}: {value}");
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

    /// Adds an agent with `skills` in `regions`.
    async fn agent(&self, manager: &str, email: &str, skills: &str, regions: &str) {
        let name = email.split('@').next().unwrap();
        self.ok(
            manager,
            &[
                "people",
                "add",
                "--name",
                name,
                "--email",
                email,
                "--role",
                "agent",
                "--skills",
                skills,
                "--regions",
                regions,
            ],
        )
        .await;
    }

    /// Brings `email` online with their own token.
    async fn online(&self, email: &str) {
        let own = self.token(email, "agent").await;
        let person = self.ok(&own, &["presence", "set", "online"]).await;
        assert_eq!(person["presence"], "online");
    }

    /// A ticket from the customer's contact naming `serial`: its number.
    async fn report(&self, agent: &str, serial: &str) -> String {
        let created = self
            .ok(
                agent,
                &[
                    "tickets",
                    "create",
                    "--subject",
                    &format!("{serial} is down"),
                    "--body",
                    "Nothing since this morning.",
                    "--contact",
                    "ann@acme.example",
                ],
            )
            .await;
        created["number"].as_str().unwrap().to_owned()
    }

    /// Whom `number` is assigned to, once someone is (10 s at most).
    async fn assignee(&self, agent: &str, number: &str) -> String {
        for _ in 0..100 {
            let ticket = self.ok(agent, &["tickets", "show", number]).await;
            if let Some(assignee) = ticket["assignee"].as_str() {
                return assignee.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{number} never assigned: {}",
            self.ok(agent, &["dispatch", "queue"]).await
        );
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&[]).await.unwrap();
    }
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
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
async fn tickets_from_an_imported_customer_reach_the_agent_with_the_skill_in_the_region() {
    let shell = Shell::start().await;
    let manager = shell.token("mia@desk.example", "manager").await;
    let desk = shell.token("ivy@desk.example", "agent").await;
    let base = TempFile::new(
        "customer,branch,branch_email,branch_timezone,region,contact_name,contact_email,contact_phone,project,accepted_on,lat,lng,model,family,serial,price,currency,firmware\n\
         Acme,Hamburg,hh@acme.example,Europe/Berlin,North,Ann Lee,ann@acme.example,+49 40 1234567,HQ,2025-06-01,53.55,9.99,DS-7608,nvr,NVR-1,4000,EUR,4.1\n\
         Acme,Hamburg,hh@acme.example,Europe/Berlin,North,Ann Lee,ann@acme.example,+49 40 1234567,HQ,2025-06-01,53.55,9.99,DS-2CD2143,camera,CAM-1,600,EUR,5.7\n\
         Acme,Hamburg,hh@acme.example,Europe/Berlin,North,Ann Lee,ann@acme.example,+49 40 1234567,HQ,2025-06-01,53.55,9.99,DS-2DE4425,ptz,PTZ-1,900,EUR,5.6\n",
    );
    shell
        .ok(
            &manager,
            &["import", "installed-base", "--file", base.path()],
        )
        .await;
    shell
        .agent(&manager, "ana@desk.example", "recorders:3", "north")
        .await;
    shell
        .agent(&manager, "bo@desk.example", "recorders:2,camera", "south")
        .await;
    shell
        .agent(&manager, "cy@desk.example", "camera:2", "north,east")
        .await;
    for email in ["ana@desk.example", "bo@desk.example", "cy@desk.example"] {
        shell.online(email).await;
    }

    let nvr = shell.report(&desk, "NVR-1").await;
    assert_eq!(shell.assignee(&desk, &nvr).await, "ana@desk.example");
    let camera = shell.report(&desk, "CAM-1").await;
    assert_eq!(shell.assignee(&desk, &camera).await, "cy@desk.example");
    let why = shell.ok(&desk, &["dispatch", "explain", &nvr]).await;
    assert_eq!(why["assignee"], "ana@desk.example");
    assert_eq!(why["skills"], json!(["recorders"]));
    assert_eq!(why["region"], "north");
    assert_eq!(why["waiting"], false);
    let ana = shell
        .ok(&desk, &["people", "show", "ana@desk.example"])
        .await;
    assert_eq!(ana["assigned"], 1);
    assert!(ana["last_assigned_at"].is_string());

    // Nobody online has ptz: the ticket waits and says why.
    let ptz = shell.report(&desk, "PTZ-1").await;
    let mut queue = Value::Null;
    for _ in 0..100 {
        queue = shell.ok(&desk, &["dispatch", "queue"]).await;
        if queue[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("no one"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queue[0]["number"], ptz.as_str(), "{queue}");
    assert_eq!(
        queue[0]["reason"],
        "no one online with skill ptz in region north"
    );
    let why = shell.ok(&desk, &["dispatch", "explain", &ptz]).await;
    assert_eq!(why["assignee"], Value::Null);
    assert_eq!(why["waiting"], true);

    shell.agent(&manager, "di@desk.example", "ptz", "").await;
    shell.online("di@desk.example").await;
    assert_eq!(shell.assignee(&desk, &ptz).await, "di@desk.example");
    assert_eq!(shell.ok(&desk, &["dispatch", "queue"]).await, json!([]));

    let unknown = shell.run(&desk, &["dispatch", "explain", "HL-99999"]).await;
    assert!(!unknown.status.success());
    let refused: Value = serde_json::from_slice(&unknown.stdout).unwrap();
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("routing has decided nothing")),
        "{refused}"
    );
    shell.stop().await;
}
