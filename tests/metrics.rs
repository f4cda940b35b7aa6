//! The metrics pipeline end to end: the agent's usage endpoints reached through the API
//! server's `nodes/proxy` (as `kubectl get --raw` and Prometheus do) on both runtimes, in
//! kubelet's and cAdvisor's formats, clean under `promtool check metrics`.

use std::time::Duration;

use skiff_e2e::prometheus::promtool_check;
use skiff_e2e::{Cluster, bin_dir, docker_test_images, wait_for};

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: app
    image: skiff-testapp:e2e
    args: [serve, --port, "8080"]
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 500m, memory: 128Mi}
"#;

fn raw(cluster: &Cluster, path: &str) -> String {
    let run = cluster.kubectl(&["get", "--raw", path]);
    assert_eq!(run.code, 0, "kubectl get --raw {path}: {}", run.all());
    run.stdout
}

/// The samples of `name` whose label set contains every `labels` pair: (labels text, value,
/// timestamp).
fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64, Option<i64>)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, rest) = l.split_once(' ')?;
            let (n, set) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(k, v)| set.contains(&format!("{k}=\"{v}\"")));
            let mut parts = rest.split_whitespace();
            let value = parts.next()?.parse().ok()?;
            let ts = parts.next().and_then(|t| t.parse().ok());
            matches.then(|| (set.trim_end_matches('}').to_owned(), value, ts))
        })
        .collect()
}

fn usage_scenario(runtime: &str) {
    let testapp = bin_dir().join("skiff-testapp").display().to_string();
    let alias = format!("skiff-testapp={testapp}");
    let cluster = Cluster::start_with(&[
        "--runtime",
        runtime,
        "--image-alias",
        &alias,
        "--housekeeping-interval-secs",
        "1",
    ])
    .expect("skiffd starts");
    let node = cluster.node.clone();
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(WEB))
        .expect_ok("pod/web created");
    cluster
        .kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"])
        .expect_ok("condition met");

    let proxy = format!("/api/v1/nodes/{node}/proxy");
    let me = [
        ("container", "app"),
        ("namespace", "default"),
        ("pod", "web"),
    ];
    // Two samples of the container, so rates exist.
    let resource = wait_for(Duration::from_secs(30), "two samples of web", || {
        let text = raw(&cluster, &format!("{proxy}/metrics/resource"));
        let summary: serde_json::Value =
            serde_json::from_str(&raw(&cluster, &format!("{proxy}/stats/summary"))).ok()?;
        let pod = summary["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == "web")?
            .clone();
        pod["containers"][0]["cpu"]["usageNanoCores"]
            .is_u64()
            .then_some((text, pod))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));
    let (resource, pod) = resource;

    // /metrics/resource: kubelet's names, labels and a timestamp on every container sample.
    promtool_check("/metrics/resource", &resource);
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
    ] {
        let s = samples(&resource, name, &me);
        assert_eq!(s.len(), 1, "{name} for web in:\n{resource}");
        assert!(s[0].1 > 0.0, "{name} = {}", s[0].1);
        let ts = s[0].2.expect("a timestamp");
        let now = jiff::Timestamp::now().as_millisecond();
        assert!(
            (now - ts).abs() < 60_000,
            "{name} timestamp {ts} vs now {now}"
        );
    }
    for name in [
        "node_cpu_usage_seconds_total",
        "node_memory_working_set_bytes",
    ] {
        let s = samples(&resource, name, &[]);
        assert!(
            s.len() == 1 && s[0].1 > 0.0 && s[0].2.is_some(),
            "{name}: {s:?}"
        );
    }
    assert_eq!(samples(&resource, "resource_scrape_error", &[])[0].1, 0.0);

    // /stats/summary: the pod, its container with a CPU rate and a working set.
    assert_eq!(pod["podRef"]["namespace"], "default");
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "app");
    assert!(c["memory"]["workingSetBytes"].as_u64().unwrap() > 0, "{c}");
    assert!(c["logs"]["usedBytes"].is_u64(), "{c}");
    assert!(
        c["memory"]["availableBytes"].as_u64().unwrap() <= 128 << 20,
        "{c}"
    );

    // /metrics/cadvisor: cAdvisor's names and labels; image and name are set for app containers.
    let cadvisor = raw(&cluster, &format!("{proxy}/metrics/cadvisor"));
    promtool_check("/metrics/cadvisor", &cadvisor);
    let ws = samples(&cadvisor, "container_memory_working_set_bytes", &me);
    assert_eq!(ws.len(), 1, "{cadvisor}");
    assert!(
        ws[0].0.contains("image=\"skiff-testapp:e2e\""),
        "{}",
        ws[0].0
    );
    assert!(!ws[0].0.contains("name=\"\""), "{}", ws[0].0);
    assert!(!ws[0].0.contains("id=\"\""), "{}", ws[0].0);
    let limit = samples(&cadvisor, "container_spec_memory_limit_bytes", &me);
    assert_eq!(limit[0].1, (128u64 << 20) as f64);
    let quota = samples(&cadvisor, "container_spec_cpu_quota", &me);
    assert_eq!(quota[0].1, 50_000.0, "500m of a 100 ms period");
    assert!(
        !samples(
            &cadvisor,
            "container_cpu_usage_seconds_total",
            &[("id", "/")]
        )
        .is_empty()
    );
    assert!(samples(&cadvisor, "machine_cpu_cores", &[])[0].1 >= 1.0);
    if runtime == "docker" {
        // The pod has its own network namespace: per-pod counters, container="".
        let rx = samples(
            &cadvisor,
            "container_network_receive_bytes_total",
            &[("pod", "web"), ("container", ""), ("interface", "eth0")],
        );
        assert_eq!(rx.len(), 1, "{cadvisor}");
    }

    // /metrics: the agent's own series with kubelet's names.
    let own = raw(&cluster, &format!("{proxy}/metrics"));
    promtool_check("/metrics", &own);
    assert!(
        own.contains(&format!("kubelet_node_name{{node=\"{node}\"}} 1")),
        "{own}"
    );
    assert!(samples(&own, "kubelet_running_pods", &[])[0].1 >= 1.0);
    assert!(
        samples(
            &own,
            "kubelet_runtime_operations_total",
            &[("operation_type", "start_container")]
        )[0]
        .1 >= 1.0
    );
    assert!(samples(&own, "kubelet_pod_start_duration_seconds_count", &[])[0].1 >= 1.0);
    assert!(samples(&own, "kubelet_pleg_relist_duration_seconds_count", &[])[0].1 >= 1.0);
    assert!(samples(&own, "process_resident_memory_bytes", &[])[0].1 > 0.0);

    // The node name may carry the agent port; a node that does not exist is a 404 Status.
    let bad = cluster.kubectl(&["get", "--raw", "/api/v1/nodes/nope/proxy/metrics"]);
    assert_ne!(bad.code, 0);
    assert!(bad.all().contains("not found"), "{}", bad.all());
}

#[test]
fn usage_endpoints_with_the_process_runtime() {
    usage_scenario("process");
}

#[test]
fn usage_endpoints_with_the_docker_runtime() {
    docker_test_images().expect("test images import into Docker");
    usage_scenario("docker");
}

/// `kubectl top` output rows (after the header), split on whitespace.
fn top_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn metrics_server_serves_kubectl_top_and_survives_a_lost_node() {
    let cluster = Cluster::start_with(&[
        "--image-alias",
        &format!(
            "skiff-testapp={}",
            bin_dir().join("skiff-testapp").display()
        ),
        "--housekeeping-interval-secs",
        "1",
        "--metric-resolution",
        "2s",
    ])
    .expect("skiffd starts");
    let node = cluster.node.clone();
    // A second node, to be killed later.
    let second = format!("{node}-b");
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let mut agent = skiff_e2e::Agent::start(&["--kubeconfig".into(), kubeconfig], &second);
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(WEB))
        .expect_ok("pod/web created");
    cluster
        .kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"])
        .expect_ok("condition met");

    // The APIService is Available and the group is in discovery.
    let apiservice = wait_for(Duration::from_secs(30), "APIService Available", || {
        let run = cluster.kubectl(&["get", "apiservice", "v1beta1.metrics.k8s.io"]);
        run.stdout.contains("True").then_some(run.stdout)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));
    assert!(
        apiservice.contains("kube-system/metrics-server"),
        "{apiservice}"
    );
    cluster
        .kubectl(&["api-resources", "--api-group=metrics.k8s.io"])
        .expect_ok(r"(?m)^nodes +metrics\.k8s\.io/v1beta1 +false +NodeMetrics")
        .expect_ok(r"(?m)^pods +metrics\.k8s\.io/v1beta1 +true +PodMetrics");

    // kubectl top nodes: both nodes with CPU and memory.
    let rows = wait_for(Duration::from_secs(60), "both nodes in kubectl top", || {
        let run = cluster.kubectl(&["top", "nodes"]);
        let rows = top_rows(&run.stdout);
        (run.code == 0
            && rows.len() == 2
            && rows
                .iter()
                .all(|r| r[1].ends_with('m') || r[1].parse::<u32>().is_ok()))
        .then_some(rows)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.kubectl(&["top", "nodes"]).all()));
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        names.contains(&node.as_str()) && names.contains(&second.as_str()),
        "{rows:?}"
    );
    for r in &rows {
        assert!(r[3].ends_with("Mi"), "memory column {r:?}");
        assert!(r[2].ends_with('%') && r[4].ends_with('%'), "{r:?}");
    }

    // kubectl top pods, with a label selector and per container.
    let rows = wait_for(Duration::from_secs(60), "web in kubectl top pods", || {
        let run = cluster.kubectl(&["top", "pods", "-l", "app=web"]);
        let rows = top_rows(&run.stdout);
        (run.code == 0 && rows.len() == 1).then_some(rows)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.kubectl(&["top", "pods"]).all()));
    assert_eq!(rows[0][0], "web");
    assert!(rows[0][1].ends_with('m'), "{rows:?}");
    assert!(rows[0][2].ends_with("Mi"), "{rows:?}");
    cluster
        .kubectl(&["top", "pods", "--containers", "-A"])
        .expect_ok(r"(?m)^default +web +app +\d+m +\d+Mi");
    cluster
        .kubectl(&["top", "pods", "-l", "app=nothing"])
        .expect_ok("No resources found");
    // `skiff top`: the same figures, and with --count a CPU sparkline per row.
    cluster
        .skiff(&["top", "nodes"])
        .expect_ok(&format!(r"(?m)^{node} +\d+m +\d+% +\d+Mi +\d+%"));
    cluster
        .skiff(&[
            "top",
            "pods",
            "-l",
            "app=web",
            "--count",
            "2",
            "--interval",
            "1s",
        ])
        .expect_ok(r"(?m)^NAME +CPU\(cores\) +MEMORY\(bytes\) +CPU HISTORY")
        .expect_ok(r"(?m)^web +\d+m +\d+Mi +[▁▂▃▄▅▆▇█]{2}$");

    // The raw API: shapes, and Status errors.
    let pod: serde_json::Value = serde_json::from_str(
        &cluster
            .kubectl(&[
                "get",
                "--raw",
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
            ])
            .stdout,
    )
    .unwrap();
    assert_eq!(pod["kind"], "PodMetrics");
    assert_eq!(pod["metadata"]["labels"]["app"], "web");
    assert!(pod["window"].as_str().unwrap().ends_with('s'), "{pod}");
    assert!(pod["containers"][0]["usage"]["cpu"].is_string(), "{pod}");
    cluster
        .kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/nope"])
        .expect_fail(1, "NotFound|not found");

    // Kill the second node's agent: the server keeps serving the first and drops the other.
    agent.kill9();
    let rows = wait_for(
        Duration::from_secs(60),
        "the lost node gone from kubectl top",
        || {
            let run = cluster.kubectl(&["top", "nodes"]);
            let rows = top_rows(&run.stdout);
            let lost = rows.iter().find(|r| r[0] == second)?;
            (lost[1] == "<unknown>").then_some(rows)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.kubectl(&["top", "nodes"]).all()));
    let live = rows
        .iter()
        .find(|r| r[0] == node)
        .expect("first node listed");
    assert!(live[1].ends_with('m'), "{rows:?}");
    let log = cluster.log();
    assert!(
        log.contains("scraping the node failed"),
        "the failure is logged"
    );
    cluster
        .kubectl(&["top", "pods", "-l", "app=web"])
        .expect_ok(r"(?m)^web +\d+m");
}
