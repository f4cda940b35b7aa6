//! Node agent benchmark: a release `skiffd up --no-agent` control plane plus a separate
//! `skiffd agent` process, for each runtime. Measures pod startup latency (creation → Running
//! as seen by a watch), 100-pod churn (create all at once → all Running; delete all → all
//! gone) and the agent's resident memory idle, with 100 pods, and after churn.
//!
//! The workload is the pause image (`skiff/pause:<version>`), the same pod Kubernetes' density
//! tests use; the process runtime maps it to the `skiff-pause` binary with an image alias.
//!
//! Run: `cargo build --release -p skiffd -p skiff-pause -p skiff-bench && target/release/agent-bench`

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use skiff_bench::{
    HttpClient, call, http_client, rss_mb, skiffd_path, start_skiffd, summarize, watch,
};
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Parser)]
#[command(about = "Measure the Skiff node agent against its targets")]
struct Args {
    /// The skiffd binary (default: next to this one; skiff-pause must sit beside it).
    #[arg(long)]
    skiffd: Option<PathBuf>,
    /// Runtimes to measure: process, docker, or both.
    #[arg(long, default_value = "both")]
    runtime: String,
    /// Pods started one after another for the startup latency.
    #[arg(long, default_value_t = 50)]
    startup_pods: usize,
    /// Pods created at once for the churn measurement.
    #[arg(long, default_value_t = 100)]
    churn_pods: usize,
    /// Churn rounds (growth of the agent's memory between rounds would be a leak).
    #[arg(long, default_value_t = 3)]
    churn_rounds: usize,
}

const NS: &str = "bench";

/// The agent process, killed (and its Docker containers removed) when dropped.
struct Agent {
    child: Child,
    node: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leftovers only exist when a measurement failed half-way.
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=io.skiff.node={}", self.node))
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .status();
            }
        }
    }
}

fn start_agent(skiffd: &Path, server_dir: &Path, runtime: &str) -> Result<Agent> {
    let endpoints: Value =
        serde_json::from_str(&std::fs::read_to_string(server_dir.join("endpoints.json"))?)?;
    let kubeconfig = endpoints["kubeconfig"].as_str().context("kubeconfig")?;
    let node = format!("bench-{runtime}");
    let dir = server_dir.join(format!("node-{runtime}"));
    let pause = skiffd.with_file_name("skiff-pause");
    if !pause.exists() {
        bail!(
            "{} is missing: cargo build --release -p skiff-pause",
            pause.display()
        );
    }
    let child = Command::new(skiffd)
        .arg("agent")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--kubeconfig", kubeconfig, "--pki-dir"])
        .arg(server_dir.join("pki"))
        .args(["--runtime", runtime, "--node-name", &node])
        .args(["--node-ip", "127.0.0.1", "--agent-port", "0"])
        .arg("--pod-log-dir")
        .arg(dir.join("pods"))
        .arg("--container-log-dir")
        .arg(dir.join("containers"))
        .arg("--image-alias")
        .arg(format!("{}={}", pause_image(), pause.display()))
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting skiffd agent")?;
    Ok(Agent { child, node })
}

fn pause_image() -> String {
    format!("skiff/pause:{}", env!("CARGO_PKG_VERSION"))
}

fn pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": pause_image()}]}
    })
}

async fn wait_node_ready(client: &HttpClient, addr: &str, node: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(
            client,
            addr,
            "GET",
            &format!("/api/v1/nodes/{node}"),
            None,
            "application/json",
        )
        .await?;
        if status == 200 {
            let v: Value = serde_json::from_slice(&body)?;
            let ready = v["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("node {node} did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait on the watch until every name in `pending` satisfies `done`; returns when each did.
async fn until(
    events: &mut UnboundedReceiver<(SystemTime, Value)>,
    mut pending: HashMap<String, SystemTime>,
    timeout: Duration,
    done: impl Fn(&str, &Value) -> bool,
) -> Result<Vec<f64>> {
    let mut latencies = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !pending.is_empty() {
        let Ok(Some((at, event))) = tokio::time::timeout_at(deadline, events.recv()).await else {
            bail!(
                "{} pods never got there (e.g. {:?})",
                pending.len(),
                pending.keys().next()
            );
        };
        let name = event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        if let Some(t0) = pending.get(name)
            && done(event["type"].as_str().unwrap_or_default(), &event["object"])
        {
            let ms = at.duration_since(*t0).unwrap_or_default().as_secs_f64() * 1000.0;
            latencies.push(ms);
            pending.remove(name);
        }
    }
    Ok(latencies)
}

fn running(kind: &str, pod: &Value) -> bool {
    kind != "DELETED" && pod["status"]["phase"] == "Running"
}

fn deleted(kind: &str, _: &Value) -> bool {
    kind == "DELETED"
}

async fn create(client: &HttpClient, addr: &str, name: &str, node: &str) -> Result<SystemTime> {
    let t0 = SystemTime::now();
    let (status, body) = call(
        client,
        addr,
        "POST",
        &format!("/api/v1/namespaces/{NS}/pods"),
        Some(&pod(name, node)),
        "application/json",
    )
    .await?;
    if status != 201 {
        bail!("create {name}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(t0)
}

async fn delete(client: &HttpClient, addr: &str, name: &str) -> Result<SystemTime> {
    let t0 = SystemTime::now();
    let (status, body) = call(
        client,
        addr,
        "DELETE",
        &format!("/api/v1/namespaces/{NS}/pods/{name}"),
        None,
        "application/json",
    )
    .await?;
    if status != 200 && status != 202 {
        bail!("delete {name}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(t0)
}

/// Proportional memory (PSS: shared pages split between the processes sharing them) of the
/// process runtime's shims under `dir` — RSS would count the skiffd binary's pages once per
/// shim. Nothing for Docker.
fn shims_pss_mb(dir: &Path) -> (usize, f64) {
    let needle = dir.display().to_string();
    let mut count = 0;
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("container-shim") && cmdline.contains(&needle) {
            count += 1;
            total += pss_mb(pid);
        }
    }
    (count, total)
}

fn pss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn measure(skiffd: &Path, runtime: &str, args: &Args) -> Result<()> {
    let server = start_skiffd(skiffd, &["--no-agent", "--disable-log-pipeline"])?;
    let client = http_client();
    let addr = server.addr.clone();
    let agent = start_agent(skiffd, server.dir.path(), runtime)?;
    wait_node_ready(&client, &addr, &agent.node).await?;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    call(
        &client,
        &addr,
        "POST",
        "/api/v1/namespaces",
        Some(&ns),
        "application/json",
    )
    .await?;
    let mut events = watch(
        &addr,
        &format!("/api/v1/namespaces/{NS}/pods?watch=1&timeoutSeconds=3600"),
    )
    .await?;
    let pid = agent.child.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "[{runtime}] agent idle RSS (node Ready, no pods, after 5 s): {:.1} MB",
        rss_mb(pid)
    );

    // One warm-up pod: the Docker runtime imports its pause image on first use.
    let t0 = create(&client, &addr, "warmup", &agent.node).await?;
    until(
        &mut events,
        HashMap::from([("warmup".into(), t0)]),
        Duration::from_secs(120),
        running,
    )
    .await?;
    let t0 = delete(&client, &addr, "warmup").await?;
    until(
        &mut events,
        HashMap::from([("warmup".into(), t0)]),
        Duration::from_secs(120),
        deleted,
    )
    .await?;

    let mut startup = Vec::new();
    for i in 0..args.startup_pods {
        let name = format!("seq-{i}");
        let t0 = create(&client, &addr, &name, &agent.node).await?;
        startup.extend(
            until(
                &mut events,
                HashMap::from([(name, t0)]),
                Duration::from_secs(60),
                running,
            )
            .await?,
        );
    }
    let n = startup.len();
    let (p50, p99, max) = summarize(startup);
    println!(
        "[{runtime}] startup, {n} pods one at a time: p50={p50:.0} ms p99={p99:.0} ms max={max:.0} ms"
    );
    let mut removals = HashMap::new();
    for i in 0..args.startup_pods {
        let name = format!("seq-{i}");
        removals.insert(name.clone(), delete(&client, &addr, &name).await?);
    }
    until(&mut events, removals, Duration::from_secs(300), deleted).await?;

    // Churn: all pods at once, then all deleted at once; repeated so that memory the agent
    // does not give back after a round shows up as growth between rounds.
    let names: Vec<String> = (0..args.churn_pods).map(|i| format!("churn-{i}")).collect();
    for round in 1..=args.churn_rounds {
        let tag = format!("[{runtime}] churn round {round}/{}", args.churn_rounds);
        let begin = Instant::now();
        let created = futures::future::try_join_all(
            names.iter().map(|n| create(&client, &addr, n, &agent.node)),
        )
        .await?;
        let pending = names.iter().cloned().zip(created).collect();
        let lat = until(&mut events, pending, Duration::from_secs(600), running).await?;
        let all_running = begin.elapsed();
        let (p50, p99, max) = summarize(lat);
        println!(
            "{tag}, {} pods created at once: all Running after {:.2} s; per pod p50={p50:.0} ms p99={p99:.0} ms max={max:.0} ms",
            args.churn_pods,
            all_running.as_secs_f64()
        );
        if round == 1 {
            exposition_latency(&client, &addr, &agent.node, runtime, args.churn_pods).await?;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (shims, shim_pss) = shims_pss_mb(server.dir.path());
        println!(
            "{tag}, agent RSS with {} pods running: {:.1} MB{}",
            args.churn_pods,
            rss_mb(pid),
            if shims > 0 {
                format!(" (plus {shims} shims, {shim_pss:.1} MB PSS together)")
            } else {
                String::new()
            }
        );
        let begin = Instant::now();
        let deleted_at =
            futures::future::try_join_all(names.iter().map(|n| delete(&client, &addr, n))).await?;
        let pending = names.iter().cloned().zip(deleted_at).collect();
        let lat = until(&mut events, pending, Duration::from_secs(600), deleted).await?;
        let (p50, p99, _) = summarize(lat);
        println!(
            "{tag}, {} pods deleted at once: all gone after {:.2} s; per pod p50={p50:.0} ms p99={p99:.0} ms",
            args.churn_pods,
            begin.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!(
            "{tag}, agent RSS after (no pods, 5 s later): {:.1} MB",
            rss_mb(pid)
        );
    }
    if runtime == "docker" {
        docker_peer(args.startup_pods)?;
    }
    drop(agent);
    drop(server);
    Ok(())
}

/// The engine's own floor: `docker run -d` of the same image (one container, no sandbox, no
/// API), one after another, until the CLI returns (the container has started).
/// `/metrics/cadvisor` and `/metrics/resource` with `pods` containers running, through the API
/// server's `nodes/proxy` (as Prometheus scrapes them): time per request and size. Waits for a
/// housekeeping round that saw every container first.
async fn exposition_latency(
    client: &HttpClient,
    addr: &str,
    node: &str,
    runtime: &str,
    pods: usize,
) -> Result<()> {
    let base = format!("/api/v1/nodes/{node}/proxy/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = call(
            client,
            addr,
            "GET",
            &format!("{base}/resource"),
            None,
            "text/plain",
        )
        .await?;
        let seen = String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| {
                l.starts_with("container_memory_working_set_bytes{")
                    && l.contains(&format!("namespace=\"{NS}\""))
            })
            .count();
        if seen >= pods {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent's snapshot has {seen} of {pods} containers after 60 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for path in ["cadvisor", "resource"] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..50 {
            let t = Instant::now();
            let (status, body) = call(
                client,
                addr,
                "GET",
                &format!("{base}/{path}"),
                None,
                "text/plain",
            )
            .await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if status != 200 {
                bail!("{base}/{path}: {status}");
            }
            size = body.len();
        }
        let (p50, p99, max) = summarize(times);
        println!(
            "[{runtime}] /metrics/{path} with {pods} containers through nodes/proxy: p50={p50:.1} ms p99={p99:.1} ms max={max:.1} ms, {:.0} KiB",
            size as f64 / 1024.0
        );
    }
    Ok(())
}

fn docker_peer(n: usize) -> Result<()> {
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--label",
                "io.skiff.node=bench-peer",
                &pause_image(),
            ])
            .output()?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!("docker run: {}", String::from_utf8_lossy(&out.stderr));
        }
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let _ = Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .stdout(Stdio::null())
        .status();
    let (p50, p99, max) = summarize(lat);
    println!(
        "[docker] peer: `docker run -d` of the same image, {n} one at a time: p50={p50:.0} ms p99={p99:.0} ms max={max:.0} ms"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let skiffd = skiffd_path(args.skiffd.clone())?;
    let runtimes: Vec<&str> = match args.runtime.as_str() {
        "both" => vec!["process", "docker"],
        one => vec![one],
    };
    for runtime in runtimes {
        measure(&skiffd, runtime, &args).await?;
    }
    Ok(())
}
