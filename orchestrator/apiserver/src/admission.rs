//! What happens to an object between decoding and storage: system metadata, per-kind mutation
//! (service IPs, job selectors), defaulting, and validation — upstream's registry strategies and
//! the built-in admission plugins, in one place.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{Map, Value, json};
use skiff_api::ResourceInfo;
use skiff_api::defaults::apply_defaults;
use skiff_api::time::now_rfc3339;
use skiff_api::validation::{FieldError, validate_create, validate_update};
use skiff_store::RangeRequest;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Kinds whose status a create may not set (it is reset, as upstream's `PrepareForCreate`).
const STATUS_RESET_ON_CREATE: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
    "Service",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Namespace",
    "Pod",
    "CertificateSigningRequest",
];

/// First address of the service range, reserved for the `kubernetes` service.
pub(crate) const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const SERVICE_RANGE_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SERVICE_RANGE_SIZE: u32 = 1 << 20; // 10.96.0.0/12
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// Random name suffix characters (upstream's, without vowels and look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` + five random characters.
pub(crate) fn generate_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let max_prefix = 63 - 5;
    let prefix = if prefix.len() > max_prefix {
        &prefix[..max_prefix]
    } else {
        prefix
    };
    let suffix: String = (0..5)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// Prepare a new object (storage version, name already set) for storage.
pub(crate) async fn prepare_create(
    state: &AppState,
    info: &ResourceInfo,
    mut obj: Value,
) -> ApiResult<Value> {
    let uid = uuid::Uuid::new_v4().to_string();
    {
        let m = meta(&mut obj);
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "resourceVersion",
        ] {
            m.remove(field);
        }
        if info.tracks_generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if STATUS_RESET_ON_CREATE.contains(&info.kind.as_str())
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    match info.kind.as_str() {
        "Job" => job_selector(&mut obj, &uid),
        "Pod" => default_tolerations(
            &mut obj,
            state.serving().default_not_ready_toleration_seconds,
            state.serving().default_unreachable_toleration_seconds,
        ),
        "Service" => allocate_service_addresses(state, &mut obj, None).await?,
        _ => {}
    }
    apply_defaults(&info.kind, &mut obj);
    let mut errors = validate_create(&info.kind, info.namespaced, &obj);
    if info.kind == "CertificateSigningRequest" {
        errors.extend(crate::csr::check_request(&obj));
    }
    check(info, &obj, errors)?;
    Ok(obj)
}

/// Prepare an update of `old` to `new` (storage version). `subresource` is `status` for status
/// writes, which change only `.status`; main writes never change `.status` of kinds that have a
/// status subresource.
pub(crate) async fn prepare_update(
    state: &AppState,
    info: &ResourceInfo,
    subresource: Option<&str>,
    old: &Value,
    mut new: Value,
) -> ApiResult<Value> {
    match subresource {
        // The binding handler changes only the node and the PodScheduled condition.
        Some("binding") => return Ok(new),
        Some("finalize") => {
            let mut updated = old.clone();
            updated["spec"]["finalizers"] = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            return Ok(updated);
        }
        _ => {}
    }
    if info.kind == "CertificateSigningRequest" {
        new = crate::csr::prepare_update(subresource, old, new);
        if subresource.is_some() {
            let errors = validate_update(&info.kind, info.namespaced, &new, old);
            check(info, &new, errors)?;
            return Ok(new);
        }
    }
    if subresource == Some("status") {
        let mut updated = old.clone();
        updated["status"] = new.get("status").cloned().unwrap_or(json!({}));
        // Status writers may also maintain labels and annotations (kubelet, controllers).
        for field in ["labels", "annotations"] {
            if let Some(v) = new.pointer(&format!("/metadata/{field}")) {
                meta(&mut updated).insert(field.into(), v.clone());
            }
        }
        return Ok(updated);
    }
    // System metadata is not writable by clients.
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    {
        let m = meta(&mut new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(field) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
    }
    if info.subresource("status").is_some() {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    if info.kind == "Service" {
        allocate_service_addresses(state, &mut new, Some(old)).await?;
    }
    apply_defaults(&info.kind, &mut new);
    if info.kind == "Pod" || info.kind == "Namespace" {
        // Defaulting re-adds a Pending phase / Active phase to statusless bodies: keep the real one.
        if let Some(s) = old.get("status") {
            new["status"] = s.clone();
        }
    }
    if info.tracks_generation && spec_changed(old, &new) {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta(&mut new).insert("generation".into(), json!(generation + 1));
    }
    let errors = validate_update(&info.kind, info.namespaced, &new, old);
    check(info, &new, errors)?;
    Ok(new)
}

fn check(info: &ResourceInfo, obj: &Value, errors: Vec<FieldError>) -> ApiResult<()> {
    if errors.is_empty() {
        return Ok(());
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(ApiError::invalid(info, name, &errors))
}

/// Everything but metadata and status.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            for f in ["metadata", "status", "apiVersion", "kind"] {
                o.remove(f);
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Every pod tolerates a not-ready or unreachable node for a while before it is evicted,
/// unless it says otherwise (upstream's DefaultTolerationSeconds admission plugin).
fn default_tolerations(pod: &mut Value, not_ready: i64, unreachable: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for (key, seconds) in [
        ("node.kubernetes.io/not-ready", not_ready),
        ("node.kubernetes.io/unreachable", unreachable),
    ] {
        // A toleration of this key for NoExecute (or any effect) is the pod's own choice.
        let present = list.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                && matches!(
                    t.get("effect").and_then(Value::as_str),
                    None | Some("") | Some("NoExecute")
                )
        }) || list.iter().any(|t| {
            t.get("operator").and_then(Value::as_str) == Some("Exists")
                && t.get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                && matches!(
                    t.get("effect").and_then(Value::as_str),
                    None | Some("") | Some("NoExecute")
                )
        });
        if !present {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// Jobs select their pods by a label holding the job's uid, set by the server unless
/// `manualSelector` is true (upstream's job strategy).
fn job_selector(obj: &mut Value, uid: &str) {
    if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let labels = json!({
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    });
    if !obj.get("spec").is_some_and(Value::is_object) {
        return;
    }
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    if !obj
        .pointer("/spec/template/metadata")
        .is_some_and(Value::is_object)
    {
        if !obj.pointer("/spec/template").is_some_and(Value::is_object) {
            obj["spec"]["template"] = json!({});
        }
        obj["spec"]["template"]["metadata"] = json!({});
    }
    let template_meta = &mut obj["spec"]["template"]["metadata"];
    if !template_meta.get("labels").is_some_and(Value::is_object) {
        template_meta["labels"] = json!({});
    }
    for (k, v) in labels.as_object().expect("literal object") {
        template_meta["labels"][k] = v.clone();
    }
}

/// Give a Service a cluster IP (unless headless or ExternalName) and node ports (NodePort and
/// LoadBalancer), keeping what `old` already had.
async fn allocate_service_addresses(
    state: &AppState,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if ty != "ExternalName" {
        let requested = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let previous = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ip = if !requested.is_empty() {
            requested
        } else if !previous.is_empty() {
            previous
        } else {
            let (ips, _) = used_service_addresses(state).await?;
            free_ip(&ips).ok_or_else(|| {
                ApiError::internal("failed to allocate a serviceIP: range is full")
            })?
        };
        if obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"]["clusterIP"] = json!(ip);
            obj["spec"]["clusterIPs"] = json!([ip]);
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let old_ports: Vec<(i64, i64)> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.get("port")?.as_i64()?, p.get("nodePort")?.as_i64()?)))
            .collect();
        let needs = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0)
            });
        if needs {
            let (_, mut used_ports) = used_service_addresses(state).await?;
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut() {
                    if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                        continue;
                    }
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let node_port = match old_ports.iter().find(|(pp, _)| *pp == port) {
                        Some((_, np)) => *np,
                        None => {
                            let np = free_node_port(&used_ports).ok_or_else(|| {
                                ApiError::internal("failed to allocate a nodePort: range is full")
                            })?;
                            used_ports.insert(np);
                            np
                        }
                    };
                    p["nodePort"] = json!(node_port);
                }
            }
        }
    }
    Ok(())
}

async fn used_service_addresses(state: &AppState) -> ApiResult<(HashSet<String>, HashSet<i64>)> {
    let services = state
        .registry()
        .get("", "v1", "services")
        .expect("services are registered")
        .storage_prefix();
    let all = state
        .store()
        .range(RangeRequest {
            prefix: services,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for kv in all.kvs {
        let svc: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
            ips.insert(ip.to_owned());
        }
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                ports.insert(np);
            }
        }
    }
    Ok((ips, ports))
}

fn free_ip(used: &HashSet<String>) -> Option<String> {
    let mut rng = rand::rng();
    // Random probing, then a scan: the range is large and sparsely used.
    for _ in 0..64 {
        let offset = rng.random_range(2..SERVICE_RANGE_SIZE - 1);
        let ip = Ipv4Addr::from(SERVICE_RANGE_BASE + offset).to_string();
        if !used.contains(&ip) {
            return Some(ip);
        }
    }
    (2..SERVICE_RANGE_SIZE - 1)
        .map(|o| Ipv4Addr::from(SERVICE_RANGE_BASE + o).to_string())
        .find(|ip| !used.contains(ip))
}

fn free_node_port(used: &HashSet<i64>) -> Option<i64> {
    let mut rng = rand::rng();
    for _ in 0..64 {
        let p = rng.random_range(NODE_PORTS);
        if !used.contains(&p) {
            return Some(p);
        }
    }
    NODE_PORTS.clone().find(|p| !used.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_have_five_random_characters() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n.starts_with("web-"));
        assert!(n[4..].bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
    }

    #[test]
    fn pods_get_default_toleration_seconds_unless_they_choose() {
        let mut pod = json!({"spec": {"containers": []}});
        default_tolerations(&mut pod, 300, 200);
        let t = &pod["spec"]["tolerations"];
        assert_eq!(t[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[0]["tolerationSeconds"], 300);
        assert_eq!(t[1]["key"], "node.kubernetes.io/unreachable");
        assert_eq!(t[1]["tolerationSeconds"], 200);
        let mut own = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
        ]}});
        default_tolerations(&mut own, 300, 300);
        let t = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 5);
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_tolerations(&mut all, 300, 300);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn job_selector_uses_the_uid() {
        let mut job = json!({"metadata": {"name": "pi"}, "spec": {"template": {"spec": {}}}});
        job_selector(&mut job, "u-1");
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u-1"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
    }

    #[test]
    fn spec_change_detection_ignores_metadata_and_status() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {}});
        let b = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 1}, "status": {"x": 1}});
        assert!(!spec_changed(&a, &b));
        let c = json!({"spec": {"replicas": 2}});
        assert!(spec_changed(&a, &c));
    }
}
