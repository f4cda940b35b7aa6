//! `skiffd up`: compose the components in one process and run until SIGINT/SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use skiff_agent::AgentMetrics;
use skiff_apiserver::{ApiServerConfig, Pki, ServingConfig};
use skiff_store::{SqliteStore, SqliteStoreConfig, StoreMetrics};
use tokio_util::sync::CancellationToken;

/// Flags of `skiffd up` / `skiffd server`.
#[derive(Args, Debug, Clone)]
pub(crate) struct UpArgs {
    /// Where state, certificates and the kubeconfig live.
    #[arg(long, env = "SKIFF_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// API server HTTPS port (0 = pick a free port).
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Also serve plain HTTP on 127.0.0.1 at this port, every request acting as admin (0 = pick).
    #[arg(long)]
    insecure_port: Option<u16>,
    /// Static bearer tokens: CSV lines `token,user,uid,"group1,group2"`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// The address other machines reach the API server at (published in
    /// `kube-public/cluster-info` for joining nodes; default: the bind address, or this host's
    /// first non-loopback address when bound to all interfaces).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Extra names or addresses for the API server certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Store maintenance (compaction, WAL checkpoint) interval in seconds.
    #[arg(long, default_value_t = 60)]
    store_maintenance_interval_secs: u64,
    /// Compaction keeps at least this many revisions.
    #[arg(long, default_value_t = 1000)]
    store_min_retained_revisions: i64,
    /// …and every revision younger than this many seconds.
    #[arg(long, default_value_t = 300)]
    store_retention_secs: u64,
    /// Seconds a node may go without a heartbeat before it is marked Unknown and tainted
    /// unreachable (kube-controller-manager's --node-monitor-grace-period).
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period_secs: u64,
    /// tolerationSeconds every pod gets for the not-ready NoExecute taint (kube-apiserver's
    /// --default-not-ready-toleration-seconds).
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds every pod gets for the unreachable NoExecute taint.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// A bootstrap token (`<6 chars>.<16 chars>` of [a-z0-9]) that never expires, kept in the
    /// cluster at every start, so agents can join unattended with `--token` (k3s's `--token`).
    #[arg(long, env = "SKIFF_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// Also copy the cluster CA certificate (public, no key) to this file, for agents joining
    /// with `--certificate-authority` (the compose stack shares it through a volume).
    #[arg(long)]
    publish_ca_cert: Option<PathBuf>,
    /// Do not start a node agent (`skiffd up` only).
    #[arg(long)]
    no_agent: bool,
    /// Port of the log search service (0 = pick a free port).
    #[arg(long, default_value_t = 9428)]
    search_port: u16,
    /// Address the log search service listens on. Beyond loopback, callers need a bearer token
    /// the cluster accepts (the collectors get one); callers on loopback need none.
    #[arg(long, default_value = "127.0.0.1")]
    search_bind_address: IpAddr,
    /// Run neither the log search service nor the log collector DaemonSet.
    #[arg(long)]
    disable_log_pipeline: bool,
    /// Whole UTC days of logs the search service keeps (today included).
    #[arg(long, default_value_t = 7)]
    log_retention_days: u32,
    /// Delete the oldest days of logs while the indexes are larger than this many MiB.
    #[arg(long)]
    log_max_size_mb: Option<u64>,
    /// Port of the metrics server (metrics.k8s.io) on 127.0.0.1 (0 = pick a free port).
    #[arg(long, default_value_t = 4443)]
    metrics_server_port: u16,
    /// How often the metrics server scrapes every node.
    #[arg(long, default_value = "15s", value_parser = crate::control::parse_duration)]
    metric_resolution: Duration,
    /// Do not run the metrics server (no `kubectl top`, no resource-metric autoscaling).
    #[arg(long)]
    disable_metrics_server: bool,
    /// The `cluster` label of every target in the Prometheus configuration written to
    /// `<data-dir>/prometheus.yml`.
    #[arg(long, default_value = "skiff")]
    cluster_name: String,
    /// Port of the scheduler's /metrics on 127.0.0.1 (kube-scheduler's 10259; 0 = pick).
    #[arg(long, default_value_t = 10259)]
    scheduler_metrics_port: u16,
    /// Port of the controller manager's /metrics on 127.0.0.1 (10257; 0 = pick).
    #[arg(long, default_value_t = 10257)]
    controller_manager_metrics_port: u16,
    /// Port of the object state exporter's /metrics (kube-state-metrics' role) on 127.0.0.1
    /// (0 = pick).
    #[arg(long, default_value_t = 8080)]
    state_metrics_port: u16,
    /// Do not run the scheduler in this process (run `skiffd scheduler` elsewhere).
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controllers in this process (run `skiffd controller-manager` elsewhere).
    #[arg(long)]
    disable_controller_manager: bool,
    #[command(flatten)]
    leader: crate::control::LeaderArgs,
    #[command(flatten)]
    hpa: crate::control::HpaArgs,
    #[command(flatten)]
    agent: crate::agent_flags::AgentArgs,
}

pub(crate) async fn kube_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(kube_config(kubeconfig).await?)?)
}

/// A kube client whose requests are counted in `metrics` (`rest_client_*`).
pub(crate) async fn kube_client_counted(
    kubeconfig: &std::path::Path,
    metrics: &crate::rest_client::RestClientMetrics,
) -> anyhow::Result<kube::Client> {
    metrics.client(kube_config(kubeconfig).await?)
}

async fn kube_config(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Config> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    Ok(
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await?,
    )
}

pub(crate) fn default_data_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/skiff");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d).join("skiff"),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".local/share/skiff"))
            .unwrap_or_else(|| PathBuf::from("skiff-data")),
    }
}

fn nix_is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
}

fn stable_identity(path: &std::path::Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_owned());
    }
    let identity = skiff_leader::default_identity();
    std::fs::write(path, &identity).with_context(|| format!("writing {}", path.display()))?;
    Ok(identity)
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

pub(crate) async fn run(args: UpArgs, with_agent: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    // endpoints.json says "everything is serving" (health checks wait for it): not yet.
    let _ = std::fs::remove_file(data_dir.join("endpoints.json"));
    let mut registry = prometheus_client::registry::Registry::default();
    let store_metrics = StoreMetrics::default();
    store_metrics.register(&mut registry);
    let mut store_config = SqliteStoreConfig::new(data_dir.join("state.db"));
    store_config.maintenance_interval =
        Duration::from_secs(args.store_maintenance_interval_secs.max(1));
    store_config.min_retained_revisions = args.store_min_retained_revisions;
    store_config.retention_window = Duration::from_secs(args.store_retention_secs);
    let store = SqliteStore::open(store_config, store_metrics).context("opening the store")?;
    // The agent serves its own metrics at /metrics on its port, as the kubelet does.
    let agent_metrics = AgentMetrics::default();
    // The scheduler and the controller manager serve their own /metrics, on their own ports,
    // as kube-scheduler and kube-controller-manager do.
    let control_metrics = crate::control::ControlMetrics::default();
    let mut scheduler_registry = prometheus_client::registry::Registry::default();
    control_metrics.scheduler.register(&mut scheduler_registry);
    control_metrics.leader.register(&mut scheduler_registry);
    let mut controllers_registry = prometheus_client::registry::Registry::default();
    control_metrics
        .controllers
        .register(&mut controllers_registry);
    control_metrics.leader.register(&mut controllers_registry);
    // The components share one admin client; its requests show in both registries.
    let rest_metrics = crate::rest_client::RestClientMetrics::default();
    rest_metrics.register(&mut scheduler_registry);
    rest_metrics.register(&mut controllers_registry);

    let bootstrap_token = match &args.bootstrap_token {
        Some(t) => Some(crate::token::parse_token(t).context("--bootstrap-token")?),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let mut config = ApiServerConfig::new(&data_dir);
    let collector_token = crate::log_pipeline::collector_token(&data_dir)?;
    config.extra_tokens.push((
        collector_token.clone(),
        crate::log_pipeline::collector_identity(),
    ));
    config.bind_address = args.bind_address;
    config.port = args.port;
    config.insecure_port = args.insecure_port;
    config.token_auth_file = args.token_auth_file.clone();
    config.extra_sans = args.tls_sans.clone();
    config.advertise_address = args.advertise_address.or_else(|| {
        args.bind_address
            .is_unspecified()
            .then(|| skiff_agent::detect_node_ip().parse().ok())
            .flatten()
    });
    let advertise_address = config.advertise_address;
    config.serving = ServingConfig {
        default_not_ready_toleration_seconds: args.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds: args.default_unreachable_toleration_seconds,
        ..ServingConfig::default()
    };
    let apiserver = skiff_apiserver::start(
        config,
        store.clone() as Arc<dyn skiff_store::Store>,
        registry,
        shutdown.clone(),
    )
    .await?;

    let pki = Pki::load_or_create(&data_dir.join("pki"))?;
    let admin = kube_client_counted(&apiserver.kubeconfig, &rest_metrics).await?;
    if let Some(path) = &args.publish_ca_cert {
        crate::log_pipeline::write_public(path, &pki.ca.cert_pem)
            .with_context(|| format!("--publish-ca-cert {}", path.display()))?;
    }
    if let Some((id, secret)) = bootstrap_token {
        let object = crate::token::token_secret(
            id,
            secret,
            Duration::ZERO,
            Some("skiffd --bootstrap-token".into()),
        )?;
        crate::addons::apply_one(
            kube::Api::namespaced(admin.clone(), "kube-system"),
            &format!("bootstrap-token-{id}"),
            &object,
        )
        .await
        .context("keeping the --bootstrap-token Secret")?;
    }
    // The log pipeline: the search service here, the collector on every node as a DaemonSet.
    let mut search = None;
    if !args.disable_log_pipeline {
        let pipeline = crate::log_pipeline::LogPipeline {
            data_dir: &data_dir,
            bind: std::net::SocketAddr::new(args.search_bind_address, args.search_port),
            advertise: advertise_address,
            auth_kubeconfig: &apiserver.kubeconfig,
            retention_days: args.log_retention_days,
            max_size_mb: args.log_max_size_mb,
            collector_token: &collector_token,
        };
        search = Some(
            pipeline
                .start(admin.clone(), shutdown.clone())
                .await
                .context("starting the log pipeline")?,
        );
    }
    // The metrics server, scraping every node's agent with a client certificate of the cluster.
    let mut metrics_server = None;
    if !args.disable_metrics_server {
        let client_cert = pki.client_certificate("system:metrics-server", &[])?;
        let tls = skiff_metrics_server::KubeletTls {
            ca_pem: Some(pki.ca.cert_pem.clone()),
            cert_pem: Some(client_cert.cert_pem.clone()),
            key_pem: Some(client_cert.key_pem.clone()),
            insecure: false,
        };
        let mut config = skiff_metrics_server::Config::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], args.metrics_server_port)),
            tls,
        );
        config.resolution = args.metric_resolution.max(Duration::from_secs(1));
        let server = skiff_metrics_server::start(
            config,
            admin.clone(),
            prometheus_client::registry::Registry::default(),
            shutdown.clone(),
        )
        .await
        .context("starting the metrics server")?;
        crate::addons::apply_metrics_server(admin.clone(), server.addr)
            .await
            .context("publishing the metrics server")?;
        metrics_server = Some(server);
    }
    let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut scheduler_metrics = None;
    if !args.disable_scheduler {
        let (_, addr) = crate::control::serve_metrics_at(
            loopback(args.scheduler_metrics_port),
            scheduler_registry,
            shutdown.clone(),
        )
        .await?;
        scheduler_metrics = Some(addr);
    }
    let mut controllers_metrics = None;
    if !args.disable_controller_manager {
        let (_, addr) = crate::control::serve_metrics_at(
            loopback(args.controller_manager_metrics_port),
            controllers_registry,
            shutdown.clone(),
        )
        .await?;
        controllers_metrics = Some(addr);
    }
    let state_metrics = skiff_state_metrics::start(
        admin.clone(),
        loopback(args.state_metrics_port),
        shutdown.clone(),
    )
    .await
    .context("starting the state metrics exporter")?;
    // A stable identity per data dir: after a crash, the restarted daemon finds the Lease still
    // held by itself and carries on at once instead of waiting out the lease duration.
    let identity = stable_identity(&data_dir.join("leader-identity"))?;
    // The scheduler and controllers stop first, while the API server still answers, so they can
    // release their Leases and a standby elsewhere takes over at once.
    let control_shutdown = CancellationToken::new();
    let mut components = Vec::new();
    if !args.disable_scheduler {
        components.push(crate::control::spawn_scheduler(
            admin.clone(),
            &args.leader,
            &identity,
            &control_metrics,
            control_shutdown.clone(),
        )?);
    }
    if !args.disable_controller_manager {
        let config = skiff_controllers::ControllersConfig {
            ca: Some(skiff_controllers::CertificateAuthority {
                cert_pem: pki.ca.cert_pem.clone(),
                key_pem: pki.ca.key_pem.clone(),
            }),
            clock: None,
            node_monitor_grace_period: Some(Duration::from_secs(
                args.node_monitor_grace_period_secs.max(1),
            )),
            hpa: args.hpa.config(),
        };
        components.push(crate::control::spawn_controllers(
            admin,
            config,
            &args.leader,
            &identity,
            &control_metrics,
            control_shutdown.clone(),
        )?);
    }

    let mut agent = None;
    if with_agent && !args.no_agent {
        let node_name = args.agent.node_name();
        let kubeconfig = data_dir.join("agent").join("kubeconfig");
        pki.write_client_kubeconfig(
            &kubeconfig,
            &apiserver.url,
            &format!("system:node:{node_name}"),
            &["system:nodes"],
        )?;
        let client = kube_client(&kubeconfig).await?;
        let port = apiserver
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(6443);
        let host = if args.bind_address.is_unspecified() {
            args.agent
                .node_ip
                .clone()
                .unwrap_or_else(skiff_agent::detect_node_ip)
        } else {
            args.bind_address.to_string()
        };
        let mut agent_args = args.agent.clone();
        agent_args.node_name = Some(node_name);
        let tls = agent_args.tls_from_pki(&pki)?;
        let config = agent_args.config(&data_dir, tls, Some((host, port)))?;
        if let Err(e) = crate::component_logs::install(config.component_log_dir.clone()) {
            tracing::warn!(dir = %config.component_log_dir.display(), error = %e, "not writing component logs");
        }
        agent = Some(
            skiff_agent::start(config, client, agent_metrics, shutdown.clone())
                .await
                .context("starting the node agent")?,
        );
    }
    let endpoints = json!({
        "apiserver": apiserver.url,
        "apiserverInsecure": apiserver.insecure_url,
        "kubeconfig": apiserver.kubeconfig,
        "ca": apiserver.ca_file,
        "agent": agent.as_ref().map(|a| a.url.clone()),
        "runtime": agent.as_ref().map(|a| a.runtime),
        "search": search.as_ref().map(|s| s.local_url.clone()),
        "searchSinkUrl": search.as_ref().map(|s| s.sink_url.clone()),
        "metricsServer": metrics_server.as_ref().map(|s| format!("http://{}", s.addr)),
        "metrics": {
            "apiserver": format!("{}/metrics", apiserver.url),
            "scheduler": scheduler_metrics.map(|a| format!("http://{a}/metrics")),
            "controllerManager": controllers_metrics.map(|a| format!("http://{a}/metrics")),
            "stateMetrics": format!("http://{}/metrics", state_metrics.addr),
            "metricsServer": metrics_server.as_ref().map(|s| format!("http://{}/metrics", s.addr)),
            "search": search.as_ref().map(|s| format!("{}/metrics", s.local_url)),
        },
    });
    let apiserver_host = apiserver
        .url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let targets = crate::prometheus_config::Targets {
        apiserver: &apiserver_host,
        scheduler: scheduler_metrics.map(|a| a.to_string()),
        controller_manager: controllers_metrics.map(|a| a.to_string()),
        state_metrics: state_metrics.addr.to_string(),
        metrics_server: metrics_server.as_ref().map(|s| s.addr.to_string()),
        search: search
            .as_ref()
            .map(|s| s.local_url.trim_start_matches("http://").to_owned()),
    };
    for (file, discovery) in [
        ("prometheus.yml", crate::prometheus_config::Discovery::Http),
        (
            "prometheus-kubernetes-sd.yml",
            crate::prometheus_config::Discovery::Kubernetes,
        ),
    ] {
        let text = crate::prometheus_config::render(
            &targets,
            &data_dir.join("pki"),
            &args.cluster_name,
            discovery,
        )?;
        std::fs::write(data_dir.join(file), text)?;
    }
    let endpoints_path = data_dir.join("endpoints.json");
    std::fs::write(&endpoints_path, serde_json::to_vec_pretty(&endpoints)?)?;
    println!("Skiff is up. API server: {}", apiserver.url);
    println!("  export KUBECONFIG={}", apiserver.kubeconfig.display());
    println!("  endpoints: {}", endpoints_path.display());
    println!(
        "  prometheus: prometheus --config.file={}",
        data_dir.join("prometheus.yml").display()
    );
    if let Some(search) = &search {
        println!("  log search: {}/api/v1/search?query=…", search.local_url);
    }
    println!("  add a node: skiffd token create --print-join-command, then run that command there");

    shutdown_signal().await;
    tracing::info!("shutting down");
    control_shutdown.cancel();
    for component in components {
        let _ = component.await;
    }
    shutdown.cancel();
    if let Some(agent) = agent {
        agent.wait().await;
    }
    if let Some(search) = search {
        search.server.wait().await;
    }
    if let Some(server) = metrics_server {
        server.wait().await;
    }
    state_metrics.wait().await;
    apiserver.wait().await;
    drop(store);
    tracing::info!("stopped");
    Ok(())
}
