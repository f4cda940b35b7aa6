//! What the file name cannot say about a pod — its labels and controller — from a watch of the
//! pods on this node (fluentd's kubernetes_metadata filter, Vector's pod cache). A deleted pod
//! is kept for a while so its last lines, read after the deletion, still get its metadata.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

/// How long a deleted pod's metadata is kept (Vector's `delay_deletion_ms` is 60 s; a collector
/// that was behind needs longer).
const KEEP_DELETED: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub labels: BTreeMap<String, String>,
    pub owner_kind: Option<String>,
    pub owner_name: Option<String>,
}

#[derive(Default)]
struct Entry {
    info: Arc<PodInfo>,
    deleted_at: Option<Instant>,
}

/// Pod metadata by pod uid, shared with the reader thread.
#[derive(Clone, Default)]
pub struct PodCache {
    pods: Arc<RwLock<HashMap<String, Entry>>>,
}

impl PodCache {
    pub fn get(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.pods
            .read()
            .expect("pod cache lock")
            .get(uid)
            .map(|e| e.info.clone())
    }

    fn apply(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let owner = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)));
        let info = PodInfo {
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            owner_kind: owner.map(|o| o.kind.clone()),
            owner_name: owner.map(|o| o.name.clone()),
        };
        self.pods.write().expect("pod cache lock").insert(
            uid,
            Entry {
                info: Arc::new(info),
                deleted_at: None,
            },
        );
    }

    fn delete(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid
            && let Some(e) = self.pods.write().expect("pod cache lock").get_mut(uid)
        {
            e.deleted_at.get_or_insert_with(Instant::now);
        }
    }

    fn prune(&self) {
        self.pods
            .write()
            .expect("pod cache lock")
            .retain(|_, e| e.deleted_at.is_none_or(|t| t.elapsed() < KEEP_DELETED));
    }
}

/// Keep `cache` filled with the pods bound to `node` until `shutdown`. The watcher retries
/// with backoff; while the API is unreachable, lines ship with the metadata known so far.
pub async fn watch(
    client: kube::Client,
    node: String,
    cache: PodCache,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut prune = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = prune.tick() => cache.prune(),
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => cache.apply(&pod),
                Some(Ok(watcher::Event::Delete(pod))) => cache.delete(&pod),
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "watching pods; retrying"),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_known_by_uid_and_kept_a_while_after_deletion() {
        let cache = PodCache::default();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "uid": "u1", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7f",
                    "uid": "r1", "controller": true}]}
        }))
        .unwrap();
        cache.apply(&pod);
        let info = cache.get("u1").unwrap();
        assert_eq!(info.labels["app"], "web");
        assert_eq!(info.owner_kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(info.owner_name.as_deref(), Some("web-7f"));
        cache.delete(&pod);
        cache.prune();
        assert!(cache.get("u1").is_some());
    }
}
