//! Dead letters as an admin meets them, against the real RabbitMQ and
//! PostgreSQL: an event a consumer gives up on is listed with its type,
//! ticket, error and attempts, counted on `/metrics` while `/readyz` stays
//! ready, and once its cause is fixed a replay applies it exactly once, in
//! that consumer alone. Only admins see or replay them.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use hotline_kit::{
    auth::Role,
    bus::{
        consumer::{Consumer, EventHandler},
        outbox::{OutboxSignal, Relay, enqueue, envelope},
    },
    supervisor::{Module, ModuleContext},
    testing::{TestApp, TestEnv},
};
use hotline_proto::{
    admin::v1::{
        DeadLetter, ListDeadLettersRequest, ReplayDeadLettersRequest, ReplayDeadLettersResponse,
        dead_letter_service_client::DeadLetterServiceClient, replay_dead_letters_request::Which,
    },
    events::v1::{EventEnvelope, TicketCreated, event_envelope::Payload},
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

static EFFECTS: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations");

/// Records each applied event; a `test.curable` event fails until its type
/// is cured in this consumer's schema.
struct Curable;

impl EventHandler for Curable {
    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        let cured: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cures WHERE event_type = $1)")
                .bind(&event.r#type)
                .fetch_one(&mut *conn)
                .await?;
        anyhow::ensure!(
            event.r#type != "test.curable" || cured,
            "the handler is not fixed yet"
        );
        sqlx::query("INSERT INTO effects (event_id, ticket_id, version) VALUES ($1, $2, $3)")
            .bind(Uuid::parse_str(&event.id)?)
            .bind(Uuid::parse_str(&event.ticket_id).ok())
            .bind(event.ticket_version)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// A module consuming every `test.*` event into `schema`, with its relay.
fn consuming(context: &mut ModuleContext, name: &str, schema: &str) -> anyhow::Result<()> {
    let pool = context.pool(schema)?;
    let relay = Relay::new(
        name,
        pool.clone(),
        OutboxSignal::default(),
        context.publisher.clone(),
        &context.config.bus,
    );
    let cancel = context.cancel.clone();
    context.spawn("outbox-relay", async move { relay.run(cancel).await });
    let consumer = Consumer::new(
        name,
        &["test.#"],
        pool,
        context.subscriber.clone(),
        Curable,
        context.config.bus.clone(),
    )?;
    context.spawn("consumer", Arc::new(consumer).run(context.cancel.clone()));
    Ok(())
}

/// The consumer whose dead letters the tests replay.
fn recorder() -> Module {
    Module {
        name: "recorder",
        depends_on: &[],
        schema: "dlrecorder",
        migrations: &EFFECTS,
        consumes: &["test.#"],
        init: |context| consuming(context, "recorder", "dlrecorder"),
    }
}

/// Another consumer of the same events, never fixed: it must not get the
/// recorder's replays.
fn bystander() -> Module {
    Module {
        name: "bystander",
        depends_on: &[],
        schema: "dlbystander",
        migrations: &EFFECTS,
        consumes: &["test.#"],
        init: |context| consuming(context, "bystander", "dlbystander"),
    }
}

struct Desk {
    env: TestEnv,
    app: TestApp,
    recorder: PgPool,
    bystander: PgPool,
}

type Client = DeadLetterServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        hotline_kit::grpc::BearerToken,
    >,
>;

impl Desk {
    async fn start() -> Self {
        let mut env = TestEnv::new().await.unwrap();
        env.config.bus.max_attempts = 2;
        env.config.bus.retry_backoff = Duration::from_millis(20);
        env.config.bus.relay_poll = Duration::from_millis(100);
        let app = env.start(&[recorder(), bystander()]).await.unwrap();
        app.await_readiness(200, Duration::from_secs(20))
            .await
            .unwrap();
        let recorder = env.pool("dlrecorder").unwrap();
        let bystander = env.pool("dlbystander").unwrap();
        Self {
            env,
            app,
            recorder,
            bystander,
        }
    }

    fn client(&self, role: Role) -> Client {
        DeadLetterServiceClient::new(self.app.channel(&self.env.token("root", role)))
    }

    /// Publishes `events` (to every consumer bound to their types).
    async fn publish(&self, events: &[EventEnvelope]) {
        let mut tx = self.recorder.begin().await.unwrap();
        enqueue(&mut tx, events).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn list(&self, service: &str, include_replayed: bool) -> Vec<DeadLetter> {
        self.client(Role::Admin)
            .list_dead_letters(ListDeadLettersRequest {
                service: service.into(),
                include_replayed,
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .dead_letters
    }

    /// The waiting dead letters of `service` once there are `count`.
    async fn await_dead_letters(&self, service: &str, count: usize) -> Vec<DeadLetter> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let letters = self.list(service, false).await;
            if letters.len() >= count {
                return letters;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} has {} of {count} dead letters",
                letters.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn replay(&self, service: &str, which: Which) -> ReplayDeadLettersResponse {
        self.client(Role::Admin)
            .replay_dead_letters(ReplayDeadLettersRequest {
                service: service.into(),
                which: Some(which),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn cure(&self, pool: &PgPool) {
        sqlx::query("INSERT INTO cures (event_type) VALUES ('test.curable')")
            .execute(pool)
            .await
            .unwrap();
    }

    /// The ids of the events `pool`'s consumer applied, once per application.
    async fn effects(pool: &PgPool) -> Vec<Uuid> {
        sqlx::query_scalar("SELECT event_id FROM effects ORDER BY event_id")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// Waits until `pool`'s consumer applied `count` events, then a little
    /// longer for any it should not have applied.
    async fn await_effects(pool: &PgPool, count: usize) -> Vec<Uuid> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while Self::effects(pool).await.len() < count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Self::effects(pool).await
    }

    /// The value of `hotline_dead_letters{service}` on `/metrics`.
    async fn gauge(&self, service: &str) -> Option<f64> {
        let (status, body) = self.app.http_get("/metrics").await.unwrap();
        assert_eq!(status, 200);
        let series = format!("hotline_dead_letters{{service=\"{service}\"}} ");
        body.lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse().ok())
    }

    /// The gauge once it reads `value` (a letter's row is committed before
    /// the gauge is counted again); fails after 10 s.
    async fn await_gauge(&self, service: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.gauge(service).await;
            if now == Some(value) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hotline_dead_letters{{service={service:?}}} is {now:?}, not {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env
            .cleanup_bus(&["recorder", "bystander"])
            .await
            .unwrap();
    }
}

fn event(event_type: &str) -> EventEnvelope {
    envelope(
        event_type,
        Some((Uuid::now_v7(), 1)),
        Utc::now(),
        Payload::TicketCreated(TicketCreated::default()),
    )
}

#[tokio::test]
async fn a_dead_letter_is_listed_counted_and_replayed_once_to_its_service_alone() {
    let desk = Desk::start().await;
    assert_eq!(
        desk.gauge("recorder").await,
        Some(0.0),
        "shown from the start"
    );

    let poison = event("test.curable");
    desk.publish(std::slice::from_ref(&poison)).await;
    let letters = desk.await_dead_letters("recorder", 1).await;
    let letter = &letters[0];
    assert_eq!(letter.service, "recorder");
    assert_eq!(letter.event_id, poison.id);
    assert_eq!(letter.event_type, "test.curable");
    assert_eq!(letter.ticket_id, poison.ticket_id);
    assert!(
        letter.error.contains("the handler is not fixed yet"),
        "{}",
        letter.error
    );
    assert_eq!(letter.attempts, 2);
    assert!(letter.dead_lettered_at.is_some() && letter.replayed_at.is_none());
    desk.await_dead_letters("bystander", 1).await;
    desk.await_gauge("recorder", 1.0).await;
    let (status, _) = desk.app.http_get("/readyz").await.unwrap();
    assert_eq!(
        status, 200,
        "a dead letter is loud, but the service is ready"
    );

    desk.cure(&desk.recorder).await;
    let replayed = desk.replay("recorder", Which::Id(letter.id)).await;
    assert_eq!(replayed.replayed.len(), 1);
    assert_eq!(replayed.replayed[0].event_id, poison.id);
    let applied = Desk::await_effects(&desk.recorder, 1).await;
    assert_eq!(applied, vec![Uuid::parse_str(&poison.id).unwrap()]);
    assert!(
        Desk::effects(&desk.bystander).await.is_empty()
            && desk.list("bystander", true).await.len() == 1,
        "the bystander did not get the recorder's replay"
    );

    assert!(desk.list("recorder", false).await.is_empty());
    let shown = desk.list("recorder", true).await;
    assert_eq!(shown.len(), 1);
    assert!(shown[0].replayed_at.is_some());
    assert_eq!(shown[0].replayed_by, "root");
    assert_eq!(desk.gauge("recorder").await, Some(0.0));
    assert_eq!(desk.gauge("bystander").await, Some(1.0));

    let again = desk.replay("recorder", Which::Id(letter.id)).await;
    assert!(again.replayed.is_empty(), "a dead letter is replayed once");
    assert_eq!(again.already_replayed.len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(Desk::effects(&desk.recorder).await.len(), 1);
    desk.stop().await;
}

#[tokio::test]
async fn replaying_all_puts_back_every_waiting_one_and_skips_what_was_applied_meanwhile() {
    let desk = Desk::start().await;
    let events: Vec<_> = (0..3).map(|_| event("test.curable")).collect();
    desk.publish(&events).await;
    desk.await_dead_letters("recorder", 3).await;
    desk.await_dead_letters("bystander", 3).await;
    desk.await_gauge("recorder", 3.0).await;

    // Ids are numbered per service: id 1 alone is ambiguous here.
    let ambiguous = desk
        .client(Role::Admin)
        .replay_dead_letters(ReplayDeadLettersRequest {
            service: String::new(),
            which: Some(Which::Id(1)),
        })
        .await
        .unwrap_err();
    assert_eq!(ambiguous.code(), tonic::Code::InvalidArgument);
    assert!(ambiguous.message().contains("name the service"));
    let missing = desk
        .client(Role::Admin)
        .replay_dead_letters(ReplayDeadLettersRequest {
            service: "recorder".into(),
            which: Some(Which::Id(999)),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // One of them got applied meanwhile (another copy went through).
    sqlx::query("INSERT INTO inbox (event_id, event_type) VALUES ($1, 'test.curable')")
        .bind(Uuid::parse_str(&events[0].id).unwrap())
        .execute(&desk.recorder)
        .await
        .unwrap();
    desk.cure(&desk.recorder).await;
    let replayed = desk.replay("recorder", Which::All(true)).await;
    assert_eq!(replayed.replayed.len(), 3);
    let mut expected: Vec<Uuid> = events[1..]
        .iter()
        .map(|e| Uuid::parse_str(&e.id).unwrap())
        .collect();
    expected.sort();
    assert_eq!(
        Desk::await_effects(&desk.recorder, 2).await,
        expected,
        "each applied once; the one applied meanwhile not again"
    );
    assert!(desk.list("recorder", false).await.is_empty());
    assert_eq!(desk.gauge("recorder").await, Some(0.0));
    let again = desk.replay("recorder", Which::All(true)).await;
    assert!(again.replayed.is_empty() && again.already_replayed.is_empty());
    assert_eq!(
        desk.list("bystander", false).await.len(),
        3,
        "the bystander's wait"
    );
    desk.stop().await;
}

#[tokio::test]
async fn only_admins_see_or_replay_dead_letters() {
    let desk = Desk::start().await;
    for role in [Role::Agent, Role::Manager, Role::Bridge] {
        let mut client = desk.client(role);
        let listed = client
            .list_dead_letters(ListDeadLettersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(listed.code(), tonic::Code::PermissionDenied, "{role}");
        let replayed = client
            .replay_dead_letters(ReplayDeadLettersRequest {
                service: "recorder".into(),
                which: Some(Which::All(true)),
            })
            .await
            .unwrap_err();
        assert_eq!(replayed.code(), tonic::Code::PermissionDenied, "{role}");
    }
    let unknown = desk
        .client(Role::Admin)
        .list_dead_letters(ListDeadLettersRequest {
            service: "nowhere".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("recorder, bystander"));
    desk.stop().await;
}

#[tokio::test]
async fn what_the_broker_parked_in_the_dead_letter_queue_becomes_a_dead_letter_too() {
    use lapin::{
        BasicProperties,
        types::{AMQPValue, FieldTable},
    };
    let desk = Desk::start().await;
    let connection =
        lapin::Connection::connect(desk.env.config.amqp_url.expose(), Default::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // With confirms, each publish below returns once the broker has routed it
    // (without, closing the connection can race the last frame).
    channel.confirm_select(Default::default()).await.unwrap();
    // One the broker parked past its delivery limit, one an earlier version
    // of the consumer dead-lettered there with its error and attempts.
    let crashed = event("test.crashing");
    let earlier = event("test.curable");
    let mut headers = FieldTable::default();
    headers
        .insert(
            "x-hotline-error".into(),
            AMQPValue::LongString("the old handler failed".into()),
        )
        .insert("x-hotline-attempts".into(), AMQPValue::LongLongInt(5));
    for (event, headers) in [(&crashed, FieldTable::default()), (&earlier, headers)] {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_type(event.r#type.as_str().into())
            .with_headers(headers);
        let confirmed = channel
            .basic_publish(
                format!("{}.dead", desk.env.config.namespace)
                    .as_str()
                    .into(),
                "recorder".into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &prost::Message::encode_to_vec(event),
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            confirmed.is_ack() && confirmed.take_message().is_none(),
            "the dead-letter exchange did not route {}",
            event.r#type
        );
    }
    connection.close(200, "done".into()).await.unwrap();

    let letters = desk.await_dead_letters("recorder", 2).await;
    let find = |e: &EventEnvelope| {
        letters
            .iter()
            .find(|l| l.event_id == e.id)
            .unwrap_or_else(|| panic!("{} not listed: {letters:?}", e.r#type))
    };
    let letter = find(&crashed);
    assert_eq!(letter.event_type, "test.crashing");
    assert_eq!(letter.attempts, 20);
    assert!(
        letter.error.contains("RabbitMQ gave up"),
        "{}",
        letter.error
    );
    let letter = find(&earlier);
    assert_eq!(letter.error, "the old handler failed");
    assert_eq!(letter.attempts, 5);
    assert!(desk.list("bystander", true).await.is_empty());
    desk.await_gauge("recorder", 2.0).await;

    desk.cure(&desk.recorder).await;
    let replayed = desk.replay("recorder", Which::All(true)).await;
    assert_eq!(replayed.replayed.len(), 2);
    assert_eq!(Desk::await_effects(&desk.recorder, 2).await.len(), 2);
    desk.stop().await;
}

#[tokio::test]
async fn dead_letters_left_from_before_a_restart_are_counted_at_start() {
    let desk = Desk::start().await;
    desk.publish(&[event("test.curable")]).await;
    desk.await_dead_letters("recorder", 1).await;
    let Desk {
        env,
        app,
        recorder,
        bystander,
    } = desk;
    app.stop().await.unwrap();
    let app = env
        .start(&[self::recorder(), self::bystander()])
        .await
        .unwrap();
    let desk = Desk {
        env,
        app,
        recorder,
        bystander,
    };
    // A new consumer shows 0 until it has counted the table.
    desk.await_gauge("recorder", 1.0).await;
    desk.stop().await;
}
