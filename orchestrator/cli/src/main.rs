//! `skiff`, a kubectl-like command line for Skiff clusters (and any Kubernetes API server),
//! built on the kube client. Output matches kubectl's where kubectl users would look for it.

mod api;
mod context;
mod describe;
mod explain;
mod get;
mod jsonpath;
mod log_template;
mod logs;
mod manifests;
mod output;
mod top;
mod write;

use clap::{Args, Parser, Subcommand};

/// Flags every command takes.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub(crate) kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub(crate) context: Option<String>,
    /// Namespace for this request.
    #[arg(short = 'n', long, global = true)]
    pub(crate) namespace: Option<String>,
}

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Drive a Skiff (or any Kubernetes) cluster",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Display one or many resources.
    Get(get::GetArgs),
    /// Show details of a resource and its events.
    Describe(describe::DescribeArgs),
    /// Apply a configuration by file name or stdin (create or patch, like kubectl apply).
    Apply(write::FileArgs),
    /// Create resources from files or stdin.
    Create(write::FileArgs),
    /// Replace resources from files or stdin.
    Replace(write::FileArgs),
    /// Delete resources by names, files or label selector.
    Delete(write::DeleteArgs),
    /// Update fields of a resource with a strategic, merge or JSON patch.
    Patch(write::PatchArgs),
    /// Set the number of replicas of a Deployment, ReplicaSet or StatefulSet.
    Scale(write::ScaleArgs),
    /// Update the labels of a resource.
    Label(write::MetaArgs),
    /// Update the annotations of a resource.
    Annotate(write::MetaArgs),
    /// Show and follow the logs of many pods at once (stern's way), from the log search service.
    Logs(logs::LogsArgs),
    /// Search the logs of the cluster, or count matches over time (--histogram).
    Search(logs::SearchArgs),
    /// CPU and memory of nodes or pods from the Metrics API, with sparklines when watching.
    Top(top::TopArgs),
    /// List the resource types the server supports.
    ApiResources(get::ApiResourcesArgs),
    /// Document the fields of a resource.
    Explain(explain::ExplainArgs),
    /// Print client and server versions.
    Version,
    /// Read and modify kubeconfig files.
    #[command(subcommand)]
    Config(context::ConfigCommand),
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the runtime");
    let result = runtime.block_on(run(cli));
    if let Err(e) = result {
        eprintln!("{}", api::render_error(&e));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Config(cmd) => context::run_config(&g, cmd),
        Command::Version => {
            println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
            let ctx = context::Ctx::load(&g).await?;
            let v = ctx.api.get_json("/version").await?;
            println!(
                "Server Version: {}",
                v["gitVersion"].as_str().unwrap_or("unknown")
            );
            Ok(())
        }
        command => {
            let ctx = context::Ctx::load(&g).await?;
            match command {
                Command::Get(a) => get::run(&ctx, a).await,
                Command::Describe(a) => describe::run(&ctx, a).await,
                Command::Apply(a) => write::apply(&ctx, a).await,
                Command::Create(a) => write::create(&ctx, a).await,
                Command::Replace(a) => write::replace(&ctx, a).await,
                Command::Delete(a) => write::delete(&ctx, a).await,
                Command::Patch(a) => write::patch(&ctx, a).await,
                Command::Scale(a) => write::scale(&ctx, a).await,
                Command::Label(a) => write::meta(&ctx, a, "labels").await,
                Command::Annotate(a) => write::meta(&ctx, a, "annotations").await,
                Command::ApiResources(a) => get::api_resources(&ctx, a).await,
                Command::Logs(a) => logs::logs(&ctx, a).await,
                Command::Search(a) => logs::search(&ctx, a).await,
                Command::Top(a) => top::run(&ctx, a).await,
                Command::Explain(a) => explain::run(&ctx, a).await,
                Command::Version | Command::Config(_) => unreachable!("handled above"),
            }
        }
    }
}
