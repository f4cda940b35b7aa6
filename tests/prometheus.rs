//! The real Prometheus (Debian's package) against `skiffd up`, with the scrape configuration
//! skiffd writes: every job is up, every endpoint passes `promtool check metrics`, and PromQL
//! over cAdvisor-, kube-state- and apiserver-named series returns data for running pods,
//! including kubernetes-mixin's join of container CPU with `kube_pod_info`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{Cluster, bin_dir, http, wait_for};

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: skiff-testapp:e2e
        args: [serve, --port, "8080"]
        resources:
          requests: {cpu: 50m, memory: 16Mi}
"#;

/// Prometheus, stopped (by its PID) when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(config: &str) -> Prometheus {
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

fn api(prom: &Prometheus, path: &str) -> Option<Value> {
    let r = http(&prom.addr, "GET", path, None, b"").ok()?;
    serde_json::from_slice(&r.body).ok()
}

fn query(prom: &Prometheus, expr: &str) -> Vec<Value> {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", expr)
        .finish();
    api(prom, &format!("/api/v1/query?{q}"))
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

#[track_caller]
fn promtool_check(what: &str, text: &str) {
    use std::io::Write;
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

#[test]
fn prometheus_scrapes_every_component_with_the_written_configuration() {
    let cluster = Cluster::start_with(&[
        "--image-alias",
        &format!(
            "skiff-testapp={}",
            bin_dir().join("skiff-testapp").display()
        ),
        "--search-port",
        "0",
        "--housekeeping-interval-secs",
        "1",
        "--metric-resolution",
        "2s",
        "--cluster-name",
        "e2e",
    ])
    .expect("skiffd starts");
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(WEB))
        .expect_ok("deployment.apps/web created");
    cluster
        .kubectl(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .expect_ok("successfully rolled out");
    cluster
        .kubectl(&[
            "rollout",
            "status",
            "-n",
            "kube-system",
            "ds/skiff-log-collector",
            "--timeout=60s",
        ])
        .expect_ok("successfully rolled out");

    let config = std::fs::read_to_string(cluster.dir.path().join("prometheus.yml"))
        .expect("skiffd up writes prometheus.yml")
        .replace("scrape_interval: 15s", "scrape_interval: 2s");
    let prom = start_prometheus(&config);

    let jobs = [
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
    let targets = wait_for(Duration::from_secs(90), "every target up", || {
        let v = api(&prom, "/api/v1/targets")?;
        let active = v["data"]["activeTargets"].as_array()?.clone();
        let up = |job: &str| {
            active
                .iter()
                .any(|t| t["labels"]["job"] == job && t["health"] == "up")
        };
        (jobs.iter().all(|j| up(j)) && active.iter().all(|t| t["health"] == "up")).then_some(active)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            api(&prom, "/api/v1/targets")
                .map(|v| v.to_string())
                .unwrap_or_default()
        )
    });
    for t in &targets {
        assert_eq!(t["labels"]["cluster"], "e2e", "{t}");
    }

    // Every endpoint passes promtool (0.0.4, what promtool parses).
    let node = &cluster.node;
    for path in [
        "/metrics",
        &format!("/api/v1/nodes/{node}/proxy/metrics"),
        &format!("/api/v1/nodes/{node}/proxy/metrics/cadvisor"),
        &format!("/api/v1/nodes/{node}/proxy/metrics/resource"),
    ] {
        let run = cluster.kubectl(&["get", "--raw", path]);
        assert_eq!(run.code, 0, "{path}: {}", run.all());
        promtool_check(path, &run.stdout);
    }
    for component in [
        "scheduler",
        "controllerManager",
        "stateMetrics",
        "metricsServer",
        "search",
    ] {
        promtool_check(component, &cluster.component_metrics(component));
    }

    // PromQL over the ecosystem's names returns data for the running pods.
    let expectations: &[(&str, usize)] = &[
        (
            r#"container_cpu_usage_seconds_total{job="cadvisor",namespace="default",container="app",image!=""}"#,
            2,
        ),
        (
            r#"container_memory_working_set_bytes{job="cadvisor",namespace="default",container!="",image!=""}"#,
            2,
        ),
        (r#"kube_pod_info{namespace="default",node!=""}"#, 2),
        (
            r#"kube_pod_container_resource_requests{namespace="default",resource="cpu",unit="core"}"#,
            2,
        ),
        (
            r#"kube_deployment_status_replicas_available{deployment="web"}"#,
            1,
        ),
        (
            r#"kube_node_status_condition{condition="Ready",status="true"} == 1"#,
            1,
        ),
        (
            r#"sum by (verb) (apiserver_request_total{job="apiserver"})"#,
            1,
        ),
        (
            r#"histogram_quantile(0.99, sum by (le) (rate(apiserver_request_duration_seconds_bucket{job="apiserver"}[1m])))"#,
            1,
        ),
        (r#"kubelet_running_pods{job="kubelet"}"#, 1),
        (
            r#"workqueue_adds_total{job="controller-manager",name="deployment"}"#,
            1,
        ),
        (
            r#"scheduler_schedule_attempts_total{job="scheduler",result="scheduled"}"#,
            1,
        ),
        (r#"metrics_server_storage_points{job="metrics-server"}"#, 2),
        (
            r#"sum by (code) (rate(rest_client_requests_total{job="controller-manager"}[1m]))"#,
            1,
        ),
        (
            r#"rest_client_request_duration_seconds_count{job="scheduler",url="/api/v1/namespaces/{namespace}/pods/{name}/binding"}"#,
            1,
        ),
        (r#"process_resident_memory_bytes{job="scheduler"}"#, 1),
        // kubernetes-mixin's recording rule node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m
        (
            r#"sum by (cluster, namespace, pod, container) (rate(container_cpu_usage_seconds_total{job="cadvisor", image!=""}[1m])) * on (cluster, namespace, pod) group_left(node) topk by (cluster, namespace, pod) (1, max by (cluster, namespace, pod, node) (kube_pod_info{node!=""}))"#,
            2,
        ),
    ];
    for (expr, at_least) in expectations {
        let result = wait_for(Duration::from_secs(60), expr, || {
            let r = query(&prom, expr);
            (r.len() >= *at_least).then_some(r)
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}", query(&prom, expr)));
        assert!(!result.is_empty(), "{expr}");
    }
}
