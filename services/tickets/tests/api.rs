//! The tickets API over real gRPC, with real PostgreSQL and RabbitMQ.

use std::{collections::HashSet, time::Duration};

use hotline_kit::{
    auth::Role,
    config::LogConfig,
    telemetry::Telemetry,
    testing::{EventTap, TestApp, TestEnv},
};
use hotline_proto::tickets::v1::{self as pb, ticket_service_client::TicketServiceClient};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

type Client = TicketServiceClient<InterceptedService<Channel, hotline_kit::grpc::BearerToken>>;

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    async fn start() -> Self {
        let env = TestEnv::new().await.unwrap();
        let app = env.start(&[hotline_tickets::module()]).await.unwrap();
        Self { env, app }
    }

    fn client(&self, role: Role) -> Client {
        TicketServiceClient::new(self.app.channel(&self.env.token("ada", role)))
    }

    fn agent(&self) -> Client {
        self.client(Role::Agent)
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["tickets"]).await.unwrap();
    }
}

fn report(subject: &str) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        subject: subject.into(),
        body: "The recorder lost camera 3 at 02:10".into(),
        contact: "ops@acme.example".into(),
        ..Default::default()
    }
}

async fn create(client: &mut Client, request: pb::CreateTicketRequest) -> pb::Ticket {
    client
        .create_ticket(request)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
}

async fn show(client: &mut Client, ticket: &str) -> pb::GetTicketResponse {
    client
        .get_ticket(pb::GetTicketRequest {
            ticket: ticket.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn add(
    client: &mut Client,
    ticket: &str,
    kind: pb::ArticleKind,
    call: Option<pb::Call>,
) -> Result<pb::Ticket, tonic::Status> {
    let response = client
        .add_article(pb::AddArticleRequest {
            ticket: ticket.into(),
            kind: kind as i32,
            body: "text".into(),
            call,
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().ticket.unwrap())
}

fn call(direction: pb::CallDirection, outcome: pb::CallOutcome) -> Option<pb::Call> {
    Some(pb::Call {
        direction: direction as i32,
        outcome: outcome as i32,
        call_id: "call-1".into(),
    })
}

fn reference(ticket: &pb::Ticket) -> pb::TicketRef {
    pb::TicketRef {
        ticket: ticket.number.clone(),
    }
}

#[tokio::test]
async fn a_reported_fault_becomes_a_numbered_ticket_awaiting_response() {
    let desk = Desk::start().await;
    let mut client = desk.agent();
    let ticket = create(&mut client, report("Camera 3 offline")).await;
    assert_eq!(ticket.number, "HL-10001");
    assert_eq!(ticket.status, pb::Status::New as i32);
    assert!(ticket.awaiting_response);
    assert!(ticket.awaiting_since.is_some());
    assert_eq!(ticket.channel, pb::Channel::Api as i32);
    assert_eq!(ticket.priority, pb::Priority::Normal as i32);

    for key in [ticket.number.clone(), ticket.id.clone(), "10001".into()] {
        let found = show(&mut client, &key).await;
        assert_eq!(found.ticket.unwrap().id, ticket.id);
        assert_eq!(found.articles.len(), 1);
        assert_eq!(
            found.articles[0].kind,
            pb::ArticleKind::CustomerMessage as i32
        );
        assert_eq!(found.articles[0].author, "ops@acme.example");
    }
    let second = create(&mut client, report("Recorder beeping")).await;
    assert_eq!(second.number, "HL-10002", "numbers increase");
    desk.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_never_opens_a_second_ticket() {
    let desk = Desk::start().await;
    let attempts = (0..8).map(|_| {
        let mut client = desk.agent();
        tokio::spawn(async move {
            let request = pb::CreateTicketRequest {
                idempotency_key: "call-7781".into(),
                ..report("Missed call")
            };
            client.create_ticket(request).await.unwrap().into_inner()
        })
    });
    let mut ids = HashSet::new();
    let mut created = 0;
    for attempt in attempts {
        let response = attempt.await.unwrap();
        ids.insert(response.ticket.unwrap().id);
        created += usize::from(response.created);
    }
    assert_eq!(ids.len(), 1, "one ticket for one key");
    assert_eq!(created, 1, "only the first attempt created it");
    let listed = desk
        .agent()
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tickets.len(), 1);
    desk.stop().await;
}

#[tokio::test]
async fn concurrent_creates_each_get_their_own_ticket_and_one_announcement() {
    let desk = Desk::start().await;
    let mut bridge = desk.client(Role::Bridge);
    let earlier = create(&mut bridge, report("Earlier fault")).await;
    bridge
        .add_article(pb::AddArticleRequest {
            ticket: earlier.number.clone(),
            kind: pb::ArticleKind::CustomerMessage as i32,
            body: "More detail".into(),
            idempotency_key: "mail:<more@acme.example>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut tap = EventTap::bound(&desk.env.config, "ticket.created")
        .await
        .unwrap();
    // 20 without a key (the first five with a file each), 10 keys asked
    // twice each, and one key already used for an article on `earlier`:
    // written together, in whatever batches. A batch that holds the last
    // one is refused as a whole and written again one by one.
    let mut keys: Vec<String> = (0..20).map(|_| String::new()).collect();
    for n in 0..10 {
        keys.push(format!("cti:pair-{n}"));
        keys.push(format!("cti:pair-{n}"));
    }
    keys.push("mail:<more@acme.example>".into());
    let attempts: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| {
            let mut client = desk.client(Role::Bridge);
            let attachments = if n < 5 {
                vec![pb::NewAttachment {
                    name: format!("log-{n}.txt"),
                    content_type: "text/plain".into(),
                    content: format!("log of fault {n}").into_bytes(),
                }]
            } else {
                Vec::new()
            };
            let request = pb::CreateTicketRequest {
                idempotency_key: key.clone(),
                attachments,
                ..report(&format!("Fault {n}"))
            };
            tokio::spawn(async move { client.create_ticket(request).await.unwrap().into_inner() })
        })
        .collect();
    let mut answers = Vec::new();
    for attempt in attempts {
        answers.push(attempt.await.unwrap());
    }
    let tickets: Vec<pb::Ticket> = answers.iter().map(|a| a.ticket.clone().unwrap()).collect();
    for pair in 0..10 {
        let (a, b) = (&answers[20 + 2 * pair], &answers[21 + 2 * pair]);
        assert_eq!(
            tickets[20 + 2 * pair].id,
            tickets[21 + 2 * pair].id,
            "one ticket per key"
        );
        assert_eq!(usize::from(a.created) + usize::from(b.created), 1);
    }
    let last = answers.last().unwrap();
    assert!(!last.created, "a key used for an article opens nothing");
    assert_eq!(tickets.last().unwrap().number, earlier.number);

    let new: HashSet<&str> = tickets[..40].iter().map(|t| t.id.as_str()).collect();
    let numbers: HashSet<&str> = tickets[..40].iter().map(|t| t.number.as_str()).collect();
    assert_eq!(new.len(), 30);
    assert_eq!(numbers.len(), 30, "every ticket has a number of its own");
    assert!(!numbers.contains(earlier.number.as_str()));

    let mut announced = Vec::new();
    while let Some((event, _)) = tap.next(Duration::from_secs(5)).await {
        announced.push(event.ticket_id);
    }
    announced.sort();
    let mut expected: Vec<String> = new.iter().map(|id| (*id).to_owned()).collect();
    expected.sort();
    assert_eq!(announced, expected, "each new ticket announced once");
    for ticket in &tickets[..40] {
        let found = show(&mut bridge, &ticket.number).await;
        assert_eq!(
            found.articles.len(),
            1,
            "{} has its first article only",
            ticket.number
        );
        assert_eq!(found.ticket.unwrap().subject, ticket.subject);
    }
    desk.stop().await;
}

#[tokio::test]
async fn a_bridge_retrying_an_article_adds_it_once() {
    let desk = Desk::start().await;
    let mut bridge = desk.client(Role::Bridge);
    let ticket = create(&mut bridge, report("Camera 9 offline")).await;
    let retry = |key: &str| pb::AddArticleRequest {
        ticket: ticket.number.clone(),
        kind: pb::ArticleKind::CustomerMessage as i32,
        body: "Still offline.".into(),
        idempotency_key: key.into(),
        ..Default::default()
    };
    let attempts = (0..6).map(|_| {
        let (mut bridge, request) = (desk.client(Role::Bridge), retry("<m-42@customer.example>"));
        tokio::spawn(async move { bridge.add_article(request).await.unwrap().into_inner() })
    });
    let mut articles = HashSet::new();
    let mut versions = HashSet::new();
    for attempt in attempts {
        let response = attempt.await.unwrap();
        articles.insert(response.article.unwrap().id);
        versions.insert(response.ticket.unwrap().version);
    }
    assert_eq!(articles.len(), 1, "one article for one key");
    assert_eq!(versions.len(), 1, "retries change nothing");
    let shown = show(&mut bridge, &ticket.number).await;
    assert_eq!(
        shown.articles.len(),
        2,
        "the first message and the one added"
    );

    // The same key on another ticket: the work was done on the first one.
    let other = create(&mut bridge, report("Another site")).await;
    let elsewhere = bridge
        .add_article(pb::AddArticleRequest {
            ticket: other.number.clone(),
            ..retry("<m-42@customer.example>")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(elsewhere.ticket.unwrap().number, ticket.number);
    assert!(articles.contains(&elsewhere.article.unwrap().id));

    // A ticket opened with a key already used for an article: that article's
    // ticket, nothing new.
    let opened_before = bridge
        .create_ticket(pb::CreateTicketRequest {
            idempotency_key: "<m-42@customer.example>".into(),
            ..report("Reopened as new")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!opened_before.created);
    assert_eq!(opened_before.ticket.unwrap().number, ticket.number);

    // A bridge that opened a ticket and retries as if it had not: the
    // first article carries the ticket's key, so nothing is added.
    let opened = create(
        &mut bridge,
        pb::CreateTicketRequest {
            idempotency_key: "cti:c-77".into(),
            ..report("Missed call")
        },
    )
    .await;
    let again = bridge
        .add_article(pb::AddArticleRequest {
            ticket: opened.number.clone(),
            ..retry("cti:c-77")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.ticket.unwrap().version,
        opened.version,
        "nothing added"
    );
    desk.stop().await;
}

#[tokio::test]
async fn the_awaiting_response_rule_follows_contacts_and_responses() {
    let desk = Desk::start().await;
    let mut client = desk.agent();
    let ticket = create(&mut client, report("No picture")).await;
    let since = ticket.awaiting_since;

    let noted = add(
        &mut client,
        &ticket.number,
        pb::ArticleKind::InternalNote,
        None,
    )
    .await
    .unwrap();
    assert!(noted.awaiting_response, "an internal note is no response");
    assert_eq!(noted.awaiting_since, since);
    let unanswered = add(
        &mut client,
        &ticket.number,
        pb::ArticleKind::Call,
        call(pb::CallDirection::Outbound, pb::CallOutcome::Missed),
    )
    .await
    .unwrap();
    assert!(
        unanswered.awaiting_response,
        "a callback nobody picked up is no response"
    );

    let called_back = add(
        &mut client,
        &ticket.number,
        pb::ArticleKind::Call,
        call(pb::CallDirection::Outbound, pb::CallOutcome::Answered),
    )
    .await
    .unwrap();
    assert!(!called_back.awaiting_response);
    assert_eq!(called_back.status, pb::Status::Open as i32);

    let again = add(
        &mut client,
        &ticket.number,
        pb::ArticleKind::CustomerMessage,
        None,
    )
    .await
    .unwrap();
    assert!(again.awaiting_response, "the customer wrote back");
    assert!(again.awaiting_since.unwrap().seconds >= since.unwrap().seconds);
    let arrived = add(
        &mut client,
        &ticket.number,
        pb::ArticleKind::OnsiteArrival,
        None,
    )
    .await
    .unwrap();
    assert!(
        !arrived.awaiting_response,
        "a technician on site is a response"
    );

    let answered = create(
        &mut client,
        pb::CreateTicketRequest {
            channel: pb::Channel::Phone as i32,
            first_article: pb::ArticleKind::Call as i32,
            call: call(pb::CallDirection::Inbound, pb::CallOutcome::Answered),
            ..report("Caller reports a dead camera")
        },
    )
    .await;
    assert!(
        !answered.awaiting_response,
        "an answered call opens its ticket responded"
    );
    assert_eq!(answered.status, pb::Status::Open as i32);
    desk.stop().await;
}

#[tokio::test]
async fn html_is_kept_sanitised_and_files_are_kept_with_their_article() {
    let desk = Desk::start().await;
    let mut client = desk.client(Role::Bridge);
    let file = |name: &str, content_type: &str, content: &[u8]| pb::NewAttachment {
        name: name.into(),
        content_type: content_type.into(),
        content: content.to_vec(),
    };
    let png = [0x89, b'P', b'N', b'G', 0, 1, 2, 255];
    let ticket = create(
        &mut client,
        pb::CreateTicketRequest {
            html: "<p onclick=\"steal()\">Camera <b>3</b> lost</p><script>steal()</script>\
                   <img src=\"https://tracker.example/p.gif\"><a href=\"javascript:steal()\">x</a>"
                .into(),
            attachments: vec![
                file("snapshot.png", "image/png", &png),
                file("../../etc/passwd", "not a type", b"root:x:0:0"),
            ],
            idempotency_key: "mail:<files@acme.example>".into(),
            ..report("Camera 3 lost")
        },
    )
    .await;
    let shown = show(&mut desk.agent(), &ticket.number).await;
    let first = &shown.articles[0];
    assert!(first.html.contains("<b>3</b>"), "{}", first.html);
    for unsafe_part in [
        "script",
        "steal",
        "onclick",
        "tracker.example",
        "javascript",
    ] {
        assert!(
            !first.html.contains(unsafe_part),
            "{unsafe_part} in {}",
            first.html
        );
    }
    let listed: Vec<(&str, &str, i64)> = first
        .attachments
        .iter()
        .map(|a| (a.name.as_str(), a.content_type.as_str(), a.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("snapshot.png", "image/png", 8),
            ("passwd", "application/octet-stream", 10)
        ]
    );
    let fetched = desk
        .agent()
        .get_attachment(pb::GetAttachmentRequest {
            id: first.attachments[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.content, png, "the bytes come back as sent");
    assert_eq!(fetched.attachment.unwrap().name, "snapshot.png");

    // A retry returns the same files, and keeps no second copy.
    let again = client
        .create_ticket(pb::CreateTicketRequest {
            attachments: vec![file("snapshot.png", "image/png", &png)],
            idempotency_key: "mail:<files@acme.example>".into(),
            ..report("Camera 3 lost")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);

    // A later article with a file; the file in the event's article too.
    let added = client
        .add_article(pb::AddArticleRequest {
            ticket: ticket.number.clone(),
            kind: pb::ArticleKind::CustomerMessage as i32,
            body: "The log.".into(),
            attachments: vec![file("nvr.log", "text/plain", b"disk 2 failed")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let article = added.article.unwrap();
    assert_eq!(article.attachments.len(), 1);
    let log = desk
        .agent()
        .get_attachment(pb::GetAttachmentRequest {
            id: article.attachments[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.content, b"disk 2 failed");

    let too_many = client
        .add_article(pb::AddArticleRequest {
            ticket: ticket.number.clone(),
            kind: pb::ArticleKind::CustomerMessage as i32,
            body: "Many.".into(),
            attachments: (0..21)
                .map(|n| file(&format!("{n}.txt"), "", b"x"))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(
        too_many.message().contains("at most 20"),
        "{}",
        too_many.message()
    );
    let unknown = desk
        .agent()
        .get_attachment(pb::GetAttachmentRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let shown = show(&mut desk.agent(), &ticket.number).await;
    assert_eq!(shown.articles.len(), 2, "the refused article wrote nothing");
    desk.stop().await;
}

#[tokio::test]
async fn the_state_machine_refuses_invalid_transitions_with_a_reason() {
    let desk = Desk::start().await;
    let mut client = desk.agent();
    let ticket = create(&mut client, report("Disk failure")).await;

    let refused = client.close_ticket(reference(&ticket)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("resolve it before you close it"),
        "{}",
        refused.message()
    );
    let refused = client.reopen_ticket(reference(&ticket)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    let resolved = client
        .resolve_ticket(reference(&ticket))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(resolved.status, pb::Status::Resolved as i32);
    assert!(!resolved.awaiting_response);
    // The customer writes back: the ticket reopens and waits again.
    let reopened = add(
        &mut client,
        &ticket.number,
        pb::ArticleKind::CustomerMessage,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reopened.status, pb::Status::Open as i32);
    assert!(reopened.awaiting_response);

    client.resolve_ticket(reference(&ticket)).await.unwrap();
    let closed = client
        .close_ticket(reference(&ticket))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(closed.status, pb::Status::Closed as i32);
    let refused = add(
        &mut client,
        &ticket.number,
        pb::ArticleKind::CustomerMessage,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("closed"),
        "{}",
        refused.message()
    );
    let refused = client
        .assign_ticket(pb::AssignTicketRequest {
            ticket: ticket.number.clone(),
            assignee: "bob".into(),
            expected_assignee: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let reopened = client
        .reopen_ticket(reference(&ticket))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(reopened.status, pb::Status::Open as i32);
    desk.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let desk = Desk::start().await;
    let mut client = desk.agent();
    let cases = [
        pb::CreateTicketRequest {
            subject: "   ".into(),
            ..report("")
        },
        pb::CreateTicketRequest {
            subject: "x".repeat(501),
            ..report("")
        },
        pb::CreateTicketRequest {
            priority: 99,
            ..report("Bad priority")
        },
        pb::CreateTicketRequest {
            first_article: pb::ArticleKind::Call as i32,
            ..report("Call without call")
        },
    ];
    for request in cases {
        let refused = client.create_ticket(request).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{}",
            refused.message()
        );
        assert!(!refused.message().is_empty());
    }
    let listed = client
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tickets.is_empty(), "nothing half-written");
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&desk.env.pool("tickets").unwrap())
        .await
        .unwrap();
    assert_eq!(outbox, 0, "no event for a refused request");

    let missing = client
        .get_ticket(pb::GetTicketRequest {
            ticket: "HL-99999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let garbage = client
        .get_ticket(pb::GetTicketRequest {
            ticket: "drop table".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
    let bad_page = client
        .list_tickets(pb::ListTicketsRequest {
            page_token: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_page.code(), Code::InvalidArgument);
    desk.stop().await;
}

#[tokio::test]
async fn lists_filter_and_page_without_gaps_or_overlaps() {
    let desk = Desk::start().await;
    let mut client = desk.agent();
    for (i, channel) in [
        pb::Channel::Email,
        pb::Channel::Phone,
        pb::Channel::Email,
        pb::Channel::Web,
        pb::Channel::Email,
        pb::Channel::Api,
        pb::Channel::Email,
    ]
    .into_iter()
    .enumerate()
    {
        let subject = if i % 2 == 0 {
            format!("Camera {i} 100% offline")
        } else {
            format!("Recorder {i}0 down")
        };
        create(
            &mut client,
            pb::CreateTicketRequest {
                channel: channel as i32,
                contact: format!("site{}@acme.example", i % 3),
                ..report(&subject)
            },
        )
        .await;
    }
    let first = create(&mut client, report("Answered")).await;
    add(
        &mut client,
        &first.number,
        pb::ArticleKind::AgentReply,
        None,
    )
    .await
    .unwrap();
    client
        .assign_ticket(pb::AssignTicketRequest {
            ticket: "HL-10002".into(),
            assignee: "bob".into(),
            expected_assignee: None,
        })
        .await
        .unwrap();

    let list = |request: pb::ListTicketsRequest| {
        let mut client = desk.agent();
        async move {
            client
                .list_tickets(request)
                .await
                .unwrap()
                .into_inner()
                .tickets
        }
    };
    let filters = [
        (
            "channel email",
            pb::ListTicketsRequest {
                channel: pb::Channel::Email as i32,
                ..Default::default()
            },
            4,
        ),
        (
            "awaiting",
            pb::ListTicketsRequest {
                awaiting_response: true,
                ..Default::default()
            },
            7,
        ),
        (
            "assignee",
            pb::ListTicketsRequest {
                assignee: "bob".into(),
                ..Default::default()
            },
            1,
        ),
        (
            "contact",
            pb::ListTicketsRequest {
                contact: "site0@acme.example".into(),
                ..Default::default()
            },
            3,
        ),
        (
            "text, any case",
            pb::ListTicketsRequest {
                text: "camera".into(),
                ..Default::default()
            },
            4,
        ),
        (
            "text with %",
            pb::ListTicketsRequest {
                text: "100%".into(),
                ..Default::default()
            },
            4,
        ),
        (
            "% is literal",
            pb::ListTicketsRequest {
                text: "0%".into(),
                ..Default::default()
            },
            4,
        ),
        (
            "_ is literal",
            pb::ListTicketsRequest {
                text: "_".into(),
                ..Default::default()
            },
            0,
        ),
    ];
    for (label, request, expected) in filters {
        assert_eq!(list(request).await.len(), expected, "{label}");
    }
    let open = list(pb::ListTicketsRequest {
        status: vec![pb::Status::Open as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(open.len(), 2, "answered and assigned");

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tickets(pb::ListTicketsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tickets.len() <= 3);
        seen.extend(page.tickets.into_iter().map(|t| t.number));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (10001..=10008).rev().map(|n| format!("HL-{n}")).collect();
    assert_eq!(seen, expected, "newest first, every ticket once");
    desk.stop().await;
}

#[tokio::test]
async fn callers_need_a_valid_token_and_the_right_role() {
    let desk = Desk::start().await;
    let anonymous = TicketServiceClient::new(
        hotline_kit::grpc::channel(&format!("http://{}", desk.app.grpc_addr)).unwrap(),
    )
    .list_tickets(pb::ListTicketsRequest::default())
    .await
    .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let other = TestEnv::new().await.unwrap();
    let forged = TicketServiceClient::new(desk.app.channel(&other.token("mallory", Role::Admin)))
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        forged.code(),
        Code::Unauthenticated,
        "a token signed with another secret"
    );

    let ticket = create(&mut desk.agent(), report("Fan noise")).await;
    let denied = desk
        .client(Role::Technician)
        .close_ticket(reference(&ticket))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("needs one of the roles"),
        "{}",
        denied.message()
    );
    let denied = desk
        .client(Role::Bridge)
        .assign_ticket(pb::AssignTicketRequest {
            ticket: ticket.number.clone(),
            assignee: "x".into(),
            expected_assignee: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    desk.client(Role::Technician)
        .resolve_ticket(reference(&ticket))
        .await
        .unwrap();
    desk.client(Role::Admin)
        .close_ticket(reference(&ticket))
        .await
        .unwrap();

    // Health needs no token.
    let channel = hotline_kit::grpc::channel(&format!("http://{}", desk.app.grpc_addr)).unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "hotline.tickets.v1.TicketService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    desk.stop().await;
}

#[tokio::test]
async fn every_change_is_announced_with_the_tickets_version_and_trace() {
    let _ = Telemetry::init(&LogConfig::default(), "tickets-test");
    let desk = Desk::start().await;
    let mut tap = EventTap::new(&desk.env.config).await.unwrap();
    let mut client = desk.agent();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(report("Lens fogged"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let ticket = client
        .create_ticket(request)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    add(
        &mut client,
        &ticket.number,
        pb::ArticleKind::AgentReply,
        None,
    )
    .await
    .unwrap();
    client.resolve_ticket(reference(&ticket)).await.unwrap();

    let mut events = Vec::new();
    while events.len() < 8 {
        let Some((event, properties)) = tap.next(Duration::from_secs(10)).await else {
            break;
        };
        if event.r#type == "ticket.created" {
            let header = hotline_kit::bus::header_str(properties.headers().as_ref(), "traceparent")
                .unwrap_or_default();
            assert!(
                header.contains(trace_id),
                "the caller's trace reaches the bus: {header:?}"
            );
        }
        events.push((event.r#type, event.ticket_version, event.ticket_id));
    }
    let types: Vec<(&str, i64)> = events.iter().map(|(t, v, _)| (t.as_str(), *v)).collect();
    assert_eq!(
        types,
        vec![
            ("ticket.created", 1),
            ("ticket.awaiting_response", 1),
            ("ticket.article_added", 2),
            ("ticket.status_changed", 2),
            ("ticket.responded", 2),
            ("ticket.status_changed", 3),
            ("ticket.resolved", 3),
        ]
    );
    assert!(events.iter().all(|(_, _, id)| *id == ticket.id));
    desk.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_over_http() {
    let desk = Desk::start().await;
    create(&mut desk.agent(), report("Metrics")).await;
    assert_eq!(desk.app.http_get("/healthz").await.unwrap().0, 200);
    desk.app
        .await_readiness(200, Duration::from_secs(10))
        .await
        .unwrap();
    let (status, metrics) = desk.app.http_get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("hotline_tickets_opened_total"),
        "{metrics}"
    );
    desk.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services_without_a_token() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let desk = Desk::start().await;
    let channel = hotline_kit::grpc::channel(&format!("http://{}", desk.app.grpc_addr)).unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"hotline.tickets.v1.TicketService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    desk.stop().await;
}

#[tokio::test]
async fn a_reply_or_note_without_text_is_refused_and_the_clock_runs_on() {
    let desk = Desk::start().await;
    let mut client = desk.agent();
    let ticket = create(&mut client, report("Camera 3 offline")).await;
    for kind in [pb::ArticleKind::AgentReply, pb::ArticleKind::InternalNote] {
        for body in ["", " \n\t "] {
            let refused = client
                .add_article(pb::AddArticleRequest {
                    ticket: ticket.number.clone(),
                    kind: kind as i32,
                    body: body.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{kind:?} {body:?}");
            assert!(refused.message().contains("needs a message"), "{refused:?}");
        }
    }
    let shown = show(&mut client, &ticket.number).await;
    assert_eq!(shown.articles.len(), 1, "nothing was added");
    assert!(
        shown.ticket.unwrap().awaiting_response,
        "an empty reply is no response"
    );
    desk.stop().await;
}
