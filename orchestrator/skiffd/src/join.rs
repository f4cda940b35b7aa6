//! `skiffd agent`: a node agent joining a cluster, either with a kubeconfig or with a server URL
//! and a bootstrap token (TLS bootstrap: the node's certificates come from the cluster's CSR
//! approver and signer, see `skiff_agent::bootstrap`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use skiff_agent::AgentMetrics;
use skiff_agent::AgentTls;
use skiff_agent::bootstrap::{self, CaTrust, JoinRequest};
use skiff_apiserver::Pki;
use tokio_util::sync::CancellationToken;

use crate::up::{default_data_dir, kube_client, shutdown_signal};

/// Flags of `skiffd agent`.
#[derive(Args, Debug, Clone)]
pub(crate) struct JoinArgs {
    /// Where this node keeps its state.
    #[arg(long, env = "SKIFF_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// A kubeconfig with credentials for this node (or the admin kubeconfig of the cluster).
    #[arg(long, conflicts_with_all = ["server", "token"])]
    kubeconfig: Option<PathBuf>,
    /// The cluster's PKI directory: issue this agent's serving certificate from its CA directly
    /// instead of asking the cluster for one.
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// API server URL to join with a bootstrap token (`https://host:6443`).
    #[arg(long, requires = "token")]
    server: Option<String>,
    /// Bootstrap token (`skiffd token create`), `<6 chars>.<16 chars>`.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true, requires = "server")]
    token: Option<String>,
    /// Trust the cluster CA only if its public key hashes to this (`sha256:<hex>`, repeatable;
    /// printed by `skiffd token create --print-join-command`).
    #[arg(long = "ca-cert-hash")]
    ca_cert_hashes: Vec<String>,
    /// Trust this CA certificate file instead of discovering the CA.
    #[arg(long)]
    certificate_authority: Option<PathBuf>,
    /// Join without verifying the cluster CA (anyone between this node and the server could
    /// impersonate the cluster).
    #[arg(long)]
    unsafe_skip_ca_verification: bool,
    #[command(flatten)]
    agent: crate::agent_flags::AgentArgs,
}

impl JoinArgs {
    fn trust(&self) -> anyhow::Result<CaTrust> {
        if let Some(path) = &self.certificate_authority {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(CaTrust::Pem(pem));
        }
        if !self.ca_cert_hashes.is_empty() {
            return Ok(CaTrust::Hashes(self.ca_cert_hashes.clone()));
        }
        if self.unsafe_skip_ca_verification {
            return Ok(CaTrust::Insecure);
        }
        bail!(
            "joining with a token needs a way to trust the cluster: pass --ca-cert-hash \
             (printed by `skiffd token create --print-join-command`), --certificate-authority, \
             or --unsafe-skip-ca-verification"
        )
    }
}

/// `skiffd agent`.
pub(crate) async fn run(args: JoinArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    let root = data_dir.join("agent");
    let node_name = args.agent.node_name();

    // A node that joined before reuses its credentials; the same command line works on restart.
    let joined = root.join("kubeconfig");
    let kubeconfig = match (&args.kubeconfig, &args.server, &args.token) {
        (Some(k), _, _) => {
            // The node's pods that act for it (the log collector DaemonSet) mount the node's
            // credentials from <root>/kubeconfig (hostPath /var/lib/skiff/kubeconfig).
            if k != &joined {
                std::fs::create_dir_all(&root)?;
                std::fs::copy(k, &joined)
                    .with_context(|| format!("copying {} to {}", k.display(), joined.display()))?;
                std::fs::set_permissions(
                    &joined,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )?;
            }
            k.clone()
        }
        (None, _, _) if bootstrap::kubeconfig_still_valid(&joined) => joined,
        (None, Some(server), Some(token)) => {
            let request = JoinRequest {
                server: server.clone(),
                token: token.clone(),
                trust: args.trust()?,
                node_name: node_name.clone(),
            };
            println!("Joining {server} as node {node_name}…");
            bootstrap::join(&request, &joined, &shutdown).await?;
            joined
        }
        _ => bail!(
            "nothing to join with: pass --kubeconfig, or --server and --token (see `skiffd \
             token create --print-join-command` on the server)"
        ),
    };
    let client = kube_client(&kubeconfig).await?;
    let cluster_ca = bootstrap::kubeconfig_ca(&kubeconfig)?;

    let tls = match &args.pki_dir {
        Some(dir) => args.agent.tls_from_pki(&Pki::load_or_create(dir)?)?,
        None => {
            let serving = bootstrap::serving_certificate(
                client.clone(),
                &node_name,
                &args.agent.serving_names(),
                &bootstrap::credentials_dir(&root),
                &shutdown,
            )
            .await
            .context("obtaining the agent's serving certificate")?;
            AgentTls {
                cert_pem: serving.cert_pem,
                key_pem: serving.key_pem,
                client_ca_pem: cluster_ca,
            }
        }
    };

    let server = kube::config::Kubeconfig::read_from(&kubeconfig)?
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref()?.server.clone())
        .unwrap_or_default();
    let endpoint = server
        .trim_start_matches("https://")
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.trim_end_matches('/').parse().ok()?)));
    let config = args.agent.config(&data_dir, tls, endpoint)?;
    if let Err(e) = crate::component_logs::install(config.component_log_dir.clone()) {
        tracing::warn!(dir = %config.component_log_dir.display(), error = %e, "not writing component logs");
    }
    let metrics = AgentMetrics::default();
    let agent = skiff_agent::start(config, client, metrics, shutdown.clone()).await?;
    println!(
        "Skiff agent is up ({} runtime), serving at {}",
        agent.runtime, agent.url
    );
    shutdown.cancelled().await;
    agent.wait().await;
    Ok(())
}
