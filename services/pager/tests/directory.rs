//! The pager's people are the directory's: `person.*` events in, copies
//! kept; schedules name directory people by email and follow a changed
//! email; a deactivated person is never paged (the level's other targets
//! are); the people from before the directory are paged as before until
//! someone with their email is added, then linked to them.

use std::time::Duration;

use chrono::Utc;
use hotline_kit::{
    auth::Role,
    bus::outbox::{self, envelope},
    testing::{EventTap, TestApp, TestEnv},
    time::timestamp,
};
use hotline_proto::{
    dispatch::v1::{
        self as dispatch, AddPersonRequest, DeactivatePersonRequest, UpdatePersonRequest,
        dispatch_service_client::DispatchServiceClient,
    },
    events::v1::{self as ev, event_envelope::Payload},
    pager::v1::{self as pb, pager_service_client::PagerServiceClient, target::Target as Kind},
};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

type Authed = InterceptedService<Channel, hotline_kit::grpc::BearerToken>;

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    async fn start() -> Self {
        let env = TestEnv::new().await.unwrap();
        let app = env
            .start(&[hotline_dispatch::module(), hotline_pager::module()])
            .await
            .unwrap();
        Self { env, app }
    }

    fn pager(&self) -> PagerServiceClient<Authed> {
        PagerServiceClient::new(self.app.channel(&self.env.token("mia", Role::Manager)))
    }

    fn directory(&self) -> DispatchServiceClient<Authed> {
        DispatchServiceClient::new(self.app.channel(&self.env.token("mia", Role::Manager)))
    }

    async fn hire(&self, name: &str) -> dispatch::Person {
        let person = self
            .directory()
            .add_person(AddPersonRequest {
                name: name.into(),
                email: at(name),
                roles: vec!["agent".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        self.until(&format!("the pager hears of {name}"), |people| {
            people.iter().any(|p| p.id == person.id)
        })
        .await;
        person
    }

    async fn people(&self) -> Vec<pb::Person> {
        self.pager()
            .list_people(pb::ListPeopleRequest {})
            .await
            .unwrap()
            .into_inner()
            .people
    }

    /// Waits until the pager's people satisfy `done`.
    async fn until(&self, what: &str, done: impl Fn(&[pb::Person]) -> bool) -> Vec<pb::Person> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let people = self.people().await;
            if done(&people) {
                return people;
            }
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn participants(&self) -> Vec<String> {
        self.pager()
            .list_schedules(pb::ListSchedulesRequest {})
            .await
            .unwrap()
            .into_inner()
            .schedules
            .remove(0)
            .participants
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["dispatch", "pager"]).await.unwrap();
    }
}

fn at(name: &str) -> String {
    format!("{name}@desk.example")
}

/// A weekly schedule "night" of `participants`, as named.
fn night(participants: &[String]) -> pb::Schedule {
    pb::Schedule {
        name: "night".into(),
        time_zone: "UTC".into(),
        participants: participants.to_vec(),
        shift_length: Some(prost_types::Duration {
            seconds: 7 * 86_400,
            nanos: 0,
        }),
        starts: "2026-01-05T09:00".into(),
        overrides: Vec::new(),
    }
}

fn level(targets: &[Kind]) -> pb::LevelTargets {
    pb::LevelTargets {
        level: 1,
        targets: targets
            .iter()
            .map(|t| pb::Target {
                target: Some(t.clone()),
            })
            .collect(),
    }
}

#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, says: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(says),
        "{:?} should say {says:?}",
        status.message()
    );
}

#[tokio::test]
async fn directory_people_are_the_pager_people_and_schedules_follow_them() {
    let desk = Desk::start().await;
    let ana = desk.hire("ana").await;
    desk.hire("bo").await;
    let people = desk.people().await;
    let copy = people.iter().find(|p| p.id == ana.id).unwrap();
    assert_eq!(
        (
            copy.name.as_str(),
            copy.email.as_str(),
            copy.active,
            copy.legacy
        ),
        ("ana", "ana@desk.example", true, false)
    );
    desk.pager()
        .put_schedule(night(&[ana.id.clone(), "BO@desk.example".into()]))
        .await
        .unwrap();
    assert_eq!(desk.participants().await, [at("ana"), at("bo")], "by email");

    // A new email in the directory: the schedule follows it.
    desk.directory()
        .update_person(UpdatePersonRequest {
            person: at("ana"),
            email: Some("ana.lima@desk.example".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    desk.until("the pager hears of ana's new email", |people| {
        people.iter().any(|p| p.email == "ana.lima@desk.example")
    })
    .await;
    assert_eq!(
        desk.participants().await,
        ["ana.lima@desk.example".to_owned(), at("bo")]
    );

    // Deactivated: kept, marked, never arranged again, and nobody is on
    // call in her turn.
    desk.directory()
        .deactivate_person(DeactivatePersonRequest {
            person: ana.id.clone(),
        })
        .await
        .unwrap();
    desk.until("the pager hears ana left", |people| {
        people.iter().any(|p| p.id == ana.id && !p.active)
    })
    .await;
    refused(
        desk.pager()
            .set_level_targets(level(&[Kind::Person("ana.lima@desk.example".into())]))
            .await,
        Code::FailedPrecondition,
        "ana <ana.lima@desk.example> is deactivated in the directory",
    );
    let on_call = desk
        .pager()
        .who_is_on_call(pb::WhoIsOnCallRequest {
            at: Some(timestamp("2026-01-06T00:00:00Z".parse().unwrap())),
        })
        .await
        .unwrap()
        .into_inner()
        .on_call;
    assert_eq!(on_call[0].person, "", "her turn reaches nobody");
    desk.stop().await;
}

#[tokio::test]
async fn webhooks_are_the_pagers_setting_and_people_are_added_in_the_directory() {
    let desk = Desk::start().await;
    let bo = desk.hire("bo").await;
    let set = desk
        .pager()
        .put_person(pb::Person {
            email: "Bo@Desk.example".into(),
            webhook_url: "https://hooks.example/bo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            set.id.as_str(),
            set.email.as_str(),
            set.webhook_url.as_str()
        ),
        (
            bo.id.as_str(),
            "bo@desk.example",
            "https://hooks.example/bo"
        )
    );
    // The directory's next change keeps the pager's setting.
    desk.directory()
        .update_person(UpdatePersonRequest {
            person: bo.id.clone(),
            name: Some("Bo Berg".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let people = desk
        .until("the pager hears bo's new name", |people| {
            people.iter().any(|p| p.name == "Bo Berg")
        })
        .await;
    assert_eq!(people[0].webhook_url, "https://hooks.example/bo");

    let mut pager = desk.pager();
    refused(
        pager
            .put_person(pb::Person {
                name: "dee".into(),
                email: "dee@desk.example".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "people are added in the directory (`hotline people add --name N --email dee@desk.example",
    );
    refused(
        pager
            .put_person(pb::Person {
                name: "dee".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "people are added in the directory",
    );
    for (webhook, says) in [
        ("ftp://hooks.example", "must be an http(s) URL"),
        ("https://hooks.example/\0", "NUL"),
    ] {
        refused(
            pager
                .put_person(pb::Person {
                    id: bo.id.clone(),
                    webhook_url: webhook.into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            says,
        );
    }
    refused(
        pager
            .put_person(pb::Person {
                email: format!("{}@desk.example", "b".repeat(300)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "longer than",
    );
    desk.stop().await;
}

/// The pager as the migration leaves a desk that had its own people:
/// `ana` (with an email and a webhook) and `dee` (neither), and a schedule
/// naming them.
async fn legacy(desk: &Desk) {
    let pool = desk.env.pool("pager").unwrap();
    sqlx::query(
        "INSERT INTO legacy_people (name, email, webhook_url) VALUES
             ('ana', ' Ana@Desk.example', 'https://hooks.example/ana'), ('dee', '', '')",
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
}

#[tokio::test]
async fn legacy_people_are_linked_by_email_when_the_directory_adds_them() {
    let desk = Desk::start().await;
    legacy(&desk).await;
    let people = desk.people().await;
    assert_eq!(
        people
            .iter()
            .map(|p| (p.name.as_str(), p.legacy))
            .collect::<Vec<_>>(),
        [("ana", true), ("dee", true)],
        "listed for adoption"
    );
    // Not on anything new until they are in the directory.
    refused(
        desk.pager()
            .set_level_targets(level(&[Kind::Person("ana".into())]))
            .await,
        Code::NotFound,
        "\"ana\" is one of the pager's people from before the directory",
    );

    let ana = desk.hire("ana").await;
    let people = desk.people().await;
    let copy = people.iter().find(|p| p.id == ana.id).unwrap();
    assert_eq!(
        copy.webhook_url, "https://hooks.example/ana",
        "her webhook came along"
    );
    assert_eq!(
        people
            .iter()
            .filter(|p| p.legacy)
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["dee"]
    );
    assert_eq!(
        desk.participants().await,
        [at("ana"), "dee".into()],
        "the schedule names her by email now; dee is still paged as before"
    );
    // Her old name is still taken, as what existing schedules held.
    let set = desk
        .pager()
        .set_level_targets(level(&[Kind::Person("ana".into())]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set, level(&[Kind::Person(at("ana"))]));
    desk.stop().await;
}

#[tokio::test]
async fn a_deactivated_person_is_not_paged_and_the_level_pages_its_other_targets() {
    let desk = Desk::start().await;
    let ana = desk.hire("ana").await;
    desk.hire("bo").await;
    let mut pager = desk.pager();
    for name in ["ana", "bo"] {
        pager
            .put_person(pb::Person {
                email: at(name),
                // Nobody listens there: the page is queued and retried.
                webhook_url: format!("http://127.0.0.1:9/{name}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    pager.put_schedule(night(&[at("ana")])).await.unwrap();
    pager
        .set_level_targets(level(&[
            Kind::Schedule("night".into()),
            Kind::Person(at("bo")),
        ]))
        .await
        .unwrap();
    desk.directory()
        .deactivate_person(DeactivatePersonRequest {
            person: ana.id.clone(),
        })
        .await
        .unwrap();
    desk.until("the pager hears ana left", |people| {
        people.iter().any(|p| p.id == ana.id && !p.active)
    })
    .await;

    let mut failures = EventTap::bound(&desk.env.config, "page.failed")
        .await
        .unwrap();
    let ticket = Uuid::now_v7();
    let now = Utc::now();
    let escalated = envelope(
        "sla.escalated",
        Some((ticket, 1)),
        now,
        Payload::SlaEscalated(ev::SlaEscalated {
            breach: Some(ev::Breach {
                ticket_id: ticket.to_string(),
                number: "HL-10001".into(),
                subject: "Recorder offline".into(),
                contact: "guard@customer.example".into(),
                due: Some(timestamp(now)),
                breach: 1,
                ..Default::default()
            }),
            level: 1,
            step: 1,
            escalated_at: Some(timestamp(now)),
        }),
    );
    // Published as sla would: through an outbox (the pager's) and a relay.
    let pool = desk.env.pool("pager").unwrap();
    let mut conn = pool.acquire().await.unwrap();
    outbox::enqueue(&mut conn, &[escalated]).await.unwrap();

    let (failed, _) = failures
        .next(Duration::from_secs(10))
        .await
        .expect("page.failed");
    let Some(Payload::PageFailed(failed)) = failed.payload else {
        panic!("not a page.failed");
    };
    assert_eq!(failed.target, "schedule night");
    assert_eq!(
        failed.reason,
        "ana@desk.example is deactivated in the directory"
    );
    let pages = pager
        .list_pages(pb::ListPagesRequest {
            ticket: "HL-10001".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .pages;
    assert_eq!(
        pages.iter().map(|p| p.target.as_str()).collect::<Vec<_>>(),
        ["bo@desk.example"],
        "only bo is paged"
    );
    desk.stop().await;
}

#[tokio::test]
async fn people_added_before_the_pager_listened_are_read_from_the_directory_at_start() {
    let env = TestEnv::new().await.unwrap();
    // The directory alone: its person.added finds no pager queue.
    let alone = env.start(&[hotline_dispatch::module()]).await.unwrap();
    let ana = DispatchServiceClient::new(alone.channel(&env.token("mia", Role::Manager)))
        .add_person(AddPersonRequest {
            name: "ana".into(),
            email: at("ana"),
            roles: vec!["agent".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    alone.stop().await.unwrap();

    let app = env
        .start(&[hotline_dispatch::module(), hotline_pager::module()])
        .await
        .unwrap();
    let desk = Desk { env, app };
    desk.until("the pager reads ana from the directory", |people| {
        people
            .iter()
            .any(|p| p.id == ana.id && p.email == at("ana"))
    })
    .await;
    desk.pager()
        .put_schedule(night(&[at("ana")]))
        .await
        .unwrap();
    desk.stop().await;
}
