//! Authorization. Full RBAC is not enforced yet (every authenticated user may do everything);
//! what is enforced are the two narrow identities that must never get that far:
//!
//! * anonymous requests may only read the `kube-public/cluster-info` ConfigMap (kubeadm's
//!   discovery object; health and version paths are answered before any resource handler), and
//! * bootstrap-token users (`system:bootstrappers`) may only create and read
//!   CertificateSigningRequests — upstream's `system:node-bootstrapper` ClusterRole.

use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::request::Target;

/// The group every bootstrap-token user is in.
pub(crate) const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// Allow or refuse `verb` (the request's upstream verb: get, list, watch, create…) on `target`.
pub(crate) fn authorize(identity: Option<&Identity>, verb: &str, target: &Target) -> ApiResult<()> {
    let allowed = match identity {
        None => {
            verb == "get"
                && target.info.group.is_empty()
                && target.info.plural == "configmaps"
                && target.namespace.as_deref() == Some("kube-public")
                && target.name.as_deref() == Some("cluster-info")
                && target.subresource.is_none()
        }
        Some(id) if id.groups.iter().any(|g| g == BOOTSTRAPPERS) => {
            target.info.group == "certificates.k8s.io"
                && target.info.plural == "certificatesigningrequests"
                && target.subresource.is_none()
                && matches!(verb, "create" | "get" | "list" | "watch")
        }
        Some(_) => true,
    };
    if allowed {
        return Ok(());
    }
    let user = identity.map_or("system:anonymous", |i| i.user.as_str());
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.info.plural),
        None => target.info.plural.clone(),
    };
    let qualified = if target.info.group.is_empty() {
        target.info.plural.clone()
    } else {
        format!("{}.{}", target.info.plural, target.info.group)
    };
    let object = match &target.name {
        Some(name) => format!("{qualified} \"{name}\""),
        None => qualified,
    };
    let scope = match &target.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    Err(ApiError::forbidden(format!(
        "{object} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
        target.info.group
    )))
}

/// The lower-case upstream verb of a request (`LIST` → `list`, `PUT` → `update`…).
pub(crate) fn verb_name(method_verb: &str) -> &'static str {
    match method_verb {
        "GET" => "get",
        "LIST" => "list",
        "WATCH" => "watch",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" | "APPLY" => "patch",
        "DELETE" => "delete",
        "DELETECOLLECTION" => "deletecollection",
        "CONNECT" => "create",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::Registry;

    fn target(group: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> Target {
        let registry = Registry::builtin();
        Target {
            info: registry.get(group, "v1", plural).unwrap().clone(),
            namespace: ns.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: None,
            rest: None,
        }
    }

    fn bootstrapper() -> Identity {
        Identity {
            user: "system:bootstrap:abcdef".into(),
            groups: vec![BOOTSTRAPPERS.into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn bootstrap_tokens_only_reach_csrs() {
        let csrs = target(
            "certificates.k8s.io",
            "certificatesigningrequests",
            None,
            None,
        );
        assert!(authorize(Some(&bootstrapper()), "create", &csrs).is_ok());
        assert!(authorize(Some(&bootstrapper()), "watch", &csrs).is_ok());
        assert!(authorize(Some(&bootstrapper()), "delete", &csrs).is_err());
        let pods = target("", "pods", Some("default"), None);
        let err = authorize(Some(&bootstrapper()), "list", &pods).unwrap_err();
        assert_eq!(err.code.as_u16(), 403);
        assert_eq!(
            err.message,
            "pods is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
    }

    #[test]
    fn anonymous_reads_only_cluster_info() {
        let info = target("", "configmaps", Some("kube-public"), Some("cluster-info"));
        assert!(authorize(None, "get", &info).is_ok());
        assert!(authorize(None, "update", &info).is_err());
        let other = target("", "configmaps", Some("kube-public"), Some("other"));
        assert!(authorize(None, "get", &other).is_err());
    }
}
