//! The state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry as MetricsRegistry;
use skiff_api::Registry;
use skiff_store::Store;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenAuthenticator;
use crate::kubelet::KubeletClient;
use crate::metrics::ApiMetrics;

/// Settings handlers need at request time.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a watch stays open when the client sets no `timeoutSeconds` (upstream: 30–60 min).
    pub max_watch: Duration,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// `/version` gitVersion.
    pub git_version: String,
    /// tolerationSeconds given to every pod for the `node.kubernetes.io/not-ready` and
    /// `node.kubernetes.io/unreachable` NoExecute taints (upstream's DefaultTolerationSeconds
    /// admission, 300 s each).
    pub default_not_ready_toleration_seconds: i64,
    pub default_unreachable_toleration_seconds: i64,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            max_body_bytes: 3 * 1024 * 1024,
            max_watch: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(60),
            git_version: crate::KUBERNETES_VERSION.to_owned(),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
        }
    }
}

/// Shared handler state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    store: Arc<dyn Store>,
    metrics: ApiMetrics,
    metrics_registry: Arc<MetricsRegistry>,
    serving: ServingConfig,
    shutdown: CancellationToken,
    tokens: TokenAuthenticator,
    kubelet: Option<Arc<KubeletClient>>,
}

impl AppState {
    /// Assemble the state.
    pub fn new(
        store: Arc<dyn Store>,
        metrics: ApiMetrics,
        metrics_registry: Arc<MetricsRegistry>,
        serving: ServingConfig,
        shutdown: CancellationToken,
        tokens: TokenAuthenticator,
        kubelet: Option<Arc<KubeletClient>>,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                registry: Registry::builtin(),
                store,
                metrics,
                metrics_registry,
                serving,
                shutdown,
                tokens,
                kubelet,
            }),
        }
    }

    /// The resource registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Request metrics.
    pub fn metrics(&self) -> &ApiMetrics {
        &self.inner.metrics
    }

    /// Everything `/metrics` exposes.
    pub fn metrics_registry(&self) -> &MetricsRegistry {
        &self.inner.metrics_registry
    }

    /// Serving settings.
    pub fn serving(&self) -> &ServingConfig {
        &self.inner.serving
    }

    /// The client for node agents (logs, exec).
    pub(crate) fn kubelet(&self) -> Option<&KubeletClient> {
        self.inner.kubelet.as_deref()
    }

    /// Static bearer tokens.
    pub fn tokens(&self) -> &TokenAuthenticator {
        &self.inner.tokens
    }

    /// Cancelled when the server shuts down; long-running responses end on it.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
