//! The garbage collector: deletes objects whose owners are gone (Background propagation),
//! deletes the dependents of an owner deleted with Foreground propagation before letting the
//! owner go (the `foregroundDeletion` finalizer, waiting on `blockOwnerDeletion` dependents),
//! and strips owner references from the dependents of an owner deleted with Orphan
//! propagation (the `orphan` finalizer).
//!
//! It works from the shared informers' caches (pods, workloads, revisions, nodes), re-examined
//! a moment after any change, plus a periodic list of the other kinds that carry owner
//! references (ConfigMaps, Secrets, Services…). An owner missing from the caches is confirmed
//! with a live GET before anything is deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{self, Scope};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::informers::Cache;
use crate::metrics::ControllerMetrics;

const NAME: &str = "garbagecollector";
/// Quiet time after a change before a pass (changes come in bursts).
const SETTLE: Duration = Duration::from_millis(200);
/// A pass at least this often, and the other kinds re-listed this often.
const RESYNC: Duration = Duration::from_secs(30);
/// Do not repeat the same write on one object sooner than this.
const REPEAT_AFTER: Duration = Duration::from_secs(10);

/// One object as the collector sees it.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
    uid: String,
    resource_version: Option<String>,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

fn node_of<K: Resource<DynamicType = ()>>(obj: &K) -> Node {
    let meta = obj.meta();
    Node {
        resource: ApiResource::erase::<K>(&()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone(),
        owners: meta.owner_references.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    }
}

/// A cache the collector reads, type-erased.
pub(crate) type Source = Box<dyn Fn() -> Vec<Node> + Send + Sync>;

pub(crate) fn source<K>(cache: Cache<K>) -> Source
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    Box::new(move || cache.all().iter().map(|o| node_of(o.as_ref())).collect())
}

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) sources: Vec<Source>,
    /// Waits for every cache's first list.
    pub(crate) ready: futures::future::BoxFuture<'static, ()>,
}

/// Run until `shutdown`; `changes` wakes the collector when any cached object changes.
pub(crate) async fn run(
    ctx: Ctx,
    changes: Arc<tokio::sync::Notify>,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let Ctx {
        client,
        sources,
        ready,
    } = ctx;
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = ready => {}
    }
    let mut gc = Collector {
        client,
        sources,
        others: Vec::new(),
        others_listed: None,
        acted: HashMap::new(),
        kinds: HashMap::new(),
    };
    tracing::info!(controller = NAME, "controller started");
    loop {
        let span = tracing::info_span!("reconcile", controller = NAME);
        let started = Instant::now();
        let result = tracing::Instrument::instrument(gc.pass(), span).await;
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => metrics.observe(NAME, "success", secs),
            Err(e) => {
                metrics.observe(NAME, "error", secs);
                tracing::warn!(controller = NAME, error = %e, "garbage collection pass failed");
            }
        }
        // Wait for a change (then let the burst settle), or the resync period. Changes are
        // coalesced wake-ups, so a long pass never holds the informers up.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changes.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(SETTLE) => {}
        }
    }
    tracing::info!(controller = NAME, "controller stopped");
}

struct Collector {
    client: kube::Client,
    sources: Vec<Source>,
    /// Objects of the periodically listed kinds.
    others: Vec<Node>,
    others_listed: Option<Instant>,
    /// (uid, action) → when last done, so a pending delete is not re-sent every pass.
    acted: HashMap<(String, &'static str), Instant>,
    /// apiVersion/kind → resource, for owners of kinds outside the caches.
    kinds: HashMap<(String, String), Option<(ApiResource, bool)>>,
}

/// The kinds listed periodically rather than watched.
fn other_kinds() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Endpoints>(&()),
        ApiResource::erase::<PersistentVolumeClaim>(&()),
        ApiResource::erase::<HorizontalPodAutoscaler>(&()),
    ]
}

impl Collector {
    async fn pass(&mut self) -> Result<(), kube::Error> {
        if self.others_listed.is_none_or(|t| t.elapsed() >= RESYNC) {
            self.others = self.list_others().await;
            self.others_listed = Some(Instant::now());
        }
        self.acted.retain(|_, t| t.elapsed() < REPEAT_AFTER);
        let mut nodes: Vec<Node> = self.sources.iter().flat_map(|s| s()).collect();
        nodes.extend(self.others.iter().cloned());
        let by_uid: HashMap<&str, &Node> = nodes.iter().map(|n| (n.uid.as_str(), n)).collect();
        let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
        for n in &nodes {
            for o in &n.owners {
                dependents.entry(o.uid.as_str()).or_default().push(n);
            }
        }
        // One object's failure must not stop the pass: everything after it would wait too.
        let mut first_error: Option<kube::Error> = None;
        let mut note = |n: &Node, result: Result<(), kube::Error>| {
            if let Err(e) = result {
                tracing::warn!(kind = %n.resource.kind, namespace = ?n.namespace, name = %n.name, error = %e, "garbage collection of one object failed; retrying later");
                first_error.get_or_insert(e);
            }
        };
        let empty = Vec::new();
        for owner in nodes.iter().filter(|n| n.deleting) {
            let deps = dependents.get(owner.uid.as_str()).unwrap_or(&empty);
            if owner.finalizers.iter().any(|f| f == "orphan") {
                note(owner, self.orphan(owner, deps).await);
            } else if owner.finalizers.iter().any(|f| f == "foregroundDeletion") {
                note(owner, self.foreground(owner, deps).await);
            }
        }
        let mut lookups: HashMap<String, bool> = HashMap::new();
        for n in nodes.iter().filter(|n| !n.owners.is_empty()) {
            let mut dangling = Vec::new();
            for o in &n.owners {
                let present = match by_uid.get(o.uid.as_str()) {
                    Some(_) => true,
                    None => match lookups.get(&o.uid) {
                        Some(p) => *p,
                        None => {
                            // When the owner cannot be looked up, assume it exists: deleting
                            // on a guess would be worse than waiting a pass.
                            let p = match self.owner_exists(n, o).await {
                                Ok(p) => p,
                                Err(e) => {
                                    note(n, Err(e));
                                    true
                                }
                            };
                            lookups.insert(o.uid.clone(), p);
                            p
                        }
                    },
                };
                if !present {
                    dangling.push(o.uid.clone());
                }
            }
            if dangling.is_empty() {
                continue;
            }
            if dangling.len() == n.owners.len() {
                if !n.deleting {
                    note(n, self.delete(n, "Background").await);
                }
            } else {
                let keep: Vec<&OwnerReference> = n
                    .owners
                    .iter()
                    .filter(|o| !dangling.contains(&o.uid))
                    .collect();
                note(n, self.set_owners(n, json!(keep)).await);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Orphan: take the owner's reference off every dependent, then release the owner.
    async fn orphan(&mut self, owner: &Node, deps: &[&Node]) -> Result<(), kube::Error> {
        for d in deps {
            let keep: Vec<&OwnerReference> =
                d.owners.iter().filter(|o| o.uid != owner.uid).collect();
            self.set_owners(d, json!(keep)).await?;
        }
        self.remove_finalizer(owner, "orphan").await
    }

    /// Foreground: delete every dependent; the owner goes once no dependent that blocks owner
    /// deletion remains.
    async fn foreground(&mut self, owner: &Node, deps: &[&Node]) -> Result<(), kube::Error> {
        let mut blocking = false;
        for d in deps {
            let blocks = d
                .owners
                .iter()
                .any(|o| o.uid == owner.uid && o.block_owner_deletion == Some(true));
            blocking |= blocks;
            if !d.deleting {
                self.delete(d, "Foreground").await?;
            }
        }
        if !blocking {
            self.remove_finalizer(owner, "foregroundDeletion").await?;
        }
        Ok(())
    }

    fn api(&self, n: &Node) -> Api<DynamicObject> {
        match &n.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &n.resource),
            None => Api::all_with(self.client.clone(), &n.resource),
        }
    }

    fn first_time(&mut self, uid: &str, action: &'static str) -> bool {
        let key = (uid.to_owned(), action);
        if self.acted.contains_key(&key) {
            return false;
        }
        self.acted.insert(key, Instant::now());
        true
    }

    async fn delete(&mut self, n: &Node, policy: &str) -> Result<(), kube::Error> {
        if !self.first_time(&n.uid, "delete") {
            return Ok(());
        }
        let params = DeleteParams {
            propagation_policy: Some(if policy == "Foreground" {
                kube::api::PropagationPolicy::Foreground
            } else {
                kube::api::PropagationPolicy::Background
            }),
            preconditions: Some(kube::api::Preconditions {
                uid: Some(n.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        tracing::info!(kind = %n.resource.kind, namespace = ?n.namespace, name = %n.name, policy, "deleting object whose owners are gone");
        match self.api(n).delete(&n.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn set_owners(&mut self, n: &Node, owners: serde_json::Value) -> Result<(), kube::Error> {
        if !self.first_time(&n.uid, "owners") {
            return Ok(());
        }
        let patch = json!({"metadata": {
            "ownerReferences": if owners.as_array().is_some_and(Vec::is_empty) { serde_json::Value::Null } else { owners },
            "uid": n.uid,
            "resourceVersion": n.resource_version,
        }});
        match self
            .api(n)
            .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                // Changed meanwhile: try again on the next pass.
                self.acted.remove(&(n.uid.clone(), "owners"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn remove_finalizer(&mut self, n: &Node, finalizer: &str) -> Result<(), kube::Error> {
        if !self.first_time(&n.uid, "finalizer") {
            return Ok(());
        }
        let rest: Vec<&String> = n.finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {
            "finalizers": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
            "uid": n.uid,
            "resourceVersion": n.resource_version,
        }});
        match self
            .api(n)
            .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.acted.remove(&(n.uid.clone(), "finalizer"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether an owner missing from the caches really is gone: a live GET by its kind, in the
    /// dependent's namespace when the kind is namespaced, with the uid compared.
    async fn owner_exists(
        &mut self,
        dependent: &Node,
        owner: &OwnerReference,
    ) -> Result<bool, kube::Error> {
        let key = (owner.api_version.clone(), owner.kind.clone());
        if !self.kinds.contains_key(&key) {
            let (group, version) = match owner.api_version.split_once('/') {
                Some((g, v)) => (g.to_owned(), v.to_owned()),
                None => (String::new(), owner.api_version.clone()),
            };
            let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &owner.kind);
            let resolved = match discovery::pinned_kind(&self.client, &gvk).await {
                Ok((ar, caps)) => Some((ar, caps.scope == Scope::Namespaced)),
                Err(e) => {
                    tracing::debug!(error = %e, kind = %owner.kind, "owner kind not served");
                    None
                }
            };
            self.kinds.insert(key.clone(), resolved);
        }
        // A kind the server does not serve cannot own anything.
        let Some((ar, namespaced)) = self.kinds.get(&key).cloned().flatten() else {
            return Ok(false);
        };
        let api: Api<DynamicObject> = match (&dependent.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (None, true) => return Ok(false),
            (_, false) => Api::all_with(self.client.clone(), &ar),
        };
        Ok(api
            .get_opt(&owner.name)
            .await?
            .is_some_and(|o| o.uid().as_deref() == Some(owner.uid.as_str())))
    }

    async fn list_others(&self) -> Vec<Node> {
        let mut out = Vec::new();
        for ar in other_kinds() {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
            match api.list(&ListParams::default()).await {
                Ok(list) => out.extend(list.items.into_iter().filter_map(|o| {
                    let owners = o.metadata.owner_references.clone().unwrap_or_default();
                    // Only objects that have owners or are being deleted matter here.
                    (!owners.is_empty() || o.metadata.deletion_timestamp.is_some()).then(|| Node {
                        resource: ar.clone(),
                        namespace: o.metadata.namespace.clone(),
                        name: o.name_any(),
                        uid: o.metadata.uid.clone().unwrap_or_default(),
                        resource_version: o.metadata.resource_version.clone(),
                        owners,
                        deleting: o.metadata.deletion_timestamp.is_some(),
                        finalizers: o.metadata.finalizers.clone().unwrap_or_default(),
                    })
                })),
                Err(e) => {
                    tracing::debug!(kind = %ar.kind, error = %e, "listing for garbage collection failed")
                }
            }
        }
        out
    }
}
