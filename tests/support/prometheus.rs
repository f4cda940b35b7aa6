//! The real Prometheus (Debian's package) and promtool for tests: start a server on a free
//! loopback port with a given configuration, query it, lint expositions.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::http;

/// A Prometheus server, stopped (by its PID) when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Check `config` with promtool, then start Prometheus with it.
    pub fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&path)
            .output()
            .expect("promtool runs (install Debian's prometheus package)");
        assert!(
            check.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus runs (install Debian's prometheus package)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Prometheus with the scrape configuration `skiffd up` wrote for `cluster`, scraping every
    /// 2 s instead of 15 s.
    pub fn for_cluster(cluster: &crate::Cluster) -> Prometheus {
        let config = std::fs::read_to_string(cluster.dir.path().join("prometheus.yml"))
            .expect("skiffd up writes prometheus.yml")
            .replace("scrape_interval: 15s", "scrape_interval: 2s");
        Prometheus::start(&config)
    }

    /// GET an API path, parsed as JSON (None when Prometheus does not answer yet).
    pub fn api(&self, path: &str) -> Option<Value> {
        let r = http(&self.addr, "GET", path, None, b"").ok()?;
        serde_json::from_slice(&r.body).ok()
    }

    /// An instant query: the whole response (status, data or error).
    pub fn query_response(&self, expr: &str) -> Option<Value> {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        self.api(&format!("/api/v1/query?{q}"))
    }

    /// An instant query's result vector (empty on any error).
    pub fn query(&self, expr: &str) -> Vec<Value> {
        self.query_response(expr)
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Whether every target is up and every named job has one up target.
    pub fn targets_up(&self, jobs: &[&str]) -> Option<Vec<Value>> {
        let v = self.api("/api/v1/targets")?;
        let active = v["data"]["activeTargets"].as_array()?.clone();
        let up = |job: &str| {
            active
                .iter()
                .any(|t| t["labels"]["job"] == job && t["health"] == "up")
        };
        (jobs.iter().all(|j| up(j)) && active.iter().all(|t| t["health"] == "up")).then_some(active)
    }
}

/// Every job `skiffd up` writes into prometheus.yml when the whole cluster runs.
pub const JOBS: &[&str] = &[
    "apiserver",
    "kubelet",
    "cadvisor",
    "kube-state-metrics",
    "scheduler",
    "controller-manager",
    "metrics-server",
    "search",
    "log-collector",
];

/// `promtool check metrics` accepts `text` (the 0.0.4 text format promtool parses).
#[track_caller]
pub fn promtool_check(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed for {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
