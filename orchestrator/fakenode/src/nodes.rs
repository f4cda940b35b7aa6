//! Registering the fake Node objects and renewing their Leases, paced evenly over the renew
//! interval so a thousand nodes are a steady trickle of writes, not a burst every ten seconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Outcome;
use crate::{FAKE_NODE_LABEL, FakeNodeMetrics, FakeNodesConfig};

/// The fake InternalIP of node `index`: 10.64.0.0/10 is far from anything a test uses.
pub(crate) fn node_ip(index: usize) -> String {
    format!(
        "10.{}.{}.{}",
        64 + (index >> 16) % 64,
        (index >> 8) % 256,
        index % 256
    )
}

fn node_status(config: &FakeNodesConfig, index: usize, name: &str) -> Value {
    let now = skiff_api::time::now_rfc3339();
    // With fake usage served, the node's address and kubelet port are that server's.
    let (address, port) = match config.kubelet_endpoint {
        Some(e) => (e.ip().to_string(), e.port()),
        None => (node_ip(index), 10250),
    };
    let capacity = json!({
        "cpu": config.cpu,
        "memory": config.memory,
        "ephemeral-storage": "100Gi",
        "pods": config.max_pods.to_string(),
    });
    let condition = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "fake node is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "fake",
            "containerRuntimeVersion": "fake://0", "kubeletVersion": "v1.33.0-skiff-fake",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// Create (or, after a restart, refresh) one node; returns its uid.
async fn register(
    api: &Api<Node>,
    config: &FakeNodesConfig,
    index: usize,
    name: &str,
) -> Result<String, kube::Error> {
    let labels: BTreeMap<&str, &str> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        (FAKE_NODE_LABEL, "true"),
    ]
    .into();
    let taints = if config.taint {
        json!([{"key": FAKE_NODE_LABEL, "value": "true", "effect": "NoSchedule"}])
    } else {
        json!([])
    };
    let status = node_status(config, index, name);
    let annotations = match config.kubelet_endpoint {
        Some(_) => {
            json!({"metrics.k8s.io/resource-metrics-path": format!("/nodes/{name}/metrics/resource")})
        }
        None => json!({}),
    };
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"taints": taints},
        "status": status,
    }))
    .expect("a well-formed Node");
    let node = match api.create(&PostParams::default(), &node).await {
        Ok(node) => node,
        Err(kube::Error::Api(e)) if e.code == 409 => api.get(name).await?,
        Err(e) => return Err(e),
    };
    // Creation ignores status (as upstream's does); write it through the subresource.
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(node.metadata.uid.unwrap_or_default())
}

/// Register every node, `concurrency` at a time. Returns (name, uid) pairs.
pub(crate) async fn register_all(
    client: &kube::Client,
    config: &FakeNodesConfig,
    names: &[String],
    metrics: &FakeNodeMetrics,
) -> anyhow::Result<Vec<(String, String)>> {
    let api: Api<Node> = Api::all(client.clone());
    // Owned values per future: spawned futures must not borrow across the stream's closures.
    let attempts: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let (api, config, metrics, name) =
                (api.clone(), config.clone(), metrics.clone(), name.clone());
            async move {
                let uid = register(&api, &config, index, &name).await?;
                metrics.nodes.inc();
                Ok::<_, kube::Error>((name, uid))
            }
        })
        .collect();
    let registered: Vec<(String, String)> = futures::stream::iter(attempts)
        .buffer_unordered(config.concurrency.max(1))
        .try_collect()
        .await?;
    Ok(registered)
}

async fn renew(api: &Api<Lease>, name: &str, uid: &str, duration: i32) -> Result<(), kube::Error> {
    let now = skiff_api::time::now_rfc3339_micros();
    let patch = json!({"spec": {"renewTime": now, "holderIdentity": name, "leaseDurationSeconds": duration}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": now},
            }))
            .expect("a well-formed Lease");
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Renew each node's Lease once per interval, one node every `interval / count`.
pub(crate) async fn renew_leases(
    client: kube::Client,
    config: FakeNodesConfig,
    nodes: Vec<(String, String)>,
    metrics: FakeNodeMetrics,
    shutdown: CancellationToken,
) {
    if nodes.is_empty() {
        return;
    }
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let duration = (config.lease_renew_interval.as_secs() * 4).max(4) as i32;
    let step = (config.lease_renew_interval / nodes.len() as u32).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(step);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let failures = Arc::new(AtomicU32::new(0));
    for (name, uid) in nodes.iter().cycle() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // Back off while the API server refuses renewals, instead of hammering it.
        let failing = failures.load(Ordering::Relaxed);
        if failing > 0 {
            let pause = Duration::from_millis(100 * u64::from(failing.min(50)));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // Renewals overlap (up to `concurrency`), so one slow response does not delay the
        // nodes after it past their grace period.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (api, name, uid) = (api.clone(), name.clone(), uid.clone());
        let (failures, metrics) = (failures.clone(), metrics.clone());
        tokio::spawn(async move {
            let result = renew(&api, &name, &uid, duration).await;
            drop(permit);
            let outcome = match result {
                Ok(()) => {
                    failures.store(0, Ordering::Relaxed);
                    "success"
                }
                Err(e) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %name, error = %e, "renewing a fake node's Lease failed");
                    "error"
                }
            };
            metrics
                .lease_renewals
                .get_or_create(&Outcome { result: outcome })
                .inc();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ips_are_distinct_for_a_large_fleet() {
        let ips: std::collections::HashSet<String> = (0..70_000).map(node_ip).collect();
        assert_eq!(ips.len(), 70_000);
        assert_eq!(node_ip(0), "10.64.0.0");
        assert_eq!(node_ip(257), "10.64.1.1");
    }

    #[test]
    fn status_offers_the_configured_capacity() {
        let config = FakeNodesConfig {
            cpu: "8".into(),
            max_pods: 50,
            ..FakeNodesConfig::default()
        };
        let status = node_status(&config, 3, "fake-3");
        assert_eq!(status["allocatable"]["cpu"], "8");
        assert_eq!(status["allocatable"]["pods"], "50");
        assert_eq!(status["conditions"][3]["type"], "Ready");
        assert_eq!(status["addresses"][0]["address"], "10.64.0.3");
    }
}
