//! Watch-fed views of Nodes and Pods, trimmed to what the server needs: where to scrape each
//! node, and the labels that `labelSelector` matches (the HPA selects pods by label).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

/// A node worth scraping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeInfo {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// InternalIP (else the first address).
    pub address: Option<String>,
    /// `status.daemonEndpoints.kubeletEndpoint.Port`.
    pub port: u16,
    /// Ready=True.
    pub ready: bool,
    /// `metrics.k8s.io/resource-metrics-path` annotation, else `/metrics/resource`.
    pub path: String,
}

/// A pod's labels and creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodInfo {
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// Both views.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// By node name.
    pub nodes: RwLock<HashMap<String, NodeInfo>>,
    /// By (namespace, name).
    pub pods: RwLock<HashMap<(String, String), PodInfo>>,
}

fn node_info(n: &Node) -> NodeInfo {
    let status = n.status.as_ref();
    let addresses = status.and_then(|s| s.addresses.as_ref());
    let address = addresses.and_then(|a| {
        a.iter()
            .find(|a| a.type_ == "InternalIP")
            .or_else(|| a.first())
            .map(|a| a.address.clone())
    });
    let port = status
        .and_then(|s| s.daemon_endpoints.as_ref())
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map_or(10250, |e| e.port as u16);
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let path = n
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("metrics.k8s.io/resource-metrics-path"))
        .cloned()
        .unwrap_or_else(|| "/metrics/resource".into());
    NodeInfo {
        labels: n.metadata.labels.clone().unwrap_or_default(),
        address,
        port,
        ready,
        path,
    }
}

fn pod_key(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// Keep `cache` in step with the cluster until `shutdown`; a broken watch is retried with
/// kube-runtime's default backoff.
pub(crate) async fn run(client: kube::Client, cache: Arc<Cache>, shutdown: CancellationToken) {
    use kube::runtime::WatchStreamExt;
    let nodes = {
        let cache = cache.clone();
        let mut pending: HashMap<String, NodeInfo> = HashMap::new();
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::Apply(n)) => {
                        let name = n.metadata.name.clone().unwrap_or_default();
                        cache
                            .nodes
                            .write()
                            .expect("cache lock")
                            .insert(name, node_info(&n));
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        let name = n.metadata.name.clone().unwrap_or_default();
                        cache.nodes.write().expect("cache lock").remove(&name);
                    }
                    Ok(watcher::Event::Init) => pending.clear(),
                    Ok(watcher::Event::InitApply(n)) => {
                        pending.insert(n.metadata.name.clone().unwrap_or_default(), node_info(&n));
                    }
                    Ok(watcher::Event::InitDone) => {
                        *cache.nodes.write().expect("cache lock") = std::mem::take(&mut pending);
                    }
                    Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
                }
                futures::future::ready(())
            })
    };
    let pods = {
        let cache = cache.clone();
        let mut pending: HashMap<(String, String), PodInfo> = HashMap::new();
        let info = |p: &Pod| PodInfo {
            labels: p.metadata.labels.clone().unwrap_or_default(),
        };
        watcher(Api::<Pod>::all(client), watcher::Config::default())
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(watcher::Event::Apply(p)) => {
                        cache
                            .pods
                            .write()
                            .expect("cache lock")
                            .insert(pod_key(&p), info(&p));
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        cache.pods.write().expect("cache lock").remove(&pod_key(&p));
                    }
                    Ok(watcher::Event::Init) => pending.clear(),
                    Ok(watcher::Event::InitApply(p)) => {
                        pending.insert(pod_key(&p), info(&p));
                    }
                    Ok(watcher::Event::InitDone) => {
                        *cache.pods.write().expect("cache lock") = std::mem::take(&mut pending);
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                }
                futures::future::ready(())
            })
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = futures::future::join(nodes, pods) => {}
    }
}
