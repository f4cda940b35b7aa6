//! The real Prometheus (Debian's package) against `skiffd up`, with the scrape configuration
//! skiffd writes: every job is up, every endpoint passes `promtool check metrics`, and PromQL
//! over cAdvisor-, kube-state- and apiserver-named series returns data for running pods,
//! including kubernetes-mixin's join of container CPU with `kube_pod_info`.

use std::time::Duration;

use skiff_e2e::prometheus::{JOBS, Prometheus, promtool_check};
use skiff_e2e::{Cluster, bin_dir, wait_for};

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

    let prom = Prometheus::for_cluster(&cluster);

    let targets = wait_for(Duration::from_secs(90), "every target up", || {
        prom.targets_up(JOBS)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            prom.api("/api/v1/targets")
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
            let r = prom.query(expr);
            (r.len() >= *at_least).then_some(r)
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}", prom.query(expr)));
        assert!(!result.is_empty(), "{expr}");
    }
}
