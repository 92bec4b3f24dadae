//! `pager`: who gets woken for an escalation, and how (ARCHITECTURE §8).
//!
//! - [`events`]: `sla.escalated` queues pages to the level's targets,
//!   `sla.cleared` resolves them; `person.*` keeps the people paged (and
//!   the whole directory is read once at start); acknowledgements from
//!   any edge.
//! - [`deliver`]: sends the queue (PagerDuty, webhooks, email), with
//!   retries and every attempt recorded.
//! - [`messages`]: PagerDuty Events API v2 and generic webhook bodies.
//! - [`people`]: who a schedule or a level names: the directory's people,
//!   copied from `person.*` events and named by email, and the legacy
//!   people from before the directory until they are adopted; pure.
//! - [`schedule`]: on-call rotations and overrides, pure.
//! - [`webhook`]: PagerDuty v3 webhooks in (acknowledgements).
//! - [`store`]: the only SQL.
//! - [`api`]: the gRPC `PagerService`.

pub mod api;
pub mod deliver;
pub mod events;
pub mod messages;
pub mod people;
pub mod schedule;
pub mod store;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use hotline_kit::{
    auth::Role,
    bus::{
        consumer::Consumer,
        outbox::{OutboxSignal, Relay},
    },
    config::{Secret, duration},
    grpc::{self, MAX_MESSAGE_BYTES, ServiceToken},
    supervisor::{Module, ModuleContext},
    telemetry::counter_from_zero,
};
use hotline_proto::{
    dispatch::v1::dispatch_service_client::DispatchServiceClient,
    pager::v1::pager_service_server::PagerServiceServer,
    tickets::v1::ticket_service_client::TicketServiceClient,
};
use serde::Deserialize;

pub const SCHEMA: &str = "pager";
const CONSUMES: &[&str] = &[
    "sla.escalated",
    "sla.cleared",
    "person.added",
    "person.updated",
    "person.deactivated",
];

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `[pager]` in the configuration, `HOTLINE_PAGER__*` in the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PagerConfig {
    /// With it set, every level pages this PagerDuty service.
    pub pagerduty_routing_key: Secret,
    pub pagerduty_url: String,
    /// Signs PagerDuty's v3 webhooks; without it they are refused.
    pub pagerduty_webhook_secret: Secret,
    /// With it set, every level is posted to this URL too.
    pub webhook_url: String,
    /// Signs every webhook Hotline sends (`X-Hotline-Signature`).
    pub webhook_secret: Secret,
    /// The SMTP relay email pages go through, e.g. `smtp://127.0.0.1:25`,
    /// `smtp://user:password@relay:587?tls=required`; without it, people are
    /// paged on their webhooks only.
    pub smtp_relay: Secret,
    /// The sender of email pages.
    pub email_from: String,
    /// `payload.source` of PagerDuty events.
    pub source: String,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Attempts of one delivery before it is failed.
    pub max_attempts: i32,
    /// Wait before the second attempt; doubles after each.
    #[serde(deserialize_with = "duration")]
    pub retry_backoff: Duration,
}

impl Default for PagerConfig {
    fn default() -> Self {
        Self {
            pagerduty_routing_key: Secret::default(),
            pagerduty_url: "https://events.pagerduty.com/v2/enqueue".into(),
            pagerduty_webhook_secret: Secret::default(),
            webhook_url: String::new(),
            webhook_secret: Secret::default(),
            smtp_relay: Secret::default(),
            email_from: "Hotline <hotline@localhost>".into(),
            source: "hotline".into(),
            request_timeout: Duration::from_secs(10),
            max_attempts: 12,
            retry_backoff: Duration::from_secs(1),
        }
    }
}

impl PagerConfig {
    /// Secrets as the environment holds them, never parsed.
    fn secrets_from_env(&mut self) {
        for (variable, secret) in [
            (
                "HOTLINE_PAGER__PAGERDUTY_ROUTING_KEY",
                &mut self.pagerduty_routing_key,
            ),
            (
                "HOTLINE_PAGER__PAGERDUTY_WEBHOOK_SECRET",
                &mut self.pagerduty_webhook_secret,
            ),
            ("HOTLINE_PAGER__WEBHOOK_SECRET", &mut self.webhook_secret),
            ("HOTLINE_PAGER__SMTP_RELAY", &mut self.smtp_relay),
        ] {
            secret.take_verbatim_from_env(variable);
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, url) in [
            ("pager.pagerduty_url", &self.pagerduty_url),
            ("pager.webhook_url", &self.webhook_url),
        ] {
            anyhow::ensure!(
                url.is_empty() || url.starts_with("https://") || url.starts_with("http://"),
                "{name} must be an http(s) URL"
            );
        }
        anyhow::ensure!(
            self.email_from.parse::<lettre::message::Mailbox>().is_ok(),
            "pager.email_from must be an address like \"Hotline <hotline@example.com>\""
        );
        anyhow::ensure!(
            (1..=100).contains(&self.max_attempts),
            "pager.max_attempts must be between 1 and 100"
        );
        anyhow::ensure!(
            self.request_timeout >= Duration::from_millis(100),
            "pager.request_timeout must be at least 100ms"
        );
        Ok(())
    }
}

pub fn module() -> Module {
    Module {
        name: "pager",
        depends_on: &["sla"],
        schema: SCHEMA,
        migrations: &MIGRATIONS,
        consumes: CONSUMES,
        init,
    }
}

fn init(context: &mut ModuleContext) -> anyhow::Result<()> {
    counter_from_zero(
        "hotline_pages_failed_total",
        "Pages refused for good by their channel.",
        &[],
    );
    counter_from_zero(
        "hotline_pages_unroutable_total",
        "Escalation levels whose targets had no working contact method.",
        &[],
    );
    metrics::describe_histogram!(
        "hotline_page_delivery_seconds",
        metrics::Unit::Seconds,
        "From a page's queued row to its channel's acceptance, by channel."
    );
    metrics::describe_histogram!(
        "hotline_page_latency_from_breach_seconds",
        metrics::Unit::Seconds,
        "From sla firing the step a page is for (the breach itself, for the first) to its \
         channel's acceptance, by channel: the whole way from the clock to the pager."
    );
    let mut config: PagerConfig = context.config.section("pager")?;
    config.secrets_from_env();
    config.validate()?;
    if config.pagerduty_routing_key.is_empty() {
        tracing::info!("no PagerDuty routing key: levels page the configured targets only");
    }
    let config = Arc::new(config);
    let pool = context.pool(SCHEMA)?;
    let relay_signal = OutboxSignal::default();
    // Only asked, when a ticket has no breach, whether the ticket exists.
    let tickets = TicketServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        grpc::channel(&context.config.endpoint("tickets"))?,
        ServiceToken::new(context.authority.clone(), "pager", &[Role::Bridge]),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let directory =
        DispatchServiceClient::new(tonic::service::interceptor::InterceptedService::new(
            grpc::channel(&context.config.endpoint("dispatch"))?,
            ServiceToken::new(context.authority.clone(), "pager", &[Role::Bridge]),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let cancel = context.cancel.clone();
    context.spawn(
        "directory-sync",
        events::sync_directory(pool.clone(), directory, cancel),
    );
    context.add_grpc(
        PagerServiceServer::new(api::PagerApi::new(
            pool.clone(),
            relay_signal.clone(),
            tickets,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    context.add_http(webhook::router(
        pool.clone(),
        config.clone(),
        relay_signal.clone(),
    ));
    let relay = Relay::new(
        "pager",
        pool.clone(),
        relay_signal.clone(),
        context.publisher.clone(),
        &context.config.bus,
    );
    let cancel = context.cancel.clone();
    context.spawn("outbox-relay", async move { relay.run(cancel).await });
    let consumer = Consumer::new(
        "pager",
        CONSUMES,
        pool.clone(),
        context.subscriber.clone(),
        events::Handler {
            config: config.clone(),
        },
        context.config.bus.clone(),
    )?
    .waking(relay_signal);
    context.spawn("consumer", Arc::new(consumer).run(context.cancel.clone()));
    let sender = deliver::Sender::new(pool, config)?;
    let cancel = context.cancel.clone();
    context.spawn("sender", async move { sender.run(cancel).await });
    Ok(())
}
