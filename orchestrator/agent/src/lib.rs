//! Skiff's node agent (the kubelet's role): registers a Node, renews its Lease, runs the pods
//! bound to it on a container runtime (Docker or host processes), writes every container's
//! output to CRI log files, and serves logs and exec to the API server.
//!
//! [`start`] wires it together; see docs/ARCHITECTURE.md ("skiff-agent") for the map.

mod backoff;
pub mod bootstrap;
mod cgroups;
mod env;
use skiff_events as events;
pub mod logs;
mod metrics;
mod node;
mod pods;
mod probes;
pub mod runtime;
mod server;
mod static_pods;
mod stats;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use metrics::AgentMetrics;
pub use node::detect_node_ip;
pub use runtime::RuntimeKind;
pub use runtime::shim::run as run_shim;

use logs::writer::Rotation;
use runtime::{PodRef, Runtime};

/// The version the node reports as `kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.33.0";

/// The agent's serving certificate and the CA its clients' certificates must chain to.
#[derive(Debug, Clone)]
pub struct AgentTls {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// Client CA, PEM; when set, clients must present a certificate it signed.
    pub client_ca_pem: Option<String>,
}

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name.
    pub node_name: String,
    /// Agent state (pod directories, runtime state).
    pub root_dir: PathBuf,
    /// `/var/log/pods`.
    pub pod_log_dir: PathBuf,
    /// `/var/log/containers`.
    pub container_log_dir: PathBuf,
    /// Where the Skiff components of this process write their own logs (`/var/log/skiff` to
    /// hostPath volumes), so the node's log collector ships them with a component label.
    pub component_log_dir: PathBuf,
    /// Which runtime.
    pub runtime: RuntimeKind,
    /// The sandbox image of the Docker runtime.
    pub pause_image: String,
    /// Docker runtime: the container this agent runs in (its id, or `auto`), whose network the
    /// pods join and whose end is theirs.
    pub docker_node_container: Option<String>,
    /// Process runtime: image name → host binary.
    pub image_aliases: BTreeMap<String, String>,
    /// Listen address of the agent's HTTPS server.
    pub bind_address: IpAddr,
    /// Port of the agent's HTTPS server (10250; 0 picks one).
    pub port: u16,
    /// The node's InternalIP (detected when absent).
    pub node_ip: Option<String>,
    /// Extra node labels.
    pub node_labels: BTreeMap<String, String>,
    /// Taints to register with.
    pub taints: Vec<serde_json::Value>,
    /// Pod capacity.
    pub max_pods: u32,
    /// Node status and lease renewal period.
    pub status_update_interval: Duration,
    /// First crash-loop backoff (10 s upstream; tests shorten it).
    pub crash_backoff_initial: Duration,
    /// Log rotation.
    pub log_rotation: Rotation,
    /// Serving certificate.
    pub tls: AgentTls,
    /// The executable that runs `container-shim` (skiffd itself).
    pub shim_exe: PathBuf,
    /// How pods reach the API server (`KUBERNETES_SERVICE_HOST`/`PORT`).
    pub api_endpoint: Option<(String, u16)>,
    /// Static pod manifests (`--pod-manifest-path`).
    pub pod_manifest_path: Option<PathBuf>,
    /// How often container usage is sampled (cAdvisor's housekeeping interval).
    pub housekeeping_interval: Duration,
}

impl AgentConfig {
    /// hostPath prefixes kept elsewhere on this node: `/var/log/pods` and `/var/log/containers`
    /// are this agent's log directories and `/var/lib/skiff` its root directory, so a DaemonSet
    /// written for Kubernetes (a log collector) finds what it expects even with several agents
    /// on one machine.
    pub fn host_path_map(&self) -> Vec<(PathBuf, PathBuf)> {
        vec![
            ("/var/log/pods".into(), self.pod_log_dir.clone()),
            ("/var/log/containers".into(), self.container_log_dir.clone()),
            ("/var/log/skiff".into(), self.component_log_dir.clone()),
            ("/var/lib/skiff".into(), self.root_dir.clone()),
        ]
    }

    /// Defaults for a node named `node_name` keeping state under `root_dir`.
    pub fn new(node_name: impl Into<String>, root_dir: PathBuf, tls: AgentTls) -> Self {
        let logs = root_dir.join("logs");
        AgentConfig {
            node_name: node_name.into(),
            pod_log_dir: logs.join("pods"),
            container_log_dir: logs.join("containers"),
            component_log_dir: logs.join("skiff"),
            root_dir,
            runtime: RuntimeKind::Auto,
            pause_image: format!("skiff/pause:{}", env!("CARGO_PKG_VERSION")),
            image_aliases: BTreeMap::new(),
            docker_node_container: None,
            bind_address: IpAddr::from([0, 0, 0, 0]),
            port: 10250,
            node_ip: None,
            node_labels: BTreeMap::new(),
            taints: Vec::new(),
            max_pods: 110,
            status_update_interval: Duration::from_secs(10),
            crash_backoff_initial: backoff::INITIAL,
            log_rotation: Rotation::default(),
            tls,
            shim_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skiffd")),
            api_endpoint: None,
            pod_manifest_path: None,
            housekeeping_interval: Duration::from_secs(10),
        }
    }
}

/// Everything the agent's tasks share.
pub(crate) struct Ctx {
    pub(crate) config: AgentConfig,
    pub(crate) client: kube::Client,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) events: events::EventRecorder,
    pub(crate) pods: RwLock<HashMap<String, Arc<Pod>>>,
    pub(crate) backoff: Mutex<backoff::Backoff>,
    pub(crate) node_ip: String,
    pub(crate) node_cpu: i64,
    pub(crate) node_memory: i64,
    pub(crate) host: node::HostInfo,
    pub(crate) port: u16,
    pub(crate) metrics: AgentMetrics,
    /// Everything served at `/metrics`.
    pub(crate) registry: prometheus_client::registry::Registry,
    pub(crate) stats: Arc<stats::Stats>,
    pub(crate) source: env::ApiConfigSource,
}

impl Ctx {
    /// `<root>/pods/<uid>`.
    pub(crate) fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.root_dir.join("pods").join(uid)
    }

    fn pod_log_dir(&self, pod: &PodRef) -> PathBuf {
        self.config
            .pod_log_dir
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
    }

    /// `/var/log/pods/<ns>_<pod>_<uid>/<container>/<attempt>.log`.
    pub(crate) fn log_path(&self, pod: &PodRef, container: &str, attempt: u32) -> PathBuf {
        self.pod_log_dir(pod)
            .join(container)
            .join(format!("{attempt}.log"))
    }

    /// `/var/log/containers/<pod>_<ns>_<container>-<id>.log` → the pod log file.
    pub(crate) fn link_container_log(
        &self,
        pod: &PodRef,
        container: &str,
        container_id: &str,
        target: &std::path::Path,
    ) {
        let id = container_id.split("://").nth(1).unwrap_or(container_id);
        let mut name = format!("{}_{}_{container}-{id}.log", pod.name, pod.namespace);
        name.truncate(255);
        let link = self.config.container_log_dir.join(name);
        let _ = std::fs::create_dir_all(&self.config.container_log_dir);
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(target, &link) {
            tracing::warn!(error = %e, link = %link.display(), "linking container log failed");
        }
    }

    /// Remove a pod's log directory and the container symlinks pointing into it.
    pub(crate) fn remove_pod_logs(&self, pod: &PodRef) {
        let dir = self.pod_log_dir(pod);
        if let Ok(entries) = std::fs::read_dir(&self.config.container_log_dir) {
            for e in entries.flatten() {
                if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&dir)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Service-discovery variables every container gets.
    pub(crate) fn service_env(&self) -> Vec<(String, String)> {
        match &self.config.api_endpoint {
            Some((host, port)) => vec![
                ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
                ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
                ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
                ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
            ],
            None => Vec::new(),
        }
    }

    /// A pod bound to this node, by namespace and name.
    pub(crate) fn find_pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods
            .read()
            .expect("pods lock")
            .values()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }
}

/// A started agent.
pub struct RunningAgent {
    /// `https://<ip>:<port>` of the agent's server.
    pub url: String,
    /// The runtime in use (`docker` or `process`).
    pub runtime: &'static str,
    tasks: Vec<JoinHandle<()>>,
    runtime_handle: Arc<dyn Runtime>,
}

impl RunningAgent {
    /// Wait for every task to end (after the shutdown token fired), then let the runtime
    /// finish with the node.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.runtime_handle.node_stopping().await;
    }
}

async fn make_runtime(config: &AgentConfig) -> anyhow::Result<Arc<dyn Runtime>> {
    let docker = match config.runtime {
        RuntimeKind::Docker => true,
        RuntimeKind::Process => false,
        RuntimeKind::Auto => runtime::docker::DockerRuntime::available().await,
    };
    if docker {
        let rt = runtime::docker::DockerRuntime::connect(
            &config.node_name,
            &config.pause_image,
            config.log_rotation,
            config.docker_node_container.as_deref(),
        )
        .await
        .context("connecting to Docker")?;
        return Ok(Arc::new(rt));
    }
    // `skiffd`'s own image runs this very executable.
    let mut aliases = config.image_aliases.clone();
    aliases
        .entry(runtime::images::skiffd_image())
        .or_insert_with(|| config.shim_exe.display().to_string());
    Ok(Arc::new(runtime::process::ProcessRuntime::new(
        config.root_dir.join("process"),
        config.shim_exe.clone(),
        aliases,
        config.log_rotation,
    )?))
}

/// Start the agent: runtime, Node registration, heartbeats, pod workers, usage sampling and the
/// HTTPS server, which also serves `metrics` at `/metrics`. Runs until `shutdown` fires.
pub async fn start(
    config: AgentConfig,
    client: kube::Client,
    metrics: AgentMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningAgent> {
    std::fs::create_dir_all(&config.root_dir)
        .with_context(|| format!("creating {}", config.root_dir.display()))?;
    let runtime: Arc<dyn Runtime> = Arc::new(runtime::instrumented::Instrumented::new(
        make_runtime(&config).await?,
        metrics.clone(),
    ));
    let stats = Arc::new(stats::Stats::default());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    stats.metrics().register(&mut registry);
    registry.register_collector(Box::new(skiff_telemetry::ProcessCollector));
    metrics
        .node_name
        .get_or_create(&metrics::NodeLabels {
            node: config.node_name.clone(),
        })
        .set(1);
    let listener = TcpListener::bind(SocketAddr::new(config.bind_address, config.port))
        .await
        .with_context(|| {
            format!(
                "binding the agent server to {}:{}",
                config.bind_address, config.port
            )
        })?;
    let port = listener.local_addr()?.port();
    let host = node::HostInfo::detect(&config.root_dir);
    let node_ip = config.node_ip.clone().unwrap_or_else(node::detect_node_ip);
    let backoff = backoff::Backoff::with_initial(config.crash_backoff_initial);
    let ctx = Arc::new(Ctx {
        events: events::start(
            client.clone(),
            "kubelet",
            config.node_name.clone(),
            shutdown.clone(),
        ),
        source: env::ApiConfigSource(client.clone()),
        node_cpu: host.cpus,
        node_memory: host.memory_bytes,
        host,
        client,
        runtime: runtime.clone(),
        pods: RwLock::new(HashMap::new()),
        backoff: Mutex::new(backoff),
        node_ip: node_ip.clone(),
        port,
        metrics,
        registry,
        stats,
        config,
    });
    let mut attempt = 0;
    let node = loop {
        match node::register(&ctx).await {
            Ok(n) => break n,
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::warn!(error = %e, "registering the node failed; retrying");
                tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
            }
            Err(e) => return Err(e.context("registering the node")),
        }
    };
    let node_uid = node.metadata.uid.clone().unwrap_or_default();
    let mut tasks = vec![
        tokio::spawn(node::heartbeat(
            ctx.clone(),
            node_uid.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(pods::run(ctx.clone(), shutdown.clone())),
        tokio::spawn(server::serve(ctx.clone(), listener, shutdown.clone())),
        tokio::spawn(stats::run(
            ctx.clone(),
            ctx.config.housekeeping_interval,
            shutdown.clone(),
        )),
    ];
    if let Some(dir) = ctx.config.pod_manifest_path.clone() {
        tasks.push(tokio::spawn(static_pods::run(
            ctx.clone(),
            dir,
            node_uid,
            shutdown.clone(),
        )));
    }
    tracing::info!(node = %ctx.config.node_name, runtime = runtime.name(), port, "agent started");
    Ok(RunningAgent {
        url: format!("https://{node_ip}:{port}"),
        runtime: runtime.name(),
        tasks,
        runtime_handle: runtime,
    })
}
