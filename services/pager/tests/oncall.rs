//! Who gets woken, as the pager's API takes it: who may change the
//! webhooks, rotations, overrides and level targets, and the refusals that
//! say what to change. People come from the directory (`dispatch` runs
//! alongside), named by email.

use chrono::{Duration, Utc};
use hotline_kit::{
    auth::Role,
    testing::{TestApp, TestEnv},
    time::timestamp,
};
use hotline_proto::{
    dispatch::v1::{AddPersonRequest, dispatch_service_client::DispatchServiceClient},
    pager::v1::{self as pb, pager_service_client::PagerServiceClient, target::Target as Kind},
};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

type Client = PagerServiceClient<InterceptedService<Channel, hotline_kit::grpc::BearerToken>>;

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

    /// Adds `name` to the directory as `name@desk.example` and waits until
    /// the pager has heard of them.
    async fn hire(&self, name: &str) {
        self.hire_as(name, &at(name)).await;
    }

    async fn hire_as(&self, name: &str, email: &str) {
        DispatchServiceClient::new(self.app.channel(&self.env.token("mia", Role::Manager)))
            .add_person(AddPersonRequest {
                name: name.into(),
                email: email.into(),
                roles: vec!["agent".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut pager = self.client(Role::Agent);
        loop {
            let people = pager
                .list_people(pb::ListPeopleRequest {})
                .await
                .unwrap()
                .into_inner()
                .people;
            if people.iter().any(|p| p.email == email) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pager never heard of {name}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn client(&self, role: Role) -> Client {
        PagerServiceClient::new(self.app.channel(&self.env.token("mia", role)))
    }

    /// ana, bo and cy, and a weekly schedule "night" of ana and bo.
    async fn staffed() -> Self {
        let desk = Self::start().await;
        for name in ["ana", "bo", "cy"] {
            desk.hire(name).await;
        }
        desk.client(Role::Manager)
            .put_schedule(night(&["ana", "bo"]))
            .await
            .unwrap();
        desk
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["dispatch", "pager"]).await.unwrap();
    }
}

/// How the directory and the pager name `name`.
fn at(name: &str) -> String {
    format!("{name}@desk.example")
}

/// A weekly schedule "night" of `people` (directory people, by name).
fn night(people: &[&str]) -> pb::Schedule {
    pb::Schedule {
        name: "night".into(),
        time_zone: "Europe/Berlin".into(),
        participants: people.iter().map(|p| at(p)).collect(),
        shift_length: Some(prost_types::Duration {
            seconds: 7 * 86_400,
            nanos: 0,
        }),
        starts: "2026-01-05T09:00".into(),
        overrides: Vec::new(),
    }
}

/// `person` (as named in the request) on call on "night" from an hour from
/// now, for `hours`.
fn cover(person: &str, hours: i64) -> pb::Override {
    let from = Utc::now() + Duration::hours(1);
    pb::Override {
        schedule: "night".into(),
        person: person.into(),
        starts_at: Some(timestamp(from)),
        ends_at: Some(timestamp(from + Duration::hours(hours))),
    }
}

fn targets(targets: &[Kind]) -> pb::LevelTargets {
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

/// Asserts `result` is refused with `code` and a message containing `says`.
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
async fn managers_arrange_who_is_woken_and_dispatchers_swap_shifts() {
    let desk = Desk::staffed().await;
    for role in [Role::Agent, Role::Technician, Role::Dispatcher] {
        let mut client = desk.client(role);
        refused(
            client.put_schedule(night(&["bo"])).await,
            Code::PermissionDenied,
            "manager",
        );
        refused(
            client
                .set_level_targets(targets(&[Kind::Person("cy".into())]))
                .await,
            Code::PermissionDenied,
            "manager",
        );
        refused(
            client
                .put_person(pb::Person {
                    email: at("cy"),
                    webhook_url: "https://hooks.example/cy".into(),
                    ..Default::default()
                })
                .await,
            Code::PermissionDenied,
            "manager",
        );
    }
    for role in [Role::Agent, Role::Technician] {
        refused(
            desk.client(role).add_override(cover(&at("cy"), 8)).await,
            Code::PermissionDenied,
            "dispatcher",
        );
    }
    let taken = desk
        .client(Role::Dispatcher)
        .add_override(cover("CY@desk.example", 8))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (taken.schedule.as_str(), taken.person.as_str()),
        ("night", "cy@desk.example"),
        "stored as the directory writes the email"
    );
    desk.client(Role::Admin)
        .set_level_targets(targets(&[Kind::Schedule("night".into())]))
        .await
        .unwrap();
    // Everyone at the desk reads them.
    let schedules = desk
        .client(Role::Agent)
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .schedules;
    assert_eq!(schedules[0].participants, [at("ana"), at("bo")]);
    assert_eq!(
        schedules[0].overrides,
        [taken],
        "the override to come is listed"
    );
    desk.stop().await;
}

#[tokio::test]
async fn a_schedule_that_cannot_rotate_is_refused_saying_what_to_change() {
    let desk = Desk::staffed().await;
    let mut manager = desk.client(Role::Manager);
    let with = |change: &dyn Fn(&mut pb::Schedule)| {
        let mut schedule = night(&["ana", "bo"]);
        change(&mut schedule);
        schedule
    };
    let cases: Vec<(pb::Schedule, Code, &str)> = vec![
        (
            with(&|s| s.time_zone = "Mars/Olympus".into()),
            Code::InvalidArgument,
            "not an IANA time zone",
        ),
        (
            with(&|s| s.time_zone = " ".into()),
            Code::InvalidArgument,
            "time_zone is required",
        ),
        (
            with(&|s| s.shift_length = None),
            Code::InvalidArgument,
            "between a minute and a year",
        ),
        (
            with(&|s| {
                s.shift_length = Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                })
            }),
            Code::InvalidArgument,
            "between a minute and a year",
        ),
        (
            with(&|s| {
                s.shift_length = Some(prost_types::Duration {
                    seconds: -86_400,
                    nanos: 0,
                })
            }),
            Code::InvalidArgument,
            "between a minute and a year",
        ),
        (
            with(&|s| s.participants.clear()),
            Code::InvalidArgument,
            "at least one participant",
        ),
        (
            with(&|s| s.participants.push("zed".into())),
            Code::NotFound,
            "no one in the directory is \"zed\"",
        ),
        (
            with(&|s| s.participants.push(" ".into())),
            Code::InvalidArgument,
            "a participant is required",
        ),
        (
            with(&|s| {
                s.participants
                    .push(format!("{}@desk.example", "z".repeat(250)))
            }),
            Code::InvalidArgument,
            "longer than 254",
        ),
        (
            with(&|s| s.participants.push("a\0b".into())),
            Code::InvalidArgument,
            "NUL",
        ),
        (
            with(&|s| s.name = "night\u{1b}[2J".into()),
            Code::InvalidArgument,
            "control character",
        ),
        (
            with(&|s| s.name = "night,day".into()),
            Code::InvalidArgument,
            "comma",
        ),
        (
            with(&|s| s.name = "n".repeat(101)),
            Code::InvalidArgument,
            "longer than 100",
        ),
        (
            with(&|s| s.name = String::new()),
            Code::InvalidArgument,
            "name is required",
        ),
        (
            with(&|s| s.starts = "next monday".into()),
            Code::InvalidArgument,
            "like 2026-11-02T09:00",
        ),
        (
            with(&|s| s.participants = vec!["ana".into(); 101]),
            Code::InvalidArgument,
            "at most 100 participants",
        ),
    ];
    for (schedule, code, says) in cases {
        refused(manager.put_schedule(schedule).await, code, says);
    }
    // People are stored by their email as the directory writes it, however
    // typed; odd Unicode in a name is a name like another.
    desk.hire_as("Zoë 🌙", "zoe@desk.example").await;
    let stored = manager
        .put_schedule(with(&|s| {
            s.participants = vec![" ZOE@Desk.example ".into()]
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.participants, ["zoe@desk.example"]);
    desk.stop().await;
}

#[tokio::test]
async fn an_override_names_a_known_schedule_and_person_and_a_time_to_come() {
    let desk = Desk::staffed().await;
    let mut dispatcher = desk.client(Role::Dispatcher);
    let backwards = {
        let mut taken = cover(&at("cy"), 8);
        std::mem::swap(&mut taken.starts_at, &mut taken.ends_at);
        taken
    };
    let past = {
        let mut taken = cover(&at("cy"), 1);
        taken.starts_at = Some(timestamp(Utc::now() - Duration::hours(3)));
        taken.ends_at = Some(timestamp(Utc::now() - Duration::hours(2)));
        taken
    };
    let cases: Vec<(pb::Override, Code, &str)> = vec![
        (
            cover("zed@desk.example", 8),
            Code::NotFound,
            "no one in the directory is \"zed@desk.example\"",
        ),
        (
            pb::Override {
                schedule: "day".into(),
                ..cover(&at("cy"), 8)
            },
            Code::NotFound,
            "no schedule \"day\"",
        ),
        (backwards, Code::InvalidArgument, "must end after it starts"),
        (past, Code::InvalidArgument, "over already"),
        (
            pb::Override {
                ends_at: None,
                ..cover(&at("cy"), 8)
            },
            Code::InvalidArgument,
            "starts_at and ends_at are required",
        ),
        (
            cover("cy\nbo", 8),
            Code::InvalidArgument,
            "control character",
        ),
        (cover("", 8), Code::InvalidArgument, "person is required"),
    ];
    for (taken, code, says) in cases {
        refused(dispatcher.add_override(taken).await, code, says);
    }
    desk.stop().await;
}

#[tokio::test]
async fn level_targets_name_known_schedules_and_people() {
    let desk = Desk::staffed().await;
    let mut manager = desk.client(Role::Manager);
    refused(
        manager
            .set_level_targets(targets(&[Kind::Schedule("day".into())]))
            .await,
        Code::NotFound,
        "no schedule \"day\"",
    );
    refused(
        manager
            .set_level_targets(targets(&[
                Kind::Person("zed".into()),
                Kind::Person(at("cy")),
                Kind::Person("yan".into()),
            ]))
            .await,
        Code::NotFound,
        "no one in the directory is \"zed\": name people by email or id, and add newcomers \
         with `hotline people add --name N --email E --role agent`; no one in the directory \
         is \"yan\"",
    );
    refused(
        manager
            .set_level_targets(pb::LevelTargets {
                level: 1,
                targets: vec![pb::Target { target: None }],
            })
            .await,
        Code::InvalidArgument,
        "a schedule or a person",
    );
    for level in [0, -1, 101] {
        refused(
            manager
                .set_level_targets(pb::LevelTargets {
                    level,
                    ..targets(&[Kind::Person(at("cy"))])
                })
                .await,
            Code::InvalidArgument,
            "levels go from 1 to 100",
        );
    }
    refused(
        manager
            .set_level_targets(targets(&[Kind::Person("c\0y".into())]))
            .await,
        Code::InvalidArgument,
        "NUL",
    );
    let set = manager
        .set_level_targets(targets(&[
            Kind::Schedule(" night ".into()),
            Kind::Person(" Cy@Desk.example ".into()),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        set,
        targets(&[Kind::Schedule("night".into()), Kind::Person(at("cy"))]),
        "stored trimmed, in order"
    );
    let listed = manager
        .list_level_targets(pb::ListLevelTargetsRequest {})
        .await
        .unwrap()
        .into_inner()
        .levels;
    assert_eq!(listed, [set]);
    desk.stop().await;
}
