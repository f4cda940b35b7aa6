//! Autoscaling end to end: a Deployment of the test workload with CPU requests, an HPA made by
//! `kubectl autoscale` at 50 %, a bounded load inside the pod; the HPA scales up within two
//! sync periods of the metrics showing the load and back down after the (shortened)
//! stabilization window once the load stops. Metrics flow agent → metrics server → API server
//! aggregation → HPA, all real.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use skiff_e2e::{Cluster, bin_dir, wait_for};

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: skiff-testapp:e2e
        args: [serve, --port, "8080"]
        resources:
          requests: {cpu: 100m, memory: 16Mi}
"#;

const SYNC_SECS: u64 = 3;

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the pod");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn replicas(cluster: &Cluster) -> i64 {
    cluster
        .kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
        .stdout
        .trim()
        .parse()
        .unwrap_or(-1)
}

fn parse_cpu_milli(q: &str) -> f64 {
    if let Some(n) = q.strip_suffix('n') {
        n.parse::<f64>().unwrap_or(0.0) / 1e6
    } else if let Some(u) = q.strip_suffix('u') {
        u.parse::<f64>().unwrap_or(0.0) / 1e3
    } else if let Some(m) = q.strip_suffix('m') {
        m.parse().unwrap_or(0.0)
    } else {
        q.parse::<f64>().unwrap_or(0.0) * 1000.0
    }
}

#[test]
fn hpa_scales_a_deployment_up_under_load_and_down_after_it() {
    let sync = format!("{SYNC_SECS}s");
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
        "--horizontal-pod-autoscaler-sync-period",
        &sync,
        "--horizontal-pod-autoscaler-downscale-stabilization",
        "15s",
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
            "autoscale",
            "deploy",
            "web",
            "--cpu-percent=50",
            "--min=1",
            "--max=4",
        ])
        .expect_ok("horizontalpodautoscaler.autoscaling/web autoscaled");

    // The HPA reads metrics before any load: TARGETS shows a percentage, not <unknown>.
    wait_for(
        Duration::from_secs(60),
        "the HPA to show a CPU utilization",
        || {
            let run = cluster.kubectl(&["get", "hpa", "web"]);
            regex_match(&run.stdout, r"cpu: \d+%/50%").then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster.kubectl(&["describe", "hpa", "web"]).all()
        )
    });
    assert_eq!(replicas(&cluster), 1, "idle: no scale");

    // Load: 300m on a 100m request is 300 % of the request, 6× the target.
    let pod = cluster
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .stdout;
    let ip = cluster
        .kubectl(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"])
        .stdout;
    let load_started = jiff::Timestamp::now();
    let answer = get(&format!("{ip}:8080"), "/load?millicores=300&seconds=40");
    assert!(answer.contains("loading 300m"), "{answer}");

    // When do the metrics show it?
    let metrics_path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{pod}");
    wait_for(
        Duration::from_secs(60),
        "the metrics to show the load",
        || {
            let run = cluster.kubectl(&["get", "--raw", &metrics_path]);
            let v: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
            let cpu = parse_cpu_milli(v["containers"][0]["usage"]["cpu"].as_str()?);
            (cpu > 100.0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));
    let metrics_seen = jiff::Timestamp::now();
    let scaled_at = Instant::now();
    wait_for(Duration::from_secs(60), "the HPA to scale up", || {
        (replicas(&cluster) > 1).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster.kubectl(&["describe", "hpa", "web"]).all()
        )
    });
    let waited = scaled_at.elapsed();
    let last_scale: jiff::Timestamp = cluster
        .kubectl(&[
            "get",
            "hpa",
            "web",
            "-o",
            "jsonpath={.status.lastScaleTime}",
        ])
        .stdout
        .trim()
        .parse()
        .expect("lastScaleTime is set");
    // lastScaleTime has whole seconds; the metrics were seen (by the test) at or after the
    // moment the HPA could have seen them.
    let reaction = last_scale.duration_since(metrics_seen).as_secs_f64();
    assert!(
        reaction <= (2 * SYNC_SECS + 1) as f64,
        "scaled {reaction:.1} s after the metrics showed the load (waited {waited:?})"
    );
    eprintln!(
        "HPA reaction: lastScaleTime {reaction:.1} s after the test saw the load in the metrics, \
         {:.1} s after the load started (housekeeping 1 s, resolution 2 s, sync {SYNC_SECS} s)",
        last_scale.duration_since(load_started).as_secs_f64()
    );
    let up = replicas(&cluster);
    assert!((2..=4).contains(&up), "scaled to {up}");
    let describe = cluster.kubectl(&["describe", "hpa", "web"]).stdout;
    assert!(
        describe.contains(&format!(
            "New size: {up}; reason: cpu resource utilization (percentage of request) above target"
        )),
        "{describe}"
    );
    assert!(describe.contains("SuccessfulRescale"), "{describe}");
    cluster
        .kubectl(&["get", "hpa", "web"])
        .expect_ok(r"web +Deployment/web +cpu: \d+%/50% +1 +4 +\d");

    // The load ends after 40 s; after the 15 s stabilization window the HPA scales back to 1.
    wait_for(
        Duration::from_secs(150),
        "the HPA to scale back down",
        || (replicas(&cluster) == 1).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster.kubectl(&["describe", "hpa", "web"]).all()
        )
    });
    let describe = cluster.kubectl(&["describe", "hpa", "web"]).stdout;
    assert!(
        describe.contains("New size: 1; reason: All metrics below target"),
        "{describe}"
    );
    let conditions = cluster
        .kubectl(&[
            "get",
            "hpa",
            "web",
            "-o",
            "jsonpath={.status.conditions[*].type}",
        ])
        .stdout;
    for c in ["AbleToScale", "ScalingActive", "ScalingLimited"] {
        assert!(conditions.contains(c), "{conditions}");
    }
}

fn regex_match(text: &str, pattern: &str) -> bool {
    regex::Regex::new(pattern).unwrap().is_match(text)
}
