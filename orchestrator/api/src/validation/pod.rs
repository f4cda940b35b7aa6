//! Pod and PodSpec checks (pods and every pod template).

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use super::FieldError;
use super::meta::validate_labels;
use super::names::is_dns1123_label;
use crate::quantity::Quantity;

static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$").unwrap());

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "configMap",
    "secret",
    "downwardAPI",
    "persistentVolumeClaim",
    "projected",
    "nfs",
    "csi",
    "ephemeral",
    "image",
];

pub(super) fn validate_pod(pod: &Value) -> Vec<FieldError> {
    validate_pod_spec(pod.get("spec").unwrap_or(&Value::Null), "spec")
}

/// A pod template (`spec.template`): labels and the pod spec.
pub(super) fn validate_pod_template(template: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = validate_labels(
        template.pointer("/metadata/labels"),
        &format!("{path}.metadata.labels"),
    );
    errs.extend(validate_pod_spec(
        template.get("spec").unwrap_or(&Value::Null),
        &format!("{path}.spec"),
    ));
    errs
}

pub(super) fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let volumes = validate_volumes(spec, path, &mut errs);
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = HashSet::new();
    for field in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cpath = format!("{path}.{field}[{i}]");
            validate_container(c, &cpath, &volumes, &mut names, &mut errs);
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !RESTART_POLICIES.contains(&policy)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            json!(policy),
            RESTART_POLICIES,
        ));
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str)
        && !DNS_POLICIES.contains(&policy)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.dnsPolicy"),
            json!(policy),
            DNS_POLICIES,
        ));
    }
    if let Some(secs) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && secs <= 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            json!(secs),
            "must be greater than or equal to 1",
        ));
    }
    errs
}

fn validate_volumes(spec: &Value, path: &str, errs: &mut Vec<FieldError>) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let vpath = format!("{path}.volumes[{i}]");
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required(format!("{vpath}.name"), ""));
        } else if let Err(msg) = is_dns1123_label(name) {
            errs.push(FieldError::invalid(
                format!("{vpath}.name"),
                json!(name),
                msg,
            ));
        } else if !names.insert(name.to_owned()) {
            errs.push(FieldError::duplicate(format!("{vpath}.name"), json!(name)));
        }
        let sources = VOLUME_SOURCES
            .iter()
            .filter(|s| v.get(**s).is_some())
            .count();
        if sources == 0 {
            errs.push(FieldError::required(vpath, "must specify a volume type"));
        } else if sources > 1 {
            errs.push(FieldError::forbidden(
                vpath,
                "may not specify more than 1 volume type",
            ));
        }
    }
    names
}

fn validate_container(
    c: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else if let Err(msg) = is_dns1123_label(name) {
        errs.push(FieldError::invalid(
            format!("{path}.name"),
            json!(name),
            msg,
        ));
    } else if !names.insert(name.to_owned()) {
        errs.push(FieldError::duplicate(format!("{path}.name"), json!(name)));
    }
    if c.get("image")
        .and_then(Value::as_str)
        .is_none_or(|i| i.trim().is_empty())
    {
        errs.push(FieldError::required(format!("{path}.image"), ""));
    }
    for (i, p) in c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ppath = format!("{path}.ports[{i}]");
        let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("{ppath}.containerPort"),
                json!(port),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = p.get("protocol").and_then(Value::as_str)
            && !PROTOCOLS.contains(&proto)
        {
            errs.push(FieldError::not_supported(
                format!("{ppath}.protocol"),
                json!(proto),
                PROTOCOLS,
            ));
        }
    }
    for (i, e) in c
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ename = e.get("name").and_then(Value::as_str).unwrap_or_default();
        if ename.is_empty() {
            errs.push(FieldError::required(format!("{path}.env[{i}].name"), ""));
        } else if !ENV_NAME.is_match(ename) {
            errs.push(FieldError::invalid(
                format!("{path}.env[{i}].name"),
                json!(ename),
                "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')",
            ));
        }
    }
    for (i, m) in c
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mname = m.get("name").and_then(Value::as_str).unwrap_or_default();
        if !volumes.contains(mname) {
            errs.push(FieldError::not_found(
                format!("{path}.volumeMounts[{i}].name"),
                json!(mname),
            ));
        }
        if m.get("mountPath")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(
                format!("{path}.volumeMounts[{i}].mountPath"),
                "",
            ));
        }
    }
    validate_resources(c.get("resources"), &format!("{path}.resources"), errs);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe) {
            let ppath = format!("{path}.{probe}");
            let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
                .iter()
                .filter(|h| p.get(**h).is_some())
                .count();
            if handlers == 0 {
                errs.push(FieldError::required(
                    ppath.clone(),
                    "must specify a handler type",
                ));
            } else if handlers > 1 {
                errs.push(FieldError::forbidden(
                    ppath.clone(),
                    "may not specify more than 1 handler type",
                ));
            }
            if probe != "readinessProbe"
                && let Some(n) = p.get("successThreshold").and_then(Value::as_i64)
                && n != 1
            {
                errs.push(FieldError::invalid(
                    format!("{ppath}.successThreshold"),
                    json!(n),
                    "must be 1",
                ));
            }
        }
    }
}

fn validate_resources(resources: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(resources) = resources else {
        return;
    };
    let mut parsed = |section: &str| -> Vec<(String, Quantity)> {
        let mut out = Vec::new();
        if let Some(map) = resources.get(section).and_then(Value::as_object) {
            for (name, q) in map {
                let text = q
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| q.to_string());
                match Quantity::parse(&text) {
                    Ok(v) if v.nanos() < 0 => errs.push(FieldError::invalid(
                        format!("{path}.{section}[{name}]"),
                        json!(text),
                        "must be greater than or equal to 0",
                    )),
                    Ok(v) => out.push((name.clone(), v)),
                    Err(e) => errs.push(FieldError::invalid(
                        format!("{path}.{section}[{name}]"),
                        json!(text),
                        e.to_string(),
                    )),
                }
            }
        }
        out
    };
    let requests = parsed("requests");
    let limits = parsed("limits");
    for (name, request) in &requests {
        if let Some((_, limit)) = limits.iter().find(|(n, _)| n == name)
            && request > limit
        {
            let shown = resources
                .pointer(&format!("/requests/{name}"))
                .cloned()
                .unwrap_or(Value::Null);
            let limit_text = resources
                .pointer(&format!("/limits/{name}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            errs.push(FieldError::invalid(
                format!("{path}.requests"),
                shown,
                format!("must be less than or equal to {name} limit of {limit_text}"),
            ));
        }
    }
}

/// Pod specs are immutable apart from images, activeDeadlineSeconds and added tolerations.
pub(super) fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let normalize = |pod: &Value| -> Value {
        let mut spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        for field in ["containers", "initContainers"] {
            if let Some(cs) = spec.get_mut(field).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        if let Some(s) = spec.as_object_mut() {
            s.remove("activeDeadlineSeconds");
            s.remove("tolerations");
            s.remove("terminationGracePeriodSeconds");
            // Binding sets the node once; the binding subresource guards it.
            s.remove("nodeName");
        }
        spec
    };
    let mut errs = Vec::new();
    if normalize(new) != normalize(old) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    let old_tolerations = old.pointer("/spec/tolerations").and_then(Value::as_array);
    let new_tolerations = new.pointer("/spec/tolerations").and_then(Value::as_array);
    if let Some(old_t) = old_tolerations {
        let kept = new_tolerations.is_some_and(|n| old_t.iter().all(|t| n.contains(t)));
        if !kept {
            errs.push(FieldError::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
        }
    }
    let old_node = old
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let new_node = new
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !old_node.is_empty() && old_node != new_node {
        errs.push(FieldError::forbidden(
            "spec.nodeName",
            "field is immutable once set",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn container_errors_are_located() {
        let spec = json!({"containers": [
            {"name": "Web", "image": "", "ports": [{"containerPort": 0}]},
            {"name": "ok", "image": "x", "env": [{"name": "1BAD"}],
             "volumeMounts": [{"name": "missing", "mountPath": "/m"}],
             "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1", "memory": "lots"}}}],
            "restartPolicy": "Sometimes"});
        let errs = fields(&validate_pod_spec(&spec, "spec"));
        let want = [
            "spec.containers[0].name: Invalid value: \"Web\"",
            "spec.containers[0].image: Required value",
            "spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.containers[1].env[0].name: Invalid value: \"1BAD\"",
            "spec.containers[1].volumeMounts[0].name: Not found: \"missing\"",
            "spec.containers[1].resources.limits[memory]: Invalid value: \"lots\": quantities must match",
            "spec.containers[1].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            "spec.restartPolicy: Unsupported value: \"Sometimes\"",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn pod_update_allows_only_images() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a"}]}});
        let image = json!({"spec": {"containers": [{"name": "c", "image": "b"}]}});
        assert!(validate_pod_update(&image, &old).is_empty());
        let cmd = json!({"spec": {"containers": [{"name": "c", "image": "a", "command": ["x"]}]}});
        assert_eq!(validate_pod_update(&cmd, &old).len(), 1);
    }

    #[test]
    fn probes_need_one_handler() {
        let spec = json!({"containers": [{"name": "c", "image": "x",
            "livenessProbe": {"periodSeconds": 1},
            "readinessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}}]});
        let errs = fields(&validate_pod_spec(&spec, "spec"));
        assert_eq!(errs.len(), 2, "{errs:?}");
    }
}
