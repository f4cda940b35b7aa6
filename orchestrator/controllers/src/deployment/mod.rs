//! The Deployment controller: rolls a pod template out through ReplicaSets named
//! `<deployment>-<pod-template-hash>`, RollingUpdate (maxSurge/maxUnavailable) or Recreate;
//! keeps revisions (`deployment.kubernetes.io/revision`, reused on undo), honours pause, trims
//! history to revisionHistoryLimit, and reports the status `kubectl rollout status` reads.

pub(crate) mod revisions;
mod rollout;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use skiff_events::EventRecorder;
use tokio_util::sync::CancellationToken;

use crate::informers::{Cache, controller_of};
use crate::metrics::ControllerMetrics;
use crate::runner::{self, ReconcileError};
use crate::workload;
use crate::workqueue::WorkQueue;
use revisions::{DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS, REVISION};
use rollout::Rs;
use status::Phase;

const NAME: &str = "deployment";

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) deployments: Cache<Deployment>,
    pub(crate) replicasets: Cache<ReplicaSet>,
    pub(crate) pods: Cache<Pod>,
    pub(crate) events: EventRecorder,
}

/// Run until `shutdown`; the streams are informer subscriptions.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    deployments: impl Stream<Item = Arc<Deployment>> + Send + 'static,
    replicasets: impl Stream<Item = Arc<ReplicaSet>> + Send + 'static,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let c = ctx.clone();
    let from_rs = replicasets.flat_map(move |rs| futures::stream::iter(owners_of(&rs, &c)));
    // A pod going away can unblock a Recreate rollout waiting for the old pods to stop.
    let c = ctx.clone();
    let from_pods = pods.filter_map(move |pod| {
        let ns = pod.namespace();
        let gone = c.pods.get(ns.as_deref(), &pod.name_any()).is_none();
        let owner = controller_of::<Pod, ReplicaSet>(&pod)
            .filter(|_| gone)
            .and_then(|r| c.replicasets.get(ns.as_deref(), &r.name))
            .and_then(|rs| controller_of::<ReplicaSet, Deployment>(rs.as_ref()));
        futures::future::ready(owner)
    });
    let queue = WorkQueue::new(NAME, metrics);
    let controller = Controller::for_stream(queue.objects(deployments), ctx.deployments.store())
        .reconcile_on(queue.refs(from_rs))
        .reconcile_on(queue.refs(from_pods));
    runner::run_controller(
        queue,
        controller,
        move |d| reconcile(d, ctx.clone()),
        shutdown,
    )
    .await;
}

/// The Deployments a ReplicaSet change concerns: its controller, or for an orphan every
/// Deployment in its namespace that would adopt it.
fn owners_of(rs: &ReplicaSet, ctx: &Ctx) -> Vec<ObjectRef<Deployment>> {
    if let Some(owner) = controller_of::<ReplicaSet, Deployment>(rs) {
        return vec![owner];
    }
    if workload::controller_of(&rs.metadata).is_some() {
        return Vec::new();
    }
    let ns = rs.namespace();
    ctx.deployments
        .all()
        .into_iter()
        .filter(|d| d.namespace() == ns)
        .filter(|d| {
            let selector = workload::compile(d.spec.as_ref().map(|s| &s.selector));
            workload::selects(&selector, rs.metadata.labels.as_ref())
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// One reconciliation's view: the deployment and its ReplicaSets, updated as we write.
struct Sync {
    ctx: Arc<Ctx>,
    d: Deployment,
    rs_api: Api<ReplicaSet>,
    /// Owned ReplicaSets, oldest first.
    rss: Vec<ReplicaSet>,
    desired: i32,
    surge: i32,
    unavailable: i32,
    created: Option<String>,
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.replicasets.ready().await;
    ctx.pods.ready().await;
    let ns = d.namespace().unwrap_or_default();
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let selector = workload::compile(Some(&spec.selector));
    if selector.is_empty() {
        ctx.events.object(
            workload::object_ref(d.as_ref()),
            "Warning",
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.",
        );
        return Ok(Action::await_change());
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = d.uid().unwrap_or_default();
    let claimed = workload::claim(
        &rs_api,
        d.as_ref(),
        &selector,
        ctx.replicasets.owned_by(&uid),
        ctx.replicasets.orphans_in(&ns),
    )
    .await?;
    let mut rss: Vec<ReplicaSet> = claimed.iter().map(|r| r.as_ref().clone()).collect();
    rss.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let (surge, unavailable) = rollout::fenceposts(&d);
    let sync = Sync {
        ctx: ctx.clone(),
        d: d.as_ref().clone(),
        rs_api,
        rss,
        desired: spec.replicas.unwrap_or(1),
        surge,
        unavailable,
        created: None,
    };
    if d.metadata.deletion_timestamp.is_some() {
        return sync.write_status(Phase::Sync).await;
    }
    let paused = spec.paused.unwrap_or(false);
    if paused || sync.is_scaling_event() {
        return sync.resize().await;
    }
    if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        sync.recreate().await
    } else {
        sync.rolling().await
    }
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn view(rs: &ReplicaSet) -> Rs {
    Rs {
        name: rs.name_any(),
        replicas: replicas(rs),
        available: rs
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0),
    }
}

impl Sync {
    fn template(&self) -> Option<&k8s_openapi::api::core::v1::PodTemplateSpec> {
        self.d.spec.as_ref().map(|s| &s.template)
    }

    /// Index of the ReplicaSet running the current template (the oldest such).
    fn new_index(&self) -> Option<usize> {
        let template = self.template()?;
        self.rss
            .iter()
            .position(|rs| revisions::runs_template(rs, template))
    }

    fn old_indices(&self) -> Vec<usize> {
        let new = self.new_index();
        (0..self.rss.len()).filter(|i| Some(*i) != new).collect()
    }

    /// A resize of the deployment (not a template change): an active ReplicaSet was sized for
    /// a different replica count.
    fn is_scaling_event(&self) -> bool {
        self.rss
            .iter()
            .filter(|rs| replicas(rs) > 0)
            .any(|rs| revisions::desired_annotation(rs) != Some(self.desired))
    }

    async fn rolling(mut self) -> Result<Action, ReconcileError> {
        let new = match self.new_index() {
            Some(i) => {
                self.sync_revision(i).await?;
                i
            }
            None => {
                let views: Vec<Rs> = self.rss.iter().map(view).collect();
                let zero = Rs {
                    name: String::new(),
                    replicas: 0,
                    available: 0,
                };
                let initial = rollout::new_rs_target(self.desired, self.surge, &views, &zero);
                self.create_new(initial).await?
            }
        };
        let views: Vec<Rs> = self.rss.iter().map(view).collect();
        let new_view = views[new].clone();
        let target = if new_view.replicas > self.desired {
            self.desired
        } else {
            rollout::new_rs_target(self.desired, self.surge, &views, &new_view)
        };
        if target != new_view.replicas {
            self.scale(new, target).await?;
            return self.write_status(Phase::Rollout).await;
        }
        let old = self.old_indices();
        let old_views: Vec<Rs> = old.iter().map(|i| views[*i].clone()).collect();
        let targets = rollout::old_rs_targets(
            self.desired,
            self.unavailable,
            &views,
            &new_view,
            &old_views,
        );
        let mut scaled = false;
        for (i, target) in old.iter().zip(targets) {
            if target != views[*i].replicas {
                self.scale(*i, target).await?;
                scaled = true;
            }
        }
        if !scaled {
            self.cleanup_if_complete().await?;
        }
        self.write_status(Phase::Rollout).await
    }

    async fn recreate(mut self) -> Result<Action, ReconcileError> {
        let mut scaled = false;
        for i in self.old_indices() {
            if replicas(&self.rss[i]) > 0 {
                self.scale(i, 0).await?;
                scaled = true;
            }
        }
        if scaled {
            return self.write_status(Phase::Rollout).await;
        }
        // Recreate means no old pod runs alongside a new one: wait until they are gone.
        let old_running = self.old_indices().iter().any(|i| {
            let uid = self.rss[*i].uid().unwrap_or_default();
            self.ctx
                .pods
                .owned_by(&uid)
                .iter()
                .any(|p| !workload::is_terminal(p))
        });
        if old_running {
            return self.write_status(Phase::Rollout).await;
        }
        match self.new_index() {
            Some(i) => {
                self.sync_revision(i).await?;
                if replicas(&self.rss[i]) != self.desired {
                    self.scale(i, self.desired).await?;
                }
            }
            None => {
                self.create_new(self.desired).await?;
            }
        }
        self.cleanup_if_complete().await?;
        self.write_status(Phase::Rollout).await
    }

    /// Paused, or resized mid-rollout: size the ReplicaSets without starting a new rollout.
    async fn resize(mut self) -> Result<Action, ReconcileError> {
        if let Some(i) = self.new_index() {
            self.sync_revision(i).await?;
        }
        let active: Vec<usize> = (0..self.rss.len())
            .filter(|i| replicas(&self.rss[*i]) > 0)
            .collect();
        let new = self.new_index();
        if active.len() <= 1 {
            // One ReplicaSet carries the deployment: the active one, else the new, else the
            // newest.
            let target = active
                .first()
                .copied()
                .or(new)
                .or_else(|| self.rss.len().checked_sub(1));
            if let Some(i) = target {
                self.scale(i, self.desired).await?;
            }
        } else if let Some(n) = new.filter(|n| {
            let v = view(&self.rss[*n]);
            v.replicas == self.desired && v.available >= self.desired
        }) {
            // The new ReplicaSet is saturated: the old ones can go.
            for i in active.into_iter().filter(|i| *i != n) {
                self.scale(i, 0).await?;
            }
        } else {
            let allowed = if self.desired > 0 {
                self.desired + self.surge
            } else {
                0
            };
            let views: Vec<Rs> = active.iter().map(|i| view(&self.rss[*i])).collect();
            let sizes = rollout::proportional(allowed, &views);
            for (i, size) in active.into_iter().zip(sizes) {
                self.scale(i, size).await?;
            }
        }
        if self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup().await?;
        }
        self.write_status(Phase::Sync).await
    }

    /// Set a ReplicaSet's size and its desired/max annotations, with a ScalingReplicaSet event.
    async fn scale(&mut self, i: usize, size: i32) -> Result<(), ReconcileError> {
        let rs = &self.rss[i];
        let from = replicas(rs);
        let max = (self.desired + self.surge).to_string();
        let desired = self.desired.to_string();
        let annotations = rs.metadata.annotations.clone().unwrap_or_default();
        if from == size
            && annotations.get(DESIRED_REPLICAS) == Some(&desired)
            && annotations.get(MAX_REPLICAS) == Some(&max)
        {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": size},
        });
        let name = rs.name_any();
        let updated = self
            .rs_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.rss[i] = updated;
        if from != size {
            let direction = if size > from { "up" } else { "down" };
            self.ctx.events.object(
                workload::object_ref(&self.d),
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {name} from {from} to {size}"),
            );
        }
        Ok(())
    }

    /// Give the current ReplicaSet the newest revision (an undo reuses an old one) and copy the
    /// deployment's annotations to it; record the revision on the deployment.
    async fn sync_revision(&mut self, i: usize) -> Result<(), ReconcileError> {
        let max_old = self
            .old_indices()
            .iter()
            .map(|j| revisions::revision(&self.rss[*j]))
            .max()
            .unwrap_or(0);
        let rs = &self.rss[i];
        let revision = revisions::revision(rs).max(max_old + 1);
        let annotations = revisions::rs_annotations(&self.d, Some(rs), revision);
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if Some(&annotations) != rs.metadata.annotations.as_ref()
            || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0)
        {
            let patch = json!({
                "metadata": {"annotations": annotations},
                "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
            });
            let name = rs.name_any();
            self.rss[i] = self
                .rs_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        self.set_deployment_revision(revisions::revision(&self.rss[i]))
            .await
    }

    async fn set_deployment_revision(&mut self, revision: i64) -> Result<(), ReconcileError> {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned();
        if current == Some(revision.to_string()) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        let patch = json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
        let updated = api
            .patch(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        // Keep the status we are about to compute based on what we read.
        self.d.metadata = updated.metadata;
        Ok(())
    }

    /// Create the ReplicaSet for the current template with `initial` replicas; returns its index.
    async fn create_new(&mut self, initial: i32) -> Result<usize, ReconcileError> {
        let Some(mut template) = self.template().cloned() else {
            return Err(ReconcileError::Other("deployment has no template".into()));
        };
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = revisions::template_hash(&template, collisions);
        let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let labels = meta.labels.clone();
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let revision = self.rss.iter().map(revisions::revision).max().unwrap_or(0) + 1;
        let mut annotations = revisions::rs_annotations(&self.d, None, revision);
        annotations.insert(DESIRED_REPLICAS.into(), self.desired.to_string());
        annotations.insert(MAX_REPLICAS.into(), (self.desired + self.surge).to_string());
        let name = format!("{}-{hash}", self.d.name_any());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels,
                annotations: Some(annotations),
                owner_references: Some(vec![workload::controller_ref(&self.d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(initial),
                min_ready_seconds: self.d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let created = match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Ours from an earlier pass whose event we have not seen, or a hash collision.
                let existing = self.rs_api.get(&name).await?;
                let ours = workload::controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = self
                    .template()
                    .is_some_and(|t| revisions::runs_template(&existing, t));
                if ours && same {
                    self.rss.push(existing);
                    return Ok(self.rss.len() - 1);
                }
                self.bump_collision_count().await?;
                return Err(ReconcileError::Other(format!(
                    "replica set {name} exists with another template; collisionCount raised"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if initial > 0 {
            self.ctx.events.object(
                workload::object_ref(&self.d),
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {initial}"),
            );
        }
        self.created = Some(name);
        self.rss.push(created);
        self.set_deployment_revision(revision).await?;
        Ok(self.rss.len() - 1)
    }

    async fn bump_collision_count(&self) -> Result<(), ReconcileError> {
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        let count = self
            .d
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0)
            + 1;
        api.patch_status(
            &self.d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"collisionCount": count}})),
        )
        .await?;
        Ok(())
    }

    async fn cleanup_if_complete(&mut self) -> Result<(), ReconcileError> {
        let new = self.new_index().map(|i| &self.rss[i]);
        let all: Vec<&ReplicaSet> = self.rss.iter().collect();
        let (status, _) = status::compute(
            &self.d,
            &all,
            new,
            self.unavailable,
            Phase::Sync,
            jiff::Timestamp::now(),
        );
        if status::complete(&self.d, &status) {
            self.cleanup().await?;
        }
        Ok(())
    }

    /// Delete the oldest scaled-down ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&mut self) -> Result<(), ReconcileError> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut cleanable: Vec<usize> = self
            .old_indices()
            .into_iter()
            .filter(|i| {
                let rs = &self.rss[*i];
                let status = rs.status.as_ref();
                replicas(rs) == 0
                    && status.map(|s| s.replicas).unwrap_or(0) == 0
                    && status.and_then(|s| s.observed_generation).unwrap_or(0)
                        >= rs.metadata.generation.unwrap_or(0)
                    && rs.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if cleanable.len() <= limit {
            return Ok(());
        }
        cleanable.sort_by_key(|i| revisions::revision(&self.rss[*i]));
        let excess = cleanable.len() - limit;
        let mut gone = Vec::new();
        for i in cleanable.into_iter().take(excess) {
            let name = self.rss[i].name_any();
            match self.rs_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => gone.push(i),
                Err(kube::Error::Api(e)) if e.code == 404 => gone.push(i),
                Err(e) => return Err(e.into()),
            }
        }
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            self.rss.remove(i);
        }
        Ok(())
    }

    async fn write_status(self, phase: Phase) -> Result<Action, ReconcileError> {
        let now = jiff::Timestamp::now();
        let mut d = self.d.clone();
        if let Some(name) = &self.created {
            let mut st = d.status.clone().unwrap_or_default();
            status::created(&mut st, name, now);
            d.status = Some(st);
        }
        let new = self.new_index().map(|i| &self.rss[i]);
        let all: Vec<&ReplicaSet> = self.rss.iter().collect();
        let (new_status, recheck) = status::compute(&d, &all, new, self.unavailable, phase, now);
        if Some(&new_status) != self.d.status.as_ref() {
            let api: Api<Deployment> =
                Api::namespaced(self.ctx.client.clone(), &d.namespace().unwrap_or_default());
            let body = json!({ "status": status_json(&new_status) });
            match api
                .patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(recheck.map_or_else(Action::await_change, Action::requeue))
    }
}

/// The status as JSON with every counter present (a merge patch must overwrite stale ones).
fn status_json(s: &DeploymentStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    for k in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ] {
        if v.get(k).is_none() {
            v[k] = json!(0);
        }
    }
    v
}
