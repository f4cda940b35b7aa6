//! What the filters and scores need to know about the pod being placed, worked out once per
//! attempt (kube-scheduler's PreFilter/PreScore cycle state), so checking one node costs the
//! same whether the cluster runs a hundred pods or thirty thousand. Pod (anti-)affinity terms are
//! resolved here into the topology domains that hold a matching pod; existing pods'
//! anti-affinity into the domains this pod must avoid.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};

use crate::matching::CompiledTerm;
use crate::resources::{Resources, pod_requests};
use crate::snapshot::{NodeInfo, PlacedPod, Snapshot};

/// A term resolved against the cluster: how many pods it selects in each topology domain.
#[derive(Debug, Default)]
pub(crate) struct TermDomains {
    pub(crate) topology_key: String,
    /// Topology value → number of selected pods on nodes with that value.
    pub(crate) counts: HashMap<String, usize>,
    /// Whether it selects any pod at all (also on nodes without the topology key).
    pub(crate) anywhere: bool,
}

impl TermDomains {
    fn resolve(term: &PodAffinityTerm, compiled: &CompiledTerm, nodes: &[NodeInfo]) -> TermDomains {
        let mut resolved = TermDomains {
            topology_key: term.topology_key.clone(),
            ..TermDomains::default()
        };
        for node in nodes {
            let value = node.labels().get(&term.topology_key);
            for placed in &node.pods {
                if compiled.selects(placed) {
                    resolved.anywhere = true;
                    if let Some(v) = value {
                        *resolved.counts.entry(v.clone()).or_default() += 1;
                    }
                }
            }
        }
        resolved
    }

    /// Selected pods in `node`'s domain (0 when the node lacks the topology key).
    pub(crate) fn count_on(&self, node: &NodeInfo) -> usize {
        node.labels()
            .get(&self.topology_key)
            .and_then(|v| self.counts.get(v))
            .copied()
            .unwrap_or(0)
    }
}

/// A required affinity term, resolved, and whether the pod satisfies it itself (the first pod
/// of a group that selects itself may go anywhere the topology key exists).
#[derive(Debug)]
pub(crate) struct RequiredAffinity {
    pub(crate) domains: TermDomains,
    pub(crate) selects_itself: bool,
}

/// The pod being placed, with everything the per-node checks would otherwise recompute.
#[derive(Debug)]
pub(crate) struct PodState<'a> {
    pub(crate) pod: &'a Pod,
    /// The pod as the snapshot sees placed pods (labels, owner, host ports).
    pub(crate) me: PlacedPod,
    /// Exact requests (the fit filter).
    pub(crate) requests: Resources,
    /// Requests with the non-zero defaults (scoring).
    pub(crate) non_zero_requests: Resources,
    /// (topology key, value) pairs where a placed pod's required anti-affinity selects this pod.
    pub(crate) forbidden: HashSet<(String, String)>,
    pub(crate) required_anti: Vec<TermDomains>,
    pub(crate) required_affinity: Vec<RequiredAffinity>,
    /// Preferred terms with their weight (negative for anti-affinity).
    pub(crate) preferred: Vec<(f64, TermDomains)>,
}

fn required_terms(pod: &Pod, anti: bool) -> &[PodAffinityTerm] {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = if anti {
        affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
    } else {
        affinity
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
    };
    terms.unwrap_or_default()
}

/// Whether a placed pod has required anti-affinity terms (the snapshot indexes these).
pub(crate) fn has_required_anti_affinity(pod: &Pod) -> bool {
    !required_terms(pod, true).is_empty()
}

impl<'a> PodState<'a> {
    /// `pod` is shared, not copied: this runs once per pod per attempt.
    pub(crate) fn new(pod: &'a Arc<Pod>, snapshot: &Snapshot) -> PodState<'a> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let me = PlacedPod::of(pod.clone());
        let nodes = &snapshot.nodes;
        let labels = &snapshot.namespace_labels;
        let compile = |t: &PodAffinityTerm| CompiledTerm::new(t, namespace, labels);

        let mut forbidden = HashSet::new();
        for &(n, p) in &snapshot.with_anti_affinity {
            let (node, other) = (&nodes[n], &nodes[n].pods[p]);
            for term in required_terms(&other.pod, true) {
                if let Some(value) = node.labels().get(&term.topology_key)
                    && CompiledTerm::new(term, other.namespace(), labels).selects(&me)
                {
                    forbidden.insert((term.topology_key.clone(), value.clone()));
                }
            }
        }
        let required_anti = required_terms(pod, true)
            .iter()
            .map(|t| TermDomains::resolve(t, &compile(t), nodes))
            .collect();
        let required_affinity = required_terms(pod, false)
            .iter()
            .map(|t| {
                let compiled = compile(t);
                RequiredAffinity {
                    domains: TermDomains::resolve(t, &compiled, nodes),
                    selects_itself: compiled.selects(&me),
                }
            })
            .collect();

        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let preferred_affinity = affinity
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(|t| (f64::from(t.weight), &t.pod_affinity_term));
        let preferred_anti = affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(|t| (-f64::from(t.weight), &t.pod_affinity_term));
        let preferred = preferred_affinity
            .chain(preferred_anti)
            .map(|(w, t)| (w, TermDomains::resolve(t, &compile(t), nodes)))
            .collect();

        PodState {
            pod,
            requests: pod_requests(pod, false),
            non_zero_requests: pod_requests(pod, true),
            me,
            forbidden,
            required_anti,
            required_affinity,
            preferred,
        }
    }
}
