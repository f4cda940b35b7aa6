//! `skiffd log-collector`: follow a node's container log files and ship them (see
//! skiff-log-collector). `skiffd up` runs it as the `kube-system/skiff-log-collector` DaemonSet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use prometheus_client::registry::Registry;
use skiff_log_collector::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// Flags of `skiffd log-collector`.
#[derive(Args, Debug, Clone)]
pub(crate) struct LogCollectorArgs {
    /// The pod log directory to follow.
    #[arg(long, default_value = "/var/log/pods")]
    pods_dir: PathBuf,
    /// Skiff's own component logs to follow too (`/var/log/skiff`), shipped with a
    /// `component` label.
    #[arg(long)]
    component_logs_dir: Option<PathBuf>,
    /// Where the checkpoints are kept (a hostPath in the DaemonSet, so they outlive the pod).
    #[arg(long)]
    data_dir: PathBuf,
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// A kubeconfig to watch this node's pods with (labels and controller of each line's pod);
    /// without one, lines carry what the file path says.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// What speaks at --sink-url: `search` (skiff-search), `loki` (Loki's push API) or
    /// `elasticsearch` (`_bulk` into logstash-YYYY.MM.DD).
    #[arg(long, default_value = "search")]
    sink: skiff_log_collector::sink::SinkKind,
    /// The server lines are shipped to.
    #[arg(long, default_value = "http://127.0.0.1:9428")]
    sink_url: String,
    /// A file holding a bearer token for the sink (a search service beyond loopback checks
    /// it with the cluster).
    #[arg(long)]
    sink_token_file: Option<PathBuf>,
    /// Join lines matching this regular expression into the record before them, e.g.
    /// `^\s+at |^\s+\.\.\. \d+ more|^Caused by:` for Java stack traces.
    #[arg(long)]
    multiline_continue_pattern: Option<regex::Regex>,
    /// Ship a multi-line record when no continuation line followed for this long.
    #[arg(long, default_value = "1s", value_parser = crate::control::parse_duration)]
    multiline_timeout: Duration,
    /// Lines per batch.
    #[arg(long, default_value_t = 2000)]
    batch_lines: usize,
    /// Longest wait before a batch with lines in it is sent.
    #[arg(long, default_value = "200ms", value_parser = crate::control::parse_duration)]
    flush_interval: Duration,
    /// Where to serve /metrics and /healthz (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:2020")]
    metrics_bind_address: SocketAddr,
}

/// Run until SIGINT/SIGTERM.
pub(crate) async fn run(args: LogCollectorArgs) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let shutdown = CancellationToken::new();
    // Without its metrics endpoint (the port taken, e.g. by a second agent's collector on the
    // same machine) the collector still ships logs: that matters more.
    let server = match crate::control::serve_metrics(
        args.metrics_bind_address,
        registry,
        shutdown.clone(),
    )
    .await
    {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(address = %args.metrics_bind_address, error = %e, "not serving metrics");
            None
        }
    };
    let client = match &args.kubeconfig {
        Some(path) => match crate::up::kube_client(path).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(kubeconfig = %path.display(), error = %e, "shipping lines without pod labels");
                None
            }
        },
        None => None,
    };
    let mut config = skiff_log_collector::Config::new(
        args.pods_dir,
        args.data_dir,
        args.node_name,
        args.sink_url,
    );
    config.sink = args.sink;
    config.sink_token = match &args.sink_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    config.component_dir = args.component_logs_dir;
    config.multiline = args.multiline_continue_pattern.map(|continue_pattern| {
        skiff_log_collector::parse::Multiline {
            continue_pattern,
            timeout: args.multiline_timeout,
        }
    });
    config.batch_lines = args.batch_lines.max(1);
    config.flush_interval = args.flush_interval;
    let mut collector = tokio::spawn(skiff_log_collector::run(
        config,
        client,
        metrics,
        shutdown.clone(),
    ));
    let result = tokio::select! {
        _ = crate::up::shutdown_signal() => {
            shutdown.cancel();
            (&mut collector).await
        }
        r = &mut collector => r,
    };
    shutdown.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    result?
}
