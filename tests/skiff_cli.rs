//! The kubectl scenario again, through our own `skiff` CLI.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use skiff_e2e::{Cluster, bin_dir, wait_for};

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  # Paused: this test checks printing and editing, so no rollout starts.
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

#[test]
fn skiff_drives_the_api_server() {
    let cluster = Cluster::start().expect("skiffd starts");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let deploy = write("deploy.yaml", DEPLOY);
    let deploy2 = write(
        "deploy2.yaml",
        &DEPLOY
            .replace("replicas: 2", "replicas: 3")
            .replace("nginx:1.25", "nginx:1.26"),
    );
    let s = |args: &[&str]| cluster.skiff(args);

    s(&["version"]).expect_ok("Server Version: v1.33.0");
    s(&["api-resources"]).expect_ok(r"^deployments +deploy +apps/v1 +true +Deployment");
    s(&["apply", "-f", &deploy]).expect_ok("^deployment.apps/web created$");
    s(&["apply", "-f", &deploy]).expect_ok("^deployment.apps/web unchanged$");
    s(&["apply", "-f", &deploy2]).expect_ok("^deployment.apps/web configured$");
    s(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
    ])
    .expect_ok("^3 nginx:1.26$");
    s(&["get", "deploy"])
        .expect_ok(r"^NAME +READY +UP-TO-DATE +AVAILABLE +AGE$")
        .expect_ok(r"^web +0/3 +0 +0 +\d+s$");
    s(&["get", "deploy", "-o", "wide"])
        .expect_ok(r"CONTAINERS +IMAGES +SELECTOR$")
        .expect_ok(r"web +nginx:1\.26 +app=web$");
    s(&["get", "deploy", "web", "-o", "yaml"]).expect_ok("^kind: Deployment$");
    s(&["get", "deploy", "web", "-o", "json"]).expect_ok(r#"^    "kind": "Deployment","#);
    s(&["get", "deploy", "-l", "app=web", "-o", "name"]).expect_ok("^deployment.apps/web$");
    s(&["get", "pods", "-A"]).expect_ok("No resources found");
    s(&["get", "ns", "-o", "name"]).expect_ok("^namespace/kube-system$");
    s(&["get", "svc", "-A"])
        .expect_ok(r"^NAMESPACE +NAME +TYPE +CLUSTER-IP")
        .expect_ok(r"^default +kubernetes +ClusterIP +10\.96\.0\.1");
    s(&["label", "deploy", "web", "tier=x"]).expect_ok("^deployment.apps/web labeled$");
    s(&["label", "deploy", "web", "tier=y"]).expect_fail(
        1,
        "'tier' already has a value \\(x\\), and --overwrite is false",
    );
    s(&["annotate", "deploy", "web", "note=hi"]).expect_ok("^deployment.apps/web annotated$");
    s(&["scale", "deploy", "web", "--replicas=1"]).expect_ok("^deployment.apps/web scaled$");
    s(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ])
    .expect_ok("^deployment.apps/web patched$");
    s(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.paused} {.spec.minReadySeconds}",
    ])
    .expect_ok("^1 true 5$");
    s(&["describe", "deploy", "web"])
        .expect_ok(r"^Name: +web$")
        .expect_ok(r"^Replicas: +1 desired")
        .expect_ok(r"^Events: +<none>$");

    // replace with a stale resourceVersion.
    let stale = write(
        "stale.json",
        &s(&["get", "deploy", "web", "-o", "json"]).stdout,
    );
    s(&["label", "deploy", "web", "tier=z", "--overwrite"]).expect_ok("labeled");
    s(&["replace", "-f", &stale]).expect_fail(1, r#"Error from server \(Conflict\): error when replacing ".*stale.json": Operation cannot be fulfilled on deployments.apps "web": the object has been modified"#);

    // Errors.
    s(&["get", "pod", "nope"]).expect_fail(
        1,
        r#"^Error from server \(NotFound\): pods "nope" not found$"#,
    );
    s(&["create", "-f", &deploy]).expect_fail(1, r#"Error from server \(AlreadyExists\): error when creating ".*deploy.yaml": deployments.apps "web" already exists"#);
    s(&["get", "widgets"]).expect_fail(1, r#"the server doesn't have a resource type "widgets""#);
    let bad = write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
    );
    s(&["apply", "-f", &bad]).expect_fail(
        1,
        r"bad.yaml: error converting YAML to JSON: yaml: line \d+",
    );
    let unknown = write(
        "unknown.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    );
    s(&["apply", "-f", &unknown]).expect_fail(1, r#"resource mapping not found for kind "Widget""#);

    // Multi-document stdin and directories.
    let multi = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n";
    cluster
        .skiff_in(&["apply", "-f", "-"], Some(multi))
        .expect_ok("^configmap/a created$")
        .expect_ok("^configmap/b created$");
    s(&["delete", "cm", "a", "b"])
        .expect_ok(r#"^configmap "a" deleted$"#)
        .expect_ok(r#"^configmap "b" deleted$"#);
    s(&["explain", "deployment.spec.replicas"]).expect_ok(r"^FIELD: replicas <integer>$");
    s(&["explain", "pods.spec.containers"])
        .expect_ok(r"^FIELD: containers <\[\]Container>$")
        .expect_ok(r"^  image\t<string>");

    // Namespaces and contexts.
    cluster
        .skiff_in(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"),
        )
        .expect_ok("namespace/team created");
    cluster
        .skiff_in(
            &["apply", "-n", "team", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"),
        )
        .expect_ok("configmap/c created");
    s(&["get", "cm", "-n", "team", "-o", "name"]).expect_ok("^configmap/c$");
    s(&["config", "current-context"]).expect_ok("^skiff$");
    s(&["config", "set-context", "--current", "--namespace", "team"])
        .expect_ok(r#"Context "skiff" modified."#);
    s(&["get", "cm", "-o", "name"]).expect_ok("^configmap/c$");
    s(&["config", "view"])
        .expect_ok("namespace: team")
        .expect_ok("DATA\\+OMITTED");
    s(&["config", "use-context", "nope"]).expect_fail(1, "no context exists with the name");

    // get -w prints a row per change.
    let mut watch = Command::new(bin_dir().join("skiff"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .args(["get", "cm", "-n", "default", "-w"])
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
    std::thread::sleep(Duration::from_millis(500));
    cluster
        .skiff_in(
            &["apply", "-n", "default", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seen}\n"),
        )
        .expect_ok("created");
    wait_for(
        Duration::from_secs(20),
        "the new configmap in skiff get -w",
        || {
            rx.recv_timeout(Duration::from_millis(100))
                .ok()
                .filter(|l| l.starts_with("seen "))
        },
    )
    .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();

    s(&["delete", "-n", "default", "-f", &deploy]).expect_ok(r#"^deployment.apps "web" deleted$"#);
    s(&["get", "-n", "default", "deploy", "web"]).expect_fail(1, "NotFound");
}
