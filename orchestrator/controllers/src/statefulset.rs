//! The StatefulSet controller: pods with stable names `<sts>-<ordinal>` and stable DNS identity
//! (`hostname` = pod name, `subdomain` = serviceName); OrderedReady (create in order, each
//! Running and Ready before the next; remove from the highest ordinal) or Parallel; failed pods
//! recreated under the same name; RollingUpdate from the highest ordinal down to `partition`,
//! one pod at a time, or OnDelete; revisions in ControllerRevisions; the status `kubectl
//! rollout status sts` reads. volumeClaimTemplates are stored but not provisioned yet.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, ResourceExt};
use serde_json::json;
use skiff_events::EventRecorder;
use tokio_util::sync::CancellationToken;

use crate::history::{self, HASH_LABEL};
use crate::informers::{Cache, controller_of};
use crate::metrics::ControllerMetrics;
use crate::replicaset::api_message;
use crate::runner::{self, ReconcileError};
use crate::workload::{self, Availability, Expectations};
use crate::workqueue::WorkQueue;

const NAME: &str = "statefulset";

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) statefulsets: Cache<StatefulSet>,
    pub(crate) pods: Cache<Pod>,
    pub(crate) revisions: Cache<ControllerRevision>,
    pub(crate) events: EventRecorder,
    pub(crate) expectations: Expectations,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    statefulsets: impl Stream<Item = Arc<StatefulSet>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let owners = pods.filter_map(|p| futures::future::ready(controller_of::<Pod, StatefulSet>(&p)));
    let queue = WorkQueue::new(NAME, metrics);
    let controller = Controller::for_stream(queue.objects(statefulsets), ctx.statefulsets.store())
        .reconcile_on(queue.refs(owners));
    runner::run_controller(
        queue,
        controller,
        move |sts| reconcile(sts, ctx.clone()),
        shutdown,
    )
    .await;
}

/// The ordinal in a pod name `<sts>-<n>`.
pub(crate) fn ordinal(sts: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(sts)?.strip_prefix('-')?.parse().ok()
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// The pod for `ordinal` from `template` at revision `hash`.
fn pod_for(sts: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, hash: &str) -> Pod {
    let name = format!("{}-{ordinal}", sts.name_any());
    let mut template = template.clone();
    let labels = template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
    labels.insert("apps.kubernetes.io/pod-index".into(), ordinal.to_string());
    if let Some(spec) = template.spec.as_mut() {
        spec.hostname = Some(name.clone());
        spec.subdomain = sts.spec.as_ref().and_then(|s| s.service_name.clone());
    }
    workload::pod_from_template(sts, &template, None, Some(name))
}

fn healthy(pod: &Pod, min_ready: i32, now: jiff::Timestamp) -> bool {
    workload::is_active(pod)
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && workload::availability(pod, min_ready, now) == Availability::Yes
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.pods.ready().await;
    ctx.revisions.ready().await;
    let ns = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let key = format!("{ns}/{name}");
    if !ctx.expectations.satisfied(&key, |n| {
        ctx.pods
            .get(Some(&ns), n)
            .map(|p| p.metadata.deletion_timestamp.is_none())
    }) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some(spec) = sts.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = sts.uid().unwrap_or_default();
    let selector = workload::compile(Some(&spec.selector));
    let pods = workload::claim(
        &pods_api,
        sts.as_ref(),
        &selector,
        ctx.pods.owned_by(&uid),
        ctx.pods.orphans_in(&ns),
    )
    .await?;
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let revisions = ctx.revisions.owned_by(&uid);
    let collisions = sts.status.as_ref().and_then(|s| s.collision_count);
    let (update_hash, _) = history::current(
        &rev_api,
        sts.as_ref(),
        &spec.template,
        collisions,
        &revisions,
    )
    .await?;
    // The revision pods below the partition keep: the recorded current one, if it still exists.
    let current_hash = sts
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref())
        .and_then(|r| r.strip_prefix(&format!("{name}-")))
        .map(str::to_owned)
        .unwrap_or_else(|| update_hash.clone());
    let current_template = revisions
        .iter()
        .find(|r| r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&current_hash))
        .and_then(|r| history::template_of(r))
        .unwrap_or_else(|| spec.template.clone());

    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    let now = jiff::Timestamp::now();
    let mut slots: Vec<Option<Arc<Pod>>> = vec![None; replicas as usize];
    let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
    for p in &pods {
        match ordinal(&name, &p.name_any()) {
            Some(i) if i >= 0 && i < replicas => slots[i as usize] = Some(p.clone()),
            Some(i) => condemned.push((i, p.clone())),
            None => {}
        }
    }
    condemned.sort_by_key(|(i, _)| std::cmp::Reverse(*i));

    let sts_ref = workload::object_ref(sts.as_ref());
    let mut created = Vec::new();
    let mut deleted = Vec::new();
    let mut failure = None;
    let mut blocked = false;
    // Create missing and replace failed pods, in ordinal order.
    for (i, slot) in slots.iter().enumerate() {
        let i = i as i32;
        match slot {
            Some(p) if workload::is_terminal(p) && p.metadata.deletion_timestamp.is_none() => {
                workload::delete_pod(&pods_api, &p.name_any()).await?;
                ctx.events.object(
                    sts_ref.clone(),
                    "Warning",
                    "RecreatingFailedPod",
                    format!(
                        "StatefulSet {ns}/{name} is recreating failed Pod {}",
                        p.name_any()
                    ),
                );
                deleted.push(p.name_any());
                blocked = true;
            }
            Some(p) => {
                if !parallel && !healthy(p, min_ready, now) {
                    blocked = true;
                }
            }
            None => {
                let (template, hash) = if i < partition && !on_delete {
                    (&current_template, current_hash.as_str())
                } else {
                    (&spec.template, update_hash.as_str())
                };
                let pod = pod_for(&sts, template, i, hash);
                match workload::create_pod(&pods_api, &pod).await {
                    Ok(p) => {
                        ctx.events.object(
                            sts_ref.clone(),
                            "Normal",
                            "SuccessfulCreate",
                            format!(
                                "create Pod {} in StatefulSet {name} successful",
                                p.name_any()
                            ),
                        );
                        created.push(p.name_any());
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => {
                        let message = format!(
                            "create Pod {}-{i} in StatefulSet {name} failed error: {}",
                            name,
                            api_message(&e)
                        );
                        ctx.events.object(
                            sts_ref.clone(),
                            "Warning",
                            "FailedCreate",
                            message.clone(),
                        );
                        failure = Some(message);
                        break;
                    }
                }
                if !parallel {
                    blocked = true;
                }
            }
        }
        if blocked && !parallel {
            break;
        }
    }
    // Scale down from the highest ordinal, one at a time unless Parallel, only when the rest
    // is healthy.
    if !blocked || parallel {
        for (_, p) in &condemned {
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    break;
                }
                continue;
            }
            workload::delete_pod(&pods_api, &p.name_any()).await?;
            ctx.events.object(
                sts_ref.clone(),
                "Normal",
                "SuccessfulDelete",
                format!(
                    "delete Pod {} in StatefulSet {name} successful",
                    p.name_any()
                ),
            );
            deleted.push(p.name_any());
            if !parallel {
                break;
            }
        }
    }
    // RollingUpdate: the highest ordinal at or above the partition still on an old revision is
    // replaced, once every pod is healthy and none is terminating.
    let all_healthy = slots
        .iter()
        .all(|s| s.as_ref().is_some_and(|p| healthy(p, min_ready, now)))
        && condemned.is_empty();
    if !on_delete && all_healthy && created.is_empty() && deleted.is_empty() {
        for i in (partition.max(0)..replicas).rev() {
            if let Some(p) = &slots[i as usize]
                && hash_of(p) != Some(update_hash.as_str())
            {
                workload::delete_pod(&pods_api, &p.name_any()).await?;
                ctx.events.object(
                    sts_ref.clone(),
                    "Normal",
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {} in StatefulSet {name} successful",
                        p.name_any()
                    ),
                );
                deleted.push(p.name_any());
                break;
            }
        }
    }
    ctx.expectations.expect(&key, created, deleted);

    // Status.
    let live: Vec<&Arc<Pod>> = pods.iter().filter(|p| workload::is_active(p)).collect();
    let updated = live
        .iter()
        .filter(|p| hash_of(p) == Some(update_hash.as_str()))
        .count() as i32;
    let current = live
        .iter()
        .filter(|p| hash_of(p) == Some(current_hash.as_str()))
        .count() as i32;
    let ready = live.iter().filter(|p| workload::is_ready(p)).count();
    let available = live
        .iter()
        .filter(|p| workload::availability(p, min_ready, now) == Availability::Yes)
        .count();
    // The rollout is complete when every replica runs the update revision.
    let done = updated == replicas && live.len() as i32 == replicas && ready as i32 == replicas;
    let current_revision = if done {
        update_hash.clone()
    } else {
        current_hash.clone()
    };
    let status = json!({
        "observedGeneration": sts.metadata.generation.unwrap_or(0),
        "replicas": live.len(),
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": if done { updated } else { current },
        "updatedReplicas": updated,
        "currentRevision": format!("{name}-{current_revision}"),
        "updateRevision": format!("{name}-{update_hash}"),
        "collisionCount": sts.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0),
    });
    let in_use: HashSet<String> = pods
        .iter()
        .filter_map(|p| hash_of(p).map(str::to_owned))
        .chain([current_hash.clone()])
        .collect();
    history::trim(
        &rev_api,
        &revisions,
        &update_hash,
        &in_use,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let old = sts
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(json!({}));
    let changed = status
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, v)| old.get(k).unwrap_or(&json!(0)) != v);
    if changed {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = failure {
        return Err(ReconcileError::Other(e));
    }
    // minReadySeconds: look again when a ready pod becomes available.
    let soon = live
        .iter()
        .filter_map(|p| match workload::availability(p, min_ready, now) {
            Availability::After(d) => Some(d),
            _ => None,
        })
        .min();
    Ok(soon.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
    }

    #[test]
    fn pods_get_stable_identity() {
        let sts = StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("default".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                service_name: Some("db-headless".into()),
                ..Default::default()
            }),
            status: None,
        };
        let template = PodTemplateSpec {
            metadata: None,
            spec: Some(Default::default()),
        };
        let pod = pod_for(&sts, &template, 2, "abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("db-2"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("db-headless"));
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "db-2");
        assert_eq!(labels["apps.kubernetes.io/pod-index"], "2");
        assert_eq!(labels[HASH_LABEL], "abc");
    }
}
