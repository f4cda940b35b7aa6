//! Server-side defaulting, as upstream's `SetDefaults_*` functions and the defaulting
//! admission plugins fill fields in. `kubectl describe` and controllers rely on these being set
//! (`Port: 80/TCP`, a rollout strategy, a restart policy).

use serde_json::{Map, Value, json};

use crate::quantity::Quantity;

/// Fill defaults into a stored-version object of `kind`. Idempotent: it only sets missing fields.
pub fn apply_defaults(kind: &str, object: &mut Value) {
    let Some(obj) = object.as_object_mut() else {
        return;
    };
    match kind {
        "Pod" => {
            let spec = child(obj, "spec");
            pod_spec(spec);
            pod_admission(spec);
            let spec_snapshot = Value::Object(spec.clone());
            let status = child(obj, "status");
            set(status, "phase", json!("Pending"));
            set(status, "qosClass", json!(qos_class(&spec_snapshot)));
        }
        "Deployment" => {
            let spec = child(obj, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            let strategy = child(spec, "strategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = child(strategy, "rollingUpdate");
                set(ru, "maxUnavailable", json!("25%"));
                set(ru, "maxSurge", json!("25%"));
            }
            template(spec);
        }
        "ReplicaSet" => {
            let spec = child(obj, "spec");
            set(spec, "replicas", json!(1));
            template(spec);
        }
        "StatefulSet" => {
            let spec = child(obj, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            set(spec, "revisionHistoryLimit", json!(10));
            let strategy = child(spec, "updateStrategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                set(child(strategy, "rollingUpdate"), "partition", json!(0));
            }
            let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
            set(retention, "whenDeleted", json!("Retain"));
            set(retention, "whenScaled", json!("Retain"));
            template(spec);
        }
        "DaemonSet" => {
            let spec = child(obj, "spec");
            set(spec, "revisionHistoryLimit", json!(10));
            let strategy = child(spec, "updateStrategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = child(strategy, "rollingUpdate");
                set(ru, "maxUnavailable", json!(1));
                set(ru, "maxSurge", json!(0));
            }
            template(spec);
        }
        "Job" => {
            let spec = child(obj, "spec");
            job_spec(spec);
        }
        "CronJob" => {
            let spec = child(obj, "spec");
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            let job_template = child(spec, "jobTemplate");
            job_spec(child(job_template, "spec"));
        }
        "Service" => service(obj),
        "Secret" => {
            set(obj, "type", json!("Opaque"));
            merge_string_data(obj);
        }
        "Namespace" => {
            let name = obj
                .get("metadata")
                .and_then(|m| m.get("name"))
                .cloned()
                .unwrap_or(Value::Null);
            if name.is_string() {
                let labels = child(child(obj, "metadata"), "labels");
                labels.insert("kubernetes.io/metadata.name".into(), name);
            }
            set(child(obj, "spec"), "finalizers", json!(["kubernetes"]));
            set(child(obj, "status"), "phase", json!("Active"));
        }
        "PersistentVolume" => {
            let spec = child(obj, "spec");
            set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set(spec, "volumeMode", json!("Filesystem"));
            set(child(obj, "status"), "phase", json!("Pending"));
        }
        "PersistentVolumeClaim" => {
            set(child(obj, "spec"), "volumeMode", json!("Filesystem"));
            set(child(obj, "status"), "phase", json!("Pending"));
        }
        "HorizontalPodAutoscaler" => {
            let spec = child(obj, "spec");
            set(spec, "minReplicas", json!(1));
            let empty = spec
                .get("metrics")
                .and_then(Value::as_array)
                .is_none_or(|m| m.is_empty());
            if empty {
                spec.insert(
                    "metrics".into(),
                    json!([{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                );
            }
        }
        _ => {}
    }
}

/// The QoS class upstream derives from requests and limits.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any_set = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests");
        let limits = c.pointer("/resources/limits");
        for resource in ["cpu", "memory"] {
            let req = requests
                .and_then(|r| r.get(resource))
                .and_then(Value::as_str);
            let lim = limits.and_then(|l| l.get(resource)).and_then(Value::as_str);
            let parse = |q: Option<&str>| q.and_then(|q| Quantity::parse(q).ok());
            let (req, lim) = (parse(req), parse(lim));
            if req.is_some_and(|q| q.nanos() != 0) || lim.is_some_and(|q| q.nanos() != 0) {
                any_set = true;
            }
            // A missing request defaults to the limit, so only a differing request or a missing
            // limit breaks Guaranteed.
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// `stringData` is write-only: its keys are base64-encoded into `data` (winning over the same
/// keys there) and the field itself is never stored, as upstream's conversion does.
fn merge_string_data(obj: &mut Map<String, Value>) {
    use base64::Engine;
    let Some(Value::Object(strings)) = obj.remove("stringData") else {
        return;
    };
    let data = child(obj, "data");
    for (key, value) in strings {
        let text = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        data.insert(
            key,
            json!(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    let completions_set = spec.get("completions").is_some_and(|v| !v.is_null());
    let parallelism_set = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !completions_set && !parallelism_set {
        spec.insert("completions".into(), json!(1));
    }
    set(spec, "parallelism", json!(1));
    set(spec, "backoffLimit", json!(6));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    template(spec);
}

fn service(obj: &mut Map<String, Value>) {
    let spec = child(obj, "spec");
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if ty != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        set(spec, "ipFamilies", json!(["IPv4"]));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set(port, "protocol", json!("TCP"));
            if let Some(p) = port.get("port").cloned() {
                set(port, "targetPort", p);
            }
        }
    }
}

/// Defaults of a `spec.template` (a PodTemplateSpec).
fn template(spec: &mut Map<String, Value>) {
    let template = child(spec, "template");
    pod_spec(child(template, "spec"));
}

/// Defaults of a PodSpec, shared by pods and pod templates.
pub fn pod_spec(spec: &mut Map<String, Value>) {
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    for field in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(field).and_then(Value::as_array_mut) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
            }
        }
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            for source in ["configMap", "secret", "downwardAPI"] {
                if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
                    set(s, "defaultMode", json!(420));
                }
            }
        }
    }
}

/// What admission plugins add to pods (not templates): the service account, priority,
/// enableServiceLinks and the not-ready/unreachable tolerations of DefaultTolerationSeconds.
fn pod_admission(spec: &mut Map<String, Value>) {
    set(spec, "serviceAccountName", json!("default"));
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        set(spec, "serviceAccount", sa);
    }
    set(spec, "enableServiceLinks", json!(true));
    set(spec, "priority", json!(0));
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec
        .entry("tolerations")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    if let Some(tolerations) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let present = tolerations.iter().any(|t| {
                let tk = t.get("key").and_then(Value::as_str);
                let effect = t.get("effect").and_then(Value::as_str);
                (tk == Some(key)
                    || tk.is_none_or(str::is_empty) && t.get("operator") == Some(&json!("Exists")))
                    && effect.is_none_or(|e| e.is_empty() || e == "NoExecute")
            });
            if !present {
                tolerations.push(json!({"key": key, "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
}

fn container(c: &mut Map<String, Value>) {
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    set(c, "resources", json!({}));
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let policy = if image_tag_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set(c, "imagePullPolicy", json!(policy));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                set(h, "path", json!("/"));
                set(h, "scheme", json!("HTTP"));
            }
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env.iter_mut() {
            if let Some(f) = e
                .pointer_mut("/valueFrom/fieldRef")
                .and_then(Value::as_object_mut)
            {
                set(f, "apiVersion", json!("v1"));
            }
        }
    }
}

/// Whether an image reference has no tag or the `latest` tag (pulled Always upstream).
fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// The child map at `key`, created when missing or not a map.
fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

/// Set `key` when it is missing or null.
fn set(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) && !value.is_null() {
        map.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_match_upstream() {
        let mut d = json!({"spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}}}});
        apply_defaults("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        // Templates get no service account or tolerations: those are pod admission.
        assert!(d["spec"]["template"]["spec"].get("tolerations").is_none());
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}, "template": {"spec": {}}}});
        apply_defaults("Deployment", &mut d);
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn pods_get_admission_defaults_and_qos() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply_defaults("Pod", &mut p);
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "Guaranteed");
        let mut again = p.clone();
        apply_defaults("Pod", &mut again);
        assert_eq!(p, again, "defaulting is idempotent");
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "c"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]})),
            "Burstable"
        );
    }

    #[test]
    fn secret_string_data_becomes_data() {
        let mut s =
            json!({"data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "hello", "c": "x y"}});
        apply_defaults("Secret", &mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s.get("stringData"), None);
        assert_eq!(
            s["data"],
            json!({"a": "eA==", "b": "aGVsbG8=", "c": "eCB5"})
        );
    }

    #[test]
    fn service_ports_and_job_parallelism() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults("Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        let mut j = json!({"spec": {"parallelism": 2, "template": {"spec": {}}}});
        apply_defaults("Job", &mut j);
        assert!(j["spec"].get("completions").is_none());
        assert_eq!(j["spec"]["backoffLimit"], 6);
    }
}
