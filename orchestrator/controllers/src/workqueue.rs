//! Work-queue accounting for a kube-runtime `Controller`, under client-go's `workqueue_*` names.
//!
//! kube-runtime keeps its queue private (a scheduler that deduplicates requests per object and
//! holds one back while that object is being reconciled), so the queue is observed from its two
//! ends instead: every trigger stream a controller is built from passes through [`WorkQueue`]
//! (an *add*), and the runner reports when a reconciliation for that object starts (a *get*),
//! finishes (*done*), or is dropped because the object is gone. An object added again before it
//! is picked up counts once, as in client-go, so `workqueue_depth` is the number of distinct
//! objects waiting — including one re-triggered while its reconciliation is running. Delayed
//! requeues (`Action::requeue`, error backoff) are not waiting until they fall due, as with
//! client-go's delaying queue; when they start they count as an add with no wait.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::collections::HashMap;

use crate::metrics::ControllerMetrics;

/// One controller's queue accounting.
pub(crate) struct WorkQueue {
    name: &'static str,
    metrics: ControllerMetrics,
    /// Objects waiting to be reconciled, with when each was first added.
    waiting: Mutex<HashMap<String, Instant>>,
}

/// The queue key of an object: `namespace/name` (`/name` for cluster-scoped objects).
pub(crate) fn key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{}", namespace.unwrap_or_default(), name)
}

impl WorkQueue {
    pub(crate) fn new(name: &'static str, metrics: ControllerMetrics) -> Arc<Self> {
        metrics.workqueue_depth(name).set(0);
        Arc::new(WorkQueue {
            name,
            metrics,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn metrics(&self) -> &ControllerMetrics {
        &self.metrics
    }

    /// The controller's own objects, as `Controller::for_stream` takes them, counted as adds.
    pub(crate) fn objects<K>(
        self: &Arc<Self>,
        stream: impl Stream<Item = Arc<K>> + Send + 'static,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
    where
        K: Resource + Clone + Send + Sync + 'static,
    {
        let queue = self.clone();
        stream.map(move |obj| {
            let meta = obj.meta();
            queue.add(key(
                meta.namespace.as_deref(),
                meta.name.as_deref().unwrap_or(""),
            ));
            Ok(obj.as_ref().clone())
        })
    }

    /// References from related objects (`Controller::reconcile_on`), counted as adds.
    pub(crate) fn refs<K>(
        self: &Arc<Self>,
        stream: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    ) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
    where
        K: Resource + 'static,
        K::DynamicType: Send + Sync,
    {
        let queue = self.clone();
        stream.inspect(move |r| queue.add(key(r.namespace.as_deref(), &r.name)))
    }

    /// An object needs reconciling; a second add before it is picked up is absorbed.
    pub(crate) fn add(&self, key: String) {
        let mut waiting = self.waiting.lock().expect("workqueue lock");
        if waiting.contains_key(&key) {
            return;
        }
        waiting.insert(key, Instant::now());
        self.metrics.workqueue_adds(self.name).inc();
        self.metrics
            .workqueue_depth(self.name)
            .set(waiting.len() as i64);
    }

    /// A reconciliation of `key` starts: it leaves the queue.
    pub(crate) fn get(&self, key: &str) {
        let mut waiting = self.waiting.lock().expect("workqueue lock");
        let waited = match waiting.remove(key) {
            Some(since) => since.elapsed().as_secs_f64(),
            None => {
                // A requeue that fell due: an add and a get at once.
                self.metrics.workqueue_adds(self.name).inc();
                0.0
            }
        };
        self.metrics
            .workqueue_queue_duration(self.name)
            .observe(waited);
        self.metrics
            .workqueue_depth(self.name)
            .set(waiting.len() as i64);
    }

    /// The object was gone from the cache when its turn came, so nothing ran.
    pub(crate) fn forget(&self, key: &str) {
        let mut waiting = self.waiting.lock().expect("workqueue lock");
        waiting.remove(key);
        self.metrics
            .workqueue_depth(self.name)
            .set(waiting.len() as i64);
    }

    /// A reconciliation finished after `secs`; `retry` when it failed and will be retried.
    pub(crate) fn done(&self, secs: f64, retry: bool) {
        self.metrics
            .workqueue_work_duration(self.name)
            .observe(secs);
        if retry {
            self.metrics.workqueue_retries(self.name).inc();
        }
    }

    #[cfg(test)]
    fn depth(&self) -> usize {
        self.waiting.lock().expect("workqueue lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_adds_count_once_until_picked_up() {
        let metrics = ControllerMetrics::default();
        let queue = WorkQueue::new("test", metrics.clone());
        queue.add("ns/a".into());
        queue.add("ns/a".into());
        queue.add("ns/b".into());
        assert_eq!(queue.depth(), 2);
        assert_eq!(metrics.workqueue_adds("test").get(), 2);
        assert_eq!(metrics.workqueue_depth("test").get(), 2);

        queue.get("ns/a");
        // Re-triggered while its reconciliation runs: waiting again.
        queue.add("ns/a".into());
        assert_eq!(queue.depth(), 2);
        queue.done(0.01, false);

        queue.get("ns/a");
        queue.forget("ns/b");
        assert_eq!(queue.depth(), 0);
        assert_eq!(metrics.workqueue_depth("test").get(), 0);
        assert_eq!(metrics.workqueue_adds("test").get(), 3);
    }

    #[test]
    fn a_requeue_that_falls_due_is_an_add_without_waiting() {
        let metrics = ControllerMetrics::default();
        let queue = WorkQueue::new("test", metrics.clone());
        queue.get("ns/a");
        queue.done(0.5, true);
        assert_eq!(metrics.workqueue_adds("test").get(), 1);
        assert_eq!(metrics.workqueue_retries("test").get(), 1);
        assert_eq!(queue.depth(), 0);
    }

    #[tokio::test]
    async fn trigger_streams_are_counted_as_adds() {
        use k8s_openapi::api::core::v1::Pod;
        let metrics = ControllerMetrics::default();
        let queue = WorkQueue::new("test", metrics.clone());
        let mut pod = Pod::default();
        pod.metadata.name = Some("a".into());
        pod.metadata.namespace = Some("ns".into());
        let objects: Vec<_> = queue
            .objects(futures::stream::iter([
                Arc::new(pod.clone()),
                Arc::new(pod.clone()),
            ]))
            .collect()
            .await;
        assert_eq!(objects.len(), 2);
        let refs: Vec<_> = queue
            .refs(futures::stream::iter([
                ObjectRef::<Pod>::new("b").within("ns")
            ]))
            .collect()
            .await;
        assert_eq!(refs.len(), 1);
        assert_eq!(queue.depth(), 2);
        queue.get(&key(Some("ns"), "b"));
        assert_eq!(queue.depth(), 1);
    }
}
