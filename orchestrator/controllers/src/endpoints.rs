//! The Endpoints controller: for every Service with a selector, an Endpoints object of the same
//! name listing the IPs of the pods it selects — ready pods under `addresses`, the others under
//! `notReadyAddresses` (all under `addresses` with `publishNotReadyAddresses`) — and each Service
//! port resolved against the pod (a named `targetPort` through the container's port of that
//! name). Pods resolving to different ports form separate subsets. Services without a selector
//! are left alone: their Endpoints are written by hand (as `skiffd up` does for its add-ons).
//!
//! The API server's Service proxy and `kubectl get endpoints` read what this writes. The
//! Endpoints carry an owner reference to their Service, so the garbage collector removes them
//! with it (upstream's controller deletes them itself).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;

use crate::informers::Cache;
use crate::metrics::ControllerMetrics;
use crate::runner::{self, ReconcileError};
use crate::workload;
use crate::workqueue::WorkQueue;

const NAME: &str = "endpoint";

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) services: Cache<Service>,
    pub(crate) pods: Cache<Pod>,
}

/// Run until `shutdown`; `services` and `pods` are informer subscriptions.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    services: impl Stream<Item = Arc<Service>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    // A pod change concerns every Service of its namespace: one that selects it now, or one
    // that did before its labels changed.
    let cache = ctx.services.clone();
    let affected = pods.flat_map(move |pod| {
        let ns = pod.namespace().unwrap_or_default();
        let refs: Vec<ObjectRef<Service>> = cache
            .all()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        futures::stream::iter(refs)
    });
    let queue = WorkQueue::new(NAME, metrics);
    let controller = Controller::for_stream(queue.objects(services), ctx.services.store())
        .reconcile_on(queue.refs(affected));
    runner::run_controller(
        queue,
        controller,
        move |svc| reconcile(svc, ctx.clone()),
        shutdown,
    )
    .await;
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .all()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| selects(selector, p.metadata.labels.as_ref()))
        .collect();
    let subsets = subsets(&svc, &pods);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let name = svc.name_any();
    let desired = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: svc.metadata.labels.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: name.clone(),
                uid: svc.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    match api.get_opt(&name).await? {
        None => {
            match api.create(&PostParams::default(), &desired).await {
                Ok(_) => {}
                // Created meanwhile (another copy of the controller): the next event settles it.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Some(current)
            if current.subsets != desired.subsets
                || current.metadata.labels != desired.metadata.labels =>
        {
            let mut next = desired;
            next.metadata.resource_version = current.metadata.resource_version.clone();
            api.replace(&name, &PostParams::default(), &next).await?;
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let labels = labels.cloned().unwrap_or_default();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The subsets for `pods`: pods grouped by the ports the Service's ports resolve to on them.
fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.as_ref();
    let publish_not_ready = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let service_ports = spec.and_then(|s| s.ports.clone()).unwrap_or_default();
    // Resolved ports (as a sortable key) → (ready, not ready) addresses.
    type Group = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Group> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let mut ports = Vec::new();
        for sp in &service_ports {
            let Some(port) = resolve_port(pod, sp.target_port.as_ref(), sp.port) else {
                continue;
            };
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            ports.push((sp.name.clone().unwrap_or_default(), port, protocol));
        }
        ports.sort();
        let address = EndpointAddress {
            ip,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let group = groups.entry(ports).or_default();
        if publish_not_ready || workload::is_ready(pod) {
            group.0.push(address);
        } else {
            group.1.push(address);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| {
                a.ip.cmp(&b.ip).then(
                    a.target_ref
                        .as_ref()
                        .map(|r| &r.name)
                        .cmp(&b.target_ref.as_ref().map(|r| &r.name)),
                )
            });
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

/// A Service port's target on a pod: a number as is, a name through the pod's container ports
/// (None when no container has it), none at all the Service port itself.
fn resolve_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(p) => Some(p),
            Err(_) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    fn service(target: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target}]}
        }))
        .unwrap()
    }

    #[test]
    fn ready_and_unready_pods_and_named_ports() {
        let pods = vec![
            pod("a", "10.0.0.2", true, "http", 8080),
            pod("b", "10.0.0.1", true, "http", 8080),
            pod("c", "10.0.0.3", false, "http", 8080),
            pod("d", "10.0.0.4", true, "http", 9090),
        ];
        let subsets = subsets(&service(json!("http")), &pods);
        let value = serde_json::to_value(&subsets).unwrap();
        assert_eq!(
            value[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(value[0]["addresses"][0]["ip"], "10.0.0.1");
        assert_eq!(value[0]["addresses"][1]["ip"], "10.0.0.2");
        assert_eq!(value[0]["addresses"][0]["targetRef"]["name"], "b");
        assert_eq!(value[0]["notReadyAddresses"][0]["ip"], "10.0.0.3");
        assert_eq!(value[1]["ports"][0]["port"], 9090);
        assert_eq!(value[1]["addresses"][0]["ip"], "10.0.0.4");
    }

    #[test]
    fn numbers_and_defaults() {
        let pods = vec![pod("a", "10.0.0.2", true, "x", 1)];
        let v = serde_json::to_value(subsets(&service(json!(8081)), &pods)).unwrap();
        assert_eq!(v[0]["ports"][0]["port"], 8081);
        let mut svc = service(json!(1));
        svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = None;
        let v = serde_json::to_value(subsets(&svc, &pods)).unwrap();
        assert_eq!(v[0]["ports"][0]["port"], 80);
        // A pod without an IP yet is not an endpoint.
        let mut p = (*pod("b", "", true, "x", 1)).clone();
        p.status.as_mut().unwrap().pod_ip = None;
        assert!(subsets(&svc, &[Arc::new(p)]).is_empty());
    }
}
