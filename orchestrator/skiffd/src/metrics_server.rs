//! `skiffd metrics-server`: the metrics server on its own (see skiff-metrics-server), with
//! metrics-server's flag names. Credentials for the node agents default to the kubeconfig's
//! client certificate and CA, which the agents accept when the cluster CA signed them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Args;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Flags of `skiffd metrics-server`.
#[derive(Args, Debug, Clone)]
pub(crate) struct MetricsServerArgs {
    /// kubeconfig for the API server (nodes and pods are watched through it).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Where to serve metrics.k8s.io over plain HTTP (an APIService points the API server here).
    #[arg(long, default_value = "127.0.0.1:4443")]
    bind_address: SocketAddr,
    /// How often every node is scraped (at least 1s; metrics-server requires 10s or more).
    #[arg(long, default_value = "15s", value_parser = crate::control::parse_duration)]
    metric_resolution: Duration,
    /// Do not verify the node agents' serving certificates.
    #[arg(long)]
    kubelet_insecure_tls: bool,
    /// CA of the agents' serving certificates (PEM); the kubeconfig's CA by default.
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
    /// Client certificate for the agents (PEM); the kubeconfig's by default.
    #[arg(long)]
    kubelet_client_certificate: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long)]
    kubelet_client_key: Option<PathBuf>,
}

fn read(path: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    path.as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()
}

/// `*-data` (base64) or the file a kubeconfig entry names.
fn kubeconfig_pem(data: Option<&str>, file: Option<&str>) -> Option<String> {
    if let Some(d) = data {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
    }
    file.and_then(|f| std::fs::read_to_string(f).ok())
}

impl MetricsServerArgs {
    fn kubelet_tls(&self) -> anyhow::Result<skiff_metrics_server::KubeletTls> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cluster = kubeconfig
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .unwrap_or_default();
        let user = kubeconfig
            .auth_infos
            .first()
            .and_then(|a| a.auth_info.clone())
            .unwrap_or_default();
        use secrecy::ExposeSecret;
        let key_data = user
            .client_key_data
            .as_ref()
            .map(|k| k.expose_secret().to_owned());
        Ok(skiff_metrics_server::KubeletTls {
            ca_pem: read(&self.kubelet_certificate_authority)?.or_else(|| {
                kubeconfig_pem(
                    cluster.certificate_authority_data.as_deref(),
                    cluster.certificate_authority.as_deref(),
                )
            }),
            cert_pem: read(&self.kubelet_client_certificate)?.or_else(|| {
                kubeconfig_pem(
                    user.client_certificate_data.as_deref(),
                    user.client_certificate.as_deref(),
                )
            }),
            key_pem: read(&self.kubelet_client_key)?
                .or_else(|| kubeconfig_pem(key_data.as_deref(), user.client_key.as_deref())),
            insecure: self.kubelet_insecure_tls,
        })
    }
}

/// Run `skiffd metrics-server` until SIGINT/SIGTERM.
pub(crate) async fn run(args: MetricsServerArgs) -> anyhow::Result<()> {
    let client = crate::up::kube_client(&args.kubeconfig).await?;
    let mut config = skiff_metrics_server::Config::new(args.bind_address, args.kubelet_tls()?);
    config.resolution = args.metric_resolution.max(Duration::from_secs(1));
    let shutdown = CancellationToken::new();
    let server =
        skiff_metrics_server::start(config, client, Registry::default(), shutdown.clone()).await?;
    println!(
        "metrics server serving metrics.k8s.io at http://{}",
        server.addr
    );
    crate::up::shutdown_signal().await;
    shutdown.cancel();
    server.wait().await;
    Ok(())
}
