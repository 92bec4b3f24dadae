//! The dispatch API over real gRPC, with real PostgreSQL, RabbitMQ and
//! Redis: the directory of people, who may change it, what is refused and
//! why, the events of its writes, and presence that lives only while
//! heartbeats come — and survives losing Redis as the directory does.

use std::time::Duration;

use hotline_kit::{
    auth::Role,
    testing::{EventTap, TestApp, TestEnv},
};
use hotline_proto::{
    dispatch::v1::{self as pb, Presence, dispatch_service_client::DispatchServiceClient},
    events::v1::event_envelope::Payload,
};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

type Client = DispatchServiceClient<InterceptedService<Channel, hotline_kit::grpc::BearerToken>>;

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    async fn start(heartbeat_ttl: &str) -> Self {
        let mut env = TestEnv::new().await.unwrap();
        env.config.set("dispatch", "heartbeat_ttl", heartbeat_ttl);
        env.config.set("intake", "country_code", "49");
        let app = env.start(&[hotline_dispatch::module()]).await.unwrap();
        Self { env, app }
    }

    /// A client whose token names `subject` with `role`.
    fn client(&self, subject: &str, role: Role) -> Client {
        DispatchServiceClient::new(self.app.channel(&self.env.token(subject, role)))
    }

    fn manager(&self) -> Client {
        self.client("mia@desk.example", Role::Manager)
    }

    /// Deletes every Redis key of this test's namespace: what a `FLUSHALL`
    /// does to it, without touching other tests' keys.
    async fn flush_redis(&self) {
        let client = redis::Client::open(self.env.config.redis_url.expose()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let pattern = format!("{}:*", self.env.config.namespace);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            !keys.is_empty(),
            "the test wrote heartbeats under {pattern}"
        );
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&[]).await.unwrap();
    }
}

fn agent(name: &str, email: &str) -> pb::AddPersonRequest {
    pb::AddPersonRequest {
        name: name.into(),
        email: email.into(),
        roles: vec!["agent".into()],
        ..Default::default()
    }
}

fn skills(person: &pb::Person) -> Vec<String> {
    person
        .skills
        .iter()
        .map(|s| format!("{}:{}", s.name, s.level))
        .collect()
}

async fn presence_of(client: &mut Client, person: &str) -> (Presence, Presence) {
    let person = client
        .get_person(pb::GetPersonRequest {
            person: person.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (person.presence(), person.stated_presence())
}

#[tokio::test]
async fn a_person_is_added_read_changed_in_part_and_deactivated_never_deleted() {
    let desk = Desk::start("90s").await;
    let mut tap = EventTap::bound(&desk.env.config, "person.*").await.unwrap();
    let mut manager = desk.manager();
    let ana = manager
        .add_person(pb::AddPersonRequest {
            name: " Ana Łukasiewicz ".into(),
            email: " Ana@Desk.Example ".into(),
            phone: "030 1234567".into(),
            roles: vec!["agent".into(), "Dispatcher".into()],
            team: "first line".into(),
            skills: vec!["NVR:3".into(), "lang:de".into(), "ptz:2".into()],
            regions: vec!["North".into(), "south".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ana.name, "Ana Łukasiewicz");
    assert_eq!(ana.email, "ana@desk.example");
    assert_eq!(ana.phone, "+49301234567");
    assert_eq!(ana.roles, ["agent", "dispatcher"]);
    assert_eq!(skills(&ana), ["lang:de:1", "nvr:3", "ptz:2"]);
    assert_eq!(ana.regions, ["north", "south"]);
    assert_eq!(ana.capacity, 10, "the default capacity");
    assert!(ana.active);
    assert_eq!(ana.presence(), Presence::Offline);
    assert_eq!(ana.last_assigned_at, None);

    let mut reader = desk.client("bo@desk.example", Role::Agent);
    for reference in [ana.id.as_str(), "ANA@desk.example"] {
        let found = reader
            .get_person(pb::GetPersonRequest {
                person: reference.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found, ana, "{reference}");
    }

    let changed = manager
        .update_person(pb::UpdatePersonRequest {
            person: "ana@desk.example".into(),
            capacity: Some(4),
            skills: Some(pb::Values {
                values: vec!["nvr:5".into()],
            }),
            team: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.capacity, 4);
    assert_eq!(skills(&changed), ["nvr:5"]);
    assert_eq!(changed.team, "", "an empty team removes it");
    assert_eq!(changed.regions, ana.regions, "what was not named stays");
    assert_eq!(changed.phone, ana.phone);
    assert_eq!(changed.roles, ana.roles);

    let same = manager
        .update_person(pb::UpdatePersonRequest {
            person: ana.id.clone(),
            capacity: Some(4),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same, changed, "nothing changed, nothing written");

    let gone = manager
        .deactivate_person(pb::DeactivatePersonRequest {
            person: ana.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!gone.active);
    let again = manager
        .deactivate_person(pb::DeactivatePersonRequest {
            person: ana.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, gone, "deactivating twice changes nothing");
    let kept = reader
        .get_person(pb::GetPersonRequest {
            person: ana.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!kept.active, "still in the directory");
    let listed = reader
        .list_people(pb::ListPeopleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.people.is_empty(),
        "deactivated people are not listed"
    );
    let all = reader
        .list_people(pb::ListPeopleRequest {
            include_inactive: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.people, [kept]);

    let events = tap.drain(Duration::from_secs(2)).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        kinds,
        ["person.added", "person.updated", "person.deactivated"],
        "one event per change, none for what changed nothing"
    );
    let Some(Payload::PersonUpdated(updated)) = &events[1].payload else {
        panic!("{:?}", events[1]);
    };
    assert_eq!(updated.person.as_ref(), Some(&changed), "the whole person");
    desk.stop().await;
}

#[tokio::test]
async fn the_directory_is_read_by_role_and_presence() {
    let desk = Desk::start("90s").await;
    let mut manager = desk.manager();
    for (name, email, role) in [
        ("Cem", "cem@desk.example", "agent"),
        ("Ana", "ana@desk.example", "agent"),
        ("Dora", "dora@desk.example", "dispatcher"),
    ] {
        let mut person = agent(name, email);
        person.roles = vec![role.into()];
        manager.add_person(person).await.unwrap();
    }
    desk.client("ana@desk.example", Role::Agent)
        .set_presence(pb::SetPresenceRequest {
            presence: Presence::Online as i32,
            person: String::new(),
        })
        .await
        .unwrap();
    desk.client("dora@desk.example", Role::Dispatcher)
        .set_presence(pb::SetPresenceRequest {
            presence: Presence::Away as i32,
            person: String::new(),
        })
        .await
        .unwrap();
    let mut reader = desk.client("bridge", Role::Bridge);
    let names = |people: &pb::ListPeopleResponse| -> Vec<String> {
        people.people.iter().map(|p| p.name.clone()).collect()
    };
    let agents = reader
        .list_people(pb::ListPeopleRequest {
            role: "agent".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&agents), ["Ana", "Cem"], "by name");
    let online = reader
        .list_people(pb::ListPeopleRequest {
            online: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&online), ["Ana"], "away is not online");
    let first = reader
        .list_people(pb::ListPeopleRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&first), ["Ana"]);
    let refused = reader
        .list_people(pb::ListPeopleRequest {
            role: "pilot".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("unknown role"), "{refused:?}");
    desk.stop().await;
}

#[tokio::test]
async fn only_managers_change_the_directory_and_only_dispatchers_anothers_presence() {
    let desk = Desk::start("90s").await;
    desk.manager()
        .add_person(agent("Ana", "ana@desk.example"))
        .await
        .unwrap();
    desk.manager()
        .add_person(agent("Bo", "bo@desk.example"))
        .await
        .unwrap();
    let mut ana = desk.client("ana@desk.example", Role::Agent);
    for role in [
        Role::Agent,
        Role::Dispatcher,
        Role::Technician,
        Role::Bridge,
    ] {
        let mut client = desk.client("ana@desk.example", role);
        let add = client
            .add_person(agent("Eve", "eve@desk.example"))
            .await
            .unwrap_err();
        assert_eq!(add.code(), Code::PermissionDenied, "{role}");
        let update = client
            .update_person(pb::UpdatePersonRequest {
                person: "ana@desk.example".into(),
                capacity: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(update.code(), Code::PermissionDenied, "{role}");
        let deactivate = client
            .deactivate_person(pb::DeactivatePersonRequest {
                person: "bo@desk.example".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(deactivate.code(), Code::PermissionDenied, "{role}");
    }
    desk.client("root", Role::Admin)
        .add_person(agent("Eve", "eve@desk.example"))
        .await
        .unwrap();

    let mine = ana
        .set_presence(pb::SetPresenceRequest {
            presence: Presence::Online as i32,
            person: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.email, "ana@desk.example", "the token's subject");
    assert_eq!(mine.presence(), Presence::Online);
    let bos = ana
        .set_presence(pb::SetPresenceRequest {
            presence: Presence::Online as i32,
            person: "bo@desk.example".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bos.code(), Code::PermissionDenied);
    assert!(bos.message().contains("only their own presence"), "{bos:?}");
    let kept = desk
        .client("dora@desk.example", Role::Dispatcher)
        .set_presence(pb::SetPresenceRequest {
            presence: Presence::Away as i32,
            person: "bo@desk.example".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.presence(), Presence::Away);

    let stranger = desk
        .client("nobody@desk.example", Role::Agent)
        .heartbeat(pb::HeartbeatRequest {})
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::NotFound);
    assert!(
        stranger.message().contains("hotline people add"),
        "{stranger:?}"
    );
    desk.stop().await;
}

#[tokio::test]
async fn hostile_and_wrong_input_is_refused_saying_what_to_change() {
    let desk = Desk::start("90s").await;
    let mut manager = desk.manager();
    manager
        .add_person(agent("Ana", "ana@desk.example"))
        .await
        .unwrap();
    let base = || agent("Eve", "eve@desk.example");
    let cases: Vec<(pb::AddPersonRequest, Code, &str)> = vec![
        (
            pb::AddPersonRequest {
                name: "Eve\0".into(),
                ..base()
            },
            Code::InvalidArgument,
            "name contains a NUL",
        ),
        (
            pb::AddPersonRequest {
                name: "Eve\x1b[2J".into(),
                ..base()
            },
            Code::InvalidArgument,
            "control character",
        ),
        (
            pb::AddPersonRequest {
                name: "E".repeat(10_000),
                ..base()
            },
            Code::InvalidArgument,
            "name is longer than 200",
        ),
        (
            pb::AddPersonRequest {
                name: "   ".into(),
                ..base()
            },
            Code::InvalidArgument,
            "give the name",
        ),
        (
            pb::AddPersonRequest {
                email: " ANA@desk.example".into(),
                ..base()
            },
            Code::AlreadyExists,
            "already the email of Ana",
        ),
        (
            pb::AddPersonRequest {
                email: "eve at desk".into(),
                ..base()
            },
            Code::InvalidArgument,
            "not an email address",
        ),
        (
            pb::AddPersonRequest {
                skills: vec!["nvr=3".into()],
                ..base()
            },
            Code::InvalidArgument,
            "write name or name:level",
        ),
        (
            pb::AddPersonRequest {
                skills: vec!["nvr:9".into()],
                ..base()
            },
            Code::InvalidArgument,
            "level must be 1 to 5",
        ),
        (
            pb::AddPersonRequest {
                skills: vec!["nvr:3".into(), "nvr:1".into()],
                ..base()
            },
            Code::InvalidArgument,
            "given twice",
        ),
        (
            pb::AddPersonRequest {
                roles: vec!["pilot".into()],
                ..base()
            },
            Code::InvalidArgument,
            "unknown role \"pilot\"",
        ),
        (
            pb::AddPersonRequest {
                roles: vec![],
                ..base()
            },
            Code::InvalidArgument,
            "at least one role",
        ),
        (
            pb::AddPersonRequest {
                capacity: Some(1001),
                ..base()
            },
            Code::InvalidArgument,
            "0 to 1000",
        ),
        (
            pb::AddPersonRequest {
                phone: "204".into(),
                ..base()
            },
            Code::InvalidArgument,
            "not a phone number",
        ),
        (
            pb::AddPersonRequest {
                roles: vec!["technician".into()],
                time_zone: "Europe/Berlin".into(),
                ..base()
            },
            Code::InvalidArgument,
            "a technician needs a home base",
        ),
        (
            pb::AddPersonRequest {
                home_lat: Some(52.5),
                ..base()
            },
            Code::InvalidArgument,
            "both home_lat and home_lng",
        ),
        (
            pb::AddPersonRequest {
                time_zone: "Mars/Olympus".into(),
                ..base()
            },
            Code::InvalidArgument,
            "not a time zone",
        ),
        (
            pb::AddPersonRequest {
                regions: vec!["north\nsouth".into()],
                ..base()
            },
            Code::InvalidArgument,
            "regions contains a control character",
        ),
        (
            pb::AddPersonRequest {
                skills: vec!["nvr\0:3".into()],
                ..base()
            },
            Code::InvalidArgument,
            "skills contains a NUL",
        ),
        (
            pb::AddPersonRequest {
                regions: vec!["north".into(); 10_001],
                ..base()
            },
            Code::InvalidArgument,
            "at most 100 regions",
        ),
        (
            pb::AddPersonRequest {
                email: format!("{}@desk.example", "e".repeat(10_000)),
                ..base()
            },
            Code::InvalidArgument,
            "email is longer than 254",
        ),
    ];
    for (request, code, says) in cases {
        let refused = manager.add_person(request).await.unwrap_err();
        assert_eq!(refused.code(), code, "{refused:?}");
        assert!(refused.message().contains(says), "{says}: {refused:?}");
        assert!(refused.message().len() < 500, "no echo of a huge input");
    }
    let technician = manager
        .add_person(pb::AddPersonRequest {
            roles: vec!["technician".into()],
            home_lat: Some(52.52),
            home_lng: Some(13.40),
            time_zone: "Europe/Berlin".into(),
            ..base()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(technician.home_lat, Some(52.52));
    let homeless = manager
        .update_person(pb::UpdatePersonRequest {
            person: technician.id.clone(),
            clear_home: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(homeless.message().contains("home base"), "{homeless:?}");
    let taken = manager
        .update_person(pb::UpdatePersonRequest {
            person: technician.id.clone(),
            email: Some("Ana@Desk.example".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    let unknown = manager
        .update_person(pb::UpdatePersonRequest {
            person: "nobody@desk.example".into(),
            capacity: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let cleared = manager
        .update_person(pb::UpdatePersonRequest {
            person: technician.id.clone(),
            roles: Some(pb::Values { values: vec![] }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        cleared.message().contains("at least one role"),
        "{cleared:?}"
    );
    let listed = manager
        .list_people(pb::ListPeopleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.people.len(), 2, "nothing refused was written");
    let presence = desk
        .client("ana@desk.example", Role::Agent)
        .set_presence(pb::SetPresenceRequest {
            presence: 42,
            person: String::new(),
        })
        .await
        .unwrap_err();
    assert!(presence.message().contains("online, away or offline"));
    desk.stop().await;
}

#[tokio::test]
async fn presence_lapses_when_heartbeats_stop_and_a_heartbeat_brings_it_back() {
    let desk = Desk::start("1s").await;
    let mut tap = EventTap::bound(&desk.env.config, "presence.*")
        .await
        .unwrap();
    desk.manager()
        .add_person(agent("Ana", "ana@desk.example"))
        .await
        .unwrap();
    let mut ana = desk.client("ana@desk.example", Role::Agent);
    let mut reader = desk.client("bo@desk.example", Role::Agent);
    ana.set_presence(pb::SetPresenceRequest {
        presence: Presence::Online as i32,
        person: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        presence_of(&mut reader, "ana@desk.example").await,
        (Presence::Online, Presence::Online)
    );
    // Heartbeats keep her online past several TTLs.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let beat = ana
            .heartbeat(pb::HeartbeatRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(beat.presence(), Presence::Online);
    }
    // Without them she lapses within the 1 s TTL: offline, though she
    // still says online.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (now, stated) = presence_of(&mut reader, "ana@desk.example").await;
        if now == Presence::Offline {
            assert_eq!(stated, Presence::Online);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let online = reader
        .list_people(pb::ListPeopleRequest {
            online: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(online.people.is_empty());
    ana.heartbeat(pb::HeartbeatRequest {}).await.unwrap();
    assert_eq!(
        presence_of(&mut reader, "ana@desk.example").await.0,
        Presence::Online
    );
    ana.set_presence(pb::SetPresenceRequest {
        presence: Presence::Online as i32,
        person: String::new(),
    })
    .await
    .unwrap();
    let off = ana
        .set_presence(pb::SetPresenceRequest {
            presence: Presence::Offline as i32,
            person: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(off.presence(), Presence::Offline);
    let beat = ana
        .heartbeat(pb::HeartbeatRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        beat.presence(),
        Presence::Offline,
        "a heartbeat keeps what she said, it does not say online"
    );

    let events = tap.drain(Duration::from_secs(2)).await;
    let changes: Vec<(Presence, Presence)> = events
        .iter()
        .map(|e| match &e.payload {
            Some(Payload::PresenceChanged(c)) => (
                c.previous(),
                c.person
                    .as_ref()
                    .map_or(Presence::Unspecified, |p| p.stated_presence()),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        changes,
        [
            (Presence::Offline, Presence::Online),
            (Presence::Online, Presence::Offline)
        ],
        "stated changes only: not heartbeats, not saying online twice"
    );
    desk.stop().await;
}

#[tokio::test]
async fn losing_redis_makes_everyone_offline_and_loses_nothing_else() {
    let desk = Desk::start("90s").await;
    let mut manager = desk.manager();
    for (name, email) in [("Ana", "ana@desk.example"), ("Bo", "bo@desk.example")] {
        manager.add_person(agent(name, email)).await.unwrap();
        desk.client(email, Role::Agent)
            .set_presence(pb::SetPresenceRequest {
                presence: Presence::Online as i32,
                person: String::new(),
            })
            .await
            .unwrap();
    }
    let before = manager
        .list_people(pb::ListPeopleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        before
            .people
            .iter()
            .all(|p| p.presence() == Presence::Online)
    );

    desk.flush_redis().await;

    let after = manager
        .list_people(pb::ListPeopleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.people.len(), 2);
    for (was, is) in before.people.iter().zip(&after.people) {
        assert_eq!(is.presence(), Presence::Offline, "{}", is.email);
        assert_eq!(
            is.stated_presence(),
            Presence::Online,
            "what they said stays"
        );
        let mut unchanged = is.clone();
        unchanged.presence = was.presence;
        assert_eq!(&unchanged, was, "the directory is untouched");
    }
    desk.client("ana@desk.example", Role::Agent)
        .heartbeat(pb::HeartbeatRequest {})
        .await
        .unwrap();
    let online = manager
        .list_people(pb::ListPeopleRequest {
            online: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = online.people.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Ana"], "back with her next heartbeat; Bo with his");
    desk.stop().await;
}

#[tokio::test]
async fn a_deactivated_person_has_no_presence() {
    let desk = Desk::start("90s").await;
    desk.manager()
        .add_person(agent("Ana", "ana@desk.example"))
        .await
        .unwrap();
    let mut ana = desk.client("ana@desk.example", Role::Agent);
    ana.set_presence(pb::SetPresenceRequest {
        presence: Presence::Online as i32,
        person: String::new(),
    })
    .await
    .unwrap();
    let gone = desk
        .manager()
        .deactivate_person(pb::DeactivatePersonRequest {
            person: "ana@desk.example".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.presence(), Presence::Offline);
    assert_eq!(gone.stated_presence(), Presence::Offline);
    let refused = ana.heartbeat(pb::HeartbeatRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("deactivated"), "{refused:?}");
    let refused = ana
        .set_presence(pb::SetPresenceRequest {
            presence: Presence::Online as i32,
            person: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    desk.stop().await;
}

#[tokio::test]
async fn odd_unicode_is_kept_as_typed_and_one_email_is_one_person_even_racing() {
    let desk = Desk::start("90s").await;
    let mut manager = desk.manager();
    let name = "Zoë \u{202e}Ørsted 👩\u{200d}🔧 李";
    let zoe = manager
        .add_person(agent(name, "zoe@desk.example"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(zoe.name, name, "no control characters: stored as typed");
    let racing = ["Kim@Desk.example", "kim@desk.EXAMPLE", " KIM@desk.example"].map(|email| {
        let mut client = manager.clone();
        tokio::spawn(async move { client.add_person(agent("Kim", email)).await })
    });
    let mut added = 0;
    for adding in racing {
        match adding.await.unwrap() {
            Ok(_) => added += 1,
            Err(refused) => assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}"),
        }
    }
    assert_eq!(added, 1, "one email, one person");
    for person in ["", "  ", "\0", "kim@desk\n.example"] {
        let refused = manager
            .get_person(pb::GetPersonRequest {
                person: person.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{person:?}: {refused:?}"
        );
    }
    desk.stop().await;
}
