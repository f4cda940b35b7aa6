//! The Docker runtime, the dockershim way: one pause container per pod owns the network and IPC
//! namespaces, app containers join it (`NetworkMode: container:<pause>`), every container carries
//! the `io.kubernetes.*` labels and a `k8s_<ctr>_<pod>_<ns>_<uid>_<attempt>` name, and a copier
//! task turns each container's output into the pod's CRI log file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ExecConfig, HostConfig, HostConfigLogConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    ResizeExecOptions, StartContainerOptions, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;

use super::{
    ContainerConfig, ContainerIdentity, ContainerInfo, ContainerState, ContainerStats, Error,
    ExecChunk, ExecSession, InterfaceStats, PodRef, Result, Runtime, SandboxConfig, SandboxStatus,
    images, labels,
};
use crate::logs::writer::{CriLogWriter, Rotation, StreamKind};

/// Containers on the Docker engine.
pub struct DockerRuntime {
    docker: Docker,
    node: String,
    engine_version: String,
    pause_image: String,
    rotation: Rotation,
    copiers: Arc<Mutex<HashSet<String>>>,
    network: PodNetwork,
}

/// Where pod sandboxes go: by default the engine's bridge (hostNetwork pods: the host's
/// namespace); from a node container, that container's network (hostNetwork pods: its
/// namespace), so pods, nodes and the control plane share one flat network, as a CNI gives.
#[derive(Debug, Clone)]
struct PodNetwork {
    pods: String,
    host: String,
    /// The pods cannot outlive the agent's container: remove them when it stops.
    owned_by_node: bool,
}

impl PodNetwork {
    fn engine_default() -> Self {
        PodNetwork {
            pods: "bridge".into(),
            host: "host".into(),
            owned_by_node: false,
        }
    }

    /// The network of node container `spec` (`auto`: the container this process runs in).
    async fn of_node_container(docker: &Docker, spec: &str) -> Result<Self> {
        let id = if spec == "auto" {
            own_container_id().ok_or_else(|| {
                Error::Other(
                    "--docker-node-container auto: this process does not run in a Docker container (no /containers/<id>/ mount in /proc/self/mountinfo); pass the container id".into(),
                )
            })?
        } else {
            spec.to_owned()
        };
        let c = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| Error::Other(format!("inspecting the node container {id}: {e}")))?;
        let mut networks: Vec<String> = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_keys()
            .collect();
        networks.sort();
        let pods = networks
            .into_iter()
            .next()
            .ok_or_else(|| Error::Other(format!("the node container {id} has no network")))?;
        let id = c.id.unwrap_or(id);
        tracing::info!(container = %id, network = %pods, "pods join the node container's network");
        Ok(PodNetwork {
            pods,
            host: format!("container:{id}"),
            owned_by_node: true,
        })
    }
}

/// The id of the Docker container this process runs in: the engine bind-mounts files from
/// `/var/lib/docker/containers/<id>/` (resolv.conf, hostname, hosts) into every container.
fn own_container_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.split_whitespace().find_map(|field| {
        let rest = field.split("/containers/").nth(1)?;
        let id = rest.split('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]`.
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s.filter(|t| !t.starts_with("0001-"))
        .and_then(|t| t.parse().ok())
}

impl DockerRuntime {
    /// Connect to the local engine (negotiating the API version: Debian's engine is older than
    /// bollard's default) and make sure the pause image exists.
    pub async fn connect(
        node: &str,
        pause_image: &str,
        rotation: Rotation,
        node_container: Option<&str>,
    ) -> Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(other)?
            .negotiate_version()
            .await
            .map_err(other)?;
        let version = docker.version().await.map_err(other)?;
        images::ensure_pause_image(&docker, pause_image)
            .await
            .map_err(|e| Error::Other(format!("{e:#}")))?;
        let network = match node_container {
            Some(spec) => PodNetwork::of_node_container(&docker, spec).await?,
            None => PodNetwork::engine_default(),
        };
        Ok(DockerRuntime {
            docker,
            node: node.to_owned(),
            engine_version: version.version.unwrap_or_else(|| "unknown".into()),
            pause_image: pause_image.to_owned(),
            rotation,
            copiers: Arc::new(Mutex::new(HashSet::new())),
            network,
        })
    }

    /// Whether a Docker engine answers on the local socket.
    pub async fn available() -> bool {
        match Docker::connect_with_local_defaults() {
            Ok(d) => tokio::time::timeout(Duration::from_secs(2), d.ping())
                .await
                .is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        }
    }

    /// The engine client (for image imports in tests and tools).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    async fn find(
        &self,
        filters: &[(&str, String)],
    ) -> Result<Vec<bollard::models::ContainerSummary>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        // Only this node's containers: other agents (another cluster, or another node of the
        // same cluster) may share the engine, and their containers are not ours to adopt or
        // remove as orphans.
        map.entry("label".into())
            .or_default()
            .push(format!("{}={}", labels::NODE, self.node));
        for (k, v) in filters {
            map.entry("label".into())
                .or_default()
                .push(format!("{k}={v}"));
        }
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&map)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(other)
    }

    async fn inspect_info(&self, id: &str) -> Result<Option<ContainerInfo>> {
        let c = match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(other(e)),
        };
        let l = c
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        let s = c.state.unwrap_or_default();
        let started = parse_time(s.started_at.as_deref());
        let state = if s.running == Some(true) {
            ContainerState::Running {
                started_at: started.unwrap_or_else(Timestamp::now),
            }
        } else if started.is_none()
            && s.exit_code.unwrap_or(0) == 0
            && s.finished_at
                .as_deref()
                .is_none_or(|f| f.starts_with("0001-"))
        {
            ContainerState::Created
        } else {
            let code = s.exit_code.unwrap_or(0) as i32;
            ContainerState::Exited {
                started_at: started,
                finished_at: parse_time(s.finished_at.as_deref()).unwrap_or_else(Timestamp::now),
                exit_code: code,
                oom_killed: s.oom_killed.unwrap_or(false),
                signal: (code > 128).then_some(code - 128),
            }
        };
        let id = c.id.unwrap_or_default();
        let info = ContainerInfo {
            container_id: format!("docker://{id}"),
            id,
            pod: PodRef {
                namespace: get(labels::POD_NAMESPACE),
                name: get(labels::POD_NAME),
                uid: get(labels::POD_UID),
            },
            name: get(labels::CONTAINER_NAME),
            attempt: get(labels::RESTART_COUNT).parse().unwrap_or(0),
            image: get(labels::IMAGE),
            image_id: format!("docker-pullable://{}", c.image.unwrap_or_default()),
            state,
            log_path: PathBuf::from(get(labels::LOG_PATH)),
            init: get(labels::INIT) == "true",
        };
        self.ensure_copier(&info);
        Ok(Some(info))
    }

    /// Copy the container's output into its CRI log file, once per container per agent run.
    /// After an agent restart the copier resumes after the last line already in the file.
    fn ensure_copier(&self, info: &ContainerInfo) {
        if info.log_path.as_os_str().is_empty() || matches!(info.state, ContainerState::Created) {
            return;
        }
        {
            let mut running = self.copiers.lock().expect("copier set");
            if !running.insert(info.id.clone()) {
                return;
            }
        }
        let (docker, id, path, rotation) = (
            self.docker.clone(),
            info.id.clone(),
            info.log_path.clone(),
            self.rotation,
        );
        let span = tracing::debug_span!("log_copier", container = %info.container_id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(e) = copy_logs(&docker, &id, &path, rotation).await {
                    tracing::warn!(error = %e, "copying container output failed");
                }
            },
            span,
        ));
    }
}

/// The timestamp of the last record in a CRI log file.
fn last_logged(path: &std::path::Path) -> Option<Timestamp> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().last()?.split(' ').next()?.parse().ok()
}

async fn copy_logs(
    docker: &Docker,
    id: &str,
    path: &std::path::Path,
    rotation: Rotation,
) -> anyhow::Result<()> {
    let resume = last_logged(path);
    let mut writer = CriLogWriter::open(path, rotation)?;
    let since = resume.map_or(0, |t| t.as_second() as i32);
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(since)
        .build();
    let mut stream = docker.logs(id, Some(options));
    while let Some(item) = stream.next().await {
        let (kind, message) = match item? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (StreamKind::Stdout, message)
            }
            LogOutput::StdErr { message } => (StreamKind::Stderr, message),
            LogOutput::StdIn { .. } => continue,
        };
        // With timestamps, each message is "<RFC3339Nano> <line>\n" (long lines arrive in parts
        // without the newline).
        let text = &message[..];
        let (stamp, rest) = match text.iter().position(|b| *b == b' ') {
            Some(i) => (
                std::str::from_utf8(&text[..i])
                    .ok()
                    .and_then(|s| s.parse::<Timestamp>().ok()),
                &text[i + 1..],
            ),
            None => (None, text),
        };
        let at = stamp.unwrap_or_else(Timestamp::now);
        if resume.is_some_and(|r| at <= r) {
            continue;
        }
        let complete = rest.ends_with(b"\n");
        let line = rest.strip_suffix(b"\n").unwrap_or(rest);
        writer.write_line(kind, at, line, complete)?;
        writer.flush()?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn version(&self) -> String {
        format!("docker://{}", self.engine_version)
    }

    async fn ensure_sandbox(&self, config: &SandboxConfig) -> Result<SandboxStatus> {
        let existing = self
            .find(&[
                (labels::POD_UID, config.pod.uid.clone()),
                (labels::DOCKER_TYPE, "podsandbox".into()),
            ])
            .await?;
        let mut attempt = 0;
        for c in &existing {
            let id = c.id.clone().unwrap_or_default();
            if c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING) {
                let ip = sandbox_ip(&self.docker, &id, config.host_network).await?;
                return Ok(SandboxStatus { id, ip });
            }
            attempt += 1;
            let _ = self
                .docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
        }
        images::ensure_pause_image(&self.docker, &self.pause_image)
            .await
            .map_err(|e| Error::Other(format!("{e:#}")))?;
        let name = format!(
            "k8s_POD_{}_{}_{}_{attempt}",
            name_part(&config.pod.name),
            name_part(&config.pod.namespace),
            name_part(&config.pod.uid)
        );
        let mut l = HashMap::new();
        l.insert(labels::POD_NAME.to_owned(), config.pod.name.clone());
        l.insert(
            labels::POD_NAMESPACE.to_owned(),
            config.pod.namespace.clone(),
        );
        l.insert(labels::POD_UID.to_owned(), config.pod.uid.clone());
        l.insert(labels::DOCKER_TYPE.to_owned(), "podsandbox".to_owned());
        l.insert(labels::NODE.to_owned(), self.node.clone());
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        // Ports of a pod in another container's namespace are that container's to publish.
        let publish = !(config.host_network && self.network.owned_by_node);
        for (container_port, host_port, proto) in config.port_mappings.iter().filter(|_| publish) {
            bindings.insert(
                format!("{container_port}/{}", proto.to_lowercase()),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(host_port.to_string()),
                }]),
            );
        }
        let body = ContainerCreateBody {
            image: Some(self.pause_image.clone()),
            hostname: (!config.host_network).then(|| config.hostname.clone()),
            labels: Some(l),
            host_config: Some(HostConfig {
                network_mode: Some(if config.host_network {
                    self.network.host.clone()
                } else {
                    self.network.pods.clone()
                }),
                ipc_mode: Some("shareable".into()),
                port_bindings: Some(bindings),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(other)?;
        self.docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(other)?;
        let ip = sandbox_ip(&self.docker, &created.id, config.host_network).await?;
        Ok(SandboxStatus { id: created.id, ip })
    }

    async fn remove_sandbox(&self, pod: &PodRef) -> Result<()> {
        for c in self
            .find(&[
                (labels::POD_UID, pod.uid.clone()),
                (labels::DOCKER_TYPE, "podsandbox".into()),
            ])
            .await?
        {
            let id = c.id.unwrap_or_default();
            let _ = self
                .docker
                .stop_container(
                    &id,
                    Some(StopContainerOptionsBuilder::default().t(1).build()),
                )
                .await;
            let _ = self
                .docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
        }
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        let mut out = Vec::new();
        for c in self
            .find(&[(labels::DOCKER_TYPE, "container".into())])
            .await?
        {
            if let Some(info) = self
                .inspect_info(c.id.as_deref().unwrap_or_default())
                .await?
            {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn container_states(&self) -> Result<Vec<(String, String, bool)>> {
        Ok(self
            .find(&[(labels::DOCKER_TYPE, "container".into())])
            .await?
            .into_iter()
            .map(|c| {
                let uid = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::POD_UID).cloned())
                    .unwrap_or_default();
                let running = c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
                (c.id.unwrap_or_default(), uid, running)
            })
            .collect())
    }

    async fn pod_containers(&self, pod_uid: &str) -> Result<Vec<ContainerInfo>> {
        let mut out = Vec::new();
        for c in self
            .find(&[
                (labels::POD_UID, pod_uid.to_owned()),
                (labels::DOCKER_TYPE, "container".into()),
            ])
            .await?
        {
            if let Some(info) = self
                .inspect_info(c.id.as_deref().unwrap_or_default())
                .await?
            {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    async fn start_container(
        &self,
        sandbox: &SandboxStatus,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo> {
        if config.image == images::skiffd_image() {
            images::ensure_skiffd_image(&self.docker, &config.image)
                .await
                .map_err(|e| Error::ImagePull(format!("importing {}: {e}", config.image)))?;
        }
        if self.image_id(&config.image).await?.is_none() {
            // No registry is configured on purpose here, but an engine that has one may pull.
            let (repo, tag) = match config
                .image
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
            {
                Some((r, t)) => (r.to_owned(), t.to_owned()),
                None => (config.image.clone(), "latest".to_owned()),
            };
            let pull = self
                .docker
                .create_image(
                    Some(
                        CreateImageOptionsBuilder::default()
                            .from_image(&repo)
                            .tag(&tag)
                            .build(),
                    ),
                    None,
                    None,
                )
                .try_collect::<Vec<_>>()
                .await;
            if let Err(e) = pull {
                return Err(Error::ImagePull(format!(
                    "failed to pull and unpack image \"{}\": {e}",
                    config.image
                )));
            }
        }
        let name = format!(
            "k8s_{}_{}_{}_{}_{}",
            name_part(&config.name),
            name_part(&config.pod.name),
            name_part(&config.pod.namespace),
            name_part(&config.pod.uid),
            config.attempt
        );
        // A leftover with the same name (a crashed earlier attempt to create) goes first.
        let _ = self
            .docker
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        let mut l: HashMap<String, String> = config.labels.clone().into_iter().collect();
        l.insert(labels::POD_NAME.into(), config.pod.name.clone());
        l.insert(labels::POD_NAMESPACE.into(), config.pod.namespace.clone());
        l.insert(labels::POD_UID.into(), config.pod.uid.clone());
        l.insert(labels::CONTAINER_NAME.into(), config.name.clone());
        l.insert(labels::DOCKER_TYPE.into(), "container".into());
        l.insert(labels::NODE.into(), self.node.clone());
        l.insert(labels::SANDBOX_ID.into(), sandbox.id.clone());
        l.insert(
            labels::LOG_PATH.into(),
            config.log_path.display().to_string(),
        );
        l.insert(labels::RESTART_COUNT.into(), config.attempt.to_string());
        l.insert(labels::IMAGE.into(), config.image.clone());
        l.insert(labels::INIT.into(), config.init.to_string());
        let binds: Vec<String> = config
            .mounts
            .iter()
            .filter(|m| !m.tmpfs)
            .map(|m| {
                format!(
                    "{}:{}{}",
                    m.host_path.display(),
                    m.container_path,
                    if m.read_only { ":ro" } else { "" }
                )
            })
            .collect();
        let tmpfs: HashMap<String, String> = config
            .mounts
            .iter()
            .filter(|m| m.tmpfs)
            .map(|m| (m.container_path.clone(), String::new()))
            .collect();
        let mut log_opts = HashMap::new();
        log_opts.insert("max-size".to_owned(), "10m".to_owned());
        log_opts.insert("max-file".to_owned(), "2".to_owned());
        let body = ContainerCreateBody {
            image: Some(config.image.clone()),
            entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
            cmd: (!config.args.is_empty()).then(|| config.args.clone()),
            env: Some(
                config
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .chain([format!("POD_IP={}", sandbox.ip)])
                    .collect(),
            ),
            working_dir: config.working_dir.clone(),
            labels: Some(l),
            tty: Some(config.tty),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{}", sandbox.id)),
                ipc_mode: Some(format!("container:{}", sandbox.id)),
                binds: Some(binds),
                tmpfs: Some(tmpfs),
                nano_cpus: (config.cpu_limit_milli > 0)
                    .then_some(config.cpu_limit_milli * 1_000_000),
                cpu_shares: (config.cpu_request_milli > 0)
                    .then_some((config.cpu_request_milli * 1024 / 1000).max(2)),
                memory: (config.memory_limit_bytes > 0).then_some(config.memory_limit_bytes),
                memory_swap: (config.memory_limit_bytes > 0).then_some(config.memory_limit_bytes),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(log_opts),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| Error::Config(format!("failed to create container: {e}")))?;
        if let Err(e) = self
            .docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
        {
            // The container exists but could not start (bad entrypoint…): report it exited.
            tracing::debug!(error = %e, "container failed to start");
        }
        self.inspect_info(&created.id)
            .await?
            .ok_or(Error::NotFound(created.id))
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptionsBuilder::default().t(t).build()),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(other(e)),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(other(e)),
        }?;
        self.copiers.lock().expect("copier set").remove(id);
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<ExecSession> {
        let exec = self
            .docker
            .create_exec(
                id,
                ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(!tty),
                    attach_stdin: Some(stdin),
                    tty: Some(tty),
                    cmd: Some(command),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::Config(e.to_string()))?
            .id;
        let started = self
            .docker
            .start_exec(
                &exec,
                Some(bollard::exec::StartExecOptions {
                    detach: false,
                    tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(other)?;
        let bollard::exec::StartExecResults::Attached { output, input } = started else {
            return Err(Error::Other("exec did not attach".into()));
        };
        let output = output.map(|item| {
            item.map(|o| match o {
                LogOutput::StdErr { message } => ExecChunk::Stderr(message),
                LogOutput::StdOut { message }
                | LogOutput::Console { message }
                | LogOutput::StdIn { message } => ExecChunk::Stdout(message),
            })
            .map_err(std::io::Error::other)
        });
        let (docker, exec_id) = (self.docker.clone(), exec.clone());
        let resize_docker = self.docker.clone();
        let resize_id = exec.clone();
        let handle = tokio::runtime::Handle::current();
        Ok(ExecSession {
            output: Box::pin(output),
            stdin: stdin.then_some(input),
            exit_code: Box::pin(async move {
                for _ in 0..50 {
                    let inspected = docker.inspect_exec(&exec_id).await.map_err(other)?;
                    if inspected.running != Some(true) {
                        return Ok(inspected.exit_code.unwrap_or(0) as i32);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(0)
            }),
            resize: tty.then(|| {
                Box::new(move |w: u16, h: u16| {
                    let (d, id) = (resize_docker.clone(), resize_id.clone());
                    handle.spawn(async move {
                        let _ = d
                            .resize_exec(
                                &id,
                                ResizeExecOptions {
                                    h: i32::from(h),
                                    w: i32::from(w),
                                },
                            )
                            .await;
                    });
                }) as Box<dyn Fn(u16, u16) + Send + Sync>
            }),
        })
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        Ok(container_stats(&self.one_shot_stats(id).await?))
    }

    async fn pod_network(&self, pod_uid: &str) -> Result<Option<Vec<InterfaceStats>>> {
        // The sandbox holds the pod's network namespace; app containers join it.
        let sandbox = self
            .find(&[
                (labels::POD_UID, pod_uid.to_owned()),
                (labels::DOCKER_TYPE, "podsandbox".into()),
            ])
            .await?
            .into_iter()
            .find(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING));
        let Some(sandbox) = sandbox else {
            return Ok(None);
        };
        if sandbox
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host")
        {
            return Ok(None);
        }
        let s = self
            .one_shot_stats(sandbox.id.as_deref().unwrap_or_default())
            .await?;
        let mut interfaces: Vec<InterfaceStats> = s
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(name, n)| InterfaceStats {
                name,
                rx_bytes: n.rx_bytes.unwrap_or(0),
                rx_packets: n.rx_packets.unwrap_or(0),
                rx_errors: n.rx_errors.unwrap_or(0),
                rx_dropped: n.rx_dropped.unwrap_or(0),
                tx_bytes: n.tx_bytes.unwrap_or(0),
                tx_packets: n.tx_packets.unwrap_or(0),
                tx_errors: n.tx_errors.unwrap_or(0),
                tx_dropped: n.tx_dropped.unwrap_or(0),
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(interfaces))
    }

    async fn writable_layer_bytes(&self, id: &str) -> Result<Option<u64>> {
        let c = self
            .docker
            .inspect_container(id, Some(InspectContainerOptions { size: true }))
            .await
            .map_err(other)?;
        Ok(c.size_rw.map(|s| s.max(0) as u64))
    }

    async fn node_stopping(&self) {
        if !self.network.owned_by_node {
            return;
        }
        let containers = match self.find(&[]).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "listing this node's pods to remove them");
                return;
            }
        };
        tracing::info!(
            count = containers.len(),
            "the node container stops: removing its pods"
        );
        let removals = containers
            .into_iter()
            .filter_map(|c| c.id)
            .map(|id| async move {
                let options = RemoveContainerOptionsBuilder::default().force(true).build();
                if let Err(e) = self.docker.remove_container(&id, Some(options)).await {
                    tracing::warn!(container = %id, error = %e, "removing a pod container");
                }
            });
        futures::future::join_all(removals).await;
    }

    async fn identity(&self, id: &str) -> Result<ContainerIdentity> {
        let c = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(other)?;
        let full_id = c.id.unwrap_or_else(|| id.to_owned());
        // The real cgroup of the main process when procfs shows it; Docker's layout otherwise.
        let pid = c.state.and_then(|s| s.pid).unwrap_or(0);
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .filter(|_| pid > 0)
            .and_then(|text| {
                text.lines()
                    .filter_map(|l| l.splitn(3, ':').nth(2))
                    .find(|path| path.contains(&full_id))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("/docker/{full_id}"));
        Ok(ContainerIdentity {
            name: c
                .name
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or(full_id),
            cgroup,
        })
    }
}

impl DockerRuntime {
    async fn one_shot_stats(&self, id: &str) -> Result<bollard::models::ContainerStatsResponse> {
        let mut stream = self.docker.stats(
            id,
            Some(
                StatsOptionsBuilder::default()
                    .stream(false)
                    .one_shot(true)
                    .build(),
            ),
        );
        stream
            .next()
            .await
            .ok_or_else(|| Error::NotFound(id.to_owned()))?
            .map_err(other)
    }
}

/// Docker's stats in cAdvisor's terms; the memory keys differ between cgroup v1 (`rss`,
/// `cache`, `total_inactive_file`) and v2 (`anon`, `file`, `inactive_file`).
fn container_stats(s: &bollard::models::ContainerStatsResponse) -> ContainerStats {
    let cpu = s.cpu_stats.clone().unwrap_or_default();
    let usage = cpu.cpu_usage.unwrap_or_default();
    let throttling = cpu.throttling_data.unwrap_or_default();
    let mem = s.memory_stats.clone().unwrap_or_default();
    let stats: BTreeMap<String, u64> = mem.stats.unwrap_or_default().into_iter().collect();
    let key = |v1: &str, v2: &str| {
        stats
            .get(v2)
            .or_else(|| stats.get(v1))
            .copied()
            .unwrap_or(0)
    };
    let memory_usage = mem.usage.unwrap_or(0);
    ContainerStats {
        cpu_usage_nanos: usage.total_usage.unwrap_or(0),
        cpu_user_nanos: usage.usage_in_usermode.unwrap_or(0),
        cpu_system_nanos: usage.usage_in_kernelmode.unwrap_or(0),
        cpu_periods: throttling.periods.unwrap_or(0),
        cpu_throttled_periods: throttling.throttled_periods.unwrap_or(0),
        cpu_throttled_nanos: throttling.throttled_time.unwrap_or(0),
        memory_usage_bytes: memory_usage,
        memory_working_set_bytes: memory_usage
            .saturating_sub(key("total_inactive_file", "inactive_file")),
        memory_rss_bytes: key("rss", "anon"),
        memory_cache_bytes: key("cache", "file"),
        memory_swap_bytes: key("swap", "swap"),
    }
}

async fn sandbox_ip(docker: &Docker, id: &str, host_network: bool) -> Result<String> {
    if host_network {
        return Ok("127.0.0.1".into());
    }
    let c = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(other)?;
    let settings = c.network_settings.unwrap_or_default();
    let ip = settings
        .networks
        .unwrap_or_default()
        .values()
        .find_map(|n| n.ip_address.clone().filter(|ip| !ip.is_empty()))
        .unwrap_or_default();
    Ok(ip)
}
