//! The HorizontalPodAutoscaler controller (upstream's horizontal controller): every sync period
//! it reads the target's scale subresource, the metrics of the pods its selector picks, proposes
//! a replica count per metric ([`calculator`]), keeps the largest, stabilizes and rate-limits it
//! ([`behavior`]), rescales, and writes the status and conditions `kubectl describe hpa` shows.
//!
//! Recommendations and scale events live in this process, as upstream's do: a restarted
//! controller starts its stabilization windows afresh.

mod behavior;
mod calculator;
mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use skiff_api::selector::LabelSelector;
use tokio_util::sync::CancellationToken;

use crate::Clock;
use crate::informers::Cache;
use crate::metrics::ControllerMetrics;
use crate::runner::{self, ReconcileError};
use crate::workload::object_ref;
use behavior::History;
use calculator::{PodInfo, Proposal, Tunables};

const NAME: &str = "horizontalpodautoscaler";

/// The controller's flags (upstream's `--horizontal-pod-autoscaler-*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaConfig {
    /// How often each HPA is evaluated (15 s).
    pub sync_period: Duration,
    /// The downscale stabilization window without `behavior` (5 min).
    pub downscale_stabilization: Duration,
    /// The tolerance band around the target (0.1).
    pub tolerance: f64,
    /// CPU samples of young pods are trusted only after a full window of readiness (5 min).
    pub cpu_initialization_period: Duration,
    /// Pods unready within this time after starting never became ready (30 s).
    pub initial_readiness_delay: Duration,
}

impl Default for HpaConfig {
    fn default() -> Self {
        HpaConfig {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            tolerance: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) pods: Cache<Pod>,
    pub(crate) events: skiff_events::EventRecorder,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: HpaConfig,
    /// Per HPA: recommendations and scale events.
    pub(crate) histories: Mutex<HashMap<String, History>>,
    /// Per HPA: when it was last evaluated, and at which generation.
    pub(crate) last_sync: Mutex<HashMap<String, (Timestamp, i64)>>,
}

pub(crate) async fn run(ctx: Arc<Ctx>, metrics: ControllerMetrics, shutdown: CancellationToken) {
    let api: Api<HorizontalPodAutoscaler> = Api::all(ctx.client.clone());
    runner::run(
        NAME,
        api,
        move |hpa| reconcile(hpa, ctx.clone()),
        metrics,
        shutdown,
    )
    .await;
}

/// The conditions being built for this sync, starting from the stored ones so unchanged
/// conditions keep their transition times.
struct Conditions {
    list: Vec<Value>,
    now: String,
}

impl Conditions {
    fn set(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>) {
        let status = if status { "True" } else { "False" };
        let message = message.into();
        match self.list.iter_mut().find(|c| c["type"] == type_) {
            Some(c) => {
                if c["status"] != status {
                    c["lastTransitionTime"] = json!(self.now);
                }
                c["status"] = json!(status);
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            None => self.list.push(json!({
                "type": type_, "status": status, "lastTransitionTime": self.now,
                "reason": reason, "message": message,
            })),
        }
    }
}

/// A quantity from milli-units, as Kubernetes prints it.
fn quantity(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn scale_api(
    client: &kube::Client,
    namespace: &str,
    api_version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    let (group, version) = skiff_api::registry::split_api_version(api_version);
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

fn pod_info(pod: &Pod, resource: Option<&str>, container: Option<&str>) -> PodInfo {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            (
                c.status == "True",
                c.last_transition_time
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            )
        });
    // The request summed over the counted containers; unknown if any of them has none.
    let request_milli = resource.and_then(|r| {
        let spec = pod.spec.as_ref()?;
        let mut total = 0i64;
        for c in spec
            .containers
            .iter()
            .filter(|c| container.is_none_or(|want| c.name == want))
        {
            let q = c.resources.as_ref()?.requests.as_ref()?.get(r)?;
            total += skiff_api::quantity::Quantity::parse(&q.0).ok()?.milli();
        }
        Some(total)
    });
    PodInfo {
        name: pod.name_any(),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
        deleted: pod.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        request_milli,
    }
}

/// One metric's proposal: replicas, the metric's name for messages, its status entry.
struct MetricResult {
    replicas: i32,
    name: String,
    status: Value,
}

/// Why one metric could not be used: the condition reason and the message.
struct MetricFailure {
    reason: &'static str,
    message: String,
}

struct Evaluation<'a> {
    ctx: &'a Ctx,
    namespace: String,
    selector: String,
    pods: Vec<Arc<Pod>>,
    current: i32,
    status_replicas: i32,
    tunables: Tunables,
    now: Timestamp,
}

impl Evaluation<'_> {
    fn infos(&self, resource: Option<&str>, container: Option<&str>) -> Vec<PodInfo> {
        self.pods
            .iter()
            .map(|p| pod_info(p, resource, container))
            .collect()
    }

    fn ready_pods(&self) -> i32 {
        self.pods
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.phase.as_deref() == Some("Running")
                        && s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count() as i32
    }

    fn resource_proposal(
        &self,
        resource: &str,
        container: Option<&str>,
        target: &k8s_openapi::api::autoscaling::v2::MetricTarget,
        samples: BTreeMap<String, calculator::Sample>,
    ) -> Result<(Proposal, Value), String> {
        let infos = self.infos(Some(resource), container);
        let (proposal, current) = match target.type_.as_str() {
            "Utilization" => {
                let percent = target.average_utilization.unwrap_or(80);
                let p = calculator::utilization_replicas(
                    self.current,
                    percent,
                    resource,
                    &infos,
                    samples,
                    &self.tunables,
                    self.now,
                )
                .map_err(|e| e.to_string())?;
                (
                    p,
                    json!({"averageUtilization": p.utilization, "averageValue": quantity(p.average_milli)}),
                )
            }
            _ => {
                let target_milli = target
                    .average_value
                    .as_ref()
                    .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
                    .map(|q| q.milli())
                    .ok_or("the target has no averageValue")?;
                let p = calculator::average_value_replicas(
                    self.current,
                    target_milli,
                    Some(resource),
                    &infos,
                    samples,
                    &self.tunables,
                    self.now,
                )
                .map_err(|e| e.to_string())?;
                (p, json!({"averageValue": quantity(p.average_milli)}))
            }
        };
        Ok((proposal, current))
    }

    async fn metric(&self, spec: &MetricSpec) -> Result<MetricResult, MetricFailure> {
        let client = &self.ctx.client;
        let fail = |reason: &'static str| move |message: String| MetricFailure { reason, message };
        match spec.type_.as_str() {
            "Resource" => {
                let r = spec
                    .resource
                    .as_ref()
                    .ok_or_else(|| fail("InvalidMetricSourceType")("resource is not set".into()))?;
                let samples = metrics::resource_metrics(
                    client,
                    &self.namespace,
                    &self.selector,
                    &r.name,
                    None,
                )
                .await
                .map_err(fail("FailedGetResourceMetric"))?;
                let (p, current) = self
                    .resource_proposal(&r.name, None, &r.target, samples)
                    .map_err(|e| {
                        fail("FailedGetResourceMetric")(format!(
                            "the HPA was unable to compute the replica count: {e}"
                        ))
                    })?;
                let name = if r.target.type_ == "Utilization" {
                    format!("{} resource utilization (percentage of request)", r.name)
                } else {
                    format!("{} resource", r.name)
                };
                Ok(MetricResult {
                    replicas: p.replicas,
                    name,
                    status: json!({"type": "Resource", "resource": {"name": r.name, "current": current}}),
                })
            }
            "ContainerResource" => {
                let r = spec.container_resource.as_ref().ok_or_else(|| {
                    fail("InvalidMetricSourceType")("containerResource is not set".into())
                })?;
                let samples = metrics::resource_metrics(
                    client,
                    &self.namespace,
                    &self.selector,
                    &r.name,
                    Some(&r.container),
                )
                .await
                .map_err(fail("FailedGetContainerResourceMetric"))?;
                let (p, current) = self
                    .resource_proposal(&r.name, Some(&r.container), &r.target, samples)
                    .map_err(|e| {
                        fail("FailedGetContainerResourceMetric")(format!(
                            "the HPA was unable to compute the replica count: {e}"
                        ))
                    })?;
                Ok(MetricResult {
                    replicas: p.replicas,
                    name: format!(
                        "{} container resource utilization (percentage of request)",
                        r.name
                    ),
                    status: json!({"type": "ContainerResource", "containerResource": {"name": r.name, "container": r.container, "current": current}}),
                })
            }
            "Pods" => {
                let m = spec
                    .pods
                    .as_ref()
                    .ok_or_else(|| fail("InvalidMetricSourceType")("pods is not set".into()))?;
                let samples =
                    metrics::pods_metric(client, &self.namespace, &self.selector, &m.metric.name)
                        .await
                        .map_err(fail("FailedGetPodsMetric"))?;
                let target = m
                    .target
                    .average_value
                    .as_ref()
                    .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
                    .map(|q| q.milli())
                    .ok_or_else(|| {
                        fail("FailedGetPodsMetric")("the target has no averageValue".into())
                    })?;
                let infos = self.infos(None, None);
                let p = calculator::average_value_replicas(
                    self.current,
                    target,
                    None,
                    &infos,
                    samples,
                    &self.tunables,
                    self.now,
                )
                .map_err(|e| {
                    fail("FailedGetPodsMetric")(format!(
                        "the HPA was unable to compute the replica count: {e}"
                    ))
                })?;
                Ok(MetricResult {
                    replicas: p.replicas,
                    name: format!("pods metric {}", m.metric.name),
                    status: json!({"type": "Pods", "pods": {"metric": {"name": m.metric.name}, "current": {"averageValue": quantity(p.average_milli)}}}),
                })
            }
            "Object" => {
                let m = spec
                    .object
                    .as_ref()
                    .ok_or_else(|| fail("InvalidMetricSourceType")("object is not set".into()))?;
                let value = metrics::object_metric(
                    client,
                    &self.namespace,
                    &m.described_object.kind,
                    &m.described_object.name,
                    &m.metric.name,
                )
                .await
                .map_err(fail("FailedGetObjectMetric"))?;
                let milli_of =
                    |q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                        q.as_ref()
                            .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
                            .map(|q| q.milli())
                    };
                let (replicas, current) = match (
                    m.target.type_.as_str(),
                    milli_of(&m.target.value),
                    milli_of(&m.target.average_value),
                ) {
                    ("Value", Some(t), _) => (
                        calculator::object_value_replicas(
                            self.current,
                            value,
                            t,
                            self.ready_pods(),
                            &self.tunables,
                        ),
                        json!({"value": quantity(value)}),
                    ),
                    (_, _, Some(t)) => (
                        calculator::object_average_replicas(
                            self.status_replicas,
                            value,
                            t,
                            &self.tunables,
                        ),
                        json!({"averageValue": quantity(value / i64::from(self.status_replicas.max(1)))}),
                    ),
                    _ => {
                        return Err(fail("FailedGetObjectMetric")(
                            "the target has neither value nor averageValue".into(),
                        ));
                    }
                };
                Ok(MetricResult {
                    replicas,
                    name: format!("{} metric {}", m.described_object.kind, m.metric.name),
                    status: json!({"type": "Object", "object": {"describedObject": m.described_object, "metric": {"name": m.metric.name}, "current": current}}),
                })
            }
            "External" => {
                let m = spec
                    .external
                    .as_ref()
                    .ok_or_else(|| fail("InvalidMetricSourceType")("external is not set".into()))?;
                let selector = m
                    .metric
                    .selector
                    .as_ref()
                    .map(|s| {
                        s.match_labels
                            .iter()
                            .flatten()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let value =
                    metrics::external_metric(client, &self.namespace, &m.metric.name, &selector)
                        .await
                        .map_err(fail("FailedGetExternalMetric"))?;
                let target = m
                    .target
                    .average_value
                    .as_ref()
                    .or(m.target.value.as_ref())
                    .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
                    .map(|q| q.milli())
                    .ok_or_else(|| {
                        fail("FailedGetExternalMetric")(
                            "the target has neither value nor averageValue".into(),
                        )
                    })?;
                let replicas = if m.target.type_ == "Value" {
                    calculator::object_value_replicas(
                        self.current,
                        value,
                        target,
                        self.ready_pods(),
                        &self.tunables,
                    )
                } else {
                    calculator::object_average_replicas(
                        self.status_replicas,
                        value,
                        target,
                        &self.tunables,
                    )
                };
                Ok(MetricResult {
                    replicas,
                    name: format!("external metric {}", m.metric.name),
                    status: json!({"type": "External", "external": {"metric": {"name": m.metric.name}, "current": {"value": quantity(value)}}}),
                })
            }
            other => Err(fail("InvalidMetricSourceType")(format!(
                "unknown metric source type {other:?}"
            ))),
        }
    }
}

/// What the replica bounds decide before any metric is read.
#[derive(Debug, PartialEq, Eq)]
enum Bounds {
    /// The target is scaled to zero by someone else: autoscaling is off.
    Disabled,
    /// Outside `[min, max]`: go to the bound, for this reason.
    Clamp(i32, &'static str),
    /// Within bounds: the metrics decide.
    Compute,
}

fn bounds(current: i32, min: i32, max: i32) -> Bounds {
    if current == 0 && min != 0 {
        Bounds::Disabled
    } else if current > max {
        Bounds::Clamp(max, "Current number of replicas above Spec.MaxReplicas")
    } else if current < min {
        Bounds::Clamp(min, "Current number of replicas below Spec.MinReplicas")
    } else {
        Bounds::Compute
    }
}

fn default_metrics() -> Vec<MetricSpec> {
    serde_json::from_value(json!([{"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 80}}}]))
    .expect("static")
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let namespace = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let key = format!("{namespace}/{name}");
    let now = ctx.clock.now();
    let period = ctx.config.sync_period;
    let generation = hpa.metadata.generation.unwrap_or(0);
    // Status writes and other updates wake the controller too; evaluate at most once per sync
    // period unless the spec changed, as upstream's rate-limited queue does.
    if let Some((at, seen)) = ctx.last_sync.lock().expect("sync lock").get(&key).copied() {
        let elapsed = now.duration_since(at).unsigned_abs();
        if seen == generation && elapsed < period.mul_f64(0.9) {
            return Ok(Action::requeue(period - elapsed));
        }
    }
    ctx.last_sync
        .lock()
        .expect("sync lock")
        .insert(key.clone(), (now, generation));
    let Some(spec) = hpa.spec.as_ref() else {
        return Ok(Action::requeue(period));
    };
    let old_status = serde_json::to_value(&hpa.status).unwrap_or(Value::Null);
    let mut conditions = Conditions {
        list: old_status["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        now: skiff_api::time::format_rfc3339(now),
    };
    let target = &spec.scale_target_ref;
    let reference = format!("{}/{}", target.kind, target.name);
    let api_version = target
        .api_version
        .clone()
        .unwrap_or_else(|| "apps/v1".into());
    let scales = scale_api(&ctx.client, &namespace, &api_version, &target.kind);
    let event = |type_: &'static str, reason: &str, message: String| {
        ctx.events.object(object_ref(&*hpa), type_, reason, message);
    };
    let scale = match scales.get_scale(&target.name).await {
        Ok(s) => s,
        Err(e) => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            conditions.set("AbleToScale", false, "FailedGetScale", &message);
            event("Warning", "FailedGetScale", e.to_string());
            write_status(
                &ctx,
                &hpa,
                &old_status,
                json!({
                    "currentReplicas": old_status["currentReplicas"].as_i64().unwrap_or(0),
                    "desiredReplicas": old_status["desiredReplicas"].as_i64().unwrap_or(0),
                    "conditions": conditions.list,
                }),
                &old_status["lastScaleTime"],
            )
            .await?;
            return Ok(Action::requeue(period));
        }
    };
    conditions.set(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let status_replicas = scale.status.as_ref().map_or(0, |s| s.replicas);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    ctx.histories
        .lock()
        .expect("history lock")
        .entry(key.clone())
        .or_insert_with(|| History {
            recommendations: vec![behavior::Recommendation {
                at: now,
                replicas: current,
            }],
            ..History::default()
        });

    let mut metric_statuses: Vec<Value> = Vec::new();
    let mut rescale_reason = String::new();
    let desired = match bounds(current, min, max) {
        Bounds::Disabled => {
            conditions.set(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            );
            current
        }
        Bounds::Clamp(n, reason) => {
            rescale_reason = reason.into();
            n
        }
        Bounds::Compute => {
            if selector.is_empty() {
                conditions.set(
                    "ScalingActive",
                    false,
                    "InvalidSelector",
                    "the HPA target's scale is missing a selector",
                );
                event("Warning", "SelectorRequired", "selector is required".into());
                write_status(&ctx, &hpa, &old_status, json!({"currentReplicas": current, "desiredReplicas": old_status["desiredReplicas"].as_i64().unwrap_or(0), "conditions": conditions.list}), &old_status["lastScaleTime"]).await?;
                return Ok(Action::requeue(period));
            }
            let parsed = match LabelSelector::parse(&selector) {
                Ok(s) => s,
                Err(e) => {
                    conditions.set(
                        "ScalingActive",
                        false,
                        "InvalidSelector",
                        format!("the HPA target's scale has an invalid selector: {}", e.0),
                    );
                    write_status(&ctx, &hpa, &old_status, json!({"currentReplicas": current, "desiredReplicas": old_status["desiredReplicas"].as_i64().unwrap_or(0), "conditions": conditions.list}), &old_status["lastScaleTime"]).await?;
                    return Ok(Action::requeue(period));
                }
            };
            let pods: Vec<Arc<Pod>> = ctx
                .pods
                .all()
                .into_iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
                .filter(|p| parsed.matches(p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
                .collect();
            let eval = Evaluation {
                ctx: &ctx,
                namespace: namespace.clone(),
                selector: selector.clone(),
                pods,
                current,
                status_replicas,
                tunables: Tunables {
                    tolerance_up: ctx.config.tolerance,
                    tolerance_down: ctx.config.tolerance,
                    cpu_initialization_period: ctx.config.cpu_initialization_period,
                    initial_readiness_delay: ctx.config.initial_readiness_delay,
                },
                now,
            };
            let specs = spec
                .metrics
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(default_metrics);
            let mut proposal: Option<(i32, String)> = None;
            let mut failures: Vec<MetricFailure> = Vec::new();
            for m in &specs {
                match eval.metric(m).await {
                    Ok(r) => {
                        metric_statuses.push(r.status);
                        if proposal.as_ref().is_none_or(|(n, _)| r.replicas > *n) {
                            proposal = Some((r.replicas, r.name));
                        }
                    }
                    Err(f) => {
                        event("Warning", f.reason, f.message.clone());
                        failures.push(f);
                    }
                }
            }
            let invalid = failures.len();
            match proposal {
                Some((replicas, metric)) if invalid == 0 || replicas >= current => {
                    conditions.set("ScalingActive", true, "ValidMetricFound", format!("the HPA was able to successfully calculate a replica count from {metric}"));
                    if replicas > current {
                        rescale_reason = format!("{metric} above target");
                    } else if replicas < current {
                        rescale_reason = "All metrics below target".into();
                    }
                    let mut histories = ctx.histories.lock().expect("history lock");
                    let history = histories.entry(key.clone()).or_default();
                    let window = ctx.config.downscale_stabilization;
                    let outcome = match &spec.behavior {
                        None => {
                            behavior::legacy(history, now, current, replicas, (min, max), window)
                        }
                        Some(b) => {
                            let up = behavior::rules_from_spec(b.scale_up.as_ref(), true, window);
                            let down =
                                behavior::rules_from_spec(b.scale_down.as_ref(), false, window);
                            behavior::with_behavior(
                                history,
                                now,
                                current,
                                replicas,
                                (min, max),
                                &up,
                                &down,
                            )
                        }
                    };
                    conditions.set(
                        "AbleToScale",
                        true,
                        outcome.able_reason,
                        outcome.able_message,
                    );
                    conditions.set(
                        "ScalingLimited",
                        outcome.limited,
                        outcome.limited_reason,
                        outcome.limited_message,
                    );
                    outcome.replicas
                }
                _ => {
                    let first = &failures[0];
                    let message = format!(
                        "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                        specs.len(),
                        first.message
                    );
                    conditions.set(
                        "ScalingActive",
                        false,
                        first.reason,
                        format!(
                            "the HPA was unable to compute the replica count: {}",
                            first.message
                        ),
                    );
                    event("Warning", "FailedComputeMetricsReplicas", message);
                    write_status(&ctx, &hpa, &old_status, json!({
                    "currentReplicas": current,
                    "desiredReplicas": old_status["desiredReplicas"].as_i64().unwrap_or(i64::from(current)),
                    "currentMetrics": metric_statuses,
                    "conditions": conditions.list,
                }), &old_status["lastScaleTime"]).await?;
                    return Ok(Action::requeue(period));
                }
            }
        }
    };

    let mut last_scale = old_status["lastScaleTime"].clone();
    if desired != current {
        let patch = json!({"spec": {"replicas": desired}});
        match scales
            .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                conditions.set(
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                );
                event(
                    "Normal",
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {rescale_reason}"),
                );
                let longest = spec
                    .behavior
                    .as_ref()
                    .map(|b| {
                        let window = ctx.config.downscale_stabilization;
                        let up = behavior::rules_from_spec(b.scale_up.as_ref(), true, window);
                        let down = behavior::rules_from_spec(b.scale_down.as_ref(), false, window);
                        up.policies
                            .iter()
                            .chain(&down.policies)
                            .map(|p| p.period)
                            .max()
                            .unwrap_or_default()
                    })
                    .unwrap_or(Duration::from_secs(15));
                let mut histories = ctx.histories.lock().expect("history lock");
                behavior::record_scale(
                    histories.entry(key.clone()).or_default(),
                    now,
                    current,
                    desired,
                    longest,
                );
                drop(histories);
                last_scale = json!(skiff_api::time::format_rfc3339(now));
                tracing::info!(hpa = %key, target = %reference, from = current, to = desired, reason = %rescale_reason, "rescaled");
            }
            Err(e) => {
                conditions.set(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                event(
                    "Warning",
                    "FailedRescale",
                    format!("New size: {desired}; reason: {rescale_reason}; error: {e}"),
                );
                write_status(
                    &ctx,
                    &hpa,
                    &old_status,
                    json!({
                        "currentReplicas": current, "desiredReplicas": current,
                        "currentMetrics": metric_statuses, "conditions": conditions.list,
                    }),
                    &last_scale,
                )
                .await?;
                return Ok(Action::requeue(period));
            }
        }
    }
    write_status(
        &ctx,
        &hpa,
        &old_status,
        json!({
            "currentReplicas": current,
            "desiredReplicas": desired,
            "currentMetrics": metric_statuses,
            "conditions": conditions.list,
        }),
        &last_scale,
    )
    .await?;
    Ok(Action::requeue(period))
}

/// Write the status when it changed.
async fn write_status(
    ctx: &Ctx,
    hpa: &HorizontalPodAutoscaler,
    old: &Value,
    mut status: Value,
    last_scale: &Value,
) -> Result<(), ReconcileError> {
    status["observedGeneration"] = json!(hpa.metadata.generation.unwrap_or(0));
    if !last_scale.is_null() {
        status["lastScaleTime"] = last_scale.clone();
    }
    if status["currentMetrics"]
        .as_array()
        .is_some_and(|m| m.is_empty())
    {
        status
            .as_object_mut()
            .expect("object")
            .remove("currentMetrics");
    }
    if &status == old {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &hpa.namespace().unwrap_or_default());
    // A merge patch replaces lists whole and removes `currentMetrics` when none is known.
    let mut patch = json!({"status": status});
    if status.get("currentMetrics").is_none() {
        patch["status"]["currentMetrics"] = Value::Null;
    }
    api.patch_status(
        &hpa.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_j_a_target_at_zero_disables_scaling() {
        assert_eq!(bounds(0, 1, 10), Bounds::Disabled);
        // minReplicas 0 (scale-to-zero allowed) computes as usual.
        assert_eq!(bounds(0, 0, 10), Bounds::Compute);
        assert_eq!(
            bounds(12, 1, 10),
            Bounds::Clamp(10, "Current number of replicas above Spec.MaxReplicas")
        );
        assert_eq!(
            bounds(1, 2, 10),
            Bounds::Clamp(2, "Current number of replicas below Spec.MinReplicas")
        );
    }

    #[test]
    fn conditions_keep_transition_times_until_the_status_flips() {
        let mut c = Conditions {
            list: Vec::new(),
            now: "t1".into(),
        };
        c.set("AbleToScale", true, "SucceededGetScale", "ok");
        c.now = "t2".into();
        c.set("AbleToScale", true, "ReadyForNewScale", "ok");
        assert_eq!(c.list[0]["lastTransitionTime"], "t1");
        assert_eq!(c.list[0]["reason"], "ReadyForNewScale");
        c.set("AbleToScale", false, "FailedGetScale", "no");
        assert_eq!(c.list[0]["lastTransitionTime"], "t2");
    }

    #[test]
    fn quantities_print_like_kubernetes() {
        assert_eq!(quantity(250), "250m");
        assert_eq!(quantity(2000), "2");
    }
}
