//! The scheduler and the controller manager: run inside `skiffd up`/`server`, or on their own
//! (`skiffd scheduler`, `skiffd controller-manager`) against any Skiff API server. Either way they
//! campaign for their Lease (`kube-system/kube-scheduler`, `kube-system/kube-controller-manager`)
//! so several copies can run and one acts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use skiff_leader::{LeaderElectionConfig, LeaderMetrics};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 15s or 500ms: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{text:?} must not be negative"))
}

/// Leader-election flags, named as kube-scheduler's and kube-controller-manager's.
#[derive(Args, Debug, Clone)]
pub(crate) struct LeaderArgs {
    /// Campaign for a Lease before acting, so several copies can run (`--leader-elect=false`
    /// to act unconditionally).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a standby waits after last seeing the leader renew before taking over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader tries to renew before it stops acting.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
}

impl LeaderArgs {
    fn config(&self, lease: &str, identity: &str) -> anyhow::Result<LeaderElectionConfig> {
        anyhow::ensure!(
            self.leader_elect_renew_deadline < self.leader_elect_lease_duration,
            "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration"
        );
        anyhow::ensure!(
            self.leader_elect_retry_period < self.leader_elect_renew_deadline,
            "--leader-elect-retry-period must be shorter than --leader-elect-renew-deadline"
        );
        let mut config = LeaderElectionConfig::new(lease, identity.to_owned());
        config.lease_duration = self.leader_elect_lease_duration;
        config.renew_deadline = self.leader_elect_renew_deadline;
        config.retry_period = self.leader_elect_retry_period;
        Ok(config)
    }
}

/// Everything the two components' metrics need, registered once per process.
#[derive(Clone, Default)]
pub(crate) struct ControlMetrics {
    pub(crate) scheduler: skiff_scheduler::SchedulerMetrics,
    pub(crate) controllers: skiff_controllers::ControllerMetrics,
    pub(crate) leader: LeaderMetrics,
}

impl ControlMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        self.scheduler.register(registry);
        self.controllers.register(registry);
        self.leader.register(registry);
    }
}

/// Run the scheduler (behind its Lease unless leader election is off) until `shutdown`.
pub(crate) fn spawn_scheduler(
    client: kube::Client,
    leader: &LeaderArgs,
    identity: &str,
    metrics: &ControlMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let scheduler_metrics = metrics.scheduler.clone();
    let start = move |client: kube::Client, token: CancellationToken| {
        let handle = skiff_scheduler::start(
            client,
            skiff_scheduler::SchedulerConfig::default(),
            scheduler_metrics.clone(),
            token,
        );
        async move {
            let _ = handle.await;
        }
    };
    spawn_elected(
        "kube-scheduler",
        client,
        leader,
        identity,
        metrics,
        shutdown,
        start,
    )
}

/// Run the controllers (behind their Lease unless leader election is off) until `shutdown`.
pub(crate) fn spawn_controllers(
    client: kube::Client,
    config: skiff_controllers::ControllersConfig,
    leader: &LeaderArgs,
    identity: &str,
    metrics: &ControlMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let controller_metrics = metrics.controllers.clone();
    let start = move |client: kube::Client, token: CancellationToken| {
        let controllers =
            skiff_controllers::start(client, config.clone(), controller_metrics.clone(), token);
        controllers.wait()
    };
    spawn_elected(
        "kube-controller-manager",
        client,
        leader,
        identity,
        metrics,
        shutdown,
        start,
    )
}

/// Run `start` until `shutdown`: directly when leader election is off, else each time this
/// process wins the Lease `kube-system/<lease>` (stopped when it loses it).
fn spawn_elected<F, Fut>(
    lease: &str,
    client: kube::Client,
    leader: &LeaderArgs,
    identity: &str,
    metrics: &ControlMetrics,
    shutdown: CancellationToken,
    start: F,
) -> anyhow::Result<JoinHandle<()>>
where
    F: Fn(kube::Client, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if !leader.leader_elect {
        return Ok(tokio::spawn(start(client, shutdown)));
    }
    let config = leader.config(lease, identity)?;
    let lead_client = client.clone();
    Ok(tokio::spawn(skiff_leader::run(
        client,
        config,
        metrics.leader.clone(),
        shutdown,
        move |token| start(lead_client.clone(), token),
    )))
}

/// Serve `/metrics`, `/healthz`, `/livez` and `/readyz` over plain HTTP (kube-scheduler's and
/// kube-controller-manager's secure ports serve these; a standalone Skiff component keeps them
/// on an address the operator chooses, loopback by default).
pub(crate) async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    Ok(serve_metrics_at(addr, registry, shutdown).await?.0)
}

/// [`serve_metrics`], also returning the address bound (for port 0).
pub(crate) async fn serve_metrics_at(
    addr: SocketAddr,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<(JoinHandle<()>, SocketAddr)> {
    use axum::routing::get;
    let mut registry = registry;
    registry.register_collector(Box::new(skiff_telemetry::ProcessCollector));
    let registry = std::sync::Arc::new(registry);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let registry = registry.clone();
                async move { skiff_telemetry::metrics_response(&registry, &headers) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "serving /metrics and /healthz");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok((task, bound))
}

/// The HorizontalPodAutoscaler controller's flags, named as kube-controller-manager's.
#[derive(Args, Debug, Clone)]
pub(crate) struct HpaArgs {
    /// How often every HorizontalPodAutoscaler is evaluated.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: Duration,
    /// How long recent higher recommendations hold a scale-down back (no `behavior` set).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// The band around the target within which no scale happens.
    #[arg(long, default_value_t = 0.1)]
    horizontal_pod_autoscaler_tolerance: f64,
    /// After a pod starts, its CPU samples count only once it has been ready for a window.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_cpu_initialization_period: Duration,
    /// A pod that turns unready this soon after starting is taken as never ready.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_initial_readiness_delay: Duration,
}

impl HpaArgs {
    pub(crate) fn config(&self) -> skiff_controllers::HpaConfig {
        skiff_controllers::HpaConfig {
            sync_period: self
                .horizontal_pod_autoscaler_sync_period
                .max(Duration::from_millis(100)),
            downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
            tolerance: self.horizontal_pod_autoscaler_tolerance.max(0.0),
            cpu_initialization_period: self.horizontal_pod_autoscaler_cpu_initialization_period,
            initial_readiness_delay: self.horizontal_pod_autoscaler_initial_readiness_delay,
        }
    }
}

/// Flags common to the standalone components.
#[derive(Args, Debug, Clone)]
pub(crate) struct StandaloneArgs {
    /// kubeconfig for the API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where to serve /metrics and /healthz (plain HTTP).
    #[arg(long)]
    metrics_bind_address: Option<SocketAddr>,
    #[command(flatten)]
    leader: LeaderArgs,
}

/// `skiffd scheduler`.
#[derive(Args, Debug, Clone)]
pub(crate) struct SchedulerArgs {
    #[command(flatten)]
    common: StandaloneArgs,
}

/// `skiffd controller-manager`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ControllerManagerArgs {
    #[command(flatten)]
    common: StandaloneArgs,
    /// The cluster CA certificate the CSR signer issues with (PEM); without it, and
    /// `--cluster-signing-key-file`, CSRs are approved but not signed.
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The cluster CA key (PEM).
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// Seconds a node may go without a heartbeat before it is marked Unknown.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period_secs: u64,
    #[command(flatten)]
    hpa: HpaArgs,
}

async fn standalone(
    common: &StandaloneArgs,
    default_metrics_port: u16,
    spawn: impl FnOnce(
        kube::Client,
        &LeaderArgs,
        &str,
        &ControlMetrics,
        CancellationToken,
    ) -> anyhow::Result<JoinHandle<()>>,
) -> anyhow::Result<()> {
    let rest_metrics = crate::rest_client::RestClientMetrics::default();
    let client = crate::up::kube_client_counted(&common.kubeconfig, &rest_metrics)
        .await
        .with_context(|| format!("reading {}", common.kubeconfig.display()))?;
    let metrics = ControlMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    rest_metrics.register(&mut registry);
    let shutdown = CancellationToken::new();
    let addr = common
        .metrics_bind_address
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_metrics_port)));
    let server = serve_metrics(addr, registry, shutdown.clone()).await?;
    let identity = skiff_leader::default_identity();
    let component = spawn(
        client,
        &common.leader,
        &identity,
        &metrics,
        shutdown.clone(),
    )?;
    crate::up::shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = component.await;
    let _ = server.await;
    Ok(())
}

/// Run `skiffd scheduler`.
pub(crate) async fn run_scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    standalone(&args.common, 10259, spawn_scheduler).await
}

/// Run `skiffd controller-manager`.
pub(crate) async fn run_controller_manager(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let ca = match (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        (Some(cert), Some(key)) => Some(skiff_controllers::CertificateAuthority {
            cert_pem: std::fs::read_to_string(cert)
                .with_context(|| format!("reading {}", cert.display()))?,
            key_pem: std::fs::read_to_string(key)
                .with_context(|| format!("reading {}", key.display()))?,
        }),
        _ => None,
    };
    let config = skiff_controllers::ControllersConfig {
        ca,
        clock: None,
        node_monitor_grace_period: Some(Duration::from_secs(
            args.node_monitor_grace_period_secs.max(1),
        )),
        hpa: args.hpa.config(),
    };
    standalone(
        &args.common,
        10257,
        move |client, leader, identity, metrics, shutdown| {
            spawn_controllers(client, config, leader, identity, metrics, shutdown)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_like_upstream_flags() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
