//! The control plane's half of the log pipeline: the search service in this process and the
//! addons that put a collector on every node, shipping to it with a token the cluster issued.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use skiff_apiserver::Identity;
use tokio_util::sync::CancellationToken;

/// The user the collector's token authenticates as (a service account's name, as the
/// collector would have in a cluster with token-issuing service accounts).
const COLLECTOR_USER: &str = "system:serviceaccount:kube-system:skiff-log-collector";

/// Who the collector's token is.
pub(crate) fn collector_identity() -> Identity {
    Identity {
        user: COLLECTOR_USER.into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:kube-system".into(),
            "system:authenticated".into(),
        ],
    }
}

/// The collector's token, made once per data directory (`pki/log-collector.token`, mode 0600)
/// so restarts keep the one the collectors hold.
pub(crate) fn collector_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("pki").join("log-collector.token");
    if let Ok(text) = std::fs::read_to_string(&path)
        && text.trim().len() >= 32
    {
        return Ok(text.trim().to_owned());
    }
    let token = crate::token::random_chars(48);
    skiff_agent::bootstrap::write_private(&path, &token)?;
    Ok(token)
}

/// Write a public file (the CA certificate for joining agents) atomically.
pub(crate) fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// How to run the search service and where collectors reach it.
pub(crate) struct LogPipeline<'a> {
    pub(crate) data_dir: &'a Path,
    pub(crate) bind: SocketAddr,
    /// The control plane's address for other machines (the API server's advertise address).
    pub(crate) advertise: Option<IpAddr>,
    /// A kubeconfig of this cluster (its server and CA check tokens).
    pub(crate) auth_kubeconfig: &'a Path,
    pub(crate) retention_days: u32,
    pub(crate) max_size_mb: Option<u64>,
    pub(crate) collector_token: &'a str,
}

/// A running search service.
pub(crate) struct RunningPipeline {
    pub(crate) server: skiff_search::Server,
    /// Where clients on this machine reach it (`http://127.0.0.1:<port>`).
    pub(crate) local_url: String,
    /// Where the collectors ship to.
    pub(crate) sink_url: String,
}

impl LogPipeline<'_> {
    /// Start the search service and apply the collector addons.
    pub(crate) async fn start(
        self,
        admin: kube::Client,
        shutdown: CancellationToken,
    ) -> anyhow::Result<RunningPipeline> {
        let beyond_loopback = !self.bind.ip().is_loopback();
        let mut config = skiff_search::Config::new(self.data_dir.join("search"), self.bind);
        config.retention_days = self.retention_days;
        config.max_size_bytes = self.max_size_mb.map(|m| m * 1024 * 1024);
        if beyond_loopback {
            config.auth_kubeconfig = Some(self.auth_kubeconfig.to_owned());
            config.trust_loopback = true;
        }
        let server = skiff_search::start(
            config,
            prometheus_client::registry::Registry::default(),
            shutdown,
        )
        .await
        .context("starting the log search service")?;
        let port = server.addr.port();
        let local_url = format!("http://127.0.0.1:{port}");
        // Collectors ship to the bound address, or to the advertised one when bound to all.
        let ip = match self.bind.ip() {
            ip if !ip.is_unspecified() => ip,
            _ => match self.advertise {
                Some(ip) => ip,
                None => skiff_agent::detect_node_ip()
                    .parse()
                    .context("this host's address for the collectors")?,
            },
        };
        let sink_url = format!("http://{}", SocketAddr::new(ip, port));
        crate::addons::apply(admin, port, &sink_url, self.collector_token)
            .await
            .context("applying the log pipeline addons")?;
        Ok(RunningPipeline {
            server,
            local_url,
            sink_url,
        })
    }
}
