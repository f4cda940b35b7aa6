//! The end of a pod: graceful termination when it is deleted (preStop, SIGTERM, the grace
//! period, SIGKILL), then the final delete through the API, and cleanup of everything the pod
//! left on the node once it is gone.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};

use super::worker::{SyncResult, Worker};
use crate::runtime::{ContainerInfo, ContainerState};

/// How long a finished pod's log files stay for the log collector to read them.
pub(crate) const LOG_RETENTION: Duration = Duration::from_secs(60);

impl Worker {
    /// The pod has a deletionTimestamp: stop its containers within the grace period, then
    /// remove it from the API.
    pub(crate) async fn terminate(
        &mut self,
        containers: Vec<ContainerInfo>,
    ) -> anyhow::Result<SyncResult> {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64;
        let grace = Duration::from_secs(grace);
        let specs: Vec<_> = self
            .pod
            .spec
            .as_ref()
            .map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut stops = Vec::new();
        for info in containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        {
            if let Some(c) = specs.iter().find(|c| c.name == info.name) {
                self.ctx.events.pod(
                    &self.pod,
                    Some(&c.name),
                    "Normal",
                    "Killing",
                    format!("Stopping container {}", c.name),
                );
                stops.push(self.stop_one(c, info, grace));
            }
        }
        futures::future::join_all(stops).await;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.pod_ref.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.pod_ref.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.pod_ref.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.cleanup().await;
        Ok(SyncResult::Done)
    }

    /// Remove everything the pod has on this node. Log files stay for [`LOG_RETENTION`].
    pub(crate) async fn cleanup(&mut self) {
        let containers = self
            .ctx
            .runtime
            .pod_containers(&self.pod_ref.uid)
            .await
            .unwrap_or_default();
        for c in &containers {
            if matches!(c.state, ContainerState::Running { .. }) {
                let _ = self
                    .ctx
                    .runtime
                    .stop_container(&c.id, Duration::from_secs(2))
                    .await;
            }
            let _ = self.ctx.runtime.remove_container(&c.id).await;
        }
        if let Err(e) = self.ctx.runtime.remove_sandbox(&self.pod_ref).await {
            tracing::warn!(error = %e, "removing sandbox failed");
        }
        let _ = std::fs::remove_dir_all(self.ctx.pod_dir(&self.pod_ref.uid));
        self.ctx
            .backoff
            .lock()
            .expect("backoff")
            .forget_prefix(&format!("{}/", self.pod_ref.uid));
        let (ctx, pod) = (self.ctx.clone(), self.pod_ref.clone());
        tokio::spawn(async move {
            tokio::time::sleep(LOG_RETENTION).await;
            ctx.remove_pod_logs(&pod);
        });
        tracing::info!("pod cleaned up");
    }
}
