//! Static pods: manifests in `--pod-manifest-path` run on this node without the API (the way
//! kubelet runs a control plane from files), and each is mirrored into the API as a read-only
//! "mirror pod" so kubectl can see it. The directory is rescanned every few seconds; a changed
//! manifest replaces its pod, a removed one stops it and deletes the mirror.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::pods::worker::{self, Update};

/// Annotation marking the source of a static pod.
pub(crate) const SOURCE: &str = "kubernetes.io/config.source";
/// Annotation with the manifest's hash (also the static pod's uid).
pub(crate) const HASH: &str = "kubernetes.io/config.hash";
/// Annotation marking a mirror pod in the API.
pub(crate) const MIRROR: &str = "kubernetes.io/config.mirror";

const RESCAN: Duration = Duration::from_secs(3);

fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Read one manifest into the pod this node runs for it.
fn load(path: &Path, node: &str) -> anyhow::Result<Pod> {
    let text = std::fs::read_to_string(path)?;
    let docs = skiff_api::yaml::parse_documents(&path.display().to_string(), &text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let [doc] = docs.as_slice() else {
        anyhow::bail!(
            "{}: a static pod manifest holds exactly one Pod",
            path.display()
        );
    };
    if doc["kind"] != "Pod" {
        anyhow::bail!("{}: kind {} is not Pod", path.display(), doc["kind"]);
    }
    let mut value = doc.clone();
    skiff_api::defaults::apply_defaults("Pod", &mut value);
    let hash = fnv(format!("{node}\n{text}").as_bytes());
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() {
        anyhow::bail!("{}: metadata.name is required", path.display());
    }
    value["metadata"]["name"] = serde_json::json!(format!("{name}-{node}"));
    if value["metadata"]["namespace"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        value["metadata"]["namespace"] = serde_json::json!("default");
    }
    value["metadata"]["uid"] = serde_json::json!(hash);
    value["metadata"]["annotations"][SOURCE] = serde_json::json!("file");
    value["metadata"]["annotations"][HASH] = serde_json::json!(hash);
    value["spec"]["nodeName"] = serde_json::json!(node);
    Ok(serde_json::from_value(value)?)
}

/// The mirror of a static pod, as created in the API.
pub(crate) fn mirror_of(pod: &Pod, node_uid: &str) -> Pod {
    let mut m = pod.clone();
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    m.status = None;
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    m.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(MIRROR.into(), hash);
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    m.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node,
            uid: node_uid.to_owned(),
            controller: Some(true),
            block_owner_deletion: None,
        },
    ]);
    m
}

/// Whether an API pod is a mirror pod (its agent runs it from a file, not from the API).
pub(crate) fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR))
}

fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    out.sort();
    out
}

/// Run the static pods in `dir` until `shutdown`.
/// The uids of the static pods the manifests on disk describe now: the pod manager must not
/// take their containers for orphans before this module has registered them (at start the two
/// race).
pub(crate) fn manifest_uids(ctx: &Ctx) -> std::collections::HashSet<String> {
    let Some(dir) = ctx.config.pod_manifest_path.as_deref() else {
        return Default::default();
    };
    manifests(dir)
        .iter()
        .filter_map(|path| load(path, &ctx.config.node_name).ok())
        .filter_map(|pod| pod.metadata.uid)
        .collect()
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    dir: PathBuf,
    node_uid: String,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("static_pods", dir = %dir.display());
    tracing::Instrument::instrument(
        async move {
            let mut running: HashMap<PathBuf, (String, Pod, mpsc::Sender<Update>)> = HashMap::new();
            let mut ticker = tokio::time::interval(RESCAN);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let files = manifests(&dir);
                for path in &files {
                    let pod = match load(path, &ctx.config.node_name) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(error = %e, "invalid static pod manifest");
                            continue;
                        }
                    };
                    let hash = pod.metadata.uid.clone().unwrap_or_default();
                    if running.get(path).is_some_and(|(h, _, _)| *h == hash) {
                        continue;
                    }
                    if let Some((_, old, tx)) = running.remove(path) {
                        let _ = tx.send(Update::Gone).await;
                        delete_mirror(&ctx, &old).await;
                    }
                    tracing::info!(pod = %pod.metadata.name.clone().unwrap_or_default(), "starting static pod");
                    let (tx, rx) = mpsc::channel(4);
                    tokio::spawn(worker::run_static(ctx.clone(), Arc::new(pod.clone()), node_uid.clone(), rx, shutdown.clone()));
                    running.insert(path.clone(), (hash, pod, tx));
                }
                let removed: Vec<PathBuf> = running.keys().filter(|p| !files.contains(p)).cloned().collect();
                for path in removed {
                    if let Some((_, pod, tx)) = running.remove(&path) {
                        tracing::info!(pod = %pod.metadata.name.clone().unwrap_or_default(), "static pod manifest removed");
                        let _ = tx.send(Update::Gone).await;
                        delete_mirror(&ctx, &pod).await;
                    }
                }
            }
        },
        span,
    )
    .await;
}

async fn delete_mirror(ctx: &Ctx, pod: &Pod) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let _ = api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
        .await;
}
