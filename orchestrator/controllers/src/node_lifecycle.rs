//! Node lifecycle (kube-controller-manager's node-lifecycle controller and its taint manager):
//! a node whose Lease and status heartbeats stop for the grace period gets Ready=Unknown and
//! the `node.kubernetes.io/unreachable` taints; a NotReady node gets `not-ready`; a Ready node
//! loses both. Pods on a node with NoExecute taints they do not tolerate are deleted at once;
//! pods that tolerate them for `tolerationSeconds` are deleted when that runs out (every pod has
//! 300 s for not-ready/unreachable from admission). Pods bound to nodes that no longer exist
//! are deleted (the pod garbage collector's job).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use skiff_events::EventRecorder;
use skiff_scheduler::matching;
use tokio_util::sync::CancellationToken;

use crate::cronjob::Clock;
use crate::informers::Cache;
use crate::metrics::ControllerMetrics;

const NAME: &str = "nodelifecycle";
pub(crate) const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub(crate) const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// How often node health and evictions are checked (upstream's node-monitor-period).
const PERIOD: Duration = Duration::from_secs(2);

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) nodes: Cache<Node>,
    pub(crate) pods: Cache<Pod>,
    pub(crate) events: EventRecorder,
    pub(crate) clock: Arc<dyn Clock>,
    /// How long without a heartbeat before a node is Unknown (upstream: 40 s).
    pub(crate) grace: Duration,
}

pub(crate) async fn run(ctx: Arc<Ctx>, metrics: ControllerMetrics, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async { ctx.nodes.ready().await; ctx.pods.ready().await; } => {}
    }
    tracing::info!(controller = NAME, "controller started");
    // Nodes first seen now get a full grace period even if their last heartbeat is old (the
    // controller itself may just have restarted).
    let started = ctx.clock.now();
    let mut failures = 0u32;
    loop {
        let t0 = std::time::Instant::now();
        let span = tracing::info_span!("reconcile", controller = NAME);
        let result = tracing::Instrument::instrument(pass(&ctx, started), span).await;
        let secs = t0.elapsed().as_secs_f64();
        let delay = match result {
            Ok(()) => {
                failures = 0;
                metrics.observe(NAME, "success", secs);
                PERIOD
            }
            Err(e) => {
                failures += 1;
                metrics.observe(NAME, "error", secs);
                tracing::warn!(controller = NAME, error = %e, "node lifecycle pass failed");
                PERIOD.saturating_mul(1 << failures.min(3))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!(controller = NAME, "controller stopped");
}

fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// The latest sign of life: the Lease renewal or the Ready condition's heartbeat.
fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let from_status = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let from_lease = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    from_status.max(from_lease)
}

/// The taints a node should carry for its Ready condition (both effects, as upstream).
pub(crate) fn wanted_taints(ready: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let key = match ready {
        Some("True") => return Vec::new(),
        Some("False") => NOT_READY,
        _ => UNREACHABLE,
    };
    vec![(key, "NoSchedule"), (key, "NoExecute")]
}

async fn pass(ctx: &Ctx, started: Timestamp) -> Result<(), kube::Error> {
    let now = ctx.clock.now();
    let leases: HashMap<String, Lease> =
        Api::<Lease>::namespaced(ctx.client.clone(), "kube-node-lease")
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|l| (l.name_any(), l))
            .collect();
    let grace = jiff::SignedDuration::try_from(ctx.grace).unwrap_or_default();
    let nodes_api: Api<Node> = Api::all(ctx.client.clone());
    let mut names = HashSet::new();
    for node in ctx.nodes.all() {
        let name = node.name_any();
        names.insert(name.clone());
        let heartbeat = last_heartbeat(&node, leases.get(&name))
            .unwrap_or(started)
            .max(started);
        let mut ready = ready_status(&node).map(str::to_owned);
        if now.duration_since(heartbeat) > grace && ready.as_deref() != Some("Unknown") {
            mark_unknown(&nodes_api, &node, now).await?;
            ctx.events.object(
                crate::workload::object_ref(node.as_ref()),
                "Normal",
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            );
            ready = Some("Unknown".into());
        }
        sync_taints(&nodes_api, &node, ready.as_deref(), now).await?;
    }
    evict(ctx, &names, now).await
}

/// Ready and the other node conditions become Unknown: the agent stopped reporting.
async fn mark_unknown(api: &Api<Node>, node: &Node, now: Timestamp) -> Result<(), kube::Error> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in &mut conditions {
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.message = Some("Kubelet stopped posting node status.".into());
        c.last_transition_time = Some(Time(now));
    }
    tracing::info!(node = %node.name_any(), "node stopped reporting; Ready is now Unknown");
    let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
        "status": {"conditions": conditions}});
    match api
        .patch_status(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Put the condition taints on (with the time added, which eviction counts from) or off.
async fn sync_taints(
    api: &Api<Node>,
    node: &Node,
    ready: Option<&str>,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted = wanted_taints(ready);
    let managed = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
    let mut next: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e))
        .cloned()
        .collect();
    for (key, effect) in &wanted {
        if !next.iter().any(|t| t.key == *key && t.effect == *effect) {
            next.push(Taint {
                key: (*key).into(),
                effect: (*effect).into(),
                time_added: (*effect == "NoExecute").then_some(Time(now)),
                value: None,
            });
        }
    }
    if next == current {
        return Ok(());
    }
    let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": if next.is_empty() { serde_json::Value::Null } else { json!(next) }}});
    match api
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// When a pod on a node with these NoExecute taints must go: now (a taint it does not
/// tolerate), at the earliest taint time + tolerationSeconds, or never.
pub(crate) fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations = matching::tolerations(pod);
    let mut when: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tolerations
            .iter()
            .filter(|t| matching::tolerates(t, taint))
            .collect();
        if matching.is_empty() {
            return Some(now);
        }
        // Tolerated forever unless every matching toleration is limited.
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let secs = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let at = added + jiff::SignedDuration::from_secs(secs);
        when = Some(when.map_or(at, |w| w.min(at)));
    }
    when
}

async fn evict(ctx: &Ctx, nodes: &HashSet<String>, now: Timestamp) -> Result<(), kube::Error> {
    let taints: HashMap<String, Vec<Taint>> = ctx
        .nodes
        .all()
        .iter()
        .map(|n| {
            (
                n.name_any(),
                n.spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    for pod in ctx.pods.all() {
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        if !nodes.contains(&node) {
            // Bound to a node that is gone: nothing will ever run or stop it.
            tracing::info!(pod = %pod.name_any(), %node, "deleting pod bound to a missing node");
            match api
                .delete(
                    &pod.name_any(),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(list) = taints
            .get(&node)
            .filter(|t| t.iter().any(|t| t.effect == "NoExecute"))
        else {
            continue;
        };
        match eviction_time(&pod, list, now) {
            Some(at) if at <= now => {
                ctx.events.pod(
                    &pod,
                    None,
                    "Normal",
                    "TaintManagerEviction",
                    format!("Marking for deletion Pod {ns}/{}", pod.name_any()),
                );
                match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn taint(key: &str, added: Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added)),
            value: None,
        }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn eviction_waits_for_toleration_seconds() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let now = t0 + jiff::SignedDuration::from_secs(10);
        let taints = [taint(UNREACHABLE, t0)];
        assert_eq!(
            eviction_time(&pod(vec![]), &taints, now),
            Some(now),
            "untolerated: now"
        );
        assert_eq!(
            eviction_time(&pod(vec![tol(UNREACHABLE, Some(300))]), &taints, now),
            Some(t0 + jiff::SignedDuration::from_secs(300))
        );
        assert_eq!(
            eviction_time(&pod(vec![tol(UNREACHABLE, None)]), &taints, now),
            None,
            "forever"
        );
        let no_schedule = [Taint {
            effect: "NoSchedule".into(),
            ..taint("x", t0)
        }];
        assert_eq!(eviction_time(&pod(vec![]), &no_schedule, now), None);
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        assert!(wanted_taints(Some("True")).is_empty());
        assert_eq!(wanted_taints(Some("False"))[1], (NOT_READY, "NoExecute"));
        assert_eq!(
            wanted_taints(Some("Unknown"))[0],
            (UNREACHABLE, "NoSchedule")
        );
        assert_eq!(wanted_taints(None)[1], (UNREACHABLE, "NoExecute"));
    }
}
