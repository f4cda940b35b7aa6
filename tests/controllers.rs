//! The workload controllers against a real cluster, driven by the real kubectl: Deployment
//! rollouts (status, history, undo, scale, pause/resume, restart, Recreate), ReplicaSet
//! adoption and replacement, and garbage collection (cascading, foreground, orphan, namespace
//! deletion).

use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{Cluster, wait_for};

/// A Deployment of `sleep` pods (the process runtime runs them on the host) that become Ready
/// a second after they start, so a rollout that dropped old pods too early would be seen.
fn deployment(name: &str, replicas: u32, strategy: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations: {{kubernetes.io/change-cause: first}}
spec:
  replicas: {replicas}
  revisionHistoryLimit: 2
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {strategy}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: sleeper
        command: [sleep, '300']
        readinessProbe:
          exec: {{command: ['true']}}
          initialDelaySeconds: 1
          periodSeconds: 1
"#
    )
}

fn json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    let out = cluster.kubectl(&full);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()))
}

/// Pods with `app=<app>` that are Ready and not being deleted.
fn ready_pods(cluster: &Cluster, app: &str) -> usize {
    let pods = json(cluster, &["get", "pods", "-l", &format!("app={app}")]);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

fn rollout_done(cluster: &Cluster, name: &str) {
    cluster
        .kubectl(&[
            "rollout",
            "status",
            &format!("deploy/{name}"),
            "--timeout=90s",
        ])
        .expect_ok(&format!("deployment \"{name}\" successfully rolled out"));
}

fn replicasets(cluster: &Cluster, app: &str) -> Vec<Value> {
    json(cluster, &["get", "rs", "-l", &format!("app={app}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_gone(cluster: &Cluster, args: &[&str], what: &str) {
    wait_for(Duration::from_secs(60), what, || {
        let out = json(cluster, args);
        out["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .unwrap_or_else(|e| {
        let log = cluster.log();
        let collector: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("garbage") || l.contains("WARN") || l.contains("ERROR"))
            .collect();
        panic!(
            "{e}\n{}\ncollector and warnings:\n{}",
            cluster.kubectl(args).all(),
            collector[collector.len().saturating_sub(60)..].join("\n")
        )
    });
}

#[test]
fn deployment_rollouts_with_kubectl() {
    let cluster = Cluster::start().expect("skiffd starts");
    let strategy = "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}";
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(&deployment("web", 3, strategy)))
        .expect_ok("deployment.apps/web created");
    rollout_done(&cluster, "web");
    let first = replicasets(&cluster, "web");
    assert_eq!(first.len(), 1);
    let first_rs = first[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let hash = first[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(first_rs, format!("web-{hash}"));
    assert_eq!(
        first[0]["metadata"]["ownerReferences"][0]["kind"],
        "Deployment"
    );
    assert_eq!(
        first[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // A template change rolls out with maxUnavailable=0: Ready pods never fall below 3.
    cluster
        .kubectl(&["set", "env", "deploy/web", "V=2"])
        .expect_ok("env updated");
    cluster
        .kubectl(&[
            "annotate",
            "deploy/web",
            "--overwrite",
            "kubernetes.io/change-cause=second",
        ])
        .expect_ok("annotated");
    let mut lowest = usize::MAX;
    wait_for(Duration::from_secs(90), "the second rollout", || {
        lowest = lowest.min(ready_pods(&cluster, "web"));
        let d = json(&cluster, &["get", "deploy", "web"]);
        let s = &d["status"];
        (s["updatedReplicas"] == 3
            && s["replicas"] == 3
            && s["availableReplicas"] == 3
            && s["observedGeneration"] == d["metadata"]["generation"])
            .then_some(())
    })
    .unwrap();
    assert!(
        lowest >= 3,
        "ready pods fell to {lowest} during a maxUnavailable=0 rollout"
    );
    rollout_done(&cluster, "web");
    let history = cluster.kubectl(&["rollout", "history", "deploy/web"]);
    history.expect_ok("REVISION  CHANGE-CAUSE");
    assert!(
        history.stdout.contains("1         first"),
        "{}",
        history.all()
    );
    assert!(
        history.stdout.contains("2         second"),
        "{}",
        history.all()
    );

    // Undo goes back to the first template by reusing its ReplicaSet as revision 3.
    cluster
        .kubectl(&["rollout", "undo", "deploy/web"])
        .expect_ok("deployment.apps/web rolled back");
    rollout_done(&cluster, "web");
    let rss = replicasets(&cluster, "web");
    assert_eq!(rss.len(), 2, "undo reuses the old ReplicaSet");
    let reused = rss
        .iter()
        .find(|r| r["metadata"]["name"] == first_rs.as_str())
        .expect("first ReplicaSet still there");
    assert_eq!(reused["spec"]["replicas"], 3);
    assert_eq!(
        reused["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let env = cluster.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env}",
    ]);
    assert_eq!(env.stdout, "", "undo restored the template without V=2");
    cluster
        .kubectl(&["rollout", "undo", "deploy/web", "--to-revision=42"])
        .expect_fail(1, "unable to find specified revision 42 in history");

    // Scale.
    cluster
        .kubectl(&["scale", "deploy/web", "--replicas=5"])
        .expect_ok("deployment.apps/web scaled");
    wait_for(Duration::from_secs(60), "5 available", || {
        (json(&cluster, &["get", "deploy", "web"])["status"]["availableReplicas"] == 5)
            .then_some(())
    })
    .unwrap();

    // Paused: a template change starts no rollout until resumed.
    cluster
        .kubectl(&["rollout", "pause", "deploy/web"])
        .expect_ok("deployment.apps/web paused");
    cluster
        .kubectl(&["set", "env", "deploy/web", "V=3"])
        .expect_ok("env updated");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        replicasets(&cluster, "web").len(),
        2,
        "no new ReplicaSet while paused"
    );
    let progressing = cluster.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
    ]);
    assert_eq!(progressing.stdout, "DeploymentPaused");
    cluster
        .kubectl(&["rollout", "resume", "deploy/web"])
        .expect_ok("deployment.apps/web resumed");
    rollout_done(&cluster, "web");

    // Restart makes a new ReplicaSet; history stays within revisionHistoryLimit (2 old).
    cluster
        .kubectl(&["rollout", "restart", "deploy/web"])
        .expect_ok("deployment.apps/web restarted");
    rollout_done(&cluster, "web");
    let rss = replicasets(&cluster, "web");
    assert!(rss.len() <= 3, "history trimmed: {} ReplicaSets", rss.len());
    let current: Vec<&Value> = rss.iter().filter(|r| r["spec"]["replicas"] == 5).collect();
    assert_eq!(current.len(), 1);
    assert!(
        current[0]["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
    let events = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=ScalingReplicaSet",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.stdout.contains("Scaled up replica set"),
        "{}",
        events.all()
    );
    assert!(
        events.stdout.contains("Scaled down replica set"),
        "{}",
        events.all()
    );

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    cluster
        .kubectl(&["delete", "deploy", "web"])
        .expect_ok("deleted");
    wait_gone(
        &cluster,
        &["get", "rs", "-l", "app=web"],
        "ReplicaSets collected",
    );
    wait_gone(
        &cluster,
        &["get", "pods", "-l", "app=web"],
        "pods collected",
    );

    // Every controller counts its work queue under client-go's names; the rollout went through
    // the deployment and replicaset queues, and nothing is left waiting once it is over.
    let text = cluster.component_metrics("controllerManager");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("missing {series} in\n{text}"))
    };
    for name in ["deployment", "replicaset"] {
        assert!(value(&format!("workqueue_adds_total{{name=\"{name}\"}}")) > 0.0);
        assert!(
            value(&format!(
                "workqueue_queue_duration_seconds_count{{name=\"{name}\"}}"
            )) > 0.0
        );
        assert!(
            value(&format!(
                "workqueue_work_duration_seconds_count{{name=\"{name}\"}}"
            )) > 0.0
        );
    }
    for name in ["daemonset", "statefulset", "job", "cronjob", "namespace"] {
        value(&format!("workqueue_depth{{name=\"{name}\"}}"));
    }
    wait_for(Duration::from_secs(30), "deployment queue drained", || {
        cluster
            .component_metrics("controllerManager")
            .contains("workqueue_depth{name=\"deployment\"} 0")
            .then_some(())
    })
    .unwrap();
}

#[test]
fn recreate_never_runs_old_and_new_together() {
    let cluster = Cluster::start().expect("skiffd starts");
    cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some(&deployment("rc", 2, "{type: Recreate}")),
        )
        .expect_ok("created");
    rollout_done(&cluster, "rc");
    cluster
        .kubectl(&["set", "env", "deploy/rc", "V=2"])
        .expect_ok("env updated");
    let mut mixed = false;
    wait_for(Duration::from_secs(90), "the Recreate rollout", || {
        let pods = json(&cluster, &["get", "pods", "-l", "app=rc"]);
        let hashes: std::collections::HashSet<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| {
                p["metadata"]["labels"]["pod-template-hash"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        mixed |= hashes.len() > 1;
        let s = json(&cluster, &["get", "deploy", "rc"])["status"].clone();
        (s["updatedReplicas"] == 2 && s["availableReplicas"] == 2 && s["replicas"] == 2)
            .then_some(())
    })
    .unwrap();
    assert!(!mixed, "old and new pods ran at the same time");
}

#[test]
fn replicasets_adopt_replace_and_garbage_is_collected() {
    let cluster = Cluster::start().expect("skiffd starts");
    let apply = |yaml: &str| {
        cluster
            .kubectl_in(&["apply", "-f", "-"], Some(yaml))
            .expect_ok("");
    };
    // An orphan pod with matching labels is adopted; one more is created.
    apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stray, labels: {app: rs}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{name: c, image: sleeper, command: [sleep, '300']}]\n",
    );
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: rs}}\n  template:\n    metadata: {labels: {app: rs}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{name: c, image: sleeper, command: [sleep, '300']}]\n";
    apply(rs);
    let ready = |n: u64| {
        wait_for(Duration::from_secs(60), &format!("{n} ready"), || {
            (json(&cluster, &["get", "rs", "rs"])["status"]["readyReplicas"] == n).then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                cluster.kubectl(&["get", "pods", "-o", "wide"]).all()
            )
        });
    };
    ready(2);
    let stray = json(&cluster, &["get", "pod", "stray"]);
    assert_eq!(stray["metadata"]["ownerReferences"][0]["name"], "rs");
    assert_eq!(stray["metadata"]["ownerReferences"][0]["controller"], true);

    // A pod relabelled out of the selector is released and replaced.
    cluster
        .kubectl(&["label", "pod", "stray", "app=gone", "--overwrite"])
        .expect_ok("labeled");
    wait_for(Duration::from_secs(30), "stray released", || {
        json(&cluster, &["get", "pod", "stray"])["metadata"]["ownerReferences"]
            .is_null()
            .then_some(())
    })
    .unwrap();
    ready(2);
    let events = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulCreate",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.stdout.contains("Created pod: rs-"),
        "{}",
        events.all()
    );

    // Orphan cascade: the ReplicaSet goes, its pods stay without an owner.
    cluster
        .kubectl(&["delete", "rs", "rs", "--cascade=orphan"])
        .expect_ok("deleted");
    wait_for(Duration::from_secs(30), "pods orphaned", || {
        let pods = json(&cluster, &["get", "pods", "-l", "app=rs"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2
            && items
                .iter()
                .all(|p| p["metadata"]["ownerReferences"].is_null()))
        .then_some(())
    })
    .unwrap();

    // Foreground cascade: re-created, the ReplicaSet adopts them again, then is deleted only
    // after its pods.
    apply(rs);
    ready(2);
    cluster
        .kubectl(&["delete", "rs", "rs", "--cascade=foreground"])
        .expect_ok("deleted");
    wait_gone(
        &cluster,
        &["get", "pods", "-l", "app=rs"],
        "pods deleted first",
    );
    wait_gone(
        &cluster,
        &["get", "rs"],
        "ReplicaSet deleted after its pods",
    );

    // A dependent whose owner never existed is collected.
    apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dangling\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: nope, uid: 00000000-0000-0000-0000-000000000001}]\n",
    );
    wait_for(
        Duration::from_secs(90),
        "dangling ConfigMap collected",
        || {
            cluster
                .kubectl(&["get", "cm", "dangling"])
                .stderr
                .contains("NotFound")
                .then_some(())
        },
    )
    .unwrap();

    // Deleting a namespace deletes what is in it, then the namespace.
    cluster
        .kubectl(&["create", "ns", "doomed"])
        .expect_ok("created");
    cluster
        .kubectl_in(
            &["-n", "doomed", "apply", "-f", "-"],
            Some(&deployment("d", 2, "{type: RollingUpdate}")),
        )
        .expect_ok("created");
    cluster
        .kubectl(&["-n", "doomed", "create", "cm", "c", "--from-literal=a=b"])
        .expect_ok("created");
    cluster
        .kubectl(&[
            "-n",
            "doomed",
            "rollout",
            "status",
            "deploy/d",
            "--timeout=60s",
        ])
        .expect_ok("successfully rolled out");
    cluster
        .kubectl(&["delete", "ns", "doomed", "--timeout=60s"])
        .expect_ok("namespace \"doomed\" deleted");
    cluster
        .kubectl(&["get", "ns", "doomed"])
        .expect_fail(1, "namespaces \"doomed\" not found");
}

#[test]
fn daemonset_follows_nodes_and_rolls_out() {
    let cluster = Cluster::start().expect("skiffd starts");
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: logs}\nspec:\n  selector: {matchLabels: {app: logs}}\n  template:\n    metadata: {labels: {app: logs}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{name: c, image: sleeper, command: [sleep, '300']}]\n";
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(ds))
        .expect_ok("daemonset.apps/logs created");
    cluster
        .kubectl(&["rollout", "status", "ds/logs", "--timeout=60s"])
        .expect_ok("daemon set \"logs\" successfully rolled out");

    // A node that joins later gets its pod; a cordoned node keeps it.
    let second = format!("{}-b", cluster.node);
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let agent = skiff_e2e::Agent::start(&["--kubeconfig".into(), kubeconfig], &second);
    cluster
        .kubectl(&["cordon", &cluster.node])
        .expect_ok("cordoned");
    wait_for(Duration::from_secs(60), "a pod on each node", || {
        let ds = json(&cluster, &["get", "ds", "logs"]);
        let s = &ds["status"];
        (s["desiredNumberScheduled"] == 2 && s["numberReady"] == 2).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            cluster.kubectl(&["get", "pods", "-o", "wide"]).all(),
            agent.log()
        )
    });
    let pods = json(&cluster, &["get", "pods", "-l", "app=logs"]);
    let mut nodes: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    nodes.sort();
    let mut want = vec![cluster.node.clone(), second.clone()];
    want.sort();
    assert_eq!(nodes, want);

    // A template change rolls out node by node, recorded as ControllerRevisions.
    cluster
        .kubectl(&["set", "env", "ds/logs", "V=2"])
        .expect_ok("env updated");
    cluster
        .kubectl(&["rollout", "status", "ds/logs", "--timeout=90s"])
        .expect_ok("successfully rolled out");
    let history = cluster.kubectl(&["rollout", "history", "ds/logs"]);
    history.expect_ok("REVISION");
    assert!(
        history.stdout.contains("\n1 ") && history.stdout.contains("\n2 "),
        "{}",
        history.all()
    );
    cluster
        .kubectl(&["rollout", "undo", "ds/logs"])
        .expect_ok("rolled back");
    cluster
        .kubectl(&["rollout", "status", "ds/logs", "--timeout=90s"])
        .expect_ok("successfully rolled out");
    let env = cluster.kubectl(&[
        "get",
        "ds",
        "logs",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env}",
    ]);
    assert_eq!(env.stdout, "", "undo restored the first template");

    // A node the DaemonSet no longer selects loses its pod.
    cluster
        .kubectl(&["label", "node", &second, "logs=no"])
        .expect_ok("labeled");
    let selector = "{\"spec\":{\"template\":{\"spec\":{\"affinity\":{\"nodeAffinity\":{\"requiredDuringSchedulingIgnoredDuringExecution\":{\"nodeSelectorTerms\":[{\"matchExpressions\":[{\"key\":\"logs\",\"operator\":\"NotIn\",\"values\":[\"no\"]}]}]}}}}}}}";
    cluster
        .kubectl(&["patch", "ds", "logs", "-p", selector])
        .expect_ok("patched");
    wait_for(
        Duration::from_secs(60),
        "the pod leaves the excluded node",
        || {
            let s = json(&cluster, &["get", "ds", "logs"])["status"].clone();
            (s["desiredNumberScheduled"] == 1
                && s["currentNumberScheduled"] == 1
                && s["numberMisscheduled"] == 0)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster.kubectl(&["get", "pods", "-o", "wide"]).all()
        )
    });
    drop(agent);
}

fn job(name: &str, spec: &str, command: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: c, image: sleeper, command: {command}}}]\n"
    )
}

fn job_condition(cluster: &Cluster, name: &str, timeout: u64) -> (String, Value) {
    wait_for(
        Duration::from_secs(timeout),
        &format!("job {name} finishes"),
        || {
            let j = json(cluster, &["get", "job", name]);
            let done = j["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                })?;
            Some((done["type"].as_str()?.to_owned(), j))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster.kubectl(&["get", "pods", "-o", "wide"]).all()
        )
    })
}

#[test]
fn jobs_complete_fail_and_expire() {
    let cluster = Cluster::start().expect("skiffd starts");
    let apply = |yaml: &str| {
        cluster
            .kubectl_in(&["apply", "-f", "-"], Some(yaml))
            .expect_ok("created");
    };
    // completions=5, parallelism=2: never more than two at once, five successes.
    apply(&job(
        "five",
        "  completions: 5\n  parallelism: 2\n",
        "[sleep, '1']",
    ));
    let mut most = 0;
    let (kind, j) = wait_for(Duration::from_secs(120), "five completions", || {
        let pods = json(&cluster, &["get", "pods", "-l", "job-name=five"]);
        let running = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] != "Succeeded" && p["status"]["phase"] != "Failed")
            .count();
        most = most.max(running);
        let j = json(&cluster, &["get", "job", "five"]);
        let done = j["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Complete")?;
        Some((done["type"].as_str()?.to_owned(), j))
    })
    .unwrap();
    assert_eq!(kind, "Complete");
    assert_eq!(j["status"]["succeeded"], 5);
    assert!(j["status"]["completionTime"].is_string());
    assert!(most <= 2, "{most} pods ran at once with parallelism 2");
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/five",
            "--timeout=5s",
        ])
        .expect_ok("condition met");

    // Indexed: each index succeeds once and is reported.
    apply(&job(
        "idx",
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
        "[sh, -c, 'test -n \"$JOB_COMPLETION_INDEX\"']",
    ));
    let (kind, j) = job_condition(&cluster, "idx", 120);
    assert_eq!(kind, "Complete", "{j}");
    assert_eq!(j["status"]["completedIndexes"], "0-2");

    // backoffLimit 0: one failure fails the job.
    apply(&job("bad", "  backoffLimit: 0\n", "[sh, -c, 'exit 3']"));
    let (kind, j) = job_condition(&cluster, "bad", 120);
    assert_eq!(kind, "Failed");
    let reason = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()["reason"]
        .clone();
    assert_eq!(reason, "BackoffLimitExceeded");

    // activeDeadlineSeconds: a pod that runs too long fails the job and is stopped.
    apply(&job(
        "slow",
        "  activeDeadlineSeconds: 3\n",
        "[sleep, '300']",
    ));
    let (kind, j) = job_condition(&cluster, "slow", 120);
    assert_eq!(kind, "Failed");
    let reason = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()["reason"]
        .clone();
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(j["status"]["active"], 0);

    // ttlSecondsAfterFinished: the finished job and its pods are deleted.
    apply(&job("brief", "  ttlSecondsAfterFinished: 2\n", "['true']"));
    wait_for(
        Duration::from_secs(90),
        "job brief deleted after its TTL",
        || {
            cluster
                .kubectl(&["get", "job", "brief"])
                .stderr
                .contains("NotFound")
                .then_some(())
        },
    )
    .unwrap();
    wait_gone(
        &cluster,
        &["get", "pods", "-l", "job-name=brief"],
        "its pods collected",
    );
}

#[test]
fn cronjob_runs_on_schedule_with_forbid() {
    let cluster = Cluster::start().expect("skiffd starts");
    // Every minute; each run lasts longer than a minute, so Forbid skips the next time.
    let cj = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: '* * * * *'\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          terminationGracePeriodSeconds: 1\n          containers: [{name: c, image: sleeper, command: [sleep, '70']}]\n";
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(cj))
        .expect_ok("cronjob.batch/tick created");
    let jobs = |cluster: &Cluster| -> Vec<Value> {
        json(cluster, &["get", "jobs"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let first = wait_for(Duration::from_secs(75), "the first scheduled job", || {
        jobs(&cluster).first().cloned()
    })
    .unwrap();
    let scheduled =
        first["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(
        scheduled.ends_with(":00Z"),
        "scheduled on a minute boundary: {scheduled}"
    );
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    // The status follows the Job's creation: a scheduled time and the running Job.
    let mut status = Value::Null;
    wait_for(Duration::from_secs(30), "status of the first run", || {
        status = json(&cluster, &["get", "cronjob", "tick"])["status"].clone();
        (status["lastScheduleTime"]
            .as_str()
            .is_some_and(|t| t.ends_with(":00Z"))
            && status["active"].as_array().is_some_and(|a| !a.is_empty()))
        .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: status {status}, first job {first}"));

    // The next minute comes while the first job still runs: skipped, said in an event.
    wait_for(Duration::from_secs(75), "the Forbid skip", || {
        let events = cluster.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=JobAlreadyActive",
            "-o",
            "name",
        ]);
        (!events.stdout.trim().is_empty()).then_some(())
    })
    .unwrap();
    assert_eq!(jobs(&cluster).len(), 1, "Forbid let a second job start");

    // Once the first finishes, the following minute starts the second.
    wait_for(Duration::from_secs(150), "the second job", || {
        (jobs(&cluster).len() == 2).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster.kubectl(&["get", "jobs,cronjobs,events"]).all()
        )
    });
    wait_for(Duration::from_secs(30), "lastSuccessfulTime", || {
        json(&cluster, &["get", "cronjob", "tick"])["status"]["lastSuccessfulTime"]
            .is_string()
            .then_some(())
    })
    .unwrap();
}

fn pod_nodes(cluster: &Cluster, app: &str) -> Vec<String> {
    let pods = json(cluster, &["get", "pods", "-l", &format!("app={app}")]);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running"
        })
        .map(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn drain_and_a_lost_node_move_pods() {
    let cluster = Cluster::start_with(&[
        "--node-monitor-grace-period-secs",
        "5",
        "--default-unreachable-toleration-seconds",
        "3",
    ])
    .expect("skiffd starts");
    let a = cluster.node.clone();
    let b = format!("{a}-b");
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let mut agent = skiff_e2e::Agent::start(&["--kubeconfig".into(), kubeconfig], &b);
    wait_for(Duration::from_secs(60), "the second node Ready", || {
        let out = cluster.kubectl(&[
            "get",
            "node",
            &b,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (out.stdout == "True").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    // Admission gave every pod the shortened unreachable toleration.
    cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some(&deployment("web", 2, "{type: RollingUpdate}")),
        )
        .expect_ok("created");
    rollout_done(&cluster, "web");
    let pod = json(&cluster, &["get", "pods", "-l", "app=web"])["items"][0].clone();
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 3),
        "{pod}"
    );

    // Drain evicts everything from the first node; the pods come back on the second.
    cluster
        .kubectl(&["drain", &a, "--ignore-daemonsets", "--timeout=90s"])
        .expect_ok(&format!("node/{a} drained"));
    wait_for(
        Duration::from_secs(90),
        "both pods on the second node",
        || {
            let nodes = pod_nodes(&cluster, "web");
            (nodes.len() == 2 && nodes.iter().all(|n| *n == b)).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster.kubectl(&["get", "pods", "-o", "wide"]).all()
        )
    });
    cluster
        .kubectl(&["get", "node", &a])
        .expect_ok("SchedulingDisabled");
    cluster.kubectl(&["uncordon", &a]).expect_ok("uncordoned");

    // The second node dies: it goes Unknown and unreachable, its pods are evicted after the
    // toleration, and the Deployment runs them on the first node again.
    agent.kill9();
    wait_for(
        Duration::from_secs(120),
        "the lost node marked unreachable",
        || {
            let node = json(&cluster, &["get", "node", &b]);
            let ready = node["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?["status"]
                .clone();
            let tainted = node["spec"]["taints"].as_array()?.iter().any(|t| {
                t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"
            });
            (ready == "Unknown" && tainted).then_some(())
        },
    )
    .unwrap();
    wait_for(
        Duration::from_secs(90),
        "pods rescheduled to the first node",
        || {
            let nodes = pod_nodes(&cluster, "web");
            (nodes.len() == 2 && nodes.iter().all(|n| *n == a)).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            cluster.kubectl(&["get", "pods", "-o", "wide"]).all()
        )
    });
    let events = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
        "-o",
        "name",
    ]);
    assert!(!events.stdout.trim().is_empty(), "{}", events.all());
}

#[test]
fn statefulset_orders_pods_and_updates_from_the_top() {
    let cluster = Cluster::start().expect("skiffd starts");
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 3\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: sleeper\n        command: [sleep, '300']\n        readinessProbe: {exec: {command: ['true']}, initialDelaySeconds: 1, periodSeconds: 1}\n";
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(sts))
        .expect_ok("statefulset.apps/db created");
    cluster
        .kubectl(&["rollout", "status", "sts/db", "--timeout=90s"])
        .expect_ok("");
    // OrderedReady: each pod was created after the previous one was Ready.
    let pods = json(&cluster, &["get", "pods", "-l", "app=db"]);
    let mut created: Vec<(String, String, String)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ready_at = p["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()["lastTransitionTime"]
                .as_str()
                .unwrap()
                .to_owned();
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                ready_at,
            )
        })
        .collect();
    created.sort();
    let names: Vec<&str> = created.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    for w in created.windows(2) {
        assert!(
            w[1].1 >= w[0].2,
            "{} created before {} was Ready: {created:?}",
            w[1].0,
            w[0].0
        );
    }
    let pod = json(&cluster, &["get", "pod", "db-1"]);
    assert_eq!(pod["spec"]["hostname"], "db-1");
    assert_eq!(pod["spec"]["subdomain"], "db");

    // A partitioned update touches only ordinals at or above the partition.
    cluster
        .kubectl(&[
            "patch",
            "sts",
            "db",
            "-p",
            "{\"spec\":{\"updateStrategy\":{\"rollingUpdate\":{\"partition\":2}}}}",
        ])
        .expect_ok("patched");
    cluster
        .kubectl(&["set", "env", "sts/db", "V=2"])
        .expect_ok("env updated");
    cluster
        .kubectl(&["rollout", "status", "sts/db", "--timeout=90s"])
        .expect_ok("partitioned roll out complete");
    let hash = |pod: &str| {
        json(&cluster, &["get", "pod", pod])["metadata"]["labels"]["controller-revision-hash"]
            .clone()
    };
    assert_ne!(hash("db-2"), hash("db-1"));
    assert_eq!(hash("db-0"), hash("db-1"));
    // Partition 0 finishes the rollout, highest first; revisions are recorded.
    cluster
        .kubectl(&[
            "patch",
            "sts",
            "db",
            "-p",
            "{\"spec\":{\"updateStrategy\":{\"rollingUpdate\":{\"partition\":0}}}}",
        ])
        .expect_ok("patched");
    cluster
        .kubectl(&["rollout", "status", "sts/db", "--timeout=120s"])
        .expect_ok("partitioned roll out complete: 3 new pods have been updated");
    assert_eq!(hash("db-0"), hash("db-2"));
    cluster
        .kubectl(&["rollout", "history", "sts/db"])
        .expect_ok("REVISION");

    // Scale down removes the highest ordinal.
    cluster
        .kubectl(&["scale", "sts/db", "--replicas=2"])
        .expect_ok("scaled");
    wait_gone(
        &cluster,
        &["get", "pods", "--field-selector", "metadata.name=db-2"],
        "db-2 removed",
    );
    cluster.kubectl(&["get", "pod", "db-1"]).expect_ok("db-1");
}
