//! `skiffd`, the Skiff daemon. `skiffd up` runs a whole cluster in one process; the other
//! subcommands run single components for multi-machine setups.

mod addons;
mod agent_flags;
mod component_logs;
mod control;
mod fake_nodes;
mod join;
mod log_collector;
mod log_pipeline;
mod metrics_server;
mod prometheus_config;
mod rest_client;
mod search;
mod state_metrics;
mod token;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiffd",
    version,
    about = "The Skiff daemon: a Kubernetes-compatible cluster with logs and metrics built in"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a whole cluster (control plane and a node agent) in one process.
    Up(up::UpArgs),
    /// Start only the control plane (API server and store).
    Server(up::UpArgs),
    /// Start a node agent that joins a cluster (with a kubeconfig, or a server URL and a
    /// bootstrap token).
    Agent(join::JoinArgs),
    /// Run only the scheduler against an API server (campaigns for the `kube-scheduler` Lease).
    Scheduler(control::SchedulerArgs),
    /// Run only the controllers against an API server (campaigns for the
    /// `kube-controller-manager` Lease).
    ControllerManager(control::ControllerManagerArgs),
    /// Host many fake nodes whose pods go Running without containers (scale testing).
    FakeNodes(fake_nodes::FakeNodesArgs),
    /// Follow this node's container log files and ship them to the log search service.
    LogCollector(log_collector::LogCollectorArgs),
    /// Run the log search service (tantivy index, native and Loki-compatible HTTP API).
    Search(search::SearchArgs),
    /// Run the metrics server (scrapes node agents, serves metrics.k8s.io for kubectl top and
    /// the HPA).
    MetricsServer(metrics_server::MetricsServerArgs),
    /// Run the object state exporter (kube-state-metrics' kube_* series).
    KubeStateMetrics(state_metrics::StateMetricsArgs),
    /// Manage bootstrap tokens that let new nodes join.
    Token(token::TokenArgs),
    /// Supervise one process-runtime container (started by the agent, not by hand).
    #[command(hide = true)]
    ContainerShim {
        /// The container's state directory.
        state_dir: std::path::PathBuf,
    },
}

/// Logs to stderr (text or JSON) and to the component log files the node's collector ships,
/// each filtered by `SKIFF_LOG`; spans to OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
/// filtered by `SKIFF_TRACE` (default `info`). JSON lines carry the trace and span ids.
fn init_logging(format: &str, command: &str) -> Option<skiff_telemetry::trace::Tracing> {
    use skiff_telemetry::trace::JsonWithTraceIds;
    use tracing_subscriber::Layer;
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let log_filter = || {
        tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let stderr = if format == "json" {
        stderr
            .fmt_fields(JsonFields::new())
            .event_format(JsonWithTraceIds)
            .boxed()
    } else {
        stderr.boxed()
    };
    // The node's log collector ships these (see component_logs).
    let files = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(JsonWithTraceIds)
        .with_ansi(false)
        .with_writer(component_logs::ComponentLogs);
    let (otel, tracing) = match skiff_telemetry::trace::otlp_layer(command) {
        Ok(Some((layer, tracing))) => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_TRACE")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            (Some(layer.with_filter(filter)), Some(tracing))
        }
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("OpenTelemetry trace export is off: {e}");
            (None, None)
        }
    };
    tracing_subscriber::registry()
        .with(stderr.with_filter(log_filter()))
        .with(files.with_filter(log_filter()))
        .with(otel)
        .init();
    tracing
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::ContainerShim { state_dir } = &cli.command {
        std::process::exit(skiff_agent::run_shim(state_dir));
    }
    let tracing = init_logging(&cli.log_format, cli.command.name());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match cli.command {
        Command::Up(args) => runtime.block_on(up::run(args, true)),
        Command::Server(args) => runtime.block_on(up::run(args, false)),
        Command::Agent(args) => runtime.block_on(join::run(args)),
        Command::Scheduler(args) => runtime.block_on(control::run_scheduler(args)),
        Command::ControllerManager(args) => runtime.block_on(control::run_controller_manager(args)),
        Command::FakeNodes(args) => runtime.block_on(fake_nodes::run(args)),
        Command::LogCollector(args) => runtime.block_on(log_collector::run(args)),
        Command::Search(args) => runtime.block_on(search::run(args)),
        Command::MetricsServer(args) => runtime.block_on(metrics_server::run(args)),
        Command::KubeStateMetrics(args) => runtime.block_on(state_metrics::run(args)),
        Command::Token(args) => runtime.block_on(token::run(args)),
        Command::ContainerShim { .. } => unreachable!("handled before the runtime starts"),
    };
    drop(runtime);
    if let Some(tracing) = tracing {
        tracing.shutdown();
    }
    result
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Up(_) => "up",
            Command::Server(_) => "server",
            Command::Agent(_) => "agent",
            Command::Scheduler(_) => "scheduler",
            Command::ControllerManager(_) => "controller-manager",
            Command::FakeNodes(_) => "fake-nodes",
            Command::LogCollector(_) => "log-collector",
            Command::Search(_) => "search",
            Command::MetricsServer(_) => "metrics-server",
            Command::KubeStateMetrics(_) => "kube-state-metrics",
            Command::Token(_) => "token",
            Command::ContainerShim { .. } => "container-shim",
        }
    }
}
