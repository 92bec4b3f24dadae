//! PagerDuty's webhooks (v3) in: an incident acknowledged in PagerDuty
//! acknowledges its breach here. `POST /api/v1/pagerduty/webhook`, with
//! `X-PagerDuty-Signature` (`v1=<hex HMAC-SHA256 of the raw body>`, one or
//! more, comma-separated) checked against the configured secret.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use hmac::{Hmac, Mac};
use hotline_kit::bus::outbox::OutboxSignal;
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;

use crate::{
    PagerConfig,
    events::{AckError, acknowledge},
    messages::parse_dedup_key,
};

#[derive(Clone)]
struct Inbound {
    pool: PgPool,
    config: Arc<PagerConfig>,
    relay: OutboxSignal,
}

pub fn router(pool: PgPool, config: Arc<PagerConfig>, relay: OutboxSignal) -> Router {
    Router::new()
        .route("/api/v1/pagerduty/webhook", post(receive))
        .with_state(Inbound {
            pool,
            config,
            relay,
        })
}

type Reply = (StatusCode, Json<Value>);

fn reply(status: StatusCode, body: Value) -> Reply {
    (status, Json(body))
}

/// Whether one of the signatures in `header` signs `body` with `secret`.
fn signed(secret: &str, header: &str, body: &[u8]) -> bool {
    header.split(',').any(|signature| {
        signature
            .trim()
            .strip_prefix("v1=")
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
            .is_some_and(|digest| {
                let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
                    return false;
                };
                mac.update(body);
                mac.verify_slice(&digest).is_ok() // constant time
            })
    })
}

async fn receive(State(inbound): State<Inbound>, headers: HeaderMap, body: Bytes) -> Reply {
    let secret = &inbound.config.pagerduty_webhook_secret;
    if secret.is_empty() {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "PagerDuty webhooks are not configured (pager.pagerduty_webhook_secret)"}),
        );
    }
    let header = headers
        .get("x-pagerduty-signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !signed(secret.expose(), header, &body) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid X-PagerDuty-Signature"}),
        );
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "the body is not JSON"}),
        );
    };
    let event = &payload["event"];
    if event["event_type"] != "incident.acknowledged" {
        return reply(StatusCode::OK, json!({}));
    }
    let Some((ticket_id, breach)) = event["data"]["incident_key"]
        .as_str()
        .and_then(parse_dedup_key)
    else {
        return reply(
            StatusCode::OK,
            json!({"ignored": "not an incident Hotline opened"}),
        );
    };
    let by = event["agent"]["summary"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("pagerduty");
    match acknowledge(
        &inbound.pool,
        &ticket_id.to_string(),
        Some(breach),
        by,
        "pagerduty",
        &inbound.relay,
    )
    .await
    {
        Ok(_) => reply(StatusCode::OK, json!({})),
        Err(AckError::NoBreach(_) | AckError::Cleared(_)) => {
            reply(StatusCode::OK, json!({"ignored": "that breach is over"}))
        }
        Err(AckError::Store(error)) => {
            tracing::error!(
                error = format!("{error:#}"),
                "cannot record a PagerDuty acknowledgement"
            );
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "cannot record the acknowledgement now; retry"}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::signature;

    #[test]
    fn any_one_valid_v1_signature_is_enough() {
        let body = br#"{"event":{}}"#;
        let good = signature("s3cret", body).replace("sha256=", "v1=");
        assert!(signed("s3cret", &good, body));
        assert!(signed("s3cret", &format!("v1=00ff, {good}"), body));
        assert!(!signed("other", &good, body));
        assert!(!signed("s3cret", "", body));
        assert!(!signed("s3cret", &good, br#"{"event":{"x":1}}"#));
    }
}
