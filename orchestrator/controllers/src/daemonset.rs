//! The DaemonSet controller: one pod on every eligible node (nodeSelector, required node
//! affinity, taints against the pod's tolerations plus the ones every DaemonSet pod gets), pods
//! created as nodes join and removed where they no longer belong; RollingUpdate within
//! maxUnavailable, or OnDelete; template history in ControllerRevisions; the status `kubectl
//! rollout status ds` and `kubectl get ds` read.
//!
//! Pods are pinned to their node with required node affinity on `metadata.name` and bound by
//! the scheduler, as upstream does since 1.12.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use skiff_events::EventRecorder;
use skiff_scheduler::matching;
use tokio_util::sync::CancellationToken;

use crate::history::{self, HASH_LABEL};
use crate::informers::{Cache, controller_of};
use crate::metrics::ControllerMetrics;
use crate::replicaset::api_message;
use crate::runner::{self, ReconcileError};
use crate::workload::{self, Availability, Expectations};
use crate::workqueue::WorkQueue;

const NAME: &str = "daemonset";

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) daemonsets: Cache<DaemonSet>,
    pub(crate) pods: Cache<Pod>,
    pub(crate) nodes: Cache<Node>,
    pub(crate) revisions: Cache<ControllerRevision>,
    pub(crate) events: EventRecorder,
    pub(crate) expectations: Expectations,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    daemonsets: impl Stream<Item = Arc<DaemonSet>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    nodes: impl Stream<Item = Arc<Node>> + Send + 'static,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let owners = pods.filter_map(|p| futures::future::ready(controller_of::<Pod, DaemonSet>(&p)));
    // A node joining, leaving or changing labels/taints concerns every DaemonSet.
    let cache = ctx.daemonsets.clone();
    let all = nodes.flat_map(move |_| {
        futures::stream::iter(
            cache
                .all()
                .iter()
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>(),
        )
    });
    let queue = WorkQueue::new(NAME, metrics);
    let controller = Controller::for_stream(queue.objects(daemonsets), ctx.daemonsets.store())
        .reconcile_on(queue.refs(owners))
        .reconcile_on(queue.refs(all));
    runner::run_controller(
        queue,
        controller,
        move |ds| reconcile(ds, ctx.clone()),
        shutdown,
    )
    .await;
}

/// The tolerations every DaemonSet pod gets, so it keeps running where ordinary pods would be
/// evicted or refused (upstream's `AddOrUpdateDaemonPodTolerations`).
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// The pod the DaemonSet runs on `node`: the template with the daemon tolerations added and
/// required affinity to that node alone.
fn pod_for(ds: &DaemonSet, template: &PodTemplateSpec, node: &str, hash: &str) -> Pod {
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert(
        "pod-template-generation".into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let spec = template.spec.get_or_insert_with(Default::default);
    add_tolerations(spec);
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    workload::pod_from_template(ds, &template, Some(format!("{}-", ds.name_any())), None)
}

fn add_tolerations(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    let host_network = spec.host_network.unwrap_or(false);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations(host_network) {
        if !tolerations
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
}

/// (should run a new pod here, may keep an existing one): the node matches the selector and
/// affinity, and its NoSchedule (for new pods) and NoExecute taints are tolerated.
fn eligibility(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let mut probe = Pod {
        spec: template.spec.clone(),
        ..Pod::default()
    };
    if let Some(spec) = probe.spec.as_mut() {
        add_tolerations(spec);
    }
    if !matching::node_affinity_matches(&probe, node) {
        return (false, false);
    }
    let tolerations = matching::tolerations(&probe);
    let tolerated = |effect: &str| {
        matching::taints(node)
            .iter()
            .filter(|t| t.effect == effect)
            .all(|taint| tolerations.iter().any(|t| matching::tolerates(t, taint)))
    };
    let keep = tolerated("NoExecute");
    (keep && tolerated("NoSchedule"), keep)
}

/// The node a DaemonSet pod is for: where it is bound, or where its affinity pins it.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.pods.ready().await;
    ctx.nodes.ready().await;
    ctx.revisions.ready().await;
    let ns = ds.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", ds.name_any());
    if !ctx.expectations.satisfied(&key, |name| {
        ctx.pods
            .get(Some(&ns), name)
            .map(|p| p.metadata.deletion_timestamp.is_none())
    }) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = ds.uid().unwrap_or_default();
    let selector = workload::compile(Some(&spec.selector));
    let pods = workload::claim(
        &pods_api,
        ds.as_ref(),
        &selector,
        ctx.pods.owned_by(&uid),
        ctx.pods.orphans_in(&ns),
    )
    .await?;
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let revisions = ctx.revisions.owned_by(&uid);
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let (hash, _) = history::current(
        &rev_api,
        ds.as_ref(),
        &spec.template,
        collisions,
        &revisions,
    )
    .await?;

    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in &pods {
        if let Some(n) = node_of(p) {
            by_node.entry(n).or_default().push(p.clone());
        }
    }
    let nodes = ctx.nodes.all();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();
    let mut create: Vec<String> = Vec::new();
    let mut delete: Vec<String> = Vec::new();
    let mut desired_nodes = 0i32;
    let mut unavailable_nodes = 0i32;
    // Old-template pods on nodes that keep a pod: (available, name).
    let mut old: Vec<(bool, String)> = Vec::new();
    let mut recheck: Option<Duration> = None;
    for node in &nodes {
        let name = node.name_any();
        let (should_run, may_keep) = eligibility(&spec.template, node);
        let on_node = by_node.remove(&name).unwrap_or_default();
        // Failed pods are replaced; pods being deleted are waited for.
        for p in on_node.iter().filter(|p| workload::is_terminal(p)) {
            delete.push(p.name_any());
        }
        let mut live: Vec<&Arc<Pod>> = on_node.iter().filter(|p| workload::is_active(p)).collect();
        if should_run {
            desired_nodes += 1;
        }
        if !may_keep && !(should_run) {
            delete.extend(live.iter().map(|p| p.name_any()));
            continue;
        }
        if live.is_empty() {
            if should_run
                && on_node
                    .iter()
                    .all(|p| p.metadata.deletion_timestamp.is_none() || workload::is_terminal(p))
            {
                create.push(name);
            }
            if should_run {
                unavailable_nodes += 1;
            }
            continue;
        }
        // One pod per node: keep the oldest.
        live.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        for extra in live.iter().skip(1) {
            delete.push(extra.name_any());
        }
        let pod = live[0];
        let available = match workload::availability(pod, min_ready, now) {
            Availability::Yes => true,
            Availability::After(d) => {
                recheck = Some(recheck.map_or(d, |r| r.min(d)));
                false
            }
            Availability::No => false,
        };
        if !available {
            unavailable_nodes += 1;
        }
        if hash_of(pod) != Some(hash.as_str()) {
            old.push((available, pod.name_any()));
        }
    }
    // Pods on nodes that no longer exist.
    for pods in by_node.into_values() {
        delete.extend(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.name_any()),
        );
    }
    // RollingUpdate: replace old pods, unavailable ones first, keeping at most maxUnavailable
    // nodes without an available pod.
    let strategy = spec.update_strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete") {
        let max_unavailable = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref())
            .map(|v| match v {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => json!(i),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => json!(s),
            })
            .unwrap_or(json!(1));
        let max_unavailable =
            skiff_api::intstr::scaled_value(&max_unavailable, i64::from(desired_nodes), true)
                .unwrap_or(1)
                .max(1) as i32;
        old.sort();
        let mut budget = max_unavailable - unavailable_nodes;
        for (available, name) in old {
            if !available {
                delete.push(name);
            } else if budget > 0 {
                delete.push(name);
                budget -= 1;
            }
        }
    }
    delete.sort();
    delete.dedup();

    let ds_ref = workload::object_ref(ds.as_ref());
    let mut failure = None;
    let results = futures::future::join_all(create.iter().map(|node| {
        let pod = pod_for(&ds, &spec.template, node, &hash);
        let api = pods_api.clone();
        async move { workload::create_pod(&api, &pod).await }
    }))
    .await;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(p) => {
                ctx.events.object(
                    ds_ref.clone(),
                    "Normal",
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                );
                created.push(p.name_any());
            }
            Err(e) => {
                let message = format!("Error creating: {}", api_message(&e));
                ctx.events
                    .object(ds_ref.clone(), "Warning", "FailedCreate", message.clone());
                failure = Some(message);
            }
        }
    }
    ctx.expectations.expect(&key, created, delete.clone());
    for name in &delete {
        match workload::delete_pod(&pods_api, name).await {
            Ok(()) => ctx.events.object(
                ds_ref.clone(),
                "Normal",
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(e) => {
                ctx.expectations.forget(&key);
                failure = Some(format!("Error deleting: {}", api_message(&e)));
            }
        }
    }

    let in_use: HashSet<String> = pods
        .iter()
        .filter_map(|p| hash_of(p).map(str::to_owned))
        .collect();
    history::trim(
        &rev_api,
        &revisions,
        &hash,
        &in_use,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let status = status_of(&ds, &pods, &nodes, &hash, now);
    if ds
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        != Some(status.clone())
        && !workload::write_status(&ctx.client, ds.as_ref(), &status).await?
    {
        return Ok(Action::await_change());
    }
    if let Some(e) = failure {
        return Err(ReconcileError::Other(e));
    }
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

/// The status counters, computed as upstream's `updateDaemonSetStatus` does.
fn status_of(
    ds: &DaemonSet,
    pods: &[Arc<Pod>],
    nodes: &[Arc<Node>],
    hash: &str,
    now: jiff::Timestamp,
) -> serde_json::Value {
    let spec = ds.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template = spec.map(|s| s.template.clone()).unwrap_or_default();
    let mut desired = 0;
    let mut current = 0;
    let mut misscheduled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut updated = 0;
    for node in nodes {
        let name = node.name_any();
        let (should_run, _) = eligibility(&template, node);
        let on_node: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| workload::is_active(p) && node_of(p).as_deref() == Some(name.as_str()))
            .collect();
        if should_run {
            desired += 1;
            if let Some(p) = on_node.first() {
                current += 1;
                if workload::is_ready(p) {
                    ready += 1;
                }
                if workload::availability(p, min_ready, now) == Availability::Yes {
                    available += 1;
                }
                if hash_of(p) == Some(hash) {
                    updated += 1;
                }
            }
        } else if !on_node.is_empty() {
            misscheduled += 1;
        }
    }
    let mut status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": available,
        "updatedNumberScheduled": updated,
        "observedGeneration": ds.metadata.generation.unwrap_or(0),
    });
    if desired - available > 0 {
        status["numberUnavailable"] = json!(desired - available);
    }
    if let Some(c) = ds.status.as_ref().and_then(|s| s.collision_count) {
        status["collisionCount"] = json!(c);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: (*k).into(),
                            effect: (*e).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn template(selector: &[(&str, &str)]) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                node_selector: (!selector.is_empty()).then(|| {
                    selector
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn daemon_pods_run_on_cordoned_and_not_ready_nodes_but_respect_other_taints() {
        let t = template(&[]);
        assert_eq!(eligibility(&t, &node("a", &[], &[])), (true, true));
        assert_eq!(
            eligibility(
                &t,
                &node(
                    "a",
                    &[],
                    &[("node.kubernetes.io/unschedulable", "NoSchedule")]
                )
            ),
            (true, true)
        );
        assert_eq!(
            eligibility(
                &t,
                &node("a", &[], &[("node.kubernetes.io/unreachable", "NoExecute")])
            ),
            (true, true)
        );
        assert_eq!(
            eligibility(&t, &node("a", &[], &[("dedicated", "NoSchedule")])),
            (false, true)
        );
        assert_eq!(
            eligibility(&t, &node("a", &[], &[("dedicated", "NoExecute")])),
            (false, false)
        );
        let gpu = template(&[("gpu", "yes")]);
        assert_eq!(eligibility(&gpu, &node("a", &[], &[])), (false, false));
        assert_eq!(
            eligibility(&gpu, &node("a", &[("gpu", "yes")], &[])),
            (true, true)
        );
    }

    #[test]
    fn pods_are_pinned_to_their_node() {
        let ds = DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u1".into()),
                generation: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        let pod = pod_for(&ds, &template(&[]), "n7", "h1");
        assert_eq!(node_of(&pod).as_deref(), Some("n7"));
        assert_eq!(hash_of(&pod), Some("h1"));
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()["pod-template-generation"],
            "3"
        );
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
        let tolerations = pod.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable"))
        );
    }
}
