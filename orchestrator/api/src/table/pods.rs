//! The pod row: kubectl's STATUS and RESTARTS logic (`printPod`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{or_none, str_at};
use crate::time::{age, parse};

pub(super) fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let status = pod.get("status").unwrap_or(&Value::Null);
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let phase = str_at(status, "/phase");
    let mut reason = match str_at(status, "/reason") {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    let note_restart = |c: &Value, restarts: &mut i64, last: &mut Option<Timestamp>| {
        let n = c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        *restarts += n;
        if n > 0
            && let Some(t) = c
                .pointer("/lastState/terminated/finishedAt")
                .and_then(Value::as_str)
                .and_then(parse)
            && last.is_none_or(|l| t > l)
        {
            *last = Some(t);
        }
    };
    let init_statuses = status
        .get("initContainerStatuses")
        .and_then(Value::as_array);
    let init_count = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut initializing = false;
    for (i, c) in init_statuses.into_iter().flatten().enumerate() {
        note_restart(c, &mut restarts, &mut last_restart);
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = str_at(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| t.get("exitCode").and_then(Value::as_i64) == Some(0)) {
            continue;
        }
        if let Some(t) = terminated {
            reason = match str_at(t, "/reason") {
                "" => match t.get("signal").and_then(Value::as_i64).unwrap_or(0) {
                    0 => format!(
                        "Init:ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                    s => format!("Init:Signal:{s}"),
                },
                r => format!("Init:{r}"),
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{init_count}");
        }
        initializing = true;
        break;
    }
    let initialized = condition_true(status, "Initialized");
    if !initializing || initialized {
        let mut has_running = false;
        let statuses: Vec<&Value> = status
            .get("containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        for c in statuses.iter().rev() {
            note_restart(c, &mut restarts, &mut last_restart);
            let waiting = str_at(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_owned();
            } else if let Some(t) = terminated {
                reason = match str_at(t, "/reason") {
                    "" => match t.get("signal").and_then(Value::as_i64).unwrap_or(0) {
                        0 => format!(
                            "ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                        s => format!("Signal:{s}"),
                    },
                    r => r.to_owned(),
                };
            } else if c.get("ready") == Some(&json!(true)) && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(status, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    if deleting && str_at(status, "/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            crate::time::human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    };
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .filter(|g| !g.is_empty())
        .map(|g| {
            let ok = g
                .iter()
                .filter(|gate| condition_true(status, str_at(gate, "/conditionType")))
                .count();
            format!("{ok}/{}", g.len())
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        json!(str_at(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_text),
        json!(age(
            pod.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
        json!(or_none(str_at(status, "/podIP"))),
        json!(or_none(str_at(pod, "/spec/nodeName"))),
        json!(or_none(str_at(status, "/nominatedNodeName"))),
        json!(gates),
    ]
}

fn condition_true(status: &Value, ty: &str) -> bool {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| str_at(c, "/type") == ty && str_at(c, "/status") == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(pod: Value) -> (String, String, String) {
        let cells = pod_cells(&pod, Timestamp::now());
        (
            cells[1].as_str().unwrap().to_owned(),
            cells[2].as_str().unwrap().to_owned(),
            cells[3].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn pending_running_and_crashloop() {
        let spec = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let pending =
            json!({"metadata": {"name": "p"}, "spec": spec, "status": {"phase": "Pending"}});
        assert_eq!(
            status_of(pending),
            ("0/2".into(), "Pending".into(), "0".into())
        );
        let running = json!({"metadata": {"name": "p"}, "spec": spec, "status": {"phase": "Running",
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 3,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2020-01-01T00:00:00Z"}}}]}});
        let (ready, reason, restarts) = status_of(running);
        assert_eq!(ready, "1/2");
        assert_eq!(reason, "CrashLoopBackOff");
        assert!(restarts.starts_with("3 ("), "{restarts}");
    }

    #[test]
    fn init_and_terminating() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i"}, {"name": "j"}],
            "containers": [{"name": "a"}]}, "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i", "state": {"terminated": {"exitCode": 0}}},
                {"name": "j", "state": {"running": {}}}]}});
        assert_eq!(status_of(pod).1, "Init:1/2");
        let deleting = json!({"metadata": {"name": "p", "deletionTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
        assert_eq!(status_of(deleting).1, "Terminating");
        let done = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a",
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(status_of(done).1, "Completed");
    }
}
