//! Filters: can this pod run on this node? Each returns the reason it cannot, worded as
//! kube-scheduler words it, so `kubectl describe pod` reads the same. They run in upstream's
//! plugin order and a node reports its first failing filter (the resource fit filter may report
//! several resources at once).

use std::collections::BTreeMap;

use crate::matching::{node_affinity_matches, taints, tolerates, tolerations};
use crate::pod_state::PodState;
use crate::resources::Resources;
use crate::snapshot::NodeInfo;

/// One filter: the reasons `pod` cannot go to the node (empty: it can).
type Filter = fn(&PodState, &NodeInfo) -> Vec<String>;

/// Why `pod` cannot run on `node` (empty: it can).
pub(crate) fn check(state: &PodState, node: &NodeInfo) -> Vec<String> {
    let steps: [Filter; 7] = [
        unschedulable,
        node_name,
        taint_toleration,
        node_affinity,
        node_ports,
        resources_fit,
        inter_pod_affinity,
    ];
    for step in steps {
        let reasons = step(state, node);
        if !reasons.is_empty() {
            return reasons;
        }
    }
    Vec::new()
}

fn one(reason: &str) -> Vec<String> {
    vec![reason.to_owned()]
}

/// NodeUnschedulable: cordoned nodes take only pods tolerating the unschedulable taint.
fn unschedulable(state: &PodState, node: &NodeInfo) -> Vec<String> {
    let pod = state.pod;
    let cordoned = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let taint = k8s_openapi::api::core::v1::Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if cordoned && !tolerations(pod).iter().any(|t| tolerates(t, &taint)) {
        return one("node(s) were unschedulable");
    }
    Vec::new()
}

/// NodeName: a pod naming a node (but not yet bound) fits only there.
fn node_name(state: &PodState, node: &NodeInfo) -> Vec<String> {
    let pod = state.pod;
    // Pods with spec.nodeName are not scheduled at all; this covers the
    // `metadata.name` matchFields DaemonSets use, through node affinity, and any caller that
    // asks before binding.
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(n) if !n.is_empty() && n != node.name() => {
            one("node(s) didn't match the requested node name")
        }
        _ => Vec::new(),
    }
}

/// TaintToleration: every NoSchedule and NoExecute taint must be tolerated.
fn taint_toleration(state: &PodState, node: &NodeInfo) -> Vec<String> {
    let pod = state.pod;
    let untolerated = taints(&node.node).iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations(pod).iter().any(|t| tolerates(t, taint))
    });
    match untolerated {
        Some(t) => vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or_default()
        )],
        None => Vec::new(),
    }
}

/// NodeAffinity: nodeSelector and required node affinity.
fn node_affinity(state: &PodState, node: &NodeInfo) -> Vec<String> {
    if node_affinity_matches(state.pod, &node.node) {
        Vec::new()
    } else {
        one("node(s) didn't match Pod's node affinity/selector")
    }
}

fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
    a.2 == b.2 && a.1 == b.1 && (a.0 == b.0 || wildcard(&a.0) || wildcard(&b.0))
}

/// NodePorts: host ports must be free on the node.
fn node_ports(state: &PodState, node: &NodeInfo) -> Vec<String> {
    let wanted = &state.me.host_ports;
    if wanted.is_empty() {
        return Vec::new();
    }
    let taken = || node.pods.iter().flat_map(|p| p.host_ports.iter());
    if wanted.iter().any(|w| taken().any(|t| ports_conflict(w, t))) {
        return one("node(s) didn't have free ports for the requested pod ports");
    }
    Vec::new()
}

/// NodeResourcesFit: requests of the pods on the node plus this one within allocatable.
fn resources_fit(state: &PodState, node: &NodeInfo) -> Vec<String> {
    let want = state.requests;
    let Resources {
        milli_cpu,
        memory,
        pods,
    } = node.allocatable;
    let mut reasons = Vec::new();
    if node.requested.pods + 1 > pods {
        reasons.push("Too many pods".to_owned());
    }
    if want.milli_cpu > 0 && node.requested.milli_cpu + want.milli_cpu > milli_cpu {
        reasons.push("Insufficient cpu".to_owned());
    }
    if want.memory > 0 && node.requested.memory + want.memory > memory {
        reasons.push("Insufficient memory".to_owned());
    }
    reasons
}

/// InterPodAffinity: the pod's required affinity and anti-affinity, and the required
/// anti-affinity of pods already placed.
fn inter_pod_affinity(state: &PodState, node: &NodeInfo) -> Vec<String> {
    // Existing pods whose anti-affinity selects this pod keep it out of their domain.
    if state
        .forbidden
        .iter()
        .any(|(key, value)| node.labels().get(key) == Some(value))
    {
        return one("node(s) didn't satisfy existing pods anti-affinity rules");
    }
    if state.required_anti.iter().any(|t| t.count_on(node) > 0) {
        return one("node(s) didn't match pod anti-affinity rules");
    }
    for term in &state.required_affinity {
        if term.domains.count_on(node) > 0 {
            continue;
        }
        // The first pod of a group that selects itself may go anywhere the topology key exists
        // (upstream's special case), as long as no pod anywhere matches yet.
        let has_key = node.labels().contains_key(&term.domains.topology_key);
        if term.domains.anywhere || !term.selects_itself || !has_key {
            return one("node(s) didn't match pod affinity rules");
        }
    }
    Vec::new()
}

/// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {…}.` — the
/// reasons counted over nodes and sorted, as upstream's FitError prints them.
pub(crate) fn fit_error(node_count: usize, reasons: &[Vec<String>]) -> String {
    if node_count == 0 {
        return "no nodes available to schedule pods".to_owned();
    }
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for node in reasons {
        for r in node {
            *histogram.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = histogram
        .into_iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    parts.sort();
    format!("0/{node_count} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};
    use std::sync::Arc;

    pub(crate) fn node(name: &str, extra: Value) -> Arc<Node> {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}},
        });
        merge(&mut n, extra);
        Arc::new(serde_json::from_value(n).unwrap())
    }

    pub(crate) fn pod(name: &str, extra: Value) -> Arc<Pod> {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]},
        });
        merge(&mut p, extra);
        Arc::new(serde_json::from_value(p).unwrap())
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn reasons(p: &Arc<Pod>, nodes: &[Arc<Node>], placed: &[Arc<Pod>]) -> Vec<Vec<String>> {
        let snap = Snapshot::build(nodes, placed, &[]);
        let state = PodState::new(p, &snap);
        snap.nodes.iter().map(|n| check(&state, n)).collect()
    }

    #[test]
    fn resources_taints_and_cordons_explain_themselves() {
        let nodes = [
            node("a", json!({"spec": {"unschedulable": true}})),
            node(
                "b",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            ),
            node("c", json!({})),
        ];
        let hog = pod(
            "hog",
            json!({"spec": {"nodeName": "c", "containers": [{"name": "c", "resources": {"requests": {"cpu": "1800m"}}}]}}),
        );
        let r = reasons(&pod("p", json!({})), &nodes, &[hog]);
        assert_eq!(
            fit_error(3, &r),
            "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable."
        );
        let tolerant = pod(
            "t",
            json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
        );
        let r = reasons(&tolerant, &nodes, &[]);
        assert!(r.iter().all(Vec::is_empty), "{r:?}");
    }

    #[test]
    fn finished_pods_free_their_resources_and_ports_conflict() {
        let nodes = [node("a", json!({}))];
        let done = pod(
            "done",
            json!({"spec": {"nodeName": "a", "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}, "status": {"phase": "Succeeded"}}),
        );
        assert!(
            reasons(&pod("p", json!({})), &nodes, &[done])
                .iter()
                .all(Vec::is_empty)
        );
        let web = |name: &str, ip: &str| {
            pod(
                name,
                json!({"spec": {"nodeName": "a", "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": ip}]}]}}),
            )
        };
        let r = reasons(&web("new", "10.0.0.1"), &nodes, &[web("old", "0.0.0.0")]);
        assert_eq!(
            r[0],
            ["node(s) didn't have free ports for the requested pod ports"]
        );
        let r = reasons(&web("new", "10.0.0.1"), &nodes, &[web("old", "10.0.0.2")]);
        assert!(r[0].is_empty(), "different host IPs do not conflict");
    }

    #[test]
    fn node_selector_and_affinity() {
        let nodes = [
            node("a", json!({"metadata": {"labels": {"disk": "ssd"}}})),
            node("b", json!({})),
        ];
        let p = pod("p", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
        let r = reasons(&p, &nodes, &[]);
        assert!(r[0].is_empty());
        assert_eq!(r[1], ["node(s) didn't match Pod's node affinity/selector"]);
    }

    #[test]
    fn pod_anti_affinity_spreads_and_affinity_follows() {
        let nodes = [node("a", json!({})), node("b", json!({}))];
        let anti = json!({"metadata": {"labels": {"app": "db"}}, "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "db"}}}]}}}});
        let mut first = anti.clone();
        merge(&mut first, json!({"spec": {"nodeName": "a"}}));
        let r = reasons(&pod("db-1", anti.clone()), &nodes, &[pod("db-0", first)]);
        assert_eq!(
            r[0],
            ["node(s) didn't satisfy existing pods anti-affinity rules"]
        );
        assert!(r[1].is_empty());

        let with = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "cache"}}}]}}}});
        let cache = pod(
            "cache",
            json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"nodeName": "b"}}),
        );
        let r = reasons(&pod("web", with.clone()), &nodes, &[cache]);
        assert_eq!(r[0], ["node(s) didn't match pod affinity rules"]);
        assert!(r[1].is_empty());
        let r = reasons(&pod("web", with), &nodes, &[]);
        assert!(
            r.iter()
                .all(|r| r == &["node(s) didn't match pod affinity rules"]),
            "nothing to follow: {r:?}"
        );
    }

    #[test]
    fn namespace_selectors_pick_namespaces_by_their_labels() {
        let nodes = [node("a", json!({})), node("b", json!({}))];
        // A cache in namespace "shared" runs on b; the web pod (namespace default) must be next
        // to a cache in any namespace labelled team=cache.
        let cache = pod(
            "cache",
            json!({"metadata": {"namespace": "shared", "labels": {"app": "cache"}}, "spec": {"nodeName": "b"}}),
        );
        let web = pod(
            "web",
            json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app": "cache"}},
                "namespaceSelector": {"matchLabels": {"team": "cache"}}}]}}}}),
        );
        let mut snap = Snapshot::build(&nodes, &[cache], &[]);
        snap.namespace_labels = [
            ("default".to_owned(), BTreeMap::new()),
            (
                "shared".to_owned(),
                [("team".to_owned(), "cache".to_owned())].into(),
            ),
        ]
        .into();
        let state = PodState::new(&web, &snap);
        assert_eq!(
            check(&state, &snap.nodes[0]),
            ["node(s) didn't match pod affinity rules"]
        );
        assert!(
            check(&state, &snap.nodes[1]).is_empty(),
            "the labelled namespace counts"
        );

        // Without the label the cache's namespace is out of reach (and the web pod does not select itself).
        snap.namespace_labels
            .insert("shared".into(), BTreeMap::new());
        let state = PodState::new(&web, &snap);
        assert!(!check(&state, &snap.nodes[1]).is_empty());
    }

    #[test]
    fn too_many_pods_and_no_nodes() {
        let nodes = [node("a", json!({"status": {"allocatable": {"pods": "1"}}}))];
        let placed = pod(
            "x",
            json!({"spec": {"nodeName": "a", "containers": [{"name": "c"}]}}),
        );
        let p = pod("p", json!({"spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(reasons(&p, &nodes, &[placed])[0], ["Too many pods"]);
        assert_eq!(fit_error(0, &[]), "no nodes available to schedule pods");
    }
}
