//! The real kubectl against `skiffd up`, over TLS with the generated kubeconfig: every step
//! asserts what kubectl prints. (Rollout steps need the controllers and live in their own test.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use skiff_e2e::{Cluster, wait_for};

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  # Paused: this test checks how kubectl prints and edits a Deployment, so no rollout starts
  # (tests/controllers.rs covers rollouts).
  paused: true
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
";

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: p1
  labels: {app: web}
spec:
  # No scheduler serves this name, so the pod stays Pending and unbound: this test checks how
  # kubectl prints such a pod (tests/scheduler.rs covers scheduling).
  schedulerName: nobody
  containers:
  - name: c
    image: busybox
    command: [sleep, '3600']
";

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {kubernetes.io/hostname: n1}
status:
  conditions:
  - {type: Ready, status: 'True', reason: KubeletReady, message: ready}
  nodeInfo: {kubeletVersion: v1.33.0, osImage: Skiff, kernelVersion: '6', containerRuntimeVersion: 'docker://20', architecture: amd64, operatingSystem: linux, bootID: b, machineID: m, systemUUID: s, kubeProxyVersion: v1.33.0}
";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn kubectl_drives_the_api_server() {
    let cluster = Cluster::start().expect("skiffd starts");
    let dir = tempfile::tempdir().unwrap();
    let deploy = write(dir.path(), "deploy.yaml", DEPLOY);
    let deploy2 = write(
        dir.path(),
        "deploy2.yaml",
        &DEPLOY
            .replace("replicas: 2", "replicas: 3")
            .replace("nginx:1.25", "nginx:1.26"),
    );
    let pod = write(dir.path(), "pod.yaml", POD);
    let node = write(dir.path(), "node.yaml", NODE);
    let k = |args: &[&str]| cluster.kubectl(args);

    k(&["version", "-o", "json"]).expect_ok(r#""gitVersion": "v1\.33\.0""#);
    k(&["api-resources"]).expect_ok(r"^deployments +deploy +apps/v1 +true +Deployment");
    k(&["api-resources"]).expect_ok(r"^pods +po +v1 +true +Pod");
    k(&["get", "ns"]).expect_ok(r"^kube-system +Active");

    // Client-side apply: created, unchanged, configured.
    k(&["apply", "-f", &deploy]).expect_ok("deployment.apps/web created");
    k(&["apply", "-f", &deploy]).expect_ok("deployment.apps/web unchanged");
    k(&["apply", "-f", &deploy2]).expect_ok("deployment.apps/web configured");
    k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
    ])
    .expect_ok("^3 nginx:1.26$");

    // Tables, wide, yaml, name, selectors, all namespaces.
    k(&["get", "deploy", "web"])
        .expect_ok(r"^NAME +READY +UP-TO-DATE +AVAILABLE +AGE")
        .expect_ok(r"^web +0/3 +0 +0 +\d+s");
    k(&["get", "deploy", "web", "-o", "wide"])
        .expect_ok(r"CONTAINERS +IMAGES +SELECTOR")
        .expect_ok(r"web +nginx:1\.26 +app=web");
    k(&["get", "deploy", "web", "-o", "yaml"])
        .expect_ok("^kind: Deployment")
        .expect_ok("maxSurge: 25%");
    k(&["create", "-f", &pod]).expect_ok("pod/p1 created");
    k(&["get", "pods", "-l", "app=web", "-o", "name"]).expect_ok("^pod/p1$");
    let none = k(&["get", "pods", "-l", "app in (api)", "-o", "name"]);
    assert!(none.code == 0 && none.stdout.is_empty(), "{none:?}");
    k(&["get", "pods", "-A"])
        .expect_ok(r"^NAMESPACE +NAME +READY +STATUS +RESTARTS +AGE")
        .expect_ok(r"^default +p1 +0/1 +Pending +0");
    k(&["get", "pods", "-o", "wide"])
        .expect_ok(r"IP +NODE +NOMINATED NODE +READINESS GATES")
        .expect_ok(r"p1 .*<none> +<none> +<none> +<none>");
    k(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase=Pending",
        "-o",
        "name",
    ])
    .expect_ok("^pod/p1$");
    k(&["get", "pods", "--show-labels"]).expect_ok(r"app=web");

    // label, annotate, scale.
    k(&["label", "deploy", "web", "tier=x"]).expect_ok("deployment.apps/web labeled");
    k(&["annotate", "deploy", "web", "note=hello"]).expect_ok("deployment.apps/web annotated");
    k(&["get", "deploy", "-l", "tier=x", "-o", "name"]).expect_ok("^deployment.apps/web$");
    k(&["scale", "deploy", "web", "--replicas=1"]).expect_ok("deployment.apps/web scaled");
    k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).expect_ok("^1$");
    k(&[
        "scale",
        "deploy",
        "web",
        "--current-replicas=5",
        "--replicas=2",
    ])
    .expect_fail(1, "Expected replicas to be 5, was 1");

    // replace with a stale resourceVersion: Conflict.
    let stale = k(&["get", "deploy", "web", "-o", "json"]).stdout;
    let stale_file = write(dir.path(), "stale.json", &stale);
    k(&["label", "deploy", "web", "tier=y", "--overwrite"]).expect_ok("labeled");
    k(&["replace", "-f", &stale_file]).expect_fail(
        1,
        r#"Error from server \(Conflict\): error when replacing .*: Operation cannot be fulfilled on deployments.apps "web": the object has been modified; please apply your changes to the latest version and try again"#,
    );
    let fresh = write(
        dir.path(),
        "fresh.json",
        &k(&["get", "deploy", "web", "-o", "json"]).stdout,
    );
    k(&["replace", "-f", &fresh]).expect_ok("deployment.apps/web replaced");

    // Server-side apply, twice.
    let cm = write(
        dir.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: '1', b: '2'}\n",
    );
    k(&["apply", "--server-side", "-f", &cm]).expect_ok("configmap/cfg serverside-applied");
    let cm2 = write(
        dir.path(),
        "cm2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: '3'}\n",
    );
    k(&["apply", "--server-side", "-f", &cm2]).expect_ok("configmap/cfg serverside-applied");
    k(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]).expect_ok(r#"^\{"a":"3"\}$"#);

    // Errors as kubectl users know them.
    k(&["get", "pod", "nope"]).expect_fail(
        1,
        r#"Error from server \(NotFound\): pods "nope" not found"#,
    );
    k(&["get", "deploy", "nope"]).expect_fail(
        1,
        r#"Error from server \(NotFound\): deployments.apps "nope" not found"#,
    );
    k(&["create", "-f", &deploy]).expect_fail(1, r#"Error from server \(AlreadyExists\): error when creating ".*deploy.yaml": deployments.apps "web" already exists"#);
    k(&["get", "widgets"]).expect_fail(1, r#"the server doesn't have a resource type "widgets""#);

    // explain and auth.
    k(&["explain", "deployment.spec.replicas"])
        .expect_ok(r"FIELD: replicas <integer>")
        .expect_ok("Number of desired pods");
    k(&["explain", "pods.spec.containers"]).expect_ok(r"FIELD: containers <\[\]Container>");
    k(&["auth", "can-i", "create", "pods"]).expect_ok("^yes$");
    k(&["auth", "whoami"]).expect_ok(r"Username +skiff-admin");

    // Nodes: cordon shows SchedulingDisabled.
    k(&["create", "-f", &node]).expect_ok("node/n1 created");
    k(&["get", "nodes"])
        .expect_ok(r"^NAME +STATUS +ROLES +AGE +VERSION")
        .expect_ok(r"^n1 +Ready +<none> +\d+s +v1\.33\.0");
    k(&["cordon", "n1"]).expect_ok("node/n1 cordoned");
    k(&["get", "node", "n1"]).expect_ok(r"Ready,SchedulingDisabled");
    k(&["uncordon", "n1"]).expect_ok("node/n1 uncordoned");
    k(&["taint", "node", "n1", "dedicated=gpu:NoSchedule"]).expect_ok("node/n1 tainted");
    k(&["get", "node", "n1", "-o", "jsonpath={.spec.taints[0].key}"]).expect_ok("^dedicated$");

    // get -w prints events as they happen.
    let mut watch = Command::new("kubectl")
        .env("KUBECONFIG", &cluster.kubeconfig)
        .args(["get", "pods", "-w", "--request-timeout=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The initial table arrives first; then a new pod shows up as a row.
    wait_for(Duration::from_secs(20), "initial watch table", || {
        rx.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|l| l.starts_with("p1 "))
    })
    .unwrap();
    k(&["run", "watched", "--image=busybox", "--restart=Never"]).expect_ok("pod/watched created");
    wait_for(Duration::from_secs(20), "watched pod in the watch", || {
        rx.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|l| l.starts_with("watched "))
    })
    .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();

    // delete, then NotFound.
    k(&["delete", "-f", &deploy]).expect_ok(r#"deployment.apps "web" deleted"#);
    k(&["get", "deploy", "web"]).expect_fail(1, "NotFound");
    k(&["delete", "pod", "watched", "p1"]).expect_ok(r#"pod "p1" deleted"#);
    k(&["get", "pods"]).expect_ok("No resources found in default namespace");

    // Dry runs store nothing.
    k(&["create", "-f", &deploy, "--dry-run=server"])
        .expect_ok(r"deployment.apps/web created \(server dry run\)");
    k(&["get", "deploy"]).expect_ok("No resources found");
}

#[test]
fn restart_keeps_everything() {
    let mut cluster = Cluster::start().expect("skiffd starts");
    let manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\ndata: {k: v}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n";
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(manifests))
        .expect_ok("configmap/keep created")
        .expect_ok("namespace/team-a created");
    let before = cluster
        .kubectl(&[
            "get",
            "cm",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .stdout;
    assert_eq!(
        cluster.stop(),
        Some(0),
        "clean exit on SIGTERM:\n{}",
        cluster.log()
    );
    cluster.relaunch().unwrap();
    cluster
        .kubectl(&[
            "get",
            "cm",
            "keep",
            "-o",
            "jsonpath={.data.k} {.metadata.resourceVersion}",
        ])
        .expect_ok(&format!("^v {before}$"));
    cluster
        .kubectl(&["get", "sa", "-n", "team-a"])
        .expect_ok(r"^default ");
}

/// kubectl's `create <generator>` commands send protobuf bodies.
#[test]
fn kubectl_create_generators() {
    let cluster = Cluster::start().expect("skiffd starts");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "from a file").unwrap();
    let file = file.to_string_lossy().into_owned();
    let k = |args: &[&str]| cluster.kubectl(args);
    k(&["create", "namespace", "demo"]).expect_ok("^namespace/demo created$");
    k(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=a=1",
        &format!("--from-file={file}"),
    ])
    .expect_ok("^configmap/c1 created$");
    k(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=password=hunter2",
    ])
    .expect_ok("^secret/s1 created$");
    k(&["get", "secret", "s1", "-o", "jsonpath={.data.password}"]).expect_ok("^aHVudGVyMg==$");
    k(&[
        "create",
        "secret",
        "docker-registry",
        "reg",
        "--docker-username=u",
        "--docker-password=p",
        "--docker-server=r.example.com",
    ])
    .expect_ok("^secret/reg created$");
    k(&["get", "secret", "reg", "-o", "jsonpath={.type}"])
        .expect_ok("^kubernetes.io/dockerconfigjson$");
    k(&[
        "create",
        "deployment",
        "nginx",
        "--image=nginx:1.25",
        "--replicas=2",
        "--port=80",
    ])
    .expect_ok("^deployment.apps/nginx created$");
    k(&["get", "deploy", "nginx", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.selector.matchLabels.app}"]).expect_ok("^2 80 nginx$");
    k(&[
        "create",
        "deployment",
        "zero",
        "--image=nginx",
        "--replicas=0",
    ])
    .expect_ok("created");
    k(&["get", "deploy", "zero", "-o", "jsonpath={.spec.replicas}"]).expect_ok("^0$");
    k(&[
        "create",
        "job",
        "pi",
        "--image=perl",
        "--",
        "perl",
        "-e",
        "print 1",
    ])
    .expect_ok("^job.batch/pi created$");
    k(&[
        "get",
        "job",
        "pi",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].command}",
    ])
    .expect_ok(r#"^\["perl","-e","print 1"\]$"#);
    k(&[
        "create",
        "cronjob",
        "cj",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "echo",
        "hi",
    ])
    .expect_ok("^cronjob.batch/cj created$");
    k(&["create", "serviceaccount", "bot"]).expect_ok("^serviceaccount/bot created$");
    k(&["create", "service", "nodeport", "np", "--tcp=80:8080"]).expect_ok("^service/np created$");
    k(&["get", "svc", "np"]).expect_ok(r"^np +NodePort +10\.\d+\.\d+\.\d+ +<none> +80:3\d{4}/TCP");
    k(&["create", "role", "r1", "--verb=get", "--resource=pods"]).expect_ok("created");
    k(&["create", "rolebinding", "rb1", "--role=r1", "--user=alice"]).expect_ok("created");
    k(&[
        "expose",
        "deployment",
        "nginx",
        "--port=80",
        "--type=NodePort",
    ])
    .expect_ok("^service/nginx exposed$");
}
