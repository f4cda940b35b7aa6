//! Pod volumes, materialized under `<pod dir>/volumes/<plugin>/<name>` as kubelet lays them out:
//! emptyDir, hostPath (with its `type` checks), configMap and secret (keys as files, `items`,
//! modes, written atomically through a `..data` symlink so updates are seen whole),
//! downwardAPI, and persistentVolumeClaim bound to a hostPath PersistentVolume.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use kube::Api;

use crate::env::{ConfigSource, pod_field, resource_field};
use crate::runtime::Mount;

/// A volume could not be set up (the pod stays in ContainerCreating with a FailedMount event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub(crate) struct VolumeError {
    /// The volume.
    pub volume: String,
    /// What went wrong.
    pub message: String,
}

/// A set-up volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedVolume {
    /// Where it is on the host.
    pub path: PathBuf,
    /// Backed by memory.
    pub tmpfs: bool,
    /// Always mounted read-only (configMap, secret, downwardAPI).
    pub read_only: bool,
}

/// Context for setting up a pod's volumes.
pub(crate) struct VolumeContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// `<root>/pods/<uid>`.
    pub pod_dir: &'a Path,
    /// ConfigMaps and Secrets.
    pub source: &'a dyn ConfigSource,
    /// For PVC lookups.
    pub client: Option<&'a kube::Client>,
    /// Node name, pod IP, host IP for downward API.
    pub node_name: &'a str,
    /// Pod IP.
    pub pod_ip: &'a str,
    /// Host IP.
    pub host_ip: &'a str,
    /// hostPath prefixes this node keeps elsewhere (see `AgentConfig::host_path_map`).
    pub host_path_map: &'a [(PathBuf, PathBuf)],
}

/// Where a hostPath is on this node: the well-known paths the agent keeps under its own root
/// (`/var/log/pods`, …) are translated, everything else is used as written.
pub(crate) fn host_path(path: &Path, map: &[(PathBuf, PathBuf)]) -> PathBuf {
    for (from, to) in map {
        if let Ok(rest) = path.strip_prefix(from) {
            return if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
        }
    }
    path.to_owned()
}

fn err(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError {
        volume: volume.to_owned(),
        message: message.into(),
    }
}

/// Set up every volume of the pod (idempotent; configMap/secret contents are refreshed).
pub(crate) async fn prepare(
    ctx: &VolumeContext<'_>,
) -> Result<HashMap<String, PreparedVolume>, VolumeError> {
    let mut out = HashMap::new();
    let ns = ctx.pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let prepared = prepare_one(ctx, ns, v).await?;
        out.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

fn plugin_dir(ctx: &VolumeContext<'_>, plugin: &str, name: &str) -> PathBuf {
    ctx.pod_dir.join("volumes").join(plugin).join(name)
}

async fn prepare_one(
    ctx: &VolumeContext<'_>,
    ns: &str,
    v: &Volume,
) -> Result<PreparedVolume, VolumeError> {
    let name = v.name.as_str();
    let io = |e: std::io::Error| err(name, e.to_string());
    if let Some(e) = &v.empty_dir {
        let path = plugin_dir(ctx, "kubernetes.io~empty-dir", name);
        std::fs::create_dir_all(&path).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
        return Ok(PreparedVolume {
            path,
            tmpfs: e.medium.as_deref() == Some("Memory"),
            read_only: false,
        });
    }
    if let Some(h) = &v.host_path {
        let path = host_path(Path::new(&h.path), ctx.host_path_map);
        check_host_path(name, &path, h.type_.as_deref().unwrap_or(""))?;
        return Ok(PreparedVolume {
            path,
            tmpfs: false,
            read_only: false,
        });
    }
    if let Some(c) = &v.config_map {
        let path = plugin_dir(ctx, "kubernetes.io~configmap", name);
        let data = ctx
            .source
            .config_map(ns, &c.name)
            .await
            .map_err(|e| err(name, e))?;
        let data = match data {
            Some(d) => d,
            None if c.optional.unwrap_or(false) => BTreeMap::new(),
            None => return Err(err(name, format!("configmap \"{}\" not found", c.name))),
        };
        let files = project(
            name,
            &data,
            c.items.as_deref(),
            c.default_mode.unwrap_or(0o644),
            c.optional.unwrap_or(false),
        )?;
        write_atomic(&path, &files).map_err(io)?;
        return Ok(PreparedVolume {
            path,
            tmpfs: false,
            read_only: true,
        });
    }
    if let Some(s) = &v.secret {
        let path = plugin_dir(ctx, "kubernetes.io~secret", name);
        let secret_name = s.secret_name.clone().unwrap_or_default();
        let data = ctx
            .source
            .secret(ns, &secret_name)
            .await
            .map_err(|e| err(name, e))?;
        let data = match data {
            Some(d) => d,
            None if s.optional.unwrap_or(false) => BTreeMap::new(),
            None => return Err(err(name, format!("secret \"{secret_name}\" not found"))),
        };
        let files = project(
            name,
            &data,
            s.items.as_deref(),
            s.default_mode.unwrap_or(0o644),
            s.optional.unwrap_or(false),
        )?;
        write_atomic(&path, &files).map_err(io)?;
        return Ok(PreparedVolume {
            path,
            tmpfs: false,
            read_only: true,
        });
    }
    if let Some(d) = &v.downward_api {
        let path = plugin_dir(ctx, "kubernetes.io~downward-api", name);
        let mut files = BTreeMap::new();
        for item in d.items.iter().flatten() {
            let content = if let Some(f) = &item.field_ref {
                pod_field(
                    ctx.pod,
                    &f.field_path,
                    ctx.node_name,
                    ctx.pod_ip,
                    ctx.host_ip,
                )
                .map_err(|e| err(name, e.0))?
            } else if let Some(r) = &item.resource_field_ref {
                let container = ctx
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| {
                        s.containers
                            .iter()
                            .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                    })
                    .ok_or_else(|| err(name, "resourceFieldRef needs a containerName"))?;
                resource_field(
                    container,
                    &r.resource,
                    r.divisor.as_ref().map(|q| q.0.as_str()),
                    0,
                    0,
                )
                .map_err(|e| err(name, e.0))?
            } else {
                continue;
            };
            let mode = item.mode.or(d.default_mode).unwrap_or(0o644);
            files.insert(
                safe_relative(name, &item.path)?,
                (content.into_bytes(), mode as u32),
            );
        }
        write_atomic(&path, &files).map_err(io)?;
        return Ok(PreparedVolume {
            path,
            tmpfs: false,
            read_only: true,
        });
    }
    if let Some(claim) = &v.persistent_volume_claim {
        let client = ctx
            .client
            .ok_or_else(|| err(name, "no API client for persistentVolumeClaim"))?;
        let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .get_opt(&claim.claim_name)
            .await
            .map_err(|e| err(name, e.to_string()))?
            .ok_or_else(|| {
                err(
                    name,
                    format!("persistentvolumeclaim \"{}\" not found", claim.claim_name),
                )
            })?;
        let pv_name = pvc
            .spec
            .and_then(|s| s.volume_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                err(
                    name,
                    format!(
                        "persistentvolumeclaim \"{}\" is not bound",
                        claim.claim_name
                    ),
                )
            })?;
        let pv = Api::<PersistentVolume>::all(client.clone())
            .get(&pv_name)
            .await
            .map_err(|e| err(name, e.to_string()))?;
        let path = pv
            .spec
            .and_then(|s| s.host_path)
            .map(|h| PathBuf::from(h.path))
            .ok_or_else(|| {
                err(
                    name,
                    format!("persistentvolume \"{pv_name}\" is not a hostPath volume"),
                )
            })?;
        std::fs::create_dir_all(&path).map_err(io)?;
        return Ok(PreparedVolume {
            path,
            tmpfs: false,
            read_only: claim.read_only.unwrap_or(false),
        });
    }
    Err(err(
        name,
        "volume type not supported by this agent (supported: emptyDir, hostPath, configMap, secret, downwardAPI, persistentVolumeClaim)",
    ))
}

fn check_host_path(volume: &str, path: &Path, ty: &str) -> Result<(), VolumeError> {
    let meta = std::fs::metadata(path);
    let fail = |what: &str| {
        Err(err(
            volume,
            format!(
                "hostPath type check failed: {} is not a {what}",
                path.display()
            ),
        ))
    };
    match ty {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(path).map_err(|e| err(volume, e.to_string()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| err(volume, e.to_string()))?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("directory")
            }
        }
        "Directory" => {
            if meta.is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("directory")
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| err(volume, e.to_string()))?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("file")
            }
        }
        "File" => {
            if meta.is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("file")
            }
        }
        "Socket" => {
            if meta.is_ok_and(|m| m.file_type().is_socket()) {
                Ok(())
            } else {
                fail("socket file")
            }
        }
        "CharDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_char_device()) {
                Ok(())
            } else {
                fail("character device")
            }
        }
        "BlockDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_block_device()) {
                Ok(())
            } else {
                fail("block device")
            }
        }
        other => Err(err(volume, format!("invalid hostPath type {other:?}"))),
    }
}

fn safe_relative(volume: &str, path: &str) -> Result<String, VolumeError> {
    let p = Path::new(path);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        || path.is_empty()
    {
        return Err(err(
            volume,
            format!("invalid path {path:?}: must be relative and may not contain '..'"),
        ));
    }
    Ok(path.to_owned())
}

/// Files of a configMap/secret volume: every key, or the listed `items`.
fn project(
    volume: &str,
    data: &BTreeMap<String, String>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, VolumeError> {
    let mut files = BTreeMap::new();
    match items {
        None => {
            for (k, v) in data {
                files.insert(k.clone(), (v.clone().into_bytes(), default_mode as u32));
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(err(
                        volume,
                        format!("configmap references non-existent config key: {}", item.key),
                    ));
                };
                let mode = item.mode.unwrap_or(default_mode) as u32;
                files.insert(
                    safe_relative(volume, &item.path)?,
                    (v.clone().into_bytes(), mode),
                );
            }
        }
    }
    Ok(files)
}

/// Write `files` into `dir` the way kubelet's atomic writer does: a fresh timestamped
/// directory, the `..data` symlink swapped to it by rename, and one symlink per top-level entry.
/// Returns whether anything changed.
pub(crate) fn write_atomic(
    dir: &Path,
    files: &BTreeMap<String, (Vec<u8>, u32)>,
) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        let current = dir.join(current);
        let same = files.iter().all(|(rel, (bytes, mode))| {
            let p = current.join(rel);
            std::fs::read(&p).is_ok_and(|b| &b == bytes)
                && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode)
        }) && count_files(&current) == files.len();
        if same {
            return Ok(false);
        }
    }
    let stamp = format!(
        "..{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%9f")
    );
    let target = dir.join(&stamp);
    std::fs::create_dir_all(&target)?;
    for (rel, (bytes, mode)) in files {
        let p = target.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data_link)?;
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_owned))
        .collect();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != "..data" && name != stamp {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        } else if !top.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for name in top {
        let link = dir.join(&name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link)?;
        }
    }
    Ok(true)
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_files(&p);
        } else {
            n += 1;
        }
    }
    n
}

/// The mounts of a container, resolved against the prepared volumes.
pub(crate) fn container_mounts(
    container: &k8s_openapi::api::core::v1::Container,
    volumes: &HashMap<String, PreparedVolume>,
) -> Result<Vec<Mount>, VolumeError> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let v = volumes
            .get(&m.name)
            .ok_or_else(|| err(&m.name, "volume not found in the pod spec"))?;
        let mut host = v.path.clone();
        let sub = m.sub_path.as_deref().filter(|s| !s.is_empty());
        if let Some(sub) = sub {
            host = host.join(safe_relative(&m.name, sub)?);
            if !host.exists() && !v.read_only {
                std::fs::create_dir_all(&host).map_err(|e| err(&m.name, e.to_string()))?;
            }
        }
        out.push(Mount {
            host_path: host,
            container_path: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false) || v.read_only,
            tmpfs: v.tmpfs && sub.is_none(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod host_path_tests {
    use super::*;

    #[test]
    fn well_known_host_paths_are_the_agents_own() {
        let map = vec![
            (
                PathBuf::from("/var/log/pods"),
                PathBuf::from("/data/logs/pods"),
            ),
            (PathBuf::from("/var/lib/skiff"), PathBuf::from("/data")),
        ];
        assert_eq!(
            host_path(Path::new("/var/log/pods"), &map),
            Path::new("/data/logs/pods")
        );
        assert_eq!(
            host_path(Path::new("/var/lib/skiff/log-collector"), &map),
            Path::new("/data/log-collector")
        );
        assert_eq!(
            host_path(Path::new("/var/log/podsx"), &map),
            Path::new("/var/log/podsx")
        );
        assert_eq!(host_path(Path::new("/etc"), &map), Path::new("/etc"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_swap_the_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("a".to_owned(), (b"1".to_vec(), 0o644));
        files.insert("sub/b".to_owned(), (b"2".to_vec(), 0o600));
        assert!(write_atomic(dir.path(), &files).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/b")).unwrap(),
            "2"
        );
        assert!(
            !write_atomic(dir.path(), &files).unwrap(),
            "unchanged contents are not rewritten"
        );
        files.insert("a".to_owned(), (b"changed".to_vec(), 0o644));
        files.remove("sub/b");
        assert!(write_atomic(dir.path(), &files).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).unwrap(),
            "changed"
        );
        assert!(!dir.path().join("sub").exists(), "dropped keys disappear");
        let stamps = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let n = e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1, "old generations are removed");
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("made");
        assert!(check_host_path("v", &d, "DirectoryOrCreate").is_ok());
        assert!(d.is_dir());
        assert!(check_host_path("v", &d, "File").is_err());
        let f = dir.path().join("f");
        assert!(check_host_path("v", &f, "FileOrCreate").is_ok());
        assert!(
            check_host_path("v", &f, "Directory")
                .unwrap_err()
                .message
                .contains("is not a directory")
        );
        assert!(check_host_path("v", &dir.path().join("nope"), "Directory").is_err());
    }
}
