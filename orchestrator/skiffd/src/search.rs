//! `skiffd search`: the log search service on its own (see skiff-search).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Flags of `skiffd search`.
#[derive(Args, Debug, Clone)]
pub(crate) struct SearchArgs {
    /// Where the indexes, the write-ahead log and the dedup marks live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the HTTP API (native, and Loki's on /loki/api/v1).
    #[arg(long, default_value = "127.0.0.1:9428")]
    bind_address: SocketAddr,
    /// How often newly ingested lines become searchable.
    #[arg(long, default_value = "1s", value_parser = crate::control::parse_duration)]
    commit_interval: std::time::Duration,
    /// Whole UTC days of logs kept (today included).
    #[arg(long, default_value_t = 7)]
    retention_days: u32,
    /// Delete the oldest days while the indexes are larger than this many MiB.
    #[arg(long)]
    max_size_mb: Option<u64>,
    /// Messages longer than this many bytes are cut.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_line_bytes: usize,
    /// Indexing threads.
    #[arg(long, default_value_t = 1)]
    writer_threads: usize,
    /// Indexing memory budget in MiB (at least 15 per thread).
    #[arg(long, default_value_t = 64)]
    writer_memory_mb: usize,
    /// Require bearer tokens, checked with this kubeconfig's API server (its server and CA;
    /// not its user). Needed to listen beyond loopback.
    #[arg(long)]
    auth_kubeconfig: Option<PathBuf>,
    /// With --auth-kubeconfig: let callers on loopback in without a token.
    #[arg(long, requires = "auth_kubeconfig")]
    trust_loopback: bool,
}

impl SearchArgs {
    fn config(&self) -> skiff_search::Config {
        let mut c = skiff_search::Config::new(self.data_dir.clone(), self.bind_address);
        c.commit_interval = self.commit_interval;
        c.retention_days = self.retention_days;
        c.max_size_bytes = self.max_size_mb.map(|m| m * 1024 * 1024);
        c.max_line_bytes = self.max_line_bytes;
        c.writer_threads = self.writer_threads;
        c.writer_memory_bytes = self.writer_memory_mb * 1024 * 1024;
        c.auth_kubeconfig = self.auth_kubeconfig.clone();
        c.trust_loopback = self.trust_loopback;
        c
    }
}

/// Run `skiffd search` until SIGINT/SIGTERM; everything acknowledged is committed on the way out.
pub(crate) async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let server = skiff_search::start(args.config(), Registry::default(), shutdown.clone()).await?;
    crate::up::shutdown_signal().await;
    shutdown.cancel();
    server.wait().await;
    Ok(())
}
