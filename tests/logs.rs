//! The log pipeline of `skiffd up` with two nodes: the collector DaemonSet runs on each, and
//! lines written by a Deployment's pods become searchable with their pod metadata (native API,
//! Loki API, `skiff search`), `skiff logs -f` follows every replica including new ones, a
//! deleted pod's lines stay, and a kill -9 of a collector loses and doubles nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{Cluster, http, wait_for};

const TICKER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ticker
spec:
  replicas: 2
  selector:
    matchLabels: {app: ticker}
  template:
    metadata:
      labels: {app: ticker}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: tick
        image: busybox
        command: ["/bin/sh", "-c", "i=0; while true; do echo \"tick $i from $POD_NAME\"; i=$((i+1)); sleep 0.2; done"]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
"#;

fn search(addr: &str, query: &str) -> Value {
    let r = http(addr, "GET", &format!("/api/v1/search?{query}"), None, b"").unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn pod_lines_are_searchable_and_outlive_their_pod() {
    // A fixed port, as in real use (9428): a restarted skiffd serves search where the
    // collectors already send.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let mut cluster = Cluster::start_with(&["--search-port", &port]).expect("skiffd starts");
    let addr = cluster
        .search_addr
        .clone()
        .expect("the search address in endpoints.json");

    // The collector runs on the node as a DaemonSet pod.
    collectors_ready(&cluster, 1);

    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(TICKER))
        .expect_ok("deployment.apps/ticker created");
    let pods: BTreeSet<String> =
        wait_for(Duration::from_secs(60), "lines of both replicas", || {
            let v = search(&addr, "namespace=default&query=tick&since=10m&limit=500");
            let pods: BTreeSet<String> = v["hits"]
                .as_array()?
                .iter()
                .filter_map(|h| h["pod"].as_str().map(str::to_owned))
                .collect();
            (pods.len() == 2).then_some(pods)
        })
        .unwrap_or_else(|e| {
            let v = search(&addr, "since=10m&limit=20");
            panic!("{e}\n{v:#}\n{}", cluster.log())
        });
    let v = search(&addr, "namespace=default&query=tick&since=10m&limit=1");
    let hit = &v["hits"][0];
    assert_eq!(hit["container"], "tick");
    assert_eq!(hit["stream"], "stdout");
    assert_eq!(hit["node"], cluster.node.as_str());
    assert!(
        hit["pod_uid"].as_str().is_some_and(|u| !u.is_empty()),
        "{hit}"
    );
    // From the collector's watch of the node's pods.
    assert_eq!(hit["labels"]["app"], "ticker", "{hit}");
    assert_eq!(hit["owner_kind"], "ReplicaSet", "{hit}");
    assert!(
        hit["owner_name"].as_str().unwrap().starts_with("ticker-"),
        "{hit}"
    );
    assert_eq!(hit["app"], "ticker", "{hit}");
    let v = search(&addr, "label=app=ticker&since=10m&limit=1");
    assert!(v["total"].as_u64().unwrap() > 0, "{v}");
    let pod = hit["pod"].as_str().unwrap();
    assert!(
        hit["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!("from {pod}")),
        "{hit}"
    );

    // A deleted pod's lines remain searchable.
    let gone = pods.iter().next().unwrap().clone();
    let before = search(&addr, &format!("pod={gone}&since=10m&limit=1"))["total"]
        .as_u64()
        .unwrap();
    assert!(before > 0);
    cluster
        .kubectl(&["delete", "pod", &gone, "--wait=true"])
        .expect_ok("deleted");
    std::thread::sleep(Duration::from_secs(2));
    let after = search(&addr, &format!("pod={gone}&since=10m&limit=1"))["total"]
        .as_u64()
        .unwrap();
    assert!(after >= before, "{after} < {before}");

    // The Loki-compatible API answers the same lines (what Grafana's Loki data source asks).
    let q = |text: &str| -> String { form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let r = http(
        &addr,
        "GET",
        &format!(
            "/loki/api/v1/query_range?query={}&since=10m&limit=5",
            q(r#"{namespace="default", app="ticker"} |= "tick""#)
        ),
        None,
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["data"]["resultType"], "streams", "{v}");
    assert_eq!(v["data"]["result"][0]["stream"]["container"], "tick", "{v}");
    let r = http(
        &addr,
        "GET",
        &format!(
            "/loki/api/v1/query?query={}",
            q(r#"sum by (pod) (count_over_time({owner_kind="ReplicaSet", app="ticker"}[10m]))"#)
        ),
        None,
        b"",
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        v["data"]["result"].as_array().unwrap().len() >= 2,
        "a series per pod: {v}"
    );

    // `skiff logs` and `skiff search` reach the service through the API server's service proxy.
    let out = cluster.skiff(&["logs", "-l", "app=ticker", "--tail", "4"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}{}", out.stdout, out.stderr);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("ticker-") && l.contains(" tick tick ")),
        "{}",
        out.stdout
    );
    let out = cluster.skiff(&["logs", "deploy/ticker", "--tail", "1", "-o", "raw"]);
    assert!(
        out.stdout.starts_with("tick "),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // stern's filters and templates: lines ending in 0 left out, a Go template per line.
    let out = cluster.skiff(&[
        "logs",
        "-l",
        "app=ticker",
        "--tail",
        "20",
        "--include",
        "^tick [0-9]+ ",
        "--exclude",
        "^tick [0-9]*0 ",
        "--template",
        r#"{{.PodName}}|{{.ContainerName}}|{{.Labels.app}}|{{color .PodColor .Message}}{{"\n"}}"#,
    ]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 20, "{}{}", out.stdout, out.stderr);
    for l in &lines {
        let parts: Vec<&str> = l.split('|').collect();
        assert!(
            parts.len() == 4
                && parts[0].starts_with("ticker-")
                && parts[1] == "tick"
                && parts[2] == "ticker"
                && parts[3].starts_with("tick ")
                && !parts[3].split(' ').nth(1).unwrap().ends_with('0'),
            "{l:?} in {}",
            out.stdout
        );
    }
    let out = cluster.skiff(&["logs", "deploy/ticker", "--template", "{{.PodName"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("--template"), "{}", out.stderr);
    let out = cluster.skiff(&["search", "tick", "--limit", "3"]);
    assert_eq!(
        out.stdout.lines().count(),
        3,
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("3 of "), "{}", out.stderr);
    let out = cluster.skiff(&["search", "--histogram", "--since", "5m", "--interval", "1m"]);
    assert!(out.stdout.contains('█'), "{}{}", out.stdout, out.stderr);
    let out = cluster.skiff(&["search", "bad \"query"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("at character"), "{}", out.stderr);
    let out = cluster.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/kube-system/services/skiff-search:http/proxy/loki/api/v1/label/app/values",
    ]);
    assert!(
        out.stdout.contains("ticker"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // A second node joins: the collector DaemonSet lands on it too.
    let second = format!("{}-b", cluster.node);
    let _agent = skiff_e2e::Agent::start(
        &[
            "--kubeconfig".into(),
            cluster.kubeconfig.display().to_string(),
        ],
        &second,
    );
    collectors_ready(&cluster, 2);
    let before: BTreeSet<String> = cluster
        .kubectl(&["get", "pods", "-l", "app=ticker", "-o", "name"])
        .stdout
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_owned())
        .collect();

    // Following: lines of every replica, and of replicas that start after the tail did.
    let mut child = std::process::Command::new(skiff_e2e::bin_dir().join("skiff"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .args(["logs", "-f", "-l", "app=ticker", "--tail", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    cluster
        .kubectl(&["scale", "deploy/ticker", "--replicas=4"])
        .expect_ok("scaled");
    let mut followed = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let done = |f: &BTreeSet<String>| before.iter().all(|p| f.contains(p)) && f.len() >= 4;
    while !done(&followed) && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1))
            && let Some(pod) = line.split(' ').next()
        {
            followed.insert(pod.to_owned());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        done(&followed),
        "followed lines of {followed:?}; replicas at the start were {before:?}"
    );
    // Lines written on the second node are searchable too.
    wait_for(
        Duration::from_secs(30),
        "lines from the second node",
        || {
            let v = search(
                &addr,
                &format!("node={second}&query=tick&since=10m&limit=1"),
            );
            (v["total"].as_u64()? > 0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));

    // Skiff's own component logs arrive through the same collector, labelled.
    let components: BTreeSet<String> = wait_for(Duration::from_secs(30), "component logs", || {
        let r = http(
            &addr,
            "GET",
            "/api/v1/labels/component/values?since=10m",
            None,
            b"",
        )
        .ok()?;
        let v: Value = serde_json::from_slice(&r.body).ok()?;
        let set: BTreeSet<String> = v["values"]
            .as_array()?
            .iter()
            .filter_map(|x| x["value"].as_str().map(str::to_owned))
            .collect();
        set.contains("agent").then_some(set)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));
    eprintln!("component logs from {components:?}");
    let v = search(&addr, "component=agent&since=10m&limit=1");
    assert!(
        v["hits"][0]["message"].as_str().unwrap().starts_with('{'),
        "{v}"
    );
    assert!(v["hits"][0]["level"].is_string(), "{v}");

    // kill -9 of the collector: the agent restarts it, it resumes from its checkpoints, and a
    // pod's lines across the crash are all there, each once.
    let watched = pods.iter().last().unwrap().clone();
    let collector = collector_pid(cluster.dir.path()).expect("the collector process");
    let killed_at = jiff::Timestamp::now();
    let _ = std::process::Command::new("kill")
        .args(["-9", &collector.to_string()])
        .status();
    wait_for(Duration::from_secs(90), "the collector restarted", || {
        collector_pid(cluster.dir.path()).filter(|p| *p != collector)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));
    expect_every_tick_once(
        &cluster,
        &addr,
        &watched,
        killed_at,
        "the collector's kill -9",
    );

    // The search service's own metrics count what arrived.
    let r = http(&addr, "GET", "/metrics", None, b"").unwrap();
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("skiff_search_ingested_lines_total"), "{text}");

    // A restart of skiffd itself (API server, agent, search service) while the pods write: the
    // containers and the collector carry on, the collector retries until the search service is
    // back on its port, and nothing is lost or doubled.
    let restarted_at = jiff::Timestamp::now();
    cluster.restart().expect("skiffd restarts");
    expect_every_tick_once(
        &cluster,
        &addr,
        &watched,
        restarted_at,
        "a restart of skiffd",
    );
}

/// Wait until `pod` has lines from after `since` (+3 s), then check its tick numbers run on
/// with none missing and none twice.
fn expect_every_tick_once(
    cluster: &Cluster,
    addr: &str,
    pod: &str,
    since: jiff::Timestamp,
    what: &str,
) {
    let numbers = wait_for(Duration::from_secs(90), "lines after the event", || {
        let v = search(
            addr,
            &format!("pod={pod}&query=tick&since=15m&limit=10000&order=asc"),
        );
        let hits = v["hits"].as_array()?;
        let after = hits.iter().any(|h| {
            h["time"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t > since + jiff::SignedDuration::from_secs(3))
        });
        after.then(|| {
            hits.iter()
                .filter_map(|h| {
                    h["message"]
                        .as_str()?
                        .split(' ')
                        .nth(1)?
                        .parse::<u64>()
                        .ok()
                })
                .collect::<Vec<u64>>()
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));
    let first = numbers[0];
    let expected: Vec<u64> = (first..first + numbers.len() as u64).collect();
    assert_eq!(
        numbers, expected,
        "each line of {pod} once and none missing across {what}"
    );
}

/// The log collector's process among this cluster's pods (process runtime: its working
/// directory is inside the cluster's data directory).
fn collector_pid(cluster_dir: &std::path::Path) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) != Some("log-collector") {
            continue;
        }
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        if cwd.starts_with(cluster_dir) {
            return Some(pid);
        }
    }
    None
}

/// Wait until the collector DaemonSet has `n` ready pods.
fn collectors_ready(cluster: &Cluster, n: usize) {
    wait_for(Duration::from_secs(90), "log collectors ready", || {
        let out = cluster.kubectl(&[
            "get",
            "ds",
            "-n",
            "kube-system",
            "skiff-log-collector",
            "-o",
            "jsonpath={.status.numberReady}",
        ]);
        (out.stdout.trim() == n.to_string()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));
}
