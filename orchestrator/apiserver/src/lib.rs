//! Skiff's Kubernetes-compatible API server.
//!
//! [`start`] binds the listeners, bootstraps the cluster objects and serves until the shutdown
//! token fires. Resources are served generically from [`skiff_api::Registry`] over a
//! [`skiff_store::Store`]; see docs/ARCHITECTURE.md for the request path.

mod admission;
mod aggregator;
mod auth;
mod authz;
mod bootstrap;
mod bootstrap_token;
mod codec;
mod csr;
mod discovery;
mod error;
mod handlers;
mod kubelet;
mod metrics;
mod objects;
mod openapi;
mod pki;
mod protobuf;
mod request;
mod server;
mod state;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use prometheus_client::registry::Registry as MetricsRegistry;
use skiff_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use auth::{Identity, TokenAuthenticator};
pub use error::ApiError;
pub use kubelet::KubeletClient;
pub use metrics::ApiMetrics;
pub use pki::Pki;
pub use state::{AppState, ServingConfig};

/// The Kubernetes version Skiff's API reports (`/version`); kubectl picks its client by it.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

/// How to run the API server.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Where the PKI and kubeconfig live.
    pub data_dir: PathBuf,
    /// Address of the HTTPS listener.
    pub bind_address: IpAddr,
    /// HTTPS port; 0 picks a free one.
    pub port: u16,
    /// Plain-HTTP port on 127.0.0.1 (every request is admin), when wanted; 0 picks one.
    pub insecure_port: Option<u16>,
    /// Static token file (`token,user,uid,"groups"`).
    pub token_auth_file: Option<PathBuf>,
    /// Bearer tokens the server issues itself (the log collector's, for the search service),
    /// besides those of the token file.
    pub extra_tokens: Vec<(String, Identity)>,
    /// Extra names and addresses for the serving certificate.
    pub extra_sans: Vec<String>,
    /// The address other machines reach this server at (the `kubernetes` Endpoints, and the
    /// server in `kube-public/cluster-info` that joining nodes discover); default: the bind
    /// address, or loopback when bound to all interfaces.
    pub advertise_address: Option<IpAddr>,
    /// Request-time settings.
    pub serving: ServingConfig,
}

impl ApiServerConfig {
    /// Defaults: HTTPS on 127.0.0.1:6443, no insecure port.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ApiServerConfig {
            data_dir: data_dir.into(),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port: 6443,
            insecure_port: None,
            token_auth_file: None,
            extra_tokens: Vec::new(),
            extra_sans: Vec::new(),
            advertise_address: None,
            serving: ServingConfig::default(),
        }
    }
}

/// A started API server.
pub struct RunningApiServer {
    /// `https://host:port`.
    pub url: String,
    /// `http://127.0.0.1:port` when the insecure port is on.
    pub insecure_url: Option<String>,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The cluster CA certificate (PEM file).
    pub ca_file: PathBuf,
    /// Handler state, for in-process components.
    pub state: AppState,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningApiServer {
    /// Wait until the listeners have stopped (after the shutdown token fired).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The router with every route, authentication and tracing.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api))
        .route("/api/v1", get(discovery::core_resources))
        .route("/api/v1/{*rest}", any(handlers::core))
        .route("/apis", get(discovery::apis))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/apis/{group}/{version}/{*rest}", any(handlers::grouped))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*path}", get(openapi::document))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/metrics", get(metrics_endpoint))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(
            // One server span per request, continuing the caller's trace (`traceparent`); the
            // store spans of the request are its children.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    skiff_telemetry::trace::server_span(
                        request.method(),
                        &skiff_telemetry::trace::route(request.uri().path()),
                        request.uri().path(),
                        request.headers(),
                    )
                })
                .on_response(
                    |response: &axum::response::Response,
                     _: std::time::Duration,
                     span: &tracing::Span| {
                        skiff_telemetry::trace::record_status(span, response.status());
                    },
                ),
        )
        .with_state(state)
}

async fn health() -> Response {
    let mut r = (StatusCode::OK, "ok").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn not_found() -> Response {
    ApiError::path_not_found().into_response()
}

async fn metrics_endpoint(State(state): State<AppState>, headers: HeaderMap) -> Response {
    skiff_telemetry::metrics_response(state.metrics_registry(), &headers)
}

/// Start the API server: PKI, listeners, bootstrap objects. Serves until `shutdown` fires.
pub async fn start(
    config: ApiServerConfig,
    store: Arc<dyn Store>,
    mut metrics_registry: MetricsRegistry,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningApiServer> {
    let pki = Pki::load_or_create(&config.data_dir.join("pki"))?;
    let mut tokens = TokenAuthenticator::default();
    if let Some(path) = &config.token_auth_file {
        tokens = TokenAuthenticator::from_file(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
    }
    for (token, identity) in &config.extra_tokens {
        tokens.insert(token.clone(), identity.clone());
    }
    let metrics = ApiMetrics::default();
    metrics.register(&mut metrics_registry);
    metrics_registry.register_collector(Box::new(skiff_telemetry::ProcessCollector));
    let kubelet_client =
        pki.client_certificate("skiff-apiserver-kubelet-client", &["system:masters"])?;
    let kubelet = kubelet::KubeletClient::new(&pki.ca.cert_pem, &kubelet_client)?;
    let state = AppState::new(
        store,
        metrics,
        Arc::new(metrics_registry),
        config.serving.clone(),
        shutdown.clone(),
        tokens,
        Some(Arc::new(kubelet)),
    );

    let listener = TcpListener::bind(SocketAddr::new(config.bind_address, config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.bind_address, config.port))?;
    let port = listener.local_addr()?.port();
    let host = if config.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        config.bind_address
    };
    let advertise = config.advertise_address.unwrap_or(host);
    let mut sans = config.extra_sans.clone();
    sans.push(host.to_string());
    sans.push(advertise.to_string());
    let serving = pki.server_certificate(&sans)?;
    let tls = server::tls_config(&pki.ca.cert_pem, &serving)?;
    let url = format!("https://{}", SocketAddr::new(host, port));
    let kubeconfig = config.data_dir.join("kubeconfig");
    pki.write_admin_kubeconfig(&kubeconfig, &url, "skiff")?;

    bootstrap::bootstrap(&state, advertise, port, &pki.ca.cert_pem)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping: {e}"))?;

    let app = router(state.clone());
    let mut tasks = vec![tokio::spawn(server::serve_tls(
        listener,
        tls,
        app.clone(),
        shutdown.clone(),
    ))];
    tasks.push(tokio::spawn(aggregator::availability(
        state.clone(),
        shutdown.clone(),
    )));
    let mut insecure_url = None;
    if let Some(p) = config.insecure_port {
        let insecure = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p))).await?;
        insecure_url = Some(format!("http://{}", insecure.local_addr()?));
        tasks.push(tokio::spawn(server::serve_insecure(
            insecure,
            app,
            shutdown.clone(),
        )));
    }
    tracing::info!(%url, kubeconfig = %kubeconfig.display(), "api server listening");
    Ok(RunningApiServer {
        url,
        insecure_url,
        kubeconfig,
        ca_file: config.data_dir.join("pki").join("ca.crt"),
        state,
        tasks,
    })
}
