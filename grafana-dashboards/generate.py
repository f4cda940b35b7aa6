#!/usr/bin/env python3
"""Writes Skiff's Grafana dashboards (grafana-dashboards/*.json) from the panel lists below.

The JSON files are committed, so Grafana (or anyone) can use them without running this; edit
the lists here and re-run `python3 grafana-dashboards/generate.py`. `--check` fails when a
committed file differs from what this script writes (the dashboards test runs it).

Conventions follow the rendered kubernetes-mixin dashboards: schemaVersion 39, a `datasource`
variable that every Prometheus target names as `${datasource}`, a `loki` variable for log
panels (Grafana's Loki data source pointed at skiff-search), `$__rate_interval` in rates,
`cluster`/`namespace`/`pod` query variables. Job names are the ones `skiffd up` writes into
`<data-dir>/prometheus.yml`.
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent

# Variables ----------------------------------------------------------------------------------

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki}"}


def datasource_var(name, kind, label):
    return {
        "type": "datasource",
        "name": name,
        "label": label,
        "query": kind,
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
    }


def query_var(name, label, query, include_all=False):
    var = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PROM,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "current": {},
        "hide": 0,
        "refresh": 2,
        "sort": 1,
        "includeAll": include_all,
        "multi": False,
        "regex": "",
    }
    if include_all:
        var["allValue"] = ".+"
    return var


CLUSTER = query_var("cluster", "Cluster", 'label_values(up{job="kube-state-metrics"}, cluster)')
NAMESPACE = query_var(
    "namespace", "Namespace", 'label_values(kube_pod_info{cluster="$cluster"}, namespace)'
)
NAMESPACE_ALL = query_var(
    "namespace",
    "Namespace",
    'label_values(kube_pod_info{cluster="$cluster"}, namespace)',
    include_all=True,
)
POD = query_var(
    "pod",
    "Pod",
    'label_values(kube_pod_info{cluster="$cluster", namespace="$namespace"}, pod)',
)

# Panels -------------------------------------------------------------------------------------


def prom(expr, legend=""):
    return {"datasource": PROM, "expr": expr, "legendFormat": legend}


def loki(expr, legend="", query_type="range"):
    return {"datasource": LOKI, "expr": expr, "legendFormat": legend, "queryType": query_type}


def panel(kind, title, targets, unit="short", w=12, h=8, description=""):
    return {
        "type": kind,
        "title": title,
        "description": description,
        "targets": targets,
        "unit": unit,
        "w": w,
        "h": h,
    }


def ts(title, targets, unit="short", **kw):
    return panel("timeseries", title, targets, unit, **kw)


def stat(title, targets, unit="short", w=6, h=4, **kw):
    return panel("stat", title, targets, unit, w=w, h=h, **kw)


def logs(title, expr, w=24, h=10):
    return panel("logs", title, [loki(expr)], w=w, h=h)


def rate(metric, selector, by=None):
    grouped = f"sum by ({by}) " if by else "sum "
    return f"{grouped}(rate({metric}{{{selector}}}[$__rate_interval]))"


def quantile(q, metric, selector, by="le"):
    return (
        f"histogram_quantile({q}, sum by ({by}) "
        f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
    )


C = 'cluster="$cluster"'
CADVISOR = f'{C}, job="cadvisor", container!="", image!=""'

# Dashboards ---------------------------------------------------------------------------------

DASHBOARDS = [
    {
        "uid": "skiff-cluster",
        "title": "Skiff / Cluster overview",
        "variables": [CLUSTER],
        "panels": [
            stat(
                "Nodes ready",
                [prom(f'sum(kube_node_status_condition{{{C}, condition="Ready", status="true"}})')],
            ),
            stat("Nodes", [prom(f"count(kube_node_info{{{C}}})")]),
            stat("Pods running", [prom(f'sum(kube_pod_status_phase{{{C}, phase="Running"}})')]),
            stat(
                "CPU requested of allocatable",
                [
                    prom(
                        f'sum(kube_pod_container_resource_requests{{{C}, resource="cpu"}})'
                        f' / sum(kube_node_status_allocatable{{{C}, resource="cpu"}})'
                    )
                ],
                unit="percentunit",
            ),
            ts(
                "Pods by phase",
                [prom(f"sum by (phase) (kube_pod_status_phase{{{C}}})", "{{phase}}")],
                w=24,
            ),
            ts(
                "CPU: used, requested, allocatable",
                [
                    prom(rate("container_cpu_usage_seconds_total", CADVISOR), "used"),
                    prom(
                        f'sum(kube_pod_container_resource_requests{{{C}, resource="cpu"}})',
                        "requested",
                    ),
                    prom(
                        f'sum(kube_node_status_allocatable{{{C}, resource="cpu"}})',
                        "allocatable",
                    ),
                ],
                unit="cores",
            ),
            ts(
                "Memory: working set, requested, allocatable",
                [
                    prom(f"sum(container_memory_working_set_bytes{{{CADVISOR}}})", "working set"),
                    prom(
                        f'sum(kube_pod_container_resource_requests{{{C}, resource="memory"}})',
                        "requested",
                    ),
                    prom(
                        f'sum(kube_node_status_allocatable{{{C}, resource="memory"}})',
                        "allocatable",
                    ),
                ],
                unit="bytes",
            ),
            ts(
                "CPU by namespace",
                [
                    prom(
                        rate("container_cpu_usage_seconds_total", CADVISOR, by="namespace"),
                        "{{namespace}}",
                    )
                ],
                unit="cores",
            ),
            ts(
                "Memory by node",
                [
                    prom(
                        f"sum by (node) (container_memory_working_set_bytes{{{CADVISOR}}})",
                        "{{node}}",
                    )
                ],
                unit="bytes",
            ),
        ],
    },
    {
        "uid": "skiff-workloads",
        "title": "Skiff / Workloads",
        "variables": [CLUSTER, NAMESPACE],
        "panels": [
            ts(
                "Deployment replicas: desired, available, updated",
                [
                    prom(
                        f'kube_deployment_spec_replicas{{{C}, namespace="$namespace"}}',
                        "{{deployment}} desired",
                    ),
                    prom(
                        f'kube_deployment_status_replicas_available{{{C}, namespace="$namespace"}}',
                        "{{deployment}} available",
                    ),
                    prom(
                        f'kube_deployment_status_replicas_updated{{{C}, namespace="$namespace"}}',
                        "{{deployment}} updated",
                    ),
                ],
                w=24,
            ),
            panel(
                "table",
                "Rollout state",
                [
                    prom(
                        f'kube_deployment_status_observed_generation{{{C}, namespace="$namespace"}}'
                        f' - kube_deployment_metadata_generation{{{C}, namespace="$namespace"}}',
                        "{{deployment}}",
                    ),
                    prom(
                        f'kube_deployment_status_condition{{{C}, namespace="$namespace",'
                        f' status="true"}} == 1',
                        "{{deployment}} {{condition}}",
                    ),
                ],
                description="Generation lag (0 = the controller has seen the latest spec) and "
                "the conditions that hold.",
            ),
            ts(
                "DaemonSet pods: desired, ready, updated",
                [
                    prom(
                        f'kube_daemonset_status_desired_number_scheduled{{{C}, namespace="$namespace"}}',
                        "{{daemonset}} desired",
                    ),
                    prom(
                        f'kube_daemonset_status_number_ready{{{C}, namespace="$namespace"}}',
                        "{{daemonset}} ready",
                    ),
                    prom(
                        f'kube_daemonset_status_updated_number_scheduled{{{C}, namespace="$namespace"}}',
                        "{{daemonset}} updated",
                    ),
                ],
            ),
            ts(
                "Container restarts",
                [
                    prom(
                        f"sum by (pod) (kube_pod_container_status_restarts_total"
                        f'{{{C}, namespace="$namespace"}})',
                        "{{pod}}",
                    )
                ],
            ),
            ts(
                "Pods not ready",
                [
                    prom(
                        f'sum by (pod) (kube_pod_status_ready{{{C}, namespace="$namespace",'
                        f' condition="false"}})',
                        "{{pod}}",
                    )
                ],
            ),
        ],
    },
    {
        "uid": "skiff-pod",
        "title": "Skiff / Pod",
        "variables": [CLUSTER, NAMESPACE, POD],
        "loki": True,
        "panels": [
            ts(
                "CPU per container against requests and limits",
                [
                    prom(
                        rate(
                            "container_cpu_usage_seconds_total",
                            f'{CADVISOR}, namespace="$namespace", pod="$pod"',
                            by="container",
                        ),
                        "{{container}} used",
                    ),
                    prom(
                        f'sum by (container) (kube_pod_container_resource_requests{{{C},'
                        f' namespace="$namespace", pod="$pod", resource="cpu"}})',
                        "{{container}} requests",
                    ),
                    prom(
                        f'sum by (container) (kube_pod_container_resource_limits{{{C},'
                        f' namespace="$namespace", pod="$pod", resource="cpu"}})',
                        "{{container}} limits",
                    ),
                ],
                unit="cores",
            ),
            ts(
                "Memory per container against requests and limits",
                [
                    prom(
                        f"sum by (container) (container_memory_working_set_bytes"
                        f'{{{CADVISOR}, namespace="$namespace", pod="$pod"}})',
                        "{{container}} working set",
                    ),
                    prom(
                        f'sum by (container) (kube_pod_container_resource_requests{{{C},'
                        f' namespace="$namespace", pod="$pod", resource="memory"}})',
                        "{{container}} requests",
                    ),
                    prom(
                        f'sum by (container) (kube_pod_container_resource_limits{{{C},'
                        f' namespace="$namespace", pod="$pod", resource="memory"}})',
                        "{{container}} limits",
                    ),
                ],
                unit="bytes",
            ),
            ts(
                "Restarts",
                [
                    prom(
                        f"kube_pod_container_status_restarts_total"
                        f'{{{C}, namespace="$namespace", pod="$pod"}}',
                        "{{container}}",
                    )
                ],
            ),
            ts(
                "Network",
                [
                    prom(
                        rate(
                            "container_network_receive_bytes_total",
                            f'{C}, job="cadvisor", namespace="$namespace", pod="$pod"',
                        ),
                        "received",
                    ),
                    prom(
                        rate(
                            "container_network_transmit_bytes_total",
                            f'{C}, job="cadvisor", namespace="$namespace", pod="$pod"',
                        ),
                        "sent",
                    ),
                ],
                unit="Bps",
            ),
            logs("Recent logs", '{namespace="$namespace", pod="$pod"}'),
        ],
    },
    {
        "uid": "skiff-logs",
        "title": "Skiff / Logs",
        "variables": [CLUSTER, NAMESPACE_ALL],
        "loki": True,
        "panels": [
            ts(
                "Log volume by namespace",
                [
                    loki(
                        'sum by (namespace) (count_over_time({namespace=~"$namespace"}[$__auto]))',
                        "{{namespace}}",
                    )
                ],
                unit="short",
            ),
            ts(
                "Log volume by level",
                [
                    loki(
                        'sum by (level) (count_over_time({namespace=~"$namespace"}[$__auto]))',
                        "{{level}}",
                    )
                ],
            ),
            ts(
                "Error lines per second by pod",
                [
                    loki(
                        'sum by (pod) (rate({namespace=~"$namespace"} |~ "(?i)(error|fatal|panic)"'
                        " [$__auto]))",
                        "{{pod}}",
                    )
                ],
                unit="reqps",
            ),
            ts(
                "Log bytes by pod",
                [
                    loki(
                        'sum by (pod) (bytes_over_time({namespace=~"$namespace"}[$__auto]))',
                        "{{pod}}",
                    )
                ],
                unit="bytes",
            ),
            logs("Logs", '{namespace=~"$namespace"}'),
        ],
    },
    {
        "uid": "skiff-autoscaling",
        "title": "Skiff / Autoscaling",
        "variables": [CLUSTER, NAMESPACE],
        "panels": [
            ts(
                "Replicas: current, desired, min, max",
                [
                    prom(
                        f"kube_horizontalpodautoscaler_status_current_replicas"
                        f'{{{C}, namespace="$namespace"}}',
                        "{{horizontalpodautoscaler}} current",
                    ),
                    prom(
                        f"kube_horizontalpodautoscaler_status_desired_replicas"
                        f'{{{C}, namespace="$namespace"}}',
                        "{{horizontalpodautoscaler}} desired",
                    ),
                    prom(
                        f"kube_horizontalpodautoscaler_spec_min_replicas"
                        f'{{{C}, namespace="$namespace"}}',
                        "{{horizontalpodautoscaler}} min",
                    ),
                    prom(
                        f"kube_horizontalpodautoscaler_spec_max_replicas"
                        f'{{{C}, namespace="$namespace"}}',
                        "{{horizontalpodautoscaler}} max",
                    ),
                ],
                w=24,
            ),
            ts(
                "Metric: target and current",
                [
                    prom(
                        f"kube_horizontalpodautoscaler_spec_target_metric"
                        f'{{{C}, namespace="$namespace"}}',
                        "{{horizontalpodautoscaler}} {{metric_name}} target ({{metric_target_type}})",
                    ),
                    prom(
                        f"kube_horizontalpodautoscaler_status_target_metric"
                        f'{{{C}, namespace="$namespace"}}',
                        "{{horizontalpodautoscaler}} {{metric_name}} current ({{metric_target_type}})",
                    ),
                ],
            ),
            ts(
                "CPU of the scaled pods",
                [
                    prom(
                        rate(
                            "container_cpu_usage_seconds_total",
                            f'{CADVISOR}, namespace="$namespace"',
                            by="pod",
                        ),
                        "{{pod}}",
                    )
                ],
                unit="cores",
            ),
        ],
    },
    {
        "uid": "skiff-control-plane",
        "title": "Skiff / Control plane",
        "variables": [CLUSTER],
        "panels": [
            ts(
                "API requests per second by verb",
                [prom(rate("apiserver_request_total", f'{C}, job="apiserver"', by="verb"), "{{verb}}")],
                unit="reqps",
            ),
            ts(
                "API request latency p99 by verb",
                [
                    prom(
                        quantile(
                            0.99,
                            "apiserver_request_duration_seconds",
                            f'{C}, job="apiserver", verb!~"WATCH|CONNECT"',
                            by="le, verb",
                        ),
                        "{{verb}}",
                    )
                ],
                unit="s",
            ),
            ts(
                "API error ratio (5xx)",
                [
                    prom(
                        f'(sum(rate(apiserver_request_total{{{C}, job="apiserver", code=~"5.."}}'
                        f"[$__rate_interval])) or vector(0)) / "
                        + rate("apiserver_request_total", f'{C}, job="apiserver"'),
                        "5xx",
                    )
                ],
                unit="percentunit",
            ),
            ts(
                "Store size and revision rate",
                [
                    prom(f"skiff_store_db_size_bytes{{{C}}}", "database bytes"),
                    prom(f"rate(skiff_store_current_revision{{{C}}}[$__rate_interval])", "revisions/s"),
                ],
                unit="bytes",
            ),
            ts(
                "Store commit latency p99",
                [prom(quantile(0.99, "skiff_store_commit_duration_seconds", C), "p99")],
                unit="s",
            ),
            ts(
                "Scheduling attempt latency p99 and pending pods",
                [
                    prom(
                        quantile(
                            0.99, "scheduler_scheduling_attempt_duration_seconds", f'{C}, job="scheduler"'
                        ),
                        "attempt p99",
                    ),
                    prom(f'sum(scheduler_pending_pods{{{C}, job="scheduler"}})', "pending"),
                ],
                unit="s",
            ),
            ts(
                "Workqueue depth by controller",
                [
                    prom(
                        f'sum by (name) (workqueue_depth{{{C}, job="controller-manager"}})',
                        "{{name}}",
                    )
                ],
            ),
            ts(
                "Workqueue adds per second by controller",
                [
                    prom(
                        rate("workqueue_adds_total", f'{C}, job="controller-manager"', by="name"),
                        "{{name}}",
                    )
                ],
                unit="ops",
            ),
            ts(
                "Component memory (RSS)",
                [prom(f"process_resident_memory_bytes{{{C}}}", "{{job}}")],
                unit="bytes",
                w=24,
            ),
        ],
    },
    {
        "uid": "skiff-log-pipeline",
        "title": "Skiff / Log pipeline",
        "variables": [CLUSTER],
        "panels": [
            ts(
                "Collector lines per second: read and shipped, by node",
                [
                    prom(
                        rate("skiff_log_collector_lines_read_total", C, by="node"),
                        "{{node}} read",
                    ),
                    prom(
                        rate("skiff_log_collector_lines_shipped_total", C, by="node"),
                        "{{node}} shipped",
                    ),
                ],
                unit="ops",
            ),
            ts(
                "Collector lag (unread bytes) by node",
                [
                    prom(
                        f"sum by (node) (skiff_log_collector_file_lag_bytes{{{C}}})",
                        "{{node}}",
                    )
                ],
                unit="bytes",
            ),
            ts(
                "Collector checkpoint age",
                [
                    prom(
                        f"time() - skiff_log_collector_checkpoint_last_save_timestamp_seconds{{{C}}}",
                        "{{node}}",
                    )
                ],
                unit="s",
            ),
            ts(
                "Collector send latency p99",
                [
                    prom(
                        quantile(0.99, "skiff_log_collector_send_duration_seconds", C, by="le, node"),
                        "{{node}}",
                    )
                ],
                unit="s",
            ),
            ts(
                "Search ingest: lines per second, duplicates, rejected",
                [
                    prom(rate("skiff_search_ingested_lines_total", C), "stored"),
                    prom(rate("skiff_search_duplicate_lines_total", C), "duplicates"),
                    prom(
                        f"sum(rate(skiff_search_rejected_requests_total{{{C}}}[$__rate_interval]))"
                        " or vector(0)",
                        "rejected requests",
                    ),
                ],
                unit="ops",
            ),
            ts(
                "Search: time to searchable and commit latency, p99",
                [
                    prom(
                        quantile(0.99, "skiff_search_time_to_searchable_seconds", C),
                        "line acknowledged → searchable",
                    ),
                    prom(quantile(0.99, "skiff_search_commit_duration_seconds", C), "commit"),
                ],
                unit="s",
            ),
            ts(
                "Index size by day",
                [prom(f"sum by (index) (skiff_search_index_size_bytes{{{C}}})", "{{index}}")],
                unit="bytes",
            ),
            ts(
                "Query latency p99 by endpoint",
                [
                    prom(
                        quantile(
                            0.99, "skiff_search_query_duration_seconds", C, by="le, endpoint"
                        ),
                        "{{endpoint}}",
                    )
                ],
                unit="s",
            ),
        ],
    },
]

# Rendering ----------------------------------------------------------------------------------


def render_panel(spec, pid, x, y):
    targets = []
    for i, t in enumerate(spec["targets"]):
        target = dict(t)
        target["refId"] = chr(ord("A") + i)
        targets.append(target)
    is_logs = spec["type"] == "logs"
    out = {
        "id": pid,
        "type": spec["type"],
        "title": spec["title"],
        "datasource": LOKI if all(t["datasource"] == LOKI for t in targets) else PROM,
        "gridPos": {"h": spec["h"], "w": spec["w"], "x": x, "y": y},
        "targets": targets,
    }
    if spec["description"]:
        out["description"] = spec["description"]
    if is_logs:
        out["options"] = {
            "showTime": True,
            "wrapLogMessage": True,
            "sortOrder": "Descending",
            "enableLogDetails": True,
        }
    else:
        out["fieldConfig"] = {"defaults": {"unit": spec["unit"]}, "overrides": []}
        if spec["type"] == "timeseries":
            out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}}
        elif spec["type"] == "stat":
            out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    return out


def render(dash):
    panels, x, y, row_h = [], 0, 0, 0
    for i, spec in enumerate(dash["panels"], start=1):
        if x + spec["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(render_panel(spec, i, x, y))
        x += spec["w"]
        row_h = max(row_h, spec["h"])
    variables = [datasource_var("datasource", "prometheus", "Prometheus")]
    if dash.get("loki"):
        variables.append(datasource_var("loki", "loki", "Logs (skiff-search)"))
    variables += dash["variables"]
    return {
        "uid": dash["uid"],
        "title": dash["title"],
        "tags": ["skiff"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": panels,
    }


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for dash in DASHBOARDS:
        path = HERE / f"{dash['uid'].removeprefix('skiff-')}.json"
        text = json.dumps(render(dash), indent=2) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(
            "out of date (run python3 grafana-dashboards/generate.py): " + ", ".join(stale),
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
