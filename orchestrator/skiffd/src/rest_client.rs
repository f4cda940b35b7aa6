//! client-go's `rest_client_*` series for the kube clients of Skiff's components: a tower layer
//! on the client counts every request by status code, method and host, and times it by verb and
//! URL template (namespace and name replaced by `{namespace}` and `{name}`, as client-go does, so
//! the series stay few).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: String,
    method: String,
    host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    url: String,
}

/// The series, shared by every client they are layered on.
#[derive(Debug, Clone)]
pub(crate) struct RestClientMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl Default for RestClientMetrics {
    fn default() -> Self {
        RestClientMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
        }
    }
}

impl RestClientMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            self.requests.clone(),
        );
        registry.register(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host.",
            self.latency.clone(),
        );
    }

    /// A kube client for `config` whose requests are counted here.
    pub(crate) fn client(&self, config: kube::Config) -> anyhow::Result<kube::Client> {
        // The layer sits outside kube's base-URL layer and sees relative URLs: take the host
        // from the configuration.
        let host = config
            .cluster_url
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let builder = kube::client::ClientBuilder::try_from(config)?;
        Ok(builder.with_layer(&Layer(self.clone(), host)).build())
    }
}

#[derive(Clone)]
struct Layer(RestClientMetrics, String);

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;
    fn layer(&self, inner: S) -> Service<S> {
        Service {
            inner,
            metrics: Arc::new(self.0.clone()),
            host: self.1.clone(),
        }
    }
}

#[derive(Clone)]
struct Service<S> {
    inner: S,
    metrics: Arc<RestClientMetrics>,
    host: String,
}

impl<S, B, R> tower::Service<http::Request<B>> for Service<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.method().to_string();
        let host = self.host.clone();
        let url = skiff_telemetry::trace::route(request.uri().path());
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let metrics = self.metrics.clone();
        // A client span per request, its context sent along as `traceparent`, so the API
        // server's span for it joins this component's trace.
        let span = tracing::info_span!(
            "http.client",
            otel.name = %format!("{method} {url}"),
            otel.kind = "client",
            http.request.method = %method,
            url.path = %url,
            http.response.status_code = tracing::field::Empty,
        );
        let mut request = request;
        span.in_scope(|| skiff_telemetry::trace::inject_current(request.headers_mut()));
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = tracing::Instrument::instrument(future, span.clone()).await;
            if let Ok(r) = &result {
                span.record("http.response.status_code", r.status().as_u16());
            }
            let code = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "<error>".to_owned(),
            };
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    code,
                    method: method.clone(),
                    host,
                })
                .inc();
            // A watch's duration is its lifetime, not a latency.
            if !watch {
                metrics
                    .latency
                    .get_or_create(&LatencyLabels { verb: method, url })
                    .observe(started.elapsed().as_secs_f64());
            }
            result
        })
    }
}
