//! Scores: among the nodes that fit, which is best. Each plugin scores 0–100 per node and the
//! weighted sum decides, with kube-scheduler's default weights (TaintToleration 3, NodeAffinity
//! 2, InterPodAffinity 2, spreading 2, least-allocated 1, balanced allocation 1).

use k8s_openapi::api::core::v1::Pod;

use crate::matching::{taints, term_matches, tolerates, tolerations};
use crate::pod_state::PodState;
use crate::snapshot::NodeInfo;

const MAX: f64 = 100.0;

/// The weighted score of each candidate (indexes into `all`).
pub(crate) fn score(state: &PodState, candidates: &[usize], all: &[NodeInfo]) -> Vec<f64> {
    let pod = state.pod;
    let nodes: Vec<&NodeInfo> = candidates.iter().map(|&i| &all[i]).collect();
    let plugins: [(f64, Vec<f64>); 6] = [
        (
            3.0,
            reverse_normalize(nodes.iter().map(|n| prefer_no_schedule(pod, n)).collect()),
        ),
        (
            2.0,
            normalize(
                nodes
                    .iter()
                    .map(|n| preferred_node_affinity(pod, n))
                    .collect(),
            ),
        ),
        (
            2.0,
            min_max(
                nodes
                    .iter()
                    .map(|n| preferred_pod_affinity(state, n))
                    .collect(),
            ),
        ),
        (
            2.0,
            reverse_normalize(nodes.iter().map(|n| same_owner(state, n)).collect()),
        ),
        (
            1.0,
            nodes.iter().map(|n| least_allocated(state, n)).collect(),
        ),
        (1.0, nodes.iter().map(|n| balanced(state, n)).collect()),
    ];
    (0..nodes.len())
        .map(|i| plugins.iter().map(|(w, s)| w * s[i]).sum())
        .collect()
}

/// Scale so the highest becomes 100.
fn normalize(raw: Vec<f64>) -> Vec<f64> {
    let max = raw.iter().copied().fold(0.0, f64::max);
    raw.into_iter()
        .map(|v| if max > 0.0 { v * MAX / max } else { 0.0 })
        .collect()
}

/// Fewer is better: 100 for the lowest count.
fn reverse_normalize(raw: Vec<f64>) -> Vec<f64> {
    let max = raw.iter().copied().fold(0.0, f64::max);
    raw.into_iter()
        .map(|v| if max > 0.0 { MAX - v * MAX / max } else { MAX })
        .collect()
}

/// Map [min, max] onto [0, 100] (scores that may be negative).
fn min_max(raw: Vec<f64>) -> Vec<f64> {
    let max = raw.iter().copied().fold(f64::MIN, f64::max);
    let min = raw.iter().copied().fold(f64::MAX, f64::min);
    raw.into_iter()
        .map(|v| {
            if max > min {
                (v - min) * MAX / (max - min)
            } else {
                0.0
            }
        })
        .collect()
}

fn prefer_no_schedule(pod: &Pod, node: &NodeInfo) -> f64 {
    taints(&node.node)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !tolerations(pod).iter().any(|tol| tolerates(tol, t)))
        .count() as f64
}

fn preferred_node_affinity(pod: &Pod, node: &NodeInfo) -> f64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| term_matches(&t.preference, &node.node))
        .map(|t| f64::from(t.weight))
        .sum()
}

/// Preferred affinity adds its weight for every matching pod in the node's domain;
/// preferred anti-affinity subtracts it.
fn preferred_pod_affinity(state: &PodState, node: &NodeInfo) -> f64 {
    state
        .preferred
        .iter()
        .map(|(weight, domains)| weight * domains.count_on(node) as f64)
        .sum()
}

/// Pods of the same controller already on the node (spreading replicas).
fn same_owner(state: &PodState, node: &NodeInfo) -> f64 {
    state
        .me
        .owner
        .as_ref()
        .and_then(|owner| node.owners.get(owner))
        .copied()
        .unwrap_or(0) as f64
}

fn fractions(state: &PodState, node: &NodeInfo) -> (f64, f64) {
    let want = state.non_zero_requests;
    let frac = |used: i64, cap: i64| {
        if cap <= 0 {
            1.0
        } else {
            (used as f64 / cap as f64).min(1.0)
        }
    };
    (
        frac(
            node.non_zero_requested.milli_cpu + want.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        frac(
            node.non_zero_requested.memory + want.memory,
            node.allocatable.memory,
        ),
    )
}

/// LeastAllocated: the emptier the node after placing the pod, the better.
fn least_allocated(state: &PodState, node: &NodeInfo) -> f64 {
    let (cpu, memory) = fractions(state, node);
    ((1.0 - cpu) + (1.0 - memory)) / 2.0 * MAX
}

/// BalancedAllocation: CPU and memory used in the same proportion is better.
fn balanced(state: &PodState, node: &NodeInfo) -> f64 {
    let (cpu, memory) = fractions(state, node);
    let std_dev = (cpu - memory).abs() / 2.0;
    (1.0 - std_dev) * MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use serde_json::json;
    use std::sync::Arc;

    fn node(
        name: &str,
        labels: serde_json::Value,
        taints: serde_json::Value,
    ) -> Arc<k8s_openapi::api::core::v1::Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"taints": taints},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, spec: serde_json::Value, owner: Option<&str>) -> Arc<Pod> {
        let owners = owner.map(|o| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": o, "controller": true}]));
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "ownerReferences": owners},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn best(
        p: &Arc<Pod>,
        nodes: &[Arc<k8s_openapi::api::core::v1::Node>],
        placed: &[Arc<Pod>],
    ) -> String {
        let snap = Snapshot::build(nodes, placed, &[]);
        let all: Vec<usize> = (0..snap.nodes.len()).collect();
        let s = score(&PodState::new(p, &snap), &all, &snap.nodes);
        let i = (0..s.len()).max_by(|a, b| s[*a].total_cmp(&s[*b])).unwrap();
        snap.nodes[i].name().to_owned()
    }

    const SMALL: &str = "100m";

    fn spec(extra: serde_json::Value) -> serde_json::Value {
        let mut s = json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": SMALL, "memory": "64Mi"}}}]});
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        s
    }

    #[test]
    fn replicas_spread_and_busy_nodes_lose() {
        let nodes = [
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
        ];
        let mut on_a = spec(json!({}));
        on_a["nodeName"] = json!("a");
        let sibling = pod("s", on_a.clone(), Some("rs-1"));
        assert_eq!(
            best(&pod("p", spec(json!({})), Some("rs-1")), &nodes, &[sibling]),
            "b"
        );
        let mut big = spec(json!({}));
        big["nodeName"] = json!("b");
        big["containers"][0]["resources"]["requests"]["cpu"] = json!("3");
        assert_eq!(
            best(
                &pod("p", spec(json!({})), None),
                &nodes,
                &[pod("big", big, None)]
            ),
            "a"
        );
    }

    #[test]
    fn preferences_steer() {
        let nodes = [
            node(
                "a",
                json!({"disk": "hdd"}),
                json!([{"key": "old", "effect": "PreferNoSchedule"}]),
            ),
            node("b", json!({"disk": "ssd"}), json!([])),
        ];
        assert_eq!(
            best(&pod("p", spec(json!({})), None), &nodes, &[]),
            "b",
            "PreferNoSchedule"
        );
        let nodes = [
            node("a", json!({"disk": "ssd"}), json!([])),
            node("b", json!({"disk": "hdd"}), json!([])),
        ];
        let prefer = spec(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}}]}}}),
        );
        assert_eq!(best(&pod("p", prefer, None), &nodes, &[]), "b");
    }
}
