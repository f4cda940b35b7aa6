//! Rows of core and cluster kinds: nodes, namespaces, events, config, services, volumes,
//! leases and RBAC bindings.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{int_at, or_none, str_at};
use crate::time::age;

pub(super) fn cells(
    kind: &str,
    o: &Value,
    name: Value,
    created: Value,
    now: Timestamp,
) -> Option<Vec<Value>> {
    Some(match kind {
        "Node" => node(o, name, created),
        "Namespace" => vec![name, json!(str_at(o, "/status/phase")), created],
        "Event" => event(o, now),
        "ConfigMap" => {
            let n = count(o, "/data") + count(o, "/binaryData");
            vec![name, json!(n), created]
        }
        "Secret" => vec![
            name,
            json!(str_at(o, "/type")),
            json!(count(o, "/data")),
            created,
        ],
        "ServiceAccount" => vec![
            name,
            json!(
                o.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            created,
        ],
        "Service" => service(o, name, created),
        "Endpoints" => vec![name, json!(endpoints(o)), created],
        "PersistentVolume" => {
            let claim = match str_at(o, "/spec/claimRef/name") {
                "" => String::new(),
                n => format!("{}/{n}", str_at(o, "/spec/claimRef/namespace")),
            };
            vec![
                name,
                json!(str_at(o, "/spec/capacity/storage")),
                json!(access_modes(o.pointer("/spec/accessModes"))),
                json!(str_at(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(str_at(o, "/status/phase")),
                json!(claim),
                json!(str_at(o, "/spec/storageClassName")),
                json!(match str_at(o, "/spec/volumeAttributesClassName") {
                    "" => "<unset>",
                    v => v,
                }),
                json!(str_at(o, "/status/reason")),
                created,
                json!(str_at(o, "/spec/volumeMode")),
            ]
        }
        "PersistentVolumeClaim" => vec![
            name,
            json!(str_at(o, "/status/phase")),
            json!(str_at(o, "/spec/volumeName")),
            json!(str_at(o, "/status/capacity/storage")),
            json!(access_modes(o.pointer("/status/accessModes"))),
            json!(str_at(o, "/spec/storageClassName")),
            json!(match str_at(o, "/spec/volumeAttributesClassName") {
                "" => "<unset>",
                v => v,
            }),
            created,
            json!(str_at(o, "/spec/volumeMode")),
        ],
        "Lease" => vec![name, json!(str_at(o, "/spec/holderIdentity")), created],
        "APIService" => vec![
            name,
            json!(apiservice_backend(o)),
            json!(apiservice_available(o)),
            created,
        ],
        "CertificateSigningRequest" => vec![
            name,
            created,
            json!(str_at(o, "/spec/signerName")),
            json!(str_at(o, "/spec/username")),
            json!(
                o.pointer("/spec/expirationSeconds")
                    .and_then(Value::as_i64)
                    .map_or_else(|| "<none>".to_owned(), crate::time::human_duration)
            ),
            json!(csr_condition(o)),
        ],
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects: Vec<&Value> = o
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            let of_kind = |k: &str| -> String {
                subjects
                    .iter()
                    .filter(|s| str_at(s, "/kind") == k)
                    .map(|s| match (k, str_at(s, "/namespace")) {
                        ("ServiceAccount", ns) => format!("{ns}/{}", str_at(s, "/name")),
                        _ => str_at(s, "/name").to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    str_at(o, "/roleRef/kind"),
                    str_at(o, "/roleRef/name")
                )),
                created,
                json!(of_kind("User")),
                json!(of_kind("Group")),
                json!(of_kind("ServiceAccount")),
            ]
        }
        _ => return None,
    })
}

/// `Pending`/`Approved`/`Denied`, then `,Failed` and `,Issued` as they apply (upstream's order).
fn csr_condition(o: &Value) -> String {
    let has = |ty: &str| {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|c| str_at(c, "/type") == ty))
    };
    let mut status = if has("Denied") {
        "Denied".to_owned()
    } else if has("Approved") {
        "Approved".to_owned()
    } else {
        "Pending".to_owned()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(o, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn count(o: &Value, pointer: &str) -> usize {
    o.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

fn node(o: &Value, name: Value, created: Value) -> Vec<Value> {
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
    let ready = conditions
        .into_iter()
        .flatten()
        .find(|c| str_at(c, "/type") == "Ready")
        .map(|c| str_at(c, "/status"));
    let mut status = match ready {
        Some("True") => "Ready".to_owned(),
        Some("False") => "NotReady".to_owned(),
        _ => "Unknown".to_owned(),
    };
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                Some(role.to_owned())
            } else if k == "kubernetes.io/role" {
                v.as_str().map(str::to_owned)
            } else {
                None
            }
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    let address = |ty: &str| -> String {
        o.pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|a| str_at(a, "/type") == ty)
            .map(|a| str_at(a, "/address").to_owned())
            .unwrap_or_default()
    };
    vec![
        name,
        json!(status),
        json!(or_none(roles.join(","))),
        created,
        json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(address("InternalIP"))),
        json!(or_none(address("ExternalIP"))),
        json!(str_at(o, "/status/nodeInfo/osImage")),
        json!(str_at(o, "/status/nodeInfo/kernelVersion")),
        json!(str_at(o, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

fn event(o: &Value, now: Timestamp) -> Vec<Value> {
    let last = [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| {
        o.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    });
    let first = [
        "/firstTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| {
        o.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    });
    let object = format!(
        "{}/{}",
        str_at(o, "/involvedObject/kind").to_lowercase(),
        str_at(o, "/involvedObject/name")
    );
    let source = match (str_at(o, "/source/component"), str_at(o, "/source/host")) {
        ("", _) => str_at(o, "/reportingComponent").to_owned(),
        (c, "") => c.to_owned(),
        (c, h) => format!("{c}, {h}"),
    };
    vec![
        json!(age(last, now)),
        json!(str_at(o, "/type")),
        json!(str_at(o, "/reason")),
        json!(object),
        json!(str_at(o, "/message").trim()),
        json!(str_at(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(age(first, now)),
        json!(int_at(o, "/count").max(1)),
        json!(str_at(o, "/metadata/name")),
    ]
}

fn service(o: &Value, name: Value, created: Value) -> Vec<Value> {
    let ty = str_at(o, "/spec/type");
    let mut external: Vec<String> = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if ty == "LoadBalancer" {
        external.extend(
            o.pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| match str_at(i, "/ip") {
                    "" => str_at(i, "/hostname").to_owned(),
                    ip => ip.to_owned(),
                }),
        );
    }
    let external = match (ty, external.is_empty()) {
        ("ExternalName", _) => str_at(o, "/spec/externalName").to_owned(),
        ("LoadBalancer", true) => "<pending>".to_owned(),
        (_, true) => "<none>".to_owned(),
        (_, false) => external.join(","),
    };
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = str_at(p, "/protocol");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) if np != 0 => format!("{}:{np}/{proto}", int_at(p, "/port")),
                _ => format!("{}/{proto}", int_at(p, "/port")),
            }
        })
        .collect();
    let selector = o
        .pointer("/spec/selector")
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
        json!(ty),
        json!(or_none(str_at(o, "/spec/clusterIP"))),
        json!(external),
        json!(or_none(ports.join(","))),
        created,
        json!(or_none(selector)),
    ]
}

fn endpoints(o: &Value) -> String {
    let mut list = Vec::new();
    for subset in o
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| int_at(p, "/port"))
            .collect();
        for a in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = str_at(a, "/ip");
            if ports.is_empty() {
                list.push(ip.to_owned());
            }
            for p in &ports {
                list.push(format!("{ip}:{p}"));
            }
        }
    }
    match list.len() {
        0 => "<none>".into(),
        n if n > 3 => format!("{} + {} more...", list[..3].join(","), n - 3),
        _ => list.join(","),
    }
}

fn access_modes(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| match m.as_str()? {
            "ReadWriteOnce" => Some("RWO"),
            "ReadOnlyMany" => Some("ROX"),
            "ReadWriteMany" => Some("RWX"),
            "ReadWriteOncePod" => Some("RWOP"),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `kube-system/metrics-server`, or `Local` for a group the API server serves itself.
fn apiservice_backend(o: &Value) -> String {
    match (
        str_at(o, "/spec/service/namespace"),
        str_at(o, "/spec/service/name"),
    ) {
        ("", _) | (_, "") => "Local".into(),
        (ns, name) => format!("{ns}/{name}"),
    }
}

/// kubectl's AVAILABLE column: `True`, or `False (Reason)`, or `Unknown`.
fn apiservice_available(o: &Value) -> String {
    let available = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Available"));
    match available {
        Some(c) if c["status"] == "True" => "True".into(),
        Some(c) => format!(
            "{} ({})",
            c["status"].as_str().unwrap_or("Unknown"),
            c["reason"].as_str().unwrap_or("")
        ),
        None => "Unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_status_with_cordon_and_roles() {
        let n = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let c = node(&n, json!("n1"), json!("1m"));
        assert_eq!(c[1], "Ready,SchedulingDisabled");
        assert_eq!(c[2], "control-plane");
        assert_eq!(c[4], "v1.33.0");
    }

    #[test]
    fn service_ports() {
        let s = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let c = service(&s, json!("web"), json!("1m"));
        assert_eq!(c[3], "<none>");
        assert_eq!(c[4], "80:30080/TCP");
        assert_eq!(c[6], "app=web");
    }
}
