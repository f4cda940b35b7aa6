//! Kubernetes Events for every Skiff component (the agent's Pulled/Started/BackOff…, the
//! scheduler's Scheduled/FailedScheduling, the controllers' SuccessfulCreate…), written as core/v1
//! Events by one background task per component, so recording never blocks the caller. A repeat of the same reason and message for the same
//! object within ten minutes bumps `count` and `lastTimestamp` instead of creating a new Event,
//! as upstream's event correlator does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One event to record.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The object (a pod).
    pub object: ObjectReference,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// Reason (`Started`, `BackOff`…).
    pub reason: String,
    /// Message.
    pub message: String,
}

/// (involved uid, reason, message).
type EventKey = (String, String, String);
/// (namespace, event name, count, when last sent).
type Recorded = (String, String, i32, Instant);

/// A cheap handle to send events.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::UnboundedSender<EventRecord>,
}

impl EventRecorder {
    /// Record an event about any object.
    pub fn object(
        &self,
        object: ObjectReference,
        type_: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) {
        let _ = self.tx.send(EventRecord {
            object,
            type_,
            reason: reason.to_owned(),
            message: message.into(),
        });
    }

    /// Record an event about a pod, optionally about one of its containers.
    pub fn pod(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) {
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
        };
        let _ = self.tx.send(EventRecord {
            object,
            type_,
            reason: reason.to_owned(),
            message: message.into(),
        });
    }
}

/// Start the writer task for `component` on `host`.
pub fn start(
    client: kube::Client,
    component: &'static str,
    host: String,
    shutdown: CancellationToken,
) -> EventRecorder {
    let (tx, mut rx) = mpsc::unbounded_channel::<EventRecord>();
    let span = tracing::info_span!("event_writer");
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            // (uid, reason, message) → (namespace, event name, count, when)
            let mut seen: HashMap<EventKey, Recorded> = HashMap::new();
            loop {
                let record = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = rx.recv() => match r { Some(r) => r, None => break },
                };
                let ns = record
                    .object
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let key = (
                    record.object.uid.clone().unwrap_or_default(),
                    record.reason.clone(),
                    record.message.clone(),
                );
                let now = skiff_api::time::now_rfc3339();
                seen.retain(|_, v| v.3.elapsed() < Duration::from_secs(600));
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                if let Some((ev_ns, name, count, at)) = seen.get_mut(&key) {
                    *count += 1;
                    *at = Instant::now();
                    let patch = json!({"count": *count, "lastTimestamp": now});
                    let api: Api<Event> = Api::namespaced(client.clone(), ev_ns);
                    if let Err(e) = api
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        tracing::debug!(error = %e, "updating event failed");
                    }
                    continue;
                }
                let name = format!(
                    "{}.{:x}",
                    record.object.name.clone().unwrap_or_default(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos()
                );
                let event: Event = match serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": ns},
                    "involvedObject": record.object,
                    "reason": record.reason,
                    "message": record.message,
                    "type": record.type_,
                    "source": {"component": component, "host": host},
                    "reportingComponent": component,
                    "reportingInstance": host,
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                })) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "building event failed");
                        continue;
                    }
                };
                match api.create(&PostParams::default(), &event).await {
                    Ok(_) => {
                        seen.insert(key, (ns, name, 1, Instant::now()));
                    }
                    Err(e) => tracing::debug!(error = %e, "creating event failed"),
                }
            }
        },
        span,
    ));
    EventRecorder { tx }
}
