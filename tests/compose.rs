//! The docker-compose stack in `deploy/`: `deploy/build-images.sh` builds every image offline
//! (static binaries, empty base images), `docker-compose up -d` starts a control plane, two
//! nodes and Prometheus; the test waits for both nodes Ready and the collector DaemonSet on
//! both, applies `examples/daemonset.yaml`, finds its lines through the stack's search (the API
//! server's service proxy) and its containers' CPU in the stack's Prometheus, checks
//! `kubectl top` and the Prometheus targets, then brings the stack down and checks that no
//! container and (after `down -v`) no volume of it is left.
//!
//! Skipped, with the reason printed, only where no Docker engine answers; CI has one
//! (`.ci/run` refuses to start without it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{Run, http, run, wait_for};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A compose project of its own (name, ports), brought down and its volumes removed on drop.
struct Stack {
    project: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("docker-compose");
        for file in &self.files {
            cmd.arg("-f").arg(file);
        }
        cmd.args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        run(cmd, None)
    }

    fn port(&self, name: &str) -> u16 {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
            .expect("a port")
    }

    fn kubectl(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run(cmd, None)
    }

    fn kubectl_json(&self, args: &[&str]) -> Option<Value> {
        let out = self.kubectl(args);
        (out.code == 0)
            .then(|| serde_json::from_str(&out.stdout).ok())
            .flatten()
    }

    /// The project's containers (running or not).
    fn containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
        ])
    }

    fn volumes(&self) -> Vec<String> {
        docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
        ])
    }

    fn logs(&self) -> String {
        let out = self.compose(&["logs", "--no-color", "--tail", "80"]);
        format!("{}{}", out.stdout, out.stderr)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

fn docker(args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    let out = run(cmd, None);
    out.stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn get_json(addr: &str, path: &str) -> Option<Value> {
    let response = http(addr, "GET", path, None, b"").ok()?;
    (response.status == 200).then(|| response.json())
}

/// Whether a Docker engine answers; the tests say so and return where none does.
fn docker_answers() -> bool {
    let up = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        eprintln!("SKIPPED: no Docker engine answers here (`docker info` fails)");
    }
    up
}

/// `deploy/build-images.sh`, once per test process: static binaries, empty bases; the quick
/// profile keeps CI short.
fn build_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let mut build = Command::new(repo().join("deploy/build-images.sh"));
        build.env("SKIFF_BUILD_PROFILE", "dev-image");
        let built = run(build, None);
        if built.code == 0 {
            Ok(())
        } else {
            Err(format!("{}{}", built.stdout, built.stderr))
        }
    });
    if let Err(e) = result {
        panic!("build-images.sh failed:\n{e}");
    }
}

#[test]
fn compose_stack_on_the_process_runtime() {
    if docker_answers() {
        two_node_cluster_with_logs_and_metrics(false);
    }
}

#[test]
fn compose_stack_on_the_docker_runtime() {
    if docker_answers() {
        two_node_cluster_with_logs_and_metrics(true);
    }
}

fn two_node_cluster_with_logs_and_metrics(docker_runtime: bool) {
    build_images();
    let dir = tempfile::tempdir().unwrap();
    let variant = if docker_runtime { "d" } else { "p" };
    let project = format!("skifftest{variant}{}", std::process::id());
    let mut env: Vec<(String, String)> = [
        "SKIFF_API_PORT",
        "SKIFF_SEARCH_PORT",
        "SKIFF_PROMETHEUS_PORT",
        "SKIFF_GRAFANA_PORT",
    ]
    .iter()
    .map(|k| ((*k).to_owned(), free_port().to_string()))
    .collect();
    let mut files = vec![repo().join("deploy/docker-compose.yml")];
    if docker_runtime {
        files.push(repo().join("deploy/docker-runtime.yml"));
        let host = dir.path().join("host");
        std::fs::create_dir_all(&host).unwrap();
        env.push(("SKIFF_HOST_DIR".into(), host.display().to_string()));
    }
    let mut stack = Stack {
        project,
        files,
        env,
        kubeconfig: dir.path().join("kubeconfig"),
        _dir: dir,
    };
    let up = stack.compose(&["up", "-d"]);
    assert_eq!(up.code, 0, "compose up failed:\n{}{}", up.stdout, up.stderr);

    // The README's kubeconfig step, with this project's API port.
    let id = stack.compose(&["ps", "-q", "control-plane"]).stdout;
    let copied = docker(&[
        "cp",
        &format!("{}:/var/lib/skiff/kubeconfig", id.trim()),
        stack.kubeconfig.to_str().unwrap(),
    ]);
    assert!(copied.is_empty() || stack.kubeconfig.exists());
    let text = std::fs::read_to_string(&stack.kubeconfig).expect("the kubeconfig was copied");
    let api_port = stack.port("SKIFF_API_PORT");
    std::fs::write(
        &stack.kubeconfig,
        text.replace("127.0.0.1:6443", &format!("127.0.0.1:{api_port}")),
    )
    .unwrap();
    stack
        .env
        .push(("KUBECONFIG".into(), stack.kubeconfig.display().to_string()));

    // Both nodes join with the bootstrap token and go Ready.
    let ready = |node: &Value| {
        node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    let nodes = wait_for(Duration::from_secs(180), "two Ready nodes", || {
        let list = stack.kubectl_json(&["get", "nodes", "-o", "json"])?;
        let mut names: Vec<String> = list["items"]
            .as_array()?
            .iter()
            .filter(|n| ready(n))
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        (names.len() == 2).then_some(names)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    assert_eq!(nodes, ["node-1", "node-2"]);
    // Each node is its own machine: its own address.
    let addresses = stack
        .kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
        .stdout;
    let addresses: Vec<&str> = addresses.split_whitespace().collect();
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert_ne!(addresses[0], addresses[1]);

    // The collector DaemonSet runs on both nodes.
    wait_for(
        Duration::from_secs(120),
        "the collector on both nodes",
        || {
            let ds = stack.kubectl_json(&[
                "-n",
                "kube-system",
                "get",
                "daemonset",
                "skiff-log-collector",
                "-o",
                "json",
            ])?;
            (ds["status"]["numberReady"] == 2).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));

    // An example from examples/: one pod per node, each printing its node's name.
    let applied = stack.kubectl(&[
        "apply",
        "-f",
        repo().join("examples/daemonset.yaml").to_str().unwrap(),
    ]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);

    // Its lines from both nodes, through the stack's search (the API server's service proxy,
    // authorized by the kubeconfig).
    let found = wait_for(Duration::from_secs(120), "the example's lines in search", || {
        let out = stack.kubectl(&[
            "get",
            "--raw",
            "/api/v1/namespaces/kube-system/services/skiff-search:http/proxy/api/v1/search?query=%22shipping%20logs%20from%22&namespace=kube-system&limit=50",
        ]);
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        let mut nodes: Vec<String> = v["hits"]
            .as_array()?
            .iter()
            .filter_map(|h| h["node"].as_str().map(str::to_owned))
            .collect();
        nodes.sort();
        nodes.dedup();
        (nodes.len() == 2).then_some(v)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    let line = found["hits"][0]["message"].as_str().unwrap_or_default();
    assert!(line.starts_with("shipping logs from node-"), "{found}");

    // The search port published on the host is beyond the service's loopback: a token is
    // needed there.
    let search = format!("127.0.0.1:{}", stack.port("SKIFF_SEARCH_PORT"));
    let refused = http(&search, "GET", "/api/v1/search?query=x", None, b"").unwrap();
    assert_eq!(
        refused.status,
        401,
        "{:?}",
        String::from_utf8_lossy(&refused.body)
    );

    // kubectl top answers for both nodes (the metrics server scrapes the node agents).
    wait_for(Duration::from_secs(120), "kubectl top nodes", || {
        let out = stack.kubectl(&["top", "nodes", "--no-headers"]);
        (out.code == 0 && out.stdout.lines().count() == 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));

    // Prometheus: every target up, and the example's containers' CPU per node.
    let prometheus = format!("127.0.0.1:{}", stack.port("SKIFF_PROMETHEUS_PORT"));
    wait_for(
        Duration::from_secs(120),
        "every Prometheus target up",
        || {
            let v = get_json(&prometheus, "/api/v1/targets?state=active")?;
            let targets = v["data"]["activeTargets"].as_array()?.clone();
            let jobs: Vec<&str> = targets
                .iter()
                .filter_map(|t| t["labels"]["job"].as_str())
                .collect();
            let per_node = ["kubelet", "cadvisor", "log-collector"]
                .iter()
                .all(|job| jobs.iter().filter(|j| *j == job).count() == 2);
            let control = [
                "apiserver",
                "scheduler",
                "controller-manager",
                "kube-state-metrics",
            ]
            .iter()
            .all(|job| jobs.contains(job));
            let all_up = targets.iter().all(|t| t["health"] == "up");
            (per_node && control && all_up).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        let v = get_json(&prometheus, "/api/v1/targets").unwrap_or_default();
        panic!("{e}\n{v}\n{}", stack.logs())
    });
    wait_for(Duration::from_secs(120), "the example's CPU in Prometheus", || {
        let query = "sum by (node) (container_cpu_usage_seconds_total{namespace=\"kube-system\",pod=~\"fluentd-elasticsearch-.*\",container!=\"\"})";
        let path = format!(
            "/api/v1/query?query={}",
            form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        );
        let v = get_json(&prometheus, &path)?;
        (v["data"]["result"].as_array()?.len() == 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));

    // The pods' containers in the engine: none on the process runtime (pods are processes in
    // the nodes); on the Docker runtime a sandbox and a container per pod, the examples' on
    // the stack's network (each pod its own address there).
    let uids = stack
        .kubectl(&[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ])
        .stdout;
    let uids: Vec<&str> = uids.split_whitespace().collect();
    assert_eq!(
        uids.len(),
        4,
        "two collectors and two example pods: {uids:?}"
    );
    let pod_containers: Vec<String> = uids
        .iter()
        .flat_map(|uid| {
            docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.kubernetes.pod.uid={uid}"),
            ])
        })
        .collect();
    let network = format!("{}_default", stack.project);
    if docker_runtime {
        assert_eq!(pod_containers.len(), 8, "{pod_containers:?}");
        let ips = stack
            .kubectl(&[
                "get",
                "pods",
                "-n",
                "kube-system",
                "-l",
                "name=fluentd-elasticsearch",
                "-o",
                "jsonpath={.items[*].status.podIP}",
            ])
            .stdout;
        let on_network = docker(&[
            "network",
            "inspect",
            &network,
            "--format",
            "{{range .Containers}}{{.IPv4Address}} {{end}}",
        ])
        .join(" ");
        for ip in ips.split_whitespace() {
            assert!(
                on_network.contains(&format!("{ip}/")),
                "{ip} not on {network}: {on_network}"
            );
        }
    } else {
        assert_eq!(pod_containers, Vec::<String>::new());
    }

    // down: nothing of the stack keeps running, pods included; down -v: its data is gone too.
    let down = stack.compose(&["down", "-t", "30"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert_eq!(stack.containers(), Vec::<String>::new(), "containers left");
    for id in &pod_containers {
        assert_eq!(
            docker(&["ps", "-aq", "--filter", &format!("id={id}")]),
            Vec::<String>::new(),
            "pod container {id} left"
        );
    }
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={network}")
        ]),
        Vec::<String>::new(),
        "network left"
    );
    assert!(!stack.volumes().is_empty(), "down keeps the data volumes");
    let down = stack.compose(&["down", "-v"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert_eq!(stack.volumes(), Vec::<String>::new(), "volumes left");
}
