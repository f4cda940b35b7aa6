//! Resource usage of the node, its pods and their containers (cAdvisor's role in the kubelet).
//!
//! A housekeeping loop samples every running container through the runtime (Docker stats, or
//! the cgroup of a process container), each pod's network namespace and the host, and keeps the
//! latest [`Snapshot`]. The HTTP endpoints (`/metrics/resource`, `/metrics/cadvisor`,
//! `/stats/summary`) render that snapshot, so scrapers never wait on the runtime and every
//! sample carries the time it was taken. CPU rates (`usageNanoCores`) are computed between two
//! consecutive samples of the same container; a restarted container starts over.

pub(crate) mod host;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::runtime::{ContainerIdentity, ContainerState, ContainerStats, InterfaceStats, PodRef};

/// How often the writable layer size is measured (Docker computes it by walking the layer).
const ROOTFS_EVERY: Duration = Duration::from_secs(60);
/// Runtime stats calls in flight at once.
const CONCURRENCY: usize = 8;

/// One container's sample.
#[derive(Debug, Clone)]
pub(crate) struct ContainerSample {
    /// Runtime id.
    pub id: String,
    pub pod: PodRef,
    pub name: String,
    pub image: String,
    pub identity: ContainerIdentity,
    pub started_at: Timestamp,
    pub at: Timestamp,
    pub usage: ContainerStats,
    /// CPU rate since the previous sample of this container, nanocores.
    pub nano_cores: Option<u64>,
    pub logs_bytes: u64,
    pub rootfs_bytes: Option<u64>,
    pub cpu_request_milli: i64,
    pub cpu_limit_milli: i64,
    pub memory_limit_bytes: i64,
}

/// One pod's network.
#[derive(Debug, Clone)]
pub(crate) struct PodSample {
    pub pod: PodRef,
    pub start_time: Option<Timestamp>,
    pub network: Option<(Timestamp, Vec<InterfaceStats>)>,
    /// Sum of its containers' CPU rates, when each has one.
    pub nano_cores: Option<u64>,
}

/// The host.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeSample {
    pub at: Timestamp,
    pub cpu_nanos: u64,
    pub nano_cores: Option<u64>,
    pub memory_total: u64,
    pub memory_available: u64,
    pub memory_working_set: u64,
    pub network: Vec<InterfaceStats>,
    pub fs_capacity: u64,
    pub fs_available: u64,
    pub fs_used: u64,
    pub cpus: u64,
}

/// Everything one housekeeping round saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub node: NodeSample,
    pub containers: Vec<ContainerSample>,
    pub pods: Vec<PodSample>,
    /// Containers whose stats could not be read this round.
    pub errors: u64,
}

/// Collector state shared with the HTTP handlers.
#[derive(Default)]
pub(crate) struct Stats {
    current: RwLock<Arc<Snapshot>>,
    /// Previous CPU sample per container id (and `node`): when, cumulative nanoseconds.
    previous: Mutex<HashMap<String, (Timestamp, u64)>>,
    identities: Mutex<HashMap<String, ContainerIdentity>>,
    rootfs: Mutex<HashMap<String, (Instant, Option<u64>)>>,
    metrics: StatsMetrics,
}

/// The loop's own series.
#[derive(Debug, Clone)]
pub(crate) struct StatsMetrics {
    rounds: Counter,
    errors: Counter,
    duration: Histogram,
}

impl Default for StatsMetrics {
    fn default() -> Self {
        StatsMetrics {
            rounds: Counter::default(),
            errors: Counter::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        }
    }
}

impl StatsMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("skiff_agent_stats");
        r.register(
            "housekeeping_rounds",
            "Resource usage sampling rounds",
            self.rounds.clone(),
        );
        r.register(
            "housekeeping_errors",
            "Containers (or the runtime) whose usage could not be read in a round",
            self.errors.clone(),
        );
        r.register(
            "housekeeping_duration_seconds",
            "Time to sample every container of the node",
            self.duration.clone(),
        );
    }
}

impl Stats {
    /// The latest snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().expect("stats lock").clone()
    }

    pub(crate) fn metrics(&self) -> &StatsMetrics {
        &self.metrics
    }

    /// The rate since the previous sample under `key`, and remember this one.
    fn rate(&self, key: &str, at: Timestamp, cumulative: u64) -> Option<u64> {
        let mut previous = self.previous.lock().expect("stats lock");
        let rate = previous.get(key).and_then(|(then, before)| {
            let dt = at.as_nanosecond() - then.as_nanosecond();
            (dt > 0 && cumulative >= *before)
                .then(|| ((cumulative - before) as f64 / dt as f64 * 1e9) as u64)
        });
        previous.insert(key.to_owned(), (at, cumulative));
        rate
    }

    /// Forget containers that are gone.
    fn retain(&self, live: &std::collections::HashSet<String>) {
        self.previous
            .lock()
            .expect("stats lock")
            .retain(|k, _| k == "node" || live.contains(k));
        self.identities
            .lock()
            .expect("stats lock")
            .retain(|k, _| live.contains(k));
        self.rootfs
            .lock()
            .expect("stats lock")
            .retain(|k, _| live.contains(k));
    }
}

fn quantity(
    resources: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
    name: &str,
    milli: bool,
) -> i64 {
    resources
        .and_then(|r| r.get(name))
        .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
        .map_or(0, |q| if milli { q.milli() } else { q.value() })
}

/// (cpu request milli, cpu limit milli, memory limit bytes) of a container in the pod spec.
fn spec_resources(pod: Option<&Pod>, container: &str) -> (i64, i64, i64) {
    let Some(spec) = pod.and_then(|p| p.spec.as_ref()) else {
        return (0, 0, 0);
    };
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container);
    let r = c.and_then(|c| c.resources.as_ref());
    let requests = r.and_then(|r| r.requests.as_ref());
    let limits = r.and_then(|r| r.limits.as_ref());
    (
        quantity(requests, "cpu", true),
        quantity(limits, "cpu", true),
        quantity(limits, "memory", false),
    )
}

/// Sample everything once.
async fn collect(ctx: &Ctx, stats: &Stats) -> anyhow::Result<Snapshot> {
    let containers = ctx.runtime.list_containers().await?;
    let pods: HashMap<String, Arc<Pod>> = ctx.pods.read().expect("pods lock").clone();
    let mut by_state: HashMap<&str, i64> = [("running", 0), ("exited", 0), ("created", 0)]
        .into_iter()
        .collect();
    for c in &containers {
        let state = match c.state {
            ContainerState::Running { .. } => "running",
            ContainerState::Exited { .. } => "exited",
            _ => "created",
        };
        *by_state.entry(state).or_default() += 1;
    }
    for (state, n) in by_state {
        ctx.metrics
            .running_containers
            .get_or_create(&crate::metrics::StateLabels {
                container_state: state.to_owned(),
            })
            .set(n);
    }
    let running: Vec<_> = containers
        .into_iter()
        .filter_map(|c| match c.state {
            ContainerState::Running { started_at } => Some((c, started_at)),
            _ => None,
        })
        .collect();
    let live: std::collections::HashSet<String> =
        running.iter().map(|(c, _)| c.id.clone()).collect();
    stats.retain(&live);

    let samples: Vec<Option<ContainerSample>> = futures::stream::iter(running)
        .map(|(c, started_at)| {
            let pod = pods.get(&c.pod.uid).cloned();
            async move {
                let usage = ctx.runtime.stats(&c.id).await.ok()?;
                let at = Timestamp::now();
                let cached = stats
                    .identities
                    .lock()
                    .expect("stats lock")
                    .get(&c.id)
                    .cloned();
                let identity = match cached {
                    Some(i) => i,
                    None => {
                        let i = ctx.runtime.identity(&c.id).await.unwrap_or_default();
                        stats
                            .identities
                            .lock()
                            .expect("stats lock")
                            .insert(c.id.clone(), i.clone());
                        i
                    }
                };
                // Measured by a separate slow pass (Docker walks the layer to size it).
                let rootfs_bytes = stats
                    .rootfs
                    .lock()
                    .expect("stats lock")
                    .get(&c.id)
                    .and_then(|(_, b)| *b);
                let logs_bytes = c.log_path.parent().map_or(0, host::dir_bytes);
                let (cpu_request_milli, cpu_limit_milli, memory_limit_bytes) =
                    spec_resources(pod.as_deref(), &c.name);
                // A restarted container has a new id, so its rate starts over.
                let nano_cores = stats.rate(&c.id, at, usage.cpu_usage_nanos);
                Some(ContainerSample {
                    id: c.id,
                    pod: c.pod,
                    name: c.name,
                    image: c.image,
                    identity,
                    started_at,
                    at,
                    usage,
                    nano_cores,
                    logs_bytes,
                    rootfs_bytes,
                    cpu_request_milli,
                    cpu_limit_milli,
                    memory_limit_bytes,
                })
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let errors = samples.iter().filter(|s| s.is_none()).count() as u64;
    let mut containers: Vec<ContainerSample> = samples.into_iter().flatten().collect();
    containers.sort_by(|a, b| {
        (&a.pod.namespace, &a.pod.name, &a.name).cmp(&(&b.pod.namespace, &b.pod.name, &b.name))
    });

    // Pod networks, several at once (each is a runtime call).
    let uids: Vec<String> = pods
        .keys()
        .filter(|uid| containers.iter().any(|c| &c.pod.uid == *uid))
        .cloned()
        .collect();
    let mut networks: HashMap<String, (Timestamp, Vec<InterfaceStats>)> =
        futures::stream::iter(uids)
            .map(|uid| async move {
                let network = ctx.runtime.pod_network(&uid).await.ok().flatten();
                network.map(|n| (uid, (Timestamp::now(), n)))
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(futures::future::ready)
            .collect()
            .await;
    let mut pod_samples = Vec::new();
    for pod in pods.values() {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let own: Vec<&ContainerSample> = containers.iter().filter(|c| c.pod.uid == uid).collect();
        if own.is_empty() {
            continue;
        }
        let network = networks.remove(&uid);
        pod_samples.push(PodSample {
            pod: own[0].pod.clone(),
            start_time: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0),
            network,
            nano_cores: own.iter().map(|c| c.nano_cores).sum(),
        });
    }
    pod_samples
        .sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));

    let at = Timestamp::now();
    let cpu_nanos = host::cpu_nanos();
    let memory_total = host::meminfo("MemTotal");
    let memory_available = host::meminfo("MemAvailable");
    let (fs_capacity, fs_available, fs_used) = host::filesystem(&ctx.config.root_dir);
    let node = NodeSample {
        at,
        cpu_nanos,
        nano_cores: stats.rate("node", at, cpu_nanos),
        memory_total,
        memory_available,
        memory_working_set: memory_total.saturating_sub(memory_available),
        network: host::network(),
        fs_capacity,
        fs_available,
        fs_used,
        cpus: ctx.node_cpu.max(1) as u64,
    };
    Ok(Snapshot {
        node,
        containers,
        pods: pod_samples,
        errors,
    })
}

/// Size the writable layers that are due (never measured, or a minute ago), one at a time, so
/// the expensive call never delays a housekeeping round.
async fn size_layers(ctx: Arc<Ctx>, stats: Arc<Stats>) {
    let due: Vec<String> = {
        let snapshot = stats.snapshot();
        let sized = stats.rootfs.lock().expect("stats lock");
        snapshot
            .containers
            .iter()
            .map(|c| c.id.clone())
            .filter(|id| {
                sized
                    .get(id)
                    .is_none_or(|(when, _)| when.elapsed() >= ROOTFS_EVERY)
            })
            .collect()
    };
    for id in due {
        let bytes = ctx.runtime.writable_layer_bytes(&id).await.ok().flatten();
        stats
            .rootfs
            .lock()
            .expect("stats lock")
            .insert(id, (Instant::now(), bytes));
    }
}

/// The housekeeping loop: sample every `interval` until `shutdown`; after a failed round
/// (the runtime did not answer) wait twice as long, up to a minute.
pub(crate) async fn run(ctx: Arc<Ctx>, interval: Duration, shutdown: CancellationToken) {
    let stats = ctx.stats.clone();
    let mut wait = Duration::ZERO;
    let mut sizing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let span = tracing::debug_span!("stats_housekeeping");
        let started = Instant::now();
        let result = tracing::Instrument::instrument(collect(&ctx, &stats), span).await;
        stats.metrics.rounds.inc();
        stats
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(snapshot) => {
                stats.metrics.errors.inc_by(snapshot.errors);
                *stats.current.write().expect("stats lock") = Arc::new(snapshot);
                wait = interval;
                if sizing.as_ref().is_none_or(|t| t.is_finished()) {
                    sizing = Some(tokio::spawn(size_layers(ctx.clone(), stats.clone())));
                }
            }
            Err(e) => {
                stats.metrics.errors.inc();
                wait = (wait * 2).clamp(interval, Duration::from_secs(60).max(interval));
                tracing::warn!(error = %e, retry_in = ?wait, "sampling container usage failed");
            }
        }
    }
}
