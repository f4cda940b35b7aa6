//! ControllerRevisions: the template history of DaemonSets and StatefulSets. Each distinct pod
//! template is stored once, as `<owner>-<hash>` holding the strategic-merge patch that restores
//! it (what `kubectl rollout undo` applies), with a revision number; returning to an old template
//! gives its revision the next number, and revisions beyond revisionHistoryLimit that no pod
//! uses are deleted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::deployment::revisions::template_hash;
use crate::runner::ReconcileError;
use crate::workload;

/// The label naming a pod's (and a revision's) template hash.
pub(crate) const HASH_LABEL: &str = "controller-revision-hash";

/// What a revision stores: the patch that puts this template back.
fn data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    t["$patch"] = json!("replace");
    json!({"spec": {"template": t}})
}

pub(crate) fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(obj) = t.as_object_mut() {
        obj.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The current revision of `owner`'s template: found (and renumbered if an older one came
/// back) or created. Returns (hash, revision number).
pub(crate) async fn current<K>(
    api: &Api<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    owned: &[Arc<ControllerRevision>],
) -> Result<(String, i64), ReconcileError>
where
    K: Resource<DynamicType = ()>,
{
    let max = owned.iter().map(|r| r.revision).max().unwrap_or(0);
    let matching = owned
        .iter()
        .filter(|r| template_of(r).as_ref() == Some(template))
        .max_by_key(|r| r.revision);
    if let Some(rev) = matching {
        let hash = rev
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .cloned()
            .unwrap_or_else(|| template_hash(template, collision_count));
        if rev.revision < max {
            // An undo: the old template is the newest revision again.
            let patch = json!({"revision": max + 1});
            api.patch(
                &rev.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            return Ok((hash, max + 1));
        }
        return Ok((hash, rev.revision));
    }
    let hash = template_hash(template, collision_count);
    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    let name = format!("{}-{hash}", owner.name_any());
    let rev = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: owner.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![workload::controller_ref(owner)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data(template))),
        revision: max + 1,
    };
    match api.create(&PostParams::default(), &rev).await {
        Ok(_) => Ok((hash, max + 1)),
        // Created by an earlier pass whose event has not arrived yet.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&name).await?;
            if template_of(&existing).as_ref() == Some(template) {
                Ok((hash, existing.revision))
            } else {
                Err(ReconcileError::Other(format!(
                    "controller revision {name} exists with another template"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Delete the oldest revisions beyond `limit` that no live pod runs (`in_use` hashes) and that
/// are not the current one.
pub(crate) async fn trim(
    api: &Api<ControllerRevision>,
    owned: &[Arc<ControllerRevision>],
    current_hash: &str,
    in_use: &HashSet<String>,
    limit: i32,
) -> Result<(), ReconcileError> {
    let hash_of = |r: &ControllerRevision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .cloned()
            .unwrap_or_default()
    };
    let mut old: Vec<&Arc<ControllerRevision>> = owned
        .iter()
        .filter(|r| {
            let h = hash_of(r);
            h != current_hash && !in_use.contains(&h)
        })
        .collect();
    let limit = limit.max(0) as usize;
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| r.revision);
    let excess = old.len() - limit;
    for r in old.into_iter().take(excess) {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    #[test]
    fn revision_data_round_trips_the_template() {
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".to_owned(), "agent".to_owned())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let rev = ControllerRevision {
            data: Some(RawExtension(data(&template))),
            ..Default::default()
        };
        assert_eq!(
            rev.data.as_ref().unwrap().0["spec"]["template"]["$patch"],
            "replace"
        );
        assert_eq!(template_of(&rev), Some(template));
    }
}
