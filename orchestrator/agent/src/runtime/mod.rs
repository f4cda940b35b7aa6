//! Container runtimes. The pod workers speak only to [`Runtime`]; `docker` runs containers on
//! the Docker engine the dockershim way, `process` runs them as host processes under a small
//! per-container shim.

pub mod docker;
pub mod images;
pub(crate) mod instrumented;
pub mod process;
pub mod shim;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use jiff::Timestamp;
use tokio::io::AsyncWrite;

/// Runtime errors. `ImagePull` and `Config` become waiting reasons on the container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image is not present and cannot be fetched.
    #[error("{0}")]
    ImagePull(String),
    /// The container cannot be created from its configuration.
    #[error("{0}")]
    Config(String),
    /// The container or sandbox does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Anything else (engine unreachable, I/O…).
    #[error("{0}")]
    Other(String),
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which pod a container belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod uid.
    pub uid: String,
}

/// What a sandbox (the pod's shared context) needs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The pod.
    pub pod: PodRef,
    /// Hostname of the pod.
    pub hostname: String,
    /// Host ports to publish (container port, host port, protocol).
    pub port_mappings: Vec<(u16, u16, String)>,
    /// The pod directory on the host.
    pub pod_dir: PathBuf,
    /// Share the host network namespace.
    pub host_network: bool,
}

/// A running sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    /// Runtime id of the sandbox.
    pub id: String,
    /// The pod's IP.
    pub ip: String,
}

/// A volume mount, resolved to a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Path on the host.
    pub host_path: PathBuf,
    /// Path inside the container.
    pub container_path: String,
    /// Read-only.
    pub read_only: bool,
    /// In-memory (emptyDir medium Memory) — Docker makes it a tmpfs.
    pub tmpfs: bool,
}

/// Everything a runtime needs to create one container.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The pod.
    pub pod: PodRef,
    /// Container name.
    pub name: String,
    /// Restart count this container starts as (the attempt).
    pub attempt: u32,
    /// Image reference.
    pub image: String,
    /// Entrypoint override (`command`), after `$(VAR)` expansion.
    pub command: Vec<String>,
    /// Arguments (`args`), after `$(VAR)` expansion.
    pub args: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// CPU limit in millicores (0 = none).
    pub cpu_limit_milli: i64,
    /// CPU request in millicores (for shares).
    pub cpu_request_milli: i64,
    /// Memory limit in bytes (0 = none).
    pub memory_limit_bytes: i64,
    /// The CRI log file the container's output goes to.
    pub log_path: PathBuf,
    /// Labels to put on the container (annotations for the process runtime).
    pub labels: BTreeMap<String, String>,
    /// Whether the container is an init container.
    pub init: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// The pod's directory on the host.
    pub pod_dir: PathBuf,
}

/// A container's state as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running since.
    Running {
        /// Start time.
        started_at: Timestamp,
    },
    /// Exited.
    Exited {
        /// Start time.
        started_at: Option<Timestamp>,
        /// Exit time.
        finished_at: Timestamp,
        /// Exit code (128 + signal for a signal).
        exit_code: i32,
        /// Killed for exceeding its memory limit.
        oom_killed: bool,
        /// Signal that ended it, if any.
        signal: Option<i32>,
    },
}

/// A container the runtime knows about (found by its labels, so the agent can adopt it after
/// a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Runtime id.
    pub id: String,
    /// `docker://…` or `process://…`.
    pub container_id: String,
    /// The pod it belongs to.
    pub pod: PodRef,
    /// Container name in the pod spec.
    pub name: String,
    /// Attempt (restart count) it was started as.
    pub attempt: u32,
    /// Image as requested.
    pub image: String,
    /// Image id (`docker-pullable://…`, `sha256:…`).
    pub image_id: String,
    /// Current state.
    pub state: ContainerState,
    /// Its log file.
    pub log_path: PathBuf,
    /// Whether it is an init container.
    pub init: bool,
}

/// Output of an exec.
pub type ExecOutput = Pin<Box<dyn Stream<Item = std::io::Result<ExecChunk>> + Send>>;

/// One piece of exec output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    /// Standard output bytes.
    Stdout(bytes::Bytes),
    /// Standard error bytes.
    Stderr(bytes::Bytes),
}

/// A running exec session.
pub struct ExecSession {
    /// Output stream; it ends when the command exits.
    pub output: ExecOutput,
    /// Standard input, when attached.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Resolves to the exit code after the output ends.
    pub exit_code: Pin<Box<dyn std::future::Future<Output = Result<i32>> + Send>>,
    /// Resize the TTY (columns, rows), when one was allocated.
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
}

/// Resource usage of a container: cumulative counters and current gauges, as cAdvisor reads
/// them from the container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ContainerStats {
    /// CPU time used, in nanoseconds.
    pub cpu_usage_nanos: u64,
    /// CPU time in user mode, nanoseconds.
    pub cpu_user_nanos: u64,
    /// CPU time in kernel mode, nanoseconds.
    pub cpu_system_nanos: u64,
    /// CFS enforcement periods elapsed.
    pub cpu_periods: u64,
    /// CFS periods in which the container was throttled.
    pub cpu_throttled_periods: u64,
    /// Total time throttled, nanoseconds.
    pub cpu_throttled_nanos: u64,
    /// Memory usage including page cache, bytes.
    pub memory_usage_bytes: u64,
    /// Memory working set (usage minus inactive file cache), bytes.
    pub memory_working_set_bytes: u64,
    /// Resident set size (anonymous memory), bytes.
    pub memory_rss_bytes: u64,
    /// Page cache, bytes.
    pub memory_cache_bytes: u64,
    /// Swap in use, bytes.
    pub memory_swap_bytes: u64,
}

/// Counters of one network interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceStats {
    /// Interface name inside the pod (`eth0`).
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

/// Where a container lives, as cAdvisor names it: its cgroup path (`id`) and runtime name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerIdentity {
    /// Runtime name (Docker's `k8s_…` name).
    pub name: String,
    /// Cgroup path.
    pub cgroup: String,
}

/// A container runtime.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `docker` or `process`.
    fn name(&self) -> &'static str;

    /// What the node reports as `containerRuntimeVersion` (`docker://20.10.24`).
    fn version(&self) -> String;

    /// Create the pod's sandbox if it does not exist; return its IP.
    async fn ensure_sandbox(&self, config: &SandboxConfig) -> Result<SandboxStatus>;

    /// Stop and remove the sandbox.
    async fn remove_sandbox(&self, pod: &PodRef) -> Result<()>;

    /// Every container this runtime manages for the agent, with current state.
    async fn list_containers(&self) -> Result<Vec<ContainerInfo>>;

    /// A cheap listing for change detection: (container id, pod uid, running).
    async fn container_states(&self) -> Result<Vec<(String, String, bool)>> {
        Ok(self
            .list_containers()
            .await?
            .into_iter()
            .map(|c| {
                (
                    c.id,
                    c.pod.uid,
                    matches!(c.state, ContainerState::Running { .. }),
                )
            })
            .collect())
    }

    /// The containers of one pod.
    async fn pod_containers(&self, pod_uid: &str) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .list_containers()
            .await?
            .into_iter()
            .filter(|c| c.pod.uid == pod_uid)
            .collect())
    }

    /// Whether the image is present, and its id.
    async fn image_id(&self, image: &str) -> Result<Option<String>>;

    /// Create and start a container in the pod's sandbox.
    async fn start_container(
        &self,
        sandbox: &SandboxStatus,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo>;

    /// Send SIGTERM (or `signal`), wait up to `grace`, then SIGKILL.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()>;

    /// Remove a stopped container.
    async fn remove_container(&self, id: &str) -> Result<()>;

    /// Run a command in a running container.
    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<ExecSession>;

    /// Resource usage of a container.
    async fn stats(&self, id: &str) -> Result<ContainerStats>;

    /// Network counters of a pod that has its own network namespace (`None` for pods on the
    /// host network, whose traffic is the node's).
    async fn pod_network(&self, _pod_uid: &str) -> Result<Option<Vec<InterfaceStats>>> {
        Ok(None)
    }

    /// Bytes in the container's writable layer, when the runtime can tell.
    async fn writable_layer_bytes(&self, _id: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    /// The agent is stopping for good. A runtime whose pods cannot outlive their node (Docker
    /// driven from a node container) removes them here; others leave them running, as the
    /// kubelet does across restarts.
    async fn node_stopping(&self) {}

    /// The container's runtime name and cgroup path.
    async fn identity(&self, id: &str) -> Result<ContainerIdentity> {
        Ok(ContainerIdentity {
            name: id.to_owned(),
            cgroup: format!("/{id}"),
        })
    }
}

/// Labels every managed container carries (dockershim's names).
pub mod labels {
    /// Pod name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// Pod namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// Pod uid.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// Container name.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// `podsandbox` or `container`.
    pub const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
    /// The sandbox the container joined.
    pub const SANDBOX_ID: &str = "io.kubernetes.sandbox.id";
    /// The CRI log file.
    pub const LOG_PATH: &str = "io.kubernetes.container.logpath";
    /// Restart count at creation.
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    /// The image as the pod spec names it.
    pub const IMAGE: &str = "io.kubernetes.container.image";
    /// `true` for init containers.
    pub const INIT: &str = "io.skiff.container.init";
    /// The node (agent) that created the container.
    pub const NODE: &str = "io.skiff.node";
}

/// Which runtime to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Docker via its socket.
    Docker,
    /// Host processes.
    Process,
    /// Docker when its socket answers, else processes.
    Auto,
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "docker" => Ok(RuntimeKind::Docker),
            "process" => Ok(RuntimeKind::Process),
            "auto" => Ok(RuntimeKind::Auto),
            other => Err(format!(
                "unknown runtime {other:?}: use docker, process or auto"
            )),
        }
    }
}
