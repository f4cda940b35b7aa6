//! Control-plane scale benchmark on fake nodes: a release `skiffd up --no-agent` API server,
//! `skiffd fake-nodes` hosting N nodes, and the scheduler and controller manager as their own
//! processes (`skiffd scheduler`, `skiffd controller-manager`) so each one's memory is its own.
//!
//! Measures, in order: idle RSS of the server, scheduler and controller manager on an empty
//! cluster; creating P unscheduled pods; the scheduler's throughput binding all P pods on the N
//! nodes (started after the pods exist, as scheduler_perf does, so the figure is scheduling and
//! binding, not creation); the time until the fake nodes report them Running; the time for a
//! Deployment of R replicas to be fully Ready; every process's RSS at that scale; then a
//! `skiffd metrics-server` scraping every fake node's `/metrics/resource` (fake usage served by
//! `skiffd fake-nodes --kubelet-endpoint`): its scrape round time, API latency and memory.
//!
//! Run: `cargo build --release -p skiffd -p skiff-bench && target/release/scale-bench`

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use skiff_bench::{HttpClient, call, http_client, rss_mb, skiffd_path, start_skiffd, watch};

#[derive(Parser)]
#[command(about = "Measure the scheduler and controllers on fake nodes")]
struct Args {
    /// The skiffd binary (default: next to this one).
    #[arg(long)]
    skiffd: Option<PathBuf>,
    /// Fake nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Bare pods created, then scheduled.
    #[arg(long, default_value_t = 30_000)]
    pods: usize,
    /// Replicas of the Deployment measured to Ready.
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
    /// Seconds to let the components settle before reading idle memory.
    #[arg(long, default_value_t = 10)]
    settle_secs: u64,
}

const NS: &str = "bench";
const TOLERATION: &str = "skiff.dev/fake-node";

/// A component process, killed when dropped; its stderr goes to `<dir>/<name>.log`.
struct Proc {
    child: Child,
}

impl Proc {
    fn start(skiffd: &Path, dir: &Path, name: &'static str, args: &[&str]) -> Result<Proc> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(skiffd)
            .args(args)
            .env("SKIFF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { child })
    }

    fn rss(&self) -> f64 {
        rss_mb(self.child.id())
    }

    /// SIGTERM, then wait (a clean stop releases the component's Lease).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `skiffd scheduler` or `skiffd controller-manager` against the server.
fn start_component(
    skiffd: &Path,
    dir: &Path,
    name: &'static str,
    kubeconfig: &str,
) -> Result<Proc> {
    let args = [
        name,
        "--kubeconfig",
        kubeconfig,
        "--metrics-bind-address",
        "127.0.0.1:0",
    ];
    Proc::start(skiffd, dir, name, &args)
}

async fn get(client: &HttpClient, addr: &str, path: &str) -> Result<Value> {
    let (status, body) = call(client, addr, "GET", path, None, "application/json").await?;
    if status != 200 {
        bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

async fn post(client: &HttpClient, addr: &str, path: &str, body: &Value) -> Result<()> {
    let (status, text) = call(client, addr, "POST", path, Some(body), "application/json").await?;
    if status != 201 {
        bail!("POST {path}: {status} {}", String::from_utf8_lossy(&text));
    }
    Ok(())
}

fn pod_spec() -> Value {
    json!({
        "tolerations": [{"key": TOLERATION, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
    })
}

async fn wait_nodes_ready(client: &HttpClient, addr: &str, want: usize) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let list = get(client, addr, "/api/v1/nodes").await?;
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        if ready >= want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("only {ready}/{want} fake nodes Ready after 5 min");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Create `count` pods, 64 requests in flight; returns pods/s.
async fn create_pods(client: &HttpClient, addr: &str, count: usize) -> Result<f64> {
    let start = Instant::now();
    let path = format!("/api/v1/namespaces/{NS}/pods");
    let results: Vec<Result<()>> = futures::stream::iter(0..count)
        .map(|i| {
            let body = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p-{i}"), "labels": {"bench": "sched"}},
                "spec": pod_spec()});
            let path = path.clone();
            async move { post(client, addr, &path, &body).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

fn log_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let skiffd = skiffd_path(args.skiffd.clone())?;
    let server = start_skiffd(
        &skiffd,
        &[
            "--no-agent",
            "--disable-scheduler",
            "--disable-controller-manager",
            "--disable-metrics-server",
        ],
    )?;
    let addr = server.addr.clone();
    let dir = server.dir.path().to_path_buf();
    let kubeconfig = dir.join("kubeconfig").display().to_string();
    let client = http_client();
    println!(
        "scale-bench: {} fake nodes, {} pods, a {}-replica Deployment (2 cores)",
        args.nodes, args.pods, args.replicas
    );

    // Idle memory on an empty cluster.
    let scheduler = start_component(&skiffd, &dir, "scheduler", &kubeconfig)?;
    let controllers = start_component(&skiffd, &dir, "controller-manager", &kubeconfig)?;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    println!(
        "idle RSS (empty cluster): server {:.1} MB, scheduler {:.1} MB, controller-manager {:.1} MB",
        rss_mb(server.child.id()),
        scheduler.rss(),
        controllers.rss()
    );
    // The scheduler comes back once the pods exist.
    scheduler.stop();

    let nodes_arg = args.nodes.to_string();
    let fake = Proc::start(
        &skiffd,
        &dir,
        "fake-nodes",
        &[
            "fake-nodes",
            "--kubeconfig",
            &kubeconfig,
            "--count",
            &nodes_arg,
            "--metrics-bind-address",
            "127.0.0.1:0",
            "--kubelet-endpoint",
            "127.0.0.1:0",
        ],
    )?;
    let took = wait_nodes_ready(&client, &addr, args.nodes)
        .await
        .with_context(|| log_tail(&dir, "fake-nodes"))?;
    println!(
        "{} fake nodes registered and Ready in {:.1} s",
        args.nodes,
        took.as_secs_f64()
    );

    post(
        &client,
        &addr,
        "/api/v1/namespaces",
        &json!({"metadata": {"name": NS}}),
    )
    .await?;
    let rate = create_pods(&client, &addr, args.pods).await?;
    println!("created {} pending pods at {:.0} pods/s", args.pods, rate);

    // Scheduler throughput: from the scheduler's start until the last pod is bound, as seen by a
    // watch opened before it starts.
    let list = get(
        &client,
        &addr,
        &format!("/api/v1/namespaces/{NS}/pods?limit=1"),
    )
    .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let mut events = watch(
        &addr,
        &format!(
            "/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=false"
        ),
    )
    .await?;
    let started = Instant::now();
    let scheduler = start_component(&skiffd, &dir, "scheduler", &kubeconfig)?;
    let mut bound: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut first_bound = None;
    let mut all_bound = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while running.len() < args.pods {
        let Ok(Some((_, event))) = tokio::time::timeout_at(deadline, events.recv()).await else {
            bail!(
                "after 10 min: {} bound, {} running of {}\nscheduler:\n{}\nfake-nodes:\n{}",
                bound.len(),
                running.len(),
                args.pods,
                log_tail(&dir, "scheduler"),
                log_tail(&dir, "fake-nodes")
            );
        };
        let pod = &event["object"];
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
            && bound.insert(name.clone())
        {
            first_bound.get_or_insert_with(|| started.elapsed());
            if bound.len() == args.pods {
                all_bound = Some(started.elapsed());
            }
        }
        if pod["status"]["phase"] == "Running" {
            running.insert(name);
        }
    }
    let all_running = started.elapsed();
    let all_bound = all_bound.unwrap_or(all_running);
    let first_bound = first_bound.unwrap_or_default();
    println!(
        "scheduler: {} pods bound in {:.2} s from process start = {:.0} pods/s \
         ({:.0} pods/s from the first binding at {:.2} s); all Running on fake nodes after {:.2} s",
        args.pods,
        all_bound.as_secs_f64(),
        args.pods as f64 / all_bound.as_secs_f64(),
        args.pods as f64 / (all_bound - first_bound).as_secs_f64().max(1e-3),
        first_bound.as_secs_f64(),
        all_running.as_secs_f64()
    );

    // A Deployment of R replicas, from creation to every replica Ready.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "big"},
        "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "big"}},
                 "template": {"metadata": {"labels": {"app": "big"}}, "spec": pod_spec()}}});
    let start = Instant::now();
    post(
        &client,
        &addr,
        &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
        &deployment,
    )
    .await?;
    loop {
        let d = get(
            &client,
            &addr,
            &format!("/apis/apps/v1/namespaces/{NS}/deployments/big"),
        )
        .await?;
        if d["status"]["readyReplicas"].as_u64() == Some(args.replicas as u64)
            && d["status"]["updatedReplicas"].as_u64() == Some(args.replicas as u64)
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!(
                "Deployment not Ready after 10 min: {}\n{}",
                d["status"],
                log_tail(&dir, "controller-manager")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "Deployment of {} replicas Ready in {:.2} s",
        args.replicas,
        start.elapsed().as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    println!(
        "RSS at {} nodes / {} pods: server {:.1} MB, scheduler {:.1} MB, controller-manager {:.1} MB, fake-nodes {:.1} MB",
        args.nodes,
        args.pods + args.replicas,
        rss_mb(server.child.id()),
        scheduler.rss(),
        controllers.rss(),
        fake.rss()
    );
    metrics_server_phase(&skiffd, &dir, &kubeconfig, &client, &args).await?;
    drop(fake);
    drop(scheduler);
    drop(controllers);
    drop(server);
    Ok(())
}

/// The metrics server at this scale: scrape rounds over every node, the PodMetrics list, and
/// its memory per node.
async fn metrics_server_phase(
    skiffd: &Path,
    dir: &Path,
    kubeconfig: &str,
    client: &HttpClient,
    args: &Args,
) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bind = format!("127.0.0.1:{port}");
    let ms = Proc::start(
        skiffd,
        dir,
        "metrics-server",
        &[
            "metrics-server",
            "--kubeconfig",
            kubeconfig,
            "--kubelet-insecure-tls",
            "--metric-resolution",
            "15s",
            "--bind-address",
            &bind,
        ],
    )?;
    let containers = args.pods + args.replicas;
    let start = Instant::now();
    // Two rounds are needed before a container has a rate.
    let items = loop {
        if let Ok(list) = get(client, &bind, "/apis/metrics.k8s.io/v1beta1/pods").await {
            let n = list["items"].as_array().map_or(0, Vec::len);
            if n >= containers {
                break n;
            }
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!(
                "PodMetrics incomplete after 5 min\n{}",
                log_tail(dir, "metrics-server")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "metrics server: PodMetrics for {items} pods after {:.1} s (two scrape rounds of {} nodes)",
        start.elapsed().as_secs_f64(),
        args.nodes
    );
    // A few more rounds, then read the round time and the API latency.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let t = Instant::now();
    let list = get(client, &bind, "/apis/metrics.k8s.io/v1beta1/pods").await?;
    let list_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    get(client, &bind, "/apis/metrics.k8s.io/v1beta1/nodes").await?;
    let nodes_ms = t.elapsed().as_secs_f64() * 1e3;
    let (status, body) = call(client, &bind, "GET", "/metrics", None, "text/plain").await?;
    if status != 200 {
        bail!("metrics server /metrics: {status}");
    }
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let rounds = value("metrics_server_manager_tick_duration_seconds_count");
    let mean = value("metrics_server_manager_tick_duration_seconds_sum") / rounds.max(1.0);
    let rss = ms.rss();
    println!(
        "metrics server at {} nodes / {} pods: scrape round {:.2} s on average over {rounds} rounds; \
         list of {} PodMetrics {list_ms:.0} ms, NodeMetrics {nodes_ms:.0} ms; RSS {rss:.1} MB = {:.2} MB per node",
        args.nodes,
        containers,
        mean,
        list["items"].as_array().map_or(0, Vec::len),
        rss / args.nodes as f64
    );
    Ok(())
}
