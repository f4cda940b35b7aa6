//! One exposition from the current objects, with kube-state-metrics' metric names, label names
//! and value conventions (one series per phase or condition status, 0 or 1; resources in
//! `core`/`byte`/`integer` units; `<none>` for a missing owner).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use skiff_telemetry::TextWriter;

use crate::families::FAMILIES;

/// Everything exported, as the watches last saw it.
#[derive(Default)]
pub struct Objects {
    pub pods: Vec<Arc<Pod>>,
    pub deployments: Vec<Arc<Deployment>>,
    pub replicasets: Vec<Arc<ReplicaSet>>,
    pub daemonsets: Vec<Arc<DaemonSet>>,
    pub statefulsets: Vec<Arc<StatefulSet>>,
    pub jobs: Vec<Arc<Job>>,
    pub nodes: Vec<Arc<Node>>,
    pub namespaces: Vec<Arc<Namespace>>,
    pub hpas: Vec<Arc<HorizontalPodAutoscaler>>,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Out {
    samples: HashMap<&'static str, Vec<(Labels, f64)>>,
}

impl Out {
    fn add(&mut self, family: &'static str, labels: Labels, value: f64) {
        self.samples
            .entry(family)
            .or_default()
            .push((labels, value));
    }

    fn finish(mut self) -> String {
        let mut w = TextWriter::new();
        for (name, help, kind) in FAMILIES {
            w.family(name, help, kind);
            for (labels, value) in self.samples.remove(name).unwrap_or_default() {
                let refs: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                w.sample(name, &refs, value, None);
            }
        }
        debug_assert!(
            self.samples.is_empty(),
            "undeclared families: {:?}",
            self.samples.keys()
        );
        w.finish()
    }
}

fn s(v: Option<&String>) -> String {
    v.cloned().unwrap_or_default()
}

fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

fn created(meta: &ObjectMeta) -> Option<f64> {
    meta.creation_timestamp.as_ref().map(time)
}

fn time(t: &Time) -> f64 {
    t.0.as_millisecond() as f64 / 1e3
}

fn ns_name(meta: &ObjectMeta) -> (String, String) {
    (s(meta.namespace.as_ref()), s(meta.name.as_ref()))
}

/// KSM's (resource, unit, value) of a resource list entry.
fn resource(name: &str, q: &Quantity) -> Option<(String, &'static str, f64)> {
    let parsed = skiff_api::quantity::Quantity::parse(&q.0).ok()?;
    let sanitized = name.replace(['-', '.', '/'], "_");
    Some(match name {
        "cpu" => ("cpu".into(), "core", parsed.milli() as f64 / 1000.0),
        "memory" | "ephemeral-storage" | "storage" => (sanitized, "byte", parsed.as_f64()),
        n if n.starts_with("hugepages-") => (sanitized, "byte", parsed.as_f64()),
        _ => (sanitized, "integer", parsed.as_f64()),
    })
}

/// owner_kind, owner_name, owner_is_controller of the first owner, or `<none>`.
fn owner(refs: Option<&Vec<OwnerReference>>) -> [(&'static str, String); 3] {
    match refs.and_then(|r| r.first()) {
        Some(o) => [
            ("owner_kind", o.kind.clone()),
            ("owner_name", o.name.clone()),
            (
                "owner_is_controller",
                o.controller.unwrap_or(false).to_string(),
            ),
        ],
        None => [
            ("owner_kind", "<none>".into()),
            ("owner_name", "<none>".into()),
            ("owner_is_controller", "<none>".into()),
        ],
    }
}

/// One series per status option (`true`, `false`, `unknown`), the current one 1.
fn condition_series(out: &mut Out, family: &'static str, base: &Labels, status: &str) {
    for option in ["true", "false", "unknown"] {
        let mut labels = base.clone();
        labels.push(("status", option.to_owned()));
        out.add(family, labels, b(status.eq_ignore_ascii_case(option)));
    }
}

fn pods(out: &mut Out, pods: &[Arc<Pod>]) {
    for pod in pods {
        let (namespace, name) = ns_name(&pod.metadata);
        let uid = s(pod.metadata.uid.as_ref());
        let base: Labels = vec![
            ("namespace", namespace.clone()),
            ("pod", name.clone()),
            ("uid", uid.clone()),
        ];
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let node = spec.node_name.clone().unwrap_or_default();
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let mut info = base.clone();
        info.extend([
            ("host_ip", status.host_ip.clone().unwrap_or_default()),
            ("pod_ip", status.pod_ip.clone().unwrap_or_default()),
            ("node", node.clone()),
            (
                "created_by_kind",
                controller.map_or("<none>".into(), |o| o.kind.clone()),
            ),
            (
                "created_by_name",
                controller.map_or("<none>".into(), |o| o.name.clone()),
            ),
            (
                "priority_class",
                spec.priority_class_name.clone().unwrap_or_default(),
            ),
            (
                "host_network",
                spec.host_network.unwrap_or(false).to_string(),
            ),
        ]);
        out.add("kube_pod_info", info, 1.0);
        let mut o = base.clone();
        o.extend(owner(pod.metadata.owner_references.as_ref()));
        out.add("kube_pod_owner", o, 1.0);
        if let Some(c) = created(&pod.metadata) {
            out.add("kube_pod_created", base.clone(), c);
        }
        if let Some(t) = status.start_time.as_ref() {
            out.add("kube_pod_start_time", base.clone(), time(t));
        }
        let phase = status.phase.clone().unwrap_or_default();
        for p in ["Pending", "Succeeded", "Failed", "Unknown", "Running"] {
            let mut l = base.clone();
            l.push(("phase", p.to_owned()));
            out.add("kube_pod_status_phase", l, b(phase == p));
        }
        for (cond_type, family) in [
            ("Ready", "kube_pod_status_ready"),
            ("PodScheduled", "kube_pod_status_scheduled"),
        ] {
            if let Some(c) = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == cond_type)
            {
                for option in ["true", "false", "unknown"] {
                    let mut l = base.clone();
                    l.push(("condition", option.to_owned()));
                    out.add(family, l, b(c.status.eq_ignore_ascii_case(option)));
                }
            }
        }
        for cs in status.container_statuses.iter().flatten() {
            let mut l = base.clone();
            l.push(("container", cs.name.clone()));
            let mut info = l.clone();
            info.extend([
                (
                    "image_spec",
                    spec.containers
                        .iter()
                        .find(|c| c.name == cs.name)
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default(),
                ),
                ("image", cs.image.clone()),
                ("image_id", cs.image_id.clone()),
                ("container_id", cs.container_id.clone().unwrap_or_default()),
            ]);
            out.add("kube_pod_container_info", info, 1.0);
            out.add("kube_pod_container_status_ready", l.clone(), b(cs.ready));
            out.add(
                "kube_pod_container_status_restarts_total",
                l.clone(),
                f64::from(cs.restart_count),
            );
            let state = cs.state.clone().unwrap_or_default();
            out.add(
                "kube_pod_container_status_running",
                l.clone(),
                b(state.running.is_some()),
            );
            out.add(
                "kube_pod_container_status_waiting",
                l.clone(),
                b(state.waiting.is_some()),
            );
            out.add(
                "kube_pod_container_status_terminated",
                l.clone(),
                b(state.terminated.is_some()),
            );
            if let Some(reason) = state.waiting.and_then(|w| w.reason) {
                let mut r = l.clone();
                r.push(("reason", reason));
                out.add("kube_pod_container_status_waiting_reason", r, 1.0);
            }
            if let Some(reason) = state.terminated.and_then(|t| t.reason) {
                let mut r = l.clone();
                r.push(("reason", reason));
                out.add("kube_pod_container_status_terminated_reason", r, 1.0);
            }
            if let Some(reason) = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.reason.clone())
            {
                let mut r = l.clone();
                r.push(("reason", reason));
                out.add("kube_pod_container_status_last_terminated_reason", r, 1.0);
            }
        }
        for c in &spec.containers {
            let resources = c.resources.clone().unwrap_or_default();
            for (family, list) in [
                ("kube_pod_container_resource_requests", resources.requests),
                ("kube_pod_container_resource_limits", resources.limits),
            ] {
                for (rname, q) in list.iter().flatten() {
                    let Some((rname, unit, value)) = resource(rname, q) else {
                        continue;
                    };
                    let mut l = base.clone();
                    l.extend([
                        ("container", c.name.clone()),
                        ("node", node.clone()),
                        ("resource", rname),
                        ("unit", unit.to_owned()),
                    ]);
                    out.add(family, l, value);
                }
            }
        }
    }
}

fn workloads(out: &mut Out, o: &Objects) {
    for d in &o.deployments {
        let (namespace, name) = ns_name(&d.metadata);
        let base: Labels = vec![("namespace", namespace), ("deployment", name)];
        let spec = d.spec.clone().unwrap_or_default();
        let st = d.status.clone().unwrap_or_default();
        if let Some(c) = created(&d.metadata) {
            out.add("kube_deployment_created", base.clone(), c);
        }
        out.add(
            "kube_deployment_spec_replicas",
            base.clone(),
            f64::from(spec.replicas.unwrap_or(1)),
        );
        out.add(
            "kube_deployment_spec_paused",
            base.clone(),
            b(spec.paused.unwrap_or(false)),
        );
        out.add(
            "kube_deployment_status_replicas",
            base.clone(),
            f64::from(st.replicas.unwrap_or(0)),
        );
        out.add(
            "kube_deployment_status_replicas_ready",
            base.clone(),
            f64::from(st.ready_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_deployment_status_replicas_available",
            base.clone(),
            f64::from(st.available_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_deployment_status_replicas_unavailable",
            base.clone(),
            f64::from(st.unavailable_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_deployment_status_replicas_updated",
            base.clone(),
            f64::from(st.updated_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_deployment_status_observed_generation",
            base.clone(),
            st.observed_generation.unwrap_or(0) as f64,
        );
        out.add(
            "kube_deployment_metadata_generation",
            base.clone(),
            d.metadata.generation.unwrap_or(0) as f64,
        );
        for c in st.conditions.iter().flatten() {
            let mut l = base.clone();
            l.push(("condition", c.type_.clone()));
            condition_series(out, "kube_deployment_status_condition", &l, &c.status);
        }
    }
    for rs in &o.replicasets {
        let (namespace, name) = ns_name(&rs.metadata);
        let base: Labels = vec![("namespace", namespace), ("replicaset", name)];
        let mut l = base.clone();
        l.extend(owner(rs.metadata.owner_references.as_ref()));
        out.add("kube_replicaset_owner", l, 1.0);
        let st = rs.status.clone().unwrap_or_default();
        out.add(
            "kube_replicaset_spec_replicas",
            base.clone(),
            f64::from(rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
        );
        out.add(
            "kube_replicaset_status_replicas",
            base.clone(),
            f64::from(st.replicas),
        );
        out.add(
            "kube_replicaset_status_ready_replicas",
            base.clone(),
            f64::from(st.ready_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_replicaset_status_observed_generation",
            base.clone(),
            st.observed_generation.unwrap_or(0) as f64,
        );
        out.add(
            "kube_replicaset_metadata_generation",
            base,
            rs.metadata.generation.unwrap_or(0) as f64,
        );
    }
    for ds in &o.daemonsets {
        let (namespace, name) = ns_name(&ds.metadata);
        let base: Labels = vec![("namespace", namespace), ("daemonset", name)];
        let st = ds.status.clone().unwrap_or_default();
        for (family, v) in [
            (
                "kube_daemonset_status_current_number_scheduled",
                st.current_number_scheduled,
            ),
            (
                "kube_daemonset_status_desired_number_scheduled",
                st.desired_number_scheduled,
            ),
            (
                "kube_daemonset_status_number_available",
                st.number_available.unwrap_or(0),
            ),
            (
                "kube_daemonset_status_number_misscheduled",
                st.number_misscheduled,
            ),
            ("kube_daemonset_status_number_ready", st.number_ready),
            (
                "kube_daemonset_status_number_unavailable",
                st.number_unavailable.unwrap_or(0),
            ),
            (
                "kube_daemonset_status_updated_number_scheduled",
                st.updated_number_scheduled.unwrap_or(0),
            ),
        ] {
            out.add(family, base.clone(), f64::from(v));
        }
        out.add(
            "kube_daemonset_status_observed_generation",
            base.clone(),
            st.observed_generation.unwrap_or(0) as f64,
        );
        out.add(
            "kube_daemonset_metadata_generation",
            base,
            ds.metadata.generation.unwrap_or(0) as f64,
        );
    }
    for sts in &o.statefulsets {
        let (namespace, name) = ns_name(&sts.metadata);
        let base: Labels = vec![("namespace", namespace), ("statefulset", name)];
        let st = sts.status.clone().unwrap_or_default();
        out.add(
            "kube_statefulset_replicas",
            base.clone(),
            f64::from(sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
        );
        out.add(
            "kube_statefulset_status_replicas",
            base.clone(),
            f64::from(st.replicas),
        );
        out.add(
            "kube_statefulset_status_replicas_ready",
            base.clone(),
            f64::from(st.ready_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_statefulset_status_replicas_current",
            base.clone(),
            f64::from(st.current_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_statefulset_status_replicas_updated",
            base.clone(),
            f64::from(st.updated_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_statefulset_status_observed_generation",
            base.clone(),
            st.observed_generation.unwrap_or(0) as f64,
        );
        out.add(
            "kube_statefulset_metadata_generation",
            base,
            sts.metadata.generation.unwrap_or(0) as f64,
        );
    }
    for job in &o.jobs {
        let (namespace, name) = ns_name(&job.metadata);
        let base: Labels = vec![("namespace", namespace), ("job_name", name)];
        out.add("kube_job_info", base.clone(), 1.0);
        let mut l = base.clone();
        l.extend(owner(job.metadata.owner_references.as_ref()));
        out.add("kube_job_owner", l, 1.0);
        let spec = job.spec.clone().unwrap_or_default();
        if let Some(c) = spec.completions {
            out.add("kube_job_spec_completions", base.clone(), f64::from(c));
        }
        out.add(
            "kube_job_spec_parallelism",
            base.clone(),
            f64::from(spec.parallelism.unwrap_or(1)),
        );
        let st = job.status.clone().unwrap_or_default();
        out.add(
            "kube_job_status_active",
            base.clone(),
            f64::from(st.active.unwrap_or(0)),
        );
        out.add(
            "kube_job_status_succeeded",
            base.clone(),
            f64::from(st.succeeded.unwrap_or(0)),
        );
        out.add(
            "kube_job_status_failed",
            base.clone(),
            f64::from(st.failed.unwrap_or(0)),
        );
        for (cond_type, family) in [
            ("Complete", "kube_job_complete"),
            ("Failed", "kube_job_failed"),
        ] {
            if let Some(c) = st
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == cond_type)
            {
                for option in ["true", "false", "unknown"] {
                    let mut l = base.clone();
                    l.push(("condition", option.to_owned()));
                    out.add(family, l, b(c.status.eq_ignore_ascii_case(option)));
                }
            }
        }
    }
}

fn nodes(out: &mut Out, nodes: &[Arc<Node>]) {
    for node in nodes {
        let name = s(node.metadata.name.as_ref());
        let base: Labels = vec![("node", name.clone())];
        let status = node.status.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        let info = status.node_info.clone().unwrap_or_default();
        let internal_ip = status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let mut l = base.clone();
        l.extend([
            ("kernel_version", info.kernel_version),
            ("os_image", info.os_image),
            ("container_runtime_version", info.container_runtime_version),
            ("kubelet_version", info.kubelet_version),
            ("kubeproxy_version", info.kube_proxy_version),
            ("provider_id", spec.provider_id.clone().unwrap_or_default()),
            ("pod_cidr", spec.pod_cidr.clone().unwrap_or_default()),
            ("system_uuid", info.system_uuid),
            ("internal_ip", internal_ip),
        ]);
        out.add("kube_node_info", l, 1.0);
        if let Some(c) = created(&node.metadata) {
            out.add("kube_node_created", base.clone(), c);
        }
        out.add(
            "kube_node_spec_unschedulable",
            base.clone(),
            b(spec.unschedulable.unwrap_or(false)),
        );
        for t in spec.taints.iter().flatten() {
            let mut l = base.clone();
            l.extend([
                ("key", t.key.clone()),
                ("value", t.value.clone().unwrap_or_default()),
                ("effect", t.effect.clone()),
            ]);
            out.add("kube_node_spec_taint", l, 1.0);
        }
        for c in status.conditions.iter().flatten() {
            let mut l = base.clone();
            l.push(("condition", c.type_.clone()));
            condition_series(out, "kube_node_status_condition", &l, &c.status);
        }
        for (family, list) in [
            ("kube_node_status_capacity", status.capacity.clone()),
            ("kube_node_status_allocatable", status.allocatable.clone()),
        ] {
            let sorted: BTreeMap<_, _> = list.unwrap_or_default().into_iter().collect();
            for (rname, q) in &sorted {
                let Some((rname, unit, value)) = resource(rname, q) else {
                    continue;
                };
                let mut l = base.clone();
                l.extend([("resource", rname), ("unit", unit.to_owned())]);
                out.add(family, l, value);
            }
        }
    }
}

fn namespaces_and_hpas(out: &mut Out, o: &Objects) {
    for n in &o.namespaces {
        let name = s(n.metadata.name.as_ref());
        let base: Labels = vec![("namespace", name)];
        if let Some(c) = created(&n.metadata) {
            out.add("kube_namespace_created", base.clone(), c);
        }
        let phase = n
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Active".into());
        for p in ["Active", "Terminating"] {
            let mut l = base.clone();
            l.push(("phase", p.to_owned()));
            out.add("kube_namespace_status_phase", l, b(phase == p));
        }
    }
    for h in &o.hpas {
        let (namespace, name) = ns_name(&h.metadata);
        let base: Labels = vec![("namespace", namespace), ("horizontalpodautoscaler", name)];
        let spec = h.spec.clone().unwrap_or_default();
        let st = h.status.clone().unwrap_or_default();
        let mut info = base.clone();
        info.extend([
            (
                "scaletargetref_api_version",
                spec.scale_target_ref
                    .api_version
                    .clone()
                    .unwrap_or_default(),
            ),
            ("scaletargetref_kind", spec.scale_target_ref.kind.clone()),
            ("scaletargetref_name", spec.scale_target_ref.name.clone()),
        ]);
        out.add("kube_horizontalpodautoscaler_info", info, 1.0);
        out.add(
            "kube_horizontalpodautoscaler_metadata_generation",
            base.clone(),
            h.metadata.generation.unwrap_or(0) as f64,
        );
        out.add(
            "kube_horizontalpodautoscaler_spec_min_replicas",
            base.clone(),
            f64::from(spec.min_replicas.unwrap_or(1)),
        );
        out.add(
            "kube_horizontalpodautoscaler_spec_max_replicas",
            base.clone(),
            f64::from(spec.max_replicas),
        );
        out.add(
            "kube_horizontalpodautoscaler_status_current_replicas",
            base.clone(),
            f64::from(st.current_replicas.unwrap_or(0)),
        );
        out.add(
            "kube_horizontalpodautoscaler_status_desired_replicas",
            base.clone(),
            f64::from(st.desired_replicas),
        );
        for m in spec.metrics.iter().flatten() {
            let (metric_name, target) = match m.type_.as_str() {
                "Resource" => m
                    .resource
                    .as_ref()
                    .map(|r| (r.name.clone(), r.target.clone())),
                "ContainerResource" => m
                    .container_resource
                    .as_ref()
                    .map(|r| (r.name.clone(), r.target.clone())),
                "Pods" => m
                    .pods
                    .as_ref()
                    .map(|p| (p.metric.name.clone(), p.target.clone())),
                "Object" => m
                    .object
                    .as_ref()
                    .map(|p| (p.metric.name.clone(), p.target.clone())),
                "External" => m
                    .external
                    .as_ref()
                    .map(|p| (p.metric.name.clone(), p.target.clone())),
                _ => None,
            }
            .unwrap_or_default();
            let milli = |q: &Option<Quantity>| {
                q.as_ref()
                    .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
                    .map(|q| q.milli() as f64 / 1000.0)
            };
            for (kind, value) in [
                ("value", milli(&target.value)),
                ("average", milli(&target.average_value)),
                ("utilization", target.average_utilization.map(f64::from)),
            ] {
                if let Some(v) = value {
                    let mut l = base.clone();
                    l.extend([
                        ("metric_name", metric_name.clone()),
                        ("metric_target_type", kind.to_owned()),
                    ]);
                    out.add("kube_horizontalpodautoscaler_spec_target_metric", l, v);
                }
            }
        }
        for m in st.current_metrics.iter().flatten() {
            let (metric_name, current) = match m.type_.as_str() {
                "Resource" => m
                    .resource
                    .as_ref()
                    .map(|r| (r.name.clone(), r.current.clone())),
                "ContainerResource" => m
                    .container_resource
                    .as_ref()
                    .map(|r| (r.name.clone(), r.current.clone())),
                "Pods" => m
                    .pods
                    .as_ref()
                    .map(|p| (p.metric.name.clone(), p.current.clone())),
                "Object" => m
                    .object
                    .as_ref()
                    .map(|p| (p.metric.name.clone(), p.current.clone())),
                "External" => m
                    .external
                    .as_ref()
                    .map(|p| (p.metric.name.clone(), p.current.clone())),
                _ => None,
            }
            .unwrap_or_default();
            let milli = |q: &Option<Quantity>| {
                q.as_ref()
                    .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
                    .map(|q| q.milli() as f64 / 1000.0)
            };
            for (kind, value) in [
                ("value", milli(&current.value)),
                ("average", milli(&current.average_value)),
                ("utilization", current.average_utilization.map(f64::from)),
            ] {
                if let Some(v) = value {
                    let mut l = base.clone();
                    l.extend([
                        ("metric_name", metric_name.clone()),
                        ("metric_target_type", kind.to_owned()),
                    ]);
                    out.add("kube_horizontalpodautoscaler_status_target_metric", l, v);
                }
            }
        }
        for c in st.conditions.iter().flatten() {
            let mut l = base.clone();
            l.push(("condition", c.type_.clone()));
            condition_series(
                out,
                "kube_horizontalpodautoscaler_status_condition",
                &l,
                &c.status,
            );
        }
    }
}

/// The exposition.
pub fn render(o: &Objects) -> String {
    let mut out = Out::default();
    pods(&mut out, &o.pods);
    workloads(&mut out, o);
    nodes(&mut out, &o.nodes);
    namespaces_and_hpas(&mut out, o);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix} in:\n{text}"))
    }

    #[test]
    fn kube_state_metrics_names_labels_and_values() {
        let o = Objects {
            pods: vec![obj(json!({
                "metadata": {"name": "web-1", "namespace": "default", "uid": "u1",
                    "creationTimestamp": "2026-12-05T12:00:00Z",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "r1", "controller": true}]},
                "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "web:1",
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}}]},
                "status": {"phase": "Running", "podIP": "10.0.0.5", "hostIP": "192.168.1.2",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [{"name": "app", "ready": true, "restartCount": 3, "image": "web:1", "imageID": "sha256:x",
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
            }))],
            deployments: vec![obj(
                json!({"metadata": {"name": "web", "namespace": "default", "generation": 2},
                "spec": {"replicas": 3, "selector": {}, "template": {}},
                "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 2,
                    "conditions": [{"type": "Available", "status": "False"}]}}),
            )],
            replicasets: vec![obj(
                json!({"metadata": {"name": "web-abc", "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d1", "controller": true}]},
                "spec": {"replicas": 3, "selector": {}}, "status": {"replicas": 3}}),
            )],
            nodes: vec![obj(json!({"metadata": {"name": "n1"},
                "spec": {"unschedulable": true, "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
                "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}, "allocatable": {"cpu": "1500m"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0", "containerRuntimeVersion": "docker://24", "kernelVersion": "6", "osImage": "Debian",
                        "architecture": "amd64", "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "systemUUID": ""}}}))],
            namespaces: vec![obj(
                json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}}),
            )],
            hpas: vec![obj(
                json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
                "status": {"currentReplicas": 3, "desiredReplicas": 4,
                    "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 70, "averageValue": "175m"}}}],
                    "conditions": [{"type": "AbleToScale", "status": "True"}]}}),
            )],
            ..Objects::default()
        };
        let text = render(&o);
        let base = r#"namespace="default",pod="web-1",uid="u1""#;
        assert_eq!(
            line(&text, "kube_pod_info{"),
            format!(
                r#"kube_pod_info{{{base},host_ip="192.168.1.2",pod_ip="10.0.0.5",node="n1",created_by_kind="ReplicaSet",created_by_name="web-abc",priority_class="",host_network="false"}} 1"#
            )
        );
        assert!(text.contains(&format!(r#"kube_pod_owner{{{base},owner_kind="ReplicaSet",owner_name="web-abc",owner_is_controller="true"}} 1"#)));
        assert!(text.contains(&format!(
            r#"kube_pod_status_phase{{{base},phase="Running"}} 1"#
        )));
        assert!(text.contains(&format!(
            r#"kube_pod_status_phase{{{base},phase="Pending"}} 0"#
        )));
        assert!(text.contains(&format!(
            r#"kube_pod_status_ready{{{base},condition="true"}} 1"#
        )));
        assert!(text.contains(&format!(
            r#"kube_pod_container_status_restarts_total{{{base},container="app"}} 3"#
        )));
        assert!(text.contains(&format!(r#"kube_pod_container_status_waiting_reason{{{base},container="app",reason="CrashLoopBackOff"}} 1"#)));
        assert!(text.contains(&format!(r#"kube_pod_container_resource_requests{{{base},container="app",node="n1",resource="cpu",unit="core"}} 0.25"#)));
        assert!(text.contains(&format!(r#"kube_pod_container_resource_requests{{{base},container="app",node="n1",resource="memory",unit="byte"}} 67108864"#)));
        assert!(text.contains(&format!(r#"kube_pod_container_resource_limits{{{base},container="app",node="n1",resource="cpu",unit="core"}} 1"#)));
        assert!(text.contains(
            r#"kube_deployment_status_replicas_ready{namespace="default",deployment="web"} 2"#
        ));
        assert!(text.contains(r#"kube_deployment_status_condition{namespace="default",deployment="web",condition="Available",status="false"} 1"#));
        assert!(text.contains(r#"kube_replicaset_owner{namespace="default",replicaset="web-abc",owner_kind="Deployment",owner_name="web",owner_is_controller="true"} 1"#));
        assert!(text.contains(
            r#"kube_node_status_capacity{node="n1",resource="memory",unit="byte"} 4294967296"#
        ));
        assert!(text.contains(
            r#"kube_node_status_capacity{node="n1",resource="pods",unit="integer"} 110"#
        ));
        assert!(
            text.contains(
                r#"kube_node_status_allocatable{node="n1",resource="cpu",unit="core"} 1.5"#
            )
        );
        assert!(text.contains(
            r#"kube_node_status_condition{node="n1",condition="Ready",status="true"} 1"#
        ));
        assert!(text.contains(r#"kube_node_spec_unschedulable{node="n1"} 1"#));
        assert!(text.contains(
            r#"kube_node_spec_taint{node="n1",key="k",value="v",effect="NoSchedule"} 1"#
        ));
        assert!(line(&text, "kube_node_info{").contains(r#"kubelet_version="v1.33.0""#));
        assert!(
            text.contains(r#"kube_namespace_status_phase{namespace="default",phase="Active"} 1"#)
        );
        let hpa = r#"namespace="default",horizontalpodautoscaler="web""#;
        assert!(text.contains(&format!(
            r#"kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}} 5"#
        )));
        assert!(text.contains(&format!(
            r#"kube_horizontalpodautoscaler_status_desired_replicas{{{hpa}}} 4"#
        )));
        assert!(text.contains(&format!(r#"kube_horizontalpodautoscaler_spec_target_metric{{{hpa},metric_name="cpu",metric_target_type="utilization"}} 50"#)));
        assert!(text.contains(&format!(r#"kube_horizontalpodautoscaler_status_target_metric{{{hpa},metric_name="cpu",metric_target_type="average"}} 0.175"#)));
        assert!(text.contains(&format!(r#"kube_horizontalpodautoscaler_status_condition{{{hpa},condition="AbleToScale",status="true"}} 1"#)));
        // Every family has its header even without samples.
        assert!(text.contains("# TYPE kube_job_info gauge"));
        assert!(text.contains("# TYPE kube_pod_container_status_restarts_total counter"));
    }
}
