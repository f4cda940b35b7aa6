//! Pod status as kubectl and controllers read it: container statuses (state, lastState, ready,
//! started, restartCount, ids), the phase by kubelet's `getPhase` rules, and the conditions
//! PodReadyToStartContainers, Initialized, ContainersReady, Ready and PodScheduled.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use skiff_api::time::format_rfc3339;

use crate::probes::ProbeState;
use crate::runtime::{ContainerInfo, ContainerState};

/// Why a container is not running, when the runtime cannot say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiting {
    /// `ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`, …
    pub reason: String,
    /// Details.
    pub message: String,
}

/// Everything the status is computed from.
pub(crate) struct StatusInput<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its containers in the runtime, all attempts.
    pub containers: &'a [ContainerInfo],
    /// Probe results by container id.
    pub probes: &'a HashMap<String, ProbeState>,
    /// Waiting reasons by container name.
    pub waiting: &'a HashMap<String, Waiting>,
    /// The sandbox's IP, once it exists.
    pub pod_ip: Option<&'a str>,
    /// This node's IP.
    pub host_ip: &'a str,
    /// When the agent first acted on the pod.
    pub start_time: &'a str,
    /// Pod-level failure (an init container failed with restartPolicy Never, a deadline).
    pub failure: Option<(&'a str, &'a str)>,
}

/// The latest and the previous instance of a container.
pub(crate) fn instances<'a>(
    all: &'a [ContainerInfo],
    name: &str,
    init: bool,
) -> (Option<&'a ContainerInfo>, Option<&'a ContainerInfo>) {
    let mut mine: Vec<&ContainerInfo> = all
        .iter()
        .filter(|c| c.name == name && c.init == init)
        .collect();
    mine.sort_by_key(|c| c.attempt);
    let latest = mine.pop();
    (latest, mine.pop())
}

fn ts(t: Timestamp) -> String {
    format_rfc3339(t)
}

fn terminated(c: &ContainerInfo) -> Option<Value> {
    let ContainerState::Exited {
        started_at,
        finished_at,
        exit_code,
        oom_killed,
        signal,
    } = &c.state
    else {
        return None;
    };
    let reason = if *oom_killed {
        "OOMKilled"
    } else if *exit_code == 0 {
        "Completed"
    } else if started_at.is_none() && *exit_code == 128 {
        "StartError"
    } else {
        "Error"
    };
    let mut t = json!({
        "exitCode": exit_code, "reason": reason, "finishedAt": ts(*finished_at), "containerID": c.container_id,
        "startedAt": started_at.map(ts),
    });
    if let Some(s) = signal {
        t["signal"] = json!(s);
    }
    Some(t)
}

/// The status of one spec container.
fn container_status(
    input: &StatusInput<'_>,
    spec: &Container,
    init: bool,
    default_waiting: &str,
) -> Value {
    let (latest, previous) = instances(input.containers, &spec.name, init);
    let waiting = input.waiting.get(&spec.name);
    let mut status = json!({
        "name": spec.name, "image": spec.image.clone().unwrap_or_default(), "imageID": "",
        "ready": false, "restartCount": latest.map_or(0, |c| c.attempt), "started": false,
        "state": {}, "lastState": {},
    });
    if let Some(c) = latest {
        status["containerID"] = json!(c.container_id);
        status["imageID"] = json!(c.image_id);
    }
    match latest.map(|c| &c.state) {
        Some(ContainerState::Running { started_at }) => {
            // Until its probe task reports, a container with probes is neither started nor
            // ready (the task starts one sync after the container does).
            let probes = latest
                .and_then(|c| input.probes.get(&c.id))
                .copied()
                .unwrap_or(ProbeState {
                    started: spec.startup_probe.is_none(),
                    ready: spec.readiness_probe.is_none(),
                    failed: false,
                });
            let probes = Some(probes);
            let started = probes.is_none_or(|p| p.started);
            status["state"] = json!({"running": {"startedAt": ts(*started_at)}});
            status["started"] = json!(started);
            status["ready"] = json!(started && probes.is_none_or(|p| p.ready) && !init);
            if let Some(prev) = previous.and_then(terminated) {
                status["lastState"] = json!({"terminated": prev});
            }
        }
        Some(ContainerState::Exited { .. }) => {
            let term = terminated(latest.expect("matched")).expect("exited");
            match waiting {
                // Exited and waiting to restart: CrashLoopBackOff with the run in lastState.
                Some(w) => {
                    status["state"] =
                        json!({"waiting": {"reason": w.reason, "message": w.message}});
                    status["lastState"] = json!({"terminated": term});
                }
                None => {
                    status["state"] = json!({"terminated": term});
                    if let Some(prev) = previous.and_then(terminated) {
                        status["lastState"] = json!({"terminated": prev});
                    }
                }
            }
            if init && term["exitCode"] == 0 {
                status["ready"] = json!(true);
            }
        }
        Some(ContainerState::Created) | None => {
            let (reason, message) = waiting
                .map_or((default_waiting.to_owned(), String::new()), |w| {
                    (w.reason.clone(), w.message.clone())
                });
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            status["state"] = json!({"waiting": w});
            if let Some(prev) = latest
                .and_then(terminated)
                .or_else(|| previous.and_then(terminated))
            {
                status["lastState"] = json!({"terminated": prev});
            }
        }
    }
    status
}

fn condition(
    ty: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &str,
    old: &Value,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let previous = old["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == ty);
    let since = match previous {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c =
        json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// Compute the pod status.
pub(crate) fn compute(input: &StatusInput<'_>) -> Value {
    let pod = input.pod;
    let spec = pod.spec.as_ref();
    let old = serde_json::to_value(&pod.status).unwrap_or(Value::Null);
    let now = ts(Timestamp::now());
    let restart_policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let init_specs: &[Container] = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    let app_specs: &[Container] = spec.map_or(&[], |s| s.containers.as_slice());

    let init_statuses: Vec<Value> = init_specs
        .iter()
        .map(|c| container_status(input, c, true, "PodInitializing"))
        .collect();
    let pending_init: Vec<&str> = init_specs
        .iter()
        .zip(&init_statuses)
        .filter(|(_, s)| s["state"]["terminated"]["exitCode"] != 0)
        .map(|(c, _)| c.name.as_str())
        .collect();
    let initialized = pending_init.is_empty();
    let app_default = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app_statuses: Vec<Value> = app_specs
        .iter()
        .map(|c| container_status(input, c, false, app_default))
        .collect();

    // kubelet's getPhase.
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in &app_statuses {
        if s["state"].get("running").is_some() {
            running += 1;
        } else if let Some(t) = s["state"].get("terminated") {
            stopped += 1;
            if t["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s["lastState"].get("terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    let phase = if let Some((reason, _)) = input.failure {
        let _ = reason;
        "Failed"
    } else if !initialized || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let unready: Vec<&str> = app_specs
        .iter()
        .zip(&app_statuses)
        .filter(|(_, s)| s["ready"] != true)
        .map(|(c, _)| c.name.as_str())
        .collect();
    let all_ready = unready.is_empty() && !terminal;
    let not_ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let not_ready_message = (!unready.is_empty() && !terminal)
        .then(|| format!("containers with unready status: [{}]", unready.join(" ")));
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            input.pod_ip.is_some(),
            None,
            None,
            &now,
            &old,
        ),
        condition(
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            (!initialized).then(|| {
                format!(
                    "containers with incomplete status: [{}]",
                    pending_init.join(" ")
                )
            }),
            &now,
            &old,
        ),
        condition(
            "Ready",
            all_ready,
            (!all_ready).then_some(not_ready_reason),
            not_ready_message.clone(),
            &now,
            &old,
        ),
        condition(
            "ContainersReady",
            all_ready,
            (!all_ready).then_some(not_ready_reason),
            not_ready_message,
            &now,
            &old,
        ),
    ];
    match old["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
    {
        Some(s) => conditions.push(s.clone()),
        None => conditions.push(condition("PodScheduled", true, None, None, &now, &old)),
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": input.host_ip,
        "hostIPs": [{"ip": input.host_ip}],
        "startTime": input.start_time,
        "containerStatuses": app_statuses,
        "qosClass": old["qosClass"].as_str().map_or_else(|| skiff_api::defaults::qos_class(&serde_json::to_value(spec).unwrap_or_default()).to_owned(), str::to_owned),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(ip) = input.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some((reason, message)) = input.failure {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pod(policy: &str, init: bool) -> Pod {
        let mut spec =
            json!({"restartPolicy": policy, "containers": [{"name": "app", "image": "x"}]});
        if init {
            spec["initContainers"] = json!([{"name": "setup", "image": "x"}]);
        }
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
            .unwrap()
    }

    fn info(name: &str, attempt: u32, state: ContainerState, init: bool) -> ContainerInfo {
        ContainerInfo {
            id: format!("{name}-{attempt}"),
            container_id: format!("process://{name}-{attempt}"),
            pod: crate::runtime::PodRef {
                namespace: "d".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            name: name.into(),
            attempt,
            image: "x".into(),
            image_id: "process://x".into(),
            state,
            log_path: PathBuf::new(),
            init,
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState::Exited {
            started_at: Some(Timestamp::now()),
            finished_at: Timestamp::now(),
            exit_code: code,
            oom_killed: false,
            signal: None,
        }
    }

    fn run(p: &Pod, containers: &[ContainerInfo], waiting: &HashMap<String, Waiting>) -> Value {
        compute(&StatusInput {
            pod: p,
            containers,
            probes: &HashMap::new(),
            waiting,
            pod_ip: Some("127.100.0.2"),
            host_ip: "10.0.0.1",
            start_time: "2026-01-01T00:00:00Z",
            failure: None,
        })
    }

    #[test]
    fn phases_follow_kubelet() {
        let p = pod("Always", false);
        let none = HashMap::new();
        assert_eq!(run(&p, &[], &none)["phase"], "Pending");
        let running = [info(
            "app",
            0,
            ContainerState::Running {
                started_at: Timestamp::now(),
            },
            false,
        )];
        let s = run(&p, &running, &none);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert_eq!(s["conditions"][2]["type"], "Ready");
        assert_eq!(s["conditions"][2]["status"], "True");
        let done = [info("app", 0, exited(0), false)];
        assert_eq!(
            run(&pod("Never", false), &done, &none)["phase"],
            "Succeeded"
        );
        assert_eq!(
            run(
                &pod("Never", false),
                &[info("app", 0, exited(1), false)],
                &none
            )["phase"],
            "Failed"
        );
        assert_eq!(
            run(
                &pod("OnFailure", false),
                &[info("app", 0, exited(1), false)],
                &none
            )["phase"],
            "Running"
        );
    }

    #[test]
    fn crash_loops_show_waiting_and_last_state() {
        let p = pod("Always", false);
        let mut waiting = HashMap::new();
        waiting.insert(
            "app".to_owned(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 10s restarting failed container=app".into(),
            },
        );
        let s = run(
            &p,
            &[
                info("app", 0, exited(1), false),
                info("app", 1, exited(2), false),
            ],
            &waiting,
        );
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(c["restartCount"], 1);
        assert_eq!(s["phase"], "Running");
    }

    #[test]
    fn init_containers_gate_the_app() {
        let p = pod("Always", true);
        let s = run(
            &p,
            &[info(
                "setup",
                0,
                ContainerState::Running {
                    started_at: Timestamp::now(),
                },
                true,
            )],
            &HashMap::new(),
        );
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["conditions"][1]["status"], "False");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        let s = run(&p, &[info("setup", 0, exited(0), true)], &HashMap::new());
        assert_eq!(s["conditions"][1]["status"], "True");
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
    }
}
