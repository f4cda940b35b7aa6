//! The Node object: registration with this host's capacity and identity, status heartbeats
//! with the conditions kubectl shows, and the Lease in `kube-node-lease` that tells the
//! control plane the agent is alive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Ctx;

/// Facts about this host.
#[derive(Debug, Clone)]
pub(crate) struct HostInfo {
    /// CPU cores.
    pub cpus: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Filesystem capacity of the agent's root, bytes.
    pub storage_bytes: i64,
    /// Hostname.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// `PRETTY_NAME` from os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// Boot id.
    pub boot_id: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn meminfo(key: &str) -> i64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix(key).and_then(|r| {
                r.trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse::<i64>()
                    .ok()
            })
        })
        .unwrap_or(0)
        * 1024
}

impl HostInfo {
    /// Read the host.
    pub(crate) fn detect(root: &std::path::Path) -> Self {
        let storage_bytes = nix::sys::statvfs::statvfs(root)
            .map(|s| (s.blocks() as i64) * (s.fragment_size() as i64))
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| "Linux".into());
        HostInfo {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as i64),
            memory_bytes: meminfo("MemTotal"),
            storage_bytes,
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into()),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// The first non-loopback IPv4 address of this host, else 127.0.0.1.
pub fn detect_node_ip() -> String {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return "127.0.0.1".into();
    };
    let mut found: Vec<(String, String)> = addrs
        .filter(|a| {
            a.interface_name != "lo"
                && !a.interface_name.starts_with("docker")
                && !a.interface_name.starts_with("veth")
        })
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip.to_string()))
        })
        .collect();
    found.sort_by_key(|(name, _)| !name.starts_with("eth"));
    found
        .into_iter()
        .next()
        .map_or_else(|| "127.0.0.1".into(), |(_, ip)| ip)
}

fn conditions(ctx: &Ctx, old: Option<&Value>) -> Vec<Value> {
    let now = skiff_api::time::now_rfc3339();
    let available = meminfo("MemAvailable");
    let disk_free = nix::sys::statvfs::statvfs(ctx.config.root_dir.as_path())
        .map(|s| (s.blocks_available() as f64) / (s.blocks().max(1) as f64))
        .unwrap_or(1.0);
    let list = [
        (
            "MemoryPressure",
            available > 0 && available < 100 * 1024 * 1024,
            "KubeletHasSufficientMemory",
            "KubeletHasInsufficientMemory",
            "kubelet has sufficient memory available",
            "kubelet has insufficient memory available",
        ),
        (
            "DiskPressure",
            disk_free < 0.05,
            "KubeletHasNoDiskPressure",
            "KubeletHasDiskPressure",
            "kubelet has no disk pressure",
            "kubelet has disk pressure",
        ),
        (
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "KubeletHasInsufficientPID",
            "kubelet has sufficient PID available",
            "kubelet has insufficient PID available",
        ),
        (
            "Ready",
            true,
            "KubeletNotReady",
            "KubeletReady",
            "container runtime is not ready",
            "kubelet is posting ready status",
        ),
    ];
    list.iter()
        .map(
            |(ty, truth, false_reason, true_reason, false_msg, true_msg)| {
                let status = if *truth { "True" } else { "False" };
                let (reason, message) = if *truth {
                    (true_reason, true_msg)
                } else {
                    (false_reason, false_msg)
                };
                let since = old
                    .and_then(|o| o["conditions"].as_array())
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == *ty && c["status"] == status)
                    .map_or_else(|| json!(now), |c| c["lastTransitionTime"].clone());
                json!({"type": ty, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": since})
            },
        )
        .collect()
}

fn status(ctx: &Ctx, old: Option<&Value>) -> Value {
    let h = &ctx.host;
    let capacity = json!({
        "cpu": h.cpus.to_string(),
        "memory": format!("{}Ki", h.memory_bytes / 1024),
        "ephemeral-storage": format!("{}Ki", h.storage_bytes / 1024),
        "pods": ctx.config.max_pods.to_string(),
    });
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": conditions(ctx, old),
        "addresses": [{"type": "InternalIP", "address": ctx.node_ip}, {"type": "Hostname", "address": h.hostname}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": ctx.port}},
        "nodeInfo": {
            "machineID": h.machine_id, "systemUUID": h.machine_id, "bootID": h.boot_id,
            "kernelVersion": h.kernel, "osImage": h.os_image,
            "containerRuntimeVersion": ctx.runtime.version(),
            "kubeletVersion": crate::KUBELET_VERSION, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": arch(),
        },
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Create or update this node's object.
pub(crate) async fn register(ctx: &Ctx) -> anyhow::Result<Node> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let name = &ctx.config.node_name;
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    labels.extend(ctx.config.node_labels.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": ctx.config.taints},
        "status": status(ctx, None),
    }))?;
    let created = match api.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await?
        }
        Err(e) => return Err(e.into()),
    };
    let old = serde_json::to_value(&created.status).ok();
    let updated = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status(ctx, old.as_ref())})),
        )
        .await?;
    tracing::info!(node = %name, ip = %ctx.node_ip, "node registered");
    Ok(updated)
}

async fn renew_lease(ctx: &Ctx, node_uid: &str) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let name = &ctx.config.node_name;
    let now = skiff_api::time::now_rfc3339_micros();
    let patch =
        json!({"spec": {"renewTime": now, "holderIdentity": name, "leaseDurationSeconds": 40}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            }))?;
            api.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Renew the lease and the node status every `status_update_interval` until `shutdown`.
pub(crate) async fn heartbeat(ctx: Arc<Ctx>, node_uid: String, shutdown: CancellationToken) {
    let span = tracing::info_span!("node_heartbeat", node = %ctx.config.node_name);
    tracing::Instrument::instrument(
        async move {
            let api: Api<Node> = Api::all(ctx.client.clone());
            let mut ticker = tokio::time::interval(ctx.config.status_update_interval);
            let mut backoff = Duration::from_millis(500);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let result = async {
                    renew_lease(&ctx, &node_uid).await?;
                    let old = api.get_status(&ctx.config.node_name).await?;
                    let old = serde_json::to_value(&old.status).ok();
                    api.patch_status(
                        &ctx.config.node_name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status(&ctx, old.as_ref())})),
                    )
                    .await?;
                    anyhow::Ok(())
                }
                .await;
                match result {
                    Ok(()) => backoff = Duration::from_millis(500),
                    Err(e) => {
                        ctx.metrics.heartbeat_errors.inc();
                        tracing::warn!(error = %e, "node heartbeat failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        },
        span,
    )
    .await;
}
