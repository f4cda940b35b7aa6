//! The process runtime, for machines without Docker (Nomad's raw_exec idea): containers are host
//! processes, each supervised by a shim (see `shim.rs`), in their own process group, with cgroup
//! limits where the host allows them. Pods share the host network; each pod gets an address from
//! 127.100.0.0/16 in `POD_IP` to bind to, so pods can use the same ports.
//!
//! There are no images: a container's `command` is run as is, and an image with no command is
//! resolved through image aliases (`--image-alias busybox=/bin/busybox`) or fails clearly.
//! Volumes cannot be mounted into a process's view without namespaces, so each mount appears as
//! a symlink at `<pod dir>/root/<mountPath>`, and the container's working directory defaults to
//! `<pod dir>/root`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::shim::{ExitRecord, ShimConfig, write_state};
use super::{
    ContainerConfig, ContainerIdentity, ContainerInfo, ContainerState, ContainerStats, Error,
    ExecChunk, ExecSession, PodRef, Result, Runtime, SandboxConfig, SandboxStatus,
};
use crate::cgroups::Cgroups;
use crate::logs::writer::Rotation;

/// What the agent records about each container, next to the shim's files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    pod_namespace: String,
    pod_name: String,
    pod_uid: String,
    name: String,
    attempt: u32,
    image: String,
    init: bool,
    log_path: PathBuf,
}

/// Host processes as containers.
pub struct ProcessRuntime {
    root: PathBuf,
    shim_exe: PathBuf,
    aliases: BTreeMap<String, String>,
    cgroups: Cgroups,
    rotation: Rotation,
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

impl ProcessRuntime {
    /// A runtime keeping its state under `root`, starting shims with `shim_exe container-shim`.
    pub fn new(
        root: PathBuf,
        shim_exe: PathBuf,
        aliases: BTreeMap<String, String>,
        rotation: Rotation,
    ) -> Result<Self> {
        std::fs::create_dir_all(root.join("containers")).map_err(other)?;
        std::fs::create_dir_all(root.join("sandboxes")).map_err(other)?;
        let cgroups = Cgroups::detect();
        tracing::info!(cgroups = cgroups.describe(), "process runtime ready");
        Ok(ProcessRuntime {
            root,
            shim_exe,
            aliases,
            cgroups,
            rotation,
        })
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    fn sandbox_dir(&self, uid: &str) -> PathBuf {
        self.root.join("sandboxes").join(uid)
    }

    fn state(&self, id: &str) -> ContainerState {
        let dir = self.container_dir(id);
        let started = read_trim(&dir.join("started")).and_then(|s| s.parse::<Timestamp>().ok());
        if let Ok(bytes) = std::fs::read(dir.join("exit"))
            && let Ok(exit) = serde_json::from_slice::<ExitRecord>(&bytes)
        {
            return ContainerState::Exited {
                started_at: started,
                finished_at: exit
                    .finished_at
                    .parse()
                    .unwrap_or_else(|_| Timestamp::now()),
                exit_code: exit.exit_code,
                oom_killed: exit.oom_killed,
                signal: exit.signal,
            };
        }
        let pid = read_trim(&dir.join("pid")).and_then(|p| p.parse::<i32>().ok());
        let shim = read_trim(&dir.join("shim.pid")).and_then(|p| p.parse::<i32>().ok());
        match (pid, started) {
            (Some(pid), Some(started_at)) if alive(pid) || shim.is_some_and(alive) => {
                ContainerState::Running { started_at }
            }
            (None, _) if shim.is_some_and(alive) => ContainerState::Created,
            (None, None) if shim.is_none() => ContainerState::Created,
            // The shim died without recording an exit (killed with the machine, or -9).
            _ => ContainerState::Exited {
                started_at: started,
                finished_at: Timestamp::now(),
                exit_code: 137,
                oom_killed: false,
                signal: Some(9),
            },
        }
    }

    fn info(&self, id: &str) -> Option<ContainerInfo> {
        let meta: Meta =
            serde_json::from_slice(&std::fs::read(self.container_dir(id).join("meta.json")).ok()?)
                .ok()?;
        Some(ContainerInfo {
            id: id.to_owned(),
            container_id: format!("process://{id}"),
            pod: PodRef {
                namespace: meta.pod_namespace,
                name: meta.pod_name,
                uid: meta.pod_uid,
            },
            name: meta.name,
            attempt: meta.attempt,
            image_id: format!("process://{}", meta.image),
            image: meta.image,
            state: self.state(id),
            log_path: meta.log_path,
            init: meta.init,
        })
    }

    /// A bare program name that names an aliased image runs the alias's binary (so commands
    /// and exec probes can name the image's program as they would inside its image).
    fn resolve_program(&self, argv: &mut [String]) {
        if let Some(first) = argv.first_mut()
            && !first.contains('/')
            && let Some(path) = self.aliases.get(first.as_str())
        {
            *first = path.clone();
        }
    }

    /// The argv for a container: command + args, or an image alias.
    fn argv(&self, config: &ContainerConfig) -> Result<Vec<String>> {
        let mut argv = config.command.clone();
        self.resolve_program(&mut argv);
        if argv.is_empty() {
            let name = config.image.split('@').next().unwrap_or_default();
            let bare = name
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .map_or(name, |(n, _)| n);
            let alias = self.aliases.get(name).or_else(|| self.aliases.get(bare));
            match alias {
                Some(path) => argv.push(path.clone()),
                None => {
                    return Err(Error::Config(format!(
                        "image {:?} has no command for the process runtime: set the container's command, or map the image to a host binary with --image-alias {bare}=/path/to/binary",
                        config.image
                    )));
                }
            }
        }
        argv.extend(config.args.iter().cloned());
        Ok(argv)
    }

    fn pid_of(&self, id: &str) -> Option<i32> {
        read_trim(&self.container_dir(id).join("pid")).and_then(|p| p.parse().ok())
    }

    /// An address in 127.100.0.0/16 from the pod uid, avoiding ones in use.
    fn allocate_ip(&self, uid: &str) -> Result<String> {
        let used: Vec<String> = std::fs::read_dir(self.root.join("sandboxes"))
            .map_err(other)?
            .filter_map(|e| e.ok())
            .filter_map(|e| read_trim(&e.path().join("ip")))
            .collect();
        let mut h: u32 = 2166136261;
        for b in uid.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(16777619);
        }
        for i in 0..65_000u32 {
            let n = (h.wrapping_add(i)) % 65_000 + 2;
            let ip = format!("127.100.{}.{}", n / 256, n % 256);
            if !used.contains(&ip) && n % 256 != 0 && n % 256 != 255 {
                return Ok(ip);
            }
        }
        Err(Error::Other("no free pod address in 127.100.0.0/16".into()))
    }
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn version(&self) -> String {
        format!("process://skiff-{}", env!("CARGO_PKG_VERSION"))
    }

    async fn ensure_sandbox(&self, config: &SandboxConfig) -> Result<SandboxStatus> {
        let dir = self.sandbox_dir(&config.pod.uid);
        if let Some(ip) = read_trim(&dir.join("ip")) {
            return Ok(SandboxStatus {
                id: config.pod.uid.clone(),
                ip,
            });
        }
        std::fs::create_dir_all(&dir).map_err(other)?;
        std::fs::create_dir_all(config.pod_dir.join("root")).map_err(other)?;
        let ip = if config.host_network {
            "127.0.0.1".to_owned()
        } else {
            self.allocate_ip(&config.pod.uid)?
        };
        write_state(&dir, "ip", ip.as_bytes()).map_err(other)?;
        Ok(SandboxStatus {
            id: config.pod.uid.clone(),
            ip,
        })
    }

    async fn remove_sandbox(&self, pod: &PodRef) -> Result<()> {
        let _ = std::fs::remove_dir_all(self.sandbox_dir(&pod.uid));
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        let entries = std::fs::read_dir(self.root.join("containers")).map_err(other)?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter_map(|id| self.info(&id))
            .collect())
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        Ok(Some(format!("process://{image}")))
    }

    async fn start_container(
        &self,
        sandbox: &SandboxStatus,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo> {
        let argv = self.argv(config)?;
        let id = format!("{:032x}", rand::random::<u128>());
        let dir = self.container_dir(&id);
        std::fs::create_dir_all(&dir).map_err(other)?;
        let pod_root = config.pod_dir.join("root");
        std::fs::create_dir_all(&pod_root).map_err(other)?;
        for m in &config.mounts {
            let link = pod_root.join(m.container_path.trim_start_matches('/'));
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(other)?;
            }
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&m.host_path, &link).map_err(other)?;
        }
        let cwd = config
            .working_dir
            .as_ref()
            .map_or_else(|| pod_root.clone(), PathBuf::from);
        let cgroup_procs = self
            .cgroups
            .create(&id, config.cpu_limit_milli, config.memory_limit_bytes)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, container = %config.name, "cgroup limits not applied");
                Vec::new()
            });
        let mut env = config.env.clone();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(
                0,
                (
                    "PATH".into(),
                    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
                ),
            );
        }
        env.push(("POD_IP".into(), sandbox.ip.clone()));
        let shim = ShimConfig {
            argv,
            env,
            cwd,
            log_path: config.log_path.clone(),
            log_max_bytes: self.rotation.max_bytes,
            log_max_files: self.rotation.max_files,
            cgroup_id: id.clone(),
            cgroup_procs,
        };
        let meta = Meta {
            pod_namespace: config.pod.namespace.clone(),
            pod_name: config.pod.name.clone(),
            pod_uid: config.pod.uid.clone(),
            name: config.name.clone(),
            attempt: config.attempt,
            image: config.image.clone(),
            init: config.init,
            log_path: config.log_path.clone(),
        };
        write_state(
            &dir,
            "config.json",
            &serde_json::to_vec(&shim).map_err(other)?,
        )
        .map_err(other)?;
        write_state(
            &dir,
            "meta.json",
            &serde_json::to_vec(&meta).map_err(other)?,
        )
        .map_err(other)?;
        let mut child = tokio::process::Command::new(&self.shim_exe)
            .arg("container-shim")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Other(format!("starting the container shim: {e}")))?;
        // Reap the shim when it ends; after an agent restart init does.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = self.state(&id);
            if !matches!(state, ContainerState::Created) {
                break;
            }
            if let Some(e) = read_trim(&dir.join("shim.error")) {
                return Err(Error::Other(format!("container shim failed: {e}")));
            }
            if Instant::now() > deadline {
                return Err(Error::Other(
                    "container shim did not start the process within 10s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.info(&id).ok_or_else(|| Error::NotFound(id))
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let Some(pid) = self.pid_of(id) else {
            return Ok(());
        };
        if !matches!(self.state(id), ContainerState::Running { .. }) {
            return Ok(());
        }
        let group = Pid::from_raw(pid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.state(id), ContainerState::Running { .. }) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = killpg(group, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.state(id), ContainerState::Running { .. })
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        if matches!(self.state(id), ContainerState::Running { .. }) {
            self.stop_container(id, Duration::from_secs(0)).await?;
        }
        let _ = std::fs::remove_dir_all(self.container_dir(id));
        self.cgroups.remove(id);
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        _tty: bool,
        stdin: bool,
    ) -> Result<ExecSession> {
        if !matches!(self.state(id), ContainerState::Running { .. }) {
            return Err(Error::NotFound(format!("running container {id}")));
        }
        let config: ShimConfig = serde_json::from_slice(
            &std::fs::read(self.container_dir(id).join("config.json")).map_err(other)?,
        )
        .map_err(other)?;
        let mut command = command;
        self.resolve_program(&mut command);
        let Some((program, args)) = command.split_first() else {
            return Err(Error::Config("empty command".into()));
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&config.cwd)
            .stdin(if stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Config(format!("exec: \"{program}\": {e}")))?;
        for procs in &config.cgroup_procs {
            if let Some(pid) = child.id() {
                let _ = std::fs::write(procs, pid.to_string());
            }
        }
        let stdin_pipe = child
            .stdin
            .take()
            .map(|s| Box::pin(s) as std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for (pipe, is_err) in [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                false,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                true,
            ),
        ] {
            let Some(mut pipe) = pipe else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match pipe.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let bytes = bytes::Bytes::copy_from_slice(&buf[..n]);
                            let chunk = if is_err {
                                ExecChunk::Stderr(bytes)
                            } else {
                                ExecChunk::Stdout(bytes)
                            };
                            if tx.send(Ok(chunk)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        drop(tx);
        Ok(ExecSession {
            output: Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
            stdin: stdin_pipe,
            exit_code: Box::pin(async move {
                let status = child.wait().await.map_err(other)?;
                use std::os::unix::process::ExitStatusExt;
                Ok(status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
            }),
            resize: None,
        })
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        if let Some(stats) = self.cgroups.usage(id) {
            return Ok(stats);
        }
        // Without cgroups: the main process from procfs (children are not counted).
        let pid = self
            .pid_of(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(other)?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime, in USER_HZ (100 per second).
        let (user, system) = (field(11) * 10_000_000, field(12) * 10_000_000);
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).map_err(other)?;
        let rss_pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let rss = rss_pages * 4096;
        Ok(ContainerStats {
            cpu_usage_nanos: user + system,
            cpu_user_nanos: user,
            cpu_system_nanos: system,
            memory_usage_bytes: rss,
            memory_working_set_bytes: rss,
            memory_rss_bytes: rss,
            ..ContainerStats::default()
        })
    }

    async fn identity(&self, id: &str) -> Result<ContainerIdentity> {
        let cgroup = match self.cgroups {
            Cgroups::Unavailable => "/".to_owned(),
            _ => format!("/skiff/{id}"),
        };
        Ok(ContainerIdentity {
            name: id.to_owned(),
            cgroup,
        })
    }
}
