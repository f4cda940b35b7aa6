//! Conversion between served versions and the storage version. Only HorizontalPodAutoscaler is
//! served in two versions (autoscaling/v2 stored, autoscaling/v1 converted), as upstream.
//!
//! v1 can only express a CPU utilization target; other v2 metrics are kept on the stored object
//! and invisible through v1 (upstream keeps them in annotations; we keep the stored v2 spec on
//! update from v1 by merging, see [`to_storage`]).

use serde_json::{Value, json};

/// Convert an object of `kind` from the served `version` to the storage version. `existing` is
/// the stored object on updates, so fields v1 cannot express survive.
pub fn to_storage(kind: &str, version: &str, object: Value, existing: Option<&Value>) -> Value {
    match (kind, version) {
        ("HorizontalPodAutoscaler", "v1") => hpa_v1_to_v2(object, existing),
        _ => object,
    }
}

/// Convert a stored object to the served `version`.
pub fn from_storage(kind: &str, version: &str, object: Value) -> Value {
    match (kind, version) {
        ("HorizontalPodAutoscaler", "v1") => hpa_v2_to_v1(object),
        _ => object,
    }
}

fn hpa_v1_to_v2(mut o: Value, existing: Option<&Value>) -> Value {
    o["apiVersion"] = json!("autoscaling/v2");
    let target = o.pointer("/spec/targetCPUUtilizationPercentage").cloned();
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("targetCPUUtilizationPercentage");
        let mut metrics: Vec<Value> = existing
            .and_then(|e| e.pointer("/spec/metrics"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        metrics.retain(|m| !is_cpu_utilization(m));
        if let Some(t) = target.filter(|t| !t.is_null()) {
            metrics.insert(
                0,
                json!({"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": t}}}),
            );
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), Value::Array(metrics));
        }
        if let Some(behavior) = existing.and_then(|e| e.pointer("/spec/behavior")) {
            spec.insert("behavior".into(), behavior.clone());
        }
    }
    let current = o
        .pointer("/status/currentCPUUtilizationPercentage")
        .cloned();
    if let Some(status) = o.get_mut("status").and_then(Value::as_object_mut) {
        status.remove("currentCPUUtilizationPercentage");
        if let Some(c) = current.filter(|c| !c.is_null()) {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": c}}}]),
            );
        }
    }
    o
}

fn hpa_v2_to_v1(mut o: Value) -> Value {
    o["apiVersion"] = json!("autoscaling/v1");
    let target = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .and_then(|ms| ms.iter().find(|m| is_cpu_utilization(m)))
        .and_then(|m| m.pointer("/resource/target/averageUtilization"))
        .cloned();
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(t) = target {
            spec.insert("targetCPUUtilizationPercentage".into(), t);
        }
    }
    let current = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter().find(|m| {
                m.pointer("/resource/name") == Some(&json!("cpu"))
                    && m.pointer("/resource/current/averageUtilization").is_some()
            })
        })
        .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        .cloned();
    if let Some(status) = o.get_mut("status").and_then(Value::as_object_mut) {
        status.remove("currentMetrics");
        status.remove("conditions");
        if let Some(c) = current {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    o
}

fn is_cpu_utilization(m: &Value) -> bool {
    m.get("type") == Some(&json!("Resource"))
        && m.pointer("/resource/name") == Some(&json!("cpu"))
        && m.pointer("/resource/target/type") == Some(&json!("Utilization"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trips_through_v1() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 10, "targetCPUUtilizationPercentage": 50}});
        let v2 = to_storage("HorizontalPodAutoscaler", "v1", v1.clone(), None);
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert_eq!(from_storage("HorizontalPodAutoscaler", "v1", v2), v1);
    }

    #[test]
    fn v1_update_keeps_v2_only_metrics() {
        let stored = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]}});
        let update = json!({"spec": {"targetCPUUtilizationPercentage": 70}});
        let v2 = to_storage("HorizontalPodAutoscaler", "v1", update, Some(&stored));
        let metrics = v2["spec"]["metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 70);
    }
}
