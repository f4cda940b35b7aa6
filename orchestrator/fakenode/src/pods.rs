//! The fake kubelet: pods bound to a fake node are reported Running and Ready at once (init
//! containers completed, every container running), and pods being deleted are finished off, as
//! an agent does once their containers stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::PodAction;
use crate::{FakeNodeMetrics, FakeNodesConfig};

/// The status an agent would report once every container of `pod` runs.
fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str) -> Value {
    let now = skiff_api::time::now_rfc3339();
    let spec = pod.spec.clone().unwrap_or_default();
    let condition = |ty: &str| json!({"type": ty, "status": "True", "lastTransitionTime": now});
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("fake://{}", c.name), "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let init: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("fake://{}", c.name), "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                         "startedAt": now, "finishedAt": now}},
            })
        })
        .collect();
    json!({
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "containerStatuses": containers,
        "initContainerStatuses": init,
    })
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What to do about a pod event.
#[derive(Debug, PartialEq)]
enum Action {
    Ignore,
    Start,
    Delete,
    AlreadyRunning,
}

fn classify(pod: &Pod, ours: &HashMap<String, usize>) -> Action {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if !node.is_some_and(|n| ours.contains_key(n)) {
        return Action::Ignore;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Action::Delete;
    }
    if is_finished(pod) {
        return Action::Ignore;
    }
    if is_running(pod) {
        return Action::AlreadyRunning;
    }
    Action::Start
}

/// Retry until done, with a pause growing to 5 s; a 404 means the pod is gone and ends it, as
/// does shutdown. A write that is never retried would leave its pod Pending or Terminating
/// forever, since no further event need come.
async fn with_retries<F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> &'static str
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let mut pause = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(()) => return "success",
            Err(kube::Error::Api(e)) if e.code == 404 => return "gone",
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying in {pause:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return "error",
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Watch every pod and play the fake kubelet for those on our nodes, until `shutdown`.
pub(crate) async fn run(
    client: kube::Client,
    config: FakeNodesConfig,
    names: Vec<String>,
    metrics: FakeNodeMetrics,
    usage: Arc<crate::usage::Usage>,
    shutdown: CancellationToken,
) {
    let ours: HashMap<String, usize> = names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
    let api: Api<Pod> = Api::all(client);
    let in_flight = Arc::new(Semaphore::new(config.concurrency.max(1)));
    // uids already reported Running / already being deleted, so a burst of events for one pod
    // causes one write.
    let mut started: HashSet<String> = HashSet::new();
    let mut deleting: HashSet<String> = HashSet::new();
    let mut next_ip: HashMap<usize, u32> = HashMap::new();
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.next() => match e {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching pods failed; retrying");
                    continue;
                }
                None => return,
            },
        };
        let pod = match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => pod,
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                usage.remove(&uid);
                started.remove(&uid);
                deleting.remove(&uid);
                continue;
            }
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let action = classify(&pod, &ours);
        if matches!(action, Action::Start | Action::AlreadyRunning) && !started.contains(&uid) {
            let spec = pod.spec.clone().unwrap_or_default();
            usage.add(
                spec.node_name.as_deref().unwrap_or_default(),
                &uid,
                crate::usage::FakePod {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    containers: spec.containers.iter().map(|c| c.name.clone()).collect(),
                    started_ms: jiff::Timestamp::now().as_millisecond(),
                },
            );
        }
        let (name, namespace) = (
            pod.metadata.name.clone().unwrap_or_default(),
            pod.metadata.namespace.clone().unwrap_or_default(),
        );
        let api = Api::<Pod>::namespaced(api.clone().into_client(), &namespace);
        let (permits, metrics, stop) = (in_flight.clone(), metrics.clone(), shutdown.clone());
        match action {
            Action::Ignore => {}
            Action::AlreadyRunning => {
                started.insert(uid);
            }
            Action::Start if started.insert(uid.clone()) => {
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                let index = node.and_then(|n| ours.get(&n).copied()).unwrap_or(0);
                let n = next_ip.entry(index).or_default();
                *n += 1;
                let host_ip = crate::nodes::node_ip(index);
                let pod_ip = format!(
                    "10.{}.{}.{}",
                    128 + (index >> 8) % 64,
                    index % 256,
                    (*n - 1) % 254 + 1
                );
                let status = running_status(&pod, &host_ip, &pod_ip);
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let result = with_retries("reporting a fake pod Running", &stop, || {
                        let (api, name, status) = (api.clone(), name.clone(), status.clone());
                        async move {
                            api.patch_status(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({ "status": status })),
                            )
                            .await
                            .map(|_| ())
                        }
                    })
                    .await;
                    metrics
                        .pod_actions
                        .get_or_create(&PodAction {
                            action: "start",
                            result,
                        })
                        .inc();
                });
            }
            Action::Start => {}
            Action::Delete if deleting.insert(uid.clone()) => {
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    let result = with_retries("finishing a fake pod's deletion", &stop, || {
                        let (api, name, params) = (api.clone(), name.clone(), params.clone());
                        async move { api.delete(&name, &params).await.map(|_| ()) }
                    })
                    .await;
                    metrics
                        .pod_actions
                        .get_or_create(&PodAction {
                            action: "delete",
                            result,
                        })
                        .inc();
                });
            }
            Action::Delete => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: Value) -> Pod {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn only_pods_on_our_nodes_are_played() {
        let ours: HashMap<String, usize> = [("fake-0".to_owned(), 0)].into();
        let bound = pod(json!({"metadata": {"name": "a", "uid": "1"},
            "spec": {"nodeName": "fake-0", "containers": [{"name": "c", "image": "x"}]}}));
        let elsewhere = pod(json!({"metadata": {"name": "b"},
            "spec": {"nodeName": "real", "containers": [{"name": "c"}]}}));
        let pending =
            pod(json!({"metadata": {"name": "c"}, "spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(classify(&bound, &ours), Action::Start);
        assert_eq!(classify(&elsewhere, &ours), Action::Ignore);
        assert_eq!(classify(&pending, &ours), Action::Ignore);

        let mut deleting = bound.clone();
        deleting.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
        assert_eq!(classify(&deleting, &ours), Action::Delete);

        let mut running = bound.clone();
        running.status = Some(
            serde_json::from_value(json!({"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]}))
            .unwrap(),
        );
        assert_eq!(classify(&running, &ours), Action::AlreadyRunning);
        running.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(classify(&running, &ours), Action::Ignore);
    }

    #[test]
    fn the_running_status_reports_every_container() {
        let p = pod(json!({"metadata": {"name": "a"}, "spec": {
            "initContainers": [{"name": "init", "image": "i"}],
            "containers": [{"name": "c1", "image": "x"}, {"name": "c2", "image": "y"}]}}));
        let status = running_status(&p, "10.64.0.1", "10.128.0.1");
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["containerStatuses"].as_array().unwrap().len(), 2);
        assert_eq!(status["containerStatuses"][1]["image"], "y");
        assert_eq!(
            status["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert!(
            status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready")
        );
    }
}
