//! Logs, traces and metrics.
//!
//! `tracing` everywhere; spans become OpenTelemetry spans, exported over
//! OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. W3C trace context rides on
//! gRPC metadata ([`grpc_server_span`], [`inject_grpc`]) and on AMQP headers
//! (the outbox stores it with each event; consumers restore it with
//! [`set_parent`]), so one trace follows a fault across the fleet.
//! Metrics go to a Prometheus recorder rendered at `/metrics`.

use std::{collections::HashMap, io::IsTerminal, sync::OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{JsonFields, Writer},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{LogConfig, LogFormat};

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
        let filter =
            EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.filter))?;
        let otel =
            tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name.to_owned()));
        let registry = tracing_subscriber::registry().with(filter).with(otel);
        let ansi = std::io::stderr().is_terminal();
        let installed = match config.format {
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(ansi),
                )
                .try_init(),
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .event_format(WithTraceIds(tracing_subscriber::fmt::format().json()))
                        .fmt_fields(JsonFields::new())
                        .with_writer(std::io::stderr),
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

/// The span of one incoming gRPC call, child of the caller's trace.
pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let span = tracing::info_span!("grpc", otel.kind = "server", path = %request.uri().path());
    set_parent(&span, header("traceparent"), header("tracestate"));
    span
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
