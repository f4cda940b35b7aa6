//! A container's environment, as kubelet builds it: `envFrom` sources (ConfigMaps, Secrets, with
//! prefixes), then `env` entries in order (`value` with `$(VAR)` expansion, `fieldRef`,
//! `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef`, honouring `optional`), then the
//! `$(VAR)` expansion of `command` and `args`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

use skiff_api::quantity::Quantity;

/// Why an environment could not be built; the container waits with
/// `CreateContainerConfigError` and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct EnvError(pub String);

/// Where ConfigMaps and Secrets come from (the API, or a fake in tests).
#[async_trait::async_trait]
pub(crate) trait ConfigSource: Send + Sync {
    /// The ConfigMap's data (binaryData decoded as UTF-8 where possible), `None` if missing.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String>;
    /// The Secret's decoded data, `None` if missing.
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String>;
}

/// Reads ConfigMaps and Secrets through the API.
pub(crate) struct ApiConfigSource(pub kube::Client);

#[async_trait::async_trait]
impl ConfigSource for ApiConfigSource {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.0.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(cm)) => {
                let mut data = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                Ok(Some(data))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let api: Api<Secret> = Api::namespaced(self.0.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(s)) => {
                let mut data: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                data.extend(s.string_data.unwrap_or_default());
                Ok(Some(data))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Expand `$(VAR)` references as kubelet does: `$$` escapes, unknown references stay as written.
pub(crate) fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + end];
                match vars(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&input[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = input[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A field of the pod for `fieldRef`.
pub(crate) fn pod_field(
    pod: &Pod,
    path: &str,
    node_name: &str,
    pod_ip: &str,
    host_ip: &str,
) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix('[')?
            .strip_suffix(']')?
            .trim_matches(|c| c == '\'' || c == '"');
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    let render_map = |map: &Option<BTreeMap<String, String>>| -> String {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => render_map(&meta.labels),
        "metadata.annotations" => render_map(&meta.annotations),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| node_name.to_owned()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        p => match map_key("metadata.labels", &meta.labels)
            .or_else(|| map_key("metadata.annotations", &meta.annotations))
        {
            Some(v) => v,
            None => return Err(EnvError(format!("unsupported fieldRef {p:?}"))),
        },
    })
}

/// A resource of a container for `resourceFieldRef`, divided by `divisor` and rounded up.
pub(crate) fn resource_field(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    node_cpu: i64,
    node_memory: i64,
) -> Result<String, EnvError> {
    let res = container.resources.as_ref();
    let pick = |section: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                key: &str| {
        section
            .and_then(|m| m.get(key))
            .and_then(|q| Quantity::parse(&q.0).ok())
    };
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let value = match resource {
        "limits.cpu" => pick(limits, "cpu").unwrap_or_else(|| Quantity::from_units(node_cpu)),
        "limits.memory" => {
            pick(limits, "memory").unwrap_or_else(|| Quantity::from_units(node_memory))
        }
        "requests.cpu" => pick(requests, "cpu").unwrap_or_default(),
        "requests.memory" => pick(requests, "memory").unwrap_or_default(),
        "limits.ephemeral-storage" => pick(limits, "ephemeral-storage").unwrap_or_default(),
        "requests.ephemeral-storage" => pick(requests, "ephemeral-storage").unwrap_or_default(),
        other => return Err(EnvError(format!("unsupported resourceFieldRef {other:?}"))),
    };
    let divisor = divisor
        .and_then(|d| Quantity::parse(d).ok())
        .unwrap_or_else(|| Quantity::from_units(1));
    if divisor.nanos() == 0 {
        return Err(EnvError("resourceFieldRef divisor must not be zero".into()));
    }
    let n = value.nanos();
    let d = divisor.nanos();
    Ok(((n + d - 1) / d).to_string())
}

/// Everything needed to resolve one container's environment.
pub(crate) struct EnvContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// This node's name.
    pub node_name: &'a str,
    /// The pod's IP.
    pub pod_ip: &'a str,
    /// The node's IP.
    pub host_ip: &'a str,
    /// Node allocatable CPU cores and memory bytes (for limits defaults).
    pub node_cpu: i64,
    /// Node memory bytes.
    pub node_memory: i64,
    /// ConfigMaps and Secrets.
    pub source: &'a dyn ConfigSource,
    /// Variables prepended for every container (service discovery).
    pub base: Vec<(String, String)>,
}

/// The resolved environment of `container`, in order, and its expanded command and args.
pub(crate) async fn resolve(
    ctx: &EnvContext<'_>,
    container: &Container,
) -> Result<(Vec<(String, String)>, Vec<String>, Vec<String>), EnvError> {
    let ns = ctx.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = ctx.base.clone();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, what, name) = if let Some(cm) = &from.config_map_ref {
            (
                ctx.source
                    .config_map(ns, &cm.name)
                    .await
                    .map_err(EnvError)?,
                cm.optional.unwrap_or(false),
                "configmap",
                cm.name.clone(),
            )
        } else if let Some(s) = &from.secret_ref {
            (
                ctx.source.secret(ns, &s.name).await.map_err(EnvError)?,
                s.optional.unwrap_or(false),
                "secret",
                s.name.clone(),
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    set(&mut env, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(EnvError(format!("{what} \"{name}\" not found"))),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            let current = env.clone();
            expand(v, &|n| {
                current
                    .iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            })
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                pod_field(
                    ctx.pod,
                    &f.field_path,
                    ctx.node_name,
                    ctx.pod_ip,
                    ctx.host_ip,
                )?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match r.container_name.as_deref().filter(|c| !c.is_empty()) {
                    Some(name) => ctx
                        .pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|c| c.name == name))
                        .ok_or_else(|| {
                            EnvError(format!("resourceFieldRef: container {name:?} not found"))
                        })?,
                    None => container,
                };
                resource_field(
                    target,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                    ctx.node_cpu,
                    ctx.node_memory,
                )?
            } else if let Some(k) = &from.config_map_key_ref {
                let optional = k.optional.unwrap_or(false);
                match ctx.source.config_map(ns, &k.name).await.map_err(EnvError)? {
                    Some(d) => match d.get(&k.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                k.key, k.name
                            )));
                        }
                    },
                    None if optional => continue,
                    None => return Err(EnvError(format!("configmap \"{}\" not found", k.name))),
                }
            } else if let Some(k) = &from.secret_key_ref {
                let optional = k.optional.unwrap_or(false);
                match ctx.source.secret(ns, &k.name).await.map_err(EnvError)? {
                    Some(d) => match d.get(&k.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                k.key, k.name
                            )));
                        }
                    },
                    None if optional => continue,
                    None => return Err(EnvError(format!("secret \"{}\" not found", k.name))),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    let lookup = |n: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let command = container
        .command
        .iter()
        .flatten()
        .map(|c| expand(c, &lookup))
        .collect();
    let args = container
        .args
        .iter()
        .flatten()
        .map(|a| expand(a, &lookup))
        .collect();
    Ok((env, command, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_like_kubelet() {
        let vars = |n: &str| match n {
            "A" => Some("1".to_owned()),
            "B" => Some("two".to_owned()),
            _ => None,
        };
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$$(A) $(C) $", &vars), "$(A) $(C) $");
        assert_eq!(expand("é$(A)", &vars), "é1");
    }

    #[test]
    fn resource_fields_round_up() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c",
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}))
        .unwrap();
        assert_eq!(resource_field(&c, "limits.cpu", None, 2, 0).unwrap(), "1");
        assert_eq!(
            resource_field(&c, "limits.cpu", Some("1m"), 2, 0).unwrap(),
            "250"
        );
        assert_eq!(
            resource_field(&c, "limits.memory", Some("1Mi"), 2, 0).unwrap(),
            "64"
        );
        assert_eq!(resource_field(&c, "requests.cpu", None, 2, 0).unwrap(), "0");
    }
}
