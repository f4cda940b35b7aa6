//! API server benchmark: starts a release `skiffd up` in a temporary data dir and measures, over
//! the loopback HTTP port, the figures docs/BENCHMARKS.md records — mutating latency at a fixed
//! rate, the highest sustainable write rate, GET and LIST of 1 000 pods, watch delivery to many
//! watchers, and resident memory idle and after load.
//!
//! Run: `cargo build --release -p skiffd -p skiff-bench && target/release/apiserver-bench`

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use skiff_bench::{
    HttpClient, Server, call, free_port, http_client, rss_mb, skiffd_path, start_skiffd, summarize,
    watch,
};
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(about = "Measure the Skiff API server against its targets")]
struct Args {
    /// The skiffd binary (default: next to this one).
    #[arg(long)]
    skiffd: Option<PathBuf>,
    /// Fixed write rate for the latency measurement (writes/s).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds at the fixed rate.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Pods for the GET/LIST measurement.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// The etcd binary for the peer comparison (skipped, with a note, when absent).
    #[arg(long, default_value = "etcd")]
    etcd: String,
}

/// etcd on loopback with its defaults (fsync on every commit, as Skiff's store).
fn start_etcd(binary: &str) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let (client, peer) = (free_port()?, free_port()?);
    let child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let addr = format!("127.0.0.1:{client}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            bail!("etcd did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server { child, addr, dir })
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One etcd put through its JSON gateway, with a value the size of a small ConfigMap.
async fn etcd_put(client: &HttpClient, addr: &str, key: &str) -> Result<u16> {
    let value = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"bench","uid":"00000000-0000-0000-0000-000000000000","creationTimestamp":"2026-01-01T00:00:00Z"},"data":{"i":"1"}}"#;
    let body = json!({"key": b64(key), "value": b64(value)});
    Ok(call(
        client,
        addr,
        "POST",
        "/v3/kv/put",
        Some(&body),
        "application/json",
    )
    .await?
    .0)
}

async fn etcd_peer(client: &HttpClient, binary: &str, rate: u64, seconds: u64) -> Result<()> {
    let etcd = match start_etcd(binary) {
        Ok(e) => e,
        Err(e) => {
            println!("peer: etcd not measured ({e:#})");
            return Ok(());
        }
    };
    let version = String::from_utf8_lossy(&Command::new(binary).arg("--version").output()?.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let addr = etcd.addr.clone();
    let mut lat = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        ticker.tick().await;
        let (client, addr) = (client.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            matches!(
                etcd_put(
                    &client,
                    &addr,
                    &format!("/registry/configmaps/bench/cm-{i}")
                )
                .await,
                Ok(200)
            )
            .then(|| started.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    for t in tasks {
        lat.extend(t.await?);
    }
    let n = lat.len();
    let (p50, p99, max) = summarize(lat);
    println!(
        "peer {version}: put at {rate}/s for {seconds} s: n={n} p50={p50:.2} ms p99={p99:.2} ms max={max:.2} ms"
    );
    for c in [1, 8, 32, 128] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tasks = Vec::new();
        for w in 0..c {
            let (client, addr) = (client.clone(), addr.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    if let Ok(200) = etcd_put(
                        &client,
                        &addr,
                        &format!("/registry/configmaps/sat{c}/w{w}-{i}"),
                    )
                    .await
                    {
                        lat.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    i += 1;
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        let rate = all.len() as f64 / 10.0;
        let (_, p99, _) = summarize(all);
        println!("peer etcd closed loop, {c:>3} writers: {rate:.0} puts/s, p99={p99:.2} ms");
    }
    Ok(())
}

fn configmap(name: &str, extra: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": extra})
}

async fn create_namespace(client: &HttpClient, addr: &str, name: &str) -> Result<()> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    call(
        client,
        addr,
        "POST",
        "/api/v1/namespaces",
        Some(&ns),
        "application/json",
    )
    .await?;
    Ok(())
}

/// Open-loop writes at `rate` per second for `seconds`: latency of each create.
async fn fixed_rate(
    client: &HttpClient,
    addr: &str,
    rate: u64,
    seconds: u64,
) -> Result<(Vec<f64>, usize)> {
    create_namespace(client, addr, "bench-rate").await?;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        ticker.tick().await;
        let (client, addr, latencies, errors) = (
            client.clone(),
            addr.to_owned(),
            latencies.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let body = configmap(&format!("cm-{i}"), json!({"i": i.to_string()}));
            match call(
                &client,
                &addr,
                "POST",
                "/api/v1/namespaces/bench-rate/configmaps",
                Some(&body),
                "application/json",
            )
            .await
            {
                Ok((201, _)) => latencies
                    .lock()
                    .await
                    .push(started.elapsed().as_secs_f64() * 1000.0),
                _ => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let l = latencies.lock().await.clone();
    Ok((l, errors.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Closed-loop writers: throughput and p99 at a given concurrency.
async fn saturate(
    client: &HttpClient,
    addr: &str,
    concurrency: usize,
    seconds: u64,
) -> Result<(f64, f64)> {
    let ns = format!("bench-sat-{concurrency}");
    create_namespace(client, addr, &ns).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, addr, ns) = (client.clone(), addr.to_owned(), ns.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let started = Instant::now();
                let body = configmap(&format!("w{w}-{i}"), json!({}));
                if let Ok((201, _)) = call(
                    &client,
                    &addr,
                    "POST",
                    &format!("/api/v1/namespaces/{ns}/configmaps"),
                    Some(&body),
                    "application/json",
                )
                .await
                {
                    lat.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let rate = all.len() as f64 / seconds as f64;
    let (_, p99, _) = summarize(all);
    Ok((rate, p99))
}

async fn pods(
    client: &HttpClient,
    addr: &str,
    count: usize,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    create_namespace(client, addr, "bench-pods").await?;
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (client, addr, created) = (client.clone(), addr.to_owned(), created.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(16) {
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench", "shard": (i % 10).to_string()}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}});
                if let Ok((201, _)) = call(&client, &addr, "POST", "/api/v1/namespaces/bench-pods/pods", Some(&pod), "application/json").await {
                    created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mut gets = Vec::new();
    for i in 0..2000 {
        let started = Instant::now();
        let (s, _) = call(
            client,
            addr,
            "GET",
            &format!(
                "/api/v1/namespaces/bench-pods/pods/pod-{}",
                (i * 7919) % count
            ),
            None,
            "application/json",
        )
        .await?;
        if s == 200 {
            gets.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let mut lists = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let (s, body) = call(
            client,
            addr,
            "GET",
            "/api/v1/namespaces/bench-pods/pods",
            None,
            "application/json",
        )
        .await?;
        let n = serde_json::from_slice::<Value>(&body)?["items"]
            .as_array()
            .map_or(0, Vec::len);
        if s == 200 && n == count {
            lists.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let mut tables = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (s, _) = call(
            client,
            addr,
            "GET",
            "/api/v1/namespaces/bench-pods/pods?limit=500",
            None,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .await?;
        if s == 200 {
            tables.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((gets, lists, tables))
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// Many watchers on one namespace; each write carries its send time; latency = receipt − send.
async fn watch_delivery(
    client: &HttpClient,
    addr: &str,
    watchers: usize,
    writes: usize,
) -> Result<Vec<f64>> {
    create_namespace(client, addr, "bench-watch").await?;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for _ in 0..watchers {
        let mut events = watch(
            addr,
            "/api/v1/namespaces/bench-watch/configmaps?watch=1&resourceVersion=0&timeoutSeconds=120",
        )
        .await?;
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            while let Some((at, event)) = events.recv().await {
                if let Some(sent) = event["object"]["data"]["sent"]
                    .as_str()
                    .and_then(|s| s.parse::<u128>().ok())
                {
                    let received = at.duration_since(UNIX_EPOCH).expect("clock").as_nanos();
                    latencies.lock().await.push((received - sent) as f64 / 1e6);
                    seen += 1;
                    if seen >= writes {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..writes {
        ticker.tick().await;
        let body = configmap(&format!("w-{i}"), json!({"sent": now_nanos().to_string()}));
        call(
            client,
            addr,
            "POST",
            "/api/v1/namespaces/bench-watch/configmaps",
            Some(&body),
            "application/json",
        )
        .await?;
    }
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(30), r).await;
    }
    let l = latencies.lock().await.clone();
    Ok(l)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = start_skiffd(&skiffd_path(args.skiffd)?, &[])?;
    let client = http_client();
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss_mb(pid);
    println!("skiffd up, idle RSS after 5 s: {idle:.1} MB");

    let (lat, errors) = fixed_rate(&client, &server.addr, args.rate, args.seconds).await?;
    let n = lat.len();
    let (p50, p99, max) = summarize(lat);
    println!(
        "mutating (create) at {} writes/s for {} s: n={n} errors={errors} p50={p50:.2} ms p99={p99:.2} ms max={max:.2} ms",
        args.rate, args.seconds
    );

    for c in [1, 8, 32, 128] {
        let (rate, p99) = saturate(&client, &server.addr, c, 10).await?;
        println!("closed loop, {c:>3} writers: {rate:.0} writes/s, p99={p99:.2} ms");
    }

    let (gets, lists, tables) = pods(&client, &server.addr, args.pods).await?;
    let (g50, g99, _) = summarize(gets);
    let (l50, l99, _) = summarize(lists);
    let (t50, t99, _) = summarize(tables);
    println!(
        "GET one pod (of {}): p50={g50:.2} ms p99={g99:.2} ms",
        args.pods
    );
    println!(
        "LIST {} pods (JSON): p50={l50:.1} ms p99={l99:.1} ms",
        args.pods
    );
    println!(
        "LIST {} pods (Table, limit=500 as kubectl): p50={t50:.1} ms p99={t99:.1} ms",
        args.pods
    );

    let lat = watch_delivery(&client, &server.addr, args.watchers, 200).await?;
    let n = lat.len();
    let (w50, w99, wmax) = summarize(lat);
    println!(
        "watch delivery to {} watchers: n={n} p50={w50:.2} ms p99={w99:.2} ms max={wmax:.2} ms",
        args.watchers
    );
    println!("RSS after load: {:.1} MB", rss_mb(pid));
    drop(server);
    etcd_peer(&client, &args.etcd, args.rate, args.seconds).await?;
    Ok(())
}
