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

/// `/api/v1/namespaces/default/pods/web/status` → `/api/v1/namespaces/{namespace}/pods/{name}/status`.
fn template(path: &str) -> String {
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
        let url = template(request.uri().path());
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
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

#[cfg(test)]
mod tests {
    use super::template;

    #[test]
    fn urls_become_templates() {
        assert_eq!(
            template("/api/v1/namespaces/default/pods/web/status"),
            "/api/v1/namespaces/{namespace}/pods/{name}/status"
        );
        assert_eq!(
            template("/api/v1/namespaces/default/pods"),
            "/api/v1/namespaces/{namespace}/pods"
        );
        assert_eq!(
            template("/api/v1/namespaces/kube-system"),
            "/api/v1/namespaces/{namespace}"
        );
        assert_eq!(template("/api/v1/nodes/n1"), "/api/v1/nodes/{name}");
        assert_eq!(
            template("/apis/apps/v1/deployments"),
            "/apis/apps/v1/deployments"
        );
        assert_eq!(
            template("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler"),
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        );
        assert_eq!(template("/version"), "/version");
    }
}
