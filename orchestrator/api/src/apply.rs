//! Server-side apply, simplified: the applied configuration is merged into the live object with
//! strategic-merge semantics (keyed lists merge by key), each manager's applied fields are
//! recorded in `metadata.managedFields` in the FieldsV1 format, and fields a manager applied
//! before but left out of its new configuration are removed.
//!
//! Not implemented: conflict detection between managers (applies always win, as with
//! `--force-conflicts`), and shared ownership (a field dropped by one manager is removed even if
//! another manager also set it). Primitive set lists (finalizers) are owned as a whole.

use serde_json::{Map, Value, json};

use crate::patch::{PatchError, list_merge_key, strategic_merge};
use crate::time::now_rfc3339;

/// Fields never recorded as owned.
const SYSTEM_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The FieldsV1 set of an applied configuration.
pub fn field_set(config: &Value) -> Value {
    let mut path = Vec::new();
    let mut set = Map::new();
    if let Some(obj) = config.as_object() {
        for (k, v) in obj {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            if k == "metadata" {
                let mut meta = Map::new();
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    if !SYSTEM_FIELDS.contains(&mk.as_str()) {
                        path.push("metadata".to_owned());
                        path.push(mk.clone());
                        meta.insert(format!("f:{mk}"), fields_of(mv, &mut path));
                        path.truncate(0);
                    }
                }
                if !meta.is_empty() {
                    set.insert("f:metadata".into(), Value::Object(meta));
                }
                continue;
            }
            path.push(k.clone());
            set.insert(format!("f:{k}"), fields_of(v, &mut path));
            path.pop();
        }
    }
    Value::Object(set)
}

fn fields_of(value: &Value, path: &mut Vec<String>) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            out.insert(".".into(), json!({}));
            for (k, v) in map {
                path.push(k.clone());
                out.insert(format!("f:{k}"), fields_of(v, path));
                path.pop();
            }
            Value::Object(out)
        }
        Value::Array(items) => match list_merge_key(path) {
            Some(key) => {
                let mut out = Map::new();
                for item in items {
                    if let Some(k) = item.get(key) {
                        let entry = json!({ key: k }).to_string();
                        out.insert(format!("k:{entry}"), fields_of(item, path));
                    }
                }
                Value::Object(out)
            }
            None => json!({}),
        },
        _ => json!({}),
    }
}

/// Merge `config` into `live` and drop what `manager` applied before but not now.
pub fn apply_configuration(
    live: &Value,
    config: &Value,
    manager: &str,
) -> Result<Value, PatchError> {
    let mut clean = config.clone();
    if let Some(meta) = clean.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    let mut merged = strategic_merge(live, &clean)?;
    if let Some(previous) = previous_fields(live, manager) {
        let current = field_set(config);
        remove_dropped(&mut merged, &previous, &current);
    }
    Ok(merged)
}

fn previous_fields(live: &Value, manager: &str) -> Option<Value> {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| {
            e.get("manager") == Some(&json!(manager)) && e.get("operation") == Some(&json!("Apply"))
        })
        .and_then(|e| e.get("fieldsV1"))
        .cloned()
}

fn remove_dropped(obj: &mut Value, previous: &Value, current: &Value) {
    let Some(previous) = previous.as_object() else {
        return;
    };
    let empty = Map::new();
    let current = current.as_object().unwrap_or(&empty);
    for (k, prev_sub) in previous {
        if k == "." {
            continue;
        }
        let now_sub = current.get(k);
        if let Some(field) = k.strip_prefix("f:") {
            match now_sub {
                None => {
                    if let Some(map) = obj.as_object_mut() {
                        map.remove(field);
                    }
                }
                Some(now_sub) => {
                    if let Some(child) = obj.get_mut(field) {
                        remove_dropped(child, prev_sub, now_sub);
                    }
                }
            }
        } else if let Some(key_json) = k.strip_prefix("k:") {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key_json) else {
                continue;
            };
            let Some(items) = obj.as_array_mut() else {
                continue;
            };
            let matches = |item: &Value| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv));
            match now_sub {
                None => items.retain(|item| !matches(item)),
                Some(now_sub) => {
                    if let Some(item) = items.iter_mut().find(|i| matches(i)) {
                        remove_dropped(item, prev_sub, now_sub);
                    }
                }
            }
        }
    }
}

/// Record `manager`'s applied field set in `metadata.managedFields`.
pub fn record_manager(obj: &mut Value, manager: &str, config: &Value, api_version: &str) {
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": field_set(config),
    });
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    let list = meta.entry("managedFields").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("just made an array");
    list.retain(|e| {
        !(e.get("manager") == Some(&json!(manager)) && e.get("operation") == Some(&json!("Apply")))
    });
    list.push(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(containers: Value, replicas: Option<i64>) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": containers}}}});
        if let Some(r) = replicas {
            d["spec"]["replicas"] = json!(r);
        }
        d
    }

    #[test]
    fn field_sets_use_keys_for_merge_lists() {
        let set = field_set(&deployment(
            json!([{"name": "web", "image": "nginx"}]),
            Some(2),
        ));
        assert!(set.pointer("/f:spec/f:replicas").is_some());
        let containers = set
            .pointer("/f:spec/f:template/f:spec/f:containers")
            .unwrap();
        assert!(
            containers
                .get(r#"k:{"name":"web"}"#)
                .unwrap()
                .get("f:image")
                .is_some()
        );
        assert!(set.get("f:apiVersion").is_none());
    }

    #[test]
    fn reapplying_without_a_field_removes_it() {
        let first = deployment(
            json!([{"name": "web", "image": "nginx"}, {"name": "side", "image": "b"}]),
            Some(2),
        );
        let mut live = apply_configuration(&json!({}), &first, "kubectl").unwrap();
        record_manager(&mut live, "kubectl", &first, "apps/v1");
        // Someone else scales it; then kubectl re-applies without replicas and without `side`.
        live["spec"]["paused"] = json!(true);
        let second = deployment(json!([{"name": "web", "image": "nginx:2"}]), None);
        let merged = apply_configuration(&live, &second, "kubectl").unwrap();
        assert!(merged.pointer("/spec/replicas").is_none());
        assert_eq!(
            merged.pointer("/spec/paused"),
            Some(&json!(true)),
            "other owners' fields stay"
        );
        let containers = merged
            .pointer("/spec/template/spec/containers")
            .unwrap()
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["image"], "nginx:2");
    }
}
