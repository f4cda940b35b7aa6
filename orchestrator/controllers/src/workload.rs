//! What the workload controllers (ReplicaSet, DaemonSet, StatefulSet, Job) share: pods from a
//! template with a controller owner reference, pod states as upstream's controller utilities
//! define them, label selectors, adoption and release, and expectations.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use skiff_api::selector::label::LabelSelector as Selector;

use crate::runner::ReconcileError;

/// A typed selector compiled once; a missing or invalid selector matches nothing.
pub(crate) fn compile(selector: Option<&LabelSelector>) -> Selector {
    selector
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| Selector::from_structured(&v).ok())
        .unwrap_or_else(|| {
            Selector::from_structured(&serde_json::Value::Null).expect("null selects nothing")
        })
}

/// Whether `labels` satisfy `selector` (an empty selector matches everything, as upstream).
pub(crate) fn selects(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    match labels {
        Some(labels) => selector.matches(labels),
        None => selector.matches(&BTreeMap::new()),
    }
}

/// A controller owner reference to `owner`.
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// An event's reference to `obj`.
pub(crate) fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

/// The controller owner reference of an object, if any.
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A pod for `owner` from `template` (labels, annotations, finalizers and spec copied).
pub(crate) fn pod_from_template<K: Resource<DynamicType = ()>>(
    owner: &K,
    template: &PodTemplateSpec,
    generate_name: Option<String>,
    name: Option<String>,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: owner.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Not finished and not being deleted (upstream's `IsPodActive`).
pub(crate) fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Finished (Succeeded or Failed).
pub(crate) fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The pod's Ready condition is True.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready` (upstream's `IsPodAvailable`); otherwise how long until it
/// would be, if it is ready at all.
pub(crate) fn availability(pod: &Pod, min_ready: i32, now: jiff::Timestamp) -> Availability {
    let Some(cond) = ready_condition(pod).filter(|c| c.status == "True") else {
        return Availability::No;
    };
    if min_ready <= 0 {
        return Availability::Yes;
    }
    let since = cond
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let ready_for = now.duration_since(since).as_secs_f64();
    if ready_for >= f64::from(min_ready) {
        Availability::Yes
    } else {
        Availability::After(Duration::from_secs_f64(
            (f64::from(min_ready) - ready_for).max(0.0) + 0.05,
        ))
    }
}

/// Whether a pod counts as available.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Availability {
    Yes,
    No,
    /// Ready, and available after this much longer.
    After(Duration),
}

/// Upstream's `ActivePods` order for choosing which pods to delete first: unassigned before
/// assigned, Pending before Unknown before Running, not ready before ready, more restarts
/// first, newer before older.
pub(crate) fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

/// Claim objects (pods, ReplicaSets) for `owner`: its own whose labels still match, plus
/// matching orphans it adopts; its own that no longer match are released (upstream's
/// ControllerRefManager). Returns what it controls.
pub(crate) async fn claim<O, K>(
    api: &Api<K>,
    owner: &O,
    selector: &Selector,
    owned: Vec<Arc<K>>,
    orphans: Vec<Arc<K>>,
) -> Result<Vec<Arc<K>>, ReconcileError>
where
    O: Resource<DynamicType = ()>,
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let owner_uid = owner.uid().unwrap_or_default();
    let mut claimed = Vec::new();
    for obj in owned {
        if selects(selector, obj.meta().labels.as_ref()) {
            claimed.push(obj);
        } else if obj.meta().deletion_timestamp.is_none() {
            let refs: Vec<&OwnerReference> = obj
                .meta()
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.uid != owner_uid)
                .collect();
            set_owners(api, obj.as_ref(), json!(refs)).await?;
        }
    }
    if owner.meta().deletion_timestamp.is_none() {
        for obj in orphans {
            if obj.meta().deletion_timestamp.is_some()
                || !selects(selector, obj.meta().labels.as_ref())
            {
                continue;
            }
            let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
            refs.push(controller_ref(owner));
            if let Some(adopted) = set_owners(api, obj.as_ref(), json!(refs)).await? {
                claimed.push(Arc::new(adopted));
            }
        }
    }
    Ok(claimed)
}

/// Replace an object's owner references, guarded by its uid and resourceVersion; `None` when
/// it changed or went away meanwhile (the next reconciliation sees the new state).
async fn set_owners<K>(api: &Api<K>, obj: &K, refs: Value) -> Result<Option<K>, ReconcileError>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    // An empty list is dropped, as upstream's omitempty does.
    let refs = if refs.as_array().is_some_and(Vec::is_empty) {
        Value::Null
    } else {
        refs
    };
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "uid": obj.meta().uid,
        "resourceVersion": obj.meta().resource_version,
    }});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Merge-patch `status` onto `obj`'s status subresource. `Ok(false)` when the object is gone
/// (nothing left to report on).
pub(crate) async fn write_status<K>(
    client: &kube::Client,
    obj: &K,
    status: &Value,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    match api
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Create a pod.
pub(crate) async fn create_pod(api: &Api<Pod>, pod: &Pod) -> Result<Pod, kube::Error> {
    api.create(&PostParams::default(), pod).await
}

/// Delete a pod; one already gone counts as deleted.
pub(crate) async fn delete_pod(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// How long an unmet expectation is trusted before the controller acts anyway (upstream: 5 min).
const EXPECTATION_TTL: Duration = Duration::from_secs(300);

/// Creations and deletions a controller made but its cache has not shown yet (upstream's
/// ControllerExpectations). Until they are seen, the controller must not count pods again, or
/// it would create a second batch for the same shortfall.
#[derive(Default)]
pub(crate) struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
}

impl Expectations {
    /// Remember the pods just created (by name) and deleted (by name).
    pub(crate) fn expect(&self, key: &str, creates: Vec<String>, deletes: Vec<String>) {
        if creates.is_empty() && deletes.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().expect("expectations lock");
        let entry = pending.entry(key.to_owned()).or_insert_with(|| Pending {
            creates: HashSet::new(),
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        entry.creates.extend(creates);
        entry.deletes.extend(deletes);
        entry.since = Instant::now();
    }

    /// Whether the cache reflects everything expected for `key`: `exists(name)` says whether
    /// the cache holds a pod (being deleted counts as deleted).
    pub(crate) fn satisfied(&self, key: &str, exists: impl Fn(&str) -> Option<bool>) -> bool {
        let mut pending = self.pending.lock().expect("expectations lock");
        let Some(entry) = pending.get_mut(key) else {
            return true;
        };
        entry.creates.retain(|name| exists(name).is_none());
        entry.deletes.retain(|name| exists(name) == Some(true));
        if (entry.creates.is_empty() && entry.deletes.is_empty())
            || entry.since.elapsed() > EXPECTATION_TTL
        {
            pending.remove(key);
            return true;
        }
        false
    }

    pub(crate) fn forget(&self, key: &str) {
        self.pending.lock().expect("expectations lock").remove(key);
    }
}

/// Upstream's slow start: create in batches of 1, 2, 4, … so a broken template fails once,
/// not `replicas` times. Returns how many were created and the first error.
pub(crate) async fn slow_start<F, Fut>(
    count: usize,
    create: F,
) -> (Vec<String>, Option<kube::Error>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Pod, kube::Error>>,
{
    let mut created = Vec::new();
    let mut batch = 1usize;
    let mut remaining = count;
    while remaining > 0 {
        let n = batch.min(remaining);
        let results = futures::future::join_all((0..n).map(|_| create())).await;
        let mut error = None;
        for r in results {
            match r {
                Ok(pod) => created.push(pod.name_any()),
                Err(e) => error = error.or(Some(e)),
            }
        }
        if error.is_some() {
            return (created, error);
        }
        remaining -= n;
        batch *= 2;
    }
    (created, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, age_secs: i64) -> Pod {
        let now = jiff::Timestamp::now();
        let created = now - jiff::SignedDuration::from_secs(age_secs);
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(created)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(created)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn deletes_unscheduled_then_not_ready_then_newest_first() {
        let mut pods = [
            pod("old-ready", Some("n1"), "Running", true, 100),
            pod("new-ready", Some("n1"), "Running", true, 10),
            pod("not-ready", Some("n1"), "Running", false, 50),
            pod("pending", None, "Pending", false, 200),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["pending", "not-ready", "new-ready", "old-ready"]);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod("p", Some("n"), "Running", true, 5);
        let now = jiff::Timestamp::now();
        assert_eq!(availability(&p, 0, now), Availability::Yes);
        assert_eq!(availability(&p, 3, now), Availability::Yes);
        assert!(matches!(availability(&p, 10, now), Availability::After(d) if d.as_secs() <= 5));
        let q = pod("q", Some("n"), "Running", false, 5);
        assert_eq!(availability(&q, 0, now), Availability::No);
    }

    #[test]
    fn expectations_hold_until_the_cache_catches_up() {
        let e = Expectations::default();
        e.expect("ns/rs", vec!["a".into(), "b".into()], vec!["c".into()]);
        // a seen, b not yet, c still there.
        assert!(!e.satisfied("ns/rs", |n| match n {
            "a" => Some(false),
            "c" => Some(true),
            _ => None,
        }));
        // b seen, c gone: done.
        assert!(e.satisfied("ns/rs", |n| (n == "b").then_some(false)));
        assert!(e.satisfied("other", |_| None));
    }

    #[test]
    fn missing_selector_matches_nothing_and_empty_matches_everything() {
        let none = compile(None);
        assert!(!selects(&none, None));
        let empty = compile(Some(&LabelSelector::default()));
        assert!(selects(&empty, None));
        let app = compile(Some(&LabelSelector {
            match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
            ..Default::default()
        }));
        assert!(selects(
            &app,
            Some(&[("app".to_owned(), "web".to_owned())].into())
        ));
        assert!(!selects(&app, None));
    }
}
