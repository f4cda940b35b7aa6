//! A point-in-time view of the cluster the scheduling cycle works on: every node with the pods
//! on it (bound, or assumed by this scheduler while their binding is in flight) and what they
//! request. Built once per batch of pending pods and updated in place as pods are placed, so
//! scheduling a pod never relists anything.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{Resources, from_map, pod_requests};

/// What the filters and scores need to know about a pod already on a node. Cheap to make (the
/// scheduler makes one per pod per pass): labels and namespace are read from the shared pod.
#[derive(Debug, Clone)]
pub(crate) struct PlacedPod {
    /// The uid of its controller (ReplicaSet, StatefulSet…), for spreading.
    pub(crate) owner: Option<String>,
    /// (hostIP, protocol, hostPort) it holds.
    pub(crate) host_ports: Vec<(String, String, i32)>,
    pub(crate) pod: Arc<Pod>,
}

impl PlacedPod {
    pub(crate) fn of(pod: Arc<Pod>) -> PlacedPod {
        PlacedPod {
            owner: controller_uid(&pod),
            host_ports: host_ports(&pod),
            pod,
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    pub(crate) fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }
}

/// A node and what is on it.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub(crate) node: Arc<Node>,
    pub(crate) allocatable: Resources,
    /// Sum of exact requests (for the fit filter).
    pub(crate) requested: Resources,
    /// Sum of requests with kube-scheduler's non-zero defaults (for scoring).
    pub(crate) non_zero_requested: Resources,
    pub(crate) pods: Vec<PlacedPod>,
    /// Controller uid → pods of it on this node (spreading replicas).
    pub(crate) owners: HashMap<String, usize>,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        let status = node.status.as_ref();
        let allocatable = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(from_map)
            .unwrap_or_default();
        NodeInfo {
            node,
            allocatable,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: Vec::new(),
            owners: HashMap::new(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    pub(crate) fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// Account for `pod` on this node.
    pub(crate) fn add(&mut self, pod: Arc<Pod>) {
        self.requested.add(&pod_requests(&pod, false));
        self.non_zero_requested.add(&pod_requests(&pod, true));
        let placed = PlacedPod::of(pod);
        if let Some(owner) = &placed.owner {
            *self.owners.entry(owner.clone()).or_default() += 1;
        }
        self.pods.push(placed);
    }
}

/// Every node, by name.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// (node, pod) indexes of placed pods with required anti-affinity, which every new pod must
    /// be checked against (usually none, so nobody pays for scanning every pod).
    pub(crate) with_anti_affinity: Vec<(usize, usize)>,
    /// Namespace → its labels (pod affinity terms' namespaceSelector).
    pub(crate) namespace_labels: HashMap<String, BTreeMap<String, String>>,
}

/// Pods that hold node resources: bound and not finished.
fn occupies(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Snapshot {
    /// Build from the caches: `assumed` are pods this scheduler bound whose binding the watch has
    /// not shown yet (node, pod); the caller leaves out those the cache already shows bound, so
    /// none is counted twice.
    pub(crate) fn build(
        nodes: &[Arc<Node>],
        pods: &[Arc<Pod>],
        assumed: &[(String, Arc<Pod>)],
    ) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let mut sorted: Vec<&Arc<Node>> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for node in sorted {
            let info = NodeInfo::new(node.clone());
            snapshot
                .index
                .insert(info.name().to_owned(), snapshot.nodes.len());
            snapshot.nodes.push(info);
        }
        for pod in pods {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            if let Some(node) = node.filter(|n| !n.is_empty())
                && occupies(pod)
            {
                snapshot.add(node, pod.clone());
            }
        }
        for (node, pod) in assumed {
            snapshot.add(node, pod.clone());
        }
        snapshot
    }

    /// Account for `pod` on `node` (a no-op for nodes not in the snapshot).
    pub(crate) fn add(&mut self, node: &str, pod: Arc<Pod>) {
        if let Some(&i) = self.index.get(node) {
            if crate::pod_state::has_required_anti_affinity(&pod) {
                self.with_anti_affinity.push((i, self.nodes[i].pods.len()));
            }
            self.nodes[i].add(pod);
        }
    }
}

fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

pub(crate) fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some((
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
            ))
        })
        .collect()
}
