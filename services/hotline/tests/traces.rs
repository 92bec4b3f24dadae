//! One trace per fault, end to end: the whole fleet as its own process,
//! exporting spans over OTLP/gRPC to a receiver this test runs; a mail
//! through real SMTP that breaches (a 1 s target) and pages a local
//! PagerDuty; then an agent's reply from the command line. What an on-call
//! engineer opening the trace must find: one trace from the SMTP session
//! through tickets, sla and pager to the PagerDuty request, and the reply
//! in a trace of its own that links to it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use hotline_kit::{auth::Role, testing::TestEnv};
use hotline_proto::tickets::v1::{ListTicketsRequest, ticket_service_client::TicketServiceClient};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as Attribute,
};
use serde_json::Value;

mod common;

/// One span as the receiver got it, ids in hex.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    /// `SPAN_KIND_*`: 2 server, 3 client, 5 consumer.
    kind: i32,
    /// The trace ids it links to.
    links: Vec<String>,
    /// `STATUS_CODE_*`: 0 unset, 1 ok, 2 error; and the message.
    status: (i32, String),
    attributes: HashMap<String, String>,
    /// `service.name` of the process that sent it.
    service: String,
}

/// A local OpenTelemetry collector: OTLP/gRPC in, every span kept.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let text = |value: &Option<Attribute>| match value {
            Some(Attribute::StringValue(s)) => s.clone(),
            Some(Attribute::IntValue(i)) => i.to_string(),
            Some(Attribute::BoolValue(b)) => b.to_string(),
            other => format!("{other:?}"),
        };
        let mut kept = Vec::new();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value.as_ref().and_then(|v| v.value.clone())))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                kept.push(Span {
                    name: span.name,
                    trace: hex::encode(&span.trace_id),
                    id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    kind: span.kind,
                    links: span
                        .links
                        .iter()
                        .map(|l| hex::encode(&l.trace_id))
                        .collect(),
                    status: span.status.map(|s| (s.code, s.message)).unwrap_or_default(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| {
                            (
                                a.key.clone(),
                                text(&a.value.as_ref().and_then(|v| v.value.clone())),
                            )
                        })
                        .collect(),
                    service: service.clone(),
                });
            }
        }
        self.spans.lock().unwrap().extend(kept);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (20 s at most) until `done` holds for the spans received.
    async fn wait_until(&self, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An event PagerDuty received, and its `traceparent` header.
type Received = (Value, Option<String>);

/// A local PagerDuty Events API v2 keeping each event with its
/// `traceparent` header.
#[derive(Clone, Default)]
struct PagerDuty {
    received: Arc<Mutex<Vec<Received>>>,
}

impl PagerDuty {
    async fn start() -> (Self, SocketAddr) {
        let pagerduty = Self::default();
        let router = Router::new()
            .route("/v2/enqueue", post(enqueue))
            .with_state(pagerduty.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (pagerduty, addr)
    }

    /// The `traceparent` of the first event of `action`, once it came (20 s
    /// at most).
    async fn traceparent_of(&self, action: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .received
                .lock()
                .unwrap()
                .iter()
                .find(|(body, _)| body["event_action"] == action)
                .map(|(_, traceparent)| traceparent.clone());
            match found {
                Some(traceparent) => return traceparent,
                None if tokio::time::Instant::now() > deadline => {
                    panic!("PagerDuty got no {action}")
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

async fn enqueue(State(pd): State<PagerDuty>, headers: HeaderMap, body: String) -> StatusCode {
    let traceparent = headers
        .get("traceparent")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    pd.received.lock().unwrap().push((body, traceparent));
    StatusCode::ACCEPTED
}

/// Sends one mail over SMTP, as a mail server would; the final reply code.
async fn send_mail(smtp: SocketAddr, message: &str) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (reader, mut writer) = tokio::net::TcpStream::connect(smtp)
        .await
        .unwrap()
        .into_split();
    let mut reader = BufReader::new(reader);
    let mut code = 0;
    let mut step = async |say: &[u8]| {
        if !say.is_empty() {
            writer.write_all(say).await.unwrap();
        }
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
    };
    for say in [
        &b""[..],
        b"EHLO mx.customer.example\r\n",
        b"MAIL FROM:<ops@customer.example>\r\n",
        b"RCPT TO:<help@support.example>\r\n",
        b"DATA\r\n",
        message.as_bytes(),
    ] {
        code = step(say).await;
    }
    assert_eq!(step(b"QUIT\r\n").await, 221);
    code
}

/// The trace id in a `traceparent` (`00-<trace>-<span>-<flags>`), and its
/// span id.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_mail_that_breaches_and_pages_is_one_trace_and_its_answer_links_to_it() {
    let (collector, otlp) = Collector::start().await;
    let (pagerduty, pd) = PagerDuty::start().await;
    let env = TestEnv::new().await.unwrap();
    hotline_kit::supervisor::migrate(&env.config, &hotline::fleet::modules())
        .await
        .unwrap();
    let (grpc, http, smtp) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let log_path = std::env::temp_dir().join(format!("hotline-{}.log", uuid::Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut desk = common::serve_logging_to(
        &env,
        grpc,
        http,
        &[
            // The log quiet: traces are kept whatever the log shows.
            ("HOTLINE_LOG__FILTER", "warn"),
            ("HOTLINE_INTAKE__SMTP_ADDR", &smtp.to_string()),
            ("HOTLINE_INTAKE__DOMAINS", "support.example"),
            ("HOTLINE_SLA__RESPONSE_TARGET", "1s"),
            (
                "HOTLINE_PAGER__PAGERDUTY_ROUTING_KEY",
                "R0UT1NGKEY0123456789abcdefabcdef",
            ),
            (
                "HOTLINE_PAGER__PAGERDUTY_URL",
                &format!("http://{pd}/v2/enqueue"),
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{otlp}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        log.into(),
    )
    .await;

    // The fault: a mail, accepted.
    let message = "From: Ops <ops@customer.example>\r\nTo: help@support.example\r\n\
                   Subject: Camera 3 dark\r\nMessage-ID: <m1.trace@customer.example>\r\n\r\n\
                   The NVR lost camera 3.\r\n.\r\n";
    assert_eq!(send_mail(smtp, message).await, 250);
    // Nobody answers within a second: PagerDuty is woken.
    let trigger = pagerduty.traceparent_of("trigger").await;
    let trigger = trigger.expect("the trigger carries a traceparent");
    let (fault, trigger_span) = ids(&trigger);

    // The agent answers from the command line, and looks for a ticket that
    // is not there (a failed call).
    let agent = env.token("ana", Role::Agent);
    let mut tickets =
        TicketServiceClient::new(tonic::service::interceptor::InterceptedService::new(
            hotline_kit::grpc::channel(&format!("http://{grpc}")).unwrap(),
            hotline_kit::grpc::BearerToken::new(&agent).unwrap(),
        ));
    let listed = tickets
        .list_tickets(ListTicketsRequest {
            contact: "ops@customer.example".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let cli = |args: &'static [&'static str], number: Option<String>| {
        let agent = agent.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
                .args(args)
                .args(number)
                .env("HOTLINE_SERVER", grpc.to_string())
                .env("HOTLINE_TOKEN", agent)
                .output()
                .await
                .unwrap()
        }
    };
    let answered = cli(
        &[
            "tickets",
            "respond",
            "--message",
            "A technician is on the way",
        ],
        Some(listed[0].number.clone()),
    )
    .await;
    assert!(answered.status.success(), "{answered:?}");
    let missing = cli(&["tickets", "show", "HL-999999"], None).await;
    assert!(!missing.status.success(), "{missing:?}");
    let resolve = pagerduty.traceparent_of("resolve").await;
    let resolve = resolve.expect("the resolve carries a traceparent");
    let (answer, resolve_span) = ids(&resolve);

    let spans = collector
        .wait_until(|spans| {
            let has =
                |name: &str, trace: &str| spans.iter().any(|s| s.name == name && s.trace == trace);
            has("smtp.session", &fault)
                && has("pager.deliver pagerduty", &fault)
                && has("pager.deliver pagerduty", &answer)
                && spans.iter().any(|s| s.name == "tickets.GetTicket")
        })
        .await;
    desk.kill().await.unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    std::fs::remove_file(&log_path).ok();
    let trace_of =
        |trace: &str| -> Vec<&Span> { spans.iter().filter(|s| s.trace == trace).collect() };
    let in_fault = trace_of(&fault);
    let names: Vec<&str> = in_fault.iter().map(|s| s.name.as_str()).collect();
    let shown = format!("fault trace {fault}: {names:?}\nlog:\n{log}");

    // One trace, from the SMTP session to the PagerDuty request.
    let session = in_fault
        .iter()
        .find(|s| s.name == "smtp.session")
        .unwrap_or_else(|| panic!("no SMTP session in {shown}"));
    assert!(
        session.parent.chars().all(|c| c == '0'),
        "the root: {session:?}"
    );
    assert_eq!(session.kind, 2, "a server span: {session:?}");
    let mail = in_fault
        .iter()
        .find(|s| s.name == "smtp.message")
        .unwrap_or_else(|| panic!("no SMTP message in {shown}"));
    assert_eq!(mail.parent, session.id, "{mail:?}");
    assert_eq!(
        mail.attributes.get("smtp.reply_code").map(String::as_str),
        Some("250")
    );
    let forwarded = in_fault
        .iter()
        .find(|s| s.name == "consume intake.mail_received")
        .unwrap_or_else(|| panic!("intake.mail_received not in {shown}"));
    assert_eq!(
        forwarded.parent, mail.id,
        "the mail's event carries its span"
    );
    assert_eq!(forwarded.kind, 5, "a consumer span: {forwarded:?}");
    for name in [
        "tickets.CreateTicket",
        "consume ticket.created",
        "sla.fire",
        "consume sla.escalated",
        "pager.deliver pagerduty",
    ] {
        assert!(names.contains(&name), "{name} missing in {shown}");
    }
    let created = in_fault
        .iter()
        .find(|s| s.name == "tickets.CreateTicket")
        .unwrap();
    assert_eq!(
        created
            .attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("0")
    );
    let fired = in_fault.iter().find(|s| s.name == "sla.fire").unwrap();
    assert_eq!(
        fired.attributes.get("ticket"),
        Some(&listed[0].number),
        "{fired:?}"
    );
    let paged = in_fault
        .iter()
        .find(|s| s.name == "pager.deliver pagerduty")
        .unwrap();
    assert_eq!(paged.kind, 3, "a client span: {paged:?}");
    assert_eq!(
        paged.id, trigger_span,
        "PagerDuty's traceparent names the span that sent it"
    );
    assert_eq!(
        paged.attributes.get("action").map(String::as_str),
        Some("trigger")
    );
    assert_eq!(
        paged
            .attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("202")
    );
    assert!(
        in_fault.iter().all(|s| s.service == "hotline"),
        "the whole fleet is `hotline`: {in_fault:?}"
    );

    // The answer: a trace of its own, linked to the fault's.
    assert_ne!(answer, fault, "the reply is its own trace");
    let in_answer = trace_of(&answer);
    let answer_names: Vec<&str> = in_answer.iter().map(|s| s.name.as_str()).collect();
    assert!(
        answer_names.contains(&"tickets.AddArticle"),
        "{answer_names:?}"
    );
    let resolved = in_answer
        .iter()
        .find(|s| s.name == "pager.deliver pagerduty")
        .unwrap_or_else(|| panic!("no resolve in {answer_names:?}"));
    assert_eq!(resolved.id, resolve_span);
    assert_eq!(
        resolved.attributes.get("action").map(String::as_str),
        Some("resolve")
    );
    assert_eq!(
        resolved.links,
        vec![fault.clone()],
        "the resolve links to the fault"
    );
    // sla stops the clock on whichever of the reply's events comes first.
    let stopped = in_answer.iter().any(|s| {
        (s.name == "consume ticket.responded" || s.name == "consume ticket.article_added")
            && s.attributes.get("service").map(String::as_str) == Some("sla")
            && s.links == vec![fault.clone()]
    });
    assert!(
        stopped,
        "the event that stopped the clock links to the fault: {in_answer:?}"
    );
    assert!(
        in_answer.iter().all(|s| s.trace != fault),
        "nothing of the answer in the fault's trace"
    );

    // A failed call says what failed.
    let lookup = spans
        .iter()
        .find(|s| s.name == "tickets.GetTicket")
        .unwrap();
    assert_eq!(lookup.kind, 2);
    assert_eq!(
        lookup
            .attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("5"),
        "{lookup:?}"
    );
    assert_eq!(lookup.status.0, 2, "an error: {lookup:?}");
    assert!(
        lookup.status.1.starts_with("NotFound: ") && lookup.status.1.contains("HL-999999"),
        "{lookup:?}"
    );
    env.cleanup_bus(&[]).await.unwrap();
}
