//! The patch `kubectl apply` sends: a three-way strategic merge patch from the last-applied
//! configuration (`original`), the new manifest (`modified`) and the live object (`current`).
//! Fields the manifest sets and the live object lacks or differs on are set; fields the last
//! apply set and the new manifest drops are deleted (`null`, or `$patch: delete` for keyed list
//! elements); fields others set are left alone.

use serde_json::{Map, Value, json};

use crate::patch::list_merge_key;

/// The annotation holding the last applied configuration.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Compute the patch; an empty object means nothing to do.
pub fn three_way_patch(original: Option<&Value>, modified: &Value, current: &Value) -> Value {
    let empty = Map::new();
    let mut path = Vec::new();
    Value::Object(diff_maps(
        original.and_then(Value::as_object),
        modified.as_object().unwrap_or(&empty),
        current.as_object().unwrap_or(&empty),
        &mut path,
    ))
}

fn diff_maps(
    original: Option<&Map<String, Value>>,
    modified: &Map<String, Value>,
    current: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for (key, m) in modified {
        path.push(key.clone());
        let o = original.and_then(|o| o.get(key));
        match (m, current.get(key)) {
            (_, Some(c)) if c == m => {}
            (Value::Object(mm), Some(Value::Object(cm))) => {
                let sub = diff_maps(o.and_then(Value::as_object), mm, cm, path);
                if !sub.is_empty() {
                    patch.insert(key.clone(), Value::Object(sub));
                }
            }
            (Value::Array(ml), Some(Value::Array(cl))) => match list_merge_key(path) {
                Some(merge_key) => {
                    let ol = o.and_then(Value::as_array);
                    if let Some(list_patch) = diff_keyed_list(ol, ml, cl, merge_key, path) {
                        let order: Vec<Value> = ml
                            .iter()
                            .filter_map(|e| e.get(merge_key).map(|k| json!({ merge_key: k })))
                            .collect();
                        patch.insert(format!("$setElementOrder/{key}"), Value::Array(order));
                        patch.insert(key.clone(), Value::Array(list_patch));
                    }
                }
                None => {
                    patch.insert(key.clone(), m.clone());
                }
            },
            _ => {
                patch.insert(key.clone(), m.clone());
            }
        }
        path.pop();
    }
    if let Some(original) = original {
        for key in original.keys() {
            if !modified.contains_key(key) && current.contains_key(key) {
                patch.insert(key.clone(), Value::Null);
            }
        }
    }
    patch
}

fn diff_keyed_list(
    original: Option<&Vec<Value>>,
    modified: &[Value],
    current: &[Value],
    merge_key: &str,
    path: &mut Vec<String>,
) -> Option<Vec<Value>> {
    let find =
        |list: &[Value], k: &Value| list.iter().find(|e| e.get(merge_key) == Some(k)).cloned();
    let mut out = Vec::new();
    for m in modified {
        let Some(k) = m.get(merge_key) else {
            // Elements without their key cannot be merged: replace the list.
            return Some(modified.to_vec());
        };
        match find(current, k) {
            None => out.push(m.clone()),
            Some(c) => {
                let o = original.and_then(|ol| find(ol, k));
                let empty = Map::new();
                let sub = diff_maps(
                    o.as_ref().and_then(Value::as_object),
                    m.as_object().unwrap_or(&empty),
                    c.as_object().unwrap_or(&empty),
                    path,
                );
                if !sub.is_empty() {
                    let mut element = sub;
                    element.insert(merge_key.to_owned(), k.clone());
                    out.push(Value::Object(element));
                }
            }
        }
    }
    for o in original.into_iter().flatten() {
        if let Some(k) = o.get(merge_key)
            && find(modified, k).is_none()
            && find(current, k).is_some()
        {
            out.push(json!({ merge_key: k, "$patch": "delete" }));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The manifest with its own last-applied annotation set, as kubectl records it (compact JSON of
/// the manifest without that annotation, plus a newline).
pub fn with_last_applied(manifest: &Value) -> Value {
    let mut recorded = manifest.clone();
    if let Some(meta) = recorded.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.remove(LAST_APPLIED);
        }
    }
    let text = format!("{}\n", serde_json::to_string(&recorded).unwrap_or_default());
    let mut out = recorded;
    out["metadata"]["annotations"][LAST_APPLIED] = json!(text);
    out
}

/// The last-applied configuration recorded on a live object.
pub fn last_applied(current: &Value) -> Option<Value> {
    current
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::strategic_merge;

    fn deploy(image: &str, replicas: Option<i64>, labels: Option<Value>) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}}}});
        if let Some(r) = replicas {
            d["spec"]["replicas"] = json!(r);
        }
        if let Some(l) = labels {
            d["metadata"]["labels"] = l;
        }
        d
    }

    #[test]
    fn unchanged_manifest_gives_an_empty_patch() {
        let m = with_last_applied(&deploy("nginx:1.25", Some(2), None));
        let mut live = m.clone();
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
            json!("IfNotPresent");
        live["status"] = json!({"replicas": 2});
        let original = last_applied(&live);
        assert_eq!(three_way_patch(original.as_ref(), &m, &live), json!({}));
    }

    #[test]
    fn changes_merge_by_key_and_drops_become_deletes() {
        let first = with_last_applied(&deploy("nginx:1.25", Some(2), Some(json!({"app": "web"}))));
        let mut live = first.clone();
        live["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": "1"}});
        live["spec"]["paused"] = json!(true);
        let second = with_last_applied(&deploy("nginx:1.26", None, None));
        let patch = three_way_patch(last_applied(&live).as_ref(), &second, &live);
        assert_eq!(patch["spec"]["replicas"], Value::Null);
        assert_eq!(patch["metadata"]["labels"], Value::Null);
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:1.26"}])
        );
        assert_eq!(
            patch["spec"]["template"]["spec"]["$setElementOrder/containers"],
            json!([{"name": "web"}])
        );
        let applied = strategic_merge(&live, &patch).unwrap();
        assert_eq!(
            applied["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1",
            "others' fields stay"
        );
        assert_eq!(applied["spec"]["paused"], true);
        assert!(applied["spec"].get("replicas").is_none());
    }

    #[test]
    fn removed_containers_are_deleted_by_key() {
        let two = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let one = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let patch = three_way_patch(Some(&two), &one, &two);
        assert_eq!(
            patch["spec"]["containers"],
            json!([{"name": "b", "$patch": "delete"}])
        );
        assert_eq!(strategic_merge(&two, &patch).unwrap(), one);
    }
}
