//! Listeners: HTTPS with optional client certificates, and the loopback-only plain HTTP port.
//! Each takes a pre-bound listener and a shutdown token; on shutdown it stops accepting, lets
//! requests finish (watches end through the same token) and returns.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::{Identity, PeerIdentity, identity_from_certificate};
use crate::pki::CertifiedKey;

/// Build the TLS configuration: our serving certificate, client certificates verified against
/// the cluster CA but optional (tokens authenticate too), HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn tls_config(
    ca_pem: &str,
    serving: &CertifiedKey,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn serve_connection<IO>(
    io: IO,
    app: Router,
    identity: Option<Identity>,
    graceful: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = PeerIdentity(identity);
    let service = app.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        request
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = graceful.watch(connection.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serve HTTPS until `shutdown`.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => { backoff = Duration::from_millis(10); conn }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| identity_from_certificate(cert));
            serve_connection(stream, app, identity, watcher).await;
        });
    }
    drain(graceful).await;
}

/// Serve plain HTTP until `shutdown`; every request acts as the cluster admin, so this is only
/// ever bound to loopback.
pub(crate) async fn serve_insecure(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(serve_connection(
            tcp,
            app,
            Some(Identity::insecure_admin()),
            watcher,
        ));
    }
    drain(graceful).await;
}

async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10s; closing");
    }
}
