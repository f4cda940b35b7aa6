//! What a pod asks for and what a node offers, in the units kube-scheduler compares: milli-CPU,
//! bytes of memory, and a pod count.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_api::quantity::Quantity as Parsed;

/// CPU a container without a request counts as when scoring (kube-scheduler's non-zero default).
const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory a container without a request counts as when scoring.
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// An amount of each resource the scheduler accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resources {
    pub(crate) milli_cpu: i64,
    pub(crate) memory: i64,
    pub(crate) pods: i64,
}

impl Resources {
    pub(crate) fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.pods += other.pods;
    }

    fn max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
    }
}

fn parse(q: Option<&Quantity>) -> Option<Parsed> {
    q.and_then(|q| Parsed::parse(&q.0).ok())
}

/// A container's request for `name`: its request, else its limit (as upstream defaults it).
fn amount(c: &Container, name: &str) -> Option<Parsed> {
    let r = c.resources.as_ref()?;
    parse(r.requests.as_ref().and_then(|m| m.get(name)))
        .or_else(|| parse(r.limits.as_ref().and_then(|m| m.get(name))))
}

fn container(c: &Container, non_zero: bool) -> Resources {
    let cpu = amount(c, "cpu").map(|q| q.milli());
    let memory = amount(c, "memory").map(|q| q.value());
    Resources {
        milli_cpu: cpu.unwrap_or(if non_zero { DEFAULT_MILLI_CPU } else { 0 }),
        memory: memory.unwrap_or(if non_zero { DEFAULT_MEMORY } else { 0 }),
        pods: 0,
    }
}

/// A pod's effective request: the larger of its app containers' sum and its largest init
/// container (init containers run one at a time, before the app), plus overhead, plus one pod.
/// With `non_zero`, containers without requests count as 100m CPU and 200 MiB (for scoring).
pub(crate) fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Resources::default()
        };
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container(c, non_zero));
    }
    // Restartable (sidecar) init containers keep running next to the app, so they add up.
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container(c, false);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            let mut during = sidecars;
            during.add(&r);
            init_peak.max(&during);
        }
    }
    sum.max(&init_peak);
    if let Some(overhead) = spec.overhead.as_ref() {
        sum.add(&from_map(overhead));
    }
    sum.pods = 1;
    sum
}

/// A node's allocatable resources (`status.allocatable`, else `status.capacity`).
pub(crate) fn from_map(map: &BTreeMap<String, Quantity>) -> Resources {
    Resources {
        milli_cpu: parse(map.get("cpu")).map_or(0, |q| q.milli()),
        memory: parse(map.get("memory")).map_or(0, |q| q.value()),
        pods: parse(map.get("pods")).map_or(0, |q| q.value()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn init_containers_count_as_their_peak() {
        let p = pod(json!({
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
                {"name": "i2", "resources": {"requests": {"cpu": "500m"}}},
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "2Gi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "250m"}}},
            ],
        }));
        let r = pod_requests(&p, false);
        assert_eq!(r.milli_cpu, 2000, "the 2-CPU init container dominates");
        assert_eq!(r.memory, 2 << 30, "the app's memory dominates");
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn sidecars_add_to_the_app_and_empty_requests_score_as_defaults() {
        let p = pod(json!({
            "initContainers": [{"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "200m"}}}],
        }));
        assert_eq!(pod_requests(&p, false).milli_cpu, 300);
        let empty = pod(json!({"containers": [{"name": "a"}], "overhead": {"cpu": "10m"}}));
        assert_eq!(pod_requests(&empty, false).milli_cpu, 10);
        assert_eq!(pod_requests(&empty, true).milli_cpu, 110);
        assert_eq!(pod_requests(&empty, true).memory, DEFAULT_MEMORY);
    }
}
