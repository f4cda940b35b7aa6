//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector, adopting
//! matching orphans and releasing pods that stopped matching, and reports status (replicas,
//! fullyLabeledReplicas, readyReplicas, availableReplicas after minReadySeconds,
//! observedGeneration, the ReplicaFailure condition).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use skiff_events::EventRecorder;
use tokio_util::sync::CancellationToken;

use crate::informers::{Cache, controller_of};
use crate::metrics::ControllerMetrics;
use crate::runner::{self, ReconcileError};
use crate::workload::{self, Availability, Expectations};
use crate::workqueue::WorkQueue;

const NAME: &str = "replicaset";
/// Most pods created or deleted in one reconciliation (upstream's burstReplicas).
const BURST: usize = 500;

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) pods: Cache<Pod>,
    pub(crate) replicasets: Cache<ReplicaSet>,
    pub(crate) events: EventRecorder,
    pub(crate) expectations: Expectations,
}

/// Run until `shutdown`; `replicasets` and `pods` are informer subscriptions.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    replicasets: impl Stream<Item = Arc<ReplicaSet>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let rs_cache = ctx.replicasets.clone();
    let owners = pods.flat_map(move |pod| futures::stream::iter(owners_of(&pod, &rs_cache)));
    let queue = WorkQueue::new(NAME, metrics);
    let controller = Controller::for_stream(queue.objects(replicasets), ctx.replicasets.store())
        .reconcile_on(queue.refs(owners));
    runner::run_controller(
        queue,
        controller,
        move |rs| reconcile(rs, ctx.clone()),
        shutdown,
    )
    .await;
}

/// The ReplicaSets a pod change concerns: its controller, or for an orphan every ReplicaSet in
/// its namespace whose selector matches it (a candidate adopter).
fn owners_of(pod: &Pod, replicasets: &Cache<ReplicaSet>) -> Vec<ObjectRef<ReplicaSet>> {
    if let Some(owner) = controller_of::<Pod, ReplicaSet>(pod) {
        return vec![owner];
    }
    if workload::controller_of(&pod.metadata).is_some() {
        return Vec::new();
    }
    let ns = pod.namespace().unwrap_or_default();
    replicasets
        .all()
        .into_iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .filter(|rs| {
            let selector = workload::compile(rs.spec.as_ref().map(|s| &s.selector));
            workload::selects(&selector, pod.metadata.labels.as_ref())
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.pods.ready().await;
    let ns = rs.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", rs.name_any());
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if !ctx.expectations.satisfied(&key, |name| {
        ctx.pods
            .get(Some(&ns), name)
            .map(|p| p.metadata.deletion_timestamp.is_none())
    }) {
        // The cache has not caught up with our last writes; their events will wake us.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let selector = workload::compile(Some(&spec.selector));
    let uid = rs.uid().unwrap_or_default();
    let claimed = workload::claim(
        &pods_api,
        rs.as_ref(),
        &selector,
        ctx.pods.owned_by(&uid),
        ctx.pods.orphans_in(&ns),
    )
    .await?;
    let active: Vec<Arc<Pod>> = claimed
        .into_iter()
        .filter(|p| workload::is_active(p))
        .collect();

    let mut failure = None;
    if rs.metadata.deletion_timestamp.is_none() {
        failure = manage(&ctx, &rs, &key, &pods_api, &active).await;
    }
    let (status, recheck) = status_of(&rs, &active, failure.as_ref());
    if rs.metadata.deletion_timestamp.is_none()
        && status_changed(&rs, &status)
        && !workload::write_status(&ctx.client, rs.as_ref(), &status).await?
    {
        return Ok(Action::await_change());
    }
    if let Some(e) = failure {
        return Err(ReconcileError::Other(e));
    }
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

/// Create or delete pods to reach `spec.replicas`; returns the creation failure, if any.
async fn manage(
    ctx: &Ctx,
    rs: &ReplicaSet,
    key: &str,
    pods_api: &Api<Pod>,
    active: &[Arc<Pod>],
) -> Option<String> {
    let desired = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let template = rs.spec.as_ref()?.template.as_ref()?;
    let rs_ref = workload::object_ref(rs);
    if active.len() < desired {
        let want = (desired - active.len()).min(BURST);
        let pod =
            workload::pod_from_template(rs, template, Some(format!("{}-", rs.name_any())), None);
        let (created, error) =
            workload::slow_start(want, || workload::create_pod(pods_api, &pod)).await;
        for name in &created {
            ctx.events.object(
                rs_ref.clone(),
                "Normal",
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
        }
        ctx.expectations.expect(key, created, Vec::new());
        if let Some(e) = error {
            let message = format!("Error creating: {}", api_message(&e));
            ctx.events
                .object(rs_ref, "Warning", "FailedCreate", message.clone());
            return Some(message);
        }
    } else if active.len() > desired {
        let mut victims: Vec<&Arc<Pod>> = active.iter().collect();
        victims.sort_by(|a, b| workload::deletion_order(a, b));
        victims.truncate((active.len() - desired).min(BURST));
        let names: Vec<String> = victims.iter().map(|p| p.name_any()).collect();
        ctx.expectations.expect(key, Vec::new(), names.clone());
        let results =
            futures::future::join_all(names.iter().map(|n| workload::delete_pod(pods_api, n)))
                .await;
        for (name, result) in names.iter().zip(results) {
            match result {
                Ok(()) => ctx.events.object(
                    rs_ref.clone(),
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ),
                Err(e) => {
                    ctx.expectations.forget(key);
                    ctx.events.object(
                        rs_ref.clone(),
                        "Warning",
                        "FailedDelete",
                        format!("Error deleting: {}", api_message(&e)),
                    );
                }
            }
        }
    }
    None
}

/// The message of an API error (what upstream puts in FailedCreate events).
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// The status these pods give, and when to look again for pods about to become available.
fn status_of(
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
    failure: Option<&String>,
) -> (Value, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let now = jiff::Timestamp::now();
    let mut ready = 0;
    let mut available = 0;
    let mut fully_labeled = 0;
    let mut recheck: Option<Duration> = None;
    for pod in active {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            fully_labeled += 1;
        }
        if workload::is_ready(pod) {
            ready += 1;
        }
        match workload::availability(pod, min_ready, now) {
            Availability::Yes => available += 1,
            Availability::After(d) => recheck = Some(recheck.map_or(d, |r| r.min(d))),
            Availability::No => {}
        }
    }
    let mut conditions: Vec<Value> = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter(|c| c.type_ != "ReplicaFailure")
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    if let Some(message) = failure {
        let existing = rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "ReplicaFailure"));
        let since = existing
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| skiff_api::time::format_rfc3339(t.0))
            .unwrap_or_else(skiff_api::time::now_rfc3339);
        conditions.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": message,
            "lastTransitionTime": since,
        }));
    }
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
        "conditions": if conditions.is_empty() { Value::Null } else { json!(conditions) },
    });
    (status, recheck)
}

fn status_changed(rs: &ReplicaSet, new: &Value) -> bool {
    let current = rs
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(json!({}));
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .any(|k| num(&current, k) != num(new, k))
        || current.get("conditions").unwrap_or(&Value::Null)
            != new.get("conditions").unwrap_or(&Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

    fn rs(min_ready: i32) -> ReplicaSet {
        let labels: std::collections::BTreeMap<String, String> =
            [("app".to_owned(), "web".to_owned())].into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                min_ready_seconds: Some(min_ready),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            [
                                ("app".to_owned(), "web".to_owned()),
                                ("tier".to_owned(), "fe".to_owned()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    }),
                    spec: None,
                }),
            }),
            status: None,
        }
    }

    fn pod(labels: &[(&str, &str)], ready_for_secs: Option<i64>) -> Arc<Pod> {
        let now = jiff::Timestamp::now();
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: ready_for_secs.map(|s| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(now - jiff::SignedDuration::from_secs(s))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let pods = vec![
            pod(&[("app", "web"), ("tier", "fe")], Some(100)),
            pod(&[("app", "web")], Some(2)),
            pod(&[("app", "web"), ("tier", "fe")], None),
        ];
        let (status, recheck) = status_of(&rs(10), &pods, None);
        assert_eq!(status["replicas"], 3);
        assert_eq!(status["fullyLabeledReplicas"], 2);
        assert_eq!(status["readyReplicas"], 2);
        assert_eq!(status["availableReplicas"], 1);
        assert_eq!(status["observedGeneration"], 2);
        assert!(status["conditions"].is_null());
        let wait = recheck.expect("one pod becomes available soon");
        assert!(wait <= Duration::from_secs(9) && wait >= Duration::from_secs(7));
    }

    #[test]
    fn creation_failure_sets_replica_failure_and_success_clears_it() {
        let message = "Error creating: pods \"web-\" is forbidden".to_owned();
        let (status, _) = status_of(&rs(0), &[], Some(&message));
        assert_eq!(status["conditions"][0]["type"], "ReplicaFailure");
        assert_eq!(status["conditions"][0]["reason"], "FailedCreate");
        let mut failed = rs(0);
        failed.status = Some(serde_json::from_value::<ReplicaSetStatus>(status).unwrap());
        let (status, _) = status_of(&failed, &[], None);
        assert!(status["conditions"].is_null());
        assert!(status_changed(&failed, &status));
    }
}
