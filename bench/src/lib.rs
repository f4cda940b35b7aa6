//! Shared pieces of the benchmark programs: starting a release `skiffd`, a plain-HTTP client
//! for its loopback port, resident memory of a process, and latency percentiles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Plain HTTP/1 client with a large idle pool (benchmarks open many concurrent requests).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client for a loopback server.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

/// A server process started by a benchmark, killed when dropped, with its data dir.
pub struct Server {
    pub child: Child,
    /// `host:port` of its plain-HTTP endpoint.
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The skiffd binary: the one given, or the one next to this executable.
pub fn skiffd_path(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("skiffd")),
    }
}

/// `skiffd up` in a fresh temporary data dir with `extra` flags; waits for endpoints.json.
pub fn start_skiffd(skiffd: &Path, extra: &[&str]) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let child = Command::new(skiffd)
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--port", "0", "--insecure-port", "0"])
        .args([
            "--metrics-server-port",
            "0",
            "--scheduler-metrics-port",
            "0",
            "--controller-manager-metrics-port",
            "0",
            "--state-metrics-port",
            "0",
        ])
        .args(extra)
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", skiffd.display()))?;
    let info = wait_for_json(&dir.path().join("endpoints.json"), "skiffd")?;
    let addr = info["apiserverInsecure"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("http://")
        .to_owned();
    Ok(Server { child, addr, dir })
}

/// Poll a JSON file a starting process writes, for up to 30 s.
pub fn wait_for_json(path: &Path, what: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(v) = serde_json::from_str(&text)
        {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what} did not start ({} never appeared)", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port (bound and released; for programs that cannot be told to pick one).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident set size of a process in MB (0 when it is gone).
pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One request with a JSON body; the status and the whole response body.
pub async fn call(
    client: &HttpClient,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    accept: &str,
) -> Result<(u16, Bytes)> {
    let bytes = body
        .map(|b| Bytes::from(serde_json::to_vec(b).expect("json")))
        .unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(Full::new(bytes))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// p50, p99 and max of latencies.
pub fn summarize(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(|a, b| a.partial_cmp(b).expect("no NaN latencies"));
    (
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN),
    )
}

/// Open a watch (`path` with `watch=1`) on its own connection — a long-lived response pins
/// it — and deliver each event, as parsed JSON, to the returned channel with the wall-clock time
/// it arrived. The channel closes when the server ends the watch.
pub async fn watch(
    addr: &str,
    path: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<(SystemTime, Value)>> {
    use futures::StreamExt;
    let request = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))?;
    let own = http_client();
    let response = own.request(request).await?;
    if !response.status().is_success() {
        bail!("watch {path}: HTTP {}", response.status());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = own;
        let mut body = response.into_body().into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            let at = SystemTime::now();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(event) = serde_json::from_slice::<Value>(&line)
                    && tx.send((at, event)).is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
