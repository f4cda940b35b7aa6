//! The Job controller: runs pods until `completions` succeed (NonIndexed: any pods; Indexed:
//! one per completion index), at most `parallelism` at a time; retries failures with
//! exponential backoff up to `backoffLimit` (restarts count under restartPolicy OnFailure);
//! fails at `activeDeadlineSeconds`; honours `suspend`; reports Complete/Failed conditions with
//! upstream's reasons; deletes finished Jobs after `ttlSecondsAfterFinished`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::DeleteParams;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use skiff_events::EventRecorder;
use tokio_util::sync::CancellationToken;

use crate::informers::{Cache, controller_of};
use crate::metrics::ControllerMetrics;
use crate::replicaset::api_message;
use crate::runner::{self, ReconcileError};
use crate::workload::{self, Expectations};
use crate::workqueue::WorkQueue;

const NAME: &str = "job";
const INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// First retry delay after a failed pod; doubles per failure up to `BACKOFF_MAX` (upstream).
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) jobs: Cache<Job>,
    pub(crate) pods: Cache<Pod>,
    pub(crate) events: EventRecorder,
    pub(crate) expectations: Expectations,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    jobs: impl Stream<Item = Arc<Job>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let owners = pods.filter_map(|p| futures::future::ready(controller_of::<Pod, Job>(&p)));
    let queue = WorkQueue::new(NAME, metrics);
    let controller = Controller::for_stream(queue.objects(jobs), ctx.jobs.store())
        .reconcile_on(queue.refs(owners));
    runner::run_controller(
        queue,
        controller,
        move |job| reconcile(job, ctx.clone()),
        shutdown,
    )
    .await;
}

fn condition_true(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(INDEX)?.parse().ok()
}

/// `0-2,4,6-7`: the form of `status.completedIndexes`.
pub(crate) fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The delay before the next pod after `failures` failures.
pub(crate) fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    BACKOFF_BASE
        .saturating_mul(1u32 << (failures - 1).min(16) as u32)
        .min(BACKOFF_MAX)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

fn finished_at(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.pods.ready().await;
    let ns = job.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", job.name_any());
    let now = jiff::Timestamp::now();
    if condition_true(&job, "Complete") || condition_true(&job, "Failed") {
        return ttl(&ctx, &job, now).await;
    }
    if !ctx.expectations.satisfied(&key, |name| {
        ctx.pods
            .get(Some(&ns), name)
            .map(|p| p.metadata.deletion_timestamp.is_none())
    }) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some(spec) = job.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = workload::compile(spec.selector.as_ref());
    let uid = job.uid().unwrap_or_default();
    let pods = workload::claim(
        &pods_api,
        job.as_ref(),
        &selector,
        ctx.pods.owned_by(&uid),
        ctx.pods.orphans_in(&ns),
    )
    .await?;
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| workload::is_active(p)).collect();
    let succeeded_pods: Vec<&Arc<Pod>> = pods.iter().filter(|p| phase(p) == "Succeeded").collect();
    let failed_pods: Vec<&Arc<Pod>> = pods.iter().filter(|p| phase(p) == "Failed").collect();
    let previous = job.status.clone().unwrap_or_default();
    // Pods can be deleted by users or the garbage collector: counts never go down.
    let succeeded = (succeeded_pods.len() as i32).max(previous.succeeded.unwrap_or(0));
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarts_total: i32 = if on_failure {
        active.iter().map(|p| restarts(p)).sum()
    } else {
        0
    };
    let failed = (failed_pods.len() as i32).max(previous.failed.unwrap_or(0));
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let suspended = spec.suspend.unwrap_or(false);
    let start_time = previous
        .start_time
        .as_ref()
        .map(|t| t.0)
        .or((!suspended).then_some(now));
    let done_indexes: BTreeSet<i32> = succeeded_pods
        .iter()
        .filter_map(|p| index_of(p))
        .filter(|i| completions.is_none_or(|c| *i < c))
        .collect();

    // Decide the outcome.
    let mut outcome: Option<(&str, &str, String)> = None;
    let complete = match (indexed, completions) {
        (true, Some(c)) => done_indexes.len() as i32 >= c,
        (false, Some(c)) => succeeded >= c,
        // No completions: done when one pod succeeded and none is still running.
        (_, None) => succeeded > 0 && active.is_empty(),
    };
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let mut recheck: Option<Duration> = None;
    if complete {
        outcome = Some((
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods".into(),
        ));
    } else if failed + restarts_total > backoff_limit {
        outcome = Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
        ));
    } else if let (Some(deadline), Some(start)) = (spec.active_deadline_seconds, start_time) {
        let limit = start + jiff::SignedDuration::from_secs(deadline);
        if now >= limit && !suspended {
            outcome = Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        } else {
            recheck = Some(Duration::from_secs_f64(
                now.duration_until(limit).as_secs_f64().max(0.0) + 0.1,
            ));
        }
    }

    let job_ref = workload::object_ref(job.as_ref());
    let mut deleted = Vec::new();
    let mut created = Vec::new();
    let mut failure = None;
    let running = outcome.is_none() && !suspended;
    if !running {
        // Finished or suspended: nothing may keep running.
        for p in &active {
            workload::delete_pod(&pods_api, &p.name_any()).await?;
            deleted.push(p.name_any());
        }
    } else {
        // Wait out the backoff after the latest failure before starting replacements.
        let last_failure = failed_pods.iter().filter_map(|p| finished_at(p)).max();
        let wait = last_failure.and_then(|at| {
            let ready_at = at + jiff::SignedDuration::try_from(backoff(failed)).unwrap_or_default();
            (ready_at > now)
                .then(|| Duration::from_secs_f64(now.duration_until(ready_at).as_secs_f64() + 0.1))
        });
        if let Some(w) = wait {
            recheck = Some(recheck.map_or(w, |r| r.min(w)));
        } else {
            let want: Vec<Option<i32>> = if indexed {
                let running_indexes: BTreeSet<i32> =
                    active.iter().filter_map(|p| index_of(p)).collect();
                (0..completions.unwrap_or(0))
                    .filter(|i| !done_indexes.contains(i) && !running_indexes.contains(i))
                    .take((parallelism - active.len() as i32).max(0) as usize)
                    .map(Some)
                    .collect()
            } else {
                let remaining = completions.map_or(parallelism, |c| (c - succeeded).max(0));
                let n = parallelism.min(remaining) - active.len() as i32;
                // Without completions, no new pods once one has succeeded.
                let n = if completions.is_none() && succeeded > 0 {
                    0
                } else {
                    n
                };
                vec![None; n.max(0) as usize]
            };
            for index in want {
                let pod = pod_for(&job, index);
                match workload::create_pod(&pods_api, &pod).await {
                    Ok(p) => {
                        ctx.events.object(
                            job_ref.clone(),
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        );
                        created.push(p.name_any());
                    }
                    Err(e) => {
                        let message = format!("Error creating: {}", api_message(&e));
                        ctx.events.object(
                            job_ref.clone(),
                            "Warning",
                            "FailedCreate",
                            message.clone(),
                        );
                        failure = Some(message);
                        break;
                    }
                }
            }
        }
    }
    ctx.expectations
        .expect(&key, created.clone(), deleted.clone());

    // Status.
    let still_active = if running {
        active.len() + created.len()
    } else {
        0
    };
    let ready = active.iter().filter(|p| workload::is_ready(p)).count();
    let mut status = json!({
        "active": still_active,
        "succeeded": succeeded,
        "failed": failed,
        "ready": if running { ready } else { 0 },
    });
    if let Some(start) = start_time {
        status["startTime"] = json!(skiff_api::time::format_rfc3339(start));
    }
    if indexed {
        status["completedIndexes"] = json!(format_indexes(&done_indexes));
    }
    let now_s = skiff_api::time::format_rfc3339(now);
    let mut conditions: Vec<Value> = previous
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.type_ != "Suspended")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    if suspended && outcome.is_none() {
        conditions.push(
            json!({"type": "Suspended", "status": "True", "reason": "JobSuspended",
            "message": "Job suspended", "lastProbeTime": now_s, "lastTransitionTime": now_s}),
        );
    }
    if let Some((type_, reason, message)) = &outcome {
        let target = if *type_ == "Complete" {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        };
        for t in [target, type_] {
            conditions.push(
                json!({"type": t, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now_s, "lastTransitionTime": now_s}),
            );
        }
        if *type_ == "Complete" {
            status["completionTime"] = json!(now_s);
        }
        let event_type = if *type_ == "Complete" {
            "Normal"
        } else {
            "Warning"
        };
        let event_reason = if *type_ == "Complete" {
            "Completed"
        } else {
            reason
        };
        let text = if *type_ == "Complete" {
            "Job completed".to_owned()
        } else {
            message.clone()
        };
        ctx.events
            .object(job_ref.clone(), event_type, event_reason, text);
    }
    status["conditions"] = if conditions.is_empty() {
        Value::Null
    } else {
        json!(conditions)
    };
    let current = serde_json::to_value(&previous).unwrap_or_default();
    let changed = [
        "active",
        "succeeded",
        "failed",
        "ready",
        "completedIndexes",
        "startTime",
    ]
    .iter()
    .any(|k| current.get(*k).unwrap_or(&json!(0)) != status.get(*k).unwrap_or(&json!(0)))
        || current.get("conditions").unwrap_or(&Value::Null) != &status["conditions"];
    if changed && !workload::write_status(&ctx.client, job.as_ref(), &status).await? {
        return Ok(Action::await_change());
    }
    if let Some(e) = failure {
        return Err(ReconcileError::Other(e));
    }
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

/// A pod of the job; Indexed pods carry their index (annotation, label, env, hostname).
fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let mut template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let name = job.name_any();
    let generate = match index {
        Some(i) => {
            let meta = template.metadata.get_or_insert_with(Default::default);
            meta.annotations
                .get_or_insert_with(Default::default)
                .insert(INDEX.into(), i.to_string());
            meta.labels
                .get_or_insert_with(Default::default)
                .insert(INDEX.into(), i.to_string());
            if let Some(spec) = template.spec.as_mut() {
                spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
                for c in spec
                    .containers
                    .iter_mut()
                    .chain(spec.init_containers.iter_mut().flatten())
                {
                    c.env.get_or_insert_with(Vec::new).push(EnvVar {
                        name: "JOB_COMPLETION_INDEX".into(),
                        value: Some(i.to_string()),
                        value_from: None,
                    });
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    workload::pod_from_template(job, &template, Some(generate), None)
}

/// ttlSecondsAfterFinished: delete the finished Job (and, through the garbage collector, its
/// pods) once the time is up.
async fn ttl(ctx: &Ctx, job: &Job, now: jiff::Timestamp) -> Result<Action, ReconcileError> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        })
        .unwrap_or(now);
    let expiry = finished + jiff::SignedDuration::from_secs(i64::from(ttl));
    if now < expiry {
        return Ok(Action::requeue(Duration::from_secs_f64(
            now.duration_until(expiry).as_secs_f64() + 0.1,
        )));
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    match api
        .delete(&job.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_compressed_into_ranges() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&[3].into()), "3");
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(10), Duration::from_secs(360));
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job = Job {
            metadata: kube::api::ObjectMeta {
                name: Some("work".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::batch::v1::JobSpec {
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: None,
                    spec: Some(k8s_openapi::api::core::v1::PodSpec {
                        containers: vec![Default::default()],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        };
        let pod = pod_for(&job, Some(3));
        assert_eq!(index_of(&pod), Some(3));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("work-3-"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-3"));
        assert_eq!(
            spec.containers[0].env.as_ref().unwrap()[0].value.as_deref(),
            Some("3")
        );
    }
}
