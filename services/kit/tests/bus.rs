//! The bus against the real RabbitMQ and PostgreSQL: the outbox relay never
//! loses or skips a row, consumers apply each event once and in version
//! order, poison becomes a dead letter, and a broker restart loses nothing.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::Utc;
use hotline_kit::{
    bus::{
        Bus,
        consumer::{Consumer, EventHandler, Outcome, forget_events_before},
        dead_letters,
        outbox::{OutboxSignal, Relay, enqueue, envelope},
    },
    config::BusConfig,
    db,
    testing::{EventTap, Outage, TestEnv},
};
use hotline_proto::events::v1::{EventEnvelope, TicketCreated, event_envelope::Payload};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SCHEMA: &str = "bustest";
static EFFECTS: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations");

struct Fixture {
    env: TestEnv,
    pool: PgPool,
    bus: Arc<Bus>,
    signal: OutboxSignal,
    cancel: CancellationToken,
}

impl Fixture {
    async fn new() -> Self {
        // Logs are shown when a test fails.
        let logs = hotline_kit::config::LogConfig {
            filter: "warn,hotline_kit=info".into(),
            ..Default::default()
        };
        let _ = hotline_kit::telemetry::Telemetry::init(&logs, "bus-test");
        let mut env = TestEnv::new().await.unwrap();
        env.config.bus.max_attempts = 3;
        env.config.bus.retry_backoff = Duration::from_millis(20);
        // A down database fails each attempt fast: an outage outlasts every
        // retry, so only holding the event can save it.
        env.config.db.acquire_timeout = Duration::from_millis(300);
        let pool = env.pool(SCHEMA).unwrap();
        db::migrate(&pool, SCHEMA, &EFFECTS).await.unwrap();
        let bus = Bus::new(
            env.config.amqp_url.clone(),
            env.config.namespace.clone(),
            "test",
        );
        bus.declare_topology(&[("recorder", &["test.#"])])
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(bus.clone().run(cancel.clone()));
        Self {
            env,
            pool,
            bus,
            signal: OutboxSignal::default(),
            cancel,
        }
    }

    fn relay(&self) -> Relay {
        let config = BusConfig {
            relay_batch: 50,
            relay_poll: Duration::from_millis(200),
            ..self.env.config.bus.clone()
        };
        Relay::new(
            "recorder",
            self.pool.clone(),
            self.signal.clone(),
            self.bus.clone(),
            &config,
        )
    }

    fn start_relay(&self) -> CancellationToken {
        let stop = self.cancel.child_token();
        let relay = self.relay();
        tokio::spawn({
            let stop = stop.clone();
            async move { relay.run(stop).await }
        });
        stop
    }

    fn consumer(&self) -> Arc<Consumer<Recorder>> {
        self.consumer_of(Recorder::default())
    }

    fn consumer_of(&self, recorder: Recorder) -> Arc<Consumer<Recorder>> {
        Arc::new(
            Consumer::new(
                "recorder",
                &["test.#"],
                self.pool.clone(),
                self.bus.clone(),
                recorder,
                self.env.config.bus.clone(),
            )
            .unwrap(),
        )
    }

    fn start_consumer(&self) -> Arc<Consumer<Recorder>> {
        let consumer = self.consumer();
        tokio::spawn(consumer.clone().run(self.cancel.child_token()));
        consumer
    }

    async fn write(&self, events: &[EventEnvelope]) {
        let mut tx = self.pool.begin().await.unwrap();
        enqueue(&mut tx, events).await.unwrap();
        tx.commit().await.unwrap();
        self.signal.committed();
    }

    async fn effects(&self) -> Vec<(Uuid, i64)> {
        sqlx::query_as("SELECT event_id, version FROM effects ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// The ticket versions of the events applied, in order.
    async fn versions_applied(&self) -> Vec<i64> {
        self.effects().await.into_iter().map(|(_, v)| v).collect()
    }

    /// Waits until `count` effects are recorded, at most `limit`.
    async fn await_effects(&self, count: usize, limit: Duration) -> Vec<(Uuid, i64)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let effects = self.effects().await;
            if effects.len() >= count || tokio::time::Instant::now() > deadline {
                return effects;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the consumer and the relay, and waits until an event has gone
    /// all the way through.
    async fn start_flowing(&self) {
        self.start_consumer();
        self.start_relay();
        self.write(&[event("test.warmup", Some((Uuid::now_v7(), 1)))])
            .await;
        let applied = self.await_effects(1, Duration::from_secs(20)).await;
        assert_eq!(applied.len(), 1, "the warm-up event never arrived");
    }

    /// The first `count` dead letters recorded, waiting for them.
    async fn dead_letters(&self, count: usize) -> Vec<dead_letters::DeadLetter> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let letters = dead_letters::list(&self.pool, true, 100).await.unwrap();
            if letters.len() >= count {
                return letters;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} dead letters were recorded",
                letters.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Dead letters recorded, and messages the broker parked past its
    /// delivery limit.
    async fn dead_letter_count(&self) -> u32 {
        let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        u32::try_from(recorded).unwrap() + self.ready(&self.bus.dead_queue("recorder")).await
    }

    /// Messages waiting in `queue` (not delivered to a consumer).
    async fn ready(&self, queue: &str) -> u32 {
        let connection =
            lapin::Connection::connect(self.env.config.amqp_url.expose(), Default::default())
                .await
                .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions::default().passive(),
                Default::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Events applied more than once (must be zero: the inbox dedupes).
    async fn applied_twice(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) - count(DISTINCT event_id) FROM effects")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn finish(self) {
        self.cancel.cancel();
        self.env.cleanup_bus(&["recorder"]).await.unwrap();
    }
}

/// Records each applied event; fails on `test.poison`. Events that wait
/// together are applied in one transaction, as `sla` and `pager` have them,
/// so the tests that let events flow cover both ways of applying them.
#[derive(Default)]
struct Recorder {
    snapshots: bool,
}

impl EventHandler for Recorder {
    fn snapshots(&self) -> bool {
        self.snapshots
    }

    fn batched(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        anyhow::ensure!(event.r#type != "test.poison", "this event always fails");
        assert!(event.r#type != "test.panic", "this handler has a bug");
        sqlx::query("INSERT INTO effects (event_id, ticket_id, version) VALUES ($1, $2, $3)")
            .bind(Uuid::parse_str(&event.id)?)
            .bind(Uuid::parse_str(&event.ticket_id).ok())
            .bind(event.ticket_version)
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn event(event_type: &str, ticket: Option<(Uuid, i64)>) -> EventEnvelope {
    envelope(
        event_type,
        ticket,
        Utc::now(),
        Payload::TicketCreated(TicketCreated::default()),
    )
}

async fn receive_ids(tap: &mut EventTap, expected: usize, limit: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut ids = Vec::new();
    while ids.len() < expected && tokio::time::Instant::now() < deadline {
        if let Some((event, _)) = tap.next(Duration::from_millis(500)).await {
            ids.push(event.id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_publishes_every_row_when_commits_come_out_of_id_order() {
    let fixture = Fixture::new().await;
    let mut tap = EventTap::new(&fixture.env.config).await.unwrap();
    fixture.start_relay();
    // Writers take ids in one order and commit in another: each holds its
    // transaction open for a different time after inserting. They do not
    // signal the relay, so this also proves the poll finds every row.
    let writers = (0..16u64).map(|writer| {
        let pool = fixture.pool.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for round in 0..25u64 {
                let event = event("test.written", None);
                ids.push(event.id.clone());
                let mut tx = pool.begin().await.unwrap();
                enqueue(&mut tx, &[event]).await.unwrap();
                let hold = (writer * 7 + round * 13) % 23;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                tx.commit().await.unwrap();
            }
            ids
        })
    });
    let mut expected = HashSet::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }
    let mut received = receive_ids(&mut tap, expected.len(), Duration::from_secs(30)).await;
    // Anything published twice would still be arriving.
    received.extend(
        tap.drain(Duration::from_secs(1))
            .await
            .into_iter()
            .map(|e| e.id),
    );
    let unique: HashSet<_> = received.iter().cloned().collect();
    assert_eq!(unique, expected, "every committed event is published");
    assert_eq!(received.len(), expected.len(), "and none twice");
    // The relay commits its delete once the broker has confirmed: soon after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&fixture.pool)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} published rows stay in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fixture.finish().await;
}

#[tokio::test]
async fn a_relay_killed_mid_batch_loses_nothing_and_the_next_one_catches_up() {
    let fixture = Fixture::new().await;
    let mut tap = EventTap::new(&fixture.env.config).await.unwrap();
    let first: Vec<_> = (0..200).map(|_| event("test.written", None)).collect();
    fixture.write(&first).await;
    let relay = fixture.relay();
    let killed = tokio::spawn(async move { relay.run(CancellationToken::new()).await });
    // Kill it (no graceful flush) as soon as it has published something.
    let mut received = receive_ids(&mut tap, 1, Duration::from_secs(10)).await;
    killed.abort();
    let second: Vec<_> = (0..200).map(|_| event("test.written", None)).collect();
    fixture.write(&second).await;
    fixture.start_relay();
    let expected: HashSet<_> = first.iter().chain(&second).map(|e| e.id.clone()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.iter().collect::<HashSet<_>>().len() < expected.len()
        && tokio::time::Instant::now() < deadline
    {
        if let Some((event, _)) = tap.next(Duration::from_millis(500)).await {
            received.push(event.id);
        }
    }
    let unique: HashSet<_> = received.into_iter().collect();
    assert_eq!(
        unique, expected,
        "every event published, some perhaps twice"
    );
    fixture.finish().await;
}

#[tokio::test]
async fn a_duplicate_delivery_does_nothing() {
    let fixture = Fixture::new().await;
    let ticket = Uuid::now_v7();
    let once = event("test.duplicated", Some((ticket, 1)));
    // The same event twice, as a relay crash between confirm and delete does.
    fixture.write(std::slice::from_ref(&once)).await;
    fixture.write(std::slice::from_ref(&once)).await;
    fixture.start_consumer();
    fixture.start_relay();
    let marker = event("test.marker", Some((Uuid::now_v7(), 1)));
    fixture.write(&[marker]).await;
    let effects = fixture.await_effects(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let effects_after = fixture.effects().await;
    assert_eq!(
        effects.len(),
        2,
        "the duplicate and the marker: {effects:?}"
    );
    assert_eq!(effects_after.len(), 2, "nothing more arrives later");
    assert_eq!(fixture.applied_twice().await, 0);
    // And the step itself says so.
    let consumer = fixture.consumer();
    assert_eq!(consumer.apply(&once).await.unwrap(), Outcome::Duplicate);
    fixture.finish().await;
}

#[tokio::test]
async fn an_older_fact_arriving_late_is_ignored() {
    let fixture = Fixture::new().await;
    let consumer = fixture.consumer();
    let ticket = Uuid::now_v7();
    let newer = event("test.changed", Some((ticket, 3)));
    let same_change = event("test.changed", Some((ticket, 3)));
    let older = event("test.changed", Some((ticket, 2)));
    assert_eq!(consumer.apply(&newer).await.unwrap(), Outcome::Applied);
    assert_eq!(
        consumer.apply(&same_change).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(consumer.apply(&older).await.unwrap(), Outcome::Stale);
    assert_eq!(fixture.versions_applied().await, vec![3, 3]);
    fixture.finish().await;
}

#[tokio::test]
async fn a_handler_of_snapshots_applies_one_event_per_version() {
    let fixture = Fixture::new().await;
    let consumer = fixture.consumer_of(Recorder { snapshots: true });
    let ticket = Uuid::now_v7();
    let created = event("test.created", Some((ticket, 1)));
    let awaiting = event("test.awaiting", Some((ticket, 1)));
    let replied = event("test.replied", Some((ticket, 2)));
    let late = event("test.late", Some((ticket, 1)));
    assert_eq!(consumer.apply(&created).await.unwrap(), Outcome::Applied);
    assert_eq!(consumer.apply(&awaiting).await.unwrap(), Outcome::Stale);
    assert_eq!(consumer.apply(&replied).await.unwrap(), Outcome::Applied);
    assert_eq!(consumer.apply(&late).await.unwrap(), Outcome::Stale);
    assert_eq!(fixture.versions_applied().await, vec![1, 2]);
    fixture.finish().await;
}

#[tokio::test]
async fn applied_events_are_forgotten_only_after_the_retention() {
    let fixture = Fixture::new().await;
    let consumer = fixture.consumer();
    // One event applied 40 days ago (its UUIDv7 id says so, and so does its
    // receipt), one just now.
    let then = Utc::now() - chrono::Duration::days(40);
    let mut old = event("test.old", Some((Uuid::now_v7(), 1)));
    old.id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(then.timestamp()).unwrap(),
        0,
    ))
    .to_string();
    let recent = event("test.recent", Some((Uuid::now_v7(), 1)));
    assert_eq!(consumer.apply(&old).await.unwrap(), Outcome::Applied);
    assert_eq!(consumer.apply(&recent).await.unwrap(), Outcome::Applied);
    sqlx::query("UPDATE inbox SET received_at = $1 WHERE event_id = $2")
        .bind(then)
        .bind(Uuid::parse_str(&old.id).unwrap())
        .execute(&fixture.pool)
        .await
        .unwrap();

    let retention = chrono::Duration::days(30);
    let forgotten = forget_events_before(&fixture.pool, Utc::now() - retention)
        .await
        .unwrap();
    assert_eq!(forgotten, 1, "only the event older than the retention");
    assert_eq!(
        consumer.apply(&recent).await.unwrap(),
        Outcome::Duplicate,
        "a recent event is still recognised"
    );
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM inbox")
        .fetch_all(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![Uuid::parse_str(&recent.id).unwrap()]);
    fixture.finish().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_while_the_queue_keeps_flowing() {
    let fixture = Fixture::new().await;
    fixture.start_flowing().await;
    let poison = event("test.poison", Some((Uuid::now_v7(), 1)));
    fixture.write(std::slice::from_ref(&poison)).await;
    let panic = event("test.panic", Some((Uuid::now_v7(), 1)));
    fixture.write(std::slice::from_ref(&panic)).await;
    let good: Vec<_> = (0..20)
        .map(|_| event("test.good", Some((Uuid::now_v7(), 1))))
        .collect();
    fixture.write(&good).await;
    let effects = fixture.await_effects(21, Duration::from_secs(20)).await;
    assert_eq!(effects.len(), 21, "every good event is applied");

    let dead = fixture.dead_letters(2).await;
    let find = |id: &str| {
        dead.iter()
            .find(|letter| letter.event_id.map(|e| e.to_string()).as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{id} is not among the dead letters"))
    };
    let letter = find(&poison.id);
    assert!(
        letter.error.contains("this event always fails"),
        "{}",
        letter.error
    );
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.event_type, "test.poison");
    assert_eq!(letter.ticket_id.as_deref(), Some(poison.ticket_id.as_str()));
    assert_eq!(letter.replayed_at, None);
    let letter = find(&panic.id);
    assert!(
        letter
            .error
            .contains("the handler panicked: this handler has a bug"),
        "{}",
        letter.error
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fixture.dead_letter_count().await, 2, "each recorded once");
    fixture.finish().await;
}

/// Runs serially (`fault_` tests): it restarts the shared broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_broker_restart_mid_flow_loses_nothing() {
    let fixture = Fixture::new().await;
    fixture.start_flowing().await;
    // A process in the same namespace, to watch its readiness.
    let app = fixture.env.start(&[]).await.unwrap();
    app.await_readiness(200, Duration::from_secs(10))
        .await
        .unwrap();

    let writer = {
        let pool = fixture.pool.clone();
        tokio::spawn(async move {
            for _ in 0..300 {
                let mut tx = pool.begin().await.unwrap();
                enqueue(&mut tx, &[event("test.flow", Some((Uuid::now_v7(), 1)))])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outage = Outage::broker().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fixture.bus.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bus never noticed the broker stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.await_readiness(503, Duration::from_secs(10))
        .await
        .unwrap();
    outage.end().await;
    writer.await.unwrap();
    let effects = fixture.await_effects(301, Duration::from_secs(60)).await;
    assert!(fixture.bus.is_connected(), "the bus reconnected by itself");
    app.await_readiness(200, Duration::from_secs(20))
        .await
        .unwrap();
    app.stop().await.unwrap();
    if effects.len() != 301 {
        // Say where the missing ones are, for whoever reads the failure.
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&fixture.pool)
            .await
            .unwrap();
        let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(&fixture.pool)
            .await
            .unwrap();
        eprintln!(
            "{} applied; {outbox} still in the outbox; {inbox} in the inbox; {} dead-lettered; {} waiting in the queue",
            effects.len(),
            fixture.dead_letter_count().await,
            fixture.ready(&fixture.bus.queue("recorder")).await
        );
    }
    assert_eq!(
        effects.len(),
        301,
        "every event applied once after the restart"
    );
    assert_eq!(fixture.applied_twice().await, 0, "and none twice");
    assert_eq!(
        fixture.dead_letter_count().await,
        0,
        "nothing dead-lettered by the outage"
    );
    fixture.finish().await;
}

#[tokio::test]
async fn the_events_of_one_ticket_are_applied_in_order() {
    let fixture = Fixture::new().await;
    fixture.start_consumer();
    fixture.start_relay();
    let ticket = Uuid::now_v7();
    let others: Vec<_> = (0..40)
        .map(|_| event("test.other", Some((Uuid::now_v7(), 1))))
        .collect();
    fixture.write(&others).await;
    // Twenty successive versions of one ticket, delivered back to back: were
    // they applied in parallel, a later version would often commit first and
    // the earlier ones be ignored as stale.
    let versions: Vec<_> = (1..=20)
        .map(|v| event("test.changed", Some((ticket, v))))
        .collect();
    fixture.write(&versions).await;
    let effects = fixture.await_effects(60, Duration::from_secs(20)).await;
    assert_eq!(effects.len(), 60, "every version applied, none found stale");
    fixture.finish().await;
}

/// Runs serially (`fault_` tests): it stops the shared PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_a_database_outage_holds_events_and_dead_letters_none() {
    let fixture = Fixture::new().await;
    fixture.start_flowing().await;

    let outage = Outage::database().await;
    // Events arrive while the consumer cannot reach its database.
    let connection =
        lapin::Connection::connect(fixture.env.config.amqp_url.expose(), Default::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let during: Vec<_> = (0..30)
        .map(|_| event("test.during", Some((Uuid::now_v7(), 1))))
        .collect();
    for event in &during {
        channel
            .basic_publish(
                fixture.bus.events_exchange().into(),
                "test.during".into(),
                Default::default(),
                &prost::Message::encode_to_vec(event),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Far longer than every retry of max_attempts (3) at 300ms each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    outage.end().await;
    let effects = fixture.await_effects(31, Duration::from_secs(60)).await;
    assert_eq!(
        effects.len(),
        31,
        "every event applied once the database is back"
    );
    assert_eq!(fixture.applied_twice().await, 0);
    assert_eq!(
        fixture.dead_letter_count().await,
        0,
        "an outage dead-letters nothing"
    );
    fixture.finish().await;
}
