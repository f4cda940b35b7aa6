//! A Deployment's status from its ReplicaSets, with the Available and Progressing conditions
//! worded as upstream, because `kubectl rollout status` and dashboards read them.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// progressDeadlineSeconds meaning "no deadline".
const NO_DEADLINE: i32 = i32::MAX;

/// How the reconciliation got here, for the Progressing condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// A rollout step (or nothing to do): Progressing follows progress and the deadline.
    Rollout,
    /// Paused, or only resized: Progressing records pause/resume only.
    Sync,
}

fn sum(rss: &[&ReplicaSet], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
    rss.iter().map(|r| f(r)).sum()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map(|s| s.replicas).unwrap_or(0),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Set a condition: one with the same status and reason is left alone; one with the same status
/// keeps its transition time (upstream's `SetDeploymentCondition`).
fn set(conditions: &mut Vec<DeploymentCondition>, mut new: DeploymentCondition) {
    if let Some(current) = conditions.iter().find(|c| c.type_ == new.type_) {
        if current.status == new.status && current.reason == new.reason {
            return;
        }
        if current.status == new.status {
            new.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(new);
}

fn find<'a>(conditions: &'a [DeploymentCondition], type_: &str) -> Option<&'a DeploymentCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether every desired replica runs the new template and is available, for this generation.
pub(crate) fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    s.updated_replicas.unwrap_or(0) == desired
        && s.replicas.unwrap_or(0) == desired
        && s.available_replicas.unwrap_or(0) == desired
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

fn progressed(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
        || new_old < old_old
}

fn deadline(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600)
}

/// The new status, and when to look again for a rollout that may time out.
pub(crate) fn compute(
    d: &Deployment,
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    max_unavailable: i32,
    phase: Phase,
    now: jiff::Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let old = d.status.clone().unwrap_or_default();
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let replicas = sum(all, |r| status_of(r).0);
    let available = sum(all, |r| status_of(r).2);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(new_rs.map(|r| status_of(r).0).unwrap_or(0)),
        ready_replicas: Some(sum(all, |r| status_of(r).1)),
        available_replicas: Some(available),
        unavailable_replicas: Some((sum(all, spec_replicas).max(replicas) - available).max(0)),
        collision_count: old.collision_count,
        conditions: None,
        terminating_replicas: None,
    };
    let mut conditions = old.conditions.clone().unwrap_or_default();
    if available >= desired - max_unavailable {
        set(
            &mut conditions,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set(
            &mut conditions,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    let rs_name = new_rs
        .and_then(|r| r.metadata.name.clone())
        .unwrap_or_default();
    let mut recheck = None;
    let progressing = find(&conditions, "Progressing").cloned();
    if paused {
        if progressing.as_ref().and_then(|c| c.reason.as_deref()) != Some("DeploymentPaused") {
            set(
                &mut conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                    now,
                ),
            );
        }
    } else if progressing.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused") {
        set(
            &mut conditions,
            condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
                now,
            ),
        );
    } else if phase == Phase::Rollout && deadline(d) != NO_DEADLINE {
        let done = progressing.as_ref().and_then(|c| c.reason.as_deref())
            == Some("NewReplicaSetAvailable")
            && status.replicas == status.updated_replicas;
        if !done {
            if complete(d, &status) {
                set(
                    &mut conditions,
                    condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                        now,
                    ),
                );
            } else if progressed(&old, &status) {
                let mut c = condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                    now,
                );
                if let Some(current) = &progressing
                    && current.status == "True"
                {
                    c.last_transition_time = current.last_transition_time.clone();
                }
                conditions.retain(|c| c.type_ != "Progressing");
                conditions.push(c);
            } else if let Some(current) = &progressing {
                let from = current
                    .last_update_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(now);
                let limit = from + jiff::SignedDuration::from_secs(i64::from(deadline(d)));
                let reason = current.reason.as_deref();
                if reason == Some("ProgressDeadlineExceeded") {
                } else if now >= limit {
                    set(
                        &mut conditions,
                        condition(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                            now,
                        ),
                    );
                } else {
                    recheck = Some(Duration::from_secs_f64(
                        now.duration_until(limit).as_secs_f64().max(0.0) + 0.5,
                    ));
                }
            }
        }
    }
    // A ReplicaSet that cannot create pods makes the Deployment report ReplicaFailure.
    let failure = all.iter().find_map(|r| {
        r.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
            .cloned()
    });
    match failure {
        Some(f) => set(
            &mut conditions,
            DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: f.reason,
                message: f.message,
                last_update_time: Some(Time(now)),
                last_transition_time: f.last_transition_time,
            },
        ),
        None => conditions.retain(|c| c.type_ != "ReplicaFailure"),
    }
    // Stable order: Available, Progressing, ReplicaFailure (as upstream lists them).
    conditions.sort_by_key(|c| match c.type_.as_str() {
        "Available" => 0,
        "Progressing" => 1,
        _ => 2,
    });
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    (status, recheck)
}

/// Set Progressing=True NewReplicaSetCreated after creating `rs_name` (upstream does this when
/// it creates the new ReplicaSet).
pub(crate) fn created(status: &mut DeploymentStatus, rs_name: &str, now: jiff::Timestamp) {
    let mut conditions = status.conditions.clone().unwrap_or_default();
    conditions.retain(|c| c.type_ != "Progressing");
    conditions.push(condition(
        "Progressing",
        "True",
        "NewReplicaSetCreated",
        format!("Created new replica set \"{rs_name}\""),
        now,
    ));
    status.conditions = Some(conditions);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn d(replicas: i32, deadline: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                progress_deadline_seconds: Some(deadline),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rs(name: &str, spec: i32, replicas: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn cond<'a>(s: &'a DeploymentStatus, t: &str) -> &'a DeploymentCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn complete_rollout_reports_new_replicaset_available() {
        let new = rs("web-abc", 3, 3, 3);
        let now = jiff::Timestamp::now();
        let (s, recheck) = compute(&d(3, 600), &[&new], Some(&new), 0, Phase::Rollout, now);
        assert_eq!(s.updated_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(3));
        assert_eq!(s.unavailable_replicas, Some(0));
        assert_eq!(cond(&s, "Available").status, "True");
        let p = cond(&s, "Progressing");
        assert_eq!(p.reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-abc\" has successfully progressed.")
        );
        assert!(recheck.is_none());
    }

    #[test]
    fn stalled_rollout_times_out_after_the_deadline() {
        let old = rs("web-old", 2, 2, 2);
        let new = rs("web-new", 1, 1, 0);
        let start = jiff::Timestamp::now();
        let mut dep = d(2, 10);
        let mut st = DeploymentStatus::default();
        created(&mut st, "web-new", start);
        dep.status = Some(st);
        let (s, recheck) = compute(&dep, &[&old, &new], Some(&new), 0, Phase::Rollout, start);
        // updatedReplicas went 0 → 1: progressing.
        assert_eq!(
            cond(&s, "Progressing").reason.as_deref(),
            Some("ReplicaSetUpdated")
        );
        assert!(recheck.is_none());
        dep.status = Some(s);
        let later = start + jiff::SignedDuration::from_secs(5);
        let (s, recheck) = compute(&dep, &[&old, &new], Some(&new), 0, Phase::Rollout, later);
        assert_eq!(
            cond(&s, "Progressing").reason.as_deref(),
            Some("ReplicaSetUpdated")
        );
        assert!(recheck.unwrap() <= Duration::from_secs(6));
        let late = start + jiff::SignedDuration::from_secs(11);
        let (s, _) = compute(&dep, &[&old, &new], Some(&new), 0, Phase::Rollout, late);
        let p = cond(&s, "Progressing");
        assert_eq!(p.status, "False");
        assert_eq!(p.reason.as_deref(), Some("ProgressDeadlineExceeded"));
    }

    #[test]
    fn pause_and_resume_are_recorded() {
        let new = rs("web-abc", 3, 3, 1);
        let now = jiff::Timestamp::now();
        let mut dep = d(3, 600);
        dep.spec.as_mut().unwrap().paused = Some(true);
        let (s, _) = compute(&dep, &[&new], Some(&new), 0, Phase::Sync, now);
        assert_eq!(
            cond(&s, "Progressing").reason.as_deref(),
            Some("DeploymentPaused")
        );
        assert_eq!(cond(&s, "Available").status, "False");
        dep.status = Some(s);
        dep.spec.as_mut().unwrap().paused = None;
        let (s, _) = compute(&dep, &[&new], Some(&new), 0, Phase::Rollout, now);
        assert_eq!(
            cond(&s, "Progressing").reason.as_deref(),
            Some("DeploymentResumed")
        );
    }
}
