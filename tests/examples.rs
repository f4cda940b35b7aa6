//! Every manifest in examples/ applied to a real cluster on the Docker runtime, with what the
//! README says each one shows: the pod's init container and probes, a Deployment's rolling
//! update and rollback, a DaemonSet, a Job, a CronJob run by hand, ConfigMap/Secret as env and
//! files, a StatefulSet's stable names, node affinity with a taint, and the HPA scaling
//! php-apache under examples/load-generator.sh.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use skiff_e2e::{Cluster, docker_test_images, wait_for};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn apply(cluster: &Cluster, name: &str) {
    let path = example(name);
    let run = cluster.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{name}: {}", run.all());
}

fn rolled_out(cluster: &Cluster, args: &[&str]) {
    let mut all = vec!["rollout", "status", "--timeout=120s"];
    all.extend_from_slice(args);
    // "successfully rolled out", or a StatefulSet's "partitioned roll out complete".
    cluster
        .kubectl(&all)
        .expect_ok("rolled out|roll out complete");
}

fn jsonpath(cluster: &Cluster, args: &[&str], path: &str) -> String {
    let jp = format!("jsonpath={path}");
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", &jp]);
    cluster.kubectl(&all).stdout.trim().to_owned()
}

fn wait_jsonpath(
    cluster: &Cluster,
    args: &[&str],
    path: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    wait_for(
        Duration::from_secs(120),
        &format!("{args:?} {path}"),
        || {
            let v = jsonpath(cluster, args, path);
            want(&v).then_some(v)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            cluster.kubectl(&["get", "pods", "-A", "-o", "wide"]).all()
        )
    })
}

#[test]
fn every_example_applies_and_does_what_the_readme_says() {
    docker_test_images().expect("test images import into Docker");
    let cluster = Cluster::start_with(&[
        "--runtime",
        "docker",
        "--housekeeping-interval-secs",
        "1",
        "--metric-resolution",
        "2s",
        "--horizontal-pod-autoscaler-sync-period",
        "3s",
    ])
    .expect("skiffd starts");
    let node = cluster.node.clone();

    // A pod with an init container and probes.
    apply(&cluster, "pod.yaml");
    wait_jsonpath(
        &cluster,
        &["pod", "hello-pod"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        |v| v == "True",
    );
    assert_eq!(
        jsonpath(
            &cluster,
            &["pod", "hello-pod"],
            "{.status.initContainerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );

    // A Deployment: rolled out, updated, rolled back.
    apply(&cluster, "deployment.yaml");
    rolled_out(&cluster, &["deploy/web-deployment"]);
    cluster
        .kubectl(&["set", "env", "deploy/web-deployment", "GREETING=bonjour"])
        .expect_ok("env updated");
    rolled_out(&cluster, &["deploy/web-deployment"]);
    cluster
        .kubectl(&["rollout", "undo", "deploy/web-deployment"])
        .expect_ok("rolled back");
    rolled_out(&cluster, &["deploy/web-deployment"]);
    assert_eq!(
        jsonpath(
            &cluster,
            &["deploy", "web-deployment"],
            "{.spec.template.spec.containers[0].env[0].value}"
        ),
        "hello"
    );
    assert_eq!(
        jsonpath(
            &cluster,
            &["deploy", "web-deployment"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );

    // The DaemonSet (one pod per node) in kube-system.
    apply(&cluster, "daemonset.yaml");
    rolled_out(&cluster, &["-n", "kube-system", "ds/fluentd-elasticsearch"]);

    // The Job runs to completion; the CronJob's template runs by hand.
    apply(&cluster, "job.yaml");
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/pi",
            "--timeout=120s",
        ])
        .expect_ok("condition met");
    assert!(
        cluster
            .kubectl(&["logs", "job/pi"])
            .stdout
            .starts_with("3.14159")
    );
    apply(&cluster, "cronjob.yaml");
    cluster
        .kubectl(&["create", "job", "--from=cronjob/hello", "hello-now"])
        .expect_ok("job.batch/hello-now created");
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/hello-now",
            "--timeout=120s",
        ])
        .expect_ok("condition met");
    cluster
        .kubectl(&["logs", "job/hello-now"])
        .expect_ok("Hello from the Kubernetes cluster");

    // ConfigMap and Secret as environment and files.
    apply(&cluster, "config.yaml");
    wait_jsonpath(&cluster, &["pod", "config-demo"], "{.status.phase}", |v| {
        v == "Succeeded"
    });
    let logs = cluster.kubectl(&["logs", "config-demo"]).stdout;
    for want in [
        "LOG_LEVEL=debug",
        "password=s3cr3t",
        "hello from a ConfigMap file",
        "secret file=s3cr3t",
    ] {
        assert!(logs.contains(want), "{want} in {logs}");
    }

    // The StatefulSet's stable names.
    apply(&cluster, "statefulset.yaml");
    rolled_out(&cluster, &["sts/web"]);
    cluster.kubectl(&["logs", "web-2"]).expect_ok("I am web-2");

    // The HPA scales php-apache up under the load generator.
    apply(&cluster, "hpa.yaml");
    rolled_out(&cluster, &["deploy/php-apache"]);
    wait_jsonpath(
        &cluster,
        &["hpa", "php-apache"],
        "{.status.currentMetrics[0].resource.current.averageUtilization}",
        |v| !v.is_empty(),
    );
    let mut load = Command::new(example("load-generator.sh"))
        .args(["90", "3"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the load generator runs");
    let scaled = wait_for(Duration::from_secs(90), "php-apache scaled up", || {
        let r: i64 = jsonpath(&cluster, &["deploy", "php-apache"], "{.spec.replicas}")
            .parse()
            .ok()?;
        (r > 1).then_some(r)
    });
    let _ = load.kill();
    let _ = load.wait();
    let scaled = scaled.unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            cluster.kubectl(&["describe", "hpa", "php-apache"]).all()
        )
    });
    assert!(scaled > 1);

    // Node affinity and a taint: the pods land on the labelled, tainted node.
    cluster
        .kubectl(&["label", "node", &node, "disktype=ssd"])
        .expect_ok("labeled");
    cluster
        .kubectl(&["taint", "node", &node, "dedicated=batch:NoSchedule"])
        .expect_ok("tainted");
    apply(&cluster, "scheduling.yaml");
    rolled_out(&cluster, &["deploy/batch-worker"]);
    let nodes = jsonpath(
        &cluster,
        &["pods", "-l", "app=batch"],
        "{.items[*].spec.nodeName}",
    );
    assert_eq!(nodes, format!("{node} {node}"));
    cluster
        .kubectl(&["taint", "node", &node, "dedicated-"])
        .expect_ok("untainted");

    // Every manifest in examples/ was applied above.
    let applied = [
        "pod.yaml",
        "deployment.yaml",
        "daemonset.yaml",
        "job.yaml",
        "cronjob.yaml",
        "config.yaml",
        "statefulset.yaml",
        "hpa.yaml",
        "scheduling.yaml",
    ];
    for entry in std::fs::read_dir(example("")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") {
            assert!(
                applied.contains(&name.as_str()),
                "examples/{name} is not applied by this test"
            );
        }
    }
}
