//! Pods bound to this node: a watch on `spec.nodeName=<node>` feeds one worker per pod; after
//! each (re)list, workers of pods that vanished are told so, and containers of pods the API no
//! longer knows are removed.

mod start;
pub(crate) mod status;
mod terminate;
pub(crate) mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use worker::Update;

/// Watch this node's pods and keep one worker per pod until `shutdown`.
pub(crate) async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let span = tracing::info_span!("pod_manager", node = %ctx.config.node_name);
    tracing::Instrument::instrument(manage(ctx, shutdown), span).await;
}

async fn manage(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, mpsc::Sender<Update>> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut relist = tokio::time::interval(RELIST);
    let mut last_relist: Option<std::time::Instant> = None;
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut states: HashMap<String, bool> = HashMap::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = relist.tick() => {
                let started = std::time::Instant::now();
                if let Some(previous) = last_relist.replace(started) {
                    ctx.metrics.pleg_relist_interval.observe(previous.elapsed().as_secs_f64());
                }
                relist_containers(&ctx, &workers, &mut states).await;
                ctx.metrics.pleg_relist_duration.observe(started.elapsed().as_secs_f64());
                continue;
            }
            e = events.next() => match e { Some(e) => e, None => break },
        };
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.insert(uid);
                }
                apply(&ctx, &mut workers, pod, &shutdown).await;
            }
            Ok(Event::InitDone) => {
                let gone: Vec<String> = workers
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    if let Some(tx) = workers.remove(&uid) {
                        let _ = tx.send(Update::Gone).await;
                    }
                    ctx.pods.write().expect("pods lock").remove(&uid);
                }
                remove_orphans(&ctx, &listed).await;
            }
            Ok(Event::Apply(pod)) => apply(&ctx, &mut workers, pod, &shutdown).await,
            Ok(Event::Delete(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                ctx.pods.write().expect("pods lock").remove(&uid);
                if let Some(tx) = workers.remove(&uid) {
                    let _ = tx.send(Update::Gone).await;
                }
            }
            Err(e) => {
                ctx.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "pod watch failed; retrying");
            }
        }
        ctx.metrics.running_pods.set(workers.len() as i64);
    }
}

async fn apply(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, mpsc::Sender<Update>>,
    pod: Pod,
    shutdown: &CancellationToken,
) {
    // Mirror pods are run from their manifest files, not from the API.
    if crate::static_pods::is_mirror(&pod) {
        return;
    }
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let pod = Arc::new(pod);
    ctx.pods
        .write()
        .expect("pods lock")
        .insert(uid.clone(), pod.clone());
    if let Some(tx) = workers.get(&uid)
        && tx.send(Update::Pod(pod.clone())).await.is_ok()
    {
        return;
    }
    let (tx, rx) = mpsc::channel(16);
    workers.insert(uid, tx);
    tokio::spawn(worker::run(ctx.clone(), pod, rx, shutdown.clone()));
}

/// How often containers are relisted to notice exits (kubelet's PLEG period).
const RELIST: std::time::Duration = std::time::Duration::from_secs(1);

/// One runtime listing; wake the workers whose containers started, exited or vanished.
async fn relist_containers(
    ctx: &Arc<Ctx>,
    workers: &HashMap<String, mpsc::Sender<Update>>,
    states: &mut HashMap<String, bool>,
) {
    let Ok(now) = ctx.runtime.container_states().await else {
        return;
    };
    let mut changed: HashSet<String> = HashSet::new();
    let mut seen = HashMap::with_capacity(now.len());
    for (id, uid, running) in now {
        if states.get(&id) != Some(&running) {
            changed.insert(uid.clone());
        }
        seen.insert(id, (uid, running));
    }
    *states = seen
        .into_iter()
        .map(|(id, (_, running))| (id, running))
        .collect();
    for uid in changed {
        if let Some(tx) = workers.get(&uid) {
            let _ = tx.try_send(Update::ContainersChanged);
        }
    }
}

/// Containers (and log directories) of pods the API no longer has.
async fn remove_orphans(ctx: &Arc<Ctx>, known: &HashSet<String>) {
    let Ok(all) = ctx.runtime.list_containers().await else {
        return;
    };
    // Static pods are known to the agent without the API (registered, or about to be).
    let mut local: HashSet<String> = ctx
        .pods
        .read()
        .expect("pods lock")
        .keys()
        .cloned()
        .collect();
    local.extend(crate::static_pods::manifest_uids(ctx));
    let mut orphans = HashSet::new();
    for c in all
        .into_iter()
        .filter(|c| !known.contains(&c.pod.uid) && !local.contains(&c.pod.uid))
    {
        tracing::info!(pod = %c.pod.name, container = %c.name, "removing container of a pod that no longer exists");
        let _ = ctx
            .runtime
            .stop_container(&c.id, std::time::Duration::from_secs(2))
            .await;
        let _ = ctx.runtime.remove_container(&c.id).await;
        orphans.insert(c.pod);
    }
    for pod in orphans {
        let _ = ctx.runtime.remove_sandbox(&pod).await;
        let _ = std::fs::remove_dir_all(ctx.pod_dir(&pod.uid));
        ctx.remove_pod_logs(&pod);
    }
}
