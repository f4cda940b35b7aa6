//! The scheduler against a real cluster: pods without a node are bound and run; pods that fit
//! nowhere say why in kube-scheduler's words, and are placed once the cluster changes (a label
//! added, a node uncordoned).

use std::time::Duration;

use skiff_e2e::{Cluster, wait_for};

/// A pod running `sleep` (the process runtime runs it on the host), with extra spec lines and
/// extra container fields.
fn pod(name: &str, extra_spec: &str, extra_container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra_spec}  containers:\n  - {{name: c, image: sleeper, command: [sleep, '300']{extra_container}}}\n"
    )
}

fn wait_field(cluster: &Cluster, pod: &str, path: &str, want: &str) {
    let mut last = String::new();
    let got = wait_for(
        Duration::from_secs(60),
        &format!("{pod} {path} = {want}"),
        || {
            last = cluster
                .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
                .stdout;
            (last == want).then_some(())
        },
    );
    if got.is_err() {
        panic!(
            "{pod} {path} is {last:?}, wanted {want:?}\n{}\n{}",
            cluster.kubectl(&["describe", "pod", pod]).all(),
            cluster
                .log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn pods_are_scheduled_or_told_why_not() {
    let cluster = Cluster::start().expect("skiffd starts");
    let node = cluster.node.clone();
    let apply = |yaml: &str| {
        cluster
            .kubectl_in(&["apply", "-f", "-"], Some(yaml))
            .expect_ok("created");
    };

    // A pod without a node is bound to the only node, runs, and says so in an event.
    apply(&pod("free", "", ""));
    wait_field(&cluster, "free", "{.spec.nodeName}", &node);
    wait_field(&cluster, "free", "{.status.phase}", "Running");
    wait_field(
        &cluster,
        "free",
        "{.status.conditions[?(@.type==\"PodScheduled\")].status}",
        "True",
    );
    cluster
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=Scheduled",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .expect_ok(&format!("Successfully assigned default/free to {node}"));

    // Too big: Pending with upstream's wording, on the condition and in an event.
    apply(&pod("huge", "", ", resources: {requests: {cpu: '1000'}}"));
    let huge = "0/1 nodes are available: 1 Insufficient cpu.";
    wait_field(
        &cluster,
        "huge",
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        huge,
    );
    wait_field(
        &cluster,
        "huge",
        "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        "Unschedulable",
    );
    cluster
        .kubectl(&["describe", "pod", "huge"])
        .expect_ok(&format!(
            r"Warning +FailedScheduling +\S+ +default-scheduler +{}",
            regex_escape(huge)
        ));
    cluster
        .kubectl(&["get", "pod", "huge"])
        .expect_ok(r"huge +0/1 +Pending");

    // A selector nothing matches waits, and is placed once the node gets the label.
    apply(&pod("picky", "  nodeSelector: {disk: ssd}\n", ""));
    wait_field(
        &cluster,
        "picky",
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
    );
    cluster
        .kubectl(&["label", "node", &node, "disk=ssd"])
        .expect_ok("labeled");
    wait_field(&cluster, "picky", "{.spec.nodeName}", &node);

    // A cordoned node takes nothing new until it is uncordoned.
    cluster.kubectl(&["cordon", &node]).expect_ok("cordoned");
    apply(&pod("late", "", ""));
    wait_field(
        &cluster,
        "late",
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        "0/1 nodes are available: 1 node(s) were unschedulable.",
    );
    cluster
        .kubectl(&["uncordon", &node])
        .expect_ok("uncordoned");
    wait_field(&cluster, "late", "{.spec.nodeName}", &node);

    // The scheduler's metrics carry kube-scheduler's names.
    let metrics = cluster.http("GET", "/metrics", None, b"").unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for series in [
        "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"}",
        "scheduler_schedule_attempts_total{result=\"unschedulable\",profile=\"default-scheduler\"}",
        "scheduler_scheduling_attempt_duration_seconds_bucket",
        "scheduler_pod_scheduling_sli_duration_seconds_bucket",
        "scheduler_pending_pods{queue=\"unschedulable\"} 1",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }

    cluster
        .kubectl(&[
            "delete",
            "pod",
            "free",
            "picky",
            "late",
            "huge",
            "--wait=true",
        ])
        .expect_ok("deleted");
}

fn regex_escape(s: &str) -> String {
    regex::escape(s)
}
