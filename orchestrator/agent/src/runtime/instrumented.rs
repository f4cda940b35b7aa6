//! A runtime wrapper that counts and times every operation under kubelet's CRI operation names
//! (`kubelet_runtime_operations_total{operation_type}` and its errors and durations).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    ContainerConfig, ContainerIdentity, ContainerInfo, ContainerStats, ExecSession, InterfaceStats,
    PodRef, Result, Runtime, SandboxConfig, SandboxStatus,
};
use crate::AgentMetrics;

/// Wraps the real runtime.
pub(crate) struct Instrumented {
    inner: Arc<dyn Runtime>,
    metrics: AgentMetrics,
}

impl Instrumented {
    pub(crate) fn new(inner: Arc<dyn Runtime>, metrics: AgentMetrics) -> Self {
        Instrumented { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .runtime_operation(operation, started.elapsed().as_secs_f64(), result.is_ok());
        result
    }
}

#[async_trait::async_trait]
impl Runtime for Instrumented {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn version(&self) -> String {
        self.inner.version()
    }

    async fn ensure_sandbox(&self, config: &SandboxConfig) -> Result<SandboxStatus> {
        self.timed("run_podsandbox", self.inner.ensure_sandbox(config))
            .await
    }

    async fn remove_sandbox(&self, pod: &PodRef) -> Result<()> {
        self.timed("remove_podsandbox", self.inner.remove_sandbox(pod))
            .await
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        self.timed("list_containers", self.inner.list_containers())
            .await
    }

    async fn container_states(&self) -> Result<Vec<(String, String, bool)>> {
        self.timed("list_containers", self.inner.container_states())
            .await
    }

    async fn pod_containers(&self, pod_uid: &str) -> Result<Vec<ContainerInfo>> {
        self.timed("list_containers", self.inner.pod_containers(pod_uid))
            .await
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        self.timed("image_status", self.inner.image_id(image)).await
    }

    async fn start_container(
        &self,
        sandbox: &SandboxStatus,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo> {
        self.timed(
            "start_container",
            self.inner.start_container(sandbox, config),
        )
        .await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        self.timed("stop_container", self.inner.stop_container(id, grace))
            .await
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.timed("remove_container", self.inner.remove_container(id))
            .await
    }

    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<ExecSession> {
        self.timed("exec", self.inner.exec(id, command, tty, stdin))
            .await
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        self.timed("container_stats", self.inner.stats(id)).await
    }

    async fn pod_network(&self, pod_uid: &str) -> Result<Option<Vec<InterfaceStats>>> {
        self.timed("pod_sandbox_stats", self.inner.pod_network(pod_uid))
            .await
    }

    async fn writable_layer_bytes(&self, id: &str) -> Result<Option<u64>> {
        self.timed("container_stats", self.inner.writable_layer_bytes(id))
            .await
    }

    async fn node_stopping(&self) {
        self.inner.node_stopping().await
    }

    async fn identity(&self, id: &str) -> Result<ContainerIdentity> {
        self.timed("container_status", self.inner.identity(id))
            .await
    }
}
