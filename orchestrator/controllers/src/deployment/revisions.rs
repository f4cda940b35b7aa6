//! A Deployment's ReplicaSets: the pod-template-hash that names them, which one carries the
//! current template, revision numbers, and the annotations carried from the Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label that ties a ReplicaSet and its pods to one template.
pub(crate) const HASH_LABEL: &str = "pod-template-hash";
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations that are not copied to its ReplicaSets (upstream's skip list).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Characters of the hash suffix: no vowels (no words), no look-alikes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash of a template and the deployment's collision count: FNV-1a over the
/// template's JSON, written in the safe alphabet.
pub(crate) fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(
        serde_json::to_string(&without_hash(template))
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// A template without the pod-template-hash label (labels dropped entirely when it was the
/// only one), for comparing a ReplicaSet's template with its Deployment's.
pub(crate) fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(meta) = t.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
    t
}

/// Whether `rs` runs the deployment's current template.
pub(crate) fn runs_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> bool {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .is_some_and(|t| without_hash(t) == without_hash(template))
}

pub(crate) fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The `desired-replicas` annotation (what the Deployment wanted when the RS was last sized).
pub(crate) fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DESIRED_REPLICAS).and_then(|v| v.parse().ok())
}

/// The annotations a ReplicaSet of `d` at `revision` should carry: the Deployment's own (minus
/// the skip list) plus revision bookkeeping. A reused ReplicaSet keeps its earlier revisions in
/// `revision-history`, as upstream does on rollback.
pub(crate) fn rs_annotations(
    d: &Deployment,
    rs: Option<&ReplicaSet>,
    revision: i64,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = rs
        .and_then(|r| r.metadata.annotations.clone())
        .unwrap_or_default();
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    let old = out.get(REVISION).and_then(|v| v.parse::<i64>().ok());
    match old {
        Some(old) if old < revision => {
            let mut history: Vec<String> = out
                .get(REVISION_HISTORY)
                .map(|h| h.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            history.push(old.to_string());
            out.insert(REVISION_HISTORY.into(), history.join(","));
            out.insert(REVISION.into(), revision.to_string());
        }
        Some(_) => {}
        None => {
            out.insert(REVISION.into(), revision.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str, hash: Option<&str>) -> PodTemplateSpec {
        let mut labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        if let Some(h) = hash {
            labels.insert(HASH_LABEL.into(), h.into());
        }
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn hash_is_stable_safe_and_ignores_the_hash_label() {
        let a = template_hash(&template("nginx:1", None), None);
        assert_eq!(a, template_hash(&template("nginx:1", Some(&a)), None));
        assert_ne!(a, template_hash(&template("nginx:2", None), None));
        assert_ne!(a, template_hash(&template("nginx:1", None), Some(1)));
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)), "{a}");
        assert!(!a.is_empty() && a.len() <= 10);
    }

    #[test]
    fn finds_the_replicaset_running_the_template() {
        let rs = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                template: Some(template("nginx:1", Some("abc"))),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(runs_template(&rs, &template("nginx:1", None)));
        assert!(!runs_template(&rs, &template("nginx:2", None)));
    }

    #[test]
    fn annotations_carry_change_cause_and_keep_revision_history() {
        let d = Deployment {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([
                    ("kubernetes.io/change-cause".to_owned(), "v2".to_owned()),
                    (
                        "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                        "{}".to_owned(),
                    ),
                    (REVISION.to_owned(), "2".to_owned()),
                ])),
                ..Default::default()
            },
            ..Default::default()
        };
        let fresh = rs_annotations(&d, None, 3);
        assert_eq!(fresh.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(
            fresh.get("kubernetes.io/change-cause").map(String::as_str),
            Some("v2")
        );
        assert!(!fresh.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        let old = ReplicaSet {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(REVISION.to_owned(), "1".to_owned())])),
                ..Default::default()
            },
            ..Default::default()
        };
        let reused = rs_annotations(&d, Some(&old), 4);
        assert_eq!(reused.get(REVISION).map(String::as_str), Some("4"));
        assert_eq!(reused.get(REVISION_HISTORY).map(String::as_str), Some("1"));
    }
}
