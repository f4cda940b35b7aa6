//! Skiff's scheduler (kube-scheduler's role): watches pods without a node, picks a node with
//! upstream's filters and scores, and binds through `pods/binding`.
//!
//! Nodes and pods live in reflector caches fed by watches; a scheduling pass takes one snapshot
//! of them and places every pending pod against it, updating it as it goes, so no pod costs a
//! relist. A pod is "assumed" on its node from the moment the scheduler decides until the watch
//! shows the binding, and bindings run concurrently with the next decisions. Pods that fit
//! nowhere get `PodScheduled=False/Unschedulable` and a `FailedScheduling` event, and are retried
//! when nodes or pods change (after a backoff of 1 s doubling to 10 s) or every minute.

mod filters;
pub mod matching;
mod metrics;
mod pod_state;
mod resources;
mod scores;
mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use metrics::SchedulerMetrics;

use crate::metrics::{AttemptLabels, QueueLabels, SliLabels};
use rustc_hash::FxHashMap;

use crate::pod_state::PodState;
use crate::snapshot::Snapshot;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The `spec.schedulerName` this scheduler serves.
    pub name: String,
    /// Retry unschedulable pods at least this often even when nothing changed.
    pub retry_interval: Duration,
    /// Bindings in flight at once.
    pub max_concurrent_bindings: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            name: "default-scheduler".into(),
            retry_interval: Duration::from_secs(60),
            max_concurrent_bindings: 64,
        }
    }
}

/// First retry delay of an unschedulable pod (kube-scheduler's podInitialBackoffSeconds).
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay (podMaxBackoffSeconds).
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A pod that could not be placed yet.
#[derive(Debug, Clone)]
struct Attempts {
    count: u32,
    first: Instant,
    last: Instant,
    /// The cluster version when it last failed: retried once the cluster changed.
    version: u64,
    message: String,
}

struct Scheduler {
    config: SchedulerConfig,
    client: kube::Client,
    metrics: SchedulerMetrics,
    events: skiff_events::EventRecorder,
    nodes: Store<Node>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    version: Arc<AtomicU64>,
    wake: Arc<Notify>,
    /// Pod uid → (node, pod) while its binding is in flight or not yet seen by the watch.
    assumed: Mutex<FxHashMap<String, (String, Arc<Pod>)>>,
    attempts: Mutex<FxHashMap<String, Attempts>>,
    /// Pods waiting for a node (uid → pod), kept from the watch so a pass looks only at them,
    /// not at every pod in the cluster.
    pending: Mutex<FxHashMap<String, Arc<Pod>>>,
    /// The pending set being rebuilt while the watch re-lists.
    relisting: Mutex<Option<FxHashMap<String, Arc<Pod>>>>,
    bindings: Arc<Semaphore>,
    /// Rotates the tie-break among equally scored nodes (upstream picks one at random).
    rotation: AtomicU64,
    /// Where the next pod starts looking through the nodes.
    next_start: std::sync::atomic::AtomicUsize,
}

/// Start the scheduler; it stops when `shutdown` is cancelled.
pub fn start(
    client: kube::Client,
    config: SchedulerConfig,
    metrics: SchedulerMetrics,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let (nodes, node_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let (namespaces, namespace_writer) = reflector::store();
    let version = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(Notify::new());
    let events = skiff_events::start(
        client.clone(),
        "default-scheduler",
        config.name.clone(),
        shutdown.clone(),
    );
    let scheduler = Arc::new(Scheduler {
        bindings: Arc::new(Semaphore::new(config.max_concurrent_bindings.max(1))),
        config,
        client: client.clone(),
        metrics: metrics.clone(),
        events,
        nodes,
        pods,
        namespaces,
        version: version.clone(),
        wake: wake.clone(),
        assumed: Mutex::new(FxHashMap::default()),
        attempts: Mutex::new(FxHashMap::default()),
        pending: Mutex::new(FxHashMap::default()),
        relisting: Mutex::new(None),
        rotation: AtomicU64::new(0),
        next_start: std::sync::atomic::AtomicUsize::new(0),
    });
    let feed = |stream: futures::stream::BoxStream<'static, Result<(), watcher::Error>>| {
        let (version, wake, metrics, shutdown) = (
            version.clone(),
            wake.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let mut stream = Box::pin(stream.take_until(shutdown.cancelled_owned()));
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    metrics.watch_errors.inc();
                    tracing::warn!(error = %e, "scheduler watch failed; retrying with backoff");
                }
                version.fetch_add(1, Ordering::Relaxed);
                wake.notify_one();
            }
        })
    };
    feed(
        reflector::reflector(
            node_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .map(|r| r.map(|_| ()))
        .boxed(),
    );
    feed(
        reflector::reflector(
            namespace_writer,
            watcher(
                Api::<Namespace>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .map(|r| r.map(|_| ()))
        .boxed(),
    );
    let observer = scheduler.clone();
    feed(
        reflector::reflector(
            pod_writer,
            watcher(Api::<Pod>::all(client), watcher::Config::default()),
        )
        .default_backoff()
        .map(move |r| {
            r.map(|event| {
                observer.observe(&event);
            })
        })
        .boxed(),
    );
    tokio::spawn(
        async move { scheduler.run(shutdown).await }.instrument(tracing::info_span!("scheduler")),
    )
}

fn needs_scheduling(pod: &Pod, name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec
            .scheduler_name
            .as_deref()
            .unwrap_or("default-scheduler")
            == name
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn backoff(count: u32) -> Duration {
    BACKOFF_INITIAL
        .saturating_mul(1 << count.saturating_sub(1).min(8))
        .min(BACKOFF_MAX)
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: None,
    }
}

impl Scheduler {
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { let _ = tokio::join!(self.nodes.wait_until_ready(), self.pods.wait_until_ready()); } => {}
        }
        tracing::info!(name = %self.config.name, "scheduler started");
        loop {
            self.clone().pass();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// One pass: place every pod that is due against one snapshot.
    fn pass(self: Arc<Self>) {
        let version = self.version.load(Ordering::Relaxed);
        let now = Instant::now();
        let candidates: Vec<Arc<Pod>> = self
            .pending
            .lock()
            .expect("pending lock")
            .values()
            .cloned()
            .collect();
        let mut due: Vec<Arc<Pod>> = Vec::new();
        let mut waiting = 0;
        {
            let assumed = self.assumed.lock().expect("assumed lock");
            let attempts = self.attempts.lock().expect("attempts lock");
            for pod in candidates {
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                if assumed.contains_key(uid) {
                    continue;
                }
                if let Some(a) = attempts.get(uid) {
                    let backed_off = now >= a.last + backoff(a.count);
                    let changed = a.version != version;
                    if !(backed_off && (changed || now >= a.last + self.config.retry_interval)) {
                        waiting += 1;
                        continue;
                    }
                }
                due.push(pod);
            }
        }
        self.metrics
            .pending
            .get_or_create(&QueueLabels { queue: "active" })
            .set(due.len() as i64);
        self.metrics
            .pending
            .get_or_create(&QueueLabels {
                queue: "unschedulable",
            })
            .set(waiting);
        if due.is_empty() {
            return;
        }
        // Higher priority first, then oldest first.
        due.sort_by(|a, b| {
            let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            prio(b)
                .cmp(&prio(a))
                .then_with(|| {
                    a.metadata
                        .creation_timestamp
                        .cmp(&b.metadata.creation_timestamp)
                })
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let mut snapshot = {
            // Holding the assumed lock while reading the cache: the watch drops an assumption
            // only after the cache shows the binding, so every pod is counted (at most an
            // in-flight one whose binding just arrived is skipped below, not lost).
            let assumed = self.assumed.lock().expect("assumed lock");
            let pods = self.pods.state();
            let in_flight: Vec<(String, Arc<Pod>)> = assumed
                .values()
                .filter(|(_, pod)| {
                    !self
                        .pods
                        .get(&ObjectRef::from_obj(pod.as_ref()))
                        .is_some_and(|current| is_bound(&current))
                })
                .cloned()
                .collect();
            let mut snapshot = Snapshot::build(&self.nodes.state(), &pods, &in_flight);
            snapshot.namespace_labels = self
                .namespaces
                .state()
                .iter()
                .map(|ns| (ns.name_any(), ns.labels().clone()))
                .collect();
            snapshot
        };
        for pod in due {
            let span = tracing::info_span!("schedule_pod", pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()));
            let _guard = span.enter();
            self.clone().schedule_one(pod, &mut snapshot, version);
        }
    }
}

impl Scheduler {
    /// Keep `pending`, `assumed` and `attempts` in step with one pod watch event.
    fn observe(&self, event: &watcher::Event<Pod>) {
        let uid = |pod: &Pod| pod.metadata.uid.clone().unwrap_or_default();
        // The reflector stored the pod before passing the event on: share its copy.
        let shared = |pod: &Pod| {
            self.pods
                .get(&ObjectRef::from_obj(pod))
                .unwrap_or_else(|| Arc::new(pod.clone()))
        };
        match event {
            watcher::Event::Init => {
                *self.relisting.lock().expect("relist lock") = Some(FxHashMap::default());
            }
            watcher::Event::InitApply(pod) => {
                if needs_scheduling(pod, &self.config.name)
                    && let Some(relist) = self.relisting.lock().expect("relist lock").as_mut()
                {
                    relist.insert(uid(pod), shared(pod));
                }
            }
            watcher::Event::InitDone => {
                let Some(fresh) = self.relisting.lock().expect("relist lock").take() else {
                    return;
                };
                // Forget what belongs to pods that vanished while the watch was down.
                self.attempts
                    .lock()
                    .expect("attempts lock")
                    .retain(|uid, _| fresh.contains_key(uid));
                self.assumed
                    .lock()
                    .expect("assumed lock")
                    .retain(|_, (_, pod)| {
                        self.pods
                            .get(&ObjectRef::from_obj(pod.as_ref()))
                            .is_some_and(|current| !is_bound(&current))
                    });
                *self.pending.lock().expect("pending lock") = fresh;
            }
            watcher::Event::Apply(pod) if needs_scheduling(pod, &self.config.name) => {
                self.pending
                    .lock()
                    .expect("pending lock")
                    .insert(uid(pod), shared(pod));
            }
            watcher::Event::Apply(pod) | watcher::Event::Delete(pod) => {
                // Bound (perhaps by us: the watch caught up with the binding), finished,
                // deleted or not ours.
                let uid = uid(pod);
                self.pending.lock().expect("pending lock").remove(&uid);
                self.assumed.lock().expect("assumed lock").remove(&uid);
                self.attempts.lock().expect("attempts lock").remove(&uid);
            }
        }
    }
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// How many feasible nodes to find before scoring (kube-scheduler's adaptive
/// percentageOfNodesToScore): every node up to 100, then 50 % less 1 % per 125 nodes, at least
/// 5 % and at least 100 nodes.
fn feasible_nodes_to_find(total: usize) -> usize {
    if total <= 100 {
        return total.max(1);
    }
    let percent = 50usize.saturating_sub(total / 125).max(5);
    (total * percent / 100).max(100)
}

impl Scheduler {
    fn schedule_one(self: Arc<Self>, pod: Arc<Pod>, snapshot: &mut Snapshot, version: u64) {
        let started = Instant::now();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let state = PodState::new(&pod, snapshot);
        let total = snapshot.nodes.len();
        let wanted = feasible_nodes_to_find(total);
        // Start where the previous pod stopped, so every node gets considered over time even
        // when each pod only looks at part of a large cluster (upstream's nextStartNodeIndex).
        let start = self.next_start.load(Ordering::Relaxed) % total.max(1);
        let mut feasible = Vec::new();
        let mut reasons = Vec::new();
        let mut examined = 0;
        for offset in 0..total {
            let i = (start + offset) % total;
            examined += 1;
            let why = filters::check(&state, &snapshot.nodes[i]);
            if why.is_empty() {
                feasible.push(i);
                if feasible.len() >= wanted {
                    break;
                }
            } else {
                reasons.push(why);
            }
        }
        self.next_start
            .store((start + examined) % total.max(1), Ordering::Relaxed);
        let profile = self.config.name.clone();
        if feasible.is_empty() {
            let message = filters::fit_error(snapshot.nodes.len(), &reasons);
            let labels = AttemptLabels {
                result: "unschedulable",
                profile,
            };
            self.metrics.attempts.get_or_create(&labels).inc();
            self.metrics
                .attempt_duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            self.unschedulable(&pod, uid, message, version);
            return;
        }
        let scores = scores::score(&state, &feasible, &snapshot.nodes);
        drop(state);
        let best = scores.iter().copied().fold(f64::MIN, f64::max);
        let ties: Vec<usize> = (0..feasible.len())
            .filter(|&i| scores[i] >= best - 1e-9)
            .collect();
        let pick = ties[(self.rotation.fetch_add(1, Ordering::Relaxed) as usize) % ties.len()];
        let node = snapshot.nodes[feasible[pick]].name().to_owned();
        snapshot.add(&node, pod.clone());
        self.assumed
            .lock()
            .expect("assumed lock")
            .insert(uid.clone(), (node.clone(), pod.clone()));
        self.pending.lock().expect("pending lock").remove(&uid);
        let labels = AttemptLabels {
            result: "scheduled",
            profile,
        };
        self.metrics.attempts.get_or_create(&labels).inc();
        self.metrics
            .attempt_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        let this = self.clone();
        tokio::spawn(
            async move { this.bind(pod, uid, node).await }.instrument(tracing::Span::current()),
        );
    }

    /// Count a failed attempt for `uid` at cluster `version`; returns whether its message
    /// changed.
    fn record_failure(&self, uid: String, version: u64, message: Option<&str>) -> bool {
        let now = Instant::now();
        let mut attempts = self.attempts.lock().expect("attempts lock");
        let entry = attempts.entry(uid).or_insert(Attempts {
            count: 0,
            first: now,
            last: now,
            version,
            message: String::new(),
        });
        entry.count += 1;
        entry.last = now;
        entry.version = version;
        match message {
            Some(m) if entry.message != m => {
                entry.message = m.to_owned();
                true
            }
            _ => false,
        }
    }

    fn unschedulable(&self, pod: &Arc<Pod>, uid: String, message: String, version: u64) {
        let changed_message = self.record_failure(uid, version, Some(&message));
        tracing::debug!(%message, "unschedulable");
        self.events
            .object(pod_ref(pod), "Warning", "FailedScheduling", message.clone());
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .and_then(|c| c.message.clone());
        if !changed_message && current.as_deref() == Some(message.as_str()) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            &pod.namespace().unwrap_or_else(|| "default".into()),
        );
        let name = pod.name_any();
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": skiff_api::time::now_rfc3339(),
        }]}});
        tokio::spawn(async move {
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "writing the Unschedulable condition failed");
            }
        });
    }

    async fn bind(self: Arc<Self>, pod: Arc<Pod>, uid: String, node: String) {
        let Ok(_permit) = self.bindings.clone().acquire_owned().await else {
            return;
        };
        let namespace = pod.namespace().unwrap_or_else(|| "default".into());
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let result = api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await;
        match result {
            Ok(_) => {
                let attempts = self.attempts.lock().expect("attempts lock").remove(&uid);
                let (count, first) = attempts.map_or((1, None), |a| (a.count + 1, Some(a.first)));
                let since = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
                self.metrics
                    .sli_duration
                    .get_or_create(&SliLabels {
                        attempts: count.to_string(),
                    })
                    .observe(since);
                tracing::debug!(pod = %name, %node, "bound");
                self.events.object(
                    pod_ref(&pod),
                    "Normal",
                    "Scheduled",
                    format!("Successfully assigned {namespace}/{name} to {node}"),
                );
            }
            Err(e) => {
                self.assumed.lock().expect("assumed lock").remove(&uid);
                // Back in line, unless the pod went away or got bound meanwhile.
                if let Some(current) = self.pods.get(&ObjectRef::from_obj(pod.as_ref()))
                    && needs_scheduling(&current, &self.config.name)
                {
                    self.pending
                        .lock()
                        .expect("pending lock")
                        .insert(uid.clone(), current);
                }
                let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
                if !conflict {
                    tracing::warn!(pod = %name, %node, error = %e, "binding failed");
                    self.metrics
                        .attempts
                        .get_or_create(&AttemptLabels {
                            result: "error",
                            profile: self.config.name.clone(),
                        })
                        .inc();
                    // A version no pass sees: retried after the backoff even if nothing
                    // else changes.
                    self.record_failure(uid, u64::MAX, None);
                }
                self.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_clusters_look_at_part_of_the_nodes_like_upstream() {
        assert_eq!(feasible_nodes_to_find(0), 1);
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(100), 100);
        assert_eq!(feasible_nodes_to_find(200), 100);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(10_000), 500);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(9), BACKOFF_MAX);
    }

    #[test]
    fn only_unbound_live_pods_of_this_scheduler_are_scheduled() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let name = "default-scheduler";
        assert!(needs_scheduling(
            &pod(json!({"metadata": {"name": "a"}, "spec": {"containers": []}})),
            name
        ));
        assert!(!needs_scheduling(
            &pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [], "nodeName": "n"}})),
            name
        ));
        assert!(!needs_scheduling(
            &pod(
                json!({"metadata": {"name": "a"}, "spec": {"containers": [], "schedulerName": "other"}})
            ),
            name
        ));
        assert!(!needs_scheduling(
            &pod(
                json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": []}})
            ),
            name
        ));
        assert!(!needs_scheduling(
            &pod(
                json!({"metadata": {"name": "a"}, "spec": {"containers": [], "schedulingGates": [{"name": "g"}]}})
            ),
            name
        ));
    }
}
