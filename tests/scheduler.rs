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
            // The age column reads `0s (x2 over 1s)` once a retry repeated the event.
            r"Warning +FailedScheduling +\S+(?: \(x\d+ over \S+\))? +default-scheduler +{}",
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
    let text = cluster.component_metrics("scheduler");
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

/// The holder and transition count of a Lease in kube-system.
fn lease(cluster: &Cluster, name: &str) -> (String, String) {
    let out = cluster
        .kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            name,
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
        ])
        .stdout;
    let (holder, transitions) = out.split_once(' ').unwrap_or((&out, ""));
    (holder.to_owned(), transitions.to_owned())
}

/// The identity a standalone component campaigns with, read from its log.
fn identity(daemon: &skiff_e2e::Daemon) -> Option<String> {
    let log = daemon.log();
    let at = log.find("identity=")? + "identity=".len();
    Some(log[at..].split(['}', ' ']).next()?.to_owned())
}

fn metrics_address(daemon: &skiff_e2e::Daemon) -> Option<String> {
    let log = daemon.log();
    let at = log.find("serving /metrics and /healthz address=")?
        + "serving /metrics and /healthz address=".len();
    Some(log[at..].lines().next()?.trim().to_owned())
}

fn master_status(daemon: &skiff_e2e::Daemon) -> Option<String> {
    let addr = metrics_address(daemon)?;
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("leader_election_master_status{name=\"kube-scheduler\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_owned)
}

/// Two standalone schedulers share the `kube-scheduler` Lease: one binds pods, the other stands
/// by; when the leader is killed the standby takes over after the lease duration, and a leader
/// that stops cleanly hands the Lease back at once. The in-process controller manager holds its
/// own Lease.
#[test]
fn schedulers_elect_one_leader_and_fail_over() {
    let timings = [
        "--leader-elect-lease-duration",
        "3s",
        "--leader-elect-renew-deadline",
        "2s",
        "--leader-elect-retry-period",
        "500ms",
    ];
    let mut up_args = vec!["--disable-scheduler"];
    up_args.extend(timings);
    let cluster = Cluster::start_with(&up_args).expect("skiffd starts");
    let (cm_holder, _) = wait_for(Duration::from_secs(30), "controller-manager lease", || {
        let l = lease(&cluster, "kube-controller-manager");
        (!l.0.is_empty()).then_some(l)
    })
    .unwrap();

    let mut args: Vec<String> = vec![
        "--kubeconfig".into(),
        cluster.kubeconfig.display().to_string(),
        "--metrics-bind-address".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(timings.iter().map(|s| (*s).to_owned()));
    let mut a = skiff_e2e::Daemon::start("scheduler", &args);
    let mut b = skiff_e2e::Daemon::start("scheduler", &args);
    let ids = wait_for(Duration::from_secs(30), "both identities logged", || {
        Some((identity(&a)?, identity(&b)?))
    })
    .unwrap();
    let (holder, transitions) = wait_for(Duration::from_secs(30), "a scheduler leads", || {
        let l = lease(&cluster, "kube-scheduler");
        (l.0 == ids.0 || l.0 == ids.1).then_some(l)
    })
    .unwrap_or_else(|e| panic!("{e}\nA:\n{}\nB:\n{}", a.log(), b.log()));
    assert_ne!(holder, cm_holder, "the scheduler's lease is its own");
    let (leader, standby) = if holder == ids.0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    wait_for(Duration::from_secs(10), "master_status 1 / 0", || {
        (master_status(leader)? == "1" && master_status(standby)? == "0").then_some(())
    })
    .unwrap();

    let apply = |yaml: &str| {
        cluster
            .kubectl_in(&["apply", "-f", "-"], Some(yaml))
            .expect_ok("created");
    };
    apply(&pod("first", "", ""));
    wait_field(&cluster, "first", "{.spec.nodeName}", &cluster.node);
    assert!(
        leader.log().contains("scheduler started") && !standby.log().contains("scheduler started"),
        "only the leader schedules"
    );

    // A crashed leader's Lease is taken over once it has not been renewed for the duration.
    leader.kill9();
    let standby_id = identity(standby).unwrap();
    let (_, after) = wait_for(Duration::from_secs(30), "the standby takes over", || {
        let l = lease(&cluster, "kube-scheduler");
        (l.0 == standby_id).then_some(l)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", standby.log()));
    assert_eq!(
        after.parse::<i32>().unwrap(),
        transitions.parse::<i32>().unwrap() + 1,
        "a takeover is a transition"
    );
    apply(&pod("second", "", ""));
    wait_field(&cluster, "second", "{.spec.nodeName}", &cluster.node);

    // A leader that stops cleanly releases the Lease.
    standby.stop();
    let (released, _) = lease(&cluster, "kube-scheduler");
    assert_eq!(released, "", "the Lease is released on a clean stop");
    assert!(standby.log().contains("became leader"));
}

/// `skiffd fake-nodes` registers nodes that keep their Leases fresh and run pods without
/// containers: a Deployment tolerating their taint spreads over them and becomes Available, its
/// pods are finished off when scaled away, other pods stay off them, and they go Unknown once
/// the process stops.
#[test]
fn fake_nodes_run_pods_without_containers() {
    let cluster =
        Cluster::start_with(&["--node-monitor-grace-period-secs", "4"]).expect("skiffd starts");
    let mut fake = skiff_e2e::Daemon::start(
        "fake-nodes",
        &[
            "--kubeconfig".into(),
            cluster.kubeconfig.display().to_string(),
            "--count".into(),
            "3".into(),
            "--prefix".into(),
            "kwok-".into(),
            "--lease-renew-interval-secs".into(),
            "1".into(),
            "--metrics-bind-address".into(),
            "127.0.0.1:0".into(),
        ],
    );
    let ready =
        "{range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}";
    wait_for(Duration::from_secs(30), "three Ready fake nodes", || {
        let out = cluster
            .kubectl(&[
                "get",
                "nodes",
                "-l",
                "skiff.dev/fake-node=true",
                "-o",
                &format!("jsonpath={ready}"),
            ])
            .stdout;
        (out.matches("=True").count() == 3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", fake.log()));
    cluster
        .kubectl(&[
            "get",
            "node",
            "kwok-0",
            "-o",
            "jsonpath={.spec.taints[0].key}={.spec.taints[0].effect}",
        ])
        .expect_ok("skiff.dev/fake-node=NoSchedule");

    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: fleet}\nspec:\n  replicas: 6\n  selector: {matchLabels: {app: fleet}}\n  template:\n    metadata: {labels: {app: fleet}}\n    spec:\n      nodeSelector: {skiff.dev/fake-node: 'true'}\n      tolerations: [{key: skiff.dev/fake-node, operator: Exists, effect: NoSchedule}]\n      containers: [{name: c, image: not-pulled-anywhere, resources: {requests: {cpu: 100m}}}]\n";
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(deployment))
        .expect_ok("created");
    cluster
        .kubectl(&["rollout", "status", "deploy/fleet", "--timeout=60s"])
        .expect_ok("successfully rolled out");
    let placed = cluster
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=fleet",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName} {.status.podIP}\n{end}",
        ])
        .stdout;
    for node in ["kwok-0", "kwok-1", "kwok-2"] {
        assert_eq!(
            placed.matches(&format!("{node} ")).count(),
            2,
            "replicas spread evenly:\n{placed}"
        );
    }
    assert!(
        placed.lines().all(|l| l.contains(" 10.128.")),
        "fake pod IPs:\n{placed}"
    );

    // A pod without the toleration lands on the real node.
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(&pod("plain", "", "")))
        .expect_ok("created");
    wait_field(&cluster, "plain", "{.spec.nodeName}", &cluster.node);

    // Scaling to zero: the ReplicaSet deletes its pods and the fake kubelet finishes them off.
    // (Cascading deletion is the garbage collector's, tested in controllers.rs.)
    cluster
        .kubectl(&["scale", "deploy/fleet", "--replicas=0"])
        .expect_ok("scaled");
    wait_for(Duration::from_secs(60), "fleet pods gone", || {
        cluster
            .kubectl(&["get", "pods", "-l", "app=fleet", "-o", "name"])
            .stdout
            .trim()
            .is_empty()
            .then_some(())
    })
    .unwrap_or_else(|e| {
        let log = cluster.log();
        let notes: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("garbage") || l.contains("WARN") || l.contains("ERROR"))
            .collect();
        panic!(
            "{e}\n{}\n{}\nfake-nodes:\n{}\nskiffd:\n{}",
            cluster.kubectl(&["get", "rs,pods", "-o", "wide"]).all(),
            cluster
                .kubectl(&["get", "pods", "-l", "app=fleet", "-o", "yaml"])
                .all(),
            fake.log(),
            notes[notes.len().saturating_sub(60)..].join("\n")
        )
    });

    // Without the process, the Leases lapse and the nodes become Unknown.
    fake.stop();
    let ok = wait_for(Duration::from_secs(60), "fake nodes Unknown", || {
        let out = cluster
            .kubectl(&[
                "get",
                "nodes",
                "-l",
                "skiff.dev/fake-node=true",
                "-o",
                &format!("jsonpath={ready}"),
            ])
            .stdout;
        (out.matches("=Unknown").count() == 3).then_some(())
    });
    if let Err(e) = ok {
        panic!(
            "{e}\n{}\nskiffd:\n{}",
            cluster.kubectl(&["get", "nodes", "-o", "wide"]).all(),
            cluster
                .log()
                .lines()
                .filter(|l| l.contains("lifecycle") || l.contains("WARN"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
