//! Shared informers: one watch and one cache per resource kind, however many controllers read
//! it (kube-controller-manager's SharedInformerFactory). Each informer also keeps an index from
//! controller owner to dependents, so a ReplicaSet finds its pods without scanning every pod, and
//! fans every change out to its subscribers — deletions included, and objects that vanished
//! while the watch was reconnecting — so a controller hears about a pod that went away.
//!
//! Controllers subscribe before the informers start; every subscription must be consumed.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::ControllerMetrics;

/// How many changes a subscriber may fall behind before the watch waits for it.
const BUFFER: usize = 1024;

/// The index key of an object: its controller owner's uid, or `ns/<namespace>` when it has no
/// controller (a candidate for adoption).
fn owner_key<K: Resource>(obj: &K) -> String {
    match obj
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
    {
        Some(owner) => owner.uid.clone(),
        None => format!("ns/{}", obj.meta().namespace.as_deref().unwrap_or_default()),
    }
}

/// Owner key → objects, and the reverse, so a re-keyed object leaves its old set in O(1).
struct OwnerIndex<K: Resource>
where
    K::DynamicType: Eq + Hash + Clone,
{
    by_key: HashMap<String, HashSet<ObjectRef<K>>>,
    key_of: HashMap<ObjectRef<K>, String>,
}

impl<K: Resource> Default for OwnerIndex<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn default() -> Self {
        OwnerIndex {
            by_key: HashMap::new(),
            key_of: HashMap::new(),
        }
    }
}

type Index<K> = Arc<RwLock<OwnerIndex<K>>>;

/// One kind's cache, its owner index and the watch that fills them.
pub(crate) struct Informer<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    api: Api<K>,
    store: Store<K>,
    index: Index<K>,
    writer: Option<Writer<K>>,
    subscribers: Vec<mpsc::Sender<Arc<K>>>,
    /// Wake-ups that never block the watch (for readers that rescan the caches).
    notifiers: Vec<Arc<tokio::sync::Notify>>,
    /// Set once the first list is in. Our own flag, because kube's `Store::wait_until_ready`
    /// wakes only the last of several tasks waiting at once (its one-shot channel keeps one
    /// waker), which left whole controllers — the garbage collector, node lifecycle — waiting
    /// forever now and then.
    ready: Arc<watch::Sender<bool>>,
}

/// What a controller reads: the cache and the owner index.
pub(crate) struct Cache<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    index: Index<K>,
    ready: watch::Receiver<bool>,
}

impl<K: Resource + Clone + 'static> Clone for Cache<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Cache {
            store: self.store.clone(),
            index: self.index.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K> Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    /// The kube-runtime store (for `Controller::for_stream`).
    pub(crate) fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Wait until the first list is in.
    pub(crate) async fn ready(&self) {
        let _ = self.ready.clone().wait_for(|ready| *ready).await;
    }

    pub(crate) fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.store.get(&r)
    }

    pub(crate) fn all(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// Objects whose controller owner has this uid.
    pub(crate) fn owned_by(&self, uid: &str) -> Vec<Arc<K>> {
        self.indexed(uid)
    }

    /// Objects in `namespace` without a controller owner.
    pub(crate) fn orphans_in(&self, namespace: &str) -> Vec<Arc<K>> {
        self.indexed(&format!("ns/{namespace}"))
    }

    fn indexed(&self, key: &str) -> Vec<Arc<K>> {
        let index = self.index.read().expect("index lock");
        index
            .by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|r| self.store.get(r))
            .collect()
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    fn new(api: Api<K>) -> Self {
        let (store, writer) = reflector::store();
        Informer {
            api,
            store,
            index: Arc::default(),
            writer: Some(writer),
            subscribers: Vec::new(),
            notifiers: Vec::new(),
            ready: Arc::new(watch::channel(false).0),
        }
    }

    pub(crate) fn cache(&self) -> Cache<K> {
        Cache {
            store: self.store.clone(),
            index: self.index.clone(),
            ready: self.ready.subscribe(),
        }
    }

    /// Every changed or deleted object from now on.
    pub(crate) fn subscribe(&mut self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.subscribers.push(tx);
        rx
    }

    /// Wake `notify` on every change, without queueing: a slow reader cannot hold the watch up.
    pub(crate) fn notify_on(&mut self, notify: Arc<tokio::sync::Notify>) {
        self.notifiers.push(notify);
    }

    fn start(
        &mut self,
        name: &'static str,
        metrics: ControllerMetrics,
        tasks: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) {
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        let mut subscribers = std::mem::take(&mut self.subscribers);
        let notifiers = std::mem::take(&mut self.notifiers);
        let store = self.store.clone();
        let index = self.index.clone();
        let api = self.api.clone();
        let ready = self.ready.clone();
        let span = tracing::info_span!("informer", kind = name);
        tasks.spawn(tracing::Instrument::instrument(
            async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                // The cache before a (re)list, to find what vanished meanwhile.
                let mut before_relist: Vec<Arc<K>> = Vec::new();
                loop {
                    let event = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        e = events.next() => match e { Some(e) => e, None => break },
                    };
                    let event = match event {
                        Ok(event) => event,
                        Err(e) => {
                            metrics.watch_error(name);
                            tracing::warn!(error = %e, "watch failed; retrying with backoff");
                            continue;
                        }
                    };
                    if matches!(event, watcher::Event::Init) {
                        before_relist = store.state();
                    }
                    writer.apply_watcher_event(&event);
                    if matches!(event, watcher::Event::InitDone) {
                        ready.send_replace(true);
                    }
                    let changed: Vec<Arc<K>> = match event {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                            reindex(&index, &o, true);
                            vec![Arc::new(o)]
                        }
                        watcher::Event::Delete(o) => {
                            reindex(&index, &o, false);
                            vec![Arc::new(o)]
                        }
                        watcher::Event::Init => Vec::new(),
                        watcher::Event::InitDone => {
                            let gone: Vec<Arc<K>> = std::mem::take(&mut before_relist)
                                .into_iter()
                                .filter(|o| store.get(&ObjectRef::from_obj(o.as_ref())).is_none())
                                .collect();
                            for o in &gone {
                                reindex(&index, o, false);
                            }
                            gone
                        }
                    };
                    if !changed.is_empty() {
                        for n in &notifiers {
                            n.notify_one();
                        }
                    }
                    for obj in changed {
                        for tx in &mut subscribers {
                            let _ = tx.send(obj.clone()).await;
                        }
                    }
                }
            },
            span,
        ));
    }
}

/// Keep the owner index in step with one object: drop its old entry, add the new one.
fn reindex<K>(index: &Index<K>, obj: &K, present: bool)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let r = ObjectRef::from_obj(obj);
    let key = owner_key(obj);
    let mut index = index.write().expect("index lock");
    let index = &mut *index;
    // An object's controller can change (adoption, release): leave the old set first.
    if let Some(old) = index.key_of.remove(&r)
        && let Some(set) = index.by_key.get_mut(&old)
    {
        set.remove(&r);
        if set.is_empty() {
            index.by_key.remove(&old);
        }
    }
    if present {
        index
            .by_key
            .entry(key.clone())
            .or_default()
            .insert(r.clone());
        index.key_of.insert(r, key);
    }
}

/// Every cache the controllers share.
pub(crate) struct Informers {
    pub(crate) pods: Informer<Pod>,
    pub(crate) nodes: Informer<Node>,
    pub(crate) namespaces: Informer<Namespace>,
    pub(crate) replicasets: Informer<ReplicaSet>,
    pub(crate) deployments: Informer<Deployment>,
    pub(crate) daemonsets: Informer<DaemonSet>,
    pub(crate) statefulsets: Informer<StatefulSet>,
    pub(crate) jobs: Informer<Job>,
    pub(crate) cronjobs: Informer<CronJob>,
    pub(crate) revisions: Informer<ControllerRevision>,
    pub(crate) services: Informer<Service>,
}

impl Informers {
    pub(crate) fn new(client: &kube::Client) -> Self {
        Informers {
            pods: Informer::new(Api::all(client.clone())),
            nodes: Informer::new(Api::all(client.clone())),
            namespaces: Informer::new(Api::all(client.clone())),
            replicasets: Informer::new(Api::all(client.clone())),
            deployments: Informer::new(Api::all(client.clone())),
            daemonsets: Informer::new(Api::all(client.clone())),
            statefulsets: Informer::new(Api::all(client.clone())),
            jobs: Informer::new(Api::all(client.clone())),
            cronjobs: Informer::new(Api::all(client.clone())),
            revisions: Informer::new(Api::all(client.clone())),
            services: Informer::new(Api::all(client.clone())),
        }
    }

    /// Start every watch; call after every controller subscribed.
    pub(crate) fn start(
        &mut self,
        metrics: &ControllerMetrics,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) {
        let m = metrics;
        let s = shutdown;
        self.pods.start("pods", m.clone(), tasks, s.clone());
        self.nodes.start("nodes", m.clone(), tasks, s.clone());
        self.namespaces
            .start("namespaces", m.clone(), tasks, s.clone());
        self.replicasets
            .start("replicasets", m.clone(), tasks, s.clone());
        self.deployments
            .start("deployments", m.clone(), tasks, s.clone());
        self.daemonsets
            .start("daemonsets", m.clone(), tasks, s.clone());
        self.statefulsets
            .start("statefulsets", m.clone(), tasks, s.clone());
        self.jobs.start("jobs", m.clone(), tasks, s.clone());
        self.cronjobs.start("cronjobs", m.clone(), tasks, s.clone());
        self.revisions
            .start("controllerrevisions", m.clone(), tasks, s.clone());
        self.services.start("services", m.clone(), tasks, s.clone());
    }
}

/// The object a change should wake: the controller owner of `obj` if it is of kind `kind`.
pub(crate) fn controller_of<K: Resource, O: Resource<DynamicType = ()>>(
    obj: &K,
) -> Option<ObjectRef<O>> {
    let owner = obj
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))?;
    (owner.kind == O::kind(&()) && owner.api_version == O::api_version(&()))
        .then(|| ObjectRef::new(&owner.name).within(&obj.namespace().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    /// A client that never reaches a server (the informer's watch is not started here).
    fn offline_client() -> kube::Client {
        let service = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(kube::client::Body::empty()))
        });
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn every_task_waiting_for_readiness_is_woken() {
        let informer: Informer<ConfigMap> = Informer::new(Api::all(offline_client()));
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let cache = informer.cache();
                tokio::spawn(async move { cache.ready().await })
            })
            .collect();
        // Let every waiter register before readiness arrives (kube's own wait would wake only
        // the last one of them).
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        informer.ready.send_replace(true);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .expect("no panic");
        }
        // A late reader returns at once.
        informer.cache().ready().await;
    }
}
