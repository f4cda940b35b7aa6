//! One worker per pod drives the runtime toward the pod's spec, level-triggered: every sync reads
//! what the runtime has (so a restarted agent adopts what it finds), then takes the next step —
//! volumes, sandbox, init containers in order, app containers, restarts with backoff, probe
//! kills — and publishes the status. It wakes on spec changes, probe changes, backoff expiry and
//! a periodic resync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::status::{StatusInput, Waiting, compute, instances};
use crate::Ctx;
use crate::probes::{ProbeEvent, ProbeState, probe_loop};
use crate::runtime::{ContainerInfo, ContainerState, PodRef, SandboxConfig, SandboxStatus};

/// Messages to a worker.
#[derive(Debug)]
pub(crate) enum Update {
    /// The pod changed.
    Pod(Arc<Pod>),
    /// One of the pod's containers changed state (started or exited).
    ContainersChanged,
    /// The pod is gone from the API: stop everything and clean up.
    Gone,
}

/// Periodic resync when nothing else wakes the worker (volume refresh, status heartbeat).
const RESYNC: Duration = Duration::from_secs(10);

struct ProbeHandle {
    state: watch::Receiver<ProbeState>,
    stop: CancellationToken,
}

/// The state a worker keeps between syncs; everything else is re-read each time.
pub(crate) struct Worker {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) pod: Arc<Pod>,
    pub(crate) pod_ref: PodRef,
    probes: HashMap<String, ProbeHandle>,
    pub(crate) changed: Arc<Notify>,
    probe_events: (
        mpsc::UnboundedSender<ProbeEvent>,
        mpsc::UnboundedReceiver<ProbeEvent>,
    ),
    pub(crate) sandbox: Option<SandboxStatus>,
    pub(crate) waiting: HashMap<String, Waiting>,
    pub(crate) failure: Option<(String, String)>,
    pub(crate) pull_failed: HashMap<String, Timestamp>,
    start_time: String,
    last_status: Option<Value>,
    next_wake: Option<Duration>,
    /// For static pods, the uid of the Node that owns the mirror pod.
    mirror_owner: Option<String>,
}

/// Run a pod's worker until the pod is gone or the agent shuts down.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    rx: mpsc::Receiver<Update>,
    shutdown: CancellationToken,
) {
    run_worker(ctx, pod, rx, shutdown, None).await;
}

/// Run a static pod (from a manifest file), mirrored into the API with the Node as owner.
pub(crate) async fn run_static(
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    node_uid: String,
    rx: mpsc::Receiver<Update>,
    shutdown: CancellationToken,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    ctx.pods
        .write()
        .expect("pods lock")
        .insert(uid.clone(), pod.clone());
    run_worker(ctx.clone(), pod, rx, shutdown, Some(node_uid)).await;
    ctx.pods.write().expect("pods lock").remove(&uid);
}

async fn run_worker(
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    mut rx: mpsc::Receiver<Update>,
    shutdown: CancellationToken,
    mirror_owner: Option<String>,
) {
    let pod_ref = PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    };
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(skiff_api::time::now_rfc3339, |t| {
            skiff_api::time::format_rfc3339(t.0)
        });
    let span =
        tracing::info_span!("pod_worker", pod = %format!("{}/{}", pod_ref.namespace, pod_ref.name));
    let mut w = Worker {
        ctx,
        pod,
        pod_ref,
        probes: HashMap::new(),
        changed: Arc::new(Notify::new()),
        probe_events: mpsc::unbounded_channel(),
        sandbox: None,
        waiting: HashMap::new(),
        failure: None,
        pull_failed: HashMap::new(),
        start_time,
        last_status: None,
        next_wake: None,
        mirror_owner,
    };
    tracing::Instrument::instrument(
        async move {
            let mut failures = 0u32;
            let seen = std::time::Instant::now();
            let mut started_reported = false;
            let mut operation = "create";
            loop {
                let sync_started = std::time::Instant::now();
                // Each sync is its own trace (the worker lives as long as the pod does).
                let sync_span = tracing::info_span!(
                    parent: None,
                    "pod_sync",
                    pod = %format!("{}/{}", w.pod_ref.namespace, w.pod_ref.name),
                    operation,
                );
                let result = tracing::Instrument::instrument(w.sync(), sync_span).await;
                w.ctx
                    .metrics
                    .pod_worker_seconds
                    .get_or_create(&crate::metrics::OperationLabels {
                        operation_type: operation.to_owned(),
                    })
                    .observe(sync_started.elapsed().as_secs_f64());
                operation = "sync";
                if !started_reported && w.is_running() {
                    started_reported = true;
                    w.ctx
                        .metrics
                        .pod_start_seconds
                        .observe(seen.elapsed().as_secs_f64());
                }
                match result {
                    Ok(SyncResult::Done) => break,
                    Ok(SyncResult::Continue) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        w.ctx.metrics.sync_errors.inc();
                        tracing::warn!(error = %e, "pod sync failed");
                        w.next_wake = Some(Duration::from_millis(200 * 2u64.pow(failures.min(6))));
                    }
                }
                let sleep = w.next_wake.take().unwrap_or(RESYNC);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(sleep) => {}
                    _ = w.changed.notified() => {}
                    Some((kind, message)) = w.probe_events.1.recv() => {
                        w.ctx.events.pod(&w.pod, None, "Warning", "Unhealthy", format!("{kind} probe failed: {message}"));
                    }
                    update = rx.recv() => match update {
                        Some(Update::Pod(p)) if w.mirror_owner.is_none() => w.pod = p,
                        Some(Update::Pod(_)) => {}
                        Some(Update::ContainersChanged) => {}
                        Some(Update::Gone) => {
                            w.cleanup().await;
                            break;
                        }
                        // The manager stopped (agent shutdown): leave the containers running
                        // for the next agent to adopt.
                        None => break,
                    },
                }
            }
            for h in w.probes.values() {
                h.stop.cancel();
            }
        },
        span,
    )
    .await;
}

/// What a sync concluded.
pub(crate) enum SyncResult {
    /// Keep the worker running.
    Continue,
    /// The pod has been finalized; the worker can stop.
    Done,
}

fn restart_needed(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

impl Worker {
    /// Whether the last status written says the pod runs.
    fn is_running(&self) -> bool {
        self.last_status
            .as_ref()
            .is_some_and(|s| s["phase"] == "Running")
    }

    pub(crate) fn backoff_key(&self, container: &str) -> String {
        format!("{}/{container}", self.pod_ref.uid)
    }

    fn wake_in(&mut self, d: Duration) {
        self.next_wake = Some(self.next_wake.map_or(d, |w| w.min(d)));
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    async fn sync(&mut self) -> anyhow::Result<SyncResult> {
        self.ctx.metrics.syncs.inc();
        let containers = self.ctx.runtime.pod_containers(&self.pod_ref.uid).await?;
        self.reconcile_probes(&containers);
        if self.pod.metadata.deletion_timestamp.is_some() {
            return self.terminate(containers).await;
        }
        let phase = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let terminal = phase == "Succeeded" || phase == "Failed" || self.failure.is_some();
        if !terminal && self.pod_deadline_exceeded() {
            self.failure = Some((
                "DeadlineExceeded".into(),
                "Pod was active on the node longer than the specified deadline".into(),
            ));
            for c in containers
                .iter()
                .filter(|c| matches!(c.state, ContainerState::Running { .. }))
            {
                self.ctx
                    .runtime
                    .stop_container(&c.id, Duration::from_secs(0))
                    .await?;
            }
        } else if !terminal {
            self.drive(&containers).await?;
        }
        let containers = self.ctx.runtime.pod_containers(&self.pod_ref.uid).await?;
        self.prune_instances(&containers).await;
        self.publish_status(&containers).await?;
        Ok(SyncResult::Continue)
    }

    fn pod_deadline_exceeded(&self) -> bool {
        let Some(deadline) = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
        else {
            return false;
        };
        let Ok(start) = self.start_time.parse::<Timestamp>() else {
            return false;
        };
        Timestamp::now().as_second() - start.as_second() >= deadline
    }

    /// One step toward the spec: volumes, sandbox, init containers, app containers.
    async fn drive(&mut self, containers: &[ContainerInfo]) -> anyhow::Result<()> {
        let volumes = match self.prepare_volumes().await {
            Ok(v) => v,
            Err(e) => {
                self.ctx
                    .events
                    .pod(&self.pod, None, "Warning", "FailedMount", e.to_string());
                self.wake_in(Duration::from_secs(5));
                return Ok(());
            }
        };
        if self.sandbox.is_none() {
            let spec = self.pod.spec.as_ref();
            let config = SandboxConfig {
                pod: self.pod_ref.clone(),
                hostname: spec
                    .and_then(|s| s.hostname.clone())
                    .unwrap_or_else(|| self.pod_ref.name.clone()),
                port_mappings: spec
                    .map(|s| {
                        s.containers
                            .iter()
                            .flat_map(|c| c.ports.iter().flatten())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| {
                        let host = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
                        Some((
                            u16::try_from(p.container_port).ok()?,
                            host,
                            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ))
                    })
                    .collect(),
                pod_dir: self.ctx.pod_dir(&self.pod_ref.uid),
                host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            };
            let host_network = config.host_network;
            match self.ctx.runtime.ensure_sandbox(&config).await {
                // A pod on the node's network has the node's address, as the kubelet reports
                // it (the collector binds its metrics port there; Prometheus finds it there).
                Ok(mut s) => {
                    if host_network {
                        s.ip = self.ctx.node_ip.clone();
                    }
                    self.sandbox = Some(s);
                }
                Err(e) => {
                    self.ctx.events.pod(
                        &self.pod,
                        None,
                        "Warning",
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    self.wake_in(Duration::from_secs(5));
                    return Ok(());
                }
            }
        }
        let policy = self.restart_policy();
        let spec = self.pod.spec.clone().unwrap_or_default();
        for c in spec.init_containers.iter().flatten() {
            let (latest, _) = instances(containers, &c.name, true);
            match latest.map(|l| &l.state) {
                None => {
                    self.start(c, 0, true, &volumes).await;
                    return Ok(());
                }
                Some(ContainerState::Running { .. } | ContainerState::Created) => return Ok(()),
                Some(ContainerState::Exited { exit_code: 0, .. }) => {
                    self.waiting.remove(&c.name);
                }
                Some(ContainerState::Exited {
                    exit_code,
                    finished_at,
                    ..
                }) => {
                    if policy == "Never" {
                        self.failure = Some((
                            "Failed".into(),
                            format!(
                                "init container {} failed with exit code {exit_code}",
                                c.name
                            ),
                        ));
                        return Ok(());
                    }
                    let attempt = latest.map_or(0, |l| l.attempt) + 1;
                    self.restart_with_backoff(c, attempt, true, *finished_at, &volumes)
                        .await;
                    return Ok(());
                }
            }
        }
        for c in &spec.containers {
            let (latest, _) = instances(containers, &c.name, false);
            match latest.map(|l| (&l.state, l)) {
                None => self.start(c, 0, false, &volumes).await,
                Some((ContainerState::Running { .. }, info)) => {
                    if self
                        .probes
                        .get(&info.id)
                        .is_some_and(|p| p.state.borrow().failed)
                    {
                        let grace =
                            spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
                        self.ctx.events.pod(
                            &self.pod,
                            Some(&c.name),
                            "Normal",
                            "Killing",
                            format!(
                                "Container {} failed liveness probe, will be restarted",
                                c.name
                            ),
                        );
                        self.stop_one(c, info, Duration::from_secs(grace)).await;
                        self.changed.notify_one();
                    }
                }
                Some((ContainerState::Created, _)) => {}
                Some((
                    ContainerState::Exited {
                        exit_code,
                        finished_at,
                        ..
                    },
                    info,
                )) => {
                    if restart_needed(&policy, *exit_code) {
                        self.restart_with_backoff(
                            c,
                            info.attempt + 1,
                            false,
                            *finished_at,
                            &volumes,
                        )
                        .await;
                    } else {
                        self.waiting.remove(&c.name);
                    }
                }
            }
        }
        Ok(())
    }

    async fn restart_with_backoff(
        &mut self,
        c: &Container,
        attempt: u32,
        init: bool,
        finished: Timestamp,
        volumes: &HashMap<String, crate::volumes::PreparedVolume>,
    ) {
        let key = self.backoff_key(&c.name);
        let now = Timestamp::now();
        let remaining = self
            .ctx
            .backoff
            .lock()
            .expect("backoff")
            .remaining(&key, finished, now);
        if let Some(wait) = remaining {
            let delay = self.ctx.backoff.lock().expect("backoff").delay(&key);
            let message = format!(
                "back-off {} restarting failed container={} pod={}_{}({})",
                humanize(delay),
                c.name,
                self.pod_ref.name,
                self.pod_ref.namespace,
                self.pod_ref.uid
            );
            if self
                .waiting
                .get(&c.name)
                .is_none_or(|w| w.reason != "CrashLoopBackOff")
            {
                self.ctx.events.pod(
                    &self.pod,
                    Some(&c.name),
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container",
                );
            }
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message,
                },
            );
            self.wake_in(wait);
            return;
        }
        self.ctx
            .backoff
            .lock()
            .expect("backoff")
            .next(&key, finished);
        self.start(c, attempt, init, volumes).await;
    }

    /// Start, stop or forget probe tasks so exactly the running containers have one.
    fn reconcile_probes(&mut self, containers: &[ContainerInfo]) {
        let running: HashMap<&str, &ContainerInfo> = containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }) && !c.init)
            .map(|c| (c.id.as_str(), c))
            .collect();
        self.probes.retain(|id, h| {
            let keep = running.contains_key(id.as_str());
            if !keep {
                h.stop.cancel();
            }
            keep
        });
        let Some(ip) = self.sandbox.as_ref().map(|s| s.ip.clone()) else {
            return;
        };
        for (id, info) in running {
            if self.probes.contains_key(id) {
                continue;
            }
            let Some(spec) = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == info.name))
                .cloned()
            else {
                continue;
            };
            let initial = ProbeState {
                started: spec.startup_probe.is_none(),
                ready: spec.readiness_probe.is_none(),
                failed: false,
            };
            let (tx, rx) = watch::channel(initial);
            let stop = CancellationToken::new();
            tokio::spawn(probe_loop(
                self.ctx.runtime.clone(),
                spec,
                id.to_owned(),
                ip.clone(),
                tx,
                self.changed.clone(),
                self.probe_events.0.clone(),
                stop.clone(),
            ));
            self.probes
                .insert(id.to_owned(), ProbeHandle { state: rx, stop });
        }
    }

    /// Keep the latest two instances of each container (for `logs --previous`).
    async fn prune_instances(&self, containers: &[ContainerInfo]) {
        let mut by_name: HashMap<(&str, bool), Vec<&ContainerInfo>> = HashMap::new();
        for c in containers {
            by_name
                .entry((c.name.as_str(), c.init))
                .or_default()
                .push(c);
        }
        for (_, mut list) in by_name {
            list.sort_by_key(|c| std::cmp::Reverse(c.attempt));
            for old in list
                .iter()
                .skip(2)
                .filter(|c| !matches!(c.state, ContainerState::Running { .. }))
            {
                let _ = self.ctx.runtime.remove_container(&old.id).await;
            }
        }
    }

    async fn publish_status(&mut self, containers: &[ContainerInfo]) -> anyhow::Result<()> {
        let probes: HashMap<String, ProbeState> = self
            .probes
            .iter()
            .map(|(id, h)| (id.clone(), *h.state.borrow()))
            .collect();
        let status = compute(&StatusInput {
            pod: &self.pod,
            containers,
            probes: &probes,
            waiting: &self.waiting,
            pod_ip: self.sandbox.as_ref().map(|s| s.ip.as_str()),
            host_ip: &self.ctx.node_ip,
            start_time: &self.start_time,
            failure: self.failure.as_ref().map(|(r, m)| (r.as_str(), m.as_str())),
        });
        let old = serde_json::to_value(&self.pod.status).unwrap_or(Value::Null);
        if self.last_status.as_ref() == Some(&status) && old == status {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.pod_ref.namespace);
        let patch = json!({"status": status});
        let params = PatchParams::default();
        let mut result = api
            .patch_status(&self.pod_ref.name, &params, &Patch::Merge(&patch))
            .await;
        if let (Err(kube::Error::Api(e)), Some(owner)) = (&result, &self.mirror_owner)
            && e.code == 404
        {
            // The mirror pod is missing (first run, or someone deleted it): (re)create it.
            let mirror = crate::static_pods::mirror_of(&self.pod, owner);
            api.create(&kube::api::PostParams::default(), &mirror)
                .await?;
            result = api
                .patch_status(&self.pod_ref.name, &params, &Patch::Merge(&patch))
                .await;
        }
        match result {
            Ok(updated) => {
                if self.mirror_owner.is_none() {
                    self.pod = Arc::new(updated);
                } else {
                    // A static pod keeps its file spec and identity; only the status is shared.
                    let mut pod = (*self.pod).clone();
                    pod.status = updated.status;
                    self.pod = Arc::new(pod);
                }
                self.last_status = Some(status);
                self.ctx.metrics.status_updates.inc();
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `10s`, `1m20s`, `5m0s` as kubelet prints backoff durations.
pub(crate) fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}
