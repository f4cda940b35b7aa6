//! Workload checks: Deployments, ReplicaSets, DaemonSets, StatefulSets, Jobs, CronJobs, HPAs.

use serde_json::{Value, json};

use super::FieldError;
use super::pod::validate_pod_template;
use crate::intstr::{is_percent, scaled_value};
use crate::selector::label::{LabelSelector, labels_of};

pub(super) fn validate_workload(kind: &str, object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    if kind != "DaemonSet" {
        non_negative(spec, "replicas", "spec.replicas", &mut errs);
    }
    non_negative(spec, "minReadySeconds", "spec.minReadySeconds", &mut errs);
    non_negative(
        spec,
        "revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        &mut errs,
    );
    validate_selector_and_template(kind, spec, "spec", &["Always"], &mut errs);
    match kind {
        "Deployment" => validate_deployment_strategy(spec, &mut errs),
        "StatefulSet" => {
            if let Some(p) = spec.get("podManagementPolicy").and_then(Value::as_str)
                && !["OrderedReady", "Parallel"].contains(&p)
            {
                errs.push(FieldError::not_supported(
                    "spec.podManagementPolicy",
                    json!(p),
                    &["OrderedReady", "Parallel"],
                ));
            }
        }
        _ => {}
    }
    errs
}

fn non_negative(spec: &Value, key: &str, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = spec.get(key).and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            path,
            json!(n),
            "must be greater than or equal to 0",
        ));
    }
}

/// `selector` must exist, parse, be non-empty and match the template's labels.
fn validate_selector_and_template(
    kind: &str,
    spec: &Value,
    path: &str,
    restart_policies: &[&str],
    errs: &mut Vec<FieldError>,
) {
    let template = spec.get("template").unwrap_or(&Value::Null);
    match spec.get("selector") {
        None | Some(Value::Null) => {
            errs.push(FieldError::required(format!("{path}.selector"), ""));
        }
        Some(sel) => match LabelSelector::from_structured(sel) {
            Err(e) => errs.push(FieldError::invalid(
                format!("{path}.selector"),
                sel.clone(),
                e.0,
            )),
            Ok(s) if s.is_empty() => errs.push(FieldError::invalid(
                format!("{path}.selector"),
                sel.clone(),
                format!("empty selector is invalid for {}", kind.to_lowercase()),
            )),
            Ok(s) => {
                if !s.matches(&labels_of(template)) {
                    errs.push(FieldError::invalid(
                        format!("{path}.template.metadata.labels"),
                        template
                            .pointer("/metadata/labels")
                            .cloned()
                            .unwrap_or(json!({})),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    errs.extend(validate_pod_template(template, &format!("{path}.template")));
    if let Some(p) = template
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        && !restart_policies.contains(&p)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.template.spec.restartPolicy"),
            json!(p),
            restart_policies,
        ));
    }
}

fn validate_deployment_strategy(spec: &Value, errs: &mut Vec<FieldError>) {
    let Some(strategy) = spec.get("strategy") else {
        return;
    };
    let ty = strategy
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if !["Recreate", "RollingUpdate"].contains(&ty) {
        errs.push(FieldError::not_supported(
            "spec.strategy.type",
            json!(ty),
            &["Recreate", "RollingUpdate"],
        ));
        return;
    }
    let ru = strategy.get("rollingUpdate");
    if ty == "Recreate" {
        if ru.is_some_and(|r| !r.is_null()) {
            errs.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        return;
    }
    let Some(ru) = ru else {
        return;
    };
    let read = |key: &str, errs: &mut Vec<FieldError>| -> Option<i64> {
        let v = ru.get(key)?;
        let path = format!("spec.strategy.rollingUpdate.{key}");
        match scaled_value(v, 100, true) {
            Err(e) => {
                errs.push(FieldError::invalid(path, v.clone(), e.to_string()));
                None
            }
            Ok(n) if n < 0 => {
                errs.push(FieldError::invalid(
                    path,
                    v.clone(),
                    "must be greater than or equal to 0",
                ));
                None
            }
            Ok(n) => {
                if key == "maxUnavailable" && is_percent(v) && n > 100 {
                    errs.push(FieldError::invalid(
                        path,
                        v.clone(),
                        "must not be greater than 100%",
                    ));
                }
                Some(n)
            }
        }
    };
    let surge = read("maxSurge", errs);
    let unavailable = read("maxUnavailable", errs);
    if surge == Some(0) && unavailable == Some(0) {
        errs.push(FieldError::invalid(
            "spec.strategy.rollingUpdate.maxUnavailable",
            ru.get("maxUnavailable").cloned().unwrap_or(json!(0)),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

pub(super) fn validate_selector_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (new.pointer("/spec/selector"), old.pointer("/spec/selector"));
    if n != o {
        return vec![FieldError::invalid(
            "spec.selector",
            n.cloned().unwrap_or(Value::Null),
            "field is immutable",
        )];
    }
    Vec::new()
}

pub(super) fn validate_job(object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    validate_job_spec(spec, "spec")
}

fn validate_job_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(spec, key, &format!("{path}.{key}"), &mut errs);
    }
    if let Some(mode) = spec.get("completionMode").and_then(Value::as_str) {
        if !["NonIndexed", "Indexed"].contains(&mode) {
            errs.push(FieldError::not_supported(
                format!("{path}.completionMode"),
                json!(mode),
                &["NonIndexed", "Indexed"],
            ));
        } else if mode == "Indexed" && spec.get("completions").is_none_or(Value::is_null) {
            errs.push(FieldError::required(
                format!("{path}.completions"),
                "when completion mode is Indexed",
            ));
        }
    }
    if spec.get("selector").is_some() {
        validate_selector_and_template("Job", spec, path, &["OnFailure", "Never"], &mut errs);
    } else {
        let template = spec.get("template").unwrap_or(&Value::Null);
        errs.extend(validate_pod_template(template, &format!("{path}.template")));
        let policy = template
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str);
        if let Some(p) = policy.filter(|p| !["OnFailure", "Never"].contains(p)) {
            errs.push(FieldError::not_supported(
                format!("{path}.template.spec.restartPolicy"),
                json!(p),
                &["OnFailure", "Never"],
            ));
        }
    }
    errs
}

pub(super) fn validate_job_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (new.pointer("/spec/template"), old.pointer("/spec/template"));
    let suspended = new.pointer("/spec/suspend") == Some(&json!(true));
    if n != o && !suspended {
        return vec![FieldError::invalid(
            "spec.template",
            n.cloned().unwrap_or(Value::Null),
            "field is immutable",
        )];
    }
    Vec::new()
}

pub(super) fn validate_cronjob(object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required("spec.schedule", "")),
        Some(s) => {
            if let Err(msg) = check_cron_schedule(s) {
                errs.push(FieldError::invalid("spec.schedule", json!(s), msg));
            }
        }
    }
    if let Some(p) = spec.get("concurrencyPolicy").and_then(Value::as_str)
        && !["Allow", "Forbid", "Replace"].contains(&p)
    {
        errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            json!(p),
            &["Allow", "Forbid", "Replace"],
        ));
    }
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(spec, key, &format!("spec.{key}"), &mut errs);
    }
    let job_spec = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
    errs.extend(validate_job_spec(job_spec, "spec.jobTemplate.spec"));
    errs
}

/// A standard five-field cron expression or one of the `@` shorthands.
fn check_cron_schedule(schedule: &str) -> Result<(), String> {
    let s = schedule.trim();
    let s = match s.strip_prefix("TZ=").or_else(|| s.strip_prefix("CRON_TZ=")) {
        Some(_) => {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        None => s,
    };
    if s.starts_with('@') {
        return match s {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight"
            | "@hourly" => Ok(()),
            _ if s.starts_with("@every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {s}")),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            fields.len()
        ));
    }
    let ok = |f: &str| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/' | '?'))
    };
    if let Some(bad) = fields.iter().find(|f| !ok(f)) {
        return Err(format!("failed to parse int from {bad}"));
    }
    Ok(())
}

pub(super) fn validate_hpa(object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    for key in ["kind", "name"] {
        if spec
            .pointer(&format!("/scaleTargetRef/{key}"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(
                format!("spec.scaleTargetRef.{key}"),
                "",
            ));
        }
    }
    let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    if min < 1 {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            json!(min),
            "must be greater than or equal to 1",
        ));
    }
    if max < min {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            json!(max),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(spec: Value) -> Value {
        json!({"spec": spec})
    }

    #[test]
    fn selector_must_match_template() {
        let d = deployment(
            json!({"replicas": -1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}}),
        );
        let errs: Vec<String> = validate_workload("Deployment", &d)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("spec.replicas: Invalid value: -1"));
        assert!(errs[1].contains("`selector` does not match template `labels`"));
    }

    #[test]
    fn surge_and_unavailable_cannot_both_be_zero() {
        let d = deployment(json!({"selector": {"matchLabels": {"a": "b"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}));
        let errs = validate_workload("Deployment", &d);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .contains("may not be 0 when `maxSurge` is 0")
        );
    }

    #[test]
    fn cron_schedules() {
        assert!(check_cron_schedule("*/5 * * * *").is_ok());
        assert!(check_cron_schedule("@hourly").is_ok());
        assert!(check_cron_schedule("* * *").is_err());
        assert!(check_cron_schedule("@sometimes").is_err());
    }

    #[test]
    fn jobs_refuse_restart_always() {
        let j = json!({"spec": {"template": {"spec": {"restartPolicy": "Always",
            "containers": [{"name": "c", "image": "x"}]}}}});
        assert_eq!(validate_job(&j).len(), 1);
    }
}
