//! The agent's HTTPS server (kubelet's port 10250): `/healthz`, `/pods`, `/containerLogs/…`,
//! `/exec/…`, `/stats/summary`, `/metrics`, `/metrics/resource`, `/metrics/cadvisor`. The API server proxies `pods/log` and `pods/exec` here; clients must present a
//! certificate signed by the cluster CA when one is configured.

mod cadvisor;
mod exec;
pub(crate) mod logs;
mod resource_metrics;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Ctx;

fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", any(exec::exec))
        .route("/stats/summary", get(stats::summary))
        .route("/metrics", get(own_metrics))
        .route("/metrics/resource", get(resource_metrics::resource_metrics))
        .route("/metrics/cadvisor", get(cadvisor::cadvisor))
        .with_state(ctx)
}

async fn own_metrics(State(ctx): State<Arc<Ctx>>, headers: axum::http::HeaderMap) -> Response {
    skiff_telemetry::metrics_response(&ctx.registry, &headers)
}

async fn pods(State(ctx): State<Arc<Ctx>>) -> Response {
    let items: Vec<_> = ctx
        .pods
        .read()
        .expect("pods lock")
        .values()
        .map(|p| serde_json::to_value(&**p).unwrap_or_default())
        .collect();
    let body = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn tls_config(tls: &crate::AgentTls) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(chain, key)?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve until `shutdown`.
pub(crate) async fn serve(ctx: Arc<Ctx>, listener: TcpListener, shutdown: CancellationToken) {
    let config = match tls_config(&ctx.config.tls) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "agent TLS configuration is invalid; not serving");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let app = router(ctx);
    let span = tracing::info_span!("agent_server");
    tracing::Instrument::instrument(
        async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    a = listener.accept() => match a {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let service = TowerToHyperService::new(app);
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = shutdown.cancelled() => {}
                    }
                });
            }
        },
        span,
    )
    .await;
}
