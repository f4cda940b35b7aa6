//! OpenTelemetry traces: the `tracing` spans of every component exported over OTLP/HTTP when
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//! W3C `traceparent` propagation across Skiff's own HTTP hops (clients inject, servers
//! extract), and the trace and span ids of the current span for JSON log lines, so a log
//! search can jump to the trace.
//!
//! The exporter honours the usual `OTEL_*` variables (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER[_ARG]`); `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it
//! off.

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

/// A running trace pipeline; [`Tracing::shutdown`] flushes the spans still queued.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Flush and stop the exporter (at process exit).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("flushing OpenTelemetry traces: {e}");
        }
    }
}

/// Whether the environment asks for trace export.
pub fn enabled_by_env() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The tracing layer exporting spans over OTLP/HTTP (protobuf), or None when the environment
/// does not ask for it. `command` names the process (`up`, `agent`, …) as a resource attribute;
/// the service name is `OTEL_SERVICE_NAME` or `skiffd`. Call outside any async runtime: the
/// exporter's blocking HTTP client owns its own.
pub fn otlp_layer<S>(
    command: &str,
) -> Result<
    Option<(impl tracing_subscriber::Layer<S>, Tracing)>,
    opentelemetry_otlp::ExporterBuildError,
>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !enabled_by_env() {
        return Ok(None);
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new(
            "skiff.command",
            command.to_owned(),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("skiffd");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("skiff");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false);
    Ok(Some((layer, Tracing { provider })))
}

/// The route of a Kubernetes API path, for span names and metric labels (client-go's URL
/// templates): `/api/v1/namespaces/default/pods/web/status` →
/// `/api/v1/namespaces/{namespace}/pods/{name}/status`.
pub fn route(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let prefix = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return path.to_owned(),
    };
    let mut out: Vec<String> = segments.iter().map(|s| (*s).to_owned()).collect();
    let mut i = prefix;
    if out.get(i).map(String::as_str) == Some("namespaces") && out.len() > i + 1 {
        out[i + 1] = "{namespace}".into();
        // `/namespaces/{namespace}` alone is the namespace object itself.
        i += 2;
        if out.len() == i {
            return format!("/{}", out.join("/"));
        }
    }
    // `<resource>/<name>/…`.
    if out.len() > i + 1 {
        out[i + 1] = "{name}".into();
    }
    format!("/{}", out.join("/"))
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Make `span` a child of the remote span named by the request's `traceparent` header, if any
/// (a server span continuing a client's trace).
pub fn continue_remote_trace(span: &tracing::Span, headers: &HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderReader(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// A server span for one HTTP request, named `METHOD route`, continuing the caller's trace.
/// Record the answer with [`record_status`].
pub fn server_span(
    method: &http::Method,
    route: &str,
    path: &str,
    headers: &HeaderMap,
) -> tracing::Span {
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    continue_remote_trace(&span, headers);
    span
}

/// Record a server span's response status (5xx marks the span as an error).
pub fn record_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Add `traceparent` for the current span to an outgoing request's headers (no-op without an
/// exported trace).
pub fn inject_current(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderWriter(headers));
    }
}

/// The current span's trace and span ids (hex), when traces are exported.
pub fn current_ids() -> Option<(String, String)> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// A JSON log line formatter: tracing-subscriber's JSON format plus `trace_id` and `span_id`
/// of the current span when traces are exported. Pair it with `JsonFields` (the JSON format
/// reads span fields as JSON).
pub struct JsonWithTraceIds;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonWithTraceIds
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        tracing_subscriber::fmt::format().json().format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        match current_ids() {
            Some((trace_id, span_id)) if line.trim_end().ends_with('}') => {
                let body = line.trim_end().trim_end_matches('}');
                writeln!(
                    writer,
                    "{body},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_routes() {
        assert_eq!(
            route("/api/v1/namespaces/default/pods/web/status"),
            "/api/v1/namespaces/{namespace}/pods/{name}/status"
        );
        assert_eq!(
            route("/api/v1/namespaces/default/pods"),
            "/api/v1/namespaces/{namespace}/pods"
        );
        assert_eq!(
            route("/api/v1/namespaces/kube-system"),
            "/api/v1/namespaces/{namespace}"
        );
        assert_eq!(route("/api/v1/nodes/n1"), "/api/v1/nodes/{name}");
        assert_eq!(
            route("/apis/apps/v1/deployments"),
            "/apis/apps/v1/deployments"
        );
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler"),
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        );
        assert_eq!(route("/version"), "/version");
    }

    #[test]
    fn traceparent_round_trips_through_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = TraceContextPropagator::new().extract(&HeaderReader(&headers));
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        let mut out = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderWriter(&mut out));
        assert_eq!(
            out["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn without_an_exporter_there_are_no_ids() {
        // A subscriber without the OpenTelemetry layer (scoped: another test sets a global one).
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let span = tracing::info_span!("x");
            let _e = span.enter();
            assert!(current_ids().is_none());
            let mut h = HeaderMap::new();
            inject_current(&mut h);
            assert!(h.is_empty());
        });
    }

    #[test]
    fn json_lines_carry_the_ids_of_the_current_span() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(JsonWithTraceIds)
                    .with_writer(move || writer.clone()),
            );
        // Global, as in the daemons: inside an event's dispatch a scoped (thread-local)
        // dispatcher is not visible to `Span::current()`, the global one is. No other test in
        // this crate installs a subscriber.
        tracing::subscriber::set_global_default(subscriber).unwrap();
        let ids = {
            let span = tracing::info_span!("request", path = "/x");
            let _e = span.enter();
            tracing::info!(answer = 42, "inside");
            current_ids()
        };
        let (trace_id, span_id) = ids.expect("ids inside a span");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["trace_id"], trace_id.as_str());
        assert_eq!(line["span_id"], span_id.as_str());
        assert_eq!(line["fields"]["answer"], 42);
        assert_eq!(line["span"]["path"], "/x");
    }
}
