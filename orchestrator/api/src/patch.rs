//! The three PATCH formats of the Kubernetes API: JSON patch (RFC 6902) and JSON merge patch
//! (RFC 7386) through the `json-patch` crate, and strategic merge patch written here because no
//! library implements it.
//!
//! Strategic merge patch merges lists by a key instead of replacing them, and understands the
//! directives kubectl sends: `$patch` (`replace`, `delete`, `merge`), `$retainKeys`,
//! `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`, and `null` to delete. The
//! merge keys are upstream's `patchMergeKey` tags for the built-in types, keyed by the field's
//! path, kept in [`list_strategy`].

use serde_json::{Map, Value};

/// A patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// Apply an RFC 6902 JSON patch.
pub fn apply_json_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_slice(patch)
        .map_err(|e| PatchError(format!("error decoding patch: {e}")))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| PatchError(e.to_string()))?;
    Ok(doc)
}

/// Apply an RFC 7386 JSON merge patch.
pub fn apply_merge_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| PatchError(format!("error decoding patch: {e}")))?;
    if !patch.is_object() {
        return Err(PatchError("merge patch must be a JSON object".into()));
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

/// Apply a strategic merge patch given as bytes.
pub fn apply_strategic_merge_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| PatchError(format!("error decoding patch: {e}")))?;
    strategic_merge(original, &patch)
}

/// Apply a strategic merge patch to a JSON object.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Some(patch) = patch.as_object() else {
        return Err(PatchError(
            "strategic merge patch must be a JSON object".into(),
        ));
    };
    let original = original.as_object().cloned().unwrap_or_default();
    match merge_map(original, patch, &mut Vec::new())? {
        Some(m) => Ok(Value::Object(m)),
        None => Ok(Value::Object(Map::new())),
    }
}

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// Replace the whole list (the default, "atomic").
    Replace,
    /// Merge elements that are maps, matching by this key.
    MergeByKey(&'static str),
    /// Union of scalar values.
    MergePrimitive,
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The merge strategy of the list at `path` (field names from the object root, list indices
/// omitted), following upstream's `patchStrategy`/`patchMergeKey` tags.
fn list_strategy(path: &[String]) -> ListStrategy {
    use ListStrategy::*;
    let Some(field) = path.last().map(String::as_str) else {
        return Replace;
    };
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
    match field {
        f if CONTAINER_LISTS.contains(&f) => MergeByKey("name"),
        "ports" if parent.is_some_and(|p| CONTAINER_LISTS.contains(&p)) => {
            MergeByKey("containerPort")
        }
        "ports" if path.len() == 2 && parent == Some("spec") => MergeByKey("port"),
        "env" | "volumes" | "imagePullSecrets" | "schedulingGates" => MergeByKey("name"),
        "resourceClaims" if parent == Some("spec") => MergeByKey("name"),
        "volumeMounts" => MergeByKey("mountPath"),
        "volumeDevices" => MergeByKey("devicePath"),
        "hostAliases" => MergeByKey("ip"),
        "topologySpreadConstraints" => MergeByKey("topologyKey"),
        "conditions" => MergeByKey("type"),
        "podIPs" | "hostIPs" => MergeByKey("ip"),
        "addresses" if parent == Some("status") => MergeByKey("type"),
        "ownerReferences" if parent == Some("metadata") => MergeByKey("uid"),
        "finalizers" if parent == Some("metadata") => MergePrimitive,
        "podCIDRs" => MergePrimitive,
        "secrets" if path.len() == 1 => MergeByKey("name"),
        _ => Replace,
    }
}

/// The merge key of the keyed list at `path`, if the list merges by key.
pub fn list_merge_key(path: &[String]) -> Option<&'static str> {
    match list_strategy(path) {
        ListStrategy::MergeByKey(k) => Some(k),
        _ => None,
    }
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Merge `patch` into `original`. `None` means the map itself is deleted (`$patch: delete`).
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            return Ok(Some(strip_directives(replaced)));
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError(format!("unknown patch type: {other}")));
        }
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with(SET_ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVE) {
            let remove = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|v| !remove.contains(v));
            }
            continue;
        }
        path.push(key.clone());
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(patch_map) => {
                let current = match original.remove(key) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if let Some(merged) = merge_map(current, patch_map, path)? {
                    original.insert(key.clone(), Value::Object(merged));
                }
            }
            Value::Array(patch_items) => {
                let current = match original.remove(key) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                let order = patch
                    .get(&format!("{SET_ORDER}{key}"))
                    .and_then(Value::as_array);
                let merged = merge_list(current, patch_items, order, path)?;
                original.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    // `$setElementOrder` may name a list the patch itself does not touch: reorder it anyway.
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ORDER)
            && !patch.contains_key(field)
            && let (Some(Value::Array(items)), Some(order)) =
                (original.get_mut(field), order.as_array())
        {
            path.push(field.to_owned());
            let strategy = list_strategy(path);
            path.pop();
            let items_taken = std::mem::take(items);
            *items = apply_order(items_taken, order, strategy);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(original))
}

fn merge_list(
    mut current: Vec<Value>,
    patch: &[Value],
    order: Option<&Vec<Value>>,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    let strategy = list_strategy(path);
    // A `{"$patch": "replace"}` element replaces the whole list with the other elements.
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .map(strip_value_directives)
            .collect());
    }
    let merged = match strategy {
        ListStrategy::Replace => patch.iter().cloned().map(strip_value_directives).collect(),
        ListStrategy::MergePrimitive => {
            for v in patch {
                if !current.contains(v) {
                    current.push(v.clone());
                }
            }
            current
        }
        ListStrategy::MergeByKey(merge_key) => {
            for item in patch {
                let Some(item_map) = item.as_object() else {
                    return Err(PatchError(format!(
                        "strategic merge patch: element of list {} must be an object",
                        path.join(".")
                    )));
                };
                let Some(key_value) = item_map.get(merge_key) else {
                    return Err(PatchError(format!(
                        "map: {item} does not contain declared merge key: {merge_key}"
                    )));
                };
                let position = current
                    .iter()
                    .position(|c| c.get(merge_key) == Some(key_value));
                if item_map.get("$patch").and_then(Value::as_str) == Some("delete") {
                    current.retain(|c| c.get(merge_key) != Some(key_value));
                    continue;
                }
                match position {
                    Some(i) => {
                        let existing = match std::mem::take(&mut current[i]) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        match merge_map(existing, item_map, path)? {
                            Some(m) => current[i] = Value::Object(m),
                            None => {
                                current.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(Map::new(), item_map, path)? {
                            current.push(Value::Object(m));
                        }
                    }
                }
            }
            current
        }
    };
    Ok(match order {
        Some(order) => apply_order(merged, order, strategy),
        None => merged,
    })
}

/// Reorder a list as `$setElementOrder` says: listed elements first in that order, then the
/// rest in their current order.
fn apply_order(items: Vec<Value>, order: &[Value], strategy: ListStrategy) -> Vec<Value> {
    let key_of = |v: &Value| -> Value {
        match strategy {
            ListStrategy::MergeByKey(k) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(key_of).collect();
    let mut items: Vec<Option<Value>> = items.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(items.len());
    for w in &wanted {
        if let Some(slot) = items
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|v| key_of(v) == *w))
        {
            out.push(slot.take().expect("found slot is full"));
        }
    }
    out.extend(items.into_iter().flatten());
    out
}

fn strip_directives(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|k, _| !k.starts_with('$'));
    for v in map.values_mut() {
        *v = strip_value_directives(std::mem::take(v));
    }
    map
}

fn strip_value_directives(value: Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(strip_value_directives).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(original: Value, patch: Value, expected: Value) {
        assert_eq!(strategic_merge(&original, &patch).unwrap(), expected);
    }

    #[test]
    fn containers_merge_by_name_and_keep_order() {
        check(
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "busybox"}]}}}}),
            json!({"spec": {"replicas": 3, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"image": "nginx:1.26", "name": "web"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "busybox"}]}}, "replicas": 3}}),
        );
    }

    #[test]
    fn null_deletes_fields_inside_keyed_elements() {
        check(
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [
                {"name": "web", "ports": [{"containerPort": 80}]}]}}),
            json!({"metadata": {"labels": null}, "spec": {"containers": [
                {"name": "web", "ports": null}]}}),
            json!({"metadata": {}, "spec": {"containers": [{"name": "web"}]}}),
        );
    }

    #[test]
    fn retain_keys_clears_other_strategy_fields() {
        check(
            json!({"spec": {"strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%"}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
    }

    #[test]
    fn patch_directives_delete_and_replace() {
        check(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            json!({"spec": {"containers": [{"name": "b"}]}}),
        );
        check(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
            json!({"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}}),
            json!({"spec": {"containers": [{"name": "c"}]}}),
        );
        check(
            json!({"data": {"a": "1", "b": "2"}}),
            json!({"data": {"$patch": "replace", "c": "3"}}),
            json!({"data": {"c": "3"}}),
        );
    }

    #[test]
    fn primitive_lists_and_atomic_lists() {
        check(
            json!({"metadata": {"finalizers": ["a"]}, "spec": {"taints": [{"key": "x"}]}}),
            json!({"metadata": {"finalizers": ["b", "a"],
                "$deleteFromPrimitiveList/finalizers": ["a"]},
                "spec": {"taints": [{"key": "y"}]}}),
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"taints": [{"key": "y"}]}}),
        );
        check(
            json!({"spec": {"containers": [{"name": "c", "args": ["a", "b"]}]}}),
            json!({"spec": {"containers": [{"name": "c", "args": ["z"]}]}}),
            json!({"spec": {"containers": [{"name": "c", "args": ["z"]}]}}),
        );
    }

    #[test]
    fn env_ports_and_conditions_use_their_keys() {
        check(
            json!({"spec": {"containers": [{"name": "c",
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
                "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            json!({"spec": {"containers": [{"name": "c",
                "env": [{"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "name": "http"}]}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            json!({"spec": {"containers": [{"name": "c",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        // Service ports merge by `port`.
        check(
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
            json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443}]}}),
        );
    }

    #[test]
    fn bad_patches_are_errors() {
        assert!(strategic_merge(&json!({}), &json!([1])).is_err());
        assert!(
            strategic_merge(
                &json!({}),
                &json!({"spec": {"containers": [{"image": "x"}]}})
            )
            .is_err()
        );
        assert!(
            apply_json_patch(&json!({}), br#"[{"op":"replace","path":"/a","value":1}]"#).is_err()
        );
        assert_eq!(
            apply_json_patch(
                &json!({"a": 1}),
                br#"[{"op":"replace","path":"/a","value":2}]"#
            )
            .unwrap(),
            json!({"a": 2})
        );
        assert_eq!(
            apply_merge_patch(&json!({"a": 1, "b": 2}), br#"{"a":null}"#).unwrap(),
            json!({"b": 2})
        );
    }
}
