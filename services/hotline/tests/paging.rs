//! The 2-hour promise end to end: the whole fleet with a 3-second target, a
//! local HTTP server speaking PagerDuty Events API v2, and the command line.
//!
//! Tests named `fault_*` flush the shared Redis; they run one at a time.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use chrono::{DateTime, Timelike, Utc};
use hmac::{Hmac, Mac};
use hotline_kit::{
    auth::Role,
    bus::outbox::{self, envelope},
    supervisor::Module,
    testing::{TestApp, TestEnv},
    time::{from_timestamp, timestamp},
};
use hotline_proto::{
    dispatch::v1::{
        AddPersonRequest, DeactivatePersonRequest, dispatch_service_client::DispatchServiceClient,
    },
    events::v1::{self as ev, event_envelope::Payload},
    pager::v1::{
        AcknowledgeRequest, ListPagesRequest, PageState, pager_service_client::PagerServiceClient,
    },
    sla::v1::{
        ClockState, GetClockRequest, ListBreachedRequest, SetPolicyRequest,
        sla_service_client::SlaServiceClient,
    },
    tickets::v1::{
        AddArticleRequest, ArticleKind, Channel, CreateTicketRequest, Priority, Ticket,
        ticket_service_client::TicketServiceClient,
    },
};
use serde_json::{Value, json};
use sha2::Sha256;

mod common;

type Authed = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    hotline_kit::grpc::BearerToken,
>;

const TARGET: Duration = Duration::from_secs(3);
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefabcdef";
const PD_WEBHOOK_SECRET: &str = "pd-webhook-secret";

/// One request the PagerDuty stand-in received.
#[derive(Debug, Clone)]
struct Received {
    at: DateTime<Utc>,
    body: Value,
    status: u16,
}

/// A local PagerDuty Events API v2: records every event and answers with
/// the scripted statuses first, then 202.
#[derive(Clone, Default)]
struct PagerDuty {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    /// Generic webhooks posted to `/hook/{name}`: (name, signature, body).
    hooks: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl PagerDuty {
    async fn start() -> (Self, SocketAddr) {
        let pagerduty = Self::default();
        let router = Router::new()
            .route("/v2/enqueue", post(enqueue))
            .route("/hook/{name}", post(hook))
            .with_state(pagerduty.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (pagerduty, addr)
    }

    fn answer_next(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn events(&self, action: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.body["event_action"] == action)
            .collect()
    }

    /// Asserts that no more events of `action` arrive for 3 s (`why`).
    async fn assert_quiet(&self, action: &str, why: &str) {
        let settled = self.events(action).len();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(self.events(action).len(), settled, "{why}");
    }

    /// Waits until `count` events of `action` arrived (accepted or not).
    async fn wait_for(&self, action: &str, count: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let events = self.events(action);
            if events.len() >= count || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn hook(
    State(pd): State<PagerDuty>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> StatusCode {
    let signature = headers
        .get("x-hotline-signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    pd.hooks.lock().unwrap().push((name, signature, body));
    StatusCode::NO_CONTENT
}

async fn enqueue(State(pd): State<PagerDuty>, body: Bytes) -> (StatusCode, Json<Value>) {
    let at = Utc::now();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = pd.script.lock().unwrap().pop_front().unwrap_or(202);
    pd.received.lock().unwrap().push(Received {
        at,
        body: body.clone(),
        status,
    });
    let reply = match status {
        202 => {
            json!({"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]})
        }
        400 => {
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["'payload.severity' is missing"]})
        }
        _ => json!({"status": "error", "message": "try again"}),
    };
    (StatusCode::from_u16(status).unwrap(), Json(reply))
}

struct Desk {
    env: TestEnv,
    apps: Vec<TestApp>,
    pd: PagerDuty,
    agent: String,
}

impl Desk {
    /// The fleet with a 3 s target, paging the local PagerDuty, with the
    /// ladder's later levels `delays` apart.
    async fn start(delays: &str) -> Self {
        Self::start_with(delays, &[]).await
    }

    /// As [`Desk::start`], with more `[pager]` settings.
    async fn start_with(delays: &str, pager: &[(&str, &str)]) -> Self {
        let (pd, addr) = PagerDuty::start().await;
        let mut env = TestEnv::new().await.unwrap();
        env.config.set("sla", "response_target", "3s");
        env.config.set("sla", "level_delays", delays);
        env.config.set("sla", "repeat_every", delays);
        env.config
            .set("pager", "pagerduty_routing_key", ROUTING_KEY);
        env.config.set(
            "pager",
            "pagerduty_url",
            &format!("http://{addr}/v2/enqueue"),
        );
        env.config
            .set("pager", "pagerduty_webhook_secret", PD_WEBHOOK_SECRET);
        env.config.set("pager", "retry_backoff", "300ms");
        for (key, value) in pager {
            env.config.set("pager", key, value);
        }
        let app = env.start(&hotline::fleet::modules()).await.unwrap();
        let agent = env.token("ana", Role::Agent);
        Self {
            env,
            apps: vec![app],
            pd,
            agent,
        }
    }

    fn app(&self) -> &TestApp {
        &self.apps[0]
    }

    fn tickets(&self) -> TicketServiceClient<Authed> {
        TicketServiceClient::new(self.app().channel(&self.agent))
    }

    fn sla(&self) -> SlaServiceClient<Authed> {
        SlaServiceClient::new(self.app().channel(&self.agent))
    }

    fn pager(&self) -> PagerServiceClient<Authed> {
        PagerServiceClient::new(self.app().channel(&self.agent))
    }

    /// Every page sent for `ticket`, with its attempts.
    async fn pages(&self, ticket: &str) -> Vec<hotline_proto::pager::v1::Page> {
        self.pager()
            .list_pages(ListPagesRequest {
                ticket: ticket.into(),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .pages
    }

    /// A customer's email: a ticket awaiting a response. Returns it and
    /// when it is due.
    async fn report(&self, subject: &str) -> (Ticket, DateTime<Utc>) {
        let ticket = self
            .tickets()
            .create_ticket(CreateTicketRequest {
                subject: subject.into(),
                body: "The recorder shows no picture since 02:00".into(),
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
        let since = ticket
            .awaiting_since
            .as_ref()
            .and_then(from_timestamp)
            .unwrap();
        (ticket, since + chrono::Duration::from_std(TARGET).unwrap())
    }

    async fn respond(&self, ticket: &Ticket) {
        self.tickets()
            .add_article(AddArticleRequest {
                ticket: ticket.number.clone(),
                kind: ArticleKind::AgentReply as i32,
                body: "A technician is on the way.".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// The response clock of `ticket`.
    async fn clock(&self, ticket: &str) -> hotline_proto::sla::v1::Clock {
        self.sla()
            .get_clock(GetClockRequest {
                ticket: ticket.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn stop(self) {
        for app in self.apps {
            app.stop().await.unwrap();
        }
        self.env.cleanup_bus(&["sla", "pager"]).await.unwrap();
    }
}

fn lag(received: &Received, due: DateTime<Utc>) -> chrono::Duration {
    received.at - due
}

#[tokio::test]
async fn a_waiting_ticket_pages_once_at_due_and_the_response_resolves_the_page() {
    let desk = Desk::start("1h").await;
    let (ticket, due) = desk.report("NVR-16 offline at the main gate").await;
    let triggers = desk
        .pd
        .wait_for("trigger", 1, Duration::from_secs(10))
        .await;
    assert_eq!(triggers.len(), 1, "paged once: {triggers:?}");
    let page = &triggers[0];
    assert!(
        lag(page, due) >= chrono::Duration::zero(),
        "paged early: {:?}",
        lag(page, due)
    );
    assert!(
        lag(page, due) < chrono::Duration::seconds(2),
        "paged {:?} after due",
        lag(page, due)
    );
    let body = &page.body;
    assert_eq!(body["routing_key"], ROUTING_KEY);
    let summary = body["payload"]["summary"].as_str().unwrap();
    assert!(summary.contains(&ticket.number) && summary.contains("NVR-16 offline"));
    assert_eq!(body["payload"]["source"], "hotline");
    assert_eq!(
        body["payload"]["custom_details"]["customer"],
        "ops@customer.example"
    );
    assert_eq!(body["payload"]["custom_details"]["channel"], "email");
    assert_eq!(body["payload"]["custom_details"]["level"], 1);
    assert!(body["payload"]["custom_details"]["awaiting_since"].is_string());
    let dedup_key = body["dedup_key"].as_str().unwrap().to_owned();
    assert!(dedup_key.contains(&ticket.id));

    // The clock says so, and the breach came within a second of due.
    let clock = desk.clock(&ticket.number).await;
    assert_eq!(clock.state, ClockState::Breached as i32);
    assert_eq!(clock.level, 1);
    let breached_at = clock.breached_at.as_ref().and_then(from_timestamp).unwrap();
    assert!(breached_at >= due && breached_at - due < chrono::Duration::seconds(1));
    let breached = desk
        .sla()
        .list_breached(ListBreachedRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(breached.clocks.iter().any(|c| c.number == ticket.number));

    desk.respond(&ticket).await;
    let resolves = desk.pd.wait_for("resolve", 1, Duration::from_secs(5)).await;
    assert_eq!(resolves.len(), 1);
    assert_eq!(resolves[0].body["dedup_key"], dedup_key.as_str());
    assert_eq!(resolves[0].body["routing_key"], ROUTING_KEY);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        desk.pd.received().len(),
        2,
        "nothing more after the response"
    );
    let clock = desk.clock(&ticket.number).await;
    assert_eq!(clock.state, ClockState::Stopped as i32);
    assert_eq!(clock.last_outcome, "breached");
    desk.stop().await;
}

#[tokio::test]
async fn a_response_before_due_pages_nobody() {
    let desk = Desk::start("1h").await;
    let (ticket, due) = desk.report("Camera 7 flickers").await;
    desk.respond(&ticket).await;
    tokio::time::sleep((due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(2))
        .await;
    assert!(desk.pd.received().is_empty(), "{:?}", desk.pd.received());
    let clock = desk.clock(&ticket.id).await;
    assert_eq!(clock.last_outcome, "met");
    desk.stop().await;
}

#[tokio::test]
async fn the_ladder_climbs_until_acknowledged_and_an_acknowledgement_stops_it() {
    let desk = Desk::start("1s").await;
    let (ticket, _) = desk.report("Whole site dark").await;
    let triggers = desk
        .pd
        .wait_for("trigger", 3, Duration::from_secs(12))
        .await;
    let levels: Vec<i64> = triggers
        .iter()
        .map(|t| {
            t.body["payload"]["custom_details"]["level"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        &levels[..3],
        &[1, 2, 2],
        "level 1, level 2, then level 2 repeats"
    );
    assert!(
        triggers
            .iter()
            .all(|t| t.body["dedup_key"] == triggers[0].body["dedup_key"])
    );
    let ack = desk
        .pager()
        .acknowledge(AcknowledgeRequest {
            ticket: ticket.number.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ack.first);
    assert_eq!(ack.acknowledged_by, "ana");
    // PagerDuty hears of it, and the climb stops.
    let acks = desk
        .pd
        .wait_for("acknowledge", 1, Duration::from_secs(5))
        .await;
    assert_eq!(acks.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    desk.pd
        .assert_quiet("trigger", "no step after the acknowledgement")
        .await;
    let clock = desk.clock(&ticket.number).await;
    assert_eq!(clock.acknowledged_by, "ana");
    assert_eq!(
        clock.state,
        ClockState::Breached as i32,
        "the clock runs on"
    );
    desk.stop().await;
}

#[tokio::test]
async fn a_step_fired_just_before_the_acknowledgement_wakes_nobody_else() {
    let desk = Desk::start("1h").await;
    let (ticket, due) = desk.report("Recorder rebooting in a loop").await;
    let triggers = desk
        .pd
        .wait_for("trigger", 1, Duration::from_secs(10))
        .await;
    assert_eq!(triggers.len(), 1);
    desk.pager()
        .acknowledge(AcknowledgeRequest {
            ticket: ticket.number.clone(),
        })
        .await
        .unwrap();
    desk.pd
        .wait_for("acknowledge", 1, Duration::from_secs(5))
        .await;

    // The sla's next step, fired before it heard of the acknowledgement:
    // written to its outbox as the sla writes it, so it reaches the pager
    // after the acknowledgement did.
    let breach = desk.pages(&ticket.number).await[0].breach;
    let ticket_id = uuid::Uuid::parse_str(&ticket.id).unwrap();
    let now = Utc::now();
    let step = envelope(
        "sla.escalated",
        Some((ticket_id, ticket.version)),
        now,
        Payload::SlaEscalated(ev::SlaEscalated {
            breach: Some(ev::Breach {
                ticket_id: ticket.id.clone(),
                number: ticket.number.clone(),
                subject: ticket.subject.clone(),
                contact: ticket.contact.clone(),
                channel: ticket.channel,
                priority: ticket.priority,
                awaiting_since: ticket.awaiting_since,
                due: Some(timestamp(due)),
                breach,
            }),
            level: 2,
            step: 2,
            escalated_at: Some(timestamp(now)),
        }),
    );
    let event_id = uuid::Uuid::parse_str(&step.id).unwrap();
    let sla = desk.env.pool("sla").unwrap();
    outbox::enqueue(&mut sla.acquire().await.unwrap(), &[step])
        .await
        .unwrap();
    let pager = desk.env.pool("pager").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&pager)
            .await
            .unwrap();
        if seen == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pager never got the step"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    desk.pd
        .assert_quiet("trigger", "nobody is paged after the acknowledgement")
        .await;
    let pages = desk.pages(&ticket.number).await;
    assert!(
        pages.iter().all(|p| p.level == 1),
        "no page at level 2: {pages:?}"
    );
    desk.stop().await;
}

fn pd_signature(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(PD_WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn pagerduty_acknowledges_through_its_signed_webhook() {
    let desk = Desk::start("1s").await;
    let (_, _) = desk.report("Storage array alarm").await;
    let triggers = desk
        .pd
        .wait_for("trigger", 1, Duration::from_secs(10))
        .await;
    let dedup_key = triggers[0].body["dedup_key"].as_str().unwrap().to_owned();
    let webhook = json!({"event": {
        "id": "01DFY3L6XLMPZ0TQNKHXDWJ4LM",
        "event_type": "incident.acknowledged",
        "resource_type": "incident",
        "occurred_at": Utc::now().to_rfc3339(),
        "agent": {"summary": "Bo Engineer", "type": "user_reference"},
        "data": {"id": "PGR0VU2", "type": "incident", "status": "acknowledged",
                 "incident_key": dedup_key}
    }})
    .to_string();
    let url = desk.app().http_url("/api/v1/pagerduty/webhook");
    let client = reqwest_free_post(&url, &webhook, "v1=deadbeef").await;
    assert_eq!(client.0, 401, "a bad signature is refused: {}", client.1);
    assert!(client.1.contains("error"));
    let accepted = reqwest_free_post(&url, &webhook, &pd_signature(webhook.as_bytes())).await;
    assert_eq!(accepted.0, 200, "{}", accepted.1);
    let pages = desk
        .pager()
        .list_pages(ListPagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        pages.pages.iter().all(|p| p.action != "acknowledge"),
        "PagerDuty is not told what it said"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    desk.pd.assert_quiet("trigger", "the climb stopped").await;
    desk.stop().await;
}

/// Posts `body` with a PagerDuty signature header over plain HTTP/1.1.
async fn reqwest_free_post(url: &str, body: &str, signature: &str) -> (u16, String) {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", url])
        .args(["-H", "content-type: application/json"])
        .args(["-H", &format!("x-pagerduty-signature: {signature}")])
        .args(["--data-binary", body])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn a_receiver_answering_500_then_202_is_paged_exactly_once() {
    let desk = Desk::start("1h").await;
    desk.pd.answer_next(&[500]);
    let (ticket, _) = desk.report("PoE switch down").await;
    let triggers = desk
        .pd
        .wait_for("trigger", 2, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let triggers_now = desk.pd.events("trigger");
    assert_eq!(triggers.len(), 2);
    assert_eq!(
        triggers_now.len(),
        2,
        "retried once, then delivered: {triggers_now:?}"
    );
    assert_eq!(
        triggers_now.iter().filter(|t| t.status == 202).count(),
        1,
        "accepted exactly once"
    );
    let pages = desk.pages(&ticket.number).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].state, PageState::Delivered as i32);
    let statuses: Vec<i32> = pages[0].attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![500, 202]);
    // Its latency counts the retry, from its queued row and from the breach,
    // which came before the row.
    let (_, metrics) = desk.app().http_get("/metrics").await.unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    let channel = r#"{channel="pagerduty"}"#;
    assert_eq!(
        value(&format!(
            "hotline_page_latency_from_breach_seconds_count{channel}"
        )),
        1.0
    );
    let from_row = value(&format!("hotline_page_delivery_seconds_sum{channel}"));
    let from_breach = value(&format!(
        "hotline_page_latency_from_breach_seconds_sum{channel}"
    ));
    assert!(
        from_row >= 0.3 && from_breach >= from_row && from_breach < 10.0,
        "from the row {from_row}s, from the breach {from_breach}s"
    );
    desk.stop().await;
}

#[tokio::test]
async fn a_page_waiting_for_its_retry_is_not_sent_after_the_acknowledgement() {
    let desk = Desk::start_with("1h", &[("retry_backoff", "3s")]).await;
    desk.pd.answer_next(&[500]);
    let (ticket, _) = desk.report("Camera ring offline").await;
    let first = desk
        .pd
        .wait_for("trigger", 1, Duration::from_secs(10))
        .await;
    assert_eq!(first[0].status, 500, "the first try failed");
    // Acknowledged by phone before the retry is due.
    desk.pager()
        .acknowledge(AcknowledgeRequest {
            ticket: ticket.number.clone(),
        })
        .await
        .unwrap();
    let acks = desk
        .pd
        .wait_for("acknowledge", 1, Duration::from_secs(5))
        .await;
    assert_eq!(acks.len(), 1, "PagerDuty hears of the acknowledgement");
    tokio::time::sleep(Duration::from_secs(3)).await;
    desk.pd
        .assert_quiet("trigger", "the retry is not sent after the acknowledgement")
        .await;
    assert_eq!(desk.pd.events("trigger").len(), 1);
    let pages = desk.pages(&ticket.number).await;
    let trigger = pages.iter().find(|p| p.action == "trigger").unwrap();
    assert_eq!(trigger.state, PageState::Cancelled as i32);
    // PagerDuty may have opened the incident on the failed try: the answer
    // still resolves it.
    desk.respond(&ticket).await;
    let resolves = desk
        .pd
        .wait_for("resolve", 1, Duration::from_secs(10))
        .await;
    assert_eq!(resolves.len(), 1, "the incident is resolved");
    desk.stop().await;
}

#[tokio::test]
async fn a_400_is_recorded_as_failed_without_a_retry_storm() {
    let desk = Desk::start("1h").await;
    desk.pd.answer_next(&[400]);
    let (ticket, _) = desk.report("Licence server unreachable").await;
    desk.pd
        .wait_for("trigger", 1, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(desk.pd.events("trigger").len(), 1, "never retried");
    let pages = desk.pages(&ticket.number).await;
    assert_eq!(pages[0].state, PageState::Failed as i32);
    assert!(
        pages[0].last_error.contains("Event object is invalid"),
        "{}",
        pages[0].last_error
    );
    desk.stop().await;
}

#[tokio::test]
async fn two_sla_processes_page_once() {
    let mut desk = Desk::start("1h").await;
    let second: Vec<Module> = vec![hotline_sla::module(), hotline_pager::module()];
    desk.apps.push(desk.env.start(&second).await.unwrap());
    let mut tickets = Vec::new();
    for n in 0..5 {
        tickets.push(desk.report(&format!("Camera {n} offline")).await);
    }
    desk.pd
        .wait_for("trigger", 5, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let triggers = desk.pd.events("trigger");
    let mut keys: Vec<&str> = triggers
        .iter()
        .map(|t| t.body["dedup_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(triggers.len(), 5, "one page per ticket: {triggers:?}");
    assert_eq!(keys.len(), 5);
    let pool = desk.env.pool("sla").unwrap();
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM escalations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(steps, 5);
    desk.stop().await;
}

#[tokio::test]
async fn a_policy_never_weakens_the_warranty_target() {
    let desk = Desk::start("1h").await;
    let manager = desk.env.token("mia", Role::Manager);
    let mut sla = SlaServiceClient::new(desk.app().channel(&manager));
    let weaker = sla
        .set_policy(SetPolicyRequest {
            priority: Priority::Low as i32,
            target: Some(prost_types::Duration {
                seconds: 4,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(weaker.code(), tonic::Code::InvalidArgument);
    assert!(weaker.message().contains("warranty"));
    let denied = desk
        .sla()
        .set_policy(SetPolicyRequest {
            priority: Priority::Urgent as i32,
            target: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        tonic::Code::PermissionDenied,
        "agents do not set the promise"
    );
    sla.set_policy(SetPolicyRequest {
        priority: Priority::Urgent as i32,
        target: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
    })
    .await
    .unwrap();
    let urgent = desk
        .tickets()
        .create_ticket(CreateTicketRequest {
            subject: "Fire alarm integration down".into(),
            body: "urgent".into(),
            priority: Priority::Urgent as i32,
            channel: Channel::Phone as i32,
            idempotency_key: "urgent-1".into(),
            first_article: ArticleKind::CustomerMessage as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let triggers = desk
        .pd
        .wait_for("trigger", 1, Duration::from_secs(10))
        .await;
    let since = urgent
        .awaiting_since
        .as_ref()
        .and_then(from_timestamp)
        .unwrap();
    let waited = triggers[0].at - since;
    assert!(
        waited >= chrono::Duration::seconds(1) && waited < chrono::Duration::milliseconds(2500),
        "the urgent target of 1s applied: paged after {waited:?}"
    );
    desk.stop().await;
}

/// Flushes the shared Redis: only in the serial fault phase.
#[tokio::test]
async fn fault_flushall_while_waiting_still_pages_exactly_once() {
    let desk = Desk::start("1h").await;
    let (_, due) = desk.report("Recorder disk failure").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let redis = redis::Client::open(desk.env.config.redis_url.expose()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    let triggers = desk
        .pd
        .wait_for("trigger", 1, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(desk.pd.events("trigger").len(), 1);
    let lag = lag(&triggers[0], due);
    assert!(
        lag >= chrono::Duration::zero() && lag < chrono::Duration::seconds(2),
        "{lag:?}"
    );
    desk.stop().await;
}

/// Runs `hotline args... --json` against `app` and parses its output.
async fn cli(env: &TestEnv, app: &TestApp, token: &str, args: &[&str]) -> (bool, Value) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(args)
        .arg("--json")
        .env("HOTLINE_SERVER", format!("http://{}", app.grpc_addr))
        .env("HOTLINE_AUTH__SECRET", env.config.auth.secret.expose())
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

#[tokio::test]
async fn the_desk_reads_clocks_and_pages_and_acknowledges_from_the_shell() {
    let desk = Desk::start("1h").await;
    let (ticket, _) = desk.report("Intercom dead at gate 2").await;
    // The clock is armed as soon as sla has the ticket's events.
    let mut listed = false;
    for _ in 0..50 {
        let (ok, at_risk) = cli(
            &desk.env,
            desk.app(),
            &desk.agent,
            &["sla", "at-risk", "--within", "1h"],
        )
        .await;
        assert!(ok, "{at_risk}");
        listed = at_risk
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["number"] == ticket.number.as_str());
        if listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed, "the waiting ticket is at risk");
    let (_, early) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["pages", "ack", &ticket.number],
    )
    .await;
    assert_eq!(
        early["code"], "FailedPrecondition",
        "the ticket is there, with nothing to acknowledge before a breach: {early}"
    );
    desk.pd
        .wait_for("trigger", 1, Duration::from_secs(10))
        .await;
    let (ok, clock) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["sla", "show", &ticket.number],
    )
    .await;
    assert!(ok);
    assert_eq!(clock["state"], "breached");
    assert_eq!(clock["level"], 1);
    assert!(clock["breached_at"].is_string() && clock["due"].is_string());
    let (_, breached) = cli(&desk.env, desk.app(), &desk.agent, &["sla", "breached"]).await;
    assert_eq!(breached[0]["number"], ticket.number.as_str());
    let (ok, pages) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["pages", "list", &ticket.number],
    )
    .await;
    assert!(ok);
    assert_eq!(pages[0]["channel"], "pagerduty");
    assert_eq!(pages[0]["state"], "delivered");
    assert_eq!(pages[0]["attempts"][0]["status"], 202);
    let (ok, ack) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["pages", "ack", &ticket.number],
    )
    .await;
    assert!(ok, "{ack}");
    assert_eq!(
        (ack["first"].as_bool(), ack["acknowledged_by"].as_str()),
        (Some(true), Some("ana"))
    );
    let (_, again) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["pages", "ack", &ticket.number],
    )
    .await;
    assert_eq!(again["first"], false, "the first acknowledgement stands");

    desk.stop().await;
}

/// `hotline serve` paging the local PagerDuty with a 3 s target.
async fn serve(
    env: &TestEnv,
    pd: SocketAddr,
    grpc: SocketAddr,
    http: SocketAddr,
) -> tokio::process::Child {
    let pagerduty = format!("http://{pd}/v2/enqueue");
    common::serve(
        env,
        grpc,
        http,
        &[
            ("HOTLINE_SLA__RESPONSE_TARGET", "3s"),
            ("HOTLINE_PAGER__PAGERDUTY_ROUTING_KEY", ROUTING_KEY),
            ("HOTLINE_PAGER__PAGERDUTY_URL", &pagerduty),
        ],
    )
    .await
}

#[tokio::test]
async fn killed_while_waiting_and_started_after_due_it_pages_once_right_after_start() {
    let (pd, pd_addr) = PagerDuty::start().await;
    let env = TestEnv::new().await.unwrap();
    env.migrate(&hotline::fleet::modules()).await.unwrap();
    let (grpc, http) = (common::free_port(), common::free_port());
    let mut first = serve(&env, pd_addr, grpc, http).await;
    let agent = env.token("ana", Role::Agent);
    let channel = tonic::service::interceptor::InterceptedService::new(
        hotline_kit::grpc::channel(&format!("http://{grpc}")).unwrap(),
        hotline_kit::grpc::BearerToken::new(&agent).unwrap(),
    );
    let ticket = TicketServiceClient::new(channel)
        .create_ticket(CreateTicketRequest {
            subject: "Recorder reboots in a loop".into(),
            body: "since the power cut".into(),
            channel: Channel::Email as i32,
            idempotency_key: "kill-9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let due = ticket
        .awaiting_since
        .as_ref()
        .and_then(from_timestamp)
        .unwrap()
        + chrono::Duration::from_std(TARGET).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    tokio::time::sleep((due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(2))
        .await;
    assert!(
        pd.received().is_empty(),
        "nothing pages while the desk is down"
    );
    let restarted = Utc::now();
    let mut second = serve(&env, pd_addr, grpc, http).await;
    let triggers = pd.wait_for("trigger", 1, Duration::from_secs(10)).await;
    assert_eq!(triggers.len(), 1, "the overdue clock fired on return");
    let after_start = triggers[0].at - restarted;
    assert!(
        after_start < chrono::Duration::seconds(3),
        "paged {after_start:?} after the restart"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pd.events("trigger").len(), 1, "exactly once");
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    env.cleanup_bus(&["sla", "pager"]).await.unwrap();
}

#[tokio::test]
async fn without_pagerduty_a_level_pages_the_on_call_person_and_the_lead_and_names_who_it_cannot_reach()
 {
    let (mails, relay) = common::smtp_sink().await;
    let relay = format!("smtp://{relay}");
    let desk = Desk::start_with(
        "1h",
        &[
            ("pagerduty_routing_key", ""),
            ("webhook_secret", "hook-secret"),
            ("smtp_relay", &relay),
            ("email_from", "Hotline <hotline@vendor.example>"),
        ],
    )
    .await;
    let pd_addr = desk
        .env
        .config
        .section::<hotline_pager::PagerConfig>("pager")
        .unwrap()
        .pagerduty_url
        .replace("/v2/enqueue", "");
    let manager = desk.env.token("mia", Role::Manager);
    let mut pager = PagerServiceClient::new(desk.app().channel(&manager));
    use hotline_proto::pager::v1::{LevelTargets, Person, Schedule, Target, target};
    people(&desk, &["bo", "cy", "dee"]).await;
    // bo is paged on his webhook (and by email), cy by email.
    pager
        .put_person(Person {
            email: vendor("bo"),
            webhook_url: format!("{pd_addr}/hook/bo"),
            ..Default::default()
        })
        .await
        .unwrap();
    pager
        .put_schedule(Schedule {
            name: "night".into(),
            time_zone: "UTC".into(),
            participants: vec![vendor("bo")],
            shift_length: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            starts: "2026-01-01T00:00".into(),
            overrides: Vec::new(),
        })
        .await
        .unwrap();
    let target = |t| Target { target: Some(t) };
    pager
        .set_level_targets(LevelTargets {
            level: 1,
            targets: vec![
                target(target::Target::Schedule("night".into())),
                target(target::Target::Person(vendor("cy"))),
                target(target::Target::Person(vendor("dee"))),
            ],
        })
        .await
        .unwrap();
    // dee leaves after she was made a target.
    DispatchServiceClient::new(desk.app().channel(&manager))
        .deactivate_person(DeactivatePersonRequest {
            person: vendor("dee"),
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pager
        .list_people(hotline_proto::pager::v1::ListPeopleRequest {})
        .await
        .unwrap()
        .into_inner()
        .people
        .iter()
        .any(|p| p.email == vendor("dee") && !p.active)
    {
        assert!(tokio::time::Instant::now() < deadline, "dee never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut failures = hotline_kit::testing::EventTap::bound(&desk.env.config, "page.failed")
        .await
        .unwrap();

    let (ticket, _) = desk.report("Door controller offline").await;
    let (failed, _) = failures
        .next(Duration::from_secs(10))
        .await
        .expect("page.failed");
    match failed.payload {
        Some(hotline_proto::events::v1::event_envelope::Payload::PageFailed(failed)) => {
            assert_eq!(failed.target, "person dee@vendor.example");
            assert_eq!(
                failed.reason,
                "dee@vendor.example is deactivated in the directory"
            );
            assert_eq!(failed.level, 1);
        }
        other => panic!("not a page.failed: {other:?}"),
    }
    // The on-call engineer's webhook, signed over the raw body.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while desk.pd.hooks.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (name, signature, body) = desk.pd.hooks.lock().unwrap()[0].clone();
    assert_eq!(name, "bo");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"hook-secret").unwrap();
    mac.update(body.as_bytes());
    assert_eq!(
        signature,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let hook: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hook["event"], "escalated");
    assert_eq!(hook["ticket"]["ticket"], ticket.number.as_str());
    // The lead's email, through the relay (bo is emailed too: the
    // directory gave him an address).
    let to_cy = || -> Vec<String> {
        mails
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains("To: cy@vendor.example"))
            .cloned()
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while to_cy().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mail = to_cy().first().cloned().expect("an email page");
    assert!(mail.contains("To: cy@vendor.example"), "{mail}");
    assert!(mail.contains(&format!("[{}]", ticket.number)), "{mail}");
    assert!(
        desk.pd.received().is_empty(),
        "no PagerDuty without a routing key"
    );

    // The answer reaches both.
    desk.respond(&ticket).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (desk.pd.hooks.lock().unwrap().len() < 2 || to_cy().len() < 2)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cleared: Value = serde_json::from_str(&desk.pd.hooks.lock().unwrap()[1].2).unwrap();
    assert_eq!(cleared["event"], "cleared");
    assert!(to_cy()[1].contains("answered"));
    desk.stop().await;
}

/// Stops the shared broker: only in the serial fault phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_a_broker_outage_at_due_breaches_on_time_and_pages_once_when_it_is_back() {
    let desk = Desk::start("1h").await;
    let (ticket, due) = desk.report("Video wall frozen").await;
    // The clock is armed once sla has the ticket's events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while desk
        .sla()
        .get_clock(GetClockRequest {
            ticket: ticket.number.clone(),
        })
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock was never armed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outage = hotline_kit::testing::Outage::broker().await;
    tokio::time::sleep((due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(2))
        .await;
    // The breach does not wait for the broker: it is decided in PostgreSQL.
    let pool = desk.env.pool("sla").unwrap();
    let fired: Vec<(i32, DateTime<Utc>)> = sqlx::query_as("SELECT step, fired_at FROM escalations")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(fired.len(), 1, "breached once during the outage");
    assert!(fired[0].1 >= due && fired[0].1 - due < chrono::Duration::seconds(1));
    assert!(
        desk.pd.received().is_empty(),
        "the page waits for the broker"
    );
    outage.end().await;
    let triggers = desk
        .pd
        .wait_for("trigger", 1, Duration::from_secs(30))
        .await;
    assert_eq!(triggers.len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(desk.pd.events("trigger").len(), 1, "paged exactly once");
    desk.stop().await;
}

/// `names` in the directory, as `name@vendor.example`, once the pager has
/// heard of them.
async fn people(desk: &Desk, names: &[&str]) {
    let manager = desk.env.token("mia", Role::Manager);
    let mut directory = DispatchServiceClient::new(desk.app().channel(&manager));
    for name in names {
        directory
            .add_person(AddPersonRequest {
                name: (*name).into(),
                email: vendor(name),
                roles: vec!["agent".into()],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let known = desk
            .pager()
            .list_people(hotline_proto::pager::v1::ListPeopleRequest {})
            .await
            .unwrap()
            .into_inner()
            .people;
        if names
            .iter()
            .all(|name| known.iter().any(|p| p.email == vendor(name)))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pager never heard of {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the directory names `name`.
fn vendor(name: &str) -> String {
    format!("{name}@vendor.example")
}

#[tokio::test]
async fn on_call_is_arranged_from_the_shell_and_an_override_is_who_is_on_call_now() {
    let desk = Desk::start("1h").await;
    people(&desk, &["ana", "bo", "cy", "dee"]).await;
    let manager = desk.env.token("mia", Role::Manager);
    let dispatcher = desk.env.token("dan", Role::Dispatcher);
    let (ok, added) = cli(
        &desk.env,
        desk.app(),
        &manager,
        &[
            "oncall",
            "schedule",
            "add",
            "--name",
            "night",
            "--timezone",
            "Europe/Berlin",
            "--people",
            "ana@vendor.example,BO@vendor.example",
            "--shift",
            "7d",
            "--starts",
            "2026-01-05T09:00",
        ],
    )
    .await;
    assert!(ok, "{added}");
    let night = json!({
        "name": "night", "timezone": "Europe/Berlin", "people": ["ana@vendor.example", "bo@vendor.example"],
        "shift_seconds": 604_800, "shift": "7d", "starts": "2026-01-05T09:00",
        "overrides": [],
    });
    assert_eq!(added, night);
    let (ok, listed) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["oncall", "schedule", "list"],
    )
    .await;
    assert!(ok, "{listed}");
    assert_eq!(listed, json!([night]));
    let (_, now) = cli(&desk.env, desk.app(), &desk.agent, &["oncall", "now"]).await;
    assert!(
        ["ana@vendor.example", "bo@vendor.example"].contains(&now[0]["person"].as_str().unwrap()),
        "{now}"
    );
    assert_eq!(now[0]["overridden"], false);

    // dee covers from an hour ago, written in Berlin's local time, until
    // two hours from now, written in RFC 3339.
    let berlin = chrono_tz::Europe::Berlin;
    let from = (Utc::now() - chrono::Duration::hours(1)).with_timezone(&berlin);
    let from_local = from.format("%Y-%m-%dT%H:%M").to_string();
    let from_utc = from
        .with_timezone(&Utc)
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap();
    let to = (Utc::now() + chrono::Duration::hours(2))
        .with_nanosecond(0)
        .unwrap();
    let (ok, taken) = cli(
        &desk.env,
        desk.app(),
        &dispatcher,
        &[
            "oncall",
            "override",
            "add",
            "--schedule",
            "night",
            "--person",
            "dee@vendor.example",
            "--from",
            &from_local,
            "--to",
            &to.to_rfc3339(),
        ],
    )
    .await;
    assert!(ok, "{taken}");
    let taken_json = json!({
        "schedule": "night", "person": "dee@vendor.example", "from": from_utc, "to": to,
    });
    assert_eq!(taken, taken_json);
    let (_, now) = cli(&desk.env, desk.app(), &desk.agent, &["oncall", "now"]).await;
    assert_eq!(
        now,
        json!([{"schedule": "night", "person": "dee@vendor.example", "overridden": true, "until": to}])
    );
    let (_, listed) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["oncall", "schedule", "list"],
    )
    .await;
    assert_eq!(listed[0]["overrides"], json!([taken_json]));

    let (ok, level) = cli(
        &desk.env,
        desk.app(),
        &manager,
        &[
            "oncall",
            "levels",
            "set",
            "--level",
            "1",
            "--targets",
            "schedule:night,person:cy@vendor.example",
        ],
    )
    .await;
    assert!(ok, "{level}");
    let level_json = json!({"level": 1, "targets": [
        {"kind": "schedule", "name": "night"}, {"kind": "person", "name": "cy@vendor.example"},
    ]});
    assert_eq!(level, level_json);
    let (ok, levels) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["oncall", "levels", "list"],
    )
    .await;
    assert!(ok, "{levels}");
    assert_eq!(levels, json!([level_json]));
    desk.stop().await;
}

#[tokio::test]
async fn on_call_commands_refuse_what_cannot_work_and_say_what_to_change() {
    let desk = Desk::start("1h").await;
    people(&desk, &["ana", "bo"]).await;
    let manager = desk.env.token("mia", Role::Manager);
    let dispatcher = desk.env.token("dan", Role::Dispatcher);
    let schedule = |name: &str, zone: &str, people: &str, shift: &str| {
        [
            "oncall",
            "schedule",
            "add",
            "--name",
            name,
            "--timezone",
            zone,
            "--people",
            people,
            "--shift",
            shift,
            "--starts",
            "2026-01-05T09:00",
        ]
        .map(str::to_owned)
    };
    let (ok, _) = cli(
        &desk.env,
        desk.app(),
        &manager,
        &schedule("night", "UTC", "ana@vendor.example,bo@vendor.example", "1d")
            .each_ref()
            .map(String::as_str),
    )
    .await;
    assert!(ok);
    let refusals: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            &desk.agent,
            schedule("day", "UTC", "ana", "1d").to_vec(),
            "PermissionDenied",
            "manager",
        ),
        (
            &dispatcher,
            schedule("day", "UTC", "ana", "1d").to_vec(),
            "PermissionDenied",
            "manager",
        ),
        (
            &manager,
            schedule("day", "Mars/Olympus", "ana", "1d").to_vec(),
            "InvalidArgument",
            "not an IANA time zone",
        ),
        (
            &manager,
            schedule("day", "UTC", "ana", "0").to_vec(),
            "InvalidArgument",
            "between a minute and a year",
        ),
        (
            &manager,
            schedule("day", "UTC", "ana@vendor.example,zed", "1d").to_vec(),
            "NotFound",
            "no one in the directory is \"zed\"",
        ),
        (
            &manager,
            schedule("day", "UTC", "", "1d").to_vec(),
            "InvalidArgument",
            "a participant is required",
        ),
        (
            &manager,
            schedule("day\u{1b}[2J", "UTC", "ana", "1d").to_vec(),
            "InvalidArgument",
            "control character",
        ),
        (
            &manager,
            schedule("day", "UTC", "ana", "-7d").to_vec(),
            "InvalidArgument",
            "--shift",
        ),
    ];
    let override_args = |schedule: &str, person: &str, from: &str, to: &str| {
        [
            "oncall",
            "override",
            "add",
            "--schedule",
            schedule,
            "--person",
            person,
            "--from",
            from,
            "--to",
            to,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let overrides: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            &desk.agent,
            override_args(
                "night",
                "bo@vendor.example",
                "2030-01-01T08:00",
                "2030-01-01T20:00",
            ),
            "PermissionDenied",
            "dispatcher",
        ),
        (
            &dispatcher,
            override_args(
                "day",
                "bo@vendor.example",
                "2030-01-01T08:00",
                "2030-01-01T20:00",
            ),
            "NotFound",
            "no schedule \"day\"",
        ),
        (
            &dispatcher,
            override_args("night", "zed", "2030-01-01T08:00", "2030-01-01T20:00"),
            "NotFound",
            "no one in the directory is \"zed\"",
        ),
        (
            &dispatcher,
            override_args(
                "night",
                "bo@vendor.example",
                "2030-01-01T20:00",
                "2030-01-01T08:00",
            ),
            "InvalidArgument",
            "must end after it starts",
        ),
        (
            &dispatcher,
            override_args(
                "night",
                "bo@vendor.example",
                "2020-01-01T08:00",
                "2020-01-01T20:00",
            ),
            "InvalidArgument",
            "over already",
        ),
        (
            &dispatcher,
            override_args("night", "bo@vendor.example", "tonight", "2030-01-01T20:00"),
            "InvalidArgument",
            "--from: \"tonight\" is neither",
        ),
    ];
    let levels = |targets: &str, level: &str| {
        [
            "oncall",
            "levels",
            "set",
            "--level",
            level,
            "--targets",
            targets,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let level_refusals: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            &dispatcher,
            levels("schedule:night", "1"),
            "PermissionDenied",
            "manager",
        ),
        (
            &manager,
            levels("night", "1"),
            "InvalidArgument",
            "write schedule:NAME or person:NAME",
        ),
        (
            &manager,
            levels("team:network", "1"),
            "InvalidArgument",
            "write schedule:NAME or person:NAME",
        ),
        (
            &manager,
            levels("schedule:", "1"),
            "InvalidArgument",
            "write schedule:NAME or person:NAME",
        ),
        (
            &manager,
            levels("schedule:day", "1"),
            "NotFound",
            "no schedule \"day\"",
        ),
        (
            &manager,
            levels("person:ana@vendor.example,person:zed", "1"),
            "NotFound",
            "no one in the directory is \"zed\"",
        ),
        (
            &manager,
            levels("person:ana", "0"),
            "InvalidArgument",
            "levels go from 1",
        ),
    ];
    for (token, args, code, says) in refusals.into_iter().chain(overrides).chain(level_refusals) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, error) = cli(&desk.env, desk.app(), token, &args).await;
        assert!(!ok, "{args:?} succeeded: {error}");
        assert_eq!(error["code"], code, "{args:?}: {error}");
        let message = error["error"].as_str().unwrap();
        assert!(
            message.contains(says),
            "{args:?}: {message:?} should say {says:?}"
        );
    }
    // Nothing refused was written.
    let (_, listed) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["oncall", "schedule", "list"],
    )
    .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["overrides"], json!([]));
    let (_, levels) = cli(
        &desk.env,
        desk.app(),
        &desk.agent,
        &["oncall", "levels", "list"],
    )
    .await;
    assert_eq!(levels, json!([]));
    desk.stop().await;
}
