//! The matching rules filters and scores share: tolerations against taints, node selector terms
//! against a node, and pod affinity terms against pods in a topology domain.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::snapshot::PlacedPod;

/// Whether `toleration` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The pod's tolerations.
pub fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// The node's taints.
pub fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(limit)) = (
                value.and_then(number),
                values.first().and_then(|s| number(s)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                have > limit
            } else {
                have < limit
            }
        }
        _ => false,
    }
}

/// A node selector term: every expression on labels and every field (`metadata.name`) holds.
/// An empty term matches nothing, as upstream.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name")
                .then_some(node.metadata.name.as_deref())
                .flatten();
            requirement_matches(r, value)
        })
}

/// nodeSelector and required node affinity (upstream's NodeAffinity filter).
pub fn node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(selector) = &spec.node_selector
        && !selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// A label selector parsed once; `None` (no selector) matches nothing, as upstream's affinity
/// terms treat a missing labelSelector.
fn compile(selector: Option<&LabelSelector>) -> Option<skiff_api::selector::label::LabelSelector> {
    let value = serde_json::to_value(selector?).ok()?;
    skiff_api::selector::label::LabelSelector::from_structured(&value).ok()
}

/// Which namespaces a pod affinity term looks in.
#[derive(Debug)]
enum Namespaces {
    All,
    Only(HashSet<String>),
}

/// A pod affinity term of a pod, ready to test many pods against: its namespaces resolved
/// (`namespaces` plus the namespaces `namespaceSelector` selects by their labels; the pod's own
/// namespace when neither is given; every namespace for an empty selector) and its label
/// selector parsed.
#[derive(Debug)]
pub(crate) struct CompiledTerm {
    namespaces: Namespaces,
    selector: Option<skiff_api::selector::label::LabelSelector>,
}

impl CompiledTerm {
    /// `namespace_labels` maps each namespace to its labels.
    pub(crate) fn new(
        term: &PodAffinityTerm,
        owner_namespace: &str,
        namespace_labels: &HashMap<String, BTreeMap<String, String>>,
    ) -> CompiledTerm {
        let listed = term.namespaces.clone().unwrap_or_default();
        let namespaces = match &term.namespace_selector {
            Some(s)
                if s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                    && s.match_expressions.as_ref().is_none_or(Vec::is_empty) =>
            {
                Namespaces::All
            }
            Some(s) => {
                let selector = compile(Some(s));
                let mut set: HashSet<String> = listed.into_iter().collect();
                set.extend(
                    namespace_labels
                        .iter()
                        .filter(|(_, labels)| {
                            selector.as_ref().is_some_and(|sel| sel.matches(labels))
                        })
                        .map(|(name, _)| name.clone()),
                );
                Namespaces::Only(set)
            }
            None if listed.is_empty() => Namespaces::Only([owner_namespace.to_owned()].into()),
            None => Namespaces::Only(listed.into_iter().collect()),
        };
        CompiledTerm {
            namespaces,
            selector: compile(term.label_selector.as_ref()),
        }
    }

    /// Whether the term selects `other`.
    pub(crate) fn selects(&self, other: &PlacedPod) -> bool {
        let in_namespace = match &self.namespaces {
            Namespaces::All => true,
            Namespaces::Only(set) => set.contains(other.namespace()),
        };
        in_namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(other.labels()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        serde_json::from_value(json!({"key": key, "value": value, "effect": effect})).unwrap()
    }

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tolerations_match_like_upstream() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &tol(json!({"key": "dedicated", "value": "gpu"})),
            &t
        ));
        assert!(tolerates(
            &tol(json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"})),
            &t
        ));
        assert!(
            tolerates(&tol(json!({"operator": "Exists"})), &t),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(
            &tol(json!({"key": "dedicated", "value": "cpu"})),
            &t
        ));
        assert!(!tolerates(
            &tol(json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})),
            &t
        ));
        assert!(
            !tolerates(&tol(json!({"value": "gpu"})), &t),
            "Equal needs a key"
        );
    }

    #[test]
    fn node_selector_terms_cover_every_operator() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a", "cores": "8"}}
        }))
        .unwrap();
        let term = |exprs: serde_json::Value| -> NodeSelectorTerm {
            serde_json::from_value(json!({"matchExpressions": exprs})).unwrap()
        };
        assert!(term_matches(
            &term(json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}])),
            &node
        ));
        assert!(!term_matches(
            &term(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}])),
            &node
        ));
        assert!(term_matches(
            &term(json!([{"key": "gpu", "operator": "DoesNotExist"}])),
            &node
        ));
        assert!(term_matches(
            &term(json!([{"key": "zone", "operator": "Exists"}])),
            &node
        ));
        assert!(term_matches(
            &term(json!([{"key": "cores", "operator": "Gt", "values": ["4"]}])),
            &node
        ));
        assert!(!term_matches(
            &term(json!([{"key": "cores", "operator": "Lt", "values": ["4"]}])),
            &node
        ));
        assert!(!term_matches(
            &term(json!([{"key": "zone", "operator": "Gt", "values": ["4"]}])),
            &node
        ));
        let by_name: NodeSelectorTerm = serde_json::from_value(json!({
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]
        }))
        .unwrap();
        assert!(term_matches(&by_name, &node));
        assert!(
            !term_matches(&NodeSelectorTerm::default(), &node),
            "empty terms match nothing"
        );
    }
}
