//! `intake`: the bridges that turn every contact into a ticket (ARCHITECTURE
//! §2, §8). This slice carries the phone: PBX call events (Generic CTI).
//!
//! - [`cti`]: the event format and the call state machine, pure.
//! - [`web`]: `POST /api/v1/cti/{token}`, answered after the commit.
//! - [`store`]: the only SQL; events, calls, and `intake.call_ended` queued
//!   in the same transaction.
//! - [`smtp`]: the SMTP server; a message gets `250` once stored.
//! - [`imap`]: hosted mailboxes polled; a message is marked once stored.
//! - [`mail`]: reading a message: author, threading, robots.
//! - [`forward`]: `intake.call_ended` and `intake.mail_received` from the
//!   bus to `tickets`, idempotent; agents' replies and `contracts.notice`
//!   out by mail.
//! - [`outgoing`]: mail out through the relay: queued in the transaction,
//!   sent after it commits, once, in its thread.

pub mod cti;
pub mod forward;
pub mod imap;
pub mod mail;
pub mod outgoing;
pub mod smtp;
pub mod store;
pub mod web;

use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use hotline_kit::{
    auth::Role,
    bus::{
        consumer::Consumer,
        outbox::{OutboxSignal, Relay},
    },
    config::{Secret, duration, text},
    grpc::{self, ServiceToken},
    phone, queue,
    supervisor::{Module, ModuleContext},
    telemetry::counter_from_zero,
};
use hotline_proto::tickets::v1::ticket_service_client::TicketServiceClient;
use serde::Deserialize;
use tonic::service::interceptor::InterceptedService;

pub const SCHEMA: &str = "intake";
const CONSUMES: &[&str] = &[
    "intake.call_ended",
    "intake.mail_received",
    "ticket.article_added",
    "contracts.notice",
];

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `[intake]` in the configuration, `HOTLINE_INTAKE__*` in the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IntakeConfig {
    /// Where the SMTP server listens.
    pub smtp_addr: SocketAddr,
    /// The support domains mail is accepted for (comma list); mail for any
    /// other domain is refused. Without any, no mail is accepted.
    #[serde(deserialize_with = "text")]
    pub domains: String,
    /// How the server names itself (greeting, `X-Loop`).
    pub hostname: String,
    /// PEM certificate chain and private key: with both, `STARTTLS`.
    pub tls_cert: String,
    pub tls_key: String,
    pub max_message_bytes: usize,
    /// Attachments kept with the ticket per mail (at most 20), and the
    /// largest kept; the rest stay in the stored original, named in the
    /// article.
    pub max_attachments: usize,
    pub max_attachment_bytes: usize,
    /// SMTP sessions at once; more get `421`.
    pub max_connections: usize,
    /// How long the server waits for a command or the message.
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Messages one sender may send per minute (0: no limit); more get `451`.
    pub sender_rate_per_minute: u64,
    /// The SMTP relay mail goes out through (`smtp://127.0.0.1:25`); without
    /// it, replies are not emailed (a note on the ticket says so).
    pub relay: Secret,
    /// The sender of Hotline's mail.
    pub from: String,
    /// The secret in the PBX's URL (`/api/v1/cti/{token}`); without it every
    /// PBX event is refused.
    pub cti_token: Secret,
    /// Country code for national numbers (`030 1234567` with `49`), digits
    /// only; without it a national number cannot be matched.
    #[serde(deserialize_with = "text")]
    pub country_code: String,
    /// Callers answered `{"action":"reject","reason":"busy"}` (comma list,
    /// any format; compared in E.164).
    #[serde(deserialize_with = "text")]
    pub blocked_numbers: String,
    /// IMAP mailboxes read like SMTP mail (comma list of
    /// `imap[s]://user:password@host[:port][/folder][?move=folder]`).
    pub imap: Secret,
    /// The longest wait between two looks into a mailbox (the `IDLE`
    /// timeout where the server offers it, the poll interval otherwise).
    #[serde(deserialize_with = "duration")]
    pub imap_poll: Duration,
    /// PEM certificates trusted for IMAPS besides the public roots.
    pub imap_ca: String,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            smtp_addr: SocketAddr::from(([127, 0, 0, 1], 2525)),
            domains: String::new(),
            hostname: "hotline".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_message_bytes: 25 * 1024 * 1024,
            max_attachments: 20,
            max_attachment_bytes: 10 * 1024 * 1024,
            max_connections: 100,
            command_timeout: Duration::from_secs(300),
            sender_rate_per_minute: 30,
            relay: Secret::default(),
            from: "Hotline <hotline@localhost>".into(),
            cti_token: Secret::default(),
            country_code: String::new(),
            blocked_numbers: String::new(),
            imap: Secret::default(),
            imap_poll: Duration::from_secs(60),
            imap_ca: String::new(),
        }
    }
}

impl IntakeConfig {
    /// Whether mail for `domain` (lower-case) is ours to take.
    pub fn accepts(&self, domain: &str) -> bool {
        self.domains
            .split(',')
            .map(str::trim)
            .any(|ours| !ours.is_empty() && ours.eq_ignore_ascii_case(domain))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.country_code.chars().all(|c| c.is_ascii_digit()) && self.country_code.len() <= 3,
            "intake.country_code must be 1 to 3 digits, like 49 or 86"
        );
        anyhow::ensure!(
            self.from.parse::<lettre::message::Mailbox>().is_ok(),
            "intake.from must be an address like \"Support <help@example.com>\""
        );
        anyhow::ensure!(
            self.max_message_bytes >= 1024 && self.max_connections >= 1,
            "intake.max_message_bytes must be at least 1024 and intake.max_connections at least 1"
        );
        anyhow::ensure!(
            self.max_attachments <= 20,
            "intake.max_attachments is at most 20 (what tickets keeps per article)"
        );
        anyhow::ensure!(
            self.imap_poll >= Duration::from_millis(100),
            "intake.imap_poll must be at least 100ms"
        );
        self.blocked_callers()?;
        imap::mailboxes(self.imap.expose())?;
        Ok(())
    }

    /// The block list in E.164, read once: what a `newCall` is checked
    /// against.
    pub fn blocked_callers(&self) -> anyhow::Result<HashSet<String>> {
        self.blocked_numbers
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|number| {
                phone::normalise(number, &self.country_code).ok_or_else(|| {
                    anyhow::anyhow!("intake.blocked_numbers: {number:?} is not a phone number")
                })
            })
            .collect()
    }

    fn secrets_from_env(&mut self) {
        self.cti_token
            .take_verbatim_from_env("HOTLINE_INTAKE__CTI_TOKEN");
        self.relay.take_verbatim_from_env("HOTLINE_INTAKE__RELAY");
        self.imap.take_verbatim_from_env("HOTLINE_INTAKE__IMAP");
    }
}

pub fn module() -> Module {
    Module {
        name: "intake",
        depends_on: &["tickets"],
        schema: SCHEMA,
        migrations: &MIGRATIONS,
        consumes: CONSUMES,
        init,
    }
}

/// Intake's counters, described and at zero from the start.
fn describe_metrics() {
    counter_from_zero(
        "hotline_mail_accepted_total",
        "Mails the SMTP server stored and answered 250.",
        &[],
    );
    counter_from_zero(
        "hotline_imap_messages_total",
        "Messages taken from IMAP mailboxes.",
        &[],
    );
    counter_from_zero(
        "hotline_imap_errors_total",
        "Failed rounds of an IMAP mailbox's poller.",
        &[],
    );
    let events: Vec<[(&str, &str); 1]> = cti::Kind::ALL
        .iter()
        .map(|kind| [("event", kind.as_str())])
        .collect();
    counter_from_zero(
        "hotline_cti_events_total",
        "PBX events recorded, by event.",
        &events.iter().map(|e| e.as_slice()).collect::<Vec<_>>(),
    );
    let kinds: Vec<[(&str, &str); 1]> = outgoing::KINDS.iter().map(|k| [("kind", *k)]).collect();
    counter_from_zero(
        "hotline_mail_sent_total",
        "Mails the relay accepted, by kind.",
        &kinds.iter().map(|k| k.as_slice()).collect::<Vec<_>>(),
    );
}

fn init(context: &mut ModuleContext) -> anyhow::Result<()> {
    describe_metrics();
    let mut config: IntakeConfig = context.config.section("intake")?;
    config.secrets_from_env();
    config.validate()?;
    if config.cti_token.is_empty() {
        tracing::warn!("intake.cti_token is not set: PBX events are refused");
    }
    if config.domains.trim().is_empty() {
        tracing::warn!("intake.domains is not set: the SMTP server refuses every recipient");
    }
    let config = Arc::new(config);
    let pool = context.pool(SCHEMA)?;
    let relay_signal = OutboxSignal::default();
    let (recorder, writer) = store::Recorder::new(pool.clone(), config.country_code.clone());
    context.spawn("cti-recorder", writer.run(context.cancel.clone()));
    context.add_http(web::router(
        recorder,
        config.clone(),
        Arc::new(config.blocked_callers()?),
        relay_signal.clone(),
    ));
    // Bound now, so a port in use stops the start.
    let smtp_listener = std::net::TcpListener::bind(config.smtp_addr)
        .map_err(|e| anyhow::anyhow!("binding SMTP on {}: {e}", config.smtp_addr))?;
    let smtp = Arc::new(smtp::Server {
        pool: pool.clone(),
        redis: context.redis(),
        config: config.clone(),
        relay: relay_signal.clone(),
        tls: match (config.tls_cert.as_str(), config.tls_key.as_str()) {
            ("", "") => None,
            ("", _) | (_, "") => {
                anyhow::bail!("intake.tls_cert and intake.tls_key go together")
            }
            (cert, key) => Some(smtp::acceptor(cert, key)?),
        },
    });
    let cancel = context.cancel.clone();
    context.spawn("smtp", smtp.run(smtp_listener, cancel));
    let mailboxes = imap::mailboxes(config.imap.expose())?;
    if !mailboxes.is_empty() {
        let poller = Arc::new(imap::Poller {
            pool: pool.clone(),
            relay: relay_signal.clone(),
            tls: imap::tls(&config.imap_ca)?,
            poll: config.imap_poll,
            max_message_bytes: config.max_message_bytes,
        });
        for mailbox in mailboxes {
            context.spawn("imap", poller.clone().run(mailbox, context.cancel.clone()));
        }
    }
    let relay = Relay::new(
        "intake",
        pool.clone(),
        relay_signal.clone(),
        context.publisher.clone(),
        &context.config.bus,
    );
    let cancel = context.cancel.clone();
    context.spawn("outbox-relay", async move { relay.run(cancel).await });
    let tickets = TicketServiceClient::new(InterceptedService::new(
        grpc::channel(&context.config.endpoint("tickets"))?,
        ServiceToken::new(context.authority.clone(), "intake", &[Role::Bridge]),
    ))
    .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES);
    let mail_relay = if config.relay.is_empty() {
        None
    } else {
        Some(hotline_kit::mail::relay(
            &config.relay,
            "intake.relay",
            Duration::from_secs(30),
        )?)
    };
    let sender = outgoing::Sender {
        pool: pool.clone(),
        relay: mail_relay.clone(),
        from: config.from.parse()?,
        tickets: tickets.clone(),
    };
    let cancel = context.cancel.clone();
    context.spawn("mail-sender", async move {
        let pool = sender.pool.clone();
        queue::run(&sender, &pool, cancel).await;
        Ok(())
    });
    let consumer = Consumer::new(
        "intake",
        CONSUMES,
        pool,
        context.subscriber.clone(),
        forward::Forwarder {
            tickets,
            hostname: config.hostname.clone(),
            limits: mail::Limits {
                max_files: config.max_attachments,
                max_file_bytes: config.max_attachment_bytes,
            },
            mailer: outgoing::Mailer {
                relay: mail_relay.is_some(),
                hostname: config.hostname.clone(),
            },
        },
        context.config.bus.clone(),
    )?;
    context.spawn("forwarder", Arc::new(consumer).run(context.cancel.clone()));
    Ok(())
}
