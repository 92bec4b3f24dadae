//! The phone bridge end to end: `curl` as the PBX posting Generic CTI
//! events, tickets and intake running, the tickets read back over gRPC.

use std::time::Duration;

use hotline_kit::{
    auth::Role,
    testing::{TestApp, TestEnv},
};
use hotline_proto::tickets::v1::{
    AddArticleRequest, ArticleKind, CallDirection, CallOutcome, Channel, GetTicketRequest,
    GetTicketResponse, ListTicketsRequest, Ticket, ticket_service_client::TicketServiceClient,
};
use serde_json::Value;

mod common;

const TOKEN: &str = "pbx-7f3a9c";

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    async fn start() -> Self {
        let mut env = TestEnv::new().await.unwrap();
        env.config.set("intake", "cti_token", TOKEN);
        env.config.set("intake", "country_code", "49");
        env.config
            .set("intake", "blocked_numbers", "+49 170 0000000");
        let app = env
            .start(&[hotline_tickets::module(), hotline_intake::module()])
            .await
            .unwrap();
        Self { env, app }
    }

    /// Posts one CTI event as a form; returns the status and JSON body.
    async fn pbx(&self, token: &str, form: &str) -> (u16, Value) {
        self.post(token, &["--data", form]).await
    }

    async fn pbx_json(&self, json: &str) -> (u16, Value) {
        self.post(
            TOKEN,
            &[
                "-H",
                "content-type: application/json",
                "--data-binary",
                json,
            ],
        )
        .await
    }

    async fn post(&self, token: &str, args: &[&str]) -> (u16, Value) {
        common::post(&self.app.http_url(&format!("/api/v1/cti/{token}")), args).await
    }

    /// A whole call: `events` are `(event, extra fields)`.
    async fn call(
        &self,
        call_id: &str,
        direction: &str,
        from: &str,
        to: &str,
        events: &[(&str, &str)],
    ) {
        for (event, extra) in events {
            let form = format!(
                "event={event}&callId={call_id}&direction={direction}&from={from}&to={to}{extra}"
            );
            let (status, body) = self.pbx(TOKEN, &form).await;
            assert_eq!(status, 200, "{form}: {body}");
        }
    }

    fn tickets(
        &self,
    ) -> TicketServiceClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            hotline_kit::grpc::BearerToken,
        >,
    > {
        TicketServiceClient::new(self.app.channel(&self.env.token("ana", Role::Agent)))
    }

    async fn of(&self, contact: &str) -> Vec<Ticket> {
        self.tickets()
            .list_tickets(ListTicketsRequest {
                contact: contact.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tickets
    }

    /// Waits until `contact` has tickets whose articles number `articles`
    /// in all; returns the newest ticket with its articles.
    async fn await_articles(&self, contact: &str, articles: usize) -> GetTicketResponse {
        let shown = common::tickets_of(&self.env, &self.app, contact, articles).await;
        let total: usize = shown.iter().map(|t| t.articles.len()).sum();
        assert!(
            total >= articles,
            "{contact} has {total} articles, not {articles}"
        );
        shown.into_iter().next().unwrap()
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["intake"]).await.unwrap();
    }
}

fn call_of(shown: &GetTicketResponse, index: usize) -> (i32, i32, String) {
    let article = &shown.articles[index];
    assert_eq!(article.kind, ArticleKind::Call as i32);
    let call = article.call.clone().unwrap();
    (call.direction, call.outcome, call.call_id)
}

const IN: i32 = CallDirection::Inbound as i32;
const OUT: i32 = CallDirection::Outbound as i32;
const ANSWERED: i32 = CallOutcome::Answered as i32;
const MISSED: i32 = CallOutcome::Missed as i32;

#[tokio::test]
async fn a_missed_call_opens_a_ticket_awaiting_a_response_and_an_answered_one_a_responded_ticket() {
    let desk = Desk::start().await;
    // A national number: normalised with the country code.
    desk.call(
        "m1",
        "in",
        "030%20111222",
        "200",
        &[("newCall", ""), ("hangup", "&cause=noAnswer")],
    )
    .await;
    let missed = desk.await_articles("+4930111222", 1).await;
    let ticket = missed.ticket.clone().unwrap();
    assert_eq!(ticket.channel, Channel::Phone as i32);
    assert!(ticket.awaiting_response, "a missed call awaits a response");
    assert_eq!(call_of(&missed, 0), (IN, MISSED, "m1".into()));

    desk.call(
        "a1",
        "in",
        "%2B49%2040%205551234",
        "200",
        &[
            ("newCall", ""),
            ("answer", "&user=ana"),
            ("hangup", "&cause=normalClearing"),
        ],
    )
    .await;
    let answered = desk.await_articles("+49405551234", 1).await;
    assert!(
        !answered.ticket.clone().unwrap().awaiting_response,
        "answered: responded"
    );
    assert_eq!(call_of(&answered, 0), (IN, ANSWERED, "a1".into()));
    assert!(answered.articles[0].body.contains("ana"));

    // Forwarded calls and unanswered outbound calls record nothing.
    desk.call(
        "f1",
        "in",
        "%2B49897770000",
        "200",
        &[("newCall", ""), ("hangup", "&cause=forwarded")],
    )
    .await;
    desk.call(
        "o1",
        "out",
        "204",
        "%2B49898880000",
        &[("newCall", ""), ("hangup", "&cause=busy")],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(desk.of("+49897770000").await.is_empty());
    assert!(desk.of("+49898880000").await.is_empty());
    desk.stop().await;
}

#[tokio::test]
async fn events_of_one_call_arriving_at_once_are_all_counted() {
    let desk = Desk::start().await;
    // Some PBXs post a call's events in parallel: `newCall` and `answer`
    // of each call at the same moment, either may be the first stored.
    for n in 0..12 {
        let form = |event: &str| {
            format!(
                "event={event}&callId=par{n}&direction=in&from=%2B4940700{n:04}&to=200&user=ana"
            )
        };
        let (first, second) = (form("newCall"), form("answer"));
        let (new_call, answer) = tokio::join!(desk.pbx(TOKEN, &first), desk.pbx(TOKEN, &second));
        assert_eq!((new_call.0, answer.0), (200, 200));
        let (status, _) = desk
            .pbx(TOKEN, &format!("{}&cause=normalClearing", form("hangup")))
            .await;
        assert_eq!(status, 200);
    }
    for n in 0..12 {
        let shown = desk.await_articles(&format!("+4940700{n:04}"), 1).await;
        assert_eq!(
            call_of(&shown, 0),
            (IN, ANSWERED, format!("par{n}")),
            "no event of call par{n} lost"
        );
    }
    desk.stop().await;
}

#[tokio::test]
async fn many_calls_of_one_caller_ending_at_once_open_one_ticket() {
    let desk = Desk::start().await;
    // Two customers give up ten times each, their hangups all at once and
    // each sent twice (a PBX retrying before its first answer): recorded
    // together in batches, a repeat among them, and forwarded together.
    for n in 0..20 {
        let from = if n % 2 == 0 {
            "%2B4930555001"
        } else {
            "%2B4930555002"
        };
        let (status, _) = desk
            .pbx(
                TOKEN,
                &format!("event=newCall&callId=m{n}&direction=in&from={from}&to=200"),
            )
            .await;
        assert_eq!(status, 200);
    }
    let shared = &desk;
    let hangups = (0..40).map(|n| {
        let n = n % 20;
        let from = if n % 2 == 0 {
            "%2B4930555001"
        } else {
            "%2B4930555002"
        };
        let form = format!("event=hangup&callId=m{n}&direction=in&from={from}&to=200&cause=cancel");
        async move { shared.pbx(TOKEN, &form).await.0 }
    });
    assert!(
        futures_util::future::join_all(hangups)
            .await
            .iter()
            .all(|status| *status == 200)
    );
    for caller in ["+4930555001", "+4930555002"] {
        let shown = desk.await_articles(caller, 10).await;
        let tickets = desk.of(caller).await;
        assert_eq!(
            tickets.len(),
            1,
            "{caller}: one ticket, not {}",
            tickets.len()
        );
        assert_eq!(shown.articles.len(), 10, "{caller}: every call on it");
        let mut calls: Vec<String> = (0..10).map(|i| call_of(&shown, i).2).collect();
        calls.sort();
        calls.dedup();
        assert_eq!(calls.len(), 10, "{caller}: each call once");
    }
    desk.stop().await;
}

#[tokio::test]
async fn calls_land_on_the_callers_open_ticket_and_a_call_back_is_the_response() {
    let desk = Desk::start().await;
    let caller = "%2B4930999000";
    desk.call(
        "c1",
        "in",
        caller,
        "200",
        &[("newCall", ""), ("hangup", "&cause=cancel")],
    )
    .await;
    let first = desk.await_articles("+4930999000", 1).await;
    let number = first.ticket.clone().unwrap().number;
    // They try again and give up again: a contact on the same ticket.
    desk.call(
        "c2",
        "in",
        caller,
        "200",
        &[("newCall", ""), ("hangup", "&cause=noAnswer")],
    )
    .await;
    let again = desk.await_articles("+4930999000", 2).await;
    assert_eq!(
        again.ticket.clone().unwrap().number,
        number,
        "the same ticket"
    );
    assert_eq!(call_of(&again, 1), (IN, MISSED, "c2".into()));
    assert!(again.ticket.clone().unwrap().awaiting_response);
    // The agent calls back and the customer picks up: the response.
    desk.call(
        "c3",
        "out",
        "204",
        caller,
        &[
            ("newCall", "&user=bo"),
            ("answer", ""),
            ("hangup", "&cause=normalClearing"),
        ],
    )
    .await;
    let called_back = desk.await_articles("+4930999000", 3).await;
    assert_eq!(call_of(&called_back, 2), (OUT, ANSWERED, "c3".into()));
    assert!(
        !called_back.ticket.clone().unwrap().awaiting_response,
        "the call back answered"
    );
    assert_eq!(
        desk.of("+4930999000").await.len(),
        1,
        "one ticket for the caller"
    );
    desk.stop().await;
}

#[tokio::test]
async fn the_pbx_gets_clear_answers_and_its_retries_change_nothing() {
    let desk = Desk::start().await;
    let (status, body) = desk
        .pbx("wrong", "event=newCall&callId=x&direction=in&from=1&to=2")
        .await;
    assert_eq!(status, 401);
    assert!(body["error"].is_string());
    let (status, body) = desk.pbx(TOKEN, "event=ring&callId=x&direction=in").await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("unknown event"));
    let (status, body) = desk.pbx_json("[1, 2]").await;
    assert_eq!((status, body["error"].is_string()), (422, true));
    let (status, body) = desk
        .pbx(
            TOKEN,
            "event=newCall&callId=b1&direction=in&from=0170%200000000&to=200",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["action"], "reject");
    assert_eq!(body["reason"], "busy");

    // Every event sent three times, in JSON this time: one ticket, one call.
    for _ in 0..3 {
        for json in [
            r#"{"event":"newCall","callId":"r1","direction":"in","from":"+4930444000","to":"200"}"#,
            r#"{"event":"hangup","callId":"r1","direction":"in","from":"+4930444000","to":"200","cause":"cancel"}"#,
        ] {
            let (status, body) = desk.pbx_json(json).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body, serde_json::json!({}));
        }
    }
    let shown = desk.await_articles("+4930444000", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(desk.of("+4930444000").await.len(), 1, "one ticket");
    let shown_again = desk
        .tickets()
        .get_ticket(GetTicketRequest {
            ticket: shown.ticket.unwrap().id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown_again.articles.len(), 1, "one call");
    // An agent may still work the ticket as usual.
    desk.tickets()
        .add_article(AddArticleRequest {
            ticket: shown_again.ticket.unwrap().number,
            kind: ArticleKind::InternalNote as i32,
            body: "Customer called about camera 4".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    desk.stop().await;
}

/// Posts one form event to the PBX URL until it is accepted, as a PBX
/// retries: a refused connection or a 5xx is tried again.
async fn post_until_accepted(http: std::net::SocketAddr, form: &str) {
    let url = format!("http://{http}/api/v1/cti/{TOKEN}");
    loop {
        let output = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(["-X", "POST", &url, "--data", form])
            .output()
            .await
            .unwrap();
        if output.stdout == b"200" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn killing_the_desk_mid_flow_loses_no_call_and_doubles_none() {
    let env = TestEnv::new().await.unwrap();
    env.migrate(&hotline::fleet::modules()).await.unwrap();
    let (grpc, http) = (common::free_port(), common::free_port());
    let settings = [
        ("HOTLINE_INTAKE__CTI_TOKEN", TOKEN),
        ("HOTLINE_INTAKE__COUNTRY_CODE", "49"),
    ];
    let mut desk = common::serve(&env, grpc, http, &settings).await;
    const CALLS: usize = 60;
    let pbx = tokio::spawn(async move {
        for n in 0..CALLS {
            for event in ["event=newCall", "event=hangup&cause=cancel"] {
                let form = format!("{event}&callId=k{n}&direction=in&from=%2B4930100{n:04}&to=200");
                post_until_accepted(http, &form).await;
            }
        }
    });
    // SIGKILL twice while calls are flowing; the PBX keeps retrying.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        desk.start_kill().unwrap();
        desk.wait().await.unwrap();
        desk = common::serve(&env, grpc, http, &settings).await;
    }
    pbx.await.unwrap();

    let tickets = common::assert_one_ticket_each(&env, grpc, CALLS, "missed call").await;
    assert!(tickets.iter().all(|t| t.awaiting_response));
    desk.start_kill().unwrap();
    desk.wait().await.unwrap();
    env.cleanup_bus(&["sla", "pager", "intake"]).await.unwrap();
}
