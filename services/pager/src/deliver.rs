//! Sends queued deliveries: leases them from PostgreSQL (any number of
//! `pager` processes share the queue), posts them, and records every
//! attempt.
//!
//! - 2xx (an SMTP 2xx for email): delivered.
//! - 429, 408, 5xx, a timeout or no connection: retried with doubling
//!   backoff, up to `max_attempts`.
//! - an SMTP 4xx or no answer from the relay: retried; an SMTP 5xx: failed.
//! - any other HTTP 4xx: failed at once with the peer's message — a request it
//!   refuses will not improve by repetition.
//!
//! A trigger whose breach was cleared or acknowledged is cancelled instead
//! of sent (a retry included): never a page after the ticket was answered
//! or someone took it.
//!
//! Each attempt is a span, `pager.deliver <channel>`, continuing the trace
//! of the event that queued the delivery (for a trigger, the fault's); the
//! request to PagerDuty or a webhook carries it in `traceparent`. A
//! follow-up (a resolve) is in the trace of the answer that asked for it,
//! linked to its trigger's.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use hotline_kit::{
    bus::Backoff,
    mail, queue,
    telemetry::{self, TraceContext},
};
use lettre::{
    AsyncTransport, Message,
    message::{Mailbox, header::ContentType},
};
use sha2::Sha256;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    PagerConfig,
    store::{self, Claimed, Settled},
};

/// Deliveries sent at once by one process.
const CONCURRENCY: i64 = 32;
/// The longest wait between two attempts of one delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub struct Sender {
    pool: PgPool,
    client: reqwest::Client,
    /// The SMTP relay, when email pages are configured.
    mailer: Option<mail::Relay>,
    config: Arc<PagerConfig>,
}

/// The signature of a webhook body: `sha256=<hex HMAC-SHA256>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The writers' wake-up channel (`store::queue_deliveries`).
pub const CHANNEL: &str = "pager_deliveries";

impl queue::Queue for Sender {
    type Job = Claimed;

    fn channel(&self) -> &'static str {
        CHANNEL
    }

    async fn claim(&self) -> sqlx::Result<Vec<Claimed>> {
        store::claim(&self.pool, CONCURRENCY, self.lease()).await
    }

    async fn next_due(&self) -> sqlx::Result<Option<DateTime<Utc>>> {
        store::next_due(&self.pool).await
    }

    /// Sends `delivery` in a span of its own (`pager.deliver pagerduty`),
    /// continuing the trace that queued it; a follow-up links to the trace
    /// of the trigger it follows up.
    async fn work(&self, delivery: Claimed) {
        let span = tracing::info_span!(
            "pager.deliver",
            otel.name = %format_args!("pager.deliver {}", delivery.channel),
            otel.kind = "client",
            delivery = delivery.id,
            action = %delivery.action,
            attempt = delivery.attempts,
            http.response.status_code = tracing::field::Empty,
            smtp.reply_code = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        delivery.trace.adopt(&span);
        let fault = TraceContext {
            traceparent: delivery.fault_traceparent.clone(),
            tracestate: None,
        };
        fault.link(&span);
        self.send(delivery).instrument(span).await;
    }
}

/// What one attempt came to.
struct Answer {
    status: i32,
    error: Option<String>,
    retry: bool,
}

impl Sender {
    pub fn new(pool: PgPool, config: Arc<PagerConfig>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(concat!("hotline-pager/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mailer = if config.smtp_relay.is_empty() {
            None
        } else {
            Some(mail::relay(
                &config.smtp_relay,
                "pager.smtp_relay",
                config.request_timeout,
            )?)
        };
        Ok(Self {
            pool,
            client,
            mailer,
            config,
        })
    }

    pub async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        queue::run(self, &self.pool, cancel).await;
        Ok(())
    }

    /// How long a sender holds a delivery: its request and some slack.
    fn lease(&self) -> Duration {
        self.config.request_timeout * 2 + Duration::from_secs(5)
    }

    async fn send(&self, delivery: Claimed) {
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let (settled, error, status) = if delivery.action == "trigger" && delivery.unwanted {
            (Settled::Cancelled, None, 0)
        } else {
            // Bounds the whole attempt: lettre's timeout covers only the
            // connect, and a stalled peer must not hold the sender.
            let answer = tokio::time::timeout(self.config.request_timeout, self.post(&delivery))
                .await
                .unwrap_or_else(|_| Answer {
                    status: 0,
                    error: Some("no answer in time".into()),
                    retry: true,
                });
            let settled = if answer.status / 100 == 2 {
                let latency = (Utc::now() - delivery.created_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!("hotline_page_delivery_seconds", "channel" => delivery.channel.clone())
                    .record(latency.as_secs_f64());
                if let Some(escalated_at) = delivery.escalated_at {
                    let latency = (Utc::now() - escalated_at).to_std().unwrap_or_default();
                    metrics::histogram!("hotline_page_latency_from_breach_seconds", "channel" => delivery.channel.clone())
                        .record(latency.as_secs_f64());
                }
                tracing::info!(
                    delivery = delivery.id,
                    channel = %delivery.channel,
                    action = %delivery.action,
                    "paged"
                );
                Settled::Delivered
            } else if answer.retry && delivery.attempts < self.config.max_attempts {
                telemetry::failed(
                    &tracing::Span::current(),
                    format_args!("{}; retrying", answer.error.as_deref().unwrap_or("failed")),
                );
                let delay = Backoff::after_attempt(
                    self.config.retry_backoff,
                    MAX_BACKOFF,
                    delivery.attempts.into(),
                );
                Settled::Retry(Utc::now() + delay)
            } else {
                telemetry::failed(
                    &tracing::Span::current(),
                    answer.error.as_deref().unwrap_or("failed"),
                );
                tracing::error!(
                    delivery = delivery.id,
                    channel = %delivery.channel,
                    status = answer.status,
                    error = answer.error.as_deref().unwrap_or(""),
                    "page failed for good"
                );
                metrics::counter!("hotline_pages_failed_total").increment(1);
                Settled::Failed
            };
            (settled, answer.error, answer.status)
        };
        let span = tracing::Span::current();
        match (status, delivery.channel.as_str()) {
            (0, _) => {}
            (_, "email") => {
                span.record("smtp.reply_code", status);
            }
            _ => {
                span.record("http.response.status_code", status);
            }
        }
        span.record(
            "outcome",
            match settled {
                Settled::Delivered => "delivered",
                Settled::Retry(_) => "retry",
                Settled::Failed => "failed",
                Settled::Cancelled => "cancelled",
            },
        );
        let recorded = store::settle(
            &self.pool,
            delivery.id,
            delivery.attempts,
            started,
            status,
            error.as_deref(),
            clock.elapsed(),
            settled,
        )
        .await;
        if let Err(error) = recorded {
            // The lease runs out and the delivery is tried again.
            tracing::warn!(%error, delivery = delivery.id, "cannot record a page attempt");
        }
    }

    async fn post(&self, delivery: &Claimed) -> Answer {
        let request = match delivery.channel.as_str() {
            "pagerduty" => {
                let mut body: serde_json::Value = match serde_json::from_str(&delivery.body) {
                    Ok(body) => body,
                    Err(error) => return refused(format!("stored body is not JSON: {error}")),
                };
                body["routing_key"] = self.config.pagerduty_routing_key.expose().into();
                self.client
                    .post(&self.config.pagerduty_url)
                    .headers(trace_headers())
                    .header("content-type", "application/json")
                    .body(body.to_string())
            }
            "webhook" => {
                let mut request = self
                    .client
                    .post(&delivery.destination)
                    .headers(trace_headers())
                    .header("content-type", "application/json");
                if !self.config.webhook_secret.is_empty() {
                    request = request.header(
                        "x-hotline-signature",
                        signature(
                            self.config.webhook_secret.expose(),
                            delivery.body.as_bytes(),
                        ),
                    );
                }
                request.body(delivery.body.clone())
            }
            "email" => return self.mail(delivery).await,
            other => return refused(format!("unknown channel {other}")),
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let code = i32::from(status.as_u16());
                if status.is_success() {
                    return Answer {
                        status: code,
                        error: None,
                        retry: false,
                    };
                }
                let text = response.text().await.unwrap_or_default();
                let message: String = text.chars().take(500).collect();
                Answer {
                    status: code,
                    error: Some(format!("{status}: {message}")),
                    retry: status.as_u16() == 429
                        || status.as_u16() == 408
                        || status.is_server_error(),
                }
            }
            Err(error) => Answer {
                status: 0,
                error: Some(if error.is_timeout() {
                    "no answer in time".to_owned()
                } else {
                    format!("cannot reach the peer: {error}")
                }),
                // A bad URL or a redirect loop will not heal by itself.
                retry: error.is_timeout() || error.is_connect() || error.is_request(),
            },
        }
    }
}

impl Sender {
    /// Sends an email page through the relay: a 4xx reply or no answer is
    /// retried, a 5xx is final.
    async fn mail(&self, delivery: &Claimed) -> Answer {
        let Some(mailer) = &self.mailer else {
            return refused("email pages need pager.smtp_relay".into());
        };
        let body: serde_json::Value = match serde_json::from_str(&delivery.body) {
            Ok(body) => body,
            Err(error) => return refused(format!("stored body is not JSON: {error}")),
        };
        let (Ok(from), Ok(to)) = (
            self.config.email_from.parse::<Mailbox>(),
            delivery.destination.parse::<Mailbox>(),
        ) else {
            return refused(format!(
                "{:?} is not an email address",
                delivery.destination
            ));
        };
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(body["subject"].as_str().unwrap_or("Hotline page"))
            .header(ContentType::TEXT_PLAIN)
            .header(mail::AutoSubmitted("auto-generated"))
            .body(body["text"].as_str().unwrap_or_default().to_owned());
        let message = match message {
            Ok(message) => message,
            Err(error) => return refused(format!("cannot build the email: {error}")),
        };
        match mailer.send(message).await {
            Ok(reply) => Answer {
                status: reply.code().to_string().parse().unwrap_or(250),
                error: None,
                retry: false,
            },
            Err(error) => Answer {
                status: error
                    .status()
                    .and_then(|code| code.to_string().parse().ok())
                    .unwrap_or(0),
                error: Some(format!("the SMTP relay refused the page: {error}")),
                retry: mail::is_transient(&error),
            },
        }
    }
}

/// `traceparent` (and `tracestate`) of the current span: PagerDuty and
/// webhook receivers that trace join the fault's trace.
fn trace_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    telemetry::inject_http(&mut headers);
    headers
}

fn refused(error: String) -> Answer {
    Answer {
        status: 0,
        error: Some(error),
        retry: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_signature_is_hmac_sha256_of_the_raw_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
