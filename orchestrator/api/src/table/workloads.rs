//! Rows of workload kinds: Deployments, ReplicaSets, DaemonSets, StatefulSets, Jobs, CronJobs,
//! ControllerRevisions and HorizontalPodAutoscalers.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{containers_and_images, int_at, or_none, str_at};
use crate::selector::label::format_structured;
use crate::time::{age, human_duration, parse};

pub(super) fn cells(
    kind: &str,
    o: &Value,
    name: Value,
    created: Value,
    now: Timestamp,
) -> Vec<Value> {
    let selector = || {
        json!(format_structured(
            o.pointer("/spec/selector").unwrap_or(&Value::Null)
        ))
    };
    let (containers, images) = containers_and_images(o, "/spec/template/spec/containers");
    let desired = o
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    match kind {
        "Deployment" => vec![
            name,
            json!(format!(
                "{}/{}",
                int_at(o, "/status/readyReplicas"),
                desired
            )),
            json!(int_at(o, "/status/updatedReplicas")),
            json!(int_at(o, "/status/availableReplicas")),
            created,
            json!(containers),
            json!(images),
            selector(),
        ],
        "ReplicaSet" => vec![
            name,
            json!(desired),
            json!(int_at(o, "/status/replicas")),
            json!(int_at(o, "/status/readyReplicas")),
            created,
            json!(containers),
            json!(images),
            selector(),
        ],
        "DaemonSet" => {
            let node_selector = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    let mut pairs: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect();
                    pairs.sort();
                    pairs.join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(int_at(o, "/status/desiredNumberScheduled")),
                json!(int_at(o, "/status/currentNumberScheduled")),
                json!(int_at(o, "/status/numberReady")),
                json!(int_at(o, "/status/updatedNumberScheduled")),
                json!(int_at(o, "/status/numberAvailable")),
                json!(or_none(node_selector)),
                created,
                json!(containers),
                json!(images),
                selector(),
            ]
        }
        "StatefulSet" => vec![
            name,
            json!(format!(
                "{}/{}",
                int_at(o, "/status/readyReplicas"),
                desired
            )),
            created,
            json!(containers),
            json!(images),
        ],
        "Job" => vec![
            name,
            json!(job_status(o)),
            json!(job_completions(o)),
            json!(job_duration(o, now)),
            created,
            json!(containers),
            json!(images),
            selector(),
        ],
        "CronJob" => {
            let (containers, images) =
                containers_and_images(o, "/spec/jobTemplate/spec/template/spec/containers");
            let last = o
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str);
            vec![
                name,
                json!(str_at(o, "/spec/schedule")),
                json!(or_none(str_at(o, "/spec/timeZone"))),
                json!(if o.pointer("/spec/suspend") == Some(&json!(true)) {
                    "True"
                } else {
                    "False"
                }),
                json!(
                    o.pointer("/status/active")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                ),
                json!(if last.is_some() {
                    age(last, now)
                } else {
                    "<none>".into()
                }),
                created,
                json!(containers),
                json!(images),
                json!(format_structured(
                    o.pointer("/spec/jobTemplate/spec/selector")
                        .unwrap_or(&Value::Null)
                )),
            ]
        }
        "ControllerRevision" => {
            let controller = o
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("controller") == Some(&json!(true)))
                })
                .map(|r| {
                    let api_version = str_at(r, "/apiVersion");
                    let group = api_version.split_once('/').map_or("", |(g, _)| g);
                    let kind = str_at(r, "/kind").to_lowercase();
                    let kind = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{kind}/{}", str_at(r, "/name"))
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(controller),
                json!(int_at(o, "/revision")),
                created,
            ]
        }
        "HorizontalPodAutoscaler" => vec![
            name,
            json!(format!(
                "{}/{}",
                str_at(o, "/spec/scaleTargetRef/kind"),
                str_at(o, "/spec/scaleTargetRef/name")
            )),
            json!(hpa_targets(o)),
            json!(
                o.pointer("/spec/minReplicas")
                    .and_then(Value::as_i64)
                    .map_or("<unset>".into(), |n| n.to_string())
            ),
            json!(int_at(o, "/spec/maxReplicas")),
            json!(int_at(o, "/status/currentReplicas")),
            created,
        ],
        _ => vec![name, created],
    }
}

fn job_status(o: &Value) -> &'static str {
    let has = |ty: &str| {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| str_at(c, "/type") == ty && str_at(c, "/status") == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn job_completions(o: &Value) -> String {
    let succeeded = int_at(o, "/status/succeeded");
    match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = o
                .pointer("/spec/parallelism")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    }
}

fn job_duration(o: &Value, now: Timestamp) -> String {
    let start = o
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .and_then(parse);
    let end = o
        .pointer("/status/completionTime")
        .and_then(Value::as_str)
        .and_then(parse);
    match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.as_second() - s.as_second()),
        (Some(s), Some(e)) => human_duration(e.as_second() - s.as_second()),
    }
}

/// TARGETS as kubectl shows them: `cpu: 35%/50%`, `<unknown>` before metrics arrive.
fn hpa_targets(o: &Value) -> String {
    let spec_metrics: Vec<&Value> = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if spec_metrics.is_empty() {
        // autoscaling/v1 shape
        if let Some(target) = o
            .pointer("/spec/targetCPUUtilizationPercentage")
            .and_then(Value::as_i64)
        {
            let current = o
                .pointer("/status/currentCPUUtilizationPercentage")
                .and_then(Value::as_i64)
                .map_or("<unknown>".into(), |c| format!("{c}%"));
            return format!("cpu: {current}/{target}%");
        }
        return "<none>".into();
    }
    let current: Vec<&Value> = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let mut parts = Vec::new();
    for (i, m) in spec_metrics.iter().enumerate() {
        let ty = str_at(m, "/type");
        let section = match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => "",
        };
        let target = m
            .get(section)
            .and_then(|s| s.get("target"))
            .unwrap_or(&Value::Null);
        let cur = current
            .get(i)
            .and_then(|c| c.get(section))
            .and_then(|s| s.get("current"));
        let label = match ty {
            "Resource" | "ContainerResource" => str_at(m, &format!("/{section}/name")).to_owned(),
            _ => str_at(m, &format!("/{section}/metric/name")).to_owned(),
        };
        let (cur_text, target_text) =
            if let Some(u) = target.get("averageUtilization").and_then(Value::as_i64) {
                (
                    cur.and_then(|c| c.get("averageUtilization"))
                        .and_then(Value::as_i64)
                        .map_or("<unknown>".into(), |c| format!("{c}%")),
                    format!("{u}%"),
                )
            } else if let Some(v) = target.get("averageValue").and_then(Value::as_str) {
                (
                    cur.and_then(|c| c.get("averageValue"))
                        .and_then(Value::as_str)
                        .map_or("<unknown>".into(), str::to_owned),
                    format!("{v} (avg)"),
                )
            } else {
                let v = target
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (
                    cur.and_then(|c| c.get("value"))
                        .and_then(Value::as_str)
                        .map_or("<unknown>".into(), str::to_owned),
                    v.to_owned(),
                )
            };
        parts.push(format!("{label}: {cur_text}/{target_text}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_targets_like_kubectl() {
        let hpa = json!({"spec": {"metrics": [{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": 35}}}]}});
        assert_eq!(hpa_targets(&hpa), "cpu: 35%/50%");
        let fresh = json!({"spec": {"metrics": [{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}]}});
        assert_eq!(hpa_targets(&fresh), "cpu: <unknown>/50%");
    }

    #[test]
    fn job_columns() {
        let job = json!({"spec": {"completions": 5}, "status": {"succeeded": 2,
            "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:30Z",
            "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(job_status(&job), "Complete");
        assert_eq!(job_completions(&job), "2/5");
        assert_eq!(job_duration(&job, Timestamp::now()), "30s");
    }
}
