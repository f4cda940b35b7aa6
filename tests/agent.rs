//! The node agent on both runtimes, through the real API server and kubectl: pods reach Running
//! and Ready, crash and restart with backoff, probes restart or unready them, init containers
//! run in order, env and volumes arrive and update, termination is graceful, OOM kills are
//! reported, bad specs wait with clear reasons, static pods are mirrored, logs and exec work,
//! and a restarted agent adopts its containers.
//!
//! Every pod uses the image `skiff-testapp:e2e`: on Docker an image imported from the test
//! workload binary, on the process runtime an `--image-alias` to the same binary.

use std::time::Duration;

use skiff_e2e::{Cluster, bin_dir, docker_test_images, wait_for};

const BOTH: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, color: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: __NODE__
  containers:
  - name: app
    image: skiff-testapp:e2e
    args: [serve, --port, "8080"]
    ports: [{containerPort: 8080, name: http}]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: COMBINED, value: "$(GREETING)-$(MY_POD)"}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: settings}}
    readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1, failureThreshold: 1}
    livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1, failureThreshold: 2}
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: scratch, mountPath: /scratch}
  volumes:
  - {name: config, configMap: {name: settings}}
  - {name: scratch, emptyDir: {}}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  nodeName: __NODE__
  containers:
  - {name: app, image: skiff-testapp:e2e, args: [exit, --code, "3", --after-ms, "200", --message, "about to fail"]}
---
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  nodeName: __NODE__
  initContainers:
  - {name: first, image: skiff-testapp:e2e, args: [exit, --message, "first init", --after-ms, "500"]}
  - {name: second, image: skiff-testapp:e2e, args: [exit, --message, "second init"]}
  containers:
  - {name: app, image: skiff-testapp:e2e, args: [sleep]}
---
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  nodeName: __NODE__
  restartPolicy: Never
  containers:
  - name: app
    image: skiff-testapp:e2e
    args: [alloc, --mb, "300"]
    resources: {limits: {memory: 48Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: needs-config}
spec:
  nodeName: __NODE__
  containers:
  - name: app
    image: skiff-testapp:e2e
    args: [sleep]
    env: [{name: X, valueFrom: {configMapKeyRef: {name: late, key: x}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: needs-volume}
spec:
  nodeName: __NODE__
  containers:
  - {name: app, image: skiff-testapp:e2e, args: [sleep], volumeMounts: [{name: v, mountPath: /v}]}
  volumes:
  - {name: v, configMap: {name: absent}}
---
apiVersion: v1
kind: Pod
metadata: {name: logger}
spec:
  nodeName: __NODE__
  containers:
  - {name: app, image: skiff-testapp:e2e, args: [log, --count, "100000", --every-ms, "100", --text, tick]}
"#;

/// The agent's log lines about `pod`, and its warnings.
fn agent_log(cluster: &Cluster, pod: &str) -> String {
    cluster
        .log()
        .lines()
        .filter(|l| l.contains(pod) || l.contains("WARN"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn pod_field(cluster: &Cluster, pod: &str, path: &str) -> String {
    cluster
        .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .stdout
}

#[track_caller]
fn wait_pod(
    cluster: &Cluster,
    pod: &str,
    path: &str,
    want: impl Fn(&str) -> bool,
    what: &str,
) -> String {
    let mut last = String::new();
    let result = wait_for(Duration::from_secs(60), what, || {
        last = pod_field(cluster, pod, path);
        want(&last).then(|| last.clone())
    });
    match result {
        Ok(v) => v,
        Err(e) => panic!(
            "{e}: {pod} {path} = {last:?}\n{}\n{}",
            cluster.kubectl(&["describe", "pod", pod]).all(),
            cluster
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn agent_scenario(runtime: &str) {
    let testapp = bin_dir().join("skiff-testapp").display().to_string();
    let alias = format!("skiff-testapp=/{testapp}").replace("//", "/");
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let mut cluster = Cluster::start_with(&[
        "--runtime",
        runtime,
        "--image-alias",
        &alias,
        "--crash-backoff-initial-secs",
        "1",
        "--pod-manifest-path",
        manifests.to_str().unwrap(),
    ])
    .expect("skiffd starts");
    let node = cluster.node.clone();
    let k = |args: &[&str]| cluster.kubectl(args);
    k(&["get", "nodes"]).expect_ok(&format!(r"^{node} +Ready +<none>"));
    k(&[
        "get",
        "node",
        &node,
        "-o",
        "jsonpath={.status.nodeInfo.containerRuntimeVersion}",
    ])
    .expect_ok(&format!("^{runtime}://"));
    k(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        &node,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .expect_ok(&format!("^{node}$"));
    cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some(&BOTH.replace("__NODE__", &node)),
        )
        .expect_ok("pod/web created");

    // Running and Ready, with env and volumes.
    wait_pod(
        &cluster,
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        |s| s == "True",
        "web to be Ready",
    );
    k(&["get", "pod", "web"]).expect_ok(r"^web +1/1 +Running +0 ");
    let ip = pod_field(&cluster, "web", "{.status.podIP}");
    assert!(!ip.is_empty(), "web has a pod IP");
    let env = k(&[
        "exec",
        "web",
        "--",
        "skiff-testapp",
        "client",
        &format!("http://{ip}:8080/env"),
    ]);
    env.expect_ok("^GREETING=hello$")
        .expect_ok("^PASSWORD=hunter2$")
        .expect_ok("^MY_POD=web$");
    env.expect_ok(&format!("^MY_NODE={node}$"))
        .expect_ok("^COMBINED=hello-web$")
        .expect_ok("^CFG_color=blue$");
    k(&[
        "exec",
        "web",
        "--",
        "skiff-testapp",
        "cat",
        "etc/config/greeting",
    ])
    .expect_ok("^hello$");
    k(&["logs", "web"]).expect_ok("^serving on ");
    k(&["exec", "web", "--", "skiff-testapp", "exit", "--code", "7"])
        .expect_fail(7, "command terminated with exit code 7");

    // The agent's Summary API reports the running container.
    let endpoints: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cluster.dir.path().join("endpoints.json")).unwrap(),
    )
    .unwrap();
    let agent = endpoints["agent"].as_str().unwrap().to_owned();
    let pki = cluster.dir.path().join("pki");
    let summary = wait_for(Duration::from_secs(20), "web in /stats/summary", || {
        let out = std::process::Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg(format!("{agent}/stats/summary"))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let web = v["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == "web")?
            .clone();
        (web["containers"][0]["memory"]["workingSetBytes"].as_u64()? > 0).then_some(v)
    })
    .unwrap();
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );

    // A ConfigMap change reaches the volume.
    k(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ])
    .expect_ok("patched");
    wait_for(
        Duration::from_secs(40),
        "the configMap volume to update",
        || {
            k(&[
                "exec",
                "web",
                "--",
                "skiff-testapp",
                "cat",
                "etc/config/greeting",
            ])
            .stdout
            .contains("bonjour")
            .then_some(())
        },
    )
    .unwrap();

    // Readiness failure makes it NotReady; liveness failure restarts it.
    k(&[
        "exec",
        "web",
        "--",
        "skiff-testapp",
        "client",
        &format!("http://{ip}:8080/fail?probe=readiness"),
    ])
    .expect_ok("failing");
    wait_pod(
        &cluster,
        "web",
        "{.status.containerStatuses[0].ready}",
        |s| s == "false",
        "web to become NotReady",
    );
    k(&[
        "exec",
        "web",
        "--",
        "skiff-testapp",
        "client",
        &format!("http://{ip}:8080/fail?probe=liveness"),
    ])
    .expect_ok("failing");
    wait_pod(
        &cluster,
        "web",
        "{.status.containerStatuses[0].restartCount}",
        |s| s == "1",
        "web to be restarted by its liveness probe",
    );
    wait_pod(
        &cluster,
        "web",
        "{.status.containerStatuses[0].ready}",
        |s| s == "true",
        "web to be Ready again after the restart",
    );
    k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ])
    .expect_ok("Unhealthy")
    .expect_ok("failed liveness probe, will be restarted");

    // Crash loop with backoff, restart counts, previous logs.
    wait_pod(
        &cluster,
        "crash",
        "{.status.containerStatuses[0].restartCount}",
        |s| s.parse::<u32>().is_ok_and(|n| n >= 2),
        "crash to restart twice",
    );
    wait_pod(
        &cluster,
        "crash",
        "{.status.containerStatuses[0].state.waiting.reason}",
        |s| s == "CrashLoopBackOff",
        "crash to be in CrashLoopBackOff",
    );
    assert_eq!(
        pod_field(
            &cluster,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "3"
    );
    k(&["logs", "crash", "--previous"]).expect_ok("^about to fail$");
    k(&["get", "pod", "crash"]).expect_ok(r"crash +0/1 +(CrashLoopBackOff|Error) +\d+ \(");

    // Init containers ran in order, then the app.
    wait_pod(
        &cluster,
        "init",
        "{.status.phase}",
        |s| s == "Running",
        "init's app to run",
    );
    let first_done = pod_field(
        &cluster,
        "init",
        "{.status.initContainerStatuses[0].state.terminated.finishedAt}",
    );
    let second_start = pod_field(
        &cluster,
        "init",
        "{.status.initContainerStatuses[1].state.terminated.startedAt}",
    );
    assert!(
        !first_done.is_empty() && first_done <= second_start,
        "first init ({first_done}) finished before the second ({second_start}) started"
    );
    k(&["logs", "init", "-c", "first"]).expect_ok("^first init$");

    // OOM kill reported.
    wait_pod(
        &cluster,
        "oom",
        "{.status.containerStatuses[0].state.terminated.reason}",
        |s| s == "OOMKilled",
        "oom to be OOMKilled",
    );
    k(&["get", "pod", "oom"]).expect_ok(r"oom +0/1 +OOMKilled");

    // Missing ConfigMap: waits with a clear reason, then starts once it exists.
    wait_pod(
        &cluster,
        "needs-config",
        "{.status.containerStatuses[0].state.waiting.reason}",
        |s| s == "CreateContainerConfigError",
        "needs-config to wait",
    );
    assert!(
        pod_field(
            &cluster,
            "needs-config",
            "{.status.containerStatuses[0].state.waiting.message}"
        )
        .contains("configmap \"late\" not found")
    );
    cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {x: '1'}\n"),
        )
        .expect_ok("created");
    wait_pod(
        &cluster,
        "needs-config",
        "{.status.phase}",
        |s| s == "Running",
        "needs-config to start after the ConfigMap appears",
    );

    // Missing volume source: FailedMount, stays ContainerCreating.
    wait_for(Duration::from_secs(30), "a FailedMount event", || {
        k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=needs-volume,reason=FailedMount",
            "-o",
            "name",
        ])
        .stdout
        .contains("event")
        .then_some(())
    })
    .unwrap();
    k(&["get", "pod", "needs-volume"]).expect_ok(r"needs-volume +0/1 +ContainerCreating");

    // logs -f follows.
    let mut follow = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &cluster.kubeconfig)
        .args(["logs", "-f", "logger"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(30), "followed log lines", || {
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push(l);
        }
        (seen.len() >= 20).then_some(())
    })
    .unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    let numbers: Vec<u64> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "followed lines arrive in order without gaps: {seen:?}"
    );

    // Static pod from a manifest file, mirrored into the API.
    std::fs::write(manifests.join("static.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: pinned}\nspec:\n  containers:\n  - {name: app, image: skiff-testapp:e2e, args: [sleep]}\n").unwrap();
    let mirror = format!("pinned-{node}");
    wait_pod(
        &cluster,
        &mirror,
        "{.status.phase}",
        |s| s == "Running",
        "the static pod's mirror to be Running",
    );
    assert!(
        pod_field(&cluster, &mirror, "{.metadata.annotations}")
            .contains("kubernetes.io/config.mirror")
    );
    k(&["logs", &mirror]).expect_ok("^sleeping$");

    // The agent restarts and adopts what is running: same containers, no duplicates.
    let before = pod_field(
        &cluster,
        "web",
        "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}",
    );
    let static_before = pod_field(
        &cluster,
        &mirror,
        "{.status.containerStatuses[0].containerID}",
    );
    cluster.restart().expect("skiffd restarts");
    let k = |args: &[&str]| cluster.kubectl(args);
    std::thread::sleep(Duration::from_secs(3));
    wait_pod(
        &cluster,
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        |s| s == "True",
        "web Ready after the agent restart",
    );
    let after = pod_field(
        &cluster,
        "web",
        "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}",
    );
    assert_eq!(
        after,
        before,
        "web was not restarted by the agent restart:\n{}\n{}",
        k(&["describe", "pod", "web"]).all(),
        agent_log(&cluster, "web")
    );
    assert_eq!(
        pod_field(
            &cluster,
            &mirror,
            "{.status.containerStatuses[0].containerID}"
        ),
        static_before
    );
    if runtime == "docker" {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=io.skiff.node={node}"),
                "--filter",
                "label=io.kubernetes.pod.name=web",
                "--filter",
                "label=io.kubernetes.docker.type=container",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            1,
            "exactly one running web container:\n{}\n{}",
            k(&["describe", "pod", "web"]).all(),
            agent_log(&cluster, "web")
        );
        // A second agent on the same engine (another cluster) sweeps orphans when it starts;
        // it must leave this node's containers alone.
        let other = Cluster::start_with(&["--runtime", "docker"]).expect("second skiffd starts");
        wait_for(
            Duration::from_secs(30),
            "the second node to be Ready",
            || {
                other
                    .kubectl(&["get", "nodes"])
                    .stdout
                    .contains(" Ready ")
                    .then_some(())
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        drop(other);
        assert_eq!(
            pod_field(
                &cluster,
                "web",
                "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}",
            ),
            before,
            "another agent on the same engine touched this node's containers"
        );
    }

    // Removing the manifest stops the static pod and removes its mirror.
    std::fs::remove_file(manifests.join("static.yaml")).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the mirror pod to disappear",
        || {
            k(&["get", "pod", &mirror])
                .all()
                .contains("NotFound")
                .then_some(())
        },
    )
    .unwrap();

    // Graceful termination: preStop runs, SIGTERM reaches the process, then the pod is gone.
    let marker = dir.path().join("prestop-ran");
    let graceful = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: graceful}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: app\n    image: skiff-testapp:e2e\n    args: [sleep, --term-delay-ms, \"300\"]\n    lifecycle: {{preStop: {{exec: {{command: [skiff-testapp, write, marker/done, ran]}}}}}}\n    volumeMounts: [{{name: marker, mountPath: /marker}}]\n  volumes:\n  - {{name: marker, hostPath: {{path: {}, type: DirectoryOrCreate}}}}\n",
        marker.display()
    );
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(&graceful))
        .expect_ok("pod/graceful created");
    wait_pod(
        &cluster,
        "graceful",
        "{.status.phase}",
        |s| s == "Running",
        "graceful to run",
    );
    let uid = pod_field(&cluster, "graceful", "{.metadata.uid}");
    k(&["delete", "pod", "graceful"]).expect_ok("deleted");
    assert_eq!(
        std::fs::read_to_string(marker.join("done")).unwrap_or_default(),
        "ran",
        "the preStop hook ran"
    );
    let log = cluster
        .dir
        .path()
        .join(format!("logs/pods/default_graceful_{uid}/app/0.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("stdout F got SIGTERM"),
        "the container saw SIGTERM: {text}"
    );

    // Deleting pods stops their containers.
    k(&[
        "delete",
        "pod",
        "web",
        "crash",
        "init",
        "oom",
        "needs-config",
        "needs-volume",
        "logger",
        "--wait=true",
    ])
    .expect_ok("deleted");
    k(&["get", "pods"]).expect_ok("No resources found");
}

#[test]
fn agent_runs_pods_with_the_process_runtime() {
    agent_scenario("process");
}

#[test]
fn agent_runs_pods_with_the_docker_runtime() {
    docker_test_images().expect("test images import into Docker");
    agent_scenario("docker");
}

#[test]
fn bad_specs_wait_with_clear_reasons_and_the_agent_keeps_working() {
    docker_test_images().expect("test images import into Docker");
    let cluster = Cluster::start_with(&["--runtime", "docker"]).expect("skiffd starts");
    let node = cluster.node.clone();
    let specs = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: noimage}}\nspec:\n  nodeName: {node}\n  containers:\n  - {{name: app, image: 'nope.invalid/missing:1'}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: badprobe}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: skiff-testapp:e2e\n    args: [sleep]\n    livenessProbe: {{grpc: {{port: 9}}, periodSeconds: 1, failureThreshold: 100}}\n"
    );
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(&specs))
        .expect_ok("pod/noimage created");
    wait_pod(
        &cluster,
        "noimage",
        "{.status.containerStatuses[0].state.waiting.reason}",
        |s| s == "ErrImagePull" || s == "ImagePullBackOff",
        "noimage to report the pull failure",
    );
    wait_for(
        Duration::from_secs(30),
        "a Failed event for the image",
        || {
            cluster
                .kubectl(&[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=noimage",
                ])
                .stdout
                .contains("Failed to pull image")
                .then_some(())
        },
    )
    .unwrap();
    wait_for(
        Duration::from_secs(30),
        "an Unhealthy event for the unsupported probe",
        || {
            cluster
                .kubectl(&[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=badprobe",
                ])
                .stdout
                .contains("gRPC probes are not supported")
                .then_some(())
        },
    )
    .unwrap();
    // The agent still runs good pods.
    let good = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: good}}\nspec:\n  nodeName: {node}\n  containers:\n  - {{name: app, image: skiff-testapp:e2e, args: [sleep]}}\n"
    );
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(&good))
        .expect_ok("pod/good created");
    wait_pod(
        &cluster,
        "good",
        "{.status.phase}",
        |s| s == "Running",
        "good to run next to the broken pods",
    );
}
