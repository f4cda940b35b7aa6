//! The replica calculation of the Kubernetes HPA (upstream's replica calculator), pure and
//! exact: integer-percent utilization, a tolerance band, pods without metrics and pods not yet
//! ready treated conservatively so a scale never overshoots or flips direction because of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

/// What the calculation needs to know about a pod.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PodInfo {
    pub name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub phase: String,
    pub deleted: bool,
    /// The Ready condition: status and last transition.
    pub ready: Option<(bool, Timestamp)>,
    pub start_time: Option<Timestamp>,
    /// Sum of the metric's resource requests over the counted containers, milli-units.
    pub request_milli: Option<i64>,
}

/// One pod's metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Value, milli-units.
    pub milli: i64,
    pub timestamp: Timestamp,
    pub window: Duration,
}

/// The controller's tunables (upstream defaults in [`Tunables::default`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tunables {
    pub tolerance_up: f64,
    pub tolerance_down: f64,
    /// CPU samples of pods younger than this are trusted only once the pod has been ready for
    /// a whole metric window.
    pub cpu_initialization_period: Duration,
    /// A pod that became unready within this time after starting never became ready.
    pub initial_readiness_delay: Duration,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            tolerance_up: 0.1,
            tolerance_down: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

impl Tunables {
    fn within(&self, ratio: f64) -> bool {
        ratio >= 1.0 - self.tolerance_down && ratio <= 1.0 + self.tolerance_up
    }
}

/// Why no proposal could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CalcError {
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("did not receive metrics for any ready pods")]
    NoReadyMetrics,
    #[error("missing request for {resource} in pod {pod}")]
    MissingRequest { resource: String, pod: String },
}

/// A proposal for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proposal {
    pub replicas: i32,
    /// Utilization in percent of requests (utilization targets only).
    pub utilization: Option<i32>,
    /// Average value per pod, milli-units.
    pub average_milli: i64,
}

fn add(a: Timestamp, d: Duration) -> Timestamp {
    a.checked_add(jiff::SignedDuration::try_from(d).unwrap_or_default())
        .unwrap_or(a)
}

struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

/// Sort pods into ready (counted), unready, missing (no metric) and ignored (deleted, failed).
/// Readiness matters for CPU only: a young pod's CPU spikes while it starts.
fn group_pods(
    pods: &[PodInfo],
    metrics: &BTreeMap<String, Sample>,
    cpu: bool,
    tunables: &Tunables,
    now: Timestamp,
) -> Groups {
    let mut g = Groups {
        ready: 0,
        unready: BTreeSet::new(),
        missing: BTreeSet::new(),
        ignored: BTreeSet::new(),
    };
    for pod in pods {
        if pod.deleted || pod.phase == "Failed" {
            g.ignored.insert(pod.name.clone());
            continue;
        }
        if pod.phase == "Pending" {
            g.unready.insert(pod.name.clone());
            continue;
        }
        let Some(sample) = metrics.get(&pod.name) else {
            g.missing.insert(pod.name.clone());
            continue;
        };
        if cpu {
            let unready = match (pod.ready, pod.start_time) {
                (Some((ready, transition)), Some(start)) => {
                    if add(start, tunables.cpu_initialization_period) > now {
                        // Still initializing: trust the sample only if taken over a window
                        // that began after the pod became ready.
                        !ready || sample.timestamp < add(transition, sample.window)
                    } else {
                        // Past initialization: unready only if it never became ready.
                        !ready && add(start, tunables.initial_readiness_delay) > transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(pod.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// (ratio to target, integer utilization, raw average milli) over `metrics`.
fn utilization_ratio(
    metrics: &BTreeMap<String, Sample>,
    requests: &BTreeMap<String, i64>,
    target_percent: i32,
    resource: &str,
) -> Result<(f64, i32, i64), CalcError> {
    let (mut used, mut requested) = (0i64, 0i64);
    for (pod, sample) in metrics {
        let request = requests
            .get(pod)
            .copied()
            .ok_or_else(|| CalcError::MissingRequest {
                resource: resource.to_owned(),
                pod: pod.clone(),
            })?;
        used += sample.milli;
        requested += request;
    }
    if requested == 0 {
        return Err(CalcError::MissingRequest {
            resource: resource.to_owned(),
            pod: metrics.keys().next().cloned().unwrap_or_default(),
        });
    }
    let utilization = (used * 100 / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target_percent),
        utilization,
        used / metrics.len() as i64,
    ))
}

/// A target in percent of requests (`Resource`/`ContainerResource` with `Utilization`).
pub(crate) fn utilization_replicas(
    current: i32,
    target_percent: i32,
    resource: &str,
    pods: &[PodInfo],
    mut metrics: BTreeMap<String, Sample>,
    tunables: &Tunables,
    now: Timestamp,
) -> Result<Proposal, CalcError> {
    if metrics.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let g = group_pods(pods, &metrics, resource == "cpu", tunables, now);
    metrics.retain(|pod, _| !g.ignored.contains(pod) && !g.unready.contains(pod));
    if metrics.is_empty() {
        return Err(CalcError::NoReadyMetrics);
    }
    let mut requests = BTreeMap::new();
    for p in pods {
        match p.request_milli {
            Some(r) => {
                requests.insert(p.name.clone(), r);
            }
            None if metrics.contains_key(&p.name)
                || g.missing.contains(&p.name)
                || g.unready.contains(&p.name) =>
            {
                return Err(CalcError::MissingRequest {
                    resource: resource.to_owned(),
                    pod: p.name.clone(),
                });
            }
            None => {}
        }
    }
    let (ratio, utilization, average) =
        utilization_ratio(&metrics, &requests, target_percent, resource)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization: Some(utilization),
        average_milli: average,
    };
    let up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !up_with_unready && g.missing.is_empty() {
        if tunables.within(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal((ratio * g.ready as f64).ceil() as i32));
    }
    let fill = |metrics: &mut BTreeMap<String, Sample>, pod: &str, milli: i64| {
        metrics.insert(
            pod.to_owned(),
            Sample {
                milli,
                timestamp: now,
                window: Duration::ZERO,
            },
        );
    };
    if !g.missing.is_empty() {
        // On a scale-down, pods without metrics count as using their whole request (or the
        // target, if higher); on a scale-up, as using nothing.
        for pod in &g.missing {
            let milli = if ratio < 1.0 {
                requests.get(pod).copied().unwrap_or(0) * i64::from(target_percent.max(100)) / 100
            } else {
                0
            };
            fill(&mut metrics, pod, milli);
        }
    }
    if up_with_unready {
        for pod in &g.unready {
            fill(&mut metrics, pod, 0);
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target_percent, resource)?;
    if tunables.within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// A target in value per pod (`AverageValue` of a resource, or a `Pods` metric).
pub(crate) fn average_value_replicas(
    current: i32,
    target_milli: i64,
    resource: Option<&str>,
    pods: &[PodInfo],
    mut metrics: BTreeMap<String, Sample>,
    tunables: &Tunables,
    now: Timestamp,
) -> Result<Proposal, CalcError> {
    if metrics.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let g = group_pods(pods, &metrics, resource == Some("cpu"), tunables, now);
    metrics.retain(|pod, _| !g.ignored.contains(pod) && !g.unready.contains(pod));
    if metrics.is_empty() {
        return Err(CalcError::NoReadyMetrics);
    }
    let ratio_of = |metrics: &BTreeMap<String, Sample>| {
        let average = metrics.values().map(|s| s.milli).sum::<i64>() / metrics.len() as i64;
        (average as f64 / target_milli as f64, average)
    };
    let (ratio, average) = ratio_of(&metrics);
    let proposal = |replicas| Proposal {
        replicas,
        utilization: None,
        average_milli: average,
    };
    let up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !up_with_unready && g.missing.is_empty() {
        if tunables.within(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal((ratio * g.ready as f64).ceil() as i32));
    }
    let filler = |milli| Sample {
        milli,
        timestamp: now,
        window: Duration::ZERO,
    };
    for pod in &g.missing {
        // Missing pods count as exactly on target on a scale-down, as idle on a scale-up.
        let milli = if ratio < 1.0 { target_milli } else { 0 };
        metrics.insert(pod.clone(), filler(milli));
    }
    if up_with_unready {
        for pod in &g.unready {
            metrics.insert(pod.clone(), filler(0));
        }
    }
    let (new_ratio, _) = ratio_of(&metrics);
    if tunables.within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// An `Object` metric with a `Value` target: scale the ready pods by the ratio.
pub(crate) fn object_value_replicas(
    current: i32,
    value_milli: i64,
    target_milli: i64,
    ready_pods: i32,
    tunables: &Tunables,
) -> i32 {
    let ratio = value_milli as f64 / target_milli as f64;
    if current == 0 {
        ratio.ceil() as i32
    } else if tunables.within(ratio) {
        current
    } else {
        (ratio * f64::from(ready_pods)).ceil() as i32
    }
}

/// An `Object` (or `External`) metric with an `AverageValue` target: the value spread over the
/// replicas.
pub(crate) fn object_average_replicas(
    status_replicas: i32,
    value_milli: i64,
    target_average_milli: i64,
    tunables: &Tunables,
) -> i32 {
    let ratio =
        value_milli as f64 / (target_average_milli as f64 * f64::from(status_replicas.max(1)));
    if tunables.within(ratio) {
        status_replicas
    } else {
        (value_milli as f64 / target_average_milli as f64).ceil() as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-05T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> Timestamp {
        now() - jiff::SignedDuration::from_secs(secs)
    }

    /// A running pod started 10 minutes ago, ready since 9.5 minutes ago.
    fn pod(name: &str, request: i64) -> PodInfo {
        PodInfo {
            name: name.into(),
            phase: "Running".into(),
            deleted: false,
            ready: Some((true, ago(570))),
            start_time: Some(ago(600)),
            request_milli: Some(request),
        }
    }

    fn samples(values: &[(&str, i64)]) -> BTreeMap<String, Sample> {
        values
            .iter()
            .map(|(n, v)| {
                (
                    (*n).to_owned(),
                    Sample {
                        milli: *v,
                        timestamp: ago(5),
                        window: Duration::from_secs(15),
                    },
                )
            })
            .collect()
    }

    fn cpu(
        current: i32,
        target: i32,
        pods: &[PodInfo],
        metrics: &[(&str, i64)],
    ) -> Result<Proposal, CalcError> {
        utilization_replicas(
            current,
            target,
            "cpu",
            pods,
            samples(metrics),
            &Tunables::default(),
            now(),
        )
    }

    #[test]
    fn case_a_scale_up_by_the_ratio() {
        let pods = [pod("a", 500), pod("b", 500), pod("c", 500)];
        let p = cpu(3, 50, &pods, &[("a", 400), ("b", 450), ("c", 500)]).unwrap();
        assert_eq!((p.replicas, p.utilization), (6, Some(90)));
    }

    #[test]
    fn case_b_integer_percent_within_tolerance() {
        let pods = [
            pod("a", 1000),
            pod("b", 1000),
            pod("c", 1000),
            pod("d", 1000),
        ];
        let p = cpu(
            4,
            50,
            &pods,
            &[("a", 500), ("b", 500), ("c", 500), ("d", 600)],
        )
        .unwrap();
        assert_eq!((p.replicas, p.utilization), (4, Some(52)));
    }

    #[test]
    fn case_c_missing_pod_counts_as_full_request_on_scale_down() {
        let pods = [
            pod("a", 1000),
            pod("b", 1000),
            pod("c", 1000),
            pod("d", 1000),
        ];
        let p = cpu(4, 50, &pods, &[("a", 100), ("b", 100), ("c", 100)]).unwrap();
        assert_eq!((p.replicas, p.utilization), (3, Some(10)));
    }

    #[test]
    fn case_d_pending_pods_keep_a_flip_from_happening() {
        let mut pending = pod("c", 1000);
        pending.phase = "Pending".into();
        let mut pending2 = pod("d", 1000);
        pending2.phase = "Pending".into();
        let pods = [pod("a", 1000), pod("b", 1000), pending, pending2];
        let p = cpu(4, 50, &pods, &[("a", 600), ("b", 600)]).unwrap();
        assert_eq!((p.replicas, p.utilization), (4, Some(60)));
    }

    #[test]
    fn case_i_average_value_of_memory() {
        let mi = 1024 * 1024 * 1000i64; // 1Mi in milli-bytes
        let pods = [pod("a", 0), pod("b", 0), pod("c", 0)];
        let p = average_value_replicas(
            3,
            200 * mi,
            Some("memory"),
            &pods,
            samples(&[("a", 300 * mi), ("b", 400 * mi), ("c", 500 * mi)]),
            &Tunables::default(),
            now(),
        )
        .unwrap();
        assert_eq!((p.replicas, p.average_milli), (6, 400 * mi));
    }

    #[test]
    fn case_k_readiness_during_and_after_cpu_initialization() {
        // Started 10 min ago, Ready=False since start+20 s: it never became ready → unready,
        // excluded, and with the others idle the count falls.
        let mut never = pod("b", 1000);
        never.ready = Some((false, ago(580)));
        let pods = [pod("a", 1000), never.clone()];
        let p = cpu(2, 50, &pods, &[("a", 100), ("b", 900)]).unwrap();
        assert_eq!(p.utilization, Some(10), "b's sample is not counted");
        // Ready=False only since start+5 min: it had become ready, so it counts.
        never.ready = Some((false, ago(300)));
        let pods = [pod("a", 1000), never];
        let p = cpu(2, 50, &pods, &[("a", 100), ("b", 900)]).unwrap();
        assert_eq!(p.utilization, Some(50));
    }

    #[test]
    fn young_pods_count_once_ready_for_a_whole_window() {
        let mut young = pod("b", 1000);
        young.start_time = Some(ago(60));
        // Ready 10 s ago; the sample (taken 5 s ago over 15 s) began before that.
        young.ready = Some((true, ago(10)));
        let pods = [pod("a", 1000), young.clone()];
        let p = cpu(2, 50, &pods, &[("a", 500), ("b", 1000)]).unwrap();
        assert_eq!(p.utilization, Some(50), "b is unready");
        young.ready = Some((true, ago(40)));
        let pods = [pod("a", 1000), young];
        let p = cpu(2, 50, &pods, &[("a", 500), ("b", 1000)]).unwrap();
        assert_eq!((p.utilization, p.replicas), (Some(75), 3));
    }

    #[test]
    fn errors_say_why() {
        let pods = [pod("a", 1000)];
        assert_eq!(cpu(1, 50, &pods, &[]), Err(CalcError::NoMetrics));
        let mut failed = pod("a", 1000);
        failed.phase = "Failed".into();
        assert_eq!(
            cpu(1, 50, &[failed], &[("a", 5)]),
            Err(CalcError::NoReadyMetrics)
        );
        let mut no_request = pod("a", 0);
        no_request.request_milli = None;
        assert!(matches!(
            cpu(1, 50, &[no_request], &[("a", 5)]),
            Err(CalcError::MissingRequest { .. })
        ));
    }

    #[test]
    fn object_metrics() {
        let t = Tunables::default();
        assert_eq!(object_value_replicas(2, 300, 100, 2, &t), 6);
        assert_eq!(object_value_replicas(2, 105, 100, 2, &t), 2);
        assert_eq!(object_value_replicas(0, 250, 100, 0, &t), 3);
        assert_eq!(object_average_replicas(2, 1000, 100, &t), 10);
        assert_eq!(object_average_replicas(10, 1000, 100, &t), 10);
    }
}
