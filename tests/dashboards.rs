//! The Grafana dashboards in `grafana-dashboards/`, checked without Grafana (none is
//! installable here): their structure (unique panel ids, grid positions inside 24 columns, a
//! datasource and an expression on every target, every `$variable` defined), that the
//! committed JSON is what `generate.py` writes, and that every query returns data — PromQL
//! against the real Prometheus scraping a live `skiffd up` cluster on the Docker runtime with
//! the configuration skiffd writes, LogQL against skiff-search's Loki API.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::prometheus::{JOBS, Prometheus};
use skiff_e2e::{Cluster, docker_test_images, http, wait_for};

/// A Deployment with requests and limits, a DaemonSet writing logfmt lines at two levels, and
/// an HPA on the Deployment: enough for every panel to have something to show.
const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: skiff-testapp:e2e
        args: [serve, --port, "8080"]
        resources:
          requests: {cpu: 50m, memory: 16Mi}
          limits: {cpu: 500m, memory: 64Mi}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: logger}
spec:
  selector: {matchLabels: {app: logger}}
  template:
    metadata: {labels: {app: logger}}
    spec:
      containers:
      - name: logger
        image: busybox:e2e
        command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "level=info msg=\"tick $i\""; if test $((i % 3)) = 0; then echo "level=error msg=\"payment failed\" attempt=$i"; fi; sleep 1; done']
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
"#;

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana-dashboards")
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dashboards_dir()).expect("grafana-dashboards/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// `$name` and `${name}` references in an expression (Grafana's built-ins excluded).
fn references(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    re.captures_iter(expr)
        .map(|c| c[1].to_owned())
        .filter(|n| !n.starts_with("__"))
        .collect()
}

#[test]
fn committed_dashboards_are_what_the_generator_writes() {
    let out = Command::new("python3")
        .arg(dashboards_dir().join("generate.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboards_are_well_formed() {
    let all = dashboards();
    assert!(all.len() >= 7, "{} dashboards", all.len());
    let mut uids = HashSet::new();
    for (file, dash) in &all {
        assert!(
            uids.insert(dash["uid"].as_str().unwrap().to_owned()),
            "{file}: uid repeats"
        );
        assert!(dash["schemaVersion"].as_i64().unwrap() >= 39, "{file}");
        assert!(
            dash["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}"
        );
        let vars: Vec<&Value> = dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        let names: HashSet<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert!(
            names.contains("datasource"),
            "{file}: no datasource variable"
        );
        for v in &vars {
            if v["type"] == "query" {
                let q = v["definition"].as_str().unwrap();
                for r in references(q) {
                    assert!(
                        names.contains(r.as_str()),
                        "{file}: variable {} uses ${r}",
                        v["name"]
                    );
                }
            }
        }
        let mut ids = HashSet::new();
        for p in panels(dash) {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{file}: panel id repeats ({title})"
            );
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_i64().unwrap(), g["w"].as_i64().unwrap());
            assert!(
                x >= 0 && w > 0 && x + w <= 24,
                "{file}: {title} gridPos {g}"
            );
            assert!(g["h"].as_i64().unwrap() > 0 && g["y"].as_i64().unwrap() >= 0);
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {title} has no target");
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.is_empty(), "{file}: {title} target without expr");
                let uid = t["datasource"]["uid"].as_str().unwrap_or_default();
                assert!(
                    uid == "${datasource}" || uid == "${loki}",
                    "{file}: {title} datasource {uid}"
                );
                assert!(
                    names.contains(&uid[2..uid.len() - 1]),
                    "{file}: {title} {uid}"
                );
                for r in references(expr) {
                    assert!(
                        names.contains(r.as_str()),
                        "{file}: {title} uses undefined ${r}"
                    );
                }
                if expr.contains("rate(") && t["datasource"]["type"] == "prometheus" {
                    assert!(expr.contains("$__rate_interval"), "{file}: {title}: {expr}");
                }
            }
        }
    }
}

/// Substitute variables and Grafana's interval built-ins.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__auto", "1m")
        .replace("$__interval", "1m");
    // Longest names first, so `$pod` does not eat part of `$podname`.
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        e = e.replace(&format!("${{{n}}}"), &values[n]);
        e = e.replace(&format!("${n}"), &values[n]);
    }
    e
}

/// The values a query variable offers (Grafana's `label_values(expr, label)`), as Prometheus
/// answers `count by (label) (expr)`.
fn variable_values(prom: &Prometheus, definition: &str) -> Result<Vec<String>, String> {
    let re = regex::Regex::new(r"^label_values\((.*),\s*([A-Za-z_]+)\)$").unwrap();
    let c = re
        .captures(definition)
        .ok_or_else(|| format!("not label_values(…): {definition}"))?;
    let label = &c[2];
    let result = prom.query(&format!("count by ({label}) ({})", &c[1]));
    Ok(result
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
        .collect())
}

enum Outcome {
    Data,
    Empty,
    Error(String),
}

fn run_promql(prom: &Prometheus, expr: &str) -> Outcome {
    match prom.query_response(expr) {
        Some(v) if v["status"] == "success" => {
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                Outcome::Data
            } else {
                Outcome::Empty
            }
        }
        Some(v) => Outcome::Error(v["error"].to_string()),
        None => Outcome::Error("Prometheus did not answer".into()),
    }
}

/// A LogQL query the way Grafana's Loki data source sends it: query_range over the last 15
/// minutes, newest first.
fn run_logql(search: &str, expr: &str) -> Outcome {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", expr)
        .append_pair("start", &(now - 900_000_000_000).to_string())
        .append_pair("end", &now.to_string())
        .append_pair("step", "60000ms")
        .append_pair("direction", "backward")
        .append_pair("limit", "100")
        .finish();
    match http(
        search,
        "GET",
        &format!("/loki/api/v1/query_range?{q}"),
        None,
        b"",
    ) {
        Ok(r) if r.status == 200 => {
            if r.json()["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                Outcome::Data
            } else {
                Outcome::Empty
            }
        }
        Ok(r) => Outcome::Error(format!(
            "{}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

#[test]
fn every_dashboard_panel_returns_data_from_a_live_cluster() {
    docker_test_images().expect("test images import into Docker");
    let cluster = Cluster::start_with(&[
        "--runtime",
        "docker",
        "--search-port",
        "0",
        "--housekeeping-interval-secs",
        "1",
        "--metric-resolution",
        "2s",
        "--horizontal-pod-autoscaler-sync-period",
        "2s",
        "--cluster-name",
        "e2e",
    ])
    .expect("skiffd starts");
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(WORKLOAD))
        .expect_ok("horizontalpodautoscaler.autoscaling/web created");
    for target in ["deploy/web", "ds/logger"] {
        cluster
            .kubectl(&["rollout", "status", target, "--timeout=120s"])
            .expect_ok("successfully rolled out");
    }
    cluster
        .kubectl(&[
            "rollout",
            "status",
            "-n",
            "kube-system",
            "ds/skiff-log-collector",
            "--timeout=120s",
        ])
        .expect_ok("successfully rolled out");

    let prom = Prometheus::for_cluster(&cluster);
    wait_for(Duration::from_secs(90), "every target up", || {
        prom.targets_up(JOBS)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", prom.api("/api/v1/targets")));
    let search = cluster
        .search_addr
        .clone()
        .expect("the search service runs");

    // Queries whose data comes a little later (rates need two scrapes, the HPA a metric) are
    // retried; a query that is wrong stays empty or fails, and is reported.
    let all = dashboards();
    let mut last: Vec<(String, String, Outcome)> = Vec::new();
    let _ = wait_for(Duration::from_secs(90), "every panel returns data", || {
        last.clear();
        for (file, dash) in &all {
            let mut values: BTreeMap<String, String> = BTreeMap::new();
            for v in dash["templating"]["list"].as_array().unwrap() {
                if v["type"] != "query" {
                    continue;
                }
                let name = v["name"].as_str().unwrap().to_owned();
                let definition = substitute(v["definition"].as_str().unwrap(), &values);
                let options = match variable_values(&prom, &definition) {
                    Ok(o) => o,
                    Err(e) => {
                        last.push((file.clone(), format!("variable {name}"), Outcome::Error(e)));
                        continue;
                    }
                };
                let preferred = match name.as_str() {
                    "namespace" => options.iter().find(|o| *o == "default"),
                    "pod" => options.iter().find(|o| o.starts_with("web-")),
                    _ => None,
                };
                let Some(value) = preferred.or(options.first()).cloned() else {
                    last.push((file.clone(), format!("variable {name}"), Outcome::Empty));
                    continue;
                };
                values.insert(name, value);
            }
            for p in panels(dash) {
                for t in p["targets"].as_array().into_iter().flatten() {
                    let expr = substitute(t["expr"].as_str().unwrap(), &values);
                    let outcome = if t["datasource"]["type"] == "loki" {
                        run_logql(&search, &expr)
                    } else {
                        run_promql(&prom, &expr)
                    };
                    let what = format!("{} [{}] {expr}", p["title"], t["refId"]);
                    last.push((file.clone(), what, outcome));
                }
            }
        }
        last.iter()
            .all(|(_, _, o)| matches!(o, Outcome::Data))
            .then_some(())
    });
    let failed: Vec<String> = last
        .iter()
        .filter_map(|(file, what, o)| match o {
            Outcome::Data => None,
            Outcome::Empty => Some(format!("EMPTY {file}: {what}")),
            Outcome::Error(e) => Some(format!("ERROR {file}: {what}: {e}")),
        })
        .collect();
    let passed = last.len() - failed.len();
    println!("{passed} passed, {} failed", failed.len());
    assert!(
        failed.is_empty() && passed > 0,
        "{passed} passed, {} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
