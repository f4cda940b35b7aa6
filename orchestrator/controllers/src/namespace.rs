//! The namespace controller: a namespace being deleted (phase Terminating) has everything in
//! it deleted; when nothing is left its `kubernetes` finalizer is removed through
//! `namespaces/{name}/finalize` and the API server lets it go. Its conditions say what is
//! still there, worded as upstream (NamespaceContentRemaining, NamespaceFinalizersRemaining).

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::informers::Cache;
use crate::metrics::ControllerMetrics;
use crate::runner::{self, ReconcileError};
use crate::workqueue::WorkQueue;

const NAME: &str = "namespace";
const FINALIZER: &str = "kubernetes";

pub(crate) struct Ctx {
    pub(crate) client: kube::Client,
    pub(crate) namespaces: Cache<Namespace>,
    /// Namespaced kinds that can be listed and deleted, discovered once.
    pub(crate) kinds: OnceCell<Vec<ApiResource>>,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    namespaces: impl Stream<Item = Arc<Namespace>> + Send + 'static,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let queue = WorkQueue::new(NAME, metrics);
    let controller = Controller::for_stream(queue.objects(namespaces), ctx.namespaces.store());
    runner::run_controller(
        queue,
        controller,
        move |ns| reconcile(ns, ctx.clone()),
        shutdown,
    )
    .await;
}

async fn kinds(ctx: &Ctx) -> Result<&Vec<ApiResource>, ReconcileError> {
    ctx.kinds
        .get_or_try_init(|| async {
            let discovery = Discovery::new(ctx.client.clone()).run().await?;
            let mut out = Vec::new();
            for group in discovery.groups() {
                for (ar, caps) in group.recommended_resources() {
                    if caps.scope == Scope::Namespaced
                        && caps.supports_operation(verbs::LIST)
                        && caps.supports_operation(verbs::DELETE)
                    {
                        out.push(ar);
                    }
                }
            }
            Ok::<_, ReconcileError>(out)
        })
        .await
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let has_finalizer = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if ns.metadata.deletion_timestamp.is_none() || !has_finalizer {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let mut remaining: Vec<String> = Vec::new();
    let mut finalizers: Vec<String> = Vec::new();
    for ar in kinds(&ctx).await? {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, ar);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
            Err(e) => return Err(e.into()),
        };
        if list.items.is_empty() {
            continue;
        }
        // Upstream's wording, including `pods. has` for the core group.
        remaining.push(format!(
            "{}.{} has {} resource instances",
            ar.plural,
            ar.group,
            list.items.len()
        ));
        for obj in &list.items {
            finalizers.extend(obj.metadata.finalizers.iter().flatten().cloned());
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match api
                .delete(&obj.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if !remaining.is_empty() {
        set_conditions(&api, &ns, &remaining, &finalizers).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut done = ns.as_ref().clone();
    if let Some(spec) = done.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .iter()
                .flatten()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect(),
        );
    }
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &done)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

async fn set_conditions(
    api: &Api<Namespace>,
    ns: &Namespace,
    remaining: &[String],
    finalizers: &[String],
) -> Result<(), ReconcileError> {
    let now = skiff_api::time::now_rfc3339();
    let mut finalizers: Vec<&String> = finalizers.iter().collect();
    finalizers.sort();
    finalizers.dedup();
    let content = json!({
        "type": "NamespaceContentRemaining", "status": "True", "reason": "SomeResourcesRemain",
        "message": format!("Some resources are remaining: {}", remaining.join(", ")),
        "lastTransitionTime": now,
    });
    let mut conditions = vec![content];
    if !finalizers.is_empty() {
        let list: Vec<String> = finalizers
            .iter()
            .map(|f| format!("{f} in resource instances"))
            .collect();
        conditions.push(json!({
            "type": "NamespaceFinalizersRemaining", "status": "True", "reason": "SomeFinalizersRemain",
            "message": format!("Some content in the namespace has finalizers remaining: {}", list.join(", ")),
            "lastTransitionTime": now,
        }));
    }
    let current = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().map(|c| c.message.clone()).collect::<Vec<_>>());
    let wanted: Vec<Option<String>> = conditions
        .iter()
        .map(|c| c["message"].as_str().map(str::to_owned))
        .collect();
    if current.as_ref() == Some(&wanted) {
        return Ok(());
    }
    match api
        .patch_status(
            &ns.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": conditions}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
