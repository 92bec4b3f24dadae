//! Logs, traces and metrics.
//!
//! `tracing` everywhere; spans become OpenTelemetry spans, exported over
//! OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. W3C trace context rides on
//! gRPC metadata ([`grpc_server_span`], [`inject_grpc`]), on AMQP headers
//! (the outbox stores it with each event; consumers restore it with
//! [`set_parent`]) and on outgoing HTTP requests ([`inject_http`]); deferred
//! work (a clock's arming, a queued page, a queued mail) keeps a
//! [`TraceContext`] in its row and continues it when it runs. So one trace
//! follows a fault across the fleet, from the SMTP session to the page.
//! A gRPC server span is named after its operation (`tickets.CreateTicket`)
//! and says how the call ended ([`RecordGrpcStatus`]); any span can be
//! marked [`failed`].
//! Metrics go to a Prometheus recorder rendered at `/metrics`.

use std::{
    collections::HashMap,
    future::Future,
    io::IsTerminal,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{Status, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{JsonFields, Writer},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{LogConfig, LogFormat};

/// What becomes a span (and an event of one) in traces, whatever the log
/// shows: Hotline's spans are at `info`; the AMQP client's chatter is not
/// the fault's story.
const TRACE_FILTER: &str = "info,lapin=warn";

/// Keeps the tracer provider so spans are flushed at shutdown.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the global subscriber once per process; later calls (tests
    /// starting several apps) reuse it.
    /// Spans are reported as `service_name` unless `OTEL_SERVICE_NAME` or
    /// a `service.name` in `OTEL_RESOURCE_ATTRIBUTES` says otherwise; the
    /// other attributes there are kept too.
    pub fn init(config: &LogConfig, service_name: &str) -> anyhow::Result<Self> {
        let mut resource = Resource::builder();
        if !service_name_in_env() {
            resource = resource.with_service_name(service_name.to_owned());
        }
        let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        // The log's filter is the log's alone: an operator quietening the
        // log (`warn`) keeps every span of the trace.
        let filter =
            EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.filter))?;
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name.to_owned()))
            .with_filter(EnvFilter::try_new(TRACE_FILTER)?);
        let registry = tracing_subscriber::registry().with(otel);
        let ansi = std::io::stderr().is_terminal();
        let installed = match config.format {
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(ansi)
                        .with_filter(filter),
                )
                .try_init(),
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .event_format(WithTraceIds(tracing_subscriber::fmt::format().json()))
                        .fmt_fields(JsonFields::new())
                        .with_writer(std::io::stderr)
                        .with_filter(filter),
                )
                .try_init(),
        };
        if installed.is_err() {
            tracing::debug!("a tracing subscriber is already installed; keeping it");
        }
        Ok(Self { provider })
    }

    /// Flushes spans still buffered.
    pub async fn shutdown(self) {
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Err(error)) => tracing::warn!(%error, "flushing traces failed"),
            Err(error) => tracing::warn!(%error, "flushing traces panicked"),
            Ok(Ok(())) => {}
        }
    }
}

/// Whether the environment names the service for OpenTelemetry.
fn service_name_in_env() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        })
}

/// A JSON log line, with the `trace_id` and `span_id` of the span it was
/// written in first, so logs and traces join on them.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let context = tracing::Span::current().context();
        let span = context.span();
        let ids = span.span_context();
        match line.strip_prefix('{') {
            Some(rest) if ids.is_valid() => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id(),
                ids.span_id()
            ),
            _ => writer.write_str(&line),
        }
    }
}

/// The process-wide Prometheus recorder; installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (tests): then ours only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Describes counter `name` with its HELP line and registers it at zero for
/// each set of `labels` (none: one unlabelled series), so a rule's
/// `increase()` sees the first event after a start instead of a series that
/// appears already at 1.
pub fn counter_from_zero(
    name: &'static str,
    help: &'static str,
    labels: &[&[(&'static str, &str)]],
) {
    metrics::describe_counter!(name, help);
    if labels.is_empty() {
        metrics::counter!(name).increment(0);
    }
    for set in labels {
        let set: Vec<metrics::Label> = set
            .iter()
            .map(|(key, value)| metrics::Label::new(*key, (*value).to_owned()))
            .collect();
        metrics::counter!(name, set).increment(0);
    }
}

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct PairCarrier<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for PairCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// `(traceparent, tracestate)` of the current span; empty strings outside
/// any trace.
pub fn current_trace_context() -> (String, String) {
    let mut map = HashMap::new();
    TraceContextPropagator::new().inject_context(
        &tracing::Span::current().context(),
        &mut MapCarrier(&mut map),
    );
    (
        map.remove("traceparent").unwrap_or_default(),
        map.remove("tracestate").unwrap_or_default(),
    )
}

/// Makes `span` a child of the remote trace described by the W3C fields.
/// Call before the span is first entered.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if traceparent.is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&PairCarrier {
        traceparent,
        tracestate,
    });
    let _ = span.set_parent(parent);
}

/// The W3C trace context of a span, kept with deferred work — a clock's
/// arming, a queued page, a queued mail — so the work continues the trace
/// that asked for it when it runs, in whatever process and however late.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TraceContext {
    /// `traceparent`; `None` outside any trace (and for work kept before
    /// traces were).
    pub traceparent: Option<String>,
    /// `tracestate`, when the trace carries one.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The current span's.
    pub fn current() -> Self {
        let (traceparent, tracestate) = current_trace_context();
        Self {
            traceparent: Some(traceparent).filter(|t| !t.is_empty()),
            tracestate: Some(tracestate).filter(|t| !t.is_empty()),
        }
    }

    /// Makes `span` continue this trace, as a child of the span it was
    /// taken from. Call before `span` is first entered.
    pub fn adopt(&self, span: &tracing::Span) {
        set_parent(
            span,
            self.traceparent.as_deref(),
            self.tracestate.as_deref(),
        );
    }

    /// Links `span` to this trace: a span of another trace that concerns
    /// the same thing (the answer to a fault, linked to the fault's).
    pub fn link(&self, span: &tracing::Span) {
        if self.traceparent.is_none() {
            return;
        }
        let linked = TraceContextPropagator::new().extract(&PairCarrier {
            traceparent: self.traceparent.as_deref(),
            tracestate: self.tracestate.as_deref(),
        });
        // An invalid context (a row edited by hand) links nothing.
        span.add_link(linked.span().span_context().clone());
    }
}

/// Marks `span` failed, saying why: what a trace viewer shows in red.
pub fn failed(span: &tracing::Span, why: impl std::fmt::Display) {
    span.set_status(Status::error(why.to_string()));
}

/// The name of a gRPC call's span: `tickets.CreateTicket` for
/// `/hotline.tickets.v1.TicketService/CreateTicket`, `Service/Method` for
/// other services (`grpc.health.v1.Health/Check`), and `grpc` for a path
/// that names no method (whatever a client sent, it names no span).
pub fn grpc_operation(path: &str) -> String {
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 100
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    let Some((service, method)) = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .filter(|(service, method)| valid(service) && valid(method) && !method.contains('.'))
    else {
        return "grpc".to_owned();
    };
    match service.split('.').collect::<Vec<_>>().as_slice() {
        ["hotline", module, _version, _service] => format!("{module}.{method}"),
        _ => format!("{service}/{method}"),
    }
}

/// The span of one incoming gRPC call, child of the caller's trace, named
/// after its operation ([`grpc_operation`]); [`RecordGrpcStatus`] says how
/// it ended.
pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let path = request.uri().path();
    let operation = grpc_operation(path);
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .filter(|_| operation != "grpc")
        .unwrap_or(("", ""));
    let span = tracing::info_span!(
        "grpc",
        otel.name = %operation,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    set_parent(&span, header("traceparent"), header("tracestate"));
    span
}

/// A tower layer for the gRPC server: records on each call's span the
/// gRPC status it answered (`rpc.grpc.status_code`), and marks the span
/// failed, with the status's message, for any status but `OK` — in this
/// fleet the callers are mostly our own modules, so a refused call is a
/// failure someone must see. A call dropped before its answer (its
/// deadline passed, the client went away) is failed too.
///
/// Reads the status from the response headers, where tonic puts it for
/// every error of a unary call; a status in the trailers of a stream is not
/// seen (Hotline has no streaming call).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordGrpcStatus;

impl<S> tower::Layer<S> for RecordGrpcStatus {
    type Service = RecordGrpcStatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordGrpcStatusService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RecordGrpcStatusService<S> {
    inner: S,
}

impl<S, Req, B> tower::Service<Req> for RecordGrpcStatusService<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            // Polled inside the call's span (tonic enters it around the
            // whole service).
            let mut unanswered = Unanswered(Some(tracing::Span::current()));
            let answered = call.await;
            if let (Some(span), Ok(response)) = (unanswered.0.take(), &answered) {
                record_grpc_status(&span, response.headers());
            }
            answered
        })
    }
}

/// Marks a call's span failed if the call is dropped before its answer.
struct Unanswered(Option<tracing::Span>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            failed(
                &span,
                "the call ended before its answer: its deadline passed or the client went away",
            );
        }
    }
}

fn record_grpc_status(span: &tracing::Span, headers: &http::HeaderMap) {
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .unwrap_or(0);
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    if code != 0 {
        let message = tonic::Status::from_header_map(headers)
            .map(|status| status.message().to_owned())
            .unwrap_or_default();
        failed(
            span,
            format!("{:?}: {message}", tonic::Code::from_i32(code)),
        );
    }
}

/// Adds the current trace context to an outgoing gRPC request.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    let (traceparent, tracestate) = current_trace_context();
    for (key, value) in [("traceparent", traceparent), ("tracestate", tracestate)] {
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = value.parse() {
            metadata.insert(key, value);
        }
    }
}

/// Adds the current trace context (W3C `traceparent`, `tracestate`) to the
/// headers of an outgoing HTTP request, for a peer that takes them.
pub fn inject_http(headers: &mut http::HeaderMap) {
    let (traceparent, tracestate) = current_trace_context();
    for (key, value) in [("traceparent", traceparent), ("tracestate", tracestate)] {
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_span_is_named_after_its_operation_and_a_strange_path_after_nothing() {
        assert_eq!(
            grpc_operation("/hotline.tickets.v1.TicketService/CreateTicket"),
            "tickets.CreateTicket"
        );
        assert_eq!(
            grpc_operation("/hotline.admin.v1.DeadLetterService/ReplayDeadLetters"),
            "admin.ReplayDeadLetters"
        );
        assert_eq!(
            grpc_operation("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        let long = format!("/{}/Call", "a".repeat(500));
        for strange in [
            "",
            "/",
            "//",
            "/hotline.tickets.v1.TicketService/",
            "/hotline.tickets.v1.TicketService/Create/Ticket",
            "/hotline.tickets.v1.TicketService/Create\u{1b}]0;x",
            "/svc/\0",
            "/a b/c",
            long.as_str(),
        ] {
            assert_eq!(grpc_operation(strange), "grpc", "{strange:?}");
        }
    }

    #[test]
    fn an_empty_trace_context_adopts_and_links_nothing() {
        let kept = TraceContext::default();
        let span = tracing::info_span!("work");
        kept.adopt(&span);
        kept.link(&span);
        assert_eq!(TraceContext::current(), TraceContext::default());
    }
}
