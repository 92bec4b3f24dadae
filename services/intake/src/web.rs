//! `POST /api/v1/cti/{token}`: the PBX's call events. Answered only after
//! the event is committed: `200 {}` (or `{"action":"reject","reason":"busy"}`
//! to a blocked caller's `newCall`), `401` for a wrong token, `422` for a
//! malformed event, `503` while the database is unavailable — the PBX
//! retries, and a retry is harmless.

use std::{collections::HashSet, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    routing::post,
};
use chrono::Utc;
use hotline_kit::{bus::outbox::OutboxSignal, phone, telemetry};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::{
    IntakeConfig,
    cti::{self, Direction, Kind},
    store::{self, Recorded},
};

#[derive(Clone)]
struct Phone {
    /// The batch writer of PBX events.
    recorder: mpsc::Sender<store::Pending>,
    config: Arc<IntakeConfig>,
    /// Callers answered `reject`, in E.164.
    blocked: Arc<HashSet<String>>,
    relay: OutboxSignal,
}

pub fn router(
    recorder: mpsc::Sender<store::Pending>,
    config: Arc<IntakeConfig>,
    blocked: Arc<HashSet<String>>,
    relay: OutboxSignal,
) -> Router {
    Router::new()
        .route("/api/v1/cti/{token}", post(receive))
        .with_state(Phone {
            recorder,
            config,
            blocked,
            relay,
        })
}

type Reply = (StatusCode, Json<Value>);

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    (status, Json(json!({ "error": message.into() })))
}

/// One PBX event, in a span of its own (`cti.event`): the root of the
/// trace of the call's ticket when it is the event that ends the call.
async fn receive(
    State(phone): State<Phone>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let span = tracing::info_span!(
        "cti.event",
        otel.kind = "server",
        event = tracing::field::Empty,
        call = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let (status, reply) = receive_event(phone, token, headers, body)
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", status.as_u16());
    if !status.is_success() {
        telemetry::failed(&span, reply.0["error"].as_str().unwrap_or("refused"));
    }
    (status, reply)
}

async fn receive_event(phone: Phone, token: String, headers: HeaderMap, body: Bytes) -> Reply {
    let expected = phone.config.cti_token.expose().as_bytes();
    if expected.is_empty() || !bool::from(token.as_bytes().ct_eq(expected)) {
        return error(StatusCode::UNAUTHORIZED, "unknown CTI token");
    }
    let json_body = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let fields = if json_body {
        match cti::json_fields(&body) {
            Some(fields) => fields,
            None => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the body is not a JSON object",
                );
            }
        }
    } else {
        cti::form_fields(&body)
    };
    let event = match cti::parse(&fields) {
        Ok(event) => event,
        Err(why) => return error(StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    let country = &phone.config.country_code;
    let blocked = event.kind == Kind::NewCall
        && event.direction == Direction::In
        && phone::normalise(&event.from, country)
            .is_some_and(|caller| phone.blocked.contains(&caller));
    let kind = event.kind;
    let call_id = event.call_id.clone();
    let span = tracing::Span::current();
    span.record("event", kind.as_str());
    span.record("call", call_id.as_str());
    let (reply, recorded) = oneshot::channel();
    let incoming = store::Incoming {
        event,
        fields,
        at: Utc::now(),
        blocked,
        span,
    };
    let recorded = match phone.recorder.send((incoming, reply)).await {
        Ok(()) => recorded
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the recorder stopped"))),
        Err(_) => Err(anyhow::anyhow!("the recorder stopped")),
    };
    match recorded {
        Ok(Recorded::Applied) => {
            phone.relay.committed();
            metrics::counter!("hotline_cti_events_total", "event" => kind.as_str()).increment(1);
        }
        Ok(Recorded::Duplicate) => {}
        Err(failure) => {
            tracing::error!(error = format!("{failure:#}"), call = %call_id, "cannot record a CTI event");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be recorded; retry",
            );
        }
    }
    if blocked {
        return (
            StatusCode::OK,
            Json(json!({"action": "reject", "reason": "busy"})),
        );
    }
    (StatusCode::OK, Json(json!({})))
}
