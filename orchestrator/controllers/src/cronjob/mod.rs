//! The CronJob controller: creates a Job for each scheduled time (named
//! `<cronjob>-<minutes since the epoch>` so a time runs once), in the CronJob's time zone;
//! honours suspend, startingDeadlineSeconds (late schedules are skipped), and concurrencyPolicy
//! Allow/Forbid/Replace; keeps successfulJobsHistoryLimit (3) and failedJobsHistoryLimit (1)
//! finished Jobs; reports active Jobs, lastScheduleTime and lastSuccessfulTime. The time comes
//! from a [`Clock`], so tests can move it.

mod schedule;

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, ResourceExt};
use serde_json::json;
use skiff_events::EventRecorder;
use tokio_util::sync::CancellationToken;

use crate::informers::{Cache, controller_of};
use crate::metrics::ControllerMetrics;
use crate::replicaset::api_message;
use crate::runner::{self, ReconcileError};
use crate::workload;
use crate::workqueue::WorkQueue;
pub(crate) use schedule::Schedule;

const NAME: &str = "cronjob";
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Where the controllers get the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) cronjobs: Cache<CronJob>,
    pub(crate) jobs: Cache<Job>,
    pub(crate) events: EventRecorder,
    pub(crate) clock: Arc<dyn Clock>,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    cronjobs: impl Stream<Item = Arc<CronJob>> + Send + 'static,
    jobs: impl Stream<Item = Arc<Job>> + Send + 'static,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let owners = jobs.filter_map(|j| futures::future::ready(controller_of::<Job, CronJob>(&j)));
    let queue = WorkQueue::new(NAME, metrics);
    let controller = Controller::for_stream(queue.objects(cronjobs), ctx.cronjobs.store())
        .reconcile_on(queue.refs(owners));
    runner::run_controller(
        queue,
        controller,
        move |cj| reconcile(cj, ctx.clone()),
        shutdown,
    )
    .await;
}

/// What to do now.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Nothing due; look again at this time (if the schedule has a next time).
    Wait(Option<Timestamp>),
    /// Start the Job for this scheduled time (replacing active Jobs if `replace`).
    Start { at: Timestamp, replace: bool },
    /// A time was due but is skipped (reason, message for the event); look again then.
    Skip(&'static str, String, Option<Timestamp>),
    /// The schedule or time zone cannot be used.
    Invalid(String),
}

/// The schedule and its time zone (the local one when none is given, as upstream).
fn schedule_of(cj: &CronJob) -> Result<(Schedule, TimeZone), String> {
    let spec = cj.spec.as_ref().ok_or("no spec")?;
    let tz = match spec.time_zone.as_deref() {
        None => TimeZone::system(),
        Some(name) => TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))?,
    };
    let schedule = Schedule::parse(&spec.schedule)
        .map_err(|e| format!("unparseable schedule: {:?} : {e}", spec.schedule))?;
    Ok((schedule, tz))
}

/// The decision for a CronJob at `now` with `active` unfinished Jobs, the last scheduled time
/// being `last` (from the status or, newer, from its Jobs).
pub(crate) fn decide(
    cj: &CronJob,
    active: usize,
    last: Option<Timestamp>,
    now: Timestamp,
) -> Decision {
    let Some(spec) = cj.spec.as_ref() else {
        return Decision::Wait(None);
    };
    let (schedule, tz) = match schedule_of(cj) {
        Ok(s) => s,
        Err(e) => return Decision::Invalid(e),
    };
    let next = schedule.next(now, &tz);
    if spec.suspend.unwrap_or(false) {
        return Decision::Wait(next);
    }
    let since = last
        .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let (latest, count) = schedule.missed(since, now, &tz);
    let Some(at) = latest else {
        return Decision::Wait(next);
    };
    if let Some(deadline) = spec.starting_deadline_seconds
        && at + jiff::SignedDuration::from_secs(deadline) < now
    {
        return Decision::Skip(
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                skiff_api::time::format_rfc3339(at)
            ),
            next,
        );
    }
    if count > 100 && spec.starting_deadline_seconds.is_none() {
        // Upstream warns and still runs the latest.
        tracing::warn!(cronjob = %cj.name_any(), "too many missed start times (> 100)");
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if active > 0 => Decision::Skip(
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .into(),
            next,
        ),
        Some("Replace") => Decision::Start {
            at,
            replace: active > 0,
        },
        _ => Decision::Start { at, replace: false },
    }
}

fn finished(job: &Job) -> Option<(&'static str, Option<Timestamp>)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find_map(|c| {
        if c.status != "True" {
            return None;
        }
        let at = c.last_transition_time.as_ref().map(|t| t.0);
        match c.type_.as_str() {
            "Complete" => Some(("Complete", at)),
            "Failed" => Some(("Failed", at)),
            _ => None,
        }
    })
}

/// The Job for scheduled time `at`.
fn job_for(cj: &CronJob, at: Timestamp) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_AT.into(), skiff_api::time::format_rfc3339(at));
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", cj.name_any(), at.as_second() / 60)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![workload::controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.jobs.ready().await;
    let ns = cj.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = cj.uid().unwrap_or_default();
    let cj_ref = workload::object_ref(cj.as_ref());
    let mut jobs: Vec<Arc<Job>> = ctx.jobs.owned_by(&uid);
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let now = ctx.clock.now();

    // History: keep the newest successful and failed Jobs within their limits.
    let spec = cj.spec.as_ref();
    let keep_ok = spec
        .and_then(|s| s.successful_jobs_history_limit)
        .unwrap_or(3)
        .max(0) as usize;
    let keep_failed = spec
        .and_then(|s| s.failed_jobs_history_limit)
        .unwrap_or(1)
        .max(0) as usize;
    let mut last_success: Option<Timestamp> = cj
        .status
        .as_ref()
        .and_then(|s| s.last_successful_time.as_ref())
        .map(|t| t.0);
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut active = Vec::new();
    for j in &jobs {
        match finished(j) {
            Some(("Complete", at)) => {
                let at = j
                    .status
                    .as_ref()
                    .and_then(|s| s.completion_time.as_ref())
                    .map(|t| t.0)
                    .or(at);
                last_success = last_success.max(at);
                ok.push(j.clone());
            }
            Some(_) => failed.push(j.clone()),
            None if j.metadata.deletion_timestamp.is_none() => active.push(j.clone()),
            None => {}
        }
    }
    for (list, keep) in [(&ok, keep_ok), (&failed, keep_failed)] {
        for j in list.iter().take(list.len().saturating_sub(keep)) {
            match api.delete(&j.name_any(), &DeleteParams::background()).await {
                Ok(_) => ctx.events.object(
                    cj_ref.clone(),
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted job {}", j.name_any()),
                ),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    // The cached CronJob may predate our last status write; its Jobs say when it last ran, so
    // the time never goes backwards (a stale read once erased lastScheduleTime).
    let from_jobs = jobs
        .iter()
        .filter_map(|j| j.metadata.annotations.as_ref()?.get(SCHEDULED_AT))
        .filter_map(|t| skiff_api::time::parse(t))
        .max();
    let mut last_schedule = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0)
        .max(from_jobs);
    let decision = decide(&cj, active.len(), last_schedule, now);
    let mut wake = None;
    match decision {
        Decision::Invalid(message) => {
            ctx.events
                .object(cj_ref.clone(), "Warning", "InvalidSchedule", message);
        }
        Decision::Wait(next) => wake = next,
        Decision::Skip(reason, message, next) => {
            ctx.events.object(cj_ref.clone(), "Normal", reason, message);
            wake = next;
            // A missed deadline is not retried: record it as handled.
            if reason == "MissSchedule" {
                last_schedule = Some(now);
            }
        }
        Decision::Start { at, replace } => {
            if replace {
                for j in active.drain(..) {
                    match api.delete(&j.name_any(), &DeleteParams::background()).await {
                        Ok(_) => ctx.events.object(
                            cj_ref.clone(),
                            "Normal",
                            "SuccessfulDelete",
                            format!("Deleted job {}", j.name_any()),
                        ),
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let job = job_for(&cj, at);
            match api.create(&PostParams::default(), &job).await {
                Ok(created) => {
                    ctx.events.object(
                        cj_ref.clone(),
                        "Normal",
                        "SuccessfulCreate",
                        format!("Created job {}", created.name_any()),
                    );
                    active.push(Arc::new(created));
                }
                // This time already ran (the cache had not caught up).
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    let message = format!("Error creating job: {}", api_message(&e));
                    ctx.events
                        .object(cj_ref.clone(), "Warning", "FailedCreate", message.clone());
                    return Err(ReconcileError::Other(message));
                }
            }
            last_schedule = Some(at);
            wake = schedule_of(&cj).ok().and_then(|(s, tz)| s.next(now, &tz));
        }
    }

    let refs: Vec<_> = active
        .iter()
        .map(|j| workload::object_ref(j.as_ref()))
        .collect();
    let status = json!({
        "active": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) },
        "lastScheduleTime": last_schedule.map(skiff_api::time::format_rfc3339),
        "lastSuccessfulTime": last_success.map(skiff_api::time::format_rfc3339),
    });
    let current = cj
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(json!({}));
    let differs = ["active", "lastScheduleTime", "lastSuccessfulTime"]
        .iter()
        .any(|k| {
            let a = current.get(*k).cloned().unwrap_or_default();
            let b = status.get(*k).cloned().unwrap_or_default();
            match (k, &a, &b) {
                // Compare object references by name only (resourceVersions move).
                (&"active", serde_json::Value::Array(x), serde_json::Value::Array(y)) => x
                    .iter()
                    .map(|r| &r["name"])
                    .ne(y.iter().map(|r| &r["name"])),
                _ => a != b,
            }
        });
    if differs {
        let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
        match cj_api
            .patch_status(
                &cj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    // Wake at the next scheduled time (a little after, so it has passed), at least hourly.
    let wait = wake
        .map(|w| Duration::from_secs_f64(now.duration_until(w).as_secs_f64().max(0.0) + 0.2))
        .unwrap_or(Duration::from_secs(3600))
        .min(Duration::from_secs(3600));
    Ok(Action::requeue(wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn last_of(c: &CronJob) -> Option<Timestamp> {
        c.status.as_ref()?.last_schedule_time.as_ref().map(|t| t.0)
    }

    fn cj(schedule: &str, policy: &str, last: Option<&str>) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                creation_timestamp: Some(Time(at("2026-01-01T00:00:00Z"))),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                time_zone: Some("Etc/UTC".into()),
                concurrency_policy: Some(policy.into()),
                ..Default::default()
            }),
            status: Some(CronJobStatus {
                last_schedule_time: last.map(|l| Time(at(l))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_clock_moving_forward_starts_jobs_on_schedule() {
        let c = cj("*/5 * * * *", "Allow", None);
        assert_eq!(
            decide(&c, 0, last_of(&c), at("2026-01-01T00:04:00Z")),
            Decision::Wait(Some(at("2026-01-01T00:05:00Z")))
        );
        assert_eq!(
            decide(&c, 0, last_of(&c), at("2026-01-01T00:05:01Z")),
            Decision::Start {
                at: at("2026-01-01T00:05:00Z"),
                replace: false
            }
        );
        // After recording it, the same time is not started again.
        let c = cj("*/5 * * * *", "Allow", Some("2026-01-01T00:05:00Z"));
        assert_eq!(
            decide(&c, 1, last_of(&c), at("2026-01-01T00:06:00Z")),
            Decision::Wait(Some(at("2026-01-01T00:10:00Z")))
        );
        // Several missed: the latest runs.
        assert_eq!(
            decide(&c, 0, last_of(&c), at("2026-01-01T00:21:00Z")),
            Decision::Start {
                at: at("2026-01-01T00:20:00Z"),
                replace: false
            }
        );
    }

    #[test]
    fn concurrency_policies() {
        let now = at("2026-01-01T00:10:30Z");
        let last = Some("2026-01-01T00:09:00Z");
        assert!(matches!(
            decide(
                &cj("* * * * *", "Forbid", last),
                1,
                last_of(&cj("* * * * *", "Forbid", last)),
                now
            ),
            Decision::Skip("JobAlreadyActive", _, _)
        ));
        assert!(matches!(
            decide(
                &cj("* * * * *", "Forbid", last),
                0,
                last_of(&cj("* * * * *", "Forbid", last)),
                now
            ),
            Decision::Start { replace: false, .. }
        ));
        assert!(matches!(
            decide(
                &cj("* * * * *", "Replace", last),
                1,
                last_of(&cj("* * * * *", "Replace", last)),
                now
            ),
            Decision::Start { replace: true, .. }
        ));
        assert!(matches!(
            decide(
                &cj("* * * * *", "Allow", last),
                3,
                last_of(&cj("* * * * *", "Allow", last)),
                now
            ),
            Decision::Start { replace: false, .. }
        ));
    }

    #[test]
    fn suspend_deadline_and_bad_input() {
        let mut c = cj("* * * * *", "Allow", Some("2026-01-01T00:00:00Z"));
        c.spec.as_mut().unwrap().suspend = Some(true);
        assert!(matches!(
            decide(&c, 0, last_of(&c), at("2026-01-01T00:10:00Z")),
            Decision::Wait(_)
        ));
        let mut c = cj("0 * * * *", "Allow", Some("2026-01-01T00:00:00Z"));
        c.spec.as_mut().unwrap().starting_deadline_seconds = Some(60);
        assert!(matches!(
            decide(&c, 0, last_of(&c), at("2026-01-01T01:05:00Z")),
            Decision::Skip("MissSchedule", _, _)
        ));
        assert!(matches!(
            decide(&c, 0, last_of(&c), at("2026-01-01T01:00:30Z")),
            Decision::Start { .. }
        ));
        assert!(matches!(
            decide(
                &cj("nope", "Allow", None),
                0,
                last_of(&cj("nope", "Allow", None)),
                at("2026-01-01T00:00:00Z")
            ),
            Decision::Invalid(_)
        ));
        let mut c = cj("* * * * *", "Allow", None);
        c.spec.as_mut().unwrap().time_zone = Some("Mars/Olympus".into());
        assert!(matches!(
            decide(&c, 0, last_of(&c), at("2026-01-01T00:00:00Z")),
            Decision::Invalid(_)
        ));
    }

    #[test]
    fn job_names_are_unique_per_scheduled_minute() {
        let c = cj("* * * * *", "Allow", None);
        let j = job_for(&c, at("2026-01-01T00:05:00Z"));
        assert_eq!(
            j.metadata.name.as_deref(),
            Some(format!("tick-{}", at("2026-01-01T00:05:00Z").as_second() / 60).as_str())
        );
        assert!(j.metadata.annotations.unwrap().contains_key(SCHEDULED_AT));
    }
}
