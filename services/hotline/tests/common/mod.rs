//! Helpers of the end-to-end tests that run `hotline serve` as its own
//! process, so it can be killed with SIGKILL.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use hotline_kit::testing::TestEnv;
use serde_json::Value;

/// A free loopback port (bound, read, released).
#[allow(dead_code)] // each test binary uses a part of this module
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[allow(dead_code)] // each test binary uses a part of this module
/// `hotline serve` (every module) in `env`, listening on `grpc` and `http`,
/// with `settings` as more environment; returns once it is ready.
pub async fn serve(
    env: &TestEnv,
    grpc: SocketAddr,
    http: SocketAddr,
    settings: &[(&str, &str)],
) -> tokio::process::Child {
    serve_logging_to(env, grpc, http, settings, std::process::Stdio::inherit()).await
}

#[allow(dead_code)] // each test binary uses a part of this module
/// [`serve`], its log (standard error) going to `log`.
pub async fn serve_logging_to(
    env: &TestEnv,
    grpc: SocketAddr,
    http: SocketAddr,
    settings: &[(&str, &str)],
    log: std::process::Stdio,
) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .arg("serve")
        .env("HOTLINE_DATABASE_URL", env.config.database_url.expose())
        .env("HOTLINE_AMQP_URL", env.config.amqp_url.expose())
        .env("HOTLINE_REDIS_URL", env.config.redis_url.expose())
        .env("HOTLINE_NAMESPACE", &env.config.namespace)
        .env("HOTLINE_GRPC_ADDR", grpc.to_string())
        .env("HOTLINE_HTTP_ADDR", http.to_string())
        .env("HOTLINE_AUTH__SECRET", env.config.auth.secret.expose())
        .env("HOTLINE_INTAKE__SMTP_ADDR", "127.0.0.1:0")
        .env("HOTLINE_LOG__FILTER", "warn")
        .envs(settings.iter().copied())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = format!("http://{http}/readyz");
    for _ in 0..100 {
        let status = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &ready])
            .output()
            .await
            .unwrap();
        if status.stdout == b"200" {
            return child;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("hotline serve did not become ready");
}

/// A local SMTP relay that keeps each message it accepts; it refuses (550)
/// recipients whose address starts with `refused`, and defers (451) the
/// first recipient it is given whose address starts with `deferred`.
#[allow(dead_code)] // each test binary uses a part of this module
pub async fn smtp_sink() -> (Arc<Mutex<Vec<String>>>, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let kept = messages.clone();
    let deferred_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (kept, deferred_once) = (kept.clone(), deferred_once.clone());
            tokio::spawn(async move {
                let (reader, mut writer) = socket.into_split();
                let mut lines = BufReader::new(reader).lines();
                let _ = writer.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(message) = data.as_mut() {
                        if line == "." {
                            kept.lock().unwrap().push(std::mem::take(message));
                            data = None;
                            let _ = writer.write_all(b"250 queued\r\n").await;
                        } else {
                            message.push_str(&line);
                            message.push('\n');
                        }
                        continue;
                    }
                    let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                    let to = |prefix: &str| {
                        verb == "RCPT" && line.to_ascii_lowercase().contains(&format!(":<{prefix}"))
                    };
                    let deferred = to("deferred")
                        && !deferred_once.swap(true, std::sync::atomic::Ordering::SeqCst);
                    let reply: &[u8] = match verb.as_str() {
                        _ if to("refused") => b"550 5.1.1 No such user\r\n",
                        _ if deferred => b"451 4.3.0 Try again later\r\n",
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = writer.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = writer.write_all(reply).await;
                }
            });
        }
    });
    (messages, addr)
}

/// After a fault: waits until `hotline serve` at `grpc` holds `count`
/// tickets, then asserts none more came, each is a different contact's
/// (none doubled) and each has exactly one article (`what`). Returns them.
#[allow(dead_code)] // each test binary uses a part of this module
pub async fn assert_one_ticket_each(
    env: &TestEnv,
    grpc: SocketAddr,
    count: usize,
    what: &str,
) -> Vec<hotline_proto::tickets::v1::Ticket> {
    use hotline_proto::tickets::v1::{
        GetTicketRequest, ListTicketsRequest, ticket_service_client::TicketServiceClient,
    };
    let channel = tonic::service::interceptor::InterceptedService::new(
        hotline_kit::grpc::channel(&format!("http://{grpc}")).unwrap(),
        hotline_kit::grpc::BearerToken::new(&env.token("ana", hotline_kit::auth::Role::Agent))
            .unwrap(),
    );
    let mut tickets = TicketServiceClient::new(channel);
    let list = |mut tickets: TicketServiceClient<_>| async move {
        tickets
            .list_tickets(ListTicketsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tickets
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while list(tickets.clone()).await.len() < count && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Late duplicates would come now.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let listed = list(tickets.clone()).await;
    let mut contacts: Vec<&str> = listed.iter().map(|t| t.contact.as_str()).collect();
    contacts.sort_unstable();
    contacts.dedup();
    assert_eq!(listed.len(), count, "one ticket per {what}, none lost");
    assert_eq!(contacts.len(), count, "none doubled");
    for ticket in &listed {
        let shown = tickets
            .get_ticket(GetTicketRequest {
                ticket: ticket.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(shown.articles.len(), 1, "{}: one {what}", ticket.number);
    }
    listed
}

/// The tickets of `contact` on `app`, each with its articles, once they
/// hold `articles` articles in all (or after 10 s).
#[allow(dead_code)] // each test binary uses a part of this module
pub async fn tickets_of(
    env: &TestEnv,
    app: &hotline_kit::testing::TestApp,
    contact: &str,
    articles: usize,
) -> Vec<hotline_proto::tickets::v1::GetTicketResponse> {
    use hotline_proto::tickets::v1::{
        GetTicketRequest, ListTicketsRequest, ticket_service_client::TicketServiceClient,
    };
    let mut tickets =
        TicketServiceClient::new(app.channel(&env.token("ana", hotline_kit::auth::Role::Agent)));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed = tickets
            .list_tickets(ListTicketsRequest {
                contact: contact.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tickets;
        let mut shown = Vec::new();
        for ticket in listed {
            shown.push(
                tickets
                    .get_ticket(GetTicketRequest { ticket: ticket.id })
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        let total: usize = shown.iter().map(|t| t.articles.len()).sum();
        if total >= articles || tokio::time::Instant::now() > deadline {
            return shown;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Sends `message` from `sender` to `rcpt` through the SMTP server at
/// `smtp`, as a customer's mail server would (Python's smtplib); the
/// server's final code and text.
#[allow(dead_code)] // each test binary uses a part of this module
pub async fn send_mail(smtp: SocketAddr, sender: &str, rcpt: &str, message: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    /// Sends stdin's message with smtplib; prints `{"code": N, "message": M}`.
    const SEND: &str = r#"
import json, smtplib, sys
host, port, sender, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
message = sys.stdin.buffer.read()
try:
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.ehlo("mx.customer.example")
        smtp.sendmail(sender, [rcpt], message)
    print(json.dumps({"code": 250, "message": "ok"}))
except smtplib.SMTPRecipientsRefused as refused:
    code, text = list(refused.recipients.values())[0]
    print(json.dumps({"code": code, "message": text.decode()}))
except smtplib.SMTPResponseException as refused:
    print(json.dumps({"code": refused.smtp_code, "message": refused.smtp_error.decode()}))
"#;
    let mut child = tokio::process::Command::new("python3")
        .args([
            "-c",
            SEND,
            "127.0.0.1",
            &smtp.port().to_string(),
            sender,
            rcpt,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(message.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let reply: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "smtplib printed {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (
        u16::try_from(reply["code"].as_u64().unwrap()).unwrap(),
        reply["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// `curl -X POST url args...`, as a PBX posts its events: the status and
/// the JSON body (null when it is none).
#[allow(dead_code)] // each test binary uses a part of this module
pub async fn post(url: &str, args: &[&str]) -> (u16, Value) {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST", url])
        .args(args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}
