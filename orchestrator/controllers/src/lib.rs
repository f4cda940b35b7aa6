//! Skiff's controllers: kube-controller-manager's role. Each controller is one module holding one
//! kube-runtime reconcile loop that talks to the API server like any other client, so anything
//! that works here works for a kube-rs operator on Skiff.

pub mod certificates;
mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod garbage_collector;
mod history;
mod hpa;
mod informers;
mod job;
mod metrics;
mod namespace;
mod node_lifecycle;
mod replicaset;
mod runner;
mod statefulset;
mod workload;
mod workqueue;

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use certificates::CertificateAuthority;
pub use cronjob::{Clock, SystemClock};
pub use hpa::HpaConfig;
pub use metrics::ControllerMetrics;

/// What the controllers need beyond an API client.
#[derive(Clone, Default)]
pub struct ControllersConfig {
    /// The cluster CA; without it the CSR signer does not run (approval still does).
    pub ca: Option<CertificateAuthority>,
    /// The controllers' clock (the system clock when `None`); tests substitute their own.
    pub clock: Option<Arc<dyn Clock>>,
    /// How long a node may go without a heartbeat before it is Unknown (40 s when `None`).
    pub node_monitor_grace_period: Option<std::time::Duration>,
    /// The HorizontalPodAutoscaler controller's timings and tolerance.
    pub hpa: HpaConfig,
}

/// The running controllers.
pub struct Controllers {
    tasks: JoinSet<()>,
}

/// Start every controller. They stop when `shutdown` is cancelled.
pub fn start(
    client: kube::Client,
    config: ControllersConfig,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) -> Controllers {
    let mut tasks = JoinSet::new();
    let mut informers = informers::Informers::new(&client);
    let recorder =
        |component| skiff_events::start(client.clone(), component, String::new(), shutdown.clone());

    let rs_ctx = Arc::new(replicaset::Ctx {
        client: client.clone(),
        pods: informers.pods.cache(),
        replicasets: informers.replicasets.cache(),
        events: recorder("replicaset-controller"),
        expectations: Default::default(),
    });
    tasks.spawn(replicaset::run(
        rs_ctx,
        informers.replicasets.subscribe(),
        informers.pods.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let deploy_ctx = Arc::new(deployment::Ctx {
        client: client.clone(),
        deployments: informers.deployments.cache(),
        replicasets: informers.replicasets.cache(),
        pods: informers.pods.cache(),
        events: recorder("deployment-controller"),
    });
    tasks.spawn(deployment::run(
        deploy_ctx,
        informers.deployments.subscribe(),
        informers.replicasets.subscribe(),
        informers.pods.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let endpoints_ctx = Arc::new(endpoints::Ctx {
        client: client.clone(),
        services: informers.services.cache(),
        pods: informers.pods.cache(),
    });
    tasks.spawn(endpoints::run(
        endpoints_ctx,
        informers.services.subscribe(),
        informers.pods.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let ds_ctx = Arc::new(daemonset::Ctx {
        client: client.clone(),
        daemonsets: informers.daemonsets.cache(),
        pods: informers.pods.cache(),
        nodes: informers.nodes.cache(),
        revisions: informers.revisions.cache(),
        events: recorder("daemonset-controller"),
        expectations: Default::default(),
    });
    tasks.spawn(daemonset::run(
        ds_ctx,
        informers.daemonsets.subscribe(),
        informers.pods.subscribe(),
        informers.nodes.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let sts_ctx = Arc::new(statefulset::Ctx {
        client: client.clone(),
        statefulsets: informers.statefulsets.cache(),
        pods: informers.pods.cache(),
        revisions: informers.revisions.cache(),
        events: recorder("statefulset-controller"),
        expectations: Default::default(),
    });
    tasks.spawn(statefulset::run(
        sts_ctx,
        informers.statefulsets.subscribe(),
        informers.pods.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let job_ctx = Arc::new(job::Ctx {
        client: client.clone(),
        jobs: informers.jobs.cache(),
        pods: informers.pods.cache(),
        events: recorder("job-controller"),
        expectations: Default::default(),
    });
    tasks.spawn(job::run(
        job_ctx,
        informers.jobs.subscribe(),
        informers.pods.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let clock: Arc<dyn Clock> = config
        .clock
        .clone()
        .unwrap_or_else(|| Arc::new(cronjob::SystemClock));
    let lifecycle_ctx = Arc::new(node_lifecycle::Ctx {
        client: client.clone(),
        nodes: informers.nodes.cache(),
        pods: informers.pods.cache(),
        events: recorder("node-controller"),
        clock: clock.clone(),
        grace: config
            .node_monitor_grace_period
            .unwrap_or(std::time::Duration::from_secs(40)),
    });
    tasks.spawn(node_lifecycle::run(
        lifecycle_ctx,
        metrics.clone(),
        shutdown.clone(),
    ));

    let cron_ctx = Arc::new(cronjob::Ctx {
        client: client.clone(),
        cronjobs: informers.cronjobs.cache(),
        jobs: informers.jobs.cache(),
        events: recorder("cronjob-controller"),
        clock: config
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(cronjob::SystemClock)),
    });
    tasks.spawn(cronjob::run(
        cron_ctx,
        informers.cronjobs.subscribe(),
        informers.jobs.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let hpa_ctx = Arc::new(hpa::Ctx {
        client: client.clone(),
        pods: informers.pods.cache(),
        events: recorder("horizontal-pod-autoscaler"),
        clock: config
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(cronjob::SystemClock)),
        config: config.hpa,
        histories: Default::default(),
        last_sync: Default::default(),
    });
    tasks.spawn(hpa::run(hpa_ctx, metrics.clone(), shutdown.clone()));

    let ns_ctx = Arc::new(namespace::Ctx {
        client: client.clone(),
        namespaces: informers.namespaces.cache(),
        kinds: Default::default(),
    });
    tasks.spawn(namespace::run(
        ns_ctx,
        informers.namespaces.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));

    tasks.spawn(garbage_collector(
        &mut informers,
        &client,
        &metrics,
        &shutdown,
    ));

    informers.start(&metrics, &mut tasks, &shutdown);
    tasks.spawn(certificates::approver::run(
        client.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    if let Some(ca) = config.ca {
        tasks.spawn(certificates::signer::run(
            client,
            Arc::new(ca),
            metrics,
            shutdown,
        ));
    }
    Controllers { tasks }
}

/// The garbage collector reads (and is woken by) every cache that holds owners or dependents.
fn garbage_collector(
    informers: &mut informers::Informers,
    client: &kube::Client,
    metrics: &ControllerMetrics,
    shutdown: &CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use garbage_collector::source;
    let i = informers;
    let sources = vec![
        source(i.pods.cache()),
        source(i.nodes.cache()),
        source(i.replicasets.cache()),
        source(i.deployments.cache()),
        source(i.daemonsets.cache()),
        source(i.statefulsets.cache()),
        source(i.jobs.cache()),
        source(i.cronjobs.cache()),
        source(i.revisions.cache()),
    ];
    let changes = Arc::new(tokio::sync::Notify::new());
    i.pods.notify_on(changes.clone());
    i.nodes.notify_on(changes.clone());
    i.replicasets.notify_on(changes.clone());
    i.deployments.notify_on(changes.clone());
    i.daemonsets.notify_on(changes.clone());
    i.statefulsets.notify_on(changes.clone());
    i.jobs.notify_on(changes.clone());
    i.cronjobs.notify_on(changes.clone());
    i.revisions.notify_on(changes.clone());
    let (pods, nodes, rss, deps, dss, stss, jobs, cjs, revs) = (
        i.pods.cache(),
        i.nodes.cache(),
        i.replicasets.cache(),
        i.deployments.cache(),
        i.daemonsets.cache(),
        i.statefulsets.cache(),
        i.jobs.cache(),
        i.cronjobs.cache(),
        i.revisions.cache(),
    );
    let ready = Box::pin(async move {
        pods.ready().await;
        nodes.ready().await;
        rss.ready().await;
        deps.ready().await;
        dss.ready().await;
        stss.ready().await;
        jobs.ready().await;
        cjs.ready().await;
        revs.ready().await;
    });
    garbage_collector::run(
        garbage_collector::Ctx {
            client: client.clone(),
            sources,
            ready,
        },
        changes,
        metrics.clone(),
        shutdown.clone(),
    )
}

impl Controllers {
    /// Wait for every controller to stop (after shutdown).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
