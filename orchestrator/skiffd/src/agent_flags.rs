//! Flags shared by `skiffd up` and `skiffd agent`, and turning them into an agent.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use skiff_agent::{AgentConfig, AgentTls, RuntimeKind};
use skiff_apiserver::Pki;

/// Node agent flags.
#[derive(Args, Debug, Clone)]
pub(crate) struct AgentArgs {
    /// Container runtime: docker, process, or auto (Docker when its socket answers).
    #[arg(long, default_value = "auto")]
    pub(crate) runtime: RuntimeKind,
    /// Node name (default: the hostname).
    #[arg(long)]
    pub(crate) node_name: Option<String>,
    /// The node's InternalIP (default: the first non-loopback IPv4 address).
    #[arg(long)]
    pub(crate) node_ip: Option<String>,
    /// Agent HTTPS port (kubelet's 10250; 0 picks a free port).
    #[arg(long, default_value_t = 10250)]
    pub(crate) agent_port: u16,
    /// Address the agent listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) agent_bind_address: IpAddr,
    /// Root of pod log files (default /var/log/pods as root, else under the data dir).
    #[arg(long)]
    pub(crate) pod_log_dir: Option<PathBuf>,
    /// Root of the container log symlinks (default /var/log/containers as root, else under the data dir).
    #[arg(long)]
    pub(crate) container_log_dir: Option<PathBuf>,
    /// Docker runtime, when this agent runs in a container of the engine it drives (kind's
    /// node containers): that container's id, or `auto` to find it. Pods join its Docker
    /// network, hostNetwork pods its network namespace, and stopping the agent removes its
    /// pods (they cannot outlive their node).
    #[arg(long)]
    pub(crate) docker_node_container: Option<String>,
    /// Sandbox image of the Docker runtime (built from skiff-pause when missing).
    #[arg(long = "pod-infra-container-image")]
    pub(crate) pause_image: Option<String>,
    /// Process runtime: map an image to a host binary (`busybox=/bin/busybox`; repeatable).
    #[arg(long = "image-alias", value_parser = parse_pair)]
    pub(crate) image_aliases: Vec<(String, String)>,
    /// Extra node labels (`key=value`; repeatable).
    #[arg(long = "node-label", value_parser = parse_pair)]
    pub(crate) node_labels: Vec<(String, String)>,
    /// First crash-loop backoff in seconds (10 upstream).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) crash_backoff_initial_secs: f64,
    /// Node status and lease renewal interval in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) node_status_interval_secs: u64,
    /// How often container CPU, memory and network usage is sampled, in seconds (cAdvisor's
    /// housekeeping interval as the kubelet sets it).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) housekeeping_interval_secs: f64,
    /// Directory of static pod manifests, run without the API and mirrored into it.
    #[arg(long)]
    pub(crate) pod_manifest_path: Option<PathBuf>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn is_root() -> bool {
    nix_uid_is_zero()
}

fn nix_uid_is_zero() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Hostname, lower-cased as a DNS label.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}

impl AgentArgs {
    /// This node's name: the flag, else the hostname.
    pub(crate) fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(hostname)
    }

    /// This node's InternalIP: the flag, else the first non-loopback IPv4 address.
    pub(crate) fn node_ip(&self) -> String {
        self.node_ip
            .clone()
            .unwrap_or_else(skiff_agent::detect_node_ip)
    }

    /// The names the agent's serving certificate must hold.
    pub(crate) fn serving_names(&self) -> Vec<String> {
        let mut names = vec![
            self.node_name(),
            self.node_ip(),
            hostname(),
            "127.0.0.1".into(),
        ];
        names.dedup();
        names
    }

    /// Serving TLS for the agent issued directly by a CA this process holds (`skiffd up`).
    pub(crate) fn tls_from_pki(&self, pki: &Pki) -> anyhow::Result<AgentTls> {
        let serving = pki
            .serving_certificate(
                &format!("system:node:{}", self.node_name()),
                &self.serving_names(),
            )
            .context("issuing the agent's serving certificate")?;
        Ok(AgentTls {
            cert_pem: serving.cert_pem,
            key_pem: serving.key_pem,
            client_ca_pem: Some(pki.ca.cert_pem.clone()),
        })
    }

    /// The agent configuration for a node whose state lives under `data_dir`, serving with
    /// `tls`.
    pub(crate) fn config(
        &self,
        data_dir: &Path,
        tls: AgentTls,
        api_endpoint: Option<(String, u16)>,
    ) -> anyhow::Result<AgentConfig> {
        let node_name = self.node_name();
        let node_ip = self.node_ip();
        let root = data_dir.join("agent");
        let mut config = AgentConfig::new(node_name, root, tls);
        let (pods, containers) = if is_root() {
            (
                PathBuf::from("/var/log/pods"),
                PathBuf::from("/var/log/containers"),
            )
        } else {
            (data_dir.join("logs/pods"), data_dir.join("logs/containers"))
        };
        config.pod_log_dir = self.pod_log_dir.clone().unwrap_or(pods);
        config.container_log_dir = self.container_log_dir.clone().unwrap_or(containers);
        // Next to the pod logs: /var/log/skiff for root, <data>/logs/skiff otherwise.
        config.component_log_dir = config
            .pod_log_dir
            .parent()
            .map(|p| p.join("skiff"))
            .unwrap_or_else(|| data_dir.join("logs/skiff"));
        config.runtime = self.runtime;
        config.docker_node_container = self.docker_node_container.clone();
        if let Some(image) = &self.pause_image {
            config.pause_image = image.clone();
        }
        config.image_aliases = self
            .image_aliases
            .iter()
            .cloned()
            .collect::<BTreeMap<_, _>>();
        config.bind_address = self.agent_bind_address;
        config.port = self.agent_port;
        config.node_ip = Some(node_ip);
        config.node_labels = self.node_labels.iter().cloned().collect();
        config.crash_backoff_initial =
            Duration::from_secs_f64(self.crash_backoff_initial_secs.max(0.0));
        config.status_update_interval = Duration::from_secs(self.node_status_interval_secs.max(1));
        config.housekeeping_interval =
            Duration::from_secs_f64(self.housekeeping_interval_secs.max(0.1));
        config.api_endpoint = api_endpoint;
        config.pod_manifest_path = self.pod_manifest_path.clone();
        Ok(config)
    }
}
