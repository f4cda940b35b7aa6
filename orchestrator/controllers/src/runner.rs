//! The loop every controller shares: a kube-runtime `Controller` over one resource, with
//! per-object exponential backoff on errors, metrics (reconciles and the work queue), a span per
//! reconciliation, and graceful shutdown.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::ControllerMetrics;
use crate::workqueue::{self, WorkQueue};

/// First retry delay after a failed reconciliation; doubles per consecutive failure.
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// An error a reconciliation reports; the object is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

struct Context<F> {
    queue: Arc<WorkQueue>,
    reconcile: F,
    failures: Mutex<HashMap<String, u32>>,
}

fn key_of<K: Resource>(obj: &K) -> String {
    workqueue::key(obj.meta().namespace.as_deref(), &obj.name_any())
}

fn backoff(failures: u32) -> Duration {
    BACKOFF_INITIAL
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_MAX)
}

/// Run `reconcile` for every object of `api` until `shutdown`.
pub(crate) async fn run<K, F, Fut>(
    name: &'static str,
    api: Api<K>,
    reconcile: F,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Debug + Unpin,
    F: Fn(Arc<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    let queue = WorkQueue::new(name, metrics);
    let (store, writer) = reflector::store();
    let objects = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .filter_map(|obj| futures::future::ready(obj.ok().map(Arc::new)));
    let controller = Controller::for_stream(queue.objects(objects), store);
    run_controller(queue, controller, reconcile, shutdown).await;
}

/// Run `reconcile` for the objects `controller` triggers until `shutdown`. Every trigger stream
/// of `controller` must pass through `queue` (`WorkQueue::objects`/`refs`) so its depth is true.
pub(crate) async fn run_controller<K, F, Fut>(
    queue: Arc<WorkQueue>,
    controller: Controller<K>,
    reconcile: F,
    shutdown: CancellationToken,
) where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Debug + Unpin,
    F: Fn(Arc<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    let name = queue.name();
    let ctx = Arc::new(Context {
        queue: queue.clone(),
        reconcile,
        failures: Mutex::new(HashMap::new()),
    });
    tracing::info!(controller = name, "controller started");
    controller
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            |obj: Arc<K>, ctx: Arc<Context<F>>| {
                let span = tracing::info_span!("reconcile", controller = ctx.queue.name(), object = %obj.name_any());
                async move {
                    let key = key_of(obj.as_ref());
                    ctx.queue.get(&key);
                    let started = Instant::now();
                    let result = (ctx.reconcile)(obj).await;
                    let secs = started.elapsed().as_secs_f64();
                    let metrics = ctx.queue.metrics();
                    ctx.queue.done(secs, result.is_err());
                    let mut failures = ctx.failures.lock().expect("failures lock");
                    match result {
                        Ok(action) => {
                            failures.remove(&key);
                            metrics.observe(ctx.queue.name(), "success", secs);
                            Ok(action)
                        }
                        Err(e) => {
                            let n = failures.entry(key).or_insert(0);
                            *n += 1;
                            metrics.observe(ctx.queue.name(), "error", secs);
                            Err(e)
                        }
                    }
                }
                .instrument(span)
            },
            |obj: Arc<K>, error: &ReconcileError, ctx: Arc<Context<F>>| {
                let n = ctx
                    .failures
                    .lock()
                    .expect("failures lock")
                    .get(&key_of(obj.as_ref()))
                    .copied()
                    .unwrap_or(1);
                let delay = backoff(n.saturating_sub(1));
                tracing::warn!(controller = ctx.queue.name(), object = %obj.name_any(), %error, retry_in = ?delay, "reconcile failed");
                Action::requeue(delay)
            },
            ctx.clone(),
        )
        .for_each(|result| {
            if let Err(e) = &result {
                if let controller::Error::ObjectNotFound(r) = e {
                    // Triggered, then deleted before its turn: it leaves the queue unprocessed.
                    queue.forget(&workqueue::key(r.namespace.as_deref(), &r.name));
                }
                tracing::debug!(controller = name, error = %e, "controller event");
            }
            futures::future::ready(())
        })
        .await;
    tracing::info!(controller = name, "controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
