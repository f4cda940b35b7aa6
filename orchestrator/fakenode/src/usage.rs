//! Fake usage for fake nodes: one HTTPS listener plays every fake node's kubelet
//! `/metrics/resource` (each node points there through its InternalIP, its kubelet port and
//! metrics-server's `metrics.k8s.io/resource-metrics-path` annotation), so the metrics server
//! can be measured at a thousand nodes. Every fake container uses 10 millicores and 20 MiB.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use skiff_telemetry::TextWriter;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// CPU of one fake container, cores.
const CONTAINER_CORES: f64 = 0.010;
/// Working set of one fake container.
const CONTAINER_BYTES: f64 = 20.0 * 1024.0 * 1024.0;
/// What the fake node itself uses besides its containers.
const NODE_CORES: f64 = 0.100;
const NODE_BYTES: f64 = 1024.0 * 1024.0 * 1024.0;

/// A running fake pod.
#[derive(Debug, Clone)]
pub(crate) struct FakePod {
    pub namespace: String,
    pub name: String,
    pub containers: Vec<String>,
    /// ms since the epoch.
    pub started_ms: i64,
}

/// Fake pods by node, then by uid.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    nodes: RwLock<HashMap<String, HashMap<String, FakePod>>>,
    node_of: RwLock<HashMap<String, String>>,
    started_ms: i64,
}

impl Usage {
    pub(crate) fn new() -> Self {
        Usage {
            started_ms: jiff::Timestamp::now().as_millisecond(),
            ..Usage::default()
        }
    }

    pub(crate) fn add(&self, node: &str, uid: &str, pod: FakePod) {
        self.nodes
            .write()
            .expect("usage lock")
            .entry(node.to_owned())
            .or_default()
            .insert(uid.to_owned(), pod);
        self.node_of
            .write()
            .expect("usage lock")
            .insert(uid.to_owned(), node.to_owned());
    }

    pub(crate) fn remove(&self, uid: &str) {
        if let Some(node) = self.node_of.write().expect("usage lock").remove(uid)
            && let Some(pods) = self.nodes.write().expect("usage lock").get_mut(&node)
        {
            pods.remove(uid);
        }
    }

    /// kubelet's `/metrics/resource` for one node.
    fn render(&self, node: &str) -> String {
        let now = jiff::Timestamp::now().as_millisecond();
        let seconds = |since: i64| (now - since).max(1) as f64 / 1e3;
        let nodes = self.nodes.read().expect("usage lock");
        let mut pods: Vec<&FakePod> = nodes
            .get(node)
            .map(|p| p.values().collect())
            .unwrap_or_default();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let containers = || {
            pods.iter()
                .flat_map(|p| p.containers.iter().map(move |c| (*p, c.as_str())))
        };
        let mut w = TextWriter::new();
        let ts = Some(now);
        let name = "container_cpu_usage_seconds_total";
        w.family(
            name,
            "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            "counter",
        );
        for (p, c) in containers() {
            let labels = [
                ("container", c),
                ("namespace", p.namespace.as_str()),
                ("pod", p.name.as_str()),
            ];
            w.sample(name, &labels, seconds(p.started_ms) * CONTAINER_CORES, ts);
        }
        let name = "container_memory_working_set_bytes";
        w.family(
            name,
            "[STABLE] Current working set of the container in bytes",
            "gauge",
        );
        for (p, c) in containers() {
            let labels = [
                ("container", c),
                ("namespace", p.namespace.as_str()),
                ("pod", p.name.as_str()),
            ];
            w.sample(name, &labels, CONTAINER_BYTES, ts);
        }
        let name = "container_start_time_seconds";
        w.family(
            name,
            "[STABLE] Start time of the container since unix epoch in seconds",
            "gauge",
        );
        for (p, c) in containers() {
            let labels = [
                ("container", c),
                ("namespace", p.namespace.as_str()),
                ("pod", p.name.as_str()),
            ];
            w.sample(name, &labels, p.started_ms as f64 / 1e3, ts);
        }
        let count = containers().count() as f64;
        let name = "node_cpu_usage_seconds_total";
        w.family(
            name,
            "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
            "counter",
        );
        w.sample(
            name,
            &[],
            seconds(self.started_ms) * (NODE_CORES + count * CONTAINER_CORES),
            ts,
        );
        let name = "node_memory_working_set_bytes";
        w.family(
            name,
            "[STABLE] Current working set of the node in bytes",
            "gauge",
        );
        w.sample(name, &[], NODE_BYTES + count * CONTAINER_BYTES, ts);
        w.finish()
    }
}

async fn resource_metrics(State(usage): State<Arc<Usage>>, Path(node): Path<String>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, skiff_telemetry::TEXT_0_0_4)],
        usage.render(&node),
    )
        .into_response()
}

fn tls(ip: std::net::IpAddr) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve every fake node's `/nodes/<name>/metrics/resource` over HTTPS (a self-signed
/// certificate: scrape with `--kubelet-insecure-tls`) until `shutdown`.
pub(crate) async fn serve(
    addr: SocketAddr,
    usage: Arc<Usage>,
    shutdown: CancellationToken,
) -> anyhow::Result<(JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls(bound.ip())?);
    let app = axum::Router::new()
        .route(
            "/nodes/{node}/metrics/resource",
            axum::routing::get(resource_metrics),
        )
        .with_state(usage);
    let span = tracing::info_span!("fake_kubelet_metrics", %bound);
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            loop {
                let tcp = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    a = listener.accept() => match a {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = TowerToHyperService::new(app);
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        },
        span,
    ));
    Ok((task, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_pods_of_one_node() {
        let usage = Usage::new();
        let pod = |name: &str| FakePod {
            namespace: "default".into(),
            name: name.into(),
            containers: vec!["app".into()],
            started_ms: jiff::Timestamp::now().as_millisecond() - 10_000,
        };
        usage.add("n1", "u1", pod("a"));
        usage.add("n2", "u2", pod("b"));
        let text = usage.render("n1");
        assert!(text.contains(r#"container_memory_working_set_bytes{container="app",namespace="default",pod="a"} 20971520"#), "{text}");
        assert!(!text.contains(r#"pod="b""#));
        usage.remove("u1");
        assert!(!usage.render("n1").contains(r#"pod="a""#));
    }
}
